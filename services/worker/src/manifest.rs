//! The models directory and its manifest: which bundled model plays which role.
//!
//! Why a manifest: Ponder ships a ladder of generators and a verifier, and everything
//! that starts a node (`ponder up`, the scripts, the image, the Helm chart, the tests)
//! must agree on which one is the default without hard-coding directory names. The
//! manifest names each model, its role, its size, what it cost to train and the sha256
//! of every file the engine reads; a node resolves `--model DIR` through it and refuses
//! files whose digest differs (secure by default: a model directory is verified before
//! it is served).
//!
//! A models directory without `manifest.json` in the first layout (`arith-gen/` and
//! `arith-prm/`) keeps working: it reads as a two-entry manifest without digests.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// The file a models directory describes itself in.
pub const MANIFEST_FILE: &str = "manifest.json";
/// The generator and verifier directories of the layout before the manifest.
pub const LEGACY_GENERATOR_DIR: &str = "arith-gen";
pub const LEGACY_VERIFIER_DIR: &str = "arith-prm";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelRole {
    Generator,
    Verifier,
}

impl fmt::Display for ModelRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ModelRole::Generator => "generator",
            ModelRole::Verifier => "verifier",
        })
    }
}

/// One model of the directory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelEntry {
    /// Unique within the manifest; what `--model-name` selects.
    pub name: String,
    pub role: ModelRole,
    /// Relative to the models directory (HF layout: config.json, model.safetensors,
    /// tokenizer.json, and prm.json for a verifier).
    pub dir: String,
    pub parameters: u64,
    /// Training compute, 6 x parameters x training tokens (forward and backward).
    pub training_flops: f64,
    /// File (relative to `dir`; an ensemble member's as `member/file`) -> lowercase hex
    /// SHA-256. Every file listed is checked before the model is served; the legacy
    /// layout has none.
    #[serde(default)]
    pub sha256: BTreeMap<String, String>,
    /// The model a request gets when it pins none (one per role at most; exactly one
    /// generator).
    #[serde(default)]
    pub default: bool,
    /// What it is, in a line (shown by `ponder models`).
    #[serde(default)]
    pub description: String,
    /// How a node stores this model's KV cache unless `--kv-cache-dtype` says otherwise
    /// (absent: f32). The bundled models say f16, measured to answer as f32 does
    /// (docs/engine.md, "f16 KV cache").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kv_cache: Option<ponder_engine::KvDtype>,
    /// How a node holds this model's weights unless `--quantize` says otherwise (absent:
    /// none, the file's f32). `bf16` runs the AVX-512 BF16 kernel where the CPU has it
    /// (docs/engine.md, "bf16 weights").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantize: Option<ponder_engine::Quantize>,
    /// A verifier's compute-optimal policy over the default generator (`ponder eval
    /// --fit --verifier NAME`), a file in the models directory. A policy's thresholds
    /// and choices were fitted on one verifier's scores, so a cluster started with this
    /// verifier loads this one (see [`ModelsDir::policies_for`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    /// A verifier's policy over the whole generator ladder (`ponder eval --flops
    /// --verifier NAME`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ladder_policy: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// The manifest format; this reader knows 1.
    pub format: u32,
    pub models: Vec<ModelEntry>,
    /// The compute-optimal policy (`ponder eval --fit`) fitted on the default pair, a
    /// file in the models directory: the default verifier's when its entry names none
    /// (the layout before verifiers named their own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    /// The policy over the whole generator ladder (`ponder eval --flops`): it names
    /// models, so it serves a cluster that runs them all (`ponder up` without
    /// `--default-only`). The default verifier's when its entry names none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ladder_policy: Option<String>,
    /// File at the root of the directory (the policies) -> lowercase hex SHA-256, checked
    /// before the file is used, as a model's files are ([`ModelsDir::verify_root_file`]).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub sha256: BTreeMap<String, String>,
}

/// A manifest together with the directory it describes.
#[derive(Debug, Clone)]
pub struct ModelsDir {
    pub root: PathBuf,
    pub manifest: Manifest,
    /// False for the legacy layout (no manifest.json: nothing to verify against).
    pub has_manifest_file: bool,
}

pub type Result<T> = std::result::Result<T, ManifestError>;

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("{0}")]
    Io(String),
}

