//! Arrowhead query: SQL over the head with DataFusion, served by Flight SQL.
pub mod block_scan;
pub mod catalog;
pub mod engine;
pub mod functions;
pub mod kept_plans;
pub mod plan_cache;
pub mod plan_rules;
pub mod run_aggregate;
pub mod scan;
pub mod system;

pub use engine::{PlannedQuery, QueryConfig, QueryEngine, QueryError, QueryMetrics};
pub mod client;
pub mod flight_sql;
