//! Fault-injection soak: the release `barkeep` binary collecting for N minutes while its
//! provider, its Redis, its process and its disk fail at random, then the invariants checked
//! on what it stored.
//!
//! ```sh
//! cargo build --release --bin barkeep --example soak
//! cargo run --release --example soak -- --minutes 6 [--seed N] [--symbols 30] [--no-disk]
//! scripts/soak.sh 6               # the same
//! ```
//!
//! What runs:
//! - a fixture provider speaking Twelve Data's documented format (batched
//!   `/quote?symbol=A,B,…`, `/time_series?interval=1min…` for warm-up and gap repair, error
//!   objects, `Retry-After`), one price per symbol and second so history and quotes agree. It
//!   answers 500s, 429s with `Retry-After`, holds requests past `PROVIDER_HTTP_TIMEOUT`, or is
//!   down (its port closed), in episodes and now and then per request;
//! - `redis-server` on a free port, killed with SIGKILL and restarted (empty) at random;
//! - barkeep (`TIMEFRAMES=1s,1m`, `COLLECTION_INTERVAL=1s`, `MARKET_HOURS=*:always`), killed
//!   with SIGKILL or stopped with SIGTERM and restarted at random;
//! - a full disk: barkeep's SQLite lives on a small tmpfs, filled and freed again. The tmpfs is
//!   mounted in a user and mount namespace (`unshare --user --map-root-user --mount`, like
//!   `tests/storage_faults.rs`): the soak re-runs itself inside one, so the file system outlives
//!   every barkeep process. Where `unshare` cannot do that the fault is skipped and the summary
//!   says so. One SIGTERM lands while the disk is full (exit code 4 expected).
//!
//! The fault schedule comes from a seeded ChaCha8 (the seed is printed; `--seed` replays the
//! schedule — what each fault hits still depends on timing). The last 20 s are quiet: every
//! fault healed, then a final SIGTERM. Then the invariants:
//! 1. SQLite holds no duplicate (symbol, timeframe, ts), every ts on its timeframe's grid, and
//!    no Redis ring repeats or reorders a ts;
//! 2. every Redis ring equals its series' newest bars in SQLite (same ts and OHLCV, as many as
//!    `MAX_BARS_CACHE` allows);
//! 3. every hole in a stored series (the market is always open) lies in a `gaps` row with
//!    status `open` or `empty` (a `repaired` gap has no hole left);
//! 4. every exit was as documented: 0 after SIGTERM, 4 after SIGTERM on a full disk, no other
//!    exit, no panic in any log;
//! 5. barkeep's RSS (VmRSS, sampled every 250 ms) stayed below `--rss-limit-mb` (256).
//!
//! It prints a table and exits 1 if an invariant failed. The logs stay in the printed directory.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tokio::net::TcpListener;

mod common;

use common::{Proc, arg, free_port, now_ms};

const API_KEY: &str = "soak-key";
const HTTP_TIMEOUT_S: u64 = 2;
const MAX_BARS_CACHE: usize = 600;
const QUIET_TAIL: Duration = Duration::from_secs(20);
const IN_NAMESPACE: &str = "BARKEEP_SOAK_IN_NAMESPACE";

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let no_disk = args.iter().any(|a| a == "--no-disk");
    let mut disk_note = String::new();
    if !no_disk && std::env::var_os(IN_NAMESPACE).is_none() {
        if namespaces_work() {
            // Run again inside a user + mount namespace, where a tmpfs can be mounted.
            let status = Command::new("unshare")
                .args(["--user", "--map-root-user", "--mount"])
                .arg(std::env::current_exe().expect("exe"))
                .args(&args[1..])
                .env(IN_NAMESPACE, "1")
                .status()
                .expect("unshare");
            std::process::exit(status.code().unwrap_or(1));
        }
        disk_note = "skipped: `unshare --user --map-root-user --mount` cannot mount a tmpfs here"
            .to_string();
    }
    if no_disk {
        disk_note = "skipped: --no-disk".to_string();
    }
    let seed: u64 = arg(
        &args,
        "--seed",
        (now_ms() as u64) ^ u64::from(std::process::id()),
    );
    let opts = Opts {
        minutes: arg(&args, "--minutes", 6.0),
        seed,
        symbols: arg(&args, "--symbols", 30),
        rss_limit_mb: arg(&args, "--rss-limit-mb", 256),
        disk_note,
    };
    let failed = run(opts);
    std::process::exit(i32::from(failed));
}

struct Opts {
    minutes: f64,
    seed: u64,
    symbols: usize,
    rss_limit_mb: u64,
    disk_note: String,
}

fn namespaces_work() -> bool {
    Command::new("unshare")
        .args(["--user", "--map-root-user", "--mount", "sh", "-c"])
        .arg("d=$(mktemp -d) && mount -t tmpfs -o size=64k tmpfs \"$d\" && touch \"$d\"/x")
        .output()
        .is_ok_and(|o| o.status.success())
}

// ---------------------------------------------------------------------------------------------
// The fixture provider: Twelve Data's `/quote` and `/time_series`.

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Ok,
    Error500,
    RateLimited,
    Timeout,
    Down,
}

#[derive(Default)]
struct Served {
    requests: AtomicU64,
    quotes: AtomicU64,
    history: AtomicU64,
    e500: AtomicU64,
    e429: AtomicU64,
    held: AtomicU64,
    refused: AtomicU64,
    symbol_errors: AtomicU64,
}

