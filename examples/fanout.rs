//! Fan-out harness: many SSE clients on barkeep's streams, against Redis pub/sub fanning the
//! same messages out to as many subscribers, on the same box in the same run.
//!
//! ```sh
//! cargo build --release --bin barkeep --example fanout
//! target/release/examples/fanout --clients 1000 --symbols 100 --seconds 20 [--barkeep PATH]
//! ```
//!
//! What runs: a private `redis-server` and the release `barkeep` binary on its simulated market
//! (`N` symbols, `COLLECTION_INTERVAL=1s`, the default `TIMEFRAMES=1m`, Redis on), then two phases of
//! `--seconds` each after a short warm-up:
//! 1. **sse** — `--clients` connections on `GET /streaming/sse` (every symbol, both channels):
//!    tick → client latency from each message's `timestamp` (the tick's time), messages per
//!    client, barkeep's CPU.
//! 2. **redis** — one SSE client relays every message it gets to one Redis pub/sub channel
//!    (pipelined `PUBLISH`), and `--clients` subscribers read it: the same messages, the same
//!    count, fanned out by redis-server instead; its latency includes the relay's hop. CPU of
//!    barkeep and redis-server.
//!
//! Each client checks `seq` per channel: a skipped or repeated message is counted. Output: one
//! table row per phase and a JSON line.

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

mod common;

use common::{Proc, arg, barkeep_binary, cpu_seconds, free_port, listening_addr, now_ms};

/// Latency histogram bins: 1 ms each up to this, then one overflow bin.
const BINS: usize = 10_000;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let clients: usize = arg(&args, "--clients", 1_000);
    let symbols: usize = arg(&args, "--symbols", 100);
    let seconds: u64 = arg(&args, "--seconds", 20);
    let binary: std::path::PathBuf = arg(&args, "--barkeep", barkeep_binary());
    // One worker thread: the clients' side takes at most one of the box's cores.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(run(&binary, clients, symbols, seconds));
}

/// What every client of a phase adds to.
struct Tally {
    measuring: AtomicBool,
    messages: AtomicU64,
    /// Connections closed before the response head.
    refused: AtomicU64,
    /// Messages whose `seq` skipped ahead of or repeated the channel's last one.
    out_of_order: AtomicU64,
    per_client: parking_lot::Mutex<Vec<u64>>,
    bins: parking_lot::Mutex<Vec<u64>>,
}

impl Tally {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            measuring: AtomicBool::new(false),
            messages: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            out_of_order: AtomicU64::new(0),
            per_client: parking_lot::Mutex::new(Vec::new()),
            bins: parking_lot::Mutex::new(vec![0; BINS + 1]),
        })
    }

    fn percentile(&self, q: f64) -> f64 {
        let bins = self.bins.lock();
        let total: u64 = bins.iter().sum();
        let want = ((total as f64) * q).ceil() as u64;
        let mut seen = 0;
        for (ms, n) in bins.iter().enumerate() {
            seen += n;
            if seen >= want.max(1) {
                return ms as f64;
            }
        }
        f64::NAN
    }
}

/// One client's view while it reads: its histogram and each channel's last `seq`.
struct Reader {
    tally: Arc<Tally>,
    bins: Vec<u64>,
    messages: u64,
    out_of_order: u64,
    last_seq: HashMap<Vec<u8>, u64>,
    /// Bytes read and not yet split into lines.
    buf: Vec<u8>,
}

impl Reader {
    fn new(tally: &Arc<Tally>) -> Self {
        Self {
            tally: Arc::clone(tally),
            bins: vec![0; BINS + 1],
            messages: 0,
            out_of_order: 0,
            last_seq: HashMap::new(),
            buf: Vec::with_capacity(128 * 1024),
        }
    }

