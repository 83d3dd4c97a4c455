/*!
The HTTP side every REST provider shares, and nothing provider-specific: one reqwest client with
the configured timeout; transport errors, status codes and `Retry-After` → [`SourceError`]; URLs
with strictly encoded path segments; key-carrying headers marked sensitive. Errors go through
`e.without_url()` and every text taken from a response is scrubbed of the API key, so a key in a
query string never reaches an error or a log line.
*/

use std::sync::atomic::{AtomicI64, Ordering::Relaxed};
use std::time::Duration;

use bytes::Bytes;

use super::SourceError;
use super::settings::ApiKey;

/// Larger answers are refused rather than buffered (the biggest real one, 50 000 Polygon
/// aggregates, is a few MB).
const MAX_BODY_BYTES: usize = 64 << 20;
/// How much of an error body is quoted in an error message.
const REASON_CHARS: usize = 200;

/// The HTTP client every REST source uses: `timeout` bounds the whole request.
///
/// # Errors
/// When the TLS backend cannot be initialised.
pub fn client(timeout_ms: u64) -> Result<reqwest::Client, reqwest::Error> {
    let timeout = Duration::from_millis(timeout_ms);
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(5)))
        .pool_idle_timeout(Duration::from_secs(60))
        .user_agent(concat!("barkeep/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// An HTTP answer, whatever its status.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub status: u16,
    pub retry_after: Option<Duration>,
    /// The provider's clock minus ours, from this answer's `Date` header (see [`ClockSkew`]).
    pub skew_ms: Option<i64>,
    pub body: Bytes,
}

impl Fetched {
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// Sends `request` and reads the whole body. Only transport failures are errors here; the
/// caller reads the status and body, because several providers explain errors in the body.
///
/// # Errors
/// `Timeout` when the configured timeout passed, `Network` for anything else on the way.
pub async fn fetch(
    source_name: &'static str,
    request: reqwest::RequestBuilder,
    key: Option<&ApiKey>,
) -> Result<Fetched, SourceError> {
    let transport = |e: reqwest::Error| {
        if e.is_timeout() {
            SourceError::Timeout { source_name }
        } else {
            SourceError::Network {
                source_name,
                reason: scrub(&error_chain(&e.without_url()), key),
            }
        }
    };
    let sent_ms = wall_ms();
    let mut response = request.send().await.map_err(transport)?;
    let received_ms = wall_ms();
    let status = response.status().as_u16();
    let header = |name| response.headers().get(name).and_then(|v| v.to_str().ok());
    let retry_after =
        header(reqwest::header::RETRY_AFTER).and_then(|v| parse_retry_after(v, received_ms));
    let skew_ms = header(reqwest::header::DATE).and_then(|v| skew_sample(v, sent_ms, received_ms));
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(transport)? {
        if body.len() + chunk.len() > MAX_BODY_BYTES {
            return Err(SourceError::Http {
                source_name,
                status,
                reason: format!("answer larger than {MAX_BODY_BYTES} bytes"),
            });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Fetched {
        status,
        retry_after,
        skew_ms,
        body: Bytes::from(body),
    })
}

/// One estimate of the provider's clock minus ours from a `Date` header: the server stamped it
/// somewhere between sending and receiving, and HTTP dates are truncated to the second, so the
/// server's time at our midpoint is taken as the header's second plus half a second.
pub fn skew_sample(date: &str, sent_ms: i64, received_ms: i64) -> Option<i64> {
    let server_ms = chrono::DateTime::parse_from_rfc2822(date.trim())
        .ok()?
        .timestamp_millis();
    Some(server_ms + 500 - (sent_ms + (received_ms - sent_ms) / 2))
}

/// A provider's clock offset from ours (positive: the provider is ahead), smoothed over answers
/// so one slow request or a second boundary does not swing it. Resolution is about half a
/// second, the precision of an HTTP `Date`; it shows a provider (or this machine) whose clock
/// has drifted, which would make fresh bars look stale or future-dated.
#[derive(Debug)]
pub struct ClockSkew(AtomicI64);

impl Default for ClockSkew {
    fn default() -> Self {
        Self(AtomicI64::new(i64::MIN))
    }
}

impl ClockSkew {
    /// Folds in one sample: the first is taken as is, later ones move the estimate a fifth of
    /// the way.
    pub fn observe(&self, sample_ms: i64) {
        let _ = self.0.fetch_update(Relaxed, Relaxed, |old| {
            Some(if old == i64::MIN {
                sample_ms
            } else {
                old + (sample_ms - old) / 5
            })
        });
    }

    /// The estimate, once an answer carried a `Date` header.
    pub fn get(&self) -> Option<i64> {
        let v = self.0.load(Relaxed);
        (v != i64::MIN).then_some(v)
    }
}

/// An error's message with its causes, e.g. "error sending request: connection refused".
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The generic meaning of a non-success status, for answers whose body said nothing more
/// specific: 401/403 → `Unauthorized`, 429/418 → `RateLimited`, anything else → `Http`.
pub fn status_error(
    source_name: &'static str,
    fetched: &Fetched,
    key: Option<&ApiKey>,
) -> SourceError {
    let reason = body_reason(&fetched.body, key);
    match fetched.status {
        401 | 403 => SourceError::Unauthorized {
            source_name,
            reason,
        },
        418 | 429 => SourceError::RateLimited {
            source_name,
            retry_after: fetched.retry_after,
        },
        status => SourceError::Http {
            source_name,
            status,
            reason,
        },
    }
}

/// A short, printable, key-free excerpt of a body for an error message.
pub fn body_reason(body: &[u8], key: Option<&ApiKey>) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        return "empty body".into();
    }
    let mut excerpt: String = text
        .chars()
        .take(REASON_CHARS)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if text.chars().count() > REASON_CHARS {
        excerpt.push('…');
    }
    scrub(&excerpt, key)
}

/// `text` with every occurrence of the key replaced by `***`.
pub fn scrub(text: &str, key: Option<&ApiKey>) -> String {
    match key.map(ApiKey::expose) {
        Some(k) if !k.is_empty() && text.contains(k) => text.replace(k, "***"),
        _ => text.to_string(),
    }
}

/// `Retry-After`: delay-seconds or an HTTP-date (then relative to `now_ms`).
pub fn parse_retry_after(value: &str, now_ms: i64) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let ms = at.timestamp_millis().saturating_sub(now_ms).max(0);
    Some(Duration::from_millis(u64::try_from(ms).ok()?))
}

