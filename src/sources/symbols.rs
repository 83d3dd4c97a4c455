/*!
Generic symbols (`NAS100`, `XAUUSD`, `EURUSD`, `BTCUSD`, `AAPL`) → each provider's own symbol,
and back.

A generic symbol is first looked up in `SYMBOL_MAP`, then classified: a known index (a small
built-in table), a currency pair (two ISO codes), a metal against a currency (`XAU`, `XAG`,
`XPT`, `XPD`), a crypto pair (a known coin against a fiat or stable coin; `BTC/USD` with a
slash works too) or else a plain ticker that maps to itself. Each provider then spells the class
its own way:

| generic | yahoo | twelvedata | polygon | binance | finnhub | alphavantage |
|---|---|---|---|---|---|---|
| `NAS100` | `^NDX` | `NDX` | `I:NDX` | – | – | – |
| `XAUUSD` | `GC=F` (futures) | `XAU/USD` | `C:XAUUSD` | – | `OANDA:XAU_USD` | `XAU/USD` |
| `EURUSD` | `EURUSD=X` | `EUR/USD` | `C:EURUSD` | – | `OANDA:EUR_USD` | `EUR/USD` |
| `BTCUSD` | `BTC-USD` | `BTC/USD` | `X:BTCUSD` | `BTCUSDT` | `BINANCE:BTCUSDT` | `BTC/USD` |
| `AAPL` | `AAPL` | `AAPL` | `AAPL` | – | `AAPL` | `AAPL` |

(– = not served: that source's `supports()` answers false and the collector uses the next.)

`SYMBOL_MAP` overrides the table: comma-separated `provider:GENERIC=PROVIDER_SYMBOL` entries,
e.g. `SYMBOL_MAP=yahoo:NAS100=^NDX,binance:BTCUSD=BTCFDUSD,finnhub:XAUUSD=-`. The provider
symbol is everything after the first `=` (so `yahoo:XAUUSD=GC=F` works); `-` means "this
provider does not serve that symbol".
*/

use std::collections::HashMap;
use std::sync::Arc;

use crate::model::{SymbolId, SymbolTable};

/// The providers with a symbol vocabulary of their own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Provider {
    Yahoo,
    AlphaVantage,
    TwelveData,
    Polygon,
    Binance,
    Finnhub,
}

impl Provider {
    pub const ALL: [Self; 6] = [
        Self::Yahoo,
        Self::AlphaVantage,
        Self::TwelveData,
        Self::Polygon,
        Self::Binance,
        Self::Finnhub,
    ];

    /// The source name, as in `SOURCES`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Yahoo => "yahoo",
            Self::AlphaVantage => "alphavantage",
            Self::TwelveData => "twelvedata",
            Self::Polygon => "polygon",
            Self::Binance => "binance",
            Self::Finnhub => "finnhub",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|p| p.name().eq_ignore_ascii_case(name))
    }
}

/// What a generic symbol stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Instrument<'a> {
    Index(&'static IndexNames),
    /// A currency pair or a metal priced in a currency.
    Fx {
        base: &'a str,
        quote: &'a str,
    },
    Crypto {
        base: &'a str,
        quote: &'a str,
    },
    /// A ticker that every provider spells the same way.
    Equity(&'a str),
}

/// An index under its generic aliases and each provider's name for it.
#[derive(Debug, PartialEq, Eq)]
pub struct IndexNames {
    aliases: &'static [&'static str],
    yahoo: &'static str,
    twelvedata: Option<&'static str>,
    polygon: Option<&'static str>,
}

impl IndexNames {
    /// Yahoo's name for the index, which also tells which market it is (`^GDAXI` …).
    pub fn yahoo(&self) -> &'static str {
        self.yahoo
    }
}

const INDICES: &[IndexNames] = &[
    IndexNames {
        aliases: &["NAS100", "US100", "NDX"],
        yahoo: "^NDX",
        twelvedata: Some("NDX"),
        polygon: Some("I:NDX"),
    },
    IndexNames {
        aliases: &["SPX500", "US500", "SPX"],
        yahoo: "^GSPC",
        twelvedata: Some("SPX"),
        polygon: Some("I:SPX"),
    },
    IndexNames {
        aliases: &["US30", "DJ30", "DJI"],
        yahoo: "^DJI",
        twelvedata: Some("DJI"),
        polygon: Some("I:DJI"),
    },
    IndexNames {
        aliases: &["VIX"],
        yahoo: "^VIX",
        twelvedata: None,
        polygon: Some("I:VIX"),
    },
    IndexNames {
        aliases: &["GER40", "DE40", "DAX"],
        yahoo: "^GDAXI",
        twelvedata: None,
        polygon: None,
    },
    IndexNames {
        aliases: &["UK100", "FTSE"],
        yahoo: "^FTSE",
        twelvedata: None,
        polygon: None,
    },
    IndexNames {
        aliases: &["JP225", "NIKKEI"],
        yahoo: "^N225",
        twelvedata: None,
        polygon: None,
    },
];

