//! History requests and the request budget (the issue "`SOURCES=yahoo,binance TIMEFRAMES=1s`:
//! the bootstrap spends Yahoo's budget on 1 s history Yahoo cannot serve, and live quotes fall
//! back to Binance").
//!
//! - Every provider declares the timeframes its history serves ([`Source::serves_history`]),
//!   and that declaration is exactly what its `history` serves: a timeframe it declines is
//!   refused before any request goes out, one it accepts is asked of the provider.
//! - The bootstrap and warm-up skip a (source, timeframe) pair the source cannot serve before
//!   taking a token, with one log line per pair; a source that answers "not served" for a series
//!   is not asked for it again.
//! - End to end (`app::run_with` in-process, real HTTP fixtures on 127.0.0.1): with Yahoo first
//!   and Binance second at `TIMEFRAMES=1s`, Yahoo keeps serving the live quotes while the
//!   background bootstrap fills the 1 s history from Binance alone.

#[path = "providers/fixture.rs"]
#[allow(dead_code, reason = "the WebSocket script fixture is not used here")]
mod fixture;

use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use barkeep::bootstrap::{self, BootstrapStats};
use barkeep::clock::Clock;
use barkeep::collector::Collector;
use barkeep::config::Config;
use barkeep::metrics::Metrics;
use barkeep::model::{SymbolTable, Timeframe};
use barkeep::sources::settings::ProviderSettings;
use barkeep::sources::{self, ErrorKind, Source};
use barkeep::store::history::History;
use barkeep::store::snapshot::Snapshot;
use barkeep::store::sqlite::SqliteStore;
use parking_lot::Mutex;

use fixture::{HttpFixture, Reply, Seen};

/// How long any one step of a test may take before it gives up.
const STEP: Duration = Duration::from_secs(20);
const KEY: &str = "budget-test-key";

fn wall_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn tf(s: &str) -> Timeframe {
    s.parse().expect("timeframe")
}

fn config(vars: &[(&str, String)]) -> Config {
    let vars = vars.to_vec();
    Config::from_lookup(move |name| {
        vars.iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.clone())
    })
    .expect("valid config")
}

// ---------------------------------------------------------------------------------------------
// Log capture
// ---------------------------------------------------------------------------------------------

/// Log lines written through a subscriber, for counting what was logged.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn subscriber(
        &self,
        level: tracing::Level,
    ) -> impl tracing::Subscriber + Send + Sync + 'static {
        let sink = self.clone();
        tracing_subscriber::fmt()
            .with_max_level(level)
            .with_ansi(false)
            .without_time()
            .with_writer(move || sink.clone())
            .finish()
    }

    fn lines(&self) -> Vec<String> {
        String::from_utf8_lossy(&self.0.lock())
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// Lines at `level` that contain every one of `words`.
    fn matching(&self, level: &str, words: &[&str]) -> Vec<String> {
        self.lines()
            .into_iter()
            .filter(|l| l.trim_start().starts_with(level) && words.iter().all(|w| l.contains(w)))
            .collect()
    }
}

/// The process-wide capture, for the test that runs the sidecar on a multi-threaded runtime
/// (the others capture on their own thread).
fn global_log() -> &'static Captured {
    static LOG: OnceLock<Captured> = OnceLock::new();
    LOG.get_or_init(|| {
        let log = Captured::default();
        tracing::subscriber::set_global_default(log.subscriber(tracing::Level::INFO))
            .expect("one global subscriber");
        log
    })
}

// ---------------------------------------------------------------------------------------------
// Provider fixtures
// ---------------------------------------------------------------------------------------------

/// The market both fixtures quote, so history from one and live quotes from the other join
/// without a spike.
fn price(sec: i64) -> f64 {
    50_000.0 + (sec % 5) as f64 * 0.5
}

fn is_yahoo_history(seen: &Seen) -> bool {
    seen.q("period1").is_some()
}

