//! `server.auth_token_file` and `server.tls`: the CLI and ADBC over TLS with a bearer token;
//! no token, a wrong one, or plaintext are refused; the token never reaches the log.

use std::time::Duration;

use crate::support::{Replica, make_server_certs, run_cli, run_python};

const TOKEN: &str = "s3cr3t-Token_0123456789";

#[tokio::test]
async fn tls_and_a_bearer_token_guard_flight_sql() {
    let dir = tempfile::tempdir().unwrap();
    make_server_certs(dir.path());
    std::fs::write(dir.path().join("token"), format!("{TOKEN}\n")).unwrap();
    std::fs::write(
        dir.path().join("arrowhead.yml"),
        "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: arrowhead\n    \
         static_configs:\n      - targets: [SELF]\nserver:\n  auth_token_file: token\n  \
         tls: {cert_file: server.crt, key_file: server.key}\n",
    )
    .unwrap();
    let ca = dir.path().join("ca.crt").display().to_string();
    let replica = Replica::start_in(dir).await;
    let url = format!("grpc+tls://{}", replica.flight);
    let sql = "SELECT count(*) AS n FROM up";

    // The right token over TLS: answered (once the first scrape is in).
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (ok, out, err) = run_cli(&[
            "query",
            "--endpoint",
            &url,
            "--tls-ca",
            &ca,
            "--token",
            TOKEN,
            "--format",
            "csv",
            sql,
        ]);
        // Until the first scrape lands, `up` does not exist yet.
        assert!(ok || err.contains("not found"), "{err}\n{}", replica.log());
        if ok && out.lines().nth(1).is_some_and(|n| n != "0") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no scrape: {out}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // No token, a wrong one: Unauthenticated, and the error does not echo what was sent.
    let (ok, _, err) = run_cli(&["query", "--endpoint", &url, "--tls-ca", &ca, sql]);
    assert!(!ok);
    assert!(
        err.contains("bearer token") && err.contains("Unauthenticated"),
        "{err}"
    );
    let (ok, _, err) = run_cli(&[
        "query",
        "--endpoint",
        &url,
        "--tls-ca",
        &ca,
        "--token",
        "wrong-token",
        sql,
    ]);
    assert!(!ok);
    assert!(
        err.contains("Unauthenticated") && !err.contains("wrong-token"),
        "{err}"
    );
    // A token that only shares a prefix is as wrong.
    let prefix = &TOKEN[..TOKEN.len() - 1];
    let (ok, _, _) = run_cli(&[
        "query",
        "--endpoint",
        &url,
        "--tls-ca",
        &ca,
        "--token",
        prefix,
        sql,
    ]);
    assert!(!ok);

    // Plaintext to the TLS port, or TLS without trusting the CA: no answer.
    let plain = format!("grpc://{}", replica.flight);
    let (ok, _, _) = run_cli(&["query", "--endpoint", &plain, "--token", TOKEN, sql]);
    assert!(!ok);
    let (ok, _, err) = run_cli(&["query", "--endpoint", &url, "--token", TOKEN, sql]);
    assert!(!ok, "a certificate from an unknown CA was trusted");
    assert!(!err.contains(TOKEN), "{err}");

    // ADBC, unmodified: over TLS with the token, and refused without it.
    let stdout = run_python(
        "adbc_client.py",
        &[&url, "--token", TOKEN, "--ca", &ca],
        &replica.log(),
    );
    assert!(stdout.contains("ok"), "{stdout}");
    let stdout = run_python(
        "adbc_client.py",
        &[&url, "--token", "nope", "--ca", &ca, "--expect-denied"],
        &replica.log(),
    );
    assert!(stdout.contains("denied"), "{stdout}");

    let log = replica.log();
    assert!(log.contains("flight_tls=true"), "{log}");
    assert!(!log.contains(TOKEN), "the token reached the log:\n{log}");
}

#[tokio::test]
async fn bad_token_and_tls_files_are_refused_at_start_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "server:\n  auth_token_file: missing\n",
            "server.auth_token_file: cannot read",
        ),
        (
            "server:\n  auth_token_file: empty\n",
            "server.auth_token_file:",
        ),
        (
            "server:\n  tls: {cert_file: empty, key_file: empty}\n",
            "server.tls.cert_file:",
        ),
        (
            "server:\n  tls: {cert_file: x}\n",
            "missing field `key_file`",
        ),
    ];
    std::fs::write(dir.path().join("empty"), "  \n").unwrap();
    for (config, expected) in cases {
        let path = dir.path().join("arrowhead.yml");
        std::fs::write(&path, config).unwrap();
        let path = path.display().to_string();
        let (ok, _, err) = run_cli(&["check", "config", &path]);
        assert!(!ok, "{config}");
        assert!(err.contains(expected), "{config}: {err}");
    }
}
