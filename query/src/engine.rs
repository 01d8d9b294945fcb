//! The query engine: one DataFusion setup shared by every client query.
//!
//! ```text
//! SQL ─parse─► statement ─read-only check─► logical plan ─verify (no DDL/DML)─► DataFrame
//!                                                                              │ execute
//!                       wire conversion (dictionary → Utf8, views → Utf8) ◄────┘
//! ```
//!
//! Read-only is enforced twice: on the parsed statement, which gives a message naming the
//! statement kind, and on the logical plan with DataFusion's `SQLOptions` (no DDL, no DML, no
//! session statements), which also catches DDL hidden in queries such as `SELECT ... INTO`.
//!
//! Label columns are dictionary-encoded inside the engine (cheap filters and group-bys); every
//! result leaves as plain `Utf8`, the wire type of DESIGN.md §3. String views, which some
//! DataFusion functions produce, leave as `Utf8` too, so clients see one string type.

use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::DataFusionError;
use datafusion::datasource::physical_plan::FileScanConfig;
use datafusion::datasource::source::DataSourceExec;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::prelude::{DataFrame, SQLOptions, SessionConfig, SessionContext};
use datafusion::sql::parser::Statement as DfStatement;
use datafusion::sql::sqlparser::ast::Statement as SqlStatement;
use futures::StreamExt;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};
use storage::Head;
use storage::block::Blocks;
use storage::units::{ByteSize, Duration};

use crate::catalog::{ArrowheadCatalog, CATALOG, METRICS_SCHEMA};
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
}

impl Default for QueryConfig {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(30),
            memory_limit: ByteSize(1 << 30),
            max_concurrent: 16,
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
}

impl std::fmt::Debug for QueryEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueryEngine")
            .field("session_id", &self.ctx.session_id())
            .finish_non_exhaustive()
    }
}

/// The files a plan reads through DataFusion's Parquet source, as it names them.
fn scanned_files(plan: &Arc<dyn ExecutionPlan>) -> Arc<Vec<String>> {
    fn walk(plan: &Arc<dyn ExecutionPlan>, out: &mut Vec<String>) {
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
#[derive(Debug)]
pub struct PlannedQuery {
    frame: DataFrame,
    schema: SchemaRef,
    metrics: QueryMetrics,
    blocks: Option<Arc<Blocks>>,
}

impl PlannedQuery {
    /// The result schema on the wire.
    pub fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    /// Runs the query; batches arrive already converted to wire types.
    pub async fn execute(self) -> Result<SendableRecordBatchStream, QueryError> {
        self.metrics.executed.inc();
        let errors = self.metrics.errors.clone();
        let task = Arc::new(self.frame.task_ctx());
        let stream = match self.frame.create_physical_plan().await {
            Ok(plan) => {
                let files = scanned_files(&plan);
                datafusion::physical_plan::execute_stream(plan, task).map(|s| (s, files))
            }
            Err(e) => Err(e),
        };
        let (stream, files) = match stream {
            Ok(s) => s,
            Err(e) => {
                errors.inc();
                return Err(e.into());
            }
        };
        let schema = Arc::clone(&self.schema);
        let blocks = self.blocks;
        let converted = stream.then(move |batch| {
            let (schema, errors, blocks, files) = (
                Arc::clone(&schema),
                errors.clone(),
                blocks.clone(),
                Arc::clone(&files),
            );
            async move {
                let converted = batch.and_then(|b| Ok(to_wire(&b, &schema)?));
                let Err(e) = converted else {
                    return converted;
                };
                errors.inc();
                Err(set_aside_unreadable(e, blocks, files).await)
            }
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            Arc::clone(&self.schema),
            converted,
        )))
    }
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
        let mut session = SessionConfig::new()
            .with_information_schema(true)
            .with_create_default_catalog_and_schema(false)
            .with_default_catalog_and_schema(CATALOG, METRICS_SCHEMA);
        let options = session.options_mut();
        // Identifiers keep their case: `SELECT * FROM ALERTS` finds ALERTS (DESIGN.md §3).
        options.sql_parser.enable_ident_normalization = false;
        options.sql_parser.map_string_types_to_utf8view = false;
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_limit(config.memory_limit.bytes() as usize, 1.0)
            .build_arc()?;
        let state = SessionStateBuilder::new()
            .with_config(session)
            .with_runtime_env(runtime)
            .with_default_features()
            .build();
        let ctx = SessionContext::new_with_state(state);
        crate::functions::register(&ctx);
        if let Some(remote) = blocks.as_ref().and_then(|b| b.remote()) {
            ctx.runtime_env()
                .register_object_store(remote.root(), remote.store());
        }
        ctx.register_catalog(
            CATALOG,
            Arc::new(ArrowheadCatalog::new(head, blocks.clone(), targets)),
        );
        Ok(Self {
            ctx,
            metrics: QueryMetrics::default(),
            blocks,
        })
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

    async fn plan_inner(&self, sql: &str) -> Result<PlannedQuery, QueryError> {
        let state = self.ctx.state();
        let dialect = state.config().options().sql_parser.dialect;
        let statement = state.sql_to_statement(sql, &dialect)?;
        check_read_only(&statement)?;
        let plan = state.statement_to_plan(statement).await?;
        SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false)
            .verify_plan(&plan)
            .map_err(|e| QueryError::PermissionDenied(format!("{e}; clients are read-only")))?;
        let frame = self.ctx.execute_logical_plan(plan).await?;
        let schema = wire_schema(&frame.schema().as_arrow().clone().into());
        Ok(PlannedQuery {
            frame,
            schema,
            metrics: self.metrics.clone(),
            blocks: self.blocks.clone(),
        })
    }

    /// Plans and runs `sql`: a convenience for callers that need no schema first.
    pub async fn execute(&self, sql: &str) -> Result<SendableRecordBatchStream, QueryError> {
        self.plan(sql).await?.execute().await
    }
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
