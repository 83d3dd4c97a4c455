//! Closed bars per second through barkeep's Redis sink into a local `redis-server`, against a
//! raw pipelined baseline in the same run.
//!
//! - `redis/raw_rpush_pipelined`: 1 000 `RPUSH key value` (one value each, the size of a
//!   MessagePack bar) in one pipeline: what the connection and server can do at best.
//! - `redis/sink_tick`: one realistic tick of 1 000 symbols, each with a closed bar and a
//!   forming update (RPUSH + LTRIM + PUBLISH bar + SET live + SET features + PUBLISH features).
//! - `redis/sink_bulk`: 10 symbols × 100 closed bars per write (catching up after a backlog).
//! - `redis/sink_tick_cluster`: the same tick to a three-master Redis Cluster (no replicas) on
//!   this machine: one pipeline per master (`REDIS_CLUSTER_NODES`).
//!
//! Each element is one closed bar. Needs `redis-server` on PATH (skipped otherwise).

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};

use barkeep::clock::Clock;
use barkeep::indicators::IndicatorParams;
use barkeep::metrics::Metrics;
use barkeep::model::{
    Bar, BarRecord, Event, FEATURE_COUNT, Features, SymbolTable, TickBatch, Timeframe,
};
use barkeep::store::reconcile::{Reconciler, Resync};
use barkeep::store::redis::{RedisSink, RedisSinkConfig, RedisStatus};
use barkeep::store::sqlite::SqliteStore;

const T0: i64 = 1_700_000_000_000;

struct Server(std::process::Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> Option<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").ok()?;
    Some(listener.local_addr().ok()?.port())
}

fn start_redis() -> Option<(Server, u16)> {
    let port = free_port()?;
    let child = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(Stdio::null())
        .spawn()
        .ok()?;
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Some((Server(child), port));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

/// Three `redis-server --cluster-enabled yes` joined by `redis-cli --cluster create` (no
/// replicas), in `dir`; their URLs once every node says `cluster_state:ok`.
fn start_cluster(dir: &std::path::Path) -> Option<(Vec<Server>, Vec<String>)> {
    let mut servers = Vec::new();
    let mut addresses = Vec::new();
    for _ in 0..3 {
        let port = free_port()?;
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--cluster-enabled",
                "yes",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .arg("--cluster-config-file")
            .arg(dir.join(format!("nodes-{port}.conf")))
            .arg("--dir")
            .arg(dir)
            .stdout(Stdio::null())
            .spawn()
            .ok()?;
        servers.push(Server(child));
        addresses.push(format!("127.0.0.1:{port}"));
    }
    for a in &addresses {
        (0..100).find(|_| {
            let up = std::net::TcpStream::connect(a.as_str()).is_ok();
            if !up {
                std::thread::sleep(Duration::from_millis(50));
            }
            up
        })?;
    }
    let created = Command::new("redis-cli")
        .args(["--cluster", "create"])
        .args(&addresses)
        .args(["--cluster-replicas", "0", "--cluster-yes"])
        .stdout(Stdio::null())
        .status()
        .ok()?;
    if !created.success() {
        return None;
    }
    let ok = |a: &String| {
        let (host, port) = a.split_once(':').unwrap_or_default();
        Command::new("redis-cli")
            .args(["-h", host, "-p", port, "CLUSTER", "INFO"])
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("cluster_state:ok"))
    };
    (0..200).find(|_| {
        let all = addresses.iter().all(ok);
        if !all {
            std::thread::sleep(Duration::from_millis(50));
        }
        all
    })?;
    let urls = addresses.iter().map(|a| format!("redis://{a}")).collect();
    Some((servers, urls))
}

/// A sink of `symbols` (one 1s timeframe, SQLite history in `dir`) writing to `target`, started.
fn sink_for(
    rt: &tokio::runtime::Runtime,
    target: barkeep::model::RedisTarget,
    symbols: &SymbolTable,
    dir: &std::path::Path,
) -> RedisSink {
    let tf: Timeframe = "1s".parse().expect("valid");
    let store = barkeep::store::history::History::Sqlite(Arc::new(
        SqliteStore::open(&dir.join("b.db"), symbols.clone()).expect("sqlite"),
    ));
    let metrics = Arc::new(Metrics::new(&["synthetic"]));
    let mut sink = RedisSink::new(
        RedisSinkConfig {
            target,
            pool_size: 1,
            prefix: "bench".into(),
            max_bars: 5_000,
            features_ttl_ms: 5_000,
            stream_maxlen: 1_000,
            pubsub: true,
            shard: barkeep::shard::Shard::ALL,
        },
        symbols.clone(),
        vec![tf],
        IndicatorParams::default().feature_names(),
        Reconciler::new(
            store,
            Arc::new(Resync::default()),
            Arc::clone(&metrics),
            Vec::new(),
        ),
        Arc::new(RedisStatus::default()),
        metrics,
        Clock::System,
    )
    .expect("sink");
    rt.block_on(sink.start(Duration::from_secs(5)));
    sink
}

