//! Blocks: the head cut into immutable Parquet files, one directory per time range.
//!
//! ```text
//!  cut loop ─► Blocks::cut(head, end)
//!               1. head.close_before(end)     appends older than `end` are refused from now on
//!               2. per metric: snapshot → sorted_rows([head_from, end)) → <id>.tmp/<metric>.parquet
//!               3. meta.json last; fsync files; rename <id>.tmp → <id>; fsync blocks/
//!               4. register the block and move the head's read bound to `end`, atomically
//!               5. drop head chunks older than `end`; delete WAL segments older than `end`
//!  query   ─► Blocks::view() ─► files per metric + the time from which the head is read
//! ```
//!
//! The on-disk layout is specified in `block.md` beside this file.
//!
//! * **One file per metric.** A block directory holds one Parquet file per metric, with that
//!   metric's label columns only: a query reads the files of the tables it names, and each
//!   file's schema is exactly its metric's. The alternative, one file per block with a metric
//!   column, measured on the benchmark dataset (`benches/storage_vs_prometheus.py`, 9,955
//!   series of 36 metrics × 2 h at 15 s, both layouts written with the same settings): 2.974
//!   against 2.946 bytes per sample, 1 % *larger*, with 11 label columns and the metric
//!   column in one schema, and a query on one metric would have to prune by the metric
//!   column. On a 362-series dataset the single file is 13 % smaller (fewer footers per
//!   sample); at that size it does not matter.
//! * **Encodings, measured** on the same rows (bytes per sample, relative to what is
//!   written): timestamps `DELTA_BINARY_PACKED` against `PLAIN` + ZSTD: 1.075× for plain;
//!   values `BYTE_STREAM_SPLIT` against `PLAIN`: 1.054× and dictionary: 1.251×; labels
//!   dictionary against plain strings: 1.007× (ZSTD removes most of the repetition of sorted
//!   labels either way; dictionaries also let DataFusion compare keys instead of strings). The
//!   whole block: 2.94 bytes per sample against Prometheus's 4.96 for the same samples
//!   (`promtool tsdb create-blocks-from openmetrics`), 0.59×.
//! * **Label columns of cuts** are encoded by `label_chunk`, once per distinct value, instead
//!   of by the Parquet crate's writer, which looks up every row's string in a hash table; the
//!   file is the same Parquet (dictionary page, `RLE_DICTIONARY` pages), see there.
//! * **Compaction and import** (`compact`, `import` submodules): merged and imported blocks
//!   are resolved against the blocks they overlap before they are served, the newest write
//!   winning, so no view ever holds a sample twice.
//! * **Consistency.** Queries see a block's rows either in the head or in the block, never
//!   both and never neither: step 4 swaps them under one lock, and head reads are bounded by
//!   the view's `head_from`.
//! * **Faults.** A block whose `meta.json` is missing, unreadable or names files that are
//!   not there is moved to `<data>/corrupted/` at start-up, logged and counted; the rest is
//!   served. Leftover `*.tmp` directories (a cut interrupted by a crash) are removed: their
//!   samples are still in the WAL.

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::TimestampMillisecondType;
use parking_lot::{Mutex, RwLock};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_writer::compute_leaves;
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::file::metadata::SortingColumn;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::head::{Head, TIMESTAMP_COLUMN, VALUE_COLUMN};
use crate::wal::sync_dir;

/// Version of `meta.json` written by this code.
pub const META_VERSION: u32 = 1;
/// Name of the metadata file, written last.
pub const META_FILE: &str = "meta.json";

/// Errors of block writing and loading.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file system operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// Parquet encoding failed.
    #[error("cannot write {path}: {source}")]
    Parquet {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: parquet::errors::ParquetError,
    },
    /// The object store failed.
    #[error(transparent)]
    Remote(#[from] RemoteError),
    /// Reading a metric from the head failed.
    #[error("cannot read metric {metric} from the head: {source}")]
    Head {
        /// The metric.
        metric: String,
        /// The underlying error.
        source: arrow::error::ArrowError,
    },
}

/// `Result` of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// `meta.json`: what a block holds. Written last; a block directory without it is not a block.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlockMeta {
    /// Format version ([`META_VERSION`]).
    pub version: u32,
    /// The block's ULID, also its directory name.
    pub id: String,
    /// Start of the time range the block was cut for (ms, inclusive).
    pub range_start: i64,
    /// End of the time range the block was cut for (ms, exclusive).
    pub range_end: i64,
    /// Oldest sample (ms).
    pub min_timestamp: i64,
    /// Newest sample (ms).
    pub max_timestamp: i64,
    /// Samples in the block.
    pub rows: u64,
    /// Bytes of all its Parquet files.
    pub bytes: u64,
    /// Compaction level: 1 for a block cut from the head, 2 and up for merged or imported
    /// blocks (see [`CompactionConfig`]).
    pub level: u32,
    /// The blocks this one replaces (a merge's inputs). A block named here that is still on
    /// disk at start-up is deleted: its successor was durable before it was due to go.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parents: Vec<String>,
    /// One entry per metric, by metric name.
    pub metrics: BTreeMap<String, MetricFile>,
}