/// What the fixture needs of a request.
struct Asked {
    path: String,
    query: String,
    auth: Option<String>,
}

struct Provider {
    mode: Mutex<Mode>,
    rng: Mutex<ChaCha8Rng>,
    served: Served,
}

/// The fixture market: one price per symbol and second, smooth, the same in quotes and history.
fn price(symbol: usize, sec: i64) -> f64 {
    let base = 50.0 + symbol as f64 * 7.0;
    let t = sec as f64;
    base * (1.0 + 0.01 * (t / 97.0 + symbol as f64).sin() + 0.002 * (t / 13.0).sin())
}

fn symbol_index(name: &str) -> Option<usize> {
    name.strip_prefix("SK")?.parse::<usize>().ok()
}

fn query_param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == name).then(|| {
            percent_encoding::percent_decode_str(&v.replace('+', " "))
                .decode_utf8_lossy()
                .into_owned()
        })
    })
}

fn json(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        "content-type",
        hyper::header::HeaderValue::from_static("application/json; charset=utf-8"),
    );
    r
}

fn api_error(status: StatusCode, code: u16, message: &str) -> Response<Full<Bytes>> {
    json(
        status,
        serde_json::json!({"code": code, "message": message, "status": "error"}).to_string(),
    )
}

fn utc_text(sec: i64) -> String {
    chrono::DateTime::from_timestamp(sec, 0)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_default()
}

fn quote_entry(name: &str, i: usize, sec: i64) -> serde_json::Value {
    let day = sec - sec.rem_euclid(86_400);
    let p = price(i, sec);
    serde_json::json!({
        "symbol": name, "name": format!("Soak {i}"), "exchange": "NASDAQ", "mic_code": "XNGS",
        "currency": "USD", "datetime": utc_text(day)[..10].to_string(), "timestamp": day,
        "last_quote_at": sec, "open": format!("{:.6}", price(i, day)),
        "high": format!("{:.6}", p * 1.01), "low": format!("{:.6}", p * 0.99),
        "close": format!("{p:.6}"), "volume": format!("{}", (sec - day) * 10 + i as i64),
        "previous_close": format!("{:.6}", price(i, day - 1)), "change": "0.0",
        "percent_change": "0.0", "average_volume": "1000000", "is_market_open": true
    })
}

impl Provider {
    /// What the fault schedule or chance makes of this request.
    fn fate(&self) -> Mode {
        let mode = *self.mode.lock();
        if mode != Mode::Ok {
            return mode;
        }
        let roll: f64 = self.rng.lock().random();
        match roll {
            r if r < 0.01 => Mode::Error500,
            r if r < 0.02 => Mode::RateLimited,
            r if r < 0.025 => Mode::Timeout,
            _ => Mode::Ok,
        }
    }

    async fn answer(&self, req: Asked) -> Option<Response<Full<Bytes>>> {
        let s = &self.served;
        s.requests.fetch_add(1, Ordering::Relaxed);
        match self.fate() {
            Mode::Down => {
                s.refused.fetch_add(1, Ordering::Relaxed);
                return None; // the connection is dropped
            }
            Mode::Error500 => {
                s.e500.fetch_add(1, Ordering::Relaxed);
                return Some(api_error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    500,
                    "Internal server error. Please try again later.",
                ));
            }
            Mode::RateLimited => {
                s.e429.fetch_add(1, Ordering::Relaxed);
                let wait = self.rng.lock().random_range(1..=3u32);
                let mut r = api_error(
                    StatusCode::TOO_MANY_REQUESTS,
                    429,
                    "You have run out of API credits for the current minute. Wait for the next minute or consider switching to a higher tier plan at https://twelvedata.com/pricing",
                );
                r.headers_mut()
                    .insert("retry-after", hyper::header::HeaderValue::from(wait));
                return Some(r);
            }
            Mode::Timeout => {
                s.held.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(HTTP_TIMEOUT_S * 1_000 + 1_500)).await;
            }
            Mode::Ok => {}
        }
        if req.auth.as_deref() != Some(format!("apikey {API_KEY}").as_str()) {
            return Some(api_error(
                StatusCode::UNAUTHORIZED,
                401,
                "**apikey** parameter is incorrect or not specified.",
            ));
        }
        let query = req.query.as_str();
        let now = now_ms() / 1_000;
        match req.path.as_str() {
            "/quote" => {
                s.quotes.fetch_add(1, Ordering::Relaxed);
                let symbols = query_param(query, "symbol").unwrap_or_default();
                let names: Vec<&str> = symbols.split(',').filter(|n| !n.is_empty()).collect();
                let entry = |name: &str| match symbol_index(name) {
                    Some(i) => quote_entry(name, i, now),
                    None => {
                        serde_json::json!({"code": 404, "message": "**symbol** not found", "status": "error"})
                    }
                };
                if names.len() == 1 {
                    return Some(json(StatusCode::OK, entry(names[0]).to_string()));
                }
                let mut map = serde_json::Map::new();
                for name in names {
                    // Now and then one symbol of the batch fails on its own.
                    let fails = self.rng.lock().random_bool(0.005);
                    let value = if fails {
                        s.symbol_errors.fetch_add(1, Ordering::Relaxed);
                        serde_json::json!({"code": 500, "message": "Internal error, try again", "status": "error"})
                    } else {
                        entry(name)
                    };
                    map.insert(name.to_string(), value);
                }
                Some(json(
                    StatusCode::OK,
                    serde_json::Value::Object(map).to_string(),
                ))
            }
            "/time_series" => {
                s.history.fetch_add(1, Ordering::Relaxed);
                Some(time_series(query, now))
            }
            _ => Some(api_error(StatusCode::NOT_FOUND, 404, "Not found")),
        }
    }
}

