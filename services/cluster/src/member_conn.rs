//! The orchestrator's connection to one member: unary gRPC calls over the `h2` crate,
//! each call's HEADERS and DATA handed to the connection in one turn, so that they
//! leave in one write.
//!
//! Why not tonic's `Channel`, as every other client in Ponder uses: the orchestrator
//! makes thousands of calls a second to its members, and its cost per call is what one
//! orchestrator core can coordinate (docs/scaling.md, "Orchestrator cost"). Through a
//! `Channel` a call passes a `tower::buffer` task, hyper's dispatch channel and a task
//! hyper spawns to pipe the body, and hyper flushes the HEADERS before that task hands
//! over the DATA: two writes per call, and on loopback each write also costs the sender
//! the receiver's TCP work. Here the calling task opens the stream and queues its one
//! message itself (`send_data` without waiting for flow-control capacity, which h2
//! buffers and sends with the HEADERS), and no task sits between it and the connection.
//!
//! What `Channel` did that this keeps: a connection dialed on first use and dialed again
//! after it breaks (one dial at a time), a 2 s connect timeout, TCP_NODELAY, TLS with
//! ALPN h2, HTTP/2 pings that close a connection whose peer stops answering (its calls
//! then fail and are retried elsewhere), and the call's `grpc-timeout` enforced on the
//! client side. Only unary calls go through it: a request body is read whole before the
//! stream opens (workers have no streaming RPC).

use crate::member::{KEEP_ALIVE_INTERVAL, KEEP_ALIVE_TIMEOUT};
use bytes::{Bytes, BytesMut};
use h2::client::SendRequest;
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::BodyExt;
use rustls::pki_types::ServerName;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tonic::body::Body;
use tonic::Status;

/// How long dialing a member may take (TCP connect, and TLS handshake apart).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// HTTP/2 flow-control windows, as hyper's client sets them (tonic's default): a
/// member's answer never waits for a window update.
const STREAM_WINDOW: u32 = 2 * 1024 * 1024;
const CONNECTION_WINDOW: u32 = 5 * 1024 * 1024;

/// How a member is dialed over TLS: the client config (ALPN h2) and the name its
/// certificate must carry.
#[derive(Clone)]
pub struct TlsDial {
    pub config: Arc<rustls::ClientConfig>,
    pub server_name: ServerName<'static>,
}

/// A member's connection, shared by every call to it (cloning is an `Arc` clone).
#[derive(Clone)]
pub struct MemberConn(Arc<Shared>);

impl std::fmt::Debug for MemberConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemberConn")
            .field("address", &self.0.address)
            .field("tls", &self.0.tls.is_some())
            .finish()
    }
}

struct Shared {
    /// host:port.
    address: String,
    scheme: http::uri::Scheme,
    authority: http::uri::Authority,
    tls: Option<TlsDial>,
    /// The live connection, if any. Held only to clone or replace the handle, never
    /// across an await.
    live: Mutex<Option<Live>>,
    /// One dial at a time: calls that find no connection wait for the same dial.
    dialing: tokio::sync::Mutex<()>,
    /// Dials started so far, and how the last one failed (cleared when one succeeds):
    /// calls that waited for a dial that failed fail with it instead of each dialing
    /// again in turn (a black-holed member would otherwise cost the last of them one
    /// connect timeout per call before it).
    dials: AtomicU64,
    dial_failure: Mutex<Option<Status>>,
}

#[derive(Clone)]
struct Live {
    send: SendRequest<Bytes>,
    /// Which dial made it, so that a connection that ended forgets only itself.
    id: u64,
}

impl MemberConn {
    /// A connection to `address` (host:port), dialed on the first call.
    pub fn new(address: &str, tls: Option<TlsDial>) -> anyhow::Result<Self> {
        let authority: http::uri::Authority = address
            .parse()
            .map_err(|e| anyhow::anyhow!("{address:?} is not a host:port address: {e}"))?;
        let scheme = if tls.is_some() {
            http::uri::Scheme::HTTPS
        } else {
            http::uri::Scheme::HTTP
        };
        Ok(Self(Arc::new(Shared {
            address: address.to_string(),
            scheme,
            authority,
            tls,
            live: Mutex::new(None),
            dialing: tokio::sync::Mutex::new(()),
            dials: AtomicU64::new(0),
            dial_failure: Mutex::new(None),
        })))
    }
}

