//! A private Redis Cluster for a test: six `redis-server --cluster-enabled yes` on free ports
//! in a temp dir, joined by `redis-cli --cluster create … --cluster-replicas 1` into three
//! masters with a replica each; every node killed on drop.

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{free_port, wait_for};

/// Six nodes, three masters and three replicas.
pub struct RedisCluster {
    nodes: Vec<(u16, Option<Child>)>,
    pub dir: tempfile::TempDir,
}

impl RedisCluster {
    /// Starts the nodes, creates the cluster and waits until every node says `cluster_state:ok`
    /// and knows all six. Ports are picked free but may be taken before the node binds them
    /// (tests run in parallel): a creation that fails is tried again on other ports.
    pub fn start() -> Self {
        let mut failures = Vec::new();
        for _ in 0..3 {
            match Self::try_start() {
                Ok(cluster) => return cluster,
                Err(e) => failures.push(e),
            }
        }
        panic!("no Redis Cluster in three tries: {failures:#?}");
    }

    fn try_start() -> Result<Self, String> {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut nodes = Vec::new();
        for _ in 0..6 {
            let port = bus_free_port();
            let child = Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--cluster-enabled", "yes"])
                .arg("--cluster-config-file")
                .arg(dir.path().join(format!("nodes-{port}.conf")))
                .args(["--cluster-node-timeout", "1000"])
                .args(["--save", "", "--appendonly", "no"])
                // A replica's first sync starts at once, not after the default 5 s.
                .args(["--repl-diskless-sync-delay", "0"])
                .arg("--dir")
                .arg(dir.path())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-server must be installed (apt-get install redis-server)");
            nodes.push((port, Some(child)));
        }
        let cluster = Self { nodes, dir };
        for &(port, _) in &cluster.nodes {
            wait_for(Duration::from_secs(10), || {
                std::net::TcpStream::connect(("127.0.0.1", port)).ok()
            })
            .ok_or(format!("redis-server on {port} does not listen"))?;
        }
        let addresses: Vec<String> = cluster
            .nodes
            .iter()
            .map(|(p, _)| format!("127.0.0.1:{p}"))
            .collect();
        let out = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addresses)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .output()
            .expect("redis-cli must be installed");
        if !out.status.success() {
            return Err(format!(
                "redis-cli --cluster create: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        cluster.wait_until_ok(Duration::from_secs(60));
        Ok(cluster)
    }

    /// The nodes still running, as `redis://127.0.0.1:P`, comma-separated
    /// (`REDIS_CLUSTER_NODES`).
    pub fn urls(&self) -> String {
        self.nodes
            .iter()
            .map(|(p, _)| format!("redis://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Waits until every running node says `cluster_state:ok` and that all 16 384 slots are
    /// served, every replica has synced with its master (one that never did cannot take over),
    /// and all agree on three masters.
    pub fn wait_until_ok(&self, timeout: Duration) {
        wait_for(timeout, || {
            self.running()
                .all(|port| {
                    let info = cli(port, &["CLUSTER", "INFO"]);
                    let replication = cli(port, &["INFO", "replication"]);
                    info.contains("cluster_state:ok")
                        && info.contains("cluster_slots_ok:16384")
                        && (replication.contains("role:master")
                            || replication.contains("master_link_status:up"))
                })
                .then_some(())
        })
        .unwrap_or_else(|| panic!("cluster not ok: {}", self.cluster_nodes()));
        wait_for(timeout, || (self.masters().len() == 3).then_some(()))
            .unwrap_or_else(|| panic!("not three masters: {}", self.cluster_nodes()));
    }

    fn running(&self) -> impl Iterator<Item = u16> + '_ {
        self.nodes
            .iter()
            .filter(|(_, c)| c.is_some())
            .map(|(p, _)| *p)
    }

    /// `CLUSTER NODES` as one running node sees it.
    pub fn cluster_nodes(&self) -> String {
        self.running()
            .next()
            .map(|p| cli(p, &["CLUSTER", "NODES"]))
            .unwrap_or_default()
    }

    /// The ports of the masters serving slots that every running node agrees on, each with
    /// how many slots.
    pub fn masters(&self) -> BTreeMap<u16, usize> {
        let mut views = self
            .running()
            .map(|p| masters_of(&cli(p, &["CLUSTER", "NODES"])));
        let Some(first) = views.next() else {
            return BTreeMap::new();
        };
        if views.all(|v| v == first) {
            first
        } else {
            BTreeMap::new()
        }
    }

    /// The master holding `key`'s slot.
    pub fn master_of(&self, key: &str) -> u16 {
        let port = self.running().next().expect("a running node");
        let slot: u16 = cli(port, &["CLUSTER", "KEYSLOT", key])
            .trim()
            .parse()
            .expect("a slot");
        let nodes = cli(port, &["CLUSTER", "NODES"]);
        for line in nodes.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            if !f.get(2).is_some_and(|flags| flags.contains("master")) {
                continue;
            }
            for range in &f[8.min(f.len())..] {
                let (a, b) = range.split_once('-').unwrap_or((range, range));
                let (Ok(a), Ok(b)) = (a.parse::<u16>(), b.parse::<u16>()) else {
                    continue;
                };
                if (a..=b).contains(&slot) {
                    return port_of(f[1]);
                }
            }
        }
        panic!("no master for slot {slot}: {nodes}");
    }

    /// Kills one node at once (`SIGKILL`), like a crash.
    pub fn kill(&mut self, port: u16) {
        let (_, child) = self
            .nodes
            .iter_mut()
            .find(|(p, _)| *p == port)
            .expect("a node of this cluster");
        if let Some(mut child) = child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// A cluster client (follows redirections), for the test's own reads.
    pub fn client(&self) -> redis::cluster::ClusterConnection {
        let urls: Vec<String> = self
            .nodes
            .iter()
            .filter(|(_, c)| c.is_some())
            .map(|(p, _)| format!("redis://127.0.0.1:{p}"))
            .collect();
        redis::cluster::ClusterClient::new(urls)
            .expect("cluster client")
            .get_connection()
            .expect("connect to the test cluster")
    }

    /// A plain connection to one node (to ask it about its own keys).
    pub fn node(&self, port: u16) -> redis::Connection {
        redis::Client::open(format!("redis://127.0.0.1:{port}"))
            .expect("client")
            .get_connection()
            .expect("connect to a node")
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for (_, child) in &mut self.nodes {
            if let Some(mut c) = child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

/// A free port whose cluster bus port (port + 10 000) is free too.
fn bus_free_port() -> u16 {
    loop {
        let port = free_port();
        if port < 55_000 && std::net::TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return port;
        }
    }
}

/// `redis-cli -p PORT ARGS…`'s output ("" when the node does not answer).
fn cli(port: u16, args: &[&str]) -> String {
    Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// `127.0.0.1:7000@17000` → 7000.
fn port_of(address: &str) -> u16 {
    address
        .split('@')
        .next()
        .and_then(|a| a.rsplit_once(':'))
        .and_then(|(_, p)| p.parse().ok())
        .expect("a node address")
}

/// Masters that serve slots and are not failed, with their slot count, from `CLUSTER NODES`.
fn masters_of(nodes: &str) -> BTreeMap<u16, usize> {
    let mut out = BTreeMap::new();
    for line in nodes.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 9 || !f[2].contains("master") || f[2].contains("fail") {
            continue;
        }
        let slots: usize = f[8..]
            .iter()
            .filter(|r| !r.starts_with('['))
            .map(|r| match r.split_once('-') {
                Some((a, b)) => {
                    b.parse::<usize>().unwrap_or(0) + 1 - a.parse::<usize>().unwrap_or(0)
                }
                None => 1,
            })
            .sum();
        out.insert(port_of(f[1]), slots);
    }
    out
}