/// One metric's file in a block.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricFile {
    /// File name inside the block directory (see [`file_name`]).
    pub file: String,
    /// Samples in the file.
    pub rows: u64,
    /// File size in bytes.
    pub bytes: u64,
    /// Label columns of the file, sorted (the table columns other than timestamp and value).
    pub labels: Vec<String>,
    /// Oldest sample (ms).
    pub min_timestamp: i64,
    /// Newest sample (ms).
    pub max_timestamp: i64,
}

/// A loaded block: its metadata and where it lives.
#[derive(Debug)]
pub struct Block {
    /// The metadata.
    pub meta: BlockMeta,
    /// The local block directory (for a block in the object store: where it was).
    pub dir: PathBuf,
    /// True when the files are in the object store (`<prefix>/<id>/`), not in `dir`.
    pub remote: bool,
}

impl Block {
    /// A block in a local directory.
    pub fn local(meta: BlockMeta, dir: PathBuf) -> Self {
        Self {
            meta,
            dir,
            remote: false,
        }
    }

    /// Path of a metric's file in the local directory, when the block has that metric.
    pub fn file(&self, metric: &str) -> Option<(PathBuf, &MetricFile)> {
        let f = self.meta.metrics.get(metric)?;
        Some((self.dir.join(&f.file), f))
    }
}

/// Where a block file is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileLocation {
    /// A local file.
    Local(PathBuf),
    /// An object in [`BlockView::remote`]'s store.
    Remote(object_store::path::Path),
}

/// The file name a metric is stored under: the name itself when it is a plain Prometheus
/// metric name, otherwise every byte outside `[A-Za-z0-9_:]` written as `-XX` (hex). Names
/// from remote write can hold anything; encoding keeps them inside the block directory (`/`,
/// `.` and `-` are always encoded), and names too long for a file get a hash suffix instead.
/// Not `%`: object-store paths (and DataFusion's local store) percent-decode file names, so a
/// `%` in a name would not survive the round trip.
pub fn file_name(metric: &str) -> String {
    let mut out = String::with_capacity(metric.len() + 8);
    for b in metric.bytes() {
        if b.is_ascii_alphanumeric() || b == b'_' || b == b':' {
            out.push(b as char);
        } else {
            out.push_str(&format!("-{b:02X}"));
        }
    }
    if out.len() > 200 {
        let hash = crc32c::crc32c(metric.as_bytes());
        out.truncate(180);
        while !out.is_char_boundary(out.len()) {
            out.pop();
        }
        out.push_str(&format!("~{hash:08x}"));
    }
    out.push_str(".parquet");
    out
}

/// A consistent view for one query: the blocks, and the time from which the head is read.
#[derive(Debug, Clone)]
pub struct BlockView {
    /// Blocks, oldest first.
    pub blocks: Vec<Arc<Block>>,
    /// Head rows older than this are in blocks and must not be read from the head.
    pub head_from: i64,
    /// The object store remote blocks are in, if one is configured.
    pub remote: Option<Arc<RemoteStore>>,
    /// Counts changes of the block list or of `head_from` since the blocks were opened: two
    /// views with the same generation list the same files and read the head from the same
    /// time, so a plan made on one may still run after the other was taken.
    pub generation: u64,
}

impl BlockView {
    /// The files holding `metric`, oldest first.
    pub fn files(&self, metric: &str) -> Vec<(FileLocation, MetricFile)> {
        self.blocks
            .iter()
            .filter_map(|b| {
                let f = b.meta.metrics.get(metric)?;
                let location = match (&self.remote, b.remote) {
                    (Some(r), true) => FileLocation::Remote(r.path(&b.meta.id, &f.file)),
                    (None, true) => return None,
                    (_, false) => FileLocation::Local(b.dir.join(&f.file)),
                };
                Some((location, f.clone()))
            })
            .collect()
    }

    /// Every metric name in any block.
    pub fn metric_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .blocks
            .iter()
            .flat_map(|b| b.meta.metrics.keys().cloned())
            .collect();
        names.sort();
        names.dedup();
        names
    }
}

