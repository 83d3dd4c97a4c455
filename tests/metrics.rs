//! The metric expositions against their two judges: `promtool check metrics` (the Prometheus
//! project's own linter) and the README's metric list.
//!
//! A sidecar runs in this process (`app::run_with`) with two sources, so the per-source
//! families carry several series, until a SQLite flush has happened; its `/metrics` and
//! `/metrics/json` are fetched once and shared by the tests below. A `Metrics` with every
//! family populated (a measured clock skew, latencies, rejects) is checked too, since a live
//! run cannot produce every series.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use barkeep::clock::Clock;
use barkeep::config::Config;
use barkeep::metrics::{Kind, Metrics};
use barkeep::model::RejectReason;
use common::{get, get_json, wait_for};

/// `/metrics` and `/metrics/json` of a sidecar that has collected and flushed.
struct Live {
    text: String,
    json: serde_json::Value,
    health: serde_json::Value,
}

fn live() -> &'static Live {
    static LIVE: OnceLock<Live> = OnceLock::new();
    LIVE.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async {
            let dir = tempfile::tempdir().expect("tempdir");
            let db = dir.path().join("b.db").to_str().expect("utf-8").to_string();
            let config = Config::from_lookup(move |name| match name {
                "SQLITE_PATH" => Some(db.clone()),
                // A second source that is never needed (and unreachable if it were): the
                // per-source families get two series each.
                "SOURCES" => Some("synthetic,yahoo".into()),
                "YAHOO_BASE_URL" => Some("http://127.0.0.1:9".into()),
                "COLLECTION_INTERVAL" => Some("100ms".into()),
                "BATCH_WRITE_INTERVAL" => Some("200ms".into()),
                _ => None,
            })
            .expect("valid config");
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
            let fetched = tokio::task::spawn_blocking(move || {
                wait_for(Duration::from_secs(20), || {
                    let (_, m) = get_json(addr, "/metrics/json");
                    let flushed = m["gauges"]["sqlite_last_flush_ms"].as_i64()? > 0;
                    let ticked = m["counters"]["ticks_total"].as_u64()? >= 3;
                    (flushed && ticked).then_some(())
                })
                .expect("the sidecar ticks and flushes within 20 s");
                let (status, text) = get(addr, "/metrics");
                assert_eq!(status, 200, "{text}");
                let (status, json) = get_json(addr, "/metrics/json");
                assert_eq!(status, 200, "{json}");
                let (_, health) = get_json(addr, "/health");
                Live { text, json, health }
            })
            .await;
            let _ = stop_tx.send(());
            app.await.expect("join").expect("clean shutdown");
            fetched.unwrap_or_else(|panic| std::panic::resume_unwind(panic.into_panic()))
        })
    })
}

/// A `Metrics` in which every family has series with non-zero values.
fn populated() -> Metrics {
    let m = Metrics::new(&["yahoo", "twelvedata"]);
    m.ticks.add(12);
    for reason in RejectReason::ALL {
        m.reject(reason);
    }
    m.sqlite_last_flush_ms.set(1_733_090_000_123);
    m.symbol_last_data_ms
        .name(["EURUSD", "BTC/USD"].map(std::sync::Arc::<str>::from));
    m.symbol_market_open
        .name(["EURUSD", "BTC/USD"].map(std::sync::Arc::<str>::from));
    for i in 0..2 {
        if let Some(g) = m.symbol_last_data_ms.get(i) {
            g.set(1_733_090_000_500);
        }
    }
    m.alerts_active[barkeep::model::AlertRule::SymbolStale].set(1);
    m.gaps_pending.set(2);
    for (i, s) in m.sources.iter().enumerate() {
        s.requests.add(5);
        s.budget_minute.set(-1);
        s.stream_up.set(1);
        s.clock_skew_ms.set(if i == 0 { -420 } else { 1_500 });
        s.latency.record(Duration::from_millis(35));
    }
    for d in [1, 900, 12_000, 250_000, 90_000_000] {
        m.tick_duration.record(Duration::from_micros(d));
        m.http_latency.record(Duration::from_micros(d));
        m.sqlite_flush_duration.record(Duration::from_micros(d));
        m.redis_write_latency.record(Duration::from_micros(d));
    }
    m
}

/// `promtool check metrics` on `text`: `Ok(None)` when it has no complaint, `Ok(Some(..))`
/// with its complaints, `Err` when promtool is not installed.
fn promtool(text: &str) -> Result<Option<String>, std::io::Error> {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write to promtool");
    let out = child.wait_with_output().expect("promtool runs");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok((!out.status.success() || !said.trim().is_empty())
        .then(|| format!("promtool check metrics: {}\n{said}", out.status)))
}

#[test]
fn promtool_accepts_the_exposition() {
    let populated = populated().to_prometheus();
    let cases = [
        ("a running sidecar's /metrics", live().text.as_str()),
        ("every family populated", populated.as_str()),
    ];
    for (what, text) in cases {
        match promtool(text) {
            Ok(None) => {}
            Ok(Some(complaints)) => panic!("{what}: {complaints}\n--- exposition ---\n{text}"),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                common::promtool_missing("exposition not checked");
                return;
            }
            Err(e) => panic!("cannot run promtool: {e}"),
        }
    }
}

/// One row of the README's metric table.
#[derive(Debug)]
struct Row {
    kind: String,
    label: Option<String>,
    /// `section.name` in `/metrics/json`.
    json: String,
}

