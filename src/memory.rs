//! Giving freed heap memory back to the operating system after the replica's big, rare jobs.
//!
//! A cut (or a merge) builds a metric's sorted rows and the Parquet writer's buffers on a
//! blocking-pool thread, tens of MiB for a 10-minute block, and frees them once the block is
//! written. glibc keeps what that thread freed in the thread's own arena, mostly as holes
//! below live chunks that its automatic trimming (from the top of a heap only) cannot
//! return; the scrape and WAL threads allocate from their own arenas and never reuse it. So
//! without help the resident set grows by a block's worth of buffers at the first cut and
//! stays there. `malloc_trim(0)` hands every whole free page of every arena back
//! (`madvise(MADV_DONTNEED)`): the pages stay mapped and come back zeroed on the next touch.
//!
//! Measured with `benches/ingest_vs_prometheus.py --align-cut` (50 targets × 1,969 series
//! at 15 s): without the trim the replica's RSS went from 104 MiB before the first cut to
//! 130 MiB after it and stayed there; the figures with it are in the README's storage
//! section. Other allocators (jemalloc, mimalloc) purge on their own; the call is a no-op
//! where the C library is not glibc.

/// Returns the heap's free pages to the operating system (see the module docs). Call it after
/// a job that freed a lot at once; it costs a walk of the allocator's free lists
/// (milliseconds for a heap of a few hundred MiB).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
pub(crate) fn release_free_memory() {
    // SAFETY: `malloc_trim` has no preconditions: it takes each arena's lock itself and only
    // touches memory that is free, so it is sound from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Nothing to do where the C library is not glibc (see the module docs).
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub(crate) fn release_free_memory() {}

#[cfg(all(test, target_os = "linux", target_env = "gnu"))]
mod tests {
    use super::*;

    /// Resident pages of this process, from `/proc/self/statm`.
    fn resident_bytes() -> u64 {
        let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
        let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
        pages * 4096
    }

    #[test]
    fn memory_freed_on_another_thread_goes_back_to_the_system() {
        const CHUNKS: usize = 48 * 1024;
        const CHUNK: usize = 4096;
        // A worker allocates ~192 MiB in small chunks (from its arena, not mmap), frees all
        // but the last one (which pins the arena's top, so glibc's own trimming keeps the
        // rest), as a cut's buffers are freed.
        let keep = std::thread::spawn(|| {
            let mut chunks: Vec<Vec<u8>> = (0..CHUNKS).map(|i| vec![i as u8 | 1; CHUNK]).collect();
            let last = chunks.pop().unwrap();
            drop(chunks);
            last
        })
        .join()
        .unwrap();
        let before = resident_bytes();
        release_free_memory();
        let after = resident_bytes();
        assert_eq!(keep[0], ((CHUNKS - 1) as u8) | 1);
        let freed = before.saturating_sub(after);
        assert!(
            freed > (CHUNKS * CHUNK / 2) as u64,
            "resident {before} -> {after} bytes: the trim released {freed}"
        );
    }
}
