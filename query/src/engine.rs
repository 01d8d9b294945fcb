//! The query engine: one DataFusion setup shared by every client query.
//!
//! ```text
//! SQL ─parse─► statement ─read-only check─► logical plan ─verify (no DDL/DML)─► DataFrame
//!                                                                              │ execute
//!                       wire conversion (dictionary → Utf8, views → Utf8) ◄────┘
//! ```
//!
//! A statement whose text was planned before starts from the plan kept for it
//! ([`crate::plan_cache`]), once that plan's tables are checked to be the current ones.
//!
//! Read-only is enforced twice: on the parsed statement, which gives a message naming the
//! statement kind, and on the logical plan with DataFusion's `SQLOptions` (no DDL, no DML, no
//! session statements), which also catches DDL hidden in queries such as `SELECT ... INTO`.
//!
//! Execution is isolated and bounded (DESIGN.md §4, `query:` in §5):
//!
//! * Queries run on their own multi-threaded tokio runtime (threads `arrowhead-query`), never
//!   on the runtime that scrapes, writes the WAL and serves HTTP: DataFusion's operators are
//!   CPU-bound and would otherwise hold those workers. Batches cross to the caller through a
//!   small channel, so a slow client holds at most two batches in memory.
//! * `query.max_concurrent` slots: a query waits for one (for at most its timeout) before it
//!   runs; the wait counts towards the timeout.
//! * `query.timeout`: a deadline over the whole query, waiting for a slot and streaming
//!   included. When it passes the execution is dropped, which stops DataFusion's tasks and
//!   frees their memory, and the client gets a `ResourceExhausted` error naming the limit. A
//!   client that goes away cancels its query the same way.
//! * `query.memory_limit`: one DataFusion memory pool shared by running queries; a query
//!   that would exceed it fails with an error naming the limit. Spilling to disk is off: a
//!   query must never fill the disk the WAL and blocks live on.
//!
//! Label columns are string views inside the engine ([`crate::scan::table_schema`]: cheap
//! column-wise group-bys); every result leaves as plain `Utf8`, the wire type of DESIGN.md
//! §3, as do dictionaries a function may produce, so clients see one string type.
//!
//! Physical plans get one rule after DataFusion's own: [`RunAggregateRule`], which groups
//! raw rows by runs of equal keys (metric rows come series by series).

use std::ops::ControlFlow;
use std::sync::{Arc, OnceLock};

use arrow::array::{ArrayRef, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::DataFusionError;
use datafusion::common::ScalarValue;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::datasource::physical_plan::FileScanConfig;
use datafusion::datasource::source::DataSourceExec;
use datafusion::datasource::source_as_provider;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::execution::TaskContext;
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::execution::session_state::{SessionState, SessionStateBuilder};
use datafusion::logical_expr::LogicalPlan;
use datafusion::optimizer::Optimizer;
use datafusion::physical_optimizer::optimizer::PhysicalOptimizer;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::prelude::{DataFrame, SQLOptions, SessionConfig, SessionContext};
use datafusion::sql::parser::Statement as DfStatement;
use datafusion::sql::sqlparser::ast::{
    Expr as SqlExpr, Statement as SqlStatement, Value as SqlValue, visit_expressions_mut,
};
use futures::StreamExt;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};
use storage::Head;
use storage::block::Blocks;
use storage::units::{ByteSize, Duration};
use tokio::sync::{Semaphore, mpsc};
use tokio::time::Instant;

use crate::block_scan::{BlockCache, BlockScanExec};
use crate::catalog::{ArrowheadCatalog, CATALOG, METRICS_SCHEMA};
use crate::kept_plans::{KeptPlans, StartedQueries};
use crate::plan_cache::{Keep, PlanCache, Shape};
use crate::run_aggregate::RunAggregateRule;
use crate::scan::MetricTable;
use crate::system::TargetsSource;

/// The `query:` section of `arrowhead.yml`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueryConfig {
    /// A query running longer is cancelled.
    pub timeout: Duration,
    /// Memory all running queries may use together, through DataFusion's memory pool.
    pub memory_limit: ByteSize,
    /// Queries running at once.
    pub max_concurrent: usize,
    /// Decoded columns of local block files kept for later queries (least recently used go
    /// first); 0 keeps nothing. Counted apart from `memory_limit`.
    pub block_cache: ByteSize,
    /// Plans of statements kept by SQL text for the next statement with the same text
    /// ([`crate::plan_cache`]); 0 keeps none.
    pub plan_cache: usize,
}

impl Default for QueryConfig {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(30),
            memory_limit: ByteSize(1 << 30),
            max_concurrent: 16,
            block_cache: ByteSize(256 << 20),
            plan_cache: 256,
        }
    }
}

impl QueryConfig {
    /// Checks values; the message names the key.
    pub fn validate(&self) -> Result<(), String> {
        if self.timeout.get().is_zero() {
            return Err("query.timeout: must be greater than 0".into());
        }
        if self.memory_limit.bytes() == 0 {
            return Err("query.memory_limit: must be greater than 0".into());
        }
        if self.max_concurrent == 0 {
            return Err("query.max_concurrent: must be at least 1".into());
        }
        Ok(())
    }
}

/// A query failure, classified once; the Flight SQL layer maps each class to a gRPC code.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The statement would change something: clients are read-only.
    #[error("{0}")]
    PermissionDenied(String),
    /// The SQL does not parse, plan or run because of what it says.
    #[error("{0}")]
    InvalidArgument(String),
    /// A limit was hit (memory, time, concurrency).
    #[error("{0}")]
    ResourceExhausted(String),
    /// A fault of this replica.
    #[error("{0}")]
    Internal(String),
}