    /// Reads from `stream` until `stop`, taking every line that is a message (the JSON of the
    /// streaming model, on a line of its own in both transports: SSE's `data: ` and Redis'
    /// RESP framing come on other lines or are stripped); each is handed to `relay` if given.
    async fn read_all(
        &mut self,
        stream: &mut (impl tokio::io::AsyncRead + Unpin),
        stop: &AtomicBool,
        relay: Option<&tokio::sync::mpsc::UnboundedSender<Vec<u8>>>,
    ) {
        while !stop.load(Ordering::Relaxed) {
            let read =
                tokio::time::timeout(Duration::from_millis(500), stream.read_buf(&mut self.buf));
            match read.await {
                Ok(Ok(0)) | Ok(Err(_)) => break,
                Ok(Ok(_)) => {}
                Err(_) => continue,
            }
            let mut buf = std::mem::take(&mut self.buf);
            let mut start = 0;
            while let Some(nl) = buf[start..].iter().position(|&b| b == b'\n') {
                let line = &buf[start..start + nl];
                let line = line.strip_prefix(b"data: ").unwrap_or(line);
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                if line.starts_with(b"{\"channel\"") {
                    self.message(line);
                    if let Some(relay) = relay {
                        let _ = relay.send(line.to_vec());
                    }
                }
                start += nl + 1;
            }
            buf.drain(..start);
            self.buf = buf;
        }
    }

    /// One message: latency from its tick, `seq` order per channel.
    fn message(&mut self, json: &[u8]) {
        let (Some(ts), Some(seq), Some(channel)) = (
            number_after(json, b"\"timestamp\":"),
            number_after(json, b"\"seq\":"),
            string_after(json, b"\"channel\":\""),
        ) else {
            return;
        };
        let last = match self.last_seq.get_mut(channel) {
            Some(last) => Some(std::mem::replace(last, seq)),
            None => {
                self.last_seq.insert(channel.to_vec(), seq);
                None
            }
        };
        // Checked while measuring only: a subscription opens on each kind's newest message
        // (the channel's state), whose seqs are not consecutive.
        if self.tally.measuring.load(Ordering::Relaxed) {
            if last.is_some_and(|last| seq != last + 1) {
                self.out_of_order += 1;
            }
            let ms = (now_ms() - ts as i64).clamp(0, BINS as i64) as usize;
            self.bins[ms] += 1;
            self.messages += 1;
        }
    }

    fn finish(self) {
        let mut bins = self.tally.bins.lock();
        for (all, mine) in bins.iter_mut().zip(&self.bins) {
            *all += mine;
        }
        drop(bins);
        self.tally
            .messages
            .fetch_add(self.messages, Ordering::Relaxed);
        self.tally
            .out_of_order
            .fetch_add(self.out_of_order, Ordering::Relaxed);
        self.tally.per_client.lock().push(self.messages);
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn number_after(s: &[u8], key: &[u8]) -> Option<u64> {
    let rest = &s[find(s, key)? + key.len()..];
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()
}

fn string_after<'a>(s: &'a [u8], key: &[u8]) -> Option<&'a [u8]> {
    let rest = &s[find(s, key)? + key.len()..];
    Some(&rest[..rest.iter().position(|&b| b == b'"')?])
}

/// Opens `GET /streaming/sse` on both channels of every symbol; returns the stream and any
/// body bytes that came with the response head; `None` if barkeep closed it first.
async fn open_sse(addr: std::net::SocketAddr) -> Option<(TcpStream, Vec<u8>)> {
    let mut stream = TcpStream::connect(addr).await.expect("connect to barkeep");
    stream
        .write_all(
            b"GET /streaming/sse?channels=market_data,analytics HTTP/1.1\r\nHost: barkeep\r\nAccept: text/event-stream\r\n\r\n",
        )
        .await
        .expect("send request");
    let mut head = Vec::with_capacity(4096);
    loop {
        if stream.read_buf(&mut head).await.unwrap_or(0) == 0 {
            return None;
        }
        if let Some(end) = find(&head, b"\r\n\r\n") {
            if !head.starts_with(b"HTTP/1.1 200") {
                let status = head.split(|&b| b == b'\r').next().unwrap_or_default();
                panic!(
                    "barkeep refused the SSE subscription: {}",
                    String::from_utf8_lossy(status)
                );
            }
            return Some((stream, head.split_off(end + 4)));
        }
    }
}

/// An SSE client. With `relay`, every message is also handed on.
async fn sse_client(
    addr: std::net::SocketAddr,
    tally: Arc<Tally>,
    stop: Arc<AtomicBool>,
    relay: Option<tokio::sync::mpsc::UnboundedSender<Vec<u8>>>,
) {
    let Some((mut stream, rest)) = open_sse(addr).await else {
        tally.refused.fetch_add(1, Ordering::Relaxed);
        return;
    };
    let mut me = Reader::new(&tally);
    me.buf = rest;
    me.read_all(&mut stream, &stop, relay.as_ref()).await;
    me.finish();
}

