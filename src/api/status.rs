/*!
The operator's view. `GET /` (and `HEAD /`) answers a browser — a request whose `Accept` prefers
`text/html` — with the status page, and everyone else (`curl`, bots, a wildcard `Accept` or
`application/json`) with JSON: `/health`'s body, the same object, plus `/metrics/json`'s under
`metrics`. Both carry `Vary: Accept`.

The page is one self-contained HTML file, `status.html`, compiled into the binary: no build
step, no CDN, no external font or script, so it works on a box without internet. It reads only
public endpoints: `/` (JSON) and `/alerts` polled, `/symbols` polled for every symbol's age
and session, `/bars/{symbol}` once per chart, and `/streaming/sse` for live bars.

`GET /symbols?tf=` is what no other endpoint gives in one answer: every configured symbol's
latest price, change, data age, session, quality and source (`/health` lists symbols one by one
only up to 100), read from the lock-free snapshot.
*/

use bytes::Bytes;
use http_body_util::Full;
use hyper::{HeaderMap, Response, StatusCode, header};
use serde::Serialize;

use super::{ApiState, Query, Reply, body, handlers, json};

/// The status page, served as it is written.
const PAGE: &str = include_str!("status.html");

/// `GET /`: the page to a browser, JSON to anyone else.
pub(super) fn root(state: &ApiState, headers: &HeaderMap) -> Response<Full<Bytes>> {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let mut response = if wants_html(accept) {
        let mut page = body(
            StatusCode::OK,
            "text/html; charset=utf-8",
            PAGE.as_bytes().to_vec(),
        );
        page.headers_mut().insert(
            header::CACHE_CONTROL,
            header::HeaderValue::from_static("no-cache"),
        );
        page
    } else {
        let (_, mut report) = handlers::health_report(state);
        if let Some(object) = report.as_object_mut() {
            object.insert("metrics".into(), state.metrics.to_json());
        }
        // Always 200: this is a view of the state (`status` says it); `/health` is the check.
        json(StatusCode::OK, &report)
    };
    response
        .headers_mut()
        .insert(header::VARY, header::HeaderValue::from_static("accept"));
    response
}

/// Whether an `Accept` header asks for HTML over JSON: `text/html` (or XHTML) named with a
/// quality above 0 and at least that of JSON (`application/json`, `application/*` or `*/*`).
/// A wildcard alone, no header, or JSON preferred: JSON.
fn wants_html(accept: &str) -> bool {
    let (mut html, mut json) = (0.0_f32, 0.0_f32);
    for item in accept.split(',') {
        let mut parts = item.split(';');
        let media = parts.next().unwrap_or_default().trim();
        let q = parts
            .filter_map(|p| p.trim().strip_prefix("q="))
            .find_map(|q| q.trim().parse::<f32>().ok())
            .unwrap_or(1.0);
        if media.eq_ignore_ascii_case("text/html")
            || media.eq_ignore_ascii_case("application/xhtml+xml")
        {
            html = html.max(q);
        } else if media.eq_ignore_ascii_case("application/json")
            || media.eq_ignore_ascii_case("application/*")
            || media == "*/*"
        {
            json = json.max(q);
        }
    }
    html > 0.0 && html >= json
}

/// One symbol in `/symbols`.
#[derive(Serialize)]
struct SymbolRow<'a> {
    symbol: &'a str,
    /// The newest close: the forming bar's, else the last closed bar's.
    price: Option<f64>,
    /// What `change` is measured from: the last closed bar's close while a bar forms after
    /// it, else the open of the newest bar.
    reference: Option<f64>,
    change: Option<f64>,
    change_pct: Option<f64>,
    /// Open time of the bar `price` is from.
    bar_ts: Option<i64>,
    forming: Option<bool>,
    quality: Option<f64>,
    source: Option<&'a str>,
    last_data_ms: Option<i64>,
    age_ms: Option<i64>,
    fresh: bool,
    session: Option<&'static str>,
    next_open_ms: Option<i64>,
}

