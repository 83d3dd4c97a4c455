use super::*;

fn names() -> Names {
    Names {
        symbols: SymbolTable::new(["EURUSD"]),
        frames: vec!["1m".parse().expect("tf")],
        timeframes: vec!["1m".into()],
        features: std::array::from_fn(|i| format!("f{i}")),
    }
}

fn env(symbol: &std::sync::Arc<str>, seq: u64) -> Envelope<'_> {
    Envelope {
        channel: "stream:market_data:EURUSD",
        symbol,
        kind: ChannelKind::MarketData,
        timestamp: 1_000,
        vendor: Some("synthetic"),
        seq,
    }
}

#[test]
fn a_delta_carries_what_changed_and_what_it_updates() {
    let names = std::sync::Arc::new(names());
    let name: std::sync::Arc<str> = "stream:market_data:EURUSD".into();
    let symbol: std::sync::Arc<str> = "EURUSD".into();
    let first = Body::Bar {
        frame: 0,
        bar: Bar::from_price(60_000, 1.5, 1.0),
        quality: 1.0,
        forming: true,
    };
    let mut bar = Bar::from_price(60_000, 1.5, 2.0);
    bar.high = 1.6;
    bar.close = 1.6;
    let second = Body::Bar {
        frame: 0,
        bar,
        quality: 1.0,
        forming: true,
    };
    let snap = render(
        &names,
        &env(&symbol, 1),
        0,
        &name,
        1,
        first.clone(),
        None,
        true,
    );
    let json: serde_json::Value = serde_json::from_slice(snap.json()).expect("JSON");
    assert_eq!(json["update_type"], "snapshot");
    assert_eq!(json["metadata"]["worker_id"], "market_data:synthetic");
    assert_eq!(json["data"]["open"], 1.5);
    let delta = render(
        &names,
        &env(&symbol, 2),
        0,
        &name,
        2,
        second,
        Some(&first),
        true,
    );
    let json: serde_json::Value = serde_json::from_slice(delta.json()).expect("JSON");
    assert_eq!(json["update_type"], "delta");
    assert_eq!(
        json["data"],
        serde_json::json!({"timeframe": "1m", "ts": 60_000, "forming": true,
            "high": 1.6, "close": 1.6, "volume": 2.0})
    );
    let mut sse = bytes::BytesMut::new();
    delta.write_sse(&mut sse);
    let mut expected = b"id: stream:market_data:EURUSD:2\nevent: bar\ndata: ".to_vec();
    expected.extend_from_slice(delta.json());
    expected.extend_from_slice(b"\n\n");
    assert_eq!(&sse[..], &expected[..]);
    let ws: serde_json::Value = serde_json::from_str(&delta.ws_text()).expect("JSON");
    assert_eq!(ws["type"], "data");
    assert_eq!(ws["channel"], "stream:market_data:EURUSD");
    assert_eq!(ws["message"]["seq"], 2);
}
