//! SQLite refusing writes while barkeep runs: a full disk, a locked database. The real binary
//! runs on a small tmpfs mounted in a user and mount namespace of its own (`unshare`), so the
//! test fills and frees a real file system without touching the machine's; the test reaches
//! that file system through `/proc/<pid>/root`. Skipped (with a notice) where `unshare` cannot
//! create the namespaces, unless `CI` is set.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{Sidecar, get_json, log_field, wait_for};

/// Whether this machine lets an unprivileged-style namespace mount a tmpfs.
fn namespaces_work() -> bool {
    let ok = Command::new("unshare")
        .args(["--user", "--map-root-user", "--mount", "sh", "-c"])
        .arg("d=$(mktemp -d) && mount -t tmpfs -o size=64k tmpfs \"$d\" && touch \"$d\"/x")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "unshare --user --mount with a tmpfs is needed for these tests"
        );
        eprintln!("skipped: `unshare --user --map-root-user --mount` cannot mount a tmpfs here");
    }
    ok
}

/// `barkeep run` with `vars`, its database directory `data` a tmpfs of `size` (a `mount`
/// size such as `4m`) that only it sees, `filler_kb` of it taken by a file before it starts.
fn on_tmpfs(dir: &Path, data: &Path, size: &str, filler_kb: u64, vars: &[(&str, &str)]) -> Sidecar {
    std::fs::create_dir_all(data).expect("mount point");
    let mut cmd = Command::new("unshare");
    cmd.env_clear().current_dir(dir);
    if let Some(path) = std::env::var_os("PATH") {
        cmd.env("PATH", path);
    }
    for (k, v) in vars {
        cmd.env(k, v);
    }
    cmd.env("HTTP_ADDR", "127.0.0.1:0");
    cmd.args(["--user", "--map-root-user", "--mount", "sh", "-c"])
        .arg(
            "mount -t tmpfs -o size=\"$3\" tmpfs \"$1\" || exit 9; \
             [ \"$4\" = 0 ] || dd if=/dev/zero of=\"$1\"/filler bs=1k count=\"$4\" 2>/dev/null; \
             exec \"$2\" run",
        )
        .arg("sh")
        .arg(data)
        .arg(env!("CARGO_BIN_EXE_barkeep"))
        .arg(size)
        .arg(filler_kb.to_string());
    Sidecar::spawn(cmd)
}

/// `path` as the sidecar (in its own mount namespace) sees it.
fn inside(sidecar: &Sidecar, path: &Path) -> PathBuf {
    let relative = path.strip_prefix("/").expect("absolute path");
    PathBuf::from(format!("/proc/{}/root", sidecar.child.id())).join(relative)
}

/// Fills the sidecar's file system with `name` until it is full.
fn fill(sidecar: &Sidecar, data: &Path, name: &str) {
    let mut file = std::fs::File::create(inside(sidecar, &data.join(name))).expect("filler");
    let block = [0u8; 4096];
    loop {
        if let Err(e) = file.write_all(&block) {
            assert_eq!(e.raw_os_error(), Some(28), "ENOSPC expected: {e}");
            break;
        }
    }
    // What the page cache took is on tmpfs already; nothing to sync.
}

fn sqlite_health(sidecar: &Sidecar) -> serde_json::Value {
    sidecar.store_health("sqlite")
}

fn drain_log(sidecar: &mut Sidecar) {
    while let Ok(line) = sidecar.log.try_recv() {
        sidecar.lines.push(line);
    }
}

fn count(lines: &[String], marker: &str) -> usize {
    lines.iter().filter(|l| l.contains(marker)).count()
}

fn vars(db: &str) -> Vec<(&str, &str)> {
    vec![
        ("SQLITE_PATH", db),
        ("SYMBOLS", "EURUSD,NAS100"),
        ("TIMEFRAMES", "1s"),
        ("COLLECTION_INTERVAL", "100ms"),
        ("BATCH_WRITE_INTERVAL", "200ms"),
        ("SYNTHETIC_BAD_TICK_RATE", "0"),
        ("BOOTSTRAP_ON_START", "false"),
    ]
}

