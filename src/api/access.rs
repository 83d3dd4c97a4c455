/*!
Who may change things at run time, and how a change's body is read: the two checks every
handler under `/streaming/config/…` relies on.

The access rule ([`AccessRule`], from `API_TOKEN`): a request that changes something (any
method but GET, HEAD and OPTIONS) must carry `Authorization: Bearer <API_TOKEN>` when a token is
configured — from any peer, loopback included — and is answered 401 otherwise; without a token,
changes are accepted from loopback peers only (`127.0.0.0/8`, `::1`, and `::ffff:127.x` as a
dual-stack socket shows them), others get 403. Reads are open, like the rest of the API. The
token is compared in constant time ([`subtle`]); only its length can be learnt from timing.

A body ([`read_json`]) is at most [`MAX_BODY_BYTES`] (413 beyond, before it is all read) and
must deserialise into the handler's type; a refusal is a 400 whose JSON names the field
(`"field": "interval_ms"`), through [`serde_path_to_error`]. Handlers check values the same way
with [`ApiError::invalid`].
*/

use std::net::IpAddr;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Body;
use hyper::{Method, Request, StatusCode, header};
use serde::de::DeserializeOwned;
use subtle::ConstantTimeEq;

use super::ApiError;
use crate::sources::settings::ApiKey;

/// Largest request body any endpoint reads.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// The peer a request came from, put into its extensions by the connection that read it (a
/// request served without a socket has none and is no loopback peer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer(pub IpAddr);

/// Who may change things (`API_TOKEN`).
#[derive(Debug, Clone)]
pub enum AccessRule {
    /// Changes need `Authorization: Bearer <token>`.
    Token(ApiKey),
    /// No token configured: changes from loopback peers only.
    LoopbackOnly,
}

impl AccessRule {
    pub fn new(token: Option<ApiKey>) -> Self {
        token.map_or(Self::LoopbackOnly, Self::Token)
    }
}

/// Why a change was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    /// A token is configured and the request carries none (401).
    MissingToken,
    /// A token is configured and the request carries another (401).
    WrongToken,
    /// No token is configured and the peer is not loopback (403).
    NotLoopback,
}

/// Whether `method` changes something (and so is subject to the access rule).
pub fn changes(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// The access decision for a change from `peer` carrying `authorization` (the header's bytes).
///
/// # Errors
/// Why the change may not be made.
pub fn decide(
    rule: &AccessRule,
    peer: Option<IpAddr>,
    authorization: Option<&[u8]>,
) -> Result<(), Denied> {
    match rule {
        AccessRule::Token(token) => {
            let given = authorization.and_then(bearer).ok_or(Denied::MissingToken)?;
            if bool::from(given.ct_eq(token.expose().as_bytes())) {
                Ok(())
            } else {
                Err(Denied::WrongToken)
            }
        }
        AccessRule::LoopbackOnly => match peer {
            Some(ip) if ip.to_canonical().is_loopback() => Ok(()),
            _ => Err(Denied::NotLoopback),
        },
    }
}

/// The credentials of `Bearer <credentials>` (the scheme is case-insensitive).
fn bearer(header: &[u8]) -> Option<&[u8]> {
    let header = header.trim_ascii();
    let (scheme, rest) = header.split_at_checked(6)?;
    if !scheme.eq_ignore_ascii_case(b"bearer") || !rest.first()?.is_ascii_whitespace() {
        return None;
    }
    Some(rest.trim_ascii()).filter(|t| !t.is_empty())
}

/// [`decide`] for `req`: `Ok` for a read, or for a change the rule allows.
///
/// # Errors
/// A 401 (no or a wrong token) or a 403 (not loopback) JSON error.
pub fn authorize<B>(req: &Request<B>, rule: &AccessRule) -> Result<(), ApiError> {
    if !changes(req.method()) {
        return Ok(());
    }
    let peer = req.extensions().get::<Peer>().map(|p| p.0);
    let authorization = req
        .headers()
        .get(header::AUTHORIZATION)
        .map(header::HeaderValue::as_bytes);
    decide(rule, peer, authorization).map_err(|denied| match denied {
        Denied::MissingToken => ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "this change needs `Authorization: Bearer <API_TOKEN>`",
        ),
        Denied::WrongToken => ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "the bearer token is not API_TOKEN",
        ),
        Denied::NotLoopback => ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "without API_TOKEN, changes are accepted from loopback peers only",
        ),
    })
}

fn too_large(max: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        format!("the body is longer than {max} bytes"),
    )
}

/// A 413 when `req` declares a `Content-Length` over `max`: refused before a byte of the body
/// is read.
///
/// # Errors
/// The 413.
pub fn check_declared_len<B>(req: &Request<B>, max: usize) -> Result<(), ApiError> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return Err(too_large(max));
    }
    Ok(())
}

/// The whole body of `req`, at most `max` bytes.
///
/// # Errors
/// A 413 when it is longer ([`check_declared_len`] first, then while reading a body of
/// unknown length), a 400 when it cannot be read.
pub async fn read_body<B>(req: Request<B>, max: usize) -> Result<Bytes, ApiError>
where
    B: Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    check_declared_len(&req, max)?;
    let limited = http_body_util::Limited::new(req.into_body(), max);
    match limited.collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(too_large(max)),
        Err(e) => Err(ApiError::bad_request(format!("body: {e}"))),
    }
}

