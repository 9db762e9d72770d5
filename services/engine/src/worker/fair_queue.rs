//! The worker's waiting requests, taken in turn by tenant.
//!
//! Why: a worker serves every client of the cluster. With one FIFO queue, a client that
//! keeps many calls queued (a wide tree search, a flood) makes every other client's
//! call wait behind all of them, and a small query's latency grows with someone else's
//! load (measured in docs/security.md, "Bounded compute": a budget-4 query went from
//! 0.4 s to 32 s at p99 beside one client's four DVTS searches). Here each tenant (the
//! orchestrator's id for the client, [`crate::GenerateRequest`] callers without one
//! share tenant 0) has its own FIFO, and admission takes the head of each tenant in
//! turn, so a call waits for at most one call of each other active tenant, not for all
//! of their calls.

use std::collections::{HashMap, VecDeque};

pub(super) struct FairQueue<T> {
    /// Per tenant, its waiting items in arrival order; tenants with none are removed.
    queues: HashMap<u64, VecDeque<T>>,
    /// Tenants with waiting items, in the order they are served next.
    turn: VecDeque<u64>,
    len: usize,
}

impl<T> Default for FairQueue<T> {
    fn default() -> Self {
        Self {
            queues: HashMap::new(),
            turn: VecDeque::new(),
            len: 0,
        }
    }
}

impl<T> FairQueue<T> {
    pub fn push(&mut self, tenant: u64, item: T) {
        self.queue_for_one_more(tenant).push_back(item);
    }

    /// Puts `item` at the head of its tenant's queue (work that was in a pass and must
    /// come next, before that tenant's later arrivals).
    pub fn push_front(&mut self, tenant: u64, item: T) {
        self.queue_for_one_more(tenant).push_front(item);
    }

    /// `tenant`'s queue, about to take one item: a tenant with none so far joins the
    /// turn at its back.
    fn queue_for_one_more(&mut self, tenant: u64) -> &mut VecDeque<T> {
        self.len += 1;
        let queue = self.queues.entry(tenant).or_default();
        if queue.is_empty() {
            self.turn.push_back(tenant);
        }
        queue
    }

    /// The item that [`FairQueue::pop`] would return.
    #[cfg(test)]
    pub fn front(&self) -> Option<&T> {
        self.front_where(|_| true).map(|(_, item)| item)
    }

    /// The head of the first tenant in turn that `eligible` says yes to, with that
    /// tenant: what [`FairQueue::pop_where`] would return.
    pub fn front_where(&self, mut eligible: impl FnMut(u64) -> bool) -> Option<(u64, &T)> {
        let tenant = *self.turn.iter().find(|&&t| eligible(t))?;
        Some((tenant, self.queues.get(&tenant)?.front()?))
    }

    /// The head of the tenant whose turn it is, with that tenant, which then goes to
    /// the back.
    #[cfg(test)]
    pub fn pop(&mut self) -> Option<(u64, T)> {
        self.pop_where(|_| true)
    }

    /// As [`FairQueue::pop`], passing over tenants that `eligible` says no to; they
    /// keep their place in turn.
    pub fn pop_where(&mut self, mut eligible: impl FnMut(u64) -> bool) -> Option<(u64, T)> {
        let at = self.turn.iter().position(|&t| eligible(t))?;
        let tenant = self.turn.remove(at)?;
        let queue = self.queues.get_mut(&tenant)?;
        let item = queue.pop_front();
        if queue.is_empty() {
            self.queues.remove(&tenant);
        } else {
            self.turn.push_back(tenant);
        }
        if item.is_some() {
            self.len -= 1;
        }
        item.map(|item| (tenant, item))
    }

    /// Every waiting item with its tenant, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (u64, &T)> {
        self.queues
            .iter()
            .flat_map(|(&tenant, queue)| queue.iter().map(move |item| (tenant, item)))
    }

    /// Keeps only the items `keep` says yes to.
    pub fn retain(&mut self, mut keep: impl FnMut(&T) -> bool) {
        for queue in self.queues.values_mut() {
            queue.retain(&mut keep);
        }
        self.queues.retain(|_, q| !q.is_empty());
        let queues = &self.queues;
        self.turn.retain(|t| queues.contains_key(t));
        self.len = self.queues.values().map(VecDeque::len).sum();
    }

    /// Items `matches` says yes to.
    pub fn count(&self, mut matches: impl FnMut(&T) -> bool) -> usize {
        self.queues
            .values()
            .flatten()
            .filter(|&t| matches(t))
            .count()
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenants_take_turns_and_each_keeps_its_order() {
        let mut q = FairQueue::default();
        for i in 0..5 {
            q.push(1, format!("flood-{i}"));
        }
        q.push(2, "victim-0".to_string());
        q.push(2, "victim-1".to_string());
        assert_eq!(q.count(|_| true), 7);
        assert_eq!(q.front().map(String::as_str), Some("flood-0"));
        let order: Vec<String> = std::iter::from_fn(|| q.pop()).map(|(_, s)| s).collect();
        assert_eq!(
            order,
            ["flood-0", "victim-0", "flood-1", "victim-1", "flood-2", "flood-3", "flood-4"]
        );
        assert!(q.is_empty());
    }

    #[test]
    fn a_tenant_passed_over_keeps_its_place() {
        let mut q = FairQueue::default();
        q.push(1, "flood-0");
        q.push(1, "flood-1");
        q.push(2, "victim-0");
        q.push(3, "other-0");
        assert_eq!(q.front_where(|t| t != 1), Some((2, &"victim-0")));
        assert_eq!(q.pop_where(|t| t != 1), Some((2, "victim-0")));
        assert_eq!(q.pop_where(|t| t == 9), None);
        assert_eq!(
            q.pop(),
            Some((1, "flood-0")),
            "tenant 1 is still first in turn"
        );
        assert_eq!(q.pop(), Some((3, "other-0")));
        assert_eq!(q.pop(), Some((1, "flood-1")));
        assert!(q.is_empty());
    }

    #[test]
    fn retain_drops_items_and_empty_tenants() {
        let mut q = FairQueue::default();
        q.push(1, 1);
        q.push(2, 2);
        q.push(2, 3);
        q.retain(|&x| x != 1 && x != 2);
        assert_eq!(q.count(|_| true), 1);
        assert_eq!(q.pop(), Some((2, 3)));
        assert_eq!(q.pop(), None);
    }
}
