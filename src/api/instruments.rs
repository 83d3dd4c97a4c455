/*!
`/streaming/config/instruments`: the symbols collected, changed at run time
([`crate::instruments`] stores and applies the changes).

| Request | Answer |
|---|---|
| `GET /streaming/config/instruments` | `{count, instruments: [{symbol, calendar, calendar_given, origin, collecting}]}` |
| `POST` or `PUT /streaming/config/instruments` with `{"symbol", "calendar"?}` | 201 and the instrument when it is new or changed, 200 when it was already so |
| `PUT /streaming/config/instruments/{symbol}` with `{"calendar"?}` (or no body) | the same, for the symbol in the path |
| `GET /streaming/config/instruments/{symbol}` | the instrument, 404 when it is not collected |
| `DELETE /streaming/config/instruments/{symbol}` | 200 and what it was, 404 when it is not collected |

Access and body limits are checked before this by `super::control` (the config API's rule).
Errors are the API's JSON errors: 400 naming the `field` of a bad body, 409 (`wrong_shard`) for
a symbol another shard owns, 503 (`not_stored`) when SQLite could not store the change (then
nothing changed).
*/

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Body;
use hyper::{Method, Request, Response, StatusCode};
use serde_json::json;

use super::{ApiError, ApiState, access};
use crate::calendar::MarketCalendar;
use crate::instruments::{Change, InstrumentError, Instruments};

/// The body of a change: `{"symbol", "calendar"}`, both optional here (which are needed
/// depends on the path).
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ChangeBody {
    #[serde(default)]
    symbol: Option<String>,
    #[serde(default)]
    calendar: Option<String>,
}

type Reply = Result<Response<Full<Bytes>>, ApiError>;

/// Answers a request under `/streaming/config/instruments`; `rest` is the path after it.
pub(super) async fn route<B>(req: Request<B>, state: &ApiState, rest: &[&str]) -> Reply
where
    B: Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let instruments = state.instruments.as_deref().ok_or_else(|| {
        ApiError::not_found("this server collects nothing; no instruments to configure")
    })?;
    let method = req.method().clone();
    let read = method == Method::GET || method == Method::HEAD;
    match (rest, read) {
        ([], true) => {
            let list = instruments.list();
            Ok(super::json(
                StatusCode::OK,
                &json!({ "count": list.len(), "instruments": list }),
            ))
        }
        ([symbol], true) => {
            let info = instruments
                .get(symbol)
                .ok_or_else(|| not_collected(symbol))?;
            Ok(super::json(StatusCode::OK, &json!(info)))
        }
        ([], false) if method == Method::POST || method == Method::PUT => {
            let body = read_change(req).await?.ok_or_else(|| {
                ApiError::invalid("symbol", "symbol: missing; send {\"symbol\": \"AAPL\"}")
            })?;
            put(instruments, change(&body, None)?).await
        }
        ([symbol], false) if method == Method::PUT => {
            let body = read_change(req).await?.unwrap_or_default();
            put(instruments, change(&body, Some(symbol))?).await
        }
        ([symbol], false) if method == Method::DELETE => {
            let info = instruments.delete(symbol).await.map_err(refused)?;
            Ok(super::json(
                StatusCode::OK,
                &json!({ "deleted": true, "instrument": info }),
            ))
        }
        ([], _) => Err(not_allowed(&method, "GET, POST, PUT")),
        ([_], _) => Err(not_allowed(&method, "GET, PUT, DELETE")),
        _ => Err(ApiError::not_found(format!(
            "no route for {}",
            req.uri().path()
        ))),
    }
}

