//! Plans of statements seen before, reused when the same SQL text comes again.
//!
//! Dashboards and scripts send the same statements again and again. Planning one costs more
//! than running it when it reads little: on the query benchmark's max over 1 h (13,200 rows),
//! parsing, turning the SQL into a logical plan and optimizing it took ~1.2 of the ~2.2 ms
//! the server spent on a statement after an idle gap.
//! So the engine keeps, per SQL text, the plan it made (measured on that question with 20 ms
//! idle before each statement: 3.2–3.4 ms with the kept plan against 4.7–4.9 ms when every
//! statement's text differs):
//!
//! * the **logical plan** of every statement that reads metric tables only, which spares the
//!   parse and the SQL-to-plan step;
//! * the **optimized plan** in its place once the statement ran, when the plan has no
//!   placeholder and calls no function whose result depends on when it runs (`now()`,
//!   `current_date`, `random()`…: any scalar function not `Immutable`), which spares the
//!   optimizer too. A statement with such a function keeps its logical plan and is optimized
//!   at each run, so `now()` is the time of that run.
//!
//! A plan stays right exactly as long as the tables it resolved are the ones a new plan would
//! resolve, which is checked at each use:
//!
//! * the block view's generation is the one the plan was made on (a cut, merge, retention
//!   pass or a block set aside changes the files a table lists and where its head part
//!   starts): otherwise every entry goes;
//! * for each metric table, the head still holds the same part of that metric (or still none)
//!   with the same columns: a new label makes a new column, so the statement is planned
//!   again and `SELECT *` shows it.
//!
//! Statements over `system.*` or `information_schema` tables are never kept: those tables are
//! filled when they are resolved. Neither are `EXPLAIN` (its output shows the planning) or
//! statements over 64 KiB. Rows are always read when a plan runs, never when it was made,
//! so a reused plan sees every sample ingested since. At most `query.plan_cache` entries are
//! kept (256 by default; the least recently used go first; 0 keeps none), each its text and
//! a plan of a few kilobytes with the list of block files of each table it reads.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::datasource::source_as_provider;
use datafusion::logical_expr::{Expr, LogicalPlan, Volatility};
use parking_lot::Mutex;
use storage::Head;

use crate::scan::MetricTable;

/// Statements longer than this are planned each time.
pub const MAX_SQL_BYTES: usize = 64 << 10;

/// How a plan is optimized and run, decided on the logical plan and kept with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    /// One optimizer pass gives the final plan (`single_pass_shape` in the engine).
    pub single_pass: bool,
    /// The rules that only rewrite joins, unions, subqueries, limits and windows can be
    /// skipped (see [`crate::plan_rules`]).
    pub single_table: bool,
}

/// A plan found for a statement.
#[derive(Debug, Clone)]
pub struct Cached {
    /// The plan: optimized when `optimized` is set, the logical plan of the SQL otherwise.
    pub plan: LogicalPlan,
    /// Whether `plan` has been through the optimizer already.
    pub optimized: bool,
    /// Whether the optimized plan may be kept in its place ([`Keep::Optimized`]).
    pub optimizable: bool,
    /// How it is optimized and run.
    pub shape: Shape,
}

/// What the cache can do with a plan, decided when it is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keep {
    /// Not kept (reads a table other than a metric's, is an `EXPLAIN`, or is too long).
    No,
    /// The logical plan is kept; it is optimized at each run.
    Logical,
    /// The logical plan is kept, then the optimized plan once it is made.
    Optimized,
}

/// Plans by SQL text (see the module documentation).
#[derive(Debug)]
pub struct PlanCache {
    head: Arc<Head>,
    capacity: usize,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// The block view generation every entry was made on.
    generation: u64,
    entries: HashMap<Arc<str>, Entry>,
    /// Use counter: the entry with the smallest `used` goes first.
    clock: u64,
}

#[derive(Debug)]
struct Entry {
    cached: Cached,
    used: u64,
}

impl PlanCache {
    /// A cache of at most `capacity` plans over tables of `head`.
    pub fn new(head: Arc<Head>, capacity: usize) -> Self {
        Self {
            head,
            capacity,
            inner: Mutex::default(),
        }
    }

    /// The plan kept for `sql`, if it was made on block view `generation` and its tables are
    /// still the ones a new plan would resolve.
    pub fn get(&self, sql: &str, generation: u64) -> Option<Cached> {
        if self.capacity == 0 {
            return None;
        }
        let mut inner = self.inner.lock();
        if generation != inner.generation {
            // A newer view: every entry is stale. An older one (a caller that read the
            // generation just before a cut): its plan is made afresh, the entries stay.
            if generation > inner.generation {
                inner.entries.clear();
                inner.generation = generation;
            }
            return None;
        }
        inner.clock += 1;
        let clock = inner.clock;
        let entry = inner.entries.get_mut(sql)?;
        if !tables_current(&entry.cached.plan, &self.head) {
            inner.entries.remove(sql);
            return None;
        }
        entry.used = clock;
        Some(entry.cached.clone())
    }