/// Block counters, exported as `arrowhead_blocks_*`.
#[derive(Debug, Clone, Default)]
pub struct BlockMetrics {
    /// Blocks written from the head.
    pub cuts: Counter,
    /// Cuts that failed (the data stays in the head and the WAL; the cut is retried).
    pub cut_failures: Counter,
    /// Blocks moved to `corrupted/`.
    pub corrupted: Counter,
    /// Blocks deleted by retention.
    pub deleted: Counter,
    /// Merges done (compaction, and imports merged with served blocks).
    pub compactions: Counter,
    /// Merges that failed (their inputs stay served; the merge is retried).
    pub compaction_failures: Counter,
    /// Blocks moved to the object store.
    pub uploads: Counter,
    /// Moves to the object store that failed (retried; the local copy stays served).
    pub upload_failures: Counter,
    /// Blocks loaded now.
    pub loaded: Gauge,
    /// Bytes of the loaded blocks.
    pub bytes: Gauge,
}

impl BlockMetrics {
    /// Registers the counters.
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("arrowhead_blocks");
        r.register("cuts", "Blocks written from the head", self.cuts.clone());
        r.register(
            "cut_failures",
            "Block cuts that failed and will be retried",
            self.cut_failures.clone(),
        );
        r.register(
            "corrupted",
            "Blocks moved to the corrupted directory",
            self.corrupted.clone(),
        );
        r.register(
            "deleted",
            "Blocks deleted by retention",
            self.deleted.clone(),
        );
        r.register("compactions", "Block merges done", self.compactions.clone());
        r.register(
            "compaction_failures",
            "Block merges that failed and will be retried",
            self.compaction_failures.clone(),
        );
        r.register(
            "uploads",
            "Blocks moved to the object store",
            self.uploads.clone(),
        );
        r.register(
            "upload_failures",
            "Moves of blocks to the object store that failed and will be retried",
            self.upload_failures.clone(),
        );
        r.register("loaded", "Blocks being served", self.loaded.clone());
        r.register("bytes", "Bytes of the blocks served", self.bytes.clone());
    }
}

/// The blocks of a data directory. Shared by the cut loop (writes) and queries (reads).
#[derive(Debug)]
pub struct Blocks {
    /// `<data>/blocks`.
    dir: PathBuf,
    /// `<data>/corrupted`.
    corrupted_dir: PathBuf,
    /// What queries see; replaced whole under the write lock.
    state: RwLock<BlockView>,
    /// One cut, retention pass or discovery at a time.
    writer: Mutex<()>,
    /// One compaction at a time (separate from `writer`: a long merge never delays a cut).
    compactor: Mutex<()>,
    /// Where finished blocks are moved, when configured.
    remote: Option<Arc<RemoteStore>>,
    /// Blocks merged away, kept on disk a while for queries that already listed their files.
    retired: Mutex<Vec<(Arc<Block>, std::time::Instant)>>,
    metrics: BlockMetrics,
    /// Blocks moved to `corrupted/` since start-up: (directory name, reason).
    corrupted: Mutex<Vec<(String, String)>>,
}

impl Blocks {
    /// Loads the blocks under `data_dir/blocks`, removing interrupted cuts and moving broken
    /// blocks to `data_dir/corrupted`.
    pub fn open(data_dir: &Path) -> Result<Self> {
        Self::open_with(data_dir, None)
    }

