//! Metric tables: a DataFusion [`TableProvider`] over one metric, spanning the head (read by
//! the [`HeadScanExec`] plan node) and the metric's Parquet files in blocks (local ones read by
//! [`BlockScanExec`] through the block cache, remote ones by DataFusion's Parquet source),
//! united by a `UnionExec`, or read in turn by a [`ChainExec`] when the query is planned for
//! one partition. The head part is read only from the block view's `head_from` on, so no row
//! is seen twice.
//!
//! Pushdown: DataFusion offers every `WHERE` conjunct to [`MetricTable::supports_filters_pushdown`].
//! Two kinds are taken:
//!
//! * time bounds on `timestamp` (`<`, `<=`, `>`, `>=`, `=`, `BETWEEN`, against any timestamp
//!   literal, including folded `now() - INTERVAL ...`), which skip whole chunks and row
//!   groups by their bounds and rows by timestamp;
//! * equality and inequality on label columns (`=`, `<>`, `IN`, `NOT IN` with string
//!   literals), decided once per series (head) or per distinct value (block files) and
//!   applied as a per-row mask.
//!
//! Both scans apply what they take exactly, so where the conjunct says exactly that (see
//! [`Pushdown::is_exact`]: label comparisons, and time comparisons with millisecond literals, as
//! `to_timestamp_millis(...)`, `now() - INTERVAL ...` and timestamp strings give) it is
//! pushed down as `Exact` and DataFusion plans no filter of its own: no `FilterExec`, no
//! statistics analysis of its predicate, no column read only to filter on. Other forms, and
//! every conjunct of a table with remote files (DataFusion's Parquet source gets the filter
//! from its `FilterExec`), are `Inexact`: storage only uses them to skip work and DataFusion
//! checks them again. The nodes' `EXPLAIN` lines show what was pushed down; `EXPLAIN
//! ANALYZE` shows `output_rows`, `chunks_pruned` and `row_groups_pruned`.

use std::fmt;
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::tree_node::{Transformed, TransformedResult, TreeNode, TreeNodeRecursion};
use datafusion::common::{Result, ScalarValue};
use datafusion::datasource::TableType;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::object_store::ObjectStoreUrl;
use datafusion::datasource::physical_plan::parquet::{
    CachedParquetFileReaderFactory, ParquetFileReaderFactory,
};
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfigBuilder, ParquetSource};
use datafusion::datasource::source::DataSourceExec;
use datafusion::execution::TaskContext;
use datafusion::logical_expr::{
    Between, BinaryExpr, Expr, Operator, TableProviderFilterPushDown, expr::InList,
};
use datafusion::physical_expr::expressions::{CastExpr, Column};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_expr_adapter::{
    DefaultPhysicalExprAdapterFactory, PhysicalExprAdapter, PhysicalExprAdapterFactory,
};
use datafusion::physical_plan::empty::EmptyExec;
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::metrics::{ExecutionPlanMetricsSet, MetricBuilder, MetricsSet};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::union::UnionExec;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
    SendableRecordBatchStream,
};
use storage::Head;
use storage::block::{BlockView, FileLocation, MetricFile, metric_schema};
use storage::head::{
    LabelMatcher, MatchOp, MetricHead, MetricSnapshot, TimeRange, label_view_dictionary,
};
use storage::head::{TIMESTAMP_COLUMN, VALUE_COLUMN};

use crate::block_scan::{BlockCache, BlockFile, BlockScanExec};

mod chain;
pub use chain::ChainExec;

/// One metric as a table: its rows in the head plus its files in blocks. The schema (the
/// union of the label columns of both) is fixed when the table is resolved (at planning);
/// labels that appear later show up in the next query.
#[derive(Debug)]
pub struct MetricTable {
    /// The metric's name.
    name: String,
    /// The metric's part of the head, if the head has it.
    metric: Option<Arc<MetricHead>>,
    /// The metric's block files, oldest first.
    files: Vec<(FileLocation, MetricFile)>,
    /// Where DataFusion finds the object store of remote files (`scheme://bucket/`).
    remote_root: Option<String>,
    /// Head rows older than this are in `files` (the block view's bound).
    head_from: i64,
    /// The head part's schema the table's columns were taken from.
    head_schema: Option<SchemaRef>,
    schema: SchemaRef,
}