/// The table of `## Metrics` in the README: Prometheus name (without `barkeep_`) → row.
fn readme_metrics() -> BTreeMap<String, Row> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let section = readme
        .split("\n## ")
        .find(|s| s.starts_with("Metrics\n"))
        .expect("README has a `## Metrics` section");
    let code = |cell: &str| -> String {
        let cell = cell.trim();
        let inner = cell
            .split('`')
            .nth(1)
            .unwrap_or_else(|| panic!("`{cell}`: no code"));
        inner.to_string()
    };
    let mut rows = BTreeMap::new();
    for line in section.lines().filter(|l| l.starts_with("| `barkeep_")) {
        let cells: Vec<&str> = line.trim_matches('|').split('|').collect();
        assert!(cells.len() >= 4, "README row with too few cells: {line}");
        let prom = code(cells[0]);
        let (name, label) = match prom.split_once('{') {
            Some((name, rest)) => (
                name,
                Some(rest.trim_end_matches('}').trim_end_matches("=…")),
            ),
            None => (prom.as_str(), None),
        };
        let name = name.strip_prefix("barkeep_").expect("prefix").to_string();
        let json = code(cells[2]);
        let json = json.split('{').next().unwrap_or_default().to_string();
        let row = Row {
            kind: cells[1].trim().to_string(),
            label: label.map(str::to_string),
            json,
        };
        assert!(
            rows.insert(name.clone(), row).is_none(),
            "README lists {name} twice"
        );
    }
    assert!(
        rows.len() > 40,
        "README metric table not found or short: {rows:?}"
    );
    rows
}

/// Family name → type, from the `# TYPE` lines of an exposition.
fn exposed(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE barkeep_"))
        .map(|l| {
            let (name, kind) = l.split_once(' ').expect("# TYPE name kind");
            (name.to_string(), kind.to_string())
        })
        .collect()
}

/// `section.name` of every series in `/metrics/json`, labels stripped.
fn json_names(json: &serde_json::Value) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for section in ["counters", "gauges", "histograms"] {
        for key in json[section].as_object().expect("section").keys() {
            let name = key.split('{').next().unwrap_or_default();
            names.insert(format!("{section}.{name}"));
        }
    }
    names
}

#[test]
fn readme_lists_exactly_the_exported_metrics() {
    let readme = readme_metrics();
    let live = live();

    let exported = exposed(&live.text);
    let listed: BTreeSet<&String> = readme.keys().collect();
    let names: BTreeSet<&String> = exported.keys().collect();
    let unlisted: Vec<_> = names.difference(&listed).collect();
    let unexported: Vec<_> = listed.difference(&names).collect();
    assert!(
        unlisted.is_empty() && unexported.is_empty(),
        "exported but not in the README: {unlisted:?}; in the README but not exported: {unexported:?}"
    );
    for (name, kind) in &exported {
        assert_eq!(&readme[name].kind, kind, "README: type of barkeep_{name}");
    }
    for f in Metrics::FAMILIES {
        assert_eq!(
            readme[f.name].label.as_deref(),
            f.label,
            "README: label of barkeep_{}",
            f.name
        );
        let section = match f.kind {
            Kind::Counter => "counters",
            Kind::Gauge => "gauges",
            Kind::Histogram => "histograms",
        };
        assert_eq!(
            readme[f.name].json,
            format!("{section}.{}", f.json_name()),
            "README: /metrics/json name of barkeep_{}",
            f.name
        );
    }

    // The JSON column: every JSON series is listed, every listed JSON name is rendered.
    let listed_json: BTreeSet<String> = readme.values().map(|r| r.json.clone()).collect();
    let live_json = json_names(&live.json);
    let unlisted: Vec<_> = live_json.difference(&listed_json).collect();
    assert!(
        unlisted.is_empty(),
        "in /metrics/json, not in the README: {unlisted:?}"
    );
    let all_json = json_names(&populated().to_json());
    assert_eq!(
        all_json, listed_json,
        "README JSON names vs a fully populated /metrics/json"
    );
}

/// The last flush is Unix seconds in `/metrics`, Unix milliseconds in `/metrics/json`, and
/// `/health` still reads its age from the millisecond gauge.
#[test]
fn last_flush_is_seconds_in_prometheus_and_milliseconds_elsewhere() {
    let live = live();
    let flushed = live.json["gauges"]["sqlite_last_flush_ms"]
        .as_i64()
        .expect("sqlite_last_flush_ms in /metrics/json");
    let seconds: f64 = live
        .text
        .lines()
        .find_map(|l| l.strip_prefix("barkeep_sqlite_last_flush_timestamp_seconds "))
        .expect("timestamp in /metrics")
        .parse()
        .expect("a number");
    // The two were read a moment apart; a flush every 200 ms may have happened in between.
    assert!(
        (seconds * 1_000.0 - flushed as f64).abs() < 60_000.0,
        "{seconds} s vs {flushed} ms"
    );
    let now_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64();
    assert!(
        (now_s - seconds).abs() < 120.0,
        "a Unix time in seconds: {seconds}"
    );
    let age = live.health["sqlite"]["last_flush_age_ms"]
        .as_i64()
        .expect("/health sqlite.last_flush_age_ms");
    let now_ms = live.health["now_ms"].as_i64().expect("/health now_ms");
    // Read after /metrics/json, so from the same gauge it is that flush or a later one (the
    // fallback before a first flush, the uptime, would put it at the start instead).
    assert!(
        now_ms - age >= flushed,
        "/health: last flush {age} ms before {now_ms}, JSON says {flushed}"
    );
    assert_eq!(live.health["sqlite"]["state"], "ok", "{}", live.health);
}