    /// [`Blocks::open`], plus the blocks in `remote` (`storage.object_store`), where finished
    /// blocks are then moved (see the `remote` module).
    pub fn open_with(data_dir: &Path, remote: Option<RemoteStore>) -> Result<Self> {
        // Absolute, because queries hand block file paths to DataFusion's local object store,
        // which reads every path from the root: `data/blocks/…` would be `/data/blocks/…`.
        let data_dir = &std::path::absolute(data_dir).map_err(io_err(data_dir))?;
        let dir = data_dir.join("blocks");
        let corrupted_dir = data_dir.join("corrupted");
        std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let metrics = BlockMetrics::default();
        let mut blocks = Vec::new();
        let mut corrupted = Vec::new();
        for entry in std::fs::read_dir(&dir).map_err(io_err(&dir))? {
            let entry = entry.map_err(io_err(&dir))?;
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".tmp") {
                warn!(dir = %path.display(), "removing an interrupted block cut");
                std::fs::remove_dir_all(&path).map_err(io_err(&path))?;
                continue;
            }
            if !path.is_dir() {
                continue;
            }
            match load_block(&path, &name) {
                Ok(meta) => blocks.push(Arc::new(Block::local(meta, path))),
                Err(reason) => {
                    move_aside(&path, &corrupted_dir, &name, &reason)?;
                    metrics.corrupted.inc();
                    corrupted.push((name, reason));
                }
            }
        }
        let remote = remote.map(Arc::new);
        if let Some(store) = &remote {
            let (metas, skipped) = store.list()?;
            for (id, reason) in skipped {
                warn!(block = %id, url = store.url(), reason, "not serving a directory of the object store");
            }
            for meta in metas {
                // Uploaded completely (meta.json is written last): the local copy can go.
                if let Some(at) = blocks.iter().position(|b| b.meta.id == meta.id) {
                    let local = blocks.remove(at);
                    info!(block = %meta.id, "removing the local copy of a block already in the object store");
                    std::fs::remove_dir_all(&local.dir).map_err(io_err(&local.dir))?;
                }
                let dir = dir.join(&meta.id);
                blocks.push(Arc::new(Block {
                    meta,
                    dir,
                    remote: true,
                }));
            }
        }
        // A merge that crashed after publishing its result but before deleting its inputs.
        let superseded: std::collections::HashSet<String> = blocks
            .iter()
            .flat_map(|b| b.meta.parents.iter().cloned())
            .collect();
        let (gone, mut blocks): (Vec<_>, Vec<_>) = blocks
            .into_iter()
            .partition(|b| superseded.contains(&b.meta.id));
        for block in gone {
            info!(block = %block.meta.id, "removing a block already merged into another");
            delete_block(&block, remote.as_deref())?;
        }
        sort_blocks(&mut blocks);
        let head_from = blocks
            .iter()
            .map(|b| b.meta.range_end)
            .max()
            .unwrap_or(i64::MIN);
        let this = Self {
            dir,
            corrupted_dir,
            state: RwLock::new(BlockView {
                blocks: Vec::new(),
                head_from,
                remote: remote.clone(),
                generation: 0,
            }),
            remote,
            writer: Mutex::new(()),
            compactor: Mutex::new(()),
            retired: Mutex::new(Vec::new()),
            metrics,
            corrupted: Mutex::new(corrupted),
        };
        this.replace_blocks(|state| state.blocks = blocks);
        // Blocks imported while no replica ran may overlap: merge them before serving, so a
        // query never sees two versions of a sample.
        this.resolve_overlaps()?;
        this.delete_retired(std::time::Duration::ZERO);
        Ok(this)
    }

    /// Changes the block list under the write lock and updates the gauges.
    fn replace_blocks<T>(&self, change: impl FnOnce(&mut BlockView) -> T) -> T {
        let mut state = self.state.write();
        let out = change(&mut state);
        state.generation += 1;
        sort_blocks(&mut state.blocks);
        self.metrics.loaded.set(state.blocks.len() as i64);
        self.metrics
            .bytes
            .set(state.blocks.iter().map(|b| b.meta.bytes as i64).sum());
        out
    }

    /// Blocks moved to `corrupted/` since start-up: (directory name, reason).
    pub fn corrupted(&self) -> Vec<(String, String)> {
        self.corrupted.lock().clone()
    }

    /// Deletes the oldest blocks while all blocks together take more than `max_bytes`
    /// (`storage.retention_size`); whole blocks only. Returns how many went.
    pub fn delete_over_size(&self, max_bytes: u64) -> Result<usize> {
        let view = self.view();
        let mut total: u64 = view.blocks.iter().map(|b| b.meta.bytes).sum();
        let mut oldest = std::collections::HashSet::new();
        for b in &view.blocks {
            if total <= max_bytes {
                break;
            }
            total -= b.meta.bytes;
            oldest.insert(b.meta.id.clone());
        }
        if oldest.is_empty() {
            return Ok(0);
        }
        self.delete_where(|b| oldest.contains(&b.meta.id))
    }

    /// The counters.
    pub fn metrics(&self) -> &BlockMetrics {
        &self.metrics
    }

    /// What a query reads: a snapshot of the block list and the head's read bound.
    pub fn view(&self) -> BlockView {
        self.state.read().clone()
    }

    /// The generation of the current view ([`BlockView::generation`]).
    pub fn generation(&self) -> u64 {
        self.state.read().generation
    }

    /// End of the newest block's range: the head holds what is at or after it.
    pub fn head_from(&self) -> i64 {
        self.state.read().head_from
    }

    /// Cuts everything in the head older than `end` into a new block (see the module docs).
    /// Returns the block, or `None` when there was nothing to cut.
    pub fn cut(&self, head: &Head, end: i64) -> Result<Option<Arc<Block>>> {
        let _writer = self.writer.lock();
        let start = self.head_from();
        // Nothing to cut: leave the head open to older samples (a replica that just started
        // accepts a backfill until its first block covers that time).
        if end <= start || !head.has_samples_before(end) {
            return Ok(None);
        }
        let result = self.cut_locked(head, start, end);
        if result.is_err() {
            self.metrics.cut_failures.inc();
        }
        result
    }

    fn cut_locked(&self, head: &Head, start: i64, end: i64) -> Result<Option<Arc<Block>>> {
        let started = std::time::Instant::now();
        let wal_dir = head.wal().map(|w| w.dir().to_path_buf());
        head.close_before(end)
            .map_err(io_err(wal_dir.as_deref().unwrap_or(Path::new("wal"))))?;
        let mut writer = BlockWriter::create(&self.dir, ulid::Ulid::new().to_string(), 1)?;
        for metric in head.all_metrics() {
            let batch = metric
                .snapshot()
                .sorted_rows(start, end)
                .map_err(|source| Error::Head {
                    metric: metric.name().to_string(),
                    source,
                })?;
            if let Some(batch) = batch {
                writer.write_metric(metric.name(), &batch)?;
            }
        }
        let Some(block) = writer.finish(start, end, Vec::new())? else {
            self.replace_blocks(|state| state.head_from = end);
            return Ok(None);
        };
        let block = Arc::new(block);
        self.replace_blocks(|state| {
            state.blocks.push(Arc::clone(&block));
            state.head_from = end;
        });
        self.metrics.cuts.inc();
        head.truncate(end);
        if let Some(wal) = head.wal()
            && let Err(e) = wal.remove_segments_before(end)
        {
            warn!(error = %e, "cannot remove persisted WAL segments; will retry at the next cut");
        }
        info!(
            block = %block.meta.id,
            rows = block.meta.rows,
            bytes = block.meta.bytes,
            metrics = block.meta.metrics.len(),
            seconds = started.elapsed().as_secs_f64(),
            "block written"
        );
        Ok(Some(block))
    }

    /// Deletes every block whose newest sample is older than `min_timestamp`; whole blocks
    /// only. Returns how many went. Queries already running keep reading files they opened.
    pub fn delete_before(&self, min_timestamp: i64) -> Result<usize> {
        self.delete_where(|b| b.meta.max_timestamp < min_timestamp)
    }

    fn delete_where(&self, doomed: impl Fn(&Block) -> bool) -> Result<usize> {
        let _writer = self.writer.lock();
        let doomed: Vec<Arc<Block>> = self.replace_blocks(|state| {
            let (gone, kept): (Vec<_>, Vec<_>) = state.blocks.drain(..).partition(|b| doomed(b));
            state.blocks = kept;
            gone
        });
        for block in &doomed {
            delete_block(block, self.remote.as_deref())?;
            self.metrics.deleted.inc();
            info!(block = %block.meta.id, "retention deleted a block");
        }
        if !doomed.is_empty() {
            sync_dir(&self.dir).map_err(io_err(&self.dir))?;
        }
        Ok(doomed.len())
    }

    /// Takes a served (or found) block out of service because its files cannot be read:
    /// moved to `corrupted/`, logged, counted and listed like a block that fails at start-up.
    pub fn quarantine(&self, id: &str, reason: &str) -> Result<()> {
        let _writer = self.writer.lock();
        let gone = self.replace_blocks(|state| {
            let at = state.blocks.iter().position(|b| b.meta.id == id)?;
            Some(state.blocks.remove(at))
        });
        match gone {
            Some(b) if b.remote => {
                warn!(
                    block = id,
                    reason,
                    "block in the object store is unreadable: no longer served, left in place"
                );
            }
            gone => {
                let dir = gone.map_or_else(|| self.dir.join(id), |b| b.dir.clone());
                if dir.exists() {
                    move_aside(&dir, &self.corrupted_dir, id, reason)?;
                }
            }
        }
        self.metrics.corrupted.inc();
        self.corrupted
            .lock()
            .push((id.to_string(), reason.to_string()));
        Ok(())
    }

    /// The object store, when `storage.object_store` is set.
    pub fn remote(&self) -> Option<&Arc<RemoteStore>> {
        self.remote.as_ref()
    }

    /// Where broken blocks go.
    pub fn corrupted_dir(&self) -> &Path {
        &self.corrupted_dir
    }
}