impl MetricTable {
    /// A table over the head's `metric` (if any) and the block files of the same metric.
    /// `None` when neither exists.
    pub fn new(
        metric: Option<Arc<MetricHead>>,
        view: Option<&BlockView>,
        name: &str,
    ) -> Option<Self> {
        let files = view.map(|v| v.files(name)).unwrap_or_default();
        if metric.is_none() && files.is_empty() {
            return None;
        }
        let head_from = view.map_or(i64::MIN, |v| v.head_from);
        let remote_root = view
            .and_then(|v| v.remote.as_ref())
            .map(|r| r.root().to_string());
        let mut labels: Vec<String> = files
            .iter()
            .flat_map(|(_, f)| f.labels.iter().cloned())
            .collect();
        let head_schema = metric.as_ref().map(|m| m.schema());
        if let Some(schema) = &head_schema {
            labels.extend(
                schema
                    .fields()
                    .iter()
                    .map(|f| f.name().clone())
                    .filter(|n| n != TIMESTAMP_COLUMN && n != VALUE_COLUMN),
            );
        }
        labels.sort();
        labels.dedup();
        Some(Self {
            name: name.to_string(),
            metric,
            files,
            remote_root,
            head_from,
            head_schema,
            schema: table_schema(&metric_schema(&labels)),
        })
    }

    /// Whether resolving the table again on `head` (with the same block view) would give the
    /// same table: the head holds the same part of the metric, or still none, with the same
    /// columns. Rows appended since do not matter; they are read when a plan runs.
    pub fn is_current(&self, head: &Head) -> bool {
        match (head.metric(&self.name), &self.metric, &self.head_schema) {
            (None, None, _) => true,
            (Some(now), Some(then), Some(schema)) => {
                Arc::ptr_eq(&now, then) && {
                    let columns = now.schema();
                    Arc::ptr_eq(&columns, schema) || columns.fields() == schema.fields()
                }
            }
            _ => false,
        }
    }

    /// Rows a scan with `filters` pushed down would read: those of the block files and head
    /// chunks whose time range meets the filters' one (all of them without a time filter).
    /// Whole files and chunks count, as the scans read them.
    pub fn rows_in(&self, filters: &[Expr]) -> u64 {
        let time = Pushdown::from_filters(filters, &self.schema).time;
        if time.is_empty() {
            return 0;
        }
        let meets = |min: i64, max: i64| max >= time.start && min <= time.end;
        let files: u64 = self
            .files
            .iter()
            .filter(|(_, f)| meets(f.min_timestamp, f.max_timestamp))
            .map(|(_, f)| f.rows)
            .sum();
        // The head part of a scan starts where the blocks end (see `scan`).
        let head_start = time.start.max(self.head_from);
        let head: usize = self
            .metric
            .as_ref()
            .filter(|_| head_start <= time.end)
            .map_or(0, |m| {
                m.snapshot()
                    .chunks()
                    .iter()
                    .filter(|c| {
                        let (min, max) = c.time_bounds();
                        max >= head_start && min <= time.end
                    })
                    .map(|c| c.len())
                    .sum()
            });
        files.saturating_add(head as u64)
    }

