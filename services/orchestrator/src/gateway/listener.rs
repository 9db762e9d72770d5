//! Where the gateway's connections come from: plain TCP, or HTTPS with the
//! orchestrator's own certificate (`--tls-cert`, `--tls-key`) when its gRPC port serves
//! TLS, so that API keys never cross the network in the clear on either front door.
//!
//! The TLS connections come from the same bounded, reloading accept loop as the gRPC
//! port's (`ponder_cluster::tls_server`), handed to axum through a channel. axum serves
//! any [`Listener`]; these two are ours for TCP_NODELAY and for that loop.

use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};
use ponder_cluster::tls_server::ServerTlsFiles;
use std::net::SocketAddr;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;

/// The client's address, as handlers see it (`ConnectInfo<Peer>`).
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub SocketAddr);

impl Connected<IncomingStream<'_, PlainListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, PlainListener>) -> Self {
        Peer(*stream.remote_addr())
    }
}

/// Plain TCP with Nagle's algorithm off: a response's headers and body go out at once
/// instead of waiting up to a delayed-ACK timeout (40 ms on Linux) for the client.
pub struct PlainListener(pub TcpListener);

impl Listener for PlainListener {
    type Io = TcpStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (stream, peer) = Listener::accept(&mut self.0).await;
        let _ = stream.set_nodelay(true);
        (stream, peer)
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.0.local_addr()
    }
}

impl Connected<IncomingStream<'_, TlsListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, TlsListener>) -> Self {
        Peer(*stream.remote_addr())
    }
}

/// Connections whose TLS handshake is done, from [`ponder_cluster::tls_server`]'s
/// accept loop (the node's certificate, reloaded when its files change).
pub struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl TlsListener {
    pub fn new(tcp: TcpListener, files: &ServerTlsFiles) -> anyhow::Result<Self> {
        let local = tcp.local_addr()?;
        let reloading = files.watched(&[b"http/1.1"])?;
        Ok(Self {
            ready: ponder_cluster::tls_server::accept_tls(tcp, reloading.config),
            local,
        })
    }
}

impl Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(c) => c,
            // The accept loop only ends when the listener is dropped.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}
