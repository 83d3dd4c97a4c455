/*!
What every provider source shares, and nothing provider-specific:

- **REST plumbing**: one reqwest client with the configured timeout; transport errors, status
  codes and `Retry-After` → [`SourceError`]. Errors go through `e.without_url()` and every text
  taken from a response is scrubbed of the API key, so a key in a query string never reaches an
  error or a log line.
- **Response shaping**: lenient number reading (providers send `"1.0800"` as often as `1.08`),
  [`closed_bars`] (sorted, deduplicated, aligned, aggregated, only closed bars) and
  [`DayVolume`] (a provider's cumulative day volume → volume since the previous quote).
- **Push streams**: [`run_stream`], the one reconnect loop behind the Polygon, Binance and
  Finnhub WebSockets — connect, let the provider's [`Session`] subscribe, read with a silence
  timeout, reconnect with exponential backoff and jitter, report `Reconnected { since_ms }`,
  stop on the shutdown token.
*/

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use parking_lot::Mutex;
use rand::{Rng, SeedableRng};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use super::settings::{ApiKey, StreamSettings};
use super::{SourceError, StreamEvent};
use crate::model::{Bar, SymbolId, Timeframe};

/// Larger answers are refused rather than buffered (the biggest real one, 50 000 Polygon
/// aggregates, is a few MB).
const MAX_BODY_BYTES: usize = 64 << 20;
/// How much of an error body is quoted in an error message.
const REASON_CHARS: usize = 200;
const DAY_MS: i64 = 86_400_000;

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
    let mut response = request.send().await.map_err(transport)?;
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| parse_retry_after(v, chrono::Utc::now().timestamp_millis()));
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
        body: Bytes::from(body),
    })
}

/// An error's message with its causes, e.g. "error sending request: connection refused".
fn error_chain(e: &dyn std::error::Error) -> String {
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

/// Runs `one` for every symbol concurrently (sources that quote one symbol per request).
/// Symbols that fail are left out so the collector falls back for them; when every symbol
/// failed, the first error is the answer.
///
/// # Errors
/// The first error, when no symbol was answered.
pub async fn fan_out<'a, F, Fut, T>(symbols: &'a [SymbolId], one: F) -> Result<Vec<T>, SourceError>
where
    F: Fn(SymbolId) -> Fut,
    Fut: std::future::Future<Output = Result<Vec<T>, SourceError>> + 'a,
{
    let results = futures::future::join_all(symbols.iter().map(|&s| one(s))).await;
    let mut answered = Vec::with_capacity(results.len());
    let mut first_error = None;
    for result in results {
        match result {
            Ok(items) => answered.extend(items),
            Err(e) => {
                tracing::debug!(error = %e, "symbol failed");
                first_error.get_or_insert(e);
            }
        }
    }
    match first_error {
        Some(e) if answered.is_empty() => Err(e),
        _ => Ok(answered),
    }
}

// ---------------------------------------------------------------------------------------------
// Response shaping
// ---------------------------------------------------------------------------------------------

/// A price or volume that may arrive as a JSON number or as a numeric string.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(untagged)]
pub enum Num {
    Number(f64),
    Text(String),
}

impl Num {
    /// The finite value; `field` names it in the error.
    ///
    /// # Errors
    /// A non-numeric string, or NaN/infinity.
    pub fn value(&self, field: &str) -> Result<f64, String> {
        match self {
            Self::Number(n) => finite(*n, field),
            Self::Text(s) => number_str(s, field),
        }
    }
}

/// A finite number from a string field (`"112.1300"`).
///
/// # Errors
/// A non-numeric string, or NaN/infinity.
pub fn number_str(s: &str, field: &str) -> Result<f64, String> {
    let v = s
        .trim()
        .parse::<f64>()
        .map_err(|_| format!("{field} is not a number: {:?}", truncate(s)))?;
    finite(v, field)
}

