/*!
The providers `SOURCES` may name, as data: one [`Provider`] description per source, each
declared in its own folder (`yahoo/mod.rs` …, `synthetic.rs`) and listed once in [`PROVIDERS`].

A description says everything the rest of barkeep needs to know about a provider: its name,
its environment (variables and their defaults), its free-tier budget, how it spells generic
symbols, and how it is built. Nothing outside a provider's folder names it: the settings
(`settings.rs`), the symbol books (`symbols.rs`), `SYMBOL_MAP` and [`super::build`] all iterate
this list.

Adding a provider: write its folder with a `pub const PROVIDER: Provider`, then add one line to
[`PROVIDERS`] (and `pub mod` in `sources/mod.rs`).
*/

use std::sync::Arc;

use super::settings::ProviderSettings;
use super::synthetic::SyntheticConfig;
use super::{RateLimit, Source, SourceError};
use super::{alphavantage, binance, finnhub, polygon, synthetic, twelvedata, yahoo};
use crate::calendar::MarketCalendar;
use crate::instrument::Instrument;
use crate::model::SymbolTable;

/// Every source `SOURCES` accepts, in the order they are documented.
pub const PROVIDERS: &[Provider] = &[
    synthetic::PROVIDER,
    yahoo::PROVIDER,
    alphavantage::PROVIDER,
    twelvedata::PROVIDER,
    polygon::PROVIDER,
    binance::PROVIDER,
    finnhub::PROVIDER,
];

/// One provider, as its folder declares it.
pub struct Provider {
    /// The name in `SOURCES` and `SYMBOL_MAP`.
    pub name: &'static str,
    /// Its environment; `None` for a source without endpoints (the simulated market).
    pub env: Option<ProviderEnv>,
    /// The budget when `<PROVIDER>_RATE_PER_MINUTE` / `_RATE_PER_DAY` do not say otherwise.
    pub free_tier: RateLimit,
    /// Its spelling of a generic symbol (`None`: not served). A source without a spelling
    /// takes the configured symbols as they are and has no `SYMBOL_MAP` entries.
    pub spell: Option<Spelling>,
    /// Builds it from the configuration.
    pub build: Builder,
}

/// A provider's symbol for an instrument, or `None` when it does not serve it.
pub type Spelling = fn(Instrument<'_>) -> Option<String>;

/// Builds a source from the configuration and the symbol table.
pub type Builder = fn(&Plan<'_>, &SymbolTable) -> Result<Arc<dyn Source>, SourceError>;

/// A provider's variables, spelled out so errors can name them, with their defaults.
pub struct ProviderEnv {
    /// `<PROVIDER>_BASE_URL` and the documented REST endpoint.
    pub base_url: (&'static str, &'static str),
    /// `<PROVIDER>_WS_URL` and the push-stream endpoint, for providers that stream.
    pub ws_url: Option<(&'static str, &'static str)>,
    /// `<PROVIDER>_API_KEY`, for providers that need a key (a start-up error when `SOURCES`
    /// lists the provider and the key is missing).
    pub api_key: Option<&'static str>,
    pub per_minute: &'static str,
    pub per_day: &'static str,
    /// On/off settings of this provider alone (`FINNHUB_CANDLES`).
    pub switches: &'static [Switch],
}

/// A provider's on/off setting and its default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Switch {
    pub var: &'static str,
    pub default: bool,
}

/// What the sources take from the configuration (`config::Config` converts into it), so that
/// `sources` does not depend on `config`: what building them needs, and the breaker settings
/// of the chain they are asked through.
#[derive(Clone, Copy)]
pub struct Plan<'a> {
    /// Source names in priority order (`SOURCES`).
    pub names: &'a [String],
    pub providers: &'a ProviderSettings,
    pub synthetic: &'a SyntheticConfig,
    /// Each symbol's trading calendar, in symbol order.
    pub calendars: &'a [MarketCalendar],
    /// Consecutive failures that open a source's breaker (`BREAKER_FAILURES`).
    pub breaker_failures: u32,
    /// How long an open breaker skips its source (`BREAKER_OPEN`).
    pub breaker_open_ms: u64,
}

/// The provider named `name` (as `SOURCES` spells it, any case).
pub fn find(name: &str) -> Option<&'static Provider> {
    PROVIDERS.iter().find(|p| p.name.eq_ignore_ascii_case(name))
}

/// The names of [`PROVIDERS`], as a constant.
pub const fn names<const N: usize>() -> [&'static str; N] {
    let mut out = [""; N];
    let mut i = 0;
    while i < N && i < PROVIDERS.len() {
        out[i] = PROVIDERS[i].name;
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_lower_case() {
        for (i, p) in PROVIDERS.iter().enumerate() {
            assert_eq!(p.name, p.name.to_ascii_lowercase());
            assert!(
                PROVIDERS[..i].iter().all(|q| q.name != p.name),
                "{} twice",
                p.name
            );
            assert_eq!(
                find(&p.name.to_ascii_uppercase()).map(|q| q.name),
                Some(p.name)
            );
        }
    }

    #[test]
    fn variables_follow_the_provider_name() {
        for p in PROVIDERS {
            let Some(env) = &p.env else { continue };
            let prefix = format!("{}_", p.name.to_ascii_uppercase());
            let mut vars = vec![env.base_url.0, env.per_minute, env.per_day];
            vars.extend(env.ws_url.map(|(v, _)| v));
            vars.extend(env.api_key);
            vars.extend(env.switches.iter().map(|s| s.var));
            for var in vars {
                assert!(var.starts_with(&prefix), "{var} of {}", p.name);
            }
        }
    }
}