const FIAT: &[&str] = &[
    "USD", "EUR", "GBP", "JPY", "CHF", "AUD", "NZD", "CAD", "SEK", "NOK", "DKK", "PLN", "HUF",
    "CZK", "TRY", "ZAR", "MXN", "SGD", "HKD", "CNH", "CNY", "INR", "KRW", "BRL", "ILS", "THB",
];
const METALS: &[&str] = &["XAU", "XAG", "XPT", "XPD"];
const COINS: &[&str] = &[
    "BTC", "ETH", "SOL", "XRP", "ADA", "DOGE", "BNB", "LTC", "DOT", "AVAX", "LINK", "MATIC", "POL",
    "TRX", "BCH", "XLM", "ATOM", "UNI", "SHIB", "TON", "NEAR", "ETC", "FIL", "APT", "ARB", "OP",
    "SUI", "PEPE",
];
/// What coins are quoted in: stable coins, majors, fiat.
const COIN_QUOTES: &[&str] = &[
    "USDT", "USDC", "FDUSD", "BUSD", "USD", "EUR", "GBP", "JPY", "TRY", "BTC", "ETH", "BNB",
];

/// Classifies a generic symbol (upper case, as `SYMBOLS` delivers it).
pub fn classify(generic: &str) -> Instrument<'_> {
    if let Some(index) = INDICES.iter().find(|i| i.aliases.contains(&generic)) {
        return Instrument::Index(index);
    }
    let (base, quote) = match generic.split_once('/') {
        Some(pair) => pair,
        None => {
            // A coin prefix leaves a known quote, e.g. BTC|USDT; longest coin first (DOGE vs DOG…).
            let coin = COINS
                .iter()
                .filter(|c| generic.starts_with(**c))
                .max_by_key(|c| c.len());
            match coin {
                Some(c) if COIN_QUOTES.contains(&&generic[c.len()..]) => generic.split_at(c.len()),
                _ if generic.len() == 6 && generic.is_char_boundary(3) => generic.split_at(3),
                _ => return Instrument::Equity(generic),
            }
        }
    };
    if COINS.contains(&base) && COIN_QUOTES.contains(&quote) {
        Instrument::Crypto { base, quote }
    } else if (FIAT.contains(&base) || METALS.contains(&base)) && FIAT.contains(&quote) {
        Instrument::Fx { base, quote }
    } else {
        Instrument::Equity(generic)
    }
}

/// The built-in provider symbol for a generic symbol; `None` when the provider does not serve
/// that kind of instrument.
pub fn builtin(provider: Provider, generic: &str) -> Option<String> {
    // USD-quoted coins trade against USDT on Binance (and Finnhub's Binance feed).
    let tether = |q: &str| {
        if q == "USD" {
            "USDT".to_string()
        } else {
            q.to_string()
        }
    };
    match (provider, classify(generic)) {
        (_, Instrument::Equity(t)) if provider != Provider::Binance => Some(t.to_string()),
        (Provider::Binance, Instrument::Crypto { base, quote }) => {
            Some(format!("{base}{}", tether(quote)))
        }
        (Provider::Binance, _) => None,

        (Provider::Yahoo, Instrument::Index(i)) => Some(i.yahoo.to_string()),
        (Provider::TwelveData, Instrument::Index(i)) => i.twelvedata.map(str::to_string),
        (Provider::Polygon, Instrument::Index(i)) => i.polygon.map(str::to_string),
        (Provider::Finnhub | Provider::AlphaVantage, Instrument::Index(_)) => None,

        (Provider::Yahoo, Instrument::Fx { base, quote }) => match (base, quote) {
            // Yahoo has no spot metals; the front-month futures are the usual stand-in.
            ("XAU", "USD") => Some("GC=F".into()),
            ("XAG", "USD") => Some("SI=F".into()),
            ("XPT", "USD") => Some("PL=F".into()),
            ("XPD", "USD") => Some("PA=F".into()),
            _ if METALS.contains(&base) => None,
            _ => Some(format!("{base}{quote}=X")),
        },
        (Provider::Yahoo, Instrument::Crypto { base, quote }) => Some(format!("{base}-{quote}")),
        (
            Provider::TwelveData | Provider::AlphaVantage,
            Instrument::Fx { base, quote } | Instrument::Crypto { base, quote },
        ) => Some(format!("{base}/{quote}")),
        (Provider::Polygon, Instrument::Fx { base, quote }) => Some(format!("C:{base}{quote}")),
        (Provider::Polygon, Instrument::Crypto { base, quote }) => Some(format!("X:{base}{quote}")),
        (Provider::Finnhub, Instrument::Fx { base, quote }) => {
            Some(format!("OANDA:{base}_{quote}"))
        }
        (Provider::Finnhub, Instrument::Crypto { base, quote }) => {
            Some(format!("BINANCE:{base}{}", tether(quote)))
        }
        (_, Instrument::Equity(_)) => None,
    }
}

