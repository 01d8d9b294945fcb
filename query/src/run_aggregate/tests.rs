use std::sync::Arc;

use arrow::array::{Float64Array, Int64Array, RecordBatch, StringViewArray};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::util::pretty::pretty_format_batches;
use datafusion::datasource::MemTable;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::physical_plan::displayable;
use datafusion::prelude::{SessionConfig, SessionContext};

use super::*;

/// Rows of (job, instance, ts, value): `series` series of `per_series` samples each, in
/// series order when `sorted`, else interleaved; every 7th job NULL.
fn batches(series: usize, per_series: usize, sorted: bool, batch_rows: usize) -> Vec<RecordBatch> {
    let mut rows = Vec::new();
    for s in 0..series {
        for i in 0..per_series {
            rows.push((s, i));
        }
    }
    if !sorted {
        rows.sort_by_key(|&(s, i)| (i, s));
    }
    let schema = schema();
    rows.chunks(batch_rows)
        .map(|chunk| {
            let job: StringViewArray = chunk
                .iter()
                .map(|&(s, _)| (s % 7 != 3).then(|| format!("job-{}", s % 5)))
                .collect();
            let instance: StringViewArray = chunk
                .iter()
                .map(|&(s, _)| Some(format!("a-rather-long-instance-name-{s}:9100")))
                .collect();
            let ts: Int64Array = chunk.iter().map(|&(_, i)| i as i64 * 15).collect();
            let value: Float64Array = chunk.iter().map(|&(s, i)| (s * i) as f64).collect();
            RecordBatch::try_new(
                Arc::clone(&schema),
                vec![
                    Arc::new(job),
                    Arc::new(instance),
                    Arc::new(ts),
                    Arc::new(value),
                ],
            )
            .unwrap()
        })
        .collect()
}

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("job", DataType::Utf8View, true),
        Field::new("instance", DataType::Utf8View, false),
        Field::new("ts", DataType::Int64, false),
        Field::new("value", DataType::Float64, false),
    ]))
}

fn context(with_rule: bool, partitions: usize, memory: Option<usize>) -> SessionContext {
    let config = SessionConfig::new()
        .with_target_partitions(partitions)
        .with_batch_size(100);
    let mut runtime = RuntimeEnvBuilder::new();
    if let Some(bytes) = memory {
        runtime = runtime.with_memory_limit(bytes, 1.0);
    }
    let mut state = SessionStateBuilder::new()
        .with_config(config)
        .with_runtime_env(runtime.build_arc().unwrap())
        .with_default_features();
    if with_rule {
        state = state.with_physical_optimizer_rule(Arc::new(RunAggregateRule));
    }
    SessionContext::new_with_state(state.build())
}

async fn run(ctx: &SessionContext, data: &[RecordBatch], sql: &str) -> (String, String) {
    // Two input partitions, so both Partial/Final and Single plans occur.
    let half = data.len().div_ceil(2);
    let parts = vec![data[..half].to_vec(), data[half..].to_vec()];
    let table = MemTable::try_new(schema(), parts).unwrap();
    ctx.deregister_table("t").unwrap();
    ctx.register_table("t", Arc::new(table)).unwrap();
    let frame = ctx.sql(sql).await.unwrap();
    let plan = frame.clone().create_physical_plan().await.unwrap();
    let shown = displayable(plan.as_ref()).indent(true).to_string();
    let out = frame.collect().await.unwrap();
    (pretty_format_batches(&out).unwrap().to_string(), shown)
}

const QUERIES: &[&str] = &[
    // Planned as two aggregates without DISTINCT, both of which this node runs.
    "SELECT job, count(DISTINCT instance) FROM t GROUP BY job ORDER BY job",
    "SELECT job, instance, ts / 300 AS b, sum(value), count(*), min(value), max(value) \
     FROM t GROUP BY job, instance, ts / 300 ORDER BY job, instance, b",
    "SELECT job, instance, last_value(value ORDER BY ts) AS v, first_value(ts ORDER BY ts) \
     FROM t GROUP BY ALL ORDER BY job, instance",
    "SELECT job, avg(value) FROM t GROUP BY job ORDER BY job",
];

