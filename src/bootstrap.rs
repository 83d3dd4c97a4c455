/*!
`barkeep bootstrap`: download history into SQLite, with a progress bar; also run at `barkeep run`
start (in the background by default, `BOOTSTRAP_ON_START`).

For every (symbol, timeframe) it fills what SQLite lacks of the last `HISTORY_DAYS`: first the
bars after the newest stored one (oldest first), then the bars before the oldest stored one
(newest first), in windows of at most [`WINDOW_BARS`] bars. Either way what is stored stays one
contiguous stretch that grows from the present into the past, so an interrupted bootstrap
resumes where it stopped and running it twice changes nothing. A bar already stored is never
overwritten, so a bootstrap running beside collection cannot replace what the collector wrote
(and what the Redis rings hold).

Each window is asked of the sources that serve its history, in `SOURCES` order, each within its
own request budget: the bootstrap waits for a source's per-minute bucket to refill (up to
[`MAX_BUDGET_WAIT`]) rather than being refused, takes one unit right before the request goes
out, and moves on to the next source when that source's daily quota is spent or it keeps
failing. A source is never asked — and nothing of its budget taken — for a timeframe its
history does not serve ([`Source::serves_history`]; said once per source and timeframe), for a
symbol it does not serve, or for a series it already answered "not served" this run
([`ErrorKind::NotServed`]); a series no source can serve is not planned at all, and the windows
of one whose every source has said "not served" are skipped.

Going back in time, a series is given up after [`NO_HISTORY_SPAN_MS`] of empty or failed windows
in a row: the sources keep no more, and asking for the rest would only spend the budget (the
next start asks once more). Every bar goes through the validator; rejected ones are stored in
`rejects` with their reason, as live ones are. Indicators are warmed from what is stored.

While collecting, [`follow`] bootstraps the symbols of the start and then each instrument added
at run time, as soon as it is added.
*/

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::model::{Bar, RejectRecord, SymbolId, SymbolTable, Timeframe};
use crate::sources::chain::{Asked as Answer, Attempt, Refusal, SourceChain, Work};
use crate::sources::{ErrorKind, Source};
use crate::store::fault::FaultLog;
use crate::store::history::{History, StoreError, StoredBar};
use crate::validate::{Validator, Verdict};
use indicatif::{ProgressBar, ProgressStyle};

/// Bars asked for per request.
pub const WINDOW_BARS: i64 = 1_000;

/// At most this many bars per (symbol, timeframe): `HISTORY_DAYS` of 1m bars fit (90 days are
/// 129 600), while 90 days of 1s bars (7.8 million per symbol) would not be what anyone wants.
pub const MAX_SERIES_BARS: i64 = 200_000;

/// The longest the bootstrap waits for a source's budget before asking the next source.
pub const MAX_BUDGET_WAIT: Duration = Duration::from_secs(65);

/// Rate-limit answers from one source for one window before the next source is asked.
const RATE_LIMITED_TRIES: usize = 3;

/// How long one history request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// What a bootstrap did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct BootstrapStats {
    pub stored: usize,
    pub rejected: usize,
    pub failed_windows: usize,
    /// Windows not asked for: the sources had nothing that far back, or every source that could
    /// serve the series said it does not.
    pub skipped_windows: usize,
}

/// The past of a series is given up once this much of it in a row came back empty or failed:
/// longer than any market closure (a weekend plus holidays), so what is left is beyond what the
/// sources keep (Yahoo's 1-minute bars go back about 30 days).
pub const NO_HISTORY_SPAN_MS: i64 = 7 * 86_400_000;

/// The current run of empty windows going back in time in one series.
#[derive(Debug, Clone, Copy)]
struct EmptyPast {
    series: (SymbolId, Timeframe),
    /// End of the newest empty window of the run.
    since: i64,
    gave_up: bool,
}

