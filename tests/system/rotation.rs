//! Certificates rotate without a restart (docs/security.md, "Rotation"): a node serving
//! TLS picks up rewritten certificate files for new connections, and keeps its identity
//! when the new files do not load.

use crate::common::security::Pki;
use ponder_cluster::node::{Node, NodeArgs};
use ponder_cluster::tls::{ClientAuth, TlsArgs};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// The certificate a TLS handshake with `addr` is answered with.
async fn served_certificate(addr: SocketAddr, ca: &Path) -> Vec<u8> {
    ponder_cluster::tls::install_crypto_provider();
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

fn first_certificate(path: &Path) -> Vec<u8> {
    CertificateDer::pem_file_iter(path)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rewritten_certificate_is_served_without_a_restart() {
    let pki = Pki::new("rotation");
    let old = pki.issue("node", &["localhost"]);
    let args = NodeArgs {
        tls: TlsArgs {
            tls_cert: Some(old.cert.clone()),
            tls_key: Some(old.key.clone()),
            ..TlsArgs::default()
        },
        ..NodeArgs::default()
    };
    let node = Node::start(
        args,
        "ponder.v1.Generator",
        Default::default(),
        ClientAuth::None,
    )
    .await
    .unwrap();
    let mut reloads = node.tls_reloads.clone().expect("a TLS node counts reloads");
    let before = first_certificate(&old.cert);
    assert_eq!(served_certificate(node.addr, &pki.ca()).await, before);

    // The same files rewritten, as cert-manager or the chart's re-issue does.
    let new = pki.issue("node", &["localhost", "rotated.example"]);
    assert_eq!(new.cert, old.cert);
    let after = first_certificate(&new.cert);
    assert_ne!(after, before);
    tokio::time::timeout(Duration::from_secs(10), reloads.wait_for(|n| *n >= 1))
        .await
        .expect("the rewritten files were not reloaded within 10 s")
        .unwrap();
    assert_eq!(served_certificate(node.addr, &pki.ca()).await, after);

    // A half-written or wrong file is not served: the last good identity stays.
    std::fs::write(&new.cert, "-----BEGIN CERTIFICATE-----\ngarbage\n").unwrap();
    tokio::time::sleep(ponder_cluster::tls_server::POLL_EVERY * 3).await;
    assert_eq!(*reloads.borrow(), 1);
    assert_eq!(served_certificate(node.addr, &pki.ca()).await, after);
    node.stop().await;
}

/// The client side rotates too (docs/security.md, "Rotation"): an orchestrator whose
/// client certificate a worker refuses is let in once the certificate file is rewritten
/// with one the worker trusts, without a restart: the membership dials its members
/// again with the reloaded files. Without the reload its channel would present the
/// refused certificate forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rewritten_client_certificate_reaches_the_workers_without_a_restart() {
    use crate::common::eventually;
    use crate::common::security::{generator, worker_args};
    use ponder_cluster::member::MemberRecord;
    use ponder_cluster::membership::Registry;
    use ponder_cluster::Role;

    let cluster = Pki::new("client-rotation");
    let stranger = Pki::new("client-rotation-stranger");
    // A generator serving mTLS: callers need a certificate the cluster CA signed.
    let worker_cert = cluster.issue("worker", &["localhost"]);
    let worker = generator(worker_args(&cluster, &worker_cert)).await;

    // The orchestrator's client certificate files hold a stranger's certificate at first.
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("client.pem"), dir.path().join("client.key"));
    let refused = stranger.issue("orchestrator", &["ponder-orchestrator"]);
    std::fs::copy(&refused.cert, &cert).unwrap();
    std::fs::copy(&refused.key, &key).unwrap();
    let tls = TlsArgs {
        tls_ca: Some(cluster.ca()),
        tls_client_cert: Some(cert.clone()),
        tls_client_key: Some(key.clone()),
        tls_server_name: Some("localhost".into()),
        ..TlsArgs::default()
    };
    let watched = tls.watched_peers().unwrap().expect("TLS is on");
    let registry = Registry::with_tls(Some((**watched.value.borrow()).clone()));
    registry.follow_tls(watched.value.clone());
    registry.upsert(MemberRecord {
        role: Role::Generator,
        instance_id: "g1".into(),
        address: worker.node.addr.to_string(),
        model_id: String::new(),
        capacity: 8,
    });
    assert!(
        !eventually(Duration::from_secs(3), || registry.ready(Role::Generator)
            == 1)
        .await,
        "the worker accepted a certificate its CA did not sign"
    );

    // Rotate: the files now hold a certificate the cluster CA signed.
    let trusted = cluster.issue("orchestrator", &["ponder-orchestrator"]);
    std::fs::copy(&trusted.cert, &cert).unwrap();
    std::fs::copy(&trusted.key, &key).unwrap();
    assert!(
        eventually(Duration::from_secs(15), || registry.ready(Role::Generator)
            == 1)
        .await,
        "the rotated client certificate never reached the worker"
    );
    assert_eq!(*watched.reloads.borrow(), 1);
    worker.stop().await;
}