async fn put(instruments: &Instruments, change: Change) -> Reply {
    let (info, changed) = instruments.put(change).await.map_err(refused)?;
    let status = if changed {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(super::json(
        status,
        &json!({ "changed": changed, "instrument": info }),
    ))
}

/// The change a body asks for: `symbol` (from the path when `path_symbol` is given; the body's
/// must then be the same) and an optional `calendar`.
fn change(body: &ChangeBody, path_symbol: Option<&str>) -> Result<Change, ApiError> {
    let given = body.symbol.as_deref().map(str::trim);
    let raw = match (path_symbol, given) {
        (Some(path), Some(body)) if !path.eq_ignore_ascii_case(body) => {
            return Err(ApiError::invalid(
                "symbol",
                format!("symbol: `{body}` is not the symbol of the path, `{path}`"),
            ));
        }
        (Some(path), _) => path,
        (None, Some(body)) => body,
        (None, None) => return Err(ApiError::invalid("symbol", "symbol: missing")),
    };
    let symbol = crate::config::symbol(raw)
        .map_err(|e| ApiError::invalid("symbol", format!("symbol: {e}")))?;
    let calendar = body
        .calendar
        .as_deref()
        .map(MarketCalendar::parse)
        .transpose()
        .map_err(|e| ApiError::invalid("calendar", format!("calendar: {e}")))?;
    Ok(Change { symbol, calendar })
}

fn not_collected(symbol: &str) -> ApiError {
    ApiError::not_found(format!(
        "{} is not collected; GET /streaming/config/instruments lists those that are",
        symbol.to_ascii_uppercase()
    ))
}

fn not_allowed(method: &Method, allowed: &str) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{method} is not allowed here; use {allowed}"),
    )
}

fn refused(e: InstrumentError) -> ApiError {
    let status = match &e {
        InstrumentError::WrongShard { .. } => (StatusCode::CONFLICT, "wrong_shard"),
        InstrumentError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
        InstrumentError::Store(_) => (StatusCode::SERVICE_UNAVAILABLE, "not_stored"),
        InstrumentError::Stopped => (StatusCode::SERVICE_UNAVAILABLE, "stopping"),
    };
    ApiError::new(status.0, status.1, crate::secrets::scrub(&e.to_string()))
}

/// The body as a change; `None` when there is none. Bounded and parsed by the config API's
/// rules ([`access::read_body`], [`access::parse_json`]: 413, 400 naming the field).
async fn read_change<B>(req: Request<B>) -> Result<Option<ChangeBody>, ApiError>
where
    B: Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let bytes = access::read_body(req, access::MAX_BODY_BYTES).await?;
    if bytes.trim_ascii().is_empty() {
        return Ok(None);
    }
    access::parse_json(&bytes).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(text: &str) -> ChangeBody {
        access::parse_json(text.as_bytes()).expect("a change body")
    }

    #[test]
    fn bodies_become_changes_and_bad_ones_name_their_field() {
        let c = change(
            &body(r#"{"symbol": " aapl ", "calendar": "US_EQUITY"}"#),
            None,
        )
        .expect("valid");
        assert_eq!(c.symbol, "AAPL");
        assert_eq!(c.calendar, Some(MarketCalendar::UsEquity));
        let c = change(&body("{}"), Some("btc/usd")).expect("from the path");
        assert_eq!((c.symbol.as_str(), c.calendar), ("BTC/USD", None));
        for (text, path, field) in [
            (r#"{"calendar": "fx"}"#, None, "symbol"),
            (r#"{"symbol": "a b"}"#, None, "symbol"),
            (
                r#"{"symbol": "AAPL", "calendar": "moon"}"#,
                None,
                "calendar",
            ),
            (r#"{"symbol": "MSFT"}"#, Some("AAPL"), "symbol"),
        ] {
            let e = change(&body(text), path).expect_err(text);
            assert_eq!(e.status, StatusCode::BAD_REQUEST);
            assert_eq!(e.field.as_deref(), Some(field), "{text}");
        }
        let e = access::parse_json::<ChangeBody>(br#"{"symbol": 5}"#).expect_err("a number");
        assert_eq!(e.field.as_deref(), Some("symbol"));
        let e = access::parse_json::<ChangeBody>(br#"{"calender": "fx"}"#).expect_err("typo");
        assert!(e.message.contains("calender"), "{}", e.message);
    }
}