/// One request's worth of history: bars of `timeframe` opening in `[from, to)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Window {
    symbol: SymbolId,
    timeframe: Timeframe,
    from: i64,
    to: i64,
    /// Part of the past before the oldest stored bar (filled newest first).
    backward: bool,
}

/// The configured sources with breakers and budgets of their own, for a bootstrap that runs
/// alone (`barkeep bootstrap`, or before collecting starts).
pub fn own_chain(config: &Config, sources: Vec<Arc<dyn Source>>) -> SourceChain {
    let names: Vec<&'static str> = sources.iter().map(|s| s.name()).collect();
    let metrics = Arc::new(Metrics::new(&names));
    SourceChain::configured(config, sources, false, metrics, Clock::System)
}

/// Downloads what history (SQLite or PostgreSQL) lacks of the configured history for every symbol and timeframe.
/// Sources are asked through `chain`: one of their own ([`own_chain`]), or the collector's when
/// the bootstrap runs beside collection, whose budgets then keep the requests live quotes need
/// (the bootstrap is batch work: it takes what is above the live reserve). `on_recent` is called after
/// bars were stored among the newest `MAX_BARS_CACHE` of a series (while collecting, the Redis
/// rings must then be reconciled with history).
///
/// # Errors
/// A history store failure (source failures are counted and reported, not fatal).
pub async fn bootstrap(
    config: &Config,
    symbols: &SymbolTable,
    chain: &SourceChain,
    store: &History,
    now_ms: i64,
    show_progress: bool,
    on_recent: impl Fn(),
) -> Result<BootstrapStats, StoreError> {
    let ids: Vec<SymbolId> = symbols.active().map(|(id, _)| id).collect();
    bootstrap_symbols(
        config,
        symbols,
        &ids,
        chain,
        store,
        now_ms,
        show_progress,
        on_recent,
    )
    .await
}

