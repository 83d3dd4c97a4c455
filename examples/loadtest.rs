//! Load harness: barkeep at N symbols against a local fixture provider and a real
//! redis-server, with the raw limits of the same machine measured in the same run.
//!
//! ```sh
//! cargo build --release && cargo run --release --example loadtest -- --symbols 1000 --seconds 20 [--synthetic]
//! scripts/loadtest.sh            # 100, 1 000 and 10 000 symbols, figures for BENCHMARKS.md
//! ```
//!
//! What runs:
//! - a fixture provider (Twelve Data's batched `/quote?symbol=A,B,…` format) for N symbols;
//! - `redis-server` on a free port, and the release `barkeep` binary pointed at both, with
//!   `TIMEFRAMES=1s,1m` so every symbol closes a bar every second;
//! - a subscriber on `barkeep:events:*` that measures tick-to-Redis-visible latency from the
//!   tick time (`timestamp`) carried in each message;
//! - HTTP load on `/signals/{symbol}` and `/health` (fixed rate and saturation) with a small
//!   keep-alive client, and the same load against a minimal hyper hello-world (this binary with
//!   `--hello PORT`, in its own process, measured while barkeep keeps collecting so both face
//!   the same background load) as the baseline;
//! - baselines: a raw pipelined RPUSH loop on the same redis-server, and a minimal rusqlite
//!   insert loop with barkeep's schema.
//!
//! - Redis's own cost per symbol-tick over the window (`INFO` commandstats time, server CPU,
//!   commands, bytes in), against the raw floor written afterwards on the same server: one
//!   pipelined command per key barkeep must update, with barkeep's payload sizes
//!   (`common::redis_cost`).
//!
//! `--barkeep PATH` measures another build (an earlier commit: `scripts/loadtest.sh
//! redis-cost`); `--redis-only` skips the HTTP load; `--set NAME=VALUE` (repeatable) adds to
//! barkeep's environment.
//!
//! Output: a table of barkeep's figure, the baseline's, and the ratio, plus a JSON line.

use std::collections::HashMap;
use std::convert::Infallible;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

mod common;

use common::redis_cost::{self, Payloads};
use common::{Proc, arg, cpu_seconds, free_port, now_ms};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    if let Some(port) = args
        .iter()
        .position(|a| a == "--hello")
        .and_then(|i| args.get(i + 1))
    {
        rt.block_on(hello_server(port.parse().expect("port")));
        return;
    }
    let symbols: usize = arg(&args, "--symbols", 1_000);
    let seconds: u64 = arg(&args, "--seconds", 20);
    let http_rate: u64 = arg(&args, "--http-rate", 10_000);
    let opts = Opts {
        synthetic: args.iter().any(|a| a == "--synthetic"),
        redis_only: args.iter().any(|a| a == "--redis-only"),
        binary: args
            .iter()
            .position(|a| a == "--barkeep")
            .and_then(|i| args.get(i + 1))
            .map_or_else(common::barkeep_binary, std::path::PathBuf::from),
        set: args
            .windows(2)
            .filter(|w| w[0] == "--set")
            .map(|w| {
                let (k, v) = w[1].split_once('=').expect("--set NAME=VALUE");
                (k.to_string(), v.to_string())
            })
            .collect(),
    };
    rt.block_on(run(symbols, seconds, http_rate, opts));
}

