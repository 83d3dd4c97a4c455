//! Local stand-ins for the providers: an HTTP server and a WebSocket server on 127.0.0.1:0
//! that answer what a test scripts, in the provider's documented format, and record what they
//! were sent.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{
    Request as WsRequest, Response as WsResponse,
};

/// What the HTTP fixture was asked.
#[derive(Debug, Clone)]
pub struct Seen {
    #[allow(
        dead_code,
        reason = "read by the tests that receive webhooks, not by the provider ones"
    )]
    pub method: String,
    pub path: String,
    pub query: HashMap<String, String>,
    pub headers: HashMap<String, String>,
    /// The request body (lossy UTF-8).
    #[allow(
        dead_code,
        reason = "read by the tests that receive webhooks, not by the provider ones"
    )]
    pub body: String,
}

impl Seen {
    pub fn q(&self, name: &str) -> Option<&str> {
        self.query.get(name).map(String::as_str)
    }
}

/// What the HTTP fixture answers.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub body: String,
    pub headers: Vec<(String, String)>,
    pub delay: Duration,
    /// Answers only once this has a permit for it (for a receiver held until a test lets go).
    pub hold: Option<Arc<tokio::sync::Semaphore>>,
}

impl Reply {
    pub fn json(status: u16, body: impl Into<String>) -> Self {
        Self {
            status,
            body: body.into(),
            headers: vec![("content-type".into(), "application/json".into())],
            delay: Duration::ZERO,
            hold: None,
        }
    }

    pub fn ok(body: impl Into<String>) -> Self {
        Self::json(200, body)
    }

