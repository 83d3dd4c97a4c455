/*!
Generic symbols (`NAS100`, `XAUUSD`, `EURUSD`, `BTCUSD`, `AAPL`) → each provider's own symbol,
and back.

A generic symbol is first looked up in `SYMBOL_MAP`, then classified (`crate::instrument`: an
index, a currency pair or metal, a crypto pair, or a plain ticker) and spelled by the
provider's own [`Spelling`](super::registry::Spelling), declared in its folder with the rest of
its description (`registry.rs`). The README's provider table shows the spellings side by side;
a provider that does not serve a kind of instrument answers `None`, its `supports()` answers
false and the collector uses the next source.

`SYMBOL_MAP` overrides the spellings: comma-separated `provider:GENERIC=PROVIDER_SYMBOL`
entries, e.g. `SYMBOL_MAP=yahoo:NAS100=^NDX,binance:BTCUSD=BTCFDUSD,finnhub:XAUUSD=-`. The
provider symbol is everything after the first `=` (so `yahoo:XAUUSD=GC=F` works); `-` means
"this provider does not serve that symbol". Only providers with a spelling take entries.
*/

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::RwLock;

use super::registry::{PROVIDERS, Provider};
use crate::instrument::{Instrument, classify};
use crate::model::{SymbolId, SymbolTable};

/// The built-in provider symbol for a generic symbol; `None` when the provider does not serve
/// that kind of instrument (or has no spelling of its own).
pub fn builtin(provider: &Provider, generic: &str) -> Option<String> {
    provider.spell.and_then(|spell| spell(classify(generic)))
}

/// USD-quoted coins trade against USDT on Binance (and on Finnhub's Binance feed).
pub fn tether(quote: &str) -> &str {
    if quote == "USD" { "USDT" } else { quote }
}

/// Looks an index up in a provider's `(index code, provider symbol)` table.
pub fn index_symbol(table: &[(&str, &str)], instrument: Instrument<'_>) -> Option<String> {
    let Instrument::Index(index) = instrument else {
        return None;
    };
    table
        .iter()
        .find(|(code, _)| *code == index.code)
        .map(|(_, symbol)| (*symbol).to_string())
}

/// `SYMBOL_MAP` overrides: (provider, generic) → provider symbol, or `None` for "not served".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SymbolMap {
    entries: HashMap<(&'static str, String), Option<String>>,
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
            let spelled = || PROVIDERS.iter().filter(|p| p.spell.is_some());
            let provider = spelled()
                .find(|p| p.name.eq_ignore_ascii_case(provider.trim()))
                .ok_or_else(|| {
                    format!(
                        "entry `{entry}`: unknown provider `{}`; known: {}",
                        provider.trim(),
                        spelled().map(|p| p.name).collect::<Vec<_>>().join(", ")
                    )
                })?;
            let symbol = (symbol != "-").then(|| symbol.to_string());
            if entries
                .insert((provider.name, generic.to_ascii_uppercase()), symbol)
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
    pub fn resolve(&self, provider: &Provider, generic: &str) -> Option<String> {
        match self
            .entries
            .get(&(provider.name, generic.to_ascii_uppercase()))
        {
            Some(over) => over.clone(),
            None => builtin(provider, &generic.to_ascii_uppercase()),
        }
    }
}

/// One source's view of the symbols: id → provider symbol and back.
///
/// It follows the shared [`SymbolTable`]: a symbol added at run time is spelled the first time
/// an id the book has not seen is asked for (under a lock; every later look-up is lock-free for
/// the forward direction, a read lock for the reverse one).
pub struct SymbolBook {
    provider: &'static Provider,
    map: SymbolMap,
    symbols: SymbolTable,
    /// Id → provider symbol (`None`: not served), for every id seen so far; never moves.
    forward: boxcar::Vec<Option<Arc<str>>>,
    /// Upper-cased provider symbol → every id that maps to it. Also the lock that keeps ids
    /// and `forward` in step while the book grows.
    reverse: RwLock<HashMap<String, Arc<[SymbolId]>>>,
}

impl std::fmt::Debug for SymbolBook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SymbolBook")
            .field("provider", &self.provider.name)
            .field("symbols", &self.forward.count())
            .finish_non_exhaustive()
    }
}

impl SymbolBook {
    pub fn new(provider: &'static Provider, symbols: &SymbolTable, map: &SymbolMap) -> Self {
        let book = Self {
            provider,
            map: map.clone(),
            symbols: symbols.clone(),
            forward: boxcar::Vec::new(),
            reverse: RwLock::new(HashMap::new()),
        };
        book.grow();
        book
    }

    /// Spells every id of the table the book has not seen yet.
    fn grow(&self) {
        let mut reverse = self.reverse.write();
        while self.forward.count() < self.symbols.len() {
            let id = self.forward.count() as SymbolId;
            let mapped = self.map.resolve(self.provider, self.symbols.name(id));
            if let Some(p) = &mapped {
                let key = p.to_ascii_uppercase();
                let ids: Vec<SymbolId> = reverse
                    .get(&key)
                    .map_or(&[][..], |ids| &ids[..])
                    .iter()
                    .copied()
                    .chain([id])
                    .collect();
                reverse.insert(key, ids.into());
            }
            self.forward.push(mapped.map(Arc::from));
        }
    }

    /// The provider's symbol for an id, if it serves it.
    pub fn provider_symbol(&self, id: SymbolId) -> Option<&str> {
        if self.forward.count() <= id as usize && (id as usize) < self.symbols.len() {
            self.grow();
        }
        self.forward.get(id as usize)?.as_deref()
    }

