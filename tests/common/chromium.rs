//! Headless Chromium driven over the DevTools protocol, for tests of the status page: launched
//! with `--remote-debugging-port=0` in a temporary profile, its port read from the profile's
//! `DevToolsActivePort` file, one page target driven over a WebSocket (tokio-tungstenite's
//! blocking client): navigate, evaluate JavaScript, capture a screenshot. Console messages and
//! uncaught exceptions of the page are collected, so a test can show them when it fails.

use std::io::ErrorKind;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::{Message, WebSocket, client::IntoClientRequest};

use crate::common::{get_json, wait_for};

/// The names Debian, Ubuntu and Google give the browser.
const BINARIES: &[&str] = &["chromium", "chromium-browser", "google-chrome"];

/// The browser binary on `PATH`. Without one: `None` after a notice when `CI` is unset (the
/// test then skips); with `CI` set, a panic — CI must install it (`.ci/run` does).
pub fn find() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = std::env::split_paths(&path)
        .flat_map(|dir| BINARIES.iter().map(move |b| dir.join(b)))
        .find(|p| p.is_file());
    if found.is_none() {
        let ci = std::env::var("CI").unwrap_or_default();
        assert!(
            ["", "0", "false"].contains(&ci.as_str()),
            "Chromium is not installed, and CI={ci}: install it \
             (`apt-get install chromium`, or run .ci/run, which does)"
        );
        eprintln!(
            "NOTICE: no chromium on PATH, the status page is not tested in a browser \
             (apt-get install chromium; with CI set this test fails instead)"
        );
    }
    found
}

pub struct Chromium {
    child: Child,
    socket: WebSocket<TcpStream>,
    next_id: u64,
    /// The page's console messages and uncaught exceptions, in order.
    pub console: Vec<String>,
    _profile: tempfile::TempDir,
}

impl Chromium {
    /// Starts `binary` headless with a `width`×`height` window on `about:blank` and attaches
    /// to its page.
    pub fn launch(binary: &Path, width: u32, height: u32) -> Self {
        let profile = tempfile::tempdir().expect("profile dir");
        let child = Command::new(binary)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-extensions",
                "--hide-scrollbars",
                "--remote-debugging-port=0",
                &format!("--window-size={width},{height}"),
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromium");
        // The file's first line is the port, written once the DevTools server listens.
        let port_file = profile.path().join("DevToolsActivePort");
        let port: u16 = wait_for(Duration::from_secs(30), || {
            let text = std::fs::read_to_string(&port_file).ok()?;
            text.lines().next()?.trim().parse().ok()
        })
        .expect("chromium wrote DevToolsActivePort within 30 s");
        let devtools = SocketAddr::from(([127, 0, 0, 1], port));
        let page_ws = wait_for(Duration::from_secs(10), || {
            let (_, targets) = get_json(devtools, "/json/list");
            targets.as_array()?.iter().find_map(|t| {
                (t["type"] == "page")
                    .then(|| t["webSocketDebuggerUrl"].as_str().map(str::to_string))
                    .flatten()
            })
        })
        .expect("a page target");
        let stream = TcpStream::connect(devtools).expect("connect to DevTools");
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .expect("read timeout");
        let request = page_ws.as_str().into_client_request().expect("ws request");
        let (socket, _) = tokio_tungstenite::tungstenite::client(request, stream)
            .unwrap_or_else(|e| panic!("DevTools WebSocket {page_ws}: {e}"));
        let mut browser = Self {
            child,
            socket,
            next_id: 0,
            console: Vec::new(),
            _profile: profile,
        };
        browser.call("Runtime.enable", json!({}));
        browser.call("Page.enable", json!({}));
        browser
    }

