//! What each fuzz target runs on one input, shared by the targets (`fuzz_targets/*.rs`) and by
//! the main crate's `tests/fuzz_corpus.rs`, which feeds every committed corpus file through the
//! same functions on each `cargo test`. Only barkeep's public API is used.
//!
//! Each function panics on a finding: barkeep panicking, or an invariant checked here failing.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use barkeep::model::{Bar, Timeframe};
use barkeep::sources::http::Fetched;
use barkeep::sources::{alphavantage, binance, finnhub, polygon, twelvedata, yahoo};

/// 2026-01-02T15:04:05Z, the "now" of every parser call: the inputs vary, not the clock.
const NOW_MS: i64 = 1_767_366_245_000;
const MINUTE_MS: i64 = 60_000;
const DAY_MS: i64 = 86_400_000;
/// How long the `http` client stays on a connection the server keeps open (a stream).
const STREAM_FOR: Duration = Duration::from_secs(120);

/// HTTP statuses a provider answer may carry, picked by the input's second byte.
const STATUSES: [u16; 14] = [
    200, 200, 204, 301, 400, 401, 402, 403, 404, 418, 429, 500, 502, 503,
];

/// The provider parsers. Byte 0 picks the parser, byte 1 the status (and whether the answer
/// carries `Retry-After` and a clock skew); the rest is the body.
pub fn parsers(data: &[u8]) {
    let [which, meta, body @ ..] = data else {
        return;
    };
    let fetched = Fetched {
        status: STATUSES[usize::from(meta & 0x0f) % STATUSES.len()],
        retry_after: (meta & 0x10 != 0).then(|| Duration::from_secs(u64::from(*meta))),
        skew_ms: (meta & 0x20 != 0).then_some(-1_500),
        body: bytes::Bytes::copy_from_slice(body),
    };
    let text = std::str::from_utf8(body).ok();
    match which % 24 {
        0 => show(yahoo::parse::quote(&fetched, "AAPL")),
        1 => yahoo_history(&fetched, MINUTE_MS, "1m"),
        2 => yahoo_history(&fetched, MINUTE_MS, "5m"),
        3 => yahoo_history(&fetched, DAY_MS, "1d"),
        4 => show(alphavantage::parse::global_quote(&fetched, "MSFT", NOW_MS)),
        5 => show(alphavantage::parse::exchange_rate(
            &fetched, "EURUSD", NOW_MS,
        )),
        6 => bars(alphavantage::parse::series(&fetched, "MSFT", NOW_MS)),
        7 => show(twelvedata::parse::quotes(
            &fetched,
            &["AAPL"],
            "AAPL",
            NOW_MS,
        )),
        8 => show(twelvedata::parse::quotes(
            &fetched,
            &["AAPL", "EUR/USD"],
            "AAPL,EUR/USD",
            NOW_MS,
        )),
        9 => bars(twelvedata::parse::time_series(&fetched, "AAPL", NOW_MS)),
        10 => {
            if let Some(t) = text {
                show(twelvedata::parse::utc_ms(t));
            }
        }
        11 => show(polygon::parse::aggs(&fetched, "AAPL", false)),
        12 => show(polygon::parse::aggs(&fetched, "AAPL", true)),
        13 => show(polygon::parse::last_trade(&fetched, "AAPL")),
        14 => {
            if let Some(t) = text {
                show(polygon::parse::frame(t));
            }
        }
        15 => show(Err::<(), _>(binance::parse::error(&fetched, "BTCUSDT"))),
        16 => show(Ok::<_, String>(binance::parse::error_code(body))),
        17 => show(binance::parse::tickers(
            &fetched,
            "[\"BTCUSDT\",\"ETHUSDT\"]",
        )),
        18 => bars(binance::parse::klines(&fetched, "BTCUSDT")),
        19 => {
            if let Some(t) = text {
                show(binance::parse::frame(t));
            }
        }
        20 => show(finnhub::parse::quote(&fetched, "AAPL")),
        21 => bars(finnhub::parse::candles(&fetched, "AAPL", false)),
        22 => bars(finnhub::parse::candles(&fetched, "AAPL", true)),
        _ => {
            if let Some(t) = text {
                show(finnhub::parse::frame(t));
            }
        }
    }
}

