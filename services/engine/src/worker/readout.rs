//! Readout: from the pass's hidden states, the logits of the last new row of every
//! decode segment and of every prompt's last chunk, and the PRM reading of every step of every scored
//! candidate (from its tag row, or from its tokens' rows for the likelihood readout).

use super::packing::RowUse;
use super::sequence::Scoring;
use crate::engine::LoadedModel;
use crate::error::{EngineError, Result};
use candle_core::Tensor;

/// What one pass produced, in pass order.
pub(super) struct Outputs {
    /// One row per decode use and per prefill use that ends its prompt.
    pub logits: Vec<Vec<f32>>,
    /// One score per tag, candidates in pass order.
    pub scores: Vec<f32>,
    /// Likelihood readout: each candidate's step-token log-probabilities, in pass order
    /// (for the prefix cache); empty otherwise.
    pub token_logp: Vec<Vec<f32>>,
}

pub(super) fn read_outputs(
    loaded: &LoadedModel,
    hidden: &Tensor,
    lens: &[usize],
    uses: &[RowUse],
    scorings: &[Scoring],
) -> Result<Outputs> {
    let mut gen_rows = Vec::new();
    let mut score_rows = Vec::new();
    let mut marked = Vec::new();
    let mut known = Vec::new();
    let mut offset = 0;
    for (u, len) in uses.iter().zip(lens) {
        match *u {
            RowUse::Decode { .. } | RowUse::Prefill { last: true, .. } => {
                gen_rows.push((offset + len - 1) as u32)
            }
            RowUse::Prefill { last: false, .. } => {}
            RowUse::Score { scoring, candidate } => {
                let input = &scorings[scoring].inputs[candidate];
                let prm = prm_of(loaded)?;
                let marks = (input.ids.as_slice(), input.tags.as_slice());
                // Rows before `reused` were read in an earlier pass (`input.known`).
                score_rows.extend(
                    prm.rows(marks)
                        .into_iter()
                        .filter(|&t| t >= input.reused)
                        .map(|t| (offset + t - input.reused) as u32),
                );
                marked.push(marks);
                known.push(input.known.as_slice());
            }
        }
        offset += len;
    }
    let device = hidden.device();
    let logits = if gen_rows.is_empty() {
        vec![]
    } else {
        let rows = hidden.index_select(&Tensor::new(gen_rows.as_slice(), device)?, 0)?;
        loaded.model.logits(&rows)?.to_vec2::<f32>()?
    };
    let (scores, token_logp) = if marked.is_empty() {
        (vec![], vec![])
    } else {
        let rows = match score_rows.is_empty() {
            true => None,
            false => Some(hidden.index_select(&Tensor::new(score_rows.as_slice(), device)?, 0)?),
        };
        let read = prm_of(loaded)?.readings(&loaded.model, rows.as_ref(), &marked, &known)?;
        (read.scores, read.token_logp)
    };
    Ok(Outputs {
        logits,
        scores,
        token_logp,
    })
}

fn prm_of(loaded: &LoadedModel) -> Result<&crate::prm::Prm> {
    loaded.prm.as_deref().ok_or_else(|| {
        EngineError::Internal("a scoring was admitted on a model that is not a PRM".into())
    })
}
