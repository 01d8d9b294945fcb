//! Reading the head: consistent snapshots and their conversion to Arrow record batches.
//!
//! A [`MetricSnapshot`] is taken under the metric's lock in O(chunks) time and read without
//! it. Reading applies the two pushdowns storage understands — a time range (whole chunks are
//! skipped by their bounds, rows by their timestamp) and label matchers (evaluated once per
//! series, then as a per-row mask lookup) — before any label column is built, so rows a query
//! does not want are never materialised.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, DictionaryArray, Float64Array, Int32Array, RecordBatch, RecordBatchOptions,
    StringArray, TimestampMillisecondArray, new_null_array,
};
use arrow::buffer::{NullBuffer, ScalarBuffer};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Int32Type, Schema, SchemaRef, TimeUnit};
use arrow::error::ArrowError;

use super::{Chunk, MetricHead, MetricState, NO_VALUE};

/// Name of the timestamp column of every metric table.
pub const TIMESTAMP_COLUMN: &str = "timestamp";
/// Name of the value column of every metric table.
pub const VALUE_COLUMN: &str = "value";

/// The Arrow type of the timestamp column: ms since the epoch, UTC.
pub fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()))
}

/// The in-memory type of label columns (plain `Utf8` on the wire, see the query crate).
pub fn label_type() -> DataType {
    DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8))
}

/// The column a label is exposed as: its own name, except that labels named like the two
/// fixed columns get a `label_` prefix (DESIGN.md §3). To keep the mapping one-to-one, a label
/// that already reads `label_…timestamp` / `label_…value` gets one more prefix, so `value` and
/// `label_value` on the same metric become `label_value` and `label_label_value`.
pub fn label_column_name(label: &str) -> String {
    let mut base = label;
    while let Some(rest) = base.strip_prefix("label_") {
        base = rest;
    }
    if base == TIMESTAMP_COLUMN || base == VALUE_COLUMN {
        format!("label_{label}")
    } else {
        label.to_string()
    }
}

/// An inclusive range of timestamps in ms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeRange {
    /// First timestamp included.
    pub start: i64,
    /// Last timestamp included.
    pub end: i64,
}

impl Default for TimeRange {
    fn default() -> Self {
        Self {
            start: i64::MIN,
            end: i64::MAX,
        }
    }
}

impl TimeRange {
    /// True when the range covers all time.
    pub fn is_unbounded(&self) -> bool {
        *self == Self::default()
    }

    /// True when no timestamp can match.
    pub fn is_empty(&self) -> bool {
        self.start > self.end
    }

    fn contains(&self, t: i64) -> bool {
        self.start <= t && t <= self.end
    }
}

/// How a [`LabelMatcher`] compares. A series without the label never matches (SQL's NULL).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MatchOp {
    /// `column = value`
    Eq(String),
    /// `column <> value`
    NotEq(String),
    /// `column IN (values)`
    In(Vec<String>),
    /// `column NOT IN (values)`
    NotIn(Vec<String>),
}

/// A condition on one label column, applied per series.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelMatcher {
    /// The column name as exposed in the table (see [`label_column_name`]).
    pub column: String,
    /// The comparison.
    pub op: MatchOp,
}

impl std::fmt::Display for LabelMatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.op {
            MatchOp::Eq(v) => write!(f, "{} = {v:?}", self.column),
            MatchOp::NotEq(v) => write!(f, "{} != {v:?}", self.column),
            MatchOp::In(vs) => write!(f, "{} IN {vs:?}", self.column),
            MatchOp::NotIn(vs) => write!(f, "{} NOT IN {vs:?}", self.column),
        }
    }
}

/// What readers need of one label column, frozen at snapshot time.
#[derive(Debug)]
pub(super) struct ColumnSnapshot {
    /// Exposed column name.
    column: String,
    /// Interned values (the dictionary).
    values: ArrayRef,
    /// Series id → value id or `NO_VALUE`.
    per_series: Vec<u32>,
    /// True when every series has this label (keys need no null buffer).
    complete: bool,
}

/// All label columns of a metric, sorted by column name, plus the table schema.
#[derive(Debug)]
pub(super) struct LabelSnapshot {
    columns: Vec<ColumnSnapshot>,
    series_count: usize,
    schema: SchemaRef,
}

/// A consistent view of one metric: its series table and chunks at one instant.
#[derive(Debug, Clone)]
pub struct MetricSnapshot {
    name: Arc<str>,
    labels: Arc<LabelSnapshot>,
    chunks: Vec<Arc<Chunk>>,
}

