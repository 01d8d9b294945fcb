//! A full disk: writes stop with a clear error, queries go on, writing resumes with space.

use std::process::Command;
use std::time::Duration;

use arrow::array::AsArray;
use arrow::datatypes::Int64Type;
use prost::Message;
use proto::prometheus::{Label, Sample, TimeSeries, WriteRequest};

use crate::support::Replica;

/// A small tmpfs mounted for the test's lifetime.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(path: &std::path::Path, size: &str) -> Result<Tmpfs, String> {
        std::fs::create_dir_all(path).map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        Ok(Tmpfs(path.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn body(t: i64, series: usize) -> Vec<u8> {
    let timeseries = (0..series)
        .map(|s| TimeSeries {
            labels: vec![
                Label {
                    name: "__name__".into(),
                    value: "disk_test".into(),
                },
                Label {
                    name: "s".into(),
                    value: format!("series-{s:05}"),
                },
            ],
            samples: vec![Sample {
                value: 1.0,
                timestamp: t,
            }],
            ..Default::default()
        })
        .collect();
    snap::raw::Encoder::new()
        .compress_vec(
            &WriteRequest {
                timeseries,
                metadata: vec![],
            }
            .encode_to_vec(),
        )
        .unwrap()
}

/// Needs root (to mount a tmpfs); CI runs as root. Elsewhere it says why it did nothing.
#[tokio::test]
async fn a_full_disk_refuses_writes_with_503_and_recovers() {
    // The replica's data directory (`<dir>/data`) is a 4 MiB tmpfs.
    let dir = tempfile::tempdir().unwrap();
    let mount = dir.path().join("data");
    let _tmpfs = match Tmpfs::mount(&mount, "4m") {
        Ok(t) => t,
        Err(e) => {
            eprintln!("skipped: cannot mount a tmpfs (needs root): {e}");
            return;
        }
    };
    std::fs::write(
        dir.path().join("arrowhead.yml"),
        "global: {scrape_interval: 1s}\n",
    )
    .unwrap();
    let replica = Replica::start_in(dir).await;
    let url = format!("http://{}/api/v1/write", replica.http);
    let client = reqwest::Client::new();
    let post = |t: i64, series: usize| {
        let client = client.clone();
        let url = url.clone();
        async move {
            let r = client
                .post(url)
                .header("Content-Encoding", "snappy")
                .body(body(t, series))
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    assert_eq!(post(now, 10).await.0, 204);

    // Fill the file system.
    let filler = mount.join("filler");
    let mut f = std::fs::File::create(&filler).unwrap();
    for size in [64 << 10, 4 << 10, 1] {
        let chunk = vec![0u8; size];
        while std::io::Write::write_all(&mut f, &chunk).is_ok() {}
    }
    drop(f);

    // Requests bigger than what is left fail whole, retryably, with the reason.
    let mut refused = None;
    for i in 1..50 {
        let (status, text) = post(now + i, 2000).await;
        if status != 204 {
            refused = Some((status, text));
            break;
        }
    }
    let (status, text) = refused.expect("a full disk refuses writes");
    assert_eq!(status, 503, "{text}");
    assert!(text.contains("cannot write the WAL"), "{text}");
    // Queries go on.
    let (_, b) = replica
        .query("SELECT count(*) FROM disk_test WHERE s = 'series-00000'")
        .await;
    let before = b[0].column(0).as_primitive::<Int64Type>().value(0);
    assert!(before >= 1);

    // Space returns: writes resume.
    std::fs::remove_file(&filler).unwrap();
    let mut resumed = false;
    for i in 100..150 {
        if post(now + i, 10).await.0 == 204 {
            resumed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(resumed, "writes did not resume\n{}", replica.log());
    let (_, b) = replica
        .query("SELECT count(*) FROM disk_test WHERE s = 'series-00000'")
        .await;
    assert_eq!(
        b[0].column(0).as_primitive::<Int64Type>().value(0),
        before + 1
    );
    assert!(
        replica
            .metrics_text()
            .await
            .contains("arrowhead_wal_failures_total"),
        "failures are counted"
    );
}
