//! How the query runtime's threads are scheduled: as batch work (Linux `SCHED_BATCH`), so
//! that waking one never preempts a running thread.
//!
//! A Flight SQL statement starts its query as soon as it is planned, while the `FlightInfo`
//! reply travels (see `query::kept_plans`): the handler spawns the query and wakes a second
//! worker of the query runtime to run it. Linux places a woken thread on its waker's CPU
//! when it judges that cache-friendly, and a normal thread woken there preempts the waker.
//! The handler then waited, reply unwritten, until the whole query had run on its CPU: the
//! client only learned of the query's ticket after the query it was about to ask for had
//! already finished. Seen with `perf record -a -e sched:sched_switch -e
//! sched:sched_wakeup` over 100 statements of the query benchmark's max over 1 h, 20 ms
//! apart (a scratch probe: `GetFlightInfo` then `DoGet` with pyarrow): 86 of 96 wakeups of
//! one query worker by another landed on the waker's CPU, and 88 of them preempted it. On
//! the machine measured the kernel packs threads onto few vCPUs (`sched_vcpu_pack`), which
//! makes this the common case, but any wake-affine placement does it.
//!
//! A `SCHED_BATCH` thread never preempts on wakeup; it runs when its CPU is free or another
//! CPU takes it. So the reply is written first and the query runs while the client reads it
//! and sends its `DoGet`. Median latency of that statement, two alternations of the same
//! binary with and without: 3.98 and 4.14 ms → 3.61 and 3.65 ms (9–12 % less). Back to back
//! after a Prometheus query (the query benchmark's order) the two were within 2 % of each
//! other either way, and within 4 % on the heavier questions (per-series rate, p99, latest),
//! in both directions.
//!
//! It also fits the query runtime's place in the replica: scraping, WAL syncs and HTTP run
//! on normal threads, which still preempt a query thread when they wake, while a query
//! thread waking never preempts them. Batch threads are otherwise scheduled as normal ones
//! (same nice level, same share of the CPU), and an unprivileged process may switch to the
//! policy, so this needs no capability.

/// Puts the calling thread under `SCHED_BATCH` (Linux); a refusal leaves the default policy,
/// which is correct, only slower to answer. Nothing to do on other systems.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
pub(crate) fn run_as_batch() {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: `sched_setscheduler` reads `param` (a valid, initialised struct that outlives
    // the call) and changes only the calling thread's (pid 0) policy; SCHED_BATCH requires a
    // priority of 0.
    let refused = unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &param) } != 0;
    if refused {
        tracing::debug!(
            error = %std::io::Error::last_os_error(),
            "query thread stays under the default scheduling policy"
        );
    }
}

/// Nothing to do where there is no `SCHED_BATCH` (see the module docs).
#[cfg(not(target_os = "linux"))]
pub(crate) fn run_as_batch() {}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    /// The scheduling policy of the calling thread.
    #[allow(unsafe_code)]
    fn policy() -> libc::c_int {
        // SAFETY: `sched_getscheduler(0)` only reads the calling thread's policy.
        unsafe { libc::sched_getscheduler(0) }
    }

    #[test]
    fn the_calling_thread_and_the_threads_it_starts_become_batch() {
        let before = std::thread::spawn(policy).join().unwrap();
        assert_eq!(before, libc::SCHED_OTHER);
        let (marked, sibling) = std::thread::spawn(|| {
            super::run_as_batch();
            (policy(), std::thread::spawn(policy).join().unwrap())
        })
        .join()
        .unwrap();
        assert_eq!(marked, libc::SCHED_BATCH);
        // Threads it starts afterwards inherit the policy; threads started before do not.
        assert_eq!(sibling, libc::SCHED_BATCH);
        assert_eq!(policy(), libc::SCHED_OTHER);
    }
}