fn finite(v: f64, field: &str) -> Result<f64, String> {
    if v.is_finite() {
        Ok(v)
    } else {
        Err(format!("{field} is not finite"))
    }
}

/// Seconds → milliseconds, refusing what would overflow.
///
/// # Errors
/// A timestamp too large to be a time.
pub fn secs_to_ms(secs: i64, field: &str) -> Result<i64, String> {
    secs.checked_mul(1_000)
        .ok_or_else(|| format!("{field} {secs} is out of range"))
}

fn truncate(s: &str) -> String {
    s.chars().take(40).collect()
}

/// UTC midnight of the calendar day that contains `ts_ms + offset_ms` (a local date).
pub fn local_day_start(ts_ms: i64, offset_ms: i64) -> i64 {
    ts_ms.saturating_add(offset_ms).div_euclid(DAY_MS) * DAY_MS
}

/// Provider rows → the bars a `history` call returns.
///
/// `rows` are bars of `step_ms` (the provider interval that was asked for), in any order,
/// possibly duplicated (the later row wins: it is the newer revision) and possibly with a
/// trailing live row. Intraday rows must sit on the `step_ms` grid since the epoch (a row
/// off the grid is the provider's live or odd-session row and is dropped); daily rows must
/// already be at UTC midnight. When `timeframe` is a multiple of `step_ms` the rows are
/// aggregated into `timeframe` bars. Returned: bars with open time in `[from_ms, to_ms)` that
/// ended by `now_ms`, oldest first.
///
/// # Errors
/// A row with a non-positive price, negative volume or high/low that contradict open/close
/// (beyond float noise): never a silently wrong bar.
pub fn closed_bars(
    mut rows: Vec<Bar>,
    step_ms: i64,
    timeframe: Timeframe,
    from_ms: i64,
    to_ms: i64,
    now_ms: i64,
) -> Result<Vec<Bar>, String> {
    for bar in &mut rows {
        check_bar(bar)?;
    }
    rows.sort_by_key(|b| b.ts);
    let mut unique: Vec<Bar> = Vec::with_capacity(rows.len());
    for bar in rows {
        if step_ms < DAY_MS && bar.ts.rem_euclid(step_ms) != 0 {
            tracing::debug!(ts = bar.ts, step_ms, "row off the interval grid dropped");
            continue;
        }
        match unique.last_mut() {
            Some(last) if last.ts == bar.ts => *last = bar,
            _ => unique.push(bar),
        }
    }
    let tf = timeframe.ms();
    let mut bars: Vec<Bar> = Vec::with_capacity(unique.len());
    if tf == step_ms {
        bars = unique;
    } else {
        for row in unique {
            let bucket = timeframe.bucket(row.ts);
            match bars.last_mut() {
                Some(b) if b.ts == bucket => {
                    b.high = b.high.max(row.high);
                    b.low = b.low.min(row.low);
                    b.close = row.close;
                    b.volume += row.volume;
                }
                _ => bars.push(Bar { ts: bucket, ..row }),
            }
        }
    }
    bars.retain(|b| b.ts >= from_ms && b.ts < to_ms && b.ts.saturating_add(tf) <= now_ms);
    Ok(bars)
}

/// Rejects impossible bars; snaps float32 noise (`103.72000122070312` vs `103.72`) so that
/// `low ≤ open, close ≤ high` holds exactly.
fn check_bar(bar: &mut Bar) -> Result<(), String> {
    let prices = [bar.open, bar.high, bar.low, bar.close];
    if prices.iter().any(|p| !p.is_finite() || *p <= 0.0) {
        return Err(format!("bar at {} has a non-positive price", bar.ts));
    }
    if !bar.volume.is_finite() || bar.volume < 0.0 {
        return Err(format!("bar at {} has a negative volume", bar.ts));
    }
    let top = bar.open.max(bar.close);
    let bottom = bar.open.min(bar.close);
    let tolerance = top * 1e-6;
    if bar.high + tolerance < top.max(bar.low) || bar.low - tolerance > bottom {
        return Err(format!(
            "bar at {} has high {} / low {} outside open {} / close {}",
            bar.ts, bar.high, bar.low, bar.open, bar.close
        ));
    }
    bar.high = bar.high.max(top);
    bar.low = bar.low.min(bottom);
    Ok(())
}

