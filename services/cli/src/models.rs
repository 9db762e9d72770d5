//! Where the bundled models are found.
//!
//! `--models DIR` / `PONDER_MODELS` wins; otherwise `./models` (a checkout's root),
//! then the checkout this binary was built from (so `cargo run` works from any
//! directory of the repository).

use std::path::{Path, PathBuf};

pub const GENERATOR_DIR: &str = "arith-gen";
pub const VERIFIER_DIR: &str = "arith-prm";
/// The compute-optimal policy fitted on the bundled pair by `ponder eval`.
pub const POLICY_FILE: &str = "arith-policy.json";

pub fn models_dir(explicit: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(p) = explicit {
        return Ok(p.to_path_buf());
    }
    let candidates = [
        PathBuf::from("models"),
        PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../models")),
    ];
    candidates
        .into_iter()
        .find(|d| d.join(GENERATOR_DIR).join("config.json").is_file())
        .ok_or_else(|| {
            anyhow::anyhow!(
                "cannot find the bundled models (models/{GENERATOR_DIR}); run from the repository root or pass --models DIR"
            )
        })
}