/// Deletes a block's files, wherever they are.
fn delete_block(block: &Block, remote: Option<&RemoteStore>) -> Result<()> {
    match (block.remote, remote) {
        (true, Some(store)) => Ok(store.delete(&block.meta)?),
        (true, None) => Ok(()),
        (false, _) => match std::fs::remove_dir_all(&block.dir) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err(&block.dir)(e)),
            _ => Ok(()),
        },
    }
}

/// Blocks in view order: oldest data first.
fn sort_blocks(blocks: &mut [Arc<Block>]) {
    blocks.sort_by(|a, b| {
        (a.meta.min_timestamp, &a.meta.id).cmp(&(b.meta.min_timestamp, &b.meta.id))
    });
}

/// A block being written: its files go to `<blocks>/<id>.tmp/`, [`BlockWriter::finish`]
/// publishes it. Dropped unfinished, the temporary directory is removed.
#[derive(Debug)]
pub struct BlockWriter {
    blocks_dir: PathBuf,
    id: String,
    level: u32,
    tmp: PathBuf,
    metrics: BTreeMap<String, MetricFile>,
    finished: bool,
}

impl BlockWriter {
    /// Starts block `id` (a ULID: blocks with larger ids override smaller ones where their
    /// samples collide) of `level` under `blocks_dir`; the level picks the writer settings
    /// ([`writer_properties`]).
    pub fn create(blocks_dir: &Path, id: String, level: u32) -> Result<Self> {
        let tmp = blocks_dir.join(format!("{id}.tmp"));
        std::fs::create_dir_all(&tmp).map_err(io_err(&tmp))?;
        Ok(Self {
            blocks_dir: blocks_dir.to_path_buf(),
            id,
            level,
            tmp,
            metrics: BTreeMap::new(),
            finished: false,
        })
    }

