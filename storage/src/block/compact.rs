//! Compaction: merging blocks into larger ones, and taking in blocks written by
//! `arrowhead import`.
//!
//! ```text
//!  level 1   10m 10m 10m … (12 cuts)          ─┐ once the head is past the 2 h window
//!  level 2   2h ─────────────────────────────  ◄┘ merged; 12 of those ─► level 3: 1 d
//! ```
//!
//! * **Windows.** Blocks that all lie inside one aligned window of `ranges[i]` (12 and 144 cut
//!   periods: 2 h and 1 d for the default 10 min) are merged into one level `i + 2` block once
//!   the head has moved past the window's end, so a window is merged once, when complete.
//!   Every block inside the window takes part, whatever its level, so the result never
//!   overlaps a block left out.
//! * **No overlaps in a view.** Served blocks never hold the same series and timestamp twice:
//!   cuts cover disjoint ranges, and a block found on disk that overlaps a served one in time
//!   (an import) is merged with it before it is served. A merge keeps, for each series and
//!   timestamp, the sample of the block with the greatest id (ULIDs sort by creation): the
//!   last write wins. A merged block takes the id just above its newest input, so it keeps
//!   its inputs' place in that order. Resolving duplicates at write time means queries never
//!   pay for it.
//! * **Durability.** The merged block is published (fsync, rename) before its inputs leave
//!   the view; its `meta.json` names them as `parents`, so inputs left behind by a crash are
//!   deleted at the next start-up. Inputs stay on disk for `delete_delay`, for queries that
//!   listed their files before the swap.
//! * **Cost.** A merge holds one metric of all its inputs in memory at a time (sorted with
//!   Arrow's row format); a day of a metric with 1,000 series at 15 s is about 150 MB.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use tracing::{info, warn};

use super::merge::sort_dedup;
use super::{
    Block, BlockWriter, Blocks, Error, Result, delete_block, io_err, load_block, move_aside,
};

/// How blocks are merged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompactionConfig {
    /// Window sizes in ms, smallest first; blocks inside one aligned window of `ranges[i]`
    /// become one block of level `i + 2`.
    pub ranges: Vec<i64>,
    /// How long the files of a merged-away block stay on disk for queries already reading
    /// them.
    pub delete_delay: Duration,
}

impl CompactionConfig {
    /// Windows of 12 and 144 cut periods (2 h and 1 d for the default 10 min blocks), each at
    /// most a tenth of `retention` (when set), as Prometheus bounds its block ranges: retention
    /// deletes whole blocks, so a block much longer than a tenth of it would keep data well
    /// past its age.
    pub fn new(block_duration: Duration, retention: Duration) -> Self {
        let block = i64::try_from(block_duration.as_millis()).unwrap_or(i64::MAX);
        let cap = if retention.is_zero() {
            i64::MAX
        } else {
            i64::try_from(retention.as_millis() / 10).unwrap_or(i64::MAX)
        };
        let ranges = [12, 144]
            .iter()
            .filter_map(|&n| block.checked_mul(n))
            .filter(|&r| r > 0 && r <= cap)
            .collect();
        Self {
            ranges,
            delete_delay: Duration::from_secs(300),
        }
    }
}

impl CompactionConfig {
    /// Blocks whose newest sample is older than this will not be merged again (their
    /// largest window is complete): they can move to the object store.
    pub fn final_before(&self, head_from: i64) -> i64 {
        head_from.saturating_sub(self.ranges.last().copied().unwrap_or(0))
    }
}

/// What to merge next.
#[derive(Debug, Clone, PartialEq)]
enum Plan {
    /// Blocks whose time ranges overlap (transitively): merged at the highest input level.
    Overlap(Vec<Arc<Block>>),
    /// Every block inside a complete window, merged into one block of `level`.
    Window {
        /// The output's level.
        level: u32,
        /// The inputs.
        blocks: Vec<Arc<Block>>,
    },
}

impl PartialEq for Block {
    fn eq(&self, other: &Self) -> bool {
        self.meta.id == other.meta.id
    }
}

/// The first group of blocks whose `[min_timestamp, max_timestamp]` ranges overlap.
fn overlapping(blocks: &[Arc<Block>]) -> Option<Vec<Arc<Block>>> {
    let mut sorted = blocks.to_vec();
    sorted.sort_by_key(|b| (b.meta.min_timestamp, b.meta.max_timestamp));
    let mut i = 0;
    while i < sorted.len() {
        let mut max = sorted[i].meta.max_timestamp;
        let mut j = i + 1;
        while j < sorted.len() && sorted[j].meta.min_timestamp <= max {
            max = max.max(sorted[j].meta.max_timestamp);
            j += 1;
        }
        if j - i > 1 {
            return Some(sorted[i..j].to_vec());
        }
        i = j;
    }
    None
}