/// One tick of 1 000 symbols: a closed bar and a forming update each.
fn tick_batch(tick: i64, tf: Timeframe) -> Vec<Arc<TickBatch>> {
    let ts = T0 + tick * 1_000;
    let mut events = Vec::with_capacity(2_000);
    for s in 0..1_000 {
        events.push(Event::Closed {
            record: record(s, tf, ts),
            features: features(),
        });
        events.push(Event::Forming {
            record: record(s, tf, ts + 1_000),
            features: features(),
        });
    }
    vec![Arc::new(TickBatch::new(ts + 1_000, events))]
}

/// `name`: one [`tick_batch`] per iteration through `sink`; the last tick written.
fn bench_ticks(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    rt: &tokio::runtime::Runtime,
    sink: &mut RedisSink,
    tf: Timeframe,
) -> i64 {
    let mut tick = 0_i64;
    group.bench_function(name, |b| {
        b.iter_batched(
            || {
                tick += 1;
                tick_batch(tick, tf)
            },
            |batches| rt.block_on(sink.write(&batches)).expect("sink write"),
            BatchSize::SmallInput,
        );
    });
    tick
}

fn features() -> Features {
    Features {
        values: [1.2345; FEATURE_COUNT],
    }
}

fn record(symbol: u32, tf: Timeframe, ts: i64) -> BarRecord {
    BarRecord {
        symbol,
        timeframe: tf,
        bar: Bar {
            ts,
            open: 1.08,
            high: 1.081,
            low: 1.079,
            close: 1.0805,
            volume: 1234.0,
        },
        source: "synthetic",
        quality: 0.99,
    }
}

fn redis(c: &mut Criterion) {
    let Some((_server, port)) = start_redis() else {
        eprintln!("redis-server not found: skipping the Redis benches");
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let names: Vec<String> = (0..1_000).map(|i| format!("SYM{i}")).collect();
    let symbols = SymbolTable::new(&names);
    let tf: Timeframe = "1s".parse().expect("valid");
    let url = format!("redis://127.0.0.1:{port}");
    let mut sink = sink_for(
        &rt,
        barkeep::model::RedisTarget::Standalone(url.clone()),
        &symbols,
        dir.path(),
    );

    let mut group = c.benchmark_group("redis");
    group.throughput(Throughput::Elements(1_000));
    group.sample_size(30);

    let client = redis::Client::open(url).expect("client");
    let mut raw = rt
        .block_on(client.get_multiplexed_async_connection())
        .expect("connect");
    let payload = vec![0x5a_u8; 110];
    let keys: Vec<String> = (0..1_000).map(|i| format!("raw:{i}")).collect();
    group.bench_function("raw_rpush_pipelined", |b| {
        b.iter(|| {
            let mut pipe = redis::pipe();
            for key in &keys {
                pipe.cmd("RPUSH").arg(key).arg(&payload).ignore();
            }
            rt.block_on(pipe.exec_async(&mut raw))
                .expect("raw pipeline");
        });
    });

    let mut tick = bench_ticks(&mut group, "sink_tick", &rt, &mut sink, tf);

    group.bench_function("sink_bulk", |b| {
        b.iter_batched(
            || {
                tick += 100;
                let mut events = Vec::with_capacity(1_000);
                for s in 0..10 {
                    for i in 0..100 {
                        let ts = T0 + (tick + i) * 1_000;
                        events.push(Event::Closed {
                            record: record(s, tf, ts),
                            features: features(),
                        });
                    }
                }
                vec![Arc::new(TickBatch::new(T0 + tick * 1_000, events))]
            },
            |batches| rt.block_on(sink.write(&batches)).expect("sink write"),
            BatchSize::SmallInput,
        );
    });

    let cluster_dir = tempfile::tempdir().expect("tempdir");
    match start_cluster(cluster_dir.path()) {
        None => eprintln!("no Redis Cluster could be created: skipping redis/sink_tick_cluster"),
        Some((_nodes, urls)) => {
            let mut sink = sink_for(
                &rt,
                barkeep::model::RedisTarget::Cluster(urls),
                &symbols,
                cluster_dir.path(),
            );
            bench_ticks(&mut group, "sink_tick_cluster", &rt, &mut sink, tf);
        }
    }
    group.finish();
}

criterion_group!(benches, redis);
criterion_main!(benches);
