/*!
The `/streaming/…` endpoints: `POST /streaming/subscribe/sse` and `GET /streaming/sse` (Server-
Sent Events), `GET /streaming/ws` (WebSocket), `GET /streaming/channels` and
`GET /streaming/latest/{channel}`; the hub behind them is [`crate::stream`].

A streaming response outlives the service call that made it: it holds the connection's busy
mark ([`conn::Hold`]) until it ends, so neither `HTTP_IDLE_TIMEOUT` nor the per-peer shedding
takes it for an idle connection. Every other path goes to [`super::handle`].

Resume positions (`Last-Event-ID`, or `since=`, which wins): one event id `{channel}:{seq}`
resumes every subscribed channel after that event; a comma-separated list of them resumes each
named channel after its own seq (the others start fresh); a bare seq is allowed when one
channel is subscribed.
*/

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::{Body, Frame as BodyFrame, SizeHint};
use hyper::{Method, Request, Response, StatusCode, header};
use hyper_util::rt::TokioIo;
use serde_json::json;

use super::{ApiError, ApiState, Query, access, conn, control};
use crate::stream::hub::{ResolveError, Start, Subscription};
use crate::stream::sse::SseBody;
use crate::stream::{KICK_GRACE, ws};

/// What the server answers: a whole body, or an event stream.
pub enum ApiBody {
    Full(Full<Bytes>),
    Sse(Box<SseBody>),
}

impl Body for ApiBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<BodyFrame<Bytes>, Infallible>>> {
        match self.get_mut() {
            Self::Full(b) => Pin::new(b).poll_frame(cx),
            Self::Sse(b) => Pin::new(&mut **b).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Full(b) => b.is_end_stream(),
            Self::Sse(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Full(b) => b.size_hint(),
            Self::Sse(b) => b.size_hint(),
        }
    }
}

type Reply = Result<Response<ApiBody>, ApiError>;

fn full(response: Response<Full<Bytes>>) -> Response<ApiBody> {
    response.map(ApiBody::Full)
}

/// Answers one request: `/streaming/…` here, the rest through [`super::handle`].
pub(super) async fn respond<B>(
    req: Request<B>,
    state: &ApiState,
    conn: &Arc<conn::ConnState>,
) -> Response<ApiBody>
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let path = req.uri().path();
    if !path.starts_with("/streaming/") {
        return full(super::handle(req, state).await);
    }
    let started = Instant::now();
    let response = if path == "/streaming/config" || path.starts_with("/streaming/config/") {
        full(
            control::route(req, state)
                .await
                .unwrap_or_else(ApiError::into_response),
        )
    } else {
        route(req, state, conn)
            .await
            .unwrap_or_else(|e| full(e.into_response()))
    };
    state.metrics.http_requests.inc();
    if response.status().is_client_error() {
        state.metrics.http_client_errors.inc();
    }
    state.metrics.http_latency.record(started.elapsed());
    response
}

