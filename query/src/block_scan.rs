//! Reads the block part of a metric table from local block files, and keeps what it decoded.
//!
//! Block files never change under their path (a block directory is named by its ULID and
//! written once; a merge writes a new one), so a column chunk decoded once can serve every
//! later query. [`BlockScanExec`] reads local files through [`BlockCache`], a byte-bounded LRU
//! of decoded column chunks (`query.block_cache`, default 256 MiB): a dashboard that asks about
//! the same recent hours again, or a rule that runs every minute, reads them from memory. This
//! is the counterpart of what Prometheus keeps in memory: its head holds the last 2–3 h as
//! compressed chunks, and it decodes those on every query (Gorilla decoding is cheap).
//!
//! Why not DataFusion's Parquet source: a small question pays fixed costs per file and column
//! there (building the row-group reader and its predicate, a ZSTD compressor and decompressor
//! per column chunk, the file's Arrow schema parsed again from the footer), about a quarter of
//! the query benchmark's max-per-instance over 1 h, by perf. Caching the compressed bytes would
//! leave all of them; caching decoded columns removes them. Remote blocks (object store) still
//! go through DataFusion's source: they are the old, rarely read tier.
//!
//! What is cached, per block file: its footer (as parsed, with the Arrow schema), and per row
//! group each column that a query read, as decoded, except that label columns are kept as
//! dictionaries of string views (their values become views once, when decoded; a query then
//! gathers 16-byte views by key, see [`storage::head::label_view_dictionary`]). A query that
//! misses decodes whole column chunks of the row groups it reads (DataFusion's source would
//! have skipped decoding label values of rows outside the time range), so a first read costs
//! more than a repeated one saves when nothing is ever repeated; with `query.block_cache: 0`
//! nothing is kept and every query decodes.
//!
//! Pruning and filtering: row groups whose timestamp statistics miss the pushed-down time
//! range are skipped, and those whose statistics lie inside it need no time mask (nor their
//! timestamps, unless the query reads them: a scan over whole blocks, as a 2 h rate is,
//! reads no timestamp only to compare it). Inside a row group the time range, where needed,
//! and the label matchers ([`Pushdown`]) become a row mask, applied before label columns are
//! turned into views. The masks are exact: conjuncts that say exactly what the pushdown does
//! have no `FilterExec` above the scan (see `scan.rs`), so statistics are trusted only where
//! they are exact and count no NULL timestamp.
//!
//! Reads are `pread`s on the query thread, as before this module existed: block files are
//! local, small and nearly always in the page cache, and a hand-off to the blocking pool cost
//! more than the read. A byte range named by a file's footer is checked against the file's
//! length before anything is allocated for it: a damaged footer can ask for anything. Errors
//! name the file; the engine then checks the files a failed query read and sets aside blocks
//! that do not decode (see `engine.rs`).

use std::collections::VecDeque;
use std::fmt;
use std::fs::File;
use std::io::Cursor;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, RecordBatch, RecordBatchOptions, RecordBatchReader,
    new_null_array,
};
use arrow::buffer::BooleanBuffer;
use arrow::compute::{FilterBuilder, cast, concat_batches};
use arrow::datatypes::{DataType, SchemaRef, TimeUnit, TimestampMillisecondType};
use bytes::Bytes;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{DataFusionError, Result, TableReference};
use datafusion::execution::TaskContext;
use datafusion::execution::cache::default_cache::DefaultCache;
use datafusion::execution::cache::{Cache, CacheKey, CacheValue};
use datafusion::parquet::arrow::ProjectionMask;
use datafusion::parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder,
};
use datafusion::parquet::errors::ParquetError;
use datafusion::parquet::file::reader::{ChunkReader, Length};
use datafusion::parquet::file::statistics::Statistics as ParquetStatistics;
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::metrics::{
    BaselineMetrics, Count, ExecutionPlanMetricsSet, MetricBuilder, MetricsSet,
};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
    SendableRecordBatchStream,
};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use storage::block::ROW_GROUP_ROWS;
use storage::head::{LabelMatcher, MatchOp, TIMESTAMP_COLUMN, label_view_dictionary};

use crate::QueryMetrics;
use crate::scan::Pushdown;

/// Decoded column chunks and parsed footers of local block files, shared by every query of a
/// replica, bounded in bytes (least recently used go first).
pub struct BlockCache {
    entries: DefaultCache<Key, Cached>,
    /// `/metrics`: bytes held, column chunks found and not found.
    used: Gauge,
    hits: Counter,
    misses: Counter,
}

impl fmt::Debug for BlockCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlockCache")
            .field("capacity", &self.entries.cache_limit())
            .field("used", &self.entries.memory_used())
            .finish()
    }
}

impl BlockCache {
    /// A cache holding at most `capacity` bytes; 0 keeps nothing.
    pub fn new(capacity: usize) -> Self {
        Self {
            entries: DefaultCache::new(capacity).with_name("arrowhead block cache"),
            used: Gauge::default(),
            hits: Counter::default(),
            misses: Counter::default(),
        }
    }

    /// The same cache, counted in `metrics` (`arrowhead_query_block_cache_*`).
    pub fn counted(mut self, metrics: &QueryMetrics) -> Self {
        self.used = metrics.block_cache_bytes.clone();
        self.hits = metrics.block_cache_hits.clone();
        self.misses = metrics.block_cache_misses.clone();
        self
    }

    /// Bytes held now.
    pub fn memory_used(&self) -> usize {
        self.entries.memory_used()
    }

    /// Entries held now (footers and column chunks).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when nothing is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn footer(&self, file: &Arc<str>) -> Option<ArrowReaderMetadata> {
        match self.entries.get(&Key::footer(file)) {
            Some(Cached::Footer(m)) => Some(m),
            _ => None,
        }
    }

    fn column(&self, file: &Arc<str>, row_group: usize, column: usize) -> Option<ArrayRef> {
        match self.entries.get(&Key::column(file, row_group, column)) {
            Some(Cached::Column(a)) => {
                self.hits.inc();
                Some(a)
            }
            _ => {
                self.misses.inc();
                None
            }
        }
    }

    fn keep(&self, key: Key, value: Cached) {
        self.entries.put(&key, value);
        self.used
            .set(i64::try_from(self.entries.memory_used()).unwrap_or(i64::MAX));
    }
}

/// What [`BlockCache`] holds an entry for: a file's footer or one column of one row group.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    file: Arc<str>,
    /// `None` for the footer, else (row group, column).
    part: Option<(usize, usize)>,
}