    /// Sends one DevTools command and returns its `result`; events read meanwhile are kept
    /// (console, exceptions) or dropped.
    pub fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let text = json!({ "id": id, "method": method, "params": params }).to_string();
        self.socket
            .send(Message::text(text))
            .unwrap_or_else(|e| panic!("DevTools {method}: {e}"));
        loop {
            let message = match self.socket.read() {
                Ok(m) => m,
                Err(tokio_tungstenite::tungstenite::Error::Io(e))
                    if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) =>
                {
                    panic!("DevTools {method}: no answer in 30 s")
                }
                Err(e) => panic!("DevTools {method}: {e}"),
            };
            let Message::Text(text) = message else {
                continue;
            };
            let value: Value = serde_json::from_str(&text).expect("DevTools JSON");
            if value["id"] == id {
                if let Some(error) = value.get("error") {
                    panic!("DevTools {method} failed: {error}");
                }
                return value["result"].clone();
            }
            self.keep_event(&value);
        }
    }

    fn keep_event(&mut self, event: &Value) {
        match event["method"].as_str() {
            Some("Runtime.consoleAPICalled") => {
                let args: Vec<String> = event["params"]["args"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|a| {
                        a["value"]
                            .as_str()
                            .map(str::to_string)
                            .unwrap_or_else(|| a["description"].to_string())
                    })
                    .collect();
                let kind = event["params"]["type"].as_str().unwrap_or("log");
                self.console
                    .push(format!("console.{kind}: {}", args.join(" ")));
            }
            Some("Runtime.exceptionThrown") => {
                let details = &event["params"]["exceptionDetails"];
                self.console.push(format!(
                    "exception: {} {}",
                    details["text"].as_str().unwrap_or_default(),
                    details["exception"]["description"]
                        .as_str()
                        .unwrap_or_default()
                ));
            }
            _ => {}
        }
    }

    /// Opens `url` and waits until its document has loaded.
    pub fn navigate(&mut self, url: &str) {
        self.call("Page.navigate", json!({ "url": url }));
        let loaded = self.wait_until(
            Duration::from_secs(20),
            "document.readyState === 'complete'",
        );
        assert!(
            loaded.is_some(),
            "{url} did not load in 20 s; console: {:?}",
            self.console
        );
    }

    /// Evaluates `expression` in the page (awaiting a promise) and returns its value as JSON.
    pub fn eval(&mut self, expression: &str) -> Value {
        let result = self.call(
            "Runtime.evaluate",
            json!({ "expression": expression, "returnByValue": true, "awaitPromise": true }),
        );
        if let Some(details) = result.get("exceptionDetails") {
            panic!(
                "`{expression}` threw: {details}\nconsole: {:?}",
                self.console
            );
        }
        result["result"]["value"].clone()
    }

    /// Evaluates `expression` every 100 ms until it is truthy (not null, false, 0 or "") and
    /// returns that value, or `None` after `timeout`.
    pub fn wait_until(&mut self, timeout: Duration, expression: &str) -> Option<Value> {
        let end = Instant::now() + timeout;
        loop {
            let value = self.eval(expression);
            let truthy = match &value {
                Value::Null | Value::Bool(false) => false,
                Value::Number(n) => n.as_f64() != Some(0.0),
                Value::String(s) => !s.is_empty(),
                _ => true,
            };
            if truthy {
                return Some(value);
            }
            if Instant::now() > end {
                return None;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Fails with the page's uncaught exceptions, if it threw any.
    #[track_caller]
    pub fn assert_no_exceptions(&self) {
        let exceptions: Vec<&String> = self
            .console
            .iter()
            .filter(|l| l.starts_with("exception"))
            .collect();
        assert!(exceptions.is_empty(), "the page threw: {exceptions:?}");
    }

    /// The page as a PNG at `path`: all of it with `full_page`, else the window.
    pub fn screenshot(&mut self, path: &Path, full_page: bool) {
        let size = self.eval(if full_page {
            "({w: document.documentElement.scrollWidth, h: document.documentElement.scrollHeight})"
        } else {
            "({w: window.innerWidth, h: window.innerHeight})"
        });
        let result = self.call(
            "Page.captureScreenshot",
            json!({
                "format": "png",
                "captureBeyondViewport": true,
                "clip": { "x": 0, "y": 0, "width": size["w"], "height": size["h"], "scale": 1 },
            }),
        );
        let png = base64::engine::general_purpose::STANDARD
            .decode(result["data"].as_str().expect("screenshot data"))
            .expect("base64 PNG");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).expect("screenshot dir");
        }
        std::fs::write(path, png).expect("write screenshot");
    }
}

impl Drop for Chromium {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
