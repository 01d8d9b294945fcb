//! The WAL's cost on the commit path, and replay speed at start-up.
//!
//! Run: `cargo bench -p arrowhead-storage --bench wal`. Throughput is in samples.
//!
//! * `commit/no_wal` vs `commit/wal`: one commit of 1,000 samples of 1,000 existing series
//!   (a scrape of a mid-size target), steady state (series already defined in the segment).
//! * `replay`: opening a head from a WAL of 1,000 series × 200 commits (200,000 samples).

use std::hint::black_box;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use storage::wal::WalConfig;
use storage::{Appender, Head, HeadConfig, SeriesRef};

const SERIES: usize = 1000;

fn series(head: &Head) -> Vec<SeriesRef> {
    let mut app = head.appender();
    (0..SERIES)
        .map(|i| {
            let instance = format!("host-{:03}:9100", i % 50);
            let cpu = (i / 50).to_string();
            app.series(
                "node_cpu_seconds_total",
                &[
                    ("job", "node"),
                    ("instance", &instance),
                    ("cpu", &cpu),
                    ("mode", "user"),
                ],
            )
            .unwrap()
        })
        .collect()
}

fn commit_one(head: &Head, refs: &[SeriesRef], t: i64) {
    let mut app = head.appender();
    for (i, r) in refs.iter().enumerate() {
        app.append(*r, t, (t as f64) * 0.01 + i as f64);
    }
    black_box(app.commit().unwrap());
}

fn commit(c: &mut Criterion) {
    let mut group = c.benchmark_group("commit");
    group.throughput(Throughput::Elements(SERIES as u64));
    let head = Head::new(HeadConfig::default());
    let refs = series(&head);
    let mut t = 0;
    group.bench_function("no_wal", |b| {
        b.iter(|| {
            t += 15_000;
            commit_one(&head, &refs, t)
        })
    });
    let dir = tempfile::tempdir().unwrap();
    let (head, _) = Head::open(
        HeadConfig::default(),
        dir.path(),
        WalConfig::default(),
        i64::MIN,
    )
    .unwrap();
    let refs = series(&head);
    let mut t = 0;
    group.bench_function("wal", |b| {
        b.iter(|| {
            t += 15_000;
            commit_one(&head, &refs, t)
        })
    });
    group.finish();
}

fn replay(c: &mut Criterion) {
    const COMMITS: i64 = 200;
    let dir = tempfile::tempdir().unwrap();
    {
        let (head, _) = Head::open(
            HeadConfig::default(),
            dir.path(),
            WalConfig::default(),
            i64::MIN,
        )
        .unwrap();
        let refs = series(&head);
        for t in 0..COMMITS {
            commit_one(&head, &refs, t * 15_000);
        }
    }
    let bytes: u64 = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    eprintln!(
        "WAL: {bytes} bytes for {} samples ({:.1} bytes/sample)",
        SERIES as i64 * COMMITS,
        bytes as f64 / (SERIES as i64 * COMMITS) as f64
    );
    let mut group = c.benchmark_group("replay");
    group.sample_size(10);
    group.throughput(Throughput::Elements(SERIES as u64 * COMMITS as u64));
    group.bench_function("1000_series_x_200", |b| {
        b.iter_batched(
            || {
                // Each open starts a new (empty) segment: replay a fresh copy every time.
                let copy = tempfile::tempdir().unwrap();
                for e in std::fs::read_dir(dir.path()).unwrap() {
                    let e = e.unwrap();
                    std::fs::copy(e.path(), copy.path().join(e.file_name())).unwrap();
                }
                copy
            },
            |copy| {
                let (head, stats) = Head::open(
                    HeadConfig::default(),
                    copy.path(),
                    WalConfig::default(),
                    i64::MIN,
                )
                .unwrap();
                assert_eq!(stats.samples_restored, SERIES as u64 * COMMITS as u64);
                black_box(head);
                copy
            },
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

criterion_group!(benches, commit, replay);
criterion_main!(benches);
