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
//!
//! # Two allocators
//!
//! Queries are the opposite case: every query allocates and frees tens of MiB (decoded
//! columns, group tables, partial aggregate states), and with the thresholds above each
//! query's heap top goes back to the system and is faulted in again by the next one (page
//! faults and page clearing were ~14 % of the query benchmark's per-series rate, by perf).
//! mimalloc serves that pattern much faster, but keeps more resident for the replica's
//! long-lived head: the same ingest run (50 targets × 2,000 series at 15 s) held 102 MiB
//! with glibc and 138 MiB with mimalloc (114 MiB with its purge delay at 0).
//!
//! So [`ReplicaAllocator`] gives each its own: threads of the query runtime (marked by
//! [`use_query_allocator`], which the query engine runs on each of its threads) allocate
//! from mimalloc, every other thread from glibc. A block is freed by the allocator that
//! owns it, whichever thread frees it: mimalloc's page map says in a few loads whether a
//! pointer is its own. Measured on the query benchmark's data (medians of 10, two
//! alternations of the binaries): per-series rate 62–75 → 46–49 ms, histogram p99 134–144 →
//! 93–105 ms (mimalloc for the whole process gave about the same); ingest unchanged (glibc
//! serves it as before; RSS 105 MiB before the cut in the aligned ingest benchmark).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use mimalloc::MiMalloc;

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

/// While alive, freed memory stays with the allocator: glibc's trim threshold is raised, so
/// a cut's buffers, freed metric by metric, are reused by the next metric instead of going
/// back to the system and being faulted in again. When the last one drops, the threshold is
/// restored and the free memory returned (see [`release_free_memory`]). Cuts hold one, and
/// so do passes of the compaction loop that have a merge to run.
///
/// Why: with the threshold at 1 MiB, each metric's sorted rows, columns and Parquet buffers
/// were returned when freed and mapped, faulted and zeroed anew for the next metric. By a
/// perf profile of the cut of the ingest benchmark's 3.9 M samples (61 metrics), page
/// faults, page clearing and unmapping were about two thirds of the cut thread's samples.
/// Two replicas side by side on one core, scraping the ingest benchmark's 50 targets from a
/// 10-minute boundary, measured from 400 to 1000 s (a window holding one cut of a full
/// block): 0.484 → 0.413 CPU-seconds per million samples (0.853×) with the hold. In an
/// aligned run against Prometheus the memory after the cut was as low as before (943 bytes
/// per series).
#[must_use = "memory is held only while the guard lives"]
pub(crate) struct HoldFreedMemory(());

/// Jobs holding freed memory now; the threshold is restored when the count returns to 0.
static HOLDERS: std::sync::Mutex<usize> = std::sync::Mutex::new(0);

impl HoldFreedMemory {
    pub(crate) fn new() -> Self {
        let mut holders = HOLDERS
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if *holders == 0 {
            set_trim_threshold(HELD_TRIM_THRESHOLD);
        }
        *holders += 1;
        Self(())
    }
}

impl Drop for HoldFreedMemory {
    fn drop(&mut self) {
        {
            let mut holders = HOLDERS
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            *holders -= 1;
            if *holders == 0 {
                set_trim_threshold(TRIM_THRESHOLD);
            }
        }
        // By glibc's source, a thread arena's free top shrinks only when a free of at least
        // 64 KiB reaches it (`malloc_trim` returns free chunks inside heaps, and the top of
        // the main arena only): a buffer freed here, on the thread that did the job, has
        // its arena apply the restored threshold now rather than at its next large free.
        drop(std::hint::black_box(Vec::<u8>::with_capacity(1 << 20)));
        release_free_memory();
    }
}

