/*!
The instruments collected, and changing them at run time (`/streaming/config/instruments`).

**How `SYMBOLS` and the stored list combine** (the README says the same): `SYMBOLS` (the part
this shard owns, with `MARKET_HOURS`) is the base; what the API changed is stored in SQLite
(`instruments` table, [`InstrumentRow`]) and applied on top at every start, by [`plan`]:
- a symbol added over the API is collected after those of `SYMBOLS`, in the order they were
  added, on the calendar it was given (else `MARKET_HOURS`' `*`, else its own);
- a symbol of `SYMBOLS` given a calendar over the API keeps it;
- a symbol of `SYMBOLS` deleted over the API stays deleted, whatever `SYMBOLS` says, until it
  is added again over the API (the log says so at start);
- deleting a symbol that only the API added forgets it.

A change is stored first (committed before the answer), then applied: the shared
[`SymbolTable`] learns the symbol (a new id, or its old one made active again) and the collector
is told ([`Command`]): an added symbol is warmed up from history like at start, then collected;
a deleted one is checkpointed and no longer collected, listed or served. With `SHARD=i/N`, a
symbol another shard owns is refused ([`InstrumentError::WrongShard`]).
*/

use std::sync::Arc;

use parking_lot::Mutex;
use serde::Serialize;

use crate::calendar::MarketCalendar;
use crate::clock::Clock;
use crate::collector::{Command, CommandSender};
use crate::config::Config;
use crate::model::{SymbolId, SymbolTable};
use crate::shard::{self, Shard};
use crate::store::InstrumentRow;
use crate::store::history::{History, StoreError};
use crate::store::snapshot::Snapshot;

/// Where a collected symbol comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    /// `SYMBOLS`.
    Symbols,
    /// Added over the API.
    Api,
}

/// One symbol to collect at start: `SYMBOLS` with the stored changes applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    pub symbol: String,
    pub calendar: MarketCalendar,
    pub origin: Origin,
    /// The calendar was given over the API.
    pub calendar_given: bool,
}

/// The symbols to collect at start, in id order: `config.symbols` (this shard's part of
/// `SYMBOLS`, with their calendars) with the stored `rows` applied (see the module
/// documentation). Rows of symbols another shard owns (`SHARD` changed, or shards sharing one
/// PostgreSQL) are skipped.
pub fn plan(config: &Config, rows: &[InstrumentRow]) -> Vec<Planned> {
    let mut out: Vec<Planned> = config
        .symbols
        .iter()
        .zip(&config.calendars)
        .map(|(s, &calendar)| Planned {
            symbol: s.clone(),
            calendar,
            origin: Origin::Symbols,
            calendar_given: false,
        })
        .collect();
    for row in rows {
        let given = row.calendar.as_deref().and_then(|name| {
            MarketCalendar::parse(name)
                .inspect_err(|e| {
                    tracing::warn!(symbol = row.symbol, calendar = name, reason = %e, "stored calendar unknown; using the default");
                })
                .ok()
        });
        let at = out.iter().position(|p| p.symbol == row.symbol);
        match (row.active, at) {
            (false, Some(i)) => {
                tracing::info!(
                    symbol = row.symbol,
                    "SYMBOLS lists this symbol, but it was deleted over the API: not collected (POST it to /streaming/config/instruments to collect it again)"
                );
                out.remove(i);
            }
            (false, None) => {}
            (true, Some(i)) => {
                if let Some(calendar) = given {
                    out[i].calendar = calendar;
                    out[i].calendar_given = true;
                }
            }
            (true, None) if !config.shard.owns(&row.symbol) => {
                tracing::debug!(
                    symbol = row.symbol,
                    owner = shard::owner(&row.symbol, config.shard.count),
                    shard = %config.shard,
                    "a stored instrument another shard owns: not collected here"
                );
            }
            (true, None) => out.push(Planned {
                symbol: row.symbol.clone(),
                calendar: given.unwrap_or_else(|| config.default_calendar(&row.symbol)),
                origin: Origin::Api,
                calendar_given: given.is_some(),
            }),
        }
    }
    out
}