impl Key {
    fn footer(file: &Arc<str>) -> Self {
        Self {
            file: Arc::clone(file),
            part: None,
        }
    }

    fn column(file: &Arc<str>, row_group: usize, column: usize) -> Self {
        Self {
            file: Arc::clone(file),
            part: Some((row_group, column)),
        }
    }
}

impl CacheKey for Key {
    fn size(&self) -> usize {
        // The name is shared by the file's entries; counting it for each overstates a little.
        std::mem::size_of::<Self>() + self.file.len()
    }

    fn table_ref(&self) -> Option<&TableReference> {
        None
    }
}

#[derive(Clone)]
enum Cached {
    Footer(ArrowReaderMetadata),
    Column(ArrayRef),
}

impl CacheValue for Cached {
    fn size(&self) -> usize {
        match self {
            Self::Footer(m) => m.metadata().memory_size(),
            Self::Column(a) => a.get_array_memory_size(),
        }
    }
}

/// A local block file of one metric.
#[derive(Debug, Clone)]
pub struct BlockFile {
    /// Where it is on disk.
    pub path: PathBuf,
    /// Rows, as its block's `meta.json` counts them (to plan partitions).
    pub rows: u64,
}

impl BlockFile {
    /// How the engine names the file when it checks the files of a failed query
    /// ([`storage::block::local_location`]).
    pub fn location(&self) -> String {
        storage::block::local_location(&self.path)
    }
}

/// Reads a metric's local block files, row groups spread over partitions, through the
/// [`BlockCache`].
#[derive(Debug)]
pub struct BlockScanExec {
    metric: String,
    files: Arc<[BlockFile]>,
    /// The projected table schema (label columns as `Utf8View`).
    schema: SchemaRef,
    pushdown: Pushdown,
    limit: Option<usize>,
    cache: Arc<BlockCache>,
    properties: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
}

impl BlockScanExec {
    /// A scan of `files` producing `schema` (a projection of the table's schema), for up to
    /// `target_partitions` partitions.
    pub fn new(
        metric: &str,
        files: Vec<BlockFile>,
        schema: SchemaRef,
        pushdown: Pushdown,
        limit: Option<usize>,
        target_partitions: usize,
        cache: Arc<BlockCache>,
    ) -> Self {
        // Row groups are what partitions share out; their number is known only from the
        // footers, read when the scan runs, so it is estimated from the row counts here.
        let row_groups: u64 = files
            .iter()
            .map(|f| f.rows.div_ceil(ROW_GROUP_ROWS as u64).max(1))
            .sum();
        let n = usize::try_from(row_groups)
            .unwrap_or(usize::MAX)
            .clamp(1, target_partitions.max(1));
        let properties = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(Arc::clone(&schema)),
            Partitioning::UnknownPartitioning(n),
            EmissionType::Incremental,
            Boundedness::Bounded,
        ));
        Self {
            metric: metric.to_string(),
            files: files.into(),
            schema,
            pushdown,
            limit,
            cache,
            properties,
            metrics: ExecutionPlanMetricsSet::new(),
        }
    }

    /// The files it reads.
    pub fn files(&self) -> &[BlockFile] {
        &self.files
    }
}

impl DisplayAs for BlockScanExec {
    fn fmt_as(&self, t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if matches!(t, DisplayFormatType::TreeRender) {
            return write!(f, "metric={}\nfiles={}", self.metric, self.files.len());
        }
        write!(
            f,
            "BlockScanExec: metric={}, files={}, partitions={}",
            self.metric,
            self.files.len(),
            self.properties.partitioning.partition_count(),
        )?;
        crate::scan::fmt_scan_tail(f, &self.schema, &self.pushdown, self.limit)
    }
}

impl ExecutionPlan for BlockScanExec {
    fn name(&self) -> &str {
        "BlockScanExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        _children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let counter =
            |name: &'static str| MetricBuilder::new(&self.metrics).counter(name, partition);
        let reader = PartitionReader {
            files: Arc::clone(&self.files),
            schema: Arc::clone(&self.schema),
            pushdown: self.pushdown.clone(),
            cache: Arc::clone(&self.cache),
            partition,
            partitions: self.properties.partitioning.partition_count(),
            batch_size: context.session_config().batch_size().max(1),
            remaining: self.limit.unwrap_or(usize::MAX),
            file: 0,
            row_group: 0,
            unit: 0,
            open: None,
            pending: VecDeque::new(),
            failed: false,
            baseline: BaselineMetrics::new(&self.metrics, partition),
            pruned: counter("row_groups_pruned"),
            hits: counter("cache_hits"),
            misses: counter("cache_misses"),
            bytes_scanned: counter("bytes_scanned"),
        };
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            Arc::clone(&self.schema),
            futures::stream::iter(reader),
        )))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }
}

/// One partition's read: the row groups of all files, numbered in file order, whose number
/// modulo the partition count is this partition's. Yields batches of at most `batch_size`
/// rows, and stops at the first error.
struct PartitionReader {
    files: Arc<[BlockFile]>,
    schema: SchemaRef,
    pushdown: Pushdown,
    cache: Arc<BlockCache>,
    partition: usize,
    partitions: usize,
    batch_size: usize,
    /// Rows still wanted (the scan's limit).
    remaining: usize,
    /// Position: file, row group in it, and the running number of row groups passed.
    file: usize,
    row_group: usize,
    unit: usize,
    /// The current file and its footer, once needed.
    open: Option<OpenFile>,
    pending: VecDeque<RecordBatch>,
    failed: bool,
    baseline: BaselineMetrics,
    pruned: Count,
    hits: Count,
    misses: Count,
    bytes_scanned: Count,
}

/// The block file being read: its parsed footer, and the file once opened.
struct OpenFile {
    name: Arc<str>,
    path: PathBuf,
    reader: Option<BoundedFile>,
    footer: ArrowReaderMetadata,
}

impl Iterator for PartitionReader {
    type Item = Result<RecordBatch>;

    fn next(&mut self) -> Option<Result<RecordBatch>> {
        if self.failed {
            return None;
        }
        loop {
            if self.remaining == 0 {
                return None;
            }
            if let Some(mut batch) = self.pending.pop_front() {
                if batch.num_rows() > self.remaining {
                    batch = batch.slice(0, self.remaining);
                }
                self.remaining -= batch.num_rows();
                self.baseline.record_output(batch.num_rows());
                return Some(Ok(batch));
            }
            let elapsed = self.baseline.elapsed_compute().clone();
            let step = {
                let _timer = elapsed.timer();
                self.step()
            };
            match step {
                Ok(true) => {}
                Ok(false) => return None,
                Err(e) => {
                    self.failed = true;
                    return Some(Err(e));
                }
            }
        }
    }
}

