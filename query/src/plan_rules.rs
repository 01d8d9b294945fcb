//! Which of DataFusion's optimizer rules a query runs.
//!
//! DataFusion runs some twenty-five logical and twenty physical rules on every plan. On the
//! single-table queries dashboards send most (a filter, an aggregate or two, a sort) many of
//! them are walks that find nothing to do: the join, union, subquery, limit and window rules
//! look for operators such a plan does not have. When the query is small enough for one
//! partition (the engine's `run_to_channel` decides), `EnsureRequirements` also finds every
//! ordering and distribution requirement already met, since one partition is one distribution
//! and the planner already put the `ORDER BY` sort in place. Each walk costs little when warm,
//! but a dashboard's query usually arrives after an idle gap, when every line of planner code
//! is a cache miss: the query benchmark's max over 1 h spends twice the CPU per query with
//! gaps between queries as back to back.
//!
//! So the engine marks single-table queries ([`PlanSwitches::single_table`]) and the rules
//! below act on the mark:
//! - the logical rules in [`LOGICAL_SHAPE_ONLY`], which rewrite joins, unions, subqueries and
//!   limits, are skipped: the mark is only set on plans with none of those;
//! - on marked plans planned for one partition, the physical rules in [`SHAPE_ONLY`] (joins,
//!   limits, windows) are skipped, and `EnsureRequirements` too when DataFusion's own
//!   `SanityCheckPlan` finds every requirement of the plan met. When one is not (an aggregate
//!   that needs sorted input, such as `array_agg(value ORDER BY timestamp)`), it runs as
//!   usual, so a skipped rule never leaves a plan that gives a different answer. What
//!   skipping it loses is tidiness: it would move the final sort below a projection that only
//!   renames. Plans for every core keep every physical rule: there `EnsureRequirements` also
//!   spreads work over the cores.
//!
//! The other rules (expression simplification, filter and projection pushdown, partial/final
//! aggregate merging, cooperative scheduling, the final sanity check and Arrowhead's own run
//! aggregate) run on every plan. Tests check that marked plans keep the optimized logical plan,
//! the physical operators and the answers of unmarked ones on the shapes the mark is set for
//! (the benchmark's questions among them), and that every name below is a rule of
//! DataFusion's default lists, so a rename on an upgrade fails a test instead of silently
//! running the rule.
//!
//! Measured on the query benchmark's data (max over 1 h through Flight SQL, 300 queries with
//! 20 ms idle before each, against the build before, three alternating pairs): the physical
//! rules alone took 5–14 % less server CPU; with the logical ones too, 631–645 against
//! 718–764 ms (10–16 % less), and median latency 7–12 % lower.

use std::sync::Arc;

use datafusion::common::config::{ConfigExtension, ConfigOptions};
use datafusion::common::extensions_options;
use datafusion::common::tree_node::Transformed;
use datafusion::error::Result;
use datafusion::execution::session_state::SessionState;
use datafusion::logical_expr::LogicalPlan;
use datafusion::optimizer::{ApplyOrder, OptimizerConfig, OptimizerRule};
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_optimizer::optimizer::PhysicalOptimizerContext;
use datafusion::physical_optimizer::sanity_checker::SanityCheckPlan;
use datafusion::physical_plan::ExecutionPlan;

extensions_options! {
    /// Per-query planning switches the engine sets. Clients cannot set them: they run no
    /// `SET` statement.
    pub struct PlanSwitches {
        /// The plan reads one table with no join, union, limit, window or subquery, so the
        /// rules that act only on those may be skipped.
        pub single_table: bool, default = false
    }
}

impl ConfigExtension for PlanSwitches {
    const PREFIX: &'static str = "arrowhead";
}

/// Logical rules that rewrite only joins, unions, subqueries or limits (by their names in
/// DataFusion).
pub const LOGICAL_SHAPE_ONLY: [&str; 13] = [
    "rewrite_set_comparison",
    "optimize_unions",
    "unions_to_filter",
    "eliminate_join",
    "decorrelate_predicate_subquery",
    "scalar_subquery_to_join",
    "decorrelate_lateral_join",
    "extract_equijoin_predicate",
    "eliminate_cross_join",
    "eliminate_limit",
    "filter_null_join_keys",
    "eliminate_outer_join",
    "push_down_limit",
];

/// Physical rules that rewrite only joins, limits or windows (by their names in DataFusion).
pub const SHAPE_ONLY: [&str; 8] = [
    "join_selection",
    "LimitedDistinctAggregation",
    "WindowTopN",
    "LimitAggregation",
    "LimitPushPastWindows",
    "HashJoinBuffering",
    "LimitPushdown",
    "TopKRepartition",
];

/// The rule that adds repartitions and sorts where a requirement is not met.
pub const REQUIREMENTS: &str = "EnsureRequirements";

