//! `arrowhead export`: a query's result streamed into a Parquet file that pyarrow and DuckDB
//! read with the same schema and rows; a failed export leaves nothing behind.

use std::time::Duration;

use arrow::array::AsArray;
use arrow::datatypes::TimestampMillisecondType;

use crate::support::{Replica, run_cli, run_python};

#[tokio::test]
async fn export_writes_parquet_that_pyarrow_and_duckdb_read_alike() {
    let replica = Replica::start(None).await;
    replica
        .wait_for_count("SELECT count(*) FROM up", 2, Duration::from_secs(30))
        .await;
    let (_, b) = replica.query("SELECT max(timestamp) FROM up").await;
    let max_ts = b[0]
        .column(0)
        .as_primitive::<TimestampMillisecondType>()
        .value(0);
    // Bounded in time, so the export and the reference query see the same rows.
    let sql = format!(
        "SELECT job, instance, timestamp, value FROM up \
         WHERE timestamp <= to_timestamp_millis({max_ts}) ORDER BY timestamp"
    );
    let out_dir = tempfile::tempdir().unwrap();
    let output = out_dir.path().join("up.parquet");
    let output_s = output.display().to_string();
    let url = replica.url();

    let (ok, stdout, stderr) =
        run_cli(&["export", "--endpoint", &url, "--output", &output_s, &sql]);
    assert!(ok, "{stderr}");
    assert!(stdout.is_empty(), "{stdout}");
    // Piped: a summary line and no progress bar.
    assert!(
        stderr.starts_with("exported ") && stderr.lines().count() == 1,
        "{stderr:?}"
    );

    let (ok, json, err) = run_cli(&["query", "--endpoint", &url, "--format", "json", &sql]);
    assert!(ok, "{err}");
    let expected = out_dir.path().join("expected.json");
    std::fs::write(&expected, json).unwrap();
    let stdout = run_python(
        "export_check.py",
        &[
            &output_s,
            &expected.display().to_string(),
            &max_ts.to_string(),
        ],
        &replica.log(),
    );
    assert!(stdout.starts_with("ok"), "{stdout}");

    // An empty result still makes a file with the columns.
    let empty = out_dir.path().join("empty.parquet");
    let (ok, _, err) = run_cli(&[
        "export",
        "--endpoint",
        &url,
        "--output",
        &empty.display().to_string(),
        "SELECT job, value FROM up WHERE value > 1e300",
    ]);
    assert!(ok, "{err}");
    assert!(err.starts_with("exported 0 rows"), "{err}");

    // Failures: bad SQL, an unreachable replica. An existing file is left as it was, and no
    // temporary file stays behind.
    std::fs::write(&output, b"earlier export").unwrap();
    for (endpoint, sql) in [
        (url.as_str(), "SELECT nope FROM up"),
        ("grpc://127.0.0.1:1", "SELECT 1"),
    ] {
        let (ok, _, err) = run_cli(&["export", "--endpoint", endpoint, "--output", &output_s, sql]);
        assert!(!ok, "{sql}");
        assert!(err.starts_with("error: "), "{err}");
    }
    assert_eq!(std::fs::read(&output).unwrap(), b"earlier export");
    let mut names: Vec<String> = std::fs::read_dir(out_dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["empty.parquet", "expected.json", "up.parquet"]);

    // A directory as output is refused before anything runs.
    let (ok, _, err) = run_cli(&[
        "export",
        "--endpoint",
        &url,
        "--output",
        &out_dir.path().display().to_string(),
        "SELECT 1",
    ]);
    assert!(!ok && err.contains("is a directory"), "{err}");
}
