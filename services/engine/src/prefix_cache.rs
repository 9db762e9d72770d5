//! A bounded cache of recently computed token prefixes and their KV caches.
//!
//! Why: consecutive rounds of one search share everything but the newest step (the
//! question, the accepted steps), so a request whose prompt extends a recent one should
//! only pay for the new tokens. Entries are forks of real sequence caches
//! (copy-on-write), so keeping one costs no copy; reuse takes the longest common token
//! prefix with any entry.
//!
//! Bounded in bytes (and entries), not tokens: what an entry holds is its KV buffers,
//! and a token's KV differs 60-fold between the bundled generator (768 B) and SmolLM2
//! (46 KB). The bound has to hold a search's paths: DVTS at budget 256 keeps 256 of
//! them (about 300 tokens each with the bundled models) and comes back to each once per
//! round, so a least-recently-used cache smaller than that evicts every path just
//! before it is needed again and saves only the question. With 64 entries, as before,
//! the bundled generator prefilled nearly every path again on every call
//! (docs/security.md, finding H2).
//!
//! Owned by the model worker (single-threaded). Entries are kept in token order: the
//! entry sharing the longest prefix with a prompt is one of the prompt's two neighbours
//! in that order, so a lookup is two comparisons however many entries there are (the
//! recorded node's simulation uses the same fact).

use crate::kv::KvCache;
use serde::Serialize;
use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Arc;

struct Entry {
    cache: KvCache,
    /// For a scored candidate under the likelihood readout: what its tokens read.
    logp: Option<TokenLogp>,
    /// The bytes of its buffers when inserted (entries are never appended to: a fork
    /// that appends copies first).
    bytes: usize,
    /// Its key in `PrefixCache::by_use`.
    used: u64,
}

/// The log-probabilities a likelihood PRM read for a candidate's tokens `from..`: the
/// readout's raw material, so that a candidate extending a scored one (the next round of
/// a tree search) only runs its new tokens through the PRM.
#[derive(Clone)]
pub struct TokenLogp {
    pub from: usize,
    pub values: Arc<[f32]>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct PrefixCacheStats {
    pub lookups: u64,
    pub hits: u64,
    /// Prompt tokens whose KV came from the cache instead of a forward pass.
    pub saved_tokens: u64,
    pub entries: usize,
    pub cached_tokens: usize,
    /// Bytes of the KV buffers the entries hold (a buffer two entries share counted
    /// twice).
    pub cached_bytes: usize,
}

pub struct PrefixCache {
    by_tokens: BTreeMap<Arc<[u32]>, Entry>,
    /// Least recently used first.
    by_use: BTreeMap<u64, Arc<[u32]>>,
    clock: u64,
    max_entries: usize,
    max_bytes: usize,
    tokens: usize,
    bytes: usize,
    stats: PrefixCacheStats,
}

impl PrefixCache {
    pub fn new(max_entries: usize, max_bytes: usize) -> Self {
        Self {
            by_tokens: BTreeMap::new(),
            by_use: BTreeMap::new(),
            clock: 0,
            max_entries,
            max_bytes,
            tokens: 0,
            bytes: 0,
            stats: PrefixCacheStats::default(),
        }
    }

    /// Finds the cached entry sharing the longest prefix with `tokens` and returns a
    /// fork of its cache truncated to the reusable part. At least one token is
    /// always left to compute, since the caller needs logits for the last one.
    pub fn lookup(&mut self, tokens: &[u32]) -> Option<KvCache> {
        let (key, shared) = self.longest(tokens, tokens.len().saturating_sub(1))?;
        Some(self.take(key, shared))
    }

    /// For a candidate scored by a likelihood readout that reads its tokens `from..`:
    /// the KV of its longest cached prefix, with the log-probabilities of its tokens
    /// `from..=reused` that an entry read before (empty where none did: then the KV
    /// stops before `from`, as those tokens must be read). A token's log-probability
    /// is reused only where the token itself is shared, and at least one token is left
    /// to compute.
    pub fn lookup_scored(&mut self, tokens: &[u32], from: usize) -> Option<(KvCache, Vec<f32>)> {
        let (key, shared) = self.longest(tokens, usize::MAX)?;
        let limit = tokens.len().saturating_sub(1);
        let entry = &self.by_tokens[&*key];
        let read = entry.logp.as_ref().filter(|l| l.from == from && from > 0);
        let (reused, known) = match read {
            // Rows from `reused` on are computed: they read tokens `reused + 1..`.
            Some(logp) if shared > from => {
                let reused = (shared - 1).min(limit);
                (reused, logp.values[..reused + 1 - from].to_vec())
            }
            _ => (shared.min(limit).min(from.saturating_sub(1)), Vec::new()),
        };
        if reused == 0 {
            return None;
        }
        Some((self.take(key, reused), known))
    }

