//! A verifier ensemble's scoring: every member is a model worker of its own (its own
//! thread, KV and prefix caches), sent the same request at once; their readings of each
//! step are combined and the combination chained (`prm.json` `members`, `combine`).
//!
//! Why members are whole workers rather than a second model in one batch loop: a
//! worker owns one model's state by design, and a member's passes then batch with its
//! own other requests exactly as a single verifier's do.

use super::{ModelWorker, ScoreRequest, ScoreResponse, WorkerConfig};
use crate::engine::Ensemble;
use crate::error::{EngineError, Result};
use crate::prm::{Chain, Combine};
use std::future::Future;

/// The other members of an ensemble, as the primary worker's handle holds them.
pub(super) struct EnsembleWorkers {
    members: Vec<ModelWorker>,
    combine: Combine,
    chain: Chain,
}

impl EnsembleWorkers {
    /// Starts one worker per member, with the primary's settings.
    pub(super) fn spawn(ensemble: Ensemble, config: &WorkerConfig) -> Self {
        Self {
            members: ensemble
                .members
                .into_iter()
                .map(|m| ModelWorker::spawn(m, config.clone()))
                .collect(),
            combine: ensemble.combine,
            chain: ensemble.chain,
        }
    }

    /// Scores `req` with `own` (the primary's unchained scoring of it) and every member
    /// at once, then combines their readings step by step and chains them.
    ///
    /// The tokens reported are the primary's: every member runs the same tokens, less
    /// what its own prefix cache reuses, and its cache holds at least as many tokens as
    /// the primary's (a smaller model's KV is smaller), so FLOPs counted at all the
    /// ensemble's parameters over these tokens never undercount.
    pub(super) async fn score(
        &self,
        tenant: u64,
        req: ScoreRequest,
        own: impl Future<Output = Result<ScoreResponse>>,
    ) -> Result<ScoreResponse> {
        let members = futures::future::try_join_all(
            self.members
                .iter()
                .map(|m| m.score_for(tenant, req.clone())),
        );
        let (mut out, members) = futures::future::try_join(own, members).await?;
        for member in members {
            if member.scores.len() != out.scores.len() {
                return Err(EngineError::Internal(
                    "an ensemble member scored another number of candidates".into(),
                ));
            }
            for (mine, theirs) in out.scores.iter_mut().zip(&member.scores) {
                if mine.len() != theirs.len() {
                    return Err(EngineError::Internal(
                        "an ensemble member read another number of steps".into(),
                    ));
                }
                self.combine.fold(mine, theirs);
            }
        }
        out.scores = out
            .scores
            .into_iter()
            .map(|readings| self.chain.apply(readings))
            .collect();
        Ok(out)
    }
}