    /// The generic name, for messages; `#id` for an id that is not known.
    pub fn generic(&self, id: SymbolId) -> String {
        if (id as usize) < self.symbols.len() {
            self.symbols.name(id).to_string()
        } else {
            format!("#{id}")
        }
    }

    /// The ids a provider symbol stands for (case-insensitive).
    pub fn ids(&self, provider_symbol: &str) -> Arc<[SymbolId]> {
        self.reverse
            .read()
            .get(&provider_symbol.to_ascii_uppercase())
            .map_or_else(|| Arc::from([]), Arc::clone)
    }

    /// The ids among `wanted` that a provider symbol in an answer stands for (several
    /// ids may map to one provider symbol; an answer may name one nobody asked for).
    pub fn wanted_ids<'a>(
        &'a self,
        provider_symbol: &str,
        wanted: &'a [SymbolId],
    ) -> impl Iterator<Item = SymbolId> + 'a {
        let ids = self.ids(provider_symbol);
        (0..ids.len())
            .map(move |i| ids[i])
            .filter(move |id| wanted.contains(id))
    }

    pub fn supports(&self, id: SymbolId) -> bool {
        self.provider_symbol(id).is_some()
    }

    /// The shared table this book follows.
    pub fn symbols(&self) -> &SymbolTable {
        &self.symbols
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::registry::find;

    fn provider(name: &str) -> &'static Provider {
        find(name).expect("a registered provider")
    }

    #[test]
    fn builtin_spellings_match_the_providers() {
        let cases = [
            ("yahoo", "NAS100", Some("^NDX")),
            ("yahoo", "SPX500", Some("^GSPC")),
            ("yahoo", "GER40", Some("^GDAXI")),
            ("yahoo", "XAUUSD", Some("GC=F")),
            ("yahoo", "XPTEUR", None),
            ("yahoo", "EURUSD", Some("EURUSD=X")),
            ("yahoo", "BTCUSD", Some("BTC-USD")),
            ("yahoo", "AAPL", Some("AAPL")),
            ("twelvedata", "NAS100", Some("NDX")),
            ("twelvedata", "VIX", None),
            ("twelvedata", "XAUUSD", Some("XAU/USD")),
            ("twelvedata", "EURUSD", Some("EUR/USD")),
            ("twelvedata", "BTCUSD", Some("BTC/USD")),
            ("twelvedata", "EUR/USD", Some("EUR/USD")),
            ("binance", "BTCUSD", Some("BTCUSDT")),
            ("binance", "ETHBTC", Some("ETHBTC")),
            ("binance", "DOGEUSDT", Some("DOGEUSDT")),
            ("binance", "EURUSD", None),
            ("binance", "AAPL", None),
            ("binance", "NAS100", None),
            ("polygon", "BTCUSD", Some("X:BTCUSD")),
            ("polygon", "EURUSD", Some("C:EURUSD")),
            ("polygon", "NAS100", Some("I:NDX")),
            ("polygon", "VIX", Some("I:VIX")),
            ("polygon", "UK100", None),
            ("finnhub", "EURUSD", Some("OANDA:EUR_USD")),
            ("finnhub", "BTCUSD", Some("BINANCE:BTCUSDT")),
            ("finnhub", "NAS100", None),
            ("finnhub", "AAPL", Some("AAPL")),
            ("alphavantage", "EURUSD", Some("EUR/USD")),
            ("alphavantage", "MSFT", Some("MSFT")),
            ("alphavantage", "NAS100", None),
            ("synthetic", "AAPL", None),
        ];
        for (name, generic, want) in cases {
            assert_eq!(
                builtin(provider(name), generic).as_deref(),
                want,
                "{name} {generic}"
            );
        }
    }

    #[test]
    fn overrides_win_and_dash_means_not_served() {
        let map = SymbolMap::parse("yahoo:xauusd=XAUUSD=X, binance:BTCUSD=BTCFDUSD,finnhub:AAPL=-")
            .expect("valid");
        assert_eq!(map.len(), 3);
        let resolve = |name: &str, generic: &str| map.resolve(provider(name), generic);
        assert_eq!(resolve("yahoo", "XAUUSD").as_deref(), Some("XAUUSD=X"));
        assert_eq!(resolve("binance", "BTCUSD").as_deref(), Some("BTCFDUSD"));
        assert_eq!(resolve("finnhub", "AAPL"), None);
        assert_eq!(resolve("yahoo", "AAPL").as_deref(), Some("AAPL"));
    }

    #[test]
    fn malformed_maps_are_refused() {
        for bad in [
            "yahoo:NAS100",
            "NAS100=^NDX",
            "bloomberg:NAS100=NDX",
            "synthetic:NAS100=NDX",
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
        let book = SymbolBook::new(provider("yahoo"), &table, &SymbolMap::default());
        assert_eq!(book.provider_symbol(0), Some("^NDX"));
        assert_eq!(&*book.ids("^ndx"), &[0, 3]);
        assert_eq!(&*book.ids("BTC-USD"), &[1]);
        assert_eq!(&*book.ids("nope"), &[] as &[SymbolId]);
        let binance = SymbolBook::new(provider("binance"), &table, &SymbolMap::default());
        assert!(!binance.supports(0) && binance.supports(1) && !binance.supports(2));
        assert_eq!(binance.generic(1), "BTCUSD");
        // A symbol added at run time is spelled when first asked for.
        let (eth, _) = table.add("ETHUSD");
        assert_eq!(binance.provider_symbol(eth), Some("ETHUSDT"));
        assert_eq!(&*binance.ids("ethusdt"), &[eth]);
        assert_eq!(book.generic(99), "#99");
    }
}