/// Applies [`plan`] to a configuration: its `symbols` and `calendars` become the planned ones.
pub fn apply(config: &mut Config, planned: &[Planned]) {
    config.symbols = planned.iter().map(|p| p.symbol.clone()).collect();
    config.calendars = planned.iter().map(|p| p.calendar).collect();
}

/// Fills the symbol table at start: `SYMBOLS` with the instruments the history store keeps
/// applied on top ([`plan`]); the configuration's `symbols` and `calendars` become those.
///
/// # Errors
/// The store cannot be read.
pub async fn load(
    mut config: Config,
    symbols: &SymbolTable,
    store: &History,
) -> Result<(Config, Vec<Planned>), StoreError> {
    let rows = store.instruments().await?;
    let planned = plan(&config, &rows);
    apply(&mut config, &planned);
    for p in &planned {
        symbols.add(&p.symbol);
    }
    Ok((config, planned))
}

/// A change the API asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// Upper-cased, valid ([`crate::config::symbol`]).
    pub symbol: String,
    /// `None`: keep the symbol's calendar (its default, for a new one).
    pub calendar: Option<MarketCalendar>,
}

/// Why a change was refused.
#[derive(Debug, thiserror::Error)]
pub enum InstrumentError {
    #[error(
        "{symbol} belongs to shard {owner} of {count} (SHARD={owner}/{count}); this is shard {index}: add it there"
    )]
    WrongShard {
        symbol: String,
        owner: u32,
        index: u32,
        count: u32,
    },
    #[error("{0} is not collected; GET /streaming/config/instruments lists those that are")]
    NotFound(String),
    #[error("the change could not be stored, so it was not made: {0}")]
    Store(#[from] StoreError),
    #[error("the collector has stopped")]
    Stopped,
}

/// A collected symbol, as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InstrumentInfo {
    pub symbol: String,
    pub calendar: &'static str,
    /// The calendar was given over the API (not `MARKET_HOURS` nor the default).
    pub calendar_given: bool,
    pub origin: Origin,
    /// The collector has it (false while an added symbol is warmed up).
    pub collecting: bool,
}

/// What the API knows of each symbol id, beside the table.
#[derive(Debug, Clone, Copy)]
struct Meta {
    calendar: MarketCalendar,
    calendar_given: bool,
    origin: Origin,
}

/// The run-time side: shared by the HTTP handlers.
pub struct Instruments {
    symbols: SymbolTable,
    snapshot: Arc<Snapshot>,
    store: History,
    commands: CommandSender,
    config: Arc<Config>,
    /// The symbols of `SYMBOLS` this shard owns (a deletion of one of them is stored).
    base: Vec<String>,
    clock: Clock,
    /// Indexed by symbol id.
    meta: Mutex<Vec<Option<Meta>>>,
    /// One change at a time: stored, then applied, in the same order.
    changing: tokio::sync::Mutex<()>,
}

impl Instruments {
    /// `base` is this shard's part of `SYMBOLS` (before [`apply`]); `planned` what the table
    /// was filled with at start, in id order.
    #[allow(clippy::too_many_arguments, reason = "wired once by app::run")]
    pub fn new(
        symbols: SymbolTable,
        snapshot: Arc<Snapshot>,
        store: History,
        commands: CommandSender,
        config: Arc<Config>,
        base: Vec<String>,
        planned: &[Planned],
        clock: Clock,
    ) -> Self {
        let meta = planned
            .iter()
            .map(|p| {
                Some(Meta {
                    calendar: p.calendar,
                    calendar_given: p.calendar_given,
                    origin: p.origin,
                })
            })
            .collect();
        Self {
            symbols,
            snapshot,
            store,
            commands,
            config,
            base,
            clock,
            meta: Mutex::new(meta),
            changing: tokio::sync::Mutex::new(()),
        }
    }

