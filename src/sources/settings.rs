/*!
Provider settings from the environment, validated once at start-up: for every provider of the
registry (`registry.rs`) its base URL (`<PROVIDER>_BASE_URL`), WebSocket URL
(`<PROVIDER>_WS_URL`), API key (`<PROVIDER>_API_KEY`, never logged), request-budget overrides
(`<PROVIDER>_RATE_PER_MINUTE`, `<PROVIDER>_RATE_PER_DAY`: a whole number or `none`) and
switches (`FINNHUB_CANDLES`), as its folder declares them with their defaults; then what every
provider shares:

| variable | default |
|---|---|
| `PROVIDER_HTTP_TIMEOUT` | `10s` (whole request, connect included) |
| `STREAM_SILENCE_TIMEOUT` | `60s` (no frame at all for this long → reconnect) |
| `STREAM_RECONNECT_MIN` / `STREAM_RECONNECT_MAX` | `500ms` / `30s` (exponential backoff, jittered) |
| `SYMBOL_MAP` | none (`symbols.rs`) |

A key that `SOURCES` needs but the environment lacks is a start-up error naming the key's
variable ([`ProviderSettings::require_keys`]). Variables are read through the leaf `env`
module, like the rest of the configuration.
*/

use std::fmt;
use std::sync::Arc;

use super::RateLimit;
use super::registry::{PROVIDERS, Provider, Switch};
use super::symbols::SymbolMap;
use crate::env::{Env, EnvError};

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

/// One provider's endpoints, key, budget and switches.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// The provider's name, as in `SOURCES`.
    pub name: &'static str,
    /// REST base URL without a trailing slash.
    pub base_url: String,
    /// WebSocket URL (providers with a push stream).
    pub ws_url: Option<String>,
    pub api_key: Option<ApiKey>,
    pub rate: RateOverride,
    /// The provider's free-tier budget, which `rate` overrides.
    pub free_tier: RateLimit,
    switches: Vec<(Switch, bool)>,
}

impl Endpoint {
    /// The budget in force: the free tier with the overrides applied.
    pub fn budget(&self) -> RateLimit {
        self.rate.apply(self.free_tier)
    }

    /// Whether the provider's switch `switch` is on.
    pub fn switch(&self, switch: Switch) -> bool {
        self.switches
            .iter()
            .find(|(s, _)| s.var == switch.var)
            .map_or(switch.default, |(_, on)| *on)
    }
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
    /// One per provider with an environment, in registry order.
    endpoints: Vec<Endpoint>,
    /// Whole-request timeout of every provider HTTP call.
    pub http_timeout_ms: u64,
    pub stream: StreamSettings,
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
        let mut s = f.debug_struct("ProviderSettings");
        for e in &self.endpoints {
            s.field(
                e.name,
                &format!(
                    "{} (key {}){}",
                    e.base_url,
                    if e.api_key.is_some() { "set" } else { "unset" },
                    e.ws_url
                        .as_deref()
                        .map(|w| format!(", ws {w}"))
                        .unwrap_or_default()
                ),
            );
        }
        s.field("http_timeout_ms", &self.http_timeout_ms)
            .field("stream", &self.stream)
            .field("symbol_map_entries", &self.symbol_map.len())
            .finish_non_exhaustive()
    }
}

impl ProviderSettings {
    /// Reads the settings through `get` (see [`ProviderSettings::from_env`]).
    ///
    /// # Errors
    /// A variable that is present but invalid, named in the error (a key's value is never put
    /// into an error).
    pub fn from_lookup(get: &dyn Fn(&str) -> Option<String>) -> Result<Self, EnvError> {
        Self::from_env(&Env::new(get))
    }

    /// Every provider's variables, as its registry entry declares them, and the shared ones.
    ///
    /// # Errors
    /// A variable that is present but invalid, named in the error.
    pub fn from_env(env: &Env<'_>) -> Result<Self, EnvError> {
        let endpoints = PROVIDERS
            .iter()
            .filter_map(|p| p.env.as_ref().map(|vars| endpoint(env, p, vars)))
            .collect::<Result<Vec<_>, _>>()?;
        let symbol_map = env
            .optional("SYMBOL_MAP", SymbolMap::parse)?
            .unwrap_or_default();
        let stream = StreamSettings {
            silence_timeout_ms: env.duration_ms(
                "STREAM_SILENCE_TIMEOUT",
                60_000,
                10,
                86_400_000,
            )?,
            reconnect_min_ms: env.duration_ms("STREAM_RECONNECT_MIN", 500, 1, 3_600_000)?,
            reconnect_max_ms: env.duration_ms("STREAM_RECONNECT_MAX", 30_000, 1, 3_600_000)?,
        };
        if stream.reconnect_max_ms < stream.reconnect_min_ms {
            return Err(EnvError::new(
                "STREAM_RECONNECT_MAX",
                format!("{}ms", stream.reconnect_max_ms),
                format!(
                    "must not be below STREAM_RECONNECT_MIN ({} ms)",
                    stream.reconnect_min_ms
                ),
            ));
        }
        Ok(Self {
            endpoints,
            http_timeout_ms: env.duration_ms("PROVIDER_HTTP_TIMEOUT", 10_000, 1, 600_000)?,
            stream,
            symbol_map,
        })
    }

    /// The settings of the provider named `name`, if it has an environment.
    pub fn endpoint(&self, name: &str) -> Option<&Endpoint> {
        self.endpoints.iter().find(|e| e.name == name)
    }

    /// Every provider's settings, in registry order.
    pub fn endpoints(&self) -> impl Iterator<Item = &Endpoint> {
        self.endpoints.iter()
    }