/// `/time_series?symbol&interval=1min&start_date&end_date&outputsize`: whole minutes from the
/// per-second prices, the forming minute last (as Twelve Data answers it).
fn time_series(query: &str, now: i64) -> Response<Full<Bytes>> {
    let Some(i) = query_param(query, "symbol")
        .as_deref()
        .and_then(symbol_index)
    else {
        return api_error(StatusCode::BAD_REQUEST, 400, "**symbol** not found");
    };
    if query_param(query, "interval").as_deref() != Some("1min") {
        return api_error(
            StatusCode::BAD_REQUEST,
            400,
            "**interval** not supported by this fixture",
        );
    }
    let date = |name: &str| {
        query_param(query, name).and_then(|t| {
            chrono::NaiveDateTime::parse_from_str(&t, "%Y-%m-%d %H:%M:%S")
                .ok()
                .map(|d| d.and_utc().timestamp())
        })
    };
    let (Some(start), Some(end)) = (date("start_date"), date("end_date")) else {
        return api_error(
            StatusCode::BAD_REQUEST,
            400,
            "**start_date** or **end_date** is not in a supported format",
        );
    };
    let size: usize = query_param(query, "outputsize")
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    let mut values = Vec::new();
    let mut m = start - start.rem_euclid(60);
    if m < start {
        m += 60;
    }
    while m <= end.min(now) && values.len() < size {
        let secs: Vec<f64> = (m..m + 60)
            .filter(|&s| s <= now)
            .map(|s| price(i, s))
            .collect();
        let high = secs.iter().copied().fold(f64::MIN, f64::max);
        let low = secs.iter().copied().fold(f64::MAX, f64::min);
        values.push(serde_json::json!({
            "datetime": utc_text(m), "open": format!("{:.6}", secs[0]),
            "high": format!("{high:.6}"), "low": format!("{low:.6}"),
            "close": format!("{:.6}", secs[secs.len() - 1]), "volume": format!("{}", secs.len() * 10)
        }));
        m += 60;
    }
    if values.is_empty() {
        return api_error(
            StatusCode::BAD_REQUEST,
            400,
            "No data is available on the specified dates. Try setting different start/end dates.",
        );
    }
    let meta = serde_json::json!({"symbol": format!("SK{i:02}"), "interval": "1min", "currency": "USD",
        "exchange_timezone": "UTC", "exchange": "NASDAQ", "mic_code": "XNGS", "type": "Common Stock"});
    json(
        StatusCode::OK,
        serde_json::json!({"meta": meta, "values": values, "status": "ok"}).to_string(),
    )
}

