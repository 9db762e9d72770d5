//! Packing: every row of one forward pass (a decode token per live sequence that does
//! not sit the pass out, see [`super::tenant_share`]; the new
//! prompt tokens of each prefill, the uncached tokens of each scored candidate) as
//! segments over their KV caches, and which request each segment belongs to.

use super::sequence::{Prefill, Running, Scoring};
use crate::model::Segment;

/// What a segment of the packed pass is for.
#[derive(Debug, Clone, Copy)]
pub(super) enum RowUse {
    /// Sequence `seq` of running request `run` (one row).
    Decode { run: usize, seq: usize },
    /// A chunk of admitted prefill `prefill`; the last chunk's last row gives the first
    /// token.
    Prefill { prefill: usize, last: bool },
    /// Candidate `candidate` of admitted scoring `scoring` (its tag rows give scores).
    Score { scoring: usize, candidate: usize },
}

/// The segments of one pass, with what each is for and how many rows it has.
pub(super) struct Packed<'a> {
    pub segments: Vec<Segment<'a>>,
    pub uses: Vec<RowUse>,
    pub lens: Vec<usize>,
}

pub(super) fn pack<'a>(
    running: &'a mut [Running],
    prefills: &'a mut [Prefill],
    scorings: &'a mut [Scoring],
) -> Packed<'a> {
    let mut segments = Vec::new();
    let mut uses = Vec::new();
    for (ri, run) in running.iter_mut().enumerate() {
        for (si, seq) in run.seqs.iter_mut().enumerate() {
            if seq.decodes() {
                segments.push(Segment {
                    tokens: std::slice::from_ref(&seq.next),
                    cache: &mut seq.cache,
                });
                uses.push(RowUse::Decode { run: ri, seq: si });
            }
        }
    }
    for (pi, p) in prefills.iter_mut().enumerate() {
        let last = p.is_last_chunk();
        segments.push(Segment {
            tokens: &p.ids[p.cache.len()..p.chunk_end],
            cache: &mut p.cache,
        });
        uses.push(RowUse::Prefill { prefill: pi, last });
    }
    for (ji, job) in scorings.iter_mut().enumerate() {
        for (ci, input) in job.inputs.iter_mut().enumerate() {
            segments.push(Segment {
                tokens: &input.ids[input.reused..],
                cache: &mut input.cache,
            });
            uses.push(RowUse::Score {
                scoring: ji,
                candidate: ci,
            });
        }
    }
    let lens = segments.iter().map(|s| s.tokens.len()).collect();
    Packed {
        segments,
        uses,
        lens,
    }
}
