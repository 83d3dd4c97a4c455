//! The configuration parser: defaults, one variable at a time, and the cross-checks.

use super::*;

fn read(vars: &[(&str, &str)], open_files: OpenFiles) -> Result<Config, ConfigError> {
    let vars: Vec<(String, String)> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let get = move |name: &str| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    Config::read(&Env::new(&get), open_files)
}

fn cfg(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
    read(vars, OpenFiles::UNLIMITED)
}

#[test]
fn defaults_match_the_design() {
    let c = cfg(&[]).expect("defaults are valid");
    assert_eq!(c.symbols, ["NAS100", "XAUUSD", "EURUSD"]);
    assert_eq!(c.sources, ["synthetic"]);
    assert_eq!(c.timeframes, ["1m".parse::<Timeframe>().expect("valid")]);
    assert_eq!(c.collection_interval_ms, 1_000);
    assert_eq!(c.tick_deadline_ms, 800);
    assert_eq!(c.max_bars_cache, 5_000);
    assert_eq!(c.batch_write_interval_ms, 10_000);
    assert_eq!(c.feature_cache_ttl_ms, 2_000);
    assert_eq!(c.redis, None);
    assert_eq!(c.redis_key_prefix, "barkeep");
    assert_eq!(c.sqlite_path, PathBuf::from("./data/barkeep.db"));
    assert_eq!(c.http_addr.to_string(), "127.0.0.1:8000");
    assert_eq!(c.http_pool_size, 1_024);
    assert_eq!(c.log_format, LogFormat::Text);
    assert_eq!(c.log_filter, "info");
    assert_eq!(c.bootstrap_on_start, BootstrapOnStart::Background);
    assert_eq!(c.http_header_timeout_ms, 5_000);
    assert_eq!(c.http_idle_timeout_ms, 30_000);
    assert_eq!(c.http_max_connections_per_peer, 64);
}

#[test]
fn an_empty_variable_is_an_unset_one() {
    let empty = [
        "SYMBOLS",
        "SOURCES",
        "TIMEFRAMES",
        "COLLECTION_INTERVAL",
        "BOOTSTRAP_ON_START",
        "REDIS_URL",
        "REDIS_KEY_PREFIX",
        "SQLITE_PATH",
        "HTTP_ADDR",
        "LOG_FORMAT",
        "RUST_LOG",
        "MARKET_HOURS",
        "VWAP_SESSION",
        "YAHOO_BASE_URL",
        "FINNHUB_CANDLES",
        "SYMBOL_MAP",
    ];
    let vars: Vec<(&str, &str)> = empty.iter().map(|v| (*v, " ")).collect();
    let c = cfg(&vars).expect("empty = defaults");
    assert_eq!(
        format!("{c:?}"),
        format!("{:?}", cfg(&[]).expect("defaults"))
    );
    assert!(c.vwap_by_calendar);
}

#[test]
fn http_hardening_settings_are_validated() {
    let c = cfg(&[
        ("HTTP_HEADER_TIMEOUT", "750ms"),
        ("HTTP_IDLE_TIMEOUT", "2m"),
        ("HTTP_MAX_CONNECTIONS_PER_PEER", "8"),
    ])
    .expect("valid");
    assert_eq!(
        (
            c.http_header_timeout_ms,
            c.http_idle_timeout_ms,
            c.http_max_connections_per_peer
        ),
        (750, 120_000, 8)
    );
    for (var, value, hint) in [
        ("HTTP_HEADER_TIMEOUT", "0", "from 100ms"),
        ("HTTP_HEADER_TIMEOUT", "soon", "duration"),
        ("HTTP_HEADER_TIMEOUT", "11m", "600000ms"),
        ("HTTP_IDLE_TIMEOUT", "50ms", "from 100ms"),
        ("HTTP_IDLE_TIMEOUT", "2h", "3600000ms"),
        ("HTTP_MAX_CONNECTIONS_PER_PEER", "0", "from 1"),
        ("HTTP_MAX_CONNECTIONS_PER_PEER", "many", "whole number"),
    ] {
        let err = cfg(&[(var, value)]).expect_err(var);
        assert_eq!((err.var, err.value.as_str()), (var, value), "{err}");
        assert!(err.to_string().contains(hint), "{err}");
    }
}