/// Turns a provider's cumulative day volume into volume since the previous quote.
///
/// The first observation of a symbol reports 0 (nothing is known about what came before); a
/// drop (a new session, or another venue's figure) restarts the count and reports 0.
#[derive(Debug, Default)]
pub struct DayVolume {
    last: Mutex<HashMap<SymbolId, f64>>,
}

impl DayVolume {
    pub fn delta(&self, symbol: SymbolId, cumulative: f64) -> f64 {
        if !cumulative.is_finite() || cumulative < 0.0 {
            return 0.0;
        }
        let mut last = self.last.lock();
        let previous = last.insert(symbol, cumulative);
        previous.map_or(0.0, |p| (cumulative - p).max(0.0))
    }
}

// ---------------------------------------------------------------------------------------------
// Push streams
// ---------------------------------------------------------------------------------------------

/// One WebSocket connection's worth of a provider's protocol. A fresh session is made for every
/// connection, so per-connection state (authenticated yet? last kline volume) starts clean.
pub trait Session: Send {
    /// Frames to send as soon as the connection is open (subscribe, or auth).
    fn open(&mut self) -> Vec<String>;

    /// Handles one text frame: data goes to `events`, answers (e.g. subscribe after auth) to
    /// `replies`.
    ///
    /// # Errors
    /// A condition that makes this connection useless (auth refused): the loop reconnects after
    /// a backoff. A frame that merely fails to parse is logged by the session, not an error.
    fn on_text(
        &mut self,
        text: &str,
        events: &mut Vec<StreamEvent>,
        replies: &mut Vec<String>,
    ) -> Result<(), String>;
}

/// Where and how to connect. No `Debug`: the URL may carry the key.
#[derive(Clone)]
pub struct StreamPlan {
    pub source_name: &'static str,
    /// May carry the key (Finnhub `?token=`): never logged.
    pub url: String,
    pub key: Option<ApiKey>,
    pub timing: StreamSettings,
}

/// Why one connection ended.
enum Ended {
    /// Shutdown, or nobody listens any more: the stream is over.
    Stop,
    /// The connection is gone; `delivered` says whether it carried any data (only then does
    /// the backoff start over, so a server that accepts and then refuses us is not hammered).
    Lost { reason: String, delivered: bool },
}

/// Runs a push stream until `shutdown` (or until `out` is closed): connects, subscribes via the
/// session, forwards events, and reconnects with exponential backoff and jitter whenever the
/// connection drops, errs or stays silent for `timing.silence_timeout_ms`. After every
/// reconnect it sends `Reconnected { since_ms }` with the wall time of the last frame received
/// before the outage, so the collector can backfill the gap.
pub async fn run_stream<S: Session>(
    plan: StreamPlan,
    mut new_session: impl FnMut() -> S + Send,
    out: mpsc::Sender<StreamEvent>,
    shutdown: CancellationToken,
) {
    let source_name = plan.source_name;
    let silence = Duration::from_millis(plan.timing.silence_timeout_ms);
    let seed = u64::try_from(wall_ms()).unwrap_or_default() ^ (source_name.len() as u64) << 32;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut attempt: u32 = 0;
    // Wall time of the last frame received on any connection so far (None before the first).
    let mut last_alive_ms: Option<i64> = None;
    loop {
        if shutdown.is_cancelled() || out.is_closed() {
            return;
        }
        let connect =
            tokio::time::timeout(silence, tokio_tungstenite::connect_async(plan.url.as_str()));
        let connected = tokio::select! {
            () = shutdown.cancelled() => return,
            r = connect => r,
        };
        match connected {
            Ok(Ok((ws, _response))) => {
                let reconnect_since = last_alive_ms;
                if last_alive_ms.is_none() {
                    last_alive_ms = Some(wall_ms());
                }
                let ended = pump(
                    ws,
                    new_session(),
                    reconnect_since,
                    &mut last_alive_ms,
                    silence,
                    &out,
                    &shutdown,
                )
                .await;
                match ended {
                    Ended::Stop => return,
                    Ended::Lost { reason, delivered } => {
                        if delivered {
                            attempt = 0;
                        }
                        tracing::warn!(source = source_name, reason = %scrub(&reason, plan.key.as_ref()), "stream lost; reconnecting");
                    }
                }
            }
            Ok(Err(e)) => {
                tracing::warn!(source = source_name, error = %scrub(&error_chain(&e), plan.key.as_ref()), "stream connect failed");
            }
            Err(_) => tracing::warn!(source = source_name, "stream connect timed out"),
        }
        let delay = backoff(attempt, &plan.timing, &mut rng);
        attempt = attempt.saturating_add(1);
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(delay) => {}
        }
    }
}

