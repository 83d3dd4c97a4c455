//! The command line: configuration errors and `replay`.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::{Sidecar, command, get, wait_for};

#[test]
fn bad_configuration_exits_with_a_message_naming_variable_and_value() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cases = [
        ("COLLECTION_INTERVAL", "fast", "duration"),
        ("MAX_BARS_CACHE", "-1", "whole number"),
        ("SOURCES", "bloomberg", "unknown source"),
        ("SYMBOLS", "EURUSD,eurusd", "twice"),
        ("TIMEFRAMES", "7x", "unit"),
        ("HTTP_ADDR", "localhost", "IP:PORT"),
        ("LOG_FORMAT", "xml", "json"),
        ("REDIS_URL", "localhost:6379", "redis://"),
        ("MIN_QUALITY", "1.5", "from 0 to 1"),
    ];
    for (var, value, hint) in cases {
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
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

#[test]
fn an_unusable_sqlite_path_fails_start_up_clearly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let blocker = dir.path().join("file");
    std::fs::write(&blocker, "not a directory").expect("write");
    let db = blocker.join("barkeep.db");
    let out = command(
        dir.path(),
        &[
            ("SQLITE_PATH", db.to_str().expect("utf-8")),
            ("HTTP_ADDR", "127.0.0.1:0"),
        ],
    )
    .arg("run")
    .output()
    .expect("run barkeep");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "unusable storage: {stderr}");
    assert!(stderr.contains("barkeep.db"), "{stderr}");
}

#[test]
fn a_corrupt_database_exits_with_the_storage_code() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("barkeep.db");
    std::fs::write(&db, vec![0x5a_u8; 8_192]).expect("write garbage");
    let out = command(
        dir.path(),
        &[
            ("SQLITE_PATH", db.to_str().expect("utf-8")),
            ("HTTP_ADDR", "127.0.0.1:0"),
        ],
    )
    .arg("run")
    .output()
    .expect("run barkeep");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(3),
        "a corrupt database does not heal by restarting: {stderr}"
    );
    assert!(stderr.contains("barkeep.db"), "{stderr}");
}

#[test]
fn sigterm_during_a_long_warm_up_stops_cleanly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("warm.db");
    let symbols: Vec<String> = (0..400).map(|i| format!("SYM{i}")).collect();
    let symbols = symbols.join(",");
    let mut child = command(
        dir.path(),
        &[
            ("SQLITE_PATH", db.to_str().expect("utf-8")),
            ("HTTP_ADDR", "127.0.0.1:0"),
            ("SYMBOLS", symbols.as_str()),
            ("TIMEFRAMES", "1s"),
            // 400 symbols × 20 000 history bars: seconds of warm-up.
            ("WARMUP_BARS", "20000"),
            ("BOOTSTRAP_ON_START", "false"),
        ],
    )
    .arg("run")
    .stderr(std::process::Stdio::piped())
    .spawn()
    .expect("spawn barkeep");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    let mut log = Vec::new();
    loop {
        let line = rx
            .recv_timeout(std::time::Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("no warm-up started:\n{}", log.join("\n")));
        let warming = line.contains("warming up the indicators");
        log.push(line);
        if warming {
            break;
        }
    }
    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let code = child.wait().expect("wait").code();
    log.extend(rx.try_iter());
    let log = log.join("\n");
    assert_eq!(
        code,
        Some(0),
        "stopped by the signal instead of cleanly:\n{log}"
    );
    assert!(
        log.contains("stopped during start-up") || log.contains("stopped cleanly"),
        "{log}"
    );
}

/// Real market data committed in tests/data (tests/data/README.md).
fn test_data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