/// The trim threshold while a job holds freed memory: above any cut's or merge's buffers.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const HELD_TRIM_THRESHOLD: libc::c_int = 1 << 30;
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
const HELD_TRIM_THRESHOLD: i32 = 0;
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
const TRIM_THRESHOLD: i32 = 0;

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn set_trim_threshold(bytes: libc::c_int) {
    // SAFETY: as in `configure_allocator`: `mallopt` only sets a parameter, under the
    // allocator's own locks, and the value is one glibc accepts.
    unsafe {
        libc::mallopt(libc::M_TRIM_THRESHOLD, bytes);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn set_trim_threshold(_bytes: i32) {}

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

/// The process's allocator: mimalloc on query threads, glibc's malloc elsewhere (see the
/// module docs).
pub(crate) struct ReplicaAllocator;

thread_local! {
    /// Set on the query runtime's threads.
    static QUERY_THREAD: Cell<bool> = const { Cell::new(false) };
}

/// Makes the calling thread allocate from mimalloc from now on.
pub(crate) fn use_query_allocator() {
    QUERY_THREAD.with(|q| q.set(true));
}

fn on_query_thread() -> bool {
    QUERY_THREAD.try_with(Cell::get).unwrap_or(false)
}

/// Whether mimalloc owns `ptr`.
#[allow(unsafe_code)]
fn from_mimalloc(ptr: *mut u8) -> bool {
    // SAFETY: `mi_is_in_heap_region` only reads mimalloc's page map for the address; it is
    // defined for any pointer value (false for memory mimalloc never handed out, including
    // before mimalloc first allocates).
    unsafe { libmimalloc_sys::mi_is_in_heap_region(ptr.cast()) }
}

// SAFETY: every block comes from exactly one of two sound allocators and goes back to the
// same one: allocation picks by thread, while deallocation and reallocation pick by the
// pointer's owner (mimalloc's page map), so a block allocated on one kind of thread and
// freed or grown on another is handled by the allocator that made it. Layouts are passed
// through unchanged, so each allocator's alignment guarantees hold.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for ReplicaAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract (non-zero size) is passed on as is.
        unsafe {
            if on_query_thread() {
                MiMalloc.alloc(layout)
            } else {
                System.alloc(layout)
            }
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as for `alloc`.
        unsafe {
            if on_query_thread() {
                MiMalloc.alloc_zeroed(layout)
            } else {
                System.alloc_zeroed(layout)
            }
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by this allocator with `layout`, hence by the one
        // `from_mimalloc` names.
        unsafe {
            if from_mimalloc(ptr) {
                MiMalloc.dealloc(ptr, layout);
            } else {
                System.dealloc(ptr, layout);
            }
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as for `dealloc`; the block stays with the allocator that owns it.
        unsafe {
            if from_mimalloc(ptr) {
                MiMalloc.realloc(ptr, layout, new_size)
            } else {
                System.realloc(ptr, layout, new_size)
            }
        }
    }
}

#[cfg(all(test, target_os = "linux", target_env = "gnu"))]
mod tests {
    use super::*;

    /// Resident pages of this process, from `/proc/self/statm`.
    fn resident_bytes() -> u64 {
        let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
        let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
        pages * 4096
    }

    /// The tests that read the resident set run one at a time.
    static RESIDENT: std::sync::Mutex<()> = std::sync::Mutex::new(());

    #[test]
    fn freed_memory_is_held_while_a_job_runs_and_returned_when_it_ends() {
        let _serial = RESIDENT
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        const CHUNKS: usize = 32 * 1024;
        const CHUNK: usize = 4096;
        let total = (CHUNKS * CHUNK) as u64;
        // A job's thread fills its arena with 128 MiB and frees it all (into the arena's
        // top, which a free would shrink at once without the hold).
        let (returned_while_held, returned_after) = std::thread::spawn(|| {
            let held = HoldFreedMemory::new();
            let chunks: Vec<Vec<u8>> = (0..CHUNKS).map(|i| vec![i as u8 | 1; CHUNK]).collect();
            let full = resident_bytes();
            drop(chunks);
            let while_held = full.saturating_sub(resident_bytes());
            drop(held);
            (while_held, full.saturating_sub(resident_bytes()))
        })
        .join()
        .unwrap();
        assert!(
            returned_while_held < total / 4,
            "{returned_while_held} of {total} bytes went back while held"
        );
        assert!(
            returned_after > total / 2,
            "only {returned_after} of {total} bytes went back after the hold"
        );
    }

    #[test]
    fn memory_freed_on_another_thread_goes_back_to_the_system() {
        let _serial = RESIDENT
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
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

    #[test]
    fn query_threads_allocate_from_mimalloc_and_blocks_go_back_to_their_owner() {
        let on_query = || {
            std::thread::spawn(|| {
                use_query_allocator();
                vec![7u8; 1000]
            })
            .join()
            .unwrap()
        };
        let from_query = on_query();
        assert!(from_mimalloc(from_query.as_ptr().cast_mut()));
        let here = vec![1u8; 1000];
        assert!(!from_mimalloc(here.as_ptr().cast_mut()));

        // A query block grown and freed on an ordinary thread stays mimalloc's.
        let mut grown = from_query;
        grown.extend_from_slice(&[9; 100_000]);
        assert!(from_mimalloc(grown.as_ptr().cast_mut()));
        assert_eq!((grown[0], grown[100_999]), (7, 9));
        drop(grown);

        // An ordinary block grown and freed on a query thread stays glibc's.
        let grown = std::thread::spawn(move || {
            use_query_allocator();
            let mut v = here;
            v.extend_from_slice(&[4; 100_000]);
            let owner = from_mimalloc(v.as_ptr().cast_mut());
            drop(v);
            owner
        })
        .join()
        .unwrap();
        assert!(!grown);
    }
}
