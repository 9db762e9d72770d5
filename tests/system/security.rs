//! Security over real gRPC on 127.0.0.1, with certificates made in the test: workers
//! accept only peers holding a cluster certificate, the orchestrator works end to end
//! over mTLS, API keys and rate limits gate the public API (health stays open), etcd
//! takes TLS and a password, and no secret ever reaches a log.

use crate::common::security::*;
use crate::common::*;
use ponder_cluster::connect::ConnectArgs;
use ponder_cluster::discovery::{EtcdAccessArgs, EtcdConfig};
use ponder_cluster::metrics::Metrics;
use ponder_cluster::node::NodeArgs;
use ponder_cluster::secret::Secret;
use ponder_cluster::tls::TlsArgs;
use ponder_proto::v1 as pb;
use ponder_proto::v1::generator_client::GeneratorClient;
use ponder_proto::v1::orchestrator_client::OrchestratorClient;
use ponder_worker::node::{ModelArgs, ModelNode};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

/// The name every worker certificate carries (as one shared Kubernetes certificate
/// would); the orchestrator expects it with --tls-server-name.
const WORKER_NAME: &str = "ponder-worker";

/// A client of a worker: `ca` verifies it; `identity` is presented when given.
fn to_worker(ca: PathBuf, identity: Option<&CertFiles>) -> ConnectArgs {
    ConnectArgs {
        tls_ca: Some(ca),
        tls_cert: identity.map(|c| c.cert.clone()),
        tls_key: identity.map(|c| c.key.clone()),
        tls_server_name: Some(WORKER_NAME.into()),
        token: None,
    }
}

/// ModelInfo on a generator through `connect`; the error is the full cause chain.
async fn model_info(addr: &str, connect: &ConnectArgs) -> Result<String, (Code, String)> {
    let endpoint = connect
        .endpoint(addr)
        .map_err(|e| (Code::Unknown, e.to_string()))?;
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| (Code::Unavailable, chain(&e)))?;
    GeneratorClient::new(channel)
        .model_info(pb::ModelInfoRequest {})
        .await
        .map(|r| r.into_inner().model_id)
        .map_err(|s| (s.code(), chain(&s)))
}

use ponder_cluster::connect::error_chain as chain;

