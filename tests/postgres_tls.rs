//! TLS to PostgreSQL (`POSTGRES_URL`'s `sslmode`, `sslrootcert`), against a server of the
//! test's own started with `ssl=on`, a certificate made in the test by the `openssl` command,
//! and TLS required for every TCP connection (tests/common/postgres.rs).

mod common;

use std::path::Path;
use std::time::Duration;

use barkeep::model::{Bar, BarRecord, Event, Features, SymbolTable, TickBatch};
use barkeep::store::postgres::PgStore;
use common::postgres::PgServer;
use common::{Sidecar, command, wait_for};

/// A password the server ignores (trust) but barkeep must never print.
const PASSWORD: &str = "tls-secret-pw-4711";

fn url(pg: &PgServer, options: &str) -> String {
    format!(
        "postgres://barkeep:{PASSWORD}@127.0.0.1:{}/postgres?{options}",
        pg.port
    )
}

fn verify(mode: &str, root: &Path) -> String {
    format!("sslmode={mode}&sslrootcert={}", root.display())
}

/// Connections of barkeep's pool that use TLS.
fn tls_connections(pg: &PgServer) -> u64 {
    pg.sql_u64(
        "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)
         WHERE s.ssl AND a.application_name = 'barkeep'",
    )
}

#[test]
fn sslmode_require_connects_over_tls_and_stores_the_bars() {
    let (pg, _) = PgServer::start_tls();
    let dir = tempfile::tempdir().expect("tempdir");
    let url = url(&pg, "sslmode=require");
    let sidecar = Sidecar::start(
        dir.path(),
        &[
            ("POSTGRES_URL", url.as_str()),
            ("SYMBOLS", "EURUSD"),
            ("TIMEFRAMES", "1s"),
            ("COLLECTION_INTERVAL", "100ms"),
            ("BATCH_WRITE_INTERVAL", "200ms"),
            ("BOOTSTRAP_ON_START", "false"),
            ("MARKET_HOURS", "*:always"),
        ],
    );
    wait_for(Duration::from_secs(20), || {
        (pg.sql_u64("SELECT count(*) FROM bars") > 0).then_some(())
    })
    .expect("bars stored over TLS");
    assert!(tls_connections(&pg) > 0, "barkeep's connections use TLS");
    let stopped = sidecar.stop_cleanly();
    assert_eq!(pg.sql_u64("SELECT count(*) FROM bars"), stopped.bars_closed);
}

fn closed(ts: i64) -> Event {
    Event::Closed {
        record: BarRecord {
            symbol: 0,
            timeframe: "1m".parse().expect("tf"),
            bar: Bar::from_price(ts, 1.0, 1.0),
            source: "synthetic",
            quality: 1.0,
        },
        features: Features {
            values: [f64::NAN; barkeep::model::FEATURE_COUNT],
        },
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_full_and_verify_ca_connect_with_the_right_root_certificate() {
    let (pg, files) = PgServer::start_tls();
    for mode in ["verify-full", "verify-ca"] {
        let store = PgStore::new(
            &url(&pg, &verify(mode, &files.ca)),
            1,
            SymbolTable::new(["EURUSD"]),
        )
        .expect("store");
        store.apply_schema().await.expect(mode);
        store.absorb(&TickBatch::new(0, vec![closed(60_000)]));
        let history = barkeep::store::history::History::Postgres(std::sync::Arc::new(store));
        history.flush().await.expect(mode);
        assert_eq!(pg.sql_u64("SELECT count(*) FROM bars"), 1, "{mode}");
    }
    // The certificate is for 127.0.0.1 and localhost: reached under another name (hostaddr
    // gives the address, the name is what TLS checks), verify-full refuses it, verify-ca does
    // not look at names.
    for (mode, connects) in [("verify-ca", true), ("verify-full", false)] {
        let url = format!(
            "postgres://barkeep@db.example.invalid:{}/postgres?hostaddr=127.0.0.1&connect_timeout=5&{}",
            pg.port,
            verify(mode, &files.ca)
        );
        let store = PgStore::new(&url, 1, SymbolTable::new(["EURUSD"])).expect("store");
        let applied = store.apply_schema().await;
        assert_eq!(applied.is_ok(), connects, "{mode}: {:?}", applied.err());
    }
}

#[test]
fn a_wrong_root_certificate_stops_the_start_naming_postgres_url_without_the_password() {
    let (pg, files) = PgServer::start_tls();
    let dir = tempfile::tempdir().expect("tempdir");
    for url in [
        url(&pg, &verify("verify-full", &files.wrong_ca)),
        url(&pg, "sslmode=disable"),
    ] {
        let out = command(
            dir.path(),
            &[
                ("POSTGRES_URL", url.as_str()),
                ("SYMBOLS", "EURUSD"),
                ("HTTP_ADDR", "127.0.0.1:0"),
                ("BOOTSTRAP_ON_START", "false"),
            ],
        )
        .arg("run")
        .output()
        .expect("barkeep");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!out.status.success(), "{url}: started: {text}");
        assert!(
            text.contains("POSTGRES_URL=postgres://barkeep:***@127.0.0.1"),
            "{text}"
        );
        assert!(!text.contains(PASSWORD), "the password is hidden: {text}");
        if url.contains("verify-full") {
            assert!(text.contains("certificate verify failed"), "{text}");
        }
    }
    assert_eq!(tls_connections(&pg), 0);
}