impl From<DataFusionError> for QueryError {
    fn from(e: DataFusionError) -> Self {
        classify(e)
    }
}

fn classify(e: DataFusionError) -> QueryError {
    let message = e.to_string();
    match kind(&e) {
        Kind::User => QueryError::InvalidArgument(message),
        Kind::Limit => QueryError::ResourceExhausted(message),
        Kind::Fault => QueryError::Internal(message),
    }
}

enum Kind {
    User,
    Limit,
    Fault,
}

/// Whose fault an error is, looking through DataFusion's wrappers.
fn kind(e: &DataFusionError) -> Kind {
    match e {
        DataFusionError::Context(_, inner) | DataFusionError::Diagnostic(_, inner) => kind(inner),
        DataFusionError::Shared(inner) => kind(inner),
        DataFusionError::Collection(errors) => errors.first().map_or(Kind::Fault, kind),
        DataFusionError::SQL(..)
        | DataFusionError::Plan(_)
        | DataFusionError::SchemaError(..)
        | DataFusionError::NotImplemented(_)
        | DataFusionError::Configuration(_)
        | DataFusionError::ArrowError(..)
        | DataFusionError::Execution(_) => Kind::User,
        DataFusionError::ResourcesExhausted(_) => Kind::Limit,
        _ => Kind::Fault,
    }
}

/// Counters for `/metrics`.
#[derive(Debug, Clone, Default)]
pub struct QueryMetrics {
    /// Queries started (a Flight SQL `DoGet`; planning for a schema alone does not count).
    pub executed: Counter,
    /// Statements refused or failed, at planning or while streaming.
    pub errors: Counter,
    /// Queries cancelled by `query.timeout` (also counted in `errors`).
    pub timeouts: Counter,
    /// Queries running now (holding one of the `query.max_concurrent` slots).
    pub running: Gauge,
    /// Queries waiting for a slot.
    pub queued: Gauge,
    /// Plans kept from an earlier call of the same statement (its schema request, or the
    /// creation of a prepared statement) and used instead of planning it again
    /// ([`crate::kept_plans`]).
    pub reused_plans: Counter,
    /// Statements planned from the kept plan of an earlier statement with the same text
    /// ([`crate::plan_cache`]).
    pub plan_cache_hits: Counter,
    /// Bytes held by the block cache ([`crate::block_scan::BlockCache`]).
    pub block_cache_bytes: Gauge,
    /// Column chunks of block files found in the block cache.
    pub block_cache_hits: Counter,
    /// Column chunks of block files decoded because the block cache did not hold them.
    pub block_cache_misses: Counter,
}

impl QueryMetrics {
    /// Registers the counters under `arrowhead_query_*`.
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("arrowhead_query");
        r.register("executions", "Queries executed", self.executed.clone());
        r.register(
            "errors",
            "SQL statements refused, or failed while planning or running",
            self.errors.clone(),
        );
        r.register(
            "timeouts",
            "Queries cancelled because they ran longer than query.timeout",
            self.timeouts.clone(),
        );
        r.register(
            "running",
            "Queries running (at most query.max_concurrent)",
            self.running.clone(),
        );
        r.register(
            "queued",
            "Queries waiting for one of the query.max_concurrent slots",
            self.queued.clone(),
        );
        r.register(
            "reused_plans",
            "Plans kept from an earlier call of the same statement and used instead of planning it again",
            self.reused_plans.clone(),
        );
        r.register(
            "plan_cache_hits",
            "Statements planned from the kept plan of an earlier statement with the same text",
            self.plan_cache_hits.clone(),
        );
        r.register(
            "block_cache_bytes",
            "Bytes of decoded block file columns kept for later queries (at most query.block_cache)",
            self.block_cache_bytes.clone(),
        );
        r.register(
            "block_cache_hits",
            "Column chunks of block files read from the block cache",
            self.block_cache_hits.clone(),
        );
        r.register(
            "block_cache_misses",
            "Column chunks of block files decoded because the block cache did not hold them",
            self.block_cache_misses.clone(),
        );
    }
}

/// Plans and runs read-only SQL over the head.
#[derive(Clone)]
pub struct QueryEngine {
    /// Shared DataFusion context: catalog, functions, runtime (memory pool). Each query plans
    /// on a clone of its state, so queries never see each other's settings.
    ctx: SessionContext,
    metrics: QueryMetrics,
    /// The blocks tables read, to take out a block whose files fail to decode.
    blocks: Option<Arc<Blocks>>,
    /// Where queries run, and their limits.
    limits: Arc<Limits>,
    /// Plans made for a schema request, waiting for the call that runs them.
    kept: Arc<KeptPlans>,
    /// Queries started for a `GetFlightInfo`, waiting for the `DoGet` that reads them.
    started: Arc<StartedQueries>,
    /// Plans by SQL text, for statements that come again.
    plans: Arc<PlanCache>,
}

/// The execution side shared by every clone of an engine: the query runtime, the limits and
/// the task contexts queries execute with.
struct Limits {
    /// The runtime queries execute on; shut down in the background when the last engine goes.
    runtime: Option<tokio::runtime::Runtime>,
    handle: tokio::runtime::Handle,
    timeout: Duration,
    memory_limit: ByteSize,
    max_concurrent: usize,
    slots: Arc<Semaphore>,
    /// What execution reads of the session (settings, functions, runtime), built once for
    /// every core (`wide_task`) and once for one partition (`narrow_task`, see
    /// [`SMALL_SCAN_ROWS`]). `SessionState::task_ctx` would copy every function registry for
    /// each query, and nothing in it differs between queries: clients cannot change settings
    /// or functions.
    wide_task: Arc<TaskContext>,
    narrow_task: Arc<TaskContext>,
}

