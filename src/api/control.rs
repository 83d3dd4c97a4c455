/*!
The run-time control endpoints, `/streaming/config/…`: what is collected, how often and from
whom, changed without a restart.

Every request passes the access rule first ([`access::authorize`]: a change needs the bearer
token when `API_TOKEN` is set, a loopback peer otherwise) and the body limit (a declared
`Content-Length` over [`access::MAX_BODY_BYTES`] is a 413), before its path is even looked up,
so a refused caller learns nothing about which routes exist. Bodies are read with
[`access::read_json`] (bounded, a 400 naming the field). Answers are JSON, errors as elsewhere.

- `workers`: one per source and data type (`market_data:yahoo`, `history:yahoo`), switched in
  the source chain ([`SourceChain::set_running`]), so every asker obeys it.
- `cadences/market_data`: the collector's [`CadenceCell`].
- `telemetry/{data_type}`: the chain's request records.

Changes outlive a restart: each is written to the store's `runtime_settings`, under this
instance's shard ([`Shard::key`]: shards sharing one PostgreSQL keep their own), before it is
answered, and [`restore`] applies them at start — a stored cadence only while the environment
still configures what it did when the change was made (an edited `COLLECTION_INTERVAL` wins).
*/

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Body;
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{Value, json};

use super::{ApiError, ApiState, Query, access};
use crate::clock::Clock;
use crate::collector::cadence::{Cadence, CadenceCell, CadenceChange};
use crate::metrics::Metrics;
use crate::shard::Shard;
use crate::sources::RateLimit;
use crate::sources::chain::{BreakerSettings, DataType, SourceChain, TELEMETRY_CAPACITY};
use crate::store::history::{History, StoreError};

type Reply = Result<Response<Full<Bytes>>, ApiError>;

/// Telemetry records answered when `limit` is not given.
const DEFAULT_TELEMETRY_LIMIT: usize = 100;

/// The `runtime_settings` names.
const CADENCE_KEY: &str = "cadence:market_data";
const WORKERS_KEY: &str = "workers";

/// What the control endpoints act on.
pub struct Controls {
    /// The collector's source chain: worker switches, counts, telemetry.
    pub chain: Arc<SourceChain>,
    /// The collector's cadence.
    pub cadence: Arc<CadenceCell>,
    /// The cadence the environment configures (`DELETE` returns to it).
    pub configured: Cadence,
    /// The shortest of `TIMEFRAMES`, which bounds the interval.
    pub shortest_timeframe_ms: u64,
    /// The key of this instance's `runtime_settings` rows ([`Shard::key`]).
    shard_key: String,
    /// One change at a time: read, check, store, apply.
    changes: tokio::sync::Mutex<()>,
}

impl Controls {
    pub fn new(
        chain: Arc<SourceChain>,
        cadence: Arc<CadenceCell>,
        configured: Cadence,
        shortest_timeframe_ms: u64,
        shard: Shard,
    ) -> Self {
        Self {
            chain,
            cadence,
            configured,
            shortest_timeframe_ms,
            shard_key: shard.key(),
            changes: tokio::sync::Mutex::new(()),
        }
    }

    /// Controls over no source and a cadence nobody follows: for an API served without a
    /// collector (handler tests, the HTTP fuzz target).
    pub fn detached(metrics: Arc<Metrics>, clock: Clock) -> Self {
        let chain = SourceChain::new(
            Vec::new(),
            |_| RateLimit::UNLIMITED,
            BreakerSettings {
                failures: 5,
                open_for: std::time::Duration::from_secs(60),
            },
            true,
            metrics,
            clock,
        );
        let cadence = Cadence {
            interval_ms: 1_000,
            enabled: true,
            retry_attempts: 0,
            retry_backoff_ms: 100,
            vendor_fallback: true,
        };
        Self::new(
            Arc::new(chain),
            CadenceCell::new(cadence),
            cadence,
            60_000,
            Shard::ALL,
        )
    }

