//! Security test support: a throw-away PKI made with rcgen, a TLS etcd with users, and
//! node processes whose logs are kept for inspection.

use super::{free_port, Proc};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A certificate and its key, as PEM files.
#[derive(Clone, Debug)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A CA in its own temporary directory; issues leaf certificates into it.
pub struct Pki {
    pub dir: PathBuf,
    issuer: Issuer<'static, KeyPair>,
}

impl Pki {
    pub fn new(name: &str) -> Pki {
        let dir = std::env::temp_dir().join(format!(
            "ponder-pki-{name}-{}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{name} CA"));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).unwrap();
        std::fs::write(dir.join("ca.crt"), cert.pem()).unwrap();
        Pki {
            dir,
            issuer: Issuer::new(params, key),
        }
    }

    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }

    /// A certificate for `names` (DNS names or IP addresses), usable as a server and as
    /// a client certificate, written as `<stem>.crt` and `<stem>.key`.
    pub fn issue(&self, stem: &str, names: &[&str]) -> CertFiles {
        let key = KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        params.distinguished_name.push(DnType::CommonName, stem);
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let files = CertFiles {
            cert: self.dir.join(format!("{stem}.crt")),
            key: self.dir.join(format!("{stem}.key")),
        };
        std::fs::write(&files.cert, cert.pem()).unwrap();
        std::fs::write(&files.key, key.serialize_pem()).unwrap();
        files
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The base64 body lines of a PEM file: what a leaked key would look like in a log.
pub fn pem_body_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with("-----") && l.len() >= 16)
        .map(str::to_string)
        .collect()
}

/// A real etcd serving clients over TLS (certificate for 127.0.0.1 from `pki`).
pub struct TlsEtcd {
    _proc: Proc,
    pub client_url: String,
    dir: PathBuf,
}

impl TlsEtcd {
    pub fn start(pki: &Pki) -> TlsEtcd {
        let server = pki.issue("etcd", &["127.0.0.1", "localhost"]);
        let dir = pki.dir.join("etcd-data");
        let client_url = format!("https://127.0.0.1:{}", free_port());
        let peer_url = format!("http://127.0.0.1:{}", free_port());
        let bin = std::env::var("PONDER_ETCD_BIN").unwrap_or_else(|_| "etcd".into());
        let child = Command::new(&bin)
            .args(["--name", "ponder-tls", "--data-dir"])
            .arg(&dir)
            .args(["--listen-client-urls", &client_url])
            .args(["--advertise-client-urls", &client_url])
            .args(["--listen-peer-urls", &peer_url])
            .args(["--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &format!("ponder-tls={peer_url}")])
            .arg("--cert-file")
            .arg(&server.cert)
            .arg("--key-file")
            .arg(&server.key)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start `{bin}` ({e}); install etcd or set PONDER_ETCD_BIN")
            });
        let port = client_url.rsplit(':').next().unwrap().to_string();
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(format!("127.0.0.1:{port}")).is_err() {
            assert!(Instant::now() < deadline, "etcd did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        TlsEtcd {
            _proc: Proc(child),
            client_url,
            dir,
        }
    }
}

impl Drop for TlsEtcd {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Starts `ponder node <role>` configured by `env` only (as Kubernetes does), with its
/// stderr (the logs) written to `log`; waits for its "<role> listening on" line.
pub fn spawn_node_logged(role: &str, env: &[(&str, String)], log: &Path) -> (Proc, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ponder"));
    cmd.arg("node")
        .arg(role)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(log).unwrap());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawning ponder node");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let prefix = format!("{role} listening on ");
    let addr = loop {
        let Some(Ok(line)) = lines.next() else {
            let logs = std::fs::read_to_string(log).unwrap_or_default();
            panic!("{role} exited before it was ready; its log:\n{logs}");
        };
        if let Some(a) = line.strip_prefix(&prefix) {
            break a.trim().to_string();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    (Proc(child), addr)
}

/// Node flags for a worker that serves mTLS with `cert` (callers need a certificate
/// `pki` signed) and a plaintext health port.
pub fn worker_args(pki: &Pki, cert: &CertFiles) -> ponder_cluster::node::NodeArgs {
    use ponder_cluster::node::NodeArgs;
    use ponder_cluster::tls::TlsArgs;
    NodeArgs {
        tls: TlsArgs {
            tls_cert: Some(cert.cert.clone()),
            tls_key: Some(cert.key.clone()),
            tls_ca: Some(pki.ca()),
            ..TlsArgs::default()
        },
        health_listen: Some("127.0.0.1:0".parse().unwrap()),
        drain_secs: 1,
        ..NodeArgs::default()
    }
}

/// A generator node on the bundled default generator, in this process.
pub async fn generator(node: ponder_cluster::node::NodeArgs) -> ponder_worker::node::ModelNode {
    ponder_generator::start(
        ponder_generator::GeneratorArgs {
            node,
            model: ponder_worker::node::ModelArgs::new(super::generator_model()),
        },
        ponder_cluster::metrics::Metrics::new(),
    )
    .await
    .expect("the generator starts")
}