/// `rules` (DataFusion's physical list, in its order) with [`SHAPE_ONLY`] and [`REQUIREMENTS`] made
/// skippable on marked plans. Any other rule is kept as it is.
pub fn skippable(
    rules: Vec<Arc<dyn PhysicalOptimizerRule + Send + Sync>>,
) -> Vec<Arc<dyn PhysicalOptimizerRule + Send + Sync>> {
    rules
        .into_iter()
        .map(|rule| {
            let skip = if SHAPE_ONLY.contains(&rule.name()) {
                Skip::OnSingleTable
            } else if rule.name() == REQUIREMENTS {
                Skip::OnSingleTableWhenMet
            } else {
                return rule;
            };
            Arc::new(Skippable { rule, skip }) as Arc<dyn PhysicalOptimizerRule + Send + Sync>
        })
        .collect()
}

/// `rules` (DataFusion's logical list, in its order) with [`LOGICAL_SHAPE_ONLY`] made
/// skippable on marked plans. Any other rule is kept as it is.
pub fn skippable_logical(
    rules: Vec<Arc<dyn OptimizerRule + Send + Sync>>,
) -> Vec<Arc<dyn OptimizerRule + Send + Sync>> {
    rules
        .into_iter()
        .map(|rule| {
            if LOGICAL_SHAPE_ONLY.contains(&rule.name()) {
                Arc::new(SkippableLogical { rule }) as Arc<dyn OptimizerRule + Send + Sync>
            } else {
                rule
            }
        })
        .collect()
}

fn marked(config: &ConfigOptions) -> bool {
    config
        .extensions
        .get::<PlanSwitches>()
        .is_some_and(|s| s.single_table)
}

/// A logical rule that leaves marked plans as they are. It keeps the rule's order of
/// application, so on a marked plan DataFusion still walks the nodes, but the rule's own
/// matching is not run.
#[derive(Debug)]
struct SkippableLogical {
    rule: Arc<dyn OptimizerRule + Send + Sync>,
}

impl OptimizerRule for SkippableLogical {
    fn name(&self) -> &str {
        self.rule.name()
    }

    fn apply_order(&self) -> Option<ApplyOrder> {
        self.rule.apply_order()
    }

    fn rewrite(
        &self,
        plan: LogicalPlan,
        config: &dyn OptimizerConfig,
    ) -> Result<Transformed<LogicalPlan>> {
        if marked(&config.options()) {
            return Ok(Transformed::no(plan));
        }
        self.rule.rewrite(plan, config)
    }
}

/// Marks (or unmarks) the plans `state` will make as single-table ones.
pub fn mark_single_table(state: &mut SessionState, single_table: bool) {
    let options = state.config_mut().options_mut();
    if let Some(switches) = options.extensions.get_mut::<PlanSwitches>() {
        switches.single_table = single_table;
    } else if single_table {
        options.extensions.insert(PlanSwitches { single_table });
    }
}

#[derive(Debug, Clone, Copy)]
enum Skip {
    OnSingleTable,
    OnSingleTableWhenMet,
}

/// A physical rule that does not run on marked plans (see the module docs).
#[derive(Debug)]
struct Skippable {
    rule: Arc<dyn PhysicalOptimizerRule + Send + Sync>,
    skip: Skip,
}

impl Skippable {
    fn skips(&self, plan: &Arc<dyn ExecutionPlan>, config: &ConfigOptions) -> bool {
        marked(config)
            && config.execution.target_partitions == 1
            && match self.skip {
                Skip::OnSingleTable => true,
                Skip::OnSingleTableWhenMet => SanityCheckPlan::new()
                    .optimize(Arc::clone(plan), config)
                    .is_ok(),
            }
    }
}