    /// Every worker: (source index, data type), in `SOURCES` order.
    fn workers(&self) -> impl Iterator<Item = (usize, DataType)> + '_ {
        (0..self.chain.len()).flat_map(|i| DataType::ALL.into_iter().map(move |d| (i, d)))
    }

    fn worker_id(&self, i: usize, data_type: DataType) -> String {
        format!("{}:{}", data_type.as_str(), self.chain.source(i).name())
    }

    /// The worker named `id` (`market_data:yahoo`).
    fn find(&self, id: &str) -> Option<(usize, DataType)> {
        let (data_type, source) = id.split_once(':')?;
        Some((self.chain.position(source)?, DataType::parse(data_type)?))
    }

    fn stopped_ids(&self) -> Vec<String> {
        self.workers()
            .filter(|&(i, d)| !self.chain.is_running(i, d))
            .map(|(i, d)| self.worker_id(i, d))
            .collect()
    }
}

/// Applies the changes stored by an earlier run to `controls` (see the module comment), logging
/// what it applied and what it dropped.
///
/// # Errors
/// SQLite failures.
pub async fn restore(controls: &Controls, store: &History, now_ms: i64) -> Result<(), StoreError> {
    let shard = controls.shard_key.as_str();
    if let Some(raw) = store.setting(shard, CADENCE_KEY).await? {
        match serde_json::from_str::<StoredCadence>(&raw) {
            Ok(stored)
                if stored.configured == controls.configured
                    && stored.set.check(controls.shortest_timeframe_ms).is_ok() =>
            {
                tracing::info!(cadence = ?stored.set, "market_data cadence from a run-time change (stored in SQLite)");
                controls.cadence.set(stored.set);
            }
            _ => {
                tracing::warn!(
                    stored = %raw,
                    "the stored run-time cadence is dropped: the environment's changed since it was set"
                );
                store.put_setting(shard, CADENCE_KEY, None, now_ms).await?;
            }
        }
    }
    if let Some(raw) = store.setting(shard, WORKERS_KEY).await? {
        let stored: StoredWorkers = serde_json::from_str(&raw).unwrap_or_default();
        for id in &stored.stopped {
            match controls.find(id) {
                Some((i, d)) => {
                    controls.chain.set_running(i, d, false);
                    tracing::info!(worker = %id, "worker stopped by a run-time change (stored in SQLite); start it with POST /streaming/config/workers/{id}/start");
                }
                None => {
                    tracing::warn!(worker = %id, "a stopped worker of a source no longer configured is forgotten")
                }
            }
        }
    }
    Ok(())
}

/// What `cadence:market_data` holds: the change and the environment's cadence when it was
/// made.
#[derive(serde::Serialize, serde::Deserialize)]
struct StoredCadence {
    configured: Cadence,
    set: Cadence,
}

