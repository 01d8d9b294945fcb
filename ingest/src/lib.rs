//! Arrowhead ingest.
pub mod append;
pub mod config;
pub mod discovery;
pub mod exposition;
pub mod relabel;
pub mod remote_write;
pub mod scrape;
