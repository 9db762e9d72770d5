//! Request handling under arbitrary input: random bytes decoded as a `SolveRequest`
//! (prost accepts many byte strings, so this reaches every field with odd values)
//! and random structured requests with extreme numbers and strings. Nothing may
//! panic; every rejection is INVALID_ARGUMENT with a message; everything accepted is
//! within the documented limits. Seeded, so a failure reproduces.

use ponder_cluster::status::to_status;
use ponder_orchestrator::request;
use ponder_proto::v1 as pb;
use ponder_search::{SolutionFormat, StrategyKind};
use prost::Message;
use rand::{Rng, SeedableRng};

fn odd_string(rng: &mut impl Rng) -> String {
    let pool = [
        "",
        "beam_search",
        "beam_search:0",
        "beam_search:99999999999",
        "adaptive:-1",
        "rebase:nan",
        "compute_optimal",
        "majority",
        "lookahead:3:4",
        "revisions:4096",
        "(47+38)*3-19",
        "\u{0}",
        "é😀",
        " dvts : 2 ",
        "last",
        "min",
        "prod",
        "mean",
        "LAST",
    ];
    match rng.random_range(0..4) {
        0 => pool[rng.random_range(0..pool.len())].to_string(),
        1 => (0..rng.random_range(0..40))
            .map(|_| char::from_u32(rng.random_range(0..0x11000)).unwrap_or('?'))
            .collect(),
        2 => "9".repeat(rng.random_range(0..6000)),
        _ => (0..rng.random_range(0..30))
            .map(|_| rng.random_range(b' '..=b'~') as char)
            .collect(),
    }
}

fn odd_u32(rng: &mut impl Rng) -> u32 {
    [
        0,
        1,
        2,
        3,
        255,
        256,
        1024,
        4096,
        4097,
        u32::MAX,
        rng.random(),
    ][rng.random_range(0..11)]
}

fn odd_f32(rng: &mut impl Rng) -> f32 {
    [
        0.0,
        -1.0,
        0.5,
        1.0,
        2.0,
        2.0001,
        f32::NAN,
        f32::INFINITY,
        f32::MIN_POSITIVE,
        rng.random(),
    ][rng.random_range(0..10)]
}

fn structured(rng: &mut impl Rng) -> pb::SolveRequest {
    use pb::strategy::Kind;
    let kind = match rng.random_range(0..12) {
        0 => Kind::SelfConsistency(pb::SelfConsistency {}),
        1 => Kind::BestOfN(pb::BestOfN {}),
        2 => Kind::WeightedBestOfN(pb::WeightedBestOfN {}),
        3 => Kind::BeamSearch(pb::BeamSearch {
            beam_width: odd_u32(rng),
            max_rounds: odd_u32(rng),
        }),
        4 => Kind::Lookahead(pb::Lookahead {
            beam_width: odd_u32(rng),
            depth: odd_u32(rng),
            max_rounds: odd_u32(rng),
        }),
        5 => Kind::Dvts(pb::Dvts {
            beam_width: odd_u32(rng),
            max_rounds: odd_u32(rng),
        }),
        6 => Kind::Rebase(pb::Rebase {
            temperature: odd_f32(rng),
            max_rounds: odd_u32(rng),
        }),
        7 => Kind::Revisions(pb::Revisions {
            chains: odd_u32(rng),
            majority: rng.random(),
        }),
        8 => Kind::Adaptive(pb::AdaptiveStopping {
            wave_size: odd_u32(rng),
            stop_share: odd_f32(rng),
            majority: rng.random(),
        }),
        9 => Kind::ComputeOptimal(pb::ComputeOptimal {}),
        _ => Kind::Name(odd_string(rng)),
    };
    pb::SolveRequest {
        question: odd_string(rng),
        budget: rng.random_bool(0.8).then(|| pb::Budget {
            max_generations: odd_u32(rng),
            max_tokens: [0, 1, 100, 10_000, u64::MAX, rng.random()][rng.random_range(0..6)],
            // Mostly unset, so that the other fields' checks are still reached.
            max_flops: if rng.random_bool(0.7) {
                0.0
            } else {
                [-1.0, f64::NAN, f64::INFINITY, 1e9, 1e30, rng.random()][rng.random_range(0..6)]
            },
            // Mostly unset too; otherwise any value, above the maximum included.
            min_generations: if rng.random_bool(0.7) {
                0
            } else {
                odd_u32(rng)
            },
        }),
        strategy: rng
            .random_bool(0.9)
            .then_some(pb::Strategy { kind: Some(kind) }),
        seed: rng.random(),
        temperature: odd_f32(rng),
        aggregation: odd_string(rng),
        strict: rng.random(),
        model_id: if rng.random_bool(0.1) {
            "m".repeat(rng.random_range(0..400))
        } else {
            odd_string(rng)
        },
        // Unknown enum values included: they take the server's default.
        budget_mode: rng.random_range(-1..4),
    }
}

/// The service's edge: convert (`request::params`), then validate once
/// (`SolveParams::validate`), errors mapped to a status in the one place.
fn check(req: &pb::SolveRequest, accepted: &mut u32) {
    let format = SolutionFormat::default();
    let result = request::params(req, None, request::DEFAULT_GENERATIONS, "fuzz".into())
        .and_then(|p| p.validate(&format).map_err(to_status));
    match result {
        Ok(q) => {
            *accepted += 1;
            assert!(q.budget().max_generations >= 1, "{req:?}");
            assert!(
                (1..=q.budget().max_generations).contains(&q.budget().min_generations),
                "{req:?}"
            );
            if let Some(s) = q.strategy() {
                s.validate().unwrap();
            }
            let t = q.temperature();
            assert!(t > 0.0 && t <= 2.0, "{req:?}");
        }
        Err(e) => {
            assert_eq!(e.code(), tonic::Code::InvalidArgument, "{req:?}: {e:?}");
            assert!(e.message().len() > 10, "{req:?}: {e:?}");
        }
    }
}

#[test]
fn arbitrary_requests_never_panic_and_rejections_say_why() {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(20261129);
    let (mut accepted, mut decoded) = (0, 0);
    for _ in 0..20_000 {
        let req = structured(&mut rng);
        check(&req, &mut accepted);
        // The same request with bits flipped on the wire.
        let mut bytes = req.encode_to_vec();
        for _ in 0..rng.random_range(0..4) {
            if !bytes.is_empty() {
                let i = rng.random_range(0..bytes.len());
                bytes[i] ^= 1 << rng.random_range(0..8);
            }
        }
        if let Ok(r) = pb::SolveRequest::decode(bytes.as_slice()) {
            decoded += 1;
            check(&r, &mut accepted);
        }
        let noise: Vec<u8> = (0..rng.random_range(0..64)).map(|_| rng.random()).collect();
        if let Ok(r) = pb::SolveRequest::decode(noise.as_slice()) {
            decoded += 1;
            check(&r, &mut accepted);
        }
    }
    // The generator must reach both sides of the validation.
    assert!(accepted > 200, "only {accepted} accepted");
    assert!(decoded > 5_000, "only {decoded} decoded");
}

#[test]
fn strategy_names_never_panic() {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    for _ in 0..50_000 {
        let s = odd_string(&mut rng);
        if let Err(e) = StrategyKind::parse(&s).and_then(|k| k.validate().map(|_| k)) {
            assert!(!e.to_string().is_empty());
        }
    }
}
