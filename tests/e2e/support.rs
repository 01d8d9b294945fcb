//! Starting replicas and targets, and waiting on them with bounded polls.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;

/// reqwest is built without a default TLS provider (the binary picks ring); tests do the same.
pub(crate) fn init_tls() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A port that was free a moment ago.
pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The binary under test.
pub(crate) fn arrowhead_bin() -> &'static str {
    env!("CARGO_BIN_EXE_arrowhead")
}

/// Polls `f` every 100 ms until it returns `Some`, failing after `timeout`.
pub(crate) async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A running replica, killed on drop.
pub(crate) struct Replica {
    child: Option<Child>,
    pub(crate) http: SocketAddr,
    pub(crate) flight: SocketAddr,
    pub(crate) dir: tempfile::TempDir,
}

impl Replica {
    /// Starts a replica with `config` (None: the embedded default) and waits until it is ready.
    pub(crate) async fn start(config: Option<&str>) -> Replica {
        let dir = tempfile::tempdir().unwrap();
        if let Some(config) = config {
            std::fs::write(dir.path().join("arrowhead.yml"), config).unwrap();
        }
        Replica::start_in(dir).await
    }

    /// Kills the replica if it runs (SIGKILL), then starts a new one on the same data
    /// directory and configuration, on new ports.
    pub(crate) async fn restart(mut self) -> Replica {
        self.stop("KILL", Duration::from_secs(10));
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap());
        Replica::start_in(dir).await
    }

    /// Starts a replica in `dir`, with `dir/arrowhead.yml` when it exists.
    pub(crate) async fn start_in(dir: tempfile::TempDir) -> Replica {
        init_tls();
        let http: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let flight: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let mut cmd = Command::new(arrowhead_bin());
        cmd.arg("serve")
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .arg("--http-listen")
            .arg(http.to_string())
            .arg("--flight-listen")
            .arg(flight.to_string())
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(dir.path().join("stderr.log"))
                    .unwrap(),
            );
        let config = dir.path().join("arrowhead.yml");
        if config.exists() {
            cmd.arg("--config").arg(&config);
        }
        let child = cmd.spawn().expect("start arrowhead");
        let mut replica = Replica {
            child: Some(child),
            http,
            flight,
            dir,
        };
        let url = format!("http://{http}/-/ready");
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = client.get(&url).send().await
                && r.status().is_success()
            {
                break;
            }
            if let Some(status) = replica.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("arrowhead exited early ({status}):\n{}", replica.log());
            }
            assert!(
                Instant::now() < deadline,
                "replica not ready in 30s:\n{}",
                replica.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        replica
    }

    /// The replica's own `/metrics` page.
    pub(crate) async fn metrics_text(&self) -> String {
        reqwest::get(format!("http://{}/metrics", self.http))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// The process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// The Flight SQL endpoint URL.
    pub(crate) fn url(&self) -> String {
        format!("grpc://{}", self.flight)
    }

    /// The replica's stderr so far.
    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
    }

    /// The data directory.
    pub(crate) fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Runs SQL through the project's Flight SQL client; errors are returned.
    pub(crate) async fn try_query(
        &self,
        sql: &str,
    ) -> Result<(SchemaRef, Vec<RecordBatch>), query::client::ClientError> {
        query::client::query_with_failover(&[self.url()], None, None, sql).await
    }

    /// Polls until `sql` (a single count) returns at least `min`.
    pub(crate) async fn wait_for_count(&self, sql: &str, min: i64, timeout: Duration) {
        use arrow::array::AsArray;
        eventually(sql, timeout, || async {
            let (_, b) = self.try_query(sql).await.ok()?;
            let n = b
                .first()?
                .column(0)
                .as_primitive::<arrow::datatypes::Int64Type>()
                .value(0);
            (n >= min).then_some(())
        })
        .await
    }

    /// Runs SQL through the project's Flight SQL client.
    pub(crate) async fn query(&self, sql: &str) -> (SchemaRef, Vec<RecordBatch>) {
        query::client::query_with_failover(&[self.url()], None, None, sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}\nreplica log:\n{}", self.log()))
    }

    /// Sends `signal` and waits (bounded) for the exit status.
    pub(crate) fn stop(&mut self, signal: &str, timeout: Duration) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return Some(status);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A real `prometheus-node-exporter` on a free loopback port, killed on drop.
pub(crate) struct NodeExporter {
    child: Child,
    pub(crate) address: SocketAddr,
}

impl NodeExporter {
    pub(crate) async fn start() -> NodeExporter {
        init_tls();
        let bin = std::env::var("ARROWHEAD_NODE_EXPORTER")
            .unwrap_or_else(|_| "prometheus-node-exporter".to_string());
        let address: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let child = Command::new(&bin)
            .arg(format!("--web.listen-address={address}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {bin}: {e}. Install Debian's prometheus-node-exporter \
                     (.ci/run does) or set ARROWHEAD_NODE_EXPORTER"
                )
            });
        let exporter = NodeExporter { child, address };
        let url = format!("http://{address}/metrics");
        eventually(
            "node exporter to answer",
            Duration::from_secs(20),
            || async {
                reqwest::get(&url)
                    .await
                    .ok()
                    .filter(|r| r.status().is_success())
                    .map(|_| ())
            },
        )
        .await;
        exporter
    }
}

impl Drop for NodeExporter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The Python interpreter that has `adbc_driver_flightsql` and `pyarrow`.
pub(crate) fn python() -> PathBuf {
    if let Ok(p) = std::env::var("ARROWHEAD_TEST_PYTHON") {
        return PathBuf::from(p);
    }
    let home = std::env::var("HOME").unwrap_or_default();
    let venv = Path::new(&home).join(".cache/arrowhead-venv/bin/python");
    if venv.exists() {
        return venv;
    }
    PathBuf::from("python3")
}

/// Runs `arrowhead ARGS...`: (success, stdout, stderr).
pub(crate) fn run_cli(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(arrowhead_bin()).args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs one of the Python test clients in `tests/` with the venv's interpreter; panics with
/// both outputs (and `context`) unless it succeeds. Returns stdout.
pub(crate) fn run_python(script: &str, args: &[&str], context: &str) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join(script);
    let py = python();
    let out = Command::new(&py)
        .arg(&script)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", py.display()));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{} failed (python: {}; .ci/run installs adbc-driver-flightsql, pyarrow and duckdb \
         into $HOME/.cache/arrowhead-venv):\nstdout:\n{stdout}\nstderr:\n{}\n{context}",
        script.display(),
        py.display(),
        String::from_utf8_lossy(&out.stderr),
    );
    stdout
}

/// A self-made CA (`ca.crt`) and a server certificate for 127.0.0.1 signed by it
/// (`server.crt`, `server.key`) in `dir`, made with the openssl CLI.
pub(crate) fn make_server_certs(dir: &Path) {
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl (Debian: openssl) is needed for the TLS tests");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    openssl(
        &[
            &["req", "-x509"],
            &ec[..],
            &[
                "-keyout",
                "ca.key",
                "-out",
                "ca.crt",
                "-days",
                "2",
                "-subj",
                "/CN=arrowhead-e2e-ca",
            ],
        ]
        .concat(),
    );
    openssl(
        &[
            &["req"],
            &ec[..],
            &[
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
                "-subj",
                "/CN=localhost",
                "-addext",
                "subjectAltName=IP:127.0.0.1",
            ],
        ]
        .concat(),
    );
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.crt",
        "-days",
        "2",
        "-copy_extensions",
        "copy",
    ]);
}
