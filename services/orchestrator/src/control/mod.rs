//! Load-adaptive budgets: the controller that grants each query its generations.
//!
//! A client's `budget.max_generations` is a hard maximum and `min_generations` a floor;
//! under `BUDGET_MODE_ADAPTIVE` (the default, `--budget-mode`) the orchestrator grants
//! between them, to get the most correct answers per second across the queries in
//! flight: all of the maximum on an idle cluster, less past the knee, and least for the
//! questions whose fitted accuracy curve gains least from more (docs/load-adaptive.md).
//!
//! One task per orchestrator ticks every [`TICK`]: it reads the load ([`signal`]),
//! smooths it over [`SMOOTHING`] and publishes the price of a generation ([`law`]).
//! Queries read the price when the search asks for its grant (at start, after
//! compute-optimal's probes, and at every reservation), so a running query follows the
//! load wave by wave. Each replica decides from its own view of the load; nothing is
//! shared between replicas (docs/load-adaptive.md, "Several orchestrators").

pub mod curves;
pub mod demand;
pub mod law;
mod metrics;
pub mod signal;

use crate::admission::Admission;
use clap::Args;
pub use curves::Curves;
use demand::{Cost, Demand, Priced};
use law::LawParams;
use metrics::ControlMetrics;
use ponder_cluster::metrics::{Labels, Metrics};
use ponder_cluster::{Registry, Role};
use ponder_search::budget::Budget;
use ponder_search::grant::{Allowance, BudgetMode, Grant, GrantAsk, GrantReason};
use ponder_search::strategy::compute_optimal::Policy;
use signal::{LatencyWindow, LoadSignal};
use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// How often the controller reads the load.
pub const TICK: Duration = Duration::from_millis(250);
/// The time constant of the load's smoothing: long enough that one wave's calls do not
/// swing every grant, short enough that a burst is priced within a second or two.
pub const SMOOTHING: Duration = Duration::from_secs(1);

/// `ponder-orchestrator`'s budget-control flags (docs/load-adaptive.md).
#[derive(Debug, Clone, Args)]
pub struct ControlArgs {
    /// How a request that names no budget_mode is budgeted: `adaptive` (between its
    /// floor and maximum, from load and predicted difficulty) or `fixed` (its maximum).
    #[arg(long, env = "PONDER_BUDGET_MODE", default_value = "adaptive", value_parser = BudgetMode::parse)]
    pub budget_mode: BudgetMode,
    /// The latency objective in seconds: recent queries' p90 latency over it counts as
    /// load; 0 (the default): latency is not a load signal.
    #[arg(long, env = "PONDER_SLO", default_value_t = 0.0)]
    pub slo: f64,
    /// API key names whose queries keep their full budget under any load (comma-
    /// separated).
    #[arg(long, env = "PONDER_PRIORITY_KEYS", value_delimiter = ',')]
    pub priority_keys: Vec<String>,
    /// Load at or below which every adaptive query gets its maximum.
    #[arg(long, env = "PONDER_LOAD_LOW", default_value_t = LawParams::default().load_low)]
    pub load_low: f64,
    /// Load at or above which every adaptive query gets its floor.
    #[arg(long, env = "PONDER_LOAD_HIGH", default_value_t = LawParams::default().load_high)]
    pub load_high: f64,
    /// Queries in progress per serving generator node that count as load 1: the
    /// concurrency at the cluster's knee (docs/load-adaptive.md).
    #[arg(long, env = "PONDER_QUERIES_PER_NODE", default_value_t = DEFAULT_QUERIES_PER_NODE)]
    pub queries_per_node: f64,
    /// Other orchestrators' requests waiting per worker node that count as load 1.
    #[arg(long, env = "PONDER_BACKLOG_TARGET", default_value_t = DEFAULT_BACKLOG_TARGET)]
    pub backlog_target: f64,
    /// The control law: `price` (per question, from its accuracy curve) or `switch` (a
    /// baseline: the maximum below load 1, --switch-budget at or above it).
    #[arg(long, env = "PONDER_BUDGET_LAW", value_enum, default_value = "price")]
    pub budget_law: LawKind,
    /// What the `switch` law grants at or above load 1.
    #[arg(long, env = "PONDER_SWITCH_BUDGET", default_value_t = 4)]
    pub switch_budget: u32,
    /// Generations per second one generator node performs at the cluster's knee: fixed
    /// 16's knee rate x its mean generations per query (ponder-load's records) /
    /// generator nodes. With it, the `price` law solves the price at which the recent
    /// arrivals fit this capacity instead of reading it off the load
    /// (docs/load-adaptive.md, "The capacity law"); 0 (the default): off.
    #[arg(long, env = "PONDER_CAPACITY", default_value_t = 0.0)]
    pub capacity: f64,
    /// Orchestrator replicas sharing the generators when discovery is not etcd (with
    /// etcd, the orchestrators registered there are counted): with --capacity, each one
    /// commits its even share of the capacity.
    #[arg(long, env = "PONDER_REPLICAS", default_value_t = 1)]
    pub replicas: u32,
}

