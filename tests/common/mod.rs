//! Shared test helpers: a running barkeep binary and a tiny blocking HTTP client.
#![allow(dead_code, reason = "each test binary uses a different subset")]

pub mod cluster;
pub mod postgres;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// `GET path` (or another method) → (status, body). One connection per request.
pub fn request(addr: SocketAddr, method: &str, path: &str) -> (u16, String) {
    send(addr, method, path, &[], None)
}

/// `method path` with extra `headers` and a `body` (sent with its `Content-Length`) →
/// (status, body). One connection per request.
pub fn send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> (u16, String) {
    let (status, _, body) = exchange(addr, method, path, headers, body);
    (status, body)
}

/// [`send`], answering the response headers too (names in lower case): (status, headers,
/// body).
pub fn exchange(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> (u16, Vec<(String, String)>, String) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if let Some(body) = body {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    head.push_str(body.unwrap_or_default());
    // A server may answer (a 413) and close before reading all of a long body.
    let _ = s.write_all(head.as_bytes());
    // Read to the end of the body its `Content-Length` announces (a server may keep the
    // connection open whatever the request said), or to the end of the stream.
    let mut bytes = Vec::new();
    let mut chunk = [0_u8; 16 * 1024];
    loop {
        let n = match s.read(&mut chunk) {
            Ok(n) => n,
            // A reset after the answer (the rest of a refused body unread) keeps what was read.
            Err(_) if !bytes.is_empty() => break,
            Err(e) => panic!("{method} {path}: no answer: {e}"),
        };
        if n == 0 {
            break;
        }
        bytes.extend_from_slice(&chunk[..n]);
        if let Some(end) = bytes.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&bytes[..end]);
            let length = head.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse::<usize>().ok())
                    .flatten()
            });
            let expected = if method == "HEAD" { Some(0) } else { length };
            if expected.is_some_and(|len| bytes.len() - end - 4 >= len) {
                break;
            }
        }
    }
    let raw = String::from_utf8_lossy(&bytes).into_owned();
    let (head, body) = raw.split_once("\r\n\r\n").expect("http response");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status");
    let headers = head
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    (status, headers, body.to_string())
}

/// [`send`], the answer parsed as JSON.
pub fn send_json(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> (u16, serde_json::Value) {
    let (status, text) = send(addr, method, path, &[], body);
    let value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{method} {path}: not JSON ({e}): {text}"));
    (status, value)
}

pub fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    request(addr, "GET", path)
}

pub fn get_json(addr: SocketAddr, path: &str) -> (u16, serde_json::Value) {
    let (status, body) = get(addr, path);
    let value =
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: not JSON ({e}): {body}"));
    (status, value)
}

/// Polls `f` every 50 ms until it returns `Some` or `timeout` passes.
pub fn wait_for<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
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

/// The barkeep binary, started with exactly `vars` as its environment (plus PATH), in `dir`.
pub struct Sidecar {
    pub child: Child,
    pub addr: SocketAddr,
    pub log: mpsc::Receiver<String>,
    pub lines: Vec<String>,
    /// Lines before this index have been looked at by [`Sidecar::wait_for_log`].
    searched: usize,
}

pub fn command(dir: &Path, vars: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_barkeep"));
    cmd.env_clear().current_dir(dir);
    if let Some(path) = std::env::var_os("PATH") {
        cmd.env("PATH", path);
    }
    for (k, v) in vars {
        cmd.env(k, v);
    }
    cmd
}

impl Sidecar {
    /// Starts `barkeep run` on a free port and waits until it listens.
    pub fn start(dir: &Path, vars: &[(&str, &str)]) -> Self {
        let mut vars = vars.to_vec();
        vars.push(("HTTP_ADDR", "127.0.0.1:0"));
        let mut cmd = command(dir, &vars);
        cmd.arg("run");
        Self::spawn(cmd)
    }

    /// Starts `cmd` (which runs `barkeep run`, perhaps through a wrapper that `exec`s it, with
    /// `HTTP_ADDR=127.0.0.1:0`) and waits until it listens.
    pub fn spawn(mut cmd: Command) -> Self {
        let mut child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn barkeep");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut lines = Vec::new();
        let addr = loop {
            let line = rx
                .recv_timeout(Duration::from_secs(30))
                .unwrap_or_else(|_| panic!("barkeep did not start; log:\n{}", lines.join("\n")));
            lines.push(line.clone());
            if let Some(rest) = line
                .split("addr=")
                .nth(1)
                .filter(|_| line.contains("listening"))
            {
                let addr = rest.split_whitespace().next().expect("addr");
                break addr.parse().expect("socket address");
            }
        };
        Self {
            child,
            addr,
            log: rx,
            lines,
            searched: 0,
        }
    }