    /// The entry sharing the longest prefix with `tokens` (at most `limit`), counting a
    /// lookup; `None` is a miss.
    fn longest(&mut self, tokens: &[u32], limit: usize) -> Option<(Arc<[u32]>, usize)> {
        self.stats.lookups += 1;
        self.nearest(tokens, limit)
    }

    /// How many leading tokens of `tokens` some entry holds (not counted as a lookup).
    pub fn shared_len(&self, tokens: &[u32]) -> usize {
        self.nearest(tokens, usize::MAX)
            .map_or(0, |(_, shared)| shared)
    }

    fn nearest(&self, tokens: &[u32], limit: usize) -> Option<(Arc<[u32]>, usize)> {
        let below = self
            .by_tokens
            .range::<[u32], _>((Bound::Unbounded, Bound::Included(tokens)))
            .next_back();
        let above = self
            .by_tokens
            .range::<[u32], _>((Bound::Excluded(tokens), Bound::Unbounded))
            .next();
        let (key, shared) = below
            .into_iter()
            .chain(above)
            .map(|(key, _)| (key, common_prefix(key, tokens).min(limit)))
            .max_by_key(|&(_, shared)| shared)?;
        (shared > 0).then(|| (key.clone(), shared))
    }

    /// A fork of the first `shared` positions of the entry `key`, counted as a hit.
    fn take(&mut self, key: Arc<[u32]>, shared: usize) -> KvCache {
        let fork = self.by_tokens[&*key].cache.truncated(shared);
        self.touch(key);
        self.stats.hits += 1;
        self.stats.saved_tokens += shared as u64;
        fork
    }

    /// Remembers `cache` as the KV of `tokens` (`cache.len() == tokens.len()`).
    /// Entries that are prefixes of the new one and come just before it in order (the
    /// prompt a finished sequence extends) are replaced by it; nothing is added when an
    /// entry already extends it.
    pub fn insert(&mut self, tokens: Vec<u32>, cache: KvCache) {
        self.insert_entry(tokens, cache, None);
    }

    /// Remembers a scored candidate with what the likelihood readout read for it
    /// (`logp.values` holds its tokens `logp.from..`).
    pub fn insert_scored(&mut self, tokens: Vec<u32>, cache: KvCache, logp: TokenLogp) {
        debug_assert_eq!(logp.from + logp.values.len(), tokens.len());
        self.insert_entry(tokens, cache, Some(logp));
    }

    fn insert_entry(&mut self, tokens: Vec<u32>, cache: KvCache, logp: Option<TokenLogp>) {
        debug_assert_eq!(tokens.len(), cache.len());
        if tokens.is_empty() || self.max_entries == 0 {
            return;
        }
        // Entries extending `tokens` (or equal to it) come right after it in order.
        let covered = self
            .by_tokens
            .range::<[u32], _>((Bound::Included(&tokens[..]), Bound::Unbounded))
            .next()
            .is_some_and(|(next, _)| next.starts_with(&tokens));
        if covered {
            return;
        }
        // A question prefix of a scored candidate would keep the whole candidate's
        // buffers alive: keep a copy of the prefix instead. An entry larger than the
        // whole bound is not kept, and then replaces nothing.
        let cache = cache.compacted();
        let bytes = cache.capacity_bytes();
        if bytes > self.max_bytes {
            return;
        }
        while let Some((prefix, _)) = self
            .by_tokens
            .range::<[u32], _>((Bound::Unbounded, Bound::Excluded(&tokens[..])))
            .next_back()
            .filter(|(prev, _)| tokens.starts_with(prev))
        {
            let prefix = prefix.clone();
            self.remove(&prefix);
        }
        let key: Arc<[u32]> = tokens.into();
        self.clock += 1;
        self.by_use.insert(self.clock, key.clone());
        self.tokens += key.len();
        self.bytes += bytes;
        self.by_tokens.insert(
            key,
            Entry {
                cache,
                logp,
                bytes,
                used: self.clock,
            },
        );
        while self.by_tokens.len() > self.max_entries || self.bytes > self.max_bytes {
            let Some((_, oldest)) = self.by_use.pop_first() else {
                break;
            };
            self.remove(&oldest);
        }
    }

