//! Replaying sampling strategies from one draw, for offline evaluation.
//!
//! Why: evaluating self-consistency, best-of-N and adaptive stopping at budgets 1, 2,
//! ..., 64 separately would sample 127 solutions per question and strategy. Every
//! sampling strategy draws its samples in waves of [`DEFAULT_WAVE_SIZE`] seeded by
//! call index, and sample `i` of a call uses the engine's stream `(seed, i)`, so a
//! query at budget `b` draws exactly the first `b` samples that a query at budget 64
//! draws. One scored draw of 64 ([`crate::solve::draw`]) therefore gives every one of
//! them, and the result is identical to running the strategy (a test checks this).
//!
//! Adaptive stopping replays exactly only with waves of [`DEFAULT_WAVE_SIZE`]
//! (`adaptive:8`): other wave sizes seed their calls differently.

use crate::error::{Result, SearchError};
use crate::strategy::sampling::{decisive, DEFAULT_WAVE_SIZE};
use crate::strategy::{select, Scored, StrategyKind};

/// What a replayed strategy would have answered, and what it would have spent.
#[derive(Debug, Clone, PartialEq)]
pub struct Replayed {
    pub answer: Option<String>,
    /// Samples used (the generation count of the real run).
    pub generations: u32,
}

/// True for the strategies [`replay`] reproduces.
pub fn replayable(strategy: StrategyKind) -> bool {
    match strategy {
        StrategyKind::SelfConsistency | StrategyKind::BestOfN | StrategyKind::WeightedBestOfN => {
            true
        }
        StrategyKind::Adaptive { wave, .. } => wave == DEFAULT_WAVE_SIZE,
        _ => false,
    }
}

/// The result of `strategy` at `budget` generations, from the first samples of `draw`
/// (which must hold at least `budget`).
pub fn replay(strategy: StrategyKind, budget: u32, draw: &[Scored]) -> Result<Replayed> {
    if !replayable(strategy) {
        return Err(SearchError::invalid(format!(
            "{} cannot be replayed from a draw; run it instead",
            strategy.spec()
        )));
    }
    if draw.len() < budget as usize {
        return Err(SearchError::invalid(format!(
            "replaying budget {budget} needs a draw of at least {budget} samples, got {}",
            draw.len()
        )));
    }
    let used = match strategy {
        StrategyKind::Adaptive { wave, share, rule } => {
            // The same stopping test, before each wave, as the live sampler.
            let min_answered = wave.max(4);
            let mut drawn = 0u32;
            while drawn < budget
                && !decisive(
                    rule,
                    &draw[..drawn as usize],
                    budget - drawn,
                    share,
                    min_answered,
                )
            {
                drawn += wave.min(budget - drawn);
            }
            drawn
        }
        _ => budget,
    };
    let pick = select(strategy.rule(), &draw[..used as usize]);
    Ok(Replayed {
        answer: pick.and_then(|p| p.answer),
        generations: used,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(a: &str, s: f32) -> Scored {
        Scored {
            text: String::new(),
            answer: Some(a.into()),
            score: Some(s),
        }
    }

    #[test]
    fn prefixes_and_stops() {
        let mut draw: Vec<Scored> = (0..8).map(|_| c("7", 0.9)).collect();
        draw.extend((0..8).map(|_| c("3", 0.95)));
        draw.extend((0..8).map(|_| c("3", 0.95)));
        let wbon = StrategyKind::WeightedBestOfN;
        assert_eq!(replay(wbon, 8, &draw).unwrap().answer.as_deref(), Some("7"));
        assert_eq!(
            replay(wbon, 24, &draw).unwrap().answer.as_deref(),
            Some("3")
        );
        let adaptive = StrategyKind::parse("adaptive:8").unwrap();
        // Eight agreeing samples hold the whole weight: it stops after one wave.
        let r = replay(adaptive, 24, &draw).unwrap();
        assert_eq!((r.answer.as_deref(), r.generations), (Some("7"), 8));
        assert!(replay(StrategyKind::parse("adaptive:4").unwrap(), 8, &draw).is_err());
        assert!(replay(wbon, 25, &draw).is_err());
        assert!(replay(StrategyKind::parse("beam_search").unwrap(), 4, &draw).is_err());
    }
}
