//! Bar rows per second barkeep's PostgreSQL store flushes into a local PostgreSQL, against a raw
//! `COPY bars FROM STDIN (FORMAT binary)` loop of the same rows into the same schema, in the same
//! run (issue 14).
//!
//! - `barkeep`: each round, one tick's closed bars of every symbol absorbed into the store's
//!   buffer (not timed), then `History::flush` (timed): the writer's code path — one
//!   transaction, the bars as whole columns through `INSERT … SELECT FROM UNNEST(…) ON
//!   CONFLICT DO UPDATE`, from the pool.
//! - `copy`: the same rows, one `COPY … (FORMAT binary)` per round on one plain connection,
//!   timed from the start of the COPY to its end (the rows are built beforehand). COPY only
//!   appends; it cannot upsert, which barkeep must (a retried flush stores nothing twice).
//! - `unnest`: the same rows as one plain `INSERT … SELECT FROM UNNEST(…)` (no `ON CONFLICT`)
//!   per round on that connection: what the array statement costs without the upsert, to tell
//!   the upsert's share of the gap from the statement's.
//!
//! Each batch size gets a fresh server (tests/common/postgres.rs: `initdb` into a temp dir,
//! `fsync=off`, a free port). Needs PostgreSQL's binaries (`apt-get install postgresql`).
//! `cargo bench --bench postgres [-- ROWS_PER_FLUSH...]` (default 1000 10000).

#[path = "../tests/common/postgres.rs"]
mod postgres;

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::Type;

use barkeep::model::{Bar, BarRecord, Event, Features, SymbolTable, TickBatch};
use barkeep::store::history::History;
use barkeep::store::postgres::PgStore;
use postgres::PgServer;

const T0: i64 = 1_700_000_000_000;
const ROUNDS: usize = 20;

/// A free TCP port on 127.0.0.1 (for `postgres`).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Polls `f` every 50 ms until it returns `Some` or `timeout` passes.
fn wait_for<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let end = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() > end {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn bar(symbol: usize, round: usize) -> Bar {
    let price = 100.0 + symbol as f64 + round as f64 * 0.01;
    Bar::from_price(T0 + round as i64 * 60_000, price, 1.0)
}

fn tick(symbols: usize, round: usize) -> TickBatch {
    let events = (0..symbols)
        .map(|s| Event::Closed {
            record: BarRecord {
                symbol: s as u32,
                timeframe: "1m".parse().expect("tf"),
                bar: bar(s, round),
                source: "synthetic",
                quality: 1.0,
            },
            features: Features {
                values: [f64::NAN; barkeep::model::FEATURE_COUNT],
            },
        })
        .collect();
    TickBatch::new(round as i64, events)
}

/// Seconds spent flushing, `ROUNDS` flushes of `symbols` bars.
async fn barkeep_flushes(url: &str, names: &[String]) -> f64 {
    let symbols = SymbolTable::new(names.iter().map(String::as_str));
    let store = PgStore::new(url, 2, symbols).expect("store");
    store.apply_schema().await.expect("schema");
    let history = History::Postgres(Arc::new(store));
    let mut spent = Duration::ZERO;
    for round in 0..ROUNDS {
        history.absorb(&tick(names.len(), round));
        let start = Instant::now();
        let stats = history.flush().await.expect("flush");
        spent += start.elapsed();
        assert_eq!(stats.bars, names.len());
    }
    spent.as_secs_f64()
}

/// Seconds spent in `ROUNDS` binary COPYs of the same rows.
async fn raw_copies(url: &str, names: &[String]) -> f64 {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(connection);
    let types = [
        Type::TEXT,
        Type::TEXT,
        Type::INT8,
        Type::FLOAT8,
        Type::FLOAT8,
        Type::FLOAT8,
        Type::FLOAT8,
        Type::FLOAT8,
        Type::TEXT,
        Type::FLOAT8,
    ];
    let mut spent = Duration::ZERO;
    for round in 0..ROUNDS {
        let rows: Vec<Bar> = (0..names.len()).map(|s| bar(s, round)).collect();
        let start = Instant::now();
        let sink = client
            .copy_in(
                "COPY bars (symbol, timeframe, ts, open, high, low, close, volume, source, quality)
                 FROM STDIN (FORMAT binary)",
            )
            .await
            .expect("copy");
        let writer = BinaryCopyInWriter::new(sink, &types);
        futures::pin_mut!(writer);
        for (name, b) in names.iter().zip(&rows) {
            writer
                .as_mut()
                .write(&[
                    name,
                    &"1m",
                    &b.ts,
                    &b.open,
                    &b.high,
                    &b.low,
                    &b.close,
                    &b.volume,
                    &"synthetic",
                    &1.0f64,
                ])
                .await
                .expect("row");
        }
        assert_eq!(writer.finish().await.expect("finish"), names.len() as u64);
        spent += start.elapsed();
    }
    spent.as_secs_f64()
}

/// Seconds spent in `ROUNDS` plain array inserts (barkeep's statement without `ON CONFLICT`).
async fn raw_unnest(url: &str, names: &[String]) -> f64 {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(connection);
    let insert = client
        .prepare(
            "INSERT INTO bars (symbol, timeframe, ts, open, high, low, close, volume, source, quality)
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::bigint[], $4::float8[], $5::float8[],
                                  $6::float8[], $7::float8[], $8::float8[], $9::text[], $10::float8[])",
        )
        .await
        .expect("prepare");
    let mut spent = Duration::ZERO;
    for round in 0..ROUNDS {
        let rows: Vec<Bar> = (0..names.len()).map(|s| bar(s, round)).collect();
        let start = Instant::now();
        let col = |f: fn(&Bar) -> f64| rows.iter().map(f).collect::<Vec<f64>>();
        let ts: Vec<i64> = rows.iter().map(|b| b.ts).collect();
        let (tf, source) = (vec!["1m"; rows.len()], vec!["synthetic"; rows.len()]);
        let (o, h, l, c, v) = (
            col(|b| b.open),
            col(|b| b.high),
            col(|b| b.low),
            col(|b| b.close),
            col(|b| b.volume),
        );
        let quality = vec![1.0f64; rows.len()];
        let n = client
            .execute(
                &insert,
                &[&names, &tf, &ts, &o, &h, &l, &c, &v, &source, &quality],
            )
            .await
            .expect("insert");
        assert_eq!(n, names.len() as u64);
        spent += start.elapsed();
    }
    spent.as_secs_f64()
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
        "rows/flush  barkeep rows/s  COPY rows/s  barkeep/COPY  plain UNNEST rows/s  ({ROUNDS} flushes each)"
    );
    for n in sizes {
        let names: Vec<String> = (0..n).map(|i| format!("SYM{i:05}")).collect();
        let pg = PgServer::start();
        let url = pg.url();
        let ours = runtime.block_on(barkeep_flushes(&url, &names));
        // The same schema, emptied: COPY appends into what barkeep wrote into otherwise.
        pg.sql("TRUNCATE bars");
        let raw = runtime.block_on(raw_copies(&url, &names));
        pg.sql("TRUNCATE bars");
        let unnest = runtime.block_on(raw_unnest(&url, &names));
        let rows = (n * ROUNDS) as f64;
        println!(
            "{n:>10}  {:>14.0}  {:>11.0}  {:>12.2}  {:>19.0}",
            rows / ours,
            rows / raw,
            raw / ours,
            rows / unnest
        );
        drop(pg);
    }
}