/// [`bootstrap`] for these symbols only (ids of `symbols`).
///
/// # Errors
/// As [`bootstrap`].
#[allow(
    clippy::too_many_arguments,
    reason = "bootstrap's arguments and the symbols"
)]
pub async fn bootstrap_symbols(
    config: &Config,
    symbols: &SymbolTable,
    ids: &[SymbolId],
    chain: &SourceChain,
    store: &History,
    now_ms: i64,
    show_progress: bool,
    on_recent: impl Fn(),
) -> Result<BootstrapStats, StoreError> {
    for source in chain.sources().filter(|s| s.capabilities().history) {
        for &tf in &config.timeframes {
            if !source.serves_history(tf) {
                tracing::info!(
                    source = source.name(),
                    timeframe = %tf,
                    "this source's history has no such bars; it is not asked for them"
                );
            }
        }
    }
    let mut asked = Asked {
        chain,
        not_served: HashSet::new(),
    };
    let mut plan = Vec::new();
    for &symbol in ids {
        for &tf in &config.timeframes {
            if !asked.any_for(symbol, tf) {
                tracing::debug!(symbol = %symbols.name(symbol), timeframe = %tf, "no source serves this history; not planned");
                continue;
            }
            let span = store.stored_span(symbol, tf).await?;
            plan.extend(windows(symbol, tf, now_ms, config.history_days, span));
        }
    }
    let bar = if show_progress {
        let bar = ProgressBar::new(plan.len() as u64);
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} windows {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar
    } else {
        ProgressBar::hidden()
    };
    let mut stats = BootstrapStats::default();
    let mut empty_past: Option<EmptyPast> = None;
    for window in plan {
        let series = (window.symbol, window.timeframe);
        let run = empty_past.filter(|e| e.series == series);
        if (window.backward && run.is_some_and(|e| e.gave_up))
            || !asked.any_for(window.symbol, window.timeframe)
        {
            stats.skipped_windows += 1;
            bar.inc(1);
            continue;
        }
        bar.set_message(format!(
            "{} {}",
            symbols.name(window.symbol),
            window.timeframe
        ));
        let fetched = fetch(&mut asked, symbols, window, &bar).await;
        if window.backward {
            let in_window =
                |bars: &Vec<Bar>| bars.iter().any(|b| b.ts >= window.from && b.ts < window.to);
            if fetched.as_ref().is_some_and(|(_, bars)| in_window(bars)) {
                empty_past = None;
            } else {
                let since = run.map_or(window.to, |e| e.since);
                let gave_up = since - window.from >= NO_HISTORY_SPAN_MS;
                if gave_up {
                    tracing::info!(symbol = %symbols.name(window.symbol), timeframe = %window.timeframe, before_ms = window.from, "no history that far back; the older past is skipped");
                }
                empty_past = Some(EmptyPast {
                    series,
                    since,
                    gave_up,
                });
            }
        }
        let Some((source, bars)) = fetched else {
            stats.failed_windows += 1;
            bar.inc(1);
            continue;
        };
        // Windows arrive out of time order (the past is filled newest first), so each is
        // validated on its own.
        let mut validator = Validator::new(config.validation.clone(), window.timeframe.ms());
        let mut good = Vec::with_capacity(bars.len());
        let mut rejects = Vec::new();
        for b in bars
            .iter()
            .filter(|b| b.ts >= window.from && b.ts < window.to)
        {
            match validator.check(b, None) {
                Verdict::Accept { quality } => good.push(StoredBar {
                    bar: *b,
                    source: source.to_string(),
                    quality,
                }),
                Verdict::Duplicate => {}
                Verdict::Reject(reason) => rejects.push(RejectRecord {
                    symbol: window.symbol,
                    source,
                    reason,
                    input: *b,
                    received_at_ms: now_ms,
                }),
            }
        }
        stats.rejected += rejects.len();
        let (symbol, tf) = (window.symbol, window.timeframe);
        let stored = store.insert_missing(symbol, tf, good, rejects).await?;
        stats.stored += stored;
        let ring_reach = tf.bucket(now_ms) - config.max_bars_cache as i64 * tf.ms();
        if stored > 0 && window.to > ring_reach {
            on_recent();
        }
        bar.inc(1);
    }
    bar.finish_with_message(format!("{} bars stored", stats.stored));
    Ok(stats)
}

/// `run`'s background bootstrap (`BOOTSTRAP_ON_START`): the symbols collected at start (unless
/// `start_done`: done before collecting), then every symbol added at run time as soon as the
/// table says so ([`SymbolTable::changes`], the notification the push streams follow too); a
/// symbol deleted and added again is bootstrapped again. Its requests go through `chain`, the
/// collector's (its budgets, above the live reserve). A failed write (a full disk, a locked
/// database) stops a round; the bootstrap resumes where it stopped, so the round is run again,
/// with a backoff, until it completes. Runs until `shutdown`.
#[allow(clippy::too_many_arguments, reason = "wired once by app::run")]
pub async fn follow(
    config: Config,
    symbols: SymbolTable,
    chain: Arc<SourceChain>,
    store: History,
    clock: Clock,
    start_done: bool,
    on_recent: impl Fn(),
    shutdown: CancellationToken,
) {
    let mut changes = symbols.changes();
    let mut done: HashSet<SymbolId> = if start_done {
        symbols.active().map(|(id, _)| id).collect()
    } else {
        HashSet::new()
    };
    let mut log = FaultLog::new("background bootstrap", store.name());
    let mut wait = Duration::from_secs(1);
    loop {
        changes.mark_unchanged();
        done.retain(|&id| symbols.is_active(id));
        let todo: Vec<SymbolId> = symbols
            .active()
            .map(|(id, _)| id)
            .filter(|id| !done.contains(id))
            .collect();
        if !todo.is_empty() {
            let filled = bootstrap_symbols(
                &config,
                &symbols,
                &todo,
                &chain,
                &store,
                clock.now_ms(),
                false,
                &on_recent,
            );
            let done_now = tokio::select! {
                () = shutdown.cancelled() => return,
                done_now = filled => done_now,
            };
            match done_now {
                Ok(stats) => {
                    log.recovered(stats.stored);
                    log_stats(stats, todo.len());
                    done.extend(todo);
                    wait = Duration::from_secs(1);
                }
                Err(e) => {
                    log.failed(&e, store.pending_rows());
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        () = tokio::time::sleep(wait) => {}
                    }
                    wait = (wait * 2).min(crate::store::writer::RETRY_MAX);
                    continue;
                }
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            changed = changes.changed() => if changed.is_err() { return },
        }
    }
}