impl PartitionReader {
    /// Reads this partition's next row group into `pending`; false when there is none left.
    fn step(&mut self) -> Result<bool> {
        let files = Arc::clone(&self.files);
        loop {
            let Some(file) = files.get(self.file) else {
                return Ok(false);
            };
            let open = match self.open.take() {
                Some(open) => open,
                None => self.open_file(file)?,
            };
            if self.row_group >= open.footer.metadata().num_row_groups() {
                self.file += 1;
                self.row_group = 0;
                continue;
            }
            let row_group = self.row_group;
            let mine = self.unit % self.partitions == self.partition;
            self.row_group += 1;
            self.unit += 1;
            let cover = mine.then(|| self.time_cover(&open, row_group));
            self.open = Some(open);
            let Some(cover) = cover else {
                continue;
            };
            if cover == TimeCover::Outside {
                self.pruned.add(1);
                continue;
            }
            if let Some(batch) = self.read_row_group(row_group, cover == TimeCover::Inside)? {
                let rows = batch.num_rows();
                let mut offset = 0;
                while offset < rows {
                    let n = self.batch_size.min(rows - offset);
                    self.pending.push_back(batch.slice(offset, n));
                    offset += n;
                }
                return Ok(true);
            }
        }
    }

    /// The file's footer, from the cache or read (then kept); the file itself is opened only
    /// when a column has to be decoded.
    fn open_file(&self, file: &BlockFile) -> Result<OpenFile> {
        let name: Arc<str> = file.location().into();
        let (footer, reader) = match self.cache.footer(&name) {
            Some(footer) => (footer, None),
            None => {
                let reader = BoundedFile::open(&file.path)?;
                let footer = ArrowReaderMetadata::load(&reader, ArrowReaderOptions::new())
                    .map_err(|e| file_error(&file.path, e))?;
                self.cache
                    .keep(Key::footer(&name), Cached::Footer(footer.clone()));
                (footer, Some(reader))
            }
        };
        let parquet_columns = footer
            .metadata()
            .file_metadata()
            .schema_descr()
            .num_columns();
        if parquet_columns != footer.schema().fields().len() {
            return Err(DataFusionError::Execution(format!(
                "block file {}: nested columns, not a metric file",
                file.path.display()
            )));
        }
        Ok(OpenFile {
            name,
            path: file.path.clone(),
            reader,
            footer,
        })
    }

    /// Where the row group's rows lie against the pushed-down time range, by its timestamp
    /// statistics: `Outside` (pruned), `Inside` (every row in range: no time mask to compute,
    /// and no timestamps to read unless the query wants them), or `Partly` (masked row by
    /// row; also when the statistics are missing, inexact, or count NULL timestamps).
    fn time_cover(&self, open: &OpenFile, row_group: usize) -> TimeCover {
        let time = self.pushdown.time;
        if time.is_unbounded() {
            return TimeCover::Inside;
        }
        let Ok(index) = open.footer.schema().index_of(TIMESTAMP_COLUMN) else {
            return TimeCover::Partly;
        };
        let column = open.footer.metadata().row_group(row_group).column(index);
        let Some(ParquetStatistics::Int64(s)) = column.statistics() else {
            return TimeCover::Partly;
        };
        let (Some(&min), Some(&max)) = (s.min_opt(), s.max_opt()) else {
            return TimeCover::Partly;
        };
        if max < time.start || min > time.end {
            TimeCover::Outside
        } else if time.start <= min
            && max <= time.end
            && s.min_is_exact()
            && s.max_is_exact()
            && s.null_count_opt() == Some(0)
        {
            TimeCover::Inside
        } else {
            TimeCover::Partly
        }
    }

    /// The rows of one row group that pass the pushdown, in the scan's schema; `None` when
    /// none pass. `in_time`: the row group lies inside the time range ([`TimeCover::Inside`]),
    /// so only the label matchers mask.
    fn read_row_group(&mut self, row_group: usize, in_time: bool) -> Result<Option<RecordBatch>> {
        let open = self.open.as_ref().expect("a file is open");
        let file_schema = Arc::clone(open.footer.schema());
        let rows =
            usize::try_from(open.footer.metadata().row_group(row_group).num_rows()).unwrap_or(0);
        // The file's columns this read needs: the output's, and those the pushdown masks by.
        let mut wanted: Vec<usize> = self
            .schema
            .fields()
            .iter()
            .filter_map(|f| file_schema.index_of(f.name()).ok())
            .collect();
        let time_column = (!in_time)
            .then(|| file_schema.index_of(TIMESTAMP_COLUMN).ok())
            .flatten();
        wanted.extend(time_column);
        wanted.extend(
            self.pushdown
                .matchers
                .iter()
                .filter_map(|m| file_schema.index_of(&m.column).ok()),
        );
        wanted.sort_unstable();
        wanted.dedup();

        let mut columns: Vec<Option<ArrayRef>> = vec![None; file_schema.fields().len()];
        let mut missing = Vec::new();
        for &c in &wanted {
            match self.cache.column(&open.name, row_group, c) {
                Some(array) => {
                    self.hits.add(1);
                    columns[c] = Some(array);
                }
                None => missing.push(c),
            }
        }
        if !missing.is_empty() {
            self.misses.add(missing.len());
            let decoded = self.decode(row_group, &missing)?;
            let open = self.open.as_ref().expect("a file is open");
            if decoded.len() != missing.len() {
                return Err(DataFusionError::Execution(format!(
                    "block file {}: row group {row_group} gave {} columns for {} asked",
                    open.path.display(),
                    decoded.len(),
                    missing.len()
                )));
            }
            for (c, array) in missing.into_iter().zip(decoded) {
                if array.len() != rows {
                    return Err(DataFusionError::Execution(format!(
                        "block file {}: row group {row_group} gave {} rows of column {}, its \
                         footer says {rows}",
                        open.path.display(),
                        array.len(),
                        file_schema.field(c).name()
                    )));
                }
                self.cache.keep(
                    Key::column(&open.name, row_group, c),
                    Cached::Column(Arc::clone(&array)),
                );
                columns[c] = Some(array);
            }
        }

        // Rows outside the time range or failing a matcher are masked out before label
        // columns become views.
        let mut mask: Option<BooleanBuffer> = None;
        let mut narrow = |m: BooleanBuffer| {
            mask = Some(match mask.take() {
                Some(prev) => &prev & &m,
                None => m,
            });
        };
        // The masks are exact (DataFusion may have dropped its own filter, see
        // `Pushdown::add`): a column they cannot be computed on is an error, not a pass.
        let unexpected = |what: &str| {
            DataFusionError::Execution(format!(
                "block file {}: {what}",
                self.open
                    .as_ref()
                    .map_or(Path::new(""), |o| &o.path)
                    .display()
            ))
        };
        if !in_time {
            let array = time_column
                .and_then(|c| columns[c].as_ref())
                .ok_or_else(|| unexpected("no timestamp column"))?;
            let m = time_mask(array, self.pushdown.time).ok_or_else(|| {
                unexpected(&format!("timestamp column of type {}", array.data_type()))
            })?;
            narrow(m);
        }
        for matcher in &self.pushdown.matchers {
            match file_schema.index_of(&matcher.column) {
                Ok(c) => {
                    let array = columns[c].as_ref().expect("read above");
                    let m = matcher_mask(array, matcher).ok_or_else(|| {
                        unexpected(&format!(
                            "label column {} of type {}",
                            matcher.column,
                            array.data_type()
                        ))
                    })?;
                    narrow(m);
                }
                // A series without the label never matches.
                Err(_) => narrow(BooleanBuffer::new_unset(rows)),
            }
        }
        let kept = mask.as_ref().map_or(rows, BooleanBuffer::count_set_bits);
        if kept == 0 {
            return Ok(None);
        }
        let filter = match mask {
            Some(m) if kept < rows => {
                let predicate = BooleanArray::new(m, None);
                let mut builder = FilterBuilder::new(&predicate);
                if self.schema.fields().len() > 1 {
                    builder = builder.optimize();
                }
                Some(builder.build())
            }
            _ => None,
        };
        let rows = kept;

        let mut out = Vec::with_capacity(self.schema.fields().len());
        for field in self.schema.fields() {
            let array = match file_schema.index_of(field.name()) {
                Ok(c) => {
                    let array = columns[c].as_ref().expect("read above");
                    let array = match &filter {
                        Some(f) => f.filter(array.as_ref())?,
                        None => Arc::clone(array),
                    };
                    if array.data_type() == field.data_type() {
                        array
                    } else {
                        cast(&array, field.data_type())?
                    }
                }
                Err(_) => new_null_array(field.data_type(), rows),
            };
            out.push(array);
        }
        let options = RecordBatchOptions::new().with_row_count(Some(rows));
        Ok(Some(RecordBatch::try_new_with_options(
            Arc::clone(&self.schema),
            out,
            &options,
        )?))
    }