/// The wall clock, Unix ms (provider time is compared against it, never the tokio clock).
pub fn wall_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// `base` with `segments` appended as path segments, each strictly percent-encoded (RFC 3986:
/// `^NDX` → `%5ENDX`, `EUR/USD` → `EUR%2FUSD`; `:` and `=` stay, as in `X:BTCUSD`, `GC=F`).
///
/// # Errors
/// A base URL that cannot carry a path (never the case for the validated http(s) settings).
pub fn endpoint(
    source_name: &'static str,
    base: &reqwest::Url,
    segments: &[&str],
) -> Result<reqwest::Url, SourceError> {
    if base.cannot_be_a_base() {
        return Err(SourceError::Network {
            source_name,
            reason: "the base URL cannot carry a path".into(),
        });
    }
    let mut path = base.path().trim_end_matches('/').to_string();
    for segment in segments {
        path.push('/');
        for byte in segment.bytes() {
            if byte.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@".contains(&byte) {
                path.push(char::from(byte));
            } else {
                path.push_str(&format!("%{byte:02X}"));
            }
        }
    }
    let mut url = base.clone();
    url.set_path(&path);
    Ok(url)
}

/// A header value carrying a key, marked sensitive so no debug output of the request shows it.
///
/// # Errors
/// A key with characters a header cannot carry (`Unauthorized`, without the key).
pub fn secret_header(
    source_name: &'static str,
    value: &str,
) -> Result<reqwest::header::HeaderValue, SourceError> {
    let mut header =
        reqwest::header::HeaderValue::from_str(value).map_err(|_| SourceError::Unauthorized {
            source_name,
            reason: "the API key has characters an HTTP header cannot carry".into(),
        })?;
    header.set_sensitive(true);
    Ok(header)
}

/// A validated base URL from the settings, parsed once.
///
/// # Errors
/// Only if the settings were built without validation.
pub fn base_url(source_name: &'static str, url: &str) -> Result<reqwest::Url, SourceError> {
    reqwest::Url::parse(url).map_err(|e| SourceError::Network {
        source_name,
        reason: format!("bad base URL: {e}"),
    })
}

/// Lives in [`super::shape`]; re-exported at this older path, which callers outside the crate
/// (the parser fuzz tests) import.
pub use super::shape::closed_bars;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_takes_seconds_and_dates() {
        assert_eq!(parse_retry_after("7", 0), Some(Duration::from_secs(7)));
        let now = chrono::DateTime::parse_from_rfc2822("Wed, 21 Oct 2015 07:28:00 GMT")
            .expect("date")
            .timestamp_millis();
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(parse_retry_after("soon", 0), None);
    }

    #[test]
    fn skew_comes_from_the_date_header() {
        let date = "Wed, 21 Oct 2015 07:28:00 GMT";
        let at = chrono::DateTime::parse_from_rfc2822(date)
            .expect("date")
            .timestamp_millis();
        // Our clock 3 s behind, 100 ms round trip: server second + 0.5 s − our midpoint.
        assert_eq!(skew_sample(date, at - 3_050, at - 2_950), Some(3_500));
        assert_eq!(skew_sample(date, at + 400, at + 600), Some(0));
        assert_eq!(skew_sample("yesterday", 0, 0), None);
        let skew = ClockSkew::default();
        assert_eq!(skew.get(), None);
        skew.observe(1_000);
        assert_eq!(skew.get(), Some(1_000));
        skew.observe(0);
        assert_eq!(skew.get(), Some(800));
    }

    #[test]
    fn keys_are_scrubbed() {
        let key = ApiKey::new("k3y");
        assert_eq!(scrub("url?token=k3y&x", Some(&key)), "url?token=***&x");
        assert_eq!(body_reason(b"bad k3y\n", Some(&key)), "bad ***");
    }
}