/// A Redis subscriber on `channel`, reading the raw RESP stream: each message's payload is the
/// JSON the relay published, on a line of its own.
async fn redis_subscriber(port: u16, channel: &str, tally: Arc<Tally>, stop: Arc<AtomicBool>) {
    let mut stream = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect to redis");
    stream
        .write_all(format!("SUBSCRIBE {channel}\r\n").as_bytes())
        .await
        .expect("subscribe");
    let mut me = Reader::new(&tally);
    me.read_all(&mut stream, &stop, None).await;
    me.finish();
}

/// Relays every message to Redis: one pipelined `PUBLISH` per message, sent as they come.
async fn relay_to_redis(
    port: u16,
    channel: String,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<Vec<u8>>,
) {
    let mut stream = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect to redis");
    let (mut read, mut write) = stream.split();
    let drain = async {
        // Replies (subscriber counts) are read and dropped so the socket never fills.
        let mut sink = vec![0u8; 64 * 1024];
        while read.read(&mut sink).await.unwrap_or(0) > 0 {}
    };
    let send = async {
        let mut buf = Vec::with_capacity(64 * 1024);
        while let Some(first) = rx.recv().await {
            buf.clear();
            let mut next = Some(first);
            while let Some(msg) = next {
                buf.extend_from_slice(
                    format!(
                        "*3\r\n$7\r\nPUBLISH\r\n${}\r\n{channel}\r\n${}\r\n",
                        channel.len(),
                        msg.len()
                    )
                    .as_bytes(),
                );
                buf.extend_from_slice(&msg);
                buf.extend_from_slice(b"\r\n");
                next = rx.try_recv().ok();
            }
            if write.write_all(&buf).await.is_err() {
                break;
            }
        }
    };
    tokio::select! {
        () = drain => {}
        () = send => {}
    }
}

struct Phase {
    name: &'static str,
    tally: Arc<Tally>,
    barkeep_cpu: f64,
    redis_cpu: f64,
    harness_cpu: f64,
    seconds: f64,
}

impl Phase {
    fn row(&self) -> String {
        let per_client = self.tally.per_client.lock();
        let (min, max) = per_client
            .iter()
            .fold((u64::MAX, 0), |(lo, hi), &n| (lo.min(n), hi.max(n)));
        format!(
            "| {} | {} ({} closed) | {:.0} | {:.0} | {:.0} | {}–{} | {} | {:.0} % | {:.0} % | {:.0} % |",
            self.name,
            per_client.len(),
            self.tally.refused.load(Ordering::Relaxed),
            self.tally.messages.load(Ordering::Relaxed) as f64 / self.seconds,
            self.tally.percentile(0.5),
            self.tally.percentile(0.99),
            min,
            max,
            self.tally.out_of_order.load(Ordering::Relaxed),
            100.0 * self.barkeep_cpu / self.seconds,
            100.0 * self.redis_cpu / self.seconds,
            100.0 * self.harness_cpu / self.seconds,
        )
    }

    fn json(&self) -> String {
        format!(
            "{{\"phase\":\"{}\",\"deliveries_per_s\":{:.0},\"p50_ms\":{},\"p99_ms\":{},\"out_of_order\":{},\"barkeep_cpu_pct\":{:.1},\"redis_cpu_pct\":{:.1},\"harness_cpu_pct\":{:.1}}}",
            self.name,
            self.tally.messages.load(Ordering::Relaxed) as f64 / self.seconds,
            self.tally.percentile(0.5),
            self.tally.percentile(0.99),
            self.tally.out_of_order.load(Ordering::Relaxed),
            100.0 * self.barkeep_cpu / self.seconds,
            100.0 * self.redis_cpu / self.seconds,
            100.0 * self.harness_cpu / self.seconds,
        )
    }
}

