//! Arrowhead ingest.
pub mod append;
pub mod config;
pub mod exposition;
pub mod scrape;
