//! Hardening of the HTTP server ("anyone who can connect can silence the API"): held-open
//! sockets — silent, trickling a head (slowloris), or idle keep-alives — are closed within the
//! configured timeouts, a new connection's `GET /health` answers promptly while 1 100 of them
//! are held by the same loopback peer, and the errors the server produces itself (400, 414, 431)
//! carry the documented JSON body. Raw TCP clients on 127.0.0.1 only.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use barkeep::clock::Clock;
use barkeep::config::Config;
use common::{command, wait_for};

/// Attack sockets each big test opens (scaled down if the open-files limit cannot allow it).
const ATTACKERS: usize = 1_100;
const TRICKLE_MS: u64 = 100;
/// The big tests hold thousands of descriptors (both ends live in this process): one at a time.
static HEAVY: Mutex<()> = Mutex::new(());

fn config(db: &std::path::Path, vars: &[(&str, String)]) -> Config {
    let db = db.to_str().expect("utf-8 path").to_string();
    let vars: Vec<(String, String)> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    Config::from_lookup(move |name| {
        if let Some((_, v)) = vars.iter().find(|(k, _)| k == name) {
            return Some(v.clone());
        }
        match name {
            "SQLITE_PATH" => Some(db.clone()),
            "COLLECTION_INTERVAL" => Some("100ms".into()),
            "SYNTHETIC_BAD_TICK_RATE" => Some("0".into()),
            _ => None,
        }
    })
    .expect("valid config")
}

/// Runs the sidecar in this process (the HTTP API on its own runtime, as in production) and
/// `check` against it from a blocking thread.
fn with_sidecar(vars: &[(&str, String)], check: impl FnOnce(SocketAddr) + Send + 'static) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let vars = vars.to_vec();
    runtime.block_on(async move {
        let dir = tempfile::tempdir().expect("tempdir");
        // A backlog for 1 100 connections opened in a burst (the binary binds with the
        // standard 128; past it the kernel drops SYNs and each retry costs the attacker 1 s,
        // which only slows the test down).
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket
            .bind("127.0.0.1:0".parse().expect("addr"))
            .expect("bind");
        let listener = socket.listen(2_048).expect("listen");
        let addr = listener.local_addr().expect("addr");
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let app = tokio::spawn(barkeep::app::run_with(
            config(&dir.path().join("b.db"), &vars),
            listener,
            Clock::System,
            async {
                let _ = stop_rx.await;
            },
        ));
        let checked = tokio::task::spawn_blocking(move || check(addr)).await;
        let _ = stop_tx.send(());
        tokio::time::timeout(Duration::from_secs(15), app)
            .await
            .expect("shutdown in time")
            .expect("join")
            .expect("clean shutdown");
        if let Err(panic) = checked {
            std::panic::resume_unwind(panic.into_panic());
        }
    });
}

/// `raw` sent on a new connection; the answer read to its end: (status, head, body).
fn exchange(
    addr: SocketAddr,
    raw: &[u8],
    timeout: Duration,
) -> std::io::Result<(u16, String, String)> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(timeout))?;
    s.write_all(raw)?;
    let mut bytes = Vec::new();
    s.read_to_end(&mut bytes)?;
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| std::io::Error::other(format!("no HTTP answer: {text:?}")))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("no status: {head:?}")))?;
    Ok((status, head.to_string(), body.to_string()))
}

/// `GET /health` from a new connection: the answer must be JSON with 200 or 503; returns how
/// long it took.
fn probe_health(addr: SocketAddr) -> Result<Duration, String> {
    let started = Instant::now();
    let (status, _, body) = exchange(
        addr,
        b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
        Duration::from_secs(10),
    )
    .map_err(|e| format!("no answer after {:?}: {e}", started.elapsed()))?;
    let elapsed = started.elapsed();
    let json: serde_json::Value =
        serde_json::from_str(&body).map_err(|e| format!("not JSON ({e}): {body}"))?;
    if !(status == 200 || status == 503) || json["status"].is_null() {
        return Err(format!("{status}: {body}"));
    }
    Ok(elapsed)
}

