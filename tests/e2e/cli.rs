//! The `arrowhead` CLI as a user types it.

use std::process::Command;
use std::time::Duration;

use crate::support::{Replica, arrowhead_bin, free_port};

fn run(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(arrowhead_bin()).args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn query_prints_tables_csv_and_json_and_fails_over() {
    let replica = Replica::start(None).await;
    replica
        .wait_for_count("SELECT count(*) FROM up", 1, Duration::from_secs(20))
        .await;
    let url = replica.url();
    let dead = format!("grpc://127.0.0.1:{}", free_port());

    let (ok, out, err) = run(&["query", "--endpoint", &url, "SELECT * FROM up"]);
    assert!(ok, "{err}");
    assert!(
        out.contains("| instance") && out.contains("| arrowhead |"),
        "{out}"
    );

    let (ok, out, err) = run(&[
        "query",
        "--endpoint",
        &dead,
        "--endpoint",
        &url,
        "--format",
        "csv",
        "SELECT job, value FROM up LIMIT 1",
    ]);
    assert!(ok, "{err}");
    assert_eq!(out, "job,value\narrowhead,1.0\n");

    let (ok, out, err) = run(&[
        "query",
        "--endpoint",
        &url,
        "--format",
        "json",
        "SELECT 1 AS one",
    ]);
    assert!(ok, "{err}");
    assert_eq!(out.trim(), r#"[{"one":1}]"#);

    let (ok, _, err) = run(&["query", "--endpoint", &url, "DELETE FROM up"]);
    assert!(!ok);
    assert!(
        err.contains("DELETE is not allowed") && err.contains("PermissionDenied"),
        "{err}"
    );

    let (ok, _, err) = run(&["query", "--endpoint", &url, "SELECT * FROM nope"]);
    assert!(!ok);
    assert!(
        err.contains("InvalidArgument") && err.contains("nope"),
        "{err}"
    );

    let (ok, _, err) = run(&["query", "--endpoint", &dead, "SELECT 1"]);
    assert!(!ok);
    assert!(err.contains("cannot connect"), "{err}");
}

#[test]
fn check_config_accepts_the_example_and_names_errors() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/arrowhead.yml");
    let (ok, out, err) = run(&["check", "config", example]);
    assert!(ok, "{err}");
    assert!(out.contains("OK (2 scrape jobs, 2 targets)"), "{out}");

    let bad = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/testdata/config/unknown_job_key.bad.yml"
    );
    let (ok, _, err) = run(&["check", "config", bad]);
    assert!(!ok);
    assert!(
        err.contains(
            "unknown_job_key.bad.yml:4:5: scrape_configs[0]: unknown field `scrape_intervall`"
        ),
        "{err}"
    );

    let (ok, _, err) = run(&["check", "rules", "rules.yml"]);
    assert!(!ok);
    assert!(err.contains("not supported yet"), "{err}");
}
