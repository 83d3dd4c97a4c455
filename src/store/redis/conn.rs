/*!
One connection type for a single Redis and a Redis Cluster, and where a pipeline may go.

[`Conn`] is either a [`ConnectionManager`] (`REDIS_URL`) or the redis crate's async
[`ClusterConnection`] (`REDIS_CLUSTER_NODES`); both implement `ConnectionLike`, so a command or a
pipeline on one key (a ring's rewrite, `LRANGE`) is sent the same way in both modes.

A pipeline over many symbols is different: the crate routes an async cluster pipeline by its
first keyed command and refuses one whose keys are on different slots (`route_for_pipeline`,
"crossed slots"), although Redis itself accepts a pipeline whose every key is on the node it
is sent to. So [`Topology`] keeps which master owns each slot (from `CLUSTER SLOTS`, read after
every (re)connect), callers group their work by owner ([`Topology::owner`]) and [`Conn::send`]
sends each group to the master of one of its slots (`route_pipeline` with that slot's route).
A single Redis is one owner of every slot: one group, as before.

The cluster client is built with no retries: a pipeline that failed half-way (a master killed,
a slot moved) may have been applied in part, and the crate would send all of it again, pushing
bars twice. A failure goes back to the sink instead, which takes the rings as out of sync,
connects again (reading the topology again) and reconciles them from history.
*/

use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, SingleNodeRoutingInfo, SlotAddr};
use redis::{Cmd, Pipeline, RedisFuture, RedisResult, Value};

use crate::model::RedisTarget;

/// Slots of a Redis Cluster.
const SLOTS: usize = 16_384;

/// The command a message is published with: sharded pub/sub in a cluster, so a message goes to
/// the shard of its channel's slot instead of to every node.
pub(super) fn publish_command(target: &RedisTarget) -> &'static str {
    match target {
        RedisTarget::Standalone(_) => "PUBLISH",
        RedisTarget::Cluster(_) => "SPUBLISH",
    }
}

/// The slot of a key (CRC16 of its hash tag, or of the whole key without one), as Redis
/// Cluster computes it.
pub(in crate::store) fn key_slot(key: &str) -> u16 {
    let bytes = key.as_bytes();
    let hashed = bytes
        .iter()
        .position(|&b| b == b'{')
        .and_then(|open| {
            let rest = &bytes[open + 1..];
            let close = rest.iter().position(|&b| b == b'}')?;
            (close > 0).then(|| &rest[..close])
        })
        .unwrap_or(bytes);
    crc16::State::<crc16::XMODEM>::calculate(hashed) % SLOTS as u16
}

/// Which master owns each slot. Standalone: one owner of everything.
#[derive(Debug, Clone, Default)]
pub(in crate::store) struct Topology {
    /// Per slot, the index of its master in `masters` (empty: standalone).
    owner: Vec<u16>,
    /// The masters, `host:port`, each with one slot it owns (to route to it).
    masters: Vec<(String, u16)>,
}

impl Topology {
    /// Index of the master that owns `slot` (0 on a single Redis).
    pub(in crate::store) fn owner(&self, slot: u16) -> usize {
        self.owner.get(slot as usize).map_or(0, |&o| o as usize)
    }

    /// How many owners there are (1 on a single Redis).
    pub(in crate::store) fn owners(&self) -> usize {
        self.masters.len().max(1)
    }

    /// A slot owned by master `index` (any slot on a single Redis).
    pub(in crate::store) fn slot_of(&self, index: usize) -> u16 {
        self.masters.get(index).map_or(0, |m| m.1)
    }

    /// The masters' addresses (empty on a single Redis).
    pub(in crate::store) fn masters(&self) -> Vec<String> {
        self.masters.iter().map(|m| m.0.clone()).collect()
    }

