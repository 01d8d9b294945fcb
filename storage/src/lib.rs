//! Arrowhead storage: the series model and the in-memory Arrow head block.
//!
//! ```text
//! ingest / rules ──Appender──► head::Head ──MetricHead::snapshot()──► query (DataFusion scan)
//! ```
//!
//! * [`labels`] — label sets and name rules.
//! * [`metadata`] — `# TYPE` / `# HELP` / `# UNIT` per metric family.
//! * [`head`] — per-metric Arrow tables in memory: append, snapshot, read with pushdown.
//! * [`wal`] — the write-ahead log every head commit goes through, and its replay.
//! * [`block`] — the head cut into immutable Parquet blocks, and the set of blocks served.
//! * [`data_dir`] — the locked data directory a replica owns.
//! * [`config`], [`units`] — the `storage:` config section and Prometheus duration/size syntax.
//!
//! This crate knows nothing of HTTP, SQL or gRPC; ingest and query depend on it, never the
//! other way round.

pub mod block;
pub mod config;
pub mod data_dir;
pub mod head;
pub mod labels;
pub mod metadata;
#[cfg(test)]
mod testing;
pub mod units;
pub mod wal;

pub use config::StorageConfig;
pub use data_dir::{DataDir, DataDirError};
pub use head::{
    AppendError, AppendStats, Appender, Head, HeadConfig, HeadMetrics, LabelMatcher, MatchOp,
    MetricSnapshot, ReplayStats, SeriesRef, TimeRange,
};
pub use labels::Labels;
pub use metadata::{MetadataStore, MetricMetadata};