/// `min · 2^attempt`, capped at `max`, then a uniformly random share between half and all of it
/// (jitter keeps many sidecars from reconnecting in lockstep).
fn backoff(attempt: u32, timing: &StreamSettings, rng: &mut impl Rng) -> Duration {
    let exp = timing
        .reconnect_min_ms
        .saturating_mul(1_u64 << attempt.min(20))
        .min(timing.reconnect_max_ms)
        .max(1);
    Duration::from_millis(rng.random_range(exp.div_ceil(2)..=exp))
}

/// Drives one connection until it ends.
async fn pump<S: Session>(
    ws: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    mut session: S,
    reconnect_since: Option<i64>,
    last_alive_ms: &mut Option<i64>,
    silence: Duration,
    out: &mpsc::Sender<StreamEvent>,
    shutdown: &CancellationToken,
) -> Ended {
    let (mut sink, mut stream) = ws.split();
    let mut delivered = false;
    let lost = |reason: String, delivered: bool| Ended::Lost { reason, delivered };
    for frame in session.open() {
        if let Err(e) = sink.send(Message::text(frame)).await {
            return lost(format!("subscribe failed: {e}"), false);
        }
    }
    if let Some(since_ms) = reconnect_since
        && !deliver(out, StreamEvent::Reconnected { since_ms }, shutdown).await
    {
        return Ended::Stop;
    }
    let mut events = Vec::new();
    let mut replies = Vec::new();
    loop {
        let next = tokio::select! {
            () = shutdown.cancelled() => {
                // Best effort: say goodbye, but never let a dead peer delay shutdown.
                let _ = tokio::time::timeout(Duration::from_millis(250), sink.send(Message::Close(None))).await;
                return Ended::Stop;
            }
            next = tokio::time::timeout(silence, stream.next()) => next,
        };
        let message = match next {
            Err(_) => return lost(format!("no frame for {silence:?}"), delivered),
            Ok(None) => return lost("connection closed".into(), delivered),
            Ok(Some(Err(e))) => return lost(e.to_string(), delivered),
            Ok(Some(Ok(message))) => message,
        };
        *last_alive_ms = Some(wall_ms());
        let text = match &message {
            Message::Text(t) => t.as_str(),
            Message::Binary(b) => match std::str::from_utf8(b) {
                Ok(t) => t,
                Err(_) => continue,
            },
            Message::Close(frame) => {
                return lost(
                    format!(
                        "closed by the server{}",
                        frame
                            .as_ref()
                            .map(|f| format!(": {} {}", f.code, f.reason))
                            .unwrap_or_default()
                    ),
                    delivered,
                );
            }
            // Pings are answered by tungstenite itself on the next read.
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => continue,
        };
        let verdict = session.on_text(text, &mut events, &mut replies);
        for event in events.drain(..) {
            if !deliver(out, event, shutdown).await {
                return Ended::Stop;
            }
            delivered = true;
        }
        for reply in replies.drain(..) {
            if let Err(e) = sink.send(Message::text(reply)).await {
                return lost(format!("send failed: {e}"), delivered);
            }
        }
        if let Err(reason) = verdict {
            let _ =
                tokio::time::timeout(Duration::from_millis(250), sink.send(Message::Close(None)))
                    .await;
            return lost(reason, delivered);
        }
    }
}