const FIRST_FAILURE: &str = "SQLite write failed; nothing is dropped";
const STILL_FAILING: &str = "SQLite writes still failing";
const RECOVERED: &str = "SQLite writes work again";

#[test]
fn a_full_disk_keeps_the_rows_retries_and_loses_nothing_once_space_returns() {
    if !namespaces_work() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let db = data.join("b.db");
    let db_s = db.to_str().expect("utf-8").to_string();
    let mut sidecar = on_tmpfs(dir.path(), &data, "8m", 0, &vars(&db_s));
    wait_for(Duration::from_secs(10), || {
        (sqlite_health(&sidecar)["state"] == "ok"
            && get_json(sidecar.addr, "/metrics/json").1["counters"]["sqlite_flushes_total"]
                .as_u64()
                > Some(1))
        .then_some(())
    })
    .expect("SQLite flushes before the disk is full");

    fill(&sidecar, &data, "filler");
    let failing = wait_for(Duration::from_secs(15), || {
        let s = sqlite_health(&sidecar);
        (s["state"] == "failing" && s["failed_writes"].as_u64() >= Some(3)).then_some(s)
    })
    .expect("/health says SQLite is failing");
    assert_eq!(failing["reason"], "disk_full", "{failing}");
    assert!(failing["pending_rows"].as_u64() > Some(0), "{failing}");
    let (status, health) = get_json(sidecar.addr, "/health");
    assert_eq!((status, health["status"].as_str()), (200, Some("degraded")));
    drain_log(&mut sidecar);
    assert_eq!(
        count(&sidecar.lines, FIRST_FAILURE),
        1,
        "one warning for the first failure, none per retry:\n{}",
        sidecar.lines.join("\n")
    );
    assert_eq!(
        count(&sidecar.lines, STILL_FAILING),
        0,
        "at most one a minute"
    );
    let first = sidecar
        .lines
        .iter()
        .find(|l| l.contains(FIRST_FAILURE))
        .expect("warning");
    assert!(first.contains("reason=disk_full"), "{first}");

    std::fs::remove_file(inside(&sidecar, &data.join("filler"))).expect("free the disk");
    let recovered = sidecar
        .wait_for_log(RECOVERED, Duration::from_secs(30))
        .expect("one line when writes work again");
    assert!(
        log_field(std::slice::from_ref(&recovered), RECOVERED, "rows_written") > Some(0),
        "{recovered}"
    );
    let healed = wait_for(Duration::from_secs(10), || {
        let s = sqlite_health(&sidecar);
        (s["state"] == "ok").then_some(s)
    })
    .expect("/health ok again");
    assert!(healed["reason"].is_null(), "{healed}");
    let stopped = sidecar.stop_cleanly();
    assert_eq!(
        stopped.bars_written, stopped.bars_closed,
        "every bar produced was stored"
    );
    assert_eq!(count(&stopped.log, RECOVERED), 1);
}

#[test]
fn a_full_disk_at_sigterm_exits_4_and_logs_the_rows_lost() {
    if !namespaces_work() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let db_s = data.join("b.db").to_str().expect("utf-8").to_string();
    let sidecar = on_tmpfs(dir.path(), &data, "8m", 0, &vars(&db_s));
    fill(&sidecar, &data, "filler");
    wait_for(Duration::from_secs(15), || {
        let s = sqlite_health(&sidecar);
        (s["reason"] == "disk_full" && s["pending_rows"].as_u64() > Some(0)).then_some(())
    })
    .expect("rows waiting on a full disk");
    let (code, log) = sidecar.terminate();
    assert_eq!(code, 4, "exit code 4: rows lost; log:\n{}", log.join("\n"));
    let lost = log_field(&log, "SQLite: rows could not be written", "rows")
        .unwrap_or_else(|| panic!("rows= in the log:\n{}", log.join("\n")));
    assert!(lost > 0);
    let line = log
        .iter()
        .find(|l| l.contains("SQLite: rows could not be written"))
        .expect("line");
    assert!(line.contains("reason=disk_full"), "{line}");
    assert!(
        log.iter()
            .any(|l| l.contains(&format!("{lost} rows could not be written"))),
        "the exit message names the count:\n{}",
        log.join("\n")
    );
}