/// The shaped history of a chart answer: `[from, to)` bars that closed by `NOW_MS`, sorted.
fn yahoo_history(fetched: &Fetched, step_ms: i64, timeframe: &str) {
    let Ok(tf) = timeframe.parse::<Timeframe>() else {
        panic!("`{timeframe}` is a timeframe");
    };
    let from_ms = NOW_MS - 30 * DAY_MS;
    let result = yahoo::parse::history(fetched, "AAPL", step_ms, tf, from_ms, NOW_MS, NOW_MS);
    if let Ok(bars) = &result {
        for pair in bars.windows(2) {
            assert!(pair[0].ts < pair[1].ts, "history not sorted: {pair:?}");
        }
        for bar in bars {
            assert!(
                bar.ts >= from_ms && bar.ts < NOW_MS,
                "bar outside the range: {bar:?}"
            );
            assert!(bar.ts.rem_euclid(tf.ms()) == 0, "bar off the grid: {bar:?}");
            assert!(bar.ts + tf.ms() <= NOW_MS, "bar not closed: {bar:?}");
        }
    }
    show(result);
}

fn bars<E: std::fmt::Debug + std::fmt::Display>(result: Result<Vec<Bar>, E>) {
    show(result);
}

/// Formats a parser's answer the way logs and metrics would (`Display` of errors, `Debug` of
/// values), so formatting code runs too.
fn show<T: std::fmt::Debug, E: std::fmt::Debug + std::fmt::Display>(result: Result<T, E>) {
    match result {
        Ok(v) => {
            std::hint::black_box(format!("{v:?}"));
        }
        Err(e) => {
            std::hint::black_box(format!("{e} {e:?}"));
        }
    }
}

/// CSV replay: every row of an arbitrary file, a bar or its own error, never the whole file's
/// end before the input ends.
pub fn replay(data: &[u8]) {
    let Ok(rows) = barkeep::sources::replay::read_bars(data) else {
        return;
    };
    let mut last: Option<i64> = None;
    for row in rows {
        match row {
            Ok(bar) => {
                // Times are refused outside 1970–2099, per row.
                assert!(
                    (0..4_102_444_800_000).contains(&bar.ts),
                    "time outside 1970–2099: {bar:?}"
                );
                last = Some(bar.ts);
            }
            Err(e) => {
                std::hint::black_box(e.to_string());
            }
        }
    }
    std::hint::black_box(last);
}

/// Configuration: `NAME=value` lines (a map of environment variables; a later line wins) →
/// `Config::from_lookup`. A valid configuration must give usable values.
pub fn config(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let vars: Vec<(&str, &str)> = text
        .lines()
        .filter_map(|line| line.split_once('='))
        .collect();
    let lookup = |name: &str| {
        vars.iter()
            .rev()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| (*v).to_string())
    };
    match barkeep::config::Config::from_lookup(lookup) {
        Ok(config) => {
            assert!(!config.symbols.is_empty(), "a valid config without symbols");
            std::hint::black_box(format!("{:?}", config.symbols));
            let _ = barkeep::api::HttpSettings::from_config(&config);
        }
        Err(e) => {
            std::hint::black_box(e.to_string());
        }
    }
}

/// The HTTP server on one in-memory connection: the input is what a client sends; the client
/// keeps its side open (hyper drops a request whose client half-closes) and reads until the
/// server closes — after its answers, at the latest when the idle or header timeout fires,
/// which the paused clock brings forward as soon as everything waits.
pub fn http(data: &[u8]) {
    http_exchange(data);
}

/// What the server answers on a connection where the client sends `data` (see [`http`]).
pub fn http_exchange(data: &[u8]) -> Vec<u8> {
    let server = Server::get();
    let output = server.runtime.block_on(async {
        let (client, socket) = tokio::io::duplex(64 * 1024);
        let (mut from_server, mut to_server) = tokio::io::split(client);
        let mut out = Vec::new();
        let exchange = async {
            let serve =
                barkeep::api::serve_stream(socket, Arc::clone(&server.state), server.settings);
            let send = async {
                use tokio::io::AsyncWriteExt;
                // The server may close before reading everything: not an error of ours.
                let _ = to_server.write_all(data).await;
                std::future::pending::<()>().await;
            };
            tokio::select! {
                () = serve => {}
                () = send => {}
            }
        };
        let receive = async {
            use tokio::io::AsyncReadExt;
            let _ = from_server.read_to_end(&mut out).await;
        };
        // A stream (SSE, WebSocket) is answered until the client leaves: this client leaves
        // after STREAM_FOR of (paused, so instant) time.
        tokio::select! {
            _ = async { tokio::join!(exchange, receive) } => {}
            () = tokio::time::sleep(STREAM_FOR) => {}
        }
        out
    });
    if !output.is_empty() {
        assert!(
            output.starts_with(b"HTTP/1."),
            "not an HTTP answer: {:?}",
            String::from_utf8_lossy(&output[..output.len().min(200)])
        );
    }
    output
}

