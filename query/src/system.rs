//! The `system` schema: read-only tables describing the replica itself (DESIGN.md §3).
//!
//! Each table is materialised when a query resolves it, from the live state of its owner:
//! `system.targets` from the scrape manager (through [`TargetsSource`], which the binary
//! implements over ingest, since this crate never depends on ingest) and `system.series` from
//! the head (`system.metrics` joins each table with its family's `# TYPE`/`# HELP`/`# UNIT`),
//! `system.blocks` from the block set.
//! They are small: one row per target, table or series.

use std::fmt::Debug;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, Float64Builder, RecordBatch, StringBuilder, TimestampMillisecondBuilder,
    UInt32Builder, UInt64Builder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use async_trait::async_trait;
use datafusion::catalog::{MemTable, SchemaProvider, TableProvider};
use datafusion::common::{DataFusionError, Result};
use storage::Head;
use storage::block::Blocks;
use storage::head::timestamp_type;

/// One row of `system.targets`.
#[derive(Debug, Clone, PartialEq)]
pub struct TargetRow {
    /// The `job` label.
    pub job: String,
    /// The `instance` label.
    pub instance: String,
    /// Scrape URL.
    pub url: String,
    /// `up`, `down` or `unknown`.
    pub health: String,
    /// Start of the last scrape (ms since the epoch).
    pub last_scrape: Option<i64>,
    /// Duration of the last scrape in seconds.
    pub last_duration_seconds: Option<f64>,
    /// Error of the last scrape, if it failed.
    pub last_error: Option<String>,
    /// Samples in the last successful scrape.
    pub samples: u64,
}

/// Where `system.targets` comes from. The binary implements it over the scrape manager.
pub trait TargetsSource: Debug + Send + Sync {
    /// The current targets.
    fn targets(&self) -> Vec<TargetRow>;
}

/// A source with no targets, for tests and tools without ingest.
#[derive(Debug, Default)]
pub struct NoTargets;

impl TargetsSource for NoTargets {
    fn targets(&self) -> Vec<TargetRow> {
        Vec::new()
    }
}

/// The `system` schema provider.
#[derive(Debug)]
pub struct SystemSchema {
    head: Arc<Head>,
    blocks: Option<Arc<Blocks>>,
    targets: Arc<dyn TargetsSource>,
}

const TABLES: [&str; 6] = ["alerts", "blocks", "metrics", "rules", "series", "targets"];

impl SystemSchema {
    /// A schema over the head, the blocks (if any) and a targets source.
    pub fn new(
        head: Arc<Head>,
        blocks: Option<Arc<Blocks>>,
        targets: Arc<dyn TargetsSource>,
    ) -> Self {
        Self {
            head,
            blocks,
            targets,
        }
    }

    /// One row per block served (`state` = `persisted` on the local disk, `remote` in the
    /// object store) and per block moved aside (`corrupted`, its other columns NULL).
    fn blocks_batch(&self) -> Result<RecordBatch> {
        let mut id = StringBuilder::new();
        let mut min = TimestampMillisecondBuilder::new().with_timezone("UTC");
        let mut max = TimestampMillisecondBuilder::new().with_timezone("UTC");
        let mut rows = UInt64Builder::new();
        let mut bytes = UInt64Builder::new();
        let mut level = UInt32Builder::new();
        let mut state = StringBuilder::new();
        if let Some(blocks) = &self.blocks {
            for b in blocks.view().blocks {
                id.append_value(&b.meta.id);
                min.append_value(b.meta.min_timestamp);
                max.append_value(b.meta.max_timestamp);
                rows.append_value(b.meta.rows);
                bytes.append_value(b.meta.bytes);
                level.append_value(b.meta.level);
                state.append_value(if b.remote { "remote" } else { "persisted" });
            }
            for (name, _) in blocks.corrupted() {
                id.append_value(name);
                min.append_null();
                max.append_null();
                rows.append_null();
                bytes.append_null();
                level.append_null();
                state.append_value("corrupted");
            }
        }
        let columns: Vec<ArrayRef> = vec![
            Arc::new(id.finish()),
            Arc::new(min.finish()),
            Arc::new(max.finish()),
            Arc::new(rows.finish()),
            Arc::new(bytes.finish()),
            Arc::new(level.finish()),
            Arc::new(state.finish()),
        ];
        Ok(RecordBatch::try_new(blocks_schema(), columns)?)
    }

    fn targets_batch(&self) -> Result<RecordBatch> {
        let rows = self.targets.targets();
        let mut job = StringBuilder::new();
        let mut instance = StringBuilder::new();
        let mut url = StringBuilder::new();
        let mut health = StringBuilder::new();
        let mut last_scrape = TimestampMillisecondBuilder::new().with_timezone("UTC");
        let mut duration = Float64Builder::new();
        let mut error = StringBuilder::new();
        let mut samples = UInt64Builder::new();
        for r in rows {
            job.append_value(&r.job);
            instance.append_value(&r.instance);
            url.append_value(&r.url);
            health.append_value(&r.health);
            last_scrape.append_option(r.last_scrape);
            duration.append_option(r.last_duration_seconds);
            error.append_option(r.last_error);
            samples.append_value(r.samples);
        }
        let columns: Vec<ArrayRef> = vec![
            Arc::new(job.finish()),
            Arc::new(instance.finish()),
            Arc::new(url.finish()),
            Arc::new(health.finish()),
            Arc::new(last_scrape.finish()),
            Arc::new(duration.finish()),
            Arc::new(error.finish()),
            Arc::new(samples.finish()),
        ];
        Ok(RecordBatch::try_new(targets_schema(), columns)?)
    }

