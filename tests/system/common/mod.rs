//! Helpers for the cross-service tests: the bundled models, node processes, etcd.
#![allow(dead_code)]

pub mod security;

use ponder_cli::embedded::{EmbeddedCluster, EmbeddedConfig};
use ponder_proto::v1 as pb;
use ponder_proto::v1::orchestrator_client::OrchestratorClient;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tonic::transport::Channel;

/// The bundled models as `ponder up` resolves them (models/manifest.json, digests
/// checked); PONDER_MODELS points the tests at another models directory.
pub fn bundled() -> ponder_cli::models::Bundled {
    let explicit = std::env::var_os("PONDER_MODELS").map(PathBuf::from);
    ponder_cli::models::bundled(explicit.as_deref(), None).expect("the bundled models")
}

/// A level-6 question whose solution is about 300 tokens: a thousand samples of it take
/// any bundled generator well over the few seconds the deadline tests allow.
pub const LONG_QUESTION: &str = "(98+(9+6))*((19-3)*5)+5";

pub fn generator_model() -> PathBuf {
    bundled().generator
}

pub fn verifier_model() -> PathBuf {
    bundled()
        .verifier
        .expect("the bundled models have a verifier")
}

/// What ModelInfo reports as the default generator's id (its directory's name).
pub fn generator_model_id() -> String {
    let path = generator_model();
    path.file_name().unwrap().to_string_lossy().into_owned()
}

/// The embedded cluster on ephemeral ports with static membership.
pub async fn embedded(generators: usize) -> EmbeddedCluster {
    EmbeddedCluster::start(embedded_config(generators))
        .await
        .expect("the embedded cluster starts")
}

/// What [`embedded`] starts.
pub fn embedded_config(generators: usize) -> EmbeddedConfig {
    EmbeddedConfig {
        orchestrator_addr: "127.0.0.1:0".parse().unwrap(),
        generator_model: generator_model(),
        other_generator_models: vec![],
        verifier_model: Some(verifier_model()),
        policy: None,
        generators,
        etcd: vec![],
        cluster: "test".into(),
        metrics_addr: None,
        gateway_addr: None,
        control: Default::default(),
        record_calls: None,
        kv_cache_dtype: Default::default(),
        quantize: Default::default(),
    }
}

pub async fn client(addr: impl std::fmt::Display) -> OrchestratorClient<Channel> {
    OrchestratorClient::connect(format!("http://{addr}"))
        .await
        .expect("connecting to the orchestrator")
}

pub fn request(question: &str, generations: u32, seed: u64) -> pb::SolveRequest {
    pb::SolveRequest {
        question: question.into(),
        budget: Some(pb::Budget {
            max_generations: generations,
            max_tokens: 0,
            max_flops: 0.0,
            min_generations: 0,
        }),
        strategy: None,
        seed,
        temperature: 0.0,
        aggregation: String::new(),
        strict: false,
        model_id: String::new(),
        budget_mode: 0,
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A child process killed when dropped.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `ponder node <role> ...` and waits for its "<role> listening on <addr>" line.
pub fn spawn_node(role: &str, args: &[&str]) -> (Proc, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ponder"))
        .arg("node")
        .arg(role)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawning ponder node");
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let prefix = format!("{role} listening on ");
    let addr = loop {
        let line = lines
            .next()
            .unwrap_or_else(|| panic!("{role} exited before it was ready"))
            .unwrap();
        if let Some(a) = line.strip_prefix(&prefix) {
            break a.trim().to_string();
        }
    };
    // Keep draining stdout so the child never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    (Proc(child), addr)
}

/// Starts `ponder node <role>` serving `model`, registered in etcd at `etcd_url` under
/// `cluster`, with `extra` flags; returns the process and its listen address.
pub fn spawn_etcd_node(
    role: &str,
    model: &std::path::Path,
    etcd_url: &str,
    cluster: &str,
    extra: &[&str],
) -> (Proc, String) {
    let model = model.to_str().expect("a UTF-8 model path");
    let mut args = vec!["--model", model, "--etcd", etcd_url, "--cluster", cluster];
    args.extend_from_slice(extra);
    spawn_node(role, &args)
}

/// A real etcd server on ephemeral loopback ports, with its own data directory.
pub struct Etcd {
    pub proc: Option<Proc>,
    pub client_url: String,
    peer_url: String,
    dir: PathBuf,
}

impl Etcd {
    pub fn start() -> Etcd {
        let dir = std::env::temp_dir().join(format!(
            "ponder-etcd-{}-{}",
            std::process::id(),
            free_port()
        ));
        let mut e = Etcd {
            proc: None,
            client_url: format!("http://127.0.0.1:{}", free_port()),
            peer_url: format!("http://127.0.0.1:{}", free_port()),
            dir,
        };
        e.restart();
        e
    }

    /// (Re)starts the server on the same ports and data directory; waits until it serves.
    pub fn restart(&mut self) {
        let bin = std::env::var("PONDER_ETCD_BIN").unwrap_or_else(|_| "etcd".into());
        let child = Command::new(&bin)
            .args([
                "--name",
                "ponder-test",
                "--data-dir",
                self.dir.to_str().unwrap(),
                "--listen-client-urls",
                &self.client_url,
                "--advertise-client-urls",
                &self.client_url,
                "--listen-peer-urls",
                &self.peer_url,
                "--initial-advertise-peer-urls",
                &self.peer_url,
                "--initial-cluster",
                &format!("ponder-test={}", self.peer_url),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start `{bin}` ({e}); install etcd (Debian: apt-get install etcd-server) or set PONDER_ETCD_BIN")
            });
        self.proc = Some(Proc(child));
        let port = self.client_url.rsplit(':').next().unwrap().to_string();
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(format!("127.0.0.1:{port}")).is_err() {
            assert!(Instant::now() < deadline, "etcd did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn stop(&mut self) {
        self.proc = None;
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.proc = None;
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Polls `cond` until true or `timeout`.
pub async fn eventually(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cond()
}

/// The CI's Python (.venv, with the pinned packages), or PONDER_PYTHON.
pub fn python() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let python = std::env::var("PONDER_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root.join(".venv/bin/python"));
    assert!(
        python.is_file(),
        "{} not found: run `bash .ci/run` once (it makes .venv with the pinned packages) or set PONDER_PYTHON",
        python.display()
    );
    python
}

/// Runs a script of tests/python with `args` in the CI's venv (.venv, or PONDER_PYTHON);
/// its stdout, once it has succeeded.
pub async fn python_script(name: &str, args: Vec<String>) -> String {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = tokio::process::Command::new(python())
        .arg(root.join("tests/python").join(name))
        .args(args)
        .current_dir(&root)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{name} failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}