    fn info(&self, id: SymbolId) -> Option<InstrumentInfo> {
        if !self.symbols.is_active(id) {
            return None;
        }
        let meta = (*self.meta.lock().get(id as usize)?)?;
        Some(InstrumentInfo {
            symbol: self.symbols.name(id).to_string(),
            calendar: meta.calendar.name(),
            calendar_given: meta.calendar_given,
            origin: meta.origin,
            collecting: self.snapshot.get(id).is_some(),
        })
    }

    /// Every collected symbol, in id order.
    pub fn list(&self) -> Vec<InstrumentInfo> {
        self.symbols
            .active()
            .filter_map(|(id, _)| self.info(id))
            .collect()
    }

    /// One collected symbol (any case).
    pub fn get(&self, symbol: &str) -> Option<InstrumentInfo> {
        self.info(self.symbols.id(symbol)?)
    }

    /// Collects `change.symbol` (from the next tick, after its warm-up), or gives a collected
    /// one a new calendar. Returns the symbol and whether anything changed.
    ///
    /// # Errors
    /// A symbol of another shard, a change SQLite could not store (then nothing changed).
    pub async fn put(&self, change: Change) -> Result<(InstrumentInfo, bool), InstrumentError> {
        let shard: Shard = self.config.shard;
        if !shard.owns(&change.symbol) {
            return Err(InstrumentError::WrongShard {
                owner: shard::owner(&change.symbol, shard.count),
                index: shard.index,
                count: shard.count,
                symbol: change.symbol,
            });
        }
        let _one = self.changing.lock().await;
        let current = self.symbols.id(&change.symbol).and_then(|id| {
            let meta = (*self.meta.lock().get(id as usize)?)?;
            Some((id, meta))
        });
        let calendar = change
            .calendar
            .or(current.map(|(_, m)| m.calendar))
            .unwrap_or_else(|| self.config.default_calendar(&change.symbol));
        if let Some((id, meta)) = current
            && meta.calendar == calendar
            && self.info(id).is_some()
        {
            return Ok((self.info(id).ok_or(InstrumentError::Stopped)?, false));
        }
        let now = self.clock.now_ms();
        let row = InstrumentRow {
            symbol: change.symbol.clone(),
            calendar: change.calendar.map(|c| c.name().to_string()),
            active: true,
            added_ms: now,
            updated_ms: now,
        };
        self.store.save_instrument(row).await?;
        let (id, _) = self.symbols.add(&change.symbol);
        let in_base = self.base.contains(&change.symbol);
        {
            let mut meta = self.meta.lock();
            if meta.len() <= id as usize {
                meta.resize(id as usize + 1, None);
            }
            let given = change.calendar.is_some() || current.is_some_and(|(_, m)| m.calendar_given);
            meta[id as usize] = Some(Meta {
                calendar,
                calendar_given: given,
                origin: if in_base {
                    Origin::Symbols
                } else {
                    Origin::Api
                },
            });
        }
        self.commands
            .send(Command::Add { id, calendar })
            .map_err(|_| InstrumentError::Stopped)?;
        tracing::info!(
            symbol = change.symbol,
            calendar = calendar.name(),
            "instrument added over the API"
        );
        Ok((self.info(id).ok_or(InstrumentError::Stopped)?, true))
    }