    /// Samples written so far.
    pub fn rows(&self) -> u64 {
        self.metrics.values().map(|m| m.rows).sum()
    }

    /// Writes one metric's file; `batch` must be in block order (see `block.md`), as
    /// [`MetricSnapshot::sorted_rows`](crate::head::MetricSnapshot::sorted_rows) and the merge
    /// step produce it.
    pub fn write_metric(&mut self, metric: &str, batch: &RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let file = file_name(metric);
        let path = self.tmp.join(&file);
        let bytes = write_parquet(&path, batch, self.level)?;
        let ts = batch
            .column_by_name(TIMESTAMP_COLUMN)
            .and_then(|c| c.as_primitive_opt::<TimestampMillisecondType>());
        let (min_timestamp, max_timestamp) = ts
            .map(|a| {
                (
                    arrow::compute::min(a).unwrap_or(0),
                    arrow::compute::max(a).unwrap_or(0),
                )
            })
            .unwrap_or((0, 0));
        let labels = batch
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .filter(|n| n != TIMESTAMP_COLUMN && n != VALUE_COLUMN)
            .collect();
        self.metrics.insert(
            metric.to_string(),
            MetricFile {
                file,
                rows: batch.num_rows() as u64,
                bytes,
                labels,
                min_timestamp,
                max_timestamp,
            },
        );
        Ok(())
    }

    /// Writes `meta.json` and publishes the block (see the module docs); `None`, with nothing
    /// left behind, when no file was written.
    pub fn finish(
        mut self,
        range_start: i64,
        range_end: i64,
        parents: Vec<String>,
    ) -> Result<Option<Block>> {
        self.finished = true;
        if self.metrics.is_empty() {
            std::fs::remove_dir_all(&self.tmp).map_err(io_err(&self.tmp))?;
            return Ok(None);
        }
        let metrics = std::mem::take(&mut self.metrics);
        let meta = BlockMeta {
            version: META_VERSION,
            id: self.id.clone(),
            range_start,
            range_end,
            min_timestamp: metrics.values().map(|m| m.min_timestamp).min().unwrap_or(0),
            max_timestamp: metrics.values().map(|m| m.max_timestamp).max().unwrap_or(0),
            rows: metrics.values().map(|m| m.rows).sum(),
            bytes: metrics.values().map(|m| m.bytes).sum(),
            level: self.level,
            parents,
            metrics,
        };
        let dir = self.blocks_dir.join(&self.id);
        if let Err(e) = publish(&self.tmp, &dir, &meta) {
            let _ = std::fs::remove_dir_all(&self.tmp);
            return Err(e);
        }
        sync_dir(&self.blocks_dir).map_err(io_err(&self.blocks_dir))?;
        Ok(Some(Block::local(meta, dir)))
    }
}

impl Drop for BlockWriter {
    fn drop(&mut self) {
        if !self.finished {
            let _ = std::fs::remove_dir_all(&self.tmp);
        }
    }
}

