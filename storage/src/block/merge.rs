//! One metric's rows in block order, with duplicates resolved: the step shared by compaction
//! (the metric's files of several blocks) and import (samples collected from a file).
//!
//! Block order is the order of `block.md`: label values in column order (a missing label
//! first), then timestamp. Of several rows with the same series and timestamp the last one
//! given wins: callers pass batches oldest write first, so a newer block overrides an older
//! one and a later line of an imported file overrides an earlier one.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, Float64Array, RecordBatch, StringArray, TimestampMillisecondArray,
    UInt32Array, new_null_array,
};
use arrow::compute::{cast, concat_batches, take, take_record_batch};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::error::ArrowError;
use arrow::row::{RowConverter, SortField};

use crate::head::{TIMESTAMP_COLUMN, VALUE_COLUMN, label_column_name, label_type, timestamp_type};

/// The table schema of a metric with these label columns (sorted by name): one nullable
/// label column each, then `timestamp` and `value`. Blocks, merges and query tables share it.
pub fn metric_schema(labels: &[String]) -> SchemaRef {
    let mut fields: Vec<Field> = labels
        .iter()
        .map(|l| Field::new(l, label_type(), true))
        .collect();
    fields.push(Field::new(TIMESTAMP_COLUMN, timestamp_type(), false));
    fields.push(Field::new(VALUE_COLUMN, DataType::Float64, false));
    Arc::new(Schema::new(fields))
}

