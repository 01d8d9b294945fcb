//! `arrowhead`: one binary for the replica (`serve`), its client (`query`) and offline tools
//! (`export`, `check`, `import`). See DESIGN.md §4 for the command contract.

mod commands;
mod config;
mod http;
mod memory;
mod sched;

#[global_allocator]
static ALLOCATOR: memory::ReplicaAllocator = memory::ReplicaAllocator;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

/// Arrowhead: a Prometheus-compatible metrics store with an Arrow head and SQL over Flight SQL.
#[derive(Debug, Parser)]
#[command(name = "arrowhead", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run one replica: scrape, store, answer SQL.
    Serve(ServeArgs),
    /// Run SQL on a replica over Flight SQL and print the result.
    Query(QueryArgs),
    /// Run SQL on a replica and stream the result into a Parquet file.
    Export(ExportArgs),
    /// Validate configuration or rule files without running anything.
    #[command(subcommand)]
    Check(CheckCommand),
    /// Backfill historic data into blocks of a data directory.
    #[command(subcommand)]
    Import(ImportCommand),
}

#[derive(Debug, Subcommand)]
enum ImportCommand {
    /// Write blocks from an OpenMetrics text file whose samples all have timestamps (as
    /// `promtool tsdb create-blocks-from openmetrics` does). Safe beside a running replica
    /// for data older than its head; importing a file twice changes nothing.
    Openmetrics(ImportArgs),
}

#[derive(Debug, clap::Args)]
struct ImportArgs {
    /// The OpenMetrics text file (ending with `# EOF`).
    file: PathBuf,
    /// The replica's data directory (storage.path).
    #[arg(long, env = "ARROWHEAD_DATA_DIR")]
    data_dir: PathBuf,
    /// Time span of each block written.
    #[arg(long, default_value = "2h")]
    block_duration: storage::units::Duration,
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// Configuration file (default: an embedded config that scrapes this replica every 5s).
    #[arg(long, env = "ARROWHEAD_CONFIG")]
    config: Option<PathBuf>,
    /// Data directory (overrides storage.path).
    #[arg(long, env = "ARROWHEAD_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// HTTP listen address (overrides server.http_listen).
    #[arg(long, env = "ARROWHEAD_HTTP_LISTEN")]
    http_listen: Option<String>,
    /// Flight SQL listen address (overrides server.flight_listen).
    #[arg(long, env = "ARROWHEAD_FLIGHT_LISTEN")]
    flight_listen: Option<String>,
}

/// Output formats of `query`.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum Format {
    /// An aligned text table.
    Table,
    /// CSV with a header line.
    Csv,
    /// A JSON array of row objects.
    Json,
}

/// How `query` and `export` reach a replica.
#[derive(Debug, clap::Args)]
struct Connection {
    /// Flight SQL endpoint; repeat for failover in order (a replica pair).
    #[arg(
        long = "endpoint",
        env = "ARROWHEAD_ENDPOINT",
        value_delimiter = ',',
        default_value = query::client::DEFAULT_ENDPOINT
    )]
    endpoints: Vec<String>,
    /// Bearer token for servers that require one.
    #[arg(long, env = "ARROWHEAD_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// CA certificate (PEM) to trust for `grpc+tls://` endpoints, instead of the system's.
    #[arg(long, env = "ARROWHEAD_TLS_CA")]
    tls_ca: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
struct QueryArgs {
    #[command(flatten)]
    connection: Connection,
    /// Output format.
    #[arg(long, value_enum, default_value = "table", env = "ARROWHEAD_FORMAT")]
    format: Format,
    /// The SQL statement.
    sql: String,
}

#[derive(Debug, clap::Args)]
struct ExportArgs {
    #[command(flatten)]
    connection: Connection,
    /// The Parquet file to write (replaced only once the whole result is in).
    #[arg(long)]
    output: PathBuf,
    /// The SQL statement.
    sql: String,
}

#[derive(Debug, Subcommand)]
enum CheckCommand {
    /// Validate a configuration file.
    Config {
        /// The file.
        file: PathBuf,
    },
    /// Validate rule files.
    Rules {
        /// The files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => commands::serve::run(args),
        Command::Query(args) => commands::query::run(args),
        Command::Export(args) => commands::export::run(args),
        Command::Check(check) => commands::check::run(check),
        Command::Import(ImportCommand::Openmetrics(args)) => commands::import::run(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
