//! Who may call the orchestrator's public API, and how often.
//!
//! One tonic interceptor ([`Gate`]) wraps `ponder.v1.Orchestrator` (and only it:
//! grpc.health.v1 and reflection on the same port stay open, because kubelet probes
//! and load balancers carry no credentials and learn nothing secret there). It first
//! authenticates the caller by API key when keys are configured (UNAUTHENTICATED
//! otherwise), then takes a token from the caller's bucket when a rate limit is set
//! (RESOURCE_EXHAUSTED, naming the limit, otherwise). The caller's identity goes into
//! the request's extensions as a [`Caller`] for the handlers and their logs; the key
//! itself is never logged. docs/security.md has the options and the threat model.

pub mod api_keys;
pub mod rate_limit;

use api_keys::ApiKeys;
use clap::Args;
use ponder_cluster::secret::Secret;
use rate_limit::ClientLimiter;
use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use tonic::service::Interceptor;
use tonic::{Request, Status};

/// Access flags of the orchestrator.
#[derive(Debug, Clone, Default, Args)]
pub struct AccessArgs {
    /// File of API keys, one `name:key` (or bare `key`) per line, `#` comments; when
    /// any key is configured every Orchestrator call needs `authorization: Bearer <key>`.
    #[arg(long, env = "PONDER_API_KEYS_FILE")]
    pub api_keys_file: Option<PathBuf>,
    /// API keys, comma-separated `name:key` or `key` entries (added to the file's).
    /// Prefer the environment variable or the file: a flag shows in `ps`.
    #[arg(
        long,
        env = "PONDER_API_KEYS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub api_keys: Vec<Secret>,
    /// Requests per second each client may send (by API key, else by IP address);
    /// 0: no limit.
    #[arg(long, env = "PONDER_RATE_LIMIT", default_value_t = 0.0)]
    pub rate_limit: f64,
    /// Requests a client may send at once before the rate applies (default: the rate
    /// rounded up, at least 1).
    #[arg(long, env = "PONDER_RATE_BURST")]
    pub rate_burst: Option<u32>,
}

/// Who made a request, as the gate established it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// Authenticated by the API key of this name.
    Key(String),
    /// No keys configured: known by its address only.
    Peer(Option<IpAddr>),
}

impl Caller {
    /// The key of the caller's rate bucket and query count: its API key's name, else
    /// its address. An IPv6 address counts by its /64, the block one host (or one
    /// customer) gets, so that a client cannot take a fresh bucket per address.
    pub fn bucket(&self) -> String {
        match self {
            Self::Key(name) => format!("key:{name}"),
            Self::Peer(Some(IpAddr::V6(ip))) => match ip.to_ipv4_mapped() {
                Some(v4) => format!("ip:{v4}"),
                None => {
                    let block = u128::from(*ip) & !((1u128 << 64) - 1);
                    format!("ip:{}/64", std::net::Ipv6Addr::from(block))
                }
            },
            Self::Peer(Some(ip)) => format!("ip:{ip}"),
            Self::Peer(None) => "ip:unknown".into(),
        }
    }
}

impl fmt::Display for Caller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Key(name) => write!(f, "API key {name}"),
            Self::Peer(Some(ip)) => write!(f, "client {ip}"),
            Self::Peer(None) => f.write_str("a client of unknown address"),
        }
    }
}

/// The interceptor in front of `ponder.v1.Orchestrator`.
#[derive(Clone)]
pub struct Gate {
    keys: Option<Arc<ApiKeys>>,
    limiter: Option<Arc<ClientLimiter>>,
}

impl Gate {
    /// Reads the keys and sets up the limiter (spawns its clean-up task: call inside
    /// a tokio runtime).
    pub fn new(args: &AccessArgs) -> anyhow::Result<Self> {
        let keys = ApiKeys::load(args.api_keys_file.as_deref(), &args.api_keys)?.map(Arc::new);
        let limiter = ClientLimiter::new(args.rate_limit, args.rate_burst)?;
        match &keys {
            Some(k) => tracing::info!(keys = k.len(), "API keys required"),
            None => tracing::info!("no API keys configured: the Orchestrator API is open"),
        }
        if limiter.is_some() {
            tracing::info!(
                rate = args.rate_limit,
                burst = ?args.rate_burst,
                "per-client rate limit"
            );
        }
        Ok(Self { keys, limiter })
    }

    /// Whether the gate lets everything through (no keys, no limit).
    pub fn is_open(&self) -> bool {
        self.keys.is_none() && self.limiter.is_none()
    }

    fn admit(&self, request: &Request<()>) -> Result<Caller, Status> {
        let peer = request.remote_addr().map(|a| a.ip());
        let caller = match &self.keys {
            Some(keys) => match keys.check(request.metadata()) {
                Ok(name) => Caller::Key(name.to_string()),
                Err(e) => {
                    tracing::info!(peer = ?peer, reason = e.message(), "refused: not authenticated");
                    return Err(e);
                }
            },
            None => Caller::Peer(peer),
        };
        if let Some(limiter) = &self.limiter {
            if let Err(e) = limiter.check(&caller.bucket(), &caller.to_string()) {
                tracing::debug!(%caller, "refused: rate limited");
                return Err(e);
            }
        }
        Ok(caller)
    }
}

impl Interceptor for Gate {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let caller = self.admit(&request)?;
        request.extensions_mut().insert(caller);
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_clients_are_counted_by_their_64_block() {
        let peer = |a: &str| Caller::Peer(Some(a.parse().unwrap())).bucket();
        assert_eq!(peer("2001:db8:1:2::1"), "ip:2001:db8:1:2::/64");
        assert_eq!(peer("2001:db8:1:2:ffff::9"), peer("2001:db8:1:2::1"));
        assert_ne!(peer("2001:db8:1:3::1"), peer("2001:db8:1:2::1"));
        assert_eq!(peer("::ffff:10.0.0.7"), "ip:10.0.0.7");
        assert_eq!(peer("10.0.0.7"), "ip:10.0.0.7");
        assert_eq!(Caller::Key("team-a".into()).bucket(), "key:team-a");
    }
}
