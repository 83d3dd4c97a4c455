/*!
A buy/sell/neutral signal from the features, by fixed, documented rules.

Five votes, each +1 (bullish), −1 (bearish) or 0:
1. trend: EMA fast above EMA slow → +1, below → −1;
2. momentum: MACD histogram > 0 → +1, < 0 → −1;
3. RSI: below 30 (oversold) → +1, above 70 (overbought) → −1;
4. Bollinger: close below the lower band → +1, above the upper band → −1;
5. Stochastic: %K below 20 and above %D (turning up) → +1, %K above 80 and below %D → −1.

The score is the sum (−5 … +5): ≥ 2 is `buy`, ≤ −2 is `sell`, otherwise `neutral`. Confidence
is |score| / 5, multiplied by a freshness factor that falls linearly from 1 (data just received)
to 0 (data as old as `STALE_AFTER`). Until every input is ready the signal is `neutral` with
confidence 0; while the symbol's market is closed it is `neutral` with confidence 0 and the
reason `market_closed`. These rules are a transparent default for bots that want one, not advice.
*/

use serde::Serialize;

use crate::indicators::idx;
use crate::model::Features;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Buy,
    Sell,
    Neutral,
}

/// The signal and why.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Signal {
    pub signal: Direction,
    pub score: i32,
    pub confidence: f64,
    pub reasons: Vec<&'static str>,
}

/// Applies the rules above to `features` of a bar closing at `close`, with data `age_ms` old.
pub fn evaluate(features: &Features, close: f64, age_ms: i64, stale_after_ms: i64) -> Signal {
    let v = |i: usize| features.get(i);
    let (Some(fast), Some(slow), Some(hist), Some(rsi), Some(upper), Some(lower), Some(k), Some(d)) = (
        v(idx::EMA_FAST),
        v(idx::EMA_SLOW),
        v(idx::MACD_HIST),
        v(idx::RSI),
        v(idx::BB_UPPER),
        v(idx::BB_LOWER),
        v(idx::STOCH_K),
        v(idx::STOCH_D),
    ) else {
        return Signal {
            signal: Direction::Neutral,
            score: 0,
            confidence: 0.0,
            reasons: vec!["warming_up"],
        };
    };
    let mut score = 0;
    let mut reasons = Vec::new();
    let mut vote = |cond_up: bool, cond_down: bool, up: &'static str, down: &'static str| {
        if cond_up {
            score += 1;
            reasons.push(up);
        } else if cond_down {
            score -= 1;
            reasons.push(down);
        }
    };
    vote(fast > slow, fast < slow, "ema_uptrend", "ema_downtrend");
    vote(hist > 0.0, hist < 0.0, "macd_positive", "macd_negative");
    vote(rsi < 30.0, rsi > 70.0, "rsi_oversold", "rsi_overbought");
    vote(
        close < lower,
        close > upper,
        "below_lower_band",
        "above_upper_band",
    );
    vote(
        k < 20.0 && k > d,
        k > 80.0 && k < d,
        "stoch_turning_up",
        "stoch_turning_down",
    );
    let signal = match score {
        s if s >= 2 => Direction::Buy,
        s if s <= -2 => Direction::Sell,
        _ => Direction::Neutral,
    };
    Signal {
        signal,
        score,
        confidence: confidence(score, age_ms, stale_after_ms),
        reasons,
    }
}

/// The signal of a symbol whose market is closed: nothing to act on until it opens.
pub fn market_closed() -> Signal {
    Signal {
        signal: Direction::Neutral,
        score: 0,
        confidence: 0.0,
        reasons: vec!["market_closed"],
    }
}

/// |score| / 5, lowered linearly to 0 as the data ages to `stale_after_ms`.
pub fn confidence(score: i32, age_ms: i64, stale_after_ms: i64) -> f64 {
    let freshness = 1.0 - (age_ms.max(0) as f64 / stale_after_ms.max(1) as f64).min(1.0);
    f64::from(score.abs()) / 5.0 * freshness
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::FEATURE_COUNT;

    fn features(set: &[(usize, f64)]) -> Features {
        let mut f = Features {
            values: [0.0; FEATURE_COUNT],
        };
        for &(i, v) in set {
            f.values[i] = v;
        }
        f
    }

    #[test]
    fn rules_vote_and_age_lowers_confidence() {
        let bullish = features(&[
            (idx::EMA_FAST, 101.0),
            (idx::EMA_SLOW, 100.0),
            (idx::MACD_HIST, 0.5),
            (idx::RSI, 25.0),
            (idx::BB_UPPER, 110.0),
            (idx::BB_LOWER, 99.0),
            (idx::STOCH_K, 15.0),
            (idx::STOCH_D, 10.0),
        ]);
        let fresh = evaluate(&bullish, 98.0, 0, 60_000);
        assert_eq!(
            (fresh.signal, fresh.score, fresh.confidence),
            (Direction::Buy, 5, 1.0)
        );
        let old = evaluate(&bullish, 98.0, 45_000, 60_000);
        assert!((old.confidence - 0.25).abs() < 1e-12);
        assert_eq!(evaluate(&bullish, 98.0, 90_000, 60_000).confidence, 0.0);
        let mixed = features(&[
            (idx::EMA_FAST, 99.0),
            (idx::EMA_SLOW, 100.0),
            (idx::MACD_HIST, 0.1),
            (idx::RSI, 50.0),
            (idx::BB_UPPER, 110.0),
            (idx::BB_LOWER, 90.0),
            (idx::STOCH_K, 50.0),
            (idx::STOCH_D, 50.0),
        ]);
        assert_eq!(
            evaluate(&mixed, 100.0, 0, 60_000).signal,
            Direction::Neutral
        );
    }

    #[test]
    fn not_ready_is_neutral_with_no_confidence() {
        let mut f = features(&[]);
        f.values[idx::RSI] = f64::NAN;
        let s = evaluate(&f, 1.0, 0, 60_000);
        assert_eq!(
            (s.signal, s.confidence, s.reasons),
            (Direction::Neutral, 0.0, vec!["warming_up"])
        );
    }
}
