//! Queries cannot starve scraping: a burst of heavy concurrent queries (bounded in count and
//! time) runs while the replica scrapes itself every second; every scheduled scrape happens
//! and no interval between two exceeds 3 × the configured one.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use arrow::array::AsArray;
use arrow::datatypes::TimestampMillisecondType;

use crate::support::Replica;

/// CPU-bound work DataFusion cannot shortcut: hashing tens of millions of generated rows.
const HEAVY: &str = "SELECT count(DISTINCT v % 1000003) FROM generate_series(1, 40000000) AS t(v)";

/// Field `n` of a /proc `stat` line, numbered from 1 as proc(5) does. The command name
/// (field 2) is parenthesised and may hold spaces, so fields are counted after it.
fn stat_field(stat: &str, n: usize) -> &str {
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    rest.split_whitespace().nth(n - 3).unwrap()
}

/// The replica's user + system CPU time, from /proc.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // utime and stime.
    let ticks: f64 = stat_field(&stat, 14).parse::<f64>().unwrap()
        + stat_field(&stat, 15).parse::<f64>().unwrap();
    ticks / 100.0 // USER_HZ is 100 on Linux
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[tokio::test]
async fn heavy_queries_do_not_delay_or_skip_scrapes() {
    let replica = Replica::start(Some(
        "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: self\n    \
         static_configs:\n      - targets: [SELF]\nquery:\n  timeout: 6s\n  max_concurrent: 4\n",
    ))
    .await;
    replica
        .wait_for_count("SELECT count(*) FROM up", 2, Duration::from_secs(20))
        .await;

    let cpu_before = cpu_seconds(replica.pid());
    let start_ms = now_ms();
    let burst = Duration::from_secs(12);
    let until = Instant::now() + burst;
    let url = replica.url();
    let client = || async {
        let mut sent = 0;
        // Bounded in count and in time.
        while Instant::now() < until && sent < 20 {
            let _ =
                query::client::query_with_failover(std::slice::from_ref(&url), None, None, HEAVY)
                    .await;
            sent += 1;
        }
        sent
    };
    let sent: usize = futures::future::join_all((0..6).map(|_| client()))
        .await
        .into_iter()
        .sum();
    let end_ms = now_ms();
    let cpu = cpu_seconds(replica.pid()) - cpu_before;
    let wall = (end_ms - start_ms) as f64 / 1000.0;
    // The burst really loaded the replica (both cores most of the time).
    assert!(
        cpu > wall * 0.5,
        "the queries were not heavy: {cpu:.1} s CPU in {wall:.1} s ({sent} queries)"
    );

    let sql = format!(
        "SELECT timestamp FROM up WHERE job = 'self' AND timestamp >= to_timestamp_millis({start_ms}) \
         AND timestamp <= to_timestamp_millis({end_ms}) ORDER BY timestamp"
    );
    let (_, batches) = replica.query(&sql).await;
    let times: Vec<i64> = batches
        .iter()
        .flat_map(|b| {
            b.column(0)
                .as_primitive::<TimestampMillisecondType>()
                .values()
                .to_vec()
        })
        .collect();
    let gaps: Vec<i64> = times.windows(2).map(|w| w[1] - w[0]).collect();
    let max_gap = gaps.iter().copied().max().unwrap_or(i64::MAX);
    let expected = (end_ms - start_ms) / 1000;
    eprintln!(
        "{sent} heavy queries, {cpu:.1} s CPU in {wall:.1} s; {} scrapes, largest interval {max_gap} ms",
        times.len()
    );
    assert!(
        max_gap <= 3_000,
        "a scrape interval reached {max_gap} ms (bound 3 000 ms); gaps: {gaps:?}\n{}",
        replica.log()
    );
    // Every scheduled scrape happened: one per second of the burst (the first and last may
    // fall just outside the window).
    assert!(
        times.len() as i64 >= expected - 1,
        "{} scrapes in {expected} s; gaps: {gaps:?}",
        times.len()
    );
    let metrics = replica.metrics_text().await;
    assert!(
        metrics.contains("arrowhead_query_executions_total"),
        "{metrics}"
    );
}

/// Each thread of process `pid` by name (`comm`), with the scheduling policies seen under it
/// (/proc/PID/task/TID/stat, field 41: 0 is the default policy, 3 `SCHED_BATCH`).
fn thread_policies(pid: u32) -> BTreeMap<String, BTreeSet<u32>> {
    let mut policies = BTreeMap::<_, BTreeSet<_>>::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let task = task.unwrap().path();
        // A thread may end between the listing and the reads.
        let (Ok(name), Ok(stat)) = (
            std::fs::read_to_string(task.join("comm")),
            std::fs::read_to_string(task.join("stat")),
        ) else {
            continue;
        };
        let policy: u32 = stat_field(&stat, 41).parse().unwrap();
        policies
            .entry(name.trim().to_string())
            .or_default()
            .insert(policy);
    }
    policies
}

/// The query runtime's threads are batch work, so that waking one never preempts a running
/// thread (see the binary's `sched` module); every other thread (scraping, WAL, HTTP) keeps
/// the default policy, and preempts query threads when it wakes.
#[tokio::test]
async fn query_threads_run_as_batch_work_and_no_other_thread_does() {
    let replica = Replica::start(None).await;
    // A query, so that its runtime's threads have surely started.
    replica
        .wait_for_count(
            "SELECT count(*) FROM (SELECT 1)",
            1,
            Duration::from_secs(20),
        )
        .await;
    let policies = thread_policies(replica.pid());
    assert_eq!(
        policies.get("arrowhead-query"),
        Some(&[3].into()),
        "query threads: {policies:?}"
    );
    for (name, seen) in &policies {
        if name != "arrowhead-query" {
            assert_eq!(seen, &[0].into(), "thread {name}: {policies:?}");
        }
    }
    assert!(policies.len() > 1, "{policies:?}");
}
