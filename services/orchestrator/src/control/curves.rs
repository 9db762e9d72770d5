//! The accuracy curves a controller grants from: the policy's fitted accuracy against
//! budget per difficulty bin, pooled, and the bins' shares of the questions.

use super::law;
use ponder_search::strategy::compute_optimal::{Policy, BINS};

/// The accuracy curves grants are read from: one per difficulty bin and one pooled (for
/// a query whose bin is not known: before its probes, or a strategy without probes),
/// and each bin's share of the fitting questions (what the capacity law expects a
/// query's bin to be).
#[derive(Debug, Clone, PartialEq)]
pub struct Curves {
    bins: Vec<Vec<(u32, f64)>>,
    weights: Vec<f64>,
    pooled: Vec<(u32, f64)>,
}

impl Curves {
    /// The policy's fitted curves (schema 2), or [`law::fallback_curve`] for every bin
    /// when it has none.
    pub fn from_policy(policy: &Policy) -> Self {
        let pooled = policy.curve(None);
        if pooled.is_empty() {
            return Self {
                pooled: law::fallback_curve(),
                ..Self::with_bins(vec![law::fallback_curve(); BINS], vec![1.0; BINS])
            };
        }
        let bins = (0..BINS)
            .map(|b| {
                let c = policy.curve(Some(b));
                if c.is_empty() {
                    pooled.clone()
                } else {
                    c
                }
            })
            .collect();
        // A bin's questions are counted at every budget of its curve: take the most.
        let weights = (0..BINS)
            .map(|b| {
                policy
                    .accuracy
                    .iter()
                    .filter(|p| p.bin as usize == b + 1)
                    .map(|p| p.questions as f64)
                    .fold(0.0, f64::max)
            })
            .collect();
        Self {
            pooled,
            ..Self::with_bins(bins, weights)
        }
    }

    /// Curves of the given bins, weighted by `weights` (normalised here; all zero: equal
    /// weights), pooled at every budget of any bin.
    pub fn with_bins(bins: Vec<Vec<(u32, f64)>>, weights: Vec<f64>) -> Self {
        let total: f64 = weights.iter().sum();
        let weights: Vec<f64> = if total > 0.0 {
            weights.iter().map(|w| w / total).collect()
        } else {
            vec![1.0 / bins.len() as f64; bins.len()]
        };
        let budgets: std::collections::BTreeSet<u32> =
            bins.iter().flatten().map(|(g, _)| *g).collect();
        let pooled = budgets
            .into_iter()
            .map(|g| {
                let a = bins
                    .iter()
                    .zip(&weights)
                    .map(|(c, w)| w * law::accuracy_at(c, g))
                    .sum();
                (g, a)
            })
            .collect();
        Self {
            bins,
            weights,
            pooled,
        }
    }

    pub fn get(&self, bin: Option<usize>) -> &[(u32, f64)] {
        match bin {
            Some(b) => &self.bins[b.min(self.bins.len() - 1)],
            None => &self.pooled,
        }
    }

    /// The generations a query of `max` and `floor` whose bin is not known yet is
    /// expected to spend at `price`: its grant in each bin, weighted by the bins' shares
    /// of the questions, and never less than its `probes` (compute-optimal's, spent
    /// before the bin is known; as many as the first grant, on the pooled curve, allows).
    pub fn expected_spend(&self, price: f64, max: u32, floor: u32, probes: u32) -> f64 {
        let probes = probes.min(law::grant(&self.pooled, price, max, floor).generations);
        self.bins
            .iter()
            .zip(&self.weights)
            .map(|(c, w)| w * law::grant(c, price, max, floor).generations.max(probes) as f64)
            .sum()
    }
}
