//! End-to-end tests: the real `arrowhead` binary on free loopback ports with a temporary data
//! directory, real targets (Debian's `prometheus-node-exporter`), and real clients (the
//! project's Flight SQL client and CLI, and Python's ADBC Flight SQL driver).
//!
//! `.ci/run` installs the external pieces. Locations can be overridden with
//! `ARROWHEAD_NODE_EXPORTER` and `ARROWHEAD_TEST_PYTHON`.

mod support;

mod adbc;
mod cli;
mod durability;
mod export;
mod flight_security;
mod full_disk;
mod import;
mod isolation;
mod lifecycle;
mod object_store;
mod remote_write;
mod scrape;
