/*!
Secrets never leave the process as text. Every configured secret (provider API keys,
`API_TOKEN`, the Redis, PostgreSQL and NATS passwords, the alert webhook's URL and the tokens in
it) is registered once at start; [`scrub`] replaces each of them — as written and
percent-encoded, as it appears in a URL — with `***`. It is applied in one place per way out:
every log line passes through [`ScrubbingWriter`] (so a provider's error message that quotes the
key, a URL in an error, a redirect, whatever path the text took, is clean), and the API scrubs
the free text it shows (`/health`'s error reasons).

Secrets shorter than [`MIN_LEN`] are not registered: replacing a 2-character "key" would mangle
every log line and protect nothing.
*/

use std::borrow::Cow;
use std::io::{self, Write};

use parking_lot::RwLock;

use crate::config::Config;

/// The shortest secret that is scrubbed.
pub const MIN_LEN: usize = 4;

static SECRETS: RwLock<Vec<String>> = RwLock::new(Vec::new());

/// Adds secrets to scrub (with their percent-encoded forms). Idempotent.
pub fn register<I: IntoIterator<Item = S>, S: AsRef<str>>(secrets: I) {
    let mut known = SECRETS.write();
    for secret in secrets {
        let secret = secret.as_ref();
        if secret.len() < MIN_LEN {
            continue;
        }
        let encoded =
            percent_encoding::utf8_percent_encode(secret, percent_encoding::NON_ALPHANUMERIC)
                .to_string();
        for form in [secret.to_string(), encoded] {
            if !known.contains(&form) {
                known.push(form);
            }
        }
    }
    // Longest first, so a secret that contains another is replaced whole.
    known.sort_by_key(|s| std::cmp::Reverse(s.len()));
}

/// The secrets a configuration holds: provider API keys, `API_TOKEN`, the Redis and PostgreSQL
/// passwords, NATS passwords and tokens, and the alert webhook's URL with the tokens in it.
pub fn of_config(config: &Config) -> Vec<String> {
    let mut out: Vec<String> = config
        .providers
        .endpoints()
        .filter_map(|e| e.api_key.as_ref().map(|k| k.expose().to_string()))
        .collect();
    if let Some(token) = &config.api_token {
        out.push(token.expose().to_string());
    }
    let redis = config.redis.iter().flat_map(|t| t.urls());
    for url in redis.chain(&config.postgres_url) {
        if let Some(password) = url_password(url) {
            out.push(password.to_string());
        }
    }
    // NATS: a password, or a token given alone (`nats://TOKEN@host`).
    for server in config.nats.iter().flat_map(|n| &n.servers) {
        let token = server
            .split_once("://")
            .and_then(|(_, rest)| rest.split('/').next()?.rsplit_once('@'))
            .map(|(userinfo, _)| userinfo)
            .filter(|u| !u.is_empty() && !u.contains(':'));
        out.extend(url_password(server).or(token).map(str::to_string));
    }
    if let Some(url) = &config.alerts.webhook_url {
        out.extend(crate::alerts::webhook::secrets_of(url));
    }
    out
}

/// The password in `scheme://user:password@host…` (also `?password=` and `?pass=`).
fn url_password(url: &str) -> Option<&str> {
    let rest = url.split_once("//").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    let from_authority = authority
        .rsplit_once('@')
        .and_then(|(userinfo, _)| userinfo.split_once(':').map(|(_, pw)| pw))
        .filter(|pw| !pw.is_empty());
    from_authority.or_else(|| {
        let query = url.split_once('?')?.1;
        query.split('&').find_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            (k == "password" || k == "pass").then_some(v)
        })
    })
}

/// `text` with every registered secret replaced by `***`.
pub fn scrub(text: &str) -> Cow<'_, str> {
    let known = SECRETS.read();
    if !known.iter().any(|s| text.contains(s.as_str())) {
        return Cow::Borrowed(text);
    }
    let mut out = text.to_string();
    for secret in known.iter() {
        if out.contains(secret.as_str()) {
            out = out.replace(secret.as_str(), "***");
        }
    }
    Cow::Owned(out)
}

/// Standard error with every registered secret scrubbed: the log writer.
#[derive(Debug, Clone, Copy, Default)]
pub struct ScrubbingWriter;

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for ScrubbingWriter {
    type Writer = ScrubbedLine;

    fn make_writer(&'a self) -> Self::Writer {
        ScrubbedLine(Vec::with_capacity(256))
    }
}

/// One log event, written to standard error scrubbed when it is dropped (the formatter writes
/// an event in pieces, so a secret could straddle two writes).
pub struct ScrubbedLine(Vec<u8>);

impl Write for ScrubbedLine {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for ScrubbedLine {
    fn drop(&mut self) {
        let text = String::from_utf8_lossy(&self.0);
        // Nothing to do about a closed standard error.
        let _ = io::stderr().write_all(scrub(&text).as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_replaced_as_written_and_percent_encoded() {
        register(["k3y+with/special", "ab"]);
        assert_eq!(
            scrub("**apikey** parameter is incorrect: k3y+with/special"),
            "**apikey** parameter is incorrect: ***"
        );
        assert_eq!(
            scrub("GET /quote?apikey=k3y%2Bwith%2Fspecial"),
            "GET /quote?apikey=***"
        );
        assert_eq!(
            scrub("ab is too short to be a secret"),
            "ab is too short to be a secret"
        );
        assert!(matches!(scrub("nothing here"), Cow::Borrowed(_)));
    }

    #[test]
    fn the_api_token_is_a_secret_of_the_config() {
        let token = "api-token-a7c3e9f1b5d2";
        let config = Config::from_lookup(|name| (name == "API_TOKEN").then(|| token.to_string()))
            .expect("valid config");
        assert!(of_config(&config).iter().any(|s| s == token));
        assert!(!format!("{config:?}").contains(token), "Debug hides it");
        register(of_config(&config));
        assert_eq!(scrub(&format!("Bearer {token}")), "Bearer ***");
    }

    #[test]
    fn redis_passwords_are_found_in_every_spelling() {
        for (url, password) in [
            ("redis://:hunter22@127.0.0.1:6379/0", Some("hunter22")),
            ("redis://user:hunter22@host", Some("hunter22")),
            ("redis//:hunter22@host", Some("hunter22")),
            ("unix:///run/redis.sock?pass=hunter22", Some("hunter22")),
            ("redis://host:99999?password=hunter22", Some("hunter22")),
            ("redis://127.0.0.1:6379", None),
        ] {
            assert_eq!(url_password(url), password, "{url}");
        }
    }

    #[test]
    fn nats_passwords_and_tokens_are_secrets() {
        let config = crate::config::Config::from_lookup(|name| {
            (name == "NATS_URL")
                .then(|| "nats://bob:pw1234@a:4222,nats://t0ken99@b:4222,c:4222".to_string())
        })
        .expect("valid config");
        let found = of_config(&config);
        assert!(found.contains(&"pw1234".to_string()), "{found:?}");
        assert!(found.contains(&"t0ken99".to_string()), "{found:?}");
        assert_eq!(found.len(), 2, "{found:?}");
    }
}
