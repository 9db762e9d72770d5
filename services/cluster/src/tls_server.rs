//! The server side of TLS, reloaded without a restart: the certificate, key and client
//! CA are re-read when a file changes (checked every [`POLL_EVERY`]) or on SIGHUP, and
//! new connections get the new identity while open ones keep theirs. cert-manager and
//! the chart's re-issue both rotate certificates by rewriting the mounted files.
//!
//! Why our own accept loop instead of tonic's `ServerTlsConfig`: tonic fixes the
//! identity when the server starts. Here every connection takes the current rustls
//! config from a `watch` channel that the reload task feeds. A file that fails to
//! parse (half-written, wrong key) is logged and counted, and the previous identity
//! stays in service. Handshakes run in tasks of their own, at most [`MAX_HANDSHAKES`]
//! at once and each within [`HANDSHAKE_TIMEOUT`], so a stalled client never holds the
//! accept loop. The same loop serves the gRPC port (ALPN h2) and the HTTP gateway
//! (http/1.1).

use crate::tls::{
    certificate_chain, install_crypto_provider, private_key, root_store, HANDSHAKE_TIMEOUT,
};
use rustls::server::WebPkiClientVerifier;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

pub use crate::reload::POLL_EVERY;
/// TLS handshakes in progress at once; more connections wait in the kernel's backlog.
pub const MAX_HANDSHAKES: usize = 256;

/// The files a TLS server port is made of (checked by `TlsArgs::server`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerTlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Set: callers must present a certificate this CA signed (mTLS).
    pub client_ca: Option<PathBuf>,
}

impl ServerTlsFiles {
    /// A rustls server config from the files as they are now, offering `alpn`.
    pub fn load(&self, alpn: &[&[u8]]) -> anyhow::Result<Arc<rustls::ServerConfig>> {
        install_crypto_provider();
        let certs = certificate_chain(&self.cert, "--tls-cert")?;
        let key = private_key(&self.key, "--tls-key")?;
        let builder = rustls::ServerConfig::builder();
        let builder = match &self.client_ca {
            None => builder.with_no_client_auth(),
            Some(ca) => {
                let verifier = WebPkiClientVerifier::builder(Arc::new(root_store(ca, "--tls-ca")?))
                    .build()
                    .map_err(|e| anyhow::anyhow!("--tls-ca {}: {e}", ca.display()))?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut config = builder.with_single_cert(certs, key).map_err(|e| {
            anyhow::anyhow!("--tls-cert and --tls-key do not make a TLS identity: {e}")
        })?;
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(Arc::new(config))
    }

    /// The current config, kept current: re-read when a file changes or on SIGHUP
    /// ([`crate::reload::watch_files`]; a bad one is logged and skipped). `reloads`
    /// counts successful reloads (for tests and logs).
    pub fn watched(&self, alpn: &'static [&'static [u8]]) -> anyhow::Result<Reloading> {
        let files = [Some(&self.cert), Some(&self.key), self.client_ca.as_ref()]
            .into_iter()
            .flatten()
            .cloned()
            .collect();
        let me = self.clone();
        let w = crate::reload::watch_files(files, "TLS identity", move || me.load(alpn))?;
        Ok(Reloading {
            config: w.value,
            reloads: w.reloads,
        })
    }
}

/// A server config that follows its files ([`ServerTlsFiles::watched`]).
#[derive(Clone)]
pub struct Reloading {
    pub config: watch::Receiver<Arc<rustls::ServerConfig>>,
    /// Successful reloads so far.
    pub reloads: watch::Receiver<u64>,
}

/// Accepts on `tcp` and yields connections once their TLS handshake (with the config
/// current at accept time) is done; ends when the receiver is dropped.
pub fn accept_tls(
    tcp: TcpListener,
    config: watch::Receiver<Arc<rustls::ServerConfig>>,
) -> mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)> {
    let (tx, ready) = mpsc::channel(64);
    let slots = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    tokio::spawn(async move {
        loop {
            let Ok(slot) = slots.clone().acquire_owned().await else {
                return;
            };
            let (stream, peer) = tokio::select! {
                accepted = tcp.accept() => match accepted {
                    Ok(c) => c,
                    Err(e) => {
                        // Out of descriptors and the like: back off, as axum and tonic do.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
                _ = tx.closed() => return,
            };
            let _ = stream.set_nodelay(true);
            let acceptor = TlsAcceptor::from(config.borrow().clone());
            let tx = tx.clone();
            tokio::spawn(async move {
                let _slot = slot;
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(tls)) => {
                        let _ = tx.send((tls, peer)).await;
                    }
                    Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                    Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                }
            });
        }
    });
    ready
}
