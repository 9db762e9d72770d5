//! TLS and mutual TLS on every gRPC hop, from PEM files named by flags or `PONDER_TLS_*`.
//!
//! Why this shape: the TLS itself is rustls with the ring provider, through tonic for
//! servers and for the CLI's and load driver's clients, and directly for the
//! orchestrator's connections to its members ([`crate::member_conn`]). This module
//! only turns the node's flags into those configs, checks the files at start-up (so a
//! wrong path or a key in the wrong slot is a clear error naming the flag, not a
//! handshake failure later), and decides who must present a certificate. Workers
//! (generator, verifier) require a client certificate signed by the cluster CA once a
//! CA is configured; the orchestrator's public port does not by default (its callers
//! authenticate with API keys, see the orchestrator's `access`). The same CA verifies
//! the workers the orchestrator dials. docs/security.md has the whole picture.

use crate::tls_server::ServerTlsFiles;
use clap::{Args, ValueEnum};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::Once;
use std::time::Duration;
use tonic::transport::{Certificate, ClientTlsConfig, Identity};

/// A TLS handshake that has not finished after this long is dropped, so a peer cannot
/// hold connections open without ever completing one.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether this node's gRPC port demands a client certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ClientAuth {
    /// The handshake fails unless the client presents a certificate signed by --tls-ca.
    Required,
    /// Any client may connect (it still gets TLS).
    None,
}

/// TLS flags every node shares.
#[derive(Debug, Clone, Default, Args)]
pub struct TlsArgs {
    /// PEM certificate chain this node serves gRPC with (turns TLS on for its port).
    #[arg(long, env = "PONDER_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "PONDER_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// PEM cluster CA: verifies the client certificates of callers (workers require
    /// one) and the certificates of the workers the orchestrator dials (which turns
    /// TLS on for those connections).
    #[arg(long, env = "PONDER_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// PEM certificate this node presents when it dials other nodes (mTLS client
    /// identity; default: --tls-cert).
    #[arg(long, env = "PONDER_TLS_CLIENT_CERT")]
    pub tls_client_cert: Option<PathBuf>,
    /// PEM private key of --tls-client-cert (default: --tls-key).
    #[arg(long, env = "PONDER_TLS_CLIENT_KEY")]
    pub tls_client_key: Option<PathBuf>,
    /// The name expected in the certificates of dialed workers (default: the host of
    /// each member's address). Set it when workers advertise pod IPs but their
    /// certificate names a DNS name.
    #[arg(long, env = "PONDER_TLS_SERVER_NAME")]
    pub tls_server_name: Option<String>,
    /// Whether callers must present a certificate signed by --tls-ca (default: required
    /// on generators and verifiers when --tls-ca is set, none on the orchestrator).
    #[arg(long, env = "PONDER_TLS_CLIENT_AUTH", value_enum)]
    pub tls_client_auth: Option<ClientAuth>,
}

/// How the orchestrator dials its workers when TLS is on.
#[derive(Debug, Clone)]
pub struct PeerTls {
    /// Verifies members with --tls-ca and presents this node's certificate (ALPN h2).
    pub config: Arc<rustls::ClientConfig>,
    /// The name every member's certificate must carry (--tls-server-name); unset: the
    /// host dialed.
    pub server_name: Option<String>,
    /// Whether this node presents a certificate (workers requiring mTLS refuse it
    /// otherwise).
    pub has_identity: bool,
}

/// Installs rustls's ring provider for the process (once; later calls do nothing).
///
/// Why explicit: rustls picks a provider from its crate features and panics if it
/// finds two; installing ours first keeps a dependency that enables another provider
/// from turning TLS start-up into a panic.
pub fn install_crypto_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

fn read(path: &Path, flag: &str) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path)
        .map_err(|e| anyhow::anyhow!("cannot read {flag} file {}: {e}", path.display()))
}

/// A PEM file with at least one certificate, checked.
pub fn certificate_pem(path: &Path, flag: &str) -> anyhow::Result<Vec<u8>> {
    let pem = read(path, flag)?;
    let mut n = 0;
    for cert in CertificateDer::pem_slice_iter(&pem) {
        cert.map_err(|e| anyhow::anyhow!("{flag} file {} is not valid PEM: {e}", path.display()))?;
        n += 1;
    }
    anyhow::ensure!(
        n > 0,
        "{flag} file {} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
        path.display()
    );
    Ok(pem)
}

/// A PEM file with a private key (PKCS#8, PKCS#1 or SEC1), checked. Errors never
/// quote the file's contents.
pub fn key_pem(path: &Path, flag: &str) -> anyhow::Result<Vec<u8>> {
    let pem = read(path, flag)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|_| {
        anyhow::anyhow!(
            "{flag} file {} holds no PEM private key (PKCS#8, PKCS#1 or SEC1)",
            path.display()
        )
    })?;
    Ok(pem)
}