/// Rows per Parquet row group. DataFusion spreads a file over its partitions (one per core)
/// by row group, so a metric's 2 h file of a few hundred thousand rows must hold several to
/// be read in parallel; the default (1 Mi rows) made it one, so the per-series rate query of
/// `benches/query_vs_prometheus.py` scanned and pre-aggregated 792 k rows on one core. Smaller
/// groups repeat their dictionaries and statistics: the benchmark dataset's blocks grew from
/// 14,051,780 to 14,115,713 bytes (+0.5 %).
pub const ROW_GROUP_ROWS: usize = 128 * 1024;

/// Writer settings: ZSTD, dictionary-encoded labels, delta-encoded timestamps, byte-stream-split
/// values, row groups of [`ROW_GROUP_ROWS`], page-level statistics (so DataFusion's page index
/// prunes by time and label), and the sort order recorded.
///
/// Level-1 blocks (cuts of the head) are written for speed: ZSTD level 1 and no statistics on
/// label columns (timestamps keep theirs). A cut is on the ingest path's CPU budget, and the
/// Parquet writer compares every row's label strings to keep their minimum and maximum (by a
/// perf profile of cuts of `benches/ingest_vs_prometheus.py`'s targets, about a sixth of a
/// cut's time, estimated from the samples in its min/max loop and string compares). Such a
/// block covers 10 minutes and is merged into a level-2 block, written with everything,
/// within about 2 h; until then a label filter reads its small files whole, as it reads the
/// head.
pub fn writer_properties(batch: &RecordBatch, level: u32) -> WriterProperties {
    let schema = batch.schema();
    let sorting = schema
        .fields()
        .iter()
        .enumerate()
        .filter(|(_, f)| f.name() != VALUE_COLUMN)
        .map(|(i, _)| SortingColumn {
            column_idx: i as i32,
            descending: false,
            nulls_first: true,
        })
        .collect();
    let fast = level <= 1;
    let zstd = ZstdLevel::try_new(if fast { 1 } else { 3 }).expect("valid level");
    let mut builder = WriterProperties::builder()
        .set_compression(Compression::ZSTD(zstd))
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_sorting_columns(Some(sorting))
        .set_column_dictionary_enabled(ColumnPath::from(TIMESTAMP_COLUMN), false)
        .set_column_encoding(
            ColumnPath::from(TIMESTAMP_COLUMN),
            Encoding::DELTA_BINARY_PACKED,
        )
        .set_column_dictionary_enabled(ColumnPath::from(VALUE_COLUMN), false)
        .set_column_encoding(ColumnPath::from(VALUE_COLUMN), Encoding::BYTE_STREAM_SPLIT);
    if fast {
        for field in schema.fields() {
            if field.name() != TIMESTAMP_COLUMN && field.name() != VALUE_COLUMN {
                builder = builder.set_column_statistics_enabled(
                    ColumnPath::from(field.name().as_str()),
                    EnabledStatistics::None,
                );
            }
        }
    }
    builder.build()
}

/// Writes `batch` to `path` for a block of `level` and fsyncs it; returns the file size.
fn write_parquet(path: &Path, batch: &RecordBatch, level: u32) -> Result<u64> {
    let parquet_err = |source| Error::Parquet {
        path: path.to_path_buf(),
        source,
    };
    let file = File::create(path).map_err(io_err(path))?;
    let file =
        write_row_groups(file, batch, writer_properties(batch, level)).map_err(parquet_err)?;
    file.sync_all().map_err(io_err(path))?;
    Ok(file.metadata().map_err(io_err(path))?.len())
}

/// Writes `batch` as a Parquet file with `props`, in row groups of [`ROW_GROUP_ROWS`]: label
/// columns without statistics through [`label_chunk`] (once per distinct value instead of
/// once per row; see there), every other column through the Parquet crate's Arrow column
/// writers, exactly as its `ArrowWriter` would.
fn write_row_groups<W: io::Write + Send>(
    out: W,
    batch: &RecordBatch,
    props: WriterProperties,
) -> parquet::errors::Result<W> {
    let schema = batch.schema();
    let mut writer = ArrowWriter::try_new(out, Arc::clone(&schema), Some(props.clone()))?;
    if schema.fields().iter().any(|f| f.data_type().is_nested()) {
        // One leaf per field is assumed below; block schemas are flat, so this is only a guard.
        writer.write(batch)?;
        return writer.into_inner();
    }
    let (mut file, factory) = writer.into_serialized_writer()?;
    let columns = file.schema_descr().columns().to_vec();
    let rows = batch.num_rows();
    for (index, start) in (0..rows).step_by(ROW_GROUP_ROWS).enumerate() {
        let len = ROW_GROUP_ROWS.min(rows - start);
        let writers = factory.create_column_writers(index)?;
        let mut group = file.next_row_group()?;
        for (((field, column), mut writer), descr) in schema
            .fields()
            .iter()
            .zip(batch.columns())
            .zip(writers)
            .zip(&columns)
        {
            let slice = column.slice(start, len);
            match label_chunk::encode(&slice, descr, &props)? {
                Some(chunk) => group.append_column(&chunk.bytes, chunk.close)?,
                None => {
                    for leaf in compute_leaves(field, &slice)? {
                        writer.write(&leaf)?;
                    }
                    writer.close()?.append_to_row_group(&mut group)?;
                }
            }
        }
        group.close()?;
    }
    file.into_inner()
}

