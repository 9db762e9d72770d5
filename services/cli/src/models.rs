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
    let verifier_entry = dir.select_or_default(ModelRole::Verifier, verifier)?;
    let verifier = match verifier_entry {
        Some(m) => Some(dir.resolve(ModelRole::Verifier, Some(&m.name))?),
        None => None,
    };
    let (policy_name, ladder_name) = dir.policies_for(verifier_entry);
    let default_verifier = dir.is_default_verifier(verifier_entry);
    let policy = match policy_name {
        Some(named) => Some(policy_file(&dir, named, "policy")?),
        // A manifest that names no policy (and the layout before the manifest): the
        // conventional file, for the default verifier it was fitted with.
        None if default_verifier && dir.root.join(LEGACY_POLICY_FILE).is_file() => {
            Some(policy_file(&dir, LEGACY_POLICY_FILE, "policy")?)
        }
        None => None,
    };
    let ladder_policy = match ladder_name {
        Some(named) => Some(policy_file(&dir, named, "ladder policy")?),
        None => None,
    };
    if let (Some(v), None) = (verifier_entry, &policy) {
        tracing::warn!(
            verifier = %v.name,
            "no compute-optimal policy was fitted with this verifier (its manifest entry names none): compute-optimal runs the built-in policy; fit one with `ponder eval --fit --verifier {}`",
            v.name
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

/// `root/named`, which the manifest names as a verifier's `what`, checked against the
/// manifest's digest for it; an error if missing or changed.
fn policy_file(dir: &ModelsDir, named: &str, what: &str) -> anyhow::Result<PathBuf> {
    let p = dir.root.join(named);
    anyhow::ensure!(
        p.is_file(),
        "{}: the {what} {named} it names is missing",
        dir.root.join(MANIFEST_FILE).display()
    );
    dir.verify_root_file(named)?;
    Ok(p)
}

/// `file (digest: ...)` for `ponder models`, counting a mismatch in `failures`.
fn policy_line(dir: &ModelsDir, file: Option<&str>, absent: &str, failures: &mut usize) -> String {
    let Some(file) = file else {
        return absent.to_string();
    };
    let digest = if !dir.manifest.sha256.contains_key(file) {
        "none"
    } else if let Err(e) = dir.verify_root_file(file) {
        *failures += 1;
        eprintln!("{e}");
        "MISMATCH"
    } else {
        "ok"
    };
    format!("{file} (digest {digest})")
}

/// `ponder models`: what the directory holds, with each model's digests checked.
pub fn print(explicit: Option<&Path>) -> anyhow::Result<()> {
    let dir = ModelsDir::open(&models_dir(explicit)?)?;
    println!("{}", dir.root.display());
    println!(
        "{:<16} {:<10} {:>8} {:>12} {:>10}  {:<9} {:<3} {:<7} description",
        "name", "role", "default", "parameters", "train FLOPs", "digests", "kv", "weights"
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
            "{:<16} {:<10} {:>8} {:>12} {:>10.2e}  {:<9} {:<3} {:<7} {}",
            m.name,
            m.role.to_string(),
            if is_default { "yes" } else { "" },
            m.parameters,
            m.training_flops,
            digests,
            m.kv_cache.unwrap_or_default().name(),
            match m.quantize.unwrap_or_default() {
                ponder_engine::Quantize::None => "f32",
                q => q.name(),
            },
            m.description
        );
    }
    for v in dir
        .manifest
        .models
        .iter()
        .filter(|m| m.role == ModelRole::Verifier)
    {
        let (policy, ladder) = dir.policies_for(Some(v));
        println!(
            "policies with {}: {} (default generator), {} (ladder)",
            v.name,
            policy_line(&dir, policy, "built-in", &mut failures),
            policy_line(&dir, ladder, "none", &mut failures)
        );
    }
    anyhow::ensure!(
        failures == 0,
        "{failures} file(s) failed their digest check"
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

    #[test]
    fn each_shipped_verifier_brings_the_policies_fitted_with_it() {
        let of = |v: &str| {
            let b = bundled(Some(&shipped()), Some(v)).unwrap();
            let name = |p: Option<PathBuf>| p.map(|p| p.file_name().unwrap().to_owned());
            (name(b.policy), name(b.ladder_policy))
        };
        let (prm, prm_ladder) = of("arith-prm");
        let (small, small_ladder) = of("arith-prm-s");
        assert!(prm.is_some() && prm_ladder.is_some() && small.is_some() && small_ladder.is_some());
        assert_ne!(prm, small, "arith-prm-s would route on arith-prm's fit");
        assert_ne!(prm_ladder, small_ladder);
        // Every shipped policy is hashed, as the weights are.
        let dir = ModelsDir::open(&shipped()).unwrap();
        for file in [&prm, &prm_ladder, &small, &small_ladder] {
            let file = file.as_ref().unwrap().to_str().unwrap();
            assert!(
                dir.manifest.sha256.contains_key(file),
                "{file} has no digest"
            );
        }
        // The ensemble has no fit of its own: it runs the built-in policy, not another's.
        assert_eq!(of("arith-prm-duo"), (None, None));
    }
}
