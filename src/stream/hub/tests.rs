use super::*;
use crate::model::{Bar, BarRecord, Event, FEATURE_COUNT, Features, Gap, SymbolTable, Timeframe};
use crate::stream::jetstream::Tap;

fn hub(replay: usize, queue: usize) -> Arc<Hub> {
    let tf: Timeframe = "1m".parse().expect("tf");
    Hub::new(
        Names {
            symbols: SymbolTable::new(["EURUSD", "BTC/USD"]),
            frames: vec![tf],
            timeframes: vec!["1m".into()],
            features: std::array::from_fn(|i| format!("f{i}")),
        },
        StreamSettings {
            replay,
            client_queue: queue,
            stale_after_ms: 120_000,
        },
        Arc::new(Metrics::new(&["synthetic"])),
    )
}

/// One tick's forming bar (closing at `price`) for `symbol`.
fn tick(hub: &Hub, symbol: SymbolId, ts: i64, price: f64) {
    let record = BarRecord {
        symbol,
        timeframe: "1m".parse().expect("tf"),
        bar: Bar::from_price(ts - ts % 60_000, price, 1.0),
        source: "synthetic",
        quality: 1.0,
    };
    let features = Features {
        values: [price; FEATURE_COUNT],
    };
    hub.publish(&TickBatch::new(
        ts,
        vec![Event::Forming { record, features }],
    ));
}

fn seqs(frames: &[Arc<Frame>], channel: u32) -> Vec<u64> {
    frames
        .iter()
        .filter(|f| f.channel == channel)
        .map(|f| f.seq)
        .collect()
}

fn drain(sub: &mut Subscription) -> Vec<Arc<Frame>> {
    let mut out = Vec::new();
    while let Ok(f) = sub.rx.try_recv() {
        out.push(f);
    }
    out
}

#[test]
fn forming_updates_are_deltas_and_unchanged_ones_are_not_sent() {
    let hub = hub(100, 100);
    let md = hub.channel("stream:market_data:EURUSD").expect("channel");
    let mut sub = hub.subscribe(None, None);
    assert!(sub.add(&[md], &Start::Fresh).is_empty(), "nothing yet");
    tick(&hub, 0, 60_000, 1.0);
    tick(&hub, 0, 61_000, 1.0); // nothing changed: no message
    tick(&hub, 0, 62_000, 1.5);
    tick(&hub, 0, 120_000, 1.6); // a new bar: a snapshot
    let got = drain(&mut sub);
    assert_eq!(seqs(&got, md), [1, 2, 3]);
    let kinds: Vec<bool> = got.iter().map(|f| f.delta).collect();
    assert_eq!(kinds, [false, true, false]);
    // A fresh subscriber gets each kind's newest message whole.
    let other = hub.subscribe(None, None);
    let opening = other.add(&[md], &Start::Fresh);
    assert_eq!(seqs(&opening, md), [3]);
}

#[test]
fn resumes_replay_from_a_position_and_say_when_it_is_lost() {
    let hub = hub(5, 100);
    let md = hub.channel("stream:market_data:EURUSD").expect("channel");
    let an = hub.channel("stream:analytics:EURUSD").expect("channel");
    for i in 0..4 {
        tick(&hub, 0, 60_000 + i * 1_000, 1.0 + i as f64);
    }
    // After one event: every channel, in hub order, each kind starting whole.
    let sub = hub.subscribe(None, None);
    let replay = sub.add(
        &[md, an],
        &Start::After {
            channel: md,
            seq: 2,
        },
    );
    assert_eq!(seqs(&replay, md), [3, 4]);
    assert!(replay.windows(2).all(|w| w[0].order < w[1].order));
    assert!(
        !replay[0].delta,
        "a replay starts each kind with a snapshot"
    );
    // Per-channel seqs.
    let sub = hub.subscribe(None, None);
    let replay = sub.add(&[md], &Start::Seqs(vec![(md, 3)]));
    assert_eq!(seqs(&replay, md), [4]);
    // Out of the buffer (5 kept of 8 analytics messages), and ahead of the channel.
    for i in 4..8 {
        tick(&hub, 0, 60_000 + i * 1_000, 1.0 + i as f64);
    }
    let sub = hub.subscribe(None, None);
    let replay = sub.add(&[an], &Start::Seqs(vec![(an, 1)]));
    assert_eq!(replay[0].data_type, "replay_gap");
    assert!(replay[1..].iter().all(|f| !f.delta));
    let sub = hub.subscribe(None, None);
    let replay = sub.add(&[md], &Start::Seqs(vec![(md, 99)]));
    let json: serde_json::Value = serde_json::from_slice(replay[0].json()).expect("JSON");
    assert_eq!(json["data"]["reason"], "unknown_position");
}