    fn metrics_batch(&self) -> Result<RecordBatch> {
        let mut metric = StringBuilder::new();
        let mut kind = StringBuilder::new();
        let mut help = StringBuilder::new();
        let mut unit = StringBuilder::new();
        let metadata = self.head.metadata();
        for name in crate::catalog::metric_names(&self.head, self.blocks.as_deref()) {
            let m = metadata.for_table(&name).unwrap_or_default();
            metric.append_value(&name);
            kind.append_value(if m.kind.is_empty() {
                "unknown"
            } else {
                &m.kind
            });
            help.append_value(&m.help);
            unit.append_value(&m.unit);
        }
        let columns: Vec<ArrayRef> = vec![
            Arc::new(metric.finish()),
            Arc::new(kind.finish()),
            Arc::new(help.finish()),
            Arc::new(unit.finish()),
        ];
        Ok(RecordBatch::try_new(metrics_schema(), columns)?)
    }

    fn series_batch(&self) -> Result<RecordBatch> {
        let mut metric = StringBuilder::new();
        let mut labels = StringBuilder::new();
        let mut first = TimestampMillisecondBuilder::new().with_timezone("UTC");
        let mut last = TimestampMillisecondBuilder::new().with_timezone("UTC");
        for m in self.head.all_metrics() {
            for s in m.series() {
                metric.append_value(m.name());
                labels.append_value(s.labels.to_json());
                // Series created but never given a sample have no times.
                let has_samples = s.first_timestamp <= s.last_timestamp;
                first.append_option(has_samples.then_some(s.first_timestamp));
                last.append_option(has_samples.then_some(s.last_timestamp));
            }
        }
        let columns: Vec<ArrayRef> = vec![
            Arc::new(metric.finish()),
            Arc::new(labels.finish()),
            Arc::new(first.finish()),
            Arc::new(last.finish()),
        ];
        Ok(RecordBatch::try_new(series_schema(), columns)?)
    }
}

fn rules_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("group_name", DataType::Utf8, false),
        Field::new("name", DataType::Utf8, false),
        Field::new("kind", DataType::Utf8, false),
        Field::new("sql", DataType::Utf8, false),
        Field::new("health", DataType::Utf8, false),
        Field::new("last_error", DataType::Utf8, true),
        Field::new("last_evaluation", timestamp_type(), true),
        Field::new("evaluation_seconds", DataType::Float64, true),
    ]))
}

fn alerts_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("name", DataType::Utf8, false),
        Field::new("labels", DataType::Utf8, false),
        Field::new("state", DataType::Utf8, false),
        Field::new("active_since", timestamp_type(), true),
        Field::new("value", DataType::Float64, true),
    ]))
}

fn blocks_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Utf8, false),
        Field::new("min_timestamp", timestamp_type(), true),
        Field::new("max_timestamp", timestamp_type(), true),
        Field::new("rows", DataType::UInt64, true),
        Field::new("bytes", DataType::UInt64, true),
        Field::new("level", DataType::UInt32, true),
        Field::new("state", DataType::Utf8, false),
    ]))
}

fn targets_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("job", DataType::Utf8, false),
        Field::new("instance", DataType::Utf8, false),
        Field::new("url", DataType::Utf8, false),
        Field::new("health", DataType::Utf8, false),
        Field::new("last_scrape", timestamp_type(), true),
        Field::new("last_duration_seconds", DataType::Float64, true),
        Field::new("last_error", DataType::Utf8, true),
        Field::new("samples", DataType::UInt64, false),
    ]))
}

fn metrics_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("metric", DataType::Utf8, false),
        Field::new("type", DataType::Utf8, false),
        Field::new("help", DataType::Utf8, false),
        Field::new("unit", DataType::Utf8, false),
    ]))
}

fn series_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("metric", DataType::Utf8, false),
        Field::new("labels", DataType::Utf8, false),
        Field::new("first_timestamp", timestamp_type(), true),
        Field::new("last_timestamp", timestamp_type(), true),
    ]))
}

#[async_trait]
impl SchemaProvider for SystemSchema {
    fn table_names(&self) -> Vec<String> {
        TABLES.iter().map(|t| t.to_string()).collect()
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>, DataFusionError> {
        let batch = match name {
            "targets" => self.targets_batch()?,
            "blocks" => self.blocks_batch()?,
            "series" => self.series_batch()?,
            "metrics" => self.metrics_batch()?,
            // The rule engine (a later version) fills these; until then they exist, empty,
            // with their final columns, so dashboards and tools can be written against them.
            "rules" => RecordBatch::new_empty(rules_schema()),
            "alerts" => RecordBatch::new_empty(alerts_schema()),
            _ => return Ok(None),
        };
        let table = MemTable::try_new(batch.schema(), vec![vec![batch]])?;
        Ok(Some(Arc::new(table)))
    }

    fn table_exist(&self, name: &str) -> bool {
        TABLES.contains(&name)
    }
}