/// Yahoo's chart API for `BTC-USD`: the quote call (`interval=1d&range=1d`) answers the current
/// second's price with a growing day volume; a history call (`period1`/`period2`) answers
/// `history` (none of these tests expects one for 1 s bars).
fn yahoo_handler(history: Reply) -> impl Fn(&Seen) -> Reply + Send + Sync + 'static {
    let volume = AtomicU64::new(20_000_000);
    move |seen| {
        if seen.path != "/v8/finance/chart/BTC-USD" {
            return Reply::json(404, YAHOO_NOT_FOUND);
        }
        if is_yahoo_history(seen) {
            return history.clone();
        }
        let sec = wall_ms().div_euclid(1_000);
        let v = volume.fetch_add(10, Ordering::SeqCst);
        Reply::ok(format!(
            r#"{{"chart":{{"result":[{{"meta":{{"currency":"USD","symbol":"BTC-USD","exchangeName":"CCC","instrumentType":"CRYPTOCURRENCY","regularMarketPrice":{},"regularMarketTime":{sec},"regularMarketVolume":{v},"gmtoffset":0,"timezone":"UTC","exchangeTimezoneName":"UTC","dataGranularity":"1d","range":"1d"}},"timestamp":[{sec}],"indicators":{{"quote":[{{"open":[50000.0],"high":[50002.0],"low":[49999.0],"close":[50000.0],"volume":[{v}]}}]}}}}],"error":null}}}}"#,
            price(sec)
        ))
    }
}

const YAHOO_NOT_FOUND: &str = r#"{"chart":{"result":null,"error":{"code":"Not Found","description":"No data found, symbol may be delisted"}}}"#;

