//! The strategy library: which strategies exist, their parameters, their budget cost,
//! and how each picks a final answer. The algorithms live in the submodules:
//! [`sampling`] (independent samples, with optional early stopping), [`tree`] (beam
//! search, lookahead, DVTS, REBASE over single steps), [`revisions`] (sequential
//! revision chains) and [`compute_optimal`] (difficulty probes plus a policy table).

pub mod compute_optimal;
pub mod curves;
pub mod policy;
pub mod revisions;
pub mod sampling;
mod select;
pub mod tree;

pub use select::{select, Rule, Scored, Selection, Tally};

use crate::error::{Result, SearchError};

pub const DEFAULT_BEAM_WIDTH: u32 = 4;
pub const DEFAULT_MAX_ROUNDS: u32 = 40;
pub const DEFAULT_LOOKAHEAD: u32 = 2;
pub const DEFAULT_REBASE_TEMPERATURE: f32 = 0.2;
pub const DEFAULT_WAVE: u32 = 4;
pub const DEFAULT_STOP_SHARE: f32 = 0.75;

/// A strategy with its parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum StrategyKind {
    /// One greedy (temperature 0) solution, unscored: a model's single-pass baseline,
    /// which a ladder policy may choose when the budget buys no search. Cost: 1.
    Greedy,
    /// Majority vote over final answers (no verifier). Cost: N.
    SelfConsistency,
    /// The single candidate with the highest aggregated PRM score. Cost: N.
    BestOfN,
    /// The answer with the largest sum of its candidates' PRM scores. Cost: N.
    WeightedBestOfN,
    /// N beams of single steps; each round keeps the best N/width and expands each
    /// `width` ways. Cost: N.
    BeamSearch { width: u32, max_rounds: u32 },
    /// Beam search where a step is scored after a greedy rollout of `depth` more
    /// steps. Cost: N(depth+1), so N = budget / (depth+1).
    Lookahead {
        width: u32,
        depth: u32,
        max_rounds: u32,
    },
    /// N/width independent subtrees, each greedy by PRM with `width` expansions per
    /// step. Cost: N.
    Dvts { width: u32, max_rounds: u32 },
    /// Reward-weighted expansion: each depth's remaining width is shared among the
    /// open nodes in proportion to softmax(score / temperature). Cost: N.
    Rebase { temperature: f32, max_rounds: u32 },
    /// `chains` sequential revision chains (0: about sqrt(N)), each attempt
    /// conditioned on the chain's earlier attempts. Cost: N attempts.
    Revisions { chains: u32, rule: Rule },
    /// Samples in waves and stops once the vote is decided or one answer holds
    /// `share` of it. Cost: at most N; what it does not use is not spent.
    Adaptive { wave: u32, share: f32, rule: Rule },
    /// Estimate difficulty with probe samples, then run what the policy table says
    /// is best for that difficulty and budget.
    ComputeOptimal,
}

impl StrategyKind {
    pub const NAMES: [&'static str; 11] = [
        "greedy",
        "self_consistency",
        "best_of_n",
        "weighted_best_of_n",
        "beam_search",
        "lookahead",
        "dvts",
        "rebase",
        "revisions",
        "adaptive",
        "compute_optimal",
    ];