async fn route<B>(req: Request<B>, state: &ApiState, conn: &Arc<conn::ConnState>) -> Reply
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let path = req.uri().path().to_string();
    super::check_target_len(req.uri())?;
    let raw_query = req.uri().query().map(str::to_string);
    let query = Query::parse(raw_query.as_deref())?;
    let segments = super::path_segments(&path)?;
    let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
    let method = req.method().clone();
    let expect = |allowed: Method| {
        if method == allowed || (allowed == Method::GET && method == Method::HEAD) {
            Ok(())
        } else {
            Err(ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                format!("{method} is not allowed; use {allowed}"),
            ))
        }
    };
    let hub = &state.stream;
    match segments.as_slice() {
        ["streaming", "channels"] => {
            expect(Method::GET)?;
            query.allow(&[])?;
            let channels = hub.channels();
            Ok(full(super::json(
                StatusCode::OK,
                &json!({ "count": channels.len(), "channels": channels }),
            )))
        }
        ["streaming", "latest", channel] => {
            expect(Method::GET)?;
            query.allow(&[])?;
            let c = hub
                .resolve(&[*channel], &[])
                .ok()
                .filter(|cs| cs.len() == 1 && channel.starts_with("stream:"))
                .map(|cs| cs[0])
                .ok_or_else(|| {
                    ApiError::not_found(format!(
                        "unknown channel `{channel}`; GET /streaming/channels lists them"
                    ))
                })?;
            let bytes = hub.latest(c).ok_or_else(|| {
                ApiError::new(
                    StatusCode::NOT_FOUND,
                    "no_data",
                    format!("no message on {channel} yet"),
                )
            })?;
            let mut response = Response::new(ApiBody::Full(Full::new(bytes)));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("application/json"),
            );
            Ok(response)
        }
        ["streaming", "sse"] => {
            expect(Method::GET)?;
            query.allow(&["channels", "symbols", "data_types", "since"])?;
            let selection = Selection::from_query(&query);
            let last_id = header_str(&req, "last-event-id");
            sse(
                state,
                conn,
                selection,
                query.get("since").or(last_id.as_deref()),
            )
        }
        ["streaming", "subscribe", "sse"] => {
            expect(Method::POST)?;
            query.allow(&[])?;
            let last_id = header_str(&req, "last-event-id");
            let bytes = access::read_body(req, access::MAX_BODY_BYTES).await?;
            let selection: Selection = serde_json::from_slice(&bytes).map_err(|e| {
                ApiError::bad_request(format!(
                    "body: {e}; expected {{\"channels\": […], \"symbols\": […], \"data_types\": […]}}"
                ))
            })?;
            let since = selection.since.clone().or(last_id);
            sse(state, conn, selection, since.as_deref())
        }
        ["streaming", "ws"] => {
            expect(Method::GET)?;
            query.allow(&["channels", "symbols", "data_types", "since"])?;
            let selection = Selection::from_query(&query);
            let since = query.get("since").map(str::to_string);
            websocket(req, state, conn, selection, since.as_deref())
        }
        _ => Err(ApiError::not_found(format!("no route for {path}"))),
    }
}

/// What a client asks for.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Selection {
    #[serde(default)]
    channels: Vec<String>,
    #[serde(default)]
    symbols: Vec<String>,
    #[serde(default)]
    data_types: Option<Vec<String>>,
    #[serde(default)]
    since: Option<String>,
}

/// The data types a subscription can be narrowed to (continuity messages always come).
const DATA_TYPES: [&str; 3] = ["bar", "features", "signal"];

impl Selection {
    fn from_query(query: &Query<'_>) -> Self {
        let list = |name: &str| -> Vec<String> {
            query
                .get(name)
                .map(|v| {
                    v.split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default()
        };
        Self {
            channels: list("channels"),
            symbols: list("symbols"),
            data_types: query.get("data_types").map(|_| list("data_types")),
            since: None,
        }
    }

    fn data_types(&self) -> Result<Option<Vec<String>>, ApiError> {
        if let Some(types) = &self.data_types
            && let Some(bad) = types.iter().find(|t| !DATA_TYPES.contains(&t.as_str()))
        {
            return Err(ApiError::bad_request(format!(
                "data_types: unknown `{bad}`; known: {}",
                DATA_TYPES.join(", ")
            )));
        }
        Ok(self.data_types.clone())
    }
}

fn header_str<B>(req: &Request<B>, name: &str) -> Option<String> {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

fn resolve_error(e: ResolveError) -> ApiError {
    match e {
        ResolveError::Nothing => ApiError::bad_request(e.to_string()),
        _ => ApiError::not_found(e.to_string()),
    }
}

/// The resume position `raw` names among `channels`.
fn start(state: &ApiState, channels: &[u32], raw: Option<&str>) -> Result<Start, ApiError> {
    let Some(raw) = raw.map(str::trim).filter(|r| !r.is_empty()) else {
        return Ok(Start::Fresh);
    };
    let bad = |why: &str| {
        ApiError::bad_request(format!(
            "resume position `{raw}`: {why}; expected {{channel}}:{{seq}}, a comma-separated list of them, or a seq when one channel is subscribed"
        ))
    };
    if let Ok(seq) = raw.parse::<u64>() {
        return match channels {
            [c] => Ok(Start::Seqs(vec![(*c, seq)])),
            _ => Err(bad("a bare seq needs exactly one channel")),
        };
    }
    let mut seqs = Vec::new();
    for item in raw.split(',').map(str::trim) {
        let (name, seq) = item.rsplit_once(':').ok_or_else(|| bad("no seq"))?;
        let seq: u64 = seq.parse().map_err(|_| bad("the seq is not a number"))?;
        let c = state
            .stream
            .resolve(&[name], &[])
            .ok()
            .filter(|cs| cs.len() == 1 && name.starts_with("stream:"))
            .map(|cs| cs[0])
            .ok_or_else(|| bad("unknown channel"))?;
        seqs.push((c, seq));
    }
    Ok(match seqs.as_slice() {
        [(channel, seq)] => Start::After {
            channel: *channel,
            seq: *seq,
        },
        _ => Start::Seqs(seqs),
    })
}

fn sse(
    state: &ApiState,
    conn: &Arc<conn::ConnState>,
    selection: Selection,
    since: Option<&str>,
) -> Reply {
    let hub = &state.stream;
    let channels = hub
        .resolve(&selection.channels, &selection.symbols)
        .map_err(resolve_error)?;
    let start = start(state, &channels, since)?;
    let data_types = selection.data_types()?;
    // A client that does not read takes its final error only as far as the socket lets it:
    // after a grace period its connection is closed under it.
    let shed = Arc::clone(conn);
    let on_kick: Box<dyn Fn() + Send + Sync> = Box::new(move || {
        let shed = Arc::clone(&shed);
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                tokio::time::sleep(KICK_GRACE).await;
                shed.shed();
            });
        }
    });
    let sub = hub.subscribe(data_types, Some(on_kick));
    let opening = sub.add(&channels, &start);
    let body = SseBody::new(sub, opening, Box::new(conn.hold()));
    let mut response = Response::new(ApiBody::Sse(Box::new(body)));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-cache"),
    );
    // The stream is the connection's last response: when it ends, so does the connection.
    headers.insert(
        header::CONNECTION,
        header::HeaderValue::from_static("close"),
    );
    Ok(response)
}

