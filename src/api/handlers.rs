/*! The JSON bodies of the endpoints. */

use std::io::Write as _;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Response, StatusCode};
use serde_json::{Map, Value, json};

use super::{ApiError, ApiState, Query, Reply, json};
use crate::model::{SymbolId, Timeframe};
use crate::signals;
use crate::store::redis::RedisState;
use crate::store::snapshot::{CachedBody, NamedFeatures};

/// Symbols listed one by one in `/health`; above this only stale ones are.
const HEALTH_DETAIL: usize = 100;

/// `status` is `ok` when every symbol has fresh data and the store keeps up, `degraded` when
/// some part lags, `down` (503) when no symbol has fresh data, and `paused` (200) while
/// collection is paused at run time (`/streaming/config/cadences/market_data`).
pub(super) fn health(state: &ApiState) -> Response<Full<Bytes>> {
    let (code, body) = health_report(state);
    json(code, &body)
}

/// The body of `/health` and its status code; `/` (the status page's JSON) embeds the same.
pub(super) fn health_report(state: &ApiState) -> (StatusCode, Value) {
    let now = state.clock.now_ms();
    let snapshot = &state.snapshot;
    let mut symbols = Map::new();
    let (mut fresh_count, mut open_count, mut open_fresh) = (0, 0, 0);
    // Symbols deleted at run time are not listed.
    let total = snapshot.symbols.active_len();
    for (id, name) in snapshot.symbols.active() {
        let seen = snapshot.freshness(id);
        let age = seen.last_data_ms.map(|t| (now - t).max(0));
        let fresh = age.is_some_and(|a| a <= state.stale_after_ms);
        // Before the first tick the session is not known yet: counted as open.
        let open = seen.session.is_none_or(|s| s.open);
        fresh_count += usize::from(fresh);
        open_count += usize::from(open);
        open_fresh += usize::from(open && fresh);
        // Past HEALTH_DETAIL symbols, only the stale ones of open markets are listed (the
        // counts say the rest), so /health stays small and cheap at thousands of symbols.
        let listed = total <= HEALTH_DETAIL || (open && !fresh && symbols.len() < HEALTH_DETAIL);
        if !listed {
            continue;
        }
        symbols.insert(
            name.to_string(),
            json!({
                "age_ms": age,
                "fresh": fresh,
                "source": seen.source,
                "session": seen.session.map(|s| s.label()),
                "next_open_ms": seen.session.filter(|s| !s.open && s.until_ms < i64::MAX).map(|s| s.until_ms),
            }),
        );
    }
    let m = &state.metrics;
    let sources: Map<String, Value> = m
        .sources
        .iter()
        .map(|s| {
            let requests = s.requests.get();
            let errors = s.errors.get() + s.timeouts.get();
            let success_rate = if requests == 0 { None } else { Some(1.0 - errors as f64 / requests as f64) };
            (
                s.name.to_string(),
                json!({
                    "state": match s.breaker_state.get() { 1 => "open", 2 => "half_open", _ => "closed" },
                    "requests": requests,
                    "errors": s.errors.get(),
                    "timeouts": s.timeouts.get(),
                    "rate_limited": s.rate_limited.get(),
                    "breaker_opens": s.breaker_opens.get(),
                    "budget_minute": (s.budget_minute.get() >= 0).then(|| s.budget_minute.get()),
                    "budget_day": (s.budget_day.get() >= 0).then(|| s.budget_day.get()),
                    "success_rate": success_rate,
                    "clock_skew_ms": s.clock_skew(),
                }),
            )
        })
        .collect();
    let last_flush = m.sqlite_last_flush_ms.get();
    let uptime_ms = state.started.elapsed().as_millis() as i64;
    let flush_age = if last_flush > 0 {
        now - last_flush
    } else {
        uptime_ms
    };
    let sqlite_lagging = flush_age > 3 * state.batch_write_interval_ms as i64 + 5_000;
    // A write refused (disk full, read-only, locked, unreachable): rows wait in memory until
    // it works.
    let sqlite_fault = state.store.fault();
    let sqlite_state = match (&sqlite_fault, sqlite_lagging) {
        (Some(_), _) => "failing",
        (None, true) => "lagging",
        (None, false) => "ok",
    };
    let (redis, redis_ok) = match &state.redis {
        None => (json!({ "state": "disabled" }), true),
        Some(r) => {
            let s = match r.state() {
                RedisState::Connecting => "connecting",
                RedisState::Up => "up",
                RedisState::Down => "down",
            };
            let last = r.last_write_ms();
            let (mode, nodes) = r.mode();
            (
                json!({
                    "state": s,
                    "mode": mode,
                    "nodes": nodes,
                    "masters": r.masters(),
                    "reason": r.last_error().map(|e| crate::secrets::scrub(&e).into_owned()),
                    "queue_depth": m.redis_queue_depth.get(),
                    "last_write_age_ms": (last > 0).then(|| now - last),
                    "errors": m.redis_errors.get(),
                    "reconnects": m.redis_reconnects.get(),
                }),
                r.state() == RedisState::Up,
            )
        }
    };
    let (nats, nats_ok) = match &state.nats {
        None => (json!({ "state": "disabled" }), true),
        Some(n) => {
            let s = n.state();
            (
                json!({
                    "state": s.as_str(),
                    "reason": n.reason().map(|e| crate::secrets::scrub(&e).into_owned()),
                    "stream": n.stream,
                    "queue_depth": m.nats_queue_depth.get(),
                    "in_flight": m.nats_in_flight.get(),
                    "published": m.nats_published.get(),
                    "acked": m.nats_acked.get(),
                    "retried": m.nats_retried.get(),
                    "duplicates": m.nats_duplicates.get(),
                    "failed": m.nats_failed.get(),
                    "dropped": m.nats_dropped.get(),
                    "last_ack_age_ms": n.last_ack_age_ms(),
                }),
                s == crate::stream::jetstream::NatsState::Up,
            )
        }
    };
    let cadence = state.control.cadence.get();
    // A closed market is not down: only symbols whose market is open must be fresh. Paused
    // collection (a run-time change) is said as such: nothing is wrong, nothing is fresh.
    let (status, code) = if !cadence.enabled {
        ("paused", StatusCode::OK)
    } else if open_count > 0 && open_fresh == 0 {
        ("down", StatusCode::SERVICE_UNAVAILABLE)
    } else if open_fresh < open_count
        || sqlite_lagging
        || sqlite_fault.is_some()
        || !redis_ok
        || !nats_ok
        || m.sources.iter().any(|s| s.breaker_state.get() != 0)
    {
        ("degraded", StatusCode::OK)
    } else {
        ("ok", StatusCode::OK)
    };
    (
        code,
        json!({
            "status": status,
            "uptime_s": uptime_ms / 1_000,
            "now_ms": now,
            "collection": {
                "enabled": cadence.enabled,
                "interval_ms": cadence.interval_ms,
            },
            "symbols_fresh": fresh_count,
            "symbols_open": open_count,
            "symbols_total": total,
            "shard": {
                "index": m.shard_index.get(),
                "count": m.shards.get(),
                "symbols": m.symbols.get(),
            },
            "symbols": symbols,
            "sources": sources,
            // Under "sqlite" or "postgres", whichever holds the history.
            state.store.key(): {
                "state": sqlite_state,
                "reason": sqlite_fault.as_ref().map(|f| crate::secrets::scrub(&f.reason).into_owned()),
                "failing_for_ms": sqlite_fault.as_ref().map(|f| f.since.elapsed().as_millis() as u64),
                "failed_writes": sqlite_fault.as_ref().map(|f| f.failures),
                "pending_rows": state.store.pending_rows(),
                "queue_depth": m.sqlite_queue_depth.get(),
                "last_flush_age_ms": flush_age,
                "flush_errors": m.sqlite_flush_errors.get(),
            },
            "redis": redis,
            "nats": nats,
            "gaps": {
                "recorded": m.gaps.get(),
                "repaired": m.gaps_repaired.get(),
                "confirmed_empty": m.gaps_empty.get(),
                "pending": m.gaps_pending.get(),
            },
            "ticks": m.ticks.get(),
            "missed_ticks": m.missed_ticks.get(),
            "rejects": m.rejects_total(),
        }),
    )
}