#[derive(Serialize)]
struct SymbolsBody<'a> {
    now_ms: i64,
    timeframe: &'a str,
    /// Every configured timeframe (what `tf` may be).
    timeframes: &'a [String],
    stale_after_ms: i64,
    count: usize,
    symbols: Vec<SymbolRow<'a>>,
}

/// `GET /symbols?tf=`: every symbol's latest state, in `SYMBOLS` order.
pub(super) fn symbols(state: &ApiState, query: &Query<'_>) -> Reply {
    let (frame, _) = handlers::timeframe(state, query)?;
    let snapshot = &state.snapshot;
    let now = state.clock.now_ms();
    let rows = snapshot
        .symbols
        .iter()
        .map(|(id, name)| {
            let view = snapshot.get(id);
            let frame_view = view.as_ref().and_then(|v| v.frames.get(frame));
            let latest = frame_view.and_then(|f| f.latest());
            let price = latest.map(|(r, _, _)| r.bar.close);
            let reference = latest.map(|(record, _, forming)| {
                let before = frame_view
                    .and_then(|f| f.last_closed.as_ref())
                    .filter(|(closed, _)| forming && closed.bar.ts < record.bar.ts);
                before.map_or(record.bar.open, |(closed, _)| closed.bar.close)
            });
            let change = price.zip(reference).map(|(p, r)| p - r);
            let last_data_ms = view.as_ref().and_then(|v| v.last_data_ms);
            let age_ms = last_data_ms.map(|t| (now - t).max(0));
            let session = view.as_ref().and_then(|v| v.session);
            SymbolRow {
                symbol: name,
                price,
                reference,
                change,
                change_pct: change
                    .zip(reference)
                    .filter(|(_, r)| *r != 0.0)
                    .map(|(c, r)| c / r * 100.0),
                bar_ts: latest.map(|(r, _, _)| r.bar.ts),
                forming: latest.map(|(_, _, forming)| forming),
                quality: latest.map(|(r, _, _)| r.quality),
                source: view
                    .as_ref()
                    .and_then(|v| v.source)
                    .or(latest.map(|(r, _, _)| r.source)),
                last_data_ms,
                age_ms,
                fresh: age_ms.is_some_and(|a| a <= state.stale_after_ms),
                session: session.map(|s| s.label()),
                next_open_ms: session
                    .filter(|s| !s.open && s.until_ms < i64::MAX)
                    .map(|s| s.until_ms),
            }
        })
        .collect::<Vec<_>>();
    let out = SymbolsBody {
        now_ms: now,
        timeframe: &snapshot.timeframe_names[frame],
        timeframes: &snapshot.timeframe_names,
        stale_after_ms: state.stale_after_ms,
        count: rows.len(),
        symbols: rows,
    };
    let mut bytes = Vec::with_capacity(64 + out.count * 320);
    // Numbers, strings and options of them into a Vec: cannot fail.
    let _ = serde_json::to_writer(&mut bytes, &out);
    Ok(body(StatusCode::OK, "application/json", bytes))
}

#[cfg(test)]
mod tests {
    use super::wants_html;

    #[test]
    fn browsers_get_html_and_everyone_else_json() {
        let browser = "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,\
                       image/webp,image/apng,*/*;q=0.8,application/signed-exchange;v=b3;q=0.7";
        assert!(wants_html(browser));
        assert!(wants_html("text/html"));
        assert!(wants_html("TEXT/HTML; charset=utf-8"));
        assert!(wants_html("application/json;q=0.5, text/html"));
        for json in [
            "",
            "*/*",
            "application/json",
            "text/html;q=0.5, application/json",
            "text/html;q=0",
            "text/plain",
            "application/*, text/html;q=0.9",
        ] {
            assert!(!wants_html(json), "{json:?} asks for JSON");
        }
    }
}
