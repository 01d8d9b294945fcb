//! SQL golden tests: every `tests/slt/*.slt` file runs against a fresh engine over the same
//! fixture (a head with a block already cut from it), so SQL behaviour is pinned in
//! sqllogictest files rather than Rust.
//!
//! ```text
//! cargo test -p arrowhead-query --test sqllogictests              # check every file
//! cargo test -p arrowhead-query --test sqllogictests -- --complete  # rewrite expected output
//! cargo test -p arrowhead-query --test sqllogictests -- functions   # files whose name matches
//! ```
//!
//! Values print with Arrow's display formatting, NULL as `NULL`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::util::display::{ArrayFormatter, FormatOptions};
use query::system::NoTargets;
use query::{QueryConfig, QueryEngine, QueryError};
use sqllogictest::{DBOutput, DefaultColumnType};
use storage::block::Blocks;
use storage::{Appender, Head, HeadConfig};

/// 2026-01-01T00:00:00Z in ms: fixture timestamps are offsets from it.
const T0: i64 = 1_767_225_600_000;

/// The fixture every file sees (see `tests/slt/README.md`).
fn fixture(dir: &Path) -> QueryEngine {
    let head = Arc::new(Head::new(HeadConfig {
        chunk_rows: 16,
        max_series: 0,
    }));
    let blocks = Arc::new(Blocks::open(dir).unwrap());
    let s = |secs: i64| T0 + secs * 1000;
    let mut app = head.appender();
    // A counter with a reset at 45 s, per instance.
    let a = app
        .series(
            "http_requests_total",
            &[("instance", "a"), ("job", "api"), ("code", "200")],
        )
        .unwrap();
    for (t, v) in [(0, 10.0), (15, 20.0), (30, 35.0), (45, 5.0), (60, 25.0)] {
        app.append(a, s(t), v);
    }
    let b = app
        .series(
            "http_requests_total",
            &[("instance", "b"), ("job", "api"), ("code", "200")],
        )
        .unwrap();
    for (t, v) in [
        (0, 100.0),
        (15, 100.0),
        (30, 160.0),
        (45, 220.0),
        (60, 280.0),
    ] {
        app.append(b, s(t), v);
    }
    let e = app
        .series(
            "http_requests_total",
            &[("instance", "b"), ("job", "api"), ("code", "500")],
        )
        .unwrap();
    app.append(e, s(30), 1.0);
    // A gauge, with a NaN.
    let g = app.series("temperature", &[("room", "lab")]).unwrap();
    for (t, v) in [
        (0, 20.5),
        (15, 21.0),
        (30, f64::NAN),
        (45, 19.5),
        (60, 20.0),
    ] {
        app.append(g, s(t), v);
    }
    // Histogram buckets of one series at 0 s and 60 s.
    for (le, at0, at60) in [
        ("0.1", 10.0, 20.0),
        ("0.5", 60.0, 110.0),
        ("1", 90.0, 170.0),
        ("+Inf", 100.0, 200.0),
    ] {
        let r = app
            .series("latency_seconds_bucket", &[("job", "api"), ("le", le)])
            .unwrap();
        app.append(r, s(0), at0);
        app.append(r, s(60), at60);
    }
    app.commit().unwrap();
    // The first 30 s go into a block: queries read both.
    blocks.cut(&head, s(30)).unwrap().unwrap();
    QueryEngine::with_blocks(
        head,
        Some(blocks),
        Arc::new(NoTargets),
        &QueryConfig::default(),
    )
    .unwrap()
}

struct Db {
    engine: QueryEngine,
    _dir: tempfile::TempDir,
}

#[async_trait::async_trait]
impl sqllogictest::AsyncDB for Db {
    type Error = QueryError;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, QueryError> {
        use futures::TryStreamExt;
        let planned = self.engine.plan(sql).await?;
        let schema = planned.schema();
        let batches: Vec<_> = planned.execute().await?.try_collect().await?;
        let options = FormatOptions::default().with_null("NULL");
        let mut rows = Vec::new();
        for batch in &batches {
            let formatters = batch
                .columns()
                .iter()
                .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| QueryError::from(datafusion::error::DataFusionError::from(e)))?;
            for i in 0..batch.num_rows() {
                rows.push(formatters.iter().map(|f| f.value(i).to_string()).collect());
            }
        }
        let types = schema
            .fields()
            .iter()
            .map(|f| {
                if f.data_type().is_integer() {
                    DefaultColumnType::Integer
                } else if f.data_type().is_floating() {
                    DefaultColumnType::FloatingPoint
                } else {
                    DefaultColumnType::Text
                }
            })
            .collect();
        Ok(DBOutput::Rows { types, rows })
    }

    async fn shutdown(&mut self) {}

    fn engine_name(&self) -> &str {
        "arrowhead"
    }
}

fn files(filter: Option<&str>) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/slt");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "slt"))
        .filter(|p| filter.is_none_or(|f| p.to_string_lossy().contains(f)))
        .collect();
    files.sort();
    files
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let complete = args.iter().any(|a| a == "--complete");
    let filter = args
        .iter()
        .find(|a| !a.starts_with('-'))
        .map(String::as_str);
    let mut failed = 0;
    let files = files(filter);
    for file in &files {
        let mut runner = sqllogictest::Runner::new(|| async {
            let dir = tempfile::tempdir().unwrap();
            let engine = fixture(dir.path());
            Ok(Db { engine, _dir: dir })
        });
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        let result = if complete {
            runner
                .update_test_file(
                    file,
                    " ",
                    sqllogictest::default_validator,
                    sqllogictest::default_normalizer,
                    sqllogictest::default_column_validator,
                )
                .await
                .map_err(|e| e.to_string())
        } else {
            runner
                .run_file_async(file)
                .await
                .map_err(|e| e.display(true).to_string())
        };
        match result {
            Ok(()) => println!("ok   {name}"),
            Err(e) => {
                failed += 1;
                println!("FAIL {name}\n{e}");
            }
        }
    }
    println!("{} file(s), {failed} failed", files.len());
    if failed > 0 {
        std::process::exit(1);
    }
}