impl Drop for Limits {
    fn drop(&mut self) {
        // Dropping a runtime blocks, which is not allowed inside another runtime's task.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// What every query thread runs first, if the process registered something.
static QUERY_THREAD_START: OnceLock<fn()> = OnceLock::new();

/// Registers `hook` to run first on every thread of the query runtime (the binary gives those
/// threads their own allocator with it). Call it before creating an engine; only the first
/// registration counts.
pub fn on_query_thread_start(hook: fn()) {
    let _ = QUERY_THREAD_START.set(hook);
}

impl Limits {
    fn new(config: &QueryConfig, state: &SessionState) -> Result<Self, QueryError> {
        let mut narrow = state.clone();
        narrow
            .config_mut()
            .options_mut()
            .execution
            .target_partitions = 1;
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder
            .worker_threads(threads)
            .thread_name("arrowhead-query")
            .enable_all();
        if let Some(&hook) = QUERY_THREAD_START.get() {
            builder.on_thread_start(hook);
        }
        let runtime = builder
            .build()
            .map_err(|e| QueryError::Internal(format!("cannot start the query runtime: {e}")))?;
        Ok(Self {
            handle: runtime.handle().clone(),
            runtime: Some(runtime),
            timeout: config.timeout,
            memory_limit: config.memory_limit,
            max_concurrent: config.max_concurrent,
            slots: Arc::new(Semaphore::new(config.max_concurrent)),
            wide_task: state.task_ctx(),
            narrow_task: narrow.task_ctx(),
        })
    }

    fn timeout_error(&self) -> DataFusionError {
        DataFusionError::ResourcesExhausted(format!(
            "query cancelled: it ran longer than query.timeout ({})",
            self.timeout
        ))
    }

    /// Says which limit a memory-pool error is about.
    fn name_memory_limit(&self, e: DataFusionError) -> DataFusionError {
        if !matches!(kind(&e), Kind::Limit) {
            return e;
        }
        DataFusionError::ResourcesExhausted(format!(
            "query exceeded query.memory_limit ({}, shared by all running queries): {}",
            self.memory_limit,
            e.strip_backtrace()
        ))
    }
}

impl std::fmt::Debug for QueryEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueryEngine")
            .field("session_id", &self.ctx.session_id())
            .finish_non_exhaustive()
    }
}

/// A query that reads at most this many rows of metric tables (in the block files and head
/// chunks its time range meets, before any other filter) is planned for one partition. A
/// block file is split between cores only by row group, and row groups are 128 Ki rows
/// (storage's `ROW_GROUP_ROWS`), so such a scan is read by one core anyway: more partitions
/// would only add a repartition, a second aggregation stage and a merge. Measured on the query
/// benchmark's max-per-instance over 1 h (13,200 of 26,400 rows; DoGet medians of 50, two
/// alternations): 3.5–4.3 → 3.2–3.4 ms. Larger scans keep every core: the per-series rate
/// (1.6 M rows) took 63 ms on one partition against 47.
const SMALL_SCAN_ROWS: u64 = 128 * 1024;

/// Rows of the metric tables `plan` scans (subqueries included) in the block files and head
/// chunks that the time range pushed into each scan meets, as block metadata and the head
/// count them. `plan` is an optimized plan: filters are pushed into the scans by then, so a
/// short range over a long history counts only the blocks it reads.
fn scanned_rows(plan: &LogicalPlan) -> u64 {
    let mut rows = 0u64;
    let _ = plan.apply_with_subqueries(|node| {
        if let LogicalPlan::TableScan(scan) = node
            && let Ok(provider) = source_as_provider(&scan.source)
            && let Some(table) = provider.downcast_ref::<MetricTable>()
        {
            rows = rows.saturating_add(table.rows_in(&scan.filters));
        }
        Ok(TreeNodeRecursion::Continue)
    });
    rows
}

/// Whether `plan` is a single-table shape: scans, filters, projections, aggregates, windows
/// and sorts, with no join, union, limit, recursive query or subquery expression. DataFusion
/// runs its logical rules up to `optimizer.max_passes` times (default 3) and stops once a pass
/// changes nothing. On these shapes the first pass already gives the final plan (checked on
/// the query benchmark's questions and other single-table shapes by
/// `one_optimizer_pass_gives_the_plan_of_three_on_single_table_shapes`), so the second pass
/// only confirmed it, at the price of another walk of every rule. Every pass gives a correct
/// plan, so at worst a shape not covered there gets a less tidy one, never a wrong answer.
/// Plans with joins, unions or subqueries, where rules feed each other across passes, keep
/// every pass, as do limits: a `LIMIT` over a sort is folded into the sort's fetch only by a
/// second pass.
fn single_pass_shape(plan: &LogicalPlan) -> bool {
    use datafusion::common::tree_node::TreeNode;
    use datafusion::logical_expr::Expr;
    let subquery = |e: &Expr| {
        matches!(
            e,
            Expr::ScalarSubquery(_)
                | Expr::Exists(_)
                | Expr::InSubquery(_)
                | Expr::SetComparison(_)
                | Expr::OuterReferenceColumn(..)
        )
    };
    let other = plan.exists(|node| {
        let shape = matches!(
            node,
            LogicalPlan::Projection(_)
                | LogicalPlan::Filter(_)
                | LogicalPlan::Aggregate(_)
                | LogicalPlan::Window(_)
                | LogicalPlan::Sort(_)
                | LogicalPlan::Distinct(_)
                | LogicalPlan::SubqueryAlias(_)
                | LogicalPlan::TableScan(_)
                | LogicalPlan::EmptyRelation(_)
                | LogicalPlan::Values(_)
                | LogicalPlan::Explain(_)
                | LogicalPlan::Analyze(_)
        );
        Ok(!shape
            || node
                .expressions()
                .iter()
                .any(|e| e.exists(|e| Ok(subquery(e))).unwrap_or(true)))
    });
    !other.unwrap_or(true)
}

