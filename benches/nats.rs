//! Messages per second barkeep's JetStream publisher sustains into a local `nats-server -js`,
//! against a raw async-nats publish loop in the same run, at 1 000 and 10 000 symbols.
//!
//! - `barkeep`: forming-bar ticks of every symbol through the streaming hub into its tap (not
//!   timed), then the publisher drains the tap: a whole message rendered again where the hub made
//!   a delta, its subject and `Nats-Msg-Id`, pipelined publishes (up to 4 096 awaiting acks),
//!   until JetStream acknowledged every one. Connecting and creating the stream are included.
//! - `raw`: the same number of messages, the same subjects, ids and payload bytes prepared
//!   beforehand, sent by a plain loop with the same pipelining (`send_publish`, acks awaited
//!   together), connecting and creating the stream included: what client and server can do.
//!
//! Also the hub's cost of the tap: `Hub::publish` of the same ticks with and without it.
//! Needs `nats-server` (on PATH or `/usr/sbin`); says so and exits otherwise. Each case gets a
//! fresh server and store. `cargo bench --bench nats [-- SYMBOLS...]`.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{context::ContextBuilder, message::PublishMessage, stream};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tokio_util::sync::CancellationToken;

use barkeep::config::NatsConfig;
use barkeep::metrics::Metrics;
use barkeep::model::{Bar, BarRecord, Event, Features, SymbolTable, TickBatch};
use barkeep::stream::hub::{Hub, StreamSettings};
use barkeep::stream::jetstream::{MAX_IN_FLIGHT, NatsStatus, Publisher, Tap, message_id};
use barkeep::stream::message::Names;

const T0: i64 = 1_700_000_000_000;

/// The server, and its store (removed with it).
struct Server {
    child: Child,
    _store: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_nats() -> Option<(Server, String)> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .ok()?
        .local_addr()
        .ok()?
        .port();
    let dir = tempfile::tempdir().ok()?;
    let bin = ["nats-server", "/usr/sbin/nats-server"]
        .into_iter()
        .find(|b| Command::new(b).arg("--version").output().is_ok())?;
    let child = Command::new(bin)
        .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    for _ in 0..200 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Some((
                Server { child, _store: dir },
                format!("nats://127.0.0.1:{port}"),
            ));
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    None
}

fn config(url: &str, queue: usize) -> NatsConfig {
    NatsConfig {
        servers: vec![url.to_string()],
        stream: "bench".into(),
        subject_prefix: "barkeep".into(),
        max_age_ms: Some(3_600_000),
        max_messages: None,
        max_bytes: None,
        duplicate_window_ms: 120_000,
        replicas: 1,
        queue,
    }
}

fn hub(symbols: usize, metrics: &Arc<Metrics>) -> Arc<Hub> {
    let names: Vec<String> = (0..symbols).map(|i| format!("SYM{i}")).collect();
    Hub::new(
        Names {
            symbols: SymbolTable::new(names.iter().map(String::as_str)),
            frames: vec!["1m".parse().expect("tf")],
            timeframes: vec!["1m".into()],
            features: std::array::from_fn(|i| format!("feature_{i}")),
        },
        StreamSettings {
            replay: 10,
            client_queue: 16,
            stale_after_ms: 120_000,
        },
        Arc::clone(metrics),
    )
}

/// Tick `k` of every symbol: a forming update of the same minute bar, prices moving.
fn ticks(symbols: usize, count: usize) -> Vec<TickBatch> {
    (0..count)
        .map(|k| {
            let events = (0..symbols)
                .map(|s| {
                    let price = 100.0 + s as f64 + k as f64 * 0.01;
                    let mut bar = Bar::from_price(T0, 100.0 + s as f64, 1.0);
                    bar.high = bar.high.max(price);
                    bar.close = price;
                    bar.volume = 1.0 + k as f64;
                    Event::Forming {
                        record: BarRecord {
                            symbol: s as u32,
                            timeframe: "1m".parse().expect("tf"),
                            bar,
                            source: "synthetic",
                            quality: 1.0,
                        },
                        features: Features {
                            values: std::array::from_fn(|i| price * (1.0 + i as f64 / 100.0)),
                        },
                    }
                })
                .collect();
            TickBatch::new(T0 + k as i64 * 1_000, events)
        })
        .collect()
}