#[derive(Default, serde::Serialize, serde::Deserialize)]
struct StoredWorkers {
    stopped: Vec<String>,
}

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
    let query = Query::parse(raw_query.as_deref())?;
    let segments = super::path_segments(&path)?;
    let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
    let method = req.method().clone();
    let Some(rest) = segments.strip_prefix(&["streaming", "config"]) else {
        return Err(ApiError::not_found(format!("no route for {path}")));
    };
    let c = &state.control;
    match rest {
        ["workers"] => {
            allow(&method, &[Method::GET])?;
            query.allow(&[])?;
            Ok(workers_answer(state, c.workers().collect(), None))
        }
        ["workers", all @ ("start-all" | "stop-all")] => {
            allow(&method, &[Method::POST])?;
            query.allow(&[])?;
            let run = *all == "start-all";
            let chosen: Vec<_> = c.workers().collect();
            let changed = switch(state, &chosen, run).await?;
            Ok(workers_answer(state, chosen, Some(changed)))
        }
        ["workers", id] => {
            allow(&method, &[Method::GET])?;
            query.allow(&[])?;
            let w = worker(c, id)?;
            Ok(super::json(StatusCode::OK, &worker_json(state, w)))
        }
        ["workers", id, op @ ("start" | "stop")] => {
            allow(&method, &[Method::POST])?;
            query.allow(&[])?;
            let w = worker(c, id)?;
            let changed = switch(state, &[w], *op == "start").await?;
            let mut body = worker_json(state, w);
            body["changed"] = json!(changed == 1);
            Ok(super::json(StatusCode::OK, &body))
        }
        ["cadences"] => {
            allow(&method, &[Method::GET])?;
            query.allow(&[])?;
            Ok(super::json(
                StatusCode::OK,
                &json!({ "cadences": { "market_data": cadence_json(state) } }),
            ))
        }
        ["cadences", data_type] => {
            query.allow(&[])?;
            if *data_type != "market_data" {
                return Err(ApiError::not_found(format!(
                    "no cadence for `{data_type}`; known: market_data (history is asked when a gap or the bootstrap needs it)"
                )));
            }
            match method {
                Method::GET | Method::HEAD => {}
                Method::PUT => {
                    let change: CadenceChange = access::read_json(req).await?;
                    set_cadence(state, Some(&change)).await?;
                }
                Method::DELETE => set_cadence(state, None).await?,
                // Any other method: the 405.
                _ => allow(&method, &[Method::GET, Method::PUT, Method::DELETE])?,
            }
            Ok(super::json(StatusCode::OK, &cadence_json(state)))
        }
        ["telemetry", data_type] => {
            allow(&method, &[Method::GET])?;
            query.allow(&["limit"])?;
            let d = DataType::parse(data_type).ok_or_else(|| {
                ApiError::not_found(format!(
                    "no telemetry for `{data_type}`; known: market_data, history"
                ))
            })?;
            let limit = match query.get("limit") {
                None => DEFAULT_TELEMETRY_LIMIT,
                Some(raw) => raw
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=TELEMETRY_CAPACITY).contains(n))
                    .ok_or_else(|| {
                        ApiError::invalid(
                            "limit",
                            format!(
                                "limit: `{raw}` is not a whole number in 1..={TELEMETRY_CAPACITY}"
                            ),
                        )
                    })?,
            };
            Ok(super::json(
                StatusCode::OK,
                &telemetry_json(state, d, limit),
            ))
        }
        ["instruments", rest @ ..] => {
            query.allow(&[])?;
            super::instruments::route(req, state, rest).await
        }
        _ => Err(ApiError::not_found(format!("no route for {path}"))),
    }
}

/// A 405 unless `method` is one of `allowed` (HEAD goes with GET).
fn allow(method: &Method, allowed: &[Method]) -> Result<(), ApiError> {
    let ok = allowed
        .iter()
        .any(|m| m == method || (*m == Method::GET && *method == Method::HEAD));
    if ok {
        return Ok(());
    }
    let names: Vec<&str> = allowed.iter().map(Method::as_str).collect();
    Err(ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{method} is not allowed here; use {}", names.join(" or ")),
    ))
}

fn worker(c: &Controls, id: &str) -> Result<(usize, DataType), ApiError> {
    c.find(id).ok_or_else(|| {
        let known: Vec<String> = c.workers().map(|(i, d)| c.worker_id(i, d)).collect();
        ApiError::not_found(format!("no worker `{id}`; known: {}", known.join(", ")))
    })
}

fn store_failed(e: StoreError) -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "store_unavailable",
        format!("the change could not be stored, so it was not made: {e}"),
    )
}

/// Writes `value` under `name`, off the async threads.
async fn persist(
    state: &ApiState,
    name: &'static str,
    value: Option<String>,
) -> Result<(), ApiError> {
    let now = state.clock.now_ms();
    state
        .store
        .put_setting(&state.control.shard_key, name, value, now)
        .await
        .map_err(store_failed)
}

/// Starts or stops `chosen`, stored first; how many changed.
async fn switch(
    state: &ApiState,
    chosen: &[(usize, DataType)],
    run: bool,
) -> Result<usize, ApiError> {
    let c = &state.control;
    let _one = c.changes.lock().await;
    let mut stopped = c.stopped_ids();
    for &(i, d) in chosen {
        let id = c.worker_id(i, d);
        stopped.retain(|s| *s != id);
        if !run {
            stopped.push(id);
        }
    }
    let value = (!stopped.is_empty()).then(|| json!({ "stopped": stopped }).to_string());
    persist(state, WORKERS_KEY, value).await?;
    let changed = chosen
        .iter()
        .filter(|&&(i, d)| c.chain.set_running(i, d, run))
        .count();
    for &(i, d) in chosen {
        tracing::info!(worker = %c.worker_id(i, d), running = run, "worker switched at run time");
    }
    Ok(changed)
}

