//! Plans kept between the Flight SQL calls of one statement, and queries started ahead of
//! the call that reads them.
//!
//! A Flight SQL client asks for a statement's schema (`GetFlightInfo`, or
//! `CreatePreparedStatement`) and then runs it (`DoGet`), usually within a millisecond. Handles
//! stay the SQL text (see [`crate::flight_sql`]: they work on either replica and survive a
//! restart), but planning the SQL twice cost ~0.5 ms of a ~6 ms short query. So the plan made
//! for the schema is kept, under its handle, for the call that runs it. And since a
//! `GetFlightInfo` is followed by the `DoGet` of its ticket, the query is started at once when
//! a slot is free ([`crate::engine::QueryEngine::start_early`]): it runs while the answer
//! travels to the client and the client sends the `DoGet` (about 0.4 ms on loopback with
//! pyarrow), and that `DoGet` takes the running stream. Either kind of entry:
//!
//! * is taken (removed) by the call that uses it, so a plan runs at most once and a
//!   repeated `DoGet` plans afresh;
//! * is dropped when the block list or the head's read bound changed since it was planned
//!   (a cut, merge or retention pass: the plan lists block files and where the head starts,
//!   and after a cut the head no longer holds the rows of the new block);
//! * expires after [`KEPT_FOR`] (expired entries go at the next keep or take of any handle;
//!   dropping a started query cancels it and frees its slot), and at most [`CAPACITY`] are
//!   kept (oldest go first), so clients that never run what they asked for cost a bounded
//!   amount of memory.
//!
//! A miss only costs the planning it would have cost anyway. Head rows are read when the plan
//! runs, not when it was made, so a kept plan sees the samples ingested in between; the
//! schema is the one the client was given.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::engine::{PlannedQuery, StartedQuery};

/// How long a plan is kept for the call that runs it.
pub const KEPT_FOR: Duration = Duration::from_secs(10);
/// How many plans are kept at most.
pub const CAPACITY: usize = 64;

/// What can be kept: it remembers the block view generation it was planned on.
pub trait Keepable {
    /// The generation of the block view the plan's tables were resolved on, or an older one.
    fn generation(&self) -> u64;
}

impl Keepable for PlannedQuery {
    fn generation(&self) -> u64 {
        PlannedQuery::generation(self)
    }
}

impl Keepable for StartedQuery {
    fn generation(&self) -> u64 {
        StartedQuery::generation(self)
    }
}

/// Plans waiting for the call that runs them.
pub type KeptPlans = Kept<PlannedQuery>;
/// Queries started ahead of the call that reads them.
pub type StartedQueries = Kept<StartedQuery>;

/// Entries waiting for the call that uses them, oldest first.
#[derive(Debug)]
pub struct Kept<T> {
    entries: Mutex<VecDeque<Entry<T>>>,
}

impl<T> Default for Kept<T> {
    fn default() -> Self {
        Self {
            entries: Mutex::default(),
        }
    }
}

#[derive(Debug)]
struct Entry<T> {
    handle: Vec<u8>,
    plan: T,
    kept_at: Instant,
}

impl<T: Keepable> Kept<T> {
    /// Keeps `plan` for the next call with `handle`, replacing one kept before.
    pub fn keep(&self, handle: &[u8], plan: T, now: Instant) {
        let mut entries = self.entries.lock();
        entries.retain(|e| e.handle != handle && now.duration_since(e.kept_at) < KEPT_FOR);
        if entries.len() == CAPACITY {
            entries.pop_front();
        }
        entries.push_back(Entry {
            handle: handle.to_vec(),
            plan,
            kept_at: now,
        });
    }

    /// Takes the plan kept for `handle`, if one is there, younger than [`KEPT_FOR`] and made
    /// on the block view of generation `generation`.
    pub fn take(&self, handle: &[u8], generation: u64, now: Instant) -> Option<T> {
        let mut entries = self.entries.lock();
        // Expired entries go now: a started query among them is cancelled (dropping its
        // stream only closes a channel).
        entries.retain(|e| now.duration_since(e.kept_at) < KEPT_FOR);
        let i = entries.iter().position(|e| e.handle == handle)?;
        let entry = entries.remove(i)?;
        drop(entries);
        (entry.plan.generation() == generation).then_some(entry.plan)
    }

    /// How many plans are kept.
    pub fn len(&self) -> usize {
        self.entries.lock().len()
    }

    /// Whether no plan is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use storage::{Head, HeadConfig};

    use super::*;
    use crate::engine::{QueryConfig, QueryEngine};
    use crate::system::NoTargets;

    async fn plan(sql: &str) -> PlannedQuery {
        let head = Arc::new(Head::new(HeadConfig::default()));
        let engine = QueryEngine::new(head, Arc::new(NoTargets), &QueryConfig::default()).unwrap();
        engine.plan(sql).await.unwrap()
    }

    fn column(p: &PlannedQuery) -> String {
        p.schema().field(0).name().clone()
    }

    #[tokio::test]
    async fn a_plan_is_taken_once_by_its_handle() {
        let kept = KeptPlans::default();
        let t = Instant::now();
        kept.keep(b"a", plan("SELECT 1 AS a").await, t);
        kept.keep(b"b", plan("SELECT 1 AS b").await, t);
        assert!(kept.take(b"c", 0, t).is_none());
        assert_eq!(column(&kept.take(b"b", 0, t).unwrap()), "b");
        assert!(kept.take(b"b", 0, t).is_none(), "taken twice");
        // Keeping under a handle replaces what it held.
        kept.keep(b"a", plan("SELECT 1 AS a2").await, t);
        assert_eq!(kept.len(), 1);
        assert_eq!(column(&kept.take(b"a", 0, t).unwrap()), "a2");
        assert!(kept.is_empty());
    }

    #[tokio::test]
    async fn plans_expire_go_stale_with_the_block_view_and_are_bounded_in_number() {
        let kept = KeptPlans::default();
        let t = Instant::now();
        let p = plan("SELECT 1").await;
        kept.keep(b"old", p.clone(), t);
        assert!(kept.take(b"old", 0, t + KEPT_FOR).is_none(), "expired");
        // Made on generation 0: a view changed since (a cut) makes it unusable.
        kept.keep(b"cut", p.clone(), t);
        assert!(kept.take(b"cut", 1, t).is_none(), "stale view");
        // Keeping drops expired entries, and the oldest beyond the capacity.
        kept.keep(b"expired", p.clone(), t);
        let later = t + KEPT_FOR;
        for i in 0..CAPACITY + 5 {
            kept.keep(format!("h{i}").as_bytes(), p.clone(), later);
        }
        assert_eq!(kept.len(), CAPACITY);
        assert!(kept.take(b"expired", 0, later).is_none());
        assert!(kept.take(b"h4", 0, later).is_none(), "oldest went first");
        assert!(kept.take(b"h5", 0, later).is_some());
        assert!(
            kept.take(format!("h{}", CAPACITY + 4).as_bytes(), 0, later)
                .is_some()
        );
    }
}