    /// Parses `name` or `name:param`, the param being the beam width (beam_search,
    /// dvts, lookahead), the lookahead depth is fixed at its default, REBASE's
    /// temperature, or the number of revision chains.
    pub fn parse(spec: &str) -> Result<Self> {
        let spec = spec.trim();
        let (name, param) = match spec.split_once(':') {
            Some((n, p)) => (n, Some(p)),
            None => (spec, None),
        };
        let int = |default: u32| -> Result<u32> {
            match param {
                None => Ok(default),
                Some(p) => p.parse::<u32>().ok().filter(|v| *v >= 1).ok_or_else(|| {
                    SearchError::invalid(format!(
                        "{name}:{p}: the parameter must be a positive integer"
                    ))
                }),
            }
        };
        let s = match name {
            "greedy" => Self::Greedy,
            "self_consistency" | "majority" => Self::SelfConsistency,
            "best_of_n" => Self::BestOfN,
            "weighted_best_of_n" | "best_of_n_weighted" => Self::WeightedBestOfN,
            "beam_search" => Self::BeamSearch {
                width: int(DEFAULT_BEAM_WIDTH)?,
                max_rounds: DEFAULT_MAX_ROUNDS,
            },
            "lookahead" => Self::Lookahead {
                width: int(DEFAULT_BEAM_WIDTH)?,
                depth: DEFAULT_LOOKAHEAD,
                max_rounds: DEFAULT_MAX_ROUNDS,
            },
            "dvts" => Self::Dvts {
                width: int(DEFAULT_BEAM_WIDTH)?,
                max_rounds: DEFAULT_MAX_ROUNDS,
            },
            "rebase" => Self::Rebase {
                temperature: match param {
                    None => DEFAULT_REBASE_TEMPERATURE,
                    Some(p) => p
                        .parse::<f32>()
                        .ok()
                        .filter(|t| t.is_finite() && *t > 0.0)
                        .ok_or_else(|| {
                            SearchError::invalid(format!(
                                "rebase:{p}: the temperature must be a positive number"
                            ))
                        })?,
                },
                max_rounds: DEFAULT_MAX_ROUNDS,
            },
            "revisions" => Self::Revisions {
                chains: int(0)?,
                rule: Rule::Weighted,
            },
            "adaptive" => Self::Adaptive {
                wave: int(DEFAULT_WAVE)?,
                share: DEFAULT_STOP_SHARE,
                rule: Rule::Weighted,
            },
            "compute_optimal" => Self::ComputeOptimal,
            other => {
                return Err(SearchError::invalid(format!(
                    "unknown strategy {other:?}; available: {}",
                    Self::NAMES.join(", ")
                )))
            }
        };
        if param.is_some()
            && matches!(
                s,
                Self::Greedy
                    | Self::SelfConsistency
                    | Self::BestOfN
                    | Self::WeightedBestOfN
                    | Self::ComputeOptimal
            )
        {
            return Err(SearchError::invalid(format!("{name} takes no parameter")));
        }
        s.validate()?;
        Ok(s)
    }

