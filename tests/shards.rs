//! `SHARD=i/N`: instances given the same symbols split them, disjointly and completely, and say
//! which part they have.

mod common;

use std::collections::BTreeSet;

use barkeep::config::Config;
use common::{config_of, get_json, in_process};

fn symbols(n: usize) -> String {
    (0..n)
        .map(|i| format!("SYM{i:03}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn shard(index: u32, count: u32, symbols: &str) -> Result<Config, barkeep::config::ConfigError> {
    let shard = format!("{index}/{count}");
    Config::from_lookup(|name| match name {
        "SYMBOLS" => Some(symbols.to_string()),
        "SHARD" => Some(shard.clone()),
        "MARKET_HOURS" => symbols
            .contains("SYM007")
            .then(|| "SYM007:us_equity".into()),
        _ => None,
    })
}

#[test]
fn two_shards_of_the_same_100_symbols_own_disjoint_halves_whose_union_is_all() {
    let all = symbols(100);
    let zero = shard(0, 2, &all).expect("shard 0");
    let one = shard(1, 2, &all).expect("shard 1");
    let a: BTreeSet<&String> = zero.symbols.iter().collect();
    let b: BTreeSet<&String> = one.symbols.iter().collect();
    assert!(
        a.is_disjoint(&b),
        "{:?}",
        a.intersection(&b).collect::<Vec<_>>()
    );
    assert_eq!(a.len() + b.len(), 100);
    assert!(
        (30..70).contains(&a.len()),
        "a fair split: {} and {}",
        a.len(),
        b.len()
    );
    assert_eq!(
        (zero.configured_symbols, one.configured_symbols),
        (100, 100)
    );
    // Each keeps its own symbols' calendars: SYM007's goes with SYM007.
    for config in [&zero, &one] {
        assert_eq!(config.calendars.len(), config.symbols.len());
        if let Some(i) = config.symbols.iter().position(|s| s == "SYM007") {
            assert_eq!(config.calendars[i].name(), "us_equity");
        }
    }
    // Three shards: what moves goes to the new one only.
    let three: Vec<Config> = (0..3).map(|i| shard(i, 3, &all).expect("shard")).collect();
    for (i, config) in three.iter().enumerate().take(2) {
        let old = if i == 0 { &a } else { &b };
        assert!(
            config.symbols.iter().all(|s| old.contains(s)),
            "shard {i} of 3 took a symbol from the other old shard"
        );
    }
}

#[test]
fn a_bad_or_empty_shard_is_refused_naming_the_variable() {
    for bad in ["2/2", "x", "0/0"] {
        let e =
            Config::from_lookup(|name| (name == "SHARD").then(|| bad.to_string())).expect_err(bad);
        assert!(e.to_string().contains("SHARD"), "{e}");
    }
    // One symbol, 64 shards: most own nothing, and say so.
    let empty = (0..64)
        .find_map(|i| shard(i, 64, "EURUSD").err())
        .expect("a shard that owns none");
    assert!(empty.to_string().contains("owns none"), "{empty}");
}

#[test]
fn health_and_metrics_say_which_shard_and_how_many_symbols() {
    let all = symbols(20);
    let config = config_of(&[
        ("SYMBOLS", all.clone()),
        ("SHARD", "1/3".into()),
        ("BOOTSTRAP_ON_START", "false".into()),
    ]);
    let owned = config.symbols.len() as i64;
    let (health, metrics) = in_process(config, barkeep::clock::Clock::System, |addr| {
        (
            get_json(addr, "/health").1,
            get_json(addr, "/metrics/json").1,
        )
    });
    assert_eq!(health["shard"]["index"], 1);
    assert_eq!(health["shard"]["count"], 3);
    assert_eq!(health["shard"]["symbols"], owned);
    assert_eq!(health["symbols_total"], owned);
    assert_eq!(metrics["gauges"]["shards"], 3);
    assert_eq!(metrics["gauges"]["symbols"], owned);
}