#[test]
fn redis_passwords_are_redacted() {
    let err = cfg(&[("REDIS_URL", "http://u:pw@h")]).expect_err("bad scheme");
    assert!(!err.to_string().contains("pw"), "{err}");
}

#[test]
fn redis_cluster_nodes_are_checked_and_exclusive_with_redis_url() {
    let c = cfg(&[(
        "REDIS_CLUSTER_NODES",
        "redis://127.0.0.1:7000, redis://:pw@127.0.0.1:7001,",
    )])
    .expect("two nodes");
    assert_eq!(
        c.redis,
        Some(RedisTarget::Cluster(vec![
            "redis://127.0.0.1:7000".into(),
            "redis://:pw@127.0.0.1:7001".into()
        ]))
    );
    assert_eq!(c.redis.as_ref().map(RedisTarget::mode), Some("cluster"));
    let err = cfg(&[
        ("REDIS_URL", "redis://:secretpw@h:6379"),
        ("REDIS_CLUSTER_NODES", "redis://h:7000"),
    ])
    .expect_err("both");
    assert_eq!(err.var, "REDIS_CLUSTER_NODES");
    let text = err.to_string();
    assert!(
        text.contains("REDIS_URL") && !text.contains("secretpw"),
        "{text}"
    );
    for (bad, shown) in [
        ("redis://h:7000,unix:///tmp/r.sock", "unix:///tmp/r.sock"),
        ("redis://h:7000,h:7001", "h:7001"),
        ("redis://h:99999", "redis://h:99999"),
        ("redis://h:7000/3", "redis://h:7000/3"),
        (" , ", ","),
        ("redis://u:secretpw@h:70000", "redis://u:***@h:70000"),
    ] {
        let err = cfg(&[("REDIS_CLUSTER_NODES", bad)]).expect_err(bad);
        assert_eq!(err.var, "REDIS_CLUSTER_NODES", "{bad}");
        let text = err.to_string();
        assert!(
            text.contains(shown) && !text.contains("secretpw"),
            "{bad}: {text}"
        );
    }
}

#[test]
fn postgres_urls_are_checked_with_the_password_redacted() {
    let err = cfg(&[("POSTGRES_URL", "mysql://u:secretpw@h/db")]).expect_err("bad scheme");
    assert_eq!(err.var, "POSTGRES_URL");
    assert!(!err.to_string().contains("secretpw"), "{err}");
    let err = cfg(&[("POSTGRES_URL", "postgres://u:secretpw@h:99999/db")]).expect_err("port");
    assert!(!err.to_string().contains("secretpw"), "{err}");
    let c = cfg(&[
        (
            "POSTGRES_URL",
            "postgresql://barkeep:pw@db.internal:5433/history?connect_timeout=3",
        ),
        ("POSTGRES_POOL_SIZE", "8"),
    ])
    .expect("valid");
    assert_eq!(c.postgres_pool_size, 8);
    assert!(c.postgres_url.is_some());
    assert_eq!(
        cfg(&[]).expect("defaults").postgres_url,
        None,
        "SQLite by default"
    );
}

