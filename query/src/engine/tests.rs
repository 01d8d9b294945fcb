use arrow::array::AsArray;
use arrow::datatypes::{Float64Type, Int64Type, TimeUnit};
use futures::TryStreamExt;
use storage::{Appender, HeadConfig};

use super::*;
use crate::system::{NoTargets, TargetRow};

fn head() -> Arc<Head> {
    let head = Arc::new(Head::new(HeadConfig {
        chunk_rows: 8,
        max_series: 0,
    }));
    let mut app = head.appender();
    for cpu in ["0", "1"] {
        for mode in ["idle", "user"] {
            let r = app
                .series(
                    "node_cpu_seconds_total",
                    &[
                        ("job", "node"),
                        ("instance", "h:9100"),
                        ("cpu", cpu),
                        ("mode", mode),
                    ],
                )
                .unwrap();
            for t in 0..10 {
                app.append(r, 1_000 * t, (t * 10) as f64);
            }
        }
    }
    let up = app
        .series("up", &[("job", "node"), ("instance", "h:9100")])
        .unwrap();
    app.append(up, 9_000, 1.0);
    let alerts = app.series("ALERTS", &[("alertname", "X")]).unwrap();
    app.append(alerts, 9_000, 1.0);
    let colon = app.series("job:up:ratio", &[("job", "node")]).unwrap();
    app.append(colon, 9_000, 0.5);
    app.commit().unwrap();
    head
}

fn engine() -> QueryEngine {
    QueryEngine::new(head(), Arc::new(NoTargets), &QueryConfig::default()).unwrap()
}

async fn run(engine: &QueryEngine, sql: &str) -> Result<Vec<RecordBatch>, QueryError> {
    let stream = engine.execute(sql).await?;
    stream.try_collect().await.map_err(QueryError::from)
}

async fn collect(planned: PlannedQuery) -> Vec<RecordBatch> {
    planned
        .execute()
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap()
}

async fn scalar_f64(engine: &QueryEngine, sql: &str) -> f64 {
    let b = run(engine, sql).await.unwrap();
    b[0].column(0).as_primitive::<Float64Type>().value(0)
}

async fn scalar_i64(engine: &QueryEngine, sql: &str) -> i64 {
    let b = run(engine, sql).await.unwrap();
    b[0].column(0).as_primitive::<Int64Type>().value(0)
}

fn plan_text(batches: &[RecordBatch]) -> String {
    let mut s = String::new();
    for b in batches {
        let plans = b.column(1).as_string::<i32>();
        for i in 0..b.num_rows() {
            s.push_str(plans.value(i));
            s.push('\n');
        }
    }
    s
}

#[tokio::test]
async fn metrics_are_tables_with_wire_types() {
    let e = engine();
    let planned = e
        .plan("SELECT * FROM node_cpu_seconds_total")
        .await
        .unwrap();
    let schema = planned.schema();
    let fields: Vec<(&str, &DataType)> = schema
        .fields()
        .iter()
        .map(|f| (f.name().as_str(), f.data_type()))
        .collect();
    let ts = DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()));
    assert_eq!(
        fields,
        vec![
            ("cpu", &DataType::Utf8),
            ("instance", &DataType::Utf8),
            ("job", &DataType::Utf8),
            ("mode", &DataType::Utf8),
            ("timestamp", &ts),
            ("value", &DataType::Float64),
        ]
    );
    let batches: Vec<RecordBatch> = planned
        .execute()
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 40);
    for b in &batches {
        assert_eq!(b.schema(), schema, "batches carry the wire schema");
    }
}

#[tokio::test]
async fn aggregates_and_filters_work() {
    let e = engine();
    assert_eq!(
        scalar_i64(&e, "SELECT count(*) FROM node_cpu_seconds_total").await,
        40
    );
    assert_eq!(
        scalar_i64(
            &e,
            "SELECT count(*) FROM node_cpu_seconds_total WHERE mode = 'idle' AND cpu IN ('1')"
        )
        .await,
        10
    );
    assert_eq!(
        scalar_f64(
            &e,
            "SELECT max(value) FROM node_cpu_seconds_total \
             WHERE timestamp BETWEEN '1970-01-01T00:00:02Z' AND '1970-01-01T00:00:04Z'"
        )
        .await,
        40.0
    );
    assert_eq!(
        scalar_i64(&e, "SELECT count(*) FROM node_cpu_seconds_total WHERE mode <> 'idle' AND timestamp >= to_timestamp_millis(5000)").await,
        10
    );
    let b = run(
        &e,
        "SELECT mode, sum(value) AS v FROM node_cpu_seconds_total GROUP BY mode ORDER BY mode",
    )
    .await
    .unwrap();
    assert_eq!(b[0].column(0).as_string::<i32>().value(0), "idle");
    assert_eq!(b[0].column(1).as_primitive::<Float64Type>().value(0), 900.0);
}

#[tokio::test]
async fn identifiers_keep_their_case_and_colons_need_quotes() {
    let e = engine();
    assert_eq!(scalar_f64(&e, "SELECT value FROM ALERTS").await, 1.0);
    assert_eq!(
        scalar_f64(&e, "SELECT value FROM \"job:up:ratio\"").await,
        0.5
    );
    let err = run(&e, "SELECT value FROM alerts").await.unwrap_err();
    assert!(matches!(err, QueryError::InvalidArgument(_)), "{err:?}");
    assert!(err.to_string().contains("alerts"), "{err}");
}

#[tokio::test]
async fn explain_shows_pushdown_and_analyze_counts_rows() {
    let e = engine();
    let plan = plan_text(
        &run(&e, "EXPLAIN SELECT value FROM node_cpu_seconds_total WHERE mode = 'idle' AND timestamp > '1970-01-01T00:00:05Z'")
            .await
            .unwrap(),
    );
    assert!(
        plan.contains("HeadScanExec: metric=node_cpu_seconds_total"),
        "{plan}"
    );
    assert!(plan.contains("labels=[mode = \"idle\"]"), "{plan}");
    // `> 5 s` is `>= 5.001 s` for whole milliseconds; the scan applies both conditions
    // exactly, so DataFusion keeps no filter and reads no column for one.
    assert!(plan.contains("time=[5001, ..]"), "{plan}");
    assert!(plan.contains("projection=[value]"), "{plan}");
    assert!(!plan.contains("FilterExec"), "{plan}");
    let analyzed = plan_text(
        &run(&e, "EXPLAIN ANALYZE SELECT value FROM node_cpu_seconds_total WHERE mode = 'idle' AND cpu = '0'")
            .await
            .unwrap(),
    );
    let scan_line = analyzed
        .lines()
        .find(|l| l.contains("HeadScanExec"))
        .unwrap();
    assert!(
        scan_line.contains("output_rows=10"),
        "the scan produced only matching rows: {scan_line}"
    );
}

