//! Sealed head chunks, packed: what keeps the head's memory per sample near a block's.
//!
//! An open chunk holds 20 bytes per row (series id, timestamp, value). A sealed chunk never
//! changes again, so it is packed once, when it seals:
//!
//! ```text
//! series ids  → differences from the previous row (u32, wrapping)   ┐ each column split into
//! timestamps  → differences from the previous row (i64, wrapping)   │ its byte planes (all
//! values      → IEEE bits as they are                               ┘ first bytes, then all
//!                                                                     second bytes, …)
//!             → one zstd frame (level 1)
//! ```
//!
//! Rows arrive commit by commit (one target's scrape: consecutive series ids, one timestamp),
//! so the differences are mostly 0 and 1 and their high planes are runs of zeros; splitting
//! the values' bytes puts their signs and exponents together, as Parquet's
//! `BYTE_STREAM_SPLIT` does for the blocks. Hand-written because it is on the append path
//! and small: zstd does the entropy coding.
//!
//! Reading unpacks the whole chunk (zstd at memory speed, then prefix sums); queries over the
//! head pay that per chunk they touch, in exchange for the head's memory.

use arrow::buffer::ScalarBuffer;

/// zstd level: 1 is the fastest of the compressing levels; the gain of higher ones on this
/// data is small next to their cost on the append path.
const LEVEL: i32 = 1;

/// The three columns of a chunk.
pub(crate) type Columns = (ScalarBuffer<u32>, ScalarBuffer<i64>, ScalarBuffer<f64>);

/// Packs `rows` rows of the three columns. `None` if zstd fails (the caller keeps them plain).
pub(crate) fn pack(series: &[u32], timestamps: &[i64], values: &[f64]) -> Option<Box<[u8]>> {
    let n = timestamps.len();
    debug_assert!(series.len() == n && values.len() == n);
    let mut raw = vec![0u8; n * 20];
    let (s_planes, rest) = raw.split_at_mut(n * 4);
    let (t_planes, v_planes) = rest.split_at_mut(n * 8);
    let mut prev_s = 0u32;
    let mut prev_t = 0i64;
    for i in 0..n {
        let ds = series[i].wrapping_sub(prev_s).to_le_bytes();
        let dt = timestamps[i].wrapping_sub(prev_t).to_le_bytes();
        let v = values[i].to_bits().to_le_bytes();
        prev_s = series[i];
        prev_t = timestamps[i];
        for (b, byte) in ds.iter().enumerate() {
            s_planes[b * n + i] = *byte;
        }
        for b in 0..8 {
            t_planes[b * n + i] = dt[b];
            v_planes[b * n + i] = v[b];
        }
    }
    zstd::bulk::compress(&raw, LEVEL)
        .ok()
        .map(Vec::into_boxed_slice)
}

/// Unpacks `n` rows packed by [`pack`]. `None` when the bytes do not unpack to that many rows
/// (which would mean memory corruption: the bytes never leave the process).
pub(crate) fn unpack(packed: &[u8], n: usize) -> Option<Columns> {
    let raw = zstd::bulk::decompress(packed, n * 20).ok()?;
    if raw.len() != n * 20 {
        return None;
    }
    let (s_planes, rest) = raw.split_at(n * 4);
    let (t_planes, v_planes) = rest.split_at(n * 8);
    let mut series = Vec::with_capacity(n);
    let mut timestamps = Vec::with_capacity(n);
    let mut values = Vec::with_capacity(n);
    let mut s = 0u32;
    let mut t = 0i64;
    for i in 0..n {
        let mut ds = [0u8; 4];
        for (b, byte) in ds.iter_mut().enumerate() {
            *byte = s_planes[b * n + i];
        }
        let mut dt = [0u8; 8];
        let mut v = [0u8; 8];
        for b in 0..8 {
            dt[b] = t_planes[b * n + i];
            v[b] = v_planes[b * n + i];
        }
        s = s.wrapping_add(u32::from_le_bytes(ds));
        t = t.wrapping_add(i64::from_le_bytes(dt));
        series.push(s);
        timestamps.push(t);
        values.push(f64::from_bits(u64::from_le_bytes(v)));
    }
    Some((series.into(), timestamps.into(), values.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_round_trip_bit_for_bit() {
        // Commits of 50 series at 15 s steps, with resets, NaN, infinities, -0.0, extremes.
        let mut series = Vec::new();
        let mut timestamps = Vec::new();
        let mut values = Vec::new();
        for commit in 0..100i64 {
            for s in 0..50u32 {
                series.push(s);
                timestamps.push(1_767_225_600_000 + commit * 15_000 + i64::from(s % 3));
                values.push(match (commit + i64::from(s)) % 9 {
                    0 => f64::NAN,
                    1 => f64::INFINITY,
                    2 => -0.0,
                    3 => f64::MIN_POSITIVE,
                    _ => (commit * 1000 + i64::from(s)) as f64 * 0.37,
                });
            }
        }
        series.push(u32::MAX);
        timestamps.push(i64::MIN);
        values.push(f64::MAX);
        series.push(0);
        timestamps.push(i64::MAX);
        values.push(-1.5);

        let packed = pack(&series, &timestamps, &values).unwrap();
        let n = timestamps.len();
        assert!(
            packed.len() * 2 < n * 20,
            "{} bytes for {n} rows: not packed",
            packed.len()
        );
        let (s, t, v) = unpack(&packed, n).unwrap();
        assert_eq!(s.as_ref(), series.as_slice());
        assert_eq!(t.as_ref(), timestamps.as_slice());
        let bits = |x: &[f64]| x.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(v.as_ref()), bits(&values));
    }

    #[test]
    fn empty_and_wrong_lengths() {
        let packed = pack(&[], &[], &[]).unwrap();
        let (s, t, v) = unpack(&packed, 0).unwrap();
        assert!(s.is_empty() && t.is_empty() && v.is_empty());
        let packed = pack(&[1, 2], &[10, 20], &[1.0, 2.0]).unwrap();
        assert!(unpack(&packed, 3).is_none());
        assert!(unpack(&packed, 1).is_none());
        assert!(unpack(b"not zstd", 1).is_none());
    }
}
