/*! The JSON bodies of the endpoints. */

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Response, StatusCode};
use serde_json::{Map, Value, json};

use super::{ApiError, ApiState, Query, Reply, json};
use crate::indicators::Features;
use crate::model::{SymbolId, Timeframe};
use crate::pipeline::BarRecord;
use crate::signals;
use crate::store::redis::RedisState;
use crate::store::snapshot::FrameView;

/// Symbols listed one by one in `/health`; above this only stale ones are.
const HEALTH_DETAIL: usize = 100;

/// `status` is `ok` when every symbol has fresh data and the store keeps up, `degraded` when
/// some part lags, and `down` (503) when no symbol has fresh data.
pub(super) fn health(state: &ApiState) -> Response<Full<Bytes>> {
    let now = state.clock.now_ms();
    let snapshot = &state.snapshot;
    let mut symbols = Map::new();
    let mut fresh_count = 0;
    for (id, name) in snapshot.symbols.iter() {
        let view = snapshot.get(id);
        let age = view
            .as_ref()
            .and_then(|v| v.last_data_ms)
            .map(|t| (now - t).max(0));
        let fresh = age.is_some_and(|a| a <= state.stale_after_ms);
        fresh_count += usize::from(fresh);
        // Past HEALTH_DETAIL symbols, only the stale ones are listed (the counts say the rest),
        // so /health stays small and cheap at thousands of symbols.
        let listed = snapshot.symbols.len() <= HEALTH_DETAIL || (!fresh && symbols.len() < HEALTH_DETAIL);
        if !listed {
            continue;
        }
        symbols.insert(
            name.to_string(),
            json!({
                "age_ms": age,
                "fresh": fresh,
                "source": view.as_ref().and_then(|v| v.source),
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
    let sqlite_state = if sqlite_lagging { "lagging" } else { "ok" };
    let total = snapshot.symbols.len();
    let (redis, redis_ok) = match &state.redis {
        None => (json!({ "state": "disabled" }), true),
        Some(r) => {
            let s = match r.state() {
                RedisState::Connecting => "connecting",
                RedisState::Up => "up",
                RedisState::Down => "down",
            };
            let last = r.last_write_ms();
            (
                json!({
                    "state": s,
                    "reason": r.last_error(),
                    "queue_depth": m.redis_queue_depth.get(),
                    "last_write_age_ms": (last > 0).then(|| now - last),
                    "errors": m.redis_errors.get(),
                    "reconnects": m.redis_reconnects.get(),
                }),
                r.state() == RedisState::Up,
            )
        }
    };
    let (status, code) = if fresh_count == 0 {
        ("down", StatusCode::SERVICE_UNAVAILABLE)
    } else if fresh_count < total
        || sqlite_lagging
        || !redis_ok
        || m.sources.iter().any(|s| s.breaker_state.get() != 0)
    {
        ("degraded", StatusCode::OK)
    } else {
        ("ok", StatusCode::OK)
    };
    json(
        code,
        &json!({
            "status": status,
            "uptime_s": uptime_ms / 1_000,
            "now_ms": now,
            "symbols_fresh": fresh_count,
            "symbols_total": total,
            "symbols": symbols,
            "sources": sources,
            "sqlite": {
                "state": sqlite_state,
                "pending_rows": m.sqlite_pending_rows.get(),
                "queue_depth": m.sqlite_queue_depth.get(),
                "last_flush_age_ms": flush_age,
                "flush_errors": m.sqlite_flush_errors.get(),
            },
            "redis": redis,
            "ticks": m.ticks.get(),
            "missed_ticks": m.missed_ticks.get(),
            "rejects": m.rejects_total(),
        }),
    )
}

fn symbol_id(state: &ApiState, symbol: &str) -> Result<SymbolId, ApiError> {
    state.snapshot.symbols.id(symbol).ok_or_else(|| {
        let known: Vec<&str> = state.snapshot.symbols.iter().map(|(_, n)| &**n).collect();
        ApiError::not_found(format!(
            "unknown symbol `{symbol}`; configured: {}",
            known.join(", ")
        ))
    })
}

fn timeframe(state: &ApiState, query: &Query<'_>) -> Result<(usize, Timeframe), ApiError> {
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
fn latest(
    state: &ApiState,
    symbol: &str,
    query: &Query<'_>,
) -> Result<(String, Timeframe, FrameView, i64), ApiError> {
    let id = symbol_id(state, symbol)?;
    let (frame, tf) = timeframe(state, query)?;
    let name = state.snapshot.symbols.name(id).to_string();
    let view = state.snapshot.get(id).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "no_data",
            format!("no data for {name} yet"),
        )
    })?;
    let frame_view = view.frames.get(frame).cloned().unwrap_or_default();
    let now = state.clock.now_ms();
    let age = view.last_data_ms.map_or(i64::MAX, |t| (now - t).max(0));
    if frame_view.latest().is_none() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "no_data",
            format!("no {tf} bar for {name} yet"),
        ));
    }
    Ok((name, tf, frame_view, age))
}

/// The features map as it appears in every output: names from the configuration, `null` until
/// an indicator is ready.
pub fn feature_map(names: &[String], features: &Features) -> Map<String, Value> {
    names
        .iter()
        .zip(features.values)
        .map(|(name, v)| {
            (
                name.clone(),
                if v.is_finite() { json!(v) } else { Value::Null },
            )
        })
        .collect()
}

fn features_body(
    state: &ApiState,
    name: &str,
    tf: Timeframe,
    record: &BarRecord,
    features: &Features,
    forming: bool,
    age: i64,
) -> Value {
    let bar = &record.bar;
    json!({
        "symbol": name,
        "timeframe": tf.to_string(),
        "ts": bar.ts,
        "age_ms": age,
        "forming": forming,
        "source": record.source,
        "quality": record.quality,
        "bar": { "ts": bar.ts, "open": bar.open, "high": bar.high, "low": bar.low, "close": bar.close, "volume": bar.volume },
        "features": feature_map(&state.snapshot.feature_names, features),
    })
}

pub(super) fn features(state: &ApiState, symbol: &str, query: &Query<'_>) -> Reply {
    let (name, tf, view, age) = latest(state, symbol, query)?;
    let Some((record, features, forming)) = view.latest() else {
        return Err(ApiError::not_found("no data yet"));
    };
    Ok(json(
        StatusCode::OK,
        &features_body(state, &name, tf, record, features, forming, age),
    ))
}

pub(super) fn signals(state: &ApiState, symbol: &str, query: &Query<'_>) -> Reply {
    let (name, tf, view, age) = latest(state, symbol, query)?;
    let Some((record, features, forming)) = view.latest() else {
        return Err(ApiError::not_found("no data yet"));
    };
    let signal = signals::evaluate(features, record.bar.close, age, state.stale_after_ms);
    let mut body = features_body(state, &name, tf, record, features, forming, age);
    if let Value::Object(map) = &mut body {
        map.insert("signal".into(), json!(signal.signal));
        map.insert("score".into(), json!(signal.score));
        map.insert("confidence".into(), json!(signal.confidence));
        map.insert("reasons".into(), json!(signal.reasons));
    }
    Ok(json(StatusCode::OK, &body))
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
    let store = std::sync::Arc::clone(&state.store);
    let bars = tokio::task::spawn_blocking(move || store.recent_bars(id, tf, limit))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?
        .map_err(|e| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "store_unavailable",
                e.to_string(),
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
