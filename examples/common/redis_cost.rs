//! What a workload costs Redis itself, between two snapshots of `INFO`: command time
//! (`commandstats` usec, the server's time inside commands), the server's CPU (`used_cpu_user` +
//! `used_cpu_sys`, parsing and networking included), commands and bytes received; and the raw
//! floor: a plain client writing one pipelined command per key barkeep must update per
//! symbol-tick, with payloads of barkeep's sizes.

use std::collections::BTreeMap;
use std::time::Instant;

/// Counters of one `INFO` snapshot (or the difference of two).
#[derive(Debug, Clone, Default)]
pub struct RedisCost {
    /// Command time in µs, all commands but `INFO` itself.
    pub usec: f64,
    pub calls: f64,
    /// Server CPU in seconds, and the part of it spent in the kernel (`used_cpu_sys`: the
    /// sockets' reads and writes, which grow with the bytes).
    pub cpu_s: f64,
    pub cpu_sys_s: f64,
    pub bytes_in: f64,
    /// Per command (lower-case name): calls and µs.
    pub commands: BTreeMap<String, (f64, f64)>,
}

impl RedisCost {
    /// What happened between `before` and `self`.
    pub fn since(&self, before: &RedisCost) -> RedisCost {
        let mut commands = BTreeMap::new();
        for (name, (calls, usec)) in &self.commands {
            let (c0, u0) = before.commands.get(name).copied().unwrap_or_default();
            if calls - c0 > 0.0 {
                commands.insert(name.clone(), (calls - c0, usec - u0));
            }
        }
        RedisCost {
            usec: self.usec - before.usec,
            calls: self.calls - before.calls,
            cpu_s: self.cpu_s - before.cpu_s,
            cpu_sys_s: self.cpu_sys_s - before.cpu_sys_s,
            bytes_in: self.bytes_in - before.bytes_in,
            commands,
        }
    }

    /// `SET 2.00 (1.10 µs), PUBLISH 1.00 (0.80 µs), …`: commands and their command time per unit
    /// of work (e.g. per symbol-tick).
    pub fn mix(&self, per: f64) -> String {
        self.commands
            .iter()
            .map(|(name, (calls, usec))| {
                format!(
                    "{} {:.2} ({:.2} µs)",
                    name.to_uppercase(),
                    calls / per,
                    usec / per
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Takes a snapshot of the server's counters.
pub async fn snapshot(conn: &mut redis::aio::MultiplexedConnection) -> RedisCost {
    let info: String = redis::cmd("INFO")
        .arg("everything")
        .query_async(conn)
        .await
        .expect("INFO");
    let mut cost = RedisCost::default();
    for line in info.lines() {
        let Some((key, value)) = line.trim().split_once(':') else {
            continue;
        };
        match key {
            "used_cpu_user" | "used_cpu_sys" => {
                let seconds = value.parse::<f64>().unwrap_or(0.0);
                cost.cpu_s += seconds;
                if key == "used_cpu_sys" {
                    cost.cpu_sys_s += seconds;
                }
            }
            "total_net_input_bytes" => cost.bytes_in = value.parse().unwrap_or(0.0),
            _ => {
                let Some(name) = key.strip_prefix("cmdstat_") else {
                    continue;
                };
                let field = |f: &str| {
                    value
                        .split(',')
                        .find_map(|kv| kv.strip_prefix(f)?.strip_prefix('='))
                        .and_then(|v| v.parse::<f64>().ok())
                        .unwrap_or(0.0)
                };
                let (calls, usec) = (field("calls"), field("usec"));
                if name != "info" {
                    cost.usec += usec;
                    cost.calls += calls;
                }
                cost.commands.insert(name.to_string(), (calls, usec));
            }
        }
    }
    cost
}

/// The sizes barkeep writes per symbol-tick, to give the raw floor the same payloads.
#[derive(Debug, Clone, Copy)]
pub struct Payloads {
    /// The features value of one timeframe.
    pub features: usize,
    /// One ring entry.
    pub bar: usize,
    /// All messages of one symbol-tick together.
    pub message: usize,
    /// Timeframes written per tick, and how many of them close a bar every tick.
    pub frames: usize,
    pub closing_frames: usize,
    /// Whether barkeep also appends the message to a stream.
    pub stream: bool,
}

/// The raw floor: `ticks` ticks of `symbols` symbols, per symbol-tick one pipelined command per
/// key barkeep must update (`SET` features per timeframe, `RPUSH` per closing ring, one
/// `PUBLISH`, one `XADD` when barkeep streams), in pipelines of 128 symbols sent together. Returns
/// the cost and the wall time per tick in ms.
pub async fn raw_floor(url: &str, symbols: usize, ticks: usize, p: Payloads) -> (RedisCost, f64) {
    let client = redis::Client::open(url).expect("client");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let keys: Vec<[String; 4]> = (0..symbols)
        .map(|i| {
            let s = format!("{{R{i:05}}}");
            [
                format!("raw:bars:{s}"),
                format!("raw:features:{s}"),
                format!("raw:events:{s}"),
                format!("raw:stream:{s}"),
            ]
        })
        .collect();
    let (features, bar, message) = (
        vec![0x5a_u8; p.features],
        vec![0x5a_u8; p.bar],
        vec![0x5a_u8; p.message],
    );
    let before = snapshot(&mut conn).await;
    let started = Instant::now();
    for _ in 0..ticks {
        let mut sends = Vec::new();
        for chunk in keys.chunks(128) {
            let mut pipe = redis::pipe();
            for [bars, feats, events, stream] in chunk {
                for f in 0..p.frames {
                    if f < p.closing_frames {
                        pipe.cmd("RPUSH").arg(bars).arg(&bar).ignore();
                    }
                    pipe.cmd("SET")
                        .arg(feats)
                        .arg(&features)
                        .arg("PX")
                        .arg(5_000)
                        .ignore();
                }
                pipe.cmd("PUBLISH").arg(events).arg(&message).ignore();
                if p.stream {
                    pipe.cmd("XADD")
                        .arg(stream)
                        .arg("MAXLEN")
                        .arg("~")
                        .arg(1_000)
                        .arg("*")
                        .arg("msg")
                        .arg(&message)
                        .ignore();
                }
            }
            let mut c = conn.clone();
            sends.push(tokio::spawn(async move { pipe.exec_async(&mut c).await }));
        }
        for s in sends {
            s.await.expect("join").expect("raw pipeline");
        }
    }
    let per_tick_ms = started.elapsed().as_secs_f64() * 1_000.0 / ticks as f64;
    let after = snapshot(&mut conn).await;
    (after.since(&before), per_tick_ms)
}
