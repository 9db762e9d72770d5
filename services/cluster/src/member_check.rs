//! Which discovered members may serve calls: a member's ModelInfo is checked against the
//! operator's expectations and against sane bounds before it becomes routable.
//!
//! Why: a record in etcd is only an address, and the ModelInfo behind it only what that
//! address says. Without TLS, anyone who can write a record (or answer at an address)
//! could join a pool; and the pools plan every query with the members' limits, so one
//! member reporting `context_length: 1` or a huge PRM overhead would shrink or break
//! every query. So a member is refused (not routable, with a warning and
//! `ponder_refusals_total{what="member"}`) when it serves a model the operator did not
//! expect (`--expect-model ROLE=ID`), when its answer contradicts its record, or when a
//! limit is outside what any real model reports. And the pools take their limits from
//! what most members report, never from a single outlier (`pool.rs`). mTLS with a
//! cluster CA is what keeps an attacker out entirely (docs/security.md); these checks
//! bound the damage of a misconfigured or rogue member either way.

use crate::member::{MemberRecord, Role};
use ponder_proto::v1::ModelInfoResponse;
use std::collections::{BTreeSet, HashMap};

/// ModelInfo.engine of a node replaying a recording.
pub const RECORDED_ENGINE: &str = "recorded";

/// Shortest context a member may report, in tokens (the bundled models have 2,048).
pub const MIN_CONTEXT_TOKENS: u32 = 256;
/// Longest context a member may report.
pub const MAX_CONTEXT_TOKENS: u32 = 1 << 22;
/// Longest text one vocabulary token may decode to.
pub const MAX_TOKEN_BYTES: u32 = 1024;
/// Largest PRM overhead (per prompt, per step) a verifier may report, in tokens.
pub const MAX_PRM_OVERHEAD: u64 = 4096;
/// Most samples per call a generator may report.
pub const MAX_SAMPLES_PER_CALL: u32 = 4096;

/// What the operator expects of each role's members.
#[derive(Debug, Clone, Default)]
pub struct Expectations {
    /// The model ids each role's members may serve (absent: any). Several for one
    /// role: a cluster serving a ladder of generator models.
    pub models: HashMap<Role, BTreeSet<String>>,
    /// Members on the recorded backend (ModelInfo.engine "recorded") may serve: only
    /// for scale measurements (--allow-recorded, docs/scaling.md).
    pub allow_recorded: bool,
}

impl Expectations {
    /// Parses `--expect-model` values, each `ROLE=MODEL_ID` (role `generator` or
    /// `verifier`); a role given several times may serve any of its ids.
    pub fn parse(specs: &[String]) -> anyhow::Result<Self> {
        let mut models: HashMap<Role, BTreeSet<String>> = HashMap::new();
        for spec in specs {
            let (role, id) = spec.split_once('=').ok_or_else(|| {
                anyhow::anyhow!(
                    "--expect-model {spec:?}: write ROLE=MODEL_ID, e.g. generator=arith-gen"
                )
            })?;
            let role = match role.trim() {
                "generator" => Role::Generator,
                "verifier" => Role::Verifier,
                other => anyhow::bail!(
                    "--expect-model {spec:?}: the role must be generator or verifier, not {other:?}"
                ),
            };
            let id = id.trim();
            anyhow::ensure!(
                !id.is_empty(),
                "--expect-model {spec:?}: the model id is empty"
            );
            models.entry(role).or_default().insert(id.to_string());
        }
        Ok(Self {
            models,
            allow_recorded: false,
        })
    }
}

/// Why a member was refused: a short label for the metric and a message for the log.
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    pub reason: &'static str,
    pub message: String,
}

fn refuse(reason: &'static str, message: String) -> Result<(), Refusal> {
    Err(Refusal { reason, message })
}