    /// Reads a `CLUSTER SLOTS` answer: `[[start, end, [host, port, id…], replicas…]…]`.
    fn from_cluster_slots(reply: &Value) -> RedisResult<Self> {
        let bad = |what: &str| {
            redis::RedisError::from((
                redis::ErrorKind::Parse,
                "unexpected CLUSTER SLOTS answer",
                what.to_string(),
            ))
        };
        let Value::Array(ranges) = reply else {
            return Err(bad("not an array"));
        };
        let mut topology = Self {
            owner: vec![u16::MAX; SLOTS],
            masters: Vec::new(),
        };
        for range in ranges {
            let Value::Array(parts) = range else {
                return Err(bad("a range is not an array"));
            };
            let (Some(Value::Int(start)), Some(Value::Int(end)), Some(Value::Array(master))) =
                (parts.first(), parts.get(1), parts.get(2))
            else {
                return Err(bad("a range without start, end and master"));
            };
            let host = match master.first() {
                Some(Value::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
                Some(Value::SimpleString(s)) => s.clone(),
                _ => return Err(bad("a master without a host")),
            };
            let Some(Value::Int(port)) = master.get(1) else {
                return Err(bad("a master without a port"));
            };
            let (start, end) = (*start as usize, *end as usize);
            if start > end || end >= SLOTS {
                return Err(bad("a slot range out of bounds"));
            }
            let address = format!("{host}:{port}");
            let index = match topology.masters.iter().position(|m| m.0 == address) {
                Some(i) => i,
                None => {
                    topology.masters.push((address, start as u16));
                    topology.masters.len() - 1
                }
            };
            topology.owner[start..=end].fill(index as u16);
        }
        if topology.owner.contains(&u16::MAX) {
            // Slots nobody serves (a master down and not yet replaced): not a usable map.
            return Err(redis::RedisError::from((
                redis::ErrorKind::ClusterConnectionNotFound,
                "not every slot has a master",
            )));
        }
        Ok(topology)
    }
}

/// A connection to a single Redis or to a cluster.
#[derive(Clone)]
pub(in crate::store) enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl Conn {
    /// `pool` connections to `target` (each a multiplexed connection; in a cluster, one per
    /// node), and the slots' owners.
    pub(super) async fn open(
        target: &RedisTarget,
        pool: usize,
        local: bool,
    ) -> RedisResult<(Vec<Self>, Topology)> {
        let tcp = redis::io::tcp::TcpSettings::default().set_nodelay(true);
        let mut conns = Vec::with_capacity(pool);
        match target {
            RedisTarget::Standalone(url) => {
                // Small pipelined writes must not wait for Nagle's algorithm: with it a
                // 1 000-symbol tick took 26 ms instead of 10 (measured with examples/loadtest.rs).
                let info = redis::IntoConnectionInfo::into_connection_info(url.as_str())?
                    .set_tcp_settings(tcp);
                let client = redis::Client::open(info)?;
                // The manager's own retries after a dropped connection: short on this machine, so
                // a restarted local Redis is written to again within about a tick.
                let (retries, max_delay) = if local {
                    (1, super::RETRY_LOCAL)
                } else {
                    (2, Duration::from_secs(2))
                };
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(Duration::from_secs(2)))
                    .set_response_timeout(Some(Duration::from_secs(5)))
                    .set_number_of_retries(retries)
                    .set_max_delay(max_delay);
                for _ in 0..pool {
                    let manager =
                        ConnectionManager::new_with_config(client.clone(), config.clone()).await?;
                    conns.push(Self::Single(manager));
                }
                Ok((conns, Topology::default()))
            }
            RedisTarget::Cluster(nodes) => {
                let client =
                    redis::cluster::ClusterClient::builder(nodes.iter().map(String::as_str))
                        .retries(0)
                        .connection_timeout(Duration::from_secs(2))
                        .response_timeout(Duration::from_secs(5))
                        .tcp_settings(tcp)
                        .build()?;
                for _ in 0..pool {
                    conns.push(Self::Cluster(client.get_async_connection().await?));
                }
                let reply: Value = redis::cmd("CLUSTER")
                    .arg("SLOTS")
                    .query_async(&mut conns[0])
                    .await?;
                let topology = Topology::from_cluster_slots(&reply)?;
                Ok((conns, topology))
            }
        }
    }