/// Applies `change` to the cadence (`None`: back to the configured one), stored first.
async fn set_cadence(state: &ApiState, change: Option<&CadenceChange>) -> Result<(), ApiError> {
    let c = &state.control;
    let _one = c.changes.lock().await;
    let next = match change {
        Some(change) => c
            .cadence
            .get()
            .with(change, c.shortest_timeframe_ms)
            .map_err(|e| ApiError::invalid(e.field, e.to_string()))?,
        None => c.configured,
    };
    let value = change.map(|_| {
        serde_json::to_string(&StoredCadence {
            configured: c.configured,
            set: next,
        })
        .unwrap_or_default()
    });
    persist(state, CADENCE_KEY, value).await?;
    c.cadence.set(next);
    tracing::info!(cadence = ?next, "market_data cadence changed at run time");
    Ok(())
}

fn cadence_json(state: &ApiState) -> Value {
    let c = &state.control;
    let now = c.cadence.get();
    json!({
        "data_type": "market_data",
        "interval_ms": now.interval_ms,
        "enabled": now.enabled,
        "retry_attempts": now.retry_attempts,
        "retry_backoff_ms": now.retry_backoff_ms,
        "vendor_fallback": now.vendor_fallback,
        "next_run_ms": c.cadence.next_tick_ms().filter(|_| now.enabled),
        "configured": c.configured,
    })
}

fn worker_json(state: &ApiState, (i, d): (usize, DataType)) -> Value {
    let c = &state.control;
    let w = c.chain.worker_status(i, d);
    let cadence = c.cadence.get();
    let status = match (w.running, d, cadence.enabled) {
        (false, _, _) => "stopped",
        (true, DataType::MarketData, false) => "paused",
        (true, _, _) => "running",
    };
    let next_run = (status == "running" && d == DataType::MarketData)
        .then(|| c.cadence.next_tick_ms())
        .flatten();
    json!({
        "worker_id": c.worker_id(i, d),
        "source": w.source,
        "data_type": d,
        "status": status,
        "breaker": w.breaker,
        "last_run_ms": w.last_run_ms,
        "next_run_ms": next_run,
        "success_count": w.success_count,
        "error_count": w.error_count,
        "current_vendor": w.source,
        "last_error": w.last_error.map(|(at, e)| json!({
            "at_ms": at,
            "message": crate::secrets::scrub(&e),
        })),
    })
}

fn workers_answer(
    state: &ApiState,
    chosen: Vec<(usize, DataType)>,
    changed: Option<usize>,
) -> Response<Full<Bytes>> {
    let workers: Vec<Value> = chosen.into_iter().map(|w| worker_json(state, w)).collect();
    let mut body = json!({ "count": workers.len(), "workers": workers });
    if let Some(n) = changed {
        body["changed"] = json!(n);
    }
    super::json(StatusCode::OK, &body)
}

fn telemetry_json(state: &ApiState, d: DataType, limit: usize) -> Value {
    let records = state.control.chain.telemetry(d, limit);
    let symbols = &state.snapshot.symbols;
    let records: Vec<Value> = records
        .iter()
        .map(|r| {
            let names: Vec<&str> = r
                .symbols
                .iter()
                .filter(|&&id| (id as usize) < symbols.len())
                .map(|&id| symbols.name(id).as_ref())
                .collect();
            json!({
                "at_ms": r.at_ms,
                "vendor": r.vendor,
                "symbols": names,
                "latency_ms": r.latency.as_secs_f64() * 1_000.0,
                "outcome": r.outcome,
                "error": (!r.error.is_empty()).then(|| crate::secrets::scrub(&r.error)),
                "retry_count": r.retry_count,
                "fallback": r.fallback,
            })
        })
        .collect();
    json!({ "data_type": d, "count": records.len(), "records": records })
}
