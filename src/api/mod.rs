/*!
The HTTP API on hyper: `/` (the status page to a browser, JSON to anyone else: [`status`]),
`/symbols`, `/health`, `/alerts`, `/metrics/json`, `/metrics`, `/signals/{symbol}`,
`/features/{symbol}`, `/bars/{symbol}`, the streaming endpoints under `/streaming/`
([`streaming`]: SSE, WebSocket, channel snapshots), the run-time controls under
`/streaming/config/` ([`control`]: workers, cadences, telemetry; who may change them and how a
body is read is [`access`]) and the symbols collected, changed at run time ([`instruments`]:
`/streaming/config/instruments`).

[`handle`] maps a request to a response and is what tests call without a socket; [`serve`] is
the accept loop, with at most `HTTP_POOL_SIZE` connections at once and a graceful stop. Reads
come from the lock-free snapshot and the metrics atomics; only `/bars` touches SQLite, on the
blocking pool. Every error is a JSON body `{"error": kind, "message": …}` with a 4xx/5xx status,
including those for requests hyper cannot parse (see [`conn`]).

Held-open connections cannot silence the API: a connection closes when its request head takes
longer than `HTTP_HEADER_TIMEOUT` or it idles past `HTTP_IDLE_TIMEOUT` ([`conn`]), and a new
connection takes the place of the oldest idle one when its peer is at
`HTTP_MAX_CONNECTIONS_PER_PEER` or the pool is full ([`pool`]).
*/

pub mod access;
mod conn;
pub mod control;
mod handlers;
mod instruments;
mod pool;
mod status;
mod streaming;

use std::borrow::Cow;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode, header};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::store::history::History;
use crate::store::snapshot::Snapshot;

/// How long the accept loop pauses after a failed accept (e.g. no file descriptor left).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// How long a connection that is still sending its head may live once the server stops.
const STOP_GRACE: Duration = Duration::from_secs(1);

/// The HTTP server's limits (`HTTP_*` variables).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpSettings {
    /// Connections at once (`HTTP_POOL_SIZE`).
    pub pool_size: usize,
    /// Connections one source IP may hold (`HTTP_MAX_CONNECTIONS_PER_PEER`).
    pub max_connections_per_peer: usize,
    /// From a request's first byte (a connection's opening, for its first request) to the end
    /// of its headers (`HTTP_HEADER_TIMEOUT`).
    pub header_timeout: Duration,
    /// From a response to the next request's first byte (`HTTP_IDLE_TIMEOUT`).
    pub idle_timeout: Duration,
}

impl HttpSettings {
    pub fn from_config(config: &Config) -> Self {
        Self {
            pool_size: config.http_pool_size,
            max_connections_per_peer: config.http_max_connections_per_peer,
            header_timeout: Duration::from_millis(config.http_header_timeout_ms),
            idle_timeout: Duration::from_millis(config.http_idle_timeout_ms),
        }
    }
}

/// What handlers read.
pub struct ApiState {
    pub snapshot: Arc<Snapshot>,
    pub metrics: Arc<Metrics>,
    pub store: History,
    pub clock: Clock,
    pub started: Instant,
    pub stale_after_ms: i64,
    pub max_bars_cache: usize,
    pub batch_write_interval_ms: u64,
    /// `None` when Redis is not configured.
    pub redis: Option<Arc<crate::store::redis::RedisStatus>>,
    /// `None` when NATS is not configured.
    pub nats: Option<Arc<crate::stream::jetstream::NatsStatus>>,
    /// Streaming clients' hub (`/streaming/…`).
    pub stream: Arc<crate::stream::hub::Hub>,
    /// Who may change things at run time (`API_TOKEN`).
    pub access: access::AccessRule,
    /// The alerts as last evaluated (`/alerts`).
    pub alerts: Arc<crate::alerts::Board>,
    /// What `/streaming/config/…` changes: workers, cadence, telemetry.
    pub control: Arc<control::Controls>,
    /// Run-time changes of the symbol list (`/streaming/config/instruments`); `None` where the
    /// API is served without a collector (tests, the fuzz target).
    pub instruments: Option<Arc<crate::instruments::Instruments>>,
}

