use std::io::Write;
use std::net::SocketAddr;

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use storage::HeadConfig;

use super::*;
use crate::config::{ScrapeConfig, ScrapeDefaults};

const BODY: &str = "# TYPE requests_total counter\nrequests_total{path=\"/\"} 7\nrequests_total{path=\"/x\"} 3\ntemp 21.5\n";

/// Serves a few endpoints on a free loopback port.
async fn serve() -> (SocketAddr, AbortOnDropHandle<()>) {
    let app = axum::Router::new()
        .route("/metrics", get(|| async { BODY }))
        .route(
            "/gzip",
            get(|headers: axum::http::HeaderMap| async move {
                let seen = |name: &str| {
                    headers
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_string()
                };
                let line = format!(
                    "accept_seen{{accept=\"{}\",host=\"{}\",agent=\"{}\",timeout=\"{}\"}} 1\n",
                    seen("accept"),
                    seen("host"),
                    seen("user-agent"),
                    seen("x-prometheus-scrape-timeout-seconds"),
                );
                let mut enc =
                    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
                enc.write_all(line.as_bytes()).unwrap();
                ([(header::CONTENT_ENCODING, "gzip")], enc.finish().unwrap()).into_response()
            }),
        )
        .route("/broken", get(|| async { "ok 1\nbroken{ 2\n" }))
        .route(
            "/redirect",
            get(|| async {
                (
                    axum::http::StatusCode::FOUND,
                    [(header::LOCATION, "/metrics")],
                )
            }),
        )
        .route("/fake_up", get(|| async { "up 0\nother 1\n" }))
        .route(
            "/private",
            get(|headers: axum::http::HeaderMap| async move {
                let auth = headers
                    .get(header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default();
                // "user:pass" in base64, or a bearer token.
                if auth == "Basic dXNlcjpwYXNz" || auth == "Bearer s3cret" {
                    (axum::http::StatusCode::OK, "private 1\n")
                } else {
                    (axum::http::StatusCode::UNAUTHORIZED, "")
                }
            }),
        )
        .route(
            "/openmetrics",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
                    "# TYPE om_requests counter\nom_requests_total 5 1.5 # {trace=\"t\"} 1\nom_requests_created 1\n# EOF\n",
                )
            }),
        )
        .route(
            "/big",
            get(|| async {
                // 1 MB that gzips to almost nothing: a body-size limit must count decoded bytes.
                let body = format!("big{{x=\"{}\"}} 1\n", "a".repeat(1 << 20));
                let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
                enc.write_all(body.as_bytes()).unwrap();
                ([(header::CONTENT_ENCODING, "gzip")], enc.finish().unwrap()).into_response()
            }),
        )
        .route(
            "/error",
            get(|| async { (axum::http::StatusCode::INTERNAL_SERVER_ERROR, "boom") }),
        )
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                "late 1\n"
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    #[allow(clippy::disallowed_methods)]
    let task = AbortOnDropHandle::new(tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    }));
    (addr, task)
}

/// A head and a manager appending to it.
fn new_manager() -> (Arc<Head>, Arc<ScrapeManager>) {
    let head = Arc::new(Head::new(HeadConfig::default()));
    let manager = Arc::new(ScrapeManager::new(Arc::clone(&head), &Labels::default()).unwrap());
    (head, manager)
}

/// Target status keyed by job name.
fn status_by_job(manager: &ScrapeManager) -> std::collections::HashMap<String, TargetStatus> {
    manager
        .targets()
        .into_iter()
        .map(|t| (t.job.clone(), t))
        .collect()
}

/// A job from YAML, with relative paths starting at `dir`.
fn job_in(dir: &std::path::Path, yaml: &str) -> ScrapeJob {
    let cfg: ScrapeConfig = serde_norway::from_str(yaml).unwrap();
    cfg.resolve(&ScrapeDefaults::default(), dir).unwrap()
}

fn job(yaml: &str) -> ScrapeJob {
    job_in(std::path::Path::new("."), yaml)
}

