//! The head block: recent samples in memory, as Arrow columns, one table per metric.
//!
//! ```text
//!  Appender::series(metric, labels) ──► MetricHead (one per metric name)
//!  Appender::append(ref, t, v)            ├─ label columns: name → interned values,
//!  Appender::commit() ───────────────────►│    and for each series the id of its value
//!                                         ├─ series: id → first/last timestamp
//!                                         ├─ sealed chunks: Arc<Chunk> (series id, t, v)
//!                                         └─ open chunk: Vecs being appended
//!  MetricHead::snapshot() ──► MetricSnapshot ──read_chunk()──► RecordBatch (dictionary labels)
//! ```
//!
//! A chunk row stores only `(series id, timestamp, value)`: 16 bytes of sample plus 4 of id
//! while the chunk is open; a sealed chunk is packed (differences, byte planes, zstd; see
//! `packed`), a few bytes per row, and unpacked by readers.
//! Labels are not repeated per row; a reader turns the series id column into one
//! `Dictionary(Int32, Utf8)` column per label through the per-series value ids, a gather.
//! Because label columns are rebuilt from the *current* series table at read time, a label that
//! appears later widens every older chunk for free (older series read it as NULL).
//!
//! Locking: the metric index is an `RwLock` taken briefly to find or add a metric; each
//! metric's state has its own `Mutex`, held for one commit's samples of that metric or for
//! taking a snapshot (an `Arc` clone per sealed chunk plus a copy of the open chunk, which
//! is at most [`HeadConfig::chunk_rows`] rows). Appends and reads of different metrics never
//! contend, and no lock is held across an `.await` or while encoding a batch.
//!
//! A commit is where a WAL record will be written before the samples become visible: the
//! appender already collects the series it created and the samples it holds, the two halves
//! of such a record.

mod append;
mod packed;
mod read;
mod replay;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use arrow::array::{ArrayRef, StringArray};
use parking_lot::{Mutex, RwLock};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

pub use append::{AppendError, AppendStats, Appender, HeadAppender};
pub use read::{
    LabelMatcher, MatchOp, MetricSnapshot, TIMESTAMP_COLUMN, TimeRange, VALUE_COLUMN, cast_labels,
    label_column_name, label_type, label_view_dictionary, timestamp_type,
};
pub use replay::ReplayStats;

use crate::labels::Labels;

/// Marks "this series has no value for this label" in a column's per-series ids.
const NO_VALUE: u32 = u32::MAX;

/// Head settings.
#[derive(Debug, Clone)]
pub struct HeadConfig {
    /// Rows per chunk: the open chunk is sealed into an immutable Arrow chunk at this size.
    /// Larger chunks mean fewer batches per scan; smaller ones less copying per snapshot.
    pub chunk_rows: usize,
    /// Cap on series in the head (0 = off): `storage.max_series`.
    pub max_series: u64,
}

impl Default for HeadConfig {
    fn default() -> Self {
        Self {
            chunk_rows: 8192,
            max_series: 0,
        }
    }
}

impl HeadConfig {
    /// Small chunks, so tests exercise sealing.
    pub fn test_config() -> Self {
        Self {
            chunk_rows: 4,
            max_series: 0,
        }
    }
}

/// Identifies one series in the head: its metric and its id within the metric.
/// Cheap to copy; ingest caches these per scrape target to skip label handling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SeriesRef {
    /// Index of the metric in the head.
    pub metric: u32,
    /// Index of the series within its metric.
    pub series: u32,
}

/// The head's own counters, exported on `/metrics`.
#[derive(Debug, Clone, Default)]
pub struct HeadMetrics {
    /// Samples accepted into the head.
    pub samples_appended: Counter,
    /// Samples dropped because their timestamp was not newer than their series' last one.
    pub samples_out_of_order: Counter,
    /// Series rejected because `storage.max_series` was reached.
    pub series_rejected: Counter,
    /// Series created.
    pub series_created: Counter,
    /// Samples removed by [`Head::truncate`] (retention).
    pub samples_truncated: Counter,
    /// Samples dropped because they were older than the head's lower time bound (the data
    /// before it is already in blocks).
    pub samples_out_of_bounds: Counter,
    /// Series in the head now.
    pub series: Gauge,
    /// Metrics (tables) in the head now.
    pub metrics: Gauge,
}

