//! Alerts through the real binary, against a Binance fixture on 127.0.0.1 whose ticker can be
//! taken down (its documented 503) and a local webhook receiver that records every POST:
//! - the provider down (every endpoint answering 503) → `symbol_stale` and `breaker_open` fire once each, however many ticks
//!   and breaker trials pass; back up → each is resolved once; `/alerts`, `/metrics` and the log
//!   say the same, and the webhook's token appears in no log line;
//! - a receiver that holds its first POST and then answers 500: the ticks go on while it is
//!   held, the same notification is retried, then given up and counted.

#[path = "common/binance.rs"]
mod binance;
mod common;
#[path = "providers/fixture.rs"]
#[allow(dead_code, reason = "the WebSocket script fixture is not used here")]
mod fixture;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{Sidecar, get_json, wait_for};
use fixture::{HttpFixture, Reply};
use serde_json::Value;

/// The token in the receiver's path: secret, never logged.
const TOKEN: &str = "T0KEN-9f8e7d6c5b4a";

/// A port nothing listens on: the Binance push stream never connects.
fn dead_ws() -> String {
    let dead = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("ws://{}/ws", dead.local_addr().expect("addr"));
    drop(dead);
    url
}

struct Rig {
    _rt: tokio::runtime::Runtime,
    down: Arc<AtomicBool>,
    provider: HttpFixture,
    receiver: HttpFixture,
    dir: tempfile::TempDir,
}

