//! How much of one pass each tenant gets: its decode rows and its prefill tokens.
//!
//! Why: every row of a pass waits for the whole pass, and a pass costs about as much per
//! new token as it has tokens (measured on the bundled generator under the H2 flood of
//! docs/security.md: 30-50 us per token, decode row or prefill token alike, so 2,000
//! tokens of one client's prefills made passes of 100-230 ms). Taking tenants in turn at
//! admission ([`super::fair_queue`]) decides who gets in next, not how big the pass they
//! get into is: a light client's 4 samples decoded in passes that also carried a
//! flooding client's burst of prefills, and each of its tokens cost what the burst cost.
//!
//! So while more than one tenant has work for the worker (live sequences, a prefill in
//! progress, or waiting requests), no tenant puts more new tokens into a pass than the
//! busiest other tenant could (or [`SHARE_FLOOR`], whichever is more). Its decode rows
//! beyond that sit the pass out, least recently decoded first back in, so all of them
//! keep moving; a prompt longer than what is left of its share is prefilled in chunks
//! over several passes. A tenant alone on the worker is never held back, and rows that
//! sit out sample the same tokens later (each sequence has its own RNG stream).

use super::batch_loop::Worker;
use super::sequence::{Running, Waiting};
use std::collections::HashMap;

/// New tokens a tenant may always put into a pass, however little the others want:
/// below this a pass is mostly fixed cost, so holding tokens back would slow the heavy
/// tenant without speeding the light one. It is also where a pass moves to the wide pool.
pub(super) const SHARE_FLOOR: usize = super::batch_loop::WIDE_PASS_ROWS;

/// Per tenant, the new tokens it may still add to the pass being planned.
pub(super) struct Shares {
    /// `None` while at most one tenant has work: nobody is held back.
    left: Option<HashMap<u64, usize>>,
}

impl Shares {
    /// From what each tenant could put into this pass (`demand`, in new tokens).
    pub fn plan(demand: &HashMap<u64, usize>) -> Self {
        let busy: Vec<(u64, usize)> = demand
            .iter()
            .filter(|&(_, &d)| d > 0)
            .map(|(&t, &d)| (t, d))
            .collect();
        if busy.len() < 2 {
            return Self { left: None };
        }
        // The busiest other tenant of each: the busiest of all, or for that one itself
        // the second busiest (linear in tenants; a worker may serve hundreds).
        let mut top = (0, 0);
        let mut second = 0;
        for &(tenant, d) in &busy {
            if d > top.1 {
                second = top.1;
                top = (tenant, d);
            } else if d > second {
                second = d;
            }
        }
        let left = busy
            .iter()
            .map(|&(tenant, _)| {
                let busiest_other = if tenant == top.0 { second } else { top.1 };
                (tenant, busiest_other.max(SHARE_FLOOR))
            })
            .collect();
        Self { left: Some(left) }
    }

    /// New tokens `tenant` may still add to this pass (a tenant without work had no
    /// demand when the pass was planned, so it has no share).
    pub fn allowance(&self, tenant: u64) -> usize {
        match &self.left {
            None => usize::MAX,
            Some(left) => left.get(&tenant).copied().unwrap_or(0),
        }
    }

    /// Whether anyone is held back in this pass (more than one tenant has work).
    pub fn is_shared(&self) -> bool {
        self.left.is_some()
    }

    /// Counts `tokens` of `tenant`'s against its share.
    pub fn take(&mut self, tenant: u64, tokens: usize) {
        if let Some(left) = self.left.as_mut().and_then(|l| l.get_mut(&tenant)) {
            *left = left.saturating_sub(tokens);
        }
    }
}

impl Worker {
    /// What each tenant could put into the next pass: its live sequences, the rest of
    /// its prefills in progress, and its waiting requests' tokens (at most a pass each).
    pub(super) fn demand(&self) -> HashMap<u64, usize> {
        let mut demand: HashMap<u64, usize> = HashMap::new();
        for run in &self.running {
            *demand.entry(run.tenant).or_default() += run.live();
        }
        for p in &self.prefilling {
            *demand.entry(p.tenant).or_default() += p.ids.len() - p.cache.len();
        }
        for (tenant, waiting) in self.waiting.iter() {
            *demand.entry(tenant).or_default() += match waiting {
                Waiting::Generate(_, ids, _) => ids.len(),
                Waiting::Score(part) => part.tokens,
            };
        }
        let budget = self.config.max_batch_tokens;
        demand.values_mut().for_each(|d| *d = (*d).min(budget));
        demand
    }
}