#[test]
fn errors_name_the_variable_and_value() {
    let cases = [
        ("COLLECTION_INTERVAL", "soon"),
        ("COLLECTION_INTERVAL", "0"),
        ("SYMBOLS", ","),
        ("SYMBOLS", "AAPL,aapl"),
        ("SYMBOLS", "A B"),
        ("SOURCES", "bloomberg"),
        ("TIMEFRAMES", "1x"),
        ("MAX_BARS_CACHE", "-5"),
        ("HTTP_ADDR", "localhost"),
        ("LOG_FORMAT", "yaml"),
        ("REDIS_URL", "localhost:6379"),
        ("MIN_QUALITY", "2"),
        ("SYNTHETIC_BAD_TICK_RATE", "NaN"),
        ("MACD_FAST", "40"),
        ("REDIS_URL", "redis://host:70000"),
        ("BOOTSTRAP_ON_START", "later"),
        ("POSTGRES_POOL_SIZE", "0"),
    ];
    for (var, value) in cases {
        let err = cfg(&[(var, value)]).expect_err(var);
        assert_eq!(err.var, var, "{err}");
        assert_eq!(err.value, value, "{err}");
        let text = err.to_string();
        assert!(text.contains(var) && text.contains(value), "{text}");
    }
}

/// Variables as (name, value) pairs.
type Vars = &'static [(&'static str, &'static str)];

/// Each case: the variables, the variable the error must name, its value as shown, and a
/// word of the reason.
const CROSS_CHECKS: &[(Vars, &str, &str, &str)] = &[
    (
        &[("TIMEFRAMES", "1m,60s")],
        "TIMEFRAMES",
        "1m,60s",
        "same as `1m`",
    ),
    (
        &[("TIMEFRAMES", "1s,5m,1s")],
        "TIMEFRAMES",
        "1s,5m,1s",
        "twice",
    ),
    (
        &[("TIMEFRAMES", "4611686018427387905s")],
        "TIMEFRAMES",
        "4611686018427387905s",
        "too long",
    ),
    (
        &[("TIMEFRAMES", "100000d")],
        "TIMEFRAMES",
        "100000d",
        "longest timeframe, 7d",
    ),
    (&[("TIMEFRAMES", "8d")], "TIMEFRAMES", "8d", "7d"),
    (
        &[("COLLECTION_INTERVAL", "1h"), ("TIMEFRAMES", "1s")],
        "COLLECTION_INTERVAL",
        "1h",
        "shortest of TIMEFRAMES (1s)",
    ),
    (
        &[("COLLECTION_INTERVAL", "2m")],
        "COLLECTION_INTERVAL",
        "2m",
        "(1m)",
    ),
    (
        &[("TICK_DEADLINE", "2s")],
        "TICK_DEADLINE",
        "2s",
        "COLLECTION_INTERVAL (1s)",
    ),
    (
        &[("COLLECTION_INTERVAL", "5m"), ("TIMEFRAMES", "1h")],
        "STALE_AFTER",
        "2m",
        "shorter than COLLECTION_INTERVAL (5m)",
    ),
    (
        &[("STALE_AFTER", "1s"), ("COLLECTION_INTERVAL", "2s")],
        "STALE_AFTER",
        "1s",
        "stale between",
    ),
    (
        &[("EMA_FAST_PERIOD", "30")],
        "EMA_FAST_PERIOD",
        "30",
        "below EMA_SLOW_PERIOD (26)",
    ),
    (
        &[("EMA_FAST_PERIOD", "26")],
        "EMA_FAST_PERIOD",
        "26",
        "below EMA_SLOW_PERIOD",
    ),
    (
        &[("MACD_FAST", "30"), ("MACD_SLOW", "20")],
        "MACD_FAST",
        "30",
        "below MACD_SLOW (20)",
    ),
    (
        &[("VWAP_OFFSET", "1d")],
        "VWAP_OFFSET",
        "1d",
        "shorter than VWAP_SESSION (1d)",
    ),
    (
        &[("VWAP_SESSION", "8h"), ("VWAP_OFFSET", "9h")],
        "VWAP_OFFSET",
        "9h",
        "VWAP_SESSION (8h)",
    ),
    (
        &[("RUST_LOG", "barkeep=loud")],
        "RUST_LOG",
        "barkeep=loud",
        "not a log filter",
    ),
    (
        &[("MARKET_HOURS", "NAS100:fx,nas100:always")],
        "MARKET_HOURS",
        "NAS100:fx,nas100:always",
        "twice",
    ),
    (
        &[("MARKET_HOURS", "NAS100:fx,*:always")],
        "MARKET_HOURS",
        "NAS100:fx,*:always",
        "must come first",
    ),
    (
        &[("SOURCES", "synthetic,polygon")],
        "POLYGON_API_KEY",
        "",
        "API key is not set",
    ),
];