impl PhysicalOptimizerRule for Skippable {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if self.skips(&plan, config) {
            return Ok(plan);
        }
        self.rule.optimize(plan, config)
    }

    fn optimize_with_context(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        context: &dyn PhysicalOptimizerContext,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if self.skips(&plan, context.config_options()) {
            return Ok(plan);
        }
        self.rule.optimize_with_context(plan, context)
    }

    fn name(&self) -> &str {
        self.rule.name()
    }

    fn schema_check(&self) -> bool {
        self.rule.schema_check()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::{DataType, Field, Schema};
    use datafusion::common::DataFusionError;
    use datafusion::optimizer::Optimizer;
    use datafusion::physical_expr::expressions::col;
    use datafusion::physical_expr::{LexOrdering, PhysicalSortExpr};
    use datafusion::physical_optimizer::optimizer::{ConfigOnlyContext, PhysicalOptimizer};
    use datafusion::physical_plan::empty::EmptyExec;
    use datafusion::physical_plan::sorts::sort_preserving_merge::SortPreservingMergeExec;

    /// A rule that fails whenever it runs, under a borrowed name.
    #[derive(Debug)]
    struct Named(&'static str);

    impl PhysicalOptimizerRule for Named {
        fn optimize(
            &self,
            _plan: Arc<dyn ExecutionPlan>,
            _config: &ConfigOptions,
        ) -> Result<Arc<dyn ExecutionPlan>> {
            Err(DataFusionError::Plan(format!("{} ran", self.0)))
        }

        fn name(&self) -> &str {
            self.0
        }

        fn schema_check(&self) -> bool {
            true
        }
    }

    #[test]
    fn marked_plans_skip_shape_rules_and_requirements_already_met() {
        let schema = Arc::new(Schema::new(vec![Field::new("a", DataType::Int64, false)]));
        let met: Arc<dyn ExecutionPlan> = Arc::new(EmptyExec::new(Arc::clone(&schema)));
        let ordering =
            LexOrdering::new([PhysicalSortExpr::new_default(col("a", &schema).unwrap())]).unwrap();
        // A merge of sorted streams over an input that is not sorted.
        let unmet: Arc<dyn ExecutionPlan> =
            Arc::new(SortPreservingMergeExec::new(ordering, Arc::clone(&met)));
        let rules = skippable(vec![
            Arc::new(Named("LimitPushdown")),
            Arc::new(Named(REQUIREMENTS)),
            Arc::new(Named("ProjectionPushdown")),
        ]);
        let runs_on = |rule: usize, plan: &Arc<dyn ExecutionPlan>, marked: bool, cores: usize| {
            let mut config = ConfigOptions::default();
            config.execution.target_partitions = cores;
            if marked {
                config
                    .extensions
                    .insert(PlanSwitches { single_table: true });
            }
            let direct = rules[rule].optimize(Arc::clone(plan), &config).is_err();
            let context = rules[rule]
                .optimize_with_context(Arc::clone(plan), &ConfigOnlyContext::new(&config))
                .is_err();
            assert_eq!(direct, context);
            direct
        };
        let runs = |rule, plan, marked| runs_on(rule, plan, marked, 1);
        // Plans for more than one partition keep every rule.
        assert!(runs_on(0, &met, true, 2) && runs_on(1, &met, true, 2));
        for rule in 0..3 {
            assert!(runs(rule, &met, false) && runs(rule, &unmet, false));
        }
        assert!(!runs(0, &met, true) && !runs(0, &unmet, true));
        assert!(!runs(1, &met, true));
        assert!(runs(1, &unmet, true));
        assert!(runs(2, &met, true) && runs(2, &unmet, true));
    }

    /// A logical rule that fails whenever it runs, under a borrowed name.
    #[derive(Debug)]
    struct NamedLogical(&'static str);

    impl OptimizerRule for NamedLogical {
        fn name(&self) -> &str {
            self.0
        }

        fn rewrite(
            &self,
            _plan: LogicalPlan,
            _config: &dyn OptimizerConfig,
        ) -> Result<Transformed<LogicalPlan>> {
            Err(DataFusionError::Plan(format!("{} ran", self.0)))
        }
    }

    #[test]
    fn marked_plans_skip_logical_shape_rules() {
        use datafusion::logical_expr::{EmptyRelation, LogicalPlan};
        use datafusion::optimizer::OptimizerContext;
        let rules = skippable_logical(vec![
            Arc::new(NamedLogical("push_down_limit")),
            Arc::new(NamedLogical("simplify_expressions")),
        ]);
        let runs = |rule: usize, marked: bool| {
            let mut config = ConfigOptions::default();
            if marked {
                config
                    .extensions
                    .insert(PlanSwitches { single_table: true });
            }
            let context = OptimizerContext::new_with_config_options(Arc::new(config));
            let plan = LogicalPlan::EmptyRelation(EmptyRelation {
                produce_one_row: true,
                schema: Arc::new(datafusion::common::DFSchema::empty()),
            });
            rules[rule].rewrite(plan, &context).is_err()
        };
        assert!(runs(0, false) && runs(1, false));
        assert!(!runs(0, true));
        assert!(runs(1, true));
    }

    /// Every name in `listed` is one of `names` (DataFusion's list), and the wrapped list
    /// keeps DataFusion's order and names.
    fn assert_listed_and_kept(names: &[String], listed: &[&str], wrapped: &[String]) {
        for name in listed {
            assert!(names.iter().any(|n| n == name), "{name} not in {names:?}");
        }
        assert_eq!(wrapped, names);
    }

    #[test]
    fn every_skippable_name_is_a_default_rule() {
        let names = |rules: &[Arc<dyn PhysicalOptimizerRule + Send + Sync>]| -> Vec<String> {
            rules.iter().map(|r| r.name().to_string()).collect()
        };
        let listed: Vec<&str> = SHAPE_ONLY.iter().copied().chain([REQUIREMENTS]).collect();
        assert_listed_and_kept(
            &names(&PhysicalOptimizer::new().rules),
            &listed,
            &names(&skippable(PhysicalOptimizer::new().rules)),
        );

        let names = |rules: &[Arc<dyn OptimizerRule + Send + Sync>]| -> Vec<String> {
            rules.iter().map(|r| r.name().to_string()).collect()
        };
        assert_listed_and_kept(
            &names(&Optimizer::new().rules),
            &LOGICAL_SHAPE_ONLY,
            &names(&skippable_logical(Optimizer::new().rules)),
        );
    }
}