fn wait_healthy(addr: SocketAddr) {
    wait_for(Duration::from_secs(10), || {
        probe_health(addr).ok().filter(|_| health_code(addr) == 200)
    })
    .expect("healthy before the attack");
}

fn health_code(addr: SocketAddr) -> u16 {
    exchange(
        addr,
        b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
        Duration::from_secs(10),
    )
    .map_or(0, |(code, _, _)| code)
}

/// (soft, hard) open-files limit of this process, from /proc.
fn open_files_limit() -> Option<(u64, String)> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let fields: Vec<&str> = line.split_whitespace().collect();
    let soft = match fields.get(3)? {
        &"unlimited" => u64::MAX,
        n => n.parse().ok()?,
    };
    Some((soft, fields.get(4)?.to_string()))
}

/// How many attackers this process can afford: raises the soft open-files limit towards the
/// hard one if needed (util-linux `prlimit` on our own pid: no unsafe code, no crate), else
/// scales the attack down — the tests prove the mechanism, not the number.
fn attackers() -> usize {
    let want = (2 * ATTACKERS + 600) as u64;
    let Some((soft, hard)) = open_files_limit() else {
        return ATTACKERS;
    };
    let soft = if soft >= want {
        soft
    } else {
        let _ = std::process::Command::new("prlimit")
            .arg(format!("--pid={}", std::process::id()))
            .arg(format!("--nofile={want}:{hard}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
        open_files_limit().map_or(soft, |(s, _)| s)
    };
    if soft >= want {
        ATTACKERS
    } else {
        let n = usize::try_from(soft.saturating_sub(600) / 2)
            .unwrap_or(0)
            .max(60);
        eprintln!("open-files limit {soft}: {n} attackers instead of {ATTACKERS}");
        n
    }
}

/// The pool for `n` attackers: the production default for the full attack, else a bit less
/// than the attackers, so they outnumber it.
fn pool_for(n: usize) -> usize {
    if n >= ATTACKERS { 1_024 } else { n * 10 / 11 }
}

/// An attacker's socket and when it opened / was seen closed.
struct Held {
    stream: TcpStream,
    opened: Instant,
    closed: Option<Instant>,
    /// Bytes of the slowloris head sent so far.
    sent: usize,
}

/// Whether the server closed `s` (EOF or reset), without blocking.
fn is_closed(s: &mut TcpStream) -> bool {
    let mut byte = [0_u8; 64];
    match s.read(&mut byte) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) if e.kind() == ErrorKind::WouldBlock => false,
        Err(_) => true,
    }
}

/// A slowloris head: never finished.
fn slow_head(i: usize) -> u8 {
    const START: &[u8] = b"GET /health HTTP/1.1\r\nHost: localhost\r\nX-Slow: ";
    START.get(i).copied().unwrap_or(b'a')
}

#[derive(Debug)]
struct Outcome {
    attackers: usize,
    /// How long opening them took.
    opening: Duration,
    health_max: Duration,
    /// Closed before any timeout: shed for newer connections.
    shed: usize,
    open_longest: Duration,
    still_open: usize,
}

