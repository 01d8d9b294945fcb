//! Label column chunks encoded once per distinct value, for the files of head cuts.
//!
//! A label column reaches the block writer as an Arrow dictionary (`Dictionary(Int32, Utf8)`,
//! see [`label_type`](crate::head::label_type)), and its Parquet form is a dictionary too:
//! one PLAIN dictionary page of the distinct strings, then data pages of indices into it. The
//! Parquet crate's Arrow writer does not carry the Arrow dictionary over: it looks every
//! row's string up in a hash table of the strings seen so far (hash, probe, byte compare),
//! once per row and label (arrow-rs issue #10465). For a cut, that is rows × labels lookups of
//! strings that are already unique in the Arrow dictionary. By a `perf` profile of the cuts of
//! `benches/ingest_vs_prometheus.py`'s targets, that interning and the index encoding after it
//! took about a third of the cut thread, and the cut thread about a fifth of the replica's CPU
//! while ingesting.
//!
//! Here the Arrow keys are mapped to page-dictionary indices with one table lookup per row (a
//! `Vec` indexed by key, filled on a key's first use, so the page dictionary holds only the
//! strings the chunk uses, in the order of first use as the Parquet writer orders them), and
//! the indices are written as runs: the rows are sorted by label, so a label's value repeats
//! for every sample of a series at least.
//!
//! The output is ordinary Parquet, what the Parquet crate's writer produces for the same
//! column apart from how runs are split between RLE and bit-packing: a PLAIN dictionary page;
//! version-1 data pages of at most `data_page_row_count_limit` rows, each with RLE definition
//! levels and `RLE_DICTIONARY` indices; the column's compression; an offset index unless
//! disabled. It is used only for columns without statistics (the label columns of level-1
//! blocks, see [`writer_properties`](super::writer_properties)): page statistics would need
//! each page's minimum and maximum string, which the general writer keeps. Anything else —
//! other key or value types, nulls among dictionary values, other codecs, nested columns —
//! goes to the general writer ([`encode`] returns `None`). The tests read chunks of both
//! writers back and compare them.

use arrow::array::{Array, AsArray, DictionaryArray, StringArray};
use arrow::datatypes::Int32Type;
use bytes::Bytes;
use parquet::basic::{Compression, Encoding, PageType};
use parquet::column::page::{CompressedPage, Page, PageWriteSpec, PageWriter};
use parquet::column::writer::ColumnCloseResult;
use parquet::errors::{ParquetError, Result};
use parquet::file::metadata::{ColumnChunkMetaData, OffsetIndexBuilder, PageEncodingStats};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::file::writer::{SerializedPageWriter, TrackedWrite};
use parquet::schema::types::ColumnDescPtr;

/// One encoded column chunk: its bytes (offsets in `close` are relative to them) and what
/// `SerializedRowGroupWriter::append_column` needs to splice it into a row group.
pub(super) struct EncodedChunk {
    pub bytes: Bytes,
    pub close: ColumnCloseResult,
}

