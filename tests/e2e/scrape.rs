//! Scraping a real node exporter and reading it back over Flight SQL.

use std::time::Duration;

use arrow::array::{Array, AsArray};
use arrow::datatypes::{DataType, Float64Type, Int64Type};

use crate::support::{NodeExporter, Replica, free_port};

#[tokio::test]
async fn node_exporter_is_scraped_and_queryable_over_flight_sql() {
    let exporter = NodeExporter::start().await;
    let refused = free_port();
    let config = format!(
        "global:\n  scrape_interval: 1s\n\
         scrape_configs:\n\
         \x20 - job_name: node\n    static_configs: [{{targets: ['{}']}}]\n\
         \x20 - job_name: dead\n    static_configs: [{{targets: ['127.0.0.1:{refused}']}}]\n",
        exporter.address
    );
    let replica = Replica::start(Some(&config)).await;

    // Two scrapes of the node exporter.
    replica
        .wait_for_count(
            "SELECT count(*) FROM up WHERE job = 'node'",
            2,
            Duration::from_secs(30),
        )
        .await;

    let (_, b) = replica
        .query("SELECT count(*) FROM node_cpu_seconds_total")
        .await;
    assert!(b[0].column(0).as_primitive::<Int64Type>().value(0) > 0);

    let (schema, _) = replica
        .query("SELECT * FROM node_cpu_seconds_total LIMIT 1")
        .await;
    for label in ["cpu", "mode", "job", "instance"] {
        let field = schema
            .field_with_name(label)
            .unwrap_or_else(|_| panic!("no column {label}"));
        assert_eq!(
            field.data_type(),
            &DataType::Utf8,
            "labels are plain Utf8 on the wire"
        );
    }

    let (_, b) = replica
        .query("SELECT last_value(value ORDER BY timestamp) FROM up WHERE job = 'node'")
        .await;
    assert_eq!(b[0].column(0).as_primitive::<Float64Type>().value(0), 1.0);

    let (_, b) = replica
        .query("SELECT instance FROM node_cpu_seconds_total WHERE job = 'node' LIMIT 1")
        .await;
    assert_eq!(
        b[0].column(0).as_string::<i32>().value(0),
        exporter.address.to_string()
    );

    // The refusing target: up = 0 and its error in system.targets.
    let (_, b) = replica
        .query("SELECT max(value) FROM up WHERE job = 'dead'")
        .await;
    assert_eq!(b[0].column(0).as_primitive::<Float64Type>().value(0), 0.0);
    let (_, b) = replica
        .query("SELECT health, last_error, url FROM system.targets WHERE job = 'dead'")
        .await;
    assert_eq!(b[0].column(0).as_string::<i32>().value(0), "down");
    let error = b[0].column(1).as_string::<i32>();
    assert!(
        error.is_valid(0) && error.value(0).contains("Connection refused"),
        "{:?}",
        error.value(0)
    );
    let (_, b) = replica
        .query("SELECT health, last_error, samples FROM system.targets WHERE job = 'node'")
        .await;
    assert_eq!(b[0].column(0).as_string::<i32>().value(0), "up");
    assert!(b[0].column(1).is_null(0));
    assert!(
        b[0].column(2)
            .as_primitive::<arrow::datatypes::UInt64Type>()
            .value(0)
            > 100
    );

    // Synthetic series are written for every scrape.
    for metric in [
        "scrape_duration_seconds",
        "scrape_samples_scraped",
        "scrape_series_added",
    ] {
        let (_, b) = replica
            .query(&format!("SELECT count(*) FROM {metric} WHERE job = 'node'"))
            .await;
        assert!(
            b[0].column(0).as_primitive::<Int64Type>().value(0) >= 2,
            "{metric}"
        );
    }
}

#[tokio::test]
async fn the_embedded_default_scrapes_the_replica_itself() {
    let replica = Replica::start(None).await;
    replica
        .wait_for_count(
            "SELECT count(*) FROM up WHERE job = 'arrowhead'",
            1,
            Duration::from_secs(20),
        )
        .await;
    let (_, b) = replica
        .query("SELECT value FROM up WHERE job = 'arrowhead'")
        .await;
    assert_eq!(b[0].column(0).as_primitive::<Float64Type>().value(0), 1.0);
    let (_, b) = replica
        .query("SELECT count(*) FROM arrowhead_head_samples_appended_total")
        .await;
    assert!(b[0].column(0).as_primitive::<Int64Type>().value(0) >= 1);
}
