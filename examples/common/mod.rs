//! What the harnesses in `examples/` share: free ports, child processes killed on drop, a
//! private `redis-server`, the release binary next to the example, barkeep's listening line.
#![allow(dead_code, reason = "each example uses a different subset")]

pub mod redis_cost;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// `--name value` from the command line, or `default`.
pub fn arg<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> T {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A child process killed (and reaped) on drop.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// `redis-server` on 127.0.0.1:`port`, no persistence, plus `extra` arguments.
pub fn redis_server<'a>(port: u16, extra: impl IntoIterator<Item = &'a str>) -> Child {
    Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .args(extra)
        .stdout(Stdio::null())
        .spawn()
        .expect("redis-server on PATH (apt-get install redis-server)")
}

/// The `barkeep` binary of the same build as this example (`target/<profile>/barkeep`).
pub fn barkeep_binary() -> PathBuf {
    std::env::current_exe()
        .expect("exe")
        .parent()
        .and_then(|d| d.parent())
        .map(|d| d.join("barkeep"))
        .expect("target dir")
}

/// The address in barkeep's `listening addr=…` log line, if `line` is that line.
pub fn listening_addr(line: &str) -> Option<std::net::SocketAddr> {
    line.split("addr=")
        .nth(1)
        .filter(|_| line.contains("listening"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Current and peak resident set size of a process in kB, from `/proc/<pid>/status`.
pub fn rss_kb(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<u64>().ok())
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// CPU seconds (user + system) of a process, from /proc.
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    let ticks: f64 = fields
        .get(11)
        .and_then(|u| u.parse::<f64>().ok())
        .unwrap_or(0.0)
        + fields
            .get(12)
            .and_then(|s| s.parse::<f64>().ok())
            .unwrap_or(0.0);
    ticks / 100.0
}
