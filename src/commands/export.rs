//! `arrowhead export [--endpoint URL]... --output FILE.parquet SQL`: stream a query's result
//! from a replica into a Parquet file.
//!
//! Batches are written as they arrive (memory stays at about one row group), compressed with
//! ZSTD and with page-level statistics, so DuckDB, pyarrow or Spark can prune on them. The
//! file is written under a temporary name beside the output and renamed into place only
//! when the whole result is in and synced: a failed or interrupted export leaves any earlier
//! file at that path as it was, and never a truncated one. The SQL is kept in the file's
//! key-value metadata (`arrowhead.sql`), so an export says where it came from.

use std::io::IsTerminal;
use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, bail};
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::{EnabledStatistics, WriterProperties};

use crate::ExportArgs;

/// ZSTD level: 3 is zstd's default, a good size/speed balance for metrics columns.
const ZSTD_LEVEL: i32 = 3;

pub(crate) fn run(args: ExportArgs) -> anyhow::Result<ExitCode> {
    let output = &args.output;
    if output.is_dir() {
        bail!("--output {} is a directory; name a file", output.display());
    }
    let dir = match output.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if !dir.is_dir() {
        bail!(
            "--output {}: directory {} does not exist",
            output.display(),
            dir.display()
        );
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let started = Instant::now();
    let (rows, bytes) = runtime.block_on(export(&args, dir))?;
    eprintln!(
        "exported {rows} rows ({bytes} bytes) to {} in {:.1}s",
        output.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}

/// Writes the result into a temporary file in `dir`, then renames it to the output.
async fn export(args: &ExportArgs, dir: &Path) -> anyhow::Result<(u64, u64)> {
    let mut stream = query::client::stream_with_failover(
        &args.connection.endpoints,
        args.connection.token.as_deref(),
        args.connection.tls_ca.as_deref(),
        &args.sql,
    )
    .await?;
    let file = tempfile::Builder::new()
        .prefix(".arrowhead-export-")
        .suffix(".parquet.tmp")
        .tempfile_in(dir)
        .with_context(|| format!("cannot create a file in {}", dir.display()))?;
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(ZSTD_LEVEL)?))
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_key_value_metadata(Some(vec![KeyValue::new(
            "arrowhead.sql".to_string(),
            args.sql.clone(),
        )]))
        .build();
    let bar = progress_bar();
    let mut writer: Option<ArrowWriter<std::fs::File>> = None;
    let mut rows = 0u64;
    while let Some(batch) = stream.batches.next().await {
        let batch = batch?;
        let w = match &mut writer {
            Some(w) => w,
            None => writer.insert(ArrowWriter::try_new(
                file.as_file().try_clone()?,
                batch.schema(),
                Some(props.clone()),
            )?),
        };
        w.write(&batch)
            .with_context(|| format!("cannot write {}", file.path().display()))?;
        rows += batch.num_rows() as u64;
        bar.set_position(rows);
        bar.set_message(indicatif::HumanBytes(w.bytes_written() as u64).to_string());
    }
    // An empty result still makes a file with the result's columns.
    let writer = match writer {
        Some(w) => w,
        None => ArrowWriter::try_new(file.as_file().try_clone()?, stream.schema, Some(props))?,
    };
    writer
        .close()
        .with_context(|| format!("cannot finish {}", file.path().display()))?;
    bar.finish_and_clear();
    file.as_file()
        .sync_all()
        .with_context(|| format!("cannot sync {}", file.path().display()))?;
    let bytes = file.as_file().metadata()?.len();
    file.persist(&args.output)
        .with_context(|| format!("cannot rename into {}", args.output.display()))?;
    Ok((rows, bytes))
}

/// A spinner with rows and bytes on stderr when it is a terminal; nothing otherwise.
fn progress_bar() -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new_spinner().with_message("0 B");
    bar.set_draw_target(ProgressDrawTarget::stderr());
    if let Ok(style) =
        ProgressStyle::with_template("{spinner} exporting: {human_pos} rows, {msg} written")
    {
        bar.set_style(style);
    }
    bar.enable_steady_tick(std::time::Duration::from_millis(200));
    bar
}