/// `{now_ms, evaluated_ms, active, resolved, rules, webhook}`: the alerts firing now (critical
/// first, then oldest first), the last resolved ones (newest first), every rule with its
/// threshold, and the webhook's counts. The shape is documented in the README ("Alerts").
pub(super) fn alerts(state: &ApiState) -> Response<Full<Bytes>> {
    let board = &state.alerts;
    let view = board.view();
    let m = &state.metrics;
    json(
        StatusCode::OK,
        &json!({
            "now_ms": state.clock.now_ms(),
            "evaluated_ms": view.evaluated_ms,
            "active": view.active,
            "resolved": view.resolved,
            "rules": board.rules,
            "webhook": {
                "configured": board.webhook,
                "delivered": m.alert_notifications.get(),
                "failed": m.alert_notifications_failed.get(),
                "retries": m.alert_notification_retries.get(),
                "dropped": m.alert_notifications_dropped.get(),
            },
        }),
    )
}

fn symbol_id(state: &ApiState, symbol: &str) -> Result<SymbolId, ApiError> {
    state.snapshot.symbols.id(symbol).ok_or_else(|| {
        let known: Vec<&str> = state.snapshot.symbols.active().map(|(_, n)| &**n).collect();
        ApiError::not_found(format!(
            "unknown symbol `{symbol}`; configured: {}",
            known.join(", ")
        ))
    })
}