/// Percentile of a sorted slice.
fn pct(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

/// Peak resident set size in MB, from /proc.
fn peak_rss_mb(pid: u32) -> f64 {
    common::rss_kb(pid).map_or(f64::NAN, |(_, peak)| peak as f64 / 1024.0)
}

struct Opts {
    /// barkeep's built-in simulated market replaces the HTTP fixture provider.
    synthetic: bool,
    /// No HTTP load (the Redis figures only).
    redis_only: bool,
    binary: std::path::PathBuf,
    /// `--set NAME=VALUE`: more of barkeep's environment (e.g. `REDIS_STREAM_MAXLEN=0`), set
    /// after the harness's own.
    set: Vec<(String, String)>,
}

async fn run(n: usize, seconds: u64, http_rate: u64, opts: Opts) {
    let synthetic = opts.synthetic;
    let names: Vec<String> = (0..n).map(|i| format!("S{i:05}")).collect();
    println!(
        "barkeep load test: {n} symbols, {seconds} s, on {} cores",
        std::thread::available_parallelism().map_or(0, |p| p.get())
    );

    // The fixture provider.
    let provider = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind provider");
    let provider_addr = provider.local_addr().expect("addr");
    let served = Arc::new(AtomicU64::new(0));
    tokio::spawn(fixture_provider(provider, Arc::clone(&served)));

    // Redis.
    let redis_port = free_port();
    // Extra server settings to compare, e.g. `LOADTEST_REDIS_ARGS="--io-threads 2"`.
    let extra = std::env::var("LOADTEST_REDIS_ARGS").unwrap_or_default();
    let _redis = Proc(common::redis_server(redis_port, extra.split_whitespace()));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let redis_url = format!("redis://127.0.0.1:{redis_port}");

    // Subscriber measuring tick → visible in Redis.
    let latencies = Arc::new(parking_lot::Mutex::new(Vec::<f64>::with_capacity(1 << 20)));
    let message_bytes = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let sub = {
        let (url, latencies, stop) = (redis_url.clone(), Arc::clone(&latencies), Arc::clone(&stop));
        let bytes = Arc::clone(&message_bytes);
        std::thread::spawn(move || subscriber(&url, &latencies, &bytes, &stop))
    };

    // barkeep.
    let dir = tempfile::tempdir().expect("tempdir");
    let exe = std::env::current_exe().expect("exe");
    let binary = opts.binary.clone();
    let mut child = Command::new(&binary)
        .arg("run")
        .env_clear()
        .env("SYMBOLS", names.join(","))
        .env(
            "SOURCES",
            if synthetic { "synthetic" } else { "twelvedata" },
        )
        .env("SYNTHETIC_BAD_TICK_RATE", "0")
        .env("TWELVEDATA_BASE_URL", format!("http://{provider_addr}"))
        .env("TWELVEDATA_API_KEY", "loadtest")
        .env("TWELVEDATA_RATE_PER_MINUTE", "none")
        .env("TWELVEDATA_RATE_PER_DAY", "none")
        .env("TIMEFRAMES", "1s,1m")
        // Every symbol trades round the clock: the fixture symbols would otherwise take the
        // US-equity calendar and close no bar outside NYSE hours.
        .env("MARKET_HOURS", "*:always")
        .env("WARMUP_BARS", "0")
        .env("BOOTSTRAP_ON_START", "false")
        .env("REDIS_URL", &redis_url)
        .env("SQLITE_PATH", dir.path().join("b.db"))
        .env("HTTP_ADDR", "127.0.0.1:0")
        .env("LOG_FORMAT", "text")
        .env("RUST_LOG", "warn,barkeep::app=info")
        .envs(opts.set.iter().map(|(k, v)| (k, v)))
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "start {} (cargo build --release first): {e}",
                binary.display()
            )
        });
    let pid = child.id();
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = BufReader::new(stderr).lines();
    let api: SocketAddr = loop {
        let line = lines
            .next()
            .expect("barkeep exited early")
            .expect("log line");
        if let Some(addr) = common::listening_addr(&line) {
            break addr;
        }
    };
    std::thread::spawn(move || lines.for_each(|l| eprintln!("barkeep: {}", l.unwrap_or_default())));
    let barkeep = Proc(child);

    // Let it settle, then measure a window.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut redis_conn = redis::Client::open(redis_url.as_str())
        .expect("client")
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    latencies.lock().clear();
    let m0 = metrics(api).await;
    let r0 = redis_cost::snapshot(&mut redis_conn).await;
    let bytes0 = message_bytes.load(Ordering::Relaxed);
    let cpu0 = cpu_seconds(pid);
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let elapsed = t0.elapsed().as_secs_f64();
    let cpu = (cpu_seconds(pid) - cpu0) / elapsed * 100.0;
    let m1 = metrics(api).await;
    let redis_cost = redis_cost::snapshot(&mut redis_conn).await.since(&r0);
    let messages_bytes = (message_bytes.load(Ordering::Relaxed) - bytes0) as f64;
    let payloads = payloads(&mut redis_conn, &names[0], &redis_cost).await;
    let rss = peak_rss_mb(pid);
    stop.store(true, Ordering::Relaxed);
    let mut lat = std::mem::take(&mut *latencies.lock());
    lat.sort_by(f64::total_cmp);

    let counter = |m: &serde_json::Value, k: &str| m["counters"][k].as_f64().unwrap_or(0.0);
    let delta = |k: &str| counter(&m1, k) - counter(&m0, k);
    let tick = &m1["histograms"]["tick_duration"];
    let flush_rows = delta("sqlite_bars_written_total");
    let flush_ms = m1["histograms"]["sqlite_flush_duration"]["sum_ms"]
        .as_f64()
        .unwrap_or(0.0)
        - m0["histograms"]["sqlite_flush_duration"]["sum_ms"]
            .as_f64()
            .unwrap_or(0.0);

    let http = if opts.redis_only {
        None
    } else {
        Some(http_figures(api, &names, http_rate, &exe).await)
    };
    drop(barkeep);

    // Raw limits.
    let symbol_ticks = n as f64 * (counter(&m1, "ticks_total") - counter(&m0, "ticks_total"));
    let floor_ticks = 10;
    let (floor, floor_tick_ms) = redis_cost::raw_floor(
        &redis_url,
        n,
        floor_ticks,
        Payloads {
            message: (messages_bytes / symbol_ticks.max(1.0)).round() as usize,
            ..payloads
        },
    )
    .await;
    let floor_symbol_ticks = (n * floor_ticks) as f64;
    let raw_redis = raw_redis_rate(&redis_url).await;
    let raw_sqlite = raw_sqlite_rate(&dir.path().join("raw.db"));
    let _ = sub.join();

    let redis_bars = delta("redis_writes_total") / elapsed;
    let sqlite_flush_rate = if flush_ms > 0.0 {
        flush_rows / (flush_ms / 1_000.0)
    } else {
        f64::NAN
    };
    println!("\n| figure ({n} symbols) | barkeep | baseline | ratio |");
    println!("|---|---|---|---|");
    println!(
        "| collection cycle p50 / p99 / max (ms) | {:.2} / {:.2} / {:.2} | — | — |",
        tick["p50_ms"].as_f64().unwrap_or(f64::NAN),
        tick["p99_ms"].as_f64().unwrap_or(f64::NAN),
        tick["max_ms"].as_f64().unwrap_or(f64::NAN)
    );
    println!(
        "| tick → Redis visible p50 / p99 (ms) | {:.2} / {:.2} ({} events) | — | — |",
        pct(&lat, 0.5),
        pct(&lat, 0.99),
        lat.len()
    );
    let rw = &m1["histograms"]["redis_write_latency"];
    println!(
        "| Redis pipeline write p50 / p99 / max (ms) | {:.2} / {:.2} / {:.2} | — | — |",
        rw["p50_ms"].as_f64().unwrap_or(f64::NAN),
        rw["p99_ms"].as_f64().unwrap_or(f64::NAN),
        rw["max_ms"].as_f64().unwrap_or(f64::NAN)
    );
    println!(
        "| updates written to Redis per s | {redis_bars:.0} | {raw_redis:.0} (raw pipelined RPUSH) | {:.2} |",
        redis_bars / raw_redis
    );
    println!(
        "| SQLite rows per s of flush time | {sqlite_flush_rate:.0} | {raw_sqlite:.0} (raw insert loop) | {:.2} |",
        sqlite_flush_rate / raw_sqlite
    );
    println!(
        "| bars closed per s | {:.0} | — | — |",
        delta("bars_closed_total") / elapsed
    );
    println!("| barkeep CPU % / peak RSS MB | {cpu:.0} % / {rss:.0} | — | — |");
    println!(
        "| missed ticks / deadline hits / rejects | {} / {} / {} | — | — |",
        delta("missed_ticks_total"),
        delta("tick_deadline_hits_total"),
        m1["counters"].as_object().map_or(0.0, |c| c
            .iter()
            .filter(|(k, _)| k.starts_with("rejects_total"))
            .map(|(_, v)| v.as_f64().unwrap_or(0.0))
            .sum::<f64>())
    );
    println!(
        "| Redis command time per symbol-tick (µs, INFO commandstats) | {:.2} | {:.2} (raw floor) | {:.2} |",
        redis_cost.usec / symbol_ticks,
        floor.usec / floor_symbol_ticks,
        (redis_cost.usec / symbol_ticks) / (floor.usec / floor_symbol_ticks)
    );
    println!(
        "| Redis CPU per symbol-tick (µs, used_cpu_user+sys; of it sys) | {:.2} ({:.2}) | {:.2} ({:.2}) (raw floor) | {:.2} |",
        redis_cost.cpu_s * 1e6 / symbol_ticks,
        redis_cost.cpu_sys_s * 1e6 / symbol_ticks,
        floor.cpu_s * 1e6 / floor_symbol_ticks,
        floor.cpu_sys_s * 1e6 / floor_symbol_ticks,
        (redis_cost.cpu_s / symbol_ticks) / (floor.cpu_s / floor_symbol_ticks)
    );
    println!(
        "| Redis commands / bytes in per symbol-tick | {:.2} / {:.0} | {:.2} / {:.0} (raw floor) | {:.2} / {:.2} |",
        redis_cost.calls / symbol_ticks,
        redis_cost.bytes_in / symbol_ticks,
        floor.calls / floor_symbol_ticks,
        floor.bytes_in / floor_symbol_ticks,
        (redis_cost.calls / symbol_ticks) / (floor.calls / floor_symbol_ticks),
        (redis_cost.bytes_in / symbol_ticks) / (floor.bytes_in / floor_symbol_ticks)
    );
    println!(
        "| Redis command mix per symbol-tick | {} | {} (raw floor, {floor_tick_ms:.1} ms per tick) | — |",
        redis_cost.mix(symbol_ticks),
        floor.mix(floor_symbol_ticks)
    );
    if let Some(h) = &http {
        h.print(http_rate);
    }
    println!(
        "{}",
        serde_json::json!({
            "symbols": n, "seconds": elapsed, "cycle_p50_ms": tick["p50_ms"], "cycle_p99_ms": tick["p99_ms"], "cycle_max_ms": tick["max_ms"],
            "visible_p50_ms": pct(&lat, 0.5), "visible_p99_ms": pct(&lat, 0.99), "redis_updates_per_s": redis_bars, "raw_redis_per_s": raw_redis,
            "sqlite_rows_per_s": sqlite_flush_rate, "raw_sqlite_per_s": raw_sqlite, "cpu_percent": cpu, "peak_rss_mb": rss,
            "missed_ticks": delta("missed_ticks_total"), "provider_requests": served.load(Ordering::Relaxed),
            "redis_usec_per_symbol_tick": redis_cost.usec / symbol_ticks, "redis_cpu_us_per_symbol_tick": redis_cost.cpu_s * 1e6 / symbol_ticks, "redis_cpu_sys_us_per_symbol_tick": redis_cost.cpu_sys_s * 1e6 / symbol_ticks,
            "redis_calls_per_symbol_tick": redis_cost.calls / symbol_ticks, "redis_bytes_per_symbol_tick": redis_cost.bytes_in / symbol_ticks,
            "floor_usec_per_symbol_tick": floor.usec / floor_symbol_ticks, "floor_cpu_us_per_symbol_tick": floor.cpu_s * 1e6 / floor_symbol_ticks,
            "floor_calls_per_symbol_tick": floor.calls / floor_symbol_ticks, "floor_bytes_per_symbol_tick": floor.bytes_in / floor_symbol_ticks,
            "payloads": format!("{payloads:?}"),
            "signals_fixed": http.as_ref().map(|h| h.signals_fixed.rate), "signals_fixed_p99_ms": http.as_ref().map(|h| h.signals_fixed.p99),
            "signals_sat": http.as_ref().map(|h| h.signals_sat.rate), "hello_sat": http.as_ref().map(|h| h.hello_sat.rate),
            "hello_sized_sat": http.as_ref().map(|h| h.hello_sized_sat.rate),
        })
    );
}