    /// Sends a pipeline whose every key is on the master owning `slot` (in a cluster; anywhere
    /// on a single Redis) and returns its answers, or the first command's error.
    pub(in crate::store) async fn send(
        &mut self,
        slot: u16,
        pipe: Pipeline,
    ) -> RedisResult<Vec<Value>> {
        let count = pipe.len();
        let answers = match self {
            Self::Single(c) => c.req_packed_commands(&pipe, 0, count).await?,
            Self::Cluster(c) => {
                let route = SingleNodeRoutingInfo::SpecificNode(Route::new(slot, SlotAddr::Master));
                c.route_pipeline(pipe, 0, count, route).await?
            }
        };
        for answer in &answers {
            if let Value::ServerError(e) = answer {
                return Err(e.clone().into());
            }
        }
        Ok(answers)
    }

    /// One command on the master owning `slot`, for commands that name no key (`SCAN`).
    pub(in crate::store) async fn send_cmd(&mut self, slot: u16, cmd: &Cmd) -> RedisResult<Value> {
        match self {
            Self::Single(c) => c.req_packed_command(cmd).await,
            Self::Cluster(c) => {
                let route = SingleNodeRoutingInfo::SpecificNode(Route::new(slot, SlotAddr::Master));
                c.route_command(
                    cmd.clone(),
                    redis::cluster_routing::RoutingInfo::SingleNode(route),
                )
                .await
            }
        }
    }

    /// Sends `per_item` commands per item (queued by `queue`), one pipeline per master, and
    /// returns the answers in the items' order.
    pub(in crate::store) async fn per_owner<T>(
        &mut self,
        topology: &Topology,
        items: &[T],
        slot: impl Fn(&T) -> u16,
        per_item: usize,
        queue: impl Fn(&mut Pipeline, &T),
    ) -> RedisResult<Vec<Value>> {
        let mut groups: Vec<Vec<usize>> = vec![Vec::new(); topology.owners()];
        for (i, item) in items.iter().enumerate() {
            groups[topology.owner(slot(item))].push(i);
        }
        let mut answers = vec![Value::Nil; items.len() * per_item];
        for group in groups.iter().filter(|g| !g.is_empty()) {
            let mut pipe = redis::pipe();
            for &i in group {
                queue(&mut pipe, &items[i]);
            }
            let got = self.send(slot(&items[group[0]]), pipe).await?;
            for (n, value) in got.into_iter().enumerate() {
                answers[group[n / per_item] * per_item + n % per_item] = value;
            }
        }
        Ok(answers)
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(c) => c.req_packed_commands(cmd, offset, count),
            Self::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_those_redis_cluster_computes() {
        // Values from `CLUSTER KEYSLOT` on Redis 7.
        assert_eq!(key_slot("foo"), 12_182);
        assert_eq!(key_slot("{user1000}.following"), key_slot("user1000"));
        assert_eq!(key_slot("barkeep:bars:{EURUSD}:1m"), key_slot("EURUSD"));
        assert_eq!(key_slot("foo{}{bar}"), key_slot("foo{}{bar}"));
        assert_ne!(
            key_slot("foo{}{bar}"),
            key_slot("bar"),
            "an empty tag hashes the whole key"
        );
    }

    #[test]
    fn cluster_slots_answers_give_each_slot_its_master() {
        let node = |host: &str, port: i64| {
            Value::Array(vec![
                Value::BulkString(host.as_bytes().to_vec()),
                Value::Int(port),
                Value::BulkString(b"id".to_vec()),
            ])
        };
        let range = |start: i64, end: i64, master| {
            Value::Array(vec![
                Value::Int(start),
                Value::Int(end),
                master,
                node("r", 1),
            ])
        };
        let reply = Value::Array(vec![
            range(0, 5_460, node("127.0.0.1", 7000)),
            range(10_923, 16_383, node("127.0.0.1", 7002)),
            range(5_461, 10_922, node("127.0.0.1", 7001)),
        ]);
        let t = Topology::from_cluster_slots(&reply).expect("a full map");
        assert_eq!(t.owners(), 3);
        assert_eq!(t.owner(0), 0);
        assert_eq!(t.owner(16_383), 1);
        assert_eq!(t.owner(5_461), 2);
        assert_eq!(t.slot_of(1), 10_923);
        assert_eq!(t.masters()[2], "127.0.0.1:7001");
        let partial = Value::Array(vec![range(0, 5_460, node("127.0.0.1", 7000))]);
        assert!(Topology::from_cluster_slots(&partial).is_err());
        assert_eq!(Topology::default().owners(), 1);
    }
}
