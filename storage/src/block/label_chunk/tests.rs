use std::sync::Arc;

use arrow::array::{ArrayRef, Float64Array, Int32Array, RecordBatch, TimestampMillisecondArray};
use arrow::datatypes::{DataType, Field, Schema};
use bytes::Bytes;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::{ArrowReaderOptions, ParquetRecordBatchReaderBuilder};
use proptest::prelude::*;

use super::*;
use crate::block::{ROW_GROUP_ROWS, write_row_groups, writer_properties};
use crate::head::{TIMESTAMP_COLUMN, VALUE_COLUMN, label_type};

/// A block-shaped batch: one label column with `keys` into `values`, then timestamp and value.
fn batch(keys: Vec<Option<i32>>, values: &[&str]) -> RecordBatch {
    let rows = keys.len();
    let dict = DictionaryArray::<Int32Type>::try_new(
        Int32Array::from(keys),
        Arc::new(StringArray::from(values.to_vec())),
    )
    .unwrap();
    let schema = Schema::new(vec![
        Field::new("path", label_type(), true),
        Field::new(TIMESTAMP_COLUMN, crate::head::timestamp_type(), false),
        Field::new(VALUE_COLUMN, DataType::Float64, false),
    ]);
    RecordBatch::try_new(
        Arc::new(schema),
        vec![
            Arc::new(dict),
            Arc::new(
                TimestampMillisecondArray::from_iter_values((0..rows as i64).map(|t| t * 15_000))
                    .with_timezone("UTC"),
            ),
            Arc::new(Float64Array::from_iter_values((0..rows).map(|v| v as f64))),
        ],
    )
    .unwrap()
}

/// Level-1 block settings, with pages of `page_rows` rows so that tests cross page ends.
fn props(batch: &RecordBatch, page_rows: usize) -> WriterProperties {
    writer_properties(batch, 1)
        .into_builder()
        .set_data_page_row_count_limit(page_rows)
        .build()
}

fn read(file: Bytes) -> Vec<RecordBatch> {
    ParquetRecordBatchReaderBuilder::try_new_with_options(
        file,
        ArrowReaderOptions::new()
            .with_page_index_policy(parquet::file::metadata::PageIndexPolicy::Required),
    )
    .unwrap()
    .build()
    .unwrap()
    .collect::<std::result::Result<_, _>>()
    .unwrap()
}

/// The rows of `batches`, label column as strings.
fn as_strings(batches: &[RecordBatch]) -> Vec<(Option<String>, i64, f64)> {
    let mut rows = Vec::new();
    for b in batches {
        let labels = arrow::compute::cast(b.column(0), &DataType::Utf8).unwrap();
        let labels = labels.as_string::<i32>();
        let ts = b
            .column(1)
            .as_primitive::<arrow::datatypes::TimestampMillisecondType>();
        let vs = b.column(2).as_primitive::<arrow::datatypes::Float64Type>();
        for i in 0..b.num_rows() {
            rows.push((
                labels.is_valid(i).then(|| labels.value(i).to_string()),
                ts.value(i),
                vs.value(i),
            ));
        }
    }
    rows
}

/// Whether [`encode`] takes `array` as the label column of `batch`'s schema under `props`.
fn encodes(array: &dyn Array, batch: &RecordBatch, props: &WriterProperties) -> bool {
    let descr = parquet::arrow::ArrowSchemaConverter::new()
        .convert(&batch.schema())
        .unwrap()
        .column(0);
    encode(array, &descr, props).unwrap().is_some()
}

/// Writes `batch` through this encoder and through the Parquet crate's writer with the same
/// settings, and checks both read back as `batch`; returns this encoder's file.
fn round_trip(batch: &RecordBatch, page_rows: usize) -> Bytes {
    let props = props(batch, page_rows);
    assert!(
        encodes(batch.column(0).as_ref(), batch, &props)
            || batch.column(0).null_count() == batch.num_rows(),
        "the label column must go through this encoder"
    );
    let ours = Bytes::from(write_row_groups(Vec::new(), batch, props.clone()).unwrap());
    let mut theirs = ArrowWriter::try_new(Vec::new(), batch.schema(), Some(props)).unwrap();
    theirs.write(batch).unwrap();
    let theirs = Bytes::from(theirs.into_inner().unwrap());
    let expected = as_strings(std::slice::from_ref(batch));
    assert_eq!(as_strings(&read(ours.clone())), expected);
    assert_eq!(as_strings(&read(theirs)), expected);
    // The reader gets dictionaries back, as from the general writer, and the schema.
    assert_eq!(read(ours.clone())[0].schema(), batch.schema());
    ours
}

#[test]
fn runs_of_every_length_read_back() {
    // Run lengths 1..=20 of values cycling through a dictionary of 5: RLE runs, bit-packed
    // groups, and the top-up of a packed group from the run that follows it.
    let mut keys = Vec::new();
    for len in 1..=20 {
        keys.extend(std::iter::repeat_n(Some(len % 5), len as usize));
    }
    round_trip(&batch(keys, &["a", "bb", "ccc", "", "eeeee"]), 20_000);
}

