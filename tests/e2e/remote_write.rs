//! The remote-write receiver, fed by a real Prometheus (Debian's `prometheus`) and by hand.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use arrow::array::AsArray;
use arrow::datatypes::Float64Type;
use prost::Message;
use proto::prometheus::{Label, Sample, TimeSeries, WriteRequest};

use crate::support::{Replica, free_port};

const NO_SCRAPES: &str = "global: {scrape_interval: 1s}\n";

struct Prometheus(Child);

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn a_real_prometheus_remote_writes_what_it_scrapes() {
    let replica = Replica::start(Some(NO_SCRAPES)).await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = format!(
        "global: {{scrape_interval: 1s}}\n\
         scrape_configs:\n  - job_name: prometheus\n    static_configs: [{{targets: ['127.0.0.1:{port}']}}]\n\
         remote_write:\n  - url: http://{}/api/v1/write\n    queue_config: {{batch_send_deadline: 1s, min_backoff: 100ms, max_backoff: 1s}}\n    metadata_config: {{send_interval: 1s}}\n",
        replica.http
    );
    std::fs::write(dir.path().join("prometheus.yml"), config).unwrap();
    let bin = std::env::var("ARROWHEAD_PROMETHEUS").unwrap_or_else(|_| "prometheus".into());
    let child = Command::new(&bin)
        .arg(format!("--config.file={}", dir.path().join("prometheus.yml").display()))
        .arg(format!("--storage.tsdb.path={}", dir.path().join("tsdb").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("prometheus.log")).unwrap())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot start {bin}: {e}. Install Debian's prometheus (.ci/run does) or set ARROWHEAD_PROMETHEUS")
        });
    let _prometheus = Prometheus(child);

    replica
        .wait_for_count(
            "SELECT count(*) FROM up WHERE job = 'prometheus'",
            2,
            Duration::from_secs(60),
        )
        .await;
    let (_, b) = replica
        .query("SELECT max(value) FROM up WHERE job = 'prometheus'")
        .await;
    assert_eq!(b[0].column(0).as_primitive::<Float64Type>().value(0), 1.0);
    // Prometheus's own metrics arrived as tables, with their labels as columns.
    let (schema, _) = replica.query("SELECT * FROM prometheus_build_info").await;
    for column in ["version", "job", "instance"] {
        assert!(
            schema.field_with_name(column).is_ok(),
            "no column {column}: {schema:?}"
        );
    }
    // Metadata arrives too (sent every second by this configuration).
    replica
        .wait_for_count(
            "SELECT count(*) FROM system.metrics WHERE metric = 'prometheus_http_requests_total' AND type = 'counter'",
            1,
            Duration::from_secs(30),
        )
        .await;
}

/// A remote-write body: one series `metric{job="manual"}` with `samples`.
pub(crate) fn request(metric: &str, samples: &[(i64, f64)]) -> Vec<u8> {
    let request = WriteRequest {
        timeseries: vec![TimeSeries {
            labels: vec![
                Label {
                    name: "__name__".into(),
                    value: metric.into(),
                },
                Label {
                    name: "job".into(),
                    value: "manual".into(),
                },
            ],
            samples: samples
                .iter()
                .map(|&(t, v)| Sample {
                    value: v,
                    timestamp: t,
                })
                .collect(),
            ..Default::default()
        }],
        metadata: vec![],
    };
    snap::raw::Encoder::new()
        .compress_vec(&request.encode_to_vec())
        .unwrap()
}

#[tokio::test]
async fn malformed_bodies_get_400_and_change_nothing() {
    let replica = Replica::start(Some(NO_SCRAPES)).await;
    let url = format!("http://{}/api/v1/write", replica.http);
    let client = reqwest::Client::new();
    let post = |body: Vec<u8>| {
        let client = client.clone();
        let url = url.clone();
        async move {
            let r = client
                .post(url)
                .header("Content-Encoding", "snappy")
                .header("Content-Type", "application/x-protobuf")
                .header("X-Prometheus-Remote-Write-Version", "0.1.0")
                .body(body)
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    let (status, _) = post(request("manual_metric", &[(1_000, 1.0), (2_000, 2.0)])).await;
    assert_eq!(status, 204);
    let (status, body) = post(b"definitely not snappy".to_vec()).await;
    assert_eq!(status, 400);
    assert!(body.contains("invalid snappy body"), "{body}");
    let garbage = snap::raw::Encoder::new()
        .compress_vec(b"\x0a\xff\xff\xff")
        .unwrap();
    let (status, body) = post(garbage).await;
    assert_eq!(status, 400);
    assert!(body.contains("invalid protobuf WriteRequest"), "{body}");
    let (status, _) = post(vec![0u8; 33 << 20]).await;
    assert_eq!(status, 413, "bodies over the limit are refused");
    // What was stored before is intact.
    let (_, b) = replica.query("SELECT sum(value) FROM manual_metric").await;
    assert_eq!(b[0].column(0).as_primitive::<Float64Type>().value(0), 3.0);
    let metrics = replica.metrics_text().await;
    assert!(
        metrics.contains("arrowhead_remote_write_samples_total 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("arrowhead_remote_write_rejected_total 2"),
        "{metrics}"
    );
}