/// Whether `plan` computes a window function. Such plans get no single-table mark and keep
/// every optimizer rule (see [`crate::plan_rules`]): a filter on a window's row number, for
/// one, is turned into a per-partition top-k by a rule that looks for windows.
fn has_window(plan: &LogicalPlan) -> bool {
    use datafusion::common::tree_node::TreeNode;
    plan.exists(|node| Ok(matches!(node, LogicalPlan::Window(_))))
        .unwrap_or(true)
}

/// The block files a plan reads, named as DataFusion's object store names them.
fn scanned_files(plan: &Arc<dyn ExecutionPlan>) -> Arc<Vec<String>> {
    fn walk(plan: &Arc<dyn ExecutionPlan>, out: &mut Vec<String>) {
        if let Some(scan) = plan.downcast_ref::<BlockScanExec>() {
            out.extend(scan.files().iter().map(|f| f.location()));
        }
        if let Some(source) = plan.downcast_ref::<DataSourceExec>()
            && let Some(config) = source.data_source().downcast_ref::<FileScanConfig>()
        {
            for group in &config.file_groups {
                out.extend(
                    group
                        .files()
                        .iter()
                        .map(|f| f.object_meta.location.to_string()),
                );
            }
        }
        for child in plan.children() {
            walk(child, out);
        }
    }
    let mut out = Vec::new();
    walk(plan, &mut out);
    Arc::new(out)
}

/// After a query failed while running: when it read block files, decodes them (on the
/// blocking pool) and takes out of service the blocks that do not decode, so the next query
/// works; the error then says so. Other errors pass unchanged.
async fn set_aside_unreadable(
    error: DataFusionError,
    blocks: Option<Arc<Blocks>>,
    files: Arc<Vec<String>>,
) -> DataFusionError {
    let Some(blocks) = blocks.filter(|_| !files.is_empty()) else {
        return error;
    };
    let bad = tokio::task::spawn_blocking(move || blocks.verify_files(&files))
        .await
        .unwrap_or_default();
    if bad.is_empty() {
        return error;
    }
    let ids: Vec<&str> = bad.iter().map(|(id, _)| id.as_str()).collect();
    DataFusionError::Execution(format!(
        "{error}; block(s) {} could not be read and were moved to the corrupted directory \
         (see system.blocks); running the query again reads the rest",
        ids.join(", ")
    ))
}

/// A planned query: its result schema as clients will see it, and how to run it.
#[derive(Debug, Clone)]
pub struct PlannedQuery {
    frame: DataFrame,
    schema: SchemaRef,
    metrics: QueryMetrics,
    blocks: Option<Arc<Blocks>>,
    limits: Arc<Limits>,
    /// The block view generation taken before the tables were resolved.
    generation: u64,
    /// How the plan is optimized and run.
    shape: Shape,
    /// Whether `frame` holds an optimized plan already (kept from an earlier run).
    optimized: bool,
    /// Where the optimized plan goes once it is made, under the statement's text, when the
    /// plan cache may keep it.
    keep_optimized: Option<(Arc<PlanCache>, Arc<str>)>,
}

impl std::fmt::Debug for Limits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limits")
            .field("timeout", &self.timeout)
            .field("memory_limit", &self.memory_limit)
            .field("max_concurrent", &self.max_concurrent)
            .finish_non_exhaustive()
    }
}

impl PlannedQuery {
    /// The result schema on the wire.
    pub fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    /// The generation of the block view the plan's tables were resolved on, or an older one.
    pub(crate) fn generation(&self) -> u64 {
        self.generation
    }

    /// The statement's parameters as a schema: one field per placeholder (`$1`, `$2`, …) in
    /// position order, with its wire type (`Null` where the planner could not infer one).
    pub fn parameter_schema(&self) -> Result<SchemaRef, QueryError> {
        let fields: Vec<Field> = parameter_types(&self.frame)?
            .into_iter()
            .map(|(name, ty)| Field::new(name, ty.map_or(DataType::Null, |t| wire_type(&t)), true))
            .collect();
        Ok(Arc::new(Schema::new(fields)))
    }

    /// Runs the query on the query runtime once a `query.max_concurrent` slot is free;
    /// batches arrive already converted to wire types. Dropping the stream cancels the query.
    pub async fn execute(self) -> Result<SendableRecordBatchStream, QueryError> {
        let limits = Arc::clone(&self.limits);
        let deadline = Instant::now() + limits.timeout.get();
        let metrics = self.metrics.clone();
        metrics.queued.inc();
        let slot =
            tokio::time::timeout_at(deadline, Arc::clone(&limits.slots).acquire_owned()).await;
        metrics.queued.dec();
        let Ok(Ok(slot)) = slot else {
            metrics.executed.inc();
            metrics.errors.inc();
            metrics.timeouts.inc();
            return Err(QueryError::ResourceExhausted(format!(
                "query cancelled: it waited longer than query.timeout ({}) for one of the \
                 query.max_concurrent ({}) slots",
                limits.timeout, limits.max_concurrent
            )));
        };
        Ok(self.start(slot, deadline))
    }