/// Sends an event unless shutdown comes first or the receiver is gone; false = stop.
async fn deliver(
    out: &mpsc::Sender<StreamEvent>,
    event: StreamEvent,
    shutdown: &CancellationToken,
) -> bool {
    tokio::select! {
        () = shutdown.cancelled() => false,
        sent = out.send(event) => sent.is_ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tf(s: &str) -> Timeframe {
        s.parse().expect("valid timeframe")
    }

    fn bar(ts: i64, close: f64) -> Bar {
        Bar::from_price(ts, close, 1.0)
    }

    #[test]
    fn bars_are_sorted_deduplicated_and_only_closed() {
        let rows = vec![
            bar(120_000, 3.0),
            bar(0, 1.0),
            bar(60_000, 2.0),
            bar(60_000, 2.5),  // a later revision of the same minute wins
            bar(150_000, 9.0), // off the grid: a live row
            bar(180_000, 4.0), // still forming at now = 200 000
        ];
        let out = closed_bars(rows, 60_000, tf("1m"), 0, i64::MAX, 200_000).expect("valid");
        let closes: Vec<f64> = out.iter().map(|b| b.close).collect();
        assert_eq!(closes, [1.0, 2.5, 3.0]);
    }

    #[test]
    fn finer_rows_aggregate_into_the_timeframe() {
        let rows = (0..4)
            .map(|i| Bar {
                ts: 1_800_000 * i,
                open: 10.0 + i as f64,
                high: 20.0 + i as f64,
                low: 5.0 - i as f64,
                close: 11.0 + i as f64,
                volume: 1.0,
            })
            .collect();
        let out = closed_bars(rows, 1_800_000, tf("1h"), 0, i64::MAX, i64::MAX).expect("valid");
        assert_eq!(out.len(), 2);
        assert_eq!(
            (out[0].open, out[0].high, out[0].low, out[0].close),
            (10.0, 21.0, 4.0, 12.0)
        );
        assert_eq!(out[1].volume, 2.0);
    }

    #[test]
    fn impossible_bars_are_errors() {
        let mut b = bar(0, 1.0);
        b.high = 0.5;
        assert!(closed_bars(vec![b], 60_000, tf("1m"), 0, i64::MAX, i64::MAX).is_err());
        assert!(closed_bars(vec![bar(0, -1.0)], 60_000, tf("1m"), 0, i64::MAX, i64::MAX).is_err());
    }

    #[test]
    fn day_volume_reports_differences() {
        let v = DayVolume::default();
        assert_eq!(v.delta(0, 100.0), 0.0);
        assert_eq!(v.delta(0, 150.0), 50.0);
        assert_eq!(v.delta(0, 10.0), 0.0);
        assert_eq!(v.delta(0, 15.0), 5.0);
        assert_eq!(v.delta(1, 15.0), 0.0);
    }

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
    fn keys_are_scrubbed() {
        let key = ApiKey::new("k3y");
        assert_eq!(scrub("url?token=k3y&x", Some(&key)), "url?token=***&x");
        assert_eq!(body_reason(b"bad k3y\n", Some(&key)), "bad ***");
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let timing = StreamSettings {
            silence_timeout_ms: 1_000,
            reconnect_min_ms: 100,
            reconnect_max_ms: 1_000,
        };
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        for attempt in 0..40 {
            let d = backoff(attempt, &timing, &mut rng).as_millis() as u64;
            let cap = (100_u64 << attempt.min(20)).min(1_000);
            assert!(d >= cap / 2 && d <= cap, "attempt {attempt}: {d}");
        }
    }
}