/// Which control law grants adaptive budgets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LawKind {
    Price,
    Switch,
}

pub const DEFAULT_BACKLOG_TARGET: f64 = 8.0;
pub const DEFAULT_QUERIES_PER_NODE: f64 = 4.0;

impl Default for ControlArgs {
    fn default() -> Self {
        Self {
            budget_mode: BudgetMode::Adaptive,
            slo: 0.0,
            priority_keys: vec![],
            load_low: LawParams::default().load_low,
            load_high: LawParams::default().load_high,
            queries_per_node: DEFAULT_QUERIES_PER_NODE,
            backlog_target: DEFAULT_BACKLOG_TARGET,
            budget_law: LawKind::Price,
            switch_budget: 4,
            capacity: 0.0,
            replicas: 1,
        }
    }
}

impl ControlArgs {
    pub fn law(&self) -> anyhow::Result<LawParams> {
        let law = LawParams {
            load_low: self.load_low,
            load_high: self.load_high,
            ..LawParams::default()
        };
        law.check().map_err(anyhow::Error::msg)?;
        anyhow::ensure!(
            self.slo.is_finite() && self.slo >= 0.0,
            "--slo must be 0 (latency not used) or a number of seconds, got {}",
            self.slo
        );
        anyhow::ensure!(
            self.switch_budget >= 1,
            "--switch-budget must be at least 1 generation"
        );
        anyhow::ensure!(
            self.queries_per_node.is_finite() && self.queries_per_node > 0.0,
            "--queries-per-node must be a positive number of queries, got {}",
            self.queries_per_node
        );
        anyhow::ensure!(
            self.backlog_target.is_finite() && self.backlog_target > 0.0,
            "--backlog-target must be a positive number of requests per node, got {}",
            self.backlog_target
        );
        anyhow::ensure!(
            self.capacity.is_finite() && self.capacity >= 0.0,
            "--capacity must be 0 (off) or generations per second per generator node, got {}",
            self.capacity
        );
        anyhow::ensure!(
            self.replicas >= 1,
            "--replicas must be at least 1 orchestrator"
        );
        Ok(law)
    }
}

/// The budget controller of one orchestrator.
#[derive(Debug)]
pub struct Controller {
    default_mode: BudgetMode,
    priority: HashSet<String>,
    law: LawParams,
    kind: LawKind,
    switch_budget: u32,
    curves: Curves,
    /// f64 bits: the price of a generation now, and the smoothed load it came from.
    price: AtomicU64,
    load: AtomicU64,
    /// f64 bits: with --capacity, the price just below `price` at which the grants no
    /// longer fit, and the share of queries that get it (so that the expected grants
    /// meet the capacity exactly rather than jumping between two of the curves' steps).
    generous: AtomicU64,
    mix: AtomicU64,
    /// Counts allowances, to spread the queries that get the generous price evenly.
    allowances: AtomicU64,
    events: mpsc::Sender<Event>,
    metrics: ControlMetrics,
}

/// What the service tells the controller's task about queries.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Event {
    /// A query was admitted, and may cost this much (the capacity law's demand).
    Arrived(Cost),
    /// A query finished after this many seconds (the latency signal).
    Finished(f64),
}

impl Controller {
    /// A controller at zero load; its task ([`Controller::run`]) starts the readings.
    pub fn new(
        args: &ControlArgs,
        policy: &Policy,
        metrics: &Metrics,
    ) -> anyhow::Result<(Arc<Self>, mpsc::Receiver<Event>)> {
        let (events, rx) = mpsc::channel(4096);
        let c = Self {
            default_mode: args.budget_mode,
            priority: args.priority_keys.iter().cloned().collect(),
            law: args.law()?,
            kind: args.budget_law,
            switch_budget: args.switch_budget,
            curves: Curves::from_policy(policy),
            price: AtomicU64::new(0f64.to_bits()),
            load: AtomicU64::new(0f64.to_bits()),
            generous: AtomicU64::new(0f64.to_bits()),
            mix: AtomicU64::new(0f64.to_bits()),
            allowances: AtomicU64::new(0),
            events,
            metrics: ControlMetrics::register(metrics),
        };
        Ok((Arc::new(c), rx))
    }