/// Opens `n` attacker sockets (silent, or slowloris trickling one byte per socket every
/// 100 ms), probes `/health` from new connections while they are held, then waits up to
/// `within` for the server to close every one of them.
fn attack(addr: SocketAddr, n: usize, slowloris: bool, header_timeout: Duration) -> Outcome {
    let within = header_timeout + Duration::from_secs(3);
    let mut held: Vec<Held> = Vec::with_capacity(n);
    let started = Instant::now();
    let mut polled = Instant::now();
    for _ in 0..n {
        if polled.elapsed() >= Duration::from_millis(20) {
            // Sockets shed while the attack builds up are seen closed when they are.
            polled = Instant::now();
            for h in held.iter_mut().filter(|h| h.closed.is_none()) {
                if is_closed(&mut h.stream) {
                    h.closed = Some(Instant::now());
                }
            }
        }
        let mut stream = TcpStream::connect(addr).expect("connect an attacker");
        let mut sent = 0;
        if slowloris {
            stream
                .write_all(&[slow_head(0), slow_head(1), slow_head(2)])
                .expect("write");
            sent = 3;
        }
        stream.set_nonblocking(true).expect("nonblocking");
        held.push(Held {
            stream,
            opened: Instant::now(),
            closed: None,
            sent,
        });
    }
    let opening = started.elapsed();
    // The attack is in place: a new connection must still get its answer at once.
    let mut health_max = Duration::ZERO;
    for _ in 0..5 {
        let took = probe_health(addr).unwrap_or_else(|e| panic!("/health under attack: {e}"));
        health_max = health_max.max(took);
    }
    let end = Instant::now() + within;
    let mut last_trickle = Instant::now();
    loop {
        let now = Instant::now();
        let trickle = slowloris && now - last_trickle >= Duration::from_millis(TRICKLE_MS);
        if trickle {
            last_trickle = now;
        }
        for h in held.iter_mut().filter(|h| h.closed.is_none()) {
            let gone = is_closed(&mut h.stream)
                || (trickle && {
                    let byte = [slow_head(h.sent)];
                    h.sent += 1;
                    matches!(h.stream.write(&byte), Err(e) if e.kind() != ErrorKind::WouldBlock)
                });
            if gone {
                h.closed = Some(Instant::now());
            }
        }
        if held.iter().all(|h| h.closed.is_some()) || Instant::now() > end {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let open_for: Vec<Duration> = held
        .iter()
        .map(|h| h.closed.unwrap_or_else(Instant::now) - h.opened)
        .collect();
    Outcome {
        attackers: n,
        opening,
        health_max,
        shed: open_for
            .iter()
            .filter(|d| **d < Duration::from_millis(500))
            .count(),
        open_longest: open_for.iter().copied().max().unwrap_or_default(),
        still_open: held.iter().filter(|h| h.closed.is_none()).count(),
    }
}

fn assert_survived(what: &str, o: &Outcome, header_timeout: Duration) {
    eprintln!(
        "{what}: {} attackers opened in {:?}; /health from a new connection took at most {:?}; {} shed at once, the longest open {:?}, {} still open",
        o.attackers, o.opening, o.health_max, o.shed, o.open_longest, o.still_open
    );
    assert!(
        o.health_max < Duration::from_secs(1),
        "{what}: /health from a new connection took {:?}, longer than it may: {o:?}",
        o.health_max
    );
    assert_eq!(o.still_open, 0, "{what}: attackers left open: {o:?}");
    assert!(
        o.open_longest < header_timeout + Duration::from_millis(1_500),
        "{what}: an attacker stayed {:?}, past the header timeout {header_timeout:?}: {o:?}",
        o.open_longest
    );
}

/// 1 100 silent sockets from the loopback peer (one peer!), with the default per-peer cap: the
/// new connection replaces the peer's oldest idle one; the others close at the header timeout.
#[test]
fn health_answers_while_1100_idle_sockets_are_held() {
    let _heavy = HEAVY.lock().unwrap_or_else(|e| e.into_inner());
    let n = attackers();
    let header = Duration::from_secs(2);
    let vars = [
        ("HTTP_HEADER_TIMEOUT", "2s".to_string()),
        ("HTTP_IDLE_TIMEOUT", "3s".to_string()),
        ("HTTP_POOL_SIZE", pool_for(n).to_string()),
    ];
    with_sidecar(&vars, move |addr| {
        wait_healthy(addr);
        let o = attack(addr, n, false, header);
        assert_survived("idle sockets", &o, header);
        assert!(
            o.shed >= o.attackers - 64,
            "beyond the per-peer cap, the oldest idle sockets are shed at once: {o:?}"
        );
        assert_eq!(health_code(addr), 200, "healthy after the attack");
    });
}

/// A slowloris of 1 100 connections each trickling a head that never ends, with no per-peer cap
/// to speak of: the pool fills, a new connection replaces the oldest of them, and each closes
/// at the header timeout however steadily it trickles.
#[test]
fn health_answers_during_a_slowloris_that_fills_the_pool() {
    let _heavy = HEAVY.lock().unwrap_or_else(|e| e.into_inner());
    let n = attackers();
    let header = Duration::from_secs(2);
    let vars = [
        ("HTTP_HEADER_TIMEOUT", "2s".to_string()),
        ("HTTP_IDLE_TIMEOUT", "3s".to_string()),
        ("HTTP_POOL_SIZE", pool_for(n).to_string()),
        ("HTTP_MAX_CONNECTIONS_PER_PEER", "100000".to_string()),
    ];
    with_sidecar(&vars, move |addr| {
        wait_healthy(addr);
        let o = attack(addr, n, true, header);
        assert_survived("slowloris", &o, header);
        assert!(
            o.shed >= o.attackers - pool_for(o.attackers),
            "past the pool size the oldest waiting connections are shed: {o:?}"
        );
        assert_eq!(health_code(addr), 200, "healthy after the attack");
    });
}

/// A keep-alive connection that goes quiet after a response closes at the idle timeout (not
/// the shorter header timeout); one that sends half a head after a response closes at the
/// header timeout; a new silent one at the header timeout; one in use stays open past both.
#[test]
fn idle_and_half_sent_keep_alives_close_at_their_timeouts() {
    let vars = [
        ("HTTP_HEADER_TIMEOUT", "1s".to_string()),
        ("HTTP_IDLE_TIMEOUT", "2500ms".to_string()),
    ];
    with_sidecar(&vars, |addr| {
        wait_healthy(addr);
        let request = b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n";
        let connect = move || {
            let s = TcpStream::connect(addr).expect("connect");
            s.set_read_timeout(Some(Duration::from_secs(10)))
                .expect("timeout");
            s
        };
        // One full keep-alive exchange: the head, then exactly content-length bytes.
        let exchange_on = move |s: &mut TcpStream| {
            s.write_all(request).expect("write");
            let mut head = Vec::new();
            let mut byte = [0_u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                s.read_exact(&mut byte).expect("response head");
                head.push(byte[0]);
            }
            let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
            assert!(head.starts_with("http/1.1 200"), "{head}");
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .and_then(|v| v.trim().parse().ok())
                .expect("content-length");
            let mut body = vec![0_u8; len];
            s.read_exact(&mut body).expect("body");
        };
        // Blocks until the server closes `s`; how long that took from `since`.
        let closed_after = |mut s: TcpStream, since: Instant| {
            let mut buf = [0_u8; 64];
            loop {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => return since.elapsed(),
                    Ok(_) => {}
                }
            }
        };
        let quiet = std::thread::spawn(move || {
            let mut s = connect();
            exchange_on(&mut s);
            closed_after(s, Instant::now())
        });
        let half = std::thread::spawn(move || {
            let mut s = connect();
            exchange_on(&mut s);
            std::thread::sleep(Duration::from_millis(100));
            s.write_all(b"GET /health HTTP/1.1\r\nHo").expect("write");
            closed_after(s, Instant::now())
        });
        let silent = std::thread::spawn(move || closed_after(connect(), Instant::now()));
        let busy = std::thread::spawn(move || {
            let mut s = connect();
            let start = Instant::now();
            while start.elapsed() < Duration::from_millis(4_000) {
                exchange_on(&mut s);
                std::thread::sleep(Duration::from_millis(100));
            }
            start.elapsed()
        });
        let quiet = quiet.join().expect("quiet");
        let half = half.join().expect("half");
        let silent = silent.join().expect("silent");
        let busy = busy.join().expect("busy");
        eprintln!(
            "idle keep-alive closed after {quiet:?}, half-sent head after {half:?}, silent new connection after {silent:?}, a connection in use served for {busy:?}"
        );
        assert!(
            (Duration::from_millis(2_400)..Duration::from_millis(3_500)).contains(&quiet),
            "idle keep-alive: {quiet:?}"
        );
        assert!(
            (Duration::from_millis(900)..Duration::from_millis(2_000)).contains(&half),
            "half-sent head: {half:?}"
        );
        assert!(
            (Duration::from_millis(900)..Duration::from_millis(2_000)).contains(&silent),
            "silent connection: {silent:?}"
        );
        assert!(busy >= Duration::from_millis(4_000));
    });
}

/// The answers the server gives to requests it cannot take are JSON like every other error.
#[test]
fn http_level_errors_have_json_bodies() {
    with_sidecar(&[], |addr| {
        wait_healthy(addr);
        let long = "a".repeat(20_000);
        let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
            (
                "a long query",
                format!(
                    "GET /health?x={} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                    "a".repeat(9_000)
                )
                .into_bytes(),
                414,
                "uri_too_long",
            ),
            (
                "a request line longer than the head limit",
                format!("GET /{long} HTTP/1.1\r\nHost: x\r\n\r\n").into_bytes(),
                414,
                "uri_too_long",
            ),
            (
                "a huge header",
                format!("GET /health HTTP/1.1\r\nHost: x\r\nX-Big: {long}\r\n\r\n").into_bytes(),
                431,
                "headers_too_large",
            ),
            (
                // Far more than hyper reads before it gives up: the rest is drained, so closing
                // does not reset the connection before the client reads the answer.
                "a 512 KiB header",
                format!(
                    "GET /health HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
                    "b".repeat(512 * 1024)
                )
                .into_bytes(),
                431,
                "headers_too_large",
            ),
            (
                "too many headers",
                format!(
                    "GET /health HTTP/1.1\r\nHost: x\r\n{}\r\n",
                    (0..150)
                        .map(|i| format!("X-{i}: y\r\n"))
                        .collect::<String>()
                )
                .into_bytes(),
                431,
                "headers_too_large",
            ),
            (
                "a header line without a colon",
                b"GET /health HTTP/1.1\r\nHost: x\r\nnot a header\r\n\r\n".to_vec(),
                400,
                "bad_request",
            ),
            (
                "a broken request line",
                b"GET\x01/health HTTP/1.1\r\n\r\n".to_vec(),
                400,
                "bad_request",
            ),
            (
                "an unknown HTTP version",
                b"GET /health HTTP/7.3\r\nHost: x\r\n\r\n".to_vec(),
                400,
                "bad_request",
            ),
            (
                "a bad content-length",
                b"GET /health HTTP/1.1\r\nHost: x\r\nContent-Length: lots\r\n\r\n".to_vec(),
                400,
                "bad_request",
            ),
        ];
        for (what, raw, status, kind) in cases {
            let (got, head, body) = exchange(addr, &raw, Duration::from_secs(10))
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            assert_eq!(got, status, "{what}: {head}\n{body}");
            let head = head.to_ascii_lowercase();
            assert!(
                head.contains("content-type: application/json"),
                "{what}: {head}"
            );
            assert!(
                head.contains(&format!("content-length: {}", body.len())),
                "{what}: {head}"
            );
            let json: serde_json::Value = serde_json::from_str(&body)
                .unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {body}"));
            assert_eq!(json["error"], kind, "{what}: {body}");
            assert!(
                json["message"].as_str().is_some_and(|m| !m.is_empty()),
                "{what}: {body}"
            );
        }
        assert_eq!(health_code(addr), 200, "still serving");
    });
}

#[test]
fn bad_http_settings_exit_2_naming_the_variable() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (var, value, hint) in [
        ("HTTP_HEADER_TIMEOUT", "forever", "duration"),
        ("HTTP_IDLE_TIMEOUT", "10ms", "from 100ms"),
        ("HTTP_MAX_CONNECTIONS_PER_PEER", "0", "from 1"),
    ] {
        let out = command(dir.path(), &[(var, value)])
            .arg("run")
            .output()
            .expect("run barkeep");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{var}={value}: {stderr}");
        assert!(
            stderr.contains(var) && stderr.contains(value) && stderr.contains(hint),
            "{var}={value}: {stderr}"
        );
    }
}