    pub fn text(status: u16, body: impl Into<String>) -> Self {
        Self {
            status,
            body: body.into(),
            headers: vec![("content-type".into(), "text/plain".into())],
            delay: Duration::ZERO,
            hold: None,
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Answers only when `gate` gives a permit (taken for good): a test holds the request as
    /// long as it wants.
    pub fn held(mut self, gate: &Arc<tokio::sync::Semaphore>) -> Self {
        self.hold = Some(Arc::clone(gate));
        self
    }

    /// Answers only after `delay` (for client timeouts).
    pub fn slow(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }
}

type Handler = Arc<dyn Fn(&Seen) -> Reply + Send + Sync>;

pub struct HttpFixture {
    pub base: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: JoinHandle<()>,
}

impl Drop for HttpFixture {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl HttpFixture {
    /// Serves `handler` on a free loopback port; `base` is `http://127.0.0.1:PORT` + `prefix`.
    pub async fn start(
        prefix: &str,
        handler: impl Fn(&Seen) -> Reply + Send + Sync + 'static,
    ) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let handler: Handler = Arc::new(handler);
        let task = {
            let seen = Arc::clone(&seen);
            tokio::spawn(async move {
                // The connections live in the accept task's set, so aborting the task (a drop,
                // or `stop`) closes the kept-alive ones too: the provider is gone, not just
                // refusing new connections.
                let mut connections = tokio::task::JoinSet::new();
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        return;
                    };
                    while connections.try_join_next().is_some() {}
                    let (seen, handler) = (Arc::clone(&seen), Arc::clone(&handler));
                    connections.spawn(async move {
                        let service = hyper::service::service_fn(
                            move |req: hyper::Request<hyper::body::Incoming>| {
                                let (seen, handler) = (Arc::clone(&seen), Arc::clone(&handler));
                                async move {
                                    let url = reqwest::Url::parse(&format!(
                                        "http://fixture{}",
                                        req.uri()
                                    ))
                                    .expect("request URI");
                                    let (head, body) = req.into_parts();
                                    let body = http_body_util::BodyExt::collect(body)
                                        .await
                                        .map(|b| b.to_bytes())
                                        .unwrap_or_default();
                                    let request = Seen {
                                        method: head.method.to_string(),
                                        path: url.path().to_string(),
                                        query: url.query_pairs().into_owned().collect(),
                                        body: String::from_utf8_lossy(&body).into_owned(),
                                        headers: head
                                            .headers
                                            .iter()
                                            .map(|(k, v)| {
                                                (
                                                    k.as_str().to_string(),
                                                    v.to_str().unwrap_or_default().to_string(),
                                                )
                                            })
                                            .collect(),
                                    };
                                    let reply = handler(&request);
                                    seen.lock().push(request);
                                    if let Some(gate) = &reply.hold {
                                        gate.acquire().await.expect("gate open").forget();
                                    }
                                    if !reply.delay.is_zero() {
                                        tokio::time::sleep(reply.delay).await;
                                    }
                                    let mut response =
                                        hyper::Response::builder().status(reply.status);
                                    for (k, v) in &reply.headers {
                                        response = response.header(k, v);
                                    }
                                    Ok::<_, Infallible>(
                                        response
                                            .body(Full::new(Bytes::from(reply.body)))
                                            .expect("response"),
                                    )
                                }
                            },
                        );
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
            })
        };
        Self {
            base: format!("http://{addr}{prefix}"),
            seen,
            task,
        }
    }

    /// Answers every request with `reply`.
    pub async fn always(prefix: &str, reply: Reply) -> Self {
        Self::start(prefix, move |_| reply.clone()).await
    }

    /// Stops serving, as a provider that went away: the port refuses connections and the
    /// open ones are closed.
    #[allow(
        dead_code,
        reason = "not every test binary that includes the fixture stops one"
    )]
    pub fn stop(&self) {
        self.task.abort();
    }

    pub fn requests(&self) -> Vec<Seen> {
        self.seen.lock().clone()
    }
}

/// One step of a scripted WebSocket connection.
#[derive(Debug, Clone)]
pub enum Step {
    /// Send a text frame.
    Send(String),
    /// Wait for the client's next text frame (recorded).
    Expect,
    /// Drop the TCP connection without a close frame, mid-stream.
    Drop,
    /// Send nothing more, but keep reading (and recording) until the client leaves.
    Hold,
}

pub struct WsFixture {
    pub url: String,
    /// (connection number, text frame) for every text frame the client sent.
    pub received: Arc<Mutex<Vec<(usize, String)>>>,
    /// The request URI (path and query) of every connection.
    pub uris: Arc<Mutex<Vec<String>>>,
    pub connections: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Drop for WsFixture {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl WsFixture {
    /// Accepts connections; connection `n` follows `script(n)`.
    pub async fn start(script: impl Fn(usize) -> Vec<Step> + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let received = Arc::new(Mutex::new(Vec::new()));
        let uris = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicUsize::new(0));
        let script = Arc::new(script);
        let task = {
            let (received, uris, connections) = (
                Arc::clone(&received),
                Arc::clone(&uris),
                Arc::clone(&connections),
            );
            tokio::spawn(async move {
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        return;
                    };
                    let n = connections.fetch_add(1, Ordering::SeqCst);
                    let (received, uris, script) = (
                        Arc::clone(&received),
                        Arc::clone(&uris),
                        Arc::clone(&script),
                    );
                    tokio::spawn(async move {
                        let uris_cb = Arc::clone(&uris);
                        #[allow(
                            clippy::result_large_err,
                            reason = "the signature tungstenite asks for"
                        )]
                        let callback = move |req: &WsRequest, resp: WsResponse| {
                            uris_cb.lock().push(req.uri().to_string());
                            Ok(resp)
                        };
                        let Ok(ws) = tokio_tungstenite::accept_hdr_async(stream, callback).await
                        else {
                            return;
                        };
                        let (mut tx, mut rx) = ws.split();
                        for step in script(n) {
                            match step {
                                Step::Send(text) => {
                                    if tx.send(Message::text(text)).await.is_err() {
                                        return;
                                    }
                                }
                                Step::Expect => loop {
                                    match rx.next().await {
                                        Some(Ok(Message::Text(t))) => {
                                            received.lock().push((n, t.as_str().to_string()));
                                            break;
                                        }
                                        Some(Ok(_)) => continue,
                                        _ => return,
                                    }
                                },
                                Step::Drop => return,
                                Step::Hold => {
                                    while let Some(Ok(m)) = rx.next().await {
                                        if let Message::Text(t) = m {
                                            received.lock().push((n, t.as_str().to_string()));
                                        }
                                    }
                                    return;
                                }
                            }
                        }
                        // Script done: keep the connection open and quiet until the client leaves.
                        while let Some(Ok(m)) = rx.next().await {
                            if let Message::Text(t) = m {
                                received.lock().push((n, t.as_str().to_string()));
                            }
                        }
                    });
                }
            })
        };
        Self {
            url: format!("ws://{addr}"),
            received,
            uris,
            connections,
            task,
        }
    }

    pub fn texts(&self) -> Vec<(usize, String)> {
        self.received.lock().clone()
    }
}