/// Messages per second through barkeep's publisher; also the messages and the hub's time per
/// tick with the tap.
async fn barkeep_rate(url: &str, symbols: usize, count: usize) -> (f64, usize, Duration) {
    let metrics = Arc::new(Metrics::new(&["synthetic"]));
    let hub = hub(symbols, &metrics);
    let batches = ticks(symbols, count);
    let status = NatsStatus::new("bench");
    let publisher = Publisher::new(
        config(url, 100_000_000),
        &hub,
        status,
        Arc::clone(&metrics),
        Duration::from_secs(120),
    );
    let started = Instant::now();
    for b in &batches {
        hub.publish(b);
    }
    let hub_time = started.elapsed() / count as u32;
    let total = metrics.nats_queue_depth.get() as usize;
    hub.close();
    let started = Instant::now();
    publisher.run(CancellationToken::new()).await;
    let took = started.elapsed();
    assert_eq!(
        metrics.nats_acked.get() as usize,
        total,
        "every message acknowledged"
    );
    (total as f64 / took.as_secs_f64(), total, hub_time)
}

/// The hub's time per tick without a tap.
fn hub_alone(symbols: usize, count: usize) -> Duration {
    let metrics = Arc::new(Metrics::new(&["synthetic"]));
    let hub = hub(symbols, &metrics);
    let batches = ticks(symbols, count);
    let started = Instant::now();
    for b in &batches {
        hub.publish(b);
    }
    started.elapsed() / count as u32
}

/// Messages per second of a plain pipelined loop over the same messages.
async fn raw_rate(url: &str, symbols: usize, count: usize) -> f64 {
    // The same subjects, ids and bytes, prepared beforehand.
    let metrics = Arc::new(Metrics::new(&["synthetic"]));
    let hub = hub(symbols, &metrics);
    let tap = Tap::new(100_000_000, Arc::clone(&metrics));
    hub.set_tap(Arc::clone(&tap));
    for b in &ticks(symbols, count) {
        hub.publish(b);
    }
    let mut frames = std::collections::VecDeque::new();
    tap.take(usize::MAX, &mut frames);
    let messages: Vec<(String, String, bytes::Bytes)> = frames
        .iter()
        .map(|f| {
            let (symbol, _) = Hub::channel_parts(f.channel);
            let name = hub.names().symbols.name(symbol);
            (
                format!("barkeep.{}.{name}", f.data_type),
                message_id(hub.names(), symbol, f),
                hub.snapshot_json(f),
            )
        })
        .collect();
    let started = Instant::now();
    let client = async_nats::connect(url).await.expect("connect");
    let js = ContextBuilder::new()
        .max_ack_inflight(MAX_IN_FLIGHT * 2)
        .backpressure_on_inflight(true)
        .build(client);
    js.create_or_update_stream(stream::Config {
        name: "bench".into(),
        subjects: vec!["barkeep.>".into()],
        max_age: Duration::from_secs(3_600),
        duplicate_window: Duration::from_secs(120),
        ..Default::default()
    })
    .await
    .expect("stream");
    let mut in_flight = FuturesUnordered::new();
    for (subject, id, payload) in &messages {
        if in_flight.len() >= MAX_IN_FLIGHT {
            in_flight.next().await;
        }
        let message = PublishMessage::build()
            .payload(payload.clone())
            .message_id(id);
        let ack = js
            .send_publish(subject.clone(), message)
            .await
            .expect("publish");
        in_flight.push(async move {
            ack.await.expect("ack");
        });
    }
    while in_flight.next().await.is_some() {}
    messages.len() as f64 / started.elapsed().as_secs_f64()
}

fn main() {
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let sizes = if sizes.is_empty() {
        vec![1_000, 10_000]
    } else {
        sizes
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    println!(
        "symbols  messages  raw msg/s  barkeep msg/s  ratio  hub/tick no tap  hub/tick with tap"
    );
    for symbols in sizes {
        // About 100 000 messages a case (three a symbol a tick).
        let count = (100_000 / (3 * symbols)).max(3);
        let Some((server, url)) = start_nats() else {
            println!("nats-server not found: skipped");
            return;
        };
        let raw = runtime.block_on(raw_rate(&url, symbols, count));
        drop(server);
        let Some((_server, url)) = start_nats() else {
            return;
        };
        let (ours, total, with_tap) = runtime.block_on(barkeep_rate(&url, symbols, count));
        let without = hub_alone(symbols, count);
        println!(
            "{symbols:>7}  {total:>8}  {raw:>9.0}  {ours:>13.0}  {:>5.2}  {:>15.2?}  {:>17.2?}",
            ours / raw,
            without,
            with_tap
        );
    }
}