    /// Decodes `columns` (indices in the file's schema, ascending) of one row group: their
    /// chunks are read with one `pread` each, then decoded from memory. Label columns come back
    /// as dictionaries of string views, as they are cached.
    fn decode(&mut self, row_group: usize, columns: &[usize]) -> Result<Vec<ArrayRef>> {
        let open = self.open.as_mut().expect("a file is open");
        let path = &open.path;
        let reader = match &mut open.reader {
            Some(reader) => &*reader,
            none @ None => none.insert(BoundedFile::open(path)?),
        };
        let metadata = open.footer.metadata();
        let group = metadata.row_group(row_group);
        let mut parts = Vec::with_capacity(columns.len());
        for &c in columns {
            let (start, len) = group.column(c).byte_range();
            let bytes = reader.read(start, len)?;
            self.bytes_scanned.add(bytes.len());
            parts.push((start, bytes));
        }
        let chunks = ReadChunks {
            parts,
            len: reader.len,
        };
        let rows = usize::try_from(group.num_rows()).unwrap_or(0).max(1);
        let reader =
            ParquetRecordBatchReaderBuilder::new_with_metadata(chunks, open.footer.clone())
                .with_projection(ProjectionMask::roots(
                    metadata.file_metadata().schema_descr(),
                    columns.iter().copied(),
                ))
                .with_row_groups(vec![row_group])
                .with_batch_size(rows)
                .build()
                .map_err(|e| file_error(path, e))?;
        let schema = reader.schema();
        let batches = reader
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| file_error(path, e))?;
        let batch = match batches.len() {
            1 => batches.into_iter().next().expect("one batch"),
            _ => concat_batches(&schema, &batches)?,
        };
        batch
            .columns()
            .iter()
            .map(
                |array| match label_view_dictionary(array.data_type(), &DataType::Utf8View) {
                    Some(views) => Ok(cast(array, &views)?),
                    None => Ok(Arc::clone(array)),
                },
            )
            .collect()
    }
}

/// How a row group's timestamps lie against a scan's time range (see
/// `PartitionReader::time_cover`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TimeCover {
    /// No row in range: the row group is skipped.
    Outside,
    /// Some rows may be in range: a mask is computed.
    Partly,
    /// Every row in range (or no range): nothing to mask by time.
    Inside,
}

/// Rows of a millisecond timestamp column inside `time`; `None` for another type.
fn time_mask(array: &ArrayRef, time: storage::head::TimeRange) -> Option<BooleanBuffer> {
    if !matches!(
        array.data_type(),
        DataType::Timestamp(TimeUnit::Millisecond, _)
    ) {
        return None;
    }
    let values = array.as_primitive::<TimestampMillisecondType>().values();
    Some(BooleanBuffer::collect_bool(values.len(), |i| {
        let t = values[i];
        time.start <= t && t <= time.end
    }))
}

/// Rows of a label column that `matcher` accepts. For a dictionary (as block files keep
/// labels) each distinct value is decided once, then looked up by key; plain strings are
/// decided row by row. `None` for a column that is not strings.
fn matcher_mask(array: &ArrayRef, matcher: &LabelMatcher) -> Option<BooleanBuffer> {
    let decide = |v: Option<&str>| v.is_some_and(|v| accepts(&matcher.op, v));
    let Some(dictionary) = array.as_any_dictionary_opt() else {
        let n = array.len();
        return match array.data_type() {
            DataType::Utf8View => {
                let a = array.as_string_view();
                Some(BooleanBuffer::collect_bool(n, |i| {
                    decide(a.is_valid(i).then(|| a.value(i)))
                }))
            }
            DataType::Utf8 => {
                let a = array.as_string::<i32>();
                Some(BooleanBuffer::collect_bool(n, |i| {
                    decide(a.is_valid(i).then(|| a.value(i)))
                }))
            }
            DataType::LargeUtf8 => {
                let a = array.as_string::<i64>();
                Some(BooleanBuffer::collect_bool(n, |i| {
                    decide(a.is_valid(i).then(|| a.value(i)))
                }))
            }
            _ => None,
        };
    };
    let values = dictionary.values();
    let accepted: Vec<bool> = match values.data_type() {
        DataType::Utf8View => values.as_string_view().iter().map(decide).collect(),
        DataType::Utf8 => values.as_string::<i32>().iter().map(decide).collect(),
        DataType::LargeUtf8 => values.as_string::<i64>().iter().map(decide).collect(),
        _ => return None,
    };
    if values.is_empty() {
        // Every row is NULL (a row group where no series has the label): none matches.
        // (`normalized_keys` asserts on an empty dictionary.)
        return Some(BooleanBuffer::new_unset(array.len()));
    }
    let keys = dictionary.normalized_keys();
    let nulls = dictionary.keys().logical_nulls();
    Some(BooleanBuffer::collect_bool(keys.len(), |i| {
        nulls.as_ref().is_none_or(|n| n.is_valid(i)) && accepted.get(keys[i]) == Some(&true)
    }))
}

