//! The server skeleton every node runs: health, reflection, the role's service,
//! optional etcd registration, and a graceful stop.
//!
//! Start order (what readiness means): the port is bound and health answers
//! NOT_SERVING at once; the role loads and warms its model; only then health turns
//! SERVING and the node registers in etcd. Stop order: health NOT_SERVING, the lease is
//! revoked (orchestrators drop the member now), in-flight calls drain up to a limit,
//! then the server exits.
//!
//! Security (docs/security.md): the gRPC port serves TLS when `--tls-cert` is given and
//! demands client certificates per `--tls-client-auth`. Kubelet gRPC probes speak
//! neither TLS nor mTLS, so `--health-listen` serves grpc.health.v1 alone, in
//! plaintext, on a second port: it tells only SERVING or NOT_SERVING, and probes
//! point there when TLS is on.

use crate::discovery::{EtcdAccessArgs, EtcdConfig};
use crate::member::MemberRecord;
use crate::register::{Registration, DEFAULT_TTL_SECS};
use crate::tls::{ClientAuth, TlsArgs};
use crate::BoxedFuture;
use clap::Args;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_stream::StreamExt;
use tonic::service::Routes;
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;

/// Flags every node shares (also read from `PONDER_*` environment variables).
#[derive(Debug, Clone, Args)]
pub struct NodeArgs {
    /// Address to serve gRPC on (port 0: any free port).
    #[arg(long, env = "PONDER_LISTEN", default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// Address other nodes use to reach this one (default: the bound address).
    #[arg(long, env = "PONDER_ADVERTISE")]
    pub advertise: Option<String>,
    /// Serve Prometheus metrics on this address (`/metrics`).
    #[arg(long, env = "PONDER_METRICS_ADDR")]
    pub metrics_addr: Option<SocketAddr>,
    /// etcd endpoints (comma-separated); without them the node does not register.
    #[arg(long, env = "PONDER_ETCD", value_delimiter = ',')]
    pub etcd: Vec<String>,
    /// Cluster name: the etcd key prefix is /ponder/v1/<cluster>/.
    #[arg(long, env = "PONDER_CLUSTER", default_value = "default")]
    pub cluster: String,
    /// This node's id in etcd (default: role-host-port).
    #[arg(long, env = "PONDER_INSTANCE_ID")]
    pub instance_id: Option<String>,
    /// Lease TTL in seconds.
    #[arg(long, env = "PONDER_LEASE_TTL", default_value_t = DEFAULT_TTL_SECS)]
    pub lease_ttl: i64,
    /// How long a stopping node waits for in-flight calls.
    #[arg(long, env = "PONDER_DRAIN_SECS", default_value_t = 20)]
    pub drain_secs: u64,
    #[arg(long, env = "PONDER_LOG_FORMAT", value_enum, default_value_t)]
    pub log_format: crate::telemetry::LogFormat,
    /// Export traces over OTLP/gRPC to this collector (e.g. http://otel-collector:4317);
    /// unset: no export (docs/tracing.md).
    #[arg(long, env = "PONDER_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
    /// Also serve grpc.health.v1 alone, in plaintext, on this address (for kubelet
    /// probes, which cannot do TLS).
    #[arg(long, env = "PONDER_HEALTH_LISTEN")]
    pub health_listen: Option<SocketAddr>,
    /// Do not serve gRPC server reflection (v1 and v1alpha are served by default, so
    /// grpcurl, Postman and the Python reflection client can read the API).
    #[arg(long, env = "PONDER_NO_REFLECTION")]
    pub no_reflection: bool,
    /// A TOML file of flag values, keys being the long flags (`max-queries = 128`);
    /// flags and PONDER_* variables override it (docs/cluster.md, "Configuration file").
    #[arg(long, env = "PONDER_CONFIG")]
    pub config: Option<std::path::PathBuf>,
    #[command(flatten)]
    pub tls: TlsArgs,
    #[command(flatten)]
    pub etcd_access: EtcdAccessArgs,
}

impl Default for NodeArgs {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:0".parse().expect("a valid address"),
            advertise: None,
            metrics_addr: None,
            etcd: vec![],
            cluster: "default".into(),
            instance_id: None,
            lease_ttl: DEFAULT_TTL_SECS,
            drain_secs: 20,
            log_format: Default::default(),
            otlp_endpoint: None,
            health_listen: None,
            no_reflection: false,
            config: None,
            tls: TlsArgs::default(),
            etcd_access: EtcdAccessArgs::default(),
        }
    }
}

/// A running server.
pub struct Node {
    pub addr: SocketAddr,
    /// With TLS: how many times the certificate files have been reloaded.
    pub tls_reloads: Option<watch::Receiver<u64>>,
    /// The plaintext health-only port (`--health-listen`), if any.
    pub health_addr: Option<SocketAddr>,
    pub service_name: &'static str,
    args: NodeArgs,
    health: HealthReporter,
    stop: watch::Sender<bool>,
    task: JoinHandle<Result<(), tonic::transport::Error>>,
    etcd: Option<EtcdConfig>,
    registration: Option<Registration>,
}

