//! `arrowhead import openmetrics FILE --data-dir DIR`: backfill blocks from an OpenMetrics
//! text file, as `promtool tsdb create-blocks-from openmetrics` does for Prometheus.
//!
//! The file is parsed once to check it and find its time range (nothing is written when a
//! line is invalid, a sample has no timestamp, or the data would overlap the head of a
//! replica on DIR), then once per group of windows to write one block per window
//! (`storage::block::import`). Memory is bounded by [`SAMPLES_PER_PASS`]. With a replica
//! running on DIR, the blocks are picked up at its next compaction pass; otherwise they are
//! merged with any blocks they overlap before the command returns.

use std::collections::HashMap;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressStyle};
use ingest::exposition::{Entry, Format, TextParser};
use storage::block::Blocks;
use storage::block::import::{ImportGroup, ImportPlan, head_window_start};
use storage::{DataDir, DataDirError};

use crate::ImportArgs;

/// Samples held in memory per pass over the file (about 30 bytes each while sorting).
const SAMPLES_PER_PASS: u64 = 20_000_000;

pub(crate) fn run(args: ImportArgs) -> anyhow::Result<ExitCode> {
    let window = i64::try_from(args.block_duration.get().as_millis())
        .context("--block-duration is too long")?;
    if window <= 0 {
        bail!("--block-duration must be positive");
    }
    let data = std::fs::read(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    let name = args.file.display().to_string();

    // A replica holding the directory is running: import beside it, before its head. Else
    // hold the lock ourselves, so none starts halfway through.
    let lock = match DataDir::open(&args.data_dir) {
        Ok(lock) => Some(lock),
        Err(DataDirError::Locked { .. }) => None,
        Err(e) => return Err(e.into()),
    };
    let running = lock.is_none();

    let started = Instant::now();
    let bar = progress_bar(data.len() as u64, "checking");
    let plan = check(&data, &name, window, &bar)?;
    bar.finish_and_clear();
    let Some((oldest, newest)) = plan.bounds() else {
        bail!("{name}: no samples to import");
    };
    let now = ingest::scrape::unix_ms();
    if let Some(head_start) = head_window_start(&args.data_dir, running, now)?
        && newest >= head_start
    {
        bail!(
            "{name} has samples up to {}, but the head of the replica on {} starts at {}: \
             import only samples older than that{}; nothing was written",
            rfc3339(newest),
            args.data_dir.display(),
            rfc3339(head_start),
            if running {
                " (the head holds what is not in a block yet)"
            } else {
                " (its WAL holds samples from then on)"
            },
        );
    }

    let blocks_dir = args.data_dir.join("blocks");
    let bar = progress_bar(plan.samples(), "importing");
    let (mut blocks, mut bytes, mut rows) = (0usize, 0u64, 0u64);
    for range in plan.groups(SAMPLES_PER_PASS) {
        let mut group = ImportGroup::new(window, range);
        fill(&data, &mut group, &bar)?;
        let written = group
            .write(&blocks_dir, |_| ())
            .with_context(|| format!("cannot write blocks into {}", blocks_dir.display()))
            .with_context(|| {
                format!(
                    "{blocks} block(s) written before this error are complete and will be \
                     served; importing the same file again is safe (imported samples replace \
                     equal ones)"
                )
            })?;
        for b in &written {
            blocks += 1;
            bytes += b.meta.bytes;
            rows += b.meta.rows;
        }
    }
    bar.finish_and_clear();
    if lock.is_some() {
        // Merge with overlapping blocks now, as a replica would at start-up.
        Blocks::open(&args.data_dir).context("cannot merge the imported blocks")?;
    }
    println!(
        "imported {rows} samples from {} to {} into {blocks} block(s), {bytes} bytes ({:.2} bytes/sample) in {:.1}s{}",
        rfc3339(oldest),
        rfc3339(newest),
        bytes as f64 / rows.max(1) as f64,
        started.elapsed().as_secs_f64(),
        if running {
            "; the running replica takes them in at its next compaction pass"
        } else {
            ""
        }
    );
    drop(lock);
    Ok(ExitCode::SUCCESS)
}

/// First pass: every line parses, every sample has a timestamp; samples per window.
fn check(data: &[u8], name: &str, window: i64, bar: &ProgressBar) -> anyhow::Result<ImportPlan> {
    let mut plan = ImportPlan::new(window);
    let mut parser = TextParser::with_format(data, Format::OpenMetrics);
    let mut n = 0u64;
    while let Some(entry) = parser.next() {
        let entry = entry.map_err(|e| anyhow::anyhow!("{name}: {e}; nothing was written"))?;
        if let Entry::Sample(s) = entry {
            let Some(t) = s.timestamp else {
                bail!(
                    "{name}: sample {} has no timestamp: every sample of an import needs one; \
                     nothing was written",
                    String::from_utf8_lossy(s.series)
                );
            };
            plan.add(t);
            n += 1;
            if n.is_multiple_of(65_536) {
                bar.set_position(parser.offset() as u64);
            }
        }
    }
    Ok(plan)
}

/// Later passes: the samples of `group`'s windows.
fn fill(data: &[u8], group: &mut ImportGroup, bar: &ProgressBar) -> anyhow::Result<()> {
    // Series by their text as written: one label parse per series, not per sample.
    let mut series: HashMap<&[u8], (usize, u32)> = HashMap::new();
    let mut n = 0u64;
    for entry in TextParser::with_format(data, Format::OpenMetrics) {
        let Entry::Sample(s) = entry.map_err(|e| anyhow::anyhow!("{e}"))? else {
            continue;
        };
        let Some(t) = s.timestamp.filter(|&t| group.contains(t)) else {
            continue;
        };
        let (metric, id) = match series.get(s.series) {
            Some(&ids) => ids,
            None => {
                let metric = group.metric(s.name);
                let labels: Vec<_> = s.labels().collect();
                let id = group.series(metric, labels.iter().map(|(k, v)| (*k, v.as_ref())));
                series.insert(s.series, (metric, id));
                (metric, id)
            }
        };
        group.push(metric, id, t, s.value);
        n += 1;
        if n.is_multiple_of(65_536) {
            bar.inc(65_536);
        }
    }
    bar.inc(n % 65_536);
    Ok(())
}

/// A bar on stderr when it is a terminal, nothing otherwise.
fn progress_bar(len: u64, what: &'static str) -> ProgressBar {
    let bar = ProgressBar::new(len).with_message(what);
    if let Ok(style) = ProgressStyle::with_template(
        "{msg:>10} [{bar:40}] {percent:>3}% {human_pos}/{human_len} ({eta} left)",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

/// A timestamp in ms as RFC 3339 (UTC, seconds).
fn rfc3339(ms: i64) -> String {
    arrow::temporal_conversions::timestamp_ms_to_datetime(ms)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
        .unwrap_or_else(|| format!("{ms} ms"))
}