/// `SYMBOL_MAP` overrides: (provider, generic) → provider symbol, or `None` for "not served".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SymbolMap {
    entries: HashMap<(Provider, String), Option<String>>,
}

impl SymbolMap {
    /// Parses `provider:GENERIC=PROVIDER_SYMBOL[,…]`.
    ///
    /// # Errors
    /// The first malformed entry, quoted, with what was expected.
    pub fn parse(value: &str) -> Result<Self, String> {
        let mut entries = HashMap::new();
        for entry in value.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let shape = || {
                format!(
                    "entry `{entry}` should look like provider:GENERIC=PROVIDER_SYMBOL, \
                     e.g. yahoo:NAS100=^NDX (PROVIDER_SYMBOL `-` = not served)"
                )
            };
            let (provider, rest) = entry.split_once(':').ok_or_else(shape)?;
            let (generic, symbol) = rest.split_once('=').ok_or_else(shape)?;
            let (generic, symbol) = (generic.trim(), symbol.trim());
            if generic.is_empty() || symbol.is_empty() || symbol.contains(char::is_whitespace) {
                return Err(shape());
            }
            let provider = Provider::from_name(provider.trim()).ok_or_else(|| {
                format!(
                    "entry `{entry}`: unknown provider `{}`; known: {}",
                    provider.trim(),
                    Provider::ALL.map(Provider::name).join(", ")
                )
            })?;
            let symbol = (symbol != "-").then(|| symbol.to_string());
            if entries
                .insert((provider, generic.to_ascii_uppercase()), symbol)
                .is_some()
            {
                return Err(format!("entry `{entry}`: {generic} is mapped twice"));
            }
        }
        Ok(Self { entries })
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The provider symbol for a generic one: the override if any, else the built-in table.
    pub fn resolve(&self, provider: Provider, generic: &str) -> Option<String> {
        match self.entries.get(&(provider, generic.to_ascii_uppercase())) {
            Some(over) => over.clone(),
            None => builtin(provider, &generic.to_ascii_uppercase()),
        }
    }
}

/// One source's view of the configured symbols: id → provider symbol and back.
#[derive(Debug, Clone)]
pub struct SymbolBook {
    generic: Vec<Arc<str>>,
    forward: Vec<Option<Arc<str>>>,
    /// Upper-cased provider symbol → every configured id that maps to it.
    reverse: HashMap<String, Vec<SymbolId>>,
}

impl SymbolBook {
    pub fn new(provider: Provider, symbols: &SymbolTable, map: &SymbolMap) -> Self {
        let mut reverse: HashMap<String, Vec<SymbolId>> = HashMap::new();
        let mut generic = Vec::with_capacity(symbols.len());
        let mut forward = Vec::with_capacity(symbols.len());
        for (id, name) in symbols.iter() {
            let mapped = map.resolve(provider, name);
            if let Some(p) = &mapped {
                reverse.entry(p.to_ascii_uppercase()).or_default().push(id);
            }
            generic.push(Arc::clone(name));
            forward.push(mapped.map(Arc::from));
        }
        Self {
            generic,
            forward,
            reverse,
        }
    }

    /// The provider's symbol for a configured id, if it serves it.
    pub fn provider_symbol(&self, id: SymbolId) -> Option<&str> {
        self.forward.get(id as usize)?.as_deref()
    }

    /// The generic name, for messages; `#id` for an id that is not configured.
    pub fn generic(&self, id: SymbolId) -> String {
        self.generic
            .get(id as usize)
            .map_or_else(|| format!("#{id}"), ToString::to_string)
    }

    /// The configured ids a provider symbol stands for (case-insensitive).
    pub fn ids(&self, provider_symbol: &str) -> &[SymbolId] {
        self.reverse
            .get(&provider_symbol.to_ascii_uppercase())
            .map_or(&[], Vec::as_slice)
    }