#[test]
fn a_locked_database_is_reported_and_written_once_the_lock_is_released() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("b.db");
    let db_s = db.to_str().expect("utf-8").to_string();
    let mut sidecar = Sidecar::start(dir.path(), &vars(&db_s));
    wait_for(Duration::from_secs(10), || {
        (sqlite_health(&sidecar)["state"] == "ok" && db.exists()).then_some(())
    })
    .expect("running");
    // Another process (a `sqlite3` shell, a backup) holding the write lock.
    let other = rusqlite::Connection::open(&db).expect("open");
    other.execute_batch("BEGIN IMMEDIATE").expect("write lock");
    let locked = wait_for(Duration::from_secs(20), || {
        let s = sqlite_health(&sidecar);
        (s["state"] == "failing").then_some(s)
    })
    .expect("/health says failing while the lock is held");
    assert_eq!(locked["reason"], "locked", "{locked}");
    other.execute_batch("ROLLBACK").expect("release");
    drop(other);
    sidecar
        .wait_for_log(RECOVERED, Duration::from_secs(30))
        .expect("writes work again once the lock is released");
    let (code, log) = sidecar.terminate();
    assert_eq!(code, 0, "{}", log.join("\n"));
    assert_eq!(count(&log, FIRST_FAILURE), 1, "{}", log.join("\n"));
    let closed = log_field(&log, "stopped cleanly", "bars_closed").expect("bars_closed");
    let stored = common::sql_u64(&db, "SELECT count(*) FROM bars");
    assert_eq!(stored, closed, "every bar produced was stored");
}

#[test]
fn a_background_bootstrap_stopped_by_a_full_disk_resumes_when_space_returns() {
    if !namespaces_work() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let db = data.join("b.db");
    let db_s = db.to_str().expect("utf-8").to_string();
    let v = [
        ("SQLITE_PATH", db_s.as_str()),
        ("SYMBOLS", "EURUSD"),
        ("TIMEFRAMES", "1m"),
        ("COLLECTION_INTERVAL", "100ms"),
        ("BATCH_WRITE_INTERVAL", "200ms"),
        ("SYNTHETIC_BAD_TICK_RATE", "0"),
        ("HISTORY_DAYS", "5"),
        ("MAX_BARS_CACHE", "10000"),
    ];
    // 256 KiB free: the schema and the warm-up fit, five days of minutes do not.
    let mut sidecar = on_tmpfs(dir.path(), &data, "2m", 2_048 - 256, &v);
    let failed = sidecar
        .wait_for_log("what=\"background bootstrap\"", Duration::from_secs(30))
        .expect("the bootstrap's write fails on the full disk");
    assert!(failed.contains(FIRST_FAILURE), "{failed}");
    assert!(failed.contains("reason=disk_full"), "{failed}");
    drain_log(&mut sidecar);
    assert_eq!(
        count(&sidecar.lines, "bootstrap done"),
        0,
        "not done on a full disk"
    );
    std::fs::remove_file(inside(&sidecar, &data.join("filler"))).expect("free the disk");
    let done = sidecar
        .wait_for_log("bootstrap done", Duration::from_secs(60))
        .expect("the bootstrap runs again and completes");
    assert!(
        log_field(std::slice::from_ref(&done), "bootstrap done", "stored") > Some(0),
        "{done}"
    );
    // Read back through barkeep's own reader (the database lives in its mount namespace).
    let (_, bars) = get_json(sidecar.addr, "/bars/EURUSD?tf=1m&limit=10000");
    let ts: Vec<i64> = bars["bars"]
        .as_array()
        .expect("bars")
        .iter()
        .map(|b| b["ts"].as_i64().expect("ts"))
        .collect();
    let (n, first, last) = (ts.len() as i64, ts[0], ts[ts.len() - 1]);
    assert!(n >= 5 * 1_440, "five days of minutes: {n}");
    assert_eq!(n, (last - first) / 60_000 + 1, "one stretch, no hole");
    let (code, log) = sidecar.terminate();
    assert_eq!(code, 0, "{}", log.join("\n"));
}