#[test]
fn values_are_checked_against_each_other() {
    for (vars, var, value, hint) in CROSS_CHECKS {
        let err = cfg(vars).expect_err(var);
        assert_eq!(
            (err.var, err.value.as_str()),
            (*var, *value),
            "{vars:?}: {err}"
        );
        assert!(err.to_string().contains(hint), "{vars:?}: {err}");
    }
}

#[test]
fn consistent_neighbours_of_the_refused_values_are_accepted() {
    for vars in [
        &[("TIMEFRAMES", "1m,1h,7d")][..],
        &[
            ("TIMEFRAMES", "1s"),
            ("COLLECTION_INTERVAL", "1s"),
            ("TICK_DEADLINE", "1s"),
        ],
        &[
            ("COLLECTION_INTERVAL", "2m"),
            ("TIMEFRAMES", "5m"),
            ("STALE_AFTER", "2m"),
        ],
        &[("EMA_FAST_PERIOD", "25")],
        &[("VWAP_SESSION", "8h"), ("VWAP_OFFSET", "7h")],
        &[("RUST_LOG", "warn,barkeep=debug")],
        &[("MARKET_HOURS", "*:always,NAS100:cme_index")],
    ] {
        cfg(vars).unwrap_or_else(|e| panic!("{vars:?}: {e}"));
    }
}

#[test]
fn the_http_pool_must_fit_the_open_files_limit() {
    let limit = |hard| OpenFiles {
        soft: Some(256),
        hard: Some(hard),
    };
    // 64 + MAX_CONCURRENCY (64) + REDIS_POOL_SIZE (4) = 132 besides the pool.
    let err = read(&[("HTTP_POOL_SIZE", "1000")], limit(1_024)).expect_err("over the limit");
    assert_eq!((err.var, err.value.as_str()), ("HTTP_POOL_SIZE", "1000"));
    assert!(
        err.reason.contains("hard limit (RLIMIT_NOFILE) of 1024"),
        "{err}"
    );
    assert!(err.reason.contains("at most 892"), "{err}");
    let c = read(&[("HTTP_POOL_SIZE", "892")], limit(1_024)).expect("fits");
    assert_eq!(c.open_files_needed(), 1_024);
    // Unset, the pool shrinks to fit instead.
    assert_eq!(read(&[], limit(1_024)).expect("fits").http_pool_size, 892);
    assert_eq!(
        read(&[], limit(65_536)).expect("fits").http_pool_size,
        1_024
    );
    let err = read(&[], limit(100)).expect_err("no room at all");
    assert_eq!((err.var, err.value.as_str()), ("HTTP_POOL_SIZE", "1"));
}

#[test]
fn bootstrap_on_start_takes_booleans_and_background() {
    for (value, want) in [
        ("background", BootstrapOnStart::Background),
        ("TRUE", BootstrapOnStart::Before),
        ("on", BootstrapOnStart::Before),
        ("0", BootstrapOnStart::Off),
        ("off", BootstrapOnStart::Off),
        ("", BootstrapOnStart::Background),
    ] {
        let c = cfg(&[("BOOTSTRAP_ON_START", value)]).expect(value);
        assert_eq!(c.bootstrap_on_start, want, "{value}");
    }
}