/// The next merge: overlaps first, then the oldest complete window of the smallest range
/// that holds two or more blocks, one of them below the window's level.
fn plan(blocks: &[Arc<Block>], ranges: &[i64], head_from: i64) -> Option<Plan> {
    if let Some(group) = overlapping(blocks) {
        return Some(Plan::Overlap(group));
    }
    for (k, &range) in ranges.iter().enumerate() {
        let level = k as u32 + 2;
        let mut windows: BTreeMap<i64, Vec<Arc<Block>>> = BTreeMap::new();
        for b in blocks {
            let start = b.meta.min_timestamp.div_euclid(range) * range;
            let Some(end) = start.checked_add(range) else {
                continue;
            };
            if b.meta.max_timestamp < end {
                windows.entry(start).or_default().push(Arc::clone(b));
            }
        }
        for (start, group) in windows {
            let complete = start.saturating_add(range) <= head_from;
            if complete && group.len() >= 2 && group.iter().any(|b| b.meta.level < level) {
                return Some(Plan::Window {
                    level,
                    blocks: group,
                });
            }
        }
    }
    None
}

/// Every record batch of a Parquet file.
pub(super) fn read_parquet(path: &std::path::Path) -> Result<Vec<RecordBatch>> {
    let file = File::open(path).map_err(io_err(path))?;
    read_parquet_from(path, file)
}

/// Every record batch of a Parquet file fetched whole (`path` names it in errors).
fn read_parquet_bytes(path: &std::path::Path, bytes: bytes::Bytes) -> Result<Vec<RecordBatch>> {
    read_parquet_from(path, bytes)
}

fn read_parquet_from<R: parquet::file::reader::ChunkReader + 'static>(
    path: &std::path::Path,
    reader: R,
) -> Result<Vec<RecordBatch>> {
    let parquet_err = |source| Error::Parquet {
        path: path.to_path_buf(),
        source,
    };
    ParquetRecordBatchReaderBuilder::try_new(reader)
        .map_err(parquet_err)?
        .build()
        .map_err(parquet_err)?
        .map(|b| {
            b.map_err(|e| Error::Parquet {
                path: path.to_path_buf(),
                source: e.into(),
            })
        })
        .collect()
}

impl Blocks {
    /// Whether [`Blocks::compact`] has a merge to run now, so a caller can prepare for one
    /// (the replica keeps freed memory while a merge runs, as during a cut).
    pub fn merge_due(&self, config: &CompactionConfig) -> bool {
        let view = self.view();
        plan(&view.blocks, &config.ranges, view.head_from).is_some()
    }

    /// Runs merges until none is due (at most `limit`), returning how many blocks were
    /// written. A failed merge is logged and counted; its inputs stay served.
    pub fn compact(&self, config: &CompactionConfig, limit: usize) -> Result<usize> {
        let _compactor = self.compactor.lock();
        let mut written = 0;
        while written < limit {
            let view = self.view();
            let Some(plan) = plan(&view.blocks, &config.ranges, view.head_from) else {
                break;
            };
            let (level, inputs) = match plan {
                Plan::Overlap(blocks) => (
                    blocks.iter().map(|b| b.meta.level).max().unwrap_or(1),
                    blocks,
                ),
                Plan::Window { level, blocks } => (level, blocks),
            };
            let registered = inputs.len();
            match self.merge(&inputs, registered, level) {
                Ok(true) => written += 1,
                Ok(false) => break,
                Err(e) => {
                    self.metrics.compaction_failures.inc();
                    return Err(e);
                }
            }
        }
        self.delete_retired(config.delete_delay);
        Ok(written)
    }