/// The certificates of a PEM file, for rustls (`flag` names it in errors).
pub fn certificate_chain(path: &Path, flag: &str) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    CertificateDer::pem_slice_iter(&certificate_pem(path, flag)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!("{flag} {}: {e}", path.display()))
}

/// The private key of a PEM file, for rustls (`flag` names it in errors).
pub fn private_key(path: &Path, flag: &str) -> anyhow::Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_slice(&key_pem(path, flag)?)
        .map_err(|e| anyhow::anyhow!("{flag} {}: {e}", path.display()))
}

/// The certificates of a CA file as rustls trust roots (`flag` names it in errors).
pub fn root_store(ca: &Path, flag: &str) -> anyhow::Result<rustls::RootCertStore> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in certificate_chain(ca, flag)? {
        roots
            .add(cert)
            .map_err(|e| anyhow::anyhow!("{flag} {}: {e}", ca.display()))?;
    }
    Ok(roots)
}

/// A certificate and its key as a TLS identity.
pub fn identity(
    cert: &Path,
    key: &Path,
    cert_flag: &str,
    key_flag: &str,
) -> anyhow::Result<Identity> {
    Ok(Identity::from_pem(
        certificate_pem(cert, cert_flag)?,
        key_pem(key, key_flag)?,
    ))
}

fn pair<'a>(
    cert: &'a Option<PathBuf>,
    key: &'a Option<PathBuf>,
    cert_flag: &str,
    key_flag: &str,
) -> anyhow::Result<Option<(&'a Path, &'a Path)>> {
    match (cert, key) {
        (Some(c), Some(k)) => Ok(Some((c, k))),
        (None, None) => Ok(None),
        (Some(_), None) => anyhow::bail!("{cert_flag} is set but {key_flag} is not; give both"),
        (None, Some(_)) => anyhow::bail!("{key_flag} is set but {cert_flag} is not; give both"),
    }
}

/// A client TLS config: verify the server with `ca` (or the system's roots when
/// `None`), present `identity` (cert, key) if given, and expect `server_name` in the
/// server's certificate (default: the host dialed). For any client of a Ponder
/// service: the CLI, the load driver, the orchestrator's channels to workers.
pub fn client_tls(
    ca: Option<&Path>,
    identity_files: Option<(&Path, &Path)>,
    server_name: Option<&str>,
) -> anyhow::Result<ClientTlsConfig> {
    install_crypto_provider();
    let mut config = ClientTlsConfig::new().timeout(HANDSHAKE_TIMEOUT);
    config = match ca {
        Some(ca) => config.ca_certificate(Certificate::from_pem(certificate_pem(ca, "--tls-ca")?)),
        None => config.with_native_roots(),
    };
    if let Some((cert, key)) = identity_files {
        config = config.identity(identity(cert, key, "--tls-cert", "--tls-key")?);
    }
    if let Some(name) = server_name {
        config = config.domain_name(name);
    }
    Ok(config)
}

impl TlsArgs {
    /// The files of this node's TLS port (checked now; served and reloaded by
    /// [`crate::tls_server`]): `None` serves plaintext. `default_auth` is the role's
    /// default for --tls-client-auth once a CA is set.
    pub fn server(&self, default_auth: ClientAuth) -> anyhow::Result<Option<ServerTlsFiles>> {
        install_crypto_provider();
        let served = pair(&self.tls_cert, &self.tls_key, "--tls-cert", "--tls-key")?;
        let auth = match (self.tls_client_auth, &self.tls_ca) {
            (Some(a), _) => a,
            (None, Some(_)) => default_auth,
            (None, None) => ClientAuth::None,
        };
        let Some((cert, key)) = served else {
            anyhow::ensure!(
                auth == ClientAuth::None,
                "client certificates can only be required over TLS: give --tls-cert and \
                 --tls-key (PONDER_TLS_CERT, PONDER_TLS_KEY), or --tls-client-auth none"
            );
            return Ok(None);
        };
        let client_ca = if auth == ClientAuth::Required {
            let ca = self.tls_ca.as_deref().ok_or_else(|| {
                anyhow::anyhow!(
                    "--tls-client-auth required needs --tls-ca (PONDER_TLS_CA), the CA that \
                     signs the client certificates"
                )
            })?;
            Some(ca.to_path_buf())
        } else {
            None
        };
        let files = ServerTlsFiles {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            client_ca,
        };
        // Fails now, naming the flag, rather than at the first connection.
        files.load(&[])?;
        Ok(Some(files))
    }

    /// Whether the port demands client certificates (for the start-up log line).
    pub fn requires_client_certs(&self, default_auth: ClientAuth) -> bool {
        self.tls_cert.is_some()
            && match (self.tls_client_auth, &self.tls_ca) {
                (Some(a), _) => a == ClientAuth::Required,
                (None, Some(_)) => default_auth == ClientAuth::Required,
                (None, None) => false,
            }
    }

