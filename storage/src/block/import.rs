//! Backfill: blocks written from historic samples (`arrowhead import openmetrics`).
//!
//! ```text
//!  pass 1: every timestamp ─► ImportPlan (samples per aligned window)
//!  check:  newest sample < head_window_start(data dir)      else refuse, nothing written
//!  pass 2+ per group of windows (bounded memory): samples ─► ImportGroup ─► one block per window
//! ```
//!
//! Imported blocks are level 2, cover aligned windows (2 h by default, as `promtool tsdb
//! create-blocks-from` writes), and are published like any block. A replica running on the
//! directory takes them in at its next compaction pass, a stopped one at start-up; either
//! merges them with the blocks they overlap, the imported samples winning (last write wins),
//! so importing the same file twice changes nothing.
//!
//! The head window: a replica's head holds the samples at or after the end of its newest
//! block, and its WAL holds them; a block there would hide them or be hidden. So an import
//! must end before the head starts: the later of the newest block's end and the oldest WAL
//! sample, or, for a running replica with an empty WAL, before now.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use arrow::array::{AsArray, BooleanArray};
use arrow::compute::filter_record_batch;
use arrow::datatypes::TimestampMillisecondType;

use super::{Block, BlockMeta, BlockWriter, Error, META_FILE, MetricBuilder, Result, io_err};
use crate::head::TIMESTAMP_COLUMN;

/// Level of imported blocks.
pub const IMPORT_LEVEL: u32 = 2;

/// Samples per window, from a first pass over the input.
#[derive(Debug, Clone)]
pub struct ImportPlan {
    window: i64,
    counts: BTreeMap<i64, u64>,
    min: i64,
    max: i64,
}

impl ImportPlan {
    /// A plan for blocks of `window` ms (aligned to multiples of it).
    pub fn new(window: i64) -> Self {
        Self {
            window: window.max(1),
            counts: BTreeMap::new(),
            min: i64::MAX,
            max: i64::MIN,
        }
    }

    /// Counts a sample at `timestamp`.
    pub fn add(&mut self, timestamp: i64) {
        *self.counts.entry(self.window_of(timestamp)).or_default() += 1;
        self.min = self.min.min(timestamp);
        self.max = self.max.max(timestamp);
    }

    fn window_of(&self, timestamp: i64) -> i64 {
        timestamp.div_euclid(self.window) * self.window
    }

    /// Samples counted.
    pub fn samples(&self) -> u64 {
        self.counts.values().sum()
    }

    /// Oldest and newest timestamp, when any sample was counted.
    pub fn bounds(&self) -> Option<(i64, i64)> {
        (!self.counts.is_empty()).then_some((self.min, self.max))
    }

    /// Windows grouped so that each group holds at most `budget` samples (or one window,
    /// when a single window holds more): each group is one more pass over the input.
    /// Returns `[start, end)` time ranges.
    pub fn groups(&self, budget: u64) -> Vec<(i64, i64)> {
        let mut out: Vec<(i64, i64)> = Vec::new();
        let mut in_group = 0u64;
        for (&start, &n) in &self.counts {
            let end = start.saturating_add(self.window);
            match out.last_mut() {
                Some(last) if in_group + n <= budget => {
                    last.1 = end;
                    in_group += n;
                }
                _ => {
                    out.push((start, end));
                    in_group = n;
                }
            }
        }
        out
    }
}

/// The samples of one group of windows, by metric.
#[derive(Debug)]
pub struct ImportGroup {
    window: i64,
    range: (i64, i64),
    names: Vec<String>,
    index: HashMap<String, usize>,
    metrics: Vec<MetricBuilder>,
}

impl ImportGroup {
    /// Collects the samples in `[range.0, range.1)` for blocks of `window` ms.
    pub fn new(window: i64, range: (i64, i64)) -> Self {
        Self {
            window: window.max(1),
            range,
            names: Vec::new(),
            index: HashMap::new(),
            metrics: Vec::new(),
        }
    }

