//! `arrowhead query`: run SQL on a replica (with failover across a pair) and print the result.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;
use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;

use crate::{Format, QueryArgs};

pub(crate) fn run(args: QueryArgs) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let (schema, batches) = runtime.block_on(query::client::query_with_failover(
        &args.connection.endpoints,
        args.connection.token.as_deref(),
        args.connection.tls_ca.as_deref(),
        &args.sql,
    ))?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    print(&mut out, args.format, &schema, &batches)?;
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// Writes a result in the chosen format.
pub(crate) fn print(
    out: &mut dyn Write,
    format: Format,
    schema: &SchemaRef,
    batches: &[RecordBatch],
) -> anyhow::Result<()> {
    match format {
        Format::Table => {
            let table = arrow::util::pretty::pretty_format_batches_with_schema(
                std::sync::Arc::clone(schema),
                batches,
            )?;
            writeln!(out, "{table}")?;
        }
        Format::Csv => {
            let mut writer = arrow::csv::WriterBuilder::new()
                .with_header(true)
                .with_timestamp_tz_format("%Y-%m-%dT%H:%M:%S%.3fZ".to_string())
                .build(out);
            // The header is written with the first batch, even an empty one.
            writer.write(&RecordBatch::new_empty(std::sync::Arc::clone(schema)))?;
            for b in batches {
                writer.write(b)?;
            }
        }
        Format::Json => {
            let mut writer = arrow::json::ArrayWriter::new(Vec::new());
            let refs: Vec<&RecordBatch> = batches.iter().collect();
            writer.write_batches(&refs)?;
            writer.finish()?;
            let mut bytes = writer.into_inner();
            if bytes.is_empty() {
                bytes = b"[]".to_vec();
            }
            out.write_all(&bytes)?;
            writeln!(out)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Float64Array, StringArray, TimestampMillisecondArray};
    use arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    fn result() -> (SchemaRef, Vec<RecordBatch>) {
        let schema = Arc::new(Schema::new(vec![
            Field::new("job", DataType::Utf8, true),
            Field::new("timestamp", storage::head::timestamp_type(), false),
            Field::new("value", DataType::Float64, false),
        ]));
        let batch = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![
                Arc::new(StringArray::from(vec!["node", "a,b"])),
                Arc::new(
                    TimestampMillisecondArray::from(vec![1_700_000_000_123, 0])
                        .with_timezone("UTC"),
                ),
                Arc::new(Float64Array::from(vec![1.0, 0.5])),
            ],
        )
        .unwrap();
        (schema, vec![batch])
    }

    fn render(format: Format, empty: bool) -> String {
        let (schema, batches) = result();
        let batches = if empty { vec![] } else { batches };
        let mut out = Vec::new();
        print(&mut out, format, &schema, &batches).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn csv_has_a_header_then_rows() {
        assert_eq!(
            render(Format::Csv, false),
            "job,timestamp,value\nnode,2023-11-14T22:13:20.123Z,1.0\n\"a,b\",1970-01-01T00:00:00.000Z,0.5\n"
        );
        assert_eq!(render(Format::Csv, true), "job,timestamp,value\n");
    }

    #[test]
    fn json_is_an_array_of_objects() {
        let json: serde_json::Value = serde_json::from_str(&render(Format::Json, false)).unwrap();
        assert_eq!(json[0]["job"], "node");
        assert_eq!(json[1]["value"], 0.5);
        assert_eq!(render(Format::Json, true).trim(), "[]");
    }

    #[test]
    fn table_shows_headers_even_when_empty() {
        let t = render(Format::Table, false);
        assert!(t.contains("| job  | timestamp"), "{t}");
        assert!(t.contains("| node |"), "{t}");
        assert!(render(Format::Table, true).contains("| job | timestamp | value |"));
    }
}
