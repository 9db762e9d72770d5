//! Packing: every row of one forward pass (a decode token per live sequence that does
//! not sit the pass out, see [`super::tenant_share`]; the new
//! prompt tokens of each prefill, the uncached tokens of each scored candidate) as
//! segments over their KV caches, and which request each segment belongs to.
//!
//! Twins: a decoding sequence whose cache is in the same state as an earlier one's
//! ([`KvCache::same_state`]: the same buffers, nobody has appended since the fork) and
//! whose next token is the same would compute the same row. It runs none: after the
//! pass it forks its leader's cache and samples from its leader's logits with its own
//! random stream, so its completion is what it would have been. Why: the `n` samples
//! of a search forked from one prompt, and a confident model draws the same tokens in
//! most of them for long stretches (every sample of an easy question, the early steps
//! of a hard one), so a step of 64 samples often has only a few distinct rows.
//! A twin lets go of its cache for the pass ([`KvCache::release`]) so that its leader
//! appends in place instead of copying a shared buffer.

use super::sequence::{Prefill, Running, Scoring};
use crate::model::Segment;
use std::collections::HashMap;

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

/// A decoding sequence (run, seq) that runs no row: it takes its leader's output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Twin {
    pub leader: (usize, usize),
    pub follower: (usize, usize),
}

/// The segments of one pass, with what each is for and how many rows it has.
pub(super) struct Packed<'a> {
    pub segments: Vec<Segment<'a>>,
    pub uses: Vec<RowUse>,
    pub lens: Vec<usize>,
    /// Decoding sequences that share their leader's row, in pass order.
    pub twins: Vec<Twin>,
}

/// Packs the pass; with `share_twins`, twins ride on their leaders' rows.
pub(super) fn pack<'a>(
    running: &'a mut [Running],
    prefills: &'a mut [Prefill],
    scorings: &'a mut [Scoring],
    share_twins: bool,
) -> Packed<'a> {
    let twins = if share_twins {
        find_twins(running)
    } else {
        Vec::new()
    };
    let mut segments = Vec::new();
    let mut uses = Vec::new();
    let mut follower = twins.iter().map(|t| t.follower).peekable();
    for (ri, run) in running.iter_mut().enumerate() {
        for (si, seq) in run.seqs.iter_mut().enumerate() {
            if follower.next_if_eq(&(ri, si)).is_some() {
                continue;
            }
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
        twins,
    }
}

/// Finds the twins among the decoding sequences (across requests: two requests for one
/// prompt start from the prefix cache's buffers) and releases their caches. Leaders are
/// keyed by next token and length, then compared buffer by buffer.
fn find_twins(running: &mut [Running]) -> Vec<Twin> {
    let mut leaders: HashMap<(u32, usize), Vec<(usize, usize)>> = HashMap::new();
    let mut twins = Vec::new();
    for ri in 0..running.len() {
        for si in 0..running[ri].seqs.len() {
            let seq = &running[ri].seqs[si];
            if !seq.decodes() {
                continue;
            }
            let same = leaders.entry((seq.next, seq.cache.len())).or_default();
            let leader = same
                .iter()
                .copied()
                .find(|&(lr, ls)| running[lr].seqs[ls].cache.same_state(&seq.cache));
            match leader {
                Some(leader) => {
                    running[ri].seqs[si].cache.release();
                    twins.push(Twin {
                        leader,
                        follower: (ri, si),
                    });
                }
                None => same.push((ri, si)),
            }
        }
    }
    twins
}