#[test]
fn nulls_unused_values_and_page_ends() {
    // Nulls alone, in runs and at page ends; dictionary values no row uses; pages of 7 rows.
    let mut keys = Vec::new();
    for i in 0..500 {
        keys.push(match i % 13 {
            0 | 5 => None,
            7..=12 => None,
            k => Some(2 * (k % 4)),
        });
    }
    let file = round_trip(
        &batch(keys, &["v0", "unused", "v2", "x", "v4", "y", "v6"]),
        7,
    );
    let meta = parquet::file::metadata::ParquetMetaDataReader::new()
        .with_page_index_policy(parquet::file::metadata::PageIndexPolicy::Required)
        .parse_and_finish(&file)
        .unwrap();
    let pages = &meta.offset_index().unwrap()[0][0].page_locations;
    assert_eq!(pages.len(), 500usize.div_ceil(7));
    for (i, p) in pages.iter().enumerate() {
        assert_eq!(p.first_row_index, 7 * i as i64);
    }
    assert_eq!(meta.row_group(0).column(0).num_values(), 500);
    // The dictionary page comes first and holds the used values only (v0, v2, v4, v6).
    use parquet::file::reader::{FileReader, SerializedFileReader};
    let reader = SerializedFileReader::new(file).unwrap();
    let mut pages = reader
        .get_row_group(0)
        .unwrap()
        .get_column_page_reader(0)
        .unwrap();
    match pages.next().unwrap().unwrap() {
        Page::DictionaryPage { num_values, .. } => assert_eq!(num_values, 4),
        other => panic!(
            "expected the dictionary page first, got {:?}",
            other.page_type()
        ),
    }
}

#[test]
fn one_value_dictionary_has_zero_bit_indices() {
    round_trip(&batch(vec![Some(0); 1000], &["only"]), 300);
    round_trip(
        &batch(vec![Some(0), None, Some(0), None], &["only"]),
        20_000,
    );
}

#[test]
fn wide_indices() {
    // 70,000 distinct values need 17 bits; alternate so nothing forms a run.
    let values: Vec<String> = (0..70_000).map(|i| format!("/api/v1/r{i}")).collect();
    let refs: Vec<&str> = values.iter().map(String::as_str).collect();
    let keys = (0..70_000i64)
        .map(|i| Some(((i * 7919) % 70_000) as i32))
        .collect();
    round_trip(&batch(keys, &refs), 20_000);
}

#[test]
fn all_null_column_falls_back_to_the_general_writer() {
    let b = batch(vec![None; 100], &["a"]);
    let props = props(&b, 20_000);
    assert!(!encodes(b.column(0).as_ref(), &b, &props));
    round_trip(&b, 20_000);
}

#[test]
fn columns_with_statistics_use_the_general_writer() {
    let b = batch(vec![Some(0), Some(1)], &["a", "b"]);
    let props = writer_properties(&b, 2);
    assert!(!encodes(b.column(0).as_ref(), &b, &props));
}

#[test]
fn several_row_groups() {
    let rows = ROW_GROUP_ROWS * 2 + 1000;
    let keys = (0..rows).map(|i| Some((i / 40 % 300) as i32)).collect();
    let values: Vec<String> = (0..300).map(|i| format!("series-{i}")).collect();
    let refs: Vec<&str> = values.iter().map(String::as_str).collect();
    let file = round_trip(&batch(keys, &refs), 20_000);
    let meta = parquet::file::metadata::ParquetMetaDataReader::new()
        .parse_and_finish(&file)
        .unwrap();
    assert_eq!(meta.num_row_groups(), 3);
}

#[test]
fn run_encoder_bytes() {
    // Eight 3s at width 2: one RLE run, header 8 << 1, value in one byte.
    let e = runs(std::iter::repeat_n(3, 8), RunEncoder::new(2));
    assert_eq!(e.out, vec![16, 3]);
    // 1, 2, 3 at width 2: one packed group (header 1 << 1 | 1), padded with zeros, LSB first:
    // 1 | 2 << 2 | 3 << 4 = 0b111001, then 0.
    let e = runs([1, 2, 3].into_iter(), RunEncoder::new(2));
    assert_eq!(e.out, vec![3, 0b0011_1001, 0]);
    // Three 1s then ten 2s at width 1: the packed group is topped up with five 2s, the rest
    // (five) is an RLE run.
    let e = runs(
        std::iter::repeat_n(1, 3).chain(std::iter::repeat_n(0, 10)),
        RunEncoder::new(1),
    );
    assert_eq!(e.out, vec![3, 0b0000_0111, 10, 0]);
    // A run of 200 needs two header bytes.
    let e = runs(std::iter::repeat_n(5, 200), RunEncoder::new(3));
    assert_eq!(e.out, vec![0x90, 0x03, 5]);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn random_runs_read_back(
        runs in prop::collection::vec((prop::option::weighted(0.9, 0..40i32), 1..50usize), 1..60),
        page_rows in 1..300usize,
    ) {
        let keys: Vec<Option<i32>> = runs
            .iter()
            .flat_map(|&(k, n)| std::iter::repeat_n(k, n))
            .collect();
        let values: Vec<String> = (0..40).map(|i| format!("value-{i}")).collect();
        let refs: Vec<&str> = values.iter().map(String::as_str).collect();
        round_trip(&batch(keys, &refs), page_rows);
    }
}

#[test]
fn arrays_of_other_types_use_the_general_writer() {
    let array: ArrayRef = Arc::new(StringArray::from(vec!["a"]));
    let b = batch(vec![Some(0)], &["a"]);
    let props = props(&b, 20_000);
    assert!(!encodes(array.as_ref(), &b, &props));
}