impl HeadMetrics {
    /// Registers the counters under `arrowhead_head_*`.
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("arrowhead_head");
        r.register(
            "samples_appended",
            "Samples appended to the head",
            self.samples_appended.clone(),
        );
        r.register(
            "samples_out_of_order",
            "Samples dropped because they were not newer than the last sample of their series",
            self.samples_out_of_order.clone(),
        );
        r.register(
            "series_rejected",
            "New series rejected because storage.max_series was reached",
            self.series_rejected.clone(),
        );
        r.register(
            "series_created",
            "Series created in the head",
            self.series_created.clone(),
        );
        r.register(
            "samples_truncated",
            "Samples removed from the head by retention",
            self.samples_truncated.clone(),
        );
        r.register(
            "samples_out_of_bounds",
            "Samples dropped because they were older than the head's lower time bound",
            self.samples_out_of_bounds.clone(),
        );
        r.register("series", "Series in the head", self.series.clone());
        r.register(
            "metrics",
            "Metrics (tables) in the head",
            self.metrics.clone(),
        );
    }
}

/// The in-memory head block. Shared as `Arc<Head>` by scrapers (append) and queries (read).
#[derive(Debug)]
pub struct Head {
    config: HeadConfig,
    /// Metric name → metric. Read-locked once per commit, and per lookup by name; write-locked
    /// only to add a metric.
    metrics: RwLock<MetricIndex>,
    /// Series across all metrics, for the `max_series` guard.
    series_total: AtomicU64,
    stats: HeadMetrics,
    /// Family metadata from expositions.
    metadata: crate::metadata::MetadataStore,
    /// Every commit is logged here first, when the head was opened with [`Head::open`].
    wal: Option<crate::wal::Wal>,
    /// Samples older than this (ms) are refused: that time is already cut into blocks.
    min_valid_ts: AtomicI64,
}

#[derive(Debug, Default)]
struct MetricIndex {
    by_name: HashMap<Arc<str>, u32>,
    list: Vec<Arc<MetricHead>>,
}

impl Head {
    /// An empty head.
    pub fn new(config: HeadConfig) -> Self {
        Self {
            config,
            metrics: RwLock::new(MetricIndex::default()),
            series_total: AtomicU64::new(0),
            stats: HeadMetrics::default(),
            metadata: Default::default(),
            wal: None,
            min_valid_ts: AtomicI64::new(i64::MIN),
        }
    }

    /// The WAL, when the head has one.
    pub fn wal(&self) -> Option<&crate::wal::Wal> {
        self.wal.as_ref()
    }

    /// The oldest timestamp (ms) an append may carry.
    pub fn min_valid_timestamp(&self) -> i64 {
        self.min_valid_ts.load(Ordering::Relaxed)
    }

    /// Closes the time before `end` to appends, before that time is cut into a block: no
    /// commit is in flight once this returns (commits hold the WAL), so a snapshot taken
    /// afterwards holds every sample before `end` there will ever be. Then starts a new WAL
    /// segment, so the older ones become removable once the block is durable.
    pub fn close_before(&self, end: i64) -> std::io::Result<()> {
        match &self.wal {
            Some(wal) => {
                let writer = wal.lock()?;
                self.set_min_valid_timestamp(end);
                drop(writer);
                wal.rotate()
            }
            None => {
                self.set_min_valid_timestamp(end);
                Ok(())
            }
        }
    }

    /// True when some chunk of the head holds a sample older than `end` (it may be one
    /// already cut into a block: chunks are dropped whole).
    pub fn has_samples_before(&self, end: i64) -> bool {
        self.all_metrics().iter().any(|m| {
            let state = m.state.lock();
            state.sealed.iter().any(|c| c.min_ts < end)
                || (state.open.len() > 0 && state.open.min_ts < end)
        })
    }

    /// Raises the oldest timestamp an append may carry; it never goes down. Called when the
    /// time before `timestamp` is cut into a block.
    pub fn set_min_valid_timestamp(&self, timestamp: i64) {
        self.min_valid_ts.fetch_max(timestamp, Ordering::Relaxed);
    }

    /// The head's counters.
    pub fn metrics(&self) -> &HeadMetrics {
        &self.stats
    }

    /// Metric family metadata.
    pub fn metadata(&self) -> &crate::metadata::MetadataStore {
        &self.metadata
    }