    /// Keeps the logical `plan` of `sql`, made on block view `generation`, unless an entry
    /// is there already (possibly optimized). `optimizable`: the optimized plan may take its
    /// place later ([`Keep::Optimized`]).
    pub fn insert(
        &self,
        sql: &str,
        generation: u64,
        plan: &LogicalPlan,
        shape: Shape,
        optimizable: bool,
    ) {
        if self.capacity == 0 {
            return;
        }
        let mut inner = self.inner.lock();
        if generation < inner.generation {
            return;
        }
        if generation > inner.generation {
            inner.entries.clear();
            inner.generation = generation;
        }
        if inner.entries.contains_key(sql) {
            return;
        }
        if inner.entries.len() >= self.capacity
            && let Some(oldest) = inner
                .entries
                .iter()
                .min_by_key(|(_, e)| e.used)
                .map(|(k, _)| Arc::clone(k))
        {
            inner.entries.remove(&oldest);
        }
        inner.clock += 1;
        let used = inner.clock;
        inner.entries.insert(
            Arc::from(sql),
            Entry {
                cached: Cached {
                    plan: plan.clone(),
                    optimized: false,
                    optimizable,
                    shape,
                },
                used,
            },
        );
    }

    /// Puts the optimized `plan` of `sql` in place of its logical plan, if that entry is
    /// still there and of the same generation.
    pub fn optimized(&self, sql: &str, generation: u64, plan: &LogicalPlan) {
        let mut inner = self.inner.lock();
        if inner.generation != generation {
            return;
        }
        if let Some(entry) = inner.entries.get_mut(sql)
            && entry.cached.optimizable
            && !entry.cached.optimized
        {
            entry.cached.plan = plan.clone();
            entry.cached.optimized = true;
        }
    }

    /// Entries kept now.
    pub fn len(&self) -> usize {
        self.inner.lock().entries.len()
    }

    /// Whether nothing is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What may be kept of logical `plan` (the SQL's plan, before any optimization).
pub fn keep(plan: &LogicalPlan, sql: &str) -> Keep {
    if sql.len() > MAX_SQL_BYTES
        || matches!(
            plan,
            LogicalPlan::Explain(_) | LogicalPlan::Analyze(_) | LogicalPlan::DescribeTable(_)
        )
    {
        return Keep::No;
    }
    let mut metric_tables_only = true;
    let mut fixed = true;
    let _ = plan.apply_with_subqueries(|node| {
        if let LogicalPlan::TableScan(scan) = node
            && !source_as_provider(&scan.source)
                .is_ok_and(|p| p.downcast_ref::<MetricTable>().is_some())
        {
            metric_tables_only = false;
            return Ok(TreeNodeRecursion::Stop);
        }
        if node.inputs().is_empty()
            && !matches!(
                node,
                LogicalPlan::TableScan(_) | LogicalPlan::Values(_) | LogicalPlan::EmptyRelation(_)
            )
        {
            // A leaf that is neither a table nor literal rows (an extension, a recursive
            // query's work table): its contents may not be fixed by the text.
            metric_tables_only = false;
            return Ok(TreeNodeRecursion::Stop);
        }
        for e in node.expressions() {
            let _ = e.apply(|e| {
                if depends_on_the_run(e) {
                    fixed = false;
                    return Ok(TreeNodeRecursion::Stop);
                }
                Ok(TreeNodeRecursion::Continue)
            });
        }
        Ok(TreeNodeRecursion::Continue)
    });
    match (metric_tables_only, fixed) {
        (false, _) => Keep::No,
        (true, false) => Keep::Logical,
        (true, true) => Keep::Optimized,
    }
}

/// Whether `e` alone could evaluate differently from one run to the next, or is bound at
/// each run: the optimizer would fold it into a constant of one run.
fn depends_on_the_run(e: &Expr) -> bool {
    match e {
        Expr::ScalarFunction(f) => f.func.signature().volatility != Volatility::Immutable,
        Expr::Placeholder(_) | Expr::ScalarVariable(..) => true,
        _ => false,
    }
}

/// Whether every metric table `plan` scans is still the table a new plan would resolve.
fn tables_current(plan: &LogicalPlan, head: &Head) -> bool {
    let mut current = true;
    let _ = plan.apply_with_subqueries(|node| {
        if let LogicalPlan::TableScan(scan) = node {
            current = source_as_provider(&scan.source).is_ok_and(|p| {
                p.downcast_ref::<MetricTable>()
                    .is_some_and(|t| t.is_current(head))
            });
            if !current {
                return Ok(TreeNodeRecursion::Stop);
            }
        }
        Ok(TreeNodeRecursion::Continue)
    });
    current
}

#[cfg(test)]
mod tests;
