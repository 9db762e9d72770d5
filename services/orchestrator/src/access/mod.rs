//! Who may call the orchestrator's public API, and how often.
//!
//! One tonic interceptor ([`Gate`]) wraps `ponder.v1.Orchestrator` (and only it:
//! grpc.health.v1 and reflection on the same port stay open, because kubelet probes
//! and load balancers carry no credentials and learn nothing secret there). It first
//! takes a token from the caller's address bucket (on by default: floods and key
//! guessing are throttled before any other work), then authenticates the caller by API
//! key when keys are configured (UNAUTHENTICATED otherwise; the keys reload on SIGHUP
//! and file change, [`key_store`]), then takes a token from the caller's bucket when a
//! rate limit is set (RESOURCE_EXHAUSTED, naming the limit, otherwise). The service
//! later charges the query's budget to the caller's generation bucket ([`Gate::charge`]).
//! Every refusal is counted by reason in `ponder_refusals_total` and logged at debug
//! only. The caller's identity goes into the request's extensions as a [`Caller`] for
//! the handlers and their logs; the key itself is never logged. docs/security.md has
//! the options and the threat model.

pub mod api_keys;
pub mod key_store;
pub mod rate_limit;

use clap::Args;
use key_store::KeyStore;
use ponder_cluster::metrics::Metrics;
use ponder_cluster::secret::Secret;
use rate_limit::ClientLimiter;
use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use tonic::service::Interceptor;
use tonic::{Request, Status};

/// Requests per second one address may send before authentication, by default.
pub const DEFAULT_PEER_RATE_LIMIT: f64 = 200.0;

/// Access flags of the orchestrator.
#[derive(Debug, Clone, Args)]
pub struct AccessArgs {
    /// File of API keys, one `name:key` (or bare `key`) per line, `#` comments; when
    /// any key is configured every Orchestrator call needs `authorization: Bearer <key>`.
    /// Re-read on SIGHUP and when the file changes.
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
    /// Requests per second each client may send (by API key, else by address); 0: no
    /// limit.
    #[arg(long, env = "PONDER_RATE_LIMIT", default_value_t = 0.0)]
    pub rate_limit: f64,
    /// Requests a client may send at once before the rate applies (default: the rate
    /// rounded up, at least 1).
    #[arg(long, env = "PONDER_RATE_BURST")]
    pub rate_burst: Option<u32>,
    /// Generations per second each client may ask for, charged at admission by the
    /// request's budget (its worst case); 0: no limit.
    #[arg(long, env = "PONDER_RATE_LIMIT_GENERATIONS", default_value_t = 0.0)]
    pub rate_limit_generations: f64,
    /// Generations a client may ask for at once before that rate applies (default: 4 s
    /// of the rate, at least --max-generations' default of 256).
    #[arg(long, env = "PONDER_RATE_BURST_GENERATIONS")]
    pub rate_burst_generations: Option<u32>,
    /// Requests per second one address (IPv6: one /64) may send, checked before the
    /// API key, so that floods and key guessing are throttled before any work; 0: no
    /// limit.
    #[arg(long, env = "PONDER_PEER_RATE_LIMIT", default_value_t = DEFAULT_PEER_RATE_LIMIT)]
    pub peer_rate_limit: f64,
    /// Proxies (comma-separated CIDRs, e.g. 10.0.0.0/8) whose `--forwarded-header` is
    /// believed: a connection from one of them is keyed by the client address the header
    /// names. The header is ignored on any other connection (anyone can write it).
    #[arg(long, env = "PONDER_TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// The header a trusted proxy puts the client's address in.
    #[arg(
        long,
        env = "PONDER_FORWARDED_HEADER",
        default_value = "x-forwarded-for"
    )]
    pub forwarded_header: String,
}

impl Default for AccessArgs {
    fn default() -> Self {
        Self {
            api_keys_file: None,
            api_keys: vec![],
            rate_limit: 0.0,
            rate_burst: None,
            rate_limit_generations: 0.0,
            rate_burst_generations: None,
            peer_rate_limit: DEFAULT_PEER_RATE_LIMIT,
            trusted_proxies: vec![],
            forwarded_header: "x-forwarded-for".into(),
        }
    }
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
    /// The API key's name, when the caller gave one.
    pub fn key_name(&self) -> Option<&str> {
        match self {
            Self::Key(name) => Some(name),
            Self::Peer(_) => None,
        }
    }

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
    keys: Option<Arc<KeyStore>>,
    /// Before authentication, by address.
    peers: Option<Arc<ClientLimiter>>,
    /// After it, by caller, in requests.
    limiter: Option<Arc<ClientLimiter>>,
    /// By caller, in generations (charged by the service at admission, [`Gate::charge`]).
    generations: Option<Arc<ClientLimiter>>,
    metrics: Metrics,
    trusted_proxies: Arc<Vec<ipnet::IpNet>>,
    forwarded_header: Arc<str>,
}