    /// Starts the query now if more than half of the `query.max_concurrent` slots are free,
    /// for a client that will read it in a moment ([`crate::kept_plans`]); gives the plan
    /// back otherwise. Only half: started queries nobody reads hold their slot until they
    /// expire, and must never keep queries that are asked for from running.
    // The error hands the caller's own plan back (a move, no allocation), as `try_from` does.
    #[allow(clippy::result_large_err)]
    pub fn try_start(self) -> Result<StartedQuery, Self> {
        let limits = Arc::clone(&self.limits);
        if limits.slots.available_permits() * 2 <= limits.max_concurrent {
            return Err(self);
        }
        let Ok(slot) = Arc::clone(&limits.slots).try_acquire_owned() else {
            return Err(self);
        };
        let generation = self.generation;
        let stream = self.start(slot, Instant::now() + limits.timeout.get());
        Ok(StartedQuery { stream, generation })
    }

    /// Spawns the query on the query runtime, holding `slot` until it ends.
    fn start(
        self,
        slot: tokio::sync::OwnedSemaphorePermit,
        deadline: Instant,
    ) -> SendableRecordBatchStream {
        self.metrics.executed.inc();
        let metrics = self.metrics.clone();
        let limits = Arc::clone(&self.limits);
        let schema = Arc::clone(&self.schema);
        let (tx, rx) = mpsc::channel(2);
        let run = run_to_channel(self, deadline, tx);
        limits.handle.spawn(async move {
            // Spawned from a Flight SQL handler on this same runtime, the query would take the
            // worker's next-task slot and plan before the handler's reply (the FlightInfo) is
            // written. Yielding once sends the reply first, so the client's DoGet travels while
            // the query runs (query benchmark, max over 1 h: ratio 1.26 and 1.13 against 1.43
            // and 1.27 without, two alternating pairs of runs).
            tokio::task::yield_now().await;
            metrics.running.inc();
            run.await;
            // The slot goes back before the gauge drops: a query not counted as running
            // never holds one.
            drop(slot);
            metrics.running.dec();
        });
        let batches = tokio_stream::wrappers::ReceiverStream::new(rx);
        Box::pin(RecordBatchStreamAdapter::new(schema, batches))
    }
}

/// A query started ahead of the call that reads its result (see [`crate::kept_plans`]).
pub struct StartedQuery {
    stream: SendableRecordBatchStream,
    generation: u64,
}

impl std::fmt::Debug for StartedQuery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StartedQuery")
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

impl StartedQuery {
    /// The generation of the block view the query was planned on.
    pub(crate) fn generation(&self) -> u64 {
        self.generation
    }

    /// Its result, as [`PlannedQuery::execute`] gives it.
    pub fn into_stream(self) -> SendableRecordBatchStream {
        self.stream
    }
}

/// Executes `query` (on the query runtime) and sends its wire batches to `tx` until the end,
/// an error, the deadline, or the receiver going away.
async fn run_to_channel(
    query: PlannedQuery,
    deadline: Instant,
    tx: mpsc::Sender<Result<RecordBatch, DataFusionError>>,
) {
    let PlannedQuery {
        frame,
        schema,
        metrics,
        blocks,
        limits,
        generation,
        shape,
        optimized,
        keep_optimized,
    } = query;
    let mut files = Arc::new(Vec::new());
    let work = async {
        let (mut state, plan) = frame.into_parts();
        if shape.single_pass {
            state.config_mut().options_mut().optimizer.max_passes = 1;
        }
        if shape.single_table {
            crate::plan_rules::mark_single_table(&mut state, true);
        }
        // What `SessionState::create_physical_plan` does, in two steps: the partitions are
        // chosen on the optimized plan, whose scans hold the time range (the logical rules do
        // not read the partition count).
        let plan = if optimized {
            plan
        } else {
            let plan = state.optimize(&plan)?;
            if let Some((cache, sql)) = keep_optimized {
                cache.optimized(&sql, generation, &plan);
            }
            plan
        };
        let narrow = scanned_rows(&plan) <= SMALL_SCAN_ROWS;
        if narrow {
            state.config_mut().options_mut().execution.target_partitions = 1;
        }
        let task = Arc::clone(if narrow {
            &limits.narrow_task
        } else {
            &limits.wide_task
        });
        let plan = state
            .query_planner()
            .create_physical_plan(&plan, &state)
            .await?;
        files = scanned_files(&plan);
        let mut stream = datafusion::physical_plan::execute_stream(plan, task)?;
        while let Some(batch) = stream.next().await {
            let batch = to_wire(&batch?, &schema)?;
            if tx.send(Ok(batch)).await.is_err() {
                break;
            }
        }
        Ok::<(), DataFusionError>(())
    };
    let error = tokio::select! {
        result = tokio::time::timeout_at(deadline, work) => match result {
            Ok(Ok(())) => return,
            Ok(Err(e)) => limits.name_memory_limit(e),
            Err(_) => {
                metrics.timeouts.inc();
                limits.timeout_error()
            }
        },
        // The client went away: dropping the work cancels it.
        () = tx.closed() => return,
    };
    metrics.errors.inc();
    let error = set_aside_unreadable(error, blocks, files).await;
    let _ = tx.send(Err(error)).await;
}