/// An error answered to the client.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    kind: &'static str,
    message: String,
    /// The body field a 400 refuses (`interval_ms`, `retry.attempts`, `.` for the whole body).
    field: Option<String>,
}

impl ApiError {
    fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            kind,
            message: message.into(),
            field: None,
        }
    }
    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }
    /// A 400 for a body field that is missing, of the wrong type or out of bounds.
    pub(crate) fn invalid(field: &str, message: impl Into<String>) -> Self {
        Self {
            field: Some(field.to_string()),
            ..Self::bad_request(message)
        }
    }
    fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }
    fn into_response(self) -> Response<Full<Bytes>> {
        let mut body = serde_json::json!({ "error": self.kind, "message": self.message });
        if let Some(field) = self.field {
            body["field"] = serde_json::Value::String(field);
        }
        let mut response = json(self.status, &body);
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}

type Reply = Result<Response<Full<Bytes>>, ApiError>;

fn json(status: StatusCode, value: &serde_json::Value) -> Response<Full<Bytes>> {
    body(
        status,
        "application/json",
        serde_json::to_vec(value).unwrap_or_default(),
    )
}

fn body(status: StatusCode, content_type: &'static str, bytes: Vec<u8>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(bytes)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    response
}

/// Answers one request.
pub async fn handle<B>(req: Request<B>, state: &ApiState) -> Response<Full<Bytes>> {
    let started = Instant::now();
    let response = route(&req, state)
        .await
        .unwrap_or_else(ApiError::into_response);
    state.metrics.http_requests.inc();
    if response.status().is_client_error() {
        state.metrics.http_client_errors.inc();
    }
    state.metrics.http_latency.record(started.elapsed());
    response
}

/// A 414 for a request target (path and query) longer than [`conn::MAX_URI_BYTES`].
pub(super) fn check_target_len(uri: &hyper::Uri) -> Result<(), ApiError> {
    let target_len = uri.path().len() + uri.query().map_or(0, |q| q.len() + 1);
    if target_len > conn::MAX_URI_BYTES {
        return Err(ApiError::new(
            StatusCode::URI_TOO_LONG,
            "uri_too_long",
            format!(
                "the request target is {target_len} bytes, longer than {} bytes",
                conn::MAX_URI_BYTES
            ),
        ));
    }
    Ok(())
}

async fn route<B>(req: &Request<B>, state: &ApiState) -> Reply {
    let path = req.uri().path();
    check_target_len(req.uri())?;
    let query = Query::parse(req.uri().query())?;
    // Split first, then decode each segment: `BTC%2FUSD` is one segment, the symbol `BTC/USD`.
    let decoded: Vec<Cow<'_, str>> = path
        .trim_matches('/')
        .split('/')
        .map(|s| decode(s, false))
        .collect::<Result<_, _>>()?;
    let segments: Vec<&str> = decoded.iter().map(AsRef::as_ref).collect();
    let known = matches!(
        segments.as_slice(),
        [""] | ["symbols"]
            | ["health"]
            | ["alerts"]
            | ["metrics"]
            | ["metrics", "json"]
            | ["signals", _]
            | ["features", _]
            | ["bars", _]
    );
    if !known {
        return Err(ApiError::not_found(format!("no route for {path}")));
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("{} is not allowed; use GET", req.method()),
        ));
    }
    match segments.as_slice() {
        [""] => {
            query.allow(&[])?;
            Ok(status::root(state, req.headers()))
        }
        ["symbols"] => {
            query.allow(&["tf"])?;
            status::symbols(state, &query)
        }
        ["health"] => {
            query.allow(&[])?;
            Ok(handlers::health(state))
        }
        ["alerts"] => {
            query.allow(&[])?;
            Ok(handlers::alerts(state))
        }
        ["metrics"] => {
            query.allow(&[])?;
            Ok(body(
                StatusCode::OK,
                "text/plain; version=0.0.4; charset=utf-8",
                state.metrics.to_prometheus().into_bytes(),
            ))
        }
        ["metrics", "json"] => {
            query.allow(&[])?;
            Ok(json(StatusCode::OK, &state.metrics.to_json()))
        }
        ["signals", symbol] => {
            query.allow(&["tf"])?;
            handlers::signals(state, symbol, &query)
        }
        ["features", symbol] => {
            query.allow(&["tf"])?;
            handlers::features(state, symbol, &query)
        }
        ["bars", symbol] => {
            query.allow(&["tf", "limit"])?;
            handlers::bars(state, symbol, &query).await
        }
        _ => Err(ApiError::not_found(format!("no route for {path}"))),
    }
}