#[test]
fn replay_prints_one_json_line_per_bar_with_every_feature() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = command(dir.path(), &[])
        .args(["replay", "--input"])
        .arg(test_data("GOOG.csv"))
        .args(["--symbol", "GOOG"])
        .output()
        .expect("run replay");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).expect("utf-8");
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    assert_eq!(lines.len(), 2148);
    assert_eq!(lines[0]["ts"], 1_092_873_600_000_i64);
    assert_eq!(lines[0]["symbol"], "GOOG");
    assert_eq!(lines[0]["close"], 100.34);
    assert!(lines[0]["sma_20"].is_null() && lines[18]["sma_20"].is_null());
    assert!(lines[19]["sma_20"].is_f64());
    assert!(
        lines[32]["macd"].is_null() && lines[33]["macd"].is_f64(),
        "MACD's first value at bar 33"
    );
    let last = lines.last().expect("lines");
    for name in [
        "sma_20",
        "ema_12",
        "ema_26",
        "rsi_14",
        "bb_upper",
        "bb_middle",
        "bb_lower",
        "atr_14",
        "macd",
        "macd_signal",
        "macd_hist",
        "stoch_k",
        "stoch_d",
        "obv",
        "vwap",
    ] {
        assert!(last[name].is_f64(), "{name}: {last}");
    }
    // The first SMA(20) is the plain mean of the first 20 closes.
    let mean: f64 = lines[..20]
        .iter()
        .map(|l| l["close"].as_f64().expect("close"))
        .sum::<f64>()
        / 20.0;
    assert!((lines[19]["sma_20"].as_f64().expect("sma") - mean).abs() < 1e-9 * mean);
}

#[test]
fn replay_reports_bad_rows_on_stderr_and_skips_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let csv = dir.path().join("bad.csv");
    std::fs::write(
        &csv,
        "Date,Open,High,Low,Close,Volume\n\
         2024-01-01,10,11,9,10.5,100\n\
         2024-01-02,10,9,11,10.5,100\n\
         2024-01-03,10,11,9,,100\n\
         2024-01-04,10,11,9,-1,100\n\
         2024-01-05,10,11,9,10,-5\n\
         2023-12-31,10,11,9,10,100\n\
         garbage,1,1,1,1,1\n\
         2024-01-06,10,11,9,10.2,100\n",
    )
    .expect("write");
    let out = command(dir.path(), &[])
        .args(["replay", "--input"])
        .arg(&csv)
        .output()
        .expect("run replay");
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stdout.lines().count(), 2, "{stdout}");
    for reason in [
        "ohlc_inconsistent",
        "non_finite",
        "non_positive_price",
        "negative_volume",
        "out_of_order",
        "line 8",
    ] {
        assert!(stderr.contains(reason), "{reason} not reported: {stderr}");
    }
    let missing = command(dir.path(), &[])
        .args(["replay", "--input", "nope.csv"])
        .output()
        .expect("run");
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("nope.csv"));
}

#[test]
fn bootstrap_downloads_history_resumably_and_idempotently() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("b.db");
    let vars = [
        ("SQLITE_PATH", db.to_str().expect("utf-8")),
        ("HISTORY_DAYS", "3"),
        ("TIMEFRAMES", "1h,1d"),
        ("SYNTHETIC_BAD_TICK_RATE", "0"),
    ];
    let run = || {
        let out = command(dir.path(), &vars)
            .arg("bootstrap")
            .output()
            .expect("bootstrap");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stderr).to_string()
    };
    let first = run();
    assert!(first.contains("bootstrap stored"), "{first}");
    // 3 symbols × (72 hourly + 3 daily bars).
    let count = common::sql_u64(&db, "SELECT count(*) FROM bars");
    assert_eq!(count, 3 * (72 + 3), "{first}");
    run();
    assert_eq!(
        common::sql_u64(&db, "SELECT count(*) FROM bars"),
        count,
        "running twice adds nothing"
    );
    let conn = rusqlite::Connection::open(&db).expect("open");
    conn.execute(
        "DELETE FROM bars WHERE timeframe = '1h' AND ts > (SELECT max(ts) - 36000000 FROM bars WHERE timeframe = '1h')",
        [],
    )
    .expect("delete the newest 10 hours");
    drop(conn);
    assert_eq!(
        common::sql_u64(&db, "SELECT count(*) FROM bars"),
        count - 30
    );
    run();
    assert_eq!(
        common::sql_u64(&db, "SELECT count(*) FROM bars"),
        count,
        "an interrupted bootstrap resumes"
    );
    let conn = rusqlite::Connection::open(&db).expect("open");
    conn.execute(
        "DELETE FROM bars WHERE timeframe = '1h' AND ts < (SELECT min(ts) + 36000000 FROM bars WHERE timeframe = '1h')",
        [],
    )
    .expect("delete the oldest 10 hours");
    drop(conn);
    let again = run();
    assert_eq!(
        common::sql_u64(&db, "SELECT count(*) FROM bars"),
        count,
        "the past is filled back from the oldest stored bar: {again}"
    );
    assert_eq!(
        common::sql_u64(
            &db,
            "SELECT count(*) FROM (SELECT ts FROM bars WHERE symbol = 'EURUSD' AND timeframe = '1h' AND ts % 3600000 != 0)"
        ),
        0
    );
}