/// The log line of a finished bootstrap of `symbols` symbols.
pub fn log_stats(stats: BootstrapStats, symbols: usize) {
    tracing::info!(
        symbols,
        stored = stats.stored,
        rejected = stats.rejected,
        failed_windows = stats.failed_windows,
        skipped_windows = stats.skipped_windows,
        "bootstrap done"
    );
}

/// The windows that fill `[now − days, now)` around what is stored (`span`: oldest and newest
/// stored open time): after the newest, oldest first; then before the oldest, newest first.
fn windows(
    symbol: SymbolId,
    timeframe: Timeframe,
    now_ms: i64,
    days: u32,
    span: Option<(i64, i64)>,
) -> Vec<Window> {
    let step = WINDOW_BARS * timeframe.ms();
    let to = timeframe.bucket(now_ms);
    let days_back = (i64::from(days) * 86_400_000).min(MAX_SERIES_BARS * timeframe.ms());
    let oldest = timeframe.bucket(to - days_back);
    let window = |from, to, backward| Window {
        symbol,
        timeframe,
        from,
        to,
        backward,
    };
    let mut plan = Vec::new();
    let past_end = match span {
        None => to,
        Some((first, last)) => {
            let mut start = (last + timeframe.ms()).max(oldest);
            while start < to {
                let end = (start + step).min(to);
                plan.push(window(start, end, false));
                start = end;
            }
            first.min(to)
        }
    };
    let mut end = past_end;
    while end > oldest {
        let start = (end - step).max(oldest);
        plan.push(window(start, end, true));
        end = start;
    }
    plan
}

/// The chain, and what its sources said they do not serve.
struct Asked<'a> {
    chain: &'a SourceChain,
    /// (index in the chain, symbol, timeframe) a source answered "not served" for this run.
    not_served: HashSet<(usize, SymbolId, Timeframe)>,
}

impl Asked<'_> {
    /// Whether source `i` may be asked for this series: it serves the symbol and the timeframe
    /// and has not said otherwise. Checked before any budget is taken.
    fn may_ask(&self, i: usize, symbol: SymbolId, tf: Timeframe) -> bool {
        self.chain.serves_history(i, symbol, tf) && !self.not_served.contains(&(i, symbol, tf))
    }

    fn any_for(&self, symbol: SymbolId, tf: Timeframe) -> bool {
        (0..self.chain.len()).any(|i| self.may_ask(i, symbol, tf))
    }
}

