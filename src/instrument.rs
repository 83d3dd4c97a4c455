/*!
What a generic symbol (`NAS100`, `XAUUSD`, `EURUSD`, `BTCUSD`, `AAPL`) stands for: an index, a
currency pair or a metal in a currency, a crypto pair, or a plain ticker.

Both the trading calendars (`calendar`) and the providers' symbol spellings (each provider's
folder under `sources/`) start from this classification, so it lives in a leaf of its own and
knows no provider: a provider spells an [`Instrument`] its own way, the calendar picks the
market it trades on.
*/

/// What a generic symbol stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Instrument<'a> {
    Index(&'static Index),
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

/// A stock index, known under several generic names.
#[derive(Debug, PartialEq, Eq)]
pub struct Index {
    /// The index's own short name, which providers map to their symbols.
    pub code: &'static str,
    /// The generic names `SYMBOLS` may use for it.
    pub aliases: &'static [&'static str],
}

/// `NDX` (Nasdaq-100), `SPX` (S&P 500), `DJI` (Dow Jones Industrial Average), `VIX`, `DAX`
/// (Xetra), `FTSE` (London), `N225` (Tokyo).
pub const INDICES: &[Index] = &[
    Index {
        code: "NDX",
        aliases: &["NAS100", "US100", "NDX"],
    },
    Index {
        code: "SPX",
        aliases: &["SPX500", "US500", "SPX"],
    },
    Index {
        code: "DJI",
        aliases: &["US30", "DJ30", "DJI"],
    },
    Index {
        code: "VIX",
        aliases: &["VIX"],
    },
    Index {
        code: "DAX",
        aliases: &["GER40", "DE40", "DAX"],
    },
    Index {
        code: "FTSE",
        aliases: &["UK100", "FTSE"],
    },
    Index {
        code: "N225",
        aliases: &["JP225", "NIKKEI"],
    },
];

const FIAT: &[&str] = &[
    "USD", "EUR", "GBP", "JPY", "CHF", "AUD", "NZD", "CAD", "SEK", "NOK", "DKK", "PLN", "HUF",
    "CZK", "TRY", "ZAR", "MXN", "SGD", "HKD", "CNH", "CNY", "INR", "KRW", "BRL", "ILS", "THB",
];
/// Gold, silver, platinum, palladium.
pub const METALS: &[&str] = &["XAU", "XAG", "XPT", "XPD"];
const COINS: &[&str] = &[
    "BTC", "ETH", "SOL", "XRP", "ADA", "DOGE", "BNB", "LTC", "DOT", "AVAX", "LINK", "MATIC", "POL",
    "TRX", "BCH", "XLM", "ATOM", "UNI", "SHIB", "TON", "NEAR", "ETC", "FIL", "APT", "ARB", "OP",
    "SUI", "PEPE",
];
/// What coins are quoted in: stable coins, majors, fiat.
const COIN_QUOTES: &[&str] = &[
    "USDT", "USDC", "FDUSD", "BUSD", "USD", "EUR", "GBP", "JPY", "TRY", "BTC", "ETH", "BNB",
];

/// Classifies a generic symbol (upper case, as `SYMBOLS` delivers it). A pair may be written
/// with a slash (`BTC/USD`).
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symbols_are_classified() {
        assert!(matches!(classify("NAS100"), Instrument::Index(i) if i.code == "NDX"));
        assert!(matches!(classify("JP225"), Instrument::Index(i) if i.code == "N225"));
        assert_eq!(
            classify("EURUSD"),
            Instrument::Fx {
                base: "EUR",
                quote: "USD"
            }
        );
        assert_eq!(
            classify("XAUUSD"),
            Instrument::Fx {
                base: "XAU",
                quote: "USD"
            }
        );
        assert_eq!(
            classify("DOGEUSDT"),
            Instrument::Crypto {
                base: "DOGE",
                quote: "USDT"
            }
        );
        assert_eq!(
            classify("BTC/USD"),
            Instrument::Crypto {
                base: "BTC",
                quote: "USD"
            }
        );
        assert_eq!(classify("AAPL"), Instrument::Equity("AAPL"));
        assert_eq!(classify("ABCDEF"), Instrument::Equity("ABCDEF"));
    }
}