fn websocket<B>(
    mut req: Request<B>,
    state: &ApiState,
    conn: &Arc<conn::ConnState>,
    selection: Selection,
    since: Option<&str>,
) -> Reply
where
    B: Body + Send + 'static,
{
    let has = |name: header::HeaderName, token: &str| {
        req.headers().get_all(name).iter().any(|v| {
            v.to_str().is_ok_and(|v| {
                v.split(',')
                    .any(|part| part.trim().eq_ignore_ascii_case(token))
            })
        })
    };
    if !has(header::UPGRADE, "websocket") || !has(header::CONNECTION, "upgrade") {
        return Err(ApiError::new(
            StatusCode::UPGRADE_REQUIRED,
            "upgrade_required",
            "GET /streaming/ws takes a WebSocket upgrade (Connection: Upgrade, Upgrade: websocket)",
        ));
    }
    if !has(header::SEC_WEBSOCKET_VERSION, "13") {
        return Err(ApiError::bad_request("Sec-WebSocket-Version must be 13"));
    }
    let key = req
        .headers()
        .get(header::SEC_WEBSOCKET_KEY)
        .map(|k| k.as_bytes().to_vec())
        .ok_or_else(|| ApiError::bad_request("Sec-WebSocket-Key is missing"))?;
    let hub = &state.stream;
    let channels = if selection.channels.is_empty() && selection.symbols.is_empty() {
        Vec::new()
    } else {
        hub.resolve(&selection.channels, &selection.symbols)
            .map_err(resolve_error)?
    };
    let start = start(state, &channels, since)?;
    let data_types = selection.data_types()?;
    let sub: Subscription = hub.subscribe(data_types, None);
    let opening = sub.add(&channels, &start);
    let hold = conn.hold();
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => ws::session(TokioIo::new(upgraded), sub, channels, opening).await,
            Err(e) => tracing::debug!(error = %e, "WebSocket upgrade failed"),
        }
        drop(hold);
    });
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(&key);
    let mut response = Response::new(ApiBody::Full(Full::new(Bytes::new())));
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(
        header::UPGRADE,
        header::HeaderValue::from_static("websocket"),
    );
    headers.insert(
        header::CONNECTION,
        header::HeaderValue::from_static("Upgrade"),
    );
    if let Ok(accept) = header::HeaderValue::from_str(&accept) {
        headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    }
    Ok(response)
}