/// Encodes `column` (the rows of one row group) as a dictionary-encoded chunk of the column
/// `descr`, or `None` when this encoder does not apply (see the module docs).
pub(super) fn encode(
    column: &dyn Array,
    descr: &ColumnDescPtr,
    props: &WriterProperties,
) -> Result<Option<EncodedChunk>> {
    let Some(dict) = column.as_dictionary_opt::<Int32Type>() else {
        return Ok(None);
    };
    let Some(values) = dict.values().as_string_opt::<i32>() else {
        return Ok(None);
    };
    let path = descr.path();
    if descr.max_rep_level() != 0
        || descr.max_def_level() > 1
        || (descr.max_def_level() == 0 && dict.null_count() > 0)
        || values.null_count() > 0
        || props.statistics_enabled(path) != EnabledStatistics::None
        || props.bloom_filter_properties(path).is_some()
        || dict.len() == dict.null_count()
    {
        return Ok(None);
    }
    let codec = props.compression(path);
    let mut compressor = match codec {
        Compression::UNCOMPRESSED => None,
        Compression::ZSTD(level) => Some(
            zstd::bulk::Compressor::new(level.compression_level())
                .map_err(|e| ParquetError::External(Box::new(e)))?,
        ),
        _ => return Ok(None),
    };
    let Some(rows) = Rows::index(dict, values) else {
        return Ok(None);
    };

    let mut sink = TrackedWrite::new(Vec::new());
    let mut pages = SerializedPageWriter::new(&mut sink);
    let mut totals = Totals::default();
    let mut offset_index = (!props.offset_index_disabled()).then(OffsetIndexBuilder::new);

    let dictionary = rows.dictionary_page(values);
    let spec = pages.write_page(CompressedPage::new(
        Page::DictionaryPage {
            buf: compress(compressor.as_mut(), &dictionary)?,
            num_values: rows.order.len() as u32,
            encoding: Encoding::PLAIN,
            is_sorted: false,
        },
        dictionary.len(),
    ))?;
    let dictionary_offset = spec.offset as i64;
    totals.add(&spec);

    let page_rows = props.data_page_row_count_limit().max(1);
    let nullable = descr.max_def_level() == 1;
    let width = rows.bit_width();
    let mut data_offset = None;
    let mut data_pages = 0;
    let mut buf = Vec::new();
    let mut next_index = 0;
    for start in (0..dict.len()).step_by(page_rows) {
        let end = (start + page_rows).min(dict.len());
        let nulls = dict
            .nulls()
            .map_or(0, |n| n.slice(start, end - start).null_count());
        let valid = end - start - nulls;
        buf.clear();
        if nullable {
            // Version-1 pages prefix their definition levels with the levels' byte length.
            let levels = runs(
                (start..end).map(|i| u32::from(dict.is_valid(i))),
                RunEncoder::new(1),
            );
            buf.extend_from_slice(&(levels.out.len() as u32).to_le_bytes());
            buf.extend_from_slice(&levels.out);
        }
        let indices = &rows.indices[next_index..next_index + valid];
        next_index += valid;
        buf.push(width);
        let encoded = runs(indices.iter().copied(), RunEncoder::new(width));
        buf.extend_from_slice(&encoded.out);
        let unencoded: i64 = indices
            .iter()
            .map(|&i| rows.lengths[i as usize] as i64)
            .sum();

        let spec = pages.write_page(CompressedPage::new(
            Page::DataPage {
                buf: compress(compressor.as_mut(), &buf)?,
                num_values: (end - start) as u32,
                encoding: Encoding::RLE_DICTIONARY,
                def_level_encoding: Encoding::RLE,
                rep_level_encoding: Encoding::RLE,
                statistics: None,
            },
            buf.len(),
        ))?;
        data_offset.get_or_insert(spec.offset as i64);
        data_pages += 1;
        totals.add(&spec);
        if let Some(index) = offset_index.as_mut() {
            index.append_offset_and_size(spec.offset as i64, spec.compressed_size as i32);
            index.append_row_count((end - start) as i64);
            index.append_unencoded_byte_array_data_bytes(Some(unencoded));
        }
    }
    pages.close()?;
    let bytes = Bytes::from(sink.into_inner()?);

    let metadata = ColumnChunkMetaData::builder(ColumnDescPtr::clone(descr))
        .set_compression(codec)
        .set_encodings(vec![
            Encoding::PLAIN,
            Encoding::RLE,
            Encoding::RLE_DICTIONARY,
        ])
        .set_page_encoding_stats(vec![
            PageEncodingStats {
                page_type: PageType::DICTIONARY_PAGE,
                encoding: Encoding::PLAIN,
                count: 1,
            },
            PageEncodingStats {
                page_type: PageType::DATA_PAGE,
                encoding: Encoding::RLE_DICTIONARY,
                count: data_pages,
            },
        ])
        .set_total_compressed_size(totals.compressed as i64)
        .set_total_uncompressed_size(totals.uncompressed as i64)
        .set_num_values(dict.len() as i64)
        .set_data_page_offset(data_offset.unwrap_or(dictionary_offset))
        .set_dictionary_page_offset(Some(dictionary_offset))
        .build()?;
    Ok(Some(EncodedChunk {
        bytes,
        close: ColumnCloseResult {
            bytes_written: totals.written,
            rows_written: dict.len() as u64,
            metadata,
            bloom_filter: None,
            column_index: None,
            offset_index: offset_index.map(OffsetIndexBuilder::build),
        },
    }))
}

/// Sizes of the pages written so far, as the column chunk's metadata counts them.
#[derive(Default)]
struct Totals {
    uncompressed: u64,
    compressed: u64,
    written: u64,
}

impl Totals {
    fn add(&mut self, spec: &PageWriteSpec) {
        self.uncompressed += spec.uncompressed_size as u64;
        self.compressed += spec.compressed_size as u64;
        self.written += spec.bytes_written;
    }
}

/// A page's bytes compressed by `compressor` (one context for all pages of a chunk), or as
/// they are when the column is uncompressed.
fn compress(compressor: Option<&mut zstd::bulk::Compressor<'_>>, data: &[u8]) -> Result<Bytes> {
    Ok(match compressor {
        Some(c) => Bytes::from(
            c.compress(data)
                .map_err(|e| ParquetError::External(Box::new(e)))?,
        ),
        None => Bytes::copy_from_slice(data),
    })
}

/// The chunk's rows as page-dictionary indices.
struct Rows {
    /// Arrow dictionary keys in page-dictionary order (order of first use).
    order: Vec<u32>,
    /// One index per non-null row.
    indices: Vec<u32>,
    /// Byte length of each page-dictionary value.
    lengths: Vec<u32>,
}