    /// Stops collecting `symbol` (any case); returns what it was.
    ///
    /// # Errors
    /// A symbol that is not collected, a change SQLite could not store (then nothing changed).
    pub async fn delete(&self, symbol: &str) -> Result<InstrumentInfo, InstrumentError> {
        let _one = self.changing.lock().await;
        let (id, info) = self
            .symbols
            .id(symbol)
            .and_then(|id| Some((id, self.info(id)?)))
            .ok_or_else(|| InstrumentError::NotFound(symbol.to_ascii_uppercase()))?;
        let name = info.symbol.clone();
        if self.base.contains(&name) {
            let now = self.clock.now_ms();
            let row = InstrumentRow {
                symbol: name,
                calendar: None,
                active: false,
                added_ms: now,
                updated_ms: now,
            };
            self.store.save_instrument(row).await?;
        } else {
            self.store.forget_instrument(name).await?;
        }
        self.symbols.deactivate(id);
        self.commands
            .send(Command::Remove { id })
            .map_err(|_| InstrumentError::Stopped)?;
        tracing::info!(symbol = info.symbol, "instrument deleted over the API");
        Ok(InstrumentInfo {
            collecting: false,
            ..info
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(vars: &[(&str, &str)]) -> Config {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect();
        Config::from_lookup(|name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()))
            .expect("a valid configuration")
    }

    fn row(symbol: &str, calendar: Option<&str>, active: bool) -> InstrumentRow {
        InstrumentRow {
            symbol: symbol.into(),
            calendar: calendar.map(Into::into),
            active,
            added_ms: 0,
            updated_ms: 0,
        }
    }

    fn names(planned: &[Planned]) -> Vec<&str> {
        planned.iter().map(|p| p.symbol.as_str()).collect()
    }

    #[test]
    fn symbols_is_the_base_and_the_stored_changes_apply_on_top() {
        let c = config(&[
            ("SYMBOLS", "AAPL,EURUSD,MSFT"),
            ("SOURCES", "yahoo"),
            ("MARKET_HOURS", "MSFT:always"),
        ]);
        let rows = [
            row("EURUSD", None, false),
            row("BTCUSD", None, true),
            row("MSFT", Some("xetra"), true),
            row("GBPUSD", Some("always"), true),
            row("NOTLISTED", None, false),
        ];
        let planned = plan(&c, &rows);
        assert_eq!(names(&planned), ["AAPL", "MSFT", "BTCUSD", "GBPUSD"]);
        let by = |s: &str| planned.iter().find(|p| p.symbol == s).expect("planned");
        assert_eq!(by("AAPL").calendar, MarketCalendar::UsEquity);
        assert_eq!(
            by("MSFT").calendar,
            MarketCalendar::Xetra,
            "the API's calendar wins"
        );
        assert!(by("MSFT").calendar_given && by("MSFT").origin == Origin::Symbols);
        assert_eq!(
            by("BTCUSD").calendar,
            MarketCalendar::Always,
            "its own default"
        );
        assert_eq!(by("BTCUSD").origin, Origin::Api);
        assert_eq!(by("GBPUSD").calendar, MarketCalendar::Always);
        let mut applied = c.clone();
        apply(&mut applied, &planned);
        assert_eq!(applied.symbols, ["AAPL", "MSFT", "BTCUSD", "GBPUSD"]);
        assert_eq!(applied.calendars.len(), 4);
    }

    #[test]
    fn additions_take_market_hours_star_and_skip_other_shards() {
        let c = config(&[
            ("SYMBOLS", "EURUSD"),
            ("SOURCES", "yahoo"),
            ("MARKET_HOURS", "*:cme_index"),
        ]);
        let planned = plan(&c, &[row("AAPL", None, true)]);
        assert_eq!(planned[1].calendar, MarketCalendar::CmeIndex);
        let symbols: Vec<String> = (0..40).map(|i| format!("S{i}")).collect();
        let c = config(&[("SYMBOLS", &symbols.join(",")), ("SHARD", "1/2")]);
        let theirs = (0..100)
            .map(|i| format!("X{i}"))
            .find(|s| shard::owner(s, 2) == 0)
            .expect("some symbol shard 0 owns");
        let planned = plan(&c, &[row(&theirs, None, true)]);
        assert!(!names(&planned).contains(&theirs.as_str()));
    }
}