    /// A new appender. Nothing it appends is visible until [`Appender::commit`].
    pub fn appender(&self) -> HeadAppender<'_> {
        HeadAppender::new(self, 0)
    }

    /// A new appender with room for about `samples` samples (at most 2^20 are reserved), so
    /// a commit of that size (a target's next scrape, sized by its last) fills buffers made
    /// once instead of growing them by doubling: that growth, in the samples and in the WAL
    /// record, was ~1.5 % of a replica's steady ingest CPU by perf (reallocations and their
    /// copies; 50 targets × 1,969 series at 15 s).
    pub fn appender_with_capacity(&self, samples: usize) -> HeadAppender<'_> {
        HeadAppender::new(self, samples.min(1 << 20))
    }

    /// Names of all metrics in the head, sorted.
    pub fn metric_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .metrics
            .read()
            .list
            .iter()
            .map(|m| m.name.to_string())
            .collect();
        names.sort();
        names
    }

    /// One metric by name.
    pub fn metric(&self, name: &str) -> Option<Arc<MetricHead>> {
        let index = self.metrics.read();
        index
            .by_name
            .get(name)
            .map(|&id| Arc::clone(&index.list[id as usize]))
    }

    /// All metrics.
    pub fn all_metrics(&self) -> Vec<Arc<MetricHead>> {
        self.metrics.read().list.clone()
    }

    /// Total series in the head.
    pub fn series_count(&self) -> u64 {
        self.series_total.load(Ordering::Relaxed)
    }

    /// Drops every sealed chunk whose newest sample is older than `min_timestamp` (ms) and
    /// returns the number of samples dropped. Chunks are dropped whole, so rows slightly older
    /// than the cut may stay until their chunk goes; the open chunk is never dropped.
    /// Snapshots taken earlier keep their chunks alive until they are dropped.
    pub fn truncate(&self, min_timestamp: i64) -> u64 {
        let mut dropped = 0u64;
        for metric in self.all_metrics() {
            let mut state = metric.state.lock();
            state.sealed.retain(|chunk| {
                let keep = chunk.max_ts >= min_timestamp;
                if !keep {
                    dropped += chunk.len() as u64;
                }
                keep
            });
        }
        self.stats.samples_truncated.inc_by(dropped);
        dropped
    }

    fn get_or_create_metric(&self, name: &str) -> Arc<MetricHead> {
        if let Some(m) = self.metric(name) {
            return m;
        }
        let mut index = self.metrics.write();
        if let Some(&id) = index.by_name.get(name) {
            return Arc::clone(&index.list[id as usize]);
        }
        let id = u32::try_from(index.list.len()).expect("fewer than 2^32 metrics");
        let name: Arc<str> = Arc::from(name);
        let metric = Arc::new(MetricHead {
            id,
            name: Arc::clone(&name),
            state: Mutex::new(MetricState::default()),
        });
        index.by_name.insert(name, id);
        index.list.push(Arc::clone(&metric));
        self.stats.metrics.set(index.list.len() as i64);
        metric
    }

    /// Reserves room for one more series under `max_series` (unless `unlimited`); false when
    /// full.
    fn reserve_series(&self, unlimited: bool) -> bool {
        let max = if unlimited { 0 } else { self.config.max_series };
        let mut current = self.series_total.load(Ordering::Relaxed);
        loop {
            if max > 0 && current >= max {
                self.stats.series_rejected.inc();
                return false;
            }
            match self.series_total.compare_exchange_weak(
                current,
                current + 1,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(now) => current = now,
            }
        }
    }
}

/// One metric's part of the head: its label columns, series and chunks.
#[derive(Debug)]
pub struct MetricHead {
    id: u32,
    name: Arc<str>,
    /// Everything mutable; see the module docs for what is done under it.
    state: Mutex<MetricState>,
}

impl MetricHead {
    /// The metric name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Label sets and first/last timestamps of every series of this metric.
    pub fn series(&self) -> Vec<SeriesSummary> {
        let state = self.state.lock();
        (0..state.series.len())
            .map(|sid| SeriesSummary {
                labels: state.labels_of(sid as u32),
                first_timestamp: state.series[sid].first_ts,
                last_timestamp: state.series[sid].last_ts,
            })
            .collect()
    }

    /// Label names ever seen on this metric, sorted.
    pub fn label_names(&self) -> Vec<String> {
        let state = self.state.lock();
        let mut names: Vec<String> = state.columns.iter().map(|c| c.name.to_string()).collect();
        names.sort();
        names
    }
}