    /// Marks the entry of `key` as the most recently used.
    fn touch(&mut self, key: Arc<[u32]>) {
        let entry = self
            .by_tokens
            .get_mut(&*key)
            .expect("touched keys are entries");
        self.by_use.remove(&entry.used);
        self.clock += 1;
        entry.used = self.clock;
        self.by_use.insert(self.clock, key);
    }

    fn remove(&mut self, key: &[u32]) {
        if let Some(entry) = self.by_tokens.remove(key) {
            self.by_use.remove(&entry.used);
            self.tokens -= key.len();
            self.bytes -= entry.bytes;
        }
    }

    pub fn stats(&self) -> PrefixCacheStats {
        PrefixCacheStats {
            entries: self.by_tokens.len(),
            cached_tokens: self.tokens,
            cached_bytes: self.bytes,
            ..self.stats
        }
    }
}

/// Length of the common prefix of `a` and `b`: whole blocks compared as slices (a
/// vectorized memcmp) first, since cached prompts share long prefixes.
pub(crate) fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    const BLOCK: usize = 16;
    let n = a.len().min(b.len());
    let mut i = 0;
    while i + BLOCK <= n && a[i..i + BLOCK] == b[i..i + BLOCK] {
        i += BLOCK;
    }
    i + a[i..n]
        .iter()
        .zip(&b[i..n])
        .take_while(|(x, y)| x == y)
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A cache of `len` positions on one layer of one head of dimension 1.
    fn cache_of(len: usize) -> KvCache {
        let mut c = KvCache::new(1);
        let zeros = vec![0.0; len];
        c.append(0, 1, 1, &zeros, &zeros).unwrap();
        c.advance(len);
        c
    }

    const ROOMY: usize = 1 << 20;

    #[test]
    fn reuses_the_longest_shared_prefix_but_leaves_one_token() {
        let mut pc = PrefixCache::new(4, ROOMY);
        pc.insert(vec![1, 2, 3], cache_of(3));
        pc.insert(vec![1, 9], cache_of(2));
        assert_eq!(pc.lookup(&[1, 2, 3, 4]).unwrap().len(), 3);
        assert_eq!(pc.lookup(&[1, 2, 3]).unwrap().len(), 2);
        assert_eq!(pc.lookup(&[1, 9, 9]).unwrap().len(), 2);
        assert!(pc.lookup(&[5, 6]).is_none());
        let s = pc.stats();
        assert_eq!((s.lookups, s.hits, s.saved_tokens), (4, 3, 7));
    }

    #[test]
    fn finds_the_longest_prefix_among_many_entries() {
        // Paths of one question, as a tree search keeps them: a shared head, then each
        // path its own steps. The best entry for each is found, whatever lies between.
        let mut pc = PrefixCache::new(1000, usize::MAX);
        let head: Vec<u32> = (0..40).collect();
        let path = |i: u32, len: u32| -> Vec<u32> {
            head.iter()
                .copied()
                .chain((0..len).map(|t| 1000 + i * 7 + t % 3))
                .collect()
        };
        for i in 0..300 {
            pc.insert(path(i, 20 + i % 17), cache_of(60 + (i % 17) as usize));
        }
        for i in (0..300).step_by(7) {
            let mut next = path(i, 20 + i % 17);
            let known = next.len();
            next.extend([5, 5, 5]);
            assert_eq!(pc.lookup(&next).unwrap().len(), known, "path {i}");
        }
        // A prompt sharing only the head reuses the head.
        let other: Vec<u32> = head.iter().copied().chain([7, 7]).collect();
        assert_eq!(pc.lookup(&other).unwrap().len(), 40);
    }