impl QueryEngine {
    /// An engine over `head`, with `system.targets` read from `targets`.
    pub fn new(
        head: Arc<Head>,
        targets: Arc<dyn TargetsSource>,
        config: &QueryConfig,
    ) -> Result<Self, QueryError> {
        Self::with_blocks(head, None, targets, config)
    }

    /// An engine over the head and the blocks of a replica.
    pub fn with_blocks(
        head: Arc<Head>,
        blocks: Option<Arc<Blocks>>,
        targets: Arc<dyn TargetsSource>,
        config: &QueryConfig,
    ) -> Result<Self, QueryError> {
        let metrics = QueryMetrics::default();
        let mut session = SessionConfig::new()
            .with_information_schema(true)
            .with_create_default_catalog_and_schema(false)
            .with_default_catalog_and_schema(CATALOG, METRICS_SCHEMA)
            .with_extension(Arc::new(
                BlockCache::new(usize::try_from(config.block_cache.bytes()).unwrap_or(usize::MAX))
                    .counted(&metrics),
            ));
        let options = session.options_mut();
        // Identifiers keep their case: `SELECT * FROM ALERTS` finds ALERTS (DESIGN.md §3).
        options.sql_parser.enable_ident_normalization = false;
        options.sql_parser.map_string_types_to_utf8view = false;
        // No round-robin split of a single-partition input: block files are split by byte
        // range and the head scan splits itself, so it only added a hop per batch (the query
        // benchmark's small questions were ~20% faster without it, the large ones no slower).
        options.optimizer.enable_round_robin_repartition = false;
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_limit(config.memory_limit.bytes() as usize, 1.0)
            .with_disk_manager_builder(
                DiskManagerBuilder::default().with_mode(DiskManagerMode::Disabled),
            )
            .build_arc()?;
        let state = SessionStateBuilder::new()
            .with_config(session)
            .with_runtime_env(runtime)
            .with_default_features()
            .with_optimizer_rules(crate::plan_rules::skippable_logical(Optimizer::new().rules))
            .with_physical_optimizer_rules(crate::plan_rules::skippable(
                PhysicalOptimizer::new().rules,
            ))
            .with_physical_optimizer_rule(Arc::new(RunAggregateRule))
            .build();
        let ctx = SessionContext::new_with_state(state);
        crate::functions::register(&ctx);
        if let Some(remote) = blocks.as_ref().and_then(|b| b.remote()) {
            ctx.runtime_env()
                .register_object_store(remote.root(), remote.store());
        }
        ctx.register_catalog(
            CATALOG,
            Arc::new(ArrowheadCatalog::new(
                Arc::clone(&head),
                blocks.clone(),
                targets,
            )),
        );
        let limits = Arc::new(Limits::new(config, &ctx.state())?);
        let plans = Arc::new(PlanCache::new(head, config.plan_cache));
        Ok(Self {
            ctx,
            metrics,
            blocks,
            limits,
            kept: Arc::default(),
            started: Arc::default(),
            plans,
        })
    }

    /// The runtime queries execute on (threads `arrowhead-query`): the Flight SQL service
    /// runs there too, so that no statement is planned on the caller's runtime.
    pub fn runtime(&self) -> &tokio::runtime::Handle {
        &self.limits.handle
    }

    /// The query counters.
    pub fn metrics(&self) -> &QueryMetrics {
        &self.metrics
    }

    /// Parses, checks and plans `sql` without running it.
    pub async fn plan(&self, sql: &str) -> Result<PlannedQuery, QueryError> {
        let result = self.plan_inner(sql).await;
        if result.is_err() {
            self.metrics.errors.inc();
        }
        result
    }

    /// Plans `sql` with its placeholders (`$1`, `$2`, … or `?` in order) bound to `params`,
    /// each cast to the type the query expects where the planner inferred one.
    pub async fn plan_with_params(
        &self,
        sql: &str,
        params: Vec<ScalarValue>,
    ) -> Result<PlannedQuery, QueryError> {
        let result = async {
            let mut planned = self.plan_inner(sql).await?;
            let expected = parameter_types(&planned.frame)?;
            if expected.len() != params.len() {
                return Err(QueryError::InvalidArgument(format!(
                    "the statement has {} parameter(s) but {} value(s) were bound",
                    expected.len(),
                    params.len()
                )));
            }
            let params = params
                .into_iter()
                .zip(&expected)
                .map(|(value, (_, ty))| match ty {
                    Some(ty) if *ty != value.data_type() && !value.is_null() => {
                        value.cast_to(ty).map_err(|e| {
                            QueryError::InvalidArgument(format!(
                                "parameter value {value} does not fit type {ty}: {e}"
                            ))
                        })
                    }
                    _ => Ok(value),
                })
                .collect::<Result<Vec<_>, _>>()?;
            planned.frame = planned.frame.with_param_values(params)?;
            // The bound plan is not the statement's: it is not kept for the text.
            planned.keep_optimized = None;
            planned.schema = wire_schema(&planned.frame.schema().as_arrow().clone().into());
            Ok(planned)
        }
        .await;
        if result.is_err() {
            self.metrics.errors.inc();
        }
        result
    }

