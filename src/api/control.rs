/*!
The run-time control endpoints, `/streaming/config/…`: what is collected, how often and from
whom, changed without a restart.

Every request passes the access rule first ([`access::authorize`]: a change needs the bearer
token when `API_TOKEN` is set, a loopback peer otherwise) and the body limit (a declared
`Content-Length` over [`access::MAX_BODY_BYTES`] is a 413), before its path is even looked up,
so a refused caller learns nothing about which routes exist. Bodies are read with
[`access::read_json`] (bounded, a 400 naming the field). Answers are JSON, errors as elsewhere.
*/

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Body;
use hyper::{Request, Response};

use super::{ApiError, ApiState, Query, access};

type Reply = Result<Response<Full<Bytes>>, ApiError>;

/// Answers one `/streaming/config/…` request.
pub(super) async fn route<B>(req: Request<B>, state: &ApiState) -> Reply
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    super::check_target_len(req.uri())?;
    access::authorize(&req, &state.access)?;
    access::check_declared_len(&req, access::MAX_BODY_BYTES)?;
    let path = req.uri().path().to_string();
    let raw_query = req.uri().query().map(str::to_string);
    let _query = Query::parse(raw_query.as_deref())?;
    let segments: Vec<String> = path
        .trim_matches('/')
        .split('/')
        .map(|s| super::decode(s, false).map(|d| d.into_owned()))
        .collect::<Result<_, _>>()?;
    let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
    #[allow(
        clippy::match_single_binding,
        reason = "the skeleton: each endpoint adds its arms"
    )]
    match segments.as_slice() {
        // ["streaming", "config", "instruments", ..]
        // ["streaming", "config", "workers", ..]
        // ["streaming", "config", "cadences", ..]
        // ["streaming", "config", "telemetry", ..]
        _ => Err(ApiError::not_found(format!("no route for {path}"))),
    }
}
