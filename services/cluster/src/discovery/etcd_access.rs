//! How a node reaches etcd: endpoints, TLS (a CA, optionally a client certificate)
//! and a user and password, from flags or `PONDER_ETCD_*`.
//!
//! Why one type: registration (workers) and discovery (the orchestrator) open etcd
//! connections in a retry loop; both take an [`EtcdConfig`] checked once at start-up,
//! so a wrong file or a half-given credential fails the start with a clear message
//! instead of a retry loop logging the same error forever. The TLS and the
//! authentication are etcd-client's (tonic's rustls; etcd's token auth).

use crate::secret::Secret;
use crate::tls;
use clap::Args;
use etcd_client::{Certificate, Client, ConnectOptions, TlsOptions};
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// etcd security flags every node shares.
#[derive(Debug, Clone, Default, Args)]
pub struct EtcdAccessArgs {
    /// PEM CA that signs etcd's server certificate; turns TLS on (endpoints without a
    /// scheme become https://).
    #[arg(long, env = "PONDER_ETCD_CA")]
    pub etcd_ca: Option<PathBuf>,
    /// PEM client certificate for etcd's --client-cert-auth (needs --etcd-ca).
    #[arg(long, env = "PONDER_ETCD_CERT")]
    pub etcd_cert: Option<PathBuf>,
    /// PEM private key of --etcd-cert.
    #[arg(long, env = "PONDER_ETCD_KEY")]
    pub etcd_key: Option<PathBuf>,
    /// etcd user (etcd's authentication; needs --etcd-password).
    #[arg(long, env = "PONDER_ETCD_USER")]
    pub etcd_user: Option<String>,
    /// Password of --etcd-user. Prefer the environment variable: a flag shows in `ps`.
    #[arg(long, env = "PONDER_ETCD_PASSWORD", hide_env_values = true)]
    pub etcd_password: Option<Secret>,
}

/// Endpoints and connect options, checked; what registration and discovery dial.
#[derive(Clone)]
pub struct EtcdConfig {
    pub endpoints: Vec<String>,
    options: ConnectOptions,
    secured: &'static str,
}

/// Never prints the options: etcd-client's `Debug` would show the password.
impl fmt::Debug for EtcdConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdConfig")
            .field("endpoints", &self.endpoints)
            .field("security", &self.secured)
            .finish()
    }
}

fn base_options() -> ConnectOptions {
    ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(2))
        .with_timeout(Duration::from_secs(5))
        .with_keep_alive(Duration::from_secs(5), Duration::from_secs(3))
}

impl EtcdConfig {
    /// Plaintext, no authentication (the embedded cluster, the tests).
    pub fn plain(endpoints: Vec<String>) -> Self {
        Self {
            endpoints,
            options: base_options(),
            secured: "plaintext",
        }
    }

    /// Checks the flags and reads the files.
    pub fn new(endpoints: Vec<String>, args: &EtcdAccessArgs) -> anyhow::Result<Self> {
        let mut options = base_options();
        let mut secured = "plaintext";
        match (&args.etcd_user, &args.etcd_password) {
            (Some(user), Some(password)) => {
                options = options.with_user(user.clone(), password.expose());
                secured = "password";
            }
            (None, None) => {}
            (Some(_), None) => anyhow::bail!(
                "--etcd-user is set but --etcd-password (PONDER_ETCD_PASSWORD) is not"
            ),
            (None, Some(_)) => {
                anyhow::bail!("--etcd-password is set but --etcd-user (PONDER_ETCD_USER) is not")
            }
        }
        if let Some(ca) = &args.etcd_ca {
            tls::install_crypto_provider();
            let mut t = TlsOptions::new().ca_certificate(Certificate::from_pem(
                tls::certificate_pem(ca, "--etcd-ca")?,
            ));
            match (&args.etcd_cert, &args.etcd_key) {
                (Some(c), Some(k)) => {
                    t = t.identity(tls::identity(c, k, "--etcd-cert", "--etcd-key")?)
                }
                (None, None) => {}
                _ => anyhow::bail!("give both --etcd-cert and --etcd-key, or neither"),
            }
            if let Some(e) = endpoints.iter().find(|e| e.starts_with("http://")) {
                anyhow::bail!(
                    "etcd endpoint {e} is http:// but --etcd-ca turns TLS on; use https://"
                );
            }
            options = options.with_tls(t);
            secured = if secured == "password" {
                "tls+password"
            } else {
                "tls"
            };
        } else {
            anyhow::ensure!(
                args.etcd_cert.is_none() && args.etcd_key.is_none(),
                "--etcd-cert/--etcd-key need --etcd-ca (PONDER_ETCD_CA), the CA of etcd's \
                 server certificate"
            );
            if let Some(e) = endpoints.iter().find(|e| e.starts_with("https://")) {
                anyhow::bail!("etcd endpoint {e} is https:// but no --etcd-ca is given");
            }
        }
        Ok(Self {
            endpoints,
            options,
            secured,
        })
    }

    /// "plaintext", "password", "tls" or "tls+password" (for logs).
    pub fn security(&self) -> &'static str {
        self.secured
    }

    /// A new client (authenticates when a user is configured).
    pub async fn connect(&self) -> Result<Client, etcd_client::Error> {
        Client::connect(&self.endpoints, Some(self.options.clone())).await
    }
}