    /// The ids among `wanted` that a provider symbol in an answer stands for (several configured
    /// ids may map to one provider symbol; an answer may name one nobody asked for).
    pub fn wanted_ids<'a>(
        &'a self,
        provider_symbol: &str,
        wanted: &'a [SymbolId],
    ) -> impl Iterator<Item = SymbolId> + 'a {
        self.ids(provider_symbol)
            .iter()
            .copied()
            .filter(move |id| wanted.contains(id))
    }

    pub fn supports(&self, id: SymbolId) -> bool {
        self.provider_symbol(id).is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_table_matches_the_providers() {
        let cases = [
            (Provider::Yahoo, "NAS100", Some("^NDX")),
            (Provider::Yahoo, "XAUUSD", Some("GC=F")),
            (Provider::Yahoo, "EURUSD", Some("EURUSD=X")),
            (Provider::Yahoo, "BTCUSD", Some("BTC-USD")),
            (Provider::Yahoo, "AAPL", Some("AAPL")),
            (Provider::TwelveData, "XAUUSD", Some("XAU/USD")),
            (Provider::TwelveData, "EURUSD", Some("EUR/USD")),
            (Provider::TwelveData, "BTCUSD", Some("BTC/USD")),
            (Provider::Binance, "BTCUSD", Some("BTCUSDT")),
            (Provider::Binance, "ETHBTC", Some("ETHBTC")),
            (Provider::Binance, "DOGEUSDT", Some("DOGEUSDT")),
            (Provider::Binance, "EURUSD", None),
            (Provider::Binance, "AAPL", None),
            (Provider::Binance, "NAS100", None),
            (Provider::Polygon, "BTCUSD", Some("X:BTCUSD")),
            (Provider::Polygon, "EURUSD", Some("C:EURUSD")),
            (Provider::Polygon, "NAS100", Some("I:NDX")),
            (Provider::Finnhub, "EURUSD", Some("OANDA:EUR_USD")),
            (Provider::Finnhub, "BTCUSD", Some("BINANCE:BTCUSDT")),
            (Provider::Finnhub, "NAS100", None),
            (Provider::AlphaVantage, "EURUSD", Some("EUR/USD")),
            (Provider::AlphaVantage, "MSFT", Some("MSFT")),
            (Provider::TwelveData, "EUR/USD", Some("EUR/USD")),
        ];
        for (provider, generic, want) in cases {
            assert_eq!(
                builtin(provider, generic).as_deref(),
                want,
                "{provider:?} {generic}"
            );
        }
    }

    #[test]
    fn overrides_win_and_dash_means_not_served() {
        let map = SymbolMap::parse("yahoo:xauusd=XAUUSD=X, binance:BTCUSD=BTCFDUSD,finnhub:AAPL=-")
            .expect("valid");
        assert_eq!(map.len(), 3);
        assert_eq!(
            map.resolve(Provider::Yahoo, "XAUUSD").as_deref(),
            Some("XAUUSD=X")
        );
        assert_eq!(
            map.resolve(Provider::Binance, "BTCUSD").as_deref(),
            Some("BTCFDUSD")
        );
        assert_eq!(map.resolve(Provider::Finnhub, "AAPL"), None);
        assert_eq!(
            map.resolve(Provider::Yahoo, "AAPL").as_deref(),
            Some("AAPL")
        );
    }

    #[test]
    fn malformed_maps_are_refused() {
        for bad in [
            "yahoo:NAS100",
            "NAS100=^NDX",
            "bloomberg:NAS100=NDX",
            "yahoo:=^NDX",
            "yahoo:NAS100=",
            "yahoo:A=B,yahoo:a=C",
        ] {
            assert!(SymbolMap::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_book_maps_both_ways() {
        let table = SymbolTable::new(["NAS100", "BTCUSD", "EURUSD", "NDX"]);
        let book = SymbolBook::new(Provider::Yahoo, &table, &SymbolMap::default());
        assert_eq!(book.provider_symbol(0), Some("^NDX"));
        assert_eq!(book.ids("^ndx"), &[0, 3]);
        assert_eq!(book.ids("BTC-USD"), &[1]);
        assert_eq!(book.ids("nope"), &[] as &[SymbolId]);
        let binance = SymbolBook::new(Provider::Binance, &table, &SymbolMap::default());
        assert!(!binance.supports(0) && binance.supports(1) && !binance.supports(2));
        assert_eq!(binance.generic(1), "BTCUSD");
    }
}