/// The body of `req` as JSON into `T`, at most [`MAX_BODY_BYTES`].
///
/// # Errors
/// A 413 when the body is too long; a 400 naming the field when it is not a `T` (an empty body
/// is a 400 too).
pub async fn read_json<T, B>(req: Request<B>) -> Result<T, ApiError>
where
    T: DeserializeOwned,
    B: Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let bytes = read_body(req, MAX_BODY_BYTES).await?;
    parse_json(&bytes)
}

/// `bytes`, a JSON object, into `T`.
///
/// # Errors
/// A 400 whose `field` is the path of the first value that does not fit (`"."` for the whole
/// body).
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    // Every body is an object: serde would take `[1, 2]` for a struct's fields in order.
    match bytes.trim_ascii().first() {
        None => {
            return Err(ApiError::invalid(
                ".",
                "body: expected a JSON object, got none",
            ));
        }
        Some(b'{') => {}
        Some(_) => return Err(ApiError::invalid(".", "body: expected a JSON object")),
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        // An unknown field is named by its own path; a missing one by the message.
        if path == "." {
            ApiError::invalid(".", format!("body: {inner}"))
        } else {
            ApiError::invalid(&path, format!("{path}: {inner}"))
        }
    })?;
    de.end()
        .map_err(|e| ApiError::invalid(".", format!("body: {e}")))?;
    Ok(value)
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;

    const TOKEN: &str = "s3cret-token-0123456789";

    #[test]
    fn a_token_is_needed_from_every_peer_when_one_is_configured() {
        let rule = AccessRule::new(Some(ApiKey::new(TOKEN)));
        let loopback = Some(IpAddr::V4(Ipv4Addr::LOCALHOST));
        let remote = Some(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7)));
        let good = format!("Bearer {TOKEN}");
        assert_eq!(decide(&rule, loopback, Some(good.as_bytes())), Ok(()));
        assert_eq!(decide(&rule, remote, Some(good.as_bytes())), Ok(()));
        let lower = format!("bearer   {TOKEN} ");
        assert_eq!(decide(&rule, remote, Some(lower.as_bytes())), Ok(()));
        assert_eq!(decide(&rule, loopback, None), Err(Denied::MissingToken));
        for wrong in [
            "Bearer s3cret-token-012345678".to_string(),
            format!("Bearer {TOKEN}x"),
            format!("Basic {TOKEN}"),
            format!("Bearer{TOKEN}"),
            "Bearer ".to_string(),
        ] {
            let got = decide(&rule, loopback, Some(wrong.as_bytes()));
            assert!(got.is_err(), "{wrong}: {got:?}");
        }
        assert_eq!(
            decide(&rule, loopback, Some(b"Bearer nope-nope-nope-nope")),
            Err(Denied::WrongToken)
        );
    }

    #[test]
    fn without_a_token_only_loopback_peers_may_change_things() {
        let rule = AccessRule::new(None);
        for ip in [
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V4(Ipv4Addr::new(127, 3, 2, 1)),
            IpAddr::V6(Ipv6Addr::LOCALHOST),
            IpAddr::V6(Ipv4Addr::LOCALHOST.to_ipv6_mapped()),
        ] {
            assert_eq!(decide(&rule, Some(ip), None), Ok(()), "{ip}");
        }
        for ip in [
            IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7)),
            IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            IpAddr::V6(Ipv4Addr::new(10, 0, 0, 1).to_ipv6_mapped()),
            IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        ] {
            assert_eq!(
                decide(&rule, Some(ip), Some(b"Bearer anything-at-all-123")),
                Err(Denied::NotLoopback),
                "{ip}"
            );
        }
        assert_eq!(decide(&rule, None, None), Err(Denied::NotLoopback));
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code, reason = "only deserialised")]
    struct Body {
        interval_ms: u64,
        #[serde(default)]
        retry: Option<Retry>,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code, reason = "only deserialised")]
    struct Retry {
        attempts: u32,
    }

    #[test]
    fn a_bad_body_names_its_field() {
        let field = |body: &str| parse_json::<Body>(body.as_bytes()).expect_err(body).field;
        assert_eq!(
            field(r#"{"interval_ms": "fast"}"#).as_deref(),
            Some("interval_ms")
        );
        assert_eq!(
            field(r#"{"interval_ms": 1, "retry": {"attempts": -1}}"#).as_deref(),
            Some("retry.attempts")
        );
        let unknown =
            parse_json::<Body>(br#"{"interval_ms": 1, "intervl": 2}"#).expect_err("unknown");
        assert!(unknown.message.contains("intervl"), "{}", unknown.message);
        assert_eq!(field("").as_deref(), Some("."));
        assert_eq!(field("{} {}").as_deref(), Some("."));
        assert!(parse_json::<Body>(br#"{"interval_ms": 5}"#).is_ok());
    }
}