pub(super) fn timeframe(
    state: &ApiState,
    query: &Query<'_>,
) -> Result<(usize, Timeframe), ApiError> {
    let tf = match query.get("tf") {
        None => state.snapshot.timeframes[0],
        Some(raw) => raw
            .parse()
            .map_err(|e| ApiError::bad_request(format!("tf: {e}")))?,
    };
    let frame = state.snapshot.frame_index(tf).ok_or_else(|| {
        let known: Vec<String> = state
            .snapshot
            .timeframes
            .iter()
            .map(ToString::to_string)
            .collect();
        ApiError::bad_request(format!(
            "timeframe {tf} is not collected; configured: {}",
            known.join(", ")
        ))
    })?;
    Ok((frame, tf))
}

/// The latest bar and features of (symbol, timeframe), or a 404 while there is no data yet.
/// The latest bar and features of (symbol, timeframe) — the forming bar if there is one, else
/// the last closed — as the body of `/features` (and, with `signal`, of `/signals`). Serialised
/// straight into the response bytes, no intermediate JSON tree.
#[derive(serde::Serialize)]
struct LatestBody<'a> {
    symbol: &'a str,
    timeframe: &'a str,
    ts: i64,
    forming: bool,
    /// `open` or `closed` (the symbol's market, as of the last tick).
    session: &'static str,
    source: &'a str,
    quality: f64,
    bar: &'a crate::model::Bar,
    features: NamedFeatures<'a>,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    signal: Option<SignalBody<'a>>,
}

/// The signal without its confidence, which depends on the request's time.
#[derive(serde::Serialize)]
struct SignalBody<'a> {
    signal: signals::Direction,
    score: i32,
    reasons: &'a [&'static str],
}