    pub fn default_mode(&self) -> BudgetMode {
        self.default_mode
    }

    /// The price of a generation now (0 when idle; infinite at the top of the range).
    pub fn price(&self) -> f64 {
        f64::from_bits(self.price.load(Ordering::Relaxed))
    }

    /// The smoothed load the price was read from.
    pub fn load(&self) -> f64 {
        f64::from_bits(self.load.load(Ordering::Relaxed))
    }

    /// Publishes a new smoothed load and its price on the load law.
    pub fn set_load(&self, load: f64) {
        let price = self.law.price(load);
        self.publish(
            load,
            Priced {
                price,
                generous: price,
                mix: 0.0,
                asked: 0.0,
                spent: 0.0,
            },
        );
    }

    /// Publishes a smoothed load and the price of a generation.
    pub fn publish(&self, load: f64, priced: Priced) {
        let price = priced.price;
        self.generous
            .store(priced.generous.to_bits(), Ordering::Relaxed);
        self.mix.store(priced.mix.to_bits(), Ordering::Relaxed);
        self.load.store(load.to_bits(), Ordering::Relaxed);
        self.price.store(price.to_bits(), Ordering::Relaxed);
        self.metrics.load.set(load);
        self.metrics
            .price
            .set(if price.is_finite() { price } else { -1.0 });
    }

    /// Books an admitted query of `mode` from the API key `key`, with the client's
    /// `budget` and the `probes` its strategy spends before its bin is known (0 for a
    /// strategy that does not probe), and returns its allowance (None for a fixed
    /// budget).
    pub fn allowance(
        self: &Arc<Self>,
        mode: BudgetMode,
        key: Option<&str>,
        budget: &Budget,
        probes: u32,
    ) -> Option<Arc<dyn Allowance>> {
        let priority = key.is_some_and(|k| self.priority.contains(k));
        let max = budget.max_generations;
        let cost = match mode {
            BudgetMode::Adaptive if !priority => Cost::Adaptive {
                max,
                floor: budget.min_generations,
                probes,
            },
            _ => Cost::Committed(max),
        };
        let _ = self.events.try_send(Event::Arrived(cost));
        match mode {
            BudgetMode::Fixed => None,
            BudgetMode::Adaptive => Some(Arc::new(QueryAllowance {
                controller: self.clone(),
                priority,
                draw: spread(self.allowances.fetch_add(1, Ordering::Relaxed)),
            })),
        }
    }

    /// The grant at the current price for a query that knows `ask`.
    pub fn grant(&self, ask: &GrantAsk<'_>) -> Grant {
        self.grant_drawn(ask, 1.0)
    }

    /// The grant for a query whose draw in [0, 1) is `draw`: the generous price when
    /// the draw is below the published mix.
    fn grant_drawn(&self, ask: &GrantAsk<'_>, draw: f64) -> Grant {
        match self.kind {
            LawKind::Price => {
                let mix = f64::from_bits(self.mix.load(Ordering::Relaxed));
                let price = if draw < mix {
                    f64::from_bits(self.generous.load(Ordering::Relaxed))
                } else {
                    self.price()
                };
                law::grant(self.curves.get(ask.bin), price, ask.max, ask.floor)
            }
            LawKind::Switch => {
                law::switch(self.load(), 1.0, self.switch_budget, ask.max, ask.floor)
            }
        }
    }

    /// Books a finished query: its latency (a load signal) and its budget requested and
    /// granted (metrics).
    pub fn finished(&self, latency: Duration, requested: u32, granted: u32, reason: GrantReason) {
        let _ = self.events.try_send(Event::Finished(latency.as_secs_f64()));
        self.metrics.requested.observe(requested as f64);
        let l: Labels = Metrics::labels(&[("reason", reason.as_str())]);
        self.metrics
            .granted
            .get_or_create(&l)
            .observe(granted as f64);
        self.metrics.decisions.get_or_create(&l).inc();
    }