/// Marks which live sequences decode in pass `pass` (the rest get `sits_out`), counts
/// them against their tenants' shares, and returns how many decode. A sequence that
/// decodes records `pass` as its last.
pub(super) fn share_decode_rows(running: &mut [Running], pass: u64, shares: &mut Shares) -> usize {
    let mut decoding = 0;
    if !shares.is_shared() {
        // At most one tenant has work (the common case): every live sequence decodes,
        // with nothing to sort or allocate.
        for seq in running.iter_mut().flat_map(|r| &mut r.seqs) {
            if seq.done.is_none() {
                seq.sits_out = false;
                seq.last_decoded = pass;
                decoding += 1;
            }
        }
        return decoding;
    }
    // Each tenant's live rows, gathered in one sweep.
    let mut rows: HashMap<u64, Vec<(u64, usize, usize)>> = HashMap::new();
    for (ri, run) in running.iter().enumerate() {
        let tenant_rows = rows.entry(run.tenant).or_default();
        for (si, seq) in run.seqs.iter().enumerate() {
            if seq.done.is_none() {
                tenant_rows.push((seq.last_decoded, ri, si));
            }
        }
    }
    for (tenant, mut order) in rows {
        let decoded = order.len().min(shares.allowance(tenant));
        if decoded < order.len() {
            // Least recently decoded first; ties (as at the start) in running order.
            order.sort_unstable();
        }
        for (rank, (_, ri, si)) in order.into_iter().enumerate() {
            let seq = &mut running[ri].seqs[si];
            seq.sits_out = rank >= decoded;
            if !seq.sits_out {
                seq.last_decoded = pass;
            }
        }
        shares.take(tenant, decoded);
        decoding += decoded;
    }
    decoding
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::KvCache;
    use crate::sampling::{FinishReason, SamplingParams};
    use crate::worker::sequence::Sequence;
    use crate::worker::types::Completion;
    use std::sync::Arc;

    fn running(tenant: u64, n: u32) -> Running {
        let seqs = (0..n)
            .map(|index| Sequence::new(index, 0, KvCache::new(1)))
            .collect();
        Running {
            tenant,
            params: SamplingParams::default(),
            prompt: Arc::new(Vec::new()),
            cached_prompt_tokens: 0,
            seqs,
            reply: tokio::sync::oneshot::channel().0,
        }
    }

    fn decoding(running: &[Running], tenant: u64) -> usize {
        running
            .iter()
            .filter(|r| r.tenant == tenant)
            .flat_map(|r| &r.seqs)
            .filter(|s| s.decodes())
            .count()
    }

    /// Shares planned from the live rows alone (nothing waiting), then the decode rows.
    fn share(runs: &mut [Running], pass: u64) -> (usize, Shares) {
        let mut demand: HashMap<u64, usize> = HashMap::new();
        for run in runs.iter() {
            *demand.entry(run.tenant).or_default() += run.live();
        }
        let mut shares = Shares::plan(&demand);
        (share_decode_rows(runs, pass, &mut shares), shares)
    }

    #[test]
    fn a_tenant_alone_decodes_every_row() {
        let mut runs: Vec<Running> = (0..8).map(|_| running(1, 8)).collect();
        let (rows, shares) = share(&mut runs, 1);
        assert_eq!(rows, 64);
        assert_eq!(decoding(&runs, 1), 64);
        assert_eq!(shares.allowance(1), usize::MAX);
    }

    #[test]
    fn a_flood_gets_the_floor_beside_a_light_tenant_and_every_row_keeps_moving() {
        let mut runs: Vec<Running> = (0..16).map(|_| running(1, 4)).collect();
        runs.push(running(2, 4));
        let mut times_decoded = vec![0usize; 64];
        for pass in 1..=16 {
            let (rows, shares) = share(&mut runs, pass);
            assert_eq!(rows, SHARE_FLOOR + 4);
            assert_eq!(decoding(&runs, 2), 4, "the light tenant decodes every row");
            assert_eq!(decoding(&runs, 1), SHARE_FLOOR);
            assert_eq!(
                shares.allowance(1),
                0,
                "no room left for the flood's prefills"
            );
            assert_eq!(
                shares.allowance(2),
                60,
                "the light tenant may still prefill"
            );
            for (i, seq) in runs[..16].iter().flat_map(|r| &r.seqs).enumerate() {
                times_decoded[i] += usize::from(!seq.sits_out);
            }
        }
        // 8 of 64 rows per pass over 16 passes: each row exactly twice.
        assert!(times_decoded.iter().all(|&t| t == 2), "{times_decoded:?}");
    }

    #[test]
    fn two_heavy_tenants_are_held_to_each_other_and_finished_rows_do_not_count() {
        let mut runs = vec![running(1, 40), running(2, 20)];
        assert_eq!(share(&mut runs, 1).0, 40);
        assert_eq!(decoding(&runs, 1), 20);
        assert_eq!(decoding(&runs, 2), 20);
        for seq in &mut runs[1].seqs[..15] {
            seq.done = Some(Completion {
                index: seq.index,
                text: String::new(),
                tokens: 0,
                token_ids: Vec::new(),
                finish_reason: FinishReason::Length,
                stop: None,
                logprob: 0.0,
            });
        }
        share(&mut runs, 2);
        assert_eq!(decoding(&runs, 1), SHARE_FLOOR);
        assert_eq!(decoding(&runs, 2), 5);
    }

    #[test]
    fn a_waiting_prompt_counts_as_demand() {
        let demand = HashMap::from([(1, 2048), (2, 90)]);
        let mut shares = Shares::plan(&demand);
        assert_eq!(
            shares.allowance(1),
            90,
            "the flood may match the light prompt"
        );
        assert_eq!(shares.allowance(2), 2048);
        shares.take(1, 100);
        assert_eq!(shares.allowance(1), 0);
        assert_eq!(
            shares.allowance(3),
            0,
            "a tenant without demand has no share"
        );
    }
}
