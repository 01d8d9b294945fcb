//! Keeping the resident set close to what is live: the replica's big, rare jobs (a cut, a
//! merge) must not leave their buffers' worth of memory behind.
//!
//! A cut builds each metric's sorted rows and the Parquet writer's buffers on a
//! blocking-pool thread, tens of MiB for a 10-minute block, and frees them once the block is
//! written. With glibc's defaults that memory stays resident: the thread has its own arena;
//! freeing a large mmap'd buffer raises the mmap threshold (up to 32 MiB) and the trim
//! threshold (to twice that), so the next cut's buffers come from the arena's heap, and a
//! heap whose free top is below the trim threshold is never shrunk. `malloc_trim` does not
//! help there: it returns free pages in the middle of heaps, but shrinks only the main
//! arena's top. Measured with 50 targets × ~2,000 series scraped every second and 1-minute
//! blocks (RSS after each cut, MiB): glibc defaults 133, 152, 171 (still growing; the live
//! heap was 56 MiB, by heaptrack); with the thresholds fixed at 32 MiB (mmap) and 8 MiB
//! (trim) 115, 116, 120; at 32 MiB and 1 MiB 109, 111, 111 (104 before the first cut), for
//! the same CPU within the noise (7.5 and 7.4 CPU-seconds over two minutes holding two cuts;
//! glibc defaults 7.0, one run each).
//!
//! So at start-up [`configure_allocator`] fixes the thresholds (which also turns their
//! dynamic growth off): buffers below 32 MiB keep coming from the arenas (no page faults
//! for each one, as an mmap per buffer would cost), and a heap's free top above 1 MiB goes
//! back to the system. After each cut and merge [`release_free_memory`] returns the free
//! pages in the middle. Other allocators purge on their own; both calls do nothing where the
//! C library is not glibc.

/// Largest allocation glibc serves from its arenas (larger ones are mapped on their own).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: libc::c_int = 32 << 20;
/// A heap's free top beyond this goes back to the system at once.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const TRIM_THRESHOLD: libc::c_int = 1 << 20;

/// Fixes glibc's mmap and trim thresholds (see the module docs). Call once, early.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
pub(crate) fn configure_allocator() {
    // SAFETY: `mallopt` only sets allocator parameters (it takes the allocator's locks
    // itself); both values are in the ranges glibc accepts, and a refusal (return 0) leaves
    // the defaults, which are correct, only less frugal.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
        libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD);
    }
}

/// Nothing to configure where the C library is not glibc (see the module docs).
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub(crate) fn configure_allocator() {}

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