/// The HTTP figures: /signals and /health under load, against a hello-world under the same.
struct HttpFigures {
    signals_fixed: HttpResult,
    signals_sat: HttpResult,
    health_sat: HttpResult,
    hello_fixed: HttpResult,
    hello_sat: HttpResult,
    hello_sized_sat: HttpResult,
    signals_bytes: usize,
}

/// HTTP under load, then the hello-world baseline under the same load, while barkeep keeps
/// collecting: both servers share the cores with the same collection work, so the ratio is the
/// API's own cost.
async fn http_figures(
    api: SocketAddr,
    names: &[String],
    http_rate: u64,
    exe: &std::path::Path,
) -> HttpFigures {
    let paths: Vec<String> = names
        .iter()
        .take(100)
        .map(|s| format!("/signals/{s}"))
        .collect();
    let signals_fixed = http_load(api, &paths, Some(http_rate), 5).await;
    let signals_sat = http_load(api, &paths, None, 5).await;
    let health_sat = http_load(api, &["/health".to_string()], None, 3).await;
    let hello_port = free_port();
    let _hello = Proc(
        Command::new(exe)
            .args(["--hello", &hello_port.to_string()])
            .spawn()
            .expect("hello server"),
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let hello: SocketAddr = format!("127.0.0.1:{hello_port}").parse().expect("addr");
    let hello_fixed = http_load(hello, &["/".to_string()], Some(http_rate), 5).await;
    let hello_sat = http_load(hello, &["/".to_string()], None, 5).await;
    let signals_bytes = HttpConn::connect(api)
        .await
        .get(&paths[0])
        .await
        .map_or(0, |b| b.len());
    let sized = [format!("/bytes/{signals_bytes}")];
    let hello_sized_sat = http_load(hello, &sized, None, 5).await;
    HttpFigures {
        signals_fixed,
        signals_sat,
        health_sat,
        hello_fixed,
        hello_sat,
        hello_sized_sat,
        signals_bytes,
    }
}

impl HttpFigures {
    fn print(&self, http_rate: u64) {
        println!(
            "| /signals at {http_rate} req/s: achieved, p50 / p99 (ms) | {:.0}, {:.3} / {:.3} | {:.0}, {:.3} / {:.3} (hello) | {:.2} |",
            self.signals_fixed.rate,
            self.signals_fixed.p50,
            self.signals_fixed.p99,
            self.hello_fixed.rate,
            self.hello_fixed.p50,
            self.hello_fixed.p99,
            self.signals_fixed.rate / self.hello_fixed.rate
        );
        println!(
            "| /signals saturation req/s, p99 (ms) | {:.0}, {:.3} | {:.0}, {:.3} (hello) | {:.2} |",
            self.signals_sat.rate,
            self.signals_sat.p99,
            self.hello_sat.rate,
            self.hello_sat.p99,
            self.signals_sat.rate / self.hello_sat.rate
        );
        println!(
            "| /signals saturation vs a hello-world answering the same {} bytes | {:.0} | {:.0} | {:.2} |",
            self.signals_bytes,
            self.signals_sat.rate,
            self.hello_sized_sat.rate,
            self.signals_sat.rate / self.hello_sized_sat.rate
        );
        println!(
            "| /health saturation req/s, p99 (ms) | {:.0}, {:.3} | {:.0} (hello) | {:.2} |",
            self.health_sat.rate,
            self.health_sat.p99,
            self.hello_sat.rate,
            self.health_sat.rate / self.hello_sat.rate
        );
    }
}

/// The sizes of what barkeep wrote for `symbol` (features value, ring entry), the timeframes it
/// writes and whether it streams (new or old key names: either build can be measured).
async fn payloads(
    conn: &mut redis::aio::MultiplexedConnection,
    symbol: &str,
    cost: &redis_cost::RedisCost,
) -> Payloads {
    let mut strlen = async |cmd: &str, keys: [String; 2], extra: Option<i64>| -> usize {
        for key in keys {
            let mut c = redis::cmd(cmd);
            c.arg(&key);
            if let Some(i) = extra {
                c.arg(i);
            }
            let v: Option<Vec<u8>> = c.query_async(conn).await.unwrap_or(None);
            if let Some(v) = v {
                return v.len();
            }
        }
        0
    };
    let features = strlen(
        "GET",
        [
            format!("barkeep:features:{{{symbol}}}:1s"),
            format!("barkeep:features:{symbol}:1s"),
        ],
        None,
    )
    .await;
    let bar = strlen(
        "LINDEX",
        [
            format!("barkeep:bars:{{{symbol}}}:1s"),
            format!("barkeep:bars:{symbol}:1s"),
        ],
        Some(-1),
    )
    .await;
    Payloads {
        features,
        bar,
        message: 0,
        frames: 2,
        closing_frames: 1,
        stream: cost.commands.contains_key("xadd"),
    }
}

async fn metrics(api: SocketAddr) -> serde_json::Value {
    let mut conn = HttpConn::connect(api).await;
    let body = conn.get("/metrics/json").await.expect("metrics");
    serde_json::from_slice(&body).expect("metrics JSON")
}

fn subscriber(
    url: &str,
    latencies: &parking_lot::Mutex<Vec<f64>>,
    bytes: &AtomicU64,
    stop: &AtomicBool,
) {
    let client = redis::Client::open(url).expect("client");
    let mut conn = client.get_connection().expect("subscriber connection");
    let mut pubsub = conn.as_pubsub();
    pubsub.psubscribe("barkeep:events:*").expect("psubscribe");
    pubsub
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    #[derive(serde::Deserialize)]
    struct Event {
        /// The tick's time: `timestamp` of a message, `tick_ms` of an event of the old layout
        /// (one per closed bar and forming update) when measuring an earlier binary.
        #[serde(alias = "tick_ms")]
        timestamp: i64,
    }
    while !stop.load(Ordering::Relaxed) {
        let Ok(msg) = pubsub.get_message() else {
            continue;
        };
        let received = now_ms();
        bytes.fetch_add(msg.get_payload_bytes().len() as u64, Ordering::Relaxed);
        if let Ok(e) = rmp_serde::from_slice::<Event>(msg.get_payload_bytes()) {
            latencies.lock().push((received - e.timestamp) as f64);
        }
    }
}

/// Twelve Data's `/quote?symbol=A,B,…`: one object keyed by symbol when several are asked.
async fn fixture_provider(listener: TcpListener, served: Arc<AtomicU64>) {
    let prices: Arc<parking_lot::Mutex<HashMap<String, f64>>> = Arc::default();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let (prices, served) = (Arc::clone(&prices), Arc::clone(&served));
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                let (prices, served) = (Arc::clone(&prices), Arc::clone(&served));
                async move {
                    served.fetch_add(1, Ordering::Relaxed);
                    let query = req.uri().query().unwrap_or_default();
                    let symbols = query
                        .split('&')
                        .find_map(|kv| kv.strip_prefix("symbol="))
                        .map(|s| s.replace("%2C", ","))
                        .unwrap_or_default();
                    let ts = now_ms() / 1_000;
                    let mut prices = prices.lock();
                    let mut body = serde_json::Map::new();
                    for (i, symbol) in symbols.split(',').filter(|s| !s.is_empty()).enumerate() {
                        let p = prices.entry(symbol.to_string()).or_insert(100.0 + i as f64);
                        *p *= 1.0 + ((ts as f64 + i as f64).sin() * 1e-4);
                        body.insert(
                            symbol.to_string(),
                            serde_json::json!({
                                "symbol": symbol, "exchange": "NASDAQ", "datetime": "2025-12-03", "timestamp": ts,
                                "open": format!("{:.5}", *p), "high": format!("{:.5}", *p * 1.001), "low": format!("{:.5}", *p * 0.999),
                                "close": format!("{:.5}", *p), "volume": format!("{}", 1_000 + ts % 1_000), "previous_close": format!("{:.5}", *p),
                                "is_market_open": true
                            }),
                        );
                    }
                    let body = serde_json::to_vec(&body).unwrap_or_default();
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(body))))
                }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// The baseline: the smallest hyper server that answers every request.
