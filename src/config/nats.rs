/*!
`NATS_*`: where the streaming messages are published to NATS JetStream, and the limits of the
stream barkeep creates or updates at start. Read only when `NATS_URL` is set; every refusal names
the variable and quotes its value (a URL without its password or token).
*/

use crate::env::{Env, EnvError, redact_url};

/// Messages the publisher may hold while NATS is slow or away, when `NATS_QUEUE` is unset.
pub const NATS_QUEUE_DEFAULT: usize = 100_000;

/// The JetStream side of the streaming messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsConfig {
    /// `NATS_URL`: one or more servers (comma-separated), `nats://[user:password@]host:port`,
    /// `tls://…`, or `host:port`.
    pub servers: Vec<String>,
    /// `NATS_STREAM`: the JetStream stream's name.
    pub stream: String,
    /// `NATS_SUBJECT_PREFIX`: subjects are `{prefix}.{data_type}.{SYMBOL}`.
    pub subject_prefix: String,
    /// `NATS_MAX_AGE`: messages older are removed (`None`: kept until another limit).
    pub max_age_ms: Option<u64>,
    /// `NATS_MAX_MESSAGES`: the oldest messages go past this count.
    pub max_messages: Option<u64>,
    /// `NATS_MAX_BYTES`: the oldest messages go past this size.
    pub max_bytes: Option<u64>,
    /// `NATS_DUPLICATE_WINDOW`: how long JetStream remembers a message id.
    pub duplicate_window_ms: u64,
    /// `NATS_REPLICAS`: copies of the stream in a NATS cluster.
    pub replicas: usize,
    /// `NATS_QUEUE`: messages waiting for the publisher at most.
    pub queue: usize,
}

/// `NATS_*`, or `None` when `NATS_URL` is unset.
///
/// # Errors
/// A value that does not parse, is out of range, or a duplicate window longer than the age limit.
pub(super) fn read(env: &Env<'_>) -> Result<Option<NatsConfig>, EnvError> {
    let Some(url) = env.get("NATS_URL") else {
        return Ok(None);
    };
    // Each server's password or token hidden.
    let shown: Vec<String> = url.split(',').map(redact_url).collect();
    let shown = shown.join(",");
    let mut servers = Vec::new();
    for server in url.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let refuse = |reason: String| EnvError::new("NATS_URL", shown.clone(), reason);
        let scheme = server.split_once("://").map(|(s, _)| s);
        if scheme.is_some_and(|s| !["nats", "tls", "ws", "wss"].contains(&s)) {
            return Err(refuse(format!(
                "`{}`: the scheme must be nats://, tls://, ws:// or wss://",
                redact_url(server)
            )));
        }
        server
            .parse::<async_nats::ServerAddr>()
            .map_err(|e| refuse(format!("`{}`: {e}", redact_url(server))))?;
        servers.push(server.to_string());
    }
    if servers.is_empty() {
        return Err(EnvError::new(
            "NATS_URL",
            shown,
            "expected nats://host:port, several separated by commas",
        ));
    }
    let stream = env.parse("NATS_STREAM", "barkeep", |s| {
        let bad = s.len() > 64
            || !s
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if bad {
            Err("a stream name is 1-64 letters, digits, - and _".into())
        } else {
            Ok(s.to_string())
        }
    })?;
    let subject_prefix = env.parse("NATS_SUBJECT_PREFIX", "barkeep", |s| {
        let token_ok = |t: &str| {
            !t.is_empty()
                && t.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        };
        if s.len() <= 128 && s.split('.').all(token_ok) {
            Ok(s.to_string())
        } else {
            Err("subject tokens of letters, digits, - and _, separated by dots".into())
        }
    })?;
    let none_or = |s: &str| s.eq_ignore_ascii_case("none") || s.eq_ignore_ascii_case("unlimited");
    let max_age_ms = env.parse("NATS_MAX_AGE", "1d", |s| {
        if none_or(s) {
            return Ok(None);
        }
        let ms = crate::env::parse_duration_ms(s)?;
        if ms < 1_000 {
            return Err("must be at least 1s, or `none`".into());
        }
        Ok(Some(ms))
    })?;
    let count = |var: &'static str, default: &str, size: bool| {
        env.parse(var, default, move |s| {
            if none_or(s) {
                return Ok(None);
            }
            let n = if size {
                parse_bytes(s)?
            } else {
                s.parse().map_err(|_| String::new())?
            };
            if n == 0 || n > i64::MAX as u64 {
                return Err("must be at least 1, or `none`".into());
            }
            Ok(Some(n))
        })
        .map_err(|mut e| {
            if e.reason.is_empty() {
                e.reason = "expected a whole number, or `none`".into();
            }
            e
        })
    };
    let max_messages = count("NATS_MAX_MESSAGES", "none", false)?;
    let max_bytes = count("NATS_MAX_BYTES", "1GiB", true)?;
    let duplicate_window_ms =
        env.duration_ms("NATS_DUPLICATE_WINDOW", 120_000, 100, 7 * 86_400_000)?;
    if let Some(age) = max_age_ms
        && duplicate_window_ms > age
    {
        return Err(EnvError::new(
            "NATS_DUPLICATE_WINDOW",
            env.get("NATS_DUPLICATE_WINDOW")
                .unwrap_or_else(|| "2m".to_string()),
            format!(
                "must not be longer than NATS_MAX_AGE ({}): JetStream remembers a message id \
                 only while it keeps the message",
                env.get("NATS_MAX_AGE").unwrap_or_else(|| "1d".to_string())
            ),
        ));
    }
    Ok(Some(NatsConfig {
        servers,
        stream,
        subject_prefix,
        max_age_ms,
        max_messages,
        max_bytes,
        duplicate_window_ms,
        replicas: env.int("NATS_REPLICAS", 1, 1, 5)?,
        queue: env.int("NATS_QUEUE", NATS_QUEUE_DEFAULT, 1_000, 100_000_000)?,
    }))
}