    /// The next log line containing `marker` after the last one this found, waiting up to
    /// `timeout`. Lines read while starting count: a line written before the listening line
    /// (a fast background bootstrap's) is found too.
    pub fn wait_for_log(&mut self, marker: &str, timeout: Duration) -> Option<String> {
        let until = std::time::Instant::now() + timeout;
        loop {
            while self.searched < self.lines.len() {
                let line = &self.lines[self.searched];
                self.searched += 1;
                if line.contains(marker) {
                    return Some(line.clone());
                }
            }
            let left = until.checked_duration_since(std::time::Instant::now())?;
            if let Ok(line) = self.log.recv_timeout(left.min(Duration::from_millis(50))) {
                self.lines.push(line);
            }
        }
    }

    /// Sends SIGTERM, waits for exit, returns the exit code and the whole log.
    pub fn terminate(mut self) -> (i32, Vec<String>) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
        let code = self.child.wait().expect("wait").code().unwrap_or(-1);
        while let Ok(line) = self.log.recv_timeout(Duration::from_secs(5)) {
            self.lines.push(line);
        }
        (code, std::mem::take(&mut self.lines))
    }

    /// [`Sidecar::terminate`], which must exit 0: the bars it closed and wrote (its last log
    /// line) and the log.
    pub fn stop_cleanly(self) -> Stopped {
        let (code, log) = self.terminate();
        assert_eq!(code, 0, "exit code; log:\n{}", log.join("\n"));
        let field = |key| {
            log_field(&log, "stopped cleanly", key)
                .unwrap_or_else(|| panic!("{key} in the log:\n{}", log.join("\n")))
        };
        Stopped {
            bars_closed: field("bars_closed"),
            bars_written: field("bars_written"),
            log,
        }
    }

    /// The history store's part of `/health` (`sqlite` or `postgres`).
    pub fn store_health(&self, key: &str) -> serde_json::Value {
        get_json(self.addr, "/health").1[key].clone()
    }
}

/// What a clean stop reported.
pub struct Stopped {
    pub bars_closed: u64,
    pub bars_written: u64,
    pub log: Vec<String>,
}