    /// True when `timestamp` belongs to this group.
    pub fn contains(&self, timestamp: i64) -> bool {
        self.range.0 <= timestamp && timestamp < self.range.1
    }

    /// The index of a metric, added if new.
    pub fn metric(&mut self, name: &str) -> usize {
        if let Some(&i) = self.index.get(name) {
            return i;
        }
        let i = self.metrics.len();
        self.names.push(name.to_string());
        self.index.insert(name.to_string(), i);
        self.metrics.push(MetricBuilder::default());
        i
    }

    /// The index of a series of `metric` (see [`MetricBuilder::series`]).
    pub fn series<'a>(
        &mut self,
        metric: usize,
        labels: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> u32 {
        self.metrics[metric].series(labels)
    }

    /// Adds a sample.
    pub fn push(&mut self, metric: usize, series: u32, timestamp: i64, value: f64) {
        self.metrics[metric].push(series, timestamp, value);
    }

    /// Writes one block per window that has samples into `blocks_dir`, each ending no later
    /// than its newest sample + 1 ms (so a replica's head bound is not pushed past what was
    /// imported). Calls `progress` with the samples of each metric written.
    pub fn write(self, blocks_dir: &Path, mut progress: impl FnMut(u64)) -> Result<Vec<Block>> {
        let mut sorted = Vec::with_capacity(self.metrics.len());
        for (name, builder) in self.names.into_iter().zip(self.metrics) {
            let n = builder.len() as u64;
            let batch = builder.finish().map_err(|source| Error::Head {
                metric: name.clone(),
                source,
            })?;
            if let Some(batch) = batch {
                sorted.push((name, batch));
            }
            progress(n);
        }
        let mut blocks = Vec::new();
        let mut start = self.range.0;
        while start < self.range.1 {
            let end = start.saturating_add(self.window);
            let mut writer =
                BlockWriter::create(blocks_dir, ulid::Ulid::new().to_string(), IMPORT_LEVEL)?;
            let mut newest = i64::MIN;
            for (name, batch) in &sorted {
                let ts = batch
                    .column_by_name(TIMESTAMP_COLUMN)
                    .map(|c| c.as_primitive::<TimestampMillisecondType>());
                let Some(ts) = ts else { continue };
                let mask: BooleanArray = ts
                    .iter()
                    .map(|t| t.map(|t| start <= t && t < end))
                    .collect();
                let part = filter_record_batch(batch, &mask).map_err(|source| Error::Head {
                    metric: name.clone(),
                    source,
                })?;
                if part.num_rows() > 0 {
                    let part_ts = part
                        .column_by_name(TIMESTAMP_COLUMN)
                        .map(|c| c.as_primitive::<TimestampMillisecondType>());
                    if let Some(m) = part_ts.and_then(arrow::compute::max) {
                        newest = newest.max(m);
                    }
                    writer.write_metric(name, &part)?;
                }
            }
            let end_bound = end.min(newest.saturating_add(1));
            if let Some(block) = writer.finish(start, end_bound, Vec::new())? {
                blocks.push(block);
            }
            start = end;
        }
        Ok(blocks)
    }
}