/// Measures `seconds` of whatever the clients of `tally` are doing, after a warm-up.
async fn measure(name: &'static str, tally: Arc<Tally>, pids: (u32, u32), seconds: u64) -> Phase {
    tokio::time::sleep(Duration::from_secs(3)).await;
    let me = std::process::id();
    let before = (cpu_seconds(pids.0), cpu_seconds(pids.1), cpu_seconds(me));
    let started = std::time::Instant::now();
    tally.measuring.store(true, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    tally.measuring.store(false, Ordering::Relaxed);
    let elapsed = started.elapsed().as_secs_f64();
    Phase {
        name,
        barkeep_cpu: cpu_seconds(pids.0) - before.0,
        redis_cpu: cpu_seconds(pids.1) - before.1,
        harness_cpu: cpu_seconds(me) - before.2,
        tally,
        seconds: elapsed,
    }
}

async fn run(binary: &std::path::Path, clients: usize, symbols: usize, seconds: u64) {
    let dir = tempfile::tempdir().expect("temp dir");
    let redis_port = free_port();
    let redis = Proc(common::redis_server(redis_port, []));
    while TcpStream::connect(("127.0.0.1", redis_port)).await.is_err() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let names: Vec<String> = (0..symbols).map(|i| format!("S{i:04}")).collect();
    let mut child = Command::new(binary)
        .arg("run")
        .env_clear()
        .env("SYMBOLS", names.join(","))
        .env("SOURCES", "synthetic")
        .env("SYNTHETIC_BAD_TICK_RATE", "0")
        .env("COLLECTION_INTERVAL", "1s")
        .env("WARMUP_BARS", "0")
        .env("BOOTSTRAP_ON_START", "false")
        .env("REDIS_URL", format!("redis://127.0.0.1:{redis_port}"))
        .env("SQLITE_PATH", dir.path().join("b.db"))
        .env("HTTP_ADDR", "127.0.0.1:0")
        .env("HTTP_POOL_SIZE", (clients + 64).to_string())
        .env("HTTP_MAX_CONNECTIONS_PER_PEER", (clients + 32).to_string())
        .env("LOG_FORMAT", "text")
        .env("RUST_LOG", "warn,barkeep::app=info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("barkeep binary (cargo build --release --bin barkeep)");
    let log = child.stderr.take().expect("stderr");
    let barkeep_pid = child.id();
    let barkeep = Proc(child);
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    // Its log is read to the end on a thread of its own, so barkeep never blocks on the pipe.
    std::thread::spawn(move || {
        for line in std::io::BufRead::lines(std::io::BufReader::new(log)).map_while(Result::ok) {
            if let Some(addr) = listening_addr(&line) {
                let _ = addr_tx.send(addr);
            }
        }
    });
    let addr = addr_rx
        .recv_timeout(Duration::from_secs(30))
        .expect("barkeep's `listening` line");
    let pids = (barkeep_pid, redis.0.id());

    // Phase 1: every client on barkeep's SSE.
    let tally = Tally::new();
    let stop = Arc::new(AtomicBool::new(false));
    // Clients connect in waves of 50, 10 ms apart, as a fleet of bots would, not all in one
    // millisecond.
    let mut tasks = Vec::with_capacity(clients);
    for i in 0..clients {
        if i % 50 == 49 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tasks.push(tokio::spawn(sse_client(
            addr,
            Arc::clone(&tally),
            Arc::clone(&stop),
            None,
        )));
    }
    let sse = measure("sse", tally, pids, seconds).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }

    // Phase 2: one SSE client relays to Redis pub/sub, every subscriber reads Redis.
    let tally = Tally::new();
    let stop = Arc::new(AtomicBool::new(false));
    let channel = "fanout".to_owned();
    let mut tasks: Vec<_> = (0..clients)
        .map(|_| {
            let (tally, stop, channel) = (Arc::clone(&tally), Arc::clone(&stop), channel.clone());
            tokio::spawn(async move { redis_subscriber(redis_port, &channel, tally, stop).await })
        })
        .collect();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let relay = tokio::spawn(relay_to_redis(redis_port, channel, rx));
    let relay_tally = Tally::new();
    tasks.push(tokio::spawn(sse_client(
        addr,
        relay_tally,
        Arc::clone(&stop),
        Some(tx),
    )));
    let fanned = measure("redis", tally, pids, seconds).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    relay.abort();

    println!(
        "\n{clients} clients, {symbols} symbols at 1 Hz, {seconds} s per phase (TIMEFRAMES=1m)\n"
    );
    println!(
        "| phase | clients | deliveries/s | tick → client p50 ms | p99 ms | messages per client | seq skipped or repeated | barkeep CPU | redis CPU | harness CPU |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    println!("{}", sse.row());
    println!("{}", fanned.row());
    println!("{}", sse.json());
    println!("{}", fanned.json());
    drop(barkeep);
    drop(redis);
}
