/*!
Shards: `SHARD=i/N` makes an instance own the symbols rendezvous hashing gives to shard `i` of
`N`, so several instances can be given the same `SYMBOLS` and split them without talking to
each other.

Each symbol goes to the shard with the highest score `hash(symbol, shard)` (highest random
weight). Changing `N` to `N + 1` moves only the symbols the new shard wins, about one in
`N + 1`, and none between the old shards. The hash is written out here (FNV-1a over the
upper-cased symbol, mixed with the shard number by SplitMix64's finaliser) because it is a
contract: every instance, of every version, must agree on who owns what.

A leaf: it imports nothing else of the crate.
*/

use std::fmt;
use std::str::FromStr;

/// Most shards `SHARD` accepts.
pub const MAX_SHARDS: u32 = 4_096;

/// This instance's part of the symbols: shard `index` of `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

impl Shard {
    /// One instance owning every symbol.
    pub const ALL: Self = Self { index: 0, count: 1 };

    /// Whether this shard owns `symbol` (compared case-insensitively).
    pub fn owns(&self, symbol: &str) -> bool {
        self.count <= 1 || owner(symbol, self.count) == self.index
    }

    /// The key of this shard's rows in tables several shards share (`runtime_settings`):
    /// `i/N`, or `''` for an instance that is not sharded (`SHARD` unset or `0/1`).
    pub fn key(&self) -> String {
        if self.count <= 1 {
            String::new()
        } else {
            self.to_string()
        }
    }
}

impl Default for Shard {
    fn default() -> Self {
        Self::ALL
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl FromStr for Shard {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let shape = || format!("`{s}` is not INDEX/COUNT, e.g. 0/2 (the first of two shards)");
        let (index, count) = s.trim().split_once('/').ok_or_else(shape)?;
        let index: u32 = index.trim().parse().map_err(|_| shape())?;
        let count: u32 = count.trim().parse().map_err(|_| shape())?;
        if count == 0 || count > MAX_SHARDS {
            return Err(format!("the shard count must be 1 to {MAX_SHARDS}"));
        }
        if index >= count {
            return Err(format!(
                "shard {index} of {count} does not exist: shards are numbered 0 to {}",
                count - 1
            ));
        }
        Ok(Self { index, count })
    }
}

/// The shard, of `count`, that owns `symbol`.
pub fn owner(symbol: &str, count: u32) -> u32 {
    let key = fnv1a(symbol);
    (0..count.max(1))
        .max_by_key(|&shard| mix(key ^ u64::from(shard).wrapping_mul(0x9E37_79B9_7F4A_7C15)))
        .unwrap_or(0)
}

/// FNV-1a, 64 bits, over the symbol's upper-cased ASCII bytes.
fn fnv1a(symbol: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in symbol.bytes() {
        h ^= u64::from(b.to_ascii_uppercase());
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// SplitMix64's finaliser: every input bit moves every output bit.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn symbols(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("SYM{i:04}")).collect()
    }

    #[test]
    fn shards_split_the_symbols_disjointly_and_completely() {
        let all = symbols(1_000);
        let shards: Vec<Shard> = (0..4).map(|index| Shard { index, count: 4 }).collect();
        for s in &all {
            assert_eq!(shards.iter().filter(|sh| sh.owns(s)).count(), 1, "{s}");
        }
        for sh in &shards {
            let mine = all.iter().filter(|s| sh.owns(s)).count();
            assert!((200..300).contains(&mine), "shard {sh} owns {mine} of 1000");
        }
    }

    #[test]
    fn a_new_shard_takes_symbols_only_for_itself() {
        let all = symbols(3_000);
        let moved: Vec<&String> = all.iter().filter(|s| owner(s, 3) != owner(s, 4)).collect();
        assert!(
            moved.iter().all(|s| owner(s, 4) == 3),
            "symbols move only to the new shard"
        );
        assert!(
            (600..900).contains(&moved.len()),
            "about a quarter moves: {}",
            moved.len()
        );
    }

    #[test]
    fn ownership_is_a_fixed_function_of_the_name() {
        // The contract: these must never change between versions.
        assert_eq!(owner("EURUSD", 2), owner("eurusd", 2));
        let pinned: Vec<u32> = ["EURUSD", "BTCUSD", "NAS100", "XAUUSD", "AAPL"]
            .iter()
            .map(|s| owner(s, 8))
            .collect();
        assert_eq!(pinned, PINNED_OWNERS_OF_8);
        assert!(Shard::ALL.owns("ANYTHING"));
    }

    /// Owners of EURUSD, BTCUSD, NAS100, XAUUSD and AAPL among 8 shards, as first computed.
    const PINNED_OWNERS_OF_8: [u32; 5] = [4, 6, 4, 4, 6];

    #[test]
    fn shard_values_are_checked() {
        assert_eq!("1/4".parse::<Shard>(), Ok(Shard { index: 1, count: 4 }));
        assert_eq!(" 0 / 1 ".parse::<Shard>(), Ok(Shard::ALL));
        for bad in ["4/4", "1/0", "a/2", "2", "-1/2", "0/5000", ""] {
            assert!(bad.parse::<Shard>().is_err(), "{bad}");
        }
    }
}
