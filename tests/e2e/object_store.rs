//! `storage.object_store` against a real S3 server: `s3s-fs` (an S3 implementation over a
//! directory, from crates.io; `.ci/run` installs it), reached over HTTP on loopback with
//! signed requests.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use arrow::array::AsArray;
use arrow::datatypes::Int64Type;

use crate::support::{Replica, free_port};

/// The `s3s-fs` binary: `ARROWHEAD_S3S_FS`, else where `.ci/run` installs it.
fn s3s_fs() -> Option<PathBuf> {
    if let Ok(path) = std::env::var("ARROWHEAD_S3S_FS") {
        return Some(PathBuf::from(path));
    }
    let home = std::env::var("HOME").ok()?;
    let path = Path::new(&home).join(".cache/arrowhead-tools/bin/s3s-fs");
    path.exists().then_some(path)
}

struct S3Server {
    child: Child,
    port: u16,
    root: tempfile::TempDir,
}

impl S3Server {
    fn start(binary: &Path) -> S3Server {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("arrowhead")).unwrap();
        let port = free_port();
        let child = Command::new(binary)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--access-key", "AKIDTEST", "--secret-key", "secrettest"])
            .arg(root.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start s3s-fs");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "s3s-fs did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
        S3Server { child, port, root }
    }

    /// Block ids with a `meta.json` in the bucket's `blocks/` prefix.
    fn blocks(&self) -> Vec<String> {
        let dir = self.root.path().join("arrowhead/blocks");
        let mut ids: Vec<String> = std::fs::read_dir(&dir)
            .map(|d| {
                d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .filter(|id| dir.join(id).join("meta.json").exists())
                    .collect()
            })
            .unwrap_or_default();
        ids.sort();
        ids
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn scalar(replica: &Replica, sql: &str) -> i64 {
    let (_, b) = replica.query(sql).await;
    b[0].column(0).as_primitive::<Int64Type>().value(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocks_move_to_s3_and_are_served_from_it_across_a_restart() {
    let Some(binary) = s3s_fs() else {
        eprintln!("skipped: no s3s-fs (set ARROWHEAD_S3S_FS or run .ci/run, which installs it)");
        return;
    };
    let s3 = S3Server::start(&binary);
    // Retention of 100 s caps compaction windows at 10 s, below 12 cuts: blocks are final as
    // soon as they are cut, and move to the bucket at once.
    let config = format!(
        "global: {{scrape_interval: 1s}}\n\
         storage:\n  block_duration: 2s\n  retention: 100s\n  object_store:\n    \
         url: s3://arrowhead/blocks\n    options:\n      endpoint: http://127.0.0.1:{}\n      \
         region: us-east-1\n      access_key_id: AKIDTEST\n      secret_access_key: secrettest\n      \
         allow_http: \"true\"\n",
        s3.port
    );
    let replica = Replica::start(Some(&config)).await;
    // Ten seconds of samples up to now: the next cuts put them into blocks.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let samples: Vec<(i64, f64)> = (0..100)
        .map(|i| (now - 10_000 + i * 100, i as f64))
        .collect();
    let status = reqwest::Client::new()
        .post(format!("http://{}/api/v1/write", replica.http))
        .header("Content-Encoding", "snappy")
        .header("Content-Type", "application/x-protobuf")
        .body(crate::remote_write::request("s3_test", &samples))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status.as_u16(), 204);
    replica
        .wait_for_count(
            "SELECT count(*) FROM system.blocks WHERE state = 'remote'",
            1,
            Duration::from_secs(30),
        )
        .await;
    let in_bucket = s3.blocks();
    assert!(!in_bucket.is_empty());
    // The secret never reaches the log.
    assert!(!replica.log().contains("secrettest"));

    // What the bucket holds, counted before and after a kill -9 and restart.
    let bound = scalar(
        &replica,
        "SELECT CAST(max(max_timestamp) AS BIGINT) FROM system.blocks WHERE state = 'remote'",
    )
    .await;
    let count_sql =
        format!("SELECT count(*) FROM s3_test WHERE timestamp <= to_timestamp_millis({bound})");
    let before = scalar(&replica, &count_sql).await;
    assert!(before >= 1, "samples in uploaded blocks: {before}");

    let replica = replica.restart().await;
    assert_eq!(scalar(&replica, &count_sql).await, before);
    // Served from the bucket: no local copy of an uploaded block is left after start-up.
    let local: Vec<String> = std::fs::read_dir(replica.data_dir().join("blocks"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    for id in &in_bucket {
        assert!(!local.contains(id), "{id} still local: {local:?}");
    }
    let remote = scalar(
        &replica,
        "SELECT count(*) FROM system.blocks WHERE state = 'remote'",
    )
    .await;
    assert!(remote >= in_bucket.len() as i64);
    // Every acknowledged sample is still there: in the bucket, or in the WAL and head.
    assert_eq!(scalar(&replica, "SELECT count(*) FROM s3_test").await, 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_store_stops_start_up_with_the_reason() {
    // Nothing listens on this port.
    let port = free_port();
    let config = format!(
        "global: {{scrape_interval: 1s}}\n\
         storage:\n  block_duration: 2s\n  retention: 100s\n  object_store:\n    \
         url: s3://arrowhead/blocks\n    options: {{endpoint: \"http://127.0.0.1:{port}\", \
         region: us-east-1, access_key_id: a, secret_access_key: b, allow_http: \"true\"}}\n"
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("arrowhead.yml"), &config).unwrap();
    // The bucket is listed at start-up: an unreachable store stops the start with the reason.
    let out = Command::new(crate::support::arrowhead_bin())
        .args(["serve", "--config"])
        .arg(dir.path().join("arrowhead.yml"))
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args(["--http-listen", &format!("127.0.0.1:{}", free_port())])
        .args(["--flight-listen", &format!("127.0.0.1:{}", free_port())])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("object store s3://arrowhead/blocks"),
        "{stderr}"
    );
    assert!(!stderr.contains("\"b\""));
}