impl MetricHead {
    /// Takes a snapshot that later appends do not change.
    pub fn snapshot(&self) -> MetricSnapshot {
        let mut state = self.state.lock();
        let labels = state.label_snapshot();
        let mut chunks = state.sealed.clone();
        if state.open.len() > 0 {
            chunks.push(Arc::new(state.open.copy()));
        }
        MetricSnapshot {
            name: Arc::clone(&self.name),
            labels,
            chunks,
        }
    }

    /// The table schema as of now.
    pub fn schema(&self) -> SchemaRef {
        Arc::clone(&self.state.lock().label_snapshot().schema)
    }
}

impl MetricState {
    fn label_snapshot(&mut self) -> Arc<LabelSnapshot> {
        if let Some(cached) = &self.label_cache {
            return Arc::clone(cached);
        }
        let mut columns: Vec<ColumnSnapshot> = self
            .columns
            .iter_mut()
            .map(|c| ColumnSnapshot {
                column: label_column_name(&c.name),
                values: c.values_array(),
                complete: !c.per_series.contains(&NO_VALUE),
                per_series: c.per_series.clone(),
            })
            .collect();
        columns.sort_by(|a, b| a.column.cmp(&b.column));
        let mut fields: Vec<Field> = columns
            .iter()
            .map(|c| Field::new(&c.column, label_type(), true))
            .collect();
        fields.push(Field::new(TIMESTAMP_COLUMN, timestamp_type(), false));
        fields.push(Field::new(VALUE_COLUMN, DataType::Float64, false));
        let snapshot = Arc::new(LabelSnapshot {
            columns,
            series_count: self.series.len(),
            schema: Arc::new(Schema::new(fields)),
        });
        self.label_cache = Some(Arc::clone(&snapshot));
        snapshot
    }
}

impl MetricSnapshot {
    /// The metric name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The table schema: label columns (sorted), `timestamp`, `value`.
    pub fn schema(&self) -> SchemaRef {
        Arc::clone(&self.labels.schema)
    }

    /// The chunks, oldest first.
    pub fn chunks(&self) -> &[Arc<Chunk>] {
        &self.chunks
    }

    /// Rows in all chunks.
    pub fn rows(&self) -> usize {
        self.chunks.iter().map(|c| c.len()).sum()
    }

    /// Evaluates label matchers once per series: `None` when there are none, else a mask
    /// indexed by series id. Matchers on columns that are not labels are ignored.
    pub fn series_mask(&self, matchers: &[LabelMatcher]) -> Option<Vec<bool>> {
        if matchers.is_empty() {
            return None;
        }
        let mut mask = vec![true; self.labels.series_count];
        for m in matchers {
            if m.column == TIMESTAMP_COLUMN || m.column == VALUE_COLUMN {
                continue;
            }
            let Some(col) = self.labels.columns.iter().find(|c| c.column == m.column) else {
                // No series has this label: every comparison is NULL.
                mask.iter_mut().for_each(|b| *b = false);
                continue;
            };
            let values = col
                .values
                .as_any()
                .downcast_ref::<arrow::array::StringArray>()
                .expect("label values are Utf8");
            let value_matches: Vec<bool> = values
                .iter()
                .map(|v| {
                    let v = v.unwrap_or_default();
                    match &m.op {
                        MatchOp::Eq(x) => v == x,
                        MatchOp::NotEq(x) => v != x,
                        MatchOp::In(xs) => xs.iter().any(|x| x == v),
                        MatchOp::NotIn(xs) => !xs.iter().any(|x| x == v),
                    }
                })
                .collect();
            for (sid, keep) in mask.iter_mut().enumerate() {
                let vid = col.per_series[sid];
                *keep = *keep && vid != NO_VALUE && value_matches[vid as usize];
            }
        }
        Some(mask)
    }

