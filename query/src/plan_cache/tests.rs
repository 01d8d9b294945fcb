use datafusion::functions::datetime::expr_fn::now;
use datafusion::logical_expr::{LogicalPlanBuilder, lit, placeholder};
use storage::HeadConfig;

use super::*;

fn cache(capacity: usize) -> PlanCache {
    PlanCache::new(Arc::new(Head::new(HeadConfig::default())), capacity)
}

/// A plan over no table, projecting `e`.
fn plan_of(e: Expr) -> LogicalPlan {
    LogicalPlanBuilder::empty(true)
        .project(vec![e.alias("a")])
        .unwrap()
        .build()
        .unwrap()
}

const SHAPE: Shape = Shape {
    single_pass: true,
    single_table: true,
};

#[test]
fn plans_are_found_by_their_exact_text_and_the_least_recently_used_go_first() {
    let c = cache(2);
    let p = plan_of(lit(1));
    c.insert("SELECT 1", 0, &p, SHAPE, true);
    c.insert("SELECT 2", 0, &p, SHAPE, true);
    assert!(c.get("select 1", 0).is_none(), "the text is the key");
    let hit = c.get("SELECT 1", 0).unwrap();
    assert!(!hit.optimized && hit.optimizable);
    assert_eq!(hit.shape, SHAPE);
    // Full: the entry used longest ago ("SELECT 2") makes room.
    c.insert("SELECT 3", 0, &p, SHAPE, true);
    assert_eq!(c.len(), 2);
    assert!(c.get("SELECT 2", 0).is_none());
    assert!(c.get("SELECT 1", 0).is_some());
    assert!(c.get("SELECT 3", 0).is_some());
}

#[test]
fn the_optimized_plan_replaces_the_logical_one_only_where_allowed() {
    let c = cache(8);
    let logical = plan_of(lit(1));
    let optimized = plan_of(lit(2));
    c.insert("fixed", 0, &logical, SHAPE, true);
    c.insert("with now()", 0, &logical, SHAPE, false);
    c.optimized("fixed", 0, &optimized);
    c.optimized("with now()", 0, &optimized);
    let fixed = c.get("fixed", 0).unwrap();
    assert!(fixed.optimized);
    assert_eq!(fixed.plan, optimized);
    let with_now = c.get("with now()", 0).unwrap();
    assert!(
        !with_now.optimized,
        "a plan with now() is optimized at each run"
    );
    assert_eq!(with_now.plan, logical);
    // Inserting again keeps what is there.
    c.insert("fixed", 0, &logical, SHAPE, true);
    assert!(c.get("fixed", 0).unwrap().optimized);
    // An optimized plan made on an older block view is not kept.
    c.insert("late", 0, &logical, SHAPE, true);
    assert!(c.get("other", 1).is_none());
    c.optimized("late", 0, &optimized);
    assert!(c.get("late", 1).is_none());
}

#[test]
fn a_new_block_view_empties_the_cache_and_older_plans_are_not_kept() {
    let c = cache(8);
    let p = plan_of(lit(1));
    c.insert("a", 3, &p, SHAPE, true);
    assert!(c.get("a", 3).is_some());
    assert!(c.get("a", 4).is_none(), "made on the view before");
    assert!(c.is_empty());
    // A plan made on view 3 (planned while the cut happened) is not kept any more.
    c.insert("b", 3, &p, SHAPE, true);
    assert!(c.is_empty());
    // A plan made on a newer view than the cache has seen empties it as well.
    c.insert("c", 4, &p, SHAPE, true);
    c.insert("d", 5, &p, SHAPE, true);
    assert_eq!(c.len(), 1);
    assert!(c.get("d", 5).is_some());
    // A caller that read the view's generation before the cut finds nothing, and leaves the
    // newer entries in place.
    assert!(c.get("d", 4).is_none());
    assert!(c.get("d", 5).is_some());
}

#[test]
fn capacity_zero_keeps_nothing() {
    let c = cache(0);
    c.insert("SELECT 1", 0, &plan_of(lit(1)), SHAPE, true);
    assert!(c.get("SELECT 1", 0).is_none());
    assert!(c.is_empty());
}

#[test]
fn what_may_be_kept_depends_on_functions_placeholders_explain_and_length() {
    assert_eq!(keep(&plan_of(lit(1)), "SELECT 1"), Keep::Optimized);
    assert_eq!(keep(&plan_of(now()), "SELECT now()"), Keep::Logical);
    assert_eq!(
        keep(
            &plan_of(datafusion::functions::math::expr_fn::random()),
            "r"
        ),
        Keep::Logical
    );
    assert_eq!(
        keep(&plan_of(placeholder("$1")), "SELECT $1"),
        Keep::Logical
    );
    let explain = LogicalPlanBuilder::from(plan_of(lit(1)))
        .explain(false, false)
        .unwrap()
        .build()
        .unwrap();
    assert_eq!(keep(&explain, "EXPLAIN SELECT 1"), Keep::No);
    let long = format!("SELECT 1 {}", " ".repeat(MAX_SQL_BYTES));
    assert_eq!(keep(&plan_of(lit(1)), &long), Keep::No);
}