impl Drop for Sidecar {
    /// A test that failed half-way must not leave a sidecar running.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A `key=value` field from the last log line containing `marker`.
pub fn log_field(lines: &[String], marker: &str, key: &str) -> Option<u64> {
    let line = lines.iter().rev().find(|l| l.contains(marker))?;
    let rest = line.split(&format!("{key}=")).nth(1)?;
    rest.split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// A value from SQLite.
pub fn sql_u64(db: &Path, sql: &str) -> u64 {
    let conn = rusqlite::Connection::open(db).expect("open db");
    conn.query_row(sql, [], |r| r.get::<_, i64>(0))
        .expect("query") as u64
}

/// A private `redis-server` on a free port (no persistence), killed on drop.
pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    pub dir: tempfile::TempDir,
    extra: Vec<String>,
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

impl RedisServer {
    pub fn start(extra: &[&str]) -> Self {
        let mut server = Self {
            child: None,
            port: free_port(),
            dir: tempfile::tempdir().expect("tempdir"),
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        server.restart();
        server
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn socket(&self) -> std::path::PathBuf {
        self.dir.path().join("redis.sock")
    }

    /// Starts the server (again) on the same port, empty.
    pub fn restart(&mut self) {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .arg("--unixsocket")
            .arg(self.socket())
            .arg("--dir")
            .arg(self.dir.path())
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (apt-get install redis-server)");
        self.child = Some(child);
        let port = self.port;
        wait_for(Duration::from_secs(10), || {
            TcpStream::connect(("127.0.0.1", port)).ok()
        })
        .expect("redis-server listens");
    }

    /// Kills the server at once, like a crash.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn client(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .expect("client")
            .get_connection()
            .expect("connect to test redis")
    }
}

/// `conn` subscribed to `channel`, each read waiting at most `timeout`.
pub fn subscribed<'a>(
    conn: &'a mut redis::Connection,
    channel: &str,
    timeout: Duration,
) -> redis::PubSub<'a> {
    let mut pubsub = conn.as_pubsub();
    pubsub.subscribe(channel).expect("subscribe");
    pubsub.set_read_timeout(Some(timeout)).expect("timeout");
    pubsub
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A MessagePack value from Redis as JSON, for easy assertions.
pub fn unpack(bytes: &[u8]) -> serde_json::Value {
    rmp_serde::from_slice(bytes).expect("MessagePack map")
}

/// Every bar in a Redis ring, as (ts, close).
pub fn ring(conn: &mut impl redis::ConnectionLike, key: &str) -> Vec<(i64, f64)> {
    let raw: Vec<Vec<u8>> = redis::cmd("LRANGE")
        .arg(key)
        .arg(0)
        .arg(-1)
        .query(conn)
        .expect("LRANGE");
    raw.iter()
        .map(|b| {
            let v = unpack(b);
            (
                v["ts"].as_i64().expect("ts"),
                v["close"].as_f64().expect("close"),
            )
        })
        .collect()
}

/// Up to `count` entries of a barkeep stream after `after` (`XREAD BLOCK block_ms`), as (id,
/// message); empty when none came in time.
pub fn xread(
    conn: &mut redis::Connection,
    key: &str,
    after: &str,
    count: usize,
    block_ms: u64,
) -> Vec<(String, serde_json::Value)> {
    use redis::Value;
    let reply: Value = redis::cmd("XREAD")
        .arg("COUNT")
        .arg(count)
        .arg("BLOCK")
        .arg(block_ms)
        .arg("STREAMS")
        .arg(key)
        .arg(after)
        .query(conn)
        .expect("XREAD");
    let text = |v: &Value| match v {
        Value::BulkString(b) => b.clone(),
        Value::SimpleString(s) => s.clone().into_bytes(),
        other => panic!("not a string: {other:?}"),
    };
    let streams = match reply {
        Value::Nil => return Vec::new(),
        Value::Array(streams) => streams,
        // RESP3 answers a map of stream → entries.
        Value::Map(pairs) => pairs.into_iter().flat_map(|(k, v)| [k, v]).collect(),
        other => panic!("XREAD reply {other:?}"),
    };
    let mut out = Vec::new();
    let entries: Vec<Value> = match streams.as_slice() {
        [Value::Array(pair)] => match pair.as_slice() {
            [_, Value::Array(entries)] => entries.clone(),
            other => panic!("XREAD stream {other:?}"),
        },
        [_, Value::Array(entries)] => entries.clone(),
        other => panic!("XREAD streams {other:?}"),
    };
    for entry in entries {
        let Value::Array(parts) = entry else {
            panic!("entry {entry:?}")
        };
        let id = String::from_utf8(text(&parts[0])).expect("id");
        let Value::Array(fields) = &parts[1] else {
            panic!("fields {parts:?}")
        };
        let msg = fields
            .chunks(2)
            .find(|kv| text(&kv[0]) == b"msg")
            .map(|kv| unpack(&text(&kv[1])))
            .expect("a msg field");
        out.push((id, msg));
    }
    out
}

/// The newest `n` bars in SQLite, oldest first, as (ts, close).
pub fn sqlite_newest(db: &Path, symbol: &str, tf: &str, n: usize) -> Vec<(i64, f64)> {
    let conn = rusqlite::Connection::open(db).expect("open db");
    let mut stmt = conn
        .prepare("SELECT ts, close FROM bars WHERE symbol = ?1 AND timeframe = ?2 ORDER BY ts DESC LIMIT ?3")
        .expect("prepare");
    let mut rows: Vec<(i64, f64)> = stmt
        .query_map(rusqlite::params![symbol, tf, n as i64], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .expect("query")
        .map(|r| r.expect("row"))
        .collect();
    rows.reverse();
    rows
}

/// Runs the sidecar in this process (`app::run_with` on a free port and `clock`) on a runtime of
/// its own, runs `scenario` against its address on a blocking thread, then stops it and expects
/// a clean shutdown within 15 s; returns what the scenario returned (its panic, if it panicked).
pub fn in_process<T: Send + 'static>(
    config: barkeep::config::Config,
    clock: barkeep::clock::Clock,
    scenario: impl FnOnce(SocketAddr) -> T + Send + 'static,
) -> T {
    in_process_on("127.0.0.1:0", config, clock, scenario)
}

/// [`in_process`] listening on `bind` (e.g. `0.0.0.0:0`, to be reached from another address
/// of the machine); the scenario gets the bound address.
pub fn in_process_on<T: Send + 'static>(
    bind: &str,
    config: barkeep::config::Config,
    clock: barkeep::clock::Clock,
    scenario: impl FnOnce(SocketAddr) -> T + Send + 'static,
) -> T {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(bind).await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let app = tokio::spawn(barkeep::app::run_with(config, listener, clock, async {
            let _ = stop_rx.await;
        }));
        let result = tokio::task::spawn_blocking(move || scenario(addr)).await;
        let _ = stop_tx.send(());
        tokio::time::timeout(Duration::from_secs(15), app)
            .await
            .expect("shutdown in time")
            .expect("join")
            .expect("clean shutdown");
        result.unwrap_or_else(|panic| std::panic::resume_unwind(panic.into_panic()))
    })
}

/// A configuration from `(variable, value)` pairs; everything else at its default.
pub fn config_of(vars: &[(&str, String)]) -> barkeep::config::Config {
    let vars = vars.to_vec();
    barkeep::config::Config::from_lookup(move |name| {
        vars.iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.clone())
    })
    .expect("valid config")
}

/// promtool is not on PATH: a notice and a pass, unless `CI` is set, where it must be (`.ci/run`
/// installs Debian's `prometheus` package, which ships it).
pub fn promtool_missing(what: &str) {
    let ci = std::env::var("CI").unwrap_or_default();
    assert!(
        ["", "0", "false"].contains(&ci.as_str()),
        "promtool is not installed, and CI={ci}: install it \
         (`apt-get install prometheus`, or run .ci/run, which does)"
    );
    eprintln!(
        "NOTICE: promtool not found on PATH, {what} \
         (apt-get install prometheus; with CI set this test fails instead)"
    );
}
