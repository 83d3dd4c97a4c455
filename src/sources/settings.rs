/*!
Provider settings from the environment, validated once at start-up: base URLs
(`<PROVIDER>_BASE_URL`), WebSocket URLs (`<PROVIDER>_WS_URL`), API keys (`<PROVIDER>_API_KEY`,
never logged), request-budget overrides (`<PROVIDER>_RATE_PER_MINUTE`, `<PROVIDER>_RATE_PER_DAY`),
the HTTP timeout, the push-stream timings and `SYMBOL_MAP` overrides.

| variable | default |
|---|---|
| `YAHOO_BASE_URL` | `https://query1.finance.yahoo.com` |
| `ALPHAVANTAGE_BASE_URL` | `https://www.alphavantage.co` |
| `TWELVEDATA_BASE_URL` | `https://api.twelvedata.com` |
| `POLYGON_BASE_URL` | `https://api.polygon.io` |
| `BINANCE_BASE_URL` | `https://api.binance.com` |
| `FINNHUB_BASE_URL` | `https://finnhub.io/api/v1` |
| `POLYGON_WS_URL` | `wss://socket.polygon.io/stocks` |
| `BINANCE_WS_URL` | `wss://stream.binance.com:9443/ws` |
| `FINNHUB_WS_URL` | `wss://ws.finnhub.io` |
| `PROVIDER_HTTP_TIMEOUT` | `10s` (whole request, connect included) |
| `STREAM_SILENCE_TIMEOUT` | `60s` (no frame at all for this long → reconnect) |
| `STREAM_RECONNECT_MIN` / `STREAM_RECONNECT_MAX` | `500ms` / `30s` (exponential backoff, jittered) |
| `FINNHUB_CANDLES` | `false` (candles are 403 on free keys; `true` declares history) |

A key that `SOURCES` needs but the environment lacks is a start-up error naming the key's
variable. Rate overrides take a whole number or `none` (no limit of that kind).
*/

use std::fmt;
use std::sync::Arc;

use super::RateLimit;
use super::symbols::{Provider, SymbolMap};
use crate::config::ConfigError;

/// An API key. Its `Debug` and `Display` never show it; only [`ApiKey::expose`] does, at the
/// one place a request is built.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(Arc<str>);

impl ApiKey {
    pub fn new(key: &str) -> Self {
        Self(Arc::from(key))
    }

    /// The secret itself, for putting into a request.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(***)")
    }
}

/// A request-budget override: `None` leaves the provider's free-tier default, `Some(None)`
/// removes that limit, `Some(Some(n))` sets it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RateOverride {
    pub per_minute: Option<Option<u32>>,
    pub per_day: Option<Option<u32>>,
}

impl RateOverride {
    pub fn is_set(&self) -> bool {
        self.per_minute.is_some() || self.per_day.is_some()
    }

    pub fn apply(&self, default: RateLimit) -> RateLimit {
        RateLimit {
            per_minute: self.per_minute.unwrap_or(default.per_minute),
            per_day: self.per_day.unwrap_or(default.per_day),
        }
    }
}

/// One provider's endpoints, key and budget override.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// REST base URL without a trailing slash.
    pub base_url: String,
    /// WebSocket URL (providers with a push stream).
    pub ws_url: Option<String>,
    pub api_key: Option<ApiKey>,
    pub rate: RateOverride,
}

/// Push-stream timings shared by every WebSocket source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamSettings {
    /// No frame (data, status or ping) for this long means the connection is dead.
    pub silence_timeout_ms: u64,
    /// First reconnect delay; doubles per failed attempt up to `reconnect_max_ms`.
    pub reconnect_min_ms: u64,
    pub reconnect_max_ms: u64,
}