/// Whether a present label value passes `op` (SQL semantics: a missing label never does).
fn accepts(op: &MatchOp, value: &str) -> bool {
    match op {
        MatchOp::Eq(v) => value == v,
        MatchOp::NotEq(v) => value != v,
        MatchOp::In(vs) => vs.iter().any(|v| v == value),
        MatchOp::NotIn(vs) => vs.iter().all(|v| v != value),
    }
}

fn file_error(path: &Path, e: impl fmt::Display) -> DataFusionError {
    DataFusionError::Execution(format!("cannot read block file {}: {e}", path.display()))
}

/// A local file read with `pread`, every range checked against its length first.
struct BoundedFile {
    path: PathBuf,
    file: File,
    len: u64,
}

impl BoundedFile {
    fn open(path: &Path) -> Result<Self> {
        let io = |e: std::io::Error| {
            DataFusionError::Execution(format!("cannot read block file {}: {e}", path.display()))
        };
        let file = File::open(path).map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        Ok(Self {
            path: path.to_path_buf(),
            file,
            len,
        })
    }

    /// `len` bytes from `start`; an error, before any allocation, when they are not all in
    /// the file.
    fn read(&self, start: u64, len: u64) -> Result<Bytes> {
        self.read_parquet(start, len)
            .map_err(|e| file_error(&self.path, e))
    }

    fn read_parquet(&self, start: u64, len: u64) -> Result<Bytes, ParquetError> {
        let fits = start.checked_add(len).is_some_and(|end| end <= self.len);
        let size = usize::try_from(len).ok().filter(|_| fits).ok_or_else(|| {
            ParquetError::General(format!(
                "byte range {start}..+{len} is outside the file ({} bytes)",
                self.len
            ))
        })?;
        let mut buf = vec![0; size];
        self.file
            .read_exact_at(&mut buf, start)
            .map_err(|e| ParquetError::External(Box::new(e)))?;
        Ok(Bytes::from(buf))
    }
}

impl Length for BoundedFile {
    fn len(&self) -> u64 {
        self.len
    }
}

impl ChunkReader for BoundedFile {
    type T = Cursor<Bytes>;

    fn get_read(&self, start: u64) -> Result<Self::T, ParquetError> {
        let len = self.len.saturating_sub(start);
        Ok(Cursor::new(self.read_parquet(start, len)?))
    }

    fn get_bytes(&self, start: u64, length: usize) -> Result<Bytes, ParquetError> {
        self.read_parquet(start, length as u64)
    }
}

/// Column chunks read ahead for the Parquet decoder: it may ask only inside them.
struct ReadChunks {
    /// (file offset, bytes), one per column chunk.
    parts: Vec<(u64, Bytes)>,
    /// The file's length.
    len: u64,
}

impl ReadChunks {
    fn slice(&self, start: u64, length: Option<u64>) -> Result<Bytes, ParquetError> {
        for (offset, bytes) in &self.parts {
            let Some(from) = start.checked_sub(*offset) else {
                continue;
            };
            let Some(from) = usize::try_from(from).ok().filter(|&f| f < bytes.len()) else {
                // Past this part (chunks of adjacent columns touch: the end of one is the
                // start of the next).
                continue;
            };
            let to = match length {
                Some(n) => usize::try_from(n)
                    .ok()
                    .and_then(|n| from.checked_add(n))
                    .filter(|&to| to <= bytes.len()),
                None => Some(bytes.len()),
            };
            if let Some(to) = to {
                return Ok(bytes.slice(from..to));
            }
        }
        Err(ParquetError::General(format!(
            "byte range {start}..+{} is outside the column chunks its footer names",
            length.map_or("end".to_string(), |n| n.to_string())
        )))
    }
}

impl Length for ReadChunks {
    fn len(&self) -> u64 {
        self.len
    }
}

impl ChunkReader for ReadChunks {
    type T = Cursor<Bytes>;

    fn get_read(&self, start: u64) -> Result<Self::T, ParquetError> {
        Ok(Cursor::new(self.slice(start, None)?))
    }

    fn get_bytes(&self, start: u64, length: usize) -> Result<Bytes, ParquetError> {
        self.slice(start, Some(length as u64))
    }
}

#[cfg(test)]
mod tests {
    use arrow::array::{DictionaryArray, Float64Array, StringViewArray, TimestampMillisecondArray};
    use arrow::datatypes::{Field, Int32Type, Schema};
    use datafusion::parquet::arrow::ArrowWriter;
    use datafusion::parquet::basic::{Compression, ZstdLevel};
    use datafusion::parquet::file::properties::WriterProperties;
    use datafusion::physical_plan::collect_partitioned;
    use datafusion::prelude::SessionContext;
    use storage::block::metric_schema;
    use storage::head::TimeRange;

    use super::*;
    use crate::scan::table_schema;