/// A request path's segments, each percent-decoded, as the routes match them.
fn path_segments(path: &str) -> Result<Vec<String>, ApiError> {
    path.trim_matches('/')
        .split('/')
        .map(|s| decode(s, false).map(Cow::into_owned))
        .collect()
}

/// A percent-decoded path segment or query part (`+` is a space in a query, as forms send it).
///
/// # Errors
/// Bytes that are not UTF-8 once decoded: a 400.
fn decode(raw: &str, query: bool) -> Result<Cow<'_, str>, ApiError> {
    let plus = query && raw.contains('+');
    let text: Cow<'_, str> = if plus {
        Cow::Owned(raw.replace('+', " "))
    } else {
        Cow::Borrowed(raw)
    };
    if !text.contains('%') {
        return Ok(text);
    }
    let decoded = percent_encoding::percent_decode_str(&text)
        .decode_utf8()
        .map_err(|_| ApiError::bad_request(format!("`{raw}` is not UTF-8 once percent-decoded")))?;
    Ok(Cow::Owned(decoded.into_owned()))
}

/// The query string as percent-decoded key/value pairs.
struct Query<'a> {
    pairs: Vec<(Cow<'a, str>, Cow<'a, str>)>,
}

impl<'a> Query<'a> {
    fn parse(raw: Option<&'a str>) -> Result<Self, ApiError> {
        let mut pairs: Vec<(Cow<'a, str>, Cow<'a, str>)> = Vec::new();
        for part in raw.unwrap_or_default().split('&').filter(|p| !p.is_empty()) {
            let (k, v) = part.split_once('=').unwrap_or((part, ""));
            let (k, v) = (decode(k, true)?, decode(v, true)?);
            if pairs.iter().any(|(seen, _)| *seen == k) {
                return Err(ApiError::bad_request(format!(
                    "query parameter `{k}` given twice"
                )));
            }
            pairs.push((k, v));
        }
        Ok(Self { pairs })
    }

    fn allow(&self, names: &[&str]) -> Result<(), ApiError> {
        match self
            .pairs
            .iter()
            .find(|(k, _)| !names.contains(&k.as_ref()))
        {
            Some((k, _)) if names.is_empty() => Err(ApiError::bad_request(format!(
                "unknown query parameter `{k}`; this endpoint takes none"
            ))),
            Some((k, _)) => Err(ApiError::bad_request(format!(
                "unknown query parameter `{k}`; allowed: {}",
                names.join(", ")
            ))),
            None => Ok(()),
        }
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_ref())
    }
}

/// Accepts connections until `shutdown`, then lets open connections finish their current
/// request.
pub async fn serve(
    listener: TcpListener,
    state: Arc<ApiState>,
    settings: HttpSettings,
    shutdown: CancellationToken,
) {
    let pool = pool::Pool::new(settings.pool_size, settings.max_connections_per_peer);
    let http = Arc::new(http_builder(settings));
    let connections = tokio_util::task::TaskTracker::new();
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of file descriptors (or another resource): retrying at once would
                    // spin a core; give the system a moment to free some.
                    tracing::warn!(error = %e, "accept failed; pausing before the next accept");
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        () = tokio::time::sleep(ACCEPT_BACKOFF) => {}
                    }
                    continue;
                }
            },
        };
        let Some(ticket) = pool.admit(peer.ip()) else {
            tracing::debug!(%peer, "connection refused: every connection of its peer is busy");
            continue;
        };
        let lease = tokio::select! {
            _ = shutdown.cancelled() => break,
            lease = pool.acquire(ticket) => match lease {
                Some(lease) => lease,
                None => break,
            },
        };
        connections.spawn(connection(
            stream,
            peer.ip(),
            lease,
            Arc::clone(&state),
            Arc::clone(&http),
            settings,
            shutdown.clone(),
        ));
    }
    connections.close();
    connections.wait().await;
}