/// `batch` with exactly the columns of `schema`: columns it lacks are NULL, others are cast
/// to the schema's type (a file written by another tool may hold plain strings).
fn widen(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch, ArrowError> {
    let columns = schema
        .fields()
        .iter()
        .map(|f| match batch.column_by_name(f.name()) {
            Some(c) if c.data_type() == f.data_type() => Ok(Arc::clone(c)),
            Some(c) => cast(c, f.data_type()),
            None => Ok(new_null_array(f.data_type(), batch.num_rows())),
        })
        .collect::<Result<Vec<_>, _>>()?;
    RecordBatch::try_new(Arc::clone(schema), columns)
}

/// The rows of `batches` (oldest write first) sorted into block order, one row per series
/// and timestamp (the last written). The label columns are the union of the batches' label
/// columns. `None` when there are no rows.
pub(crate) fn sort_dedup(batches: &[RecordBatch]) -> Result<Option<RecordBatch>, ArrowError> {
    let mut labels: Vec<String> = batches
        .iter()
        .flat_map(|b| {
            b.schema()
                .fields()
                .iter()
                .map(|f| f.name().clone())
                .collect::<Vec<_>>()
        })
        .filter(|n| n != TIMESTAMP_COLUMN && n != VALUE_COLUMN)
        .collect();
    labels.sort();
    labels.dedup();
    let schema = metric_schema(&labels);
    let widened = batches
        .iter()
        .map(|b| widen(b, &schema))
        .collect::<Result<Vec<_>, _>>()?;
    let all = concat_batches(&schema, &widened)?;
    let n = all.num_rows();
    if n == 0 {
        return Ok(None);
    }
    // Labels then timestamp: the sort key, compared as bytes.
    let key: Vec<ArrayRef> = all.columns()[..=labels.len()].to_vec();
    let converter = RowConverter::new(
        key.iter()
            .map(|c| SortField::new(c.data_type().clone()))
            .collect(),
    )?;
    let rows = converter.convert_columns(&key)?;
    let in_order = (1..n).all(|i| rows.row(i - 1) < rows.row(i));
    if in_order {
        return Ok(Some(all));
    }
    let mut order: Vec<u32> = (0..n as u32).collect();
    // A stable sort: rows with equal keys stay in write order, so the last one is the newest.
    order.sort_by(|&a, &b| rows.row(a as usize).cmp(&rows.row(b as usize)));
    let keep: Vec<u32> = order
        .iter()
        .enumerate()
        .filter(|&(i, &idx)| {
            order
                .get(i + 1)
                .is_none_or(|&next| rows.row(next as usize) != rows.row(idx as usize))
        })
        .map(|(_, &idx)| idx)
        .collect();
    take_record_batch(&all, &UInt32Array::from(keep)).map(Some)
}

/// Collects one metric's samples in the order they are read, then sorts them into block
/// order. Used by import, where a file lists samples family by family rather than by time.
#[derive(Debug, Default)]
pub struct MetricBuilder {
    /// Series index by label pairs (column name, value), sorted by column name.
    index: HashMap<Vec<(String, String)>, u32>,
    series: Vec<Vec<(String, String)>>,
    rows: Vec<u32>,
    timestamps: Vec<i64>,
    values: Vec<f64>,
}

impl MetricBuilder {
    /// The index of the series with these labels (`__name__` left out), added if new.
    pub fn series<'a>(&mut self, labels: impl IntoIterator<Item = (&'a str, &'a str)>) -> u32 {
        let mut key: Vec<(String, String)> = labels
            .into_iter()
            .filter(|(n, _)| *n != "__name__")
            .map(|(n, v)| (label_column_name(n), v.to_string()))
            .collect();
        key.sort();
        if let Some(&i) = self.index.get(&key) {
            return i;
        }
        let i = self.series.len() as u32;
        self.series.push(key.clone());
        self.index.insert(key, i);
        i
    }

    /// Adds a sample to a series returned by [`MetricBuilder::series`].
    pub fn push(&mut self, series: u32, timestamp: i64, value: f64) {
        self.rows.push(series);
        self.timestamps.push(timestamp);
        self.values.push(value);
    }

    /// Samples added.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// True when no sample was added.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The samples as one batch in block order, duplicates resolved (the last added wins).
    pub fn finish(self) -> Result<Option<RecordBatch>, ArrowError> {
        sort_dedup(&[self.unsorted()?])
    }

    /// The samples as added, in one batch.
    fn unsorted(&self) -> Result<RecordBatch, ArrowError> {
        let mut names: Vec<&str> = self
            .series
            .iter()
            .flat_map(|s| s.iter().map(|(n, _)| n.as_str()))
            .collect();
        names.sort_unstable();
        names.dedup();
        let labels: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let schema = metric_schema(&labels);
        let rows = UInt32Array::from(self.rows.clone());
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(labels.len() + 2);
        for name in &names {
            // One value per series, then one per row by the row's series.
            let per_series: StringArray = self
                .series
                .iter()
                .map(|s| {
                    s.binary_search_by(|(n, _)| n.as_str().cmp(name))
                        .ok()
                        .map(|i| s[i].1.as_str())
                })
                .collect();
            let dict = cast(&per_series, &label_type())?;
            columns.push(take(&dict, &rows, None)?);
        }
        columns.push(Arc::new(
            TimestampMillisecondArray::from(self.timestamps.clone()).with_timezone("UTC"),
        ));
        columns.push(Arc::new(Float64Array::from(self.values.clone())));
        RecordBatch::try_new(schema, columns)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::rendered_rows;

    type Row<'a> = (&'a [(&'a str, &'a str)], i64, f64);

    fn batch(series: &[Row<'_>]) -> RecordBatch {
        let mut b = MetricBuilder::default();
        for &(labels, t, v) in series {
            let s = b.series(labels.iter().copied());
            b.push(s, t, v);
        }
        // Unsorted, duplicates kept.
        b.unsorted().unwrap()
    }

    #[test]
    fn the_last_write_wins_and_rows_come_out_in_block_order() {
        let older = batch(&[
            (&[("job", "b")], 20, 1.0),
            (&[("job", "b")], 10, 1.0),
            (&[("job", "a")], 10, 1.0),
        ]);
        let newer = batch(&[(&[("job", "b")], 20, 2.0), (&[("job", "a")], 30, 3.0)]);
        let out = sort_dedup(&[older, newer]).unwrap().unwrap();
        assert_eq!(
            rendered_rows(&[out]),
            vec![
                ("job=a".to_string(), 10, 1.0),
                ("job=a".to_string(), 30, 3.0),
                ("job=b".to_string(), 10, 1.0),
                ("job=b".to_string(), 20, 2.0),
            ]
        );
    }

    #[test]
    fn label_columns_are_widened_and_a_missing_label_sorts_first() {
        let a = batch(&[(&[("job", "x")], 5, 1.0)]);
        let b = batch(&[(&[("job", "x"), ("zone", "1")], 5, 2.0)]);
        let out = sort_dedup(&[a, b]).unwrap().unwrap();
        let names: Vec<String> = out
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        assert_eq!(names, vec!["job", "zone", "timestamp", "value"]);
        assert_eq!(
            rendered_rows(&[out]),
            vec![
                ("job=x".to_string(), 5, 1.0),
                ("job=x,zone=1".to_string(), 5, 2.0),
            ],
            "different series: both kept, the one without zone first"
        );
    }

    #[test]
    fn the_builder_resolves_duplicates_within_one_input() {
        let mut b = MetricBuilder::default();
        let s = b.series([("__name__", "up"), ("value", "v"), ("job", "j")]);
        assert_eq!(
            s,
            b.series([("job", "j"), ("value", "v")]),
            "order-free key"
        );
        b.push(s, 20, 1.0);
        b.push(s, 10, 1.0);
        b.push(s, 20, 7.0);
        b.push(s, 20, f64::NAN);
        b.push(s, 20, 8.0);
        assert_eq!(b.len(), 5);
        let out = b.finish().unwrap().unwrap();
        assert_eq!(
            rendered_rows(&[out]),
            vec![
                ("job=j,label_value=v".to_string(), 10, 1.0),
                ("job=j,label_value=v".to_string(), 20, 8.0),
            ]
        );
        assert!(MetricBuilder::default().finish().unwrap().is_none());
    }
}