#[tokio::test]
async fn results_match_the_hash_aggregate_in_any_input_order() {
    for sorted in [true, false] {
        for partitions in [1, 2] {
            let data = batches(37, 45, sorted, 64);
            for sql in QUERIES {
                let (expected, plain) = run(&context(false, partitions, None), &data, sql).await;
                let (got, plan) = run(&context(true, partitions, None), &data, sql).await;
                assert!(!plain.contains("RunAggregateExec"), "{plain}");
                assert!(
                    plan.contains("RunAggregateExec"),
                    "rule not applied:\n{plan}"
                );
                assert_eq!(
                    got, expected,
                    "sorted={sorted} partitions={partitions}\n{sql}\n{plan}"
                );
            }
        }
    }
}

/// Runs a per-series count over `data` on one partition: (result rows, runs found, rows
/// interned) as the `RunAggregateExec` counted them.
async fn run_counts(data: Vec<RecordBatch>) -> (usize, usize, usize) {
    let ctx = context(true, 1, None);
    let table = MemTable::try_new(schema(), vec![data]).unwrap();
    ctx.register_table("t", Arc::new(table)).unwrap();
    let frame = ctx
        .sql("SELECT job, instance, count(*) FROM t GROUP BY job, instance")
        .await
        .unwrap();
    let plan = frame.create_physical_plan().await.unwrap();
    let out = datafusion::physical_plan::collect(Arc::clone(&plan), ctx.task_ctx())
        .await
        .unwrap();
    let mut found = None;
    plan.apply(|node| {
        if node.name() == "RunAggregateExec" {
            found = node.metrics();
        }
        Ok(TreeNodeRecursion::Continue)
    })
    .unwrap();
    let metrics = found.expect("a RunAggregateExec ran");
    (
        out.iter().map(RecordBatch::num_rows).sum(),
        metrics.sum_by_name("runs").unwrap().as_usize(),
        metrics.sum_by_name("interned_rows").unwrap().as_usize(),
    )
}

#[tokio::test]
async fn sorted_input_interns_one_row_per_run() {
    let (rows, runs, interned) = run_counts(batches(10, 40, true, 100)).await;
    assert_eq!(rows, 10);
    // 400 rows in 4 batches of 100: 10 series of 40 rows; the batch edges at 100 and 300
    // split a series (200 falls between two) → 10 + 2 runs.
    assert_eq!(runs, 12);
    assert_eq!(interned, 12);
}

#[tokio::test]
async fn unsorted_input_is_interned_row_by_row() {
    let (_, _, interned) = run_counts(batches(50, 4, false, 100)).await;
    assert_eq!(interned, 200);
}

#[tokio::test]
async fn memory_over_the_pool_fails_the_query() {
    let ctx = context(true, 1, Some(64 * 1024));
    let data = batches(2_000, 2, true, 1_000);
    let table = MemTable::try_new(schema(), vec![data]).unwrap();
    ctx.register_table("t", Arc::new(table)).unwrap();
    let frame = ctx
        .sql("SELECT job, instance, ts, sum(value) FROM t GROUP BY job, instance, ts")
        .await
        .unwrap();
    let err = frame.collect().await.unwrap_err().to_string();
    assert!(
        err.contains("Resources exhausted") && err.contains("RunAggregateExec"),
        "{err}"
    );
}

#[tokio::test]
async fn filtered_and_keyless_aggregates_stay_with_datafusion() {
    let data = batches(5, 5, true, 10);
    for sql in [
        "SELECT job, sum(value) FILTER (WHERE value > 1) FROM t GROUP BY job ORDER BY job",
        "SELECT ts, sum(value) FROM t GROUP BY ts ORDER BY ts",
        "SELECT sum(value) FROM t",
    ] {
        let (expected, _) = run(&context(false, 2, None), &data, sql).await;
        let (got, plan) = run(&context(true, 2, None), &data, sql).await;
        assert!(!plan.contains("RunAggregateExec"), "{sql}\n{plan}");
        assert_eq!(got, expected);
    }
}
