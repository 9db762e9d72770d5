//! A bounded cache of recently computed token prefixes and their KV caches.
//!
//! Why: consecutive rounds of one search share everything but the newest step
//! (the question, the accepted steps), so a request whose prompt extends a
//! recent one should only pay for the new tokens. Entries are forks of real
//! sequence caches (copy-on-write), so keeping one costs no copy; reuse takes
//! the longest common token prefix with any entry.
//!
//! Owned by the model worker (single-threaded), so a plain LRU list with a
//! linear scan is enough: the entry count is small and bounded.

use crate::kv::KvCache;
use serde::Serialize;
use std::collections::VecDeque;

struct Entry {
    tokens: Vec<u32>,
    cache: KvCache,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct PrefixCacheStats {
    pub lookups: u64,
    pub hits: u64,
    /// Prompt tokens whose KV came from the cache instead of a forward pass.
    pub saved_tokens: u64,
    pub entries: usize,
    pub cached_tokens: usize,
}

pub struct PrefixCache {
    /// Most recently used first.
    entries: VecDeque<Entry>,
    max_entries: usize,
    max_tokens: usize,
    stats: PrefixCacheStats,
}

impl PrefixCache {
    pub fn new(max_entries: usize, max_tokens: usize) -> Self {
        Self {
            entries: VecDeque::new(),
            max_entries,
            max_tokens,
            stats: PrefixCacheStats::default(),
        }
    }

    /// Finds the cached entry sharing the longest prefix with `tokens` and returns a
    /// fork of its cache truncated to the reusable part. At least one token is
    /// always left to compute, since the caller needs logits for the last one.
    pub fn lookup(&mut self, tokens: &[u32]) -> Option<KvCache> {
        self.stats.lookups += 1;
        let limit = tokens.len().saturating_sub(1);
        let (best, shared) = self
            .entries
            .iter()
            .enumerate()
            .map(|(i, e)| (i, common_prefix(&e.tokens, tokens).min(limit)))
            .max_by_key(|&(i, shared)| (shared, std::cmp::Reverse(i)))?;
        if shared == 0 {
            return None;
        }
        let entry = self.entries.remove(best).expect("index from iteration");
        let fork = entry.cache.truncated(shared);
        self.entries.push_front(entry);
        self.stats.hits += 1;
        self.stats.saved_tokens += shared as u64;
        Some(fork)
    }

    /// Remembers `cache` as the KV of `tokens` (`cache.len() == tokens.len()`).
    /// An entry that is a prefix of the new one is replaced by it.
    pub fn insert(&mut self, tokens: Vec<u32>, cache: KvCache) {
        debug_assert_eq!(tokens.len(), cache.len());
        if tokens.is_empty() || tokens.len() > self.max_tokens || self.max_entries == 0 {
            return;
        }
        if let Some(existing) = self
            .entries
            .iter()
            .position(|e| tokens.starts_with(&e.tokens))
        {
            self.entries.remove(existing);
        } else if self.entries.iter().any(|e| e.tokens.starts_with(&tokens)) {
            return; // a longer entry already covers it
        }
        self.entries.push_front(Entry { tokens, cache });
        while self.entries.len() > self.max_entries || self.cached_tokens() > self.max_tokens {
            self.entries.pop_back();
        }
    }

    fn cached_tokens(&self) -> usize {
        self.entries.iter().map(|e| e.tokens.len()).sum()
    }

    pub fn stats(&self) -> PrefixCacheStats {
        PrefixCacheStats {
            entries: self.entries.len(),
            cached_tokens: self.cached_tokens(),
            ..self.stats
        }
    }
}

fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache_of(len: usize) -> KvCache {
        let mut c = KvCache::new(0);
        c.advance(len);
        c
    }

    #[test]
    fn reuses_the_longest_shared_prefix_but_leaves_one_token() {
        let mut pc = PrefixCache::new(4, 1000);
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
    fn stays_within_its_bounds_evicting_least_recent() {
        let mut pc = PrefixCache::new(2, 1000);
        pc.insert(vec![1], cache_of(1));
        pc.insert(vec![2], cache_of(1));
        pc.lookup(&[1, 0]);
        pc.insert(vec![3], cache_of(1));
        assert!(pc.lookup(&[2, 0]).is_none(), "2 was least recently used");
        assert!(pc.lookup(&[1, 0]).is_some());
        let mut small = PrefixCache::new(10, 5);
        small.insert(vec![1, 2, 3], cache_of(3));
        small.insert(vec![4, 5, 6], cache_of(3));
        assert_eq!(small.stats().cached_tokens, 3);
    }

    #[test]
    fn an_extension_replaces_its_prefix() {
        let mut pc = PrefixCache::new(4, 1000);
        pc.insert(vec![1, 2], cache_of(2));
        pc.insert(vec![1, 2, 3], cache_of(3));
        assert_eq!(pc.stats().entries, 1);
        pc.insert(vec![1], cache_of(1));
        assert_eq!(pc.stats().entries, 1);
    }
}