/// Serves on `addr` while the provider is not down; closes the port while it is.
async fn serve(addr: SocketAddr, provider: Arc<Provider>) {
    loop {
        while *provider.mode.lock() == Mode::Down {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let Ok(listener) = TcpListener::bind(addr).await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let Ok((stream, _)) = accepted else { continue };
                    let provider = Arc::clone(&provider);
                    tokio::spawn(async move {
                        let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                            let provider = Arc::clone(&provider);
                            let asked = Asked {
                                path: req.uri().path().to_string(),
                                query: req.uri().query().unwrap_or_default().to_string(),
                                auth: req
                                    .headers()
                                    .get("authorization")
                                    .and_then(|v| v.to_str().ok())
                                    .map(str::to_string),
                            };
                            async move {
                                match provider.answer(asked).await {
                                    Some(r) => Ok::<_, std::io::Error>(r),
                                    None => Err(std::io::Error::other("provider down")),
                                }
                            }
                        });
                        let _ = http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
                () = tokio::time::sleep(Duration::from_millis(50)) => {
                    if *provider.mode.lock() == Mode::Down {
                        break;
                    }
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// barkeep, Redis, the disk.

/// What one barkeep process's log said.
#[derive(Default)]
struct LogFacts {
    panics: AtomicUsize,
    lost_rows: AtomicU64,
    lost_lines: AtomicUsize,
}

struct Barkeep {
    child: Child,
    addr: SocketAddr,
    started: Instant,
    facts: Arc<LogFacts>,
    /// The newest `/metrics/json` counters seen.
    counters: serde_json::Value,
}

struct World {
    dir: PathBuf,
    db: PathBuf,
    redis_port: u16,
    provider_addr: SocketAddr,
    names: Vec<String>,
    log: Arc<Mutex<std::fs::File>>,
    runs: usize,
}

impl World {
    fn start_barkeep(&mut self) -> Barkeep {
        self.runs += 1;
        let run = self.runs;
        let mut child = Command::new(common::barkeep_binary())
            .arg("run")
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("SYMBOLS", self.names.join(","))
            .env("SOURCES", "twelvedata")
            .env(
                "TWELVEDATA_BASE_URL",
                format!("http://{}", self.provider_addr),
            )
            .env("TWELVEDATA_API_KEY", API_KEY)
            .env("TWELVEDATA_RATE_PER_MINUTE", "none")
            .env("TWELVEDATA_RATE_PER_DAY", "none")
            .env("PROVIDER_HTTP_TIMEOUT", format!("{HTTP_TIMEOUT_S}s"))
            .env("TIMEFRAMES", "1s,1m")
            .env("COLLECTION_INTERVAL", "1s")
            .env("MARKET_HOURS", "*:always")
            .env("BATCH_WRITE_INTERVAL", "5s")
            .env("BREAKER_OPEN", "5s")
            .env("WARMUP_BARS", "50")
            .env("BOOTSTRAP_ON_START", "false")
            .env("MAX_BARS_CACHE", MAX_BARS_CACHE.to_string())
            .env(
                "REDIS_URL",
                format!("redis://127.0.0.1:{}", self.redis_port),
            )
            .env("SQLITE_PATH", &self.db)
            .env("HTTP_ADDR", "127.0.0.1:0")
            .env("LOG_FORMAT", "text")
            .env("RUST_LOG", "info")
            .current_dir(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start barkeep (cargo build --release --bin barkeep first)");
        let stderr = child.stderr.take().expect("stderr");
        let facts = Arc::new(LogFacts::default());
        let (tx, rx) = mpsc::channel();
        {
            let (facts, log) = (Arc::clone(&facts), Arc::clone(&self.log));
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    if line.contains("panicked") {
                        facts.panics.fetch_add(1, Ordering::Relaxed);
                    }
                    if line.contains("rows could not be written before shutdown") {
                        facts.lost_lines.fetch_add(1, Ordering::Relaxed);
                        if let Some(n) = line
                            .split(" rows=")
                            .nth(1)
                            .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
                            .and_then(|n| n.parse::<u64>().ok())
                        {
                            facts.lost_rows.fetch_add(n, Ordering::Relaxed);
                        }
                    }
                    if let Some(addr) = common::listening_addr(&line) {
                        let _ = tx.send(addr);
                    }
                    let _ = writeln!(log.lock(), "[run {run}] {line}");
                }
            });
        }
        let addr = rx
            .recv_timeout(Duration::from_secs(180))
            .expect("barkeep listens within 3 minutes");
        Barkeep {
            child,
            addr,
            started: Instant::now(),
            facts,
            counters: serde_json::Value::Null,
        }
    }
}

fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status();
}

/// Waits up to `limit` for the process to exit; SIGKILL after that (returns `None`).
fn wait_exit(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let until = Instant::now() + limit;
    while Instant::now() < until {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

fn http_get(addr: SocketAddr, path: &str) -> Option<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).ok()?;
    raw.split_once("\r\n\r\n").map(|(_, b)| b.to_string())
}

struct Redis {
    child: Option<Proc>,
    port: u16,
}

impl Redis {
    fn start(&mut self) {
        self.child = Some(Proc(common::redis_server(self.port, [])));
        let port = self.port;
        let until = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn kill(&mut self) {
        self.child = None; // SIGKILL on drop
    }
}

/// Fills the file system under `dir` with `filler` until ENOSPC.
fn fill(filler: &Path) -> u64 {
    let mut file = std::fs::File::create(filler).expect("filler");
    let block = [0u8; 65_536];
    let mut written = 0u64;
    while file.write_all(&block).is_ok() {
        written += block.len() as u64;
    }
    let small = [0u8; 512];
    while file.write_all(&small).is_ok() {
        written += small.len() as u64;
    }
    written
}

// ---------------------------------------------------------------------------------------------
// The schedule.

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Fault {
    Provider500,
    Provider429,
    ProviderTimeout,
    ProviderDown,
    ProviderLongOutage,
    RedisKill,
    Sigkill,
    Sigterm,
    DiskFull,
    SigtermOnFullDisk,
}

struct Exit {
    run: usize,
    after: &'static str,
    expected: &'static str,
    got: String,
    ok: bool,
}

fn describe(status: Option<ExitStatus>) -> String {
    use std::os::unix::process::ExitStatusExt;
    match status {
        None => "no exit within 30 s (killed)".to_string(),
        Some(s) => match (s.code(), s.signal()) {
            (Some(c), _) => format!("exit {c}"),
            (None, Some(sig)) => format!("signal {sig}"),
            _ => "unknown".to_string(),
        },
    }
}

#[allow(clippy::too_many_lines, reason = "one scenario, read top to bottom")]
fn run(opts: Opts) -> bool {
    println!(
        "barkeep soak: {} min, {} symbols, seed {} (replay the schedule: --seed {})",
        opts.minutes, opts.symbols, opts.seed, opts.seed
    );
    let mut rng = ChaCha8Rng::seed_from_u64(opts.seed);
    let dir = tempfile::Builder::new()
        .prefix("barkeep-soak-")
        .tempdir()
        .expect("tempdir")
        .keep();
    let data = dir.join("data");
    std::fs::create_dir_all(&data).expect("data dir");
    let mut disk_note = opts.disk_note.clone();
    let disk = disk_note.is_empty()
        && Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=64m", "tmpfs"])
            .arg(&data)
            .status()
            .is_ok_and(|s| s.success());
    if disk_note.is_empty() && !disk {
        disk_note = "skipped: mounting the tmpfs failed".to_string();
    }
    println!(
        "logs and database: {} (disk fault: {})",
        dir.display(),
        if disk {
            "on, 64 MiB tmpfs"
        } else {
            disk_note.as_str()
        }
    );

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let provider = Arc::new(Provider {
        mode: Mutex::new(Mode::Ok),
        rng: Mutex::new(ChaCha8Rng::seed_from_u64(opts.seed.wrapping_add(1))),
        served: Served::default(),
    });
    let provider_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    rt.spawn(serve(provider_addr, Arc::clone(&provider)));

    let mut redis = Redis {
        child: None,
        port: free_port(),
    };
    redis.start();

    let log = std::fs::File::create(dir.join("barkeep.log")).expect("log file");
    let mut world = World {
        dir: dir.clone(),
        db: data.join("barkeep.db"),
        redis_port: redis.port,
        provider_addr,
        names: (1..=opts.symbols).map(|i| format!("SK{i:02}")).collect(),
        log: Arc::new(Mutex::new(log)),
        runs: 0,
    };

    let start = Instant::now();
    let total = Duration::from_secs_f64(opts.minutes * 60.0);
    let faults_end = total.saturating_sub(QUIET_TAIL);
    let mut injected: BTreeMap<Fault, u32> = BTreeMap::new();
    let mut exits: Vec<Exit> = Vec::new();
    let (mut peak_rss_kb, mut rss_samples) = (0u64, 0u64);
    let mut totals: BTreeMap<String, f64> = BTreeMap::new();
    let mut panics = 0usize;
    let mut lost_rows = 0u64;
    let mut provider_heal: Option<Instant> = None;
    let mut redis_back: Option<Instant> = None;
    let mut disk_free: Option<(Instant, bool)> = None;
    let filler = data.join("filler");
    let mut next_fault = Instant::now() + Duration::from_secs(rng.random_range(8..15));
    let mut next_metrics = Instant::now();
    let mut sigterm_on_full_disk_done = false;

    let mut barkeep = world.start_barkeep();
    // Counters of a run end with the run: add its last /metrics/json to the totals.
    let mut bank = |b: &Barkeep, totals: &mut BTreeMap<String, f64>| {
        if let Some(c) = b.counters.as_object() {
            for (k, v) in c {
                *totals.entry(k.clone()).or_default() += v.as_f64().unwrap_or(0.0);
            }
        }
        panics += b.facts.panics.load(Ordering::Relaxed);
        lost_rows += b.facts.lost_rows.load(Ordering::Relaxed);
    };

    let stop_with = |b: &mut Barkeep, disk_full: bool, exits: &mut Vec<Exit>, run: usize| {
        signal(b.child.id(), "TERM");
        let status = wait_exit(&mut b.child, Duration::from_secs(30));
        let got = describe(status);
        let expected = if disk_full { "exit 4" } else { "exit 0" };
        exits.push(Exit {
            run,
            after: if disk_full {
                "SIGTERM, disk full"
            } else {
                "SIGTERM"
            },
            expected,
            ok: got == expected,
            got,
        });
    };

    while start.elapsed() < total {
        std::thread::sleep(Duration::from_millis(250));
        let now = Instant::now();
        if let Some((rss, _)) = common::rss_kb(barkeep.child.id()) {
            peak_rss_kb = peak_rss_kb.max(rss);
            rss_samples += 1;
        }
        if now >= next_metrics {
            next_metrics = now + Duration::from_secs(2);
            if let Some(m) = http_get(barkeep.addr, "/metrics/json")
                .and_then(|b| serde_json::from_str::<serde_json::Value>(&b).ok())
            {
                barkeep.counters = m["counters"].clone();
            }
        }
        // A barkeep that exited on its own.
        if let Ok(Some(status)) = barkeep.child.try_wait() {
            exits.push(Exit {
                run: world.runs,
                after: "nothing (exited on its own)",
                expected: "running",
                got: describe(Some(status)),
                ok: false,
            });
            bank(&barkeep, &mut totals);
            barkeep = world.start_barkeep();
        }
        if provider_heal.is_some_and(|t| now >= t) {
            *provider.mode.lock() = Mode::Ok;
            provider_heal = None;
        }
        if redis_back.is_some_and(|t| now >= t) {
            redis.start();
            redis_back = None;
        }
        if let Some((at, sigterm)) = disk_free
            && now >= at
        {
            if sigterm {
                *injected.entry(Fault::SigtermOnFullDisk).or_default() += 1;
                stop_with(&mut barkeep, true, &mut exits, world.runs);
                bank(&barkeep, &mut totals);
                let _ = std::fs::remove_file(&filler);
                barkeep = world.start_barkeep();
            } else {
                let _ = std::fs::remove_file(&filler);
            }
            disk_free = None;
        }
        if now < next_fault || start.elapsed() >= faults_end {
            continue;
        }
        next_fault = now + Duration::from_millis(rng.random_range(3_000..10_000));
        let roll = rng.random_range(0..100u32);
        let fault = match roll {
            0..15 => Fault::Provider500,
            15..27 => Fault::Provider429,
            27..39 => Fault::ProviderTimeout,
            39..51 => Fault::ProviderDown,
            51..54 => Fault::ProviderLongOutage,
            54..68 => Fault::RedisKill,
            68..80 => Fault::Sigkill,
            80..90 => Fault::Sigterm,
            _ => Fault::DiskFull,
        };
        // Draw every episode's length whether or not it applies, so the schedule replays.
        let episode = Duration::from_millis(rng.random_range(2_000..12_000));
        let long = Duration::from_secs(rng.random_range(65..90));
        let down = Duration::from_millis(rng.random_range(500..8_000));
        let disk_hold = Duration::from_secs(rng.random_range(10..25));
        let disk_sigterm = rng.random_bool(0.5);
        let busy_disk = disk_free.is_some();
        let applied = match fault {
            Fault::Provider500
            | Fault::Provider429
            | Fault::ProviderTimeout
            | Fault::ProviderDown
            | Fault::ProviderLongOutage
                if provider_heal.is_none() =>
            {
                let (mode, length) = match fault {
                    Fault::Provider500 => (Mode::Error500, episode),
                    Fault::Provider429 => (Mode::RateLimited, episode),
                    Fault::ProviderTimeout => (Mode::Timeout, episode),
                    Fault::ProviderDown => (Mode::Down, episode),
                    _ => (Mode::Down, long),
                };
                // A long outage must end before the quiet tail.
                let length = length.min(faults_end.saturating_sub(start.elapsed()));
                *provider.mode.lock() = mode;
                provider_heal = Some(now + length);
                true
            }
            Fault::RedisKill if redis_back.is_none() => {
                redis.kill();
                redis_back = Some(now + down);
                true
            }
            Fault::Sigkill if !busy_disk => {
                signal(barkeep.child.id(), "KILL");
                let status = wait_exit(&mut barkeep.child, Duration::from_secs(10));
                let got = describe(status);
                exits.push(Exit {
                    run: world.runs,
                    after: "SIGKILL",
                    expected: "signal 9",
                    ok: got == "signal 9",
                    got,
                });
                bank(&barkeep, &mut totals);
                std::thread::sleep(down.min(Duration::from_secs(4)));
                barkeep = world.start_barkeep();
                true
            }
            Fault::Sigterm if !busy_disk => {
                stop_with(&mut barkeep, false, &mut exits, world.runs);
                bank(&barkeep, &mut totals);
                std::thread::sleep(down.min(Duration::from_secs(3)));
                barkeep = world.start_barkeep();
                true
            }
            Fault::DiskFull if disk && !busy_disk && start.elapsed() + disk_hold < faults_end => {
                fill(&filler);
                // The first disk episode always ends with a SIGTERM (exit 4 expected).
                let sigterm = disk_sigterm || !sigterm_on_full_disk_done;
                sigterm_on_full_disk_done |= sigterm;
                disk_free = Some((now + disk_hold, sigterm));
                true
            }
            _ => false,
        };
        if applied {
            *injected.entry(fault).or_default() += 1;
            println!("{:>6.1}s  {fault:?}", start.elapsed().as_secs_f64());
        }
    }
    // Quiet tail is over: everything healed; stop for good.
    *provider.mode.lock() = Mode::Ok;
    if redis_back.is_some() {
        redis.start();
    }
    if disk_free.is_some() {
        let _ = std::fs::remove_file(&filler);
    }
    if let Some(m) = http_get(barkeep.addr, "/metrics/json")
        .and_then(|b| serde_json::from_str::<serde_json::Value>(&b).ok())
    {
        barkeep.counters = m["counters"].clone();
    }
    stop_with(&mut barkeep, false, &mut exits, world.runs);
    let last_run_secs = barkeep.started.elapsed().as_secs();
    bank(&barkeep, &mut totals);
    std::thread::sleep(Duration::from_millis(300));
    // Keep the database for inspection: the tmpfs goes with the namespace.
    for ext in ["", "-wal", "-shm"] {
        let from = PathBuf::from(format!("{}{ext}", world.db.display()));
        let _ = std::fs::copy(&from, dir.join(format!("barkeep.db{ext}")));
    }

    let checks = check(&dir.join("barkeep.db"), redis.port, &world.names);
    let restarts = world.runs - 1;
    let elapsed = start.elapsed().as_secs_f64();

    // The summary.
    let served = &provider.served;
    let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
    println!(
        "\n| soak ({:.1} min, seed {}) | figure |",
        elapsed / 60.0,
        opts.seed
    );
    println!("|---|---|");
    for (fault, n) in &injected {
        println!("| fault: {fault:?} | {n} |");
    }
    if !disk {
        println!("| fault: DiskFull | {disk_note} |");
    }
    println!(
        "| provider answers: requests / 500 / 429 / held past timeout / refused (down) / per-symbol errors | {} / {} / {} / {} / {} / {} |",
        load(&served.requests),
        load(&served.e500),
        load(&served.e429),
        load(&served.held),
        load(&served.refused),
        load(&served.symbol_errors)
    );
    println!(
        "| provider requests: /quote / /time_series | {} / {} |",
        load(&served.quotes),
        load(&served.history)
    );
    println!(
        "| barkeep processes / restarts | {} / {restarts} (last ran {last_run_secs} s) |",
        world.runs
    );
    let counter = |k: &str| totals.get(k).copied().unwrap_or(0.0);
    let rejects: f64 = totals
        .iter()
        .filter(|(k, _)| k.starts_with("rejects_total"))
        .map(|(_, v)| v)
        .sum();
    println!(
        "| bars stored (SQLite rows: 1s / 1m) | {} / {} |",
        checks.bars_1s, checks.bars_1m
    );
    println!(
        "| bars closed / written (sum of each run's last /metrics, ≈: a SIGKILL loses ≤2 s) | {} / {} |",
        counter("bars_closed_total"),
        counter("sqlite_bars_written_total")
    );
    println!(
        "| rejects (counted / stored rows) | {rejects} / {} |",
        checks.rejects
    );
    println!(
        "| gaps in SQLite: open / repaired / empty | {} / {} / {} |",
        checks.gaps_open, checks.gaps_repaired, checks.gaps_empty
    );
    println!(
        "| redis resyncs / backfilled / recovered bars | {} / {} / {} |",
        counter("redis_resyncs_total"),
        counter("redis_backfilled_bars_total"),
        counter("redis_recovered_bars_total")
    );
    println!(
        "| history bars (warm-up) / repaired bars | {} / {} |",
        counter("history_bars_total"),
        counter("repaired_bars_total")
    );
    println!("| rows lost at SIGTERM on a full disk (log) | {lost_rows} |");
    let exit_summary: BTreeMap<String, usize> = exits.iter().fold(BTreeMap::new(), |mut m, e| {
        *m.entry(format!("{} → {}", e.after, e.got)).or_default() += 1;
        m
    });
    for (k, n) in &exit_summary {
        println!("| exits: {k} | {n} |");
    }
    let peak_mb = peak_rss_kb as f64 / 1024.0;
    println!("| peak VmRSS ({rss_samples} samples) | {peak_mb:.1} MB |");

    let exit_ok = exits.iter().all(|e| e.ok) && panics == 0;
    let rss_ok = peak_mb < opts.rss_limit_mb as f64;
    let results = [
        (
            "1 no duplicate (SQLite key, grid, rings)",
            checks.duplicates.is_empty(),
        ),
        (
            "2 every Redis ring = SQLite's newest bars",
            checks.ring_mismatches.is_empty(),
        ),
        (
            "3 every hole repaired or in gaps",
            checks.uncovered_holes.is_empty(),
        ),
        ("4 exit codes as documented, no panic", exit_ok),
        ("5 RSS bounded", rss_ok),
    ];
    for (name, ok) in results {
        println!(
            "| invariant {name} | {} |",
            if ok { "pass" } else { "FAIL" }
        );
    }
    for (what, list) in [
        ("duplicate", &checks.duplicates),
        ("ring mismatch", &checks.ring_mismatches),
        ("uncovered hole", &checks.uncovered_holes),
    ] {
        for line in list.iter().take(10) {
            println!("  {what}: {line}");
        }
        if list.len() > 10 {
            println!("  … {} more", list.len() - 10);
        }
    }
    for e in exits.iter().filter(|e| !e.ok) {
        println!(
            "  exit of run {} after {}: expected {}, got {}",
            e.run, e.after, e.expected, e.got
        );
    }
    if panics > 0 {
        println!(
            "  {panics} panic lines in {}",
            dir.join("barkeep.log").display()
        );
    }
    if !rss_ok {
        println!(
            "  peak RSS {peak_mb:.1} MB ≥ limit {} MB",
            opts.rss_limit_mb
        );
    }
    let failed = results.iter().any(|(_, ok)| !ok);
    println!(
        "{}",
        serde_json::json!({
            "seed": opts.seed, "minutes": elapsed / 60.0, "symbols": opts.symbols, "disk_fault": disk,
            "faults": injected.iter().map(|(k, v)| (format!("{k:?}"), *v)).collect::<BTreeMap<_, _>>(),
            "restarts": restarts, "bars_1s": checks.bars_1s, "bars_1m": checks.bars_1m,
            "rejects_stored": checks.rejects, "gaps_open": checks.gaps_open,
            "gaps_repaired": checks.gaps_repaired, "gaps_empty": checks.gaps_empty,
            "peak_rss_mb": peak_mb, "lost_rows": lost_rows, "failed": failed,
        })
    );
    if disk {
        let _ = Command::new("umount").arg(&data).status();
    }
    drop(rt);
    failed
}

// ---------------------------------------------------------------------------------------------
// The invariants, on what is stored.

#[derive(Default)]
struct Checks {
    bars_1s: u64,
    bars_1m: u64,
    rejects: u64,
    gaps_open: u64,
    gaps_repaired: u64,
    gaps_empty: u64,
    duplicates: Vec<String>,
    ring_mismatches: Vec<String>,
    uncovered_holes: Vec<String>,
}

type Row = (i64, [f64; 5]);

fn check(db: &Path, redis_port: u16, names: &[String]) -> Checks {
    let conn = rusqlite::Connection::open(db).expect("open the soak's database");
    let one = |sql: &str| {
        conn.query_row(sql, [], |r| r.get::<_, i64>(0))
            .expect("query") as u64
    };
    let mut c = Checks {
        bars_1s: one("SELECT count(*) FROM bars WHERE timeframe = '1s'"),
        bars_1m: one("SELECT count(*) FROM bars WHERE timeframe = '1m'"),
        rejects: one("SELECT count(*) FROM rejects"),
        gaps_open: one("SELECT count(*) FROM gaps WHERE status = 'open'"),
        gaps_repaired: one("SELECT count(*) FROM gaps WHERE status = 'repaired'"),
        gaps_empty: one("SELECT count(*) FROM gaps WHERE status = 'empty'"),
        ..Checks::default()
    };
    // 1. The key cannot repeat (primary key); check anyway, and the grid.
    let mut stmt = conn
        .prepare(
            "SELECT symbol, timeframe, ts, count(*) FROM bars GROUP BY symbol, timeframe, ts
             HAVING count(*) > 1
             UNION ALL
             SELECT symbol, timeframe, ts, 0 FROM bars
             WHERE ts % (CASE timeframe WHEN '1s' THEN 1000 ELSE 60000 END) != 0",
        )
        .expect("prepare");
    let bad = stmt
        .query_map([], |r| {
            Ok(format!(
                "SQLite {} {} ts {} (count {})",
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, i64>(3)?
            ))
        })
        .expect("query")
        .filter_map(Result::ok);
    c.duplicates.extend(bad);

    let mut redis = redis::Client::open(format!("redis://127.0.0.1:{redis_port}"))
        .expect("client")
        .get_connection()
        .expect("connect to the soak's redis");
    for name in names {
        for (tf, ms) in [("1s", 1_000i64), ("1m", 60_000)] {
            let rows = stored(&conn, name, tf);
            // 2. The ring against SQLite's newest bars.
            let key = format!("barkeep:bars:{{{name}}}:{tf}");
            let raw: Vec<Vec<u8>> = redis::cmd("LRANGE")
                .arg(&key)
                .arg(0)
                .arg(-1)
                .query(&mut redis)
                .expect("LRANGE");
            let ring: Vec<Row> = raw
                .iter()
                .filter_map(|b| rmp_serde::from_slice::<serde_json::Value>(b).ok())
                .map(|v| {
                    let f = |k: &str| v[k].as_f64().unwrap_or(f64::NAN);
                    (
                        v["ts"].as_i64().unwrap_or(i64::MIN),
                        [f("open"), f("high"), f("low"), f("close"), f("volume")],
                    )
                })
                .collect();
            if ring.len() != raw.len() {
                c.ring_mismatches.push(format!(
                    "{key}: {} entries do not decode",
                    raw.len() - ring.len()
                ));
            }
            if ring.windows(2).any(|w| w[1].0 <= w[0].0) {
                c.duplicates
                    .push(format!("{key}: ring ts not strictly increasing"));
            }
            let want = rows.len().min(MAX_BARS_CACHE);
            let newest = &rows[rows.len() - want..];
            if ring.len() != want {
                c.ring_mismatches.push(format!(
                    "{key}: {} bars, SQLite's newest {want} expected (SQLite {}..{}, ring {}..{})",
                    ring.len(),
                    newest.first().map_or(0, |r| r.0),
                    newest.last().map_or(0, |r| r.0),
                    ring.first().map_or(0, |r| r.0),
                    ring.last().map_or(0, |r| r.0),
                ));
            } else if let Some((r, s)) = ring.iter().zip(newest).find(|(r, s)| r != s) {
                c.ring_mismatches
                    .push(format!("{key}: ring {r:?} ≠ SQLite {s:?}"));
            }
            // 3. Holes against the gaps table.
            let gaps = gap_rows(&conn, name, tf);
            for w in rows.windows(2) {
                let (a, b) = (w[0].0 + ms, w[1].0);
                if b <= a {
                    continue;
                }
                if let Some(why) = uncovered(a, b, &gaps) {
                    c.uncovered_holes.push(format!(
                        "{name} {tf} [{a}, {b}) ({} bars): {why}",
                        (b - a) / ms
                    ));
                }
            }
        }
    }
    c
}

fn stored(conn: &rusqlite::Connection, symbol: &str, tf: &str) -> Vec<Row> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT ts, open, high, low, close, volume FROM bars
             WHERE symbol = ?1 AND timeframe = ?2 ORDER BY ts",
        )
        .expect("prepare");
    stmt.query_map([symbol, tf], |r| {
        Ok((
            r.get(0)?,
            [r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?],
        ))
    })
    .expect("query")
    .filter_map(Result::ok)
    .collect()
}

fn gap_rows(conn: &rusqlite::Connection, symbol: &str, tf: &str) -> Vec<(i64, i64, String)> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT from_ts, to_ts, status FROM gaps WHERE symbol = ?1 AND timeframe = ?2
             ORDER BY from_ts",
        )
        .expect("prepare");
    stmt.query_map([symbol, tf], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .expect("query")
        .filter_map(Result::ok)
        .collect()
}

/// Why the hole `[a, b)` is not accounted for by `gaps` (sorted by start), if it is not.
fn uncovered(a: i64, b: i64, gaps: &[(i64, i64, String)]) -> Option<String> {
    let mut at = a;
    let mut repaired = false;
    for (from, to, status) in gaps {
        if *from > at {
            break;
        }
        if *to > at {
            repaired |= status == "repaired";
            at = at.max(*to);
            if at >= b {
                break;
            }
        }
    }
    if at < b {
        return Some(if at == a {
            "no gap row".to_string()
        } else {
            format!("gap rows cover it only up to {at}")
        });
    }
    repaired.then(|| "its gap is marked repaired but bars are missing".to_string())
}