    /// Takes in block directories that appeared since start-up (`arrowhead import` into a
    /// running replica's directory): each is checked as at start-up, merged with the served
    /// blocks it overlaps, and served. Returns how many were found.
    pub fn discover(&self) -> Result<usize> {
        let _compactor = self.compactor.lock();
        let found: Vec<Arc<Block>> = {
            // Under the writer lock, so a cut's new directory is never taken for an import.
            let _writer = self.writer.lock();
            let known: BTreeSet<String> = self
                .view()
                .blocks
                .iter()
                .chain(self.retired.lock().iter().map(|(b, _)| b))
                .map(|b| b.meta.id.clone())
                .collect();
            let mut found = Vec::new();
            for entry in std::fs::read_dir(&self.dir).map_err(io_err(&self.dir))? {
                let entry = entry.map_err(io_err(&self.dir))?;
                let name = entry.file_name().to_string_lossy().into_owned();
                let path = entry.path();
                if name.ends_with(".tmp") || known.contains(&name) || !path.is_dir() {
                    continue;
                }
                match load_block(&path, &name) {
                    Ok(meta) => found.push(Arc::new(Block::local(meta, path))),
                    Err(reason) => {
                        move_aside(&path, &self.corrupted_dir, &name, &reason)?;
                        self.metrics.corrupted.inc();
                        self.corrupted.lock().push((name, reason));
                    }
                }
            }
            found
        };
        found.iter().for_each(|b| {
            info!(block = %b.meta.id, rows = b.meta.rows, "found a new block (an import)");
        });
        let n = found.len();
        for block in found {
            let view = self.view();
            let mut overlaps: Vec<Arc<Block>> = view
                .blocks
                .iter()
                .filter(|b| {
                    b.meta.min_timestamp <= block.meta.max_timestamp
                        && block.meta.min_timestamp <= b.meta.max_timestamp
                })
                .cloned()
                .collect();
            if overlaps.is_empty() {
                self.replace_blocks(|state| state.blocks.push(block));
                continue;
            }
            let registered = overlaps.len();
            let level = overlaps
                .iter()
                .chain([&block])
                .map(|b| b.meta.level)
                .max()
                .unwrap_or(1);
            overlaps.push(block);
            if let Err(e) = self.merge(&overlaps, registered, level) {
                self.metrics.compaction_failures.inc();
                return Err(e);
            }
        }
        Ok(n)
    }

    /// Merges every group of overlapping served blocks (start-up).
    pub(super) fn resolve_overlaps(&self) -> Result<()> {
        let _compactor = self.compactor.lock();
        while let Some(group) = overlapping(&self.view().blocks) {
            info!(blocks = group.len(), "merging blocks that overlap in time");
            let level = group.iter().map(|b| b.meta.level).max().unwrap_or(1);
            let n = group.len();
            if !self.merge(&group, n, level)? {
                break;
            }
        }
        Ok(())
    }

    /// Merges `inputs` into one block of `level` and swaps it in, if exactly `registered` of
    /// them are still served (retention may have taken one meanwhile; then the result is
    /// dropped and `false` returned). Inputs are deleted after the configured delay; one that
    /// cannot be decoded is moved to `corrupted/`.
    fn merge(&self, inputs: &[Arc<Block>], registered: usize, level: u32) -> Result<bool> {
        let started = Instant::now();
        let mut inputs = inputs.to_vec();
        inputs.sort_by(|a, b| a.meta.id.cmp(&b.meta.id));
        let newest = inputs.last().map(|b| b.meta.id.clone()).unwrap_or_default();
        let id = self.id_after(&newest);
        let mut writer = BlockWriter::create(&self.dir, id, level)?;
        let names: BTreeSet<&String> = inputs.iter().flat_map(|b| b.meta.metrics.keys()).collect();
        let mut read_rows = 0u64;
        for name in names {
            let mut batches = Vec::new();
            for block in &inputs {
                let Some((path, file)) = block.file(name) else {
                    continue;
                };
                let read = match (&self.remote, block.remote) {
                    (Some(store), true) => store
                        .get(&block.meta.id, &file.file)
                        .map_err(Error::from)
                        .and_then(|bytes| read_parquet_bytes(&path, bytes)),
                    _ => read_parquet(&path),
                };
                match read {
                    Ok(b) => batches.extend(b),
                    Err(e @ Error::Parquet { .. }) => {
                        // Undecodable: take the block out rather than fail on it forever.
                        self.quarantine(&block.meta.id, &e.to_string())?;
                        return Err(e);
                    }
                    Err(e) => return Err(e),
                }
            }
            read_rows += batches.iter().map(|b| b.num_rows() as u64).sum::<u64>();
            let merged = sort_dedup(&batches).map_err(|source| Error::Head {
                metric: name.clone(),
                source,
            })?;
            if let Some(batch) = merged {
                writer.write_metric(name, &batch)?;
            }
        }
        let range_start = inputs.iter().map(|b| b.meta.range_start).min();
        let range_end = inputs.iter().map(|b| b.meta.range_end).max();
        let parents = inputs.iter().map(|b| b.meta.id.clone()).collect();
        let block = writer.finish(
            range_start.unwrap_or(i64::MIN),
            range_end.unwrap_or(i64::MIN),
            parents,
        )?;
        let block = block.map(Arc::new);
        let swapped = self.replace_blocks(|state| {
            let served = |b: &Arc<Block>| inputs.iter().any(|i| i.meta.id == b.meta.id);
            if state.blocks.iter().filter(|b| served(b)).count() != registered {
                return false;
            }
            state.blocks.retain(|b| !served(b));
            state.blocks.extend(block.iter().cloned());
            true
        });
        if !swapped {
            warn!("a block being merged was deleted meanwhile; dropping the merge");
            if let Some(b) = &block {
                std::fs::remove_dir_all(&b.dir).map_err(io_err(&b.dir))?;
            }
            return Ok(false);
        }
        let now = Instant::now();
        self.retired
            .lock()
            .extend(inputs.iter().map(|b| (Arc::clone(b), now)));
        self.metrics.compactions.inc();
        if let Some(b) = &block {
            info!(
                block = %b.meta.id,
                level,
                inputs = inputs.len(),
                rows_in = read_rows,
                rows_out = b.meta.rows,
                bytes = b.meta.bytes,
                took_ms = started.elapsed().as_millis() as u64,
                "blocks merged"
            );
        }
        Ok(true)
    }