    /// A metric file of hosts `h0`, `h1` with samples at 0..12 s (rows by host, then time),
    /// four rows per row group: three row groups, the second and third partly outside 0..6 s.
    fn write_file(dir: &Path) -> BlockFile {
        let schema = metric_schema(&["host".to_string()]);
        let host: DictionaryArray<Int32Type> = (0..12)
            .map(|i| Some(if i < 6 { "h0" } else { "h1" }))
            .collect();
        let ts = TimestampMillisecondArray::from_iter_values(
            (0..12).map(|i| (i % 6) * 1000 + (i / 6) * 6000),
        )
        .with_timezone("UTC");
        let value = Float64Array::from_iter_values((0..12).map(f64::from));
        let batch = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![Arc::new(host), Arc::new(ts), Arc::new(value)],
        )
        .unwrap();
        let path = dir.join("m.parquet");
        // Compressed as block files are, so that damage shows when decoding.
        let props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::default()))
            .set_max_row_group_row_count(Some(4))
            .build();
        let mut writer =
            ArrowWriter::try_new(File::create(&path).unwrap(), schema, Some(props)).unwrap();
        writer.write(&batch).unwrap();
        writer.close().unwrap();
        BlockFile {
            path,
            // As if each row group were full, so the scan plans two partitions.
            rows: 2 * ROW_GROUP_ROWS as u64,
        }
    }

    fn table(columns: &[&str], extra: &[Field]) -> SchemaRef {
        let stored = metric_schema(&["host".to_string()]);
        let table = table_schema(&stored);
        let mut fields: Vec<Field> = columns
            .iter()
            .map(|c| table.field_with_name(c).unwrap().clone())
            .collect();
        fields.extend_from_slice(extra);
        Arc::new(Schema::new(fields))
    }

    async fn scan(
        file: &BlockFile,
        schema: SchemaRef,
        pushdown: Pushdown,
        limit: Option<usize>,
        cache: &Arc<BlockCache>,
    ) -> (Result<Vec<Vec<RecordBatch>>>, Arc<BlockScanExec>) {
        let exec = Arc::new(BlockScanExec::new(
            "m",
            vec![file.clone()],
            schema,
            pushdown,
            limit,
            2,
            Arc::clone(cache),
        ));
        let ctx = SessionContext::new();
        let out = collect_partitioned(Arc::clone(&exec) as _, ctx.task_ctx()).await;
        (out, exec)
    }

    /// Every row, no limit.
    async fn scan_all(
        file: &BlockFile,
        schema: &SchemaRef,
        cache: &Arc<BlockCache>,
    ) -> (Result<Vec<Vec<RecordBatch>>>, Arc<BlockScanExec>) {
        scan(file, Arc::clone(schema), Pushdown::default(), None, cache).await
    }

    fn metric(exec: &BlockScanExec, name: &str) -> usize {
        exec.metrics()
            .unwrap()
            .sum_by_name(name)
            .map_or(0, |m| m.as_usize())
    }

    fn values(partitions: &[Vec<RecordBatch>], column: &str) -> Vec<f64> {
        let mut out: Vec<f64> = partitions
            .iter()
            .flatten()
            .flat_map(|b| {
                b.column_by_name(column)
                    .unwrap()
                    .as_primitive::<arrow::datatypes::Float64Type>()
                    .values()
                    .to_vec()
            })
            .collect();
        out.sort_by(f64::total_cmp);
        out
    }

    /// A pushdown of the time range `start..=end` (ms) alone.
    fn time_only(start: i64, end: i64) -> Pushdown {
        Pushdown {
            time: TimeRange { start, end },
            matchers: Vec::new(),
        }
    }

    #[tokio::test]
    async fn a_row_group_inside_the_time_range_is_neither_masked_nor_read_for_its_timestamps() {
        let dir = tempfile::tempdir().unwrap();
        let file = write_file(dir.path());
        let cache = Arc::new(BlockCache::new(1 << 20));
        let schema = table(&["host", "value"], &[]);
        // Row groups hold 0-3 s, 4-7 s and 8-11 s. From 4 s to 9 s: the first is pruned, the
        // second lies inside (no timestamps read), the third is masked by its timestamps.
        let pushdown = time_only(4000, 9000);
        let (out, exec) = scan(&file, Arc::clone(&schema), pushdown, None, &cache).await;
        assert_eq!(
            values(&out.unwrap(), "value"),
            vec![4.0, 5.0, 6.0, 7.0, 8.0, 9.0]
        );
        assert_eq!(metric(&exec, "row_groups_pruned"), 1);
        assert_eq!(
            metric(&exec, "cache_misses"),
            5,
            "host and value of two row groups, timestamps of the third alone"
        );

        // One millisecond short of the second row group's last sample: it is masked again.
        let pushdown = time_only(4000, 6999);
        let (out, exec) = scan(&file, Arc::clone(&schema), pushdown, None, &cache).await;
        assert_eq!(values(&out.unwrap(), "value"), vec![4.0, 5.0, 6.0]);
        assert_eq!(metric(&exec, "cache_misses"), 1, "the second's timestamps");
        assert_eq!(metric(&exec, "row_groups_pruned"), 2);
    }

    #[tokio::test]
    async fn row_groups_are_shared_out_pruned_masked_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let file = write_file(dir.path());
        let cache = Arc::new(BlockCache::new(1 << 20));
        let schema = table(&["host", "value"], &[]);

        // Everything: three row groups over two partitions, labels as views.
        let (out, exec) = scan_all(&file, &schema, &cache).await;
        let out = out.unwrap();
        assert_eq!(out.len(), 2);
        assert!(out.iter().all(|p| !p.is_empty()), "both partitions read");
        assert_eq!(
            values(&out, "value"),
            (0..12).map(f64::from).collect::<Vec<_>>()
        );
        assert_eq!(out[0][0].column(0).data_type(), &DataType::Utf8View);
        assert_eq!(
            metric(&exec, "cache_misses"),
            6,
            "two columns of three row groups"
        );
        assert!(metric(&exec, "bytes_scanned") > 0);

        // Host h0 from 2 s to 4 s: the third row group (h1 at 8-11 s) is pruned by its
        // statistics, the others masked; all from the cache, the timestamp column excepted.
        let pushdown = Pushdown {
            time: TimeRange {
                start: 2000,
                end: 4000,
            },
            matchers: vec![LabelMatcher {
                column: "host".into(),
                op: MatchOp::Eq("h0".into()),
            }],
        };
        let (out, exec) = scan(&file, Arc::clone(&schema), pushdown, None, &cache).await;
        let out = out.unwrap();
        assert_eq!(values(&out, "value"), vec![2.0, 3.0, 4.0]);
        assert_eq!(metric(&exec, "row_groups_pruned"), 1);
        assert_eq!(
            metric(&exec, "cache_misses"),
            2,
            "timestamps of two row groups"
        );
        assert_eq!(metric(&exec, "cache_hits"), 4);
        let hosts: Vec<String> = out
            .iter()
            .flatten()
            .flat_map(|b| {
                b.column(0)
                    .as_string_view()
                    .iter()
                    .map(|h| h.unwrap().to_string())
                    .collect::<Vec<_>>()
            })
            .collect();
        assert_eq!(hosts, vec!["h0"; 3]);

        // A label the file lacks matches nothing; a column it lacks reads as NULL.
        let absent = Pushdown {
            matchers: vec![LabelMatcher {
                column: "zone".into(),
                op: MatchOp::NotEq("x".into()),
            }],
            ..Pushdown::default()
        };
        let (out, _) = scan(&file, Arc::clone(&schema), absent, None, &cache).await;
        assert_eq!(
            out.unwrap()
                .iter()
                .flatten()
                .map(|b| b.num_rows())
                .sum::<usize>(),
            0
        );
        let zone = Field::new("zone", DataType::Utf8View, true);
        let (out, _) = scan(
            &file,
            table(&["value"], &[zone]),
            Pushdown::default(),
            Some(5),
            &cache,
        )
        .await;
        let out = out.unwrap();
        let batches: Vec<&RecordBatch> = out.iter().flatten().collect();
        assert!(
            batches.iter().map(|b| b.num_rows()).sum::<usize>() <= 10,
            "limit per partition"
        );
        assert!(
            batches
                .iter()
                .all(|b| b.column(1).null_count() == b.num_rows())
        );

        // No columns at all (`count(*)`): rows counted from the footer, nothing decoded.
        let (out, exec) = scan_all(&file, &Arc::new(Schema::empty()), &cache).await;
        assert_eq!(
            out.unwrap()
                .iter()
                .flatten()
                .map(|b| b.num_rows())
                .sum::<usize>(),
            12
        );
        assert_eq!(
            metric(&exec, "cache_misses") + metric(&exec, "cache_hits"),
            0
        );
    }

    #[tokio::test]
    async fn the_cache_stays_within_its_bound() {
        let dir = tempfile::tempdir().unwrap();
        let file = write_file(dir.path());
        let schema = table(&["host", "timestamp", "value"], &[]);
        let nothing = Arc::new(BlockCache::new(0));
        for _ in 0..2 {
            let (out, exec) = scan_all(&file, &schema, &nothing).await;
            assert_eq!(values(&out.unwrap(), "value").len(), 12);
            assert_eq!(
                metric(&exec, "cache_misses"),
                9,
                "nothing kept, all decoded"
            );
        }
        assert!(nothing.is_empty());
        // Room for about two column chunks plus the footer: older entries make way.
        let small = Arc::new(BlockCache::new(1500));
        for _ in 0..3 {
            let (out, _) = scan_all(&file, &schema, &small).await;
            assert_eq!(values(&out.unwrap(), "value").len(), 12);
            assert!(small.memory_used() <= 1500, "{:?}", small);
        }
        assert!(!small.is_empty());
    }

    #[tokio::test]
    async fn damaged_files_are_errors_naming_them() {
        let dir = tempfile::tempdir().unwrap();
        let file = write_file(dir.path());
        let bytes = std::fs::read(&file.path).unwrap();
        let schema = table(&["host", "value"], &[]);
        let n = bytes.len();
        let footer = u32::from_le_bytes(bytes[n - 8..n - 4].try_into().unwrap()) as usize;
        let data_end = n - 8 - footer;
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("truncated", bytes[..n / 2].to_vec()),
            ("empty", Vec::new()),
            ("data pages scrambled", {
                let mut b = bytes.clone();
                for x in &mut b[4..data_end] {
                    *x ^= 0x5a;
                }
                b
            }),
            ("footer scrambled", {
                let mut b = bytes.clone();
                for x in &mut b[data_end..n - 8] {
                    *x = x.wrapping_mul(31).wrapping_add(7);
                }
                b
            }),
        ];
        for (what, content) in cases {
            std::fs::write(&file.path, &content).unwrap();
            let cache = Arc::new(BlockCache::new(1 << 20));
            let (out, _) = scan_all(&file, &schema, &cache).await;
            let err = out.expect_err(what).to_string();
            assert!(err.contains("m.parquet"), "{what}: {err}");
        }
        std::fs::remove_file(&file.path).unwrap();
        let cache = Arc::new(BlockCache::new(1 << 20));
        let (out, _) = scan_all(&file, &schema, &cache).await;
        let err = out.unwrap_err().to_string();
        assert!(err.contains("cannot read block file"), "{err}");
    }

    #[test]
    fn reads_outside_the_file_or_the_chunks_read_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"0123456789").unwrap();
        let file = BoundedFile::open(&path).unwrap();
        assert_eq!(&file.read(2, 3).unwrap()[..], b"234");
        for (start, len) in [(8, 5), (0, u64::MAX), (u64::MAX, 2)] {
            let err = file.read(start, len).unwrap_err().to_string();
            assert!(
                err.contains("outside the file") && err.contains("/f"),
                "{err}"
            );
        }
        let chunks = ReadChunks {
            parts: vec![
                (10, Bytes::from_static(b"abcd")),
                (14, Bytes::from_static(b"ef")),
                (20, Bytes::from_static(b"xy")),
            ],
            len: 30,
        };
        assert_eq!(&chunks.get_bytes(11, 2).unwrap()[..], b"bc");
        assert_eq!(&chunks.get_bytes(20, 2).unwrap()[..], b"xy");
        let mut rest = String::new();
        std::io::Read::read_to_string(&mut chunks.get_read(12).unwrap(), &mut rest).unwrap();
        assert_eq!(rest, "cd");
        // Where one chunk ends the next begins: reads start in the next.
        let mut next = String::new();
        std::io::Read::read_to_string(&mut chunks.get_read(14).unwrap(), &mut next).unwrap();
        assert_eq!(next, "ef");
        assert_eq!(&chunks.get_bytes(14, 2).unwrap()[..], b"ef");
        for (start, len) in [
            (9, 1),
            (12, 3),
            (14, 7),
            (16, 1),
            (25, 1),
            (u64::MAX, usize::MAX),
        ] {
            assert!(chunks.get_bytes(start, len).is_err(), "{start}+{len}");
        }
        assert!(chunks.get_read(5).is_err());
    }

    #[test]
    fn label_masks_decide_per_value_and_never_match_missing_labels() {
        let hosts: DictionaryArray<Int32Type> =
            vec![Some("a"), None, Some("b"), Some("a"), Some("c")]
                .into_iter()
                .collect();
        let hosts: ArrayRef = Arc::new(hosts);
        let mask = |op: MatchOp| {
            let m = matcher_mask(
                &hosts,
                &LabelMatcher {
                    column: "host".into(),
                    op,
                },
            )
            .unwrap();
            m.iter().collect::<Vec<bool>>()
        };
        assert_eq!(
            mask(MatchOp::Eq("a".into())),
            [true, false, false, true, false]
        );
        assert_eq!(
            mask(MatchOp::NotEq("a".into())),
            [false, false, true, false, true]
        );
        assert_eq!(
            mask(MatchOp::In(vec!["b".into(), "c".into()])),
            [false, false, true, false, true]
        );
        assert_eq!(
            mask(MatchOp::NotIn(vec!["b".into(), "c".into()])),
            [true, false, false, true, false]
        );
        // Plain strings (not as block files keep labels) are decided row by row, the same way;
        // a column that is not strings gets no mask.
        let views: ArrayRef = Arc::new(StringViewArray::from(vec![Some("a"), None, Some("b")]));
        let eq_a = LabelMatcher {
            column: "host".into(),
            op: MatchOp::Eq("a".into()),
        };
        let m = matcher_mask(&views, &eq_a).unwrap();
        assert_eq!(m.iter().collect::<Vec<bool>>(), [true, false, false]);
        // A row group where no series has the label: an empty dictionary, no match.
        let none: DictionaryArray<Int32Type> = vec![None::<&str>, None].into_iter().collect();
        let m = matcher_mask(&(Arc::new(none) as ArrayRef), &eq_a).unwrap();
        assert_eq!(m.iter().collect::<Vec<bool>>(), [false, false]);
        let not_strings: ArrayRef = Arc::new(Float64Array::from(vec![1.0]));
        assert!(matcher_mask(&not_strings, &eq_a).is_none());
    }
}