/// Everything the provider sources need from the environment.
#[derive(Clone)]
pub struct ProviderSettings {
    pub yahoo: Endpoint,
    pub alphavantage: Endpoint,
    pub twelvedata: Endpoint,
    pub polygon: Endpoint,
    pub binance: Endpoint,
    pub finnhub: Endpoint,
    /// Whole-request timeout of every provider HTTP call.
    pub http_timeout_ms: u64,
    pub stream: StreamSettings,
    /// Declare Finnhub candles as history (paid plans; free keys get 403).
    pub finnhub_candles: bool,
    pub symbol_map: SymbolMap,
}

impl Default for ProviderSettings {
    fn default() -> Self {
        // The defaults are valid by construction: the look-up finds no variable at all.
        match Self::from_lookup(&|_| None) {
            Ok(settings) => settings,
            Err(e) => unreachable!("built-in provider defaults are valid: {e}"),
        }
    }
}

impl fmt::Debug for ProviderSettings {
    // Hand-written so API keys never reach a log line: only whether each is set is shown.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let endpoint = |e: &Endpoint| {
            format!(
                "{} (key {}){}",
                e.base_url,
                if e.api_key.is_some() { "set" } else { "unset" },
                e.ws_url
                    .as_deref()
                    .map(|w| format!(", ws {w}"))
                    .unwrap_or_default()
            )
        };
        f.debug_struct("ProviderSettings")
            .field("yahoo", &endpoint(&self.yahoo))
            .field("alphavantage", &endpoint(&self.alphavantage))
            .field("twelvedata", &endpoint(&self.twelvedata))
            .field("polygon", &endpoint(&self.polygon))
            .field("binance", &endpoint(&self.binance))
            .field("finnhub", &endpoint(&self.finnhub))
            .field("http_timeout_ms", &self.http_timeout_ms)
            .field("stream", &self.stream)
            .field("symbol_map_entries", &self.symbol_map.len())
            .finish_non_exhaustive()
    }
}

/// The variable names of one provider, spelled out so errors can name them (`&'static str`).
struct Vars {
    base_url: &'static str,
    ws_url: Option<(&'static str, &'static str)>,
    api_key: Option<&'static str>,
    per_minute: &'static str,
    per_day: &'static str,
    default_base: &'static str,
}

const YAHOO: Vars = Vars {
    base_url: "YAHOO_BASE_URL",
    ws_url: None,
    api_key: None,
    per_minute: "YAHOO_RATE_PER_MINUTE",
    per_day: "YAHOO_RATE_PER_DAY",
    default_base: "https://query1.finance.yahoo.com",
};
const ALPHAVANTAGE: Vars = Vars {
    base_url: "ALPHAVANTAGE_BASE_URL",
    ws_url: None,
    api_key: Some("ALPHAVANTAGE_API_KEY"),
    per_minute: "ALPHAVANTAGE_RATE_PER_MINUTE",
    per_day: "ALPHAVANTAGE_RATE_PER_DAY",
    default_base: "https://www.alphavantage.co",
};
const TWELVEDATA: Vars = Vars {
    base_url: "TWELVEDATA_BASE_URL",
    ws_url: None,
    api_key: Some("TWELVEDATA_API_KEY"),
    per_minute: "TWELVEDATA_RATE_PER_MINUTE",
    per_day: "TWELVEDATA_RATE_PER_DAY",
    default_base: "https://api.twelvedata.com",
};
const POLYGON: Vars = Vars {
    base_url: "POLYGON_BASE_URL",
    ws_url: Some(("POLYGON_WS_URL", "wss://socket.polygon.io/stocks")),
    api_key: Some("POLYGON_API_KEY"),
    per_minute: "POLYGON_RATE_PER_MINUTE",
    per_day: "POLYGON_RATE_PER_DAY",
    default_base: "https://api.polygon.io",
};
const BINANCE: Vars = Vars {
    base_url: "BINANCE_BASE_URL",
    ws_url: Some(("BINANCE_WS_URL", "wss://stream.binance.com:9443/ws")),
    api_key: None,
    per_minute: "BINANCE_RATE_PER_MINUTE",
    per_day: "BINANCE_RATE_PER_DAY",
    default_base: "https://api.binance.com",
};
const FINNHUB: Vars = Vars {
    base_url: "FINNHUB_BASE_URL",
    ws_url: Some(("FINNHUB_WS_URL", "wss://ws.finnhub.io")),
    api_key: Some("FINNHUB_API_KEY"),
    per_minute: "FINNHUB_RATE_PER_MINUTE",
    per_day: "FINNHUB_RATE_PER_DAY",
    default_base: "https://finnhub.io/api/v1",
};