    #[test]
    fn stays_within_its_bounds_evicting_least_recent() {
        let mut pc = PrefixCache::new(2, ROOMY);
        pc.insert(vec![1], cache_of(1));
        pc.insert(vec![2], cache_of(1));
        pc.lookup(&[1, 0]);
        pc.insert(vec![3], cache_of(1));
        assert!(pc.lookup(&[2, 0]).is_none(), "2 was least recently used");
        assert!(pc.lookup(&[1, 0]).is_some());
        // Bytes: room for two entries of three positions, not three (each kept in
        // buffers of its own length).
        let one = cache_of(3).compacted().capacity_bytes();
        assert!(one < cache_of(3).capacity_bytes());
        let mut small = PrefixCache::new(10, 2 * one + one / 2);
        small.insert(vec![1, 2, 3], cache_of(3));
        small.insert(vec![4, 5, 6], cache_of(3));
        small.lookup(&[1, 2, 3, 0]);
        small.insert(vec![7, 8, 9], cache_of(3));
        let s = small.stats();
        assert_eq!(
            (s.entries, s.cached_tokens, s.cached_bytes),
            (2, 6, 2 * one)
        );
        assert!(
            small.lookup(&[4, 5, 6, 0]).is_none(),
            "4 5 6 was least recently used"
        );
        // An entry larger than the whole bound is not kept, nor does it replace the
        // prefix it extends.
        small.insert(vec![1; 400], cache_of(400));
        let mut extension = vec![7, 8, 9];
        extension.resize(400, 1);
        small.insert(extension, cache_of(400));
        assert_eq!(small.stats().entries, 2);
        assert_eq!(small.lookup(&[7, 8, 9, 0]).unwrap().len(), 3);
    }

    #[test]
    fn an_extension_replaces_its_prefix() {
        let mut pc = PrefixCache::new(4, ROOMY);
        pc.insert(vec![1, 2], cache_of(2));
        pc.insert(vec![1, 2, 3], cache_of(3));
        assert_eq!(pc.stats().entries, 1);
        pc.insert(vec![1], cache_of(1));
        assert_eq!(pc.stats().entries, 1);
        let s = pc.stats();
        let three = cache_of(3).compacted().capacity_bytes();
        assert_eq!((s.cached_tokens, s.cached_bytes), (3, three));
    }

    #[test]
    fn a_scored_lookup_takes_what_an_entry_read_up_to_its_last_token() {
        let mut pc = PrefixCache::new(8, ROOMY);
        // Question 0..4, steps from token 4 on: the readout read tokens 4..8.
        let logp = |values: &[f32]| TokenLogp {
            from: 4,
            values: values.into(),
        };
        pc.insert_scored((0..8).collect(), cache_of(8), logp(&[0.4, 0.5, 0.6, 0.7]));
        // An extension reuses all but the entry's last token, with what was read up to
        // that token (token 7's row is computed again).
        let ext: Vec<u32> = (0..12).collect();
        let (kv, known) = pc.lookup_scored(&ext, 4).unwrap();
        assert_eq!((kv.len(), known), (7, vec![0.4, 0.5, 0.6, 0.7]));
        // A candidate branching inside the steps: token 6 differs, so its row and on.
        let branch = [0, 1, 2, 3, 4, 5, 9, 9];
        let (kv, known) = pc.lookup_scored(&branch, 4).unwrap();
        assert_eq!((kv.len(), known), (5, vec![0.4, 0.5]));
        // The same candidate again: everything but its last token.
        let (kv, known) = pc.lookup_scored(&ext[..8], 4).unwrap();
        assert_eq!((kv.len(), known.len()), (7, 4));
        // Read from elsewhere (another question's length): the question's KV only.
        let (kv, known) = pc.lookup_scored(&ext, 3).unwrap();
        assert_eq!((kv.len(), known.len()), (2, 0));
        // An entry of a plain prompt: up to the first token to read.
        let mut plain = PrefixCache::new(8, ROOMY);
        plain.insert((0..8).collect(), cache_of(8));
        let (kv, known) = plain.lookup_scored(&ext, 4).unwrap();
        assert_eq!((kv.len(), known.len()), (3, 0));
        assert!(plain.lookup_scored(&[9, 9], 1).is_none());
    }

    #[test]
    fn common_prefix_counts_across_blocks() {
        let a: Vec<u32> = (0..50).collect();
        let mut b = a.clone();
        for cut in [0, 1, 15, 16, 17, 33, 49] {
            b[cut] = 999;
            assert_eq!(common_prefix(&a, &b), cut);
            assert_eq!(common_prefix(&b, &a), cut);
            b[cut] = cut as u32;
        }
        assert_eq!(common_prefix(&a, &b), 50);
        assert_eq!(common_prefix(&a[..20], &b), 20);
    }
}
