//! The cost of cutting the head into a block: every `storage.block_duration` the replica
//! sorts the head's rows of each metric and writes them as Parquet, on the ingest path's CPU
//! budget.
//!
//! Run: `cargo bench -p arrowhead-storage --bench cut`. Throughput is in samples.
//!
//! The head holds 10 minutes at 15 s (40 samples per series) of 20 targets × 1,000 series
//! shaped like the ingest benchmark's (`benches/ingest_vs_prometheus.py`): ten counter
//! metrics of 100 series per target labelled `code`, `method`, `path` besides `job` and
//! `instance`, all scrapes committed in the order a scraper commits them. Building the head
//! is not timed; writing includes the fsync of each file, as a cut does.

use std::hint::black_box;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use storage::block::Blocks;
use storage::{Appender, Head, HeadConfig};

const TARGETS: usize = 20;
const METRICS: usize = 10;
const PER_METRIC: usize = 100;
const SCRAPES: i64 = 40;
const START: i64 = 1_767_225_600_000;

fn filled_head() -> Head {
    let head = Head::new(HeadConfig::default());
    let mut app = head.appender();
    let mut refs = Vec::new();
    for t in 0..TARGETS {
        let instance = format!("10.0.{}.{}:9100", t / 250, t % 250);
        for m in 0..METRICS {
            let metric = format!("bench_counter_{m}_total");
            for j in 0..PER_METRIC {
                let code = ["200", "404", "500"][j % 3];
                let method = ["GET", "POST"][j % 2];
                let path = format!("/api/v{}/r{j}", j % 7);
                let labels = [
                    ("job", "bench"),
                    ("instance", instance.as_str()),
                    ("code", code),
                    ("method", method),
                    ("path", path.as_str()),
                ];
                refs.push(app.series(&metric, &labels).unwrap());
            }
        }
    }
    for scrape in 0..SCRAPES {
        let ts = START + scrape * 15_000;
        for target in refs.chunks(METRICS * PER_METRIC) {
            for (i, r) in target.iter().enumerate() {
                app.append(*r, ts, (scrape * 1_000 + i as i64) as f64);
            }
            app.commit().unwrap();
        }
    }
    head
}

fn cut(c: &mut Criterion) {
    let mut group = c.benchmark_group("cut");
    group.sample_size(10);
    let samples = (TARGETS * METRICS * PER_METRIC) as u64 * SCRAPES as u64;
    group.throughput(Throughput::Elements(samples));
    group.bench_function("10m_20k_series", |b| {
        b.iter_batched(
            || {
                let dir = tempfile::tempdir().unwrap();
                let blocks = Blocks::open(dir.path()).unwrap();
                (dir, blocks, filled_head())
            },
            |(dir, blocks, head)| {
                let block = blocks.cut(&head, START + SCRAPES * 15_000).unwrap();
                assert_eq!(block.unwrap().meta.rows, samples);
                black_box(dir)
            },
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

criterion_group!(benches, cut);
criterion_main!(benches);