    /// The block part of a scan: the files whose time range meets the pushed-down one. Local
    /// files are read by [`BlockScanExec`] through the replica's [`BlockCache`]; remote ones by
    /// DataFusion's Parquet source, which gets the `WHERE` clause from DataFusion's filter
    /// pushdown (see [`Self::parquet_scan`]). Columns a file lacks read as NULL.
    fn block_scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        projected: &SchemaRef,
        pushdown: &Pushdown,
        limit: Option<usize>,
    ) -> Result<Option<Arc<dyn ExecutionPlan>>> {
        let time = pushdown.time;
        if time.is_empty() {
            return Ok(None);
        }
        let mut local = Vec::new();
        let mut remote = Vec::new();
        for (location, f) in &self.files {
            if f.max_timestamp < time.start || f.min_timestamp > time.end {
                continue;
            }
            match location {
                FileLocation::Local(path) => local.push(BlockFile {
                    path: path.clone(),
                    rows: f.rows,
                }),
                FileLocation::Remote(path) => {
                    remote.push(PartitionedFile::new(path.to_string(), f.bytes));
                }
            }
        }
        let mut plans: Vec<Arc<dyn ExecutionPlan>> = Vec::new();
        let partitions = state.config().target_partitions();
        if !local.is_empty() {
            // Sessions made by the engine carry the replica's cache; any other reads
            // without keeping anything.
            let cache = state
                .config()
                .get_extension::<BlockCache>()
                .unwrap_or_else(|| Arc::new(BlockCache::new(0)));
            plans.push(Arc::new(BlockScanExec::new(
                &self.name,
                local,
                Arc::clone(projected),
                pushdown.clone(),
                limit,
                partitions,
                cache,
            )));
        }
        if let (false, Some(root)) = (remote.is_empty(), &self.remote_root) {
            // Block files never change under their path (a block directory is named by its
            // ULID and written once), so their footers and page indexes are cached across
            // queries in the runtime's metadata cache (bounded, LRU): a repeated query reads
            // only data pages.
            let runtime = state.runtime_env();
            let store = ObjectStoreUrl::parse(root)?;
            let reader = CachedParquetFileReaderFactory::new(
                runtime.object_store(&store)?,
                runtime.cache_manager.get_file_metadata_cache(),
            );
            plans.push(self.parquet_scan(
                store,
                Arc::new(reader),
                remote,
                partitions,
                projection,
                limit,
            )?);
        }
        match plans.len() {
            0 => Ok(None),
            1 => Ok(plans.pop()),
            _ => UnionExec::try_new(plans).map(Some),
        }
    }

    /// DataFusion's Parquet source over remote `files`, read through `reader`, which takes
    /// footers and page indexes from the runtime's metadata cache. Columns a file lacks read as
    /// NULL.
    ///
    /// The source gets no predicate here: the `WHERE` conjuncts taken as `Inexact` stay in a
    /// `FilterExec` above the scan, and DataFusion's physical filter pushdown hands that
    /// filter (through the `UnionExec` with the head) to the source, which prunes row groups
    /// and pages with it and evaluates it while decoding. Setting it here as well made the
    /// source evaluate every conjunct twice.
    fn parquet_scan(
        &self,
        store: ObjectStoreUrl,
        reader: Arc<dyn ParquetFileReaderFactory>,
        files: Vec<PartitionedFile>,
        target_partitions: usize,
        projection: Option<&Vec<usize>>,
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        // Filters are evaluated while decoding (late materialisation): the timestamp column
        // first, then the other columns only for rows that pass. Block files are sorted by
        // series, so a time window rarely prunes whole pages; it does spare decoding the label
        // columns of the rows outside it ("latest value" over the last 5 minutes of a 2 h
        // block reads 4 % of them).
        // Block files carry no bloom filters (`storage::block::writer_properties`): looking
        // for them cost ~40-80 µs per file and query.
        let source = ParquetSource::new(Arc::clone(&self.schema))
            .with_bloom_filter_on_read(false)
            .with_enable_page_index(true)
            .with_pushdown_filters(true)
            .with_reorder_filters(true)
            .with_parquet_file_reader_factory(reader);
        let n = target_partitions.clamp(1, files.len());
        let mut groups = vec![Vec::new(); n];
        for (i, file) in files.into_iter().enumerate() {
            groups[i % n].push(file);
        }
        let config = FileScanConfigBuilder::new(store, Arc::new(source))
            .with_expr_adapter(Some(Arc::new(LabelViews)))
            .with_file_groups(groups.into_iter().map(FileGroup::new).collect())
            .with_projection_indices(projection.cloned())?
            .with_limit(limit)
            .build();
        Ok(DataSourceExec::from_data_source(config))
    }
}

#[async_trait]
impl TableProvider for MetricTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        // Remote files are read by DataFusion's Parquet source, which gets the filter from
        // DataFusion's own `FilterExec`: with any, nothing is exact.
        let remote = self
            .files
            .iter()
            .any(|(l, _)| matches!(l, FileLocation::Remote(_)));
        Ok(filters
            .iter()
            .map(|f| {
                if !remote && Pushdown::is_exact(f, &self.schema) {
                    TableProviderFilterPushDown::Exact
                } else if Pushdown::from_filters(std::slice::from_ref(*f), &self.schema).is_empty()
                {
                    TableProviderFilterPushDown::Unsupported
                } else {
                    TableProviderFilterPushDown::Inexact
                }
            })
            .collect())
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let projected = match projection {
            Some(p) => Arc::new(self.schema.project(p)?),
            None => Arc::clone(&self.schema),
        };
        let pushdown = Pushdown::from_filters(filters, &self.schema);
        let mut inputs: Vec<Arc<dyn ExecutionPlan>> = Vec::new();
        if let Some(plan) = self.block_scan(state, projection, &projected, &pushdown, limit)? {
            inputs.push(plan);
        }
        if let Some(metric) = &self.metric {
            let mut head_pushdown = pushdown.clone();
            head_pushdown.time.start = head_pushdown.time.start.max(self.head_from);
            let target = state.config().target_partitions().max(1);
            inputs.push(Arc::new(HeadScanExec::new(
                metric.snapshot(),
                Arc::clone(&projected),
                head_pushdown,
                limit,
                target,
            )));
        }
        if inputs.is_empty() {
            return Ok(Arc::new(EmptyExec::new(projected)));
        }
        // Planned for one partition, blocks and head are read in turn (see `ChainExec`).
        if inputs.len() > 1 && state.config().target_partitions() == 1 {
            return Ok(Arc::new(ChainExec::new(inputs, projected)));
        }
        UnionExec::try_new(inputs)
    }
}