/// One sidecar's API state, made once per process: a runtime whose clock is paused (timeouts
/// fire as soon as everything waits, so a hang shows as an early close or a failed
/// assertion, never a slow input), a snapshot with data for one symbol, an empty database.
struct Server {
    runtime: tokio::runtime::Runtime,
    state: Arc<barkeep::api::ApiState>,
    settings: barkeep::api::HttpSettings,
}

impl Server {
    fn get() -> &'static Server {
        static SERVER: OnceLock<Server> = OnceLock::new();
        SERVER.get_or_init(Server::new)
    }

    fn new() -> Server {
        use barkeep::indicators::IndicatorParams;
        use barkeep::model::{BarRecord, FEATURE_COUNT, Features, SymbolTable};
        use barkeep::store::snapshot::{Snapshot, SymbolView};

        let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
        else {
            panic!("a tokio runtime");
        };
        let symbols = SymbolTable::new(["EURUSD", "BTC/USD", "^NDX"]);
        let timeframes: Vec<Timeframe> = ["1m", "5m", "1h", "1d"]
            .iter()
            .filter_map(|t| t.parse().ok())
            .collect();
        let snapshot = Arc::new(Snapshot::new(
            symbols.clone(),
            timeframes.clone(),
            &IndicatorParams::default(),
        ));
        let record = BarRecord {
            symbol: 0,
            timeframe: timeframes[0],
            bar: Bar::from_price(NOW_MS - MINUTE_MS, 1.25, 10.0),
            source: "synthetic",
            quality: 1.0,
        };
        let features = Features {
            values: [1.0; FEATURE_COUNT],
        };
        let mut view = SymbolView {
            frames: vec![Default::default(); timeframes.len()],
            last_data_ms: Some(NOW_MS - 1_000),
            source: Some("synthetic"),
            session: None,
        };
        view.frames[0].last_closed = Some((record, features));
        view.frames[1].forming = Some((record, features));
        snapshot.publish(0, Arc::new(view));
        // One file for every process (only read, never written): nothing piles up in /tmp.
        let db = std::env::temp_dir().join("barkeep-fuzz-http.db");
        let store = match barkeep::store::sqlite::SqliteStore::open(&db, symbols) {
            Ok(store) => barkeep::store::history::History::Sqlite(Arc::new(store)),
            Err(e) => panic!("database {}: {e}", db.display()),
        };
        let metrics = Arc::new(barkeep::metrics::Metrics::new(&["synthetic"]));
        let stream = barkeep::stream::hub::Hub::new(
            barkeep::stream::message::Names::of(&snapshot),
            barkeep::stream::hub::StreamSettings {
                replay: 16,
                client_queue: 16,
                stale_after_ms: 120_000,
            },
            Arc::clone(&metrics),
        );
        let state = barkeep::api::ApiState {
            snapshot,
            metrics,
            store,
            clock: barkeep::clock::Clock::System,
            started: std::time::Instant::now(),
            stale_after_ms: 120_000,
            max_bars_cache: 5_000,
            batch_write_interval_ms: 1_000,
            redis: None,
            nats: None,
            stream,
            access: barkeep::api::access::AccessRule::new(None),
            alerts: Arc::new(barkeep::alerts::Board::new(&Default::default())),
            control: Arc::new(barkeep::api::control::Controls::detached(
                Arc::new(barkeep::metrics::Metrics::new(&[])),
                barkeep::clock::Clock::System,
            )),
            instruments: None,
        };
        let settings = barkeep::api::HttpSettings {
            pool_size: 4,
            max_connections_per_peer: 4,
            header_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(30),
        };
        Server {
            runtime,
            state: Arc::new(state),
            settings,
        }
    }
}
