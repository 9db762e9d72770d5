//! Which compute-optimal policies go with which verifier, and the digests of the files at
//! the directory's root (the policies) that no model entry covers.
//!
//! Why a policy belongs to a verifier: its bin edges are quantiles of one verifier's probe
//! scores and its table the best option under that verifier's picks, so read against
//! another verifier's scores it routes wrongly (docs/strategies.md, "Which policy goes with
//! which verifier"). Why its digest: a policy decides where every query's compute goes;
//! a default install must not route on a file it has not verified, as it does not serve
//! weights it has not.

use super::{invalid, is_sha256_hex, ModelEntry, ModelRole, ModelsDir, Result};

impl ModelsDir {
    /// A model's `policy` and `ladder_policy`: only a verifier's (a policy is fitted on
    /// a verifier's scores), each a file inside the models directory.
    pub(super) fn check_policy_fields(&self, m: &ModelEntry) -> Result<()> {
        let path = self.manifest_path();
        for (field, file) in [("policy", &m.policy), ("ladder_policy", &m.ladder_policy)] {
            let Some(file) = file else { continue };
            if m.role != ModelRole::Verifier {
                return Err(invalid(
                    &path,
                    format!(
                        "{}: {field} belongs on a verifier's entry (a policy is fitted on a verifier's scores), not a {}'s",
                        m.name, m.role
                    ),
                ));
            }
            if !ponder_engine::loader::is_inside_model_dir(file) {
                return Err(invalid(
                    &path,
                    format!(
                        "{}: {field} {file:?} must be a file in the models directory (a relative path without ..)",
                        m.name
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The policy files (over the default generator, over the ladder) that go with
    /// `verifier`, relative to the root: its entry's own; for the default verifier, or
    /// when there is none, the manifest's top-level ones where the entry names none.
    /// Another verifier without its own gets none: a policy fitted on one verifier's
    /// scores would route on thresholds the other does not keep.
    pub fn policies_for<'a>(
        &'a self,
        verifier: Option<&'a ModelEntry>,
    ) -> (Option<&'a str>, Option<&'a str>) {
        let top_level = self.is_default_verifier(verifier);
        fn pick<'a>(
            own: Option<&'a String>,
            top: Option<&'a String>,
            top_level: bool,
        ) -> Option<&'a str> {
            own.or(top.filter(|_| top_level)).map(String::as_str)
        }
        (
            pick(
                verifier.and_then(|v| v.policy.as_ref()),
                self.manifest.policy.as_ref(),
                top_level,
            ),
            pick(
                verifier.and_then(|v| v.ladder_policy.as_ref()),
                self.manifest.ladder_policy.as_ref(),
                top_level,
            ),
        )
    }

    /// The top-level `sha256` map: keys are files at the root (no `/`, no `..`), values
    /// 64 lowercase hex digits.
    pub(super) fn check_root_digests(&self) -> Result<()> {
        let path = self.manifest_path();
        for (file, digest) in &self.manifest.sha256 {
            if !ponder_engine::loader::is_inside_model_dir(file) || file.contains('/') {
                return Err(invalid(
                    &path,
                    format!(
                        "sha256 key {file:?} must be a file at the root of the models directory"
                    ),
                ));
            }
            if !is_sha256_hex(digest) {
                return Err(invalid(
                    &path,
                    format!("sha256 of {file} is not 64 lowercase hex digits"),
                ));
            }
        }
        Ok(())
    }

    /// Checks `file` (relative to the root: a policy) against the manifest's digest for
    /// it. A manifest that lists none for it (written before policies were hashed) is
    /// taken as it is; one that lists a different digest is refused.
    pub fn verify_root_file(&self, file: &str) -> Result<()> {
        let Some(expected) = self.manifest.sha256.get(file) else {
            return Ok(());
        };
        self.check_digest(
            &self.root.join(file),
            expected,
            "",
            "refusing to use it (after a refit, put the new digest in the manifest's \"sha256\")",
        )
    }

    /// Whether `verifier` (None: the directory has none) is the default verifier: the one
    /// the manifest's top-level policy fields, and the conventional policy file, belong to.
    pub fn is_default_verifier(&self, verifier: Option<&ModelEntry>) -> bool {
        match (verifier, self.default_for(ModelRole::Verifier)) {
            (Some(v), Some(d)) => v.name == d.name,
            (v, _) => v.is_none(),
        }
    }
}