/// A metric's schema as the engine sees it: label columns as `Utf8View`, whatever storage
/// keeps them as (dictionaries, in the head and in block files; both scans cast).
///
/// Why views: almost every monitoring query groups by labels (`GROUP BY ALL` for per-series
/// work, `GROUP BY job` for rollups). DataFusion groups `Utf8View` columns with its
/// column-wise group table, comparing 16-byte views (label values up to 12 bytes sit inside
/// them), while a dictionary column sends the whole key through the row format, one
/// variable-length row per input row. Measured on the query benchmark's per-series rate
/// (792 k rows, 40 k groups; medians of 10, one binary): with the label columns cast to
/// `Utf8View` in the SQL, 115 ms; as dictionaries, 128 ms; cast to `Utf8`, 131 ms. The cast
/// is a gather of prebuilt views per row. Clients see `Utf8` either way (DESIGN.md §3).
pub fn table_schema(stored: &Schema) -> SchemaRef {
    let fields: Vec<Field> = stored
        .fields()
        .iter()
        .map(|f| match f.data_type() {
            DataType::Dictionary(_, value) if value.as_ref() == &DataType::Utf8 => {
                f.as_ref().clone().with_data_type(DataType::Utf8View)
            }
            _ => f.as_ref().clone(),
        })
        .collect();
    Arc::new(Schema::new_with_metadata(fields, stored.metadata().clone()))
}

/// Adapts expressions over a block file's columns like DataFusion's default adapter, except
/// that a label column stored as a dictionary of strings reaches `Utf8View` through a
/// dictionary of views (see [`storage::head::label_view_dictionary`]): the values become
/// views once per batch and the rows a gather by key, instead of one view built per row.
#[derive(Debug)]
struct LabelViews;

impl PhysicalExprAdapterFactory for LabelViews {
    fn create(
        &self,
        logical_file_schema: SchemaRef,
        physical_file_schema: SchemaRef,
    ) -> Result<Arc<dyn PhysicalExprAdapter>> {
        let inner = DefaultPhysicalExprAdapterFactory
            .create(logical_file_schema, Arc::clone(&physical_file_schema))?;
        Ok(Arc::new(LabelViewsAdapter {
            inner,
            physical_file_schema,
        }))
    }
}

#[derive(Debug)]
struct LabelViewsAdapter {
    inner: Arc<dyn PhysicalExprAdapter>,
    physical_file_schema: SchemaRef,
}

impl PhysicalExprAdapter for LabelViewsAdapter {
    fn rewrite(&self, expr: Arc<dyn PhysicalExpr>) -> Result<Arc<dyn PhysicalExpr>> {
        self.inner
            .rewrite(expr)?
            .transform_up(|node| {
                let Some(cast) = node.downcast_ref::<CastExpr>() else {
                    return Ok(Transformed::no(node));
                };
                let Some(column) = cast.expr().downcast_ref::<Column>() else {
                    return Ok(Transformed::no(node));
                };
                let from = self.physical_file_schema.field(column.index()).data_type();
                let Some(via) = label_view_dictionary(from, cast.cast_type()) else {
                    return Ok(Transformed::no(node));
                };
                let to_dictionary = Arc::new(CastExpr::new(Arc::clone(cast.expr()), via, None));
                Ok(Transformed::yes(Arc::new(CastExpr::new_with_target_field(
                    to_dictionary,
                    Arc::clone(cast.target_field()),
                    None,
                ))
                    as Arc<dyn PhysicalExpr>))
            })
            .data()
    }
}

/// What a scan can skip, derived from `WHERE` conjuncts.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Pushdown {
    /// Rows outside are skipped.
    pub time: TimeRange,
    /// Series failing any matcher are skipped.
    pub matchers: Vec<LabelMatcher>,
}

impl Pushdown {
    /// Collects what storage can use from `filters`; the rest is left to DataFusion.
    pub fn from_filters(filters: &[Expr], schema: &SchemaRef) -> Self {
        let mut p = Self::default();
        for f in filters {
            p.add(f, schema);
        }
        p
    }

    /// Whether both scans, taking `filter`, return exactly the rows it keeps, so that
    /// DataFusion needs no filter of its own above them: label comparisons with string
    /// literals, and time comparisons with millisecond literals (see the module docs).
    pub fn is_exact(filter: &Expr, schema: &SchemaRef) -> bool {
        Self::default().add(filter, schema)
    }

    /// True when nothing was taken.
    pub fn is_empty(&self) -> bool {
        self.time.is_unbounded() && self.matchers.is_empty()
    }

