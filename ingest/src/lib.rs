//! Arrowhead ingest.
pub mod exposition;
pub mod append;
pub mod config;
pub mod scrape;