impl Node {
    /// Binds and starts serving `routes` plus health and reflection; health reports
    /// NOT_SERVING until [`Node::set_serving`]. `client_auth` is the role's default for
    /// `--tls-client-auth` once a CA is configured.
    pub fn start(
        args: NodeArgs,
        service_name: &'static str,
        routes: Routes,
        client_auth: ClientAuth,
    ) -> BoxedFuture<'static, anyhow::Result<Self>> {
        Box::pin(async move {
            anyhow::ensure!(
                (2..=3600).contains(&args.lease_ttl),
                "--lease-ttl must be between 2 and 3600 seconds, got {}",
                args.lease_ttl
            );
            let tls = args.tls.server(client_auth)?;
            let etcd = if args.etcd.is_empty() {
                None
            } else {
                Some(EtcdConfig::new(args.etcd.clone(), &args.etcd_access)?)
            };
            let listener = TcpListener::bind(args.listen)
                .await
                .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", args.listen))?;
            let addr = listener.local_addr()?;
            match &tls {
                Some(_) if args.tls.requires_client_certs(client_auth) => {
                    tracing::info!(%addr, "TLS on; callers must present a certificate signed by the cluster CA")
                }
                Some(_) => tracing::info!(%addr, "TLS on; client certificates not required"),
                None => tracing::info!(%addr, "plaintext gRPC (no --tls-cert)"),
            }
            let (health, health_service) = tonic_health::server::health_reporter();
            health
                .set_service_status("", ServingStatus::NotServing)
                .await;
            health
                .set_service_status(service_name, ServingStatus::NotServing)
                .await;
            // Both reflection versions: v1 for current tools, v1alpha for the many that
            // still speak only it (grpcio-reflection's client, older grpcurl and ghz).
            let reflection = || {
                tonic_reflection::server::Builder::configure()
                    .register_encoded_file_descriptor_set(ponder_proto::FILE_DESCRIPTOR_SET)
                    .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            };
            let (stop, mut stopped) = watch::channel(false);
            let health_addr = match args.health_listen {
                Some(a) => Some(
                    serve_health(a, Routes::new(health_service.clone()), stop.subscribe()).await?,
                ),
                None => None,
            };
            let mut routes = routes.add_service(health_service);
            if !args.no_reflection {
                routes = routes
                    .add_service(reflection().build_v1()?)
                    .add_service(reflection().build_v1alpha()?);
            }
            let server = tonic::transport::Server::builder()
                .tcp_nodelay(true)
                .add_routes(routes);
            let shutdown = async move {
                let _ = stopped.wait_for(|s| *s).await;
            };
            // TLS through our own accept loop, so that a rotated certificate is served
            // without a restart (crate::tls_server).
            let (task, tls_reloads) =
                match tls {
                    Some(files) => {
                        let reloading = files.watched(&[b"h2"])?;
                        let incoming = crate::tls_server::accept_tls(listener, reloading.config);
                        let incoming = tokio_stream::wrappers::ReceiverStream::new(incoming)
                            .map(|(stream, _)| Ok::<_, std::io::Error>(stream));
                        let task =
                            tokio::spawn(server.serve_with_incoming_shutdown(incoming, shutdown));
                        (task, Some(reloading.reloads))
                    }
                    None => (
                        tokio::spawn(server.serve_with_incoming_shutdown(
                            TcpListenerStream::new(listener),
                            shutdown,
                        )),
                        None,
                    ),
                };
            Ok(Self {
                addr,
                health_addr,
                service_name,
                args,
                health,
                stop,
                task,
                etcd,
                registration: None,
                tls_reloads,
            })
        })
    }

    /// The address to publish: `--advertise` or the bound address.
    pub fn advertised(&self) -> String {
        self.args
            .advertise
            .clone()
            .unwrap_or_else(|| self.addr.to_string())
    }

    pub fn instance_id(&self, role: &str) -> String {
        self.args.instance_id.clone().unwrap_or_else(|| {
            format!(
                "{role}-{}",
                self.advertised().replace([':', '.', '[', ']'], "-")
            )
        })
    }

    /// Health SERVING, then registration in etcd (if configured).
    pub async fn set_serving(&mut self, record: Option<MemberRecord>) {
        self.health
            .set_service_status("", ServingStatus::Serving)
            .await;
        self.health
            .set_service_status(self.service_name, ServingStatus::Serving)
            .await;
        if let (Some(record), Some(etcd)) = (record, &self.etcd) {
            self.registration = Some(Registration::start(
                etcd.clone(),
                self.args.cluster.clone(),
                record,
                self.args.lease_ttl,
            ));
        }
    }

    /// The health reporter, for a node whose serving depends on more than the server
    /// (a model worker that stopped turns its node NOT_SERVING).
    pub fn health(&self) -> HealthReporter {
        self.health.clone()
    }

    /// Graceful stop: NOT_SERVING, leave etcd, drain, exit.
    pub fn stop(mut self) -> BoxedFuture<'static, ()> {
        Box::pin(async move {
            self.health
                .set_service_status("", ServingStatus::NotServing)
                .await;
            self.health
                .set_service_status(self.service_name, ServingStatus::NotServing)
                .await;
            if let Some(r) = self.registration.take() {
                r.revoke().await;
            }
            let _ = self.stop.send(true);
            let drain = Duration::from_secs(self.args.drain_secs);
            match tokio::time::timeout(drain, &mut self.task).await {
                Ok(Ok(Ok(()))) => tracing::info!(addr = %self.addr, "stopped"),
                Ok(Ok(Err(e))) => tracing::error!(error = %e, "server error"),
                Ok(Err(e)) => tracing::error!(error = %e, "server task failed"),
                Err(_) => {
                    tracing::warn!(
                        ?drain,
                        "in-flight calls did not drain in time; stopping anyway"
                    );
                    self.task.abort();
                }
            }
        })
    }

    /// Waits until the server exits on its own (it only does on error).
    pub async fn wait(&mut self) -> anyhow::Result<()> {
        (&mut self.task).await??;
        Ok(())
    }
}

