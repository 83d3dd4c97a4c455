/*!
`barkeep replay`: the bars of a CSV file (`sources::replay` reads them) through the validator and
the indicators, as the live pipeline would take them; one JSON line per accepted bar, one line
per rejected or unreadable row.
*/

use std::io::Write;

use crate::app::AppError;
use crate::config::Config;
use crate::indicators::IndicatorSet;
use crate::sources::replay;
use crate::store::snapshot::NamedFeatures;
use crate::validate::{Validator, Verdict};

/// One line of `replay`'s output: the bar, its quality and every feature, flat.
#[derive(serde::Serialize)]
struct ReplayLine<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    symbol: Option<&'a str>,
    #[serde(flatten)]
    bar: &'a crate::model::Bar,
    quality: f64,
    #[serde(flatten)]
    features: NamedFeatures<'a>,
}

/// The usual time between consecutive rows (the median of the first few hundred spacings), the
/// validator's interval for a file whose bar length is not declared.
fn typical_spacing_ms(rows: &[Result<crate::model::Bar, replay::ReplayError>]) -> i64 {
    let times: Vec<i64> = rows
        .iter()
        .filter_map(|r| r.as_ref().ok())
        .map(|b| b.ts)
        .take(SPACING_SAMPLE)
        .collect();
    let mut spacings: Vec<i64> = times
        .windows(2)
        .map(|w| w[1] - w[0])
        .filter(|&d| d > 0)
        .collect();
    spacings.sort_unstable();
    spacings.get(spacings.len() / 2).copied().unwrap_or(60_000)
}

/// Rows read ahead to find a file's bar length.
const SPACING_SAMPLE: usize = 501;

/// Counts of a replay.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReplayStats {
    pub printed: usize,
    pub rejected: usize,
}

/// `barkeep replay`: every CSV bar through the validator and the indicators; one JSON object
/// per accepted bar on `out` (the bar and every feature, `null` until ready), one line per
/// rejected or unreadable row on `err`.
///
/// # Errors
/// An unreadable file or header, or a failed write.
pub fn replay(
    config: &Config,
    input: impl std::io::Read,
    symbol: Option<&str>,
    mut out: impl Write,
    mut err: impl Write,
) -> Result<ReplayStats, AppError> {
    let mut rows = replay::read_bars(input)?;
    // The first rows tell the bar length; they are then replayed like the rest.
    let head: Vec<_> = rows.by_ref().take(SPACING_SAMPLE).collect();
    let mut validator = Validator::new(config.validation.clone(), typical_spacing_ms(&head));
    let rows = head.into_iter().chain(rows);
    let mut engine = IndicatorSet::new(&config.indicators);
    let names = config.indicators.feature_names();
    let mut stats = ReplayStats::default();
    for row in rows {
        let bar = match row {
            Ok(bar) => bar,
            Err(e) => {
                writeln!(err, "rejected: {e}")?;
                stats.rejected += 1;
                continue;
            }
        };
        match validator.check(&bar, None) {
            Verdict::Accept { quality } => {
                let features = engine.update(&bar);
                let line = ReplayLine {
                    symbol,
                    bar: &bar,
                    quality,
                    features: NamedFeatures {
                        names: &names,
                        features: &features,
                    },
                };
                serde_json::to_writer(&mut out, &line).map_err(std::io::Error::other)?;
                out.write_all(b"\n")?;
                stats.printed += 1;
            }
            Verdict::Duplicate => {
                writeln!(err, "rejected: ts={} duplicate of the previous bar", bar.ts)?;
                stats.rejected += 1;
            }
            Verdict::Reject(reason) => {
                writeln!(
                    err,
                    "rejected: ts={} reason={} open={} high={} low={} close={} volume={}",
                    bar.ts,
                    reason.as_str(),
                    bar.open,
                    bar.high,
                    bar.low,
                    bar.close,
                    bar.volume
                )?;
                stats.rejected += 1;
            }
        }
    }
    out.flush()?;
    Ok(stats)
}
