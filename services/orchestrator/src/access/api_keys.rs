//! API keys: who may call the orchestrator's public API.
//!
//! A client sends `authorization: Bearer <key>`; the key must be one of a list read
//! from `--api-keys-file` and/or `PONDER_API_KEYS`. Each key has a name (given as
//! `name:key`, or `key-<n>` by position) that stands for the client in logs and in
//! the rate limiter, so the key itself never has to be written anywhere. Keys are
//! compared in constant time (`subtle`) against every entry, so response timing does
//! not tell how much of a guess was right.

use ponder_cluster::secret::Secret;
use std::path::Path;
use subtle::ConstantTimeEq;
use tonic::metadata::MetadataMap;
use tonic::Status;

/// Keys shorter than this are refused at start-up: they could be guessed.
pub const MIN_KEY_LEN: usize = 16;

/// The keys this orchestrator accepts.
pub struct ApiKeys {
    entries: Vec<(String, Secret)>,
}

/// One entry, `name:key` or `key`; `what` says where it came from, for errors (which
/// never quote the key).
fn parse_entry(entry: &str, index: usize, what: &str) -> anyhow::Result<(String, Secret)> {
    let (name, key) = match entry.split_once(':') {
        Some((name, key)) => {
            anyhow::ensure!(
                !name.is_empty()
                    && name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-_.@".contains(c)),
                "{what}: a name before ':' may hold only letters, digits and -_.@"
            );
            (name.to_string(), key)
        }
        None => (format!("key-{}", index + 1), entry),
    };
    anyhow::ensure!(
        key.bytes().all(|b| b.is_ascii_graphic()),
        "{what}: a key must be printable ASCII without spaces"
    );
    anyhow::ensure!(
        key.len() >= MIN_KEY_LEN,
        "{what}: the key of {name} is shorter than {MIN_KEY_LEN} characters; make one with \
         `openssl rand -hex 32`"
    );
    Ok((name, Secret::new(key)))
}

impl ApiKeys {
    /// Reads the keys; `None` when none are configured (the API is open).
    pub fn load(file: Option<&Path>, inline: &[Secret]) -> anyhow::Result<Option<Self>> {
        let mut entries: Vec<(String, Secret)> = Vec::new();
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|e| {
                anyhow::anyhow!("cannot read --api-keys-file {}: {e}", path.display())
            })?;
            for (n, line) in text.lines().enumerate() {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                let what = format!("--api-keys-file {} line {}", path.display(), n + 1);
                entries.push(parse_entry(line, entries.len(), &what)?);
            }
            anyhow::ensure!(
                !entries.is_empty(),
                "--api-keys-file {} holds no key (one `name:key` or `key` per line)",
                path.display()
            );
        }
        for (i, entry) in inline.iter().enumerate() {
            let entry = entry.expose().trim();
            if entry.is_empty() {
                continue;
            }
            let what = format!("PONDER_API_KEYS entry {}", i + 1);
            entries.push(parse_entry(entry, entries.len(), &what)?);
        }
        for (i, (name, key)) in entries.iter().enumerate() {
            for (other, other_key) in &entries[..i] {
                anyhow::ensure!(name != other, "API key name {name} is used twice");
                anyhow::ensure!(
                    key != other_key,
                    "API keys {other} and {name} are the same key"
                );
            }
        }
        Ok((!entries.is_empty()).then_some(Self { entries }))
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The name of the key the request carries, or UNAUTHENTICATED saying what to send.
    pub fn check(&self, metadata: &MetadataMap) -> Result<&str, Status> {
        let Some(value) = metadata.get("authorization") else {
            return Err(Status::unauthenticated(
                "missing API key: this orchestrator requires `authorization: Bearer <key>` \
                 metadata (ponder solve --token, or PONDER_TOKEN)",
            ));
        };
        let token = value
            .to_str()
            .ok()
            .and_then(|v| {
                let (scheme, rest) = v.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
            })
            .ok_or_else(|| {
                Status::unauthenticated("the authorization metadata must be `Bearer <key>`")
            })?;
        let mut found = None;
        for (name, key) in &self.entries {
            if bool::from(key.expose().as_bytes().ct_eq(token.as_bytes())) {
                found = Some(name.as_str());
            }
        }
        found.ok_or_else(|| Status::unauthenticated("invalid API key"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metadata(auth: Option<&str>) -> MetadataMap {
        let mut m = MetadataMap::new();
        if let Some(a) = auth {
            m.insert("authorization", a.parse().unwrap());
        }
        m
    }

    #[test]
    fn names_keys_and_refuses_others_with_unauthenticated() {
        let keys = ApiKeys::load(
            None,
            &[
                Secret::new("alice:0123456789abcdef0123"),
                Secret::new("fedcba9876543210fedc"),
            ],
        )
        .unwrap()
        .unwrap();
        let ok = metadata(Some("Bearer 0123456789abcdef0123"));
        assert_eq!(keys.check(&ok).unwrap(), "alice");
        let ok = metadata(Some("bearer fedcba9876543210fedc"));
        assert_eq!(keys.check(&ok).unwrap(), "key-2");
        for bad in [
            None,
            Some("Bearer 0123456789abcdef012"),
            Some("Basic 0123456789abcdef0123"),
            Some("0123456789abcdef0123"),
        ] {
            let e = keys.check(&metadata(bad)).unwrap_err();
            assert_eq!(e.code(), tonic::Code::Unauthenticated, "{bad:?}");
            assert!(!e.message().contains("0123456789"), "{}", e.message());
        }
    }

    #[test]
    fn weak_or_duplicate_keys_are_refused_without_quoting_them() {
        for (entries, says) in [
            (vec!["short-key"], "shorter than 16"),
            (
                vec!["a:0123456789abcdef", "a:0123456789abcdeX"],
                "used twice",
            ),
            (vec!["a:0123456789abcdef", "b:0123456789abcdef"], "same key"),
            (vec!["bad name:0123456789abcdef"], "a name before"),
        ] {
            let inline: Vec<Secret> = entries.iter().map(|e| Secret::new(*e)).collect();
            let e = ApiKeys::load(None, &inline).err().unwrap().to_string();
            assert!(e.contains(says), "{e}");
            assert!(!e.contains("0123456789"), "{e}");
        }
        assert!(ApiKeys::load(None, &[]).unwrap().is_none());
    }
}