impl ProviderSettings {
    /// # Errors
    /// A variable that is present but invalid, or a key that a listed source needs but is
    /// missing, named in the error (a key's value is never put into an error).
    pub fn from_lookup(get: &dyn Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let sources: Vec<String> = get("SOURCES")
            .unwrap_or_default()
            .split(',')
            .map(|s| s.trim().to_ascii_lowercase())
            .filter(|s| !s.is_empty())
            .collect();
        let endpoint = |provider: Provider, vars: &Vars| -> Result<Endpoint, ConfigError> {
            let base_url = url(get, vars.base_url, vars.default_base, &["http", "https"])?;
            let ws_url = vars
                .ws_url
                .map(|(var, default)| url(get, var, default, &["ws", "wss"]))
                .transpose()?;
            let api_key = vars.api_key.and_then(|var| {
                get(var)
                    .map(|k| k.trim().to_string())
                    .filter(|k| !k.is_empty())
                    .map(|k| ApiKey::new(&k))
            });
            if let Some(var) = vars.api_key
                && api_key.is_none()
                && sources.iter().any(|s| s == provider.name())
            {
                return Err(ConfigError {
                    var,
                    value: String::new(),
                    reason: format!(
                        "SOURCES lists {} but its API key is not set",
                        provider.name()
                    ),
                });
            }
            Ok(Endpoint {
                base_url,
                ws_url,
                api_key,
                rate: RateOverride {
                    per_minute: rate(get, vars.per_minute)?,
                    per_day: rate(get, vars.per_day)?,
                },
            })
        };
        let symbol_map = match get("SYMBOL_MAP") {
            None => SymbolMap::default(),
            Some(value) => SymbolMap::parse(&value).map_err(|reason| ConfigError {
                var: "SYMBOL_MAP",
                value: value.clone(),
                reason,
            })?,
        };
        let stream = StreamSettings {
            silence_timeout_ms: duration_ms(get, "STREAM_SILENCE_TIMEOUT", 60_000, 10, 86_400_000)?,
            reconnect_min_ms: duration_ms(get, "STREAM_RECONNECT_MIN", 500, 1, 3_600_000)?,
            reconnect_max_ms: duration_ms(get, "STREAM_RECONNECT_MAX", 30_000, 1, 3_600_000)?,
        };
        if stream.reconnect_max_ms < stream.reconnect_min_ms {
            return Err(ConfigError {
                var: "STREAM_RECONNECT_MAX",
                value: get("STREAM_RECONNECT_MAX").unwrap_or_default(),
                reason: format!(
                    "must not be below STREAM_RECONNECT_MIN ({} ms)",
                    stream.reconnect_min_ms
                ),
            });
        }
        Ok(Self {
            yahoo: endpoint(Provider::Yahoo, &YAHOO)?,
            alphavantage: endpoint(Provider::AlphaVantage, &ALPHAVANTAGE)?,
            twelvedata: endpoint(Provider::TwelveData, &TWELVEDATA)?,
            polygon: endpoint(Provider::Polygon, &POLYGON)?,
            binance: endpoint(Provider::Binance, &BINANCE)?,
            finnhub: endpoint(Provider::Finnhub, &FINNHUB)?,
            http_timeout_ms: duration_ms(get, "PROVIDER_HTTP_TIMEOUT", 10_000, 1, 600_000)?,
            stream,
            finnhub_candles: boolean(get, "FINNHUB_CANDLES", false)?,
            symbol_map,
        })
    }

