//! The one orchestrator the driver talks to, and how one request is sent.
//!
//! The driver dials exactly the addresses it is given (one orchestrator, or several
//! that serve the same cluster: request i goes to the (i mod K)-th), over
//! `--connections` HTTP/2 connections each (requests are spread over them in turn),
//! and nothing else: it does no
//! discovery, so it can never put load on a cluster it was not pointed at. TLS and the
//! API key take the same flags as the `ponder` CLI (`ponder_cluster::connect`). With
//! `--protocol openai` the same requests go to the HTTP gateway instead
//! ([`crate::openai`]).

use ponder_cluster::connect::{BearerToken, ConnectArgs};
use ponder_proto::v1 as pb;
use ponder_proto::v1::orchestrator_client::OrchestratorClient;
use serde::{Deserialize, Serialize};
use std::time::Duration;
use tokio::time::Instant;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::Status;

type Client = OrchestratorClient<InterceptedService<Channel, BearerToken>>;

/// How requests reach the orchestrator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    /// ponder.v1.Orchestrator over gRPC.
    Grpc,
    /// The gateway's POST /v1/chat/completions (docs/gateway.md).
    Openai,
}

/// Which RPC to call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Rpc {
    Solve,
    SolveStream,
}

#[derive(Clone)]
pub struct Target {
    pub addr: Vec<String>,
    pub rpc: Rpc,
    /// The gRPC deadline of each request.
    pub timeout: Duration,
    /// Per address, its connections.
    clients: Vec<Vec<Client>>,
    /// Set with `--protocol openai`: requests go through the HTTP gateway.
    http: Option<crate::openai::HttpTarget>,
}

/// What came back for one request.
pub struct Outcome {
    pub result: Result<pb::SolveResponse, Status>,
    /// When the first stream event arrived (SolveStream only).
    pub first_event: Option<Instant>,
}

impl Target {
    /// Opens `connections` connections to each of `addrs` (`host:port` or a URL), with
    /// TLS and the API key as `access` says.
    pub async fn connect(
        addrs: &[String],
        access: &ConnectArgs,
        connections: usize,
        rpc: Rpc,
        timeout: Duration,
        protocol: Protocol,
    ) -> anyhow::Result<Target> {
        anyhow::ensure!(
            (1..=64).contains(&connections),
            "--connections must be 1..=64"
        );
        anyhow::ensure!(!timeout.is_zero(), "--timeout must be positive");
        anyhow::ensure!(
            (1..=256).contains(&addrs.len()),
            "--addr takes 1 to 256 addresses, got {}",
            addrs.len()
        );
        if protocol == Protocol::Openai {
            let [addr] = addrs else {
                anyhow::bail!("--protocol openai takes one --addr (the gateway)");
            };
            let token = access.token.as_ref().map(|t| t.expose());
            return Ok(Target {
                addr: addrs.to_vec(),
                rpc,
                timeout,
                clients: vec![],
                http: Some(crate::openai::HttpTarget::new(addr, connections, token)?),
            });
        }
        let bearer = access.bearer()?;
        let mut clients = Vec::with_capacity(addrs.len());
        for addr in addrs {
            let endpoint = access.endpoint(addr)?;
            let url = endpoint.uri().to_string();
            let mut conns = Vec::with_capacity(connections);
            for _ in 0..connections {
                let channel = endpoint.connect().await.map_err(|e| {
                    anyhow::anyhow!(
                        "cannot reach the orchestrator at {url}: {}",
                        ponder_cluster::connect::error_chain(&e)
                    )
                })?;
                conns.push(OrchestratorClient::with_interceptor(
                    channel,
                    bearer.clone(),
                ));
            }
            clients.push(conns);
        }
        Ok(Target {
            addr: addrs.to_vec(),
            rpc,
            timeout,
            clients,
            http: None,
        })
    }

    /// Sends request number `index` and waits for its answer (or the deadline).
    pub async fn call(&self, index: u64, req: pb::SolveRequest) -> Outcome {
        if let Some(http) = &self.http {
            let stream = self.rpc == Rpc::SolveStream;
            let (result, first_event) = http.call(&req, stream, self.timeout).await;
            return Outcome {
                result,
                first_event,
            };
        }
        let k = self.clients.len() as u64;
        let conns = &self.clients[(index % k) as usize];
        let mut client = conns[((index / k) % conns.len() as u64) as usize].clone();
        let mut request = tonic::Request::new(req);
        request.set_timeout(self.timeout);
        match self.rpc {
            Rpc::Solve => Outcome {
                result: client.solve(request).await.map(|r| r.into_inner()),
                first_event: None,
            },
            Rpc::SolveStream => {
                let mut first_event = None;
                let result = async {
                    let mut events = client.solve_stream(request).await?.into_inner();
                    while let Some(ev) = events.message().await? {
                        first_event.get_or_insert_with(Instant::now);
                        if let Some(fin) = ev.r#final {
                            return Ok(fin);
                        }
                    }
                    Err(Status::unknown("the stream ended without a final event"))
                }
                .await;
                Outcome {
                    result,
                    first_event,
                }
            }
        }
    }
}

/// The canonical name of a gRPC status code (`RESOURCE_EXHAUSTED`): the one function,
/// shared with the services' metric labels.
pub use ponder_cluster::metrics::code_name;