#[test]
fn sources_are_planned_from_the_registry() {
    let c = cfg(&[("SOURCES", "binance,synthetic"), ("SYMBOLS", "BTCUSD")]).expect("valid");
    let plan = crate::sources::Plan::from(&c);
    assert_eq!(plan.names, ["binance", "synthetic"]);
    assert!(plan.providers.endpoint("binance").is_some());
    let built = crate::sources::build(&c, &crate::model::SymbolTable::new(["BTCUSD"]));
    let names: Vec<&str> = built.iter().map(|s| s.name()).collect();
    assert_eq!(names, ["binance", "synthetic"]);
}

#[test]
fn the_stream_replay_default_keeps_all_channels_within_a_total() {
    let replay = |symbols: usize| {
        let list: Vec<String> = (0..symbols).map(|i| format!("S{i}")).collect();
        let list = list.join(",");
        Config::from_lookup(|name| (name == "SYMBOLS").then(|| list.clone()))
            .expect("config")
            .stream_replay
    };
    assert_eq!(replay(3), 1_000);
    assert_eq!(replay(50), 1_000);
    assert_eq!(replay(1_000), 50);
    assert_eq!(replay(10_000), 10);
    let set = Config::from_lookup(|name| match name {
        "SYMBOLS" => Some("A,B".into()),
        "STREAM_REPLAY" => Some("5000".into()),
        _ => None,
    })
    .expect("config");
    assert_eq!(set.stream_replay, 5_000, "a value given wins");
}

#[test]
fn api_token_is_checked_and_never_quoted() {
    assert!(cfg(&[]).expect("valid").api_token.is_none());
    assert!(
        cfg(&[("API_TOKEN", "  ")])
            .expect("empty is unset")
            .api_token
            .is_none()
    );
    let token = "0123456789abcdef";
    let c = cfg(&[("API_TOKEN", token)]).expect("16 characters");
    assert_eq!(c.api_token.as_ref().map(|t| t.expose()), Some(token));
    for bad in [
        "short-secret",
        "has a space in the middle",
        "naïve-token-0123456789",
    ] {
        let e = cfg(&[("API_TOKEN", bad)]).expect_err(bad);
        assert_eq!(e.var, "API_TOKEN");
        assert!(!e.to_string().contains(bad), "{e}");
    }
}

#[test]
fn the_redis_stream_length_defaults_to_a_total_budget_and_is_validated() {
    let maxlen = |symbols: usize, given: Option<&str>| {
        let list: Vec<String> = (0..symbols).map(|i| format!("S{i}")).collect();
        let list = list.join(",");
        let given = given.map(str::to_string);
        Config::from_lookup(|name| match name {
            "SYMBOLS" => Some(list.clone()),
            "REDIS_STREAM_MAXLEN" => given.clone(),
            _ => None,
        })
        .map(|c| c.redis_stream_maxlen)
    };
    assert_eq!(maxlen(3, None).expect("config"), 1_000);
    assert_eq!(maxlen(1_000, None).expect("config"), 100);
    assert_eq!(maxlen(10_000, None).expect("config"), 10);
    assert_eq!(maxlen(3, Some("0")).expect("off"), 0);
    assert_eq!(maxlen(3, Some("")).expect("empty = unset"), 1_000);
    for bad in ["-1", "many", "2000000"] {
        let e = maxlen(3, Some(bad)).expect_err(bad).to_string();
        assert!(e.contains("REDIS_STREAM_MAXLEN") && e.contains(bad), "{e}");
    }
}

#[test]
fn redis_pubsub_is_on_unless_turned_off_and_a_bad_value_is_named() {
    let pubsub = |given: &'static str| {
        Config::from_lookup(|name| (name == "REDIS_PUBSUB").then(|| given.to_string()))
            .map(|c| c.redis_pubsub)
    };
    assert!(pubsub("").expect("empty = unset"));
    assert!(!pubsub("false").expect("off"));
    let e = pubsub("nope").expect_err("bad").to_string();
    assert!(e.contains("REDIS_PUBSUB") && e.contains("nope"), "{e}");
}
