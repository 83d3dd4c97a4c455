//! The Prometheus and Grafana files in `deploy/` against their judges:
//! - `promtool check rules` on `deploy/prometheus/alerts.yml`, `promtool test rules` on its unit
//!   tests (`alerts_test.yml`), and every expression of the Grafana dashboard checked as PromQL
//!   (each one as a recording rule, its Grafana variables replaced);
//! - every `barkeep_…` metric named in the rules and the dashboard is exported by a running
//!   sidecar with Redis configured, with series (a histogram through its `_bucket`, `_sum` or
//!   `_count`).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{RedisServer, get, get_json, wait_for};

fn deploy(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy")
        .join(path)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(deploy(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// `promtool args…`: `None` when promtool is not installed, else whether it succeeded and what
/// it said.
fn promtool(args: &[&str], dir: &Path) -> Option<(bool, String)> {
    match Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .output()
    {
        Ok(out) => Some((
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => panic!("cannot run promtool: {e}"),
    }
}

/// Every `expr` of the dashboard's panels, as written.
fn dashboard_exprs() -> Vec<String> {
    let dash: serde_json::Value =
        serde_json::from_str(&read("grafana/barkeep.json")).expect("barkeep.json is JSON");
    let mut out = Vec::new();
    for panel in dash["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().into_iter().flatten() {
            out.push(target["expr"].as_str().expect("expr").to_string());
        }
    }
    assert!(out.len() > 20, "dashboard expressions not found: {out:?}");
    out
}

/// Every `expr:` of the alert rules (one-line and `|` blocks).
fn rule_exprs() -> Vec<String> {
    let text = read("prometheus/alerts.yml");
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let Some(rest) = line.trim_start().strip_prefix("expr:") else {
            continue;
        };
        let rest = rest.trim();
        if rest == "|" {
            let indent = |l: &str| l.len() - l.trim_start().len();
            let base = indent(line);
            let block: Vec<&str> = lines[i + 1..]
                .iter()
                .take_while(|l| l.trim().is_empty() || indent(l) > base)
                .copied()
                .collect();
            out.push(block.join("\n"));
        } else {
            out.push(rest.to_string());
        }
    }
    assert!(out.len() >= 7, "alert expressions not found: {out:?}");
    out
}

/// The `barkeep_…` names in `exprs`.
fn names_in(exprs: &[String]) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for e in exprs {
        let mut rest = e.as_str();
        while let Some(at) = rest.find("barkeep_") {
            let tail = &rest[at..];
            let end = tail
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(tail.len());
            // `job="barkeep"` is a label value, not a metric.
            if tail[..end].len() > "barkeep_".len() {
                names.insert(tail[..end].to_string());
            }
            rest = &tail[end..];
        }
    }
    names
}

#[test]
fn promtool_checks_the_rules_their_tests_and_the_dashboard_queries() {
    let dir = deploy("prometheus");
    let Some((ok, said)) = promtool(&["check", "rules", "alerts.yml"], &dir) else {
        common::promtool_missing("rules not checked");
        return;
    };
    assert!(ok, "promtool check rules alerts.yml:\n{said}");
    assert!(said.contains("SUCCESS"), "{said}");
    let (ok, said) = promtool(&["test", "rules", "alerts_test.yml"], &dir).expect("promtool");
    assert!(ok, "promtool test rules alerts_test.yml:\n{said}");

    // The dashboard's queries, each a recording rule with Grafana's variables given values.
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, e) in dashboard_exprs().iter().enumerate() {
        let e = e
            .replace("$__rate_interval", "1m")
            .replace("$instance", ".*");
        rules.push_str(&format!(
            "      - record: dashboard:query_{i}\n        expr: {}\n",
            serde_json::to_string(&e).expect("quoted")
        ));
    }
    std::fs::write(tmp.path().join("dashboard.yml"), &rules).expect("write");
    let (ok, said) = promtool(&["check", "rules", "dashboard.yml"], tmp.path()).expect("promtool");
    assert!(
        ok,
        "a dashboard query is not valid PromQL:\n{said}\n--- as rules ---\n{rules}"
    );
}

/// `# TYPE` of every family of an exposition, and the names that have sample lines.
fn exposition(text: &str) -> (BTreeMap<String, String>, BTreeSet<String>) {
    let mut types = BTreeMap::new();
    let mut sampled = BTreeSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("# TYPE name kind");
            types.insert(name.to_string(), kind.to_string());
        } else if !line.starts_with('#') && !line.is_empty() {
            let name = line.split(['{', ' ']).next().unwrap_or_default();
            sampled.insert(name.to_string());
        }
    }
    (types, sampled)
}

#[test]
fn every_metric_the_rules_and_the_dashboard_name_is_exported() {
    let mut exprs = rule_exprs();
    exprs.extend(dashboard_exprs());
    let wanted = names_in(&exprs);
    assert!(wanted.len() > 30, "metric names not found: {wanted:?}");

    let redis = RedisServer::start(&[]);
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("b.db").to_str().expect("utf-8").to_string();
    let config = common::config_of(&[
        ("SQLITE_PATH", db),
        ("REDIS_URL", redis.url()),
        ("COLLECTION_INTERVAL", "100ms".into()),
        ("BATCH_WRITE_INTERVAL", "200ms".into()),
    ]);
    let text = common::in_process(config, barkeep::clock::Clock::System, |addr| {
        wait_for(Duration::from_secs(30), || {
            let (_, m) = get_json(addr, "/metrics/json");
            let written = m["counters"]["redis_writes_total"].as_u64()? > 0;
            let flushed = m["gauges"]["sqlite_last_flush_ms"].as_i64()? > 0;
            let seen = m["gauges"]
                .as_object()?
                .keys()
                .any(|k| k.starts_with("symbol_last_data_ms{"));
            (written && flushed && seen).then_some(())
        })
        .expect("the sidecar collects, writes to Redis and flushes");
        let (status, text) = get(addr, "/metrics");
        assert_eq!(status, 200, "{text}");
        text
    });
    let (types, sampled) = exposition(&text);
    assert!(
        text.contains("barkeep_redis_queue_capacity 1024"),
        "Redis is configured: its queue has a capacity"
    );
    // Series that need what this sidecar has not: a provider's Date header, a push stream.
    let conditional = [
        "barkeep_source_clock_skew_seconds",
        "barkeep_source_stream_up",
    ];
    let mut missing = Vec::new();
    for name in &wanted {
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| {
                let base = name.strip_suffix(suffix)?;
                (types.get(base).map(String::as_str) == Some("histogram")).then_some(base)
            })
            .unwrap_or(name);
        if !types.contains_key(family) {
            missing.push(format!("{name}: not exported"));
        } else if !sampled.contains(name.as_str())
            && !sampled.contains(&format!("{family}_bucket"))
            && !conditional.contains(&family)
        {
            missing.push(format!("{name}: exported without series"));
        }
    }
    assert!(
        missing.is_empty(),
        "named in deploy/ but not in /metrics: {missing:?}"
    );
}
