//! The store chain (`store::writer`: SQLite first, then Redis) against a real `redis-server` and
//! a real SQLite file, both started by the test: a Redis sink that falls behind its queue loses
//! nothing, and the resync that rebuilds its rings is counted.

mod common;

use std::sync::Arc;
use std::time::Duration;

use barkeep::clock::Clock;
use barkeep::indicators::IndicatorParams;
use barkeep::metrics::Metrics;
use barkeep::model::{
    Bar, BarRecord, Event, FEATURE_COUNT, Features, SymbolTable, TickBatch, Timeframe,
};
use barkeep::store::history::History;
use barkeep::store::reconcile::{Reconciler, Resync};
use barkeep::store::redis::{RedisSink, RedisSinkConfig, RedisStatus};
use barkeep::store::sqlite::SqliteStore;
use barkeep::store::writer::{RedisQueue, StoreChain};
use common::{RedisServer, ring, sqlite_newest};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const T0: i64 = 1_700_000_040_000;
const KEY: &str = "barkeep:bars:{EURUSD}:1m";

fn closed(tf: Timeframe, i: i64) -> Event {
    let close = 1.0 + i as f64 / 1_000.0;
    Event::Closed {
        record: BarRecord {
            symbol: 0,
            timeframe: tf,
            bar: Bar::from_price(T0 + i * 60_000, close, 1.0),
            source: "synthetic",
            quality: 1.0,
        },
        features: Features {
            values: [0.5; FEATURE_COUNT],
        },
    }
}

/// Waits on a tokio condition (polled every 20 ms) for at most `timeout`.
async fn until(timeout: Duration, mut ready: impl FnMut() -> bool) -> bool {
    tokio::time::timeout(timeout, async {
        while !ready() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .is_ok()
}

#[test]
fn a_full_redis_queue_loses_nothing_and_the_resync_is_counted() {
    let redis = RedisServer::start(&[]);
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("chain.db");
    let symbols = SymbolTable::new(["EURUSD"]);
    let tf: Timeframe = "1m".parse().expect("tf");
    let store = History::Sqlite(Arc::new(
        SqliteStore::open(&db, symbols.clone()).expect("sqlite"),
    ));
    let metrics = Arc::new(Metrics::new(&["synthetic"]));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    const BATCHES: i64 = 40;
    const REDIS_QUEUE: usize = 4;

    let counter = |name: &str| {
        metrics
            .to_json()
            .get("counters")
            .and_then(|c| c.get(name))
            .and_then(serde_json::Value::as_u64)
            .unwrap_or_default()
    };
    runtime.block_on(async {
        let resync = Arc::new(Resync::default());
        let mut sink = RedisSink::new(
            RedisSinkConfig {
                target: barkeep::model::RedisTarget::Standalone(redis.url()),
                pool_size: 1,
                prefix: "barkeep".into(),
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
                store.clone(),
                Arc::clone(&resync),
                Arc::clone(&metrics),
                Vec::new(),
            ),
            Arc::new(RedisStatus::default()),
            Arc::clone(&metrics),
            Clock::System,
        )
        .expect("sink");
        sink.start(Duration::from_secs(5)).await;
        assert_eq!(counter("redis_resyncs_total"), 1, "the start-up reconcile");

        let (redis_tx, redis_rx) = mpsc::channel(REDIS_QUEUE);
        let (stores_tx, stores_rx) = mpsc::channel(1_024);
        let chain = StoreChain::new(
            store.clone(),
            Some(RedisQueue {
                tx: redis_tx,
                resync,
            }),
            Duration::from_millis(50),
            Arc::clone(&metrics),
            Clock::System,
        );
        let chain = tokio::spawn(chain.run(stores_rx));
        // The Redis sink is not running yet: it is behind by every batch after the fourth.
        for i in 0..BATCHES {
            let batch = TickBatch::new(T0 + i * 60_000, vec![closed(tf, i)]);
            stores_tx.send(Arc::new(batch)).await.expect("chain runs");
        }
        let full = BATCHES as u64 - REDIS_QUEUE as u64;
        assert!(
            until(Duration::from_secs(10), || counter(
                "redis_queue_full_total"
            ) == full)
            .await,
            "{full} batches found the Redis queue full"
        );
        let token = CancellationToken::new();
        let sink = tokio::spawn(sink.run(redis_rx, token.clone()));
        let mut conn = redis.client();
        let caught_up = until(Duration::from_secs(10), || {
            ring(&mut conn, KEY).len() == BATCHES as usize
        })
        .await;
        assert!(
            caught_up,
            "the ring holds every bar: {:?}",
            ring(&mut conn, KEY)
        );
        assert_eq!(
            counter("redis_resyncs_total"),
            2,
            "one resync for the batches the queue could not take"
        );
        assert_eq!(
            counter("redis_reconnects_total"),
            0,
            "a resync is no reconnect"
        );
        drop(stores_tx);
        tokio::time::timeout(Duration::from_secs(10), chain)
            .await
            .expect("the chain stops when the collector's queue closes")
            .expect("join");
        tokio::time::timeout(Duration::from_secs(10), sink)
            .await
            .expect("the sink stops when the chain has stopped")
            .expect("join");
    });
    let mut conn = redis.client();
    let bars = ring(&mut conn, KEY);
    assert_eq!(bars.len(), BATCHES as usize);
    assert!(
        bars.windows(2).all(|w| w[1].0 - w[0].0 == 60_000),
        "oldest first, no gap, no duplicate"
    );
    assert_eq!(bars, sqlite_newest(&db, "EURUSD", "1m", 5_000));
    assert_eq!(counter("sqlite_bars_written_total"), BATCHES as u64);
    assert_eq!(store.pending_rows(), 0);
}
