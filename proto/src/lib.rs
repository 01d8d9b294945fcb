//! Protobuf messages Arrowhead speaks, generated from the `.proto` files beside this crate
//! (the source of truth) by `cargo run -p arrowhead-proto-gen`, and checked in.
//!
//! * [`prometheus`] — Prometheus remote write 1.0 (`prometheus/remote.proto`): the body of
//!   `POST /api/v1/write`, snappy-compressed.
//!
//! This crate depends on no crate of ours.

/// Prometheus remote write 1.0.
#[allow(
    missing_docs,
    unreachable_pub,
    clippy::all,
    clippy::clone_on_ref_ptr,
    rustdoc::broken_intra_doc_links
)]
pub mod prometheus {
    include!("gen/prometheus.rs");
}
