//! Where the bundled models are found, and which of them `ponder up`, `ponder eval` and
//! the benchmarks serve.
//!
//! `--models DIR` / `PONDER_MODELS` wins; otherwise `./models` (a checkout's root),
//! then the checkout this binary was built from (so `cargo run` works from any
//! directory of the repository). The directory's `manifest.json` names the default
//! generator and verifier (`ponder_worker::manifest`); a directory in the older
//! `arith-gen/` + `arith-prm/` layout reads the same way.

use ponder_worker::manifest::{ModelRole, ModelsDir, MANIFEST_FILE};
use std::path::{Path, PathBuf};

/// The compute-optimal policy file when the manifest names none (the older layout).
pub const LEGACY_POLICY_FILE: &str = "arith-policy.json";

/// The models a local cluster serves, resolved and verified against the manifest.
#[derive(Debug, Clone)]
pub struct Bundled {
    pub dir: ModelsDir,
    pub generator: PathBuf,
    /// The manifest's other generators (the rest of the ladder), verified too.
    pub other_generators: Vec<PathBuf>,
    /// None when the directory has no verifier (strategies then run without scores).
    pub verifier: Option<PathBuf>,
    /// The compute-optimal policy fitted on this pair by `ponder eval --fit`, if any.
    pub policy: Option<PathBuf>,
    /// The policy over the whole generator ladder (`ponder eval --flops`), if any: for
    /// a cluster that serves every generator.
    pub ladder_policy: Option<PathBuf>,
}

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
        .find(|d| ModelsDir::is_models_dir(d))
        .ok_or_else(|| {
            anyhow::anyhow!(
                "cannot find the bundled models (models/{MANIFEST_FILE}); run from the repository root or pass --models DIR"
            )
        })
}

/// Opens the models directory and resolves its default generator and its default
/// verifier, or the verifier named (checking their digests).
pub fn bundled(explicit: Option<&Path>, verifier: Option<&str>) -> anyhow::Result<Bundled> {
    let dir = ModelsDir::open(&models_dir(explicit)?)?;
    let generator = dir.resolve(ModelRole::Generator, None)?;
    let default_name = dir
        .default_for(ModelRole::Generator)
        .map(|m| m.name.clone())
        .unwrap_or_default();
    let other_generators = dir
        .manifest
        .models
        .iter()
        .filter(|m| m.role == ModelRole::Generator && m.name != default_name)
        .map(|m| dir.resolve(ModelRole::Generator, Some(&m.name)))
        .collect::<Result<Vec<_>, _>>()?;
    let verifier = match dir.select_or_default(ModelRole::Verifier, verifier)? {
        Some(m) => Some(dir.resolve(ModelRole::Verifier, Some(&m.name))?),
        None => None,
    };
    let policy_file = dir.manifest.policy.as_deref().unwrap_or(LEGACY_POLICY_FILE);
    let policy = Some(dir.root.join(policy_file)).filter(|p| p.is_file());
    let ladder_policy = match &dir.manifest.ladder_policy {
        Some(named) => {
            let p = dir.root.join(named);
            anyhow::ensure!(
                p.is_file(),
                "{}: the ladder policy {named} it names is missing",
                dir.root.join(MANIFEST_FILE).display()
            );
            Some(p)
        }
        None => None,
    };
    if let (Some(named), None) = (&dir.manifest.policy, &policy) {
        anyhow::bail!(
            "{}: the policy {named} it names is missing",
            dir.root.join(MANIFEST_FILE).display()
        );
    }
    Ok(Bundled {
        dir,
        generator,
        other_generators,
        verifier,
        policy,
        ladder_policy,
    })
}

/// `ponder models`: what the directory holds, with each model's digests checked.
pub fn print(explicit: Option<&Path>) -> anyhow::Result<()> {
    let dir = ModelsDir::open(&models_dir(explicit)?)?;
    println!("{}", dir.root.display());
    println!(
        "{:<16} {:<10} {:>8} {:>12} {:>10}  {:<9} {:<3} description",
        "name", "role", "default", "parameters", "train FLOPs", "digests", "kv"
    );
    let mut failures = 0;
    for m in &dir.manifest.models {
        let is_default = dir.default_for(m.role).is_some_and(|d| d.name == m.name);
        let digests = if m.sha256.is_empty() {
            "none".to_string()
        } else {
            match dir.verify(m) {
                Ok(()) => "ok".to_string(),
                Err(e) => {
                    failures += 1;
                    eprintln!("{e}");
                    "MISMATCH".to_string()
                }
            }
        };
        println!(
            "{:<16} {:<10} {:>8} {:>12} {:>10.2e}  {:<9} {:<3} {}",
            m.name,
            m.role.to_string(),
            if is_default { "yes" } else { "" },
            m.parameters,
            m.training_flops,
            digests,
            m.kv_cache.unwrap_or_default().name(),
            m.description
        );
    }
    if let Some(p) = &dir.manifest.policy {
        println!("policy: {p}");
    }
    anyhow::ensure!(
        failures == 0,
        "{failures} model(s) failed their digest check"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shipped() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models")
    }

    #[test]
    fn a_named_verifier_replaces_the_default_and_an_unknown_one_is_refused() {
        let default = bundled(Some(&shipped()), None).unwrap();
        assert!(default.verifier.unwrap().ends_with("arith-prm"));
        let duo = bundled(Some(&shipped()), Some("arith-prm-duo")).unwrap();
        assert!(duo.verifier.unwrap().ends_with("arith-prm-duo"));
        let err = match bundled(Some(&shipped()), Some("arith-gen-s")) {
            Ok(_) => panic!("a generator was served as the verifier"),
            Err(e) => e.to_string(),
        };
        assert!(
            err.contains("not a verifier") && err.contains("arith-prm-duo"),
            "{err}"
        );
    }
}