    /// Takes what storage can use from `expr`; true when that is all of it, exactly.
    ///
    /// Exact: label comparisons with string literals (`=`, `<>`, `IN`, `NOT IN`; a missing
    /// label never matches, as SQL's NULL), and time comparisons (`<`, `<=`, `>`, `>=`, `=`,
    /// `BETWEEN`) of the column with a millisecond timestamp literal, either side cast only
    /// between millisecond timestamps without a zone or in UTC (values unchanged): timestamps
    /// are whole milliseconds, so `timestamp > t` is `timestamp >= t + 1` and so on. Other
    /// time comparisons (finer literals, lossless casts of the column) are taken as a range
    /// that may keep a row too many at either end, never one too few.
    fn add(&mut self, expr: &Expr, schema: &SchemaRef) -> bool {
        match expr {
            Expr::BinaryExpr(BinaryExpr {
                left,
                op: Operator::And,
                right,
            }) => {
                let left = self.add(left, schema);
                self.add(right, schema) && left
            }
            Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
                let (column, op, literal) = match (column_name(left), column_name(right)) {
                    (Some(c), None) => (c, *op, &**right),
                    (None, Some(c)) => match op.swap() {
                        Some(swapped) => (c, swapped, &**left),
                        None => return false,
                    },
                    _ => return false,
                };
                let column_side = if column_name(left).is_some() {
                    left
                } else {
                    right
                };
                if column == TIMESTAMP_COLUMN {
                    if let (Some(ms), true) = (exact_ms(literal), is_ms_column(column_side)) {
                        return self.bound_time_exact(op, ms);
                    }
                    if let Some(ms) = timestamp_bounds(literal) {
                        self.bound_time(op, ms);
                    }
                    false
                } else if is_label(column, schema)
                    && let Some(value) = string_literal(literal)
                {
                    let op = match op {
                        Operator::Eq => MatchOp::Eq(value),
                        Operator::NotEq => MatchOp::NotEq(value),
                        _ => return false,
                    };
                    self.matchers.push(LabelMatcher {
                        column: column.to_string(),
                        op,
                    });
                    true
                } else {
                    false
                }
            }
            Expr::Between(Between {
                expr,
                negated: false,
                low,
                high,
            }) if column_name(expr) == Some(TIMESTAMP_COLUMN) => {
                if let (Some(lo), Some(hi), true) =
                    (exact_ms(low), exact_ms(high), is_ms_column(expr))
                {
                    let lo = self.bound_time_exact(Operator::GtEq, lo);
                    return self.bound_time_exact(Operator::LtEq, hi) && lo;
                }
                if let (Some(lo), Some(hi)) = (timestamp_bounds(low), timestamp_bounds(high)) {
                    self.bound_time(Operator::GtEq, lo);
                    self.bound_time(Operator::LtEq, hi);
                }
                false
            }
            Expr::InList(InList {
                expr,
                list,
                negated,
            }) => {
                let Some(column) = column_name(expr).filter(|c| is_label(c, schema)) else {
                    return false;
                };
                let values: Option<Vec<String>> = list.iter().map(string_literal).collect();
                let Some(values) = values else {
                    return false;
                };
                let op = if *negated {
                    MatchOp::NotIn(values)
                } else {
                    MatchOp::In(values)
                };
                self.matchers.push(LabelMatcher {
                    column: column.to_string(),
                    op,
                });
                true
            }
            _ => false,
        }
    }

    /// Narrows the time range by `timestamp <op> literal`. `ms` is the literal rounded down
    /// and up to whole ms; bounds are kept inclusive, so no row that could match is skipped.
    fn bound_time(&mut self, op: Operator, (floor, ceil): (i64, i64)) {
        let t = &mut self.time;
        match op {
            Operator::Gt | Operator::GtEq => t.start = t.start.max(floor),
            Operator::Lt | Operator::LtEq => t.end = t.end.min(ceil),
            Operator::Eq => {
                t.start = t.start.max(floor);
                t.end = t.end.min(ceil);
            }
            _ => {}
        }
    }

    /// Narrows the time range by `timestamp <op> ms` to exactly the whole milliseconds that
    /// pass; false (nothing taken) for another operator or at the ends of `i64`.
    fn bound_time_exact(&mut self, op: Operator, ms: i64) -> bool {
        let (start, end) = match op {
            Operator::Gt => (ms.checked_add(1), Some(i64::MAX)),
            Operator::GtEq => (Some(ms), Some(i64::MAX)),
            Operator::Lt => (Some(i64::MIN), ms.checked_sub(1)),
            Operator::LtEq => (Some(i64::MIN), Some(ms)),
            Operator::Eq => (Some(ms), Some(ms)),
            _ => return false,
        };
        let (Some(start), Some(end)) = (start, end) else {
            return false;
        };
        let t = &mut self.time;
        t.start = t.start.max(start);
        t.end = t.end.min(end);
        true
    }
}

/// A millisecond timestamp literal, through casts that keep its value (to millisecond
/// timestamps without a zone or in UTC: arrow moves a zoneless value only for other zones).
fn exact_ms(expr: &Expr) -> Option<i64> {
    match expr {
        Expr::Literal(ScalarValue::TimestampMillisecond(Some(ms), _), _) => Some(*ms),
        Expr::Cast(c) if same_ms(c.field.data_type()) => exact_ms(&c.expr),
        _ => None,
    }
}

/// The timestamp column itself, or cast only in ways that keep its values.
fn is_ms_column(expr: &Expr) -> bool {
    match expr {
        Expr::Column(_) => true,
        Expr::Cast(c) if same_ms(c.field.data_type()) => is_ms_column(&c.expr),
        _ => false,
    }
}

