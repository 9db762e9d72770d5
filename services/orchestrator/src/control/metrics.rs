//! The budget controller's Prometheus series (docs/load-adaptive.md, "Metrics").

use ponder_cluster::metrics::{Labels, Metrics};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use std::sync::atomic::AtomicU64;

/// The controller's metric families (docs/load-adaptive.md, "Metrics").
#[derive(Debug, Clone)]
pub(super) struct ControlMetrics {
    pub(super) requested: Histogram,
    pub(super) granted: Family<Labels, Histogram, fn() -> Histogram>,
    pub(super) decisions: Family<Labels, Counter>,
    pub(super) load: Gauge<f64, AtomicU64>,
    pub(super) price: Gauge<f64, AtomicU64>,
    pub(super) signal: Family<Labels, Gauge<f64, AtomicU64>>,
    pub(super) capacity: Gauge<f64, AtomicU64>,
    pub(super) demand: Gauge<f64, AtomicU64>,
}

fn generations_histogram() -> Histogram {
    Histogram::new(exponential_buckets(1.0, 2.0, 13))
}

impl ControlMetrics {
    pub(super) fn register(metrics: &Metrics) -> Self {
        let m = Self {
            requested: generations_histogram(),
            granted: Family::new_with_constructor(generations_histogram as fn() -> Histogram),
            decisions: Family::default(),
            load: Gauge::default(),
            price: Gauge::default(),
            signal: Family::default(),
            capacity: Gauge::default(),
            demand: Gauge::default(),
        };
        metrics.register(
            "budget_requested_generations",
            "orchestrator: budget.max_generations of finished queries",
            m.requested.clone(),
        );
        metrics.register(
            "budget_granted_generations",
            "orchestrator: generations granted to finished queries, by reason (fixed, priority, idle, load, floor)",
            m.granted.clone(),
        );
        metrics.register(
            "budget_grants",
            "orchestrator: finished queries by the reason of their grant",
            m.decisions.clone(),
        );
        metrics.register(
            "budget_load",
            "orchestrator: the smoothed load the budget controller prices generations from (1 = at capacity)",
            m.load.clone(),
        );
        metrics.register(
            "budget_price",
            "orchestrator: the price of a generation in accuracy (0 idle; -1 at the top of the load range: every grant at its floor)",
            m.price.clone(),
        );
        metrics.register(
            "budget_load_signal",
            "orchestrator: the budget controller's load signals before smoothing (admission, queries, backlog, latency)",
            m.signal.clone(),
        );
        metrics.register(
            "budget_capacity_share",
            "orchestrator: with --capacity, the generations per second this orchestrator commits (its share of the generators' capacity, divided by the load above 1)",
            m.capacity.clone(),
        );
        metrics.register(
            "budget_demand",
            "orchestrator: with --capacity, the generations per second the queries that arrived in the last 5 s ask for at their maximum",
            m.demand.clone(),
        );
        m
    }
}