/// Answers `/features` or, with `with_signal`, `/signals`. The body of a published view is
/// serialised once without its closing brace; each request appends what depends on its time,
/// `age_ms` (and `confidence`), and closes the object.
fn latest(state: &ApiState, symbol: &str, query: &Query<'_>, with_signal: bool) -> Reply {
    let id = symbol_id(state, symbol)?;
    let (frame, tf) = timeframe(state, query)?;
    let name = state.snapshot.symbols.name(id);
    let no_data = || {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "no_data",
            format!("no {tf} bar for {name} yet"),
        )
    };
    let view = state.snapshot.get(id).ok_or_else(no_data)?;
    let frame_view = view.frames.get(frame).ok_or_else(no_data)?;
    let (record, features, forming) = frame_view.latest().ok_or_else(no_data)?;
    let cell = if with_signal {
        &frame_view.bodies.signals
    } else {
        &frame_view.bodies.features
    };
    let closed = view.session.is_some_and(|s| !s.open);
    let cached = cell.get_or_init(|| {
        let signal = with_signal.then(|| {
            if closed {
                signals::market_closed()
            } else {
                signals::evaluate(features, record.bar.close, 0, state.stale_after_ms)
            }
        });
        let body = LatestBody {
            symbol: name,
            timeframe: &state.snapshot.timeframe_names[frame],
            ts: record.bar.ts,
            forming,
            session: if closed { "closed" } else { "open" },
            source: record.source,
            quality: record.quality,
            bar: &record.bar,
            features: NamedFeatures {
                names: &state.snapshot.feature_names,
                features,
            },
            signal: signal.as_ref().map(|s| SignalBody {
                signal: s.signal,
                score: s.score,
                reasons: &s.reasons,
            }),
        };
        let mut text = Vec::with_capacity(1_024);
        // Serialising numbers, strings and fixed maps into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut text, &body);
        // An object always ends with its brace; the request's fields go before it.
        text.pop();
        let score = signal.as_ref().map_or(0, |s| s.score);
        CachedBody { text, score }
    });
    let now = state.clock.now_ms();
    let age_ms = view.last_data_ms.map_or(i64::MAX, |t| (now - t).max(0));
    let mut bytes = Vec::with_capacity(cached.text.len() + 48);
    bytes.extend_from_slice(&cached.text);
    let _ = write!(bytes, ",\"age_ms\":{age_ms}");
    if with_signal {
        let confidence = signals::confidence(cached.score, age_ms, state.stale_after_ms);
        bytes.extend_from_slice(b",\"confidence\":");
        let _ = serde_json::to_writer(&mut bytes, &confidence);
    }
    bytes.push(b'}');
    Ok(super::body(StatusCode::OK, "application/json", bytes))
}

pub(super) fn features(state: &ApiState, symbol: &str, query: &Query<'_>) -> Reply {
    latest(state, symbol, query, false)
}

pub(super) fn signals(state: &ApiState, symbol: &str, query: &Query<'_>) -> Reply {
    latest(state, symbol, query, true)
}

