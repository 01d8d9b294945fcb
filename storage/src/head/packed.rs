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
    // Planes are appended one after another into reserved capacity, not written into a
    // zero-filled buffer: the zeroing (a `calloc` and its `memset` of 20 bytes a row) and
    // the indexed writes made packing cost 7 % more instructions (callgrind, the same 95
    // chunks of the ingest benchmark: 114.6 M against 107.1 M).
    let mut raw = Vec::with_capacity(n * 20);
    // Differences first, then one pass per byte plane: each pass writes one contiguous plane,
    // which the compiler vectorises (a row-by-row scatter into 20 planes does not).
    let ds: Vec<u32> = deltas(series.iter().copied(), 0, u32::wrapping_sub);
    // As u64: the same bits as wrapping i64 differences.
    let dt: Vec<u64> = deltas(timestamps.iter().map(|&t| t as u64), 0, u64::wrapping_sub);
    split_planes(&ds, 4, &mut raw, |d, b| (d >> (8 * b)) as u8);
    split_planes(&dt, 8, &mut raw, |d, b| (d >> (8 * b)) as u8);
    split_planes(values, 8, &mut raw, |v, b| (v.to_bits() >> (8 * b)) as u8);
    debug_assert_eq!(raw.len(), n * 20);
    zstd::bulk::compress(&raw, LEVEL)
        .ok()
        .map(Vec::into_boxed_slice)
}

/// Each value minus the one before it (the first minus `zero`).
fn deltas<T: Copy>(values: impl Iterator<Item = T>, zero: T, sub: fn(T, T) -> T) -> Vec<T> {
    let mut prev = zero;
    values
        .map(|v| {
            let d = sub(v, prev);
            prev = v;
            d
        })
        .collect()
}

/// Running sums of `diffs` from `zero`: the inverse of [`deltas`].
fn sums<T: Copy>(diffs: impl Iterator<Item = T>, zero: T, add: fn(T, T) -> T) -> Vec<T> {
    let mut acc = zero;
    diffs
        .map(|d| {
            acc = add(acc, d);
            acc
        })
        .collect()
}

/// Appends `planes` planes to `out`: plane `b` holds byte `b` of every value, in order.
fn split_planes<T: Copy>(
    values: &[T],
    planes: usize,
    out: &mut Vec<u8>,
    byte: impl Fn(T, usize) -> u8,
) {
    for b in 0..planes {
        out.extend(values.iter().map(|&v| byte(v, b)));
    }
}

/// Reassembles values from their byte planes (the inverse of [`split_planes`]), as u64.
fn join_planes(planes: &[u8], n: usize) -> Vec<u64> {
    let mut out = vec![0u64; n];
    if n == 0 {
        return out;
    }
    for (b, plane) in planes.chunks_exact(n).enumerate() {
        for (o, &byte) in out.iter_mut().zip(plane) {
            *o |= u64::from(byte) << (8 * b);
        }
    }
    out
}

thread_local! {
    /// This thread's zstd decompression context, kept between chunks: a cut or a query
    /// unpacks hundreds of chunks in a row, and creating a context for each (what
    /// `zstd::bulk::decompress` does) made a cut 3–6 % slower (`cargo bench -p
    /// arrowhead-storage --bench cut`: 68.6–71.7 against 66.4–67.1 ms). Contexts are not kept
    /// for packing: a metric seals a chunk every few seconds at most, and a compression
    /// context is several times larger.
    static DECOMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { std::cell::RefCell::new(None) };
}

/// Unpacks `n` rows packed by [`pack`]. `None` when the bytes do not unpack to that many rows
/// (which would mean memory corruption: the bytes never leave the process).
pub(crate) fn unpack(packed: &[u8], n: usize) -> Option<Columns> {
    let raw = DECOMPRESSOR
        .with_borrow_mut(|d| {
            if d.is_none() {
                *d = Some(zstd::bulk::Decompressor::new()?);
            }
            d.as_mut().expect("set above").decompress(packed, n * 20)
        })
        .ok()?;
    if raw.len() != n * 20 {
        return None;
    }
    let (s_planes, rest) = raw.split_at(n * 4);
    let (t_planes, v_planes) = rest.split_at(n * 8);
    let series: Vec<u32> = sums(
        join_planes(s_planes, n).into_iter().map(|d| d as u32),
        0,
        u32::wrapping_add,
    );
    let timestamps: Vec<i64> = sums(join_planes(t_planes, n).into_iter(), 0, u64::wrapping_add)
        .into_iter()
        .map(|t| t as i64)
        .collect();
    let values: Vec<f64> = join_planes(v_planes, n)
        .into_iter()
        .map(f64::from_bits)
        .collect();
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

    #[test]
    fn a_failed_unpack_leaves_the_thread_context_usable() {
        let packed = pack(&[1, 2], &[10, 20], &[1.0, 2.0]).unwrap();
        let mut truncated = packed.to_vec();
        truncated.truncate(packed.len() - 3);
        for _ in 0..3 {
            assert!(unpack(&truncated, 2).is_none());
            assert!(unpack(b"not zstd", 2).is_none());
            let (s, t, v) = unpack(&packed, 2).unwrap();
            assert_eq!((s.as_ref(), t.as_ref()), (&[1, 2][..], &[10, 20][..]));
            assert_eq!(v.as_ref(), &[1.0, 2.0]);
        }
    }
}