#[tokio::test]
async fn writes_and_file_access_are_refused_with_the_statement_named() {
    let e = engine();
    let cases = [
        ("INSERT INTO up VALUES ('a', 'b', now(), 1)", "INSERT"),
        ("CREATE TABLE t AS SELECT 1", "CREATE TABLE"),
        (
            "CREATE OR REPLACE VIEW v AS SELECT 1",
            "CREATE OR REPLACE VIEW",
        ),
        ("DROP TABLE up", "DROP TABLE"),
        ("DELETE FROM up", "DELETE"),
        ("UPDATE up SET value = 1", "UPDATE"),
        ("COPY up TO '/tmp/x.parquet'", "COPY"),
        (
            "CREATE EXTERNAL TABLE x STORED AS CSV LOCATION '/etc/passwd'",
            "CREATE EXTERNAL TABLE",
        ),
        ("SET datafusion.execution.batch_size = 1", "SET"),
        (
            "EXPLAIN INSERT INTO up VALUES ('a', 'b', now(), 1)",
            "INSERT",
        ),
        ("EXPLAIN ANALYZE COPY up TO '/tmp/x.parquet'", "COPY"),
        ("TRUNCATE TABLE up", "TRUNCATE TABLE"),
    ];
    for (sql, kind) in cases {
        match e.plan(sql).await {
            Err(QueryError::PermissionDenied(msg)) => {
                assert!(
                    msg.starts_with(&format!("{kind} is not allowed")),
                    "{sql}: {msg}"
                )
            }
            other => panic!("{sql}: expected PermissionDenied, got {other:?}"),
        }
    }
    // DDL hidden inside a query is caught at the plan level.
    let err = e.plan("SELECT 1 AS x INTO newtable").await.unwrap_err();
    assert!(matches!(err, QueryError::PermissionDenied(_)), "{err:?}");
    assert!(e.metrics().errors.get() >= cases.len() as u64);
}

#[tokio::test]
async fn metadata_statements_run() {
    let e = engine();
    for sql in [
        "SHOW TABLES",
        "SHOW COLUMNS FROM up",
        "DESCRIBE up",
        "WITH x AS (SELECT value FROM up) SELECT * FROM x",
        "SELECT table_name FROM information_schema.tables",
        "EXPLAIN SELECT 1",
        "SELECT * FROM system.series",
    ] {
        run(&e, sql)
            .await
            .unwrap_or_else(|err| panic!("{sql}: {err}"));
    }
    let tables = run(&e, "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' ORDER BY table_name").await.unwrap();
    let names: Vec<&str> = tables[0]
        .column(0)
        .as_string::<i32>()
        .iter()
        .map(Option::unwrap)
        .collect();
    assert_eq!(
        names,
        ["ALERTS", "job:up:ratio", "node_cpu_seconds_total", "up"]
    );
}