    /// Reads one chunk as a batch of `schema` (a projection of [`Self::schema`], matched by
    /// column name), keeping rows inside `time` whose series passes `mask`. `None` when no row
    /// is left. Label columns come in the type `schema` gives them: the head's dictionary type,
    /// or a string type it casts to (the query engine asks for `Utf8View`).
    pub fn read(
        &self,
        chunk: &Chunk,
        schema: &SchemaRef,
        time: TimeRange,
        mask: Option<&[bool]>,
    ) -> Result<Option<RecordBatch>, ArrowError> {
        if chunk.is_empty()
            || time.is_empty()
            || chunk.max_ts < time.start
            || chunk.min_ts > time.end
        {
            return Ok(None);
        }
        let whole_time = time.start <= chunk.min_ts && chunk.max_ts <= time.end;
        let (all_series, all_timestamps, all_values) = chunk.columns();
        let (series, timestamps, values) = if whole_time && mask.is_none() {
            (all_series, all_timestamps, all_values)
        } else {
            let mut series = Vec::new();
            let mut timestamps = Vec::new();
            let mut values = Vec::new();
            for i in 0..chunk.len() {
                let sid = all_series[i];
                let t = all_timestamps[i];
                if (whole_time || time.contains(t))
                    && mask.is_none_or(|m| m.get(sid as usize).copied().unwrap_or(false))
                {
                    series.push(sid);
                    timestamps.push(t);
                    values.push(all_values[i]);
                }
            }
            (series.into(), timestamps.into(), values.into())
        };
        let rows = timestamps.len();
        if rows == 0 {
            return Ok(None);
        }
        let columns = schema
            .fields()
            .iter()
            .map(|field| -> Result<ArrayRef, ArrowError> {
                Ok(match field.name().as_str() {
                    TIMESTAMP_COLUMN => Arc::new(
                        TimestampMillisecondArray::new(timestamps.clone(), None)
                            .with_timezone("UTC"),
                    ),
                    VALUE_COLUMN => Arc::new(Float64Array::new(values.clone(), None)),
                    name => match self.labels.columns.iter().find(|c| c.column == name) {
                        Some(col) => {
                            let keys: ArrayRef = Arc::new(label_keys(col, &series)?);
                            if keys.data_type() == field.data_type() {
                                keys
                            } else {
                                cast_labels(&keys, field.data_type())?
                            }
                        }
                        None => new_null_array(field.data_type(), rows),
                    },
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        RecordBatch::try_new_with_options(
            Arc::clone(schema),
            columns,
            &RecordBatchOptions::new().with_row_count(Some(rows)),
        )
        .map(Some)
    }
}

/// Builds one label column for the given rows: dictionary keys gathered from the series ids.
fn label_keys(
    col: &ColumnSnapshot,
    series: &ScalarBuffer<u32>,
) -> Result<DictionaryArray<Int32Type>, ArrowError> {
    let keys: Vec<i32> = series
        .iter()
        .map(|&sid| match col.per_series.get(sid as usize) {
            Some(&v) if v != NO_VALUE => v as i32,
            _ => 0,
        })
        .collect();
    let nulls = if col.complete {
        None
    } else {
        Some(NullBuffer::from_iter(series.iter().map(|&sid| {
            col.per_series
                .get(sid as usize)
                .is_some_and(|&v| v != NO_VALUE)
        })))
    };
    DictionaryArray::try_new(Int32Array::new(keys.into(), nulls), Arc::clone(&col.values))
}

impl MetricSnapshot {
    /// All rows with `start <= timestamp < end`, as one batch sorted by series (label values in
    /// column-name order, a missing label first) then time: the layout of a block file. Label
    /// columns no such row has are left out. `None` when no row is in range.
    pub fn sorted_rows(&self, start: i64, end: i64) -> Result<Option<RecordBatch>, ArrowError> {
        let mut rows: Vec<(u32, i64, f64)> = Vec::new();
        for chunk in &self.chunks {
            if chunk.max_ts < start || chunk.min_ts >= end {
                continue;
            }
            let (series, timestamps, values) = chunk.columns();
            for i in 0..chunk.len() {
                let t = timestamps[i];
                if start <= t && t < end {
                    rows.push((series[i], t, values[i]));
                }
            }
        }
        if rows.is_empty() {
            return Ok(None);
        }
        // Rank the series present by their label values, so similar series sit together. The
        // distinct values of each column are ranked once (few strings), so series compare as
        // integers.
        let columns = &self.labels.columns;
        let value_ranks: Vec<Vec<u32>> = columns.iter().map(rank_values).collect();
        let key = |sid: u32, c: usize| match columns[c].per_series.get(sid as usize) {
            Some(&v) if v != NO_VALUE => value_ranks[c].get(v as usize).map_or(0, |r| r + 1),
            _ => 0,
        };
        let mut seen = vec![false; self.labels.series_count];
        for r in &rows {
            if let Some(s) = seen.get_mut(r.0 as usize) {
                *s = true;
            }
        }
        let mut present: Vec<u32> = (0..seen.len() as u32)
            .filter(|&sid| seen[sid as usize])
            .collect();
        present.sort_unstable_by(|&a, &b| {
            (0..columns.len())
                .map(|c| key(a, c).cmp(&key(b, c)))
                .find(|o| o.is_ne())
                .unwrap_or_else(|| a.cmp(&b))
        });
        let mut rank = vec![0u32; self.labels.series_count];
        for (i, &sid) in present.iter().enumerate() {
            rank[sid as usize] = i as u32;
        }
        // A stable counting sort by rank: a series' rows were appended in time order (older
        // samples are refused), so they stay in time order.
        let mut offsets = vec![0usize; present.len() + 1];
        for r in &rows {
            offsets[rank[r.0 as usize] as usize + 1] += 1;
        }
        for i in 1..offsets.len() {
            offsets[i] += offsets[i - 1];
        }
        let mut sorted = vec![(0u32, 0i64, 0f64); rows.len()];
        for r in rows {
            let slot = &mut offsets[rank[r.0 as usize] as usize];
            sorted[*slot] = r;
            *slot += 1;
        }
        let rows = sorted;
        debug_assert!(rows.windows(2).all(|w| w[0].0 != w[1].0 || w[0].1 < w[1].1));

        let series: ScalarBuffer<u32> = rows.iter().map(|r| r.0).collect();
        let mut fields = Vec::new();
        let mut arrays: Vec<ArrayRef> = Vec::new();
        for col in columns {
            if present.iter().all(|&sid| {
                col.per_series
                    .get(sid as usize)
                    .is_none_or(|&v| v == NO_VALUE)
            }) {
                continue;
            }
            fields.push(Field::new(&col.column, label_type(), true));
            arrays.push(Arc::new(label_keys(col, &series)?));
        }
        fields.push(Field::new(TIMESTAMP_COLUMN, timestamp_type(), false));
        arrays.push(Arc::new(
            TimestampMillisecondArray::from_iter_values(rows.iter().map(|r| r.1))
                .with_timezone("UTC"),
        ));
        fields.push(Field::new(VALUE_COLUMN, DataType::Float64, false));
        arrays.push(Arc::new(Float64Array::from_iter_values(
            rows.iter().map(|r| r.2),
        )));
        RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays).map(Some)
    }
}

/// The rank of each value of a label column in byte order (equal strings, equal ranks).
fn rank_values(col: &ColumnSnapshot) -> Vec<u32> {
    let Some(values) = col.values.as_any().downcast_ref::<StringArray>() else {
        return vec![0; col.values.len()];
    };
    let mut order: Vec<u32> = (0..values.len() as u32).collect();
    order.sort_unstable_by(|&a, &b| values.value(a as usize).cmp(values.value(b as usize)));
    let mut ranks = vec![0u32; values.len()];
    let mut rank = 0;
    for (i, &v) in order.iter().enumerate() {
        if i > 0 && values.value(v as usize) != values.value(order[i - 1] as usize) {
            rank += 1;
        }
        ranks[v as usize] = rank;
    }
    ranks
}

/// The type to cast a dictionary of label values through on its way to `to`: a dictionary of
/// `Utf8View` values when `to` is `Utf8View`, else `None` (a direct cast is as good).
///
/// Why: arrow casts `Dictionary<_, Utf8>` to `Utf8View` by building a view per row from the
/// value's bytes (~15 ns a row; a fifth of the query benchmark's per-series rate, by perf).
/// Through a dictionary of views, the values become views once and the rows are a gather of
/// 16-byte views by key.
pub fn label_view_dictionary(from: &DataType, to: &DataType) -> Option<DataType> {
    match (from, to) {
        (DataType::Dictionary(key, value), DataType::Utf8View)
            if value.as_ref() == &DataType::Utf8 =>
        {
            Some(DataType::Dictionary(
                key.clone(),
                Box::new(DataType::Utf8View),
            ))
        }
        _ => None,
    }
}

/// Casts a label column to `to`, through [`label_view_dictionary`] where that is cheaper.
pub fn cast_labels(array: &ArrayRef, to: &DataType) -> Result<ArrayRef, ArrowError> {
    match label_view_dictionary(array.data_type(), to) {
        Some(via) => cast(&cast(array, &via)?, to),
        None => cast(array, to),
    }
}