    pub fn name(&self) -> &'static str {
        match self {
            Self::Greedy => "greedy",
            Self::SelfConsistency => "self_consistency",
            Self::BestOfN => "best_of_n",
            Self::WeightedBestOfN => "weighted_best_of_n",
            Self::BeamSearch { .. } => "beam_search",
            Self::Lookahead { .. } => "lookahead",
            Self::Dvts { .. } => "dvts",
            Self::Rebase { .. } => "rebase",
            Self::Revisions { .. } => "revisions",
            Self::Adaptive { .. } => "adaptive",
            Self::ComputeOptimal => "compute_optimal",
        }
    }

    /// The name with its parameter, parseable by [`StrategyKind::parse`].
    pub fn spec(&self) -> String {
        match self {
            Self::BeamSearch { width, .. }
            | Self::Lookahead { width, .. }
            | Self::Dvts { width, .. } => {
                format!("{}:{width}", self.name())
            }
            Self::Rebase { temperature, .. } => format!("rebase:{temperature}"),
            Self::Revisions { chains, .. } if *chains > 0 => format!("revisions:{chains}"),
            Self::Adaptive { wave, .. } => format!("adaptive:{wave}"),
            _ => self.name().to_string(),
        }
    }

    /// Parameter ranges; messages say what to send instead.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(SearchError::invalid(m));
        match *self {
            Self::BeamSearch { width, max_rounds }
            | Self::Dvts { width, max_rounds }
            | Self::Lookahead {
                width, max_rounds, ..
            } => {
                if !(1..=256).contains(&width) {
                    return bad(format!(
                        "{}: beam_width must be in 1..=256, got {width}",
                        self.name()
                    ));
                }
                if !(1..=1000).contains(&max_rounds) {
                    return bad(format!(
                        "{}: max_rounds must be in 1..=1000, got {max_rounds}",
                        self.name()
                    ));
                }
                if let Self::Lookahead { depth, .. } = *self {
                    if !(1..=16).contains(&depth) {
                        return bad(format!("lookahead: depth must be in 1..=16, got {depth}"));
                    }
                }
            }
            Self::Rebase {
                temperature,
                max_rounds,
            } => {
                if !(temperature.is_finite() && temperature > 0.0 && temperature <= 100.0) {
                    return bad(format!(
                        "rebase: temperature must be in (0, 100], got {temperature}"
                    ));
                }
                if !(1..=1000).contains(&max_rounds) {
                    return bad(format!(
                        "rebase: max_rounds must be in 1..=1000, got {max_rounds}"
                    ));
                }
            }
            Self::Revisions { chains, .. } if chains > 4096 => {
                return bad(format!(
                    "revisions: chains must be at most 4096, got {chains}"
                ));
            }
            Self::Adaptive { wave, share, .. } => {
                if !(1..=256).contains(&wave) {
                    return bad(format!(
                        "adaptive: wave_size must be in 1..=256, got {wave}"
                    ));
                }
                if !(share.is_finite() && share > 0.5 && share <= 1.0) {
                    return bad(format!(
                        "adaptive: stop_share must be in (0.5, 1], got {share}"
                    ));
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// The round limit of a tree strategy.
    pub fn max_rounds(&self) -> Option<u32> {
        match *self {
            Self::BeamSearch { max_rounds, .. }
            | Self::Lookahead { max_rounds, .. }
            | Self::Dvts { max_rounds, .. }
            | Self::Rebase { max_rounds, .. } => Some(max_rounds),
            _ => None,
        }
    }

    pub fn needs_verifier(&self) -> bool {
        !matches!(
            self,
            Self::Greedy
                | Self::SelfConsistency
                | Self::Revisions {
                    rule: Rule::Majority,
                    ..
                }
                | Self::Adaptive {
                    rule: Rule::Majority,
                    ..
                }
        )
    }

    /// How the final answer is picked among candidates.
    pub fn rule(&self) -> Rule {
        match self {
            Self::Greedy | Self::SelfConsistency => Rule::Majority,
            Self::BestOfN => Rule::Best,
            Self::Revisions { rule, .. } | Self::Adaptive { rule, .. } => *rule,
            _ => Rule::Weighted,
        }
    }

    /// The strategy used when a request names none.
    pub fn best_available(has_verifier: bool) -> Self {
        if has_verifier {
            Self::ComputeOptimal
        } else {
            Self::SelfConsistency
        }
    }
}

/// Runs `strategy` with `n` generations (its budget unit) after `initial` candidates
/// (already paid for; included in the final choice). Compute-optimal is not run here:
/// it chooses among these.
pub async fn run<G: crate::Generate, S: crate::Score>(
    ctx: &crate::context::Context<'_, G, S>,
    strategy: StrategyKind,
    n: u32,
    initial: Vec<Scored>,
) -> Result<Vec<Scored>> {
    use sampling::{sample, Stop, DEFAULT_WAVE_SIZE, MAX_WAVES_IN_FLIGHT};
    let mut out = match strategy {
        StrategyKind::Greedy => {
            return sample(ctx, strategy, n.min(1), 1, 1, Stop::Never, initial).await;
        }
        StrategyKind::SelfConsistency | StrategyKind::BestOfN | StrategyKind::WeightedBestOfN => {
            return sample(
                ctx,
                strategy,
                n,
                DEFAULT_WAVE_SIZE,
                MAX_WAVES_IN_FLIGHT,
                Stop::Never,
                initial,
            )
            .await;
        }
        StrategyKind::Adaptive { wave, share, .. } => {
            let stop = Stop::Decisive {
                share,
                min_answered: wave.max(4),
            };
            return sample(ctx, strategy, n, wave, 1, stop, initial).await;
        }
        _ => initial,
    };
    // The operator's round cap also holds for strategies the policy picks.
    let cap = ctx.max_rounds();
    let more = match strategy {
        StrategyKind::BeamSearch { width, max_rounds } => {
            let max_rounds = max_rounds.min(cap);
            tree::beam(ctx, strategy, n, width, 0, max_rounds).await?
        }
        StrategyKind::Lookahead {
            width,
            depth,
            max_rounds,
        } => {
            let max_rounds = max_rounds.min(cap);
            let beams = n / (depth + 1);
            if beams == 0 {
                return Err(SearchError::invalid(format!(
                    "lookahead with depth {depth} costs {} generations per beam; the budget leaves {n}",
                    depth + 1
                )));
            }
            tree::beam(ctx, strategy, beams, width, depth, max_rounds).await?
        }
        StrategyKind::Dvts { width, max_rounds } => {
            tree::dvts(ctx, strategy, n, width, max_rounds.min(cap)).await?
        }
        StrategyKind::Rebase {
            temperature,
            max_rounds,
        } => tree::rebase(ctx, strategy, n, temperature, max_rounds.min(cap)).await?,
        StrategyKind::Revisions { chains, .. } => {
            revisions::revisions(ctx, strategy, n, chains).await?
        }
        _ => return Err(SearchError::invalid("compute_optimal cannot be nested")),
    };
    out.extend(more);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_bad_specs_say_why() {
        for name in StrategyKind::NAMES {
            let s = StrategyKind::parse(name).unwrap();
            assert_eq!(s.name(), name);
            assert_eq!(StrategyKind::parse(&s.spec()).unwrap(), s);
        }
        assert_eq!(
            StrategyKind::parse("beam_search:8").unwrap(),
            StrategyKind::BeamSearch {
                width: 8,
                max_rounds: DEFAULT_MAX_ROUNDS
            }
        );
        for bad in [
            "mcts",
            "beam_search:0",
            "beam_search:x",
            "rebase:-1",
            "best_of_n:3",
            "beam_search:999",
        ] {
            assert!(
                matches!(StrategyKind::parse(bad), Err(SearchError::Invalid(_))),
                "{bad}"
            );
        }
    }
}