    /// Reads the load every [`TICK`] until the orchestrator stops: the task owns the
    /// latency window and the recent arrivals, and publishes the smoothed load and the
    /// price (read off the load, or with `--capacity` solved from the arrivals).
    pub fn run(
        self: Arc<Self>,
        registry: Registry,
        admission: Admission,
        args: ControlArgs,
        mut events: mpsc::Receiver<Event>,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut window = LatencyWindow::default();
            let mut demand = Demand::default();
            let mut smoothed = 0.0;
            let mut harm = 0.0;
            let mut last = Instant::now();
            let mut tick = tokio::time::interval(TICK);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let now = Instant::now();
                while let Ok(event) = events.try_recv() {
                    match event {
                        Event::Finished(seconds) => window.record(now, seconds),
                        Event::Arrived(cost) => demand.record(now, cost),
                    }
                }
                let snapshot = registry.snapshot();
                let s = LoadSignal {
                    admission: admission.occupancy(),
                    queries: signal::queries(
                        snapshot.all(),
                        admission.in_progress(),
                        args.queries_per_node,
                    ),
                    backlog: signal::backlog(snapshot.all(), args.backlog_target),
                    latency: window.pressure(now, args.slo),
                };
                for (name, v) in s.parts() {
                    let l = Metrics::labels(&[("signal", name)]);
                    self.metrics.signal.get_or_create(&l).set(v);
                }
                smoothed = signal::smooth(smoothed, s.load(), now - last, SMOOTHING);
                let harm_now = signal::harm(admission.fullest(), s.latency);
                harm = signal::smooth(harm, harm_now, now - last, SMOOTHING);
                last = now;
                if args.capacity > 0.0 {
                    let nodes = signal::generator_nodes(snapshot.all());
                    let replicas = match snapshot.members(Role::Orchestrator).len() {
                        0 => args.replicas,
                        counted => counted as u32,
                    };
                    let share = demand::share(args.capacity, nodes, replicas, harm);
                    let priced = demand.price(now, share, &self.curves);
                    self.metrics.capacity.set(share);
                    self.metrics.demand.set(priced.asked);
                    self.publish(smoothed, priced);
                } else {
                    self.set_load(smoothed);
                }
            }
        })
    }
}

/// One adaptive query's allowance: the controller's grant, or its maximum for a key in
/// a priority class.
#[derive(Debug)]
struct QueryAllowance {
    controller: Arc<Controller>,
    priority: bool,
    /// In [0, 1): below the controller's mix, the query is granted at the generous
    /// price (the same draw for all its grants, so they do not flip wave by wave).
    draw: f64,
}

/// The `n`th point of the golden-ratio sequence in [0, 1): any run of consecutive
/// queries covers the interval evenly, so a mix of q gives about q of them the generous
/// price without a random number generator.
fn spread(n: u64) -> f64 {
    (n as f64 * 0.618_033_988_749_895).fract()
}

