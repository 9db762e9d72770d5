//! Which models a cluster serves, and which one a query runs on.
//!
//! Why models beside members: a cluster may serve several generator models at once (a
//! ladder of sizes, docs/cluster.md "Several models"), and a query's calls must all go
//! to one of them. Pools are kept per model ([`crate::GeneratorPool::for_model`]): a
//! budget in FLOPs is reserved by one model's parameter count, a prefix cache only helps
//! calls of the same model, and samples of two models do not vote together. A model is
//! known by the `model_id` its members report in ModelInfo (for a models directory, the
//! manifest's name; members that disagree about a model's weights are told apart by the
//! parameter count and refused by `--expect-model`, docs/security.md).

use crate::membership::Snapshot;
use crate::Role;
use std::collections::BTreeMap;

/// One model served by a role's members.
#[derive(Debug, Clone, PartialEq)]
pub struct ServedModel {
    pub model_id: String,
    /// Parameters, as its members report them (the most common count).
    pub parameters: u64,
    /// Members that have answered ModelInfo.
    pub ready: usize,
    /// Of those, members neither ejected nor failing (`Member::is_failing`).
    pub serving: usize,
}

impl ServedModel {
    /// FLOPs of one token through the model: 2 x parameters.
    pub fn flops_per_token(&self) -> f64 {
        ponder_search::traits::forward_flops(self.parameters, 1)
    }
}

/// The models `role`'s ready members serve, by model id.
pub fn served(snapshot: &Snapshot, role: Role) -> Vec<ServedModel> {
    let mut by_id: BTreeMap<String, (BTreeMap<u64, usize>, usize, usize)> = BTreeMap::new();
    for m in snapshot.members(role) {
        let Some(info) = m.info.get() else { continue };
        let e = by_id.entry(info.model_id.clone()).or_default();
        *e.0.entry(info.parameters).or_default() += 1;
        e.1 += 1;
        e.2 += usize::from(!m.is_ejected() && !m.is_failing());
    }
    by_id
        .into_iter()
        .map(|(model_id, (counts, ready, serving))| ServedModel {
            model_id,
            parameters: counts
                .iter()
                .max_by_key(|&(p, c)| (*c, *p))
                .map_or(0, |(p, _)| *p),
            ready,
            serving,
        })
        .collect()
}

/// The generator model a query runs on, and what the choice had to work around.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelChoice {
    pub model_id: String,
    /// For the client (`SolveResponse.routing_notes`): why another model than the one
    /// asked for or configured was used.
    pub notes: Vec<String>,
}

/// Why no model could be chosen.
#[derive(Debug, Clone, PartialEq)]
pub enum NoModel {
    /// The pinned model is not served by any member: the request names a model this
    /// cluster does not have (INVALID_ARGUMENT; the message lists the models).
    Unknown(String),
    /// No generator is ready (UNAVAILABLE).
    NoneReady,
}

impl std::fmt::Display for NoModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NoModel::Unknown(m) => f.write_str(m),
            NoModel::NoneReady => f.write_str("no generator is available"),
        }
    }
}

/// Chooses the generator model of a query among `models` (from [`served`]):
/// - `pinned` (non-empty): that model; it must be served (a pinned model whose members
///   are all ejected is still chosen: its calls wait for them, within the deadline);
/// - otherwise `default` when it has a serving member;
/// - otherwise the model with the most serving members (ties: fewer parameters, then
///   the id), noted when a configured default was skipped.
pub fn choose(
    models: &[ServedModel],
    pinned: &str,
    default: Option<&str>,
) -> Result<ModelChoice, NoModel> {
    if !pinned.is_empty() {
        return match models.iter().find(|m| m.model_id == pinned) {
            Some(m) => Ok(ModelChoice {
                model_id: m.model_id.clone(),
                notes: vec![],
            }),
            None => Err(NoModel::Unknown(format!(
                "model_id {pinned:?} is not served by this cluster; it serves {}",
                list(models)
            ))),
        };
    }
    if models.is_empty() {
        return Err(NoModel::NoneReady);
    }
    if let Some(d) = default {
        if models.iter().any(|m| m.model_id == d && m.serving > 0) {
            return Ok(ModelChoice {
                model_id: d.to_string(),
                notes: vec![],
            });
        }
    }
    let best = models
        .iter()
        .max_by(|a, b| {
            a.serving
                .cmp(&b.serving)
                .then(b.parameters.cmp(&a.parameters))
                .then(b.model_id.cmp(&a.model_id))
        })
        .expect("models is not empty");
    let notes = match default {
        Some(d) => vec![format!(
            "the default model {d} has no serving generator; used {}",
            best.model_id
        )],
        None => vec![],
    };
    Ok(ModelChoice {
        model_id: best.model_id.clone(),
        notes,
    })
}

fn list(models: &[ServedModel]) -> String {
    if models.is_empty() {
        return "no model right now".into();
    }
    models
        .iter()
        .map(|m| m.model_id.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(id: &str, parameters: u64, serving: usize) -> ServedModel {
        ServedModel {
            model_id: id.into(),
            parameters,
            ready: serving.max(1),
            serving,
        }
    }

    #[test]
    fn a_pinned_model_is_used_and_an_unknown_one_is_named() {
        let models = [model("xs", 47_000, 1), model("l", 1_310_000, 2)];
        assert_eq!(choose(&models, "xs", Some("l")).unwrap().model_id, "xs");
        let e = choose(&models, "m", Some("l")).unwrap_err();
        assert!(
            matches!(&e, NoModel::Unknown(m) if m.contains("\"m\"") && m.contains("xs, l")),
            "{e}"
        );
    }

    #[test]
    fn the_default_is_used_while_it_serves_and_skipped_with_a_note_when_not() {
        let mut models = vec![model("xs", 47_000, 1), model("s", 230_000, 1)];
        let c = choose(&models, "", Some("s")).unwrap();
        assert_eq!((c.model_id.as_str(), c.notes.len()), ("s", 0));
        models[1].serving = 0;
        let c = choose(&models, "", Some("s")).unwrap();
        assert_eq!(c.model_id, "xs");
        assert!(c.notes[0].contains("default model s"), "{:?}", c.notes);
        // No default: the model with the most serving members, then the smallest.
        models[1].serving = 1;
        assert_eq!(choose(&models, "", None).unwrap().model_id, "xs");
        assert_eq!(choose(&[], "", None).unwrap_err(), NoModel::NoneReady);
    }
}