    /// A configured override of a source's request budget, if any, merged with the
    /// provider's free-tier default for the half that was not overridden.
    pub fn rate_limit(&self, source: &str) -> Option<RateLimit> {
        let endpoint = self.endpoint(source)?;
        endpoint.rate.is_set().then(|| endpoint.budget())
    }

    /// Sets a provider switch (e.g. `FINNHUB_CANDLES`) as its variable would; `false` when no
    /// provider has that switch.
    pub fn set_switch(&mut self, var: &str, on: bool) -> bool {
        let mut found = false;
        for (switch, value) in self.endpoints.iter_mut().flat_map(|e| &mut e.switches) {
            if switch.var == var {
                *value = on;
                found = true;
            }
        }
        found
    }

    /// Every source in `sources` whose provider needs a key has one.
    ///
    /// # Errors
    /// The first missing key, naming its variable.
    pub fn require_keys(&self, sources: &[String]) -> Result<(), EnvError> {
        for name in sources {
            let needs = PROVIDERS
                .iter()
                .find(|p| p.name == name)
                .and_then(|p| p.env.as_ref())
                .and_then(|env| env.api_key);
            let has = self.endpoint(name).is_some_and(|e| e.api_key.is_some());
            if let Some(var) = needs
                && !has
            {
                return Err(EnvError::new(
                    var,
                    "",
                    format!("SOURCES lists {name} but its API key is not set"),
                ));
            }
        }
        Ok(())
    }
}

/// One provider's settings from its variables.
fn endpoint(
    env: &Env<'_>,
    provider: &Provider,
    vars: &super::registry::ProviderEnv,
) -> Result<Endpoint, EnvError> {
    let (base_var, base_default) = vars.base_url;
    Ok(Endpoint {
        name: provider.name,
        base_url: env.url(base_var, base_default, &["http", "https"])?,
        ws_url: vars
            .ws_url
            .map(|(var, default)| env.url(var, default, &["ws", "wss"]))
            .transpose()?,
        api_key: vars
            .api_key
            .and_then(|var| env.get(var))
            .map(|k| ApiKey::new(&k)),
        rate: RateOverride {
            per_minute: env.limit(vars.per_minute)?,
            per_day: env.limit(vars.per_day)?,
        },
        free_tier: provider.free_tier,
        switches: vars
            .switches
            .iter()
            .map(|&s| Ok((s, env.boolean(s.var, s.default)?)))
            .collect::<Result<_, EnvError>>()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(vars: &[(&str, &str)]) -> Result<ProviderSettings, EnvError> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        ProviderSettings::from_lookup(&move |name| {
            vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
        })
    }

    fn endpoint<'a>(s: &'a ProviderSettings, name: &str) -> &'a Endpoint {
        s.endpoint(name).expect("a provider with an environment")
    }

    #[test]
    fn defaults_are_the_real_endpoints() {
        let s = settings(&[]).expect("defaults");
        assert_eq!(
            endpoint(&s, "yahoo").base_url,
            "https://query1.finance.yahoo.com"
        );
        assert_eq!(
            endpoint(&s, "finnhub").base_url,
            "https://finnhub.io/api/v1"
        );
        assert_eq!(
            endpoint(&s, "binance").ws_url.as_deref(),
            Some("wss://stream.binance.com:9443/ws")
        );
        assert_eq!(endpoint(&s, "yahoo").ws_url, None);
        assert_eq!(s.http_timeout_ms, 10_000);
        assert_eq!(s.rate_limit("polygon"), None);
        assert!(s.endpoint("synthetic").is_none());
        assert_eq!(s.endpoints().count(), PROVIDERS.len() - 1);
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
            ("SYMBOL_MAP", "synthetic:NAS100=NDX"),
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
        let sources = ["binance".to_string(), "polygon".to_string()];
        let err = settings(&[])
            .expect("valid")
            .require_keys(&sources)
            .expect_err("missing key");
        assert_eq!(err.var, "POLYGON_API_KEY");
        let ok = settings(&[("POLYGON_API_KEY", "k")]).expect("key set");
        ok.require_keys(&sources).expect("key set");
        let key = endpoint(&ok, "polygon")
            .api_key
            .as_ref()
            .map(ApiKey::expose);
        assert_eq!(key, Some("k"));
        // An empty key is no key.
        let empty = settings(&[("POLYGON_API_KEY", " ")]).expect("valid");
        assert!(empty.require_keys(&sources).is_err());
    }

    #[test]
    fn debug_never_shows_keys() {
        let s = settings(&[
            ("FINNHUB_API_KEY", "sekrit-finnhub"),
            ("POLYGON_API_KEY", "sekrit-polygon"),
        ])
        .expect("valid");
        let text = format!("{s:?} {:?}", endpoint(&s, "finnhub"));
        assert!(!text.contains("sekrit"), "{text}");
        assert!(text.contains("key set"), "{text}");
    }

    #[test]
    fn switches_default_and_can_be_set() {
        let candles = Switch {
            var: "FINNHUB_CANDLES",
            default: false,
        };
        let mut s = settings(&[]).expect("valid");
        assert!(!endpoint(&s, "finnhub").switch(candles));
        assert!(s.set_switch("FINNHUB_CANDLES", true));
        assert!(endpoint(&s, "finnhub").switch(candles));
        assert!(!s.set_switch("NO_SUCH_SWITCH", true));
        let s = settings(&[("FINNHUB_CANDLES", "yes")]).expect("valid");
        assert!(endpoint(&s, "finnhub").switch(candles));
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
