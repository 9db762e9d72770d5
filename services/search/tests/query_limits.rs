//! The operator's caps on one query hold for every strategy shape: calls in flight
//! never pass `max_calls_in_flight` (a DVTS of 64 one-wide subtrees is the widest
//! fan-out), a call larger than the generator accepts is split, and the time cap
//! becomes the deadline of a query that set none.

use ponder_search::scripted::{ScriptedGenerator, ScriptedVerifier};
use ponder_search::traits::GeneratorLimits;
use ponder_search::{
    solve, Budget, GenOutput, GenRequest, Generate, QueryLimits, SolutionFormat, SolveParams,
    StrategyKind,
};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// A generator that takes a little while per call and records the most calls it had
/// in flight at once (around the scripted one, which answers at once).
struct Slow {
    inner: ScriptedGenerator,
    now: AtomicU32,
    peak: AtomicU32,
}

impl Generate for Slow {
    async fn generate(&self, req: GenRequest) -> ponder_search::Result<GenOutput> {
        let now = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak.fetch_max(now, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(5)).await;
        let out = self.inner.generate(req).await;
        self.now.fetch_sub(1, Ordering::SeqCst);
        out
    }

    fn limits(&self) -> GeneratorLimits {
        self.inner.limits()
    }
}

fn answering(max_samples: u32) -> ScriptedGenerator {
    ScriptedGenerator::new()
        .otherwise(|_| "Answer: 1".to_string())
        .with_limits(GeneratorLimits {
            max_token_bytes: 1,
            context_length: 1 << 20,
            max_samples,
            parameters: 0,
        })
}

fn params(strategy: StrategyKind, generations: u32, limits: QueryLimits) -> SolveParams {
    let mut p = SolveParams::new("q", Budget::new(generations, 0, None).unwrap(), 1);
    p.strategy = Some(strategy);
    p.limits = limits;
    p
}

async fn peak_calls(max_calls_in_flight: u32) -> u32 {
    let g = Slow {
        inner: answering(256),
        now: AtomicU32::new(0),
        peak: AtomicU32::new(0),
    };
    let v = ScriptedVerifier::new(|steps| vec![0.5; steps.len()]);
    let limits = QueryLimits {
        max_calls_in_flight,
        ..QueryLimits::default()
    };
    let dvts = StrategyKind::Dvts {
        width: 1,
        max_rounds: 4,
    };
    let out = solve(
        &g,
        Some(&v),
        &SolutionFormat::default(),
        params(dvts, 64, limits),
        None,
    )
    .await
    .unwrap();
    assert_eq!(out.answer.as_deref(), Some("1"));
    g.peak.load(Ordering::SeqCst)
}

#[tokio::test]
async fn a_query_never_has_more_calls_in_flight_than_its_cap() {
    assert_eq!(peak_calls(4).await, 4);
    assert_eq!(peak_calls(1).await, 1);
    // Uncapped by the test, DVTS would fire all 64 subtrees at once.
    assert_eq!(peak_calls(64).await, 64);
}

#[tokio::test]
async fn calls_larger_than_the_generator_accepts_are_split() {
    let g = answering(100);
    let v = ScriptedVerifier::new(|steps| vec![0.5; steps.len()]);
    let beam = StrategyKind::BeamSearch {
        width: 4,
        max_rounds: 4,
    };
    let out = solve(
        &g,
        Some(&v),
        &SolutionFormat::default(),
        params(beam, 512, QueryLimits::default()),
        None,
    )
    .await
    .unwrap();
    assert_eq!(out.answer.as_deref(), Some("1"));
    let sizes: Vec<u32> = g.requests().iter().map(|r| r.n).collect();
    // Beam search's first round asks for 512 first steps: 100+100+100+100+100+12.
    assert_eq!(sizes, [100, 100, 100, 100, 100, 12], "{sizes:?}");
    assert_eq!(out.usage.generations, 512);
}

#[tokio::test]
async fn the_time_cap_is_the_deadline_of_a_query_without_one() {
    let limits = QueryLimits {
        max_time: Some(Duration::from_millis(40)),
        ..QueryLimits::default()
    };
    let mut p = params(StrategyKind::SelfConsistency, 4, limits);
    p.strict = true;
    let slow = ScriptedGenerator::new().otherwise(|_| "Answer: 1".to_string());
    struct Stalling(ScriptedGenerator);
    impl Generate for Stalling {
        async fn generate(&self, req: GenRequest) -> ponder_search::Result<GenOutput> {
            tokio::time::sleep(Duration::from_secs(5)).await;
            self.0.generate(req).await
        }
        fn limits(&self) -> GeneratorLimits {
            self.0.limits()
        }
    }
    let started = std::time::Instant::now();
    let e =
        solve::<_, ScriptedVerifier>(&Stalling(slow), None, &SolutionFormat::default(), p, None)
            .await
            .unwrap_err();
    assert!(
        matches!(e, ponder_search::SearchError::DeadlineExceeded(_)),
        "{e}"
    );
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn queries_sharing_client_permits_stay_under_them_together() {
    let g = Slow {
        inner: answering(256),
        now: AtomicU32::new(0),
        peak: AtomicU32::new(0),
    };
    let v = ScriptedVerifier::new(|steps| vec![0.5; steps.len()]);
    let shared = std::sync::Arc::new(tokio::sync::Semaphore::new(3));
    let format = SolutionFormat::default();
    let dvts = StrategyKind::Dvts {
        width: 1,
        max_rounds: 4,
    };
    let query = |seed: u64| {
        let mut p = params(dvts, 32, QueryLimits::default());
        p.seed = seed;
        p.validate(&format)
            .unwrap()
            .with_client_calls(Some(shared.clone()))
    };
    let (a, b) = (query(1), query(2));
    let (ra, rb) = tokio::join!(
        ponder_search::solve_query(&g, Some(&v), &format, &a, None),
        ponder_search::solve_query(&g, Some(&v), &format, &b, None),
    );
    ra.unwrap();
    rb.unwrap();
    assert_eq!(
        g.peak.load(Ordering::SeqCst),
        3,
        "two queries, one client's 3 permits"
    );
}