/// `1048576`, `512MB`, `1GiB`, `10 kb`: bytes (decimal or binary units).
fn parse_bytes(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| "expected bytes, e.g. 1073741824, 512MB or 1GiB, or `none`".to_string())?;
    let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "tib" => 1 << 40,
        other => {
            return Err(format!(
                "unknown unit `{other}`; use B, KB, MB, GB, TB, KiB, MiB, GiB or TiB"
            ));
        }
    };
    n.checked_mul(factor).ok_or_else(|| "too large".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_with(vars: &[(&str, &str)]) -> Result<Option<NatsConfig>, EnvError> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let get = move |name: &str| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
        read(&Env::new(&get))
    }

    #[test]
    fn unset_is_off_and_defaults_are_documented() {
        assert_eq!(read_with(&[]), Ok(None));
        assert_eq!(read_with(&[("NATS_URL", " ")]), Ok(None));
        let c = read_with(&[("NATS_URL", "nats://127.0.0.1:4222")])
            .expect("valid")
            .expect("on");
        assert_eq!(c.servers, vec!["nats://127.0.0.1:4222".to_string()]);
        assert_eq!(c.stream, "barkeep");
        assert_eq!(c.subject_prefix, "barkeep");
        assert_eq!(c.max_age_ms, Some(86_400_000));
        assert_eq!(c.max_messages, None);
        assert_eq!(c.max_bytes, Some(1 << 30));
        assert_eq!(c.duplicate_window_ms, 120_000);
        assert_eq!(c.replicas, 1);
        assert_eq!(c.queue, NATS_QUEUE_DEFAULT);
    }

    #[test]
    fn values_are_read_and_bad_ones_name_their_variable() {
        let c = read_with(&[
            ("NATS_URL", "nats://a:4222, tls://b:4223,c:4224"),
            ("NATS_STREAM", "md_prod"),
            ("NATS_SUBJECT_PREFIX", "desk.md"),
            ("NATS_MAX_AGE", "none"),
            ("NATS_MAX_MESSAGES", "5000"),
            ("NATS_MAX_BYTES", "512MB"),
            ("NATS_DUPLICATE_WINDOW", "30s"),
        ])
        .expect("valid")
        .expect("on");
        assert_eq!(c.servers.len(), 3);
        assert_eq!(
            (c.max_age_ms, c.max_messages, c.max_bytes),
            (None, Some(5_000), Some(512_000_000))
        );
        assert_eq!(c.duplicate_window_ms, 30_000);
        let cases = [
            ("NATS_URL", "http://x:1"),
            ("NATS_URL", ","),
            ("NATS_STREAM", "a.b"),
            ("NATS_SUBJECT_PREFIX", "a.*"),
            ("NATS_SUBJECT_PREFIX", "a..b"),
            ("NATS_MAX_AGE", "0"),
            ("NATS_MAX_MESSAGES", "0"),
            ("NATS_MAX_MESSAGES", "many"),
            ("NATS_MAX_BYTES", "1PB"),
            ("NATS_DUPLICATE_WINDOW", "0"),
            ("NATS_REPLICAS", "7"),
            ("NATS_QUEUE", "10"),
        ];
        for (var, value) in cases {
            let mut vars = vec![("NATS_URL", "nats://127.0.0.1:4222")];
            vars.retain(|(k, _)| *k != var);
            vars.push((var, value));
            let err = read_with(&vars).expect_err(value);
            assert_eq!(err.var, var, "{value}: {err}");
            assert!(!err.reason.is_empty(), "{err}");
        }
    }

    #[test]
    fn the_duplicate_window_fits_in_the_age_limit() {
        let err = read_with(&[("NATS_URL", "127.0.0.1:4222"), ("NATS_MAX_AGE", "1m")])
            .expect_err("2m window, 1m age");
        assert_eq!(err.var, "NATS_DUPLICATE_WINDOW");
        assert!(err.reason.contains("NATS_MAX_AGE (1m)"), "{err}");
    }

    #[test]
    fn a_password_is_not_echoed() {
        let err = read_with(&[("NATS_URL", "http://bob:s3cret@x:1")]).expect_err("scheme");
        assert!(!err.to_string().contains("s3cret"), "{err}");
    }
}
