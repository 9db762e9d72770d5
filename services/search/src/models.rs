//! The generator models one query may run on.
//!
//! Why a set and not one generator: compute-optimal search chooses the model as well as
//! the strategy (Snell et al.'s exchange of model size against test-time compute,
//! docs/strategies.md "Over model sizes"). It probes the question on the cheapest model,
//! then runs on the model its policy names for the predicted difficulty and budget. Every
//! other strategy runs on one model, the set's default, so a one-model set
//! ([`Generators::one`]) is what a single-model caller passes. The set is plain data over
//! borrowed generators of one type: in-process engines in `ponder eval`, gRPC pools (one
//! per served model) in the orchestrator.

use crate::error::{Result, SearchError};
use crate::traits::Generate;

/// One model of the set: its id (the manifest's name, `ModelInfo.model_id`) and the
/// generator that serves it.
pub struct Model<'a, G> {
    pub id: String,
    pub generator: &'a G,
}

/// Generator models by cost, cheapest first, with the one that runs by default.
pub struct Generators<'a, G> {
    models: Vec<Model<'a, G>>,
    default: usize,
    /// The client named the model: compute-optimal stays on it.
    pinned: bool,
}

impl<'a, G: Generate> Generators<'a, G> {
    /// A set of one model (its id may be empty where nobody needs to know it).
    pub fn one(id: impl Into<String>, generator: &'a G) -> Self {
        Self {
            models: vec![Model {
                id: id.into(),
                generator,
            }],
            default: 0,
            pinned: false,
        }
    }

    /// The set as a client pinned it: compute-optimal stays on the default model,
    /// taking only the strategy and generations from its policy.
    pub fn pinned(self) -> Self {
        Self {
            pinned: true,
            ..self
        }
    }

    pub fn is_pinned(&self) -> bool {
        self.pinned
    }

    /// The set of `models`, sorted by parameters (then id); `default` names the one
    /// that runs every strategy but compute-optimal. Ids must be distinct.
    pub fn new(mut models: Vec<Model<'a, G>>, default: &str) -> Result<Self> {
        if models.is_empty() {
            return Err(SearchError::Unavailable(
                "no generator model is available".into(),
            ));
        }
        models.sort_by(|a, b| {
            (a.generator.limits().parameters, &a.id).cmp(&(b.generator.limits().parameters, &b.id))
        });
        if models.windows(2).any(|w| w[0].id == w[1].id) {
            return Err(SearchError::invalid("a generator model is listed twice"));
        }
        let default = models.iter().position(|m| m.id == default).ok_or_else(|| {
            SearchError::invalid(format!("the default model {default:?} is not in the set"))
        })?;
        Ok(Self {
            models,
            default,
            pinned: false,
        })
    }

    pub fn len(&self) -> usize {
        self.models.len()
    }

    pub fn is_empty(&self) -> bool {
        self.models.is_empty()
    }

    /// Model `i` (0 = cheapest).
    pub fn get(&self, i: usize) -> &Model<'a, G> {
        &self.models[i]
    }

    pub fn default_index(&self) -> usize {
        self.default
    }

    /// The position of the model called `id`.
    pub fn position(&self, id: &str) -> Option<usize> {
        self.models.iter().position(|m| m.id == id)
    }

    /// The ids, cheapest first (for messages).
    pub fn ids(&self) -> Vec<&str> {
        self.models.iter().map(|m| m.id.as_str()).collect()
    }
}