/// A bare TLS handshake with the worker at `addr` (rustls, blocking), then a read:
/// Ok once the server speaks (its HTTP/2 preface), or the TLS error that ended it.
async fn handshake(addr: &str, ca: &Path, identity: Option<&CertFiles>) -> Result<(), String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    use std::io::{Read, Write};
    ponder_cluster::tls::install_crypto_provider();
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(ca).unwrap())
        .unwrap();
    let builder = rustls::ClientConfig::builder().with_root_certificates(roots);
    let config = match identity {
        Some(c) => builder
            .with_client_auth_cert(
                CertificateDer::pem_file_iter(&c.cert)
                    .unwrap()
                    .map(Result::unwrap)
                    .collect(),
                PrivateKeyDer::from_pem_file(&c.key).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    let addr = addr.to_string();
    tokio::task::spawn_blocking(move || {
        let tcp = std::net::TcpStream::connect(&addr).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let conn = rustls::ClientConnection::new(
            std::sync::Arc::new(config),
            ServerName::try_from(WORKER_NAME).unwrap(),
        )
        .unwrap();
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        tls.flush().map_err(|e| e.to_string())?;
        let mut byte = [0u8; 1];
        match tls.read(&mut byte) {
            Ok(n) if n > 0 => Ok(()),
            Ok(_) => Err("closed without a word".into()),
            Err(e) => Err(e.to_string()),
        }
    })
    .await
    .unwrap()
}

async fn health(addr: &str) -> Result<ServingStatus, tonic::Status> {
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .map_err(|e| tonic::Status::unavailable(chain(&e)))?;
    let mut c = HealthClient::new(channel);
    let r = c
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await?;
    Ok(r.into_inner().status())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_refuses_peers_without_a_cluster_certificate() {
    let pki = Pki::new("cluster");
    let rogue = Pki::new("rogue");
    let server = pki.issue("generator", &[WORKER_NAME]);
    let member = pki.issue("orchestrator", &["ponder-orchestrator"]);
    let stranger = rogue.issue("stranger", &["ponder-orchestrator"]);
    let g = generator(worker_args(&pki, &server)).await;
    let addr = g.node.addr.to_string();

    // A cluster member gets in.
    let ok = model_info(&addr, &to_worker(pki.ca(), Some(&member))).await;
    assert_eq!(ok.as_deref(), Ok(generator_model_id().as_str()), "{ok:?}");

    // Without a certificate, or with one another CA signed, the worker ends the TLS
    // handshake with an alert (CertificateRequired, UnknownCA) and closes.
    for (who, identity, alert) in [
        (
            "no certificate",
            None,
            "received fatal alert: CertificateRequired",
        ),
        (
            "another CA's certificate",
            Some(&stranger),
            "received fatal alert: UnknownCA",
        ),
    ] {
        let tls = handshake(&addr, &pki.ca(), identity).await;
        assert_eq!(tls, Err(alert.to_string()), "{who}");
        // A gRPC client has finished its side of a TLS 1.3 handshake before the worker
        // checks its certificate, so it sees the refusal on its first call, which
        // tonic reports as UNKNOWN "transport error" (the alert, or a broken pipe or
        // reset) or CANCELLED "connection closed", depending on which of the alert and
        // the close reaches it first. Never an answer.
        for _ in 0..3 {
            let err = model_info(&addr, &to_worker(pki.ca(), identity))
                .await
                .expect_err(who);
            assert!(
                matches!(err.0, Code::Unknown | Code::Cancelled)
                    && err.1.contains("transport error"),
                "{who}: {err:?}"
            );
        }
    }
    assert_eq!(handshake(&addr, &pki.ca(), Some(&member)).await, Ok(()));
    // A plaintext client gets TLS bytes back where it expects HTTP/2 frames: INTERNAL
    // "h2 protocol error" (a frame of invalid size), or the close first, as above.
    let plain = model_info(&addr, &ConnectArgs::default())
        .await
        .expect_err("plaintext");
    assert!(
        (plain.0 == Code::Internal && plain.1.contains("h2 protocol error"))
            || (matches!(plain.0, Code::Unknown | Code::Cancelled)
                && plain.1.contains("transport error")),
        "{plain:?}"
    );

    // Kubelet-style probes: the plaintext health port answers without any certificate;
    // the main port does not.
    let health_addr = g
        .node
        .health_addr
        .expect("--health-listen is bound")
        .to_string();
    assert_eq!(health(&health_addr).await.unwrap(), ServingStatus::Serving);
    assert!(health(&addr).await.is_err());
    g.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_orchestrator_solves_over_mtls_to_its_workers() {
    let pki = Pki::new("cluster");
    let gen_cert = pki.issue("generator", &[WORKER_NAME]);
    let ver_cert = pki.issue("verifier", &[WORKER_NAME]);
    let orch_server = pki.issue("orchestrator-server", &["localhost", "127.0.0.1"]);
    let orch_client = pki.issue("orchestrator-client", &["ponder-orchestrator"]);
    let g = generator(worker_args(&pki, &gen_cert)).await;
    let v = ponder_verifier::start(
        ponder_verifier::VerifierArgs {
            node: worker_args(&pki, &ver_cert),
            model: ModelArgs::new(verifier_model()),
        },
        Metrics::new(),
    )
    .await
    .unwrap();
    let mut args = ponder_orchestrator::OrchestratorArgs::new(NodeArgs {
        tls: TlsArgs {
            tls_cert: Some(orch_server.cert.clone()),
            tls_key: Some(orch_server.key.clone()),
            tls_ca: Some(pki.ca()),
            tls_client_cert: Some(orch_client.cert.clone()),
            tls_client_key: Some(orch_client.key.clone()),
            tls_server_name: Some(WORKER_NAME.into()),
            tls_client_auth: None,
        },
        drain_secs: 1,
        ..NodeArgs::default()
    });
    args.generators = vec![g.node.addr.to_string()];
    args.verifiers = vec![v.node.addr.to_string()];
    let o = tokio::time::timeout(
        Duration::from_secs(60),
        ponder_orchestrator::start(args, Metrics::new()),
    )
    .await
    .expect("the orchestrator reaches its generator over mTLS")
    .unwrap();
    assert!(
        eventually(Duration::from_secs(20), || o
            .registry
            .ready(ponder_cluster::Role::Verifier)
            == 1)
        .await,
        "the verifier answers ModelInfo over mTLS"
    );

    // A client verifies the orchestrator with the cluster CA; no client certificate.
    let connect = ConnectArgs {
        tls_ca: Some(pki.ca()),
        ..ConnectArgs::default()
    };
    let channel = connect
        .endpoint(&o.node.addr.to_string())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let r = OrchestratorClient::new(channel)
        .solve(request("47+38", 4, 1))
        .await
        .expect("solve over TLS")
        .into_inner();
    assert_eq!(r.strategy, "weighted_best_of_n", "the verifier was used");
    assert_eq!(r.answer, "85");
    // Without the CA the client does not trust the orchestrator's certificate.
    let untrusted = ConnectArgs {
        tls_server_name: Some("localhost".into()),
        ..ConnectArgs::default()
    };
    let err = untrusted
        .endpoint(&o.node.addr.to_string())
        .unwrap()
        .connect()
        .await
        .expect_err("an unknown CA");
    assert!(chain(&err).contains("UnknownIssuer"), "{}", chain(&err));
    o.stop().await;
    g.stop().await;
    v.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_orchestrator_refused_by_its_workers_says_why() {
    let pki = Pki::new("cluster");
    let gen_cert = pki.issue("generator", &[WORKER_NAME]);
    let g = generator(worker_args(&pki, &gen_cert)).await;
    // TLS towards the worker (a CA) but no certificate to present.
    let log = pki.dir.join("orchestrator.log");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_ponder"))
        .args(["node", "orchestrator", "--listen", "127.0.0.1:0"])
        .args(["--generators", &g.node.addr.to_string()])
        .arg("--tls-ca")
        .arg(pki.ca())
        .args(["--tls-server-name", WORKER_NAME])
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let said = eventually(Duration::from_secs(20), || {
        std::fs::read_to_string(&log).is_ok_and(|l| l.contains("member still unreachable"))
    })
    .await;
    let _ = child.kill();
    let _ = child.wait();
    let logs = strip_ansi(&std::fs::read_to_string(&log).unwrap());
    assert!(said, "no warning:\n{logs}");
    assert!(
        logs.contains("workers that require mTLS will refuse this orchestrator"),
        "{logs}"
    );
    // The worker refuses in the TLS 1.3 handshake, after the client has sent its
    // finished message: the alert arrives on the connection and fails the call with
    // it, or, when the worker has already closed the socket, the call's write fails.
    assert!(
        logs.contains("CertificateRequired")
            || logs.contains("broken pipe")
            || logs.contains("onnection reset"),
        "the warning names the cause: {logs}"
    );
    g.stop().await;
}

const ALICE: &str = "alice:4f1c2b9e8d7a6f5e4d3c2b1a09f8e7d6";
const ALICE_KEY: &str = "4f1c2b9e8d7a6f5e4d3c2b1a09f8e7d6";
const BOB_KEY: &str = "0a1b2c3d4e5f60718293a4b5c6d7e8f9";

/// An open-membership orchestrator (plaintext, static) in front of `g`, gated by `access`.
async fn gated_orchestrator(
    g: &ModelNode,
    access: ponder_orchestrator::access::AccessArgs,
) -> ponder_orchestrator::OrchestratorNode {
    let mut args = ponder_orchestrator::OrchestratorArgs::new(NodeArgs {
        drain_secs: 1,
        ..NodeArgs::default()
    });
    args.generators = vec![g.node.addr.to_string()];
    args.access = access;
    ponder_orchestrator::start(args, Metrics::new())
        .await
        .unwrap()
}

async fn status_with(addr: &str, token: Option<&str>) -> Result<(), tonic::Status> {
    let connect = ConnectArgs {
        token: token.map(Secret::new),
        ..ConnectArgs::default()
    };
    let channel = connect.endpoint(addr).unwrap().connect().await.unwrap();
    OrchestratorClient::with_interceptor(channel, connect.bearer().unwrap())
        .cluster_status(pb::ClusterStatusRequest {})
        .await
        .map(|_| ())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_keys_gate_the_api_and_rate_limits_answer_resource_exhausted() {
    let g = generator(NodeArgs::default()).await;
    let o = gated_orchestrator(
        &g,
        ponder_orchestrator::access::AccessArgs {
            api_keys: vec![Secret::new(ALICE), Secret::new(BOB_KEY)],
            rate_limit: 0.5,
            rate_burst: Some(3),
            ..Default::default()
        },
    )
    .await;
    let addr = o.node.addr.to_string();

    let missing = status_with(&addr, None).await.unwrap_err();
    assert_eq!(missing.code(), Code::Unauthenticated);
    assert!(
        missing
            .message()
            .contains("requires `authorization: Bearer <key>`"),
        "{}",
        missing.message()
    );
    let wrong = status_with(&addr, Some("ffffffffffffffffffffffffffffffff"))
        .await
        .unwrap_err();
    assert_eq!(wrong.code(), Code::Unauthenticated);
    assert_eq!(wrong.message(), "invalid API key");
    // Health needs no key (kubelet probes carry none).
    assert_eq!(health(&addr).await.unwrap(), ServingStatus::Serving);

    // alice's bucket: a burst of 3, then RESOURCE_EXHAUSTED naming the limit; refused
    // calls above did not spend her tokens, and bob's bucket is his own.
    for i in 0..3 {
        status_with(&addr, Some(ALICE_KEY))
            .await
            .unwrap_or_else(|e| panic!("call {i} within the burst: {e:?}"));
    }
    let limited = status_with(&addr, Some(ALICE_KEY)).await.unwrap_err();
    assert_eq!(limited.code(), Code::ResourceExhausted);
    assert!(
        limited.message().starts_with(
            "rate limit exceeded for API key alice: at most 0.5 requests per second with \
             bursts of 3; retry in"
        ),
        "{}",
        limited.message()
    );
    status_with(&addr, Some(BOB_KEY)).await.unwrap();
    o.stop().await;
    g.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_keys_the_rate_limit_is_per_peer_address() {
    let g = generator(NodeArgs::default()).await;
    let o = gated_orchestrator(
        &g,
        ponder_orchestrator::access::AccessArgs {
            rate_limit: 1.0,
            rate_burst: Some(2),
            ..Default::default()
        },
    )
    .await;
    let addr = o.node.addr.to_string();
    status_with(&addr, None).await.unwrap();
    status_with(&addr, None).await.unwrap();
    let limited = status_with(&addr, None).await.unwrap_err();
    assert_eq!(limited.code(), Code::ResourceExhausted);
    assert!(
        limited
            .message()
            .starts_with("rate limit exceeded for client 127.0.0.1: at most 1 requests"),
        "{}",
        limited.message()
    );
    o.stop().await;
    g.stop().await;
}

/// etcd with TLS and authentication: a `ponder` user that may read and write /ponder/.
async fn secure_etcd(pki: &Pki, password: &str) -> TlsEtcd {
    let etcd = TlsEtcd::start(pki);
    let admin = EtcdConfig::new(
        vec![etcd.client_url.clone()],
        &EtcdAccessArgs {
            etcd_ca: Some(pki.ca()),
            ..Default::default()
        },
    )
    .unwrap();
    let mut c = admin.connect().await.expect("etcd over TLS");
    c.user_add("root", "root-password-for-the-test", None)
        .await
        .unwrap();
    c.user_grant_role("root", "root").await.unwrap();
    c.role_add("ponder").await.unwrap();
    c.role_grant_permission(
        "ponder",
        etcd_client::Permission::read_write("/ponder/").with_prefix(),
    )
    .await
    .unwrap();
    c.user_add("ponder", password, None).await.unwrap();
    c.user_grant_role("ponder", "ponder").await.unwrap();
    c.auth_enable().await.unwrap();
    etcd
}

fn etcd_access(pki: &Pki, user: Option<&str>, password: Option<&str>) -> EtcdAccessArgs {
    EtcdAccessArgs {
        etcd_ca: Some(pki.ca()),
        etcd_user: user.map(str::to_string),
        etcd_password: password.map(Secret::new),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_over_tls_with_a_password_carries_registration_and_discovery() {
    let pki = Pki::new("etcd");
    let password = "etcd-password-7c1e9a";
    let etcd = secure_etcd(&pki, password).await;
    let endpoints = vec![etcd.client_url.clone()];

    // A wrong password or none is refused by etcd; TLS without the CA fails.
    let wrong = EtcdConfig::new(
        endpoints.clone(),
        &etcd_access(&pki, Some("ponder"), Some("nope")),
    )
    .unwrap();
    assert!(wrong.connect().await.is_err(), "a wrong password");
    let mut anonymous = EtcdConfig::new(endpoints.clone(), &etcd_access(&pki, None, None))
        .unwrap()
        .connect()
        .await
        .unwrap();
    assert!(anonymous.get("/ponder/", None).await.is_err(), "no user");
    let no_ca = EtcdConfig::new(endpoints.clone(), &EtcdAccessArgs::default()).unwrap_err();
    assert_eq!(
        no_ca.to_string(),
        format!(
            "etcd endpoint {} is https:// but no --etcd-ca is given",
            endpoints[0]
        )
    );

    let node = || NodeArgs {
        etcd: endpoints.clone(),
        etcd_access: etcd_access(&pki, Some("ponder"), Some(password)),
        cluster: "secure".into(),
        lease_ttl: 2,
        drain_secs: 1,
        ..NodeArgs::default()
    };
    let g = generator(node()).await;
    let o = tokio::time::timeout(
        Duration::from_secs(60),
        ponder_orchestrator::start(
            ponder_orchestrator::OrchestratorArgs::new(node()),
            Metrics::new(),
        ),
    )
    .await
    .expect("the orchestrator discovers the generator through the secured etcd")
    .unwrap();
    let mut c = client(o.node.addr).await;
    let r = c.solve(request("47+38", 2, 0)).await.unwrap().into_inner();
    assert_eq!(r.answer, "85");
    o.stop().await;
    g.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_appear_in_logs() {
    let pki = Pki::new("cluster");
    let etcd_password = "etcd-secret-5d2f8b1c9e";
    let etcd = secure_etcd(&pki, etcd_password).await;
    let gen_cert = pki.issue("generator", &[WORKER_NAME]);
    let orch_server = pki.issue("orchestrator-server", &["127.0.0.1"]);
    let orch_client = pki.issue("orchestrator-client", &["ponder-orchestrator"]);
    let keys_file = pki.dir.join("api-keys");
    std::fs::write(&keys_file, format!("# clients\n{ALICE}\n")).unwrap();

    // The generator in-process, registering through the secured etcd.
    let mut gen_args = worker_args(&pki, &gen_cert);
    gen_args.etcd = vec![etcd.client_url.clone()];
    gen_args.etcd_access = etcd_access(&pki, Some("ponder"), Some(etcd_password));
    let g = generator(gen_args).await;

    // The orchestrator as a process configured by environment, every secret in use,
    // logging everything.
    let log = pki.dir.join("orchestrator.log");
    let path = |p: &PathBuf| p.to_str().unwrap().to_string();
    let env = [
        ("RUST_LOG", "trace".to_string()),
        ("PONDER_LISTEN", "127.0.0.1:0".into()),
        ("PONDER_ETCD", etcd.client_url.clone()),
        ("PONDER_ETCD_CA", path(&pki.ca())),
        ("PONDER_ETCD_USER", "ponder".into()),
        ("PONDER_ETCD_PASSWORD", etcd_password.into()),
        ("PONDER_TLS_CERT", path(&orch_server.cert)),
        ("PONDER_TLS_KEY", path(&orch_server.key)),
        ("PONDER_TLS_CA", path(&pki.ca())),
        ("PONDER_TLS_CLIENT_CERT", path(&orch_client.cert)),
        ("PONDER_TLS_CLIENT_KEY", path(&orch_client.key)),
        ("PONDER_TLS_SERVER_NAME", WORKER_NAME.into()),
        ("PONDER_API_KEYS_FILE", path(&keys_file)),
        ("PONDER_API_KEYS", format!("bob:{BOB_KEY}")),
    ];
    let (proc, addr) = spawn_node_logged("orchestrator", &env, &log);

    // The CLI over TLS with alice's key from PONDER_TOKEN; then a wrong key.
    let ponder = |token: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_ponder"))
            .args([
                "solve", "47+38", "--budget", "2", "--addr", &addr, "--tls-ca",
            ])
            .arg(pki.ca())
            .env("PONDER_TOKEN", token)
            .output()
            .unwrap()
    };
    let ok = ponder(ALICE_KEY);
    let stdout = String::from_utf8_lossy(&ok.stdout);
    assert!(
        ok.status.success() && stdout.contains("answer:    85"),
        "{stdout}{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let guess = "guessed-key-9b8a7c6d5e4f3a2b1c0d";
    let refused = ponder(guess);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success()
            && stderr.contains("UNAUTHENTICATED: invalid API key")
            && refused.status.code() == Some(3),
        "{stderr}"
    );
    status_with_tls(&addr, &pki, BOB_KEY).await;

    // Stop it gracefully (SIGTERM) so its shutdown is logged too.
    let pid = proc.0.id().to_string();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    let mut proc = proc;
    let _ = tokio::task::spawn_blocking(move || proc.0.wait()).await;

    let logs = strip_ansi(&std::fs::read_to_string(&log).unwrap());
    assert!(
        logs.contains(" TRACE ")
            && logs.contains("API keys required")
            && logs.contains(r#"reason="unauthenticated""#)
            && logs.contains("ponder::access")
            && logs.contains("client=API key alice"),
        "the log should show the run:\n{}",
        &logs[..logs.len().min(4000)]
    );
    let mut secrets: Vec<(String, String)> = vec![
        ("alice's key".into(), ALICE_KEY.into()),
        ("bob's key".into(), BOB_KEY.into()),
        ("the refused key".into(), guess.into()),
        ("the etcd password".into(), etcd_password.into()),
    ];
    for (what, file) in [
        ("the server key", &orch_server.key),
        ("the client key", &orch_client.key),
    ] {
        for line in pem_body_lines(file) {
            secrets.push((what.into(), line));
        }
    }
    for (what, secret) in secrets {
        assert!(!logs.contains(&secret), "{what} appears in the log");
    }
    g.stop().await;
}

/// The text without terminal colour codes (`ESC [ ... m`), so a secret split by them
/// would still be found.
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// ClusterStatus over TLS with `token`; must succeed.
async fn status_with_tls(addr: &str, pki: &Pki, token: &str) {
    let connect = ConnectArgs {
        tls_ca: Some(pki.ca()),
        token: Some(Secret::new(token)),
        ..ConnectArgs::default()
    };
    let channel = connect.endpoint(addr).unwrap().connect().await.unwrap();
    OrchestratorClient::with_interceptor(channel, connect.bearer().unwrap())
        .cluster_status(pb::ClusterStatusRequest {})
        .await
        .expect("bob's key from PONDER_API_KEYS is accepted");
}
