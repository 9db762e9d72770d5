//! How a solution's per-step PRM rewards become one score.
//!
//! Snell et al. use the last step's reward; `min` and `prod` punish any weak step,
//! `mean` averages. One setting is used for every comparison within a query.

use crate::error::{Result, SearchError};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Aggregation {
    #[default]
    Last,
    Min,
    Prod,
    Mean,
}

impl Aggregation {
    pub fn parse(name: &str) -> Result<Self> {
        Ok(match name {
            "" | "last" => Self::Last,
            "min" => Self::Min,
            "prod" => Self::Prod,
            "mean" => Self::Mean,
            other => {
                return Err(SearchError::invalid(format!(
                    "unknown aggregation {other:?}; use one of last, min, prod, mean"
                )))
            }
        })
    }

    pub fn name(&self) -> &'static str {
        match self {
            Self::Last => "last",
            Self::Min => "min",
            Self::Prod => "prod",
            Self::Mean => "mean",
        }
    }

    /// The solution's score; 0 for a solution without steps.
    pub fn apply(&self, steps: &[f32]) -> f32 {
        if steps.is_empty() {
            return 0.0;
        }
        match self {
            Self::Last => steps[steps.len() - 1],
            Self::Min => steps.iter().copied().fold(f32::INFINITY, f32::min),
            Self::Prod => steps.iter().product(),
            Self::Mean => steps.iter().sum::<f32>() / steps.len() as f32,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aggregations() {
        let s = [0.9, 0.5, 0.8];
        assert_eq!(Aggregation::Last.apply(&s), 0.8);
        assert_eq!(Aggregation::Min.apply(&s), 0.5);
        assert!((Aggregation::Prod.apply(&s) - 0.36).abs() < 1e-6);
        assert!((Aggregation::Mean.apply(&s) - 2.2 / 3.0).abs() < 1e-6);
        assert_eq!(Aggregation::Last.apply(&[]), 0.0);
        assert!(Aggregation::parse("median").is_err());
    }
}
