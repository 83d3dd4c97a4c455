//! Closed bars per second through barkeep's Redis sink into a local `redis-server`, against a
//! raw pipelined baseline in the same run.
//!
//! - `redis/raw_rpush_pipelined`: 1 000 `RPUSH key value` (one value each, the size of a
//!   MessagePack bar) in one pipeline: what the connection and server can do at best.
//! - `redis/sink_tick`: one realistic tick of 1 000 symbols, each with a closed bar and a
//!   forming update (RPUSH + LTRIM + PUBLISH bar + SET live + SET features + PUBLISH features).
//! - `redis/sink_bulk`: 10 symbols × 100 closed bars per write (catching up after a backlog).
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

fn start_redis() -> Option<(Server, u16)> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .ok()?
        .local_addr()
        .ok()?
        .port();
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
    let store = barkeep::store::history::History::Sqlite(Arc::new(
        SqliteStore::open(&dir.path().join("b.db"), symbols.clone()).expect("sqlite"),
    ));
    let metrics = Arc::new(Metrics::new(&["synthetic"]));
    let url = format!("redis://127.0.0.1:{port}");
    let mut sink = RedisSink::new(
        RedisSinkConfig {
            target: barkeep::model::RedisTarget::Standalone(url.clone()),
            pool_size: 1,
            prefix: "bench".into(),
            max_bars: 5_000,
            features_ttl_ms: 5_000,
            stream_maxlen: 1_000,
            pubsub: true,
            shard: barkeep::shard::Shard::ALL,
        },
        symbols,
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

    let mut tick = 0_i64;
    group.bench_function("sink_tick", |b| {
        b.iter_batched(
            || {
                tick += 1;
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
            },
            |batches| rt.block_on(sink.write(&batches)).expect("sink write"),
            BatchSize::SmallInput,
        );
    });

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
    group.finish();
}

criterion_group!(benches, redis);
criterion_main!(benches);
