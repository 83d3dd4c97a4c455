//! A private `nats-server -js` on a free port with a temporary store, a TCP proxy in front of it
//! that can lose the server's answers and cut connections, and a late JetStream consumer.
#![allow(dead_code, reason = "each test binary uses a different subset")]

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::{free_port, wait_for};

/// `nats-server` on PATH, else Debian's `/usr/sbin/nats-server` (not on a user's PATH).
fn binary() -> String {
    let on_path = Command::new("nats-server")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if on_path {
        "nats-server".into()
    } else {
        "/usr/sbin/nats-server".into()
    }
}

/// A JetStream-enabled server, stopped on drop.
pub struct NatsServer {
    child: Option<Child>,
    pub port: u16,
    pub dir: tempfile::TempDir,
}

impl NatsServer {
    /// A server on a free port, running.
    pub fn start() -> Self {
        let mut server = Self::reserve();
        server.restart();
        server
    }

    /// A free port and store for a server not started yet ([`Self::restart`] starts it).
    pub fn reserve() -> Self {
        Self {
            child: None,
            port: free_port(),
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Starts the server (again) on the same port and store.
    pub fn restart(&mut self) {
        let child = Command::new(binary())
            .args([
                "-js",
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-sd",
            ])
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server must be installed (apt-get install nats-server)");
        self.child = Some(child);
        let port = self.port;
        wait_for(Duration::from_secs(10), || {
            TcpStream::connect(("127.0.0.1", port)).ok()
        })
        .expect("nats-server listens");
    }

    /// Stops the server (SIGTERM: it flushes its store) and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let _ = child.wait();
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A TCP proxy to `target` on a free port: [`Proxy::mute`] drops what the server sends (acks
/// are lost, what the client sends still arrives), [`Proxy::cut`] closes every connection.
pub struct Proxy {
    pub port: u16,
    muted: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
}

impl Proxy {
    pub fn start(target: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let muted = Arc::new(AtomicBool::new(false));
        let conns: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (m, c) = (Arc::clone(&muted), Arc::clone(&conns));
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { break };
                let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else {
                    continue;
                };
                let (Ok(c2), Ok(s2)) = (client.try_clone(), server.try_clone()) else {
                    continue;
                };
                if let Ok(mut all) = c.lock() {
                    all.extend(client.try_clone().ok());
                    all.extend(server.try_clone().ok());
                }
                let never = Arc::new(AtomicBool::new(false));
                pump(client, server, never);
                pump(s2, c2, Arc::clone(&m));
            }
        });
        Self { port, muted, conns }
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn mute(&self, on: bool) {
        self.muted.store(on, Ordering::SeqCst);
    }

    /// Closes every connection made so far (new ones are proxied again).
    pub fn cut(&self) {
        if let Ok(mut all) = self.conns.lock() {
            for s in all.drain(..) {
                let _ = s.shutdown(Shutdown::Both);
            }
        }
    }
}

/// Copies `from` → `to` on a thread; bytes read while `muted` are dropped.
fn pump(mut from: TcpStream, mut to: TcpStream, muted: Arc<AtomicBool>) {
    std::thread::spawn(move || {
        let mut buf = [0_u8; 16 * 1024];
        loop {
            let n = match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if muted.load(Ordering::SeqCst) {
                continue;
            }
            if to.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = to.shutdown(Shutdown::Both);
    });
}

/// One message as a consumer gets it.
#[derive(Debug, Clone)]
pub struct Stored {
    pub stream_seq: u64,
    pub subject: String,
    pub id: String,
    pub json: serde_json::Value,
}

/// Every message of `stream` from `start` (1: all), through a pull consumer created now.
pub fn replay(url: &str, stream: &str, start: u64) -> Vec<Stored> {
    use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, pull};
    use futures::StreamExt;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let client = async_nats::connect(url)
            .await
            .expect("connect to the test NATS");
        let js = async_nats::jetstream::new(client);
        let mut handle = js.get_stream(stream).await.expect("the stream exists");
        let total = handle.info().await.expect("info").state.last_sequence;
        let deliver_policy = if start <= 1 {
            DeliverPolicy::All
        } else {
            DeliverPolicy::ByStartSequence {
                start_sequence: start,
            }
        };
        let consumer = handle
            .create_consumer(pull::Config {
                deliver_policy,
                ack_policy: AckPolicy::None,
                ..Default::default()
            })
            .await
            .expect("consumer");
        let mut out = Vec::new();
        loop {
            let mut batch = consumer
                .fetch()
                .max_messages(1_000)
                .messages()
                .await
                .expect("fetch");
            let before = out.len();
            while let Some(message) = batch.next().await {
                let message = message.expect("message");
                let info = message.info().expect("JetStream message");
                let id = message
                    .headers
                    .as_ref()
                    .and_then(|h| h.get("Nats-Msg-Id"))
                    .map(|v| v.as_str().to_string())
                    .expect("every message has an id");
                out.push(Stored {
                    stream_seq: info.stream_sequence,
                    subject: message.subject.to_string(),
                    id,
                    json: serde_json::from_slice(&message.payload).expect("JSON payload"),
                });
            }
            let last = out.last().map_or(0, |m: &Stored| m.stream_seq);
            if last >= total || out.len() == before {
                break;
            }
        }
        out
    })
}
