//! How a client reaches a Ponder service: plaintext or TLS (optionally presenting a
//! client certificate), and an API key sent as `authorization: Bearer <key>`.
//!
//! Why here: the `ponder` CLI and the `ponder-load` driver both dial the orchestrator
//! and should take the same flags (`--tls-ca`, `--tls-cert`, `--tls-key`,
//! `--tls-server-name`, `--token` / `PONDER_TOKEN`); flattening [`ConnectArgs`] gives
//! them that, and [`ConnectArgs::endpoint`] and [`BearerToken`] do the rest.

use crate::secret::Secret;
use crate::tls;
use clap::Args;
use std::path::PathBuf;
use std::time::Duration;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::transport::Endpoint;
use tonic::{Request, Status};

/// Client connection flags.
#[derive(Debug, Clone, Default, Args)]
pub struct ConnectArgs {
    /// PEM CA that signs the server's certificate; turns TLS on (so does an https://
    /// address, which without --tls-ca is verified against the system's roots).
    #[arg(long, env = "PONDER_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// PEM client certificate to present (when the server requires mTLS).
    #[arg(long, env = "PONDER_TLS_CLIENT_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "PONDER_TLS_CLIENT_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// The name expected in the server's certificate (default: the host dialed).
    #[arg(long, env = "PONDER_TLS_SERVER_NAME")]
    pub tls_server_name: Option<String>,
    /// API key sent as `authorization: Bearer <token>`. Prefer the environment
    /// variable: a flag shows in `ps`.
    #[arg(long, env = "PONDER_TOKEN", hide_env_values = true)]
    pub token: Option<Secret>,
}

impl ConnectArgs {
    /// Whether the connection uses TLS: any TLS flag, or an https:// address.
    pub fn uses_tls(&self, addr: &str) -> bool {
        addr.starts_with("https://")
            || self.tls_ca.is_some()
            || self.tls_cert.is_some()
            || self.tls_server_name.is_some()
    }

    /// An endpoint for `addr` (`host:port` or a URL) with TLS configured when asked for.
    pub fn endpoint(&self, addr: &str) -> anyhow::Result<Endpoint> {
        let tls = self.uses_tls(addr);
        let url = match addr.split_once("://") {
            Some(("http", _)) if tls => {
                anyhow::bail!("{addr} is http:// but TLS flags are set; use https:// or host:port")
            }
            Some(_) => addr.to_string(),
            None if tls => format!("https://{addr}"),
            None => format!("http://{addr}"),
        };
        let mut endpoint = Endpoint::from_shared(url)
            .map_err(|e| anyhow::anyhow!("{addr:?} is not an address: {e}"))?
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true);
        if tls {
            let identity = self.tls_cert.as_deref().zip(self.tls_key.as_deref());
            anyhow::ensure!(
                identity.is_some() || (self.tls_cert.is_none() && self.tls_key.is_none()),
                "give both --tls-cert and --tls-key, or neither"
            );
            let config = tls::client_tls(
                self.tls_ca.as_deref(),
                identity,
                self.tls_server_name.as_deref(),
            )?;
            endpoint = endpoint.tls_config(config)?;
        }
        Ok(endpoint)
    }

    /// The interceptor that sends --token (nothing when unset).
    pub fn bearer(&self) -> anyhow::Result<BearerToken> {
        BearerToken::new(self.token.as_ref())
    }
}

/// Adds `authorization: Bearer <token>` to every request (marked sensitive, so HTTP/2
/// never indexes it and `Debug` never prints it).
#[derive(Clone, Default)]
pub struct BearerToken(Option<MetadataValue<Ascii>>);

impl BearerToken {
    pub fn new(token: Option<&Secret>) -> anyhow::Result<Self> {
        let Some(token) = token.filter(|t| !t.is_empty()) else {
            return Ok(Self(None));
        };
        anyhow::ensure!(
            token.expose().bytes().all(|b| b.is_ascii_graphic()),
            "the token must be printable ASCII without spaces or newlines"
        );
        let mut value: MetadataValue<Ascii> = format!("Bearer {}", token.expose())
            .parse()
            .map_err(|_| anyhow::anyhow!("the token is not a valid header value"))?;
        value.set_sensitive(true);
        Ok(Self(Some(value)))
    }
}

impl Interceptor for BearerToken {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(v) = &self.0 {
            request.metadata_mut().insert("authorization", v.clone());
        }
        Ok(request)
    }
}

/// The error's sources, each as ": cause" (empty when it has none), leaving out a cause
/// the message or an earlier cause already quotes.
pub fn causes(e: &dyn std::error::Error) -> String {
    let head = e.to_string();
    let mut text = String::new();
    let mut source = e.source();
    while let Some(cause) = source {
        let said = cause.to_string();
        // A message that already quotes its cause is not told the cause twice.
        if !head.contains(&said) && !text.contains(&said) {
            text.push_str(": ");
            text.push_str(&said);
        }
        source = cause.source();
    }
    text
}

/// An error with its causes ("transport error: ...: invalid peer certificate ..."):
/// tonic's top-level message alone does not say why a (TLS) connection failed.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    format!("{e}{}", causes(e))
}

#[cfg(test)]
mod cause_tests {
    use super::*;

    #[derive(Debug)]
    struct Failed(String, std::io::Error);

    impl std::fmt::Display for Failed {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(&self.0)
        }
    }

    impl std::error::Error for Failed {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.1)
        }
    }

    #[test]
    fn a_cause_is_told_once() {
        let refused = || std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let quoted = Failed("cannot connect to a:1: refused".into(), refused());
        assert_eq!(error_chain(&quoted), "cannot connect to a:1: refused");
        let unquoted = Failed("cannot connect to a:1".into(), refused());
        assert_eq!(error_chain(&unquoted), "cannot connect to a:1: refused");
    }
}
