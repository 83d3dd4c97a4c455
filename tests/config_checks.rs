//! Configuration cross-checks at the binary's door: values that each look fine alone but not
//! together, overflowing or absurd durations, a garbage `RUST_LOG` and an HTTP pool above the
//! open-files limit stop `barkeep run` with exit code 2 and a message naming the variable and
//! its value, before anything is opened. (The parser's own unit tests cover every check; these
//! make sure the binary reports them the same way.)

use std::path::Path;
use std::process::{Command, Output};

/// Variables as (name, value) pairs.
type Vars = &'static [(&'static str, &'static str)];

/// `barkeep run` in `dir` with only `vars` (and `PATH`) in its environment.
fn barkeep(dir: &Path, vars: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_barkeep"));
    cmd.env_clear().current_dir(dir).arg("run");
    if let Some(path) = std::env::var_os("PATH") {
        cmd.env("PATH", path);
    }
    cmd.envs(vars.iter().copied());
    cmd
}

#[track_caller]
fn assert_refused(out: &Output, var: &str, value: &str, case: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{case}: {stderr}");
    assert!(
        stderr.contains("configuration error") && stderr.contains(var) && stderr.contains(value),
        "{case}: the message must name {var} and {value}: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "{case}: {stderr}");
}

#[test]
fn inconsistent_values_stop_start_up_with_exit_2_naming_the_variable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cases: &[(Vars, &str, &str)] = &[
        (&[("TIMEFRAMES", "1m,60s")], "TIMEFRAMES", "1m,60s"),
        (
            &[("TIMEFRAMES", "4611686018427387905s")],
            "TIMEFRAMES",
            "4611686018427387905s",
        ),
        (&[("TIMEFRAMES", "100000d")], "TIMEFRAMES", "100000d"),
        (
            &[("COLLECTION_INTERVAL", "1h"), ("TIMEFRAMES", "1s")],
            "COLLECTION_INTERVAL",
            "1h",
        ),
        (
            &[("COLLECTION_INTERVAL", "1e3")],
            "COLLECTION_INTERVAL",
            "1e3",
        ),
        (&[("TICK_DEADLINE", "2s")], "TICK_DEADLINE", "2s"),
        (
            &[("STALE_AFTER", "1s"), ("COLLECTION_INTERVAL", "2s")],
            "STALE_AFTER",
            "1s",
        ),
        (&[("EMA_FAST_PERIOD", "30")], "EMA_FAST_PERIOD", "30"),
        (&[("VWAP_OFFSET", "2d")], "VWAP_OFFSET", "2d"),
        (
            &[("MARKET_HOURS", "EURUSD:fx,*:always")],
            "MARKET_HOURS",
            "*:always",
        ),
        (
            &[("SOURCES", "finnhub")],
            "FINNHUB_API_KEY",
            "SOURCES lists finnhub",
        ),
    ];
    for (vars, var, value) in cases {
        let out = barkeep(dir.path(), vars).output().expect("run barkeep");
        assert_refused(&out, var, value, &format!("{vars:?}"));
    }
}

#[test]
fn a_garbage_rust_log_is_an_error_not_info() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = barkeep(dir.path(), &[("RUST_LOG", "barkeep=loud")])
        .output()
        .expect("run barkeep");
    assert_refused(&out, "RUST_LOG", "barkeep=loud", "RUST_LOG");
}

#[test]
fn an_http_pool_above_the_open_files_limit_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    // The limit is lowered for the child alone (soft and hard), through the shell that execs it.
    let out = Command::new("sh")
        .arg("-c")
        .arg("ulimit -n 512 && exec \"$0\" run")
        .arg(env!("CARGO_BIN_EXE_barkeep"))
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HTTP_POOL_SIZE", "1000")
        .current_dir(dir.path())
        .output()
        .expect("run barkeep under sh");
    assert_refused(
        &out,
        "HTTP_POOL_SIZE",
        "1000",
        "HTTP_POOL_SIZE over RLIMIT_NOFILE",
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("RLIMIT_NOFILE) of 512"), "{stderr}");
}