async fn hello_server(port: u16) {
    let listener = TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("bind hello");
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            // `/bytes/N` answers N bytes: the same body size as another endpoint, so the cost
            // of moving the bytes is separated from the cost of producing them.
            let service = service_fn(|req: Request<hyper::body::Incoming>| async move {
                let sized = req
                    .uri()
                    .path()
                    .strip_prefix("/bytes/")
                    .and_then(|n| n.parse::<usize>().ok());
                let body = match sized {
                    Some(n) => Bytes::from(vec![b'x'; n]),
                    None => Bytes::from_static(b"{\"hello\":\"world\"}"),
                };
                Ok::<_, Infallible>(Response::new(Full::new(body)))
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// A minimal HTTP/1.1 keep-alive client: enough for a load generator, no allocation per
/// request beyond the response body.
struct HttpConn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl HttpConn {
    async fn connect(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect(addr).await.expect("connect");
        let _ = stream.set_nodelay(true);
        Self {
            stream,
            buf: Vec::with_capacity(16 * 1024),
        }
    }

    async fn get(&mut self, path: &str) -> Option<Vec<u8>> {
        let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n");
        self.stream.write_all(req.as_bytes()).await.ok()?;
        self.buf.clear();
        loop {
            let mut chunk = [0u8; 8192];
            let n = self.stream.read(&mut chunk).await.ok()?;
            if n == 0 {
                return None;
            }
            self.buf.extend_from_slice(&chunk[..n]);
            let Some(head_end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                continue;
            };
            let head = std::str::from_utf8(&self.buf[..head_end]).ok()?;
            let len: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap_or(0))
                })
                .unwrap_or(0);
            if self.buf.len() >= head_end + 4 + len {
                return Some(self.buf[head_end + 4..head_end + 4 + len].to_vec());
            }
        }
    }
}