#[cfg(test)]
mod proptests {
    use arrow::array::{DictionaryArray, Float64Array, TimestampMillisecondArray};
    use arrow::datatypes::{Float64Type, Int32Type};
    use datafusion::parquet::arrow::ArrowWriter;
    use datafusion::parquet::file::properties::WriterProperties;
    use datafusion::physical_plan::collect_partitioned;
    use datafusion::prelude::SessionContext;
    use proptest::prelude::*;
    use storage::block::metric_schema;
    use storage::head::TimeRange;

    use super::*;
    use crate::scan::table_schema;

    const HOSTS: [Option<&str>; 4] = [Some("a"), Some("b"), Some("c"), None];

    fn op(kind: usize, values: Vec<String>) -> MatchOp {
        match kind {
            0 => MatchOp::Eq(values[0].clone()),
            1 => MatchOp::NotEq(values[0].clone()),
            2 => MatchOp::In(values),
            _ => MatchOp::NotIn(values),
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// Whatever the row groups, partitions, time range and matcher, the scan returns
        /// exactly the rows a plain filter keeps (the pushdown is `Exact`, nothing re-checks).
        #[test]
        fn the_scan_keeps_exactly_the_rows_a_plain_filter_keeps(
            series in proptest::collection::vec((0..HOSTS.len(), 1usize..30, -50i64..50), 1..6),
            group_rows in 1usize..20,
            partitions in 1usize..4,
            start in -60i64..120,
            len in 0i64..120,
            bounded in any::<bool>(),
            matcher in proptest::option::of((0usize..4, proptest::collection::vec(0usize..4, 1..3))),
        ) {
            // Series in storage order, each with samples 0, 3, 6, ... ms from its start.
            let mut hosts = Vec::new();
            let mut times = Vec::new();
            for &(h, n, from) in &series {
                for i in 0..n as i64 {
                    hosts.push(HOSTS[h]);
                    times.push(from + 3 * i);
                }
            }
            let values: Vec<f64> = (0..hosts.len()).map(|i| i as f64).collect();
            let time = if bounded {
                TimeRange { start, end: start + len }
            } else {
                TimeRange::default()
            };
            let matchers: Vec<LabelMatcher> = matcher
                .iter()
                .map(|(kind, picks)| LabelMatcher {
                    column: "host".into(),
                    op: op(*kind, picks.iter().map(|&p| HOSTS[p].unwrap_or("z").to_string()).collect()),
                })
                .collect();
            let expected: Vec<(Option<String>, f64)> = (0..hosts.len())
                .filter(|&i| time.start <= times[i] && times[i] <= time.end)
                .filter(|&i| matchers.iter().all(|m| hosts[i].is_some_and(|h| accepts(&m.op, h))))
                .map(|i| (hosts[i].map(str::to_string), values[i]))
                .collect();

            let dir = tempfile::tempdir().unwrap();
            let stored = metric_schema(&["host".to_string()]);
            let host: DictionaryArray<Int32Type> = hosts.iter().copied().collect();
            let batch = RecordBatch::try_new(
                Arc::clone(&stored),
                vec![
                    Arc::new(host),
                    Arc::new(TimestampMillisecondArray::from(times.clone()).with_timezone("UTC")),
                    Arc::new(Float64Array::from(values.clone())),
                ],
            )
            .unwrap();
            let path = dir.path().join("m.parquet");
            let props = WriterProperties::builder()
                .set_max_row_group_row_count(Some(group_rows))
                .build();
            let mut writer =
                ArrowWriter::try_new(File::create(&path).unwrap(), Arc::clone(&stored), Some(props))
                    .unwrap();
            writer.write(&batch).unwrap();
            writer.close().unwrap();

            let table = table_schema(&stored);
            let schema = Arc::new(table.project(&[0, 2]).unwrap());
            let file = BlockFile { path, rows: (partitions * ROW_GROUP_ROWS) as u64 };
            let cache = Arc::new(BlockCache::new(1 << 20));
            let pushdown = Pushdown { time, matchers };
            let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
            // Twice: decoded, then from the cache.
            for _ in 0..2 {
                let exec = Arc::new(BlockScanExec::new(
                    "m",
                    vec![file.clone()],
                    Arc::clone(&schema),
                    pushdown.clone(),
                    None,
                    partitions,
                    Arc::clone(&cache),
                ));
                let ctx = SessionContext::new();
                let out = runtime
                    .block_on(collect_partitioned(exec as _, ctx.task_ctx()))
                    .unwrap();
                let mut got: Vec<(Option<String>, f64)> = out
                    .iter()
                    .flatten()
                    .flat_map(|b| {
                        let hosts = b.column(0).as_string_view();
                        let values = b.column(1).as_primitive::<Float64Type>();
                        (0..b.num_rows())
                            .map(|i| (hosts.is_valid(i).then(|| hosts.value(i).to_string()), values.value(i)))
                            .collect::<Vec<_>>()
                    })
                    .collect();
                got.sort_by(|a, b| a.1.total_cmp(&b.1));
                prop_assert_eq!(&got, &expected);
            }
        }
    }
}