    /// Every table a client can list: catalog, schema, name, kind (`TABLE` for metrics,
    /// `SYSTEM TABLE` for `system.*`) and wire schema, in catalog order.
    pub async fn tables(&self) -> Result<Vec<TableInfo>, QueryError> {
        let mut out = Vec::new();
        for catalog_name in self.ctx.catalog_names() {
            let Some(catalog) = self.ctx.catalog(&catalog_name) else {
                continue;
            };
            for schema_name in catalog.schema_names() {
                let Some(schema) = catalog.schema(&schema_name) else {
                    continue;
                };
                let mut names = schema.table_names();
                names.sort();
                for name in names {
                    let Some(table) = schema.table(&name).await? else {
                        continue;
                    };
                    out.push(TableInfo {
                        catalog: catalog_name.clone(),
                        schema: schema_name.clone(),
                        table_type: if schema_name == METRICS_SCHEMA {
                            "TABLE"
                        } else {
                            "SYSTEM TABLE"
                        },
                        columns: wire_schema(&table.schema()),
                        name,
                    });
                }
            }
        }
        Ok(out)
    }

    /// Keeps a copy of `planned` for the call that will run it under `handle` (see
    /// [`crate::kept_plans`]).
    pub fn keep(&self, handle: &[u8], planned: &PlannedQuery) {
        self.kept
            .keep(handle, planned.clone(), std::time::Instant::now());
    }

    /// The plan kept for `handle`, if there is one and it still reads what a new plan would.
    pub fn take_kept(&self, handle: &[u8]) -> Option<PlannedQuery> {
        let planned = self
            .kept
            .take(handle, self.generation(), std::time::Instant::now())?;
        self.metrics.reused_plans.inc();
        Some(planned)
    }

    /// Starts `planned` for the call that will read it under `handle`, if a slot is free
    /// (see [`PlannedQuery::try_start`]); gives the plan back when it could not start.
    pub fn start_early(&self, handle: &[u8], planned: PlannedQuery) -> Option<PlannedQuery> {
        match planned.try_start() {
            Ok(started) => {
                self.started
                    .keep(handle, started, std::time::Instant::now());
                None
            }
            Err(planned) => Some(planned),
        }
    }

    /// The query started for `handle`, if there is one and it reads what a new plan would.
    pub fn take_started(&self, handle: &[u8]) -> Option<StartedQuery> {
        let started = self
            .started
            .take(handle, self.generation(), std::time::Instant::now())?;
        self.metrics.reused_plans.inc();
        Some(started)
    }

    /// The generation of the current block view (0 without blocks: the head alone is read
    /// whole and never truncated).
    fn generation(&self) -> u64 {
        self.blocks.as_ref().map_or(0, |b| b.generation())
    }

    async fn plan_inner(&self, sql: &str) -> Result<PlannedQuery, QueryError> {
        // Taken before any table is resolved: a change meanwhile makes the plan look older than
        // it is, never newer.
        let generation = self.generation();
        let state = self.ctx.state();
        if let Some(cached) = self.plans.get(sql, generation) {
            self.metrics.plan_cache_hits.inc();
            let keep_optimized = (!cached.optimized && cached.optimizable)
                .then(|| (Arc::clone(&self.plans), Arc::from(sql)));
            return Ok(self.planned(
                DataFrame::new(state, cached.plan),
                generation,
                cached.shape,
                cached.optimized,
                keep_optimized,
            ));
        }
        let dialect = state.config().options().sql_parser.dialect;
        let mut statement = state.sql_to_statement(sql, &dialect)?;
        check_read_only(&statement)?;
        number_question_marks(&mut statement);
        let plan = state.statement_to_plan(statement).await?;
        SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false)
            .verify_plan(&plan)
            .map_err(|e| QueryError::PermissionDenied(format!("{e}; clients are read-only")))?;
        let single_pass = single_pass_shape(&plan);
        let shape = Shape {
            single_pass,
            // No window either: the rules that only rewrite joins, unions, subqueries, limits
            // and windows can be skipped (see `crate::plan_rules`).
            single_table: single_pass && !has_window(&plan),
        };
        let keep = crate::plan_cache::keep(&plan, sql);
        if keep != Keep::No {
            self.plans
                .insert(sql, generation, &plan, shape, keep == Keep::Optimized);
        }
        let keep_optimized =
            (keep == Keep::Optimized).then(|| (Arc::clone(&self.plans), Arc::from(sql)));
        // The plan is a query (checked above), so the frame can take the state it was planned
        // on: `SessionContext::execute_logical_plan` would clone the whole state (function
        // registries included) once more.
        Ok(self.planned(
            DataFrame::new(state, plan),
            generation,
            shape,
            false,
            keep_optimized,
        ))
    }

    fn planned(
        &self,
        frame: DataFrame,
        generation: u64,
        shape: Shape,
        optimized: bool,
        keep_optimized: Option<(Arc<PlanCache>, Arc<str>)>,
    ) -> PlannedQuery {
        let schema = wire_schema(&frame.schema().as_arrow().clone().into());
        PlannedQuery {
            frame,
            schema,
            metrics: self.metrics.clone(),
            blocks: self.blocks.clone(),
            limits: Arc::clone(&self.limits),
            generation,
            shape,
            optimized,
            keep_optimized,
        }
    }

    /// Plans and runs `sql`: a convenience for callers that need no schema first.
    pub async fn execute(&self, sql: &str) -> Result<SendableRecordBatchStream, QueryError> {
        self.plan(sql).await?.execute().await
    }
}