/// Binance REST: `/api/v3/klines?interval=1s` answers the 1 s rows from `startTime` to
/// `endTime` that open before `until_ms` and after `until_ms − keep_ms` (the history it keeps);
/// `/api/v3/ticker/24hr` answers a live ticker, so a live quote from Binance would show.
fn binance_handler(until_ms: i64, keep_ms: i64) -> impl Fn(&Seen) -> Reply + Send + Sync + 'static {
    move |seen| match seen.path.as_str() {
        "/api/v3/klines" => {
            if seen.q("symbol") != Some("BTCUSDT") {
                return Reply::json(400, r#"{"code":-1121,"msg":"Invalid symbol."}"#);
            }
            if seen.q("interval") != Some("1s") {
                return Reply::json(400, r#"{"code":-1120,"msg":"Invalid interval."}"#);
            }
            let num = |name: &str| seen.q(name).and_then(|v| v.parse::<i64>().ok());
            let (Some(start), Some(end)) = (num("startTime"), num("endTime")) else {
                return Reply::json(400, r#"{"code":-1102,"msg":"Mandatory parameter."}"#);
            };
            let limit = num("limit").unwrap_or(500).clamp(1, 1_000) as usize;
            let mut rows = Vec::new();
            let mut ts = start
                .div_euclid(1_000)
                .max((until_ms - keep_ms).div_euclid(1_000))
                * 1_000;
            while ts <= end && ts < until_ms && rows.len() < limit {
                let p = price(ts / 1_000);
                rows.push(format!(
                    r#"[{ts},"{p:.2}","{:.2}","{:.2}","{p:.2}","2.00000000",{},"100000.00",42,"1.00000000","50000.00","0"]"#,
                    p + 0.25,
                    p - 0.25,
                    ts + 999
                ));
                ts += 1_000;
            }
            Reply::ok(format!("[{}]", rows.join(",")))
        }
        "/api/v3/ticker/24hr" => {
            let now = wall_ms();
            Reply::ok(format!(
                r#"[{{"symbol":"BTCUSDT","openPrice":"50000.00","highPrice":"50010.00","lowPrice":"49990.00","lastPrice":"{:.2}","volume":"123.4","quoteVolume":"999.0","openTime":{},"closeTime":{now},"firstId":1,"lastId":2,"count":2}}]"#,
                price(now / 1_000) + 0.1,
                now - 86_400_000
            ))
        }
        _ => Reply::json(404, r#"{"code":-1000,"msg":"Not found."}"#),
    }
}

// ---------------------------------------------------------------------------------------------
// Bootstrap and warm-up, against a Yahoo fixture
// ---------------------------------------------------------------------------------------------

struct Run {
    stats: BootstrapStats,
    yahoo: HttpFixture,
    /// Yahoo's requests left this minute after the bootstrap, of its 60.
    tokens_left: Option<u32>,
    log: Captured,
}

/// `barkeep bootstrap` for BTCUSD from Yahoo alone (its free-tier budget, 60 a minute), with
/// Yahoo's history calls answered `history`.
async fn bootstrap_yahoo(timeframes: &str, days: u32, history: Reply) -> Run {
    let log = Captured::default();
    let _guard = tracing::subscriber::set_default(log.subscriber(tracing::Level::DEBUG));
    let yahoo = HttpFixture::start("", yahoo_handler(history)).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("bootstrap.db");
    let config = config(&[
        ("SQLITE_PATH", db.to_str().expect("utf-8 path").to_string()),
        ("SYMBOLS", "BTCUSD".into()),
        ("SOURCES", "yahoo".into()),
        ("TIMEFRAMES", timeframes.into()),
        ("HISTORY_DAYS", days.to_string()),
        ("YAHOO_BASE_URL", yahoo.base.clone()),
        ("PROVIDER_HTTP_TIMEOUT", "2s".into()),
    ]);
    let symbols = SymbolTable::new(&config.symbols);
    let sources = bootstrap::own_chain(&config, sources::build(&config, &symbols));
    assert_eq!(sources.len(), 1, "Yahoo built");
    assert_eq!(sources.remaining_this_minute(0), Some(60));
    let store = History::Sqlite(Arc::new(
        SqliteStore::open(&db, symbols.clone()).expect("store"),
    ));
    let stats = bootstrap::bootstrap(&config, &symbols, &sources, &store, wall_ms(), false, || {})
        .await
        .expect("bootstrap");
    let tokens_left = sources.remaining_this_minute(0);
    Run {
        stats,
        yahoo,
        tokens_left,
        log,
    }
}

#[tokio::test]
async fn bootstrap_of_1s_sends_yahoo_no_history_request_and_leaves_its_budget_untouched() {
    let run = bootstrap_yahoo("1s", 1, Reply::json(500, "{}")).await;
    let sent = run.yahoo.requests();
    assert!(sent.is_empty(), "no request reaches Yahoo: {sent:?}");
    assert_eq!(run.tokens_left, Some(60), "Yahoo's budget untouched");
    assert_eq!(
        run.stats,
        BootstrapStats::default(),
        "no window is planned that no source can serve"
    );
    let said = run.log.matching("INFO", &["yahoo", "1s"]);
    assert_eq!(
        said.len(),
        1,
        "one line for the pair: {:#?}",
        run.log.lines()
    );
    assert!(
        run.log.matching("WARN", &[]).is_empty(),
        "no warning: {:#?}",
        run.log.lines()
    );
}

#[tokio::test]
async fn bootstrap_asks_yahoo_only_for_what_it_serves_and_a_not_served_series_once() {
    // 1 s and 1 min bars over 3 days (five 1 min windows): 1 s is never asked; the first 1 min
    // window is answered "Not Found" (a symbol Yahoo does not keep), after which the other four
    // are not asked.
    let run = bootstrap_yahoo("1s,1m", 3, Reply::json(404, YAHOO_NOT_FOUND)).await;
    let sent: Vec<Seen> = run.yahoo.requests();
    assert_eq!(sent.len(), 1, "one history request: {sent:?}");
    assert_eq!(sent[0].q("interval"), Some("1m"), "{sent:?}");
    assert_eq!(
        run.tokens_left,
        Some(59),
        "one token for the one request sent"
    );
    assert_eq!(
        (run.stats.failed_windows, run.stats.skipped_windows),
        (1, 4),
        "the first window failed, the rest were not asked: {:?}",
        run.stats
    );
    assert_eq!(
        run.log.matching("INFO", &["yahoo", "1s"]).len(),
        1,
        "{:#?}",
        run.log.lines()
    );
    assert_eq!(
        run.log.matching("INFO", &["yahoo", "BTCUSD", "1m"]).len(),
        1,
        "one line for the series not served: {:#?}",
        run.log.lines()
    );
    assert!(
        run.log.matching("WARN", &[]).is_empty(),
        "{:#?}",
        run.log.lines()
    );
}

#[tokio::test]
async fn warm_up_of_1s_sends_yahoo_no_history_request_and_leaves_its_budget_untouched() {
    let log = Captured::default();
    let _guard = tracing::subscriber::set_default(log.subscriber(tracing::Level::DEBUG));
    let yahoo = HttpFixture::start("", yahoo_handler(Reply::json(500, "{}"))).await;
    let now = wall_ms();
    let binance = HttpFixture::start("", binance_handler(now, 3_600_000)).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("warm.db");
    let config = config(&[
        ("SQLITE_PATH", db.to_str().expect("utf-8 path").to_string()),
        ("SYMBOLS", "BTCUSD".into()),
        ("SOURCES", "yahoo,binance".into()),
        ("TIMEFRAMES", "1s".into()),
        ("WARMUP_BARS", "100".into()),
        ("YAHOO_BASE_URL", yahoo.base.clone()),
        ("BINANCE_BASE_URL", binance.base.clone()),
        ("PROVIDER_HTTP_TIMEOUT", "2s".into()),
    ]);
    let symbols = SymbolTable::new(&config.symbols);
    let sources = sources::build(&config, &symbols);
    let names: Vec<&'static str> = sources.iter().map(|s| s.name()).collect();
    assert_eq!(names, ["yahoo", "binance"]);
    let metrics = Arc::new(Metrics::new(&names));
    let snapshot = Arc::new(Snapshot::new(
        symbols.clone(),
        config.timeframes.clone(),
        &config.indicators,
    ));
    let (tx, _sink) = tokio::sync::mpsc::channel(16);
    let store = History::Sqlite(Arc::new(
        SqliteStore::open(&db, symbols.clone()).expect("store"),
    ));
    let mut collector = Collector::new(
        &config,
        symbols,
        sources,
        snapshot,
        Arc::clone(&metrics),
        vec![tx],
        Clock::System,
    );
    collector.warm_up(&store).await.expect("warm-up");

    assert!(yahoo.requests().is_empty(), "{:?}", yahoo.requests());
    let chain = collector.chain();
    assert_eq!(chain.remaining_this_minute(0), Some(60));
    assert_eq!(
        chain.remaining_this_minute(1),
        Some(599),
        "one klines request, one Binance token"
    );
    let klines = binance.requests();
    assert_eq!(klines.len(), 1, "{klines:?}");
    assert_eq!(klines[0].path, "/api/v3/klines");
    assert!(
        metrics.history_bars.get() >= 90,
        "warmed from Binance: {}",
        metrics.history_bars.get()
    );
    assert_eq!(
        log.matching("INFO", &["yahoo", "1s"]).len(),
        1,
        "{:#?}",
        log.lines()
    );
    assert!(log.matching("WARN", &[]).is_empty(), "{:#?}", log.lines());
}

// ---------------------------------------------------------------------------------------------
// Every provider's declaration against what its history does
// ---------------------------------------------------------------------------------------------

/// Timeframes asked of every provider: seconds, odd seconds, minutes, hours, days, weeks.
const ASKED: &[&str] = &[
    "1s", "2s", "15s", "30s", "90s", "1m", "2m", "3m", "5m", "7m", "15m", "1h", "4h", "12h", "1d",
    "2d", "7d",
];

/// What each provider's history serves, by its documented intervals and what the provider
/// code aggregates from them.
fn expected(provider: &str, timeframe: &str) -> bool {
    let ms = tf(timeframe).ms();
    let day = 86_400_000;
    let below_a_day_in = |unit: i64| ms < day && ms % unit == 0;
    match provider {
        // Kline intervals 1s … 1d; multiples of a day from daily klines.
        "binance" => ms % 1_000 == 0,
        // Aggregates per second, minute, hour, day.
        "polygon" => below_a_day_in(1_000) || ms == day,
        // 1 min is the shortest bar of Yahoo, Twelve Data, Alpha Vantage and Finnhub candles.
        "yahoo" | "twelvedata" | "alphavantage" | "finnhub" => below_a_day_in(60_000) || ms == day,
        "finnhub-without-candles" => false,
        other => panic!("no expectation for {other}"),
    }
}

fn provider_settings(vars: &[(&str, &str)]) -> ProviderSettings {
    let mut all: Vec<(String, String)> = [
        ("PROVIDER_HTTP_TIMEOUT", "2s"),
        ("ALPHAVANTAGE_API_KEY", KEY),
        ("TWELVEDATA_API_KEY", KEY),
        ("POLYGON_API_KEY", KEY),
        ("FINNHUB_API_KEY", KEY),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    all.extend(vars.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    ProviderSettings::from_lookup(&move |name| {
        all.iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    })
    .expect("valid settings")
}

/// A provider under test: its label in [`expected`], its base-URL variable, extra settings, and
/// how it is built.
type Provider = (
    &'static str,
    &'static str,
    &'static [(&'static str, &'static str)],
    fn(&SymbolTable, &ProviderSettings) -> Arc<dyn Source>,
);

#[tokio::test]
async fn every_provider_declares_exactly_the_timeframes_its_history_serves() {
    // A server that answers every request 503: a timeframe the provider serves reaches it (and
    // fails there), one it does not serve must be refused before any request is sent.
    let server = HttpFixture::always("", Reply::json(503, r#"{"error":"down"}"#)).await;
    let symbols = SymbolTable::new(["BTCUSD"]);
    let providers: [Provider; 7] = [
        ("yahoo", "YAHOO_BASE_URL", &[], |s, p| {
            Arc::new(sources::yahoo::YahooSource::new(s, p).expect("yahoo"))
        }),
        ("binance", "BINANCE_BASE_URL", &[], |s, p| {
            Arc::new(sources::binance::BinanceSource::new(s, p).expect("binance"))
        }),
        ("polygon", "POLYGON_BASE_URL", &[], |s, p| {
            Arc::new(sources::polygon::PolygonSource::new(s, p).expect("polygon"))
        }),
        ("twelvedata", "TWELVEDATA_BASE_URL", &[], |s, p| {
            Arc::new(sources::twelvedata::TwelveDataSource::new(s, p).expect("twelvedata"))
        }),
        ("alphavantage", "ALPHAVANTAGE_BASE_URL", &[], |s, p| {
            Arc::new(sources::alphavantage::AlphaVantageSource::new(s, p).expect("alphavantage"))
        }),
        (
            "finnhub",
            "FINNHUB_BASE_URL",
            &[("FINNHUB_CANDLES", "true")],
            |s, p| Arc::new(sources::finnhub::FinnhubSource::new(s, p).expect("finnhub")),
        ),
        (
            "finnhub-without-candles",
            "FINNHUB_BASE_URL",
            &[("FINNHUB_CANDLES", "false")],
            |s, p| Arc::new(sources::finnhub::FinnhubSource::new(s, p).expect("finnhub")),
        ),
    ];
    let to = wall_ms() - 86_400_000;
    for (label, base_var, extra, make) in providers {
        let mut vars = vec![(base_var, server.base.as_str())];
        vars.extend_from_slice(extra);
        let source = make(&symbols, &provider_settings(&vars));
        for &t in ASKED {
            let timeframe = tf(t);
            let declared = source.serves_history(timeframe);
            assert_eq!(declared, expected(label, t), "{label} declares {t}");
            let before = server.requests().len();
            let from = timeframe.bucket(to - 3 * timeframe.ms());
            let answer = source.history(0, timeframe, from, to).await;
            let sent = server.requests().len() - before;
            if declared {
                assert!(
                    sent >= 1,
                    "{label} {t}: declared but not asked ({answer:?})"
                );
            } else {
                assert_eq!(sent, 0, "{label} {t}: not declared but sent");
                let err = answer.expect_err("refused");
                assert_eq!(err.kind(), ErrorKind::NotServed, "{label} {t}: {err}");
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The issue, end to end
// ---------------------------------------------------------------------------------------------

/// A bar as stored in SQLite.
#[derive(Debug, Clone, PartialEq)]
struct Row {
    ts: i64,
    source: String,
}

fn stored(db: &Path, symbol: &str) -> Vec<Row> {
    let conn = rusqlite::Connection::open(db).expect("open db");
    let mut stmt = conn
        .prepare("SELECT ts, source FROM bars WHERE symbol = ?1 AND timeframe = '1s' ORDER BY ts")
        .expect("prepare");
    stmt.query_map([symbol], |r| {
        Ok(Row {
            ts: r.get(0)?,
            source: r.get(1)?,
        })
    })
    .expect("query")
    .map(|r| r.expect("row"))
    .collect()
}

/// `GET path` → JSON, one connection per request.
fn get_json(addr: SocketAddr, path: &str) -> serde_json::Value {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .expect("write");
    let mut raw = String::new();
    s.read_to_string(&mut raw).expect("read");
    let (_, body) = raw.split_once("\r\n\r\n").expect("http response");
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{path}: not JSON ({e}): {body}"))
}

/// `(ts, source)` of the 1 s bars `/bars` serves, oldest first.
fn served_bars(addr: SocketAddr) -> Vec<(i64, String)> {
    get_json(addr, "/bars/BTCUSD?tf=1s&limit=5000")["bars"]
        .as_array()
        .expect("bars array")
        .iter()
        .map(|b| {
            (
                b["ts"].as_i64().expect("ts"),
                b["source"].as_str().expect("source").to_string(),
            )
        })
        .collect()
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

/// Live 1 s bars to watch: five seconds of Yahoo quotes.
const LIVE_BARS: usize = 5;

#[test]
fn yahoo_serves_live_quotes_while_the_background_bootstrap_fills_1s_history_from_binance() {
    let log = global_log();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("issue.db");
    // Binance keeps the last 30 minutes of 1 s klines up to the test's start; every stored bar
    // from then on was built from live quotes.
    let live_from = wall_ms().div_euclid(1_000) * 1_000;

    let (yahoo_seen, binance_seen, health) = rt.block_on(async {
        let yahoo = HttpFixture::start("", yahoo_handler(Reply::json(500, "{}"))).await;
        let binance = HttpFixture::start("", binance_handler(live_from, 30 * 60_000)).await;
        // Binance's stream would mark BTCUSD as served: point it at a closed port.
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind")
            .local_addr()
            .expect("addr");
        let config = config(&[
            ("SQLITE_PATH", db.to_str().expect("utf-8 path").to_string()),
            ("SYMBOLS", "BTCUSD".into()),
            ("SOURCES", "yahoo,binance".into()),
            ("TIMEFRAMES", "1s".into()),
            ("COLLECTION_INTERVAL", "1s".into()),
            ("BOOTSTRAP_ON_START", "background".into()),
            ("HISTORY_DAYS", "1".into()),
            ("BATCH_WRITE_INTERVAL", "100ms".into()),
            ("PROVIDER_HTTP_TIMEOUT", "2s".into()),
            ("YAHOO_BASE_URL", yahoo.base.clone()),
            ("BINANCE_BASE_URL", binance.base.clone()),
            ("BINANCE_WS_URL", format!("ws://{closed}")),
            ("STREAM_RECONNECT_MIN", "1s".into()),
            ("STREAM_RECONNECT_MAX", "5s".into()),
        ]);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let app = tokio::spawn(barkeep::app::run_with(
            config,
            listener,
            Clock::System,
            async {
                let _ = stop_rx.await;
            },
        ));
        let watched = tokio::task::spawn_blocking(move || {
            let live = wait_for(STEP, || {
                let bars = served_bars(addr);
                let live: Vec<_> = bars
                    .into_iter()
                    .filter(|(ts, _)| *ts >= live_from)
                    .collect();
                (live.len() >= LIVE_BARS).then_some(live)
            });
            (live, get_json(addr, "/health"))
        })
        .await;
        let _ = stop_tx.send(());
        tokio::time::timeout(Duration::from_secs(15), app)
            .await
            .expect("shutdown in time")
            .expect("join")
            .expect("clean shutdown");
        let (live, health) = watched.expect("watcher");
        let live = live.expect("five live 1s bars");
        assert!(
            live.iter().all(|(_, s)| s == "yahoo"),
            "Yahoo serves the live bars: {live:?}"
        );
        (yahoo.requests(), binance.requests(), health)
    });

    // Yahoo: quotes only, and its budget not drained.
    let yahoo_history = yahoo_seen.iter().filter(|s| is_yahoo_history(s)).count();
    let tokens = health["sources"]["yahoo"]["budget_minute"].as_i64();
    eprintln!(
        "yahoo: {} requests, {yahoo_history} for history, {tokens:?} tokens left this minute; \
         binance: {} requests",
        yahoo_seen.len(),
        binance_seen.len()
    );
    assert_eq!(yahoo_history, 0, "no history request reaches Yahoo");
    assert!(yahoo_seen.len() >= LIVE_BARS, "{yahoo_seen:?}");
    assert!(
        tokens.is_some_and(|t| t >= 50),
        "Yahoo's budget is not drained: {health}"
    );
    assert_eq!(health["symbols"]["BTCUSD"]["source"], "yahoo", "{health}");
    // Binance: history only.
    assert!(
        binance_seen.iter().all(|s| s.path == "/api/v3/klines"),
        "Binance gets history requests only: {:?}",
        binance_seen
            .iter()
            .map(|s| s.path.as_str())
            .collect::<Vec<_>>()
    );
    assert!(
        binance_seen.len() >= 2,
        "warm-up and bootstrap asked Binance"
    );

    // Stored: live bars from Yahoo, history from Binance.
    let rows = stored(&db, "BTCUSD");
    let (history, live): (Vec<&Row>, Vec<&Row>) = rows.iter().partition(|r| r.ts < live_from);
    assert!(live.len() >= LIVE_BARS, "{live:?}");
    assert!(live.iter().all(|r| r.source == "yahoo"), "{live:?}");
    assert!(!history.is_empty(), "history stored");
    assert!(history.iter().all(|r| r.source == "binance"), "{history:?}");
    let failed = log.matching("WARN", &["history", "yahoo"]);
    assert!(failed.is_empty(), "{} warnings: {failed:#?}", failed.len());
}

/// Yahoo answering history too: 1 m rows for `period1`..`period2` (up to now), at the same
/// prices as its quotes.
fn yahoo_with_history() -> impl Fn(&Seen) -> Reply + Send + Sync + 'static {
    let quotes = yahoo_handler(Reply::json(500, "{}"));
    move |seen| {
        if seen.path != "/v8/finance/chart/BTC-USD" || !is_yahoo_history(seen) {
            return quotes(seen);
        }
        let num = |name: &str| seen.q(name).and_then(|v| v.parse::<i64>().ok());
        let (Some(from), Some(to)) = (num("period1"), num("period2")) else {
            return Reply::json(400, YAHOO_NOT_FOUND);
        };
        let now = wall_ms() / 1_000;
        let times: Vec<i64> = (from.div_euclid(60) * 60..to.min(now - 60))
            .step_by(60)
            .filter(|t| *t >= from)
            .collect();
        let list = |f: &dyn Fn(i64) -> f64| {
            times
                .iter()
                .map(|&t| format!("{:.1}", f(t)))
                .collect::<Vec<_>>()
                .join(",")
        };
        let ts: Vec<String> = times.iter().map(ToString::to_string).collect();
        Reply::ok(format!(
            r#"{{"chart":{{"result":[{{"meta":{{"currency":"USD","symbol":"BTC-USD","exchangeName":"CCC","instrumentType":"CRYPTOCURRENCY","gmtoffset":0,"timezone":"UTC","exchangeTimezoneName":"UTC","dataGranularity":"1m","range":""}},"timestamp":[{}],"indicators":{{"quote":[{{"open":[{}],"high":[{}],"low":[{}],"close":[{}],"volume":[{}]}}]}}}}],"error":null}}}}"#,
            ts.join(","),
            list(&|t| price(t)),
            list(&|t| price(t) + 3.0),
            list(&|t| price(t) - 3.0),
            list(&|t| price(t + 59)),
            list(&|_| 3.0),
        ))
    }
}

#[test]
fn a_long_background_bootstrap_leaves_the_live_quotes_their_budget() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("reserve.db");
    let (yahoo_seen, metrics) = rt.block_on(async {
        let yahoo = HttpFixture::start("", yahoo_with_history()).await;
        // Yahoo alone at its free 60 requests a minute: one quote a second is all of it, and
        // 60 days of 1 m history are 87 windows on top.
        let config = config(&[
            ("SQLITE_PATH", db.to_str().expect("utf-8 path").to_string()),
            ("SYMBOLS", "BTCUSD".into()),
            ("SOURCES", "yahoo".into()),
            ("TIMEFRAMES", "1m".into()),
            ("COLLECTION_INTERVAL", "1s".into()),
            ("BOOTSTRAP_ON_START", "background".into()),
            ("HISTORY_DAYS", "60".into()),
            ("BATCH_WRITE_INTERVAL", "100ms".into()),
            ("YAHOO_BASE_URL", yahoo.base.clone()),
        ]);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let app = tokio::spawn(barkeep::app::run_with(
            config,
            listener,
            Clock::System,
            async {
                let _ = stop_rx.await;
            },
        ));
        let watched = tokio::task::spawn_blocking(move || {
            // Long enough for the bootstrap to have emptied the bucket without the reserve.
            wait_for(STEP, || {
                let m = get_json(addr, "/metrics/json");
                (m["counters"]["ticks_total"].as_u64()? >= 8).then_some(m)
            })
        })
        .await;
        let _ = stop_tx.send(());
        tokio::time::timeout(Duration::from_secs(15), app)
            .await
            .expect("shutdown in time")
            .expect("join")
            .expect("clean shutdown");
        (
            yahoo.requests(),
            watched.expect("watcher").expect("eight ticks"),
        )
    });
    let history = yahoo_seen.iter().filter(|s| is_yahoo_history(s)).count();
    let counters = &metrics["counters"];
    let skipped = counters["source_budget_skips_total{source=\"yahoo\"}"].as_u64();
    eprintln!("yahoo: {history} history requests, budget skips {skipped:?}");
    assert!(history >= 5, "the bootstrap did run: {history}");
    assert_eq!(
        skipped,
        Some(0),
        "no tick went without its quote: {counters}"
    );
    assert!(
        counters["quotes_accepted_total"].as_u64() >= Some(7),
        "{counters}"
    );
    assert_eq!(
        counters["rejects_total{reason=\"ohlc_inconsistent\"}"].as_u64(),
        Some(0),
        "the fixture's history is well-formed: {counters}"
    );
}