/// What `system.series` shows of one series.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesSummary {
    /// The series' labels (without the metric name).
    pub labels: Labels,
    /// First sample's timestamp, ms (i64::MAX before the first sample).
    pub first_timestamp: i64,
    /// Last sample's timestamp, ms (i64::MIN before the first sample).
    pub last_timestamp: i64,
}

#[derive(Debug, Default)]
struct MetricState {
    /// Label columns in creation order; a column's id is its index here.
    columns: Vec<LabelColumn>,
    column_ids: HashMap<Arc<str>, u32, ahash::RandomState>,
    /// Canonical series key (pairs of column id, value id, sorted by column id) → series id.
    series_ids: HashMap<Box<[u32]>, u32, ahash::RandomState>,
    /// Indexed by series id.
    series: Vec<SeriesInfo>,
    sealed: Vec<Arc<Chunk>>,
    open: OpenChunk,
    /// What readers need of the label columns, rebuilt lazily after a series is added.
    label_cache: Option<Arc<read::LabelSnapshot>>,
}

#[derive(Debug, Clone, Copy)]
struct SeriesInfo {
    first_ts: i64,
    last_ts: i64,
    /// The WAL segment that last got this series' definition ([`NO_SEGMENT`]: none yet).
    wal_segment: u32,
}

/// [`SeriesInfo::wal_segment`] of a series no WAL segment defines yet.
const NO_SEGMENT: u32 = u32::MAX;

#[derive(Debug, Default)]
struct LabelColumn {
    name: Arc<str>,
    /// Interned values; a value's id is its index here.
    values: Vec<Arc<str>>,
    value_ids: HashMap<Arc<str>, u32, ahash::RandomState>,
    /// Series id → value id, or [`NO_VALUE`].
    per_series: Vec<u32>,
    /// `values` as an Arrow array, rebuilt when a value is added.
    values_array: Option<ArrayRef>,
}

impl LabelColumn {
    fn values_array(&mut self) -> ArrayRef {
        if let Some(a) = &self.values_array {
            return Arc::clone(a);
        }
        let a: ArrayRef = Arc::new(StringArray::from_iter_values(
            self.values.iter().map(|v| v.as_ref()),
        ));
        self.values_array = Some(Arc::clone(&a));
        a
    }
}

/// An immutable run of samples of one metric: the unit of reading.
#[derive(Debug)]
pub struct Chunk {
    data: ChunkData,
    rows: usize,
    min_ts: i64,
    max_ts: i64,
}

/// A chunk's rows: as they were appended (a copy of the open chunk), or packed once sealed
/// (see the `packed` module).
#[derive(Debug)]
enum ChunkData {
    Plain(packed::Columns),
    Packed(Box<[u8]>),
}

impl Chunk {
    /// Rows in the chunk.
    pub fn len(&self) -> usize {
        self.rows
    }

    /// True when the chunk has no rows.
    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// Smallest and largest timestamp, ms.
    pub fn time_bounds(&self) -> (i64, i64) {
        (self.min_ts, self.max_ts)
    }

    /// Bytes the rows take in memory.
    pub fn memory_bytes(&self) -> usize {
        match &self.data {
            ChunkData::Plain(_) => self.rows * 20,
            ChunkData::Packed(bytes) => bytes.len(),
        }
    }

    /// The rows' series ids, timestamps and values.
    fn columns(&self) -> packed::Columns {
        match &self.data {
            ChunkData::Plain(columns) => columns.clone(),
            ChunkData::Packed(bytes) => packed::unpack(bytes, self.rows)
                .expect("a packed chunk unpacks: its bytes never leave the process"),
        }
    }
}

#[derive(Debug)]
struct OpenChunk {
    series: Vec<u32>,
    timestamps: Vec<i64>,
    values: Vec<f64>,
    min_ts: i64,
    max_ts: i64,
}

impl Default for OpenChunk {
    fn default() -> Self {
        Self {
            series: Vec::new(),
            timestamps: Vec::new(),
            values: Vec::new(),
            min_ts: i64::MAX,
            max_ts: i64::MIN,
        }
    }
}

impl OpenChunk {
    fn push(&mut self, series: u32, ts: i64, v: f64) {
        self.series.push(series);
        self.timestamps.push(ts);
        self.values.push(v);
        self.min_ts = self.min_ts.min(ts);
        self.max_ts = self.max_ts.max(ts);
    }

    fn len(&self) -> usize {
        self.timestamps.len()
    }

