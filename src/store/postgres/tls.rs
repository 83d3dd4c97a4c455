/*!
TLS to PostgreSQL: `POSTGRES_URL`'s `sslmode` and `sslrootcert`, read as libpq reads them, turned
into tokio-postgres's configuration and a native-tls connector (OpenSSL on Linux, the library the
Redis and WebSocket clients already use).

| `sslmode` | TLS | certificate checked |
|---|---|---|
| `disable` | never | — |
| `prefer` (the default) | when the server offers it | no |
| `require` | always | no; against `sslrootcert` when one is given (libpq does the same) |
| `verify-ca` | always | chain to a trusted root |
| `verify-full` | always | chain, and the host name (or IP) of the URL |

The trusted roots are the system's, or only `sslrootcert`'s (a PEM file, a private CA) when it
is given. tokio-postgres knows `disable`, `prefer` and `require` only: the two `verify-*` modes
reach it as `require`, the checking being the connector's.
*/

use native_tls::{Certificate, TlsConnector};
use postgres_native_tls::MakeTlsConnector;
use tokio_postgres::Config;

/// How `sslmode` asks the certificate to be checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verify {
    Nothing,
    Chain,
    ChainAndHost,
}

/// tokio-postgres's configuration and the TLS connector `url` asks for.
///
/// # Errors
/// The reason, without the URL (the caller names `POSTGRES_URL`, its password hidden): an
/// unknown `sslmode`, an `sslrootcert` that cannot be read or is not PEM, an option
/// tokio-postgres refuses.
pub fn connection(url: &str) -> Result<(Config, MakeTlsConnector), String> {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let (mut mode, mut root_cert) = ("prefer".to_string(), None);
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = percent_encoding::percent_decode_str(value)
            .decode_utf8_lossy()
            .into_owned();
        match key {
            "sslmode" => mode = value,
            "sslrootcert" => root_cert = Some(value),
            _ => kept.push(pair),
        }
    }
    let (passed, verify) = match (mode.as_str(), root_cert.is_some()) {
        ("disable", _) => ("disable", Verify::Nothing),
        ("prefer", _) => ("prefer", Verify::Nothing),
        ("require", false) => ("require", Verify::Nothing),
        ("require", true) | ("verify-ca", _) => ("require", Verify::Chain),
        ("verify-full", _) => ("require", Verify::ChainAndHost),
        (other, _) => {
            return Err(format!(
                "sslmode={other} is not one of disable, prefer, require, verify-ca, verify-full"
            ));
        }
    };
    kept.push(match passed {
        "disable" => "sslmode=disable",
        "prefer" => "sslmode=prefer",
        _ => "sslmode=require",
    });
    let rebuilt = format!("{base}?{}", kept.join("&"));
    let config: Config = rebuilt.parse().map_err(|e| format!("{e}"))?;
    let mut tls = TlsConnector::builder();
    match verify {
        Verify::Nothing => {
            tls.danger_accept_invalid_certs(true)
                .danger_accept_invalid_hostnames(true);
        }
        Verify::Chain => {
            tls.danger_accept_invalid_hostnames(true);
        }
        Verify::ChainAndHost => {}
    }
    if let Some(path) = &root_cert {
        let pem = std::fs::read(path).map_err(|e| format!("sslrootcert={path}: {e}"))?;
        let cert = Certificate::from_pem(&pem)
            .map_err(|e| format!("sslrootcert={path} is not a PEM certificate: {e}"))?;
        tls.disable_built_in_roots(true).add_root_certificate(cert);
    }
    let connector = tls
        .build()
        .map_err(|e| format!("TLS set-up for sslmode={mode}: {e}"))?;
    Ok((config, MakeTlsConnector::new(connector)))
}

#[cfg(test)]
mod tests {
    use super::connection;
    use tokio_postgres::config::SslMode;

    #[test]
    fn sslmodes_reach_tokio_postgres_as_it_knows_them() {
        for (mode, expected) in [
            ("disable", SslMode::Disable),
            ("prefer", SslMode::Prefer),
            ("require", SslMode::Require),
            ("verify-ca", SslMode::Require),
            ("verify-full", SslMode::Require),
        ] {
            let url = format!("postgres://u@h/db?connect_timeout=3&sslmode={mode}");
            let (config, _) = connection(&url).expect(mode);
            assert_eq!(config.get_ssl_mode(), expected, "{mode}");
            assert_eq!(
                config.get_connect_timeout(),
                Some(&std::time::Duration::from_secs(3))
            );
        }
        let (config, _) = connection("postgres://u@h/db").expect("no options");
        assert_eq!(config.get_ssl_mode(), SslMode::Prefer, "libpq's default");
    }

    fn refused(url: &str) -> String {
        match connection(url) {
            Ok(_) => panic!("{url} accepted"),
            Err(e) => e,
        }
    }

    #[test]
    fn a_bad_sslmode_or_root_cert_is_refused_saying_why() {
        let e = refused("postgres://u@h/db?sslmode=allow-ish");
        assert!(e.contains("sslmode=allow-ish"), "{e}");
        let e = refused("postgres://u@h/db?sslmode=verify-full&sslrootcert=/no/such.pem");
        assert!(e.contains("sslrootcert=/no/such.pem"), "{e}");
        let dir = tempfile::tempdir().expect("tempdir");
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not a certificate").expect("write");
        let url = format!(
            "postgres://u@h/db?sslmode=verify-ca&sslrootcert={}",
            junk.display()
        );
        let e = refused(&url);
        assert!(e.contains("is not a PEM certificate"), "{e}");
    }
}
