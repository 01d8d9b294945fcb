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
    let err = serve_fails(&replica.data_dir(), free_port(), &[]);
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
    // The same text again is planned from the plan the first one left.
    let _ = replica.query("SELECT 1").await;
    let (status, body) = get("/metrics").await;
    assert_eq!(status, 200);
    let hits = body
        .lines()
        .find_map(|l| l.strip_prefix("arrowhead_query_plan_cache_hits_total "))
        .and_then(|v| v.parse::<f64>().ok());
    assert!(
        hits.is_some_and(|h| h >= 1.0),
        "a plan cache hit expected:\n{body}"
    );
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
    let config = path.to_str().unwrap();
    let err = serve_fails(&dir.path().join("data"), free_port(), &["--config", config]);
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
    let err = serve_fails(&dir.path().join("data"), port, &[]);
    assert!(
        err.contains(&format!(
            "cannot listen on 127.0.0.1:{port} (server.http_listen)"
        )),
        "{err}"
    );
}

/// Runs `serve` expecting it to fail at startup; returns its stderr.
fn serve_fails(data_dir: &std::path::Path, http_port: u16, extra: &[&str]) -> String {
    let out = Command::new(arrowhead_bin())
        .arg("serve")
        .arg("--data-dir")
        .arg(data_dir)
        .arg("--http-listen")
        .arg(format!("127.0.0.1:{http_port}"))
        .arg("--flight-listen")
        .arg(format!("127.0.0.1:{}", free_port()))
        .args(extra)
        .output()
        .unwrap();
    assert!(!out.status.success(), "serve should have failed");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test]
async fn reload_applies_scrape_changes_and_keeps_the_old_config_on_error() {
    let config = |job: &str| {
        format!(
            "global: {{scrape_interval: 1s}}\n\
             scrape_configs:\n  - job_name: {job}\n    static_configs: [{{targets: ['127.0.0.1:{}']}}]\n",
            free_port()
        )
    };
    let replica = crate::support::Replica::start(Some(&config("first"))).await;
    let path = replica.dir.path().join("arrowhead.yml");
    let jobs = || async {
        let (_, b) = replica
            .query("SELECT job FROM system.targets ORDER BY job")
            .await;
        b.iter()
            .flat_map(|b| {
                use arrow::array::AsArray;
                let c = b.column(0).as_string::<i32>();
                (0..b.num_rows())
                    .map(|i| c.value(i).to_string())
                    .collect::<Vec<_>>()
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(jobs().await, ["first"]);
    let client = reqwest::Client::new();
    let reload = || async {
        let r = client
            .post(format!("http://{}/-/reload", replica.http))
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    };

    std::fs::write(&path, config("second")).unwrap();
    let (status, body) = reload().await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("1 scrape jobs, 1 targets"), "{body}");
    assert_eq!(jobs().await, ["second"]);

    std::fs::write(&path, "scrape_configs: [{job_name: x, bogus: 1}]\n").unwrap();
    let (status, body) = reload().await;
    assert_eq!(status, 500);
    assert!(body.contains("unknown field `bogus`"), "{body}");
    assert_eq!(
        jobs().await,
        ["second"],
        "a bad file leaves the running config"
    );

    std::fs::write(&path, config("third")).unwrap();
    let kill = Command::new("kill")
        .arg("-HUP")
        .arg(replica_pid(&replica))
        .status()
        .unwrap();
    assert!(kill.success());
    crate::support::eventually("SIGHUP reload", Duration::from_secs(10), || async {
        (jobs().await == ["third"]).then_some(())
    })
    .await;
    let metrics = replica.metrics_text().await;
    assert!(
        metrics.contains("arrowhead_config_reload_failures_total 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("arrowhead_config_last_reload_successful 1"),
        "{metrics}"
    );
}

fn replica_pid(replica: &crate::support::Replica) -> String {
    replica.pid().to_string()
}
