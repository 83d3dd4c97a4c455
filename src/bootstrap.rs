/*!
`barkeep bootstrap`: download history into SQLite before running, with a progress bar.

For every (symbol, timeframe) it asks the sources that serve history (in `SOURCES` order,
falling back on error) for the bars between `HISTORY_DAYS` ago — or just after the newest bar
already stored, so an interrupted bootstrap resumes where it stopped — and now, in windows of
at most [`WINDOW_BARS`] bars. Every bar goes through the validator; accepted bars are upserted
(running it twice changes nothing), rejected ones are counted. The next `barkeep run` warms its
indicators from what is stored.
*/

use std::sync::Arc;

use indicatif::{ProgressBar, ProgressStyle};

use crate::config::Config;
use crate::model::{SymbolId, SymbolTable, Timeframe};
use crate::sources::Source;
use crate::store::sqlite::{SqliteStore, StoreError, StoredBar};
use crate::validate::{Validator, Verdict};

/// Bars asked for per request.
pub const WINDOW_BARS: i64 = 1_000;

/// What a bootstrap did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct BootstrapStats {
    pub stored: usize,
    pub rejected: usize,
    pub failed_windows: usize,
}

/// Downloads history for every configured symbol and timeframe.
///
/// # Errors
/// A SQLite failure (source failures are counted and reported, not fatal).
pub async fn bootstrap(
    config: &Config,
    symbols: &SymbolTable,
    sources: &[Arc<dyn Source>],
    store: &Arc<SqliteStore>,
    now_ms: i64,
    show_progress: bool,
) -> Result<BootstrapStats, StoreError> {
    let history: Vec<&Arc<dyn Source>> = sources
        .iter()
        .filter(|s| s.capabilities().history)
        .collect();
    let mut plan: Vec<(SymbolId, Timeframe, i64, i64)> = Vec::new();
    for (symbol, _) in symbols.iter() {
        for &tf in &config.timeframes {
            let to = tf.bucket(now_ms);
            let oldest = to - config.history_days as i64 * 86_400_000;
            let newest = newest_stored(store, symbol, tf).await?;
            let from = newest.map_or(oldest, |t| (t + tf.ms()).max(oldest));
            let mut start = from;
            while start < to {
                let end = (start + WINDOW_BARS * tf.ms()).min(to);
                plan.push((symbol, tf, start, end));
                start = end;
            }
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
    let mut validators: Vec<Option<(SymbolId, Timeframe, Validator)>> = Vec::new();
    for (symbol, tf, from, to) in plan {
        bar.set_message(format!("{} {tf}", symbols.name(symbol)));
        let mut fetched = None;
        for source in history.iter().filter(|s| s.supports(symbol)) {
            match source.history(symbol, tf, from, to).await {
                Ok(bars) => {
                    fetched = Some((source.name(), bars));
                    break;
                }
                Err(e) => {
                    tracing::warn!(source = source.name(), symbol = %symbols.name(symbol), error = %e, "history window failed; trying the next source")
                }
            }
        }
        let Some((source, bars)) = fetched else {
            stats.failed_windows += 1;
            bar.inc(1);
            continue;
        };
        let validator = match validators
            .iter_mut()
            .flatten()
            .find(|(s, t, _)| *s == symbol && *t == tf)
        {
            Some((_, _, v)) => v,
            None => {
                validators.push(Some((
                    symbol,
                    tf,
                    Validator::new(config.validation.clone()),
                )));
                match validators.last_mut().and_then(Option::as_mut) {
                    Some((_, _, v)) => v,
                    None => continue,
                }
            }
        };
        let mut good = Vec::with_capacity(bars.len());
        for b in bars.iter().filter(|b| b.ts >= from && b.ts < to) {
            match validator.check(b, None) {
                Verdict::Accept { quality } => good.push(StoredBar {
                    bar: *b,
                    source: source.to_string(),
                    quality,
                }),
                Verdict::Duplicate => {}
                Verdict::Reject(_) => stats.rejected += 1,
            }
        }
        let store = Arc::clone(store);
        stats.stored += tokio::task::spawn_blocking(move || store.upsert_now(symbol, tf, &good))
            .await
            .map_err(|e| StoreError::Join(e.to_string()))??;
        bar.inc(1);
    }
    bar.finish_with_message(format!("{} bars stored", stats.stored));
    Ok(stats)
}

async fn newest_stored(
    store: &Arc<SqliteStore>,
    symbol: SymbolId,
    tf: Timeframe,
) -> Result<Option<i64>, StoreError> {
    let store = Arc::clone(store);
    tokio::task::spawn_blocking(move || store.ring_summary(symbol, tf, 1).map(|s| s.last_ts))
        .await
        .map_err(|e| StoreError::Join(e.to_string()))?
}