pub(super) async fn bars(state: &ApiState, symbol: &str, query: &Query<'_>) -> Reply {
    let id = symbol_id(state, symbol)?;
    let (_, tf) = timeframe(state, query)?;
    let limit = match query.get("limit") {
        None => 100.min(state.max_bars_cache),
        Some(raw) => match raw.parse::<usize>() {
            Ok(n) if (1..=state.max_bars_cache).contains(&n) => n,
            _ => {
                return Err(ApiError::bad_request(format!(
                    "limit `{raw}` must be a whole number from 1 to {}",
                    state.max_bars_cache
                )));
            }
        },
    };
    let bars = state.store.recent_bars(id, tf, limit).await.map_err(|e| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
            crate::secrets::scrub(&e.to_string()).into_owned(),
        )
    })?;
    Ok(json(
        StatusCode::OK,
        &json!({
            "symbol": &**state.snapshot.symbols.name(id),
            "timeframe": tf.to_string(),
            "count": bars.len(),
            "bars": bars,
        }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Clock;
    use crate::indicators::IndicatorParams;
    use crate::metrics::Metrics;
    use crate::model::{Bar, BarRecord, FEATURE_COUNT, Features, SymbolTable};
    use crate::store::history::History;
    use crate::store::snapshot::{Snapshot, SymbolView};
    use crate::store::sqlite::SqliteStore;
    use std::sync::Arc;
    use std::time::Duration;

    fn body_of(reply: Reply) -> Value {
        let response = reply.expect("200");
        let bytes =
            futures::executor::block_on(http_body_util::BodyExt::collect(response.into_body()))
                .expect("body")
                .to_bytes();
        serde_json::from_slice(&bytes).expect("valid JSON")
    }

    /// The cached body with `age_ms` and `confidence` appended equals a body serialised from
    /// scratch at every request time, including after the data went stale, whatever the
    /// feature values (one equal to the stand-in number an earlier version searched for).
    #[tokio::test(start_paused = true)]
    async fn cached_bodies_equal_fresh_ones() {
        let dir = tempfile::tempdir().expect("tempdir");
        let symbols = SymbolTable::new(["EURUSD"]);
        let timeframes = vec!["1m".parse::<Timeframe>().expect("tf")];
        let snapshot = Arc::new(Snapshot::new(
            symbols.clone(),
            timeframes.clone(),
            &IndicatorParams::default(),
        ));
        let t0 = 1_700_000_000_000;
        let state = ApiState {
            snapshot: Arc::clone(&snapshot),
            metrics: Arc::new(Metrics::new(&["synthetic"])),
            store: History::Sqlite(Arc::new(
                SqliteStore::open(&dir.path().join("b.db"), symbols).expect("db"),
            )),
            clock: Clock::tokio(t0),
            started: std::time::Instant::now(),
            stale_after_ms: 120_000,
            max_bars_cache: 5_000,
            batch_write_interval_ms: 1_000,
            redis: None,
            nats: None,
            stream: crate::stream::hub::Hub::new(
                crate::stream::message::Names::of(&snapshot),
                crate::stream::hub::StreamSettings {
                    replay: 10,
                    client_queue: 10,
                    stale_after_ms: 120_000,
                },
                Arc::new(Metrics::new(&["synthetic"])),
            ),
            access: crate::api::access::AccessRule::new(None),
            alerts: Arc::new(crate::alerts::Board::new(&Default::default())),
            control: Arc::new(crate::api::control::Controls::detached(
                Arc::new(Metrics::new(&[])),
                Clock::tokio(t0),
            )),
            instruments: None,
        };
        // A bullish set of features: EMA up, MACD up, RSI oversold, below the band.
        let mut values = [0.5; FEATURE_COUNT];
        let names = snapshot.feature_names.clone();
        let mut set = |name: &str, v: f64| {
            let i = names.iter().position(|n| n == name).expect(name);
            values[i] = v;
        };
        set("ema_12", 1.2);
        set("ema_26", 1.1);
        set("macd_hist", 0.01);
        set("rsi_14", 25.0);
        set("bb_lower", 1.3);
        set("bb_upper", 1.5);
        set("stoch_k", 50.0);
        set("stoch_d", 50.0);
        set("obv", -7_777_777.5);
        let features = Features { values };
        let record = BarRecord {
            symbol: 0,
            timeframe: timeframes[0],
            bar: Bar::from_price(t0 - 60_000, 1.25, 10.0),
            source: "synthetic",
            quality: 1.0,
        };
        let mut view = SymbolView {
            frames: vec![Default::default()],
            last_data_ms: Some(t0 - 1_000),
            source: Some("synthetic"),
            session: None,
        };
        view.frames[0].last_closed = Some((record, features));
        // The same view once the market has closed: no signal to act on.
        let closed = SymbolView {
            session: Some(crate::model::Session {
                open: false,
                since_ms: t0,
                until_ms: t0 + 3_600_000,
            }),
            ..view.clone()
        };
        snapshot.publish(0, Arc::new(closed));
        let query = Query::parse(None).expect("no query");
        let got = body_of(signals(&state, "EURUSD", &query));
        assert_eq!(
            (&got["signal"], &got["confidence"], &got["session"]),
            (&json!("neutral"), &json!(0.0), &json!("closed")),
            "{got}"
        );
        assert_eq!(got["reasons"], json!(["market_closed"]));
        snapshot.publish(0, Arc::new(view));
        for step in [0, 30_000, 59_000, 200_000] {
            tokio::time::advance(Duration::from_millis(step)).await;
            let now = state.clock.now_ms();
            let age = now - (t0 - 1_000);
            let got = body_of(signals(&state, "eurusd", &query));
            let expected = signals::evaluate(&features, 1.25, age, 120_000);
            assert_eq!(got["age_ms"], age);
            assert_eq!(got["score"], expected.score);
            assert_eq!(got["signal"], "buy");
            assert_eq!(
                got["confidence"].as_f64(),
                Some(expected.confidence),
                "age {age}"
            );
            assert_eq!(got["reasons"], json!(expected.reasons));
            assert_eq!(got["features"]["rsi_14"], 25.0);
            assert_eq!(got["features"]["obv"], -7_777_777.5);
            assert_eq!(got["bar"]["close"], 1.25);
            let plain = body_of(super::features(&state, "EURUSD", &query));
            assert_eq!(plain["age_ms"], age);
            assert!(plain.get("confidence").is_none(), "{plain}");
            assert_eq!(plain["session"], "open");
        }
    }
}