/// Writes `meta.json` into `tmp`, fsyncs it and the directory, and renames `tmp` to `dir`.
fn publish(tmp: &Path, dir: &Path, meta: &BlockMeta) -> Result<()> {
    let path = tmp.join(META_FILE);
    let json = serde_json::to_vec_pretty(meta).expect("block meta serializes");
    let mut file = File::create(&path).map_err(io_err(&path))?;
    io::Write::write_all(&mut file, &json).map_err(io_err(&path))?;
    file.sync_all().map_err(io_err(&path))?;
    sync_dir(tmp).map_err(io_err(tmp))?;
    std::fs::rename(tmp, dir).map_err(io_err(dir))?;
    Ok(())
}

/// Reads and checks a block directory: `meta.json` parses, matches the directory name, and
/// every file it names is a plain file name that exists with the recorded size, and whose
/// Parquet footer parses with the recorded row count.
fn load_block(dir: &Path, name: &str) -> Result<BlockMeta, String> {
    let path = dir.join(META_FILE);
    let bytes = std::fs::read(&path).map_err(|e| format!("cannot read {META_FILE}: {e}"))?;
    let meta: BlockMeta =
        serde_json::from_slice(&bytes).map_err(|e| format!("invalid {META_FILE}: {e}"))?;
    if meta.version != META_VERSION {
        return Err(format!("unknown {META_FILE} version {}", meta.version));
    }
    if meta.id != name {
        return Err(format!("{META_FILE} names block {:?}", meta.id));
    }
    for (metric, f) in &meta.metrics {
        let plain = !f.file.is_empty()
            && !f.file.contains('/')
            && !f.file.contains('\\')
            && f.file != "."
            && f.file != ".."
            && f.file != META_FILE;
        if !plain {
            return Err(format!("metric {metric:?} names file {:?}", f.file));
        }
        let size = std::fs::metadata(dir.join(&f.file))
            .map_err(|e| format!("metric {metric:?}: file {}: {e}", f.file))?
            .len();
        if size != f.bytes {
            return Err(format!(
                "metric {metric:?}: file {} has {size} bytes, {META_FILE} says {}",
                f.file, f.bytes
            ));
        }
        // The footer parses and agrees on the row count (a cheap read of the file's end).
        let file = File::open(dir.join(&f.file))
            .map_err(|e| format!("metric {metric:?}: file {}: {e}", f.file))?;
        let reader = parquet::file::reader::SerializedFileReader::new(file)
            .map_err(|e| format!("metric {metric:?}: file {}: {e}", f.file))?;
        let rows = parquet::file::reader::FileReader::metadata(&reader)
            .file_metadata()
            .num_rows();
        if u64::try_from(rows).ok() != Some(f.rows) {
            return Err(format!(
                "metric {metric:?}: file {} has {rows} rows, {META_FILE} says {}",
                f.file, f.rows
            ));
        }
    }
    Ok(meta)
}

/// Moves a broken block out of `blocks/`, so it is neither served nor lost.
fn move_aside(path: &Path, corrupted_dir: &Path, name: &str, reason: &str) -> Result<()> {
    std::fs::create_dir_all(corrupted_dir).map_err(io_err(corrupted_dir))?;
    let mut target = corrupted_dir.join(name);
    let mut n = 1;
    while target.exists() {
        target = corrupted_dir.join(format!("{name}.{n}"));
        n += 1;
    }
    warn!(
        block = %path.display(),
        moved_to = %target.display(),
        reason,
        "corrupt block moved aside; serving the rest"
    );
    std::fs::rename(path, &target).map_err(io_err(&target))
}

/// How a local block file is named in the list of files a query read, which
/// [`Blocks::verify_files`] takes: its path without a leading `/`, as an object store names it.
pub fn local_location(path: &Path) -> String {
    path.to_string_lossy().trim_start_matches('/').to_string()
}

mod compact;
pub mod import;
mod label_chunk;
mod merge;
pub mod remote;
#[cfg(test)]
mod tests;

pub use compact::CompactionConfig;
pub use merge::{MetricBuilder, metric_schema};
pub use remote::{RemoteError, RemoteStore};
