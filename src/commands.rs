//! The subcommands of the `arrowhead` binary.

pub(crate) mod check;
pub(crate) mod export;
pub(crate) mod import;
pub(crate) mod query;
pub(crate) mod serve;
