//! Starting, refusing, and stopping a replica.

use std::net::TcpListener;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::{Replica, arrowhead_bin, free_port};

#[tokio::test]
async fn sigterm_and_sigint_exit_0_quickly_and_release_ports() {
    for signal in ["TERM", "INT"] {
        let mut replica = Replica::start(None).await;
        // A client connection is open while stopping.
        let _ = replica.query("SELECT 1").await;
        let started = Instant::now();
        let status = replica
            .stop(signal, Duration::from_secs(10))
            .expect("exited");
        assert!(status.success(), "SIG{signal}: {status}\n{}", replica.log());
        assert!(
            started.elapsed() < Duration::from_secs(8),
            "took {:?}",
            started.elapsed()
        );
        TcpListener::bind(replica.http).expect("HTTP port released");
        TcpListener::bind(replica.flight).expect("Flight port released");
        assert!(
            replica.log().contains("shutdown complete"),
            "{}",
            replica.log()
        );
    }
}

#[tokio::test]
async fn a_second_replica_on_the_same_data_dir_refuses_to_start() {
    let replica = Replica::start(None).await;
    let out = Command::new(arrowhead_bin())
        .arg("serve")
        .arg("--data-dir")
        .arg(replica.data_dir())
        .arg("--http-listen")
        .arg(format!("127.0.0.1:{}", free_port()))
        .arg("--flight-listen")
        .arg(format!("127.0.0.1:{}", free_port()))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("is in use by another Arrowhead process"),
        "{err}"
    );
    // The first replica is unaffected.
    let _ = replica.query("SELECT 1").await;
}

#[tokio::test]
async fn health_readiness_and_metrics_endpoints_answer() {
    let replica = Replica::start(None).await;
    let get = |path: &str| {
        let url = format!("http://{}{path}", replica.http);
        async move {
            let r = reqwest::get(url).await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    assert_eq!(get("/-/healthy").await.0, 200);
    assert_eq!(get("/-/ready").await.0, 200);
    let _ = replica.query("SELECT 1").await;
    let (status, body) = get("/metrics").await;
    assert_eq!(status, 200);
    for name in [
        "arrowhead_head_samples_appended_total",
        "arrowhead_head_series",
        "arrowhead_scrape_attempts_total",
        "arrowhead_query_executions_total",
        "arrowhead_query_errors_total",
    ] {
        assert!(body.contains(name), "{name} missing from /metrics:\n{body}");
    }
    assert_eq!(get("/nope").await.0, 404);
}

#[test]
fn a_bad_config_stops_startup_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yml");
    std::fs::write(&path, "global:\n  scrape_interval: often\n").unwrap();
    let out = Command::new(arrowhead_bin())
        .args(["serve", "--config"])
        .arg(&path)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.yml:2:20: global.scrape_interval: invalid duration \"often\""),
        "{err}"
    );
}

#[tokio::test]
async fn a_busy_port_is_reported_with_its_config_key() {
    let busy = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(arrowhead_bin())
        .arg("serve")
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .arg("--http-listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--flight-listen")
        .arg(format!("127.0.0.1:{}", free_port()))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "cannot listen on 127.0.0.1:{port} (server.http_listen)"
        )),
        "{err}"
    );
}