impl Gate {
    /// Reads the keys (and watches them for changes) and sets up the limiters (spawns
    /// their clean-up tasks: call inside a tokio runtime).
    pub fn new(args: &AccessArgs, metrics: Metrics) -> anyhow::Result<Self> {
        let keys = KeyStore::load(args.api_keys_file.as_deref(), &args.api_keys)?;
        let limiter = ClientLimiter::new(args.rate_limit, args.rate_burst, "requests")?;
        let peers = ClientLimiter::new(
            args.peer_rate_limit,
            Some((args.peer_rate_limit * 2.0).ceil().max(1.0) as u32),
            "requests",
        )
        .map_err(|e| anyhow::anyhow!("--peer-rate-limit: {e}"))?;
        let generations = ClientLimiter::new(
            args.rate_limit_generations,
            args.rate_burst_generations.or_else(|| {
                (args.rate_limit_generations > 0.0)
                    .then(|| ((args.rate_limit_generations * 4.0).ceil() as u32).max(256))
            }),
            "generations",
        )
        .map_err(|e| anyhow::anyhow!("--rate-limit-generations: {e}"))?;
        match &keys {
            Some(k) => {
                tracing::info!(keys = k.keys().len(), "API keys required");
                k.watch();
            }
            None => tracing::info!("no API keys configured: the Orchestrator API is open"),
        }
        if limiter.is_some() || generations.is_some() {
            tracing::info!(
                rate = args.rate_limit,
                burst = ?args.rate_burst,
                generations_per_second = args.rate_limit_generations,
                "per-client rate limits"
            );
        }
        anyhow::ensure!(
            tonic::metadata::MetadataKey::<tonic::metadata::Ascii>::from_bytes(
                args.forwarded_header.as_bytes()
            )
            .is_ok(),
            "--forwarded-header {:?} is not a valid header name",
            args.forwarded_header
        );
        Ok(Self {
            keys,
            peers,
            limiter,
            generations,
            metrics,
            trusted_proxies: Arc::new(args.trusted_proxies.clone()),
            forwarded_header: args.forwarded_header.to_ascii_lowercase().into(),
        })
    }

    /// Whether the gate lets everything through (no keys, no limit).
    pub fn is_open(&self) -> bool {
        self.keys.is_none()
            && self.limiter.is_none()
            && self.generations.is_none()
            && self.peers.is_none()
    }

    /// Counts a refusal by reason; refusals are logged at debug only, so a flood of
    /// them cannot flood the log (the counter is what to watch).
    fn refused(&self, reason: &'static str, status: Status) -> Status {
        refusal(&self.metrics, reason);
        tracing::debug!(reason, message = status.message(), "refused");
        status
    }

    fn admit(&self, request: &Request<()>) -> Result<Caller, Status> {
        let header = request
            .metadata()
            .get(&*self.forwarded_header)
            .and_then(|v| v.to_str().ok());
        let peer = client_ip(
            request.remote_addr().map(|a| a.ip()),
            header,
            &self.trusted_proxies,
        );
        if let Some(peers) = &self.peers {
            let who = Caller::Peer(peer);
            if let Err(e) = peers.check(&who.bucket(), &who.to_string(), 1) {
                return Err(self.refused("peer_rate_limited", e));
            }
        }
        let caller = match &self.keys {
            Some(store) => match store.keys().check(request.metadata()) {
                Ok(name) => Caller::Key(name.to_string()),
                Err(e) => return Err(self.refused("unauthenticated", e)),
            },
            None => Caller::Peer(peer),
        };
        if let Some(limiter) = &self.limiter {
            if let Err(e) = limiter.check(&caller.bucket(), &caller.to_string(), 1) {
                return Err(self.refused("rate_limited", e));
            }
        }
        Ok(caller)
    }

    /// Charges `generations` (a query's budget) to `caller`'s generation bucket, or
    /// RESOURCE_EXHAUSTED naming the limit.
    pub fn charge(&self, caller: &Caller, generations: u32) -> Result<(), Status> {
        match &self.generations {
            Some(limiter) => limiter
                .check(&caller.bucket(), &caller.to_string(), generations)
                .map_err(|e| self.refused("generation_rate_limited", e)),
            None => Ok(()),
        }
    }
}

/// The address a request is keyed by: the connection's peer, unless that peer is a
/// trusted proxy; then the rightmost address in `forwarded` (a comma-separated list, as
/// X-Forwarded-For: each proxy appends the address it got the request from) that is not
/// itself a trusted proxy. Addresses left of it could be written by the client.
pub fn client_ip(
    peer: Option<IpAddr>,
    forwarded: Option<&str>,
    trusted: &[ipnet::IpNet],
) -> Option<IpAddr> {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    match (peer, forwarded) {
        (Some(p), Some(list)) if is_trusted(&p) => list
            .rsplit(',')
            .filter_map(|a| a.trim().parse::<IpAddr>().ok())
            .find(|ip| !is_trusted(ip))
            .or(Some(p)),
        _ => peer,
    }
}

/// Counts one refused request in `ponder_refusals_total{what="request",reason}`.
pub fn refusal(metrics: &Metrics, reason: &'static str) {
    metrics
        .refusals
        .get_or_create(&Metrics::labels(&[("what", "request"), ("reason", reason)]))
        .inc();
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
    fn a_forwarded_address_counts_only_from_a_trusted_proxy() {
        let trusted: Vec<ipnet::IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        // From the proxy: the rightmost untrusted address; a client-written one to its
        // left is not believed.
        assert_eq!(
            client_ip(
                ip("10.1.2.3"),
                Some("6.6.6.6, 203.0.113.9, 10.9.9.9"),
                &trusted
            ),
            ip("203.0.113.9")
        );
        // From anyone else the header is ignored.
        assert_eq!(
            client_ip(ip("198.51.100.7"), Some("203.0.113.9"), &trusted),
            ip("198.51.100.7")
        );
        // No usable address in the header: the proxy itself.
        assert_eq!(
            client_ip(ip("10.1.2.3"), Some("junk"), &trusted),
            ip("10.1.2.3")
        );
        assert_eq!(client_ip(ip("10.1.2.3"), None, &trusted), ip("10.1.2.3"));
        assert_eq!(
            client_ip(ip("10.1.2.3"), Some("203.0.113.9"), &[]),
            ip("10.1.2.3")
        );
    }

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