/// A table as metadata calls (Flight SQL GetTables) list it.
#[derive(Debug, Clone)]
pub struct TableInfo {
    /// Catalog name.
    pub catalog: String,
    /// Schema name.
    pub schema: String,
    /// Table name.
    pub name: String,
    /// `TABLE` or `SYSTEM TABLE`.
    pub table_type: &'static str,
    /// Columns with their wire types.
    pub columns: SchemaRef,
}

/// The placeholders of a planned query in position order (`$1`, `$2`, …) with the types the
/// planner inferred for them.
fn parameter_types(frame: &DataFrame) -> Result<Vec<(String, Option<DataType>)>, QueryError> {
    let mut params: Vec<(String, Option<DataType>)> = frame
        .logical_plan()
        .get_parameter_types()?
        .into_iter()
        .collect();
    params.sort_by_key(|(name, _)| {
        name.strip_prefix('$')
            .and_then(|n| n.parse::<usize>().ok())
            .unwrap_or(usize::MAX)
    });
    Ok(params)
}

/// Numbers `?` placeholders `$1`, `$2`, … in the order they appear, so that clients using
/// JDBC/ODBC-style markers (JDBC, ADBC's qmark style) bind by position; DataFusion itself
/// reads `?` as one named parameter.
fn number_question_marks(statement: &mut DfStatement) {
    let DfStatement::Statement(statement) = statement else {
        return;
    };
    let mut n = 0;
    let _ = visit_expressions_mut(statement.as_mut(), |e| {
        if let SqlExpr::Value(v) = e
            && let SqlValue::Placeholder(p) = &mut v.value
            && p == "?"
        {
            n += 1;
            *p = format!("${n}");
        }
        ControlFlow::<()>::Continue(())
    });
}

/// Refuses anything but queries and metadata statements, naming what was refused.
fn check_read_only(statement: &DfStatement) -> Result<(), QueryError> {
    match statement {
        DfStatement::Statement(s) => check_sql_statement(s),
        DfStatement::Explain(e) => check_read_only(&e.statement),
        DfStatement::CreateExternalTable(_) => Err(denied("CREATE EXTERNAL TABLE")),
        DfStatement::CopyTo(_) => Err(denied("COPY")),
        DfStatement::Reset(_) => Err(denied("RESET")),
    }
}

fn check_sql_statement(statement: &SqlStatement) -> Result<(), QueryError> {
    match statement {
        SqlStatement::Query(_)
        | SqlStatement::ShowTables { .. }
        | SqlStatement::ShowColumns { .. }
        | SqlStatement::ShowVariable { .. }
        | SqlStatement::ShowFunctions { .. }
        | SqlStatement::ExplainTable { .. } => Ok(()),
        SqlStatement::Explain { statement, .. } => check_sql_statement(statement),
        other => Err(denied(&statement_kind(other))),
    }
}

fn denied(kind: &str) -> QueryError {
    QueryError::PermissionDenied(format!(
        "{kind} is not allowed: clients are read-only (SELECT, WITH, EXPLAIN, SHOW and DESCRIBE run)"
    ))
}

/// The leading keywords of a statement, e.g. `INSERT`, `CREATE TABLE`, `DROP VIEW`.
fn statement_kind(statement: &SqlStatement) -> String {
    let text = statement.to_string();
    let words: Vec<&str> = text.split_whitespace().take(4).collect();
    let take = match words.first().map(|w| w.to_ascii_uppercase()) {
        Some(w) if matches!(w.as_str(), "CREATE" | "DROP" | "ALTER" | "TRUNCATE") => {
            // Keep modifiers such as OR REPLACE / EXTERNAL / TEMPORARY with the object kind.
            words
                .iter()
                .position(|w| {
                    matches!(
                        w.to_ascii_uppercase().as_str(),
                        "TABLE" | "VIEW" | "SCHEMA" | "DATABASE" | "INDEX" | "FUNCTION" | "CATALOG"
                    )
                })
                .map_or(1, |p| p + 1)
        }
        _ => 1,
    };
    words[..take.min(words.len())]
        .join(" ")
        .to_ascii_uppercase()
}

/// The wire type of an in-engine type.
fn wire_type(t: &DataType) -> DataType {
    match t {
        DataType::Dictionary(_, value) => wire_type(value),
        DataType::Utf8View => DataType::Utf8,
        DataType::BinaryView => DataType::Binary,
        other => other.clone(),
    }
}

/// The schema clients see for a result of `schema`.
pub fn wire_schema(schema: &SchemaRef) -> SchemaRef {
    if !schema
        .fields()
        .iter()
        .any(|f| wire_type(f.data_type()) != *f.data_type())
    {
        return Arc::clone(schema);
    }
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| f.as_ref().clone().with_data_type(wire_type(f.data_type())))
        .collect();
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

/// Converts a result batch to `wire` (from [`wire_schema`]).
pub fn to_wire(
    batch: &RecordBatch,
    wire: &SchemaRef,
) -> Result<RecordBatch, arrow::error::ArrowError> {
    let columns = batch
        .columns()
        .iter()
        .zip(wire.fields())
        .map(|(c, f)| {
            if c.data_type() == f.data_type() {
                Ok(Arc::clone(c))
            } else {
                arrow::compute::cast(c, f.data_type())
            }
        })
        .collect::<Result<Vec<ArrayRef>, _>>()?;
    RecordBatch::try_new_with_options(
        Arc::clone(wire),
        columns,
        &arrow::array::RecordBatchOptions::new().with_row_count(Some(batch.num_rows())),
    )
}

#[cfg(test)]
mod tests;