/// Waits (bounded) until every target has been scraped at least `n` times.
async fn wait_for_scrapes(manager: &ScrapeManager, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let per_target = manager.targets().len() as u64;
    while manager.metrics().scrapes.get() < n * per_target {
        assert!(Instant::now() < deadline, "scrapes did not happen in time");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Let the last scrape finish its commit.
    tokio::time::sleep(Duration::from_millis(200)).await;
}

/// The newest value of `metric` among series whose `job` label is `job`.
fn last_by_job(head: &Head, metric: &str, job: &str) -> Option<f64> {
    use arrow::array::AsArray;
    use arrow::datatypes::{Float64Type, TimestampMillisecondType};
    let snap = head.metric(metric)?.snapshot();
    let schema = snap.schema();
    let mask = snap.series_mask(&[storage::LabelMatcher {
        column: "job".into(),
        op: storage::MatchOp::Eq(job.into()),
    }]);
    let mut best: Option<(i64, f64)> = None;
    for chunk in snap.chunks() {
        let Some(b) = snap
            .read(chunk, &schema, Default::default(), mask.as_deref())
            .unwrap()
        else {
            continue;
        };
        let ts = b
            .column_by_name("timestamp")
            .unwrap()
            .as_primitive::<TimestampMillisecondType>();
        let vs = b
            .column_by_name("value")
            .unwrap()
            .as_primitive::<Float64Type>();
        for i in 0..b.num_rows() {
            if best.is_none_or(|(t, _)| ts.value(i) > t) {
                best = Some((ts.value(i), vs.value(i)));
            }
        }
    }
    best.map(|(_, v)| v)
}

#[tokio::test]
async fn targets_are_scraped_and_failures_reported() {
    let (addr, _server) = serve().await;
    let refused = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let (head, manager) = new_manager();
    let jobs = [
        ("ok", "/metrics", addr),
        ("down", "/metrics", refused),
        ("gz", "/gzip", addr),
        ("broken", "/broken", addr),
        ("error", "/error", addr),
        ("slow", "/slow", addr),
        ("fake_up", "/fake_up", addr),
        ("big", "/big", addr),
        ("om", "/openmetrics", addr),
        ("moved", "/redirect", addr),
    ];
    manager.run(
        jobs.iter()
            .map(|(name, path, a)| {
                job(&format!(
                    "job_name: {name}\nscrape_interval: 300ms\nmetrics_path: {path}\n\
                     body_size_limit: 64KB\nstatic_configs: [{{targets: ['{a}']}}]"
                ))
            })
            .collect(),
    );
    wait_for_scrapes(&manager, 2).await;
    let status = status_by_job(&manager);
    manager.stop().await;
    assert!(manager.targets().is_empty());

    for (name, _, _) in jobs {
        let expected = if ["ok", "gz", "fake_up", "om", "moved"].contains(&name) {
            1.0
        } else {
            0.0
        };
        assert_eq!(
            last_by_job(&head, "up", name),
            Some(expected),
            "up of {name}"
        );
        let s = &status[name];
        assert_eq!(
            s.health,
            if expected == 1.0 {
                Health::Up
            } else {
                Health::Down
            },
            "{name}"
        );
        assert_eq!(
            s.last_error.is_none(),
            expected == 1.0,
            "{name}: {:?}",
            s.last_error
        );
        assert!(s.last_scrape.is_some());
    }
    assert_eq!(last_by_job(&head, "temp", "ok"), Some(21.5));
    assert_eq!(status["ok"].samples, 3);
    // The redirect was followed.
    assert_eq!(status["moved"].samples, 3);
    assert_eq!(last_by_job(&head, "temp", "moved"), Some(21.5));
    assert_eq!(status["ok"].url, format!("http://{addr}/metrics"));
    assert_eq!(status["ok"].instance, addr.to_string());
    let err = |job: &str| status[job].last_error.clone().unwrap();
    assert!(
        err("down").contains("Connection refused"),
        "{}",
        err("down")
    );
    assert!(
        err("broken").contains("parse error: line 2"),
        "{}",
        err("broken")
    );
    assert!(err("error").contains("HTTP status 500"), "{}", err("error"));
    assert!(
        err("slow").contains("timed out after 300ms"),
        "{}",
        err("slow")
    );
    // OpenMetrics was parsed as such: timestamp in seconds, exemplar and _created dropped.
    assert_eq!(last_by_job(&head, "om_requests_total", "om"), Some(5.0));
    assert!(head.metric("om_requests_created").is_none());
    let om = head.metric("om_requests_total").unwrap().series();
    assert_eq!(om[0].last_timestamp, 1500);
    assert_eq!(
        head.metadata().for_table("om_requests_total").unwrap().kind,
        "counter"
    );
    // gzip was decoded, and the Accept header asked for OpenMetrics first; the request
    // named its host, the replica and its timeout.
    let seen = &head.metric("accept_seen").unwrap().series()[0].labels;
    assert_eq!(seen.get("accept"), Some(ACCEPT_HEADER));
    assert_eq!(seen.get("host"), Some(addr.to_string().as_str()));
    assert_eq!(seen.get("agent"), Some(USER_AGENT));
    assert!(
        seen.get("timeout")
            .is_some_and(|t| t.parse::<f64>().is_ok()),
        "{seen:?}"
    );
    // The broken body's valid first line was not kept: a scrape is all or nothing.
    assert!(head.metric("ok").is_none_or(|m| m.snapshot().rows() == 0));
    for synthetic in [
        "scrape_duration_seconds",
        "scrape_samples_scraped",
        "scrape_series_added",
    ] {
        assert!(last_by_job(&head, synthetic, "ok").is_some(), "{synthetic}");
    }
    assert_eq!(
        last_by_job(&head, "scrape_samples_scraped", "ok"),
        Some(3.0)
    );
    assert!(manager.metrics().scrape_failures.get() >= 4);
}

#[test]
fn offsets_spread_targets_and_depend_on_the_seed() {
    let j = Arc::new(job("job_name: a\nscrape_interval: 15s"));
    let offsets: std::collections::HashSet<Duration> = (0..50)
        .map(|i| {
            let t = Target {
                spec: TargetSpec {
                    url: format!("http://h{i}:9100/metrics").parse().unwrap(),
                    labels: Labels::from_pairs([("instance", format!("h{i}:9100"))]),
                    interval: j.interval,
                    timeout: j.timeout,
                },
                job: Arc::clone(&j),
                status: Mutex::new(TargetStatus {
                    job: "a".into(),
                    instance: String::new(),
                    url: String::new(),
                    labels: Labels::default(),
                    health: Health::Unknown,
                    last_scrape: None,
                    last_duration_seconds: None,
                    last_error: None,
                    samples: 0,
                }),
            };
            let o = t.offset(1);
            assert!(o < Duration::from_secs(15));
            assert_eq!(o, t.offset(1), "stable");
            o
        })
        .collect();
    assert!(offsets.len() > 40, "offsets spread over the interval");
}

#[tokio::test]
async fn reload_keeps_unchanged_loops_and_stops_removed_ones() {
    let (addr, _server) = serve().await;
    let (head, manager) = new_manager();
    let jobs = |names: &[&str]| -> Vec<ScrapeJob> {
        names
            .iter()
            .map(|n| {
                job(&format!(
                    "job_name: {n}\nscrape_interval: 200ms\nstatic_configs: [{{targets: ['{addr}']}}]"
                ))
            })
            .collect()
    };
    manager.run(jobs(&["keep", "drop"]));
    wait_for_scrapes(&manager, 1).await;
    let before = status_by_job(&manager);
    assert_eq!(before["keep"].health, Health::Up);

    manager.run(jobs(&["keep", "new"]));
    let after: Vec<TargetStatus> = manager.targets();
    assert_eq!(
        after.iter().map(|t| t.job.as_str()).collect::<Vec<_>>(),
        ["keep", "new"]
    );
    assert_eq!(
        after[0].health,
        Health::Up,
        "the kept loop keeps its status"
    );
    assert_eq!(
        after[1].health,
        Health::Unknown,
        "the new loop has not scraped yet"
    );

    let count = |job: &str| {
        let snap = head.metric("up").unwrap().snapshot();
        let mask = snap.series_mask(&[storage::LabelMatcher {
            column: "job".into(),
            op: storage::MatchOp::Eq(job.into()),
        }]);
        let schema = snap.schema();
        snap.chunks()
            .iter()
            .filter_map(|c| {
                snap.read(c, &schema, Default::default(), mask.as_deref())
                    .unwrap()
            })
            .map(|b| b.num_rows())
            .sum::<usize>()
    };
    let dropped = count("drop");
    let kept = count("keep");
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(
        count("drop"),
        dropped,
        "the removed target is no longer scraped"
    );
    assert!(count("keep") > kept, "the kept target is still scraped");
    assert!(count("new") > 0, "the new target is scraped");
    manager.stop().await;
}

#[tokio::test]
async fn file_targets_follow_their_files() {
    let (addr, _server) = serve().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("targets.json");
    let write = |targets: &[String]| {
        let list: Vec<String> = targets.iter().map(|t| format!("\"{t}\"")).collect();
        let tmp = dir.path().join("targets.json.tmp");
        std::fs::write(
            &tmp,
            format!(
                r#"[{{"targets": [{}], "labels": {{"env": "test"}}}}]"#,
                list.join(",")
            ),
        )
        .unwrap();
        std::fs::rename(&tmp, &file).unwrap();
    };
    write(&[addr.to_string()]);
    let (_head, manager) = new_manager();
    let cfg: ScrapeConfig = serde_norway::from_str(
        "job_name: files\nscrape_interval: 200ms\nfile_sd_configs: [{files: ['*.json'], refresh_interval: 1h}]\n\
         relabel_configs: [{source_labels: [__meta_filepath], regex: '.*/(.*)', target_label: file}]",
    )
    .unwrap();
    manager.run(vec![
        cfg.resolve(&ScrapeDefaults::default(), dir.path()).unwrap(),
    ]);
    let targets = manager.targets();
    assert_eq!(targets.len(), 1, "files are read before run returns");
    assert_eq!(targets[0].labels.get("env"), Some("test"));
    assert_eq!(targets[0].labels.get("file"), Some("targets.json"));
    assert_eq!(
        targets[0].labels.get("__meta_filepath"),
        None,
        "internal labels are removed"
    );
    wait_for_scrapes(&manager, 1).await;

    // A second target appears (a change event, not the 1h refresh, picks it up).
    let refused = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    write(&[addr.to_string(), refused.to_string()]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while manager.targets().len() != 2 {
        assert!(
            Instant::now() < deadline,
            "the file change was not picked up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The first target's loop was kept: it has scraped already.
    assert_eq!(manager.targets()[0].health, Health::Up);

    std::fs::remove_file(&file).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !manager.targets().is_empty() {
        assert!(Instant::now() < deadline, "the removal was not picked up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    manager.stop().await;
}

#[tokio::test]
async fn credentials_are_sent_and_files_reread() {
    let (addr, _server) = serve().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), "s3cret\n").unwrap();
    let (_head, manager) = new_manager();
    let job = |name: &str, auth: &str| {
        job_in(
            dir.path(),
            &format!(
                "job_name: {name}\nscrape_interval: 200ms\nmetrics_path: /private\n{auth}\n\
                 static_configs: [{{targets: ['{addr}']}}]"
            ),
        )
    };
    manager.run(vec![
        job("basic", "basic_auth: {username: user, password: pass}"),
        job("bearer", "authorization: {credentials_file: token}"),
        job("wrong", "authorization: {credentials: nope}"),
        job("none", ""),
    ]);
    wait_for_scrapes(&manager, 1).await;
    let status = status_by_job(&manager);
    assert_eq!(
        status["basic"].health,
        Health::Up,
        "{:?}",
        status["basic"].last_error
    );
    assert_eq!(
        status["bearer"].health,
        Health::Up,
        "{:?}",
        status["bearer"].last_error
    );
    for job in ["wrong", "none"] {
        assert!(
            status[job]
                .last_error
                .as_deref()
                .unwrap_or_default()
                .contains("401"),
            "{job}"
        );
    }
    // A rotated token file is picked up without a reload.
    std::fs::write(dir.path().join("token"), "rotated").unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    let bearer = manager
        .targets()
        .into_iter()
        .find(|t| t.job == "bearer")
        .unwrap();
    assert!(bearer.last_error.unwrap_or_default().contains("401"));
    manager.stop().await;
}

/// A self-made CA and a server certificate for 127.0.0.1, made with the openssl CLI.
fn make_certs(dir: &std::path::Path) {
    let run = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
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
    std::fs::write(
        dir.join("san.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
    )
    .unwrap();
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "2",
        "-subj",
        "/CN=arrowhead-test-ca",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=localhost",
    ]);
    run(&[
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
        "-extfile",
        "san.ext",
    ]);
}

/// Serves `tls_metric 1` over HTTPS with the certificate from [`make_certs`].
async fn serve_tls(dir: &std::path::Path) -> (SocketAddr, AbortOnDropHandle<()>) {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _ = rustls::crypto::ring::default_provider().install_default();
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(dir.join("server.crt"))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(dir.join("server.key")).unwrap();
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    #[allow(clippy::disallowed_methods)]
    let task = AbortOnDropHandle::new(tokio::spawn(async move {
        let mut connections = tokio::task::JoinSet::new();
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            connections.spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else { return };
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let body = "tls_metric 1\n";
                let response = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = tls.write_all(response.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    }));
    (addr, task)
}

#[tokio::test]
async fn https_targets_are_verified_against_the_configured_ca() {
    let dir = tempfile::tempdir().unwrap();
    make_certs(dir.path());
    let (addr, _server) = serve_tls(dir.path()).await;
    let (head, manager) = new_manager();
    let job = |name: &str, tls: &str| {
        job_in(
            dir.path(),
            &format!(
                "job_name: {name}\nscheme: https\nscrape_interval: 300ms\n{tls}\n\
                 static_configs: [{{targets: ['{addr}']}}]"
            ),
        )
    };
    manager.run(vec![
        job("trusted", "tls_config: {ca_file: ca.crt}"),
        job("untrusted", ""),
        job("insecure", "tls_config: {insecure_skip_verify: true}"),
    ]);
    wait_for_scrapes(&manager, 1).await;
    let status = status_by_job(&manager);
    assert_eq!(
        status["trusted"].health,
        Health::Up,
        "{:?}",
        status["trusted"].last_error
    );
    assert_eq!(
        status["insecure"].health,
        Health::Up,
        "{:?}",
        status["insecure"].last_error
    );
    let err = status["untrusted"].last_error.clone().unwrap_or_default();
    assert_eq!(status["untrusted"].health, Health::Down);
    assert!(err.to_lowercase().contains("certificate"), "{err}");
    assert_eq!(last_by_job(&head, "tls_metric", "trusted"), Some(1.0));
    manager.stop().await;
}

/// How [`serve_raw`] treats a connection after answering a request.
#[derive(Clone, Copy)]
enum RawMode {
    /// Keeps it open for the next request.
    KeepAlive,
    /// Closes it without saying so in the response, as an idle timeout does.
    CloseAfterResponse,
    /// Answers its first request; closes it on reading the second one, unanswered (a server
    /// closing an idle connection just as the next request arrives).
    DropSecondRequest,
    /// Keeps it open, answering with [`big_body`] and [`BODY`] in turn: a response far
    /// smaller than the last one, which the client's receive low-water mark must not stall.
    Alternating,
}

/// A body of 5,000 series (~190 KB), above the size the scrape stream sets a mark for.
fn big_body() -> String {
    let mut body = String::from("# TYPE big_total counter\n");
    for i in 0..5_000 {
        body.push_str(&format!(
            "big_total{{shard=\"{i}\",padding=\"abcdefghij\"}} {i}\n"
        ));
    }
    body
}

/// A bare HTTP/1.1 server answering every GET with [`BODY`]; counts the connections it
/// accepted.
async fn serve_raw(
    mode: RawMode,
) -> (
    SocketAddr,
    Arc<std::sync::atomic::AtomicUsize>,
    AbortOnDropHandle<()>,
) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&accepted);
    let big: Arc<str> = big_body().into();
    #[allow(clippy::disallowed_methods)]
    let task = AbortOnDropHandle::new(tokio::spawn(async move {
        let mut connections = tokio::task::JoinSet::new();
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            counter.fetch_add(1, Ordering::SeqCst);
            let big = Arc::clone(&big);
            connections.spawn(async move {
                let mut buf = Vec::new();
                let mut answered = 0;
                loop {
                    let mut chunk = [0u8; 4096];
                    match stream.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        buf.drain(..end + 4);
                        if matches!(mode, RawMode::DropSecondRequest) && answered == 1 {
                            return;
                        }
                        let body = match mode {
                            RawMode::Alternating if answered % 2 == 0 => &*big,
                            _ => BODY,
                        };
                        let response = format!(
                            "HTTP/1.1 200 OK\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\n\r\n{body}",
                            body.len()
                        );
                        if stream.write_all(response.as_bytes()).await.is_err() {
                            return;
                        }
                        answered += 1;
                        if matches!(mode, RawMode::CloseAfterResponse) {
                            return;
                        }
                    }
                }
            });
        }
    }));
    (addr, accepted, task)
}