    /// A provider's settings.
    pub fn endpoint(&self, provider: Provider) -> &Endpoint {
        match provider {
            Provider::Yahoo => &self.yahoo,
            Provider::AlphaVantage => &self.alphavantage,
            Provider::TwelveData => &self.twelvedata,
            Provider::Polygon => &self.polygon,
            Provider::Binance => &self.binance,
            Provider::Finnhub => &self.finnhub,
        }
    }

    /// A configured override of a source's request budget, if any, merged with the
    /// provider's free-tier default for the half that was not overridden.
    pub fn rate_limit(&self, source: &str) -> Option<RateLimit> {
        let provider = Provider::ALL.into_iter().find(|p| p.name() == source)?;
        let endpoint = self.endpoint(provider);
        endpoint
            .rate
            .is_set()
            .then(|| endpoint.rate.apply(free_tier(provider)))
    }
}

/// The documented free-tier budget of each provider (see each provider's module).
pub fn free_tier(provider: Provider) -> RateLimit {
    match provider {
        Provider::Yahoo => super::yahoo::FREE_TIER,
        Provider::AlphaVantage => super::alphavantage::FREE_TIER,
        Provider::TwelveData => super::twelvedata::FREE_TIER,
        Provider::Polygon => super::polygon::FREE_TIER,
        Provider::Binance => super::binance::FREE_TIER,
        Provider::Finnhub => super::finnhub::FREE_TIER,
    }
}

/// A base URL: parsed, with one of `schemes`, without query or fragment, trailing `/` removed.
fn url(
    get: &dyn Fn(&str) -> Option<String>,
    var: &'static str,
    default: &str,
    schemes: &[&str],
) -> Result<String, ConfigError> {
    let Some(value) = get(var) else {
        return Ok(default.to_string());
    };
    let trimmed = value.trim();
    // The value is echoed without userinfo or query: either could hold a secret.
    let shown = crate::config::redact_url(&value);
    let shown = match shown.split_once('?') {
        Some((head, _)) => format!("{head}?***"),
        None => shown,
    };
    let err = |reason: String| ConfigError {
        var,
        value: shown.clone(),
        reason,
    };
    let parsed = reqwest::Url::parse(trimmed).map_err(|e| err(format!("not a URL: {e}")))?;
    if !schemes.contains(&parsed.scheme()) {
        return Err(err(format!(
            "scheme must be {}, got `{}`",
            schemes.join(" or "),
            parsed.scheme()
        )));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(err("has no host".into()));
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(err(
            "must not carry a query or fragment (keys go in <PROVIDER>_API_KEY)".into(),
        ));
    }
    Ok(trimmed.trim_end_matches('/').to_string())
}

/// A whole number of requests, or `none` for no limit; absent = provider default.
fn rate(
    get: &dyn Fn(&str) -> Option<String>,
    var: &'static str,
) -> Result<Option<Option<u32>>, ConfigError> {
    let Some(value) = get(var) else {
        return Ok(None);
    };
    let v = value.trim();
    if v.eq_ignore_ascii_case("none") || v.eq_ignore_ascii_case("unlimited") {
        return Ok(Some(None));
    }
    match v.parse::<u32>() {
        Ok(n) if (1..=10_000_000).contains(&n) => Ok(Some(Some(n))),
        _ => Err(ConfigError {
            var,
            value,
            reason: "expected a whole number from 1 to 10000000, or `none`".into(),
        }),
    }
}

fn boolean(
    get: &dyn Fn(&str) -> Option<String>,
    var: &'static str,
    default: bool,
) -> Result<bool, ConfigError> {
    let Some(value) = get(var) else {
        return Ok(default);
    };
    match value.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" | "" => Ok(false),
        _ => Err(ConfigError {
            var,
            value,
            reason: "expected true or false".into(),
        }),
    }
}