impl tower::Service<http::Request<Body>> for MemberConn {
    type Response = http::Response<ResponseBody>;
    type Error = Status;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Status>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Status>> {
        // Readiness is the connection's, awaited inside the call (a dial may be needed).
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let shared = self.0.clone();
        Box::pin(async move {
            match grpc_timeout(req.headers()) {
                Some(limit) => tokio::time::timeout(limit, shared.call(req))
                    .await
                    .unwrap_or_else(|_| {
                        Err(Status::deadline_exceeded(
                            "the call's deadline passed before the member answered",
                        ))
                    }),
                None => shared.call(req).await,
            }
        })
    }
}

impl Shared {
    async fn call(
        self: Arc<Self>,
        req: http::Request<Body>,
    ) -> Result<http::Response<ResponseBody>, Status> {
        let (mut head, body) = req.into_parts();
        let message = whole_body(body).await?;
        let mut uri = http::uri::Parts::default();
        uri.scheme = Some(self.scheme.clone());
        uri.authority = Some(self.authority.clone());
        uri.path_and_query = head.uri.path_and_query().cloned();
        head.uri = http::Uri::from_parts(uri)
            .map_err(|e| Status::internal(format!("cannot address the call: {e}")))?;
        let mut send = self.connection().await?;
        let (response, mut stream) = send
            .send_request(http::Request::from_parts(head, ()), message.is_empty())
            .map_err(|e| unavailable("cannot open a stream to", &self.address, e))?;
        if !message.is_empty() {
            stream
                .send_data(message, true)
                .map_err(|e| unavailable("cannot send the request to", &self.address, e))?;
        }
        let response = response.await.map_err(|e| call_failed(&self.address, e))?;
        Ok(response.map(ResponseBody::new))
    }

    /// A connection ready for a new stream: the live one, or a new dial.
    async fn connection(self: &Arc<Self>) -> Result<SendRequest<Bytes>, Status> {
        if let Some(send) = self.live_ready().await {
            return Ok(send);
        }
        let dials_seen = self.dials.load(Ordering::Acquire);
        let _one_dial = self.dialing.lock().await;
        // Another call may have dialed while this one waited.
        if let Some(send) = self.live_ready().await {
            return Ok(send);
        }
        if self.dials.load(Ordering::Acquire) != dials_seen {
            if let Some(failure) = lock(&self.dial_failure).clone() {
                return Err(failure);
            }
        }
        self.dials.fetch_add(1, Ordering::AcqRel);
        let live = match self.dial().await {
            Ok(live) => live,
            Err(failure) => {
                *lock(&self.dial_failure) = Some(failure.clone());
                return Err(failure);
            }
        };
        *lock(&self.dial_failure) = None;
        *lock(&self.live) = Some(live.clone());
        live.send
            .ready()
            .await
            .map_err(|e| unavailable("the new connection failed to", &self.address, e))
    }

    /// The live connection, once ready for a new stream; a broken one is forgotten.
    async fn live_ready(&self) -> Option<SendRequest<Bytes>> {
        let live = lock(&self.live).clone()?;
        match live.send.ready().await {
            Ok(send) => Some(send),
            Err(_) => {
                self.forget(live.id);
                None
            }
        }
    }

    fn forget(&self, id: u64) {
        let mut live = lock(&self.live);
        if live.as_ref().is_some_and(|l| l.id == id) {
            *live = None;
        }
    }