    /// Moves the rows out into an immutable, packed chunk.
    fn seal(&mut self) -> Chunk {
        let open = std::mem::take(self);
        let rows = open.timestamps.len();
        let data = match packed::pack(&open.series, &open.timestamps, &open.values) {
            Some(bytes) => ChunkData::Packed(bytes),
            None => ChunkData::Plain((
                open.series.into(),
                open.timestamps.into(),
                open.values.into(),
            )),
        };
        Chunk {
            data,
            rows,
            min_ts: open.min_ts,
            max_ts: open.max_ts,
        }
    }

    /// Copies the rows into an immutable chunk, leaving the open chunk as it was.
    fn copy(&self) -> Chunk {
        Chunk {
            data: ChunkData::Plain((
                self.series.clone().into(),
                self.timestamps.clone().into(),
                self.values.clone().into(),
            )),
            rows: self.timestamps.len(),
            min_ts: self.min_ts,
            max_ts: self.max_ts,
        }
    }
}

impl MetricState {
    /// Finds a series by its label pairs without creating anything.
    fn find_series(&self, labels: &[(&str, &str)], key: &mut Vec<u32>) -> Option<u32> {
        key.clear();
        for (name, value) in labels {
            let col = *self.column_ids.get(*name)?;
            let val = *self.columns[col as usize].value_ids.get(*value)?;
            key.push(col);
            key.push(val);
        }
        sort_key(key);
        self.series_ids.get(key.as_slice()).copied()
    }

    /// Creates a series; the caller has checked it does not exist and reserved room for it.
    fn create_series(&mut self, labels: &[(&str, &str)]) -> u32 {
        let sid = u32::try_from(self.series.len()).expect("fewer than 2^32 series per metric");
        let mut key = Vec::with_capacity(labels.len() * 2);
        for (name, value) in labels {
            let col = self.column_id(name);
            let column = &mut self.columns[col as usize];
            let val = match column.value_ids.get(*value) {
                Some(&v) => v,
                None => {
                    let v = u32::try_from(column.values.len()).expect("fewer than 2^32 values");
                    let value: Arc<str> = Arc::from(*value);
                    column.values.push(Arc::clone(&value));
                    column.value_ids.insert(value, v);
                    column.values_array = None;
                    v
                }
            };
            key.push(col);
            key.push(val);
        }
        for column in &mut self.columns {
            column.per_series.push(NO_VALUE);
        }
        for pair in key.chunks_exact(2) {
            self.columns[pair[0] as usize].per_series[sid as usize] = pair[1];
        }
        sort_key(&mut key);
        self.series_ids.insert(key.into_boxed_slice(), sid);
        self.series.push(SeriesInfo {
            first_ts: i64::MAX,
            last_ts: i64::MIN,
            wal_segment: NO_SEGMENT,
        });
        self.label_cache = None;
        sid
    }

    fn column_id(&mut self, name: &str) -> u32 {
        if let Some(&c) = self.column_ids.get(name) {
            return c;
        }
        let c = u32::try_from(self.columns.len()).expect("fewer than 2^32 label names");
        let name: Arc<str> = Arc::from(name);
        self.columns.push(LabelColumn {
            name: Arc::clone(&name),
            per_series: vec![NO_VALUE; self.series.len()],
            ..LabelColumn::default()
        });
        self.column_ids.insert(name, c);
        c
    }

    /// The label pairs of a series, borrowed, in column creation order.
    fn label_pairs(&self, sid: u32) -> Vec<(&str, &str)> {
        self.columns
            .iter()
            .filter_map(|c| {
                let v = *c.per_series.get(sid as usize)?;
                (v != NO_VALUE).then(|| (c.name.as_ref(), c.values[v as usize].as_ref()))
            })
            .collect()
    }

    fn labels_of(&self, sid: u32) -> Labels {
        Labels::from_pairs(self.columns.iter().filter_map(|c| {
            let v = c.per_series[sid as usize];
            (v != NO_VALUE).then(|| (c.name.to_string(), c.values[v as usize].to_string()))
        }))
    }
}

/// Sorts a flat key of (column, value) pairs by column id.
fn sort_key(key: &mut [u32]) {
    // Label sets are small: insertion sort over pairs, no allocation.
    let pairs = key.len() / 2;
    for i in 1..pairs {
        let mut j = i;
        while j > 0 && key[2 * (j - 1)] > key[2 * j] {
            key.swap(2 * (j - 1), 2 * j);
            key.swap(2 * (j - 1) + 1, 2 * j + 1);
            j -= 1;
        }
    }
}

#[cfg(test)]
mod tests;