/// `.env.example`, which says to copy it to `.env`.
fn env_example() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".env.example")
}

#[test]
fn env_example_parses_to_the_documented_defaults() {
    let vars: Vec<(String, String)> = dotenvy::from_path_iter(env_example())
        .expect("open .env.example")
        .collect::<Result<_, _>>()
        .expect(".env.example is a valid .env");
    let text = std::fs::read_to_string(env_example()).expect("read");
    let assignments = text
        .lines()
        .filter(|l| !l.trim_start().starts_with('#') && l.contains('='))
        .count();
    assert_eq!(vars.len(), assignments, "every variable is read: {vars:?}");
    let value = |name: &str| {
        vars.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("{name} missing from .env.example"))
    };
    // BREAKER_FAILURES once had an apostrophe in its comment, which swallowed every line after
    // it; the first variable, the one right after it and the last must be exactly their values.
    for (name, want) in [
        ("SYMBOLS", "NAS100,XAUUSD,EURUSD"),
        ("HISTORY_DAYS", "90"),
        ("BREAKER_FAILURES", "5"),
        ("BREAKER_OPEN", "60s"),
        ("SQLITE_PATH", "./data/barkeep.db"),
        ("HTTP_ADDR", "127.0.0.1:8000"),
        ("RUST_LOG", "info"),
    ] {
        assert_eq!(value(name), want, "{name}");
    }
    // "Every line shows the default": the configuration read from it is the built-in one.
    let from_file = barkeep::config::Config::from_lookup(|name| {
        vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
    })
    .expect(".env.example is a valid configuration");
    let defaults = barkeep::config::Config::from_lookup(|_| None).expect("defaults");
    assert_eq!(format!("{from_file:?}"), format!("{defaults:?}"));
}

#[test]
fn env_example_copied_to_dot_env_starts_serves_health_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::copy(env_example(), dir.path().join(".env")).expect("copy .env.example to .env");
    let db = dir.path().join("db/barkeep.db");
    // The environment overrides .env: a free port and a database in the temp directory.
    let sidecar = Sidecar::start(dir.path(), &[("SQLITE_PATH", db.to_str().expect("utf-8"))]);
    let addr = sidecar.addr;
    let healthy = wait_for(Duration::from_secs(20), || {
        (get(addr, "/health").0 == 200).then_some(())
    });
    let (code, log) = sidecar.terminate();
    assert!(
        healthy.is_some(),
        "/health never answered 200; log:\n{}",
        log.join("\n")
    );
    assert_eq!(code, 0, "log:\n{}", log.join("\n"));
    assert!(db.exists(), "SQLITE_PATH from the environment is used");
}

/// Peak resident memory (VmHWM, kB) of `barkeep replay` on a generated file of `rows` hourly
/// bars, read from /proc while it runs.
fn replay_peak_kb(dir: &std::path::Path, rows: usize) -> u64 {
    use std::io::Write as _;
    let path = dir.join(format!("rows_{rows}.csv"));
    let mut file = std::io::BufWriter::new(std::fs::File::create(&path).expect("create"));
    writeln!(file, "time,open,high,low,close,volume").expect("write");
    for i in 0..rows {
        let p = 100.0 + (i % 17) as f64 * 0.01;
        let ts = 1_262_304_000 + i as i64 * 3_600;
        writeln!(file, "{ts},{p},{},{},{p},10", p + 0.05, p - 0.05).expect("write");
    }
    drop(file);
    let mut child = command(dir, &[])
        .args(["replay", "--input", path.to_str().expect("utf-8")])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn replay");
    let status = format!("/proc/{}/status", child.id());
    let mut peak = 0;
    loop {
        if let Ok(text) = std::fs::read_to_string(&status)
            && let Some(kb) = text
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        {
            peak = peak.max(kb);
        }
        if child.try_wait().expect("wait").is_some() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    peak
}

#[test]
fn replay_memory_does_not_grow_with_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let small = replay_peak_kb(dir.path(), 5_000);
    let large = replay_peak_kb(dir.path(), 200_000);
    eprintln!("replay peak RSS: {small} kB for 5 000 rows, {large} kB for 200 000 rows");
    // Reading the whole file first held ~60 bytes per row at least (12 MB here).
    assert!(
        large < small + 4_000,
        "peak RSS grew from {small} kB to {large} kB with the file"
    );
}