    async fn dial(self: &Arc<Self>) -> Result<Live, Status> {
        let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&self.address))
            .await
            .map_err(|_| {
                Status::unavailable(format!(
                    "connecting to {} timed out after {} s",
                    self.address,
                    CONNECT_TIMEOUT.as_secs()
                ))
            })?
            .map_err(|e| unavailable("cannot connect to", &self.address, e))?;
        tcp.set_nodelay(true)
            .map_err(|e| unavailable("cannot set TCP_NODELAY on", &self.address, e))?;
        match &self.tls {
            None => self.handshake(tcp).await,
            Some(tls) => {
                let connector = tokio_rustls::TlsConnector::from(tls.config.clone());
                let stream = tokio::time::timeout(
                    crate::tls::HANDSHAKE_TIMEOUT,
                    connector.connect(tls.server_name.clone(), tcp),
                )
                .await
                .map_err(|_| {
                    Status::unavailable(format!(
                        "the TLS handshake with {} timed out",
                        self.address
                    ))
                })?
                .map_err(|e| unavailable("TLS handshake failed with", &self.address, e))?;
                self.handshake(stream).await
            }
        }
    }

    async fn handshake<T>(self: &Arc<Self>, io: T) -> Result<Live, Status>
    where
        T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (send, mut connection) = h2::client::Builder::new()
            .initial_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONNECTION_WINDOW)
            .handshake::<_, Bytes>(io)
            .await
            .map_err(|e| unavailable("the HTTP/2 handshake failed with", &self.address, e))?;
        let id = self.dials.load(Ordering::Acquire);
        let pings = connection.ping_pong();
        let shared: Weak<Shared> = Arc::downgrade(self);
        let address = self.address.clone();
        tokio::spawn(async move {
            tokio::select! {
                done = &mut connection => {
                    if let Err(e) = done {
                        tracing::debug!(member = %address, error = %e, "connection to the member ended");
                    }
                }
                () = keep_alive(pings) => {
                    tracing::debug!(member = %address, "the member stopped answering pings; closing its connection");
                }
            }
            // Dropping the connection fails the calls still on it; the next call dials.
            drop(connection);
            if let Some(shared) = shared.upgrade() {
                shared.forget(id);
            }
        });
        Ok(Live { send, id })
    }
}

/// A lock that is only ever held to read or replace a value (never across an await),
/// so a panic elsewhere cannot leave it half-changed: a poisoned one is used as is.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Pings every [`KEEP_ALIVE_INTERVAL`], idle or not; returns when a ping goes
/// unanswered for [`KEEP_ALIVE_TIMEOUT`], or the connection can no longer ping.
async fn keep_alive(pings: Option<h2::PingPong>) {
    let Some(mut pings) = pings else {
        return std::future::pending().await;
    };
    loop {
        tokio::time::sleep(KEEP_ALIVE_INTERVAL).await;
        match tokio::time::timeout(KEEP_ALIVE_TIMEOUT, pings.ping(h2::Ping::opaque())).await {
            Ok(Ok(_)) => {}
            _ => return,
        }
    }
}

/// The request's message: a unary body is one frame, ready at once.
async fn whole_body(mut body: Body) -> Result<Bytes, Status> {
    let mut first: Option<Bytes> = None;
    let mut more: Option<BytesMut> = None;
    while let Some(frame) = body.frame().await {
        // Request bodies carry no trailers in gRPC; only data frames matter.
        let Ok(data) = frame?.into_data() else {
            continue;
        };
        match (&mut first, &mut more) {
            (None, _) => first = Some(data),
            (Some(f), None) => {
                let mut m = BytesMut::from(&f[..]);
                m.extend_from_slice(&data);
                more = Some(m);
            }
            (Some(_), Some(m)) => m.extend_from_slice(&data),
        }
    }
    Ok(match more {
        Some(m) => m.freeze(),
        None => first.unwrap_or_default(),
    })
}

