//! The run-time control API (`/streaming/config/…`, issue 12) against the real sidecar: who may
//! change things (`API_TOKEN`, loopback), bounded and validated bodies.

mod common;

use std::net::{IpAddr, SocketAddr};

use common::{config_of, in_process, in_process_on, send};

const TOKEN: &str = "control-test-token-8d1f3a";

fn vars(dir: &std::path::Path, extra: &[(&'static str, &str)]) -> Vec<(&'static str, String)> {
    let mut vars: Vec<(&'static str, String)> = vec![
        (
            "SQLITE_PATH",
            dir.join("c.db").to_str().expect("utf-8").to_string(),
        ),
        ("SYMBOLS", "EURUSD".into()),
        ("TIMEFRAMES", "1s".into()),
        ("MARKET_HOURS", "*:always".into()),
        ("BOOTSTRAP_ON_START", "false".into()),
        ("WARMUP_BARS", "0".into()),
    ];
    vars.extend(extra.iter().map(|(k, v)| (*k, (*v).to_string())));
    vars
}

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

/// A change that passes the access rule, on a path that exists.
const CHANGE: (&str, &str) = ("POST", "/streaming/config/workers/stop-all");

#[test]
fn with_api_token_set_a_change_needs_the_bearer_token() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config_of(&vars(dir.path(), &[("API_TOKEN", TOKEN)]));
    in_process(config, barkeep::clock::Clock::System, |addr| {
        let (method, path) = CHANGE;
        let (status, body) = send(addr, method, path, &[], None);
        assert_eq!(status, 401, "{body}");
        assert_eq!(json(&body)["error"], "unauthorized", "{body}");
        let wrong = format!("Bearer {TOKEN}0");
        let (status, body) = send(addr, method, path, &[("Authorization", &wrong)], None);
        assert_eq!(status, 401, "{body}");
        assert!(
            !body.contains(TOKEN),
            "the answer never shows the token: {body}"
        );
        let right = format!("Bearer {TOKEN}");
        let (status, body) = send(addr, method, path, &[("Authorization", &right)], None);
        assert!(status != 401 && status != 403, "{status} {body}");
        // Reads need no token.
        let (status, body) = send(addr, "GET", "/streaming/config/workers", &[], None);
        assert!(status != 401 && status != 403, "{status} {body}");
    });
}

#[test]
fn an_oversized_body_is_a_413_before_it_is_read() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config_of(&vars(dir.path(), &[]));
    in_process(config, barkeep::clock::Clock::System, |addr| {
        let big = "x".repeat(barkeep::api::access::MAX_BODY_BYTES + 1);
        let (status, body) = send(
            addr,
            "PUT",
            "/streaming/config/cadences/market_data",
            &[("Content-Type", "application/json")],
            Some(&big),
        );
        assert_eq!(status, 413, "{body}");
        assert_eq!(json(&body)["error"], "payload_too_large", "{body}");
    });
}

/// An address of this machine other than loopback (the one its default route leaves from).
fn outside_address() -> Option<IpAddr> {
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    // No packet is sent: connecting a UDP socket only picks the route and its source address.
    socket.connect("203.0.113.1:9").ok()?;
    let ip = socket.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
}

#[test]
fn without_api_token_a_change_from_another_address_is_forbidden() {
    let Some(outside) = outside_address() else {
        // The decision itself is covered by api::access's unit tests.
        eprintln!("skipped: this machine has no address besides loopback");
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config_of(&vars(dir.path(), &[]));
    in_process_on(
        "0.0.0.0:0",
        config,
        barkeep::clock::Clock::System,
        move |addr| {
            let (method, path) = CHANGE;
            let from_outside = SocketAddr::new(outside, addr.port());
            let (status, body) = send(from_outside, method, path, &[], None);
            assert_eq!(status, 403, "{body}");
            assert_eq!(json(&body)["error"], "forbidden", "{body}");
            let token = format!("Bearer {TOKEN}");
            let (status, _) = send(
                from_outside,
                method,
                path,
                &[("Authorization", &token)],
                None,
            );
            assert_eq!(status, 403, "a token nobody configured opens nothing");
            let (status, body) = send(from_outside, "GET", "/streaming/config/workers", &[], None);
            assert!(status != 403, "reads are open: {status} {body}");
            let loopback = SocketAddr::from(([127, 0, 0, 1], addr.port()));
            let (status, body) = send(loopback, method, path, &[], None);
            assert!(status != 401 && status != 403, "{status} {body}");
        },
    );
}