/// How every connection is read: hyper's HTTP/1 with the server's head limits.
fn http_builder(settings: HttpSettings) -> http1::Builder {
    let mut http = http1::Builder::new();
    // Hyper's own head timeout counts from when it starts waiting for a head, idle time
    // included: a backstop behind the watchdog's finer limits, never shorter than them.
    http.timer(TokioTimer::new())
        .header_read_timeout(settings.header_timeout + settings.idle_timeout)
        .max_header_size(conn::MAX_HEAD_BYTES);
    http
}

/// Serves one connection over any byte stream as [`serve`] serves each accepted socket — the
/// same hyper settings, watchdog and JSON error answers — but outside any pool, until the
/// stream ends or the watchdog closes it. For in-memory streams (the HTTP fuzz target).
pub async fn serve_stream<T>(io: T, state: Arc<ApiState>, settings: HttpSettings)
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let guard = Arc::new(conn::ConnState::new(tokio::time::Instant::now()));
    let http = http_builder(settings);
    let shutdown = CancellationToken::new();
    drive(io, None, guard, state, &http, settings, shutdown).await;
}

/// Serves one connection until it ends, its watchdog closes it, or the server stops.
async fn connection(
    stream: TcpStream,
    peer: std::net::IpAddr,
    lease: pool::Lease,
    state: Arc<ApiState>,
    http: Arc<http1::Builder>,
    settings: HttpSettings,
    shutdown: CancellationToken,
) {
    let _ = stream.set_nodelay(true);
    let guard = Arc::clone(&lease.state);
    // The connection is dropped (its socket closed) before its slot is released.
    drive(stream, Some(peer), guard, state, &http, settings, shutdown).await;
    // An upgraded connection (a WebSocket) keeps its slot until its session ends.
    lease.state.released().await;
    drop(lease);
}

/// One connection's requests, under its watchdog; each request carries its `peer` (none for
/// an in-memory stream) as an [`access::Peer`] extension.
async fn drive<T>(
    stream: T,
    peer: Option<std::net::IpAddr>,
    guard: Arc<conn::ConnState>,
    state: Arc<ApiState>,
    http: &http1::Builder,
    settings: HttpSettings,
    shutdown: CancellationToken,
) where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let io = conn::Guarded::new(stream, Arc::clone(&guard), Arc::clone(&state.metrics));
    let service = {
        let guard = Arc::clone(&guard);
        service_fn(move |mut req: Request<Incoming>| {
            if let Some(ip) = peer {
                req.extensions_mut().insert(access::Peer(ip));
            }
            let state = Arc::clone(&state);
            let guard = Arc::clone(&guard);
            async move {
                guard.begin_request();
                let response = streaming::respond(req, &state, &guard).await;
                guard.end_request();
                Ok::<_, Infallible>(response)
            }
        })
    };
    let conn = http
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    tokio::pin!(conn);
    let mut head_cutoff = None;
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "HTTP connection ended with an error");
                }
                break;
            }
            closed = guard.watch(settings.header_timeout, settings.idle_timeout, head_cutoff) => {
                tracing::debug!(reason = closed.as_str(), "HTTP connection closed by the server");
                break;
            }
            () = shutdown.cancelled(), if head_cutoff.is_none() => {
                // Idle connections close now; a request in progress finishes; a head
                // still arriving gets a moment.
                conn.as_mut().graceful_shutdown();
                head_cutoff = Some(tokio::time::Instant::now() + STOP_GRACE);
            }
        }
    }
}