    /// How this node dials other nodes: TLS verified by --tls-ca when it is set,
    /// presenting --tls-client-cert (or --tls-cert) as its identity; else plaintext.
    /// [`TlsArgs::watched_peers`] keeps it current as the files rotate.
    pub fn peers(&self) -> anyhow::Result<Option<PeerTls>> {
        let Some(ca) = self.tls_ca.as_deref() else {
            anyhow::ensure!(
                self.tls_client_cert.is_none() && self.tls_client_key.is_none(),
                "--tls-client-cert/--tls-client-key need --tls-ca (PONDER_TLS_CA) to verify \
                 the workers dialed"
            );
            return Ok(None);
        };
        let own = pair(
            &self.tls_client_cert,
            &self.tls_client_key,
            "--tls-client-cert",
            "--tls-client-key",
        )?;
        let served = pair(&self.tls_cert, &self.tls_key, "--tls-cert", "--tls-key")?;
        install_crypto_provider();
        let builder =
            rustls::ClientConfig::builder().with_root_certificates(root_store(ca, "--tls-ca")?);
        let identity_files = own
            .map(|(c, k)| (c, k, "--tls-client-cert", "--tls-client-key"))
            .or(served.map(|(c, k)| (c, k, "--tls-cert", "--tls-key")));
        let has_identity = identity_files.is_some();
        let mut config = match identity_files {
            Some((cert, key, cert_flag, key_flag)) => builder
                .with_client_auth_cert(
                    certificate_chain(cert, cert_flag)?,
                    private_key(key, key_flag)?,
                )
                .map_err(|e| {
                    anyhow::anyhow!(
                        "{cert_flag} {} and {key_flag} {} do not make an identity: {e}",
                        cert.display(),
                        key.display()
                    )
                })?,
            None => builder.with_no_client_auth(),
        };
        // gRPC is HTTP/2 only.
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Some(PeerTls {
            config: Arc::new(config),
            server_name: self.tls_server_name.clone(),
            has_identity,
        }))
    }
}

impl TlsArgs {
    /// [`TlsArgs::peers`], re-read when the CA or the identity presented to workers
    /// changes on disk or on SIGHUP ([`crate::reload::watch_files`]): a rotated client
    /// certificate reaches the workers without a restart
    /// ([`crate::membership::Registry::follow_tls`]). None without TLS.
    pub fn watched_peers(&self) -> anyhow::Result<Option<crate::reload::Watched<Arc<PeerTls>>>> {
        if self.tls_ca.is_none() {
            // No TLS to dial with: `peers` says None, or why the flags are wrong.
            self.peers()?;
            return Ok(None);
        }
        let files = [
            &self.tls_ca,
            &self.tls_client_cert,
            &self.tls_client_key,
            &self.tls_cert,
            &self.tls_key,
        ]
        .into_iter()
        .flatten()
        .cloned()
        .collect();
        let args = self.clone();
        let watched = crate::reload::watch_files(files, "client TLS", move || {
            args.peers()?
                .map(Arc::new)
                .ok_or_else(|| anyhow::anyhow!("TLS is no longer configured"))
        })?;
        Ok(Some(watched))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(args: &TlsArgs, auth: ClientAuth) -> String {
        args.server(auth).expect_err("an error").to_string()
    }

    #[test]
    fn bad_flags_fail_at_start_up_naming_the_flag() {
        let garbage = std::env::temp_dir().join(format!("ponder-tls-test-{}", std::process::id()));
        std::fs::write(&garbage, "not a certificate").unwrap();
        let half = TlsArgs {
            tls_cert: Some(garbage.clone()),
            ..TlsArgs::default()
        };
        assert_eq!(
            err(&half, ClientAuth::Required),
            "--tls-cert is set but --tls-key is not; give both"
        );
        let unreadable = TlsArgs {
            tls_cert: Some("/nonexistent/cert.pem".into()),
            tls_key: Some(garbage.clone()),
            ..TlsArgs::default()
        };
        assert!(err(&unreadable, ClientAuth::None)
            .starts_with("cannot read --tls-cert file /nonexistent/cert.pem"));
        let not_pem = TlsArgs {
            tls_cert: Some(garbage.clone()),
            tls_key: Some(garbage.clone()),
            ..TlsArgs::default()
        };
        assert!(err(&not_pem, ClientAuth::None).contains("holds no PEM certificate"));
        let ca_only = TlsArgs {
            tls_ca: Some(garbage.clone()),
            ..TlsArgs::default()
        };
        // A worker with a CA but no certificate cannot check callers.
        assert!(err(&ca_only, ClientAuth::Required)
            .starts_with("client certificates can only be required over TLS"));
        // The orchestrator with a CA alone serves plaintext and dials over TLS.
        assert!(ca_only.server(ClientAuth::None).unwrap().is_none());
        assert!(ca_only
            .peers()
            .unwrap_err()
            .to_string()
            .contains("holds no PEM certificate"));
        assert!(TlsArgs::default()
            .server(ClientAuth::Required)
            .unwrap()
            .is_none());
        assert!(TlsArgs::default().peers().unwrap().is_none());
        let _ = std::fs::remove_file(garbage);
    }
}