/// Whether the member `record` that answered `info` may serve calls.
pub fn check(
    record: &MemberRecord,
    info: &ModelInfoResponse,
    expect: &Expectations,
) -> Result<(), Refusal> {
    if let Some(want) = expect.models.get(&record.role) {
        if !want.contains(&info.model_id) {
            let ids: Vec<String> = want.iter().map(|id| format!("{id:?}")).collect();
            return refuse(
                "model",
                format!(
                    "serves model {:?}; this orchestrator expects {} for its {}s (--expect-model)",
                    info.model_id,
                    ids.join(" or "),
                    record.role.as_str()
                ),
            );
        }
    }
    if info.engine == RECORDED_ENGINE && !expect.allow_recorded {
        return refuse(
            "recorded",
            "serves answers from a recording (engine \"recorded\"), not a model; start the \
             orchestrator with --allow-recorded to accept such members (scale measurements \
             only, docs/scaling.md)"
                .into(),
        );
    }
    if !record.model_id.is_empty() && record.model_id != info.model_id {
        return refuse(
            "record",
            format!(
                "its record names model {:?} but it serves {:?}",
                record.model_id, info.model_id
            ),
        );
    }
    if record.role == Role::Verifier && info.prm.is_empty() {
        return refuse("role", "registered as a verifier but serves no PRM".into());
    }
    let bounds = [
        (
            "context_length",
            (MIN_CONTEXT_TOKENS..=MAX_CONTEXT_TOKENS).contains(&info.context_length),
        ),
        (
            "max_token_bytes",
            (1..=MAX_TOKEN_BYTES).contains(&info.max_token_bytes),
        ),
        ("vocab_size", info.vocab_size >= 2),
        ("parameters", info.parameters >= 1),
        (
            "prm_prompt_overhead",
            info.prm_prompt_overhead <= MAX_PRM_OVERHEAD,
        ),
        (
            "prm_step_overhead",
            info.prm_step_overhead <= MAX_PRM_OVERHEAD,
        ),
        (
            "max_samples_per_request",
            info.max_samples_per_request <= MAX_SAMPLES_PER_CALL,
        ),
    ];
    if let Some((field, _)) = bounds.iter().find(|(_, ok)| !ok) {
        return refuse(
            "limits",
            format!(
                "reports {field} out of bounds (context {} tokens, max_token_bytes {}, vocab {}, \
                 parameters {}, PRM overheads {}/{}, max samples {})",
                info.context_length,
                info.max_token_bytes,
                info.vocab_size,
                info.parameters,
                info.prm_prompt_overhead,
                info.prm_step_overhead,
                info.max_samples_per_request
            ),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(role: Role) -> MemberRecord {
        MemberRecord {
            role,
            instance_id: "g1".into(),
            address: "127.0.0.1:1".into(),
            model_id: String::new(),
            capacity: 0,
        }
    }

    fn honest() -> ModelInfoResponse {
        ModelInfoResponse {
            model_id: "arith-gen".into(),
            context_length: 2048,
            max_token_bytes: 1,
            vocab_size: 101,
            parameters: 1_305_472,
            max_samples_per_request: 256,
            ..Default::default()
        }
    }

    #[test]
    fn an_honest_member_passes_and_poisonous_limits_are_refused() {
        let none = Expectations::default();
        assert_eq!(check(&record(Role::Generator), &honest(), &none), Ok(()));
        for (poison, field) in [
            (
                ModelInfoResponse {
                    context_length: 1,
                    ..honest()
                },
                "context_length",
            ),
            (
                ModelInfoResponse {
                    context_length: 0,
                    ..honest()
                },
                "context_length",
            ),
            (
                ModelInfoResponse {
                    max_token_bytes: 1 << 20,
                    ..honest()
                },
                "max_token_bytes",
            ),
            (
                ModelInfoResponse {
                    prm_step_overhead: 1 << 30,
                    ..honest()
                },
                "prm_step_overhead",
            ),
        ] {
            let r = check(&record(Role::Generator), &poison, &none).unwrap_err();
            assert_eq!(r.reason, "limits");
            assert!(r.message.contains(field), "{}", r.message);
        }
        let r = check(&record(Role::Verifier), &honest(), &none).unwrap_err();
        assert_eq!(r.reason, "role");
    }

    #[test]
    fn a_recorded_member_is_refused_unless_allowed() {
        let recorded = ModelInfoResponse {
            engine: RECORDED_ENGINE.into(),
            ..honest()
        };
        let r = check(
            &record(Role::Generator),
            &recorded,
            &Expectations::default(),
        )
        .unwrap_err();
        assert_eq!(r.reason, "recorded");
        assert!(r.message.contains("--allow-recorded"), "{}", r.message);
        let allowed = Expectations {
            allow_recorded: true,
            ..Expectations::default()
        };
        assert_eq!(check(&record(Role::Generator), &recorded, &allowed), Ok(()));
        let candle = ModelInfoResponse {
            engine: "candle".into(),
            ..honest()
        };
        assert_eq!(
            check(&record(Role::Generator), &candle, &Expectations::default()),
            Ok(())
        );
    }

    #[test]
    fn an_unexpected_model_or_a_contradicted_record_is_refused() {
        let expect = Expectations::parse(&["generator=arith-gen".into()]).unwrap();
        assert_eq!(check(&record(Role::Generator), &honest(), &expect), Ok(()));
        let other = ModelInfoResponse {
            model_id: "evil".into(),
            ..honest()
        };
        let r = check(&record(Role::Generator), &other, &expect).unwrap_err();
        assert_eq!(r.reason, "model");
        assert!(r.message.contains("--expect-model"), "{}", r.message);
        let mut lying = record(Role::Generator);
        lying.model_id = "arith-gen-xs".into();
        let r = check(&lying, &honest(), &Expectations::default()).unwrap_err();
        assert_eq!(r.reason, "record");
        for bad in ["generator", "worker=x", "generator="] {
            let specs: Vec<String> = bad.split(',').map(String::from).collect();
            assert!(Expectations::parse(&specs).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_ladder_of_generator_models_may_be_expected() {
        let specs: Vec<String> = [
            "generator=arith-gen-xs",
            "generator=arith-gen",
            "verifier=arith-prm",
        ]
        .map(String::from)
        .to_vec();
        let expect = Expectations::parse(&specs).unwrap();
        let serving = |id: &str| ModelInfoResponse {
            model_id: id.into(),
            ..honest()
        };
        assert_eq!(
            check(&record(Role::Generator), &serving("arith-gen"), &expect),
            Ok(())
        );
        let mut xs = record(Role::Generator);
        xs.model_id = "arith-gen-xs".into();
        assert_eq!(check(&xs, &serving("arith-gen-xs"), &expect), Ok(()));
        let r = check(&record(Role::Generator), &serving("arith-gen-l"), &expect).unwrap_err();
        assert_eq!(r.reason, "model");
        assert!(
            r.message.contains("\"arith-gen\" or \"arith-gen-xs\""),
            "{}",
            r.message
        );
    }
}