/// A duration variable, parsed as everywhere else in barkeep (`config::parse_duration_ms`).
fn duration_ms(
    get: &dyn Fn(&str) -> Option<String>,
    var: &'static str,
    default_ms: u64,
    min_ms: u64,
    max_ms: u64,
) -> Result<u64, ConfigError> {
    let Some(value) = get(var) else {
        return Ok(default_ms);
    };
    match crate::config::parse_duration_ms(value.trim()) {
        Ok(ms) if (min_ms..=max_ms).contains(&ms) => Ok(ms),
        Ok(_) => Err(ConfigError {
            var,
            value,
            reason: format!("must be from {min_ms}ms to {max_ms}ms"),
        }),
        Err(reason) => Err(ConfigError { var, value, reason }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(vars: &[(&str, &str)]) -> Result<ProviderSettings, ConfigError> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        ProviderSettings::from_lookup(&move |name| {
            vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
        })
    }

    #[test]
    fn defaults_are_the_real_endpoints() {
        let s = settings(&[]).expect("defaults");
        assert_eq!(s.yahoo.base_url, "https://query1.finance.yahoo.com");
        assert_eq!(s.finnhub.base_url, "https://finnhub.io/api/v1");
        assert_eq!(
            s.binance.ws_url.as_deref(),
            Some("wss://stream.binance.com:9443/ws")
        );
        assert_eq!(s.http_timeout_ms, 10_000);
        assert_eq!(s.rate_limit("polygon"), None);
    }

    #[test]
    fn bad_values_name_variable_and_value() {
        for (var, value) in [
            ("YAHOO_BASE_URL", "not a url"),
            ("BINANCE_BASE_URL", "ftp://api.binance.com"),
            ("POLYGON_WS_URL", "https://socket.polygon.io"),
            ("TWELVEDATA_RATE_PER_MINUTE", "lots"),
            ("PROVIDER_HTTP_TIMEOUT", "soon"),
            ("STREAM_SILENCE_TIMEOUT", "0"),
            ("SYMBOL_MAP", "yahoo:NAS100"),
            ("SYMBOL_MAP", "bloomberg:NAS100=NDX"),
            ("FINNHUB_CANDLES", "maybe"),
        ] {
            let err = settings(&[(var, value)]).expect_err(var);
            assert_eq!(err.var, var, "{err}");
            assert_eq!(err.value, value, "{err}");
        }
    }

    #[test]
    fn a_url_with_a_query_is_refused_without_echoing_it() {
        let err = settings(&[("FINNHUB_BASE_URL", "https://finnhub.io/api/v1?token=sekrit")])
            .expect_err("query");
        assert_eq!(err.var, "FINNHUB_BASE_URL");
        assert!(!err.to_string().contains("sekrit"), "{err}");
    }

    #[test]
    fn a_listed_source_needs_its_key() {
        let err = settings(&[("SOURCES", "binance,polygon")]).expect_err("missing key");
        assert_eq!(err.var, "POLYGON_API_KEY");
        let ok = settings(&[("SOURCES", "polygon"), ("POLYGON_API_KEY", "k")]).expect("key set");
        assert_eq!(ok.polygon.api_key.as_ref().map(ApiKey::expose), Some("k"));
    }

    #[test]
    fn debug_never_shows_keys() {
        let s = settings(&[
            ("FINNHUB_API_KEY", "sekrit-finnhub"),
            ("POLYGON_API_KEY", "sekrit-polygon"),
        ])
        .expect("valid");
        let text = format!("{s:?} {:?}", s.finnhub);
        assert!(!text.contains("sekrit"), "{text}");
        assert!(text.contains("key set"), "{text}");
    }

    #[test]
    fn rate_overrides_merge_with_the_free_tier() {
        let s = settings(&[("TWELVEDATA_RATE_PER_DAY", "none")]).expect("valid");
        assert_eq!(
            s.rate_limit("twelvedata"),
            Some(RateLimit {
                per_minute: Some(8),
                per_day: None
            })
        );
        let s = settings(&[("YAHOO_RATE_PER_MINUTE", "30")]).expect("valid");
        assert_eq!(s.rate_limit("yahoo").and_then(|r| r.per_minute), Some(30));
    }
}