/// Where the head of a replica on `data_dir` starts (see the module docs): an import must
/// end before it. `running` says whether a replica holds the directory now; `now` is the
/// current time in ms. `None` when there is no head to protect.
pub fn head_window_start(data_dir: &Path, running: bool, now: i64) -> Result<Option<i64>> {
    let blocks_dir = data_dir.join("blocks");
    let mut blocks_end: Option<i64> = None;
    match std::fs::read_dir(&blocks_dir) {
        Ok(entries) => {
            for entry in entries {
                let entry = entry.map_err(io_err(&blocks_dir))?;
                let meta = std::fs::read(entry.path().join(META_FILE))
                    .ok()
                    .and_then(|b| serde_json::from_slice::<BlockMeta>(&b).ok());
                if let Some(meta) = meta {
                    blocks_end = Some(blocks_end.map_or(meta.range_end, |e| e.max(meta.range_end)));
                }
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err(&blocks_dir)(e)),
    }
    let wal_dir = data_dir.join("wal");
    let wal_min = crate::wal::min_timestamp(&wal_dir).map_err(io_err(&wal_dir))?;
    Ok(match (wal_min, blocks_end) {
        (Some(w), Some(b)) => Some(w.max(b)),
        (Some(w), None) => Some(w),
        (None, Some(b)) if running => Some(b),
        (None, None) if running => Some(now),
        (None, _) => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::Blocks;
    use crate::head::{Head, HeadConfig};
    use crate::testing::{append, rendered_rows};

    #[test]
    fn windows_group_within_the_budget() {
        let mut plan = ImportPlan::new(100);
        assert_eq!(plan.bounds(), None);
        for t in [5, 10, 150, 420, 430, 440, -3] {
            plan.add(t);
        }
        assert_eq!(plan.samples(), 7);
        assert_eq!(plan.bounds(), Some((-3, 440)));
        assert_eq!(plan.groups(1_000), vec![(-100, 500)]);
        assert_eq!(
            plan.groups(4),
            vec![(-100, 200), (400, 500)],
            "1 + 2 + 1 fit, the last window does not"
        );
        assert_eq!(plan.groups(3), vec![(-100, 100), (100, 200), (400, 500)]);
        assert_eq!(
            plan.groups(1),
            vec![(-100, 0), (0, 100), (100, 200), (400, 500)]
        );
    }

    #[test]
    fn a_group_writes_one_block_per_window_ending_at_its_newest_sample() {
        let dir = tempfile::tempdir().unwrap();
        let blocks_dir = dir.path().join("blocks");
        std::fs::create_dir_all(&blocks_dir).unwrap();
        let mut g = ImportGroup::new(100, (0, 300));
        let up = g.metric("up");
        let s = g.series(up, [("job", "a")]);
        for (t, v) in [(150, 2.0), (10, 1.0), (250, 3.0), (150, 4.0)] {
            g.push(up, s, t, v);
        }
        let mut progressed = 0;
        let written = g.write(&blocks_dir, |n| progressed += n).unwrap();
        assert_eq!(progressed, 4);
        let ranges: Vec<(i64, i64, u64)> = written
            .iter()
            .map(|b| (b.meta.range_start, b.meta.range_end, b.meta.rows))
            .collect();
        assert_eq!(ranges, vec![(0, 11, 1), (100, 151, 1), (200, 251, 1)]);
        assert!(written.iter().all(|b| b.meta.level == IMPORT_LEVEL));
        let blocks = Blocks::open(dir.path()).unwrap();
        let mut rows = Vec::new();
        for (location, _) in blocks.view().files("up") {
            let crate::block::FileLocation::Local(path) = location else {
                panic!("no object store here");
            };
            rows.extend(rendered_rows(
                &super::super::compact::read_parquet(&path).unwrap(),
            ));
        }
        assert_eq!(
            rows,
            vec![
                ("job=a".to_string(), 10, 1.0),
                ("job=a".to_string(), 150, 4.0),
                ("job=a".to_string(), 250, 3.0)
            ]
        );
    }

    #[test]
    fn the_head_window_starts_at_the_later_of_the_newest_block_and_the_oldest_wal_sample() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path();
        assert_eq!(head_window_start(data, false, 1_000).unwrap(), None);
        assert_eq!(head_window_start(data, true, 1_000).unwrap(), Some(1_000));

        let wal_dir = data.join("wal");
        let (head, _) = Head::open(
            HeadConfig::test_config(),
            &wal_dir,
            crate::wal::WalConfig::default(),
            i64::MIN,
        )
        .unwrap();
        append(&head, "up", &[("job", "a")], &[(50, 1.0), (250, 1.0)]);
        assert_eq!(head_window_start(data, false, 1_000).unwrap(), Some(50));
        let blocks = Blocks::open(data).unwrap();
        blocks.cut(&head, 100).unwrap().unwrap();
        assert_eq!(
            head_window_start(data, false, 1_000).unwrap(),
            Some(100),
            "the block ends at 100; the WAL's older sample is in it"
        );
    }
}