/// The `grpc-timeout` header tonic sets from a request's timeout, as a duration.
fn grpc_timeout(headers: &http::HeaderMap) -> Option<Duration> {
    let value = headers.get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// A call that failed before its answer began. A broken or refused connection (an I/O
/// error, GOAWAY, a refused stream: the member did no work for it) is UNAVAILABLE,
/// which the pool retries on another member; a stream reset for another reason keeps
/// tonic's code for it.
fn call_failed(address: &str, e: h2::Error) -> Status {
    let connection = e.is_io() || e.is_go_away() || e.reason() == Some(h2::Reason::REFUSED_STREAM);
    if !connection {
        return Status::from(e);
    }
    unavailable("the connection failed under a call to", address, e)
}

/// UNAVAILABLE with `e` as its source: the pool tells a refused connection apart by an
/// `io::Error` there (nothing was sent).
fn unavailable<E>(what: &str, address: &str, e: E) -> Status
where
    E: std::error::Error + Send + Sync + 'static,
{
    let mut s = Status::unavailable(format!("{what} {address}: {e}"));
    s.set_source(Arc::new(e));
    s
}

/// A member's answer: its DATA frames (flow-control capacity released as they are
/// read), then its trailers.
pub struct ResponseBody {
    stream: h2::RecvStream,
    data_done: bool,
}

impl ResponseBody {
    fn new(stream: h2::RecvStream) -> Self {
        Self {
            stream,
            data_done: false,
        }
    }
}

impl HttpBody for ResponseBody {
    type Data = Bytes;
    type Error = h2::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, h2::Error>>> {
        if !self.data_done {
            match self.stream.poll_data(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(data))) => {
                    let _ = self.stream.flow_control().release_capacity(data.len());
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(None) => self.data_done = true,
            }
        }
        match self.stream.poll_trailers(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(Some(trailers))) => Poll::Ready(Some(Ok(Frame::trailers(trailers)))),
            Poll::Ready(Ok(None)) => Poll::Ready(None),
            Poll::Ready(Err(e)) => Poll::Ready(Some(Err(e))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.stream.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;

    /// A real gRPC server (tonic's health service) on `listener`, until `stop` fires.
    fn serve(listener: TcpListener, stop: tokio::sync::oneshot::Receiver<()>) {
        let (_, health) = tonic_health::server::health_reporter();
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(health)
                .serve_with_incoming_shutdown(
                    tokio_stream::wrappers::TcpListenerStream::new(listener),
                    async {
                        let _ = stop.await;
                    },
                )
                .await
                .unwrap();
        });
    }

    async fn check(client: &mut HealthClient<MemberConn>) -> Result<(), Status> {
        client
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .map(|_| ())
    }

    #[tokio::test]
    async fn calls_share_one_dial_and_a_restarted_member_is_dialed_again() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel();
        serve(listener, stopped);
        let conn = MemberConn::new(&addr.to_string(), None).unwrap();
        let client = HealthClient::new(conn.clone());
        let answers = futures::future::join_all((0..50).map(|_| {
            let mut c = client.clone();
            async move { check(&mut c).await }
        }))
        .await;
        assert!(answers.iter().all(Result::is_ok), "{answers:?}");
        assert_eq!(
            conn.0.dials.load(Ordering::Acquire),
            1,
            "50 calls, one dial"
        );

        // The member goes away (GOAWAY, then the socket closes) and comes back on the
        // same address: calls answer again over a new connection.
        stop.send(()).unwrap();
        let mut c = client.clone();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while check(&mut c).await.is_ok() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the member never went away"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let (stop, stopped) = tokio::sync::oneshot::channel();
        serve(TcpListener::bind(addr).await.unwrap(), stopped);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while let Err(e) = check(&mut c).await {
            assert!(
                tokio::time::Instant::now() < deadline,
                "never answered again: {e:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(conn.0.dials.load(Ordering::Acquire) >= 2);
        let _ = stop.send(());
    }

    #[tokio::test]
    async fn a_refused_dial_is_unavailable_and_keeps_its_cause() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut client =
            HealthClient::new(MemberConn::new(&format!("127.0.0.1:{port}"), None).unwrap());
        let e = check(&mut client).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unavailable, "{e:?}");
        let refused = std::error::Error::source(&e)
            .and_then(|s| s.downcast_ref::<std::io::Error>())
            .is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionRefused);
        assert!(refused, "{e:?}");
    }

    #[tokio::test]
    async fn a_member_that_never_answers_runs_into_the_calls_deadline() {
        // Accepts the connection and reads nothing: no HTTP/2 answer ever comes.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let held = tokio::spawn(async move { listener.accept().await.map(|(socket, _)| socket) });
        let mut client = HealthClient::new(MemberConn::new(&addr.to_string(), None).unwrap());
        let mut request = tonic::Request::new(HealthCheckRequest {
            service: String::new(),
        });
        request.set_timeout(Duration::from_millis(300));
        let started = std::time::Instant::now();
        let e = client.check(request).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::DeadlineExceeded, "{e:?}");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        drop(held);
    }

    #[test]
    fn an_address_that_is_not_host_port_is_refused() {
        assert!(MemberConn::new("not an address", None).is_err());
    }

    #[test]
    fn grpc_timeouts_parse_in_every_unit() {
        let mut h = http::HeaderMap::new();
        for (v, d) in [
            ("2H", Duration::from_secs(7200)),
            ("3M", Duration::from_secs(180)),
            ("10S", Duration::from_secs(10)),
            ("250m", Duration::from_millis(250)),
            ("7u", Duration::from_micros(7)),
            ("9n", Duration::from_nanos(9)),
        ] {
            h.insert("grpc-timeout", v.parse().unwrap());
            assert_eq!(grpc_timeout(&h), Some(d), "{v}");
        }
        for bad in ["", "S", "10", "10x", "-1S"] {
            h.insert("grpc-timeout", bad.parse().unwrap());
            assert_eq!(grpc_timeout(&h), None, "{bad:?}");
        }
    }
}
