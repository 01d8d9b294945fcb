//! Parser and scrape-append throughput on a real node-exporter payload
//! (`testdata/node_exporter.prom`).
//!
//! Run: `cargo bench -p arrowhead-ingest --bench exposition`. Criterion reports MB/s (bytes of
//! exposition per second); samples/s = MB/s × samples per MB, printed at the start.

use std::hint::black_box;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use ingest::append::{AppendOptions, BodyStats, ScrapeCache, append_body};
use ingest::exposition::{Entry, TextParser};
use storage::{Appender, Head, HeadConfig, Labels};

const NODE: &[u8] = include_bytes!("../../testdata/node_exporter.prom");

fn count_samples(body: &[u8]) -> usize {
    TextParser::new(body)
        .filter(|e| matches!(e, Ok(Entry::Sample(_))))
        .count()
}

fn parser(c: &mut Criterion) {
    let samples = count_samples(NODE);
    eprintln!(
        "node_exporter.prom: {} bytes, {samples} samples ({:.0} samples per MB)",
        NODE.len(),
        samples as f64 / (NODE.len() as f64 / 1e6)
    );
    let mut group = c.benchmark_group("text_parser");
    group.throughput(Throughput::Bytes(NODE.len() as u64));
    group.bench_function("node_exporter/parse", |b| {
        b.iter(|| {
            let mut sum = 0.0;
            for e in TextParser::new(black_box(NODE)) {
                if let Ok(Entry::Sample(s)) = e {
                    sum += s.value;
                }
            }
            black_box(sum)
        })
    });
    group.bench_function("node_exporter/parse_with_labels", |b| {
        b.iter(|| {
            let mut n = 0usize;
            for e in TextParser::new(black_box(NODE)) {
                if let Ok(Entry::Sample(s)) = e {
                    n += s.labels().map(|(k, v)| k.len() + v.len()).sum::<usize>();
                }
            }
            black_box(n)
        })
    });
    group.finish();
}

/// One scrape of the node-exporter payload into `head`, as a scrape loop does it.
fn scrape(head: &Head, cache: &mut ScrapeCache, target: &Labels, t: i64) -> BodyStats {
    let mut app = head.appender();
    let opts = AppendOptions {
        target_labels: target,
        honor_labels: false,
        honor_timestamps: true,
        metric_relabel: &[],
        limits: Default::default(),
        format: Default::default(),
        default_timestamp: t,
    };
    let stats = append_body(black_box(NODE), cache, &mut app, &opts).unwrap();
    app.commit().unwrap();
    stats
}

fn scrape_append(c: &mut Criterion) {
    let mut group = c.benchmark_group("scrape_append");
    group.throughput(Throughput::Bytes(NODE.len() as u64));
    let target = Labels::from_pairs([("job", "node"), ("instance", "localhost:9100")]);
    // Steady state: the scrape cache knows every series, as from the second scrape on. The head
    // is replaced (outside the timing) every 1,000 scrapes, so the figure reflects a head of a
    // realistic size rather than one that grows for the whole run.
    group.bench_function("node_exporter/warm_cache", |b| {
        b.iter_custom(|iters| {
            let mut elapsed = std::time::Duration::ZERO;
            let mut done = 0;
            while done < iters {
                let head = Head::new(HeadConfig::default());
                let mut cache = ScrapeCache::default();
                scrape(&head, &mut cache, &target, 0);
                let n = (iters - done).min(1_000);
                let start = std::time::Instant::now();
                for i in 0..n {
                    black_box(scrape(&head, &mut cache, &target, 15_000 * (i as i64 + 1)));
                }
                elapsed += start.elapsed();
                done += n;
            }
            elapsed
        })
    });
    // First scrape of a new target: every series is created.
    group.bench_function("node_exporter/cold_target", |b| {
        b.iter_batched(
            || (Head::new(HeadConfig::default()), ScrapeCache::default()),
            // Returned, so that dropping the head is not timed.
            |(head, mut cache)| {
                let stats = scrape(&head, &mut cache, &target, 0);
                (head, cache, stats)
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group!(benches, parser, scrape_append);
criterion_main!(benches);