fn same_ms(to: &DataType) -> bool {
    match to {
        DataType::Timestamp(TimeUnit::Millisecond, None) => true,
        DataType::Timestamp(TimeUnit::Millisecond, Some(tz)) => {
            matches!(tz.as_ref(), "UTC" | "+00:00" | "Z")
        }
        _ => false,
    }
}

/// The column an expression reads, looking only through casts that keep every value of our
/// column types distinct and in order (a finer timestamp unit; a string type for a label), so
/// that a bound on the cast value is the same bound on the column. A lossy cast (to a date, to
/// whole seconds, to a number) hides the column: such a filter is left to DataFusion.
fn column_name(expr: &Expr) -> Option<&str> {
    match expr {
        Expr::Column(c) => Some(c.name.as_str()),
        Expr::Cast(c) if lossless(c.field.data_type()) => column_name(&c.expr),
        Expr::TryCast(c) if lossless(c.field.data_type()) => column_name(&c.expr),
        _ => None,
    }
}

fn lossless(to: &DataType) -> bool {
    match to {
        DataType::Timestamp(unit, _) => !matches!(unit, TimeUnit::Second),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => true,
        DataType::Dictionary(_, value) => {
            lossless(value) && !matches!(**value, DataType::Timestamp(..))
        }
        _ => false,
    }
}

fn is_label(column: &str, schema: &SchemaRef) -> bool {
    column != TIMESTAMP_COLUMN && column != VALUE_COLUMN && schema.field_with_name(column).is_ok()
}

fn string_literal(expr: &Expr) -> Option<String> {
    match expr {
        Expr::Literal(v, _) => scalar_string(v),
        Expr::Cast(c) => string_literal(&c.expr),
        _ => None,
    }
}

fn scalar_string(v: &ScalarValue) -> Option<String> {
    match v {
        ScalarValue::Utf8(Some(s))
        | ScalarValue::Utf8View(Some(s))
        | ScalarValue::LargeUtf8(Some(s)) => Some(s.clone()),
        ScalarValue::Dictionary(_, inner) => scalar_string(inner),
        _ => None,
    }
}

/// A timestamp literal as (floor, ceil) whole milliseconds; `None` when it does not fit.
fn timestamp_bounds(expr: &Expr) -> Option<(i64, i64)> {
    let v = match expr {
        Expr::Literal(v, _) => v,
        Expr::Cast(c) => return timestamp_bounds(&c.expr),
        _ => return None,
    };
    let exact = |ms: Option<i64>| ms.map(|ms| (ms, ms));
    let (value, per_ms) = match v {
        ScalarValue::TimestampSecond(Some(s), _) => return exact(s.checked_mul(1000)),
        ScalarValue::TimestampMillisecond(Some(ms), _) => return exact(Some(*ms)),
        ScalarValue::TimestampMicrosecond(Some(us), _) => (*us, 1_000),
        ScalarValue::TimestampNanosecond(Some(ns), _) => (*ns, 1_000_000),
        ScalarValue::Date32(Some(days)) => return exact(i64::from(*days).checked_mul(86_400_000)),
        ScalarValue::Date64(Some(ms)) => return exact(Some(*ms)),
        _ => return None,
    };
    let floor = value.div_euclid(per_ms);
    let ceil = floor + i64::from(value.rem_euclid(per_ms) != 0);
    Some((floor, ceil))
}

/// The end of a scan node's `EXPLAIN` line: `, projection=[...]`, then what it was given to
/// skip, `, time=[start, end]` (ms, `..` for an open end) and `, labels=[...]`, and
/// `, limit=n`, each only when there is something.
pub(crate) fn fmt_scan_tail(
    f: &mut fmt::Formatter<'_>,
    schema: &SchemaRef,
    pushdown: &Pushdown,
    limit: Option<usize>,
) -> fmt::Result {
    let columns: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    write!(f, ", projection=[{}]", columns.join(", "))?;
    let time = pushdown.time;
    if !time.is_unbounded() {
        let show = |t: i64, unbounded: i64| {
            if t == unbounded {
                "..".to_string()
            } else {
                t.to_string()
            }
        };
        write!(
            f,
            ", time=[{}, {}]",
            show(time.start, i64::MIN),
            show(time.end, i64::MAX)
        )?;
    }
    if !pushdown.matchers.is_empty() {
        let m: Vec<String> = pushdown.matchers.iter().map(|m| m.to_string()).collect();
        write!(f, ", labels=[{}]", m.join(", "))?;
    }
    if let Some(limit) = limit {
        write!(f, ", limit={limit}")?;
    }
    Ok(())
}

/// Reads a [`MetricSnapshot`], its chunks spread over partitions.
#[derive(Debug)]
pub struct HeadScanExec {
    snapshot: MetricSnapshot,
    schema: SchemaRef,
    pushdown: Pushdown,
    limit: Option<usize>,
    /// Chunk indices read by each partition.
    partitions: Vec<Vec<usize>>,
    properties: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
}