fn invalid(path: &Path, message: impl Into<String>) -> ManifestError {
    ManifestError::Invalid {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

impl ModelsDir {
    /// True when `dir` looks like a models directory (a manifest, or the legacy
    /// layout), rather than a single model.
    pub fn is_models_dir(dir: &Path) -> bool {
        dir.join(MANIFEST_FILE).is_file() || dir.join(LEGACY_GENERATOR_DIR).is_dir()
    }

    /// Reads and checks `root/manifest.json`, or reads the legacy layout as a manifest.
    pub fn open(root: &Path) -> Result<Self> {
        let file = root.join(MANIFEST_FILE);
        let (manifest, has_manifest_file) = if file.is_file() {
            let text = std::fs::read_to_string(&file)
                .map_err(|e| ManifestError::Io(format!("reading {}: {e}", file.display())))?;
            let manifest: Manifest =
                serde_json::from_str(&text).map_err(|e| invalid(&file, e.to_string()))?;
            (manifest, true)
        } else if root.join(LEGACY_GENERATOR_DIR).is_dir() {
            (legacy_manifest(root), false)
        } else {
            return Err(invalid(
                root,
                format!(
                    "not a models directory: no {MANIFEST_FILE} and no {LEGACY_GENERATOR_DIR}/"
                ),
            ));
        };
        let dir = ModelsDir {
            root: root.to_path_buf(),
            manifest,
            has_manifest_file,
        };
        dir.check()?;
        Ok(dir)
    }

    fn manifest_path(&self) -> PathBuf {
        self.root.join(MANIFEST_FILE)
    }

    /// Structural checks: known format, unique names, one default generator, at most
    /// one default per role, directories inside the root that exist.
    fn check(&self) -> Result<()> {
        let path = self.manifest_path();
        if self.manifest.format != 1 {
            return Err(invalid(
                &path,
                format!(
                    "format {} is not supported (this build reads format 1)",
                    self.manifest.format
                ),
            ));
        }
        let mut names = std::collections::BTreeSet::new();
        for m in &self.manifest.models {
            if !names.insert(m.name.as_str()) {
                return Err(invalid(
                    &path,
                    format!("model name {:?} is listed twice", m.name),
                ));
            }
            let rel = Path::new(&m.dir);
            if rel.is_absolute()
                || rel
                    .components()
                    .any(|c| matches!(c, std::path::Component::ParentDir))
            {
                return Err(invalid(
                    &path,
                    format!(
                        "{}: dir {:?} must be a path inside the models directory",
                        m.name, m.dir
                    ),
                ));
            }
            if !self.root.join(rel).is_dir() {
                return Err(invalid(
                    &path,
                    format!(
                        "{}: directory {} does not exist",
                        m.name,
                        self.root.join(rel).display()
                    ),
                ));
            }
            self.check_policy_fields(m)?;
            for (file, digest) in &m.sha256 {
                if !ponder_engine::loader::is_inside_model_dir(file) {
                    return Err(invalid(
                        &path,
                        format!(
                            "{}: sha256 key {file:?} must be a file in {} (a relative path without ..)",
                            m.name, m.dir
                        ),
                    ));
                }
                if !is_sha256_hex(digest) {
                    return Err(invalid(
                        &path,
                        format!(
                            "{}: sha256 of {file} is not 64 lowercase hex digits",
                            m.name
                        ),
                    ));
                }
            }
        }
        self.check_root_digests()?;
        for role in [ModelRole::Generator, ModelRole::Verifier] {
            let defaults = self
                .manifest
                .models
                .iter()
                .filter(|m| m.role == role && m.default)
                .count();
            if defaults > 1 {
                return Err(invalid(
                    &path,
                    format!("{defaults} models are marked default for the {role} role; mark one"),
                ));
            }
        }
        if self.default_for(ModelRole::Generator).is_none() {
            return Err(invalid(&path, "no generator is marked \"default\": true"));
        }
        Ok(())
    }

    /// The default model of `role`: the one marked default, else the only one of it.
    pub fn default_for(&self, role: ModelRole) -> Option<&ModelEntry> {
        let of_role: Vec<&ModelEntry> = self
            .manifest
            .models
            .iter()
            .filter(|m| m.role == role)
            .collect();
        match of_role.iter().find(|m| m.default) {
            Some(m) => Some(*m),
            None if of_role.len() == 1 => Some(of_role[0]),
            None => None,
        }
    }

    pub fn by_name(&self, name: &str) -> Option<&ModelEntry> {
        self.manifest.models.iter().find(|m| m.name == name)
    }

    /// The model of `role` named `name`, or the role's default; an error names the choices.
    pub fn select(&self, role: ModelRole, name: Option<&str>) -> Result<&ModelEntry> {
        let path = self.manifest_path();
        let names = || {
            self.manifest
                .models
                .iter()
                .filter(|m| m.role == role)
                .map(|m| m.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        match name {
            Some(name) => {
                let m = self.by_name(name).ok_or_else(|| {
                    invalid(&path, format!("no model named {name:?} (the {role} models are: {})", names()))
                })?;
                if m.role != role {
                    return Err(invalid(&path, format!("{name} is a {} model, not a {role} (the {role} models are: {})", m.role, names())));
                }
                Ok(m)
            }
            None => self.default_for(role).ok_or_else(|| {
                invalid(&path, format!("no default {role} model (mark one \"default\": true; the {role} models are: {})", names()))
            }),
        }
    }

    pub fn path_of(&self, model: &ModelEntry) -> PathBuf {
        self.root.join(&model.dir)
    }

    /// Checks every digest the manifest lists for `model`, and that the weights of every
    /// ensemble member its `prm.json` names are among them.
    pub fn verify(&self, model: &ModelEntry) -> Result<()> {
        let dir = self.path_of(model);
        self.check_members_hashed(model)?;
        for (file, expected) in &model.sha256 {
            self.check_digest(
                &dir.join(file),
                expected,
                &format!(" (model {})", model.name),
                "refusing to serve it",
            )?;
        }
        Ok(())
    }

    /// Refuses `file` unless its SHA-256 is `expected` (the manifest's, listed for
    /// `whose`, e.g. " (model NAME)"); `refusal` ends the message.
    fn check_digest(&self, file: &Path, expected: &str, whose: &str, refusal: &str) -> Result<()> {
        let actual = sha256_file(file)?;
        if actual != expected {
            return Err(invalid(
                file,
                format!(
                    "sha256 {actual} differs from {expected} in {}{whose}: the file changed since the manifest was written; {refusal}",
                    self.manifest_path().display()
                ),
            ));
        }
        Ok(())
    }

    /// A verifier ensemble (`prm.json` `members`) loads the members' weights from
    /// subdirectories: a manifest that hashes the model's files must hash those too, or
    /// swapped member weights would be served unverified.
    fn check_members_hashed(&self, model: &ModelEntry) -> Result<()> {
        let prm = self.path_of(model).join("prm.json");
        if model.sha256.is_empty() || !prm.is_file() {
            return Ok(());
        }
        // The engine's own reading of prm.json, so the members checked are the ones loaded.
        let config = ponder_engine::prm::PrmConfig::from_file(&prm)
            .map_err(|e| invalid(&prm, e.to_string()))?;
        for member in &config.members {
            let member = member.trim_end_matches('/');
            for file in ["config.json", "model.safetensors"] {
                let key = format!("{member}/{file}");
                if !model.sha256.contains_key(&key) {
                    return Err(invalid(
                        &self.manifest_path(),
                        format!(
                            "{}: prm.json names ensemble member {member:?}, but sha256 has no {key:?}; \
                             list the digest of every file the model loads",
                            model.name
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    /// The model of `role` named, or without a name the role's default if it has one
    /// (a missing name is an error; a missing default is not).
    pub fn select_or_default(
        &self,
        role: ModelRole,
        name: Option<&str>,
    ) -> Result<Option<&ModelEntry>> {
        match name {
            Some(_) => self.select(role, name).map(Some),
            None => Ok(self.default_for(role)),
        }
    }

    /// Selects and verifies the model a node of `role` serves.
    pub fn resolve(&self, role: ModelRole, name: Option<&str>) -> Result<PathBuf> {
        let model = self.select(role, name)?;
        self.verify(model)?;
        Ok(self.path_of(model))
    }
}

/// What `--model P` means for a node of `role`: a models directory is resolved through
/// its manifest (the named model, or the role's default, verified); anything else (one
/// model directory, a .gguf file) is served as given, and `name` must then be unset.
pub fn resolve_model_path(path: &Path, role: ModelRole, name: Option<&str>) -> Result<PathBuf> {
    Ok(resolve_model(path, role, name)?.path)
}

/// A model as a node serves it: where it is, and the KV cache dtype its manifest entry
/// asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct ResolvedModel {
    pub path: PathBuf,
    pub kv_cache: Option<ponder_engine::KvDtype>,
    pub quantize: Option<ponder_engine::Quantize>,
}

/// [`resolve_model_path`], with the serving settings of the model's manifest entry: the
/// resolved entry's for a models directory; for one model directory, its entry in the
/// manifest of the directory that holds it, if any (how `ponder up` and `ponder eval`
/// start the bundled models).
pub fn resolve_model(path: &Path, role: ModelRole, name: Option<&str>) -> Result<ResolvedModel> {
    if path.is_dir() && ModelsDir::is_models_dir(path) {
        let dir = ModelsDir::open(path)?;
        let entry = dir.select(role, name)?;
        dir.verify(entry)?;
        return Ok(ResolvedModel {
            kv_cache: entry.kv_cache,
            quantize: entry.quantize,
            path: dir.path_of(entry),
        });
    }
    let path = resolve_single(path, name)?;
    let held = holding_entry(&path);
    Ok(ResolvedModel {
        kv_cache: held.as_ref().and_then(|e| e.kv_cache),
        quantize: held.and_then(|e| e.quantize),
        path,
    })
}

/// How a node loads the model directory at `path`: with the KV cache and weight
/// quantization its entry in the holding directory's manifest asks for (f32 and none
/// without one). `ponder eval`, `ponder-arith report` and the benchmarks load bundled
/// models in-process this way, so they measure what is served.
pub fn serving_options(path: &Path) -> ponder_engine::LoadOptions {
    let held = holding_entry(path);
    ponder_engine::LoadOptions {
        kv_cache: held.as_ref().and_then(|e| e.kv_cache).unwrap_or_default(),
        quantize: held.and_then(|e| e.quantize).unwrap_or_default(),
        ..ponder_engine::LoadOptions::default()
    }
}

/// The manifest entry of the models directory holding model directory `path`, if that
/// directory has a manifest and an entry for it.
pub fn holding_entry(path: &Path) -> Option<ModelEntry> {
    let own = path.canonicalize().ok()?;
    let parent = own.parent()?;
    if !parent.join(MANIFEST_FILE).is_file() {
        return None;
    }
    let dir = ModelsDir::open(parent).ok()?;
    dir.manifest
        .models
        .iter()
        .find(|m| dir.path_of(m).canonicalize().ok().as_deref() == Some(own.as_path()))
        .cloned()
}

fn resolve_single(path: &Path, name: Option<&str>) -> Result<PathBuf> {
    match name {
        Some(name) => Err(invalid(
            path,
            format!(
                "--model-name {name} needs --model to be a models directory with {MANIFEST_FILE}"
            ),
        )),
        None => Ok(path.to_path_buf()),
    }
}

fn legacy_manifest(root: &Path) -> Manifest {
    let mut models = vec![];
    for (dir, role) in [
        (LEGACY_GENERATOR_DIR, ModelRole::Generator),
        (LEGACY_VERIFIER_DIR, ModelRole::Verifier),
    ] {
        if root.join(dir).is_dir() {
            models.push(ModelEntry {
                name: dir.to_string(),
                role,
                dir: dir.to_string(),
                parameters: 0,
                training_flops: 0.0,
                sha256: BTreeMap::new(),
                default: true,
                description: format!("{dir}/ (layout without {MANIFEST_FILE})"),
                kv_cache: None,
                quantize: None,
                policy: None,
                ladder_policy: None,
            });
        }
    }
    Manifest {
        format: 1,
        models,
        policy: None,
        ladder_policy: None,
        sha256: BTreeMap::new(),
    }
}

/// Whether `digest` is a SHA-256 as the manifest writes it: 64 lowercase hex digits.
fn is_sha256_hex(digest: &str) -> bool {
    digest.len() == 64
        && digest
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Lowercase hex SHA-256 of a file's contents.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut file = std::fs::File::open(path)
        .map_err(|e| ManifestError::Io(format!("reading {}: {e}", path.display())))?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher)
        .map_err(|e| ManifestError::Io(format!("reading {}: {e}", path.display())))?;
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

mod policies;
#[cfg(test)]
mod tests;