    /// Reads every row of the served files named in `locations` (as DataFusion names them:
    /// a local path without its leading `/`, or an object path) and takes out of service
    /// each block with a file that does not decode: moved to `corrupted/`, logged, counted.
    /// For a query that failed on a data error. Returns (block id, reason) of each.
    pub fn verify_files(&self, locations: &[String]) -> Vec<(String, String)> {
        let view = self.view();
        let mut bad = Vec::new();
        for block in &view.blocks {
            for f in block.meta.metrics.values() {
                let local = block.dir.join(&f.file);
                let named = if block.remote {
                    self.remote
                        .as_ref()
                        .map(|r| r.path(&block.meta.id, &f.file).to_string())
                } else {
                    Some(super::local_location(&local))
                };
                if !named.is_some_and(|n| locations.contains(&n)) {
                    continue;
                }
                let read = match (&self.remote, block.remote) {
                    (Some(store), true) => store
                        .get(&block.meta.id, &f.file)
                        .map_err(Error::from)
                        .and_then(|bytes| read_parquet_bytes(&local, bytes)),
                    _ => read_parquet(&local),
                };
                if let Err(e @ Error::Parquet { .. }) = read {
                    bad.push((block.meta.id.clone(), e.to_string()));
                    break;
                }
            }
        }
        for (id, reason) in &bad {
            if let Err(e) = self.quarantine(id, reason) {
                warn!(block = %id, error = %e, "cannot move an unreadable block aside");
            }
        }
        bad
    }

    /// Moves every local block whose newest sample is older than `before` to the object
    /// store (when one is configured): upload, swap in the view, delete the local copy after
    /// the delay. Returns how many moved.
    pub fn move_to_remote(&self, before: i64, delete_delay: Duration) -> Result<usize> {
        let Some(store) = self.remote.clone() else {
            return Ok(0);
        };
        let _compactor = self.compactor.lock();
        let due: Vec<Arc<Block>> = self
            .view()
            .blocks
            .into_iter()
            .filter(|b| !b.remote && b.meta.max_timestamp < before)
            .collect();
        let mut moved = 0;
        for local in due {
            if let Err(e) = store.upload(&local) {
                self.metrics.upload_failures.inc();
                return Err(e.into());
            }
            let uploaded = Arc::new(Block {
                meta: local.meta.clone(),
                dir: local.dir.clone(),
                remote: true,
            });
            let swapped = self.replace_blocks(|state| {
                match state.blocks.iter().position(|b| b.meta.id == local.meta.id) {
                    Some(at) => {
                        state.blocks[at] = Arc::clone(&uploaded);
                        true
                    }
                    None => false,
                }
            });
            if swapped {
                self.retired.lock().push((local, Instant::now()));
                self.metrics.uploads.inc();
                moved += 1;
            } else {
                // Retention took it meanwhile.
                store.delete(&uploaded.meta)?;
            }
        }
        self.delete_retired(delete_delay);
        Ok(moved)
    }

    /// The smallest ULID above `id` whose directory is free: a merged block keeps its
    /// newest input's place in write order.
    fn id_after(&self, id: &str) -> String {
        let mut next = ulid::Ulid::from_string(id).unwrap_or_else(|_| ulid::Ulid::new());
        loop {
            next = match next.increment() {
                Some(n) => n,
                None => ulid::Ulid::new(),
            };
            let s = next.to_string();
            if !self.dir.join(&s).exists() && !self.dir.join(format!("{s}.tmp")).exists() {
                return s;
            }
        }
    }

    /// Deletes the directories of merged-away blocks retired at least `delay` ago.
    pub(super) fn delete_retired(&self, delay: Duration) {
        let due: Vec<Arc<Block>> = {
            let mut retired = self.retired.lock();
            let (due, keep): (Vec<_>, Vec<_>) =
                retired.drain(..).partition(|(_, at)| at.elapsed() >= delay);
            *retired = keep;
            due.into_iter().map(|(b, _)| b).collect()
        };
        for block in due {
            if let Err(e) = delete_block(&block, self.remote.as_deref()) {
                warn!(block = %block.meta.id, error = %e, "cannot delete a merged-away block; retrying later");
                self.retired.lock().push((block, Instant::now()));
            }
        }
        let _ = crate::wal::sync_dir(&self.dir);
    }
}

#[cfg(test)]
mod tests;