impl HeadScanExec {
    fn new(
        snapshot: MetricSnapshot,
        schema: SchemaRef,
        pushdown: Pushdown,
        limit: Option<usize>,
        target_partitions: usize,
    ) -> Self {
        let chunks = snapshot.chunks().len();
        let n = target_partitions.min(chunks).max(1);
        let mut partitions = vec![Vec::new(); n];
        for i in 0..chunks {
            partitions[i % n].push(i);
        }
        let properties = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(Arc::clone(&schema)),
            Partitioning::UnknownPartitioning(n),
            EmissionType::Incremental,
            Boundedness::Bounded,
        ));
        Self {
            snapshot,
            schema,
            pushdown,
            limit,
            partitions,
            properties,
            metrics: ExecutionPlanMetricsSet::new(),
        }
    }
}

impl DisplayAs for HeadScanExec {
    fn fmt_as(&self, t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if matches!(t, DisplayFormatType::TreeRender) {
            return write!(f, "metric={}", self.snapshot.name());
        }
        write!(
            f,
            "HeadScanExec: metric={}, partitions={}, chunks={}",
            self.snapshot.name(),
            self.partitions.len(),
            self.snapshot.chunks().len(),
        )?;
        fmt_scan_tail(f, &self.schema, &self.pushdown, self.limit)
    }
}

impl ExecutionPlan for HeadScanExec {
    fn name(&self) -> &str {
        "HeadScanExec"
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
        _context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let chunks: Vec<_> = self
            .partitions
            .get(partition)
            .map(|idx| {
                idx.iter()
                    .map(|&i| Arc::clone(&self.snapshot.chunks()[i]))
                    .collect()
            })
            .unwrap_or_default();
        let output_rows = MetricBuilder::new(&self.metrics).output_rows(partition);
        let pruned = MetricBuilder::new(&self.metrics).counter("chunks_pruned", partition);
        let snapshot = self.snapshot.clone();
        let schema = Arc::clone(&self.schema);
        let time = self.pushdown.time;
        let mask = snapshot.series_mask(&self.pushdown.matchers);
        let mut remaining = self.limit.unwrap_or(usize::MAX);
        let batches = chunks.into_iter().filter_map(move |chunk| {
            if remaining == 0 {
                return None;
            }
            match snapshot.read(&chunk, &schema, time, mask.as_deref()) {
                Ok(Some(mut batch)) => {
                    if batch.num_rows() > remaining {
                        batch = batch.slice(0, remaining);
                    }
                    remaining -= batch.num_rows();
                    output_rows.add(batch.num_rows());
                    Some(Ok(batch))
                }
                Ok(None) => {
                    pruned.add(1);
                    None
                }
                Err(e) => Some(Err(e.into())),
            }
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            Arc::clone(&self.schema),
            futures::stream::iter(batches),
        )))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }
}

#[cfg(test)]
mod tests {
    use datafusion::prelude::{col, lit};

    use super::*;

    fn schema() -> SchemaRef {
        use arrow::datatypes::{DataType, Field, Schema};
        Arc::new(Schema::new(vec![
            Field::new("job", storage::head::label_type(), true),
            Field::new("timestamp", storage::head::timestamp_type(), false),
            Field::new("value", DataType::Float64, false),
        ]))
    }

    fn ts(ms: i64) -> Expr {
        lit(ScalarValue::TimestampMillisecond(
            Some(ms),
            Some("UTC".into()),
        ))
    }

    #[test]
    fn time_bounds_are_taken_from_comparisons_and_between() {
        let p = Pushdown::from_filters(
            &[
                col("timestamp").gt(ts(100)),
                ts(200).gt_eq(col("timestamp")),
            ],
            &schema(),
        );
        // Timestamps are whole milliseconds: `> 100` is `>= 101`.
        assert_eq!(
            p.time,
            TimeRange {
                start: 101,
                end: 200
            }
        );
        let p = Pushdown::from_filters(&[col("timestamp").between(ts(5), ts(9))], &schema());
        assert_eq!(p.time, TimeRange { start: 5, end: 9 });
        let ns = lit(ScalarValue::TimestampNanosecond(Some(1_500_001), None));
        let p = Pushdown::from_filters(&[col("timestamp").lt(ns)], &schema());
        assert_eq!(
            p.time.end, 2,
            "rounded up, never cutting a row that may match"
        );
    }