/// Serves `health` (grpc.health.v1 alone, sharing its status with the main port's) in
/// plaintext until `stop` turns true.
async fn serve_health(
    addr: SocketAddr,
    health: Routes,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on --health-listen {addr}: {e}"))?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        let r = tonic::transport::Server::builder()
            .add_routes(health)
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async move {
                let _ = stop.wait_for(|s| *s).await;
            })
            .await;
        if let Err(e) = r {
            tracing::error!(error = %e, "health port stopped");
        }
    });
    tracing::info!(%bound, "plaintext health checks (grpc.health.v1 only)");
    Ok(bound)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_lease_ttl_out_of_range_stops_the_node_with_the_flag_named() {
        for ttl in [0, 1, 3601] {
            let args = NodeArgs {
                lease_ttl: ttl,
                ..NodeArgs::default()
            };
            let e = Node::start(args, "test", Routes::default(), ClientAuth::None)
                .await
                .err()
                .expect("refused");
            assert!(e.to_string().contains("--lease-ttl"), "{e}");
        }
    }

    /// The services a node lists over reflection v1 and v1alpha (None: UNIMPLEMENTED).
    async fn listed(addr: SocketAddr) -> (Option<Vec<String>>, Option<Vec<String>>) {
        use tonic_reflection::pb::{v1, v1alpha};
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut c1 = v1::server_reflection_client::ServerReflectionClient::new(channel.clone());
        let ask = v1::ServerReflectionRequest {
            host: String::new(),
            message_request: Some(v1::server_reflection_request::MessageRequest::ListServices(
                String::new(),
            )),
        };
        let one = match c1.server_reflection_info(tokio_stream::iter([ask])).await {
            Ok(r) => match r.into_inner().message().await {
                Ok(Some(v1::ServerReflectionResponse {
                    message_response:
                        Some(v1::server_reflection_response::MessageResponse::ListServicesResponse(l)),
                    ..
                })) => Some(l.service.into_iter().map(|s| s.name).collect()),
                _ => None,
            },
            Err(_) => None,
        };
        let mut c2 = v1alpha::server_reflection_client::ServerReflectionClient::new(channel);
        let ask = v1alpha::ServerReflectionRequest {
            host: String::new(),
            message_request: Some(
                v1alpha::server_reflection_request::MessageRequest::ListServices(String::new()),
            ),
        };
        let alpha = match c2.server_reflection_info(tokio_stream::iter([ask])).await {
            Ok(r) => match r.into_inner().message().await {
                Ok(Some(v1alpha::ServerReflectionResponse {
                    message_response:
                        Some(
                            v1alpha::server_reflection_response::MessageResponse::ListServicesResponse(
                                l,
                            ),
                        ),
                    ..
                })) => Some(l.service.into_iter().map(|s| s.name).collect()),
                _ => None,
            },
            Err(_) => None,
        };
        (one, alpha)
    }

    #[tokio::test]
    async fn reflection_speaks_v1_and_v1alpha_unless_turned_off() {
        for off in [false, true] {
            let args = NodeArgs {
                listen: "127.0.0.1:0".parse().unwrap(),
                no_reflection: off,
                ..NodeArgs::default()
            };
            let node = Node::start(args, "test", Routes::default(), ClientAuth::None)
                .await
                .unwrap();
            let (v1, v1alpha) = listed(node.addr).await;
            if off {
                assert_eq!((v1, v1alpha), (None, None));
            } else {
                for list in [v1.unwrap(), v1alpha.unwrap()] {
                    assert!(
                        list.iter().any(|s| s == "ponder.v1.Orchestrator"),
                        "{list:?}"
                    );
                }
            }
            node.stop().await;
        }
    }
}