struct HttpResult {
    rate: f64,
    p50: f64,
    p99: f64,
}

/// `connections` keep-alive connections; with `rate`, requests are paced (open loop, latency
/// measured from the scheduled time so queueing counts); without, as fast as answers come.
async fn http_load(
    addr: SocketAddr,
    paths: &[String],
    rate: Option<u64>,
    seconds: u64,
) -> HttpResult {
    let connections = 32;
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for c in 0..connections {
        let paths = paths.to_vec();
        tasks.push(tokio::spawn(async move {
            let mut conn = HttpConn::connect(addr).await;
            let mut lat = Vec::new();
            let interval = rate.map(|r| Duration::from_secs_f64(connections as f64 / r as f64));
            let start = Instant::now()
                + interval.map_or(Duration::ZERO, |i| i.mul_f64(c as f64 / connections as f64));
            let mut i = 0u64;
            loop {
                let scheduled =
                    interval.map_or_else(Instant::now, |iv| start + iv.mul_f64(i as f64));
                if scheduled > deadline {
                    break;
                }
                if let Some(wait) = scheduled.checked_duration_since(Instant::now()) {
                    tokio::time::sleep(wait).await;
                }
                let path = &paths[(i as usize + c) % paths.len()];
                if conn.get(path).await.is_none() {
                    conn = HttpConn::connect(addr).await;
                    continue;
                }
                lat.push(scheduled.elapsed().as_secs_f64() * 1_000.0);
                i += 1;
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap_or_default());
    }
    all.sort_by(f64::total_cmp);
    HttpResult {
        rate: all.len() as f64 / seconds as f64,
        p50: pct(&all, 0.5),
        p99: pct(&all, 0.99),
    }
}

/// Pipelined single-value RPUSHes (the size of a bar) for 3 s: the Redis write ceiling.
async fn raw_redis_rate(url: &str) -> f64 {
    let client = redis::Client::open(url).expect("client");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let payload = vec![0x5a_u8; 110];
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < Duration::from_secs(3) {
        let mut pipe = redis::pipe();
        for i in 0..1_000 {
            pipe.cmd("RPUSH")
                .arg(format!("raw:{i}"))
                .arg(&payload)
                .ignore();
        }
        pipe.exec_async(&mut conn).await.expect("raw pipeline");
        n += 1_000;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

/// Upserting rows with barkeep's schema in the shape of its flushes (every tick one bar per
/// symbol, 10 ticks per transaction): the SQLite ceiling.
fn raw_sqlite_rate(path: &std::path::Path) -> f64 {
    let mut conn = rusqlite::Connection::open(path).expect("open");
    conn.pragma_update(None, "journal_mode", "WAL")
        .expect("wal");
    conn.pragma_update(None, "synchronous", "NORMAL")
        .expect("sync");
    conn.execute_batch(include_str!("../schema.sql"))
        .expect("schema");
    let names: Vec<String> = (0..1_000).map(|i| format!("S{i:05}")).collect();
    let start = Instant::now();
    let (mut n, mut tick) = (0u64, 0i64);
    while start.elapsed() < Duration::from_secs(3) {
        let tx = conn.transaction().expect("tx");
        {
            let mut stmt = tx
                .prepare_cached(
                    "INSERT INTO bars VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
                     ON CONFLICT (symbol, timeframe, ts) DO UPDATE SET close = excluded.close",
                )
                .expect("prepare");
            for _ in 0..10 {
                tick += 1;
                for name in &names {
                    stmt.execute(rusqlite::params![
                        name,
                        "1s",
                        tick * 1_000,
                        1.0,
                        1.0,
                        1.0,
                        1.0,
                        1.0,
                        "raw",
                        1.0
                    ])
                    .expect("insert");
                }
            }
        }
        tx.commit().expect("commit");
        n += 10_000;
    }
    n as f64 / start.elapsed().as_secs_f64()
}