impl Rows {
    /// `None` when a key is outside the dictionary (not a valid Arrow array).
    fn index(dict: &DictionaryArray<Int32Type>, values: &StringArray) -> Option<Self> {
        const UNSEEN: u32 = u32::MAX;
        let mut slot = vec![UNSEEN; values.len()];
        let mut order = Vec::new();
        let mut lengths = Vec::new();
        let mut indices = Vec::with_capacity(dict.len() - dict.null_count());
        let keys = dict.keys();
        let mut last: Option<(i32, u32)> = None;
        for i in 0..keys.len() {
            if keys.is_null(i) {
                continue;
            }
            let key = keys.value(i);
            let index = match last {
                Some((k, index)) if k == key => index,
                _ => {
                    let k = usize::try_from(key).ok().filter(|&k| k < values.len())?;
                    if slot[k] == UNSEEN {
                        slot[k] = order.len() as u32;
                        order.push(k as u32);
                        lengths.push(values.value_length(k) as u32);
                    }
                    last = Some((key, slot[k]));
                    slot[k]
                }
            };
            indices.push(index);
        }
        Some(Self {
            order,
            indices,
            lengths,
        })
    }

    /// Bits per index: enough for the largest (0 for a one-value dictionary).
    fn bit_width(&self) -> u8 {
        let max = self.order.len().saturating_sub(1) as u64;
        (64 - max.leading_zeros()) as u8
    }

    /// PLAIN dictionary page: each value as a 4-byte little-endian length and its bytes.
    fn dictionary_page(&self, values: &StringArray) -> Vec<u8> {
        let size: usize = self.lengths.iter().map(|&l| l as usize + 4).sum();
        let mut page = Vec::with_capacity(size);
        for &k in &self.order {
            let value = values.value(k as usize).as_bytes();
            page.extend_from_slice(&(value.len() as u32).to_le_bytes());
            page.extend_from_slice(value);
        }
        page
    }
}

/// Feeds `values` to `encoder` as runs of equal values and returns it finished.
fn runs(values: impl Iterator<Item = u32>, mut encoder: RunEncoder) -> RunEncoder {
    let mut current: Option<(u32, usize)> = None;
    for v in values {
        current = match current {
            Some((c, n)) if c == v => Some((c, n + 1)),
            Some((c, n)) => {
                encoder.run(c, n);
                Some((v, 1))
            }
            None => Some((v, 1)),
        };
    }
    if let Some((c, n)) = current {
        encoder.run(c, n);
    }
    encoder.finish();
    encoder
}

/// Parquet's RLE / bit-packing hybrid, fed with runs: a run of 8 or more equal values is
/// written as an RLE run; shorter ones gather into bit-packed groups of 8. A bit-packed run
/// must hold whole groups, and only the last one may be padded (a reader stops at the page's
/// value count), so before an RLE run the gathered values are topped up to a multiple of 8
/// from that run.
struct RunEncoder {
    width: u8,
    out: Vec<u8>,
    literals: Vec<u32>,
}

/// Shortest run written as an RLE run.
const MIN_RLE_RUN: usize = 8;

impl RunEncoder {
    fn new(width: u8) -> Self {
        Self {
            width,
            out: Vec::new(),
            literals: Vec::new(),
        }
    }

    fn run(&mut self, value: u32, mut len: usize) {
        if len < MIN_RLE_RUN {
            self.literals.extend(std::iter::repeat_n(value, len));
            return;
        }
        let top_up = (8 - self.literals.len() % 8) % 8;
        self.literals.extend(std::iter::repeat_n(value, top_up));
        len -= top_up;
        self.flush_literals();
        // The run's length goes in a ULEB128 header, shifted left by one bit (low bit 0 = RLE).
        put_uleb128(&mut self.out, (len as u64) << 1);
        let bytes = usize::from(self.width).div_ceil(8);
        self.out
            .extend_from_slice(&value.to_le_bytes()[..bytes.min(4)]);
    }

    fn finish(&mut self) {
        let pad = (8 - self.literals.len() % 8) % 8;
        self.literals.extend(std::iter::repeat_n(0, pad));
        self.flush_literals();
    }

    /// Writes the gathered values (a multiple of 8) as one bit-packed run.
    fn flush_literals(&mut self) {
        if self.literals.is_empty() {
            return;
        }
        debug_assert_eq!(self.literals.len() % 8, 0);
        // Header: the number of 8-value groups, shifted left by one bit (low bit 1 = packed).
        put_uleb128(&mut self.out, ((self.literals.len() / 8) as u64) << 1 | 1);
        let width = u32::from(self.width);
        let mut acc = 0u64;
        let mut bits = 0u32;
        for &v in &self.literals {
            acc |= u64::from(v) << bits;
            bits += width;
            while bits >= 8 {
                self.out.push(acc as u8);
                acc >>= 8;
                bits -= 8;
            }
        }
        debug_assert_eq!(bits, 0);
        self.literals.clear();
    }
}

fn put_uleb128(out: &mut Vec<u8>, mut v: u64) {
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

#[cfg(test)]
mod tests;
