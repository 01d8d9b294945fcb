//! `arrowhead import openmetrics`: backfill into a stopped and into a running replica.

use std::fmt::Write as _;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arrow::array::AsArray;
use arrow::datatypes::{Float64Type, Int64Type};

use crate::support::{Replica, arrowhead_bin};

const CONFIG: &str = "global: {scrape_interval: 1s}\nstorage: {block_duration: 2s}\n";
const STEP_S: i64 = 60;

fn now_s() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Three counter series and one gauge, one sample a minute for `hours` from `start` (s);
/// counter values are `i * (series + 1) + bump`.
fn openmetrics(start: i64, hours: i64, bump: f64) -> String {
    let mut s = String::from("# TYPE jobs counter\n# HELP jobs Jobs done.\n");
    let n = hours * 3600 / STEP_S;
    for series in 0..3 {
        for i in 0..n {
            let v = (i * (series + 1)) as f64 + bump;
            let t = start + i * STEP_S;
            writeln!(s, "jobs_total{{queue=\"q{series}\"}} {v} {t}").unwrap();
        }
    }
    s.push_str("# TYPE temperature gauge\n# UNIT temperature celsius\n");
    for i in 0..n {
        writeln!(s, "temperature{{room=\"lab\"}} 20.5 {}", start + i * STEP_S).unwrap();
    }
    s.push_str("# EOF\n");
    s
}

fn import(file: &std::path::Path, data_dir: &std::path::Path) -> std::process::Output {
    Command::new(arrowhead_bin())
        .args(["import", "openmetrics"])
        .arg(file)
        .arg("--data-dir")
        .arg(data_dir)
        .output()
        .unwrap()
}

fn block_dirs(data_dir: &std::path::Path) -> usize {
    std::fs::read_dir(data_dir.join("blocks")).unwrap().count()
}

async fn count_and_sum(replica: &Replica, sql: &str) -> (i64, f64) {
    let (_, batches) = replica.query(sql).await;
    let b = &batches[0];
    (
        b.column(0).as_primitive::<Int64Type>().value(0),
        b.column(1).as_primitive::<Float64Type>().value(0),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imported_history_is_served_offline_and_beside_a_running_replica() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("arrowhead.yml"), CONFIG).unwrap();
    let data = dir.path().join("data");
    // Three days ago, 4 hours: two 2-hour blocks.
    let start = (now_s() - 3 * 86_400) / 7_200 * 7_200;
    let file = dir.path().join("history.om");
    std::fs::write(&file, openmetrics(start, 4, 0.0)).unwrap();

    let out = import(&file, &data);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("imported 960 samples") && stdout.contains("2 block(s)"),
        "{stdout}"
    );

    let replica = Replica::start_in(dir).await;
    let per_series: i64 = 4 * 3600 / STEP_S;
    let expected_sum: f64 = (0..3)
        .map(|s| (0..per_series).map(|i| (i * (s + 1)) as f64).sum::<f64>())
        .sum();
    let (n, sum) = count_and_sum(&replica, "SELECT count(*), sum(value) FROM jobs_total").await;
    assert_eq!((n, sum), (3 * per_series, expected_sum));
    let (_, b) = replica
        .query("SELECT count(*) FROM system.blocks WHERE level = 2")
        .await;
    assert!(b[0].column(0).as_primitive::<Int64Type>().value(0) >= 1);

    // Beside the running replica: older history, taken in at its next compaction pass.
    let older = replica.dir.path().join("older.om");
    std::fs::write(&older, openmetrics(start - 86_400, 1, 0.0)).unwrap();
    let out = import(&older, &replica.data_dir());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("next compaction pass"));
    let per_hour = 3600 / STEP_S;
    replica
        .wait_for_count(
            "SELECT count(*) FROM jobs_total",
            3 * (per_series + per_hour),
            Duration::from_secs(20),
        )
        .await;

    // The first file again with other values: the imported samples replace the served ones,
    // none is doubled.
    std::fs::write(&file, openmetrics(start, 4, 1000.0)).unwrap();
    let out = import(&file, &replica.data_dir());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let window = format!(
        "SELECT count(*), sum(value) FROM jobs_total WHERE timestamp >= to_timestamp({start})"
    );
    let bumped = expected_sum + 1000.0 * (3 * per_series) as f64;
    crate::support::eventually(
        "the re-import to be served",
        Duration::from_secs(20),
        || {
            let replica = &replica;
            let window = &window;
            async move {
                let (_, b) = replica.try_query(window).await.ok()?;
                let n = b[0].column(0).as_primitive::<Int64Type>().value(0);
                let sum = b[0].column(1).as_primitive::<Float64Type>().value(0);
                (sum == bumped).then_some(n)
            }
        },
    )
    .await;
    let (n, _) = count_and_sum(&replica, &window).await;
    assert_eq!(n, 3 * per_series, "no sample doubled");

    // Data reaching into the head is refused, with nothing written.
    let blocks_before = block_dirs(&replica.data_dir());
    let recent = replica.dir.path().join("recent.om");
    std::fs::write(&recent, openmetrics(now_s() - 600, 1, 0.0)).unwrap();
    let out = import(&recent, &replica.data_dir());
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("head of the replica") && stderr.contains("nothing was written"),
        "{stderr}"
    );
    assert_eq!(block_dirs(&replica.data_dir()), blocks_before);
}

#[test]
fn bad_files_are_refused_with_the_line_and_nothing_written() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let cases = [
        ("no_ts", "x 1\n# EOF\n", "has no timestamp"),
        ("bad_line", "x 1 10\nx{ 2 3\n# EOF\n", "line 2"),
        ("no_eof", "x 1 10\n", "EOF"),
        ("empty", "# EOF\n", "no samples"),
    ];
    for (name, text, expect) in cases {
        let file = dir.path().join(name);
        std::fs::write(&file, text).unwrap();
        let out = import(&file, &data);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{name}");
        assert!(stderr.contains(expect), "{name}: {stderr}");
    }
    let missing = import(&dir.path().join("absent"), &data);
    assert!(String::from_utf8_lossy(&missing.stderr).contains("cannot read"));
    assert_eq!(
        std::fs::read_dir(data.join("blocks"))
            .map(|d| d.count())
            .unwrap_or(0),
        0
    );
}