#[tokio::test]
async fn connections_are_kept_alive_and_reopened_when_the_server_closes_them() {
    let (kept, kept_conns, _s1) = serve_raw(RawMode::KeepAlive).await;
    let (closed, closed_conns, _s2) = serve_raw(RawMode::CloseAfterResponse).await;
    let (dropped, dropped_conns, _s3) = serve_raw(RawMode::DropSecondRequest).await;
    let (alternating, alternating_conns, _s4) = serve_raw(RawMode::Alternating).await;
    let (head, manager) = new_manager();
    let jobs = [
        ("kept", kept),
        ("closed", closed),
        ("dropped", dropped),
        ("alternating", alternating),
    ];
    manager.run(
        jobs.iter()
            .map(|(name, a)| {
                job(&format!(
                    "job_name: {name}\nscrape_interval: 200ms\nstatic_configs: [{{targets: ['{a}']}}]"
                ))
            })
            .collect(),
    );
    wait_for_scrapes(&manager, 4).await;
    let status = status_by_job(&manager);
    let scrapes = manager.metrics().scrapes.get();
    manager.stop().await;
    for (name, _) in jobs {
        assert_eq!(
            status[name].health,
            Health::Up,
            "{name}: {:?}",
            status[name].last_error
        );
        assert_eq!(last_by_job(&head, "up", name), Some(1.0), "{name}");
    }
    assert_eq!(manager.metrics().scrape_failures.get(), 0);
    use std::sync::atomic::Ordering;
    // One connection for every scrape of the kept-alive targets: a small response after a
    // big one was read (not timed out, which would have closed it).
    assert_eq!(kept_conns.load(Ordering::SeqCst), 1);
    assert_eq!(alternating_conns.load(Ordering::SeqCst), 1);
    // A new one for each scrape where the server had closed the last one, whether the
    // client saw that before sending (closed) or only from the unanswered request (dropped).
    let per_target = scrapes / 4;
    assert!(closed_conns.load(Ordering::SeqCst) as u64 >= per_target.min(4));
    assert!(dropped_conns.load(Ordering::SeqCst) as u64 >= per_target.min(4) / 2);
}
