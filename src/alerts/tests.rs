/*! The evaluator's rules on a paused clock, and the human-readable durations. */

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::rules::{Evaluator, human};
use super::webhook::{Notice, NoticeKind};
use super::{AlertSettings, Board};
use crate::clock::Clock;
use crate::indicators::IndicatorParams;
use crate::metrics::{Gauge, Metrics};
use crate::model::AlertRule;
use crate::model::{Session, SymbolTable};
use crate::store::snapshot::Snapshot;
use crate::store::snapshot::SymbolView;

const T0: i64 = 1_700_000_000_000;

struct Rig {
    eval: Evaluator,
    metrics: Arc<Metrics>,
    snapshot: Arc<Snapshot>,
    board: Arc<Board>,
    notices: mpsc::Receiver<Notice>,
}

fn rig() -> Rig {
    let symbols = SymbolTable::new(["EURUSD", "AAPL"]);
    let snapshot = Arc::new(Snapshot::new(
        symbols,
        vec!["1m".parse().expect("tf")],
        &IndicatorParams::default(),
    ));
    let metrics = Arc::new(Metrics::new(&["twelvedata"]));
    let settings = AlertSettings::default();
    let board = Arc::new(Board::new(&settings));
    let (tx, notices) = mpsc::channel(64);
    let eval = Evaluator::new(
        settings,
        Arc::clone(&metrics),
        Arc::clone(&snapshot),
        Arc::clone(&board),
        Clock::tokio(T0),
        true,
        Some(tx),
    );
    Rig {
        eval,
        metrics,
        snapshot,
        board,
        notices,
    }
}

fn seen(snapshot: &Snapshot, id: u32, last_ms: i64, open: bool) {
    snapshot.publish(
        id,
        Arc::new(SymbolView {
            last_data_ms: Some(last_ms),
            source: Some("twelvedata"),
            session: Some(Session {
                open,
                since_ms: i64::MIN,
                until_ms: i64::MAX,
            }),
            ..SymbolView::default()
        }),
    );
}

fn active(board: &Board) -> Vec<(AlertRule, String)> {
    board
        .view()
        .active
        .iter()
        .map(|r| (r.rule, r.subject.to_string()))
        .collect()
}

/// Old data is stale only while the market is open; a closing market resolves the alert.
#[tokio::test(start_paused = true)]
async fn a_closed_market_is_never_stale() {
    let mut r = rig();
    seen(&r.snapshot, 0, T0, true);
    seen(&r.snapshot, 1, T0, false);
    r.eval.evaluate();
    assert!(active(&r.board).is_empty());
    tokio::time::advance(Duration::from_secs(121)).await;
    seen(&r.snapshot, 0, T0, true);
    r.eval.evaluate();
    assert_eq!(
        active(&r.board),
        [(AlertRule::SymbolStale, "EURUSD".to_string())]
    );
    let fired = r.notices.try_recv().expect("fired");
    assert_eq!(fired.kind, NoticeKind::Fired);
    assert_eq!(fired.record.since_ms, T0 + 120_000);
    // Evaluated again: the same alert, nothing sent.
    r.eval.evaluate();
    assert!(r.notices.try_recv().is_err());
    assert_eq!(r.metrics.alerts_fired[AlertRule::SymbolStale].get(), 1);
    assert_eq!(r.metrics.alerts_active[AlertRule::SymbolStale].get(), 1);
    assert_eq!(r.metrics.symbol_market_open.get(1).map(Gauge::get), Some(0));
    // Its market closes: resolved, however old the data.
    seen(&r.snapshot, 0, T0, false);
    r.eval.evaluate();
    assert!(active(&r.board).is_empty());
    let resolved = r.notices.try_recv().expect("resolved");
    assert_eq!(resolved.kind, NoticeKind::Resolved);
    assert_eq!(r.board.view().resolved.len(), 1);
    assert_eq!(r.metrics.alerts_active[AlertRule::SymbolStale].get(), 0);
}

/// Redis failures above 5 % of the window's writes, a queue above 80 %, slow and skipped
/// ticks; back under, each resolves once the window has passed.
#[tokio::test(start_paused = true)]
async fn rate_and_queue_rules_fire_above_their_thresholds_and_resolve() {
    let mut r = rig();
    let m = Arc::clone(&r.metrics);
    seen(&r.snapshot, 0, T0, false);
    seen(&r.snapshot, 1, T0, false);
    m.redis_queue_capacity.set(1_024);
    m.sqlite_queue_capacity.set(1_024);
    r.eval.evaluate();
    for _ in 0..90 {
        m.redis_write_latency.record(Duration::from_millis(1));
    }
    m.redis_errors.add(10);
    m.redis_queue_depth.set(900);
    m.sqlite_queue_depth.set(800);
    m.missed_ticks.add(4);
    for _ in 0..10 {
        m.tick_duration.record(Duration::from_millis(1_500));
    }
    tokio::time::advance(Duration::from_secs(1)).await;
    r.eval.evaluate();
    let mut a = active(&r.board);
    a.sort();
    assert_eq!(
        a,
        [
            (AlertRule::RedisErrors, "redis".to_string()),
            (AlertRule::QueueFull, "redis".to_string()),
            (AlertRule::TickSlow, "collector".to_string()),
            (AlertRule::TicksMissed, "collector".to_string()),
        ]
    );
    // Healthy again: the queues drain at once; the window forgets the rest after a minute.
    m.redis_queue_depth.set(0);
    for _ in 0..10_000 {
        m.tick_duration.record(Duration::from_millis(5));
    }
    tokio::time::advance(Duration::from_secs(1)).await;
    r.eval.evaluate();
    assert!(!active(&r.board).contains(&(AlertRule::QueueFull, "redis".to_string())));
    for _ in 0..61 {
        m.redis_write_latency.record(Duration::from_millis(1));
        m.tick_duration.record(Duration::from_millis(5));
        tokio::time::advance(Duration::from_secs(1)).await;
        r.eval.evaluate();
    }
    assert!(active(&r.board).is_empty(), "{:?}", active(&r.board));
}

#[test]
fn durations_read_as_people_say_them() {
    assert_eq!(human(850), "850 ms");
    assert_eq!(human(42_300), "42 s");
    assert_eq!(human(185_000), "3 min 5 s");
    assert_eq!(human(120_000), "2 min");
    assert_eq!(human(7_800_000), "2 h 10 min");
    assert_eq!(human(-5), "0 ms");
}
