//! The strategy library: which strategies exist, their names and parameters, and how
//! each picks a final answer from scored candidates.

mod select;

pub use select::{select, Scored, Selection, Tally};

use crate::error::{Result, SearchError};

/// A strategy with its parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StrategyKind {
    /// Majority vote over final answers (no verifier).
    SelfConsistency,
    /// The single candidate with the highest aggregated PRM score.
    BestOfN,
    /// The answer with the largest sum of its candidates' PRM scores.
    WeightedBestOfN,
}

impl StrategyKind {
    pub const ALL: [StrategyKind; 3] =
        [Self::SelfConsistency, Self::BestOfN, Self::WeightedBestOfN];

    /// Parses a strategy name (with default parameters).
    pub fn parse(name: &str) -> Result<Self> {
        Ok(match name.trim() {
            "self_consistency" | "majority" => Self::SelfConsistency,
            "best_of_n" => Self::BestOfN,
            "weighted_best_of_n" | "best_of_n_weighted" => Self::WeightedBestOfN,
            other => {
                let names: Vec<_> = Self::ALL.iter().map(|s| s.name()).collect();
                return Err(SearchError::invalid(format!(
                    "unknown strategy {other:?}; available: {}",
                    names.join(", ")
                )));
            }
        })
    }

    pub fn name(&self) -> &'static str {
        match self {
            Self::SelfConsistency => "self_consistency",
            Self::BestOfN => "best_of_n",
            Self::WeightedBestOfN => "weighted_best_of_n",
        }
    }

    pub fn needs_verifier(&self) -> bool {
        !matches!(self, Self::SelfConsistency)
    }

    /// The strategy used when a request names none: the best one available.
    pub fn best_available(has_verifier: bool) -> Self {
        if has_verifier {
            Self::WeightedBestOfN
        } else {
            Self::SelfConsistency
        }
    }
}