#[tokio::test]
async fn bad_sql_is_an_invalid_argument() {
    let e = engine();
    for sql in [
        "SELEC 1",
        "SELECT * FROM no_such_metric",
        "SELECT nope FROM up",
        "",
        "SELECT 1; SELECT 2",
    ] {
        match e.plan(sql).await {
            Err(QueryError::InvalidArgument(msg)) => assert!(!msg.is_empty()),
            other => panic!("{sql}: expected InvalidArgument, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn system_targets_reads_the_source() {
    #[derive(Debug)]
    struct Two;
    impl TargetsSource for Two {
        fn targets(&self) -> Vec<TargetRow> {
            vec![
                TargetRow {
                    job: "node".into(),
                    instance: "h:9100".into(),
                    url: "http://h:9100/metrics".into(),
                    health: "up".into(),
                    last_scrape: Some(1),
                    last_duration_seconds: Some(0.01),
                    last_error: None,
                    samples: 500,
                },
                TargetRow {
                    job: "dead".into(),
                    instance: "h:1".into(),
                    url: "http://h:1/metrics".into(),
                    health: "down".into(),
                    last_scrape: Some(1),
                    last_duration_seconds: Some(0.001),
                    last_error: Some("connection refused".into()),
                    samples: 0,
                },
            ]
        }
    }
    let e = QueryEngine::new(head(), Arc::new(Two), &QueryConfig::default()).unwrap();
    let b = run(
        &e,
        "SELECT health, last_error FROM system.targets WHERE job = 'dead'",
    )
    .await
    .unwrap();
    assert_eq!(b[0].column(0).as_string::<i32>().value(0), "down");
    assert_eq!(
        b[0].column(1).as_string::<i32>().value(0),
        "connection refused"
    );
    let b = run(
        &e,
        "SELECT metric, labels FROM system.series WHERE metric = 'up'",
    )
    .await
    .unwrap();
    assert_eq!(
        b[0].column(1).as_string::<i32>().value(0),
        r#"{"instance":"h:9100","job":"node"}"#
    );
}

#[tokio::test]
async fn system_metrics_describes_every_table() {
    let head = head();
    head.metadata().set(
        "node_cpu_seconds_total",
        storage::MetricMetadata {
            kind: "counter".into(),
            help: "CPU time.".into(),
            unit: String::new(),
        },
    );
    let e = QueryEngine::new(
        Arc::clone(&head),
        Arc::new(NoTargets),
        &QueryConfig::default(),
    )
    .unwrap();
    let b = run(
        &e,
        "SELECT metric, type, help FROM system.metrics ORDER BY metric",
    )
    .await
    .unwrap();
    let metric = b[0].column(0).as_string::<i32>();
    let kind = b[0].column(1).as_string::<i32>();
    let rows: Vec<(&str, &str)> = (0..b[0].num_rows())
        .map(|i| (metric.value(i), kind.value(i)))
        .collect();
    assert_eq!(
        rows,
        [
            ("ALERTS", "unknown"),
            ("job:up:ratio", "unknown"),
            ("node_cpu_seconds_total", "counter"),
            ("up", "unknown")
        ]
    );
    assert_eq!(b[0].column(2).as_string::<i32>().value(2), "CPU time.");
}

#[tokio::test]
async fn new_labels_widen_the_table_between_queries() {
    let head = head();
    let e = QueryEngine::new(
        Arc::clone(&head),
        Arc::new(NoTargets),
        &QueryConfig::default(),
    )
    .unwrap();
    let mut app = head.appender();
    let r = app
        .series(
            "up",
            &[("job", "node"), ("instance", "h:9100"), ("zone", "eu")],
        )
        .unwrap();
    app.append(r, 10_000, 0.0);
    app.commit().unwrap();
    assert_eq!(
        scalar_i64(&e, "SELECT count(*) FROM up WHERE zone IS NULL").await,
        1
    );
    assert_eq!(
        scalar_i64(&e, "SELECT count(*) FROM up WHERE zone = 'eu'").await,
        1
    );
}

#[test]
fn statement_kinds_are_named() {
    let parse = |sql: &str| {
        let dialect = datafusion::sql::sqlparser::dialect::GenericDialect {};
        datafusion::sql::sqlparser::parser::Parser::parse_sql(&dialect, sql)
            .unwrap()
            .remove(0)
    };
    assert_eq!(statement_kind(&parse("insert into t values (1)")), "INSERT");
    assert_eq!(
        statement_kind(&parse("create temporary view v as select 1")),
        "CREATE TEMPORARY VIEW"
    );
    assert_eq!(statement_kind(&parse("drop schema s")), "DROP SCHEMA");
}

/// A head whose older half was cut into blocks: `m` has `host` everywhere, `zone` only in
/// the block and `rack` only in the head; `gone` lives in the block only.
fn head_and_blocks(dir: &std::path::Path) -> QueryEngine {
    let head = Arc::new(Head::new(HeadConfig {
        chunk_rows: 8,
        max_series: 0,
    }));
    let blocks = Arc::new(storage::block::Blocks::open(dir).unwrap());
    let mut app = head.appender();
    for h in ["a", "b"] {
        let r = app.series("m", &[("host", h), ("zone", "z1")]).unwrap();
        for t in 0..10 {
            app.append(r, t * 1000, t as f64);
        }
    }
    let g = app.series("gone", &[("x", "1")]).unwrap();
    app.append(g, 500, 7.0);
    app.commit().unwrap();
    // 0..5 s goes to a block; the head still holds those chunks' rows until truncation,
    // and must not show them twice.
    blocks.cut(&head, 5_000).unwrap().unwrap();
    for h in ["a", "b"] {
        let r = app.series("m", &[("host", h), ("rack", "r9")]).unwrap();
        for t in 10..15 {
            app.append(r, t * 1000, t as f64);
        }
    }
    app.commit().unwrap();
    QueryEngine::with_blocks(
        head,
        Some(blocks),
        Arc::new(NoTargets),
        &QueryConfig::default(),
    )
    .unwrap()
}

#[tokio::test]
async fn tables_span_head_and_blocks_without_duplicates_and_widen() {
    let dir = tempfile::tempdir().unwrap();
    let e = head_and_blocks(dir.path());
    // 2 hosts × 10 samples in the first series, 2 × 5 in the second.
    assert_eq!(scalar_i64(&e, "SELECT count(*) FROM m").await, 30);
    assert_eq!(
        scalar_i64(&e, "SELECT count(DISTINCT (host, timestamp)) FROM m").await,
        30
    );
    assert_eq!(
        scalar_f64(&e, "SELECT sum(value) FROM m").await,
        2.0 * (45.0 + 60.0)
    );
    // Columns from the block and from the head, in name order.
    let planned = e.plan("SELECT * FROM m").await.unwrap();
    let names: Vec<String> = planned
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    assert_eq!(names, vec!["host", "rack", "zone", "timestamp", "value"]);
    assert_eq!(
        scalar_i64(&e, "SELECT count(*) FROM m WHERE zone = 'z1'").await,
        20
    );
    assert_eq!(
        scalar_i64(&e, "SELECT count(*) FROM m WHERE rack = 'r9'").await,
        10
    );
    assert_eq!(
        scalar_i64(&e, "SELECT count(*) FROM m WHERE rack IS NULL").await,
        20
    );
    // Time bounds on either side of the cut, and across it.
    let at = |s: i64| format!("to_timestamp_millis({})", s * 1000);
    for (lo, hi, want) in [(0, 4, 10), (5, 9, 10), (3, 11, 18), (20, 30, 0)] {
        let sql = format!(
            "SELECT count(*) FROM m WHERE timestamp >= {} AND timestamp <= {}",
            at(lo),
            at(hi)
        );
        assert_eq!(scalar_i64(&e, &sql).await, want, "{sql}");
    }
    // A metric only blocks hold is a table too.
    assert_eq!(scalar_f64(&e, "SELECT sum(value) FROM gone").await, 7.0);
    let tables = run(&e, "SHOW TABLES").await.unwrap();
    let text = arrow::util::pretty::pretty_format_batches(&tables)
        .unwrap()
        .to_string();
    assert!(text.contains("gone") && text.contains("| m "), "{text}");
    // The block shows in system.blocks, its metrics in system.metrics.
    assert_eq!(
        scalar_i64(
            &e,
            "SELECT count(*) FROM system.blocks WHERE state = 'persisted' AND rows = 11 AND level = 1 \
             AND min_timestamp = to_timestamp_millis(0) AND max_timestamp = to_timestamp_millis(4000)"
        )
        .await,
        1
    );
    assert_eq!(
        scalar_i64(
            &e,
            "SELECT count(*) FROM system.metrics WHERE metric IN ('gone', 'm')"
        )
        .await,
        2
    );
    // Labels come out as plain strings from blocks as from the head.
    let b = run(
        &e,
        "SELECT host, zone FROM m WHERE timestamp < to_timestamp_millis(1000) ORDER BY host",
    )
    .await
    .unwrap();
    assert_eq!(b[0].column(0).data_type(), &DataType::Utf8);
    assert_eq!(b[0].column(1).as_string::<i32>().value(0), "z1");
}

#[tokio::test]
async fn a_block_that_fails_to_decode_while_queried_is_set_aside_and_the_rest_served() {
    let dir = tempfile::tempdir().unwrap();
    let e = head_and_blocks(dir.path());
    // Damage a data page of the block's file of `m`; its size and footer stay valid, so only
    // reading it finds out.
    let block = std::fs::read_dir(dir.path().join("blocks"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let file = block.join("m.parquet");
    let mut bytes = std::fs::read(&file).unwrap();
    let n = bytes.len();
    let footer = u32::from_le_bytes(bytes[n - 8..n - 4].try_into().unwrap()) as usize;
    for b in &mut bytes[4..n - 8 - footer] {
        *b ^= 0x5a;
    }
    std::fs::write(&file, bytes).unwrap();

    let err = run(&e, "SELECT sum(value) FROM m")
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("moved to the corrupted directory"), "{err}");
    assert!(
        dir.path()
            .join("corrupted")
            .join(block.file_name().unwrap())
            .exists()
    );
    // The head's rows (from 5 s on) are still served; the state shows why the rest is gone.
    assert_eq!(scalar_i64(&e, "SELECT count(*) FROM m").await, 20);
    assert_eq!(
        scalar_i64(
            &e,
            "SELECT count(*) FROM system.blocks WHERE state = 'corrupted'"
        )
        .await,
        1
    );
    // A query error that is not about a block file changes nothing.
    assert!(run(&e, "SELECT 1/0").await.is_err());
    assert_eq!(scalar_i64(&e, "SELECT count(*) FROM m").await, 20);
}

#[tokio::test]
async fn blocks_under_a_relative_data_dir_are_read() {
    // `storage.path` defaults to `./data`: block file paths must not be taken from the root.
    // Tests run in the crate directory; the directory is removed on drop.
    let dir = tempfile::tempdir_in(".").unwrap();
    let relative = std::path::Path::new(".").join(dir.path().file_name().unwrap());
    let e = head_and_blocks(&relative);
    assert_eq!(
        scalar_i64(
            &e,
            "SELECT count(*) FROM m WHERE timestamp < to_timestamp_millis(5000)"
        )
        .await,
        10
    );
    assert_eq!(scalar_i64(&e, "SELECT count(*) FROM gone").await, 1);
}

#[tokio::test]
async fn time_series_functions_are_registered_and_span_head_and_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let e = head_and_blocks(dir.path());
    // Values 0..9 at 0..9 s, half in the block, half in the head.
    assert_eq!(
        scalar_f64(
            &e,
            "SELECT increase(value, timestamp) FROM m WHERE host = 'a' AND zone = 'z1'"
        )
        .await,
        9.0
    );
    assert_eq!(
        scalar_f64(
            &e,
            "SELECT rate(value, timestamp) FROM m WHERE host = 'b' AND zone = 'z1'"
        )
        .await,
        1.0
    );
}

#[tokio::test]
async fn a_metric_whose_file_name_is_escaped_is_read_back_from_its_block() {
    let dir = tempfile::tempdir().unwrap();
    let head = Arc::new(Head::new(HeadConfig::test_config()));
    let blocks = Arc::new(storage::block::Blocks::open(dir.path()).unwrap());
    let mut app = head.appender();
    // Remote write accepts any metric name; its block file is percent-encoded.
    let r = app.series("odd.name/x%y", &[("k", "v")]).unwrap();
    app.append(r, 1_000, 1.0);
    app.append(r, 2_000, 2.0);
    app.commit().unwrap();
    blocks.cut(&head, 1_500).unwrap().unwrap();
    let e = QueryEngine::with_blocks(
        head,
        Some(blocks),
        Arc::new(NoTargets),
        &QueryConfig::default(),
    )
    .unwrap();
    assert_eq!(
        scalar_f64(&e, "SELECT sum(value) FROM \"odd.name/x%y\"").await,
        3.0
    );
}

fn engine_with(config: QueryConfig) -> QueryEngine {
    QueryEngine::new(head(), Arc::new(NoTargets), &config).unwrap()
}

/// Waits (bounded) until `f` holds.
async fn eventually(what: &str, f: impl Fn() -> bool) {
    for _ in 0..200 {
        if f() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    panic!("not within 5 s: {what}");
}

#[tokio::test]
async fn a_query_over_the_timeout_is_cancelled_with_the_limit_named() {
    let e = engine_with(QueryConfig {
        timeout: Duration::from_millis(300),
        ..QueryConfig::default()
    });
    // Far more work than 300 ms: counting ten billion generated rows.
    let started = std::time::Instant::now();
    let err = run(&e, "SELECT count(*) FROM generate_series(1, 10000000000)")
        .await
        .unwrap_err();
    assert!(
        matches!(&err, QueryError::ResourceExhausted(m) if m.contains("query.timeout (300ms)")),
        "{err:?}"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(20));
    assert_eq!(e.metrics().timeouts.get(), 1);
    eventually("the cancelled query gives its slot back", || {
        e.metrics().running.get() == 0
    })
    .await;
    // The engine serves the next query.
    assert_eq!(scalar_i64(&e, "SELECT count(*) FROM up").await, 1);
}

#[tokio::test]
async fn a_query_over_the_memory_limit_fails_with_the_limit_named() {
    let e = engine_with(QueryConfig {
        memory_limit: ByteSize(1 << 20),
        ..QueryConfig::default()
    });
    // Sorting 5 M rows needs tens of MB; no spilling to disk.
    let err = run(
        &e,
        "SELECT value FROM generate_series(1, 5000000) AS t(value) ORDER BY value DESC",
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&err, QueryError::ResourceExhausted(m) if m.contains("query.memory_limit (1MB")),
        "{err:?}"
    );
    // Its memory went back to the pool: a small query runs.
    assert_eq!(scalar_i64(&e, "SELECT count(*) FROM up").await, 1);
}

#[tokio::test]
async fn beyond_max_concurrent_queries_wait_for_a_slot_within_the_timeout() {
    let e = engine_with(QueryConfig {
        timeout: Duration::from_millis(500),
        max_concurrent: 1,
        ..QueryConfig::default()
    });
    // Holds the only slot: a result nobody reads yet.
    let held = e
        .execute("SELECT value FROM generate_series(1, 1000000) AS t(value)")
        .await
        .unwrap();
    eventually("the first query runs", || e.metrics().running.get() == 1).await;
    let err = run(&e, "SELECT 1").await.unwrap_err();
    assert!(
        matches!(&err, QueryError::ResourceExhausted(m)
            if m.contains("query.max_concurrent (1)") && m.contains("query.timeout (500ms)")),
        "{err:?}"
    );
    // Dropping a result cancels its query and frees the slot.
    drop(held);
    eventually("the dropped query ends", || e.metrics().running.get() == 0).await;
    assert_eq!(scalar_i64(&e, "SELECT count(*) FROM up").await, 1);
    assert_eq!(e.metrics().queued.get(), 0);
}

#[tokio::test]
async fn queries_run_on_their_own_runtime() {
    let e = engine();
    let b = run(&e, "SELECT count(*) AS n FROM node_cpu_seconds_total")
        .await
        .unwrap();
    assert_eq!(b[0].column(0).as_primitive::<Int64Type>().value(0), 40);
    // The caller's runtime (this test's) is not where execution happened: a plan that
    // reports its thread would be better, but the handle is observable directly.
    assert_ne!(
        e.limits.handle.id(),
        tokio::runtime::Handle::current().id(),
        "queries must not share the caller's runtime"
    );
}

#[tokio::test]
async fn parameters_bind_by_position_with_dollar_or_question_marks() {
    let e = engine();
    let planned = e
        .plan("SELECT value FROM up WHERE job = $1 AND value > $2")
        .await
        .unwrap();
    let params = planned.parameter_schema().unwrap();
    assert_eq!(params.field(0).name(), "$1");
    assert_eq!(params.field(0).data_type(), &DataType::Utf8, "{params:?}");
    assert_eq!(
        params.field(1).data_type(),
        &DataType::Float64,
        "{params:?}"
    );

    for sql in [
        "SELECT count(*) FROM up WHERE job = $1 AND value > $2",
        "SELECT count(*) FROM up WHERE job = ? AND value > ?",
    ] {
        let count = |job: &str, min: f64| {
            let e = e.clone();
            let job = job.to_string();
            async move {
                let planned = e
                    .plan_with_params(
                        sql,
                        vec![
                            ScalarValue::Utf8(Some(job)),
                            ScalarValue::Float64(Some(min)),
                        ],
                    )
                    .await
                    .unwrap();
                let b = collect(planned).await;
                b[0].column(0).as_primitive::<Int64Type>().value(0)
            }
        };
        assert_eq!(count("node", 0.5).await, 1, "{sql}");
        assert_eq!(count("node", 1.5).await, 0, "{sql}");
        assert_eq!(count("other", 0.0).await, 0, "{sql}");
    }
    // Integers bound where a float is expected are cast.
    let planned = e
        .plan_with_params(
            "SELECT count(*) FROM up WHERE value = $1",
            vec![ScalarValue::Int64(Some(1))],
        )
        .await
        .unwrap();
    let b = collect(planned).await;
    assert_eq!(b[0].column(0).as_primitive::<Int64Type>().value(0), 1);

    let err = e
        .plan_with_params("SELECT value FROM up WHERE job = $1", vec![])
        .await
        .unwrap_err();
    assert!(
        matches!(&err, QueryError::InvalidArgument(m) if m.contains("1 parameter(s) but 0")),
        "{err:?}"
    );
    let err = e
        .plan_with_params(
            "SELECT value FROM up WHERE value = $1",
            vec![ScalarValue::Utf8(Some("not a number".into()))],
        )
        .await
        .unwrap_err();
    assert!(matches!(&err, QueryError::InvalidArgument(_)), "{err:?}");
}

#[tokio::test]
async fn tables_lists_metrics_and_system_tables_with_wire_schemas() {
    let e = engine();
    let tables = e.tables().await.unwrap();
    let up = tables.iter().find(|t| t.name == "up").unwrap();
    assert_eq!(
        (up.catalog.as_str(), up.schema.as_str(), up.table_type),
        (CATALOG, METRICS_SCHEMA, "TABLE")
    );
    assert_eq!(
        up.columns.field_with_name("job").unwrap().data_type(),
        &DataType::Utf8
    );
    let targets = tables.iter().find(|t| t.name == "targets").unwrap();
    assert_eq!(
        (targets.schema.as_str(), targets.table_type),
        ("system", "SYSTEM TABLE")
    );
    assert!(tables.iter().any(|t| t.name == "job:up:ratio"));
}

#[tokio::test]
async fn no_function_or_table_reference_reads_files() {
    let e = engine();
    for sql in [
        "SELECT * FROM read_parquet('/etc/passwd')",
        "SELECT * FROM read_csv('/etc/passwd')",
        "SELECT * FROM '/etc/passwd'",
        "SELECT * FROM 'file:///etc/passwd'",
        "SELECT * FROM \"/etc/hostname\"",
    ] {
        let err = run(&e, sql).await.unwrap_err();
        assert!(
            matches!(
                &err,
                QueryError::InvalidArgument(_) | QueryError::PermissionDenied(_)
            ),
            "{sql}: {err:?}"
        );
        assert!(!err.to_string().contains("root:"), "{sql}: {err}");
    }
    let err = e.plan("PREPARE p AS SELECT 1").await.unwrap_err();
    assert!(matches!(err, QueryError::PermissionDenied(_)), "{err:?}");
}

#[tokio::test]
async fn small_tables_are_planned_for_one_partition_large_ones_for_every_core() {
    let sql = "EXPLAIN SELECT job, max(value) FROM node_cpu_seconds_total GROUP BY job";
    let small = plan_text(&run(&engine(), sql).await.unwrap());
    assert!(!small.contains("RepartitionExec"), "{small}");

    let head = Arc::new(Head::new(HeadConfig {
        chunk_rows: 8192,
        max_series: 0,
    }));
    let mut app = head.appender();
    for s in 0..20 {
        let r = app
            .series(
                "node_cpu_seconds_total",
                &[("job", "node"), ("cpu", &s.to_string())],
            )
            .unwrap();
        for t in 0..7_000 {
            app.append(r, 1_000 * t, t as f64);
        }
    }
    app.commit().unwrap();
    let large = QueryEngine::new(head, Arc::new(NoTargets), &QueryConfig::default()).unwrap();
    let plan = plan_text(&run(&large, sql).await.unwrap());
    if several_cores() {
        assert!(plan.contains("RepartitionExec"), "{plan}");
    }
    assert_eq!(
        scalar_f64(
            &large,
            "SELECT max(value) FROM node_cpu_seconds_total WHERE cpu = '7'"
        )
        .await,
        6_999.0
    );
}

/// Whether queries planned for every core get more than one partition here.
fn several_cores() -> bool {
    std::thread::available_parallelism().map_or(1, |n| n.get()) > 1
}

async fn count_of(planned: PlannedQuery) -> i64 {
    collect(planned).await[0]
        .column(0)
        .as_primitive::<Int64Type>()
        .value(0)
}

/// A head of 8-row chunks holding `rows` samples of one series of `m`, blocks in `dir` (none
/// yet), and an engine over both.
fn one_series_in_8_row_chunks(
    dir: &std::path::Path,
    rows: i64,
    config: QueryConfig,
) -> (Arc<Head>, Arc<storage::block::Blocks>, QueryEngine) {
    let head = Arc::new(Head::new(HeadConfig {
        chunk_rows: 8,
        max_series: 0,
    }));
    let blocks = Arc::new(storage::block::Blocks::open(dir).unwrap());
    let mut app = head.appender();
    let r = app.series("m", &[("host", "a")]).unwrap();
    for t in 0..rows {
        app.append(r, t * 1000, t as f64);
    }
    app.commit().unwrap();
    let e = QueryEngine::with_blocks(
        Arc::clone(&head),
        Some(Arc::clone(&blocks)),
        Arc::new(NoTargets),
        &config,
    )
    .unwrap();
    (head, blocks, e)
}

#[tokio::test]
async fn a_plan_kept_for_its_run_is_used_once_and_never_after_a_cut() {
    let dir = tempfile::tempdir().unwrap();
    let (head, blocks, e) = one_series_in_8_row_chunks(dir.path(), 16, QueryConfig::default());
    let sql = "SELECT count(*) FROM m";
    let handle = sql.as_bytes();

    e.keep(handle, &e.plan(sql).await.unwrap());
    let kept = e.take_kept(handle).expect("kept for the run");
    assert!(e.take_kept(handle).is_none(), "a kept plan runs once");
    assert_eq!(count_of(kept).await, 16);
    assert_eq!(e.metrics().reused_plans.get(), 1);

    // A cut between planning and running: the plan lists no block file and reads the head
    // from the start, but the head gave its first chunk to the new block.
    let stale = e.plan(sql).await.unwrap();
    e.keep(handle, &stale);
    blocks.cut(&head, 8_000).unwrap().unwrap();
    assert!(e.take_kept(handle).is_none(), "planned before the cut");
    assert_eq!(e.metrics().reused_plans.get(), 1);
    assert_eq!(count_of(e.plan(sql).await.unwrap()).await, 16);
    // What the check prevents: the old plan misses the rows that moved.
    assert_eq!(count_of(stale).await, 8);
}

async fn count_rows(stream: SendableRecordBatchStream) -> usize {
    let batches: Vec<RecordBatch> = stream.try_collect().await.unwrap();
    batches.iter().map(RecordBatch::num_rows).sum()
}

#[tokio::test]
async fn a_query_started_for_its_read_is_read_once_never_after_a_cut_and_leaves_half_the_slots() {
    let dir = tempfile::tempdir().unwrap();
    let config = QueryConfig {
        max_concurrent: 2,
        ..QueryConfig::default()
    };
    let (head, blocks, e) = one_series_in_8_row_chunks(dir.path(), 80, config);
    let sql = "SELECT * FROM m";
    let handle = sql.as_bytes();

    assert!(
        e.start_early(handle, e.plan(sql).await.unwrap()).is_none(),
        "started"
    );
    let started = e.take_started(handle).expect("started for the read");
    assert!(
        e.take_started(handle).is_none(),
        "a started query is read once"
    );
    assert_eq!(count_rows(started.into_stream()).await, 80);
    assert_eq!(e.metrics().reused_plans.get(), 1);
    eventually("the query that was read gave its slot back", || {
        e.metrics().running.get() == 0
    })
    .await;

    // An unread query of ten chunks holds its slot (its channel is full): one of two free is
    // not more than half, so the next plan is given back, not started.
    assert!(e.start_early(b"held", e.plan(sql).await.unwrap()).is_none());
    let back = e.start_early(handle, e.plan(sql).await.unwrap());
    assert!(back.is_some(), "started with half the slots busy");
    // Taking the unread query out and dropping it cancels it and frees its slot.
    drop(e.take_started(b"held").expect("held"));
    let mut back = back;
    for _ in 0..200 {
        match e.start_early(handle, back.take().expect("given back")) {
            None => break,
            Some(plan) => back = Some(plan),
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert!(
        back.is_none(),
        "the cancelled query freed its slot within 5 s"
    );

    // A cut between starting and reading: the query may have read the head before the cut
    // gave its first chunks to the new block, so it is dropped and the statement planned
    // again.
    blocks.cut(&head, 8_000).unwrap().unwrap();
    assert!(e.take_started(handle).is_none(), "started before the cut");
    assert_eq!(count_rows(e.execute(sql).await.unwrap()).await, 80);
}

#[tokio::test]
async fn block_files_get_the_time_range_and_label_matchers_and_keep_what_they_decoded() {
    let dir = tempfile::tempdir().unwrap();
    let e = head_and_blocks(dir.path());
    let sql = "SELECT host, value FROM m WHERE timestamp >= '1970-01-01T00:00:03Z' AND host = 'a'";
    let plan = plan_text(&run(&e, &format!("EXPLAIN {sql}")).await.unwrap());
    let scan = plan
        .lines()
        .find(|l| l.contains("BlockScanExec"))
        .unwrap_or_else(|| panic!("no block scan in {plan}"));
    // The head's part is in the same union; both get the time range and the matcher.
    assert!(plan.contains("HeadScanExec"), "{plan}");
    assert!(scan.contains("time=[3000, ..]"), "{scan}");
    assert!(scan.contains(r#"labels=[host = "a"]"#), "{scan}");
    // Host a's rows from 3 s on: 3-4 s in the block, 5-14 s in the head.
    let rows = |batches: &[RecordBatch]| batches.iter().map(|b| b.num_rows()).sum::<usize>();
    assert_eq!(rows(&run(&e, sql).await.unwrap()), 12);

    // The second run reads the block's columns from the cache: no miss, no bytes read.
    let analyze = |batches: Vec<RecordBatch>| {
        let text = plan_text(&batches);
        text.lines()
            .find(|l| l.contains("BlockScanExec"))
            .unwrap_or_else(|| panic!("no block scan in {text}"))
            .to_string()
    };
    let second = analyze(run(&e, &format!("EXPLAIN ANALYZE {sql}")).await.unwrap());
    assert!(second.contains("cache_misses=0"), "{second}");
    assert!(second.contains("bytes_scanned=0"), "{second}");
    assert!(!second.contains("cache_hits=0"), "{second}");
    assert!(second.contains("output_rows=2"), "{second}");
    assert_eq!(rows(&run(&e, sql).await.unwrap()), 12);
    // Another column of the same file is a miss for that column only.
    let zone = analyze(
        run(
            &e,
            "EXPLAIN ANALYZE SELECT zone FROM m WHERE timestamp < '1970-01-01T00:00:05Z'",
        )
        .await
        .unwrap(),
    );
    assert!(zone.contains("cache_misses=1"), "{zone}");
    assert!(zone.contains("output_rows=10"), "{zone}");
}

#[tokio::test]
async fn exact_pushdown_replaces_datafusions_filter_and_keeps_sql_semantics_at_the_edges() {
    let dir = tempfile::tempdir().unwrap();
    let e = head_and_blocks(dir.path());
    // m{host, zone=z1} at 0..9 s (0..4 s in the block, 5..9 s in the head), m{host, rack=r9}
    // at 10..14 s; two hosts each.
    let ms = |t: i64| format!("to_timestamp_millis({t})");
    let cases = [
        (format!("timestamp > {}", ms(4000)), 20),
        (format!("timestamp >= {}", ms(4000)), 22),
        (format!("timestamp < {}", ms(5000)), 10),
        (format!("timestamp <= {}", ms(5000)), 12),
        (format!("timestamp = {}", ms(4000)), 2),
        (format!("timestamp = {}", ms(5000)), 2),
        (format!("{} < timestamp", ms(13_000)), 2),
        (
            format!("timestamp BETWEEN {} AND {}", ms(4000), ms(5000)),
            4,
        ),
        (
            format!("timestamp > {} AND timestamp < {}", ms(4000), ms(5000)),
            0,
        ),
        (format!("timestamp > {} AND host = 'a'", ms(4000)), 10),
        ("timestamp > '1970-01-01T00:00:04Z'".to_string(), 20),
        // DataFusion casts a finer literal to the column's milliseconds (4.000000001 s to
        // 4 s) before storage sees it; the answer follows that cast.
        (
            "timestamp > arrow_cast(4000000001, 'Timestamp(Nanosecond, Some(\"UTC\"))')"
                .to_string(),
            20,
        ),
        // A missing label is NULL: it fails `<>` and `NOT IN` as well as `=`.
        ("zone <> 'z1'".to_string(), 0),
        ("zone <> 'x'".to_string(), 20),
        ("zone NOT IN ('x', 'y')".to_string(), 20),
        ("rack = 'r9'".to_string(), 10),
        ("host IN ('a')".to_string(), 15),
        ("host IN ('a') AND rack IN ('r9')".to_string(), 5),
    ];
    for (filter, expected) in &cases {
        let sql = format!("SELECT count(*) FROM m WHERE {filter}");
        assert_eq!(scalar_i64(&e, &sql).await, *expected, "{sql}");
        // Storage applies these exactly, so DataFusion keeps no filter of its own.
        let plan = plan_text(&run(&e, &format!("EXPLAIN {sql}")).await.unwrap());
        assert!(!plan.contains("FilterExec"), "{sql}: {plan}");
    }
    // Others keep DataFusion's filter, with storage narrowing what it reads where it can: a
    // finer literal, a value comparison, a cast that changes the column.
    let cases = [
        ("value > 3 AND host = 'a'", 11),
        ("CAST(timestamp AS DATE) = DATE '1970-01-01'", 30),
        ("host LIKE 'a%'", 15),
    ];
    for (filter, expected) in &cases {
        let sql = format!("SELECT count(*) FROM m WHERE {filter}");
        assert_eq!(scalar_i64(&e, &sql).await, *expected, "{sql}");
        let plan = plan_text(&run(&e, &format!("EXPLAIN {sql}")).await.unwrap());
        assert!(plan.contains("FilterExec"), "{sql}: {plan}");
    }
}

/// The query benchmark's four questions and other single-table shapes, on [`head`]'s tables.
fn single_table_shapes() -> Vec<String> {
    let window = "timestamp >= to_timestamp_millis(0) AND timestamp < to_timestamp_millis(10000)";
    [
        // The query benchmark's four questions, on this head's columns.
        format!(
            "SELECT t, job, sum(r) AS value FROM (
               SELECT * EXCLUDE (timestamp, value), date_bin(INTERVAL '5 minutes', timestamp) AS t,
                      rate(value, timestamp) AS r
               FROM node_cpu_seconds_total WHERE {window} GROUP BY ALL)
             GROUP BY t, job ORDER BY t, job"
        ),
        "SELECT instance, max(value) AS value FROM node_cpu_seconds_total
         WHERE timestamp > to_timestamp_millis(5000) AND timestamp <= to_timestamp_millis(9000)
         GROUP BY instance ORDER BY instance"
            .to_string(),
        format!(
            "WITH per_series AS (
               SELECT * EXCLUDE (timestamp, value), date_bin(INTERVAL '5 minutes', timestamp) AS t,
                      increase(value, timestamp) AS n
               FROM node_cpu_seconds_total WHERE {window} GROUP BY ALL),
             per_le AS (SELECT t, mode AS le, sum(n) AS n FROM per_series GROUP BY t, mode)
             SELECT t, histogram_quantile(0.99, le, n) AS value FROM per_le GROUP BY t ORDER BY t"
        ),
        "SELECT * EXCLUDE (timestamp, value), last_value(value ORDER BY timestamp) AS value
         FROM node_cpu_seconds_total WHERE timestamp > now() - INTERVAL '5 minutes' GROUP BY ALL"
            .to_string(),
        // Other single-table shapes: nested filters and projections, OR and casts, windows,
        // DISTINCT, HAVING, system tables, VALUES.
        "SELECT cpu, v FROM (SELECT cpu, value * 2 AS v, timestamp FROM node_cpu_seconds_total
           WHERE mode = 'idle') WHERE v > 10 AND (cpu = '0' OR cpu IN ('1', '2'))
           AND CAST(timestamp AS BIGINT) > 1000 ORDER BY v DESC"
            .to_string(),
        "SELECT cpu, value - lag(value) OVER (PARTITION BY cpu, mode ORDER BY timestamp) AS d
         FROM node_cpu_seconds_total WHERE job = 'node' AND 1 = 1"
            .to_string(),
        "SELECT DISTINCT mode FROM node_cpu_seconds_total WHERE cpu <> '1'".to_string(),
        "SELECT cpu, count(*) AS n FROM node_cpu_seconds_total GROUP BY cpu
         HAVING count(*) > 1 ORDER BY n, cpu"
            .to_string(),
        "SELECT metric, count(*) FROM system.series GROUP BY metric".to_string(),
        "SELECT column1 + 1 FROM (VALUES (1), (2)) WHERE column1 > 1".to_string(),
    ]
    .into()
}

#[tokio::test]
async fn one_optimizer_pass_gives_the_plan_of_three_on_single_table_shapes() {
    let engine = engine();
    for sql in &single_table_shapes() {
        let planned = engine.plan(sql).await.unwrap();
        let (mut state, plan) = planned.frame.into_parts();
        assert!(single_pass_shape(&plan), "{sql}");
        let three = state.optimize(&plan).unwrap();
        state.config_mut().options_mut().optimizer.max_passes = 1;
        let one = state.optimize(&plan).unwrap();
        assert_eq!(
            one.display_indent_schema().to_string(),
            three.display_indent_schema().to_string(),
            "{sql}"
        );
    }
    // Joins, unions, subqueries and limits keep every pass (a second pass folds this limit
    // into the sort).
    for sql in [
        "SELECT cpu FROM node_cpu_seconds_total ORDER BY value DESC LIMIT 3",
        "SELECT a.cpu FROM node_cpu_seconds_total a JOIN up b ON a.job = b.job",
        "SELECT job FROM up UNION ALL SELECT job FROM node_cpu_seconds_total",
        "SELECT cpu FROM node_cpu_seconds_total WHERE value > (SELECT avg(value) FROM up)",
        "SELECT cpu FROM node_cpu_seconds_total WHERE job IN (SELECT job FROM up)",
        "SELECT cpu FROM node_cpu_seconds_total n WHERE EXISTS
           (SELECT 1 FROM up u WHERE u.job = n.job)",
    ] {
        let planned = engine.plan(sql).await.unwrap();
        assert!(!single_pass_shape(planned.frame.logical_plan()), "{sql}");
    }
}

/// The plans of `frame` for one partition, with the single-table mark set or not: the
/// optimized logical plan, the names of its physical operators (sorted: the requirements rule moves a sort below a projection that
/// only renames, which changes no answer) and its answer.
async fn narrow_physical_plan(frame: &DataFrame, marked: bool) -> (String, String, String) {
    fn operators(plan: &Arc<dyn ExecutionPlan>, out: &mut Vec<String>) {
        out.push(plan.name().to_string());
        for child in plan.children() {
            operators(child, out);
        }
    }
    let (mut state, plan) = frame.clone().into_parts();
    let options = state.config_mut().options_mut();
    options.execution.target_partitions = 1;
    options.optimizer.max_passes = 1;
    crate::plan_rules::mark_single_table(&mut state, marked);
    let logical = state
        .optimize(&plan)
        .unwrap()
        .display_indent_schema()
        .to_string();
    let plan = state.create_physical_plan(&plan).await.unwrap();
    let mut lines = Vec::new();
    operators(&plan, &mut lines);
    lines.sort();
    let batches = datafusion::physical_plan::collect(plan, state.task_ctx())
        .await
        .unwrap();
    let answer = arrow::util::pretty::pretty_format_batches(&batches)
        .unwrap()
        .to_string();
    (logical, lines.join("\n"), answer)
}

#[tokio::test]
async fn skipped_rules_keep_the_plans_and_answers_of_narrow_single_table_queries() {
    let engine = engine();
    let mut marked = 0;
    for sql in &single_table_shapes() {
        let planned = engine.plan(sql).await.unwrap();
        let plan = planned.frame.logical_plan();
        assert!(single_pass_shape(plan), "{sql}");
        if has_window(plan) {
            continue;
        }
        marked += 1;
        assert_eq!(
            narrow_physical_plan(&planned.frame, true).await,
            narrow_physical_plan(&planned.frame, false).await,
            "{sql}"
        );
    }
    assert!(marked >= 8, "{marked}");
    // A table read from blocks and head, and aggregates that need their input sorted: the
    // requirements rule still runs where one is unmet.
    let dir = tempfile::tempdir().unwrap();
    let e = head_and_blocks(dir.path());
    for sql in [
        "SELECT host, max(value) FROM m GROUP BY host ORDER BY host",
        "SELECT host, array_agg(value ORDER BY timestamp DESC) AS v FROM m GROUP BY host \
         ORDER BY host",
        "SELECT * EXCLUDE (timestamp, value), last_value(value ORDER BY timestamp) AS value \
         FROM m GROUP BY ALL ORDER BY host, zone, rack",
    ] {
        let frame = e.plan(sql).await.unwrap().frame;
        assert_eq!(
            narrow_physical_plan(&frame, true).await,
            narrow_physical_plan(&frame, false).await,
            "{sql}"
        );
    }
    let sql = "SELECT host, array_agg(value ORDER BY timestamp DESC) AS v FROM m GROUP BY host \
               ORDER BY host";
    let (_, _, answer) = narrow_physical_plan(&e.plan(sql).await.unwrap().frame, true).await;
    assert!(
        answer.contains("| a    | [14.0, 13.0, 12.0, 11.0, 10.0, 9.0, 8.0, 7.0, 6.0, 5.0, 4.0, 3.0, 2.0, 1.0, 0.0] |"),
        "{answer}"
    );
}

/// Rows the optimized plan of `sql` reads, as the engine counts them to choose partitions.
async fn rows_read(engine: &QueryEngine, sql: &str) -> u64 {
    let (state, plan) = engine.plan(sql).await.unwrap().frame.into_parts();
    scanned_rows(&state.optimize(&plan).unwrap())
}

#[tokio::test]
async fn a_short_range_of_a_long_table_is_planned_for_one_partition() {
    // 20 series × 7,000 samples, appended time first, so each 8 Ki-row head chunk holds ~410
    // seconds of every series.
    let head = Arc::new(Head::new(HeadConfig {
        chunk_rows: 8192,
        max_series: 0,
    }));
    let mut app = head.appender();
    let series: Vec<_> = (0..20)
        .map(|s| {
            app.series(
                "node_cpu_seconds_total",
                &[("job", "node"), ("cpu", &s.to_string())],
            )
            .unwrap()
        })
        .collect();
    for t in 0..7_000 {
        for &r in &series {
            app.append(r, 1_000 * t, t as f64);
        }
    }
    app.commit().unwrap();
    let e = QueryEngine::new(head, Arc::new(NoTargets), &QueryConfig::default()).unwrap();
    let whole = "SELECT job, max(value) FROM node_cpu_seconds_total GROUP BY job";
    let short = "SELECT job, max(value) FROM node_cpu_seconds_total
                 WHERE timestamp >= to_timestamp_millis(6500000) GROUP BY job";
    assert_eq!(rows_read(&e, whole).await, 140_000);
    // The last 500 s are 10,000 rows; whole chunks count.
    let rows = rows_read(&e, short).await;
    assert!((10_000..=10_000 + 2 * 8192).contains(&rows), "{rows}");
    assert_eq!(
        rows_read(
            &e,
            "SELECT max(value) FROM node_cpu_seconds_total WHERE timestamp < to_timestamp_millis(0)"
        )
        .await,
        0
    );
    let plan = plan_text(&run(&e, &format!("EXPLAIN {short}")).await.unwrap());
    assert!(!plan.contains("RepartitionExec"), "{plan}");
    if several_cores() {
        let plan = plan_text(&run(&e, &format!("EXPLAIN {whole}")).await.unwrap());
        assert!(plan.contains("RepartitionExec"), "{plan}");
    }
    assert_eq!(
        scalar_f64(
            &e,
            "SELECT max(value) FROM node_cpu_seconds_total WHERE timestamp >= to_timestamp_millis(6500000)"
        )
        .await,
        6_999.0
    );

    // Block files count only where the range meets them: `m` has 10 rows in its block (0–4 s)
    // and the rest in the head.
    let dir = tempfile::tempdir().unwrap();
    let e = head_and_blocks(dir.path());
    let all = rows_read(&e, "SELECT count(*) FROM m").await;
    let late = rows_read(
        &e,
        "SELECT count(*) FROM m WHERE timestamp >= to_timestamp_millis(10000)",
    )
    .await;
    let early = rows_read(
        &e,
        "SELECT count(*) FROM m WHERE timestamp < to_timestamp_millis(5000)",
    )
    .await;
    // 10 block rows and 30 head rows; from 10 s, the head chunks holding 10–14 s; before
    // 5 s, the block alone (the head is read from where the block ends).
    assert_eq!((all, late, early), (40, 14, 10));
    // Planned for one partition, the two are read in turn, with no merge of partitions.
    let plan = plan_text(
        &run(&e, "EXPLAIN SELECT host, count(*) FROM m GROUP BY host")
            .await
            .unwrap(),
    );
    assert!(plan.contains("ChainExec: inputs=2"), "{plan}");
    assert!(!plan.contains("CoalescePartitionsExec"), "{plan}");
    assert!(!plan.contains("UnionExec"), "{plan}");
}

fn column_names(planned: &PlannedQuery) -> Vec<String> {
    planned
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect()
}

#[tokio::test]
async fn a_statement_seen_before_reuses_its_plan_until_its_tables_change() {
    let dir = tempfile::tempdir().unwrap();
    let (head, blocks, e) = one_series_in_8_row_chunks(dir.path(), 16, QueryConfig::default());
    let hits = || e.metrics().plan_cache_hits.get();
    let count = "SELECT count(*) FROM m";
    assert_eq!(count_of(e.plan(count).await.unwrap()).await, 16);
    assert_eq!(hits(), 0);
    let kept = e.plans.get(count, e.generation()).expect("kept");
    assert!(kept.optimized, "the run left its optimized plan");

    // Rows appended since are read: rows are read when a plan runs.
    let mut app = head.appender();
    let a = app.series("m", &[("host", "a")]).unwrap();
    for t in 16..20 {
        app.append(a, t * 1000, t as f64);
    }
    app.commit().unwrap();
    assert_eq!(count_of(e.plan(count).await.unwrap()).await, 20);
    assert_eq!(hits(), 1);

    // A new label is a new column: the statement is planned again and shows it.
    let star = "SELECT * FROM m";
    assert_eq!(
        column_names(&e.plan(star).await.unwrap()),
        ["host", "timestamp", "value"]
    );
    let z = app.series("m", &[("host", "b"), ("zone", "z")]).unwrap();
    app.append(z, 20_000, 1.0);
    app.commit().unwrap();
    let hits_before = hits();
    assert_eq!(
        column_names(&e.plan(star).await.unwrap()),
        ["host", "zone", "timestamp", "value"]
    );
    assert_eq!(hits(), hits_before, "planned again");
    assert_eq!(count_of(e.plan(count).await.unwrap()).await, 21);
    assert_eq!(hits(), hits_before, "m changed: planned again");

    // A cut moves the first rows into a block: planned again, nothing lost or doubled.
    blocks.cut(&head, 8_000).unwrap().unwrap();
    assert_eq!(count_of(e.plan(count).await.unwrap()).await, 21);
    assert_eq!(hits(), hits_before, "new block view: planned again");
    assert_eq!(count_of(e.plan(count).await.unwrap()).await, 21);
    assert_eq!(hits(), hits_before + 1);
}

#[tokio::test]
async fn time_dependent_parameterised_system_and_explain_statements_are_right_each_time() {
    let e = engine();
    let hits = || e.metrics().plan_cache_hits.get();

    // now() is the time of each run: the logical plan is reused, never its folded constant.
    let now = "SELECT now() AS t";
    let first = Arc::clone(run(&e, now).await.unwrap()[0].column(0));
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let second = Arc::clone(run(&e, now).await.unwrap()[0].column(0));
    assert_eq!(hits(), 1);
    assert_ne!(first.as_ref(), second.as_ref(), "now() of the first run");
    assert!(!e.plans.get(now, 0).unwrap().optimized);

    // A parameterised statement reuses its plan with the values of each call.
    let sql = "SELECT count(*) FROM node_cpu_seconds_total WHERE value >= $1";
    let with = |v: f64| e.plan_with_params(sql, vec![ScalarValue::Float64(Some(v))]);
    assert_eq!(count_of(with(0.0).await.unwrap()).await, 40);
    assert_eq!(count_of(with(50.0).await.unwrap()).await, 20);
    assert_eq!(hits(), 2);
    assert!(!e.plans.get(sql, 0).unwrap().optimized);

    // system.* tables are filled when resolved, and EXPLAIN shows the planning: never kept.
    for sql in [
        "SELECT count(*) FROM system.series",
        "EXPLAIN SELECT count(*) FROM up",
        "SELECT count(*) FROM information_schema.tables",
    ] {
        run(&e, sql).await.unwrap();
        run(&e, sql).await.unwrap();
        assert!(e.plans.get(sql, 0).is_none(), "{sql}");
    }
    assert_eq!(hits(), 2);
}

#[tokio::test]
async fn plan_cache_zero_plans_every_statement() {
    let e = QueryEngine::new(
        head(),
        Arc::new(NoTargets),
        &QueryConfig {
            plan_cache: 0,
            ..QueryConfig::default()
        },
    )
    .unwrap();
    for _ in 0..2 {
        assert_eq!(scalar_i64(&e, "SELECT count(*) FROM up").await, 1);
    }
    assert_eq!(e.metrics().plan_cache_hits.get(), 0);
}
