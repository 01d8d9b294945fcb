//! Helpers shared by this crate's unit tests.

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Float64Type, TimestampMillisecondType};

use crate::head::{Appender, Head};

/// Appends `samples` to the series `metric{labels}` in one commit.
pub(crate) fn append(head: &Head, metric: &str, labels: &[(&str, &str)], samples: &[(i64, f64)]) {
    let mut app = head.appender();
    let r = app.series(metric, labels).unwrap();
    for &(t, v) in samples {
        app.append(r, t, v);
    }
    app.commit().unwrap();
}

/// Rows as (labels rendered "a=1,b=2", timestamp, value), label NULLs left out, in batch
/// order.
pub(crate) fn rendered_rows(batches: &[RecordBatch]) -> Vec<(String, i64, f64)> {
    let mut out = Vec::new();
    for b in batches {
        let schema = b.schema();
        let ts = b
            .column_by_name("timestamp")
            .unwrap()
            .as_primitive::<TimestampMillisecondType>();
        let vs = b
            .column_by_name("value")
            .unwrap()
            .as_primitive::<Float64Type>();
        let labels: Vec<(String, ArrayRef)> = schema
            .fields()
            .iter()
            .zip(b.columns())
            .filter(|(f, _)| f.name() != "timestamp" && f.name() != "value")
            .map(|(f, c)| (f.name().clone(), cast(c, &DataType::Utf8).unwrap()))
            .collect();
        for i in 0..b.num_rows() {
            let l: Vec<String> = labels
                .iter()
                .filter(|(_, c)| c.is_valid(i))
                .map(|(n, c)| format!("{n}={}", c.as_string::<i32>().value(i)))
                .collect();
            out.push((l.join(","), ts.value(i), vs.value(i)));
        }
    }
    out
}