/// One window from the first source that answers it, each asked within a permit of the chain:
/// the bootstrap waits for a source's budget (up to [`MAX_BUDGET_WAIT`]) and moves on when its
/// daily quota is spent, its breaker is open, or it fails.
async fn fetch(
    asked: &mut Asked<'_>,
    symbols: &SymbolTable,
    w: Window,
    progress: &ProgressBar,
) -> Option<(&'static str, Vec<Bar>)> {
    let symbol_name = symbols.name(w.symbol);
    let chain = asked.chain;
    let mut sent = false;
    for i in 0..chain.len() {
        if !asked.may_ask(i, w.symbol, w.timeframe) {
            continue;
        }
        let name = chain.source(i).name();
        let mut rate_limited = 0;
        while rate_limited < RATE_LIMITED_TRIES {
            match chain.budget_wait(i, 1) {
                None => {
                    tracing::debug!(source = name, "daily budget spent; asking the next source");
                    break;
                }
                Some(wait) if wait > MAX_BUDGET_WAIT => break,
                Some(wait) if !wait.is_zero() => {
                    progress.set_message(format!(
                        "{symbol_name} {}: waiting {wait:.0?} for {name}'s budget",
                        w.timeframe
                    ));
                    tokio::time::sleep(wait).await;
                }
                Some(_) => {}
            }
            let answer = chain
                .history(
                    i,
                    w.symbol,
                    w.timeframe,
                    w.from,
                    w.to,
                    Work::Batch,
                    REQUEST_TIMEOUT,
                    Attempt {
                        retry: u32::try_from(rate_limited).unwrap_or(u32::MAX),
                        fallback: sent,
                    },
                )
                .await;
            sent |= matches!(answer, Ok(_) | Err(Answer::Failed(_)));
            match answer {
                Ok(bars) => return Some((name, bars)),
                // Taken by live quotes meanwhile: wait again.
                Err(Answer::Refused(Refusal::NoBudget)) => {}
                Err(Answer::Refused(_)) => break,
                Err(Answer::Failed(e)) if e.kind() == ErrorKind::RateLimited => rate_limited += 1,
                Err(Answer::Failed(e)) if e.kind() == ErrorKind::NotServed => {
                    tracing::info!(source = name, symbol = %symbol_name, timeframe = %w.timeframe, error = %e, "history not served; this source is not asked for this series again");
                    asked.not_served.insert((i, w.symbol, w.timeframe));
                    break;
                }
                Err(Answer::Failed(e)) => {
                    tracing::warn!(source = name, symbol = %symbol_name, error = %e, "history window failed; trying the next source");
                    break;
                }
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000;
    const DAY: i64 = 86_400_000;

    fn spans(plan: &[Window]) -> Vec<(i64, i64)> {
        plan.iter().map(|w| (w.from / MIN, w.to / MIN)).collect()
    }

    #[test]
    fn the_present_is_filled_forward_and_the_past_backward() {
        let tf: Timeframe = "1m".parse().expect("tf");
        let now = 10 * DAY + 30 * MIN + 5_000;
        let empty = windows(0, tf, now, 1, None);
        let to = (10 * DAY + 30 * MIN) / MIN;
        assert_eq!(spans(&empty)[0], (to - 1_000, to), "newest first");
        assert_eq!(
            spans(&empty)[1],
            (to - 1_440, to - 1_000),
            "down to a day ago"
        );
        assert_eq!(empty.last().map(|w| w.from), Some(9 * DAY + 30 * MIN));
        assert_eq!(empty.iter().map(|w| w.to - w.from).sum::<i64>(), DAY);

        // Stored: the last 100 minutes up to 10 minutes ago.
        let (first, last) = (now - 110 * MIN, now - 11 * MIN);
        let (first, last) = (tf.bucket(first), tf.bucket(last));
        let plan = windows(0, tf, now, 1, Some((first, last)));
        assert_eq!(spans(&plan)[0], (to - 10, to), "the present first");
        assert_eq!(
            spans(&plan)[1],
            (first / MIN - 1_000, first / MIN),
            "then the past"
        );
        let covered: i64 = plan.iter().map(|w| w.to - w.from).sum();
        assert_eq!(covered + (last - first + MIN), DAY, "no gap, no overlap");

        let full = windows(0, tf, now, 1, Some((9 * DAY + 30 * MIN, to * MIN - MIN)));
        assert!(full.is_empty(), "{full:?}");

        let second: Timeframe = "1s".parse().expect("tf");
        let capped = windows(0, second, now, 90, None);
        let bars: i64 = capped.iter().map(|w| (w.to - w.from) / 1_000).sum();
        assert_eq!(bars, MAX_SERIES_BARS, "90 days of 1s bars are capped");
    }
}