impl Rig {
    fn new(receiver: impl Fn(&fixture::Seen) -> Reply + Send + Sync + 'static) -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let down = Arc::new(AtomicBool::new(false));
        let outage = Arc::clone(&down);
        // Down, every endpoint fails (history too: a working one would close the breaker
        // between the failing quotes).
        let up = AtomicBool::new(false);
        let provider = rt.block_on(HttpFixture::start("", move |seen: &fixture::Seen| {
            if outage.load(Ordering::SeqCst) {
                Reply::json(503, r#"{"code":-1001,"msg":"Internal error; unable to process your request. Please try again."}"#)
            } else {
                binance::binance_with_outage(seen, &up)
            }
        }));
        let receiver = rt.block_on(HttpFixture::start("", receiver));
        Self {
            _rt: rt,
            down,
            provider,
            receiver,
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    fn start(&self, extra: &[(&str, &str)]) -> Sidecar {
        let db = self.dir.path().join("b.db");
        let hook = format!("{}/hooks/{TOKEN}", self.receiver.base);
        let ws = dead_ws();
        let mut vars = vec![
            ("SQLITE_PATH", db.to_str().expect("utf-8")),
            ("SYMBOLS", "BTCUSD"),
            ("SOURCES", "binance"),
            ("BINANCE_BASE_URL", self.provider.base.as_str()),
            ("BINANCE_WS_URL", ws.as_str()),
            ("STREAM_RECONNECT_MIN", "10s"),
            ("TIMEFRAMES", "1s"),
            ("COLLECTION_INTERVAL", "200ms"),
            ("BOOTSTRAP_ON_START", "false"),
            ("WARMUP_BARS", "30"),
            ("STALE_AFTER", "2s"),
            ("BREAKER_FAILURES", "2"),
            ("BREAKER_OPEN", "500ms"),
            ("ALERT_WEBHOOK_URL", hook.as_str()),
            ("ALERT_WEBHOOK_PER_MINUTE", "1000"),
            ("RUST_LOG", "debug"),
        ];
        vars.extend_from_slice(extra);
        Sidecar::start(self.dir.path(), &vars)
    }

    /// Every event the receiver was POSTed, in order: `(status, rule, subject, POST index)`.
    fn events(&self) -> Vec<(String, String, String, usize)> {
        let mut out = Vec::new();
        for (i, seen) in self.receiver.requests().iter().enumerate() {
            let body: Value = serde_json::from_str(&seen.body)
                .unwrap_or_else(|e| panic!("webhook body not JSON ({e}): {}", seen.body));
            for a in body["alerts"].as_array().expect("alerts") {
                let s = |k: &str| a[k].as_str().unwrap_or_default().to_string();
                out.push((s("status"), s("rule"), s("subject"), i));
            }
        }
        out
    }

    fn count(&self, status: &str, rule: &str, subject: &str) -> usize {
        self.events()
            .iter()
            .filter(|(st, r, s, _)| st == status && r == rule && s == subject)
            .count()
    }
}

fn counter(addr: std::net::SocketAddr, section: &str, name: &str) -> u64 {
    let (_, m) = get_json(addr, "/metrics/json");
    m[section][name].as_u64().unwrap_or(0)
}

fn active(addr: std::net::SocketAddr) -> Vec<(String, String)> {
    let (status, a) = get_json(addr, "/alerts");
    assert_eq!(status, 200, "{a}");
    a["active"]
        .as_array()
        .expect("active")
        .iter()
        .map(|r| {
            (
                r["rule"].as_str().expect("rule").to_string(),
                r["subject"].as_str().expect("subject").to_string(),
            )
        })
        .collect()
}

#[test]
fn a_dead_provider_fires_stale_and_breaker_once_and_both_resolve_when_it_returns() {
    let rig = Rig::new(|_| Reply::ok(r#"{"ok":true}"#));
    let sidecar = rig.start(&[("ALERT_STREAM_DOWN_AFTER", "1s")]);
    let addr = sidecar.addr;
    let stale = ("symbol_stale".to_string(), "BTCUSD".to_string());
    let breaker = ("breaker_open".to_string(), "binance".to_string());
    // Collecting: the symbol is fresh, and its stream (never connected) is down.
    wait_for(Duration::from_secs(30), || {
        let a = active(addr);
        (a.contains(&("stream_down".into(), "binance".into())) && !a.contains(&stale)).then_some(())
    })
    .expect("the dead push stream fires stream_down while the polled quotes stay fresh");

    rig.down.store(true, Ordering::SeqCst);
    wait_for(Duration::from_secs(30), || {
        let a = active(addr);
        (a.contains(&stale) && a.contains(&breaker)).then_some(())
    })
    .expect("symbol_stale and breaker_open fire while the provider is down");
    // The breaker's trials fail again and again; the alerts stay the same alerts.
    let opens = counter(
        addr,
        "counters",
        "source_breaker_opens_total{source=\"binance\"}",
    );
    let ticks = counter(addr, "counters", "ticks_total");
    wait_for(Duration::from_secs(30), || {
        let again = counter(
            addr,
            "counters",
            "source_breaker_opens_total{source=\"binance\"}",
        );
        (again >= opens + 3 && counter(addr, "counters", "ticks_total") >= ticks + 10).then_some(())
    })
    .expect("the breaker reopens after failed trials while ticks go on");
    wait_for(Duration::from_secs(10), || {
        (rig.count("fired", "symbol_stale", "BTCUSD") == 1
            && rig.count("fired", "breaker_open", "binance") == 1)
            .then_some(())
    })
    .expect("the webhook got both firings");
    let (_, body) = get_json(addr, "/alerts");
    let record = body["active"]
        .as_array()
        .expect("active")
        .iter()
        .find(|r| r["rule"] == "symbol_stale")
        .expect("symbol_stale active")
        .clone();
    assert_eq!(record["severity"], "critical", "{record}");
    assert_eq!(record["threshold"].as_f64(), Some(2.0), "{record}");
    assert!(record["value"].as_f64() > Some(2.0), "{record}");
    assert!(record["resolved_ms"].is_null(), "{record}");
    assert!(
        record["since_ms"].as_i64() <= body["now_ms"].as_i64(),
        "{record}"
    );

    rig.down.store(false, Ordering::SeqCst);
    wait_for(Duration::from_secs(30), || {
        (rig.count("resolved", "symbol_stale", "BTCUSD") == 1
            && rig.count("resolved", "breaker_open", "binance") == 1)
            .then_some(())
    })
    .expect("both alerts resolve when the provider answers again");
    let a = active(addr);
    assert!(!a.contains(&stale) && !a.contains(&breaker), "{a:?}");
    // Once each, fired before resolved, whatever happened in between.
    let events = rig.events();
    for (rule, subject) in [&stale, &breaker] {
        let of: Vec<&str> = events
            .iter()
            .filter(|(_, r, s, _)| r == rule && s == subject)
            .map(|(st, ..)| st.as_str())
            .collect();
        assert_eq!(of, ["fired", "resolved"], "{rule} {subject}: {events:?}");
    }
    assert_eq!(
        rig.count("fired", "stream_down", "binance"),
        1,
        "{events:?}"
    );
    let (_, body) = get_json(addr, "/alerts");
    let resolved = body["resolved"].as_array().expect("resolved");
    assert!(
        resolved
            .iter()
            .any(|r| r["rule"] == "symbol_stale"
                && r["resolved_ms"].as_i64() >= r["since_ms"].as_i64()),
        "{body}"
    );
    let post = &rig.receiver.requests()[0];
    assert_eq!(post.method, "POST");
    assert_eq!(post.path, format!("/hooks/{TOKEN}"));
    assert_eq!(post.headers["content-type"], "application/json");
    let first: Value = serde_json::from_str(&post.body).expect("JSON");
    let text = first["text"].as_str().expect("text");
    assert!(text.contains("FIRING"), "{first}");
    assert_eq!(first["content"], first["text"], "{first}");
    let (_, m) = get_json(addr, "/metrics/json");
    assert_eq!(
        m["counters"]["alerts_fired_total{rule=\"symbol_stale\"}"], 1,
        "{m}"
    );
    assert_eq!(
        m["counters"]["alerts_fired_total{rule=\"breaker_open\"}"], 1,
        "{m}"
    );
    assert_eq!(
        m["gauges"]["alerts_active{rule=\"symbol_stale\"}"], 0,
        "{m}"
    );
    assert_eq!(m["gauges"]["alerts_active{rule=\"stream_down\"}"], 1, "{m}");
    assert_eq!(
        m["counters"]["alert_notifications_total"].as_u64(),
        Some(rig.receiver.requests().len() as u64),
        "{m}"
    );
    let (code, lines) = sidecar.terminate();
    assert_eq!(code, 0, "{}", lines.join("\n"));
    let fired: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("alert fired") && l.contains("symbol_stale"))
        .collect();
    assert_eq!(fired.len(), 1, "{fired:?}");
    let resolved: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("alert resolved") && l.contains("symbol_stale"))
        .collect();
    assert_eq!(resolved.len(), 1, "{resolved:?}");
    let leaked: Vec<&String> = lines.iter().filter(|l| l.contains(TOKEN)).collect();
    assert!(
        leaked.is_empty(),
        "the webhook token in the log: {leaked:?}"
    );
}

#[test]
fn a_failing_receiver_is_retried_and_never_holds_up_the_ticks() {
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let held = Arc::clone(&gate);
    let rig = Rig::new(move |_| Reply::text(500, "upstream broke").held(&held));
    let sidecar = rig.start(&[
        // The never-connecting stream fires at once: the one alert of this test.
        ("ALERT_STREAM_DOWN_AFTER", "0s"),
        ("ALERT_WEBHOOK_RETRIES", "2"),
        ("ALERT_WEBHOOK_TIMEOUT", "5m"),
    ]);
    let addr = sidecar.addr;
    wait_for(Duration::from_secs(30), || {
        (!rig.receiver.requests().is_empty()).then_some(())
    })
    .expect("the first POST reaches the receiver");
    // The receiver holds it: the ticks go on meanwhile, and nothing is sent again.
    let ticks = counter(addr, "counters", "ticks_total");
    wait_for(Duration::from_secs(30), || {
        (counter(addr, "counters", "ticks_total") >= ticks + 10).then_some(())
    })
    .expect("ticks keep coming while the webhook POST is unanswered");
    assert_eq!(
        rig.receiver.requests().len(),
        1,
        "one POST in flight at a time"
    );
    assert_eq!(counter(addr, "counters", "alert_notifications_total"), 0);
    gate.add_permits(1_000);
    wait_for(Duration::from_secs(30), || {
        (counter(addr, "counters", "alert_notifications_failed_total") == 1).then_some(())
    })
    .expect("after its retries the notification is given up and counted");
    let posts = rig.receiver.requests();
    assert_eq!(posts.len(), 3, "the first POST and two retries");
    assert!(
        posts.iter().all(|p| p.body == posts[0].body),
        "every attempt carries the same notification"
    );
    let events = rig.events();
    assert!(
        events
            .iter()
            .all(|(st, r, s, _)| st == "fired" && r == "stream_down" && s == "binance"),
        "{events:?}"
    );
    assert_eq!(
        counter(addr, "counters", "alert_notification_retries_total"),
        2
    );
    assert_eq!(counter(addr, "counters", "alert_notifications_total"), 0);
    // The alert itself is unaffected by the webhook's trouble.
    assert!(active(addr).contains(&("stream_down".into(), "binance".into())));
    assert!(counter(addr, "counters", "ticks_total") > ticks + 10);
}
