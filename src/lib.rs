//! barkeep — a market-data sidecar for trading bots.
//!
//! Data flows one way, every `COLLECTION_INTERVAL` (the type on each arrow in brackets):
//!
//! ```text
//! providers ─[Quote, Bar]─▶ sources::chain ─▶ collector ─[Quote]─▶ pipeline per symbol:
//!                                  ▲              │                 validate ─▶ bars ─▶ indicators
//!                  [history Bar]   │              │◀──────[Event: Closed, Forming, Rejected,
//!                          repair ─┘              │         Gap, Session, Liveness, Revision]
//!                             ▲ [RepairJob]       │
//!                             └── gaps ───────────┤
//!                                                 ├─[Arc<TickBatch>]─▶ store::writer ─▶ sqlite,
//!                                                 │                       then ─▶ redis (rings, features, messages)
//!                                                 │                       store::reconcile: sqlite ─▶ redis
//!                                                 ├─[SymbolView]─▶ store::snapshot ─▶ api (HTTP)
//!                                                 └─[Arc<TickBatch>]─▶ stream::hub ─[Frame]─▶ api (SSE, WebSocket)
//!                                                                          └─[Frame, tap]─▶ stream::jetstream ─▶ NATS
//! ```
//!
//! Modules, in the order data meets them:
//! - [`env`] — the one reader of environment variables (a leaf): typed values, errors that name
//!   the variable.
//! - [`config`] — environment → validated [`config::Config`], every value checked against the
//!   others; the providers' part comes from the sources' registry.
//! - [`instrument`] — what a generic symbol stands for (index, FX, crypto, ticker), a leaf.
//! - [`instruments`] — the symbols collected: `SYMBOLS` with the changes stored by the API
//!   applied on top, and adding or deleting one at run time (stored, then told to the
//!   collector, which warms an added one up and collects it from the next tick). The shared
//!   [`model::SymbolTable`] announces each change ([`model::SymbolTable::changes`]); the push
//!   streams' subscriptions and the background bootstrap follow that one notification.
//! - [`model`] — the plain data everything passes around: symbols, timeframes, quotes, bars,
//!   and what the pipeline emits (events, tick batches, checkpoints). Imports nothing else.
//! - [`clock`] — "now", injectable so tests control time.
//! - [`calendar`] — each symbol's trading calendar: open or closed at an instant, until when.
//! - [`sources`] — the [`sources::Source`] trait, the providers (simulated, CSV `replay`, the
//!   REST/WebSocket ones, each one folder listed once in [`sources::registry`]) and the source
//!   chain, the only way anything asks them (breakers, budgets, permits, deadlines).
//! - [`collector`] — the tick loop: quotes through the source chain with deadline and fallback,
//!   then the pipelines, then the views the API reads and the batch for the stores; streams,
//!   warm-up and the collector's side of gap repair.
//! - [`pipeline`] — per symbol: its session, then [`validate`] → [`bars`] → [`indicators`],
//!   emitting events.
//! - [`validate`] — rules, quality score, reject reasons.
//! - [`bars`] — quotes → OHLCV per timeframe, forming vs closed, gaps.
//! - [`indicators`] — O(1) incremental indicators exact to TA-Lib, with forming-bar peeks and
//!   checkpoints.
//! - [`signals`] — buy/sell/neutral from the features, by documented rules.
//! - [`store`] — one writer feeding history first (SQLite, or PostgreSQL with `POSTGRES_URL`,
//!   behind one `History` type), then Redis (one server or a cluster); history's reader queries; the resync that rebuilds
//!   Redis rings from history; the lock-free snapshot the API reads.
//! - [`api`] — the hyper HTTP server and its JSON endpoints.
//! - [`stream`] — streaming to clients: the collector's batches → one message model, numbered
//!   per channel with a replay buffer, fanned out over SSE and WebSocket (`/streaming/…`), and
//!   tapped to NATS JetStream (`NATS_URL`) with message ids that make retries idempotent.
//! - [`alerts`] — rules over the metrics and the snapshot, evaluated every interval on a task of
//!   their own: `/alerts`, log lines, `alert*` metrics and the webhook (`ALERT_WEBHOOK_URL`).
//! - [`metrics`] — typed counters, gauges and histograms; JSON and Prometheus renderings.
//! - [`repair`] — gaps found while running, fetched again from history off the tick.
//! - [`bootstrap`] — `barkeep bootstrap`: history into SQLite, resumable, with progress; while
//!   running, in the background, also for each instrument added at run time.
//! - [`shard`] — `SHARD=i/N`: which symbols this instance owns (rendezvous hashing), a leaf.
//! - [`secrets`] — every configured secret scrubbed from log lines and API text.
//! - [`app`] — wiring, start-up warm-up, ordered shutdown.
//! - [`replay`] — `barkeep replay`: a CSV file through the validator and the indicators.

pub mod alerts;
pub mod api;
pub mod app;
pub mod bars;
pub mod bootstrap;
pub mod calendar;
pub mod clock;
pub mod collector;
pub mod config;
pub mod env;
pub mod indicators;
pub mod instrument;
pub mod instruments;
pub mod metrics;
pub mod model;
pub mod pipeline;
pub mod repair;
pub mod replay;
pub mod secrets;
pub mod shard;
pub mod signals;
pub mod sources;
pub mod store;
pub mod stream;
pub mod validate;