#[test]
fn a_full_queue_drops_its_subscriber_and_no_other() {
    let hub = hub(100, 2);
    let md = hub.channel("stream:market_data:EURUSD").expect("channel");
    let mut slow = hub.subscribe(None, None);
    slow.add(&[md], &Start::Fresh);
    let mut fast = hub.subscribe(None, None);
    fast.add(&[md], &Start::Fresh);
    let mut received = 0;
    for i in 0..10 {
        tick(&hub, 0, 60_000 + i * 1_000, 1.0 + i as f64);
        received += drain(&mut fast).len();
    }
    assert!(slow.flags.kicked());
    assert!(!fast.flags.kicked());
    assert_eq!(received, 10);
    assert_eq!(hub.metrics.stream_slow_consumers.get(), 1);
    assert_eq!(hub.channels()[md as usize].subscribers, 1);
    let _ = drain(&mut slow);
}

#[test]
fn continuity_goes_on_both_channels_and_selections_resolve() {
    let hub = hub(100, 100);
    let gap = Event::Gap {
        symbol: 1,
        timeframe: "1m".parse().expect("tf"),
        gap: Gap {
            from_ts: 0,
            to_ts: 60_000,
        },
    };
    hub.publish(&TickBatch::new(1, vec![gap]));
    let info = hub.channels();
    assert_eq!(info[2].channel, "stream:market_data:BTC/USD");
    assert_eq!((info[2].seq, info[3].seq), (1, 1));
    let latest = hub.latest(3).expect("latest");
    let json: serde_json::Value = serde_json::from_slice(&latest).expect("JSON");
    assert_eq!(json["data_type"], "gap");
    assert_eq!(json["channel"], "stream:analytics:BTC/USD");
    assert_eq!(
        hub.resolve(&["market_data"], &["btc/usd"]).expect("ok"),
        [2]
    );
    assert_eq!(hub.resolve::<&str>(&[], &["EURUSD"]).expect("ok"), [0, 1]);
    assert_eq!(
        hub.resolve(&["stream:analytics:BTC/USD", "analytics"], &[])
            .expect("ok"),
        [3, 1]
    );
    assert!(hub.resolve(&["stream:nope:EURUSD"], &[]).is_err());
    assert!(hub.resolve::<&str>(&[], &[]).is_err());
}

#[test]
fn the_tap_gets_every_message_once_whole_and_never_blocks() {
    let hub = hub(100, 100);
    let tap = Tap::new(1_000, Arc::clone(&hub.metrics));
    hub.set_tap(Arc::clone(&tap));
    tick(&hub, 1, 60_000, 1.0);
    tick(&hub, 1, 61_000, 1.5); // deltas for SSE clients
    let gap = Event::Gap {
        symbol: 1,
        timeframe: "1m".parse().expect("tf"),
        gap: Gap {
            from_ts: 0,
            to_ts: 60_000,
        },
    };
    hub.publish(&TickBatch::new(62_000, vec![gap]));
    let mut got = std::collections::VecDeque::new();
    tap.take(usize::MAX, &mut got);
    let types: Vec<&str> = got.iter().map(|f| f.data_type).collect();
    assert_eq!(
        types,
        ["bar", "features", "signal", "bar", "features", "gap"],
        "every message (the signal did not change), continuity once"
    );
    assert!(got[3].delta, "the hub sent the second bar as a delta");
    let whole: serde_json::Value =
        serde_json::from_slice(&hub.snapshot_json(&got[3])).expect("JSON");
    assert_eq!(whole["update_type"], "snapshot");
    assert_eq!(whole["symbol"], "BTC/USD");
    assert_eq!(whole["channel"], "stream:market_data:BTC/USD");
    assert_eq!(whole["data"]["close"], 1.5);
    let delta: serde_json::Value = serde_json::from_slice(got[3].json()).expect("JSON");
    assert!(delta["data"].get("volume").is_none(), "{delta}");
    assert_eq!(
        whole["data"]["volume"], 1.0,
        "a snapshot carries what did not change"
    );
    assert_eq!(whole["seq"], 2);
    // A full tap drops (counted), the hub goes on: forming updates past half, the rest past all.
    let hub2 = self::hub(100, 100);
    let small = Tap::new(4, Arc::clone(&hub2.metrics));
    hub2.set_tap(Arc::clone(&small));
    tick(&hub2, 1, 60_000, 1.0); // three forming messages: two fit in half of four
    for t in [61_000, 62_000, 63_000] {
        hub2.publish(&TickBatch::new(t, vec![gap])); // the third does not fit
    }
    assert_eq!(small.len(), 4);
    assert_eq!(hub2.metrics.nats_dropped.get(), 2);
    assert_eq!(hub2.metrics.nats_queue_depth.get(), 4);
    assert_eq!(hub2.channels()[2].seq, 4, "the hub numbered everything");
}