impl Allowance for QueryAllowance {
    fn grant(&self, ask: &GrantAsk<'_>) -> Grant {
        if self.priority {
            return Grant {
                generations: ask.max,
                reason: GrantReason::Priority,
            };
        }
        self.controller.grant_drawn(ask, self.draw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ponder_search::strategy::compute_optimal::BINS;

    fn shipped_policy() -> Policy {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/arith-policy.json");
        Policy::from_file(&path).expect("the shipped policy reads")
    }

    fn ask(bin: Option<usize>) -> GrantAsk<'static> {
        GrantAsk {
            max: 64,
            floor: 1,
            bin,
            model: "",
        }
    }

    #[test]
    fn under_one_load_the_bins_are_granted_in_the_order_of_their_curves() {
        let policy = shipped_policy();
        assert_eq!(
            policy.schema, 2,
            "the shipped policy carries accuracy curves"
        );
        let (c, _finished) =
            Controller::new(&ControlArgs::default(), &policy, &Metrics::new()).unwrap();
        // Idle: every bin the maximum.
        c.set_load(0.3);
        for bin in (0..BINS).map(Some).chain([None]) {
            assert_eq!(
                c.grant(&ask(bin)),
                Grant {
                    generations: 64,
                    reason: GrantReason::Idle
                }
            );
        }
        // At load 1 (a price of about 8e-4 accuracy per generation): the easiest bin,
        // already right with one sample, gets the floor; a bin whose curve still climbs
        // at 64 keeps the maximum. Each grant is the curve's own optimum. (Which bin
        // climbs longest is the fitted policy's business: the refits of the shipped
        // policy have moved it between the two hardest.)
        c.set_load(1.0);
        let price = c.price();
        assert!((price - 1e-4 * 500f64.powf(1.0 / 3.0)).abs() < 1e-12);
        let grants: Vec<u32> = (0..BINS)
            .map(|b| c.grant(&ask(Some(b))).generations)
            .collect();
        assert_eq!(grants[0], 1, "{grants:?}");
        assert_eq!(grants.iter().max(), Some(&64), "{grants:?}");
        assert!(
            grants[BINS - 1] > grants[0] && grants[BINS - 2] > grants[0],
            "{grants:?}"
        );
        for (b, &g) in grants.iter().enumerate() {
            let curve = c.curves.get(Some(b));
            let value = |n: u32| law::accuracy_at(curve, n) - price * n as f64;
            assert!(
                curve.iter().all(|&(n, _)| value(n) <= value(g) + 1e-12),
                "bin {b}: {g} is not the curve's optimum"
            );
        }
        // At the top of the load range: every grant at its floor.
        c.set_load(2.0);
        for bin in 0..BINS {
            assert_eq!(
                c.grant(&ask(Some(bin))),
                Grant {
                    generations: 1,
                    reason: GrantReason::Floor
                }
            );
        }
    }

    #[test]
    fn fixed_mode_has_no_allowance_and_priority_keys_keep_their_maximum() {
        let args = ControlArgs {
            priority_keys: vec!["gold".into()],
            ..ControlArgs::default()
        };
        let (c, _finished) = Controller::new(&args, &Policy::default(), &Metrics::new()).unwrap();
        let budget = Budget::new(64, 0, None).unwrap();
        assert!(c
            .allowance(BudgetMode::Fixed, Some("gold"), &budget, 0)
            .is_none());
        c.set_load(1.9);
        let gold = c
            .allowance(BudgetMode::Adaptive, Some("gold"), &budget, 0)
            .unwrap();
        assert_eq!(
            gold.grant(&ask(Some(4))),
            Grant {
                generations: 64,
                reason: GrantReason::Priority
            }
        );
        let other = c
            .allowance(BudgetMode::Adaptive, Some("other"), &budget, 0)
            .unwrap();
        assert!(other.grant(&ask(Some(4))).generations < 64);
        // A policy without curves grants from the generic one.
        assert_eq!(c.curves.get(None), law::fallback_curve().as_slice());
    }

    #[test]
    fn the_mix_gives_its_share_of_queries_the_generous_price_and_each_keeps_its_draw() {
        let (c, _events) =
            Controller::new(&ControlArgs::default(), &shipped_policy(), &Metrics::new()).unwrap();
        // A bin whose curve keeps more at a price of 0.01 than at 0.05 (the hardest ones:
        // for the shipped policy, 16 against the floor).
        let at = |bin, price| law::grant(c.curves.get(Some(bin)), price, 16, 1).generations;
        let bin = (0..BINS)
            .rev()
            .find(|&b| at(b, 0.01) > at(b, 0.05))
            .expect("a bin whose grant depends on the price");
        let (generous_grant, priced_grant) = (at(bin, 0.01), at(bin, 0.05));
        c.publish(
            1.0,
            Priced {
                price: 0.05,
                generous: 0.01,
                mix: 0.25,
                asked: 0.0,
                spent: 0.0,
            },
        );
        let budget = Budget::new(16, 0, None).unwrap();
        let allowances: Vec<_> = (0..400)
            .map(|_| c.allowance(BudgetMode::Adaptive, None, &budget, 4).unwrap())
            .collect();
        let gets_generous = |a: &Arc<dyn Allowance>| {
            a.grant(&GrantAsk {
                max: 16,
                ..ask(Some(bin))
            })
            .generations
                == generous_grant
        };
        let generous: Vec<bool> = allowances.iter().map(gets_generous).collect();
        let n = generous.iter().filter(|&&g| g).count();
        assert!((98..=102).contains(&n), "{n} of 400 at the generous price");
        // Asked again (wave by wave), every query gets the same grant.
        assert_eq!(
            allowances.iter().map(gets_generous).collect::<Vec<_>>(),
            generous
        );
        // The plain grant (no draw) is at the price.
        assert_eq!(
            c.grant(&GrantAsk {
                max: 16,
                ..ask(Some(bin))
            })
            .generations,
            priced_grant
        );
    }

    #[test]
    fn bad_control_flags_say_which_to_fix() {
        let bad = |a: ControlArgs| {
            Controller::new(&a, &Policy::default(), &Metrics::new())
                .unwrap_err()
                .to_string()
        };
        let d = ControlArgs::default;
        assert!(bad(ControlArgs {
            load_high: 0.1,
            ..d()
        })
        .contains("--load-low"));
        assert!(bad(ControlArgs { slo: -1.0, ..d() }).contains("--slo"));
        assert!(bad(ControlArgs {
            backlog_target: 0.0,
            ..d()
        })
        .contains("--backlog-target"));
        assert!(bad(ControlArgs {
            switch_budget: 0,
            ..d()
        })
        .contains("--switch-budget"));
    }
}