    #[test]
    fn label_comparisons_become_matchers() {
        let p = Pushdown::from_filters(
            &[
                col("job").eq(lit("node")),
                lit("x").not_eq(col("job")),
                col("job").in_list(vec![lit("a"), lit("b")], true),
                col("value").eq(lit(1.0)),
                col("job").like(lit("n%")),
            ],
            &schema(),
        );
        assert_eq!(
            p.matchers,
            vec![
                LabelMatcher {
                    column: "job".into(),
                    op: MatchOp::Eq("node".into())
                },
                LabelMatcher {
                    column: "job".into(),
                    op: MatchOp::NotEq("x".into())
                },
                LabelMatcher {
                    column: "job".into(),
                    op: MatchOp::NotIn(vec!["a".into(), "b".into()])
                },
            ]
        );
        assert!(p.time.is_unbounded());
    }

    #[test]
    fn lossy_casts_of_the_column_are_not_looked_through() {
        use datafusion::logical_expr::{cast, try_cast};
        let date = lit(ScalarValue::Date32(Some(19_844)));
        let secs = lit(ScalarValue::TimestampSecond(Some(5), None));
        let p = Pushdown::from_filters(
            &[
                cast(col("timestamp"), DataType::Date32).eq(date.clone()),
                try_cast(col("timestamp"), DataType::Date32).lt_eq(date),
                cast(
                    col("timestamp"),
                    DataType::Timestamp(TimeUnit::Second, None),
                )
                .lt_eq(secs),
                cast(col("job"), DataType::Int64).eq(lit(1i64)),
            ],
            &schema(),
        );
        assert!(p.is_empty(), "{p:?}");
        // Lossless casts are fine.
        let ns = lit(ScalarValue::TimestampNanosecond(Some(7_000_000), None));
        let p = Pushdown::from_filters(
            &[
                cast(
                    col("timestamp"),
                    DataType::Timestamp(TimeUnit::Nanosecond, None),
                )
                .gt(ns),
                cast(col("job"), DataType::Utf8).eq(lit("x")),
            ],
            &schema(),
        );
        assert_eq!(p.time.start, 7);
        assert_eq!(p.matchers.len(), 1);
    }

    #[test]
    fn literals_that_overflow_milliseconds_are_not_taken() {
        let huge = lit(ScalarValue::TimestampSecond(Some(i64::MAX / 10), None));
        assert!(Pushdown::from_filters(&[col("timestamp").lt_eq(huge)], &schema()).is_empty());
        let neg = lit(ScalarValue::TimestampNanosecond(Some(-1_500_000), None));
        let p = Pushdown::from_filters(&[col("timestamp").gt(neg)], &schema());
        assert_eq!(p.time.start, -2, "floor of -1.5 ms");
    }

    #[test]
    fn other_filters_are_not_taken() {
        let p = Pushdown::from_filters(
            &[
                col("value").gt(lit(1.0)),
                col("job").eq(col("job")),
                col("nope").eq(lit("x")),
                col("timestamp").not_eq(ts(1)),
            ],
            &schema(),
        );
        assert!(p.is_empty(), "{p:?}");
    }

    #[test]
    fn dictionary_labels_in_files_reach_views_through_a_dictionary_of_views() {
        use arrow::array::{Array, ArrayRef, DictionaryArray, RecordBatch, StringViewArray};
        use arrow::datatypes::Int32Type;
        use datafusion::physical_expr::expressions::col;

        let physical = schema();
        let logical = table_schema(&physical);
        let adapter = LabelViews
            .create(Arc::clone(&logical), Arc::clone(&physical))
            .unwrap();
        let expr = adapter.rewrite(col("job", &logical).unwrap()).unwrap();
        let outer = expr
            .downcast_ref::<CastExpr>()
            .expect("a cast to the view type");
        assert_eq!(outer.cast_type(), &DataType::Utf8View);
        let inner = outer
            .expr()
            .downcast_ref::<CastExpr>()
            .expect("through a dictionary");
        assert_eq!(
            inner.cast_type(),
            &DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8View))
        );
        assert!(inner.expr().downcast_ref::<Column>().is_some());
        // Other columns are adapted as DataFusion would.
        let ts = adapter
            .rewrite(col("timestamp", &logical).unwrap())
            .unwrap();
        assert!(ts.downcast_ref::<Column>().is_some());

        let job: DictionaryArray<Int32Type> =
            vec![Some("node"), None, Some("a-job-name-longer-than-12")]
                .into_iter()
                .collect();
        let batch = RecordBatch::try_new(
            Arc::clone(&physical),
            vec![
                Arc::new(job) as ArrayRef,
                Arc::new(
                    arrow::array::TimestampMillisecondArray::from(vec![1, 2, 3])
                        .with_timezone("UTC"),
                ),
                Arc::new(arrow::array::Float64Array::from(vec![1.0, 2.0, 3.0])),
            ],
        )
        .unwrap();
        let out = expr.evaluate(&batch).unwrap().into_array(3).unwrap();
        assert_eq!(
            out.as_any().downcast_ref::<StringViewArray>(),
            Some(&StringViewArray::from(vec![
                Some("node"),
                None,
                Some("a-job-name-longer-than-12")
            ]))
        );
    }
}
