//! Run-aware grouping: an aggregate that hashes each run of equal group keys once, not
//! each row.
//!
//! Per-series SQL groups by every label of a metric (`GROUP BY ALL`), often with a time
//! bucket: five or six key columns per row. DataFusion's `AggregateExec` hashes and compares
//! all of them for every input row. Metric rows do not come in any order, though: block files
//! are sorted by series and then time, and the head returns each series' samples together,
//! so consecutive rows almost always carry the same key (a series' samples within one
//! 5-minute bucket at 15 s are a run of 20 rows).
//!
//! [`RunAggregateExec`] takes the place of an `AggregateExec` that reads raw rows
//! (`Partial`, `Single`, `SinglePartitioned` modes) and groups by at least one string column.
//! For each input batch it finds the runs of equal keys (arrow's `partition` kernel: one
//! vectorised comparison per key column and row), interns only the first row of each run in
//! DataFusion's own group table, and gives every row of the run that group. The aggregate
//! functions are DataFusion's `GroupsAccumulator`s, fed exactly as `AggregateExec` feeds them;
//! the output (schema, partitioning, state columns) is the replaced node's. Input in no
//! useful order costs one comparison pass more than before: when runs average under 4/3 rows
//! in a batch, the batch is interned row by row, as `AggregateExec` would.
//!
//! Left to `AggregateExec`: grouping sets, `DISTINCT` and `FILTER` aggregates, ordered input
//! (its streaming modes), `LIMIT` pushed into the aggregate, and aggregates without a groups
//! accumulator. Memory is accounted in the query's pool like `AggregateExec`'s, without
//! spilling (spilling is off in Arrowhead).
//!
//! Measured on the query benchmark's data (release build, medians of 10, two alternations
//! with and without the rule): per-series rate (792 k rows, 40 k groups, runs of 20 rows)
//! 72.5 → 68.0 ms, histogram p99 (1.58 M rows) 150 → 131–136 ms. What remains of those
//! queries is mostly the counter functions' partial states (every sample, as lists, through
//! the repartition to the final aggregate) and the Parquet scan.

use std::fmt;
use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, UInt32Array};
use arrow::compute::kernels::partition::partition;
use arrow::compute::take;
use arrow::datatypes::{DataType, SchemaRef};
use datafusion::common::Result;
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TransformedResult, TreeNode, TreeNodeRecursion};
use datafusion::execution::TaskContext;
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryReservation};
use datafusion::logical_expr::{EmitTo, GroupsAccumulator};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::aggregate::AggregateFunctionExpr;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::aggregates::group_values::{GroupValues, new_group_values};
use datafusion::physical_plan::aggregates::order::GroupOrdering;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode, aggregate_expressions};
use datafusion::physical_plan::distribution_requirements::InputDistributionRequirements;
use datafusion::physical_plan::metrics::{
    BaselineMetrics, Count, ExecutionPlanMetricsSet, MetricBuilder, MetricsSet,
};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, InputOrderMode, PlanProperties,
    SendableRecordBatchStream,
};
use futures::{StreamExt, TryStreamExt};

/// Below this many rows per run on average a batch is interned row by row.
const MIN_MEAN_RUN: f64 = 4.0 / 3.0;

/// The physical optimizer rule that puts a [`RunAggregateExec`] in place of each
/// `AggregateExec` it can run. Runs after DataFusion's own rules, so the plan's shape
/// (partitioning, repartitions, the final aggregate) is already settled.
#[derive(Debug, Default)]
pub struct RunAggregateRule;

impl PhysicalOptimizerRule for RunAggregateRule {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| {
            let Some(aggregate) = node.downcast_ref::<AggregateExec>() else {
                return Ok(Transformed::no(node));
            };
            if !RunAggregateExec::can_run(aggregate) {
                return Ok(Transformed::no(node));
            }
            let exec = RunAggregateExec::new(Arc::new(aggregate.clone()));
            Ok(Transformed::yes(Arc::new(exec) as Arc<dyn ExecutionPlan>))
        })
        .data()
    }

    fn name(&self) -> &str {
        "run_aggregate"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// An aggregate over raw rows that interns one row per run of equal group keys. Wraps the
/// `AggregateExec` it replaces, whose plan properties it keeps.
#[derive(Debug)]
pub struct RunAggregateExec {
    aggregate: Arc<AggregateExec>,
    metrics: ExecutionPlanMetricsSet,
}

impl RunAggregateExec {
    fn new(aggregate: Arc<AggregateExec>) -> Self {
        Self {
            aggregate,
            metrics: ExecutionPlanMetricsSet::new(),
        }
    }

    /// Whether `aggregate` is one this node runs with the same result.
    fn can_run(aggregate: &AggregateExec) -> bool {
        let raw_input = matches!(
            aggregate.mode(),
            AggregateMode::Partial | AggregateMode::Single | AggregateMode::SinglePartitioned
        );
        let group_by = aggregate.group_expr();
        let input = aggregate.input().schema();
        let string_key = group_by.expr().iter().any(|(expr, _)| {
            expr.data_type(&input).is_ok_and(|t| {
                matches!(
                    t,
                    DataType::Utf8
                        | DataType::Utf8View
                        | DataType::LargeUtf8
                        | DataType::Dictionary(..)
                )
            })
        });
        raw_input
            && string_key
            && group_by.is_single()
            && aggregate.filter_expr().iter().all(Option::is_none)
            && aggregate.limit_options().is_none()
            && aggregate.dynamic_expressions_produced().is_empty()
            && *aggregate.input_order_mode() == InputOrderMode::Linear
            && aggregate
                .required_input_ordering()
                .iter()
                .all(Option::is_none)
            && aggregate
                .aggr_expr()
                .iter()
                .all(|a| !a.is_distinct() && a.groups_accumulator_supported())
    }
}

impl DisplayAs for RunAggregateExec {
    fn fmt_as(&self, t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Run")?;
        self.aggregate.fmt_as(t, f)
    }
}

impl ExecutionPlan for RunAggregateExec {
    fn name(&self) -> &str {
        "RunAggregateExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.aggregate.properties()
    }

    fn input_distribution_requirements(&self) -> InputDistributionRequirements {
        self.aggregate.input_distribution_requirements()
    }

    fn required_input_ordering(
        &self,
    ) -> Vec<Option<datafusion::physical_expr::OrderingRequirements>> {
        self.aggregate.required_input_ordering()
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![false]
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![self.aggregate.input()]
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        self.aggregate.apply_expressions(f)
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        #[expect(deprecated, reason = "the trait still requires this method")]
        let replaced = Arc::clone(&self.aggregate).with_new_children(children)?;
        match replaced.downcast_ref::<AggregateExec>() {
            Some(aggregate) if Self::can_run(aggregate) => {
                Ok(Arc::new(Self::new(Arc::new(aggregate.clone()))))
            }
            _ => Ok(replaced),
        }
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let input = self
            .aggregate
            .input()
            .execute(partition, Arc::clone(&context))?;
        let mut groups = RunGroups::new(&self.aggregate, &self.metrics, partition, &context)?;
        let schema = self.schema();
        let batch_size = context.session_config().batch_size().max(1);
        let baseline = BaselineMetrics::new(&self.metrics, partition);
        let output = futures::stream::once(async move {
            let mut input = input;
            while let Some(batch) = input.next().await {
                let batch = batch?;
                let _timer = baseline.elapsed_compute().timer();
                groups.update(&batch)?;
            }
            let _timer = baseline.elapsed_compute().timer();
            let out = groups.finish()?;
            baseline.record_output(out.num_rows());
            let batches: Vec<Result<RecordBatch>> = (0..out.num_rows())
                .step_by(batch_size)
                .map(|offset| Ok(out.slice(offset, batch_size.min(out.num_rows() - offset))))
                .collect();
            Ok::<_, datafusion::common::DataFusionError>(futures::stream::iter(batches))
        })
        .try_flatten();
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, output)))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }
}

/// An aggregate function's accumulator and the expressions of its arguments.
type Accumulator = (Box<dyn GroupsAccumulator>, Vec<Arc<dyn PhysicalExpr>>);

/// One partition's group table and accumulators.
struct RunGroups {
    group_exprs: Vec<Arc<dyn PhysicalExpr>>,
    group_values: Box<dyn GroupValues>,
    accumulators: Vec<Accumulator>,
    /// Output state columns (`Partial`) or final values.
    emit_state: bool,
    schema: SchemaRef,
    reservation: MemoryReservation,
    /// Group of each row of the current batch.
    row_groups: Vec<usize>,
    /// Group of each run's first row.
    run_groups: Vec<usize>,
    runs: Count,
    interned_rows: Count,
}

impl RunGroups {
    fn new(
        aggregate: &AggregateExec,
        metrics: &ExecutionPlanMetricsSet,
        partition: usize,
        context: &TaskContext,
    ) -> Result<Self> {
        let group_by = aggregate.group_expr();
        let input_schema = aggregate.input().schema();
        let group_schema = group_by.group_schema(&input_schema)?;
        let arguments = aggregate_expressions(
            aggregate.aggr_expr(),
            aggregate.mode(),
            group_by.num_group_exprs(),
        )?;
        let accumulators = aggregate
            .aggr_expr()
            .iter()
            .zip(arguments)
            .map(|(a, args): (&Arc<AggregateFunctionExpr>, _)| {
                Ok((a.create_groups_accumulator()?, args))
            })
            .collect::<Result<_>>()?;
        let reservation = MemoryConsumer::new(format!("RunAggregateExec[{partition}]"))
            .register(context.memory_pool());
        Ok(Self {
            group_exprs: group_by.input_exprs(),
            group_values: new_group_values(group_schema, &GroupOrdering::None)?,
            accumulators,
            emit_state: *aggregate.mode() == AggregateMode::Partial,
            schema: aggregate.schema(),
            reservation,
            row_groups: Vec::new(),
            run_groups: Vec::new(),
            runs: MetricBuilder::new(metrics).counter("runs", partition),
            interned_rows: MetricBuilder::new(metrics).counter("interned_rows", partition),
        })
    }

    fn update(&mut self, batch: &RecordBatch) -> Result<()> {
        let rows = batch.num_rows();
        if rows == 0 {
            return Ok(());
        }
        let keys: Vec<ArrayRef> = self
            .group_exprs
            .iter()
            .map(|e| e.evaluate(batch)?.into_array(rows))
            .collect::<Result<_>>()?;
        let ranges = partition(&keys)?.ranges();
        self.runs.add(ranges.len());
        if (rows as f64) < ranges.len() as f64 * MIN_MEAN_RUN {
            self.group_values.intern(&keys, &mut self.row_groups)?;
            self.interned_rows.add(rows);
        } else {
            let starts: UInt32Array = ranges.iter().map(|r| r.start as u32).collect();
            let firsts: Vec<ArrayRef> = keys
                .iter()
                .map(|k| take(k.as_ref(), &starts, None))
                .collect::<Result<_, _>>()?;
            self.group_values.intern(&firsts, &mut self.run_groups)?;
            self.interned_rows.add(ranges.len());
            self.row_groups.clear();
            // One allocation for the batch, not a doubling per run.
            self.row_groups.reserve(rows);
            for (range, &group) in ranges.iter().zip(&self.run_groups) {
                self.row_groups
                    .extend(std::iter::repeat_n(group, range.len()));
            }
        }
        let total_groups = self.group_values.len();
        for (accumulator, args) in &mut self.accumulators {
            let values: Vec<ArrayRef> = args
                .iter()
                .map(|e| e.evaluate(batch)?.into_array(rows))
                .collect::<Result<_>>()?;
            accumulator.update_batch(&values, &self.row_groups, None, total_groups)?;
        }
        let size = self.group_values.size()
            + self
                .accumulators
                .iter()
                .map(|(a, _)| a.size())
                .sum::<usize>()
            + (self.row_groups.capacity() + self.run_groups.capacity()) * size_of::<usize>();
        self.reservation.try_resize(size)
    }

    /// Every group with its aggregate states or values, as one batch.
    fn finish(mut self) -> Result<RecordBatch> {
        if self.group_values.is_empty() {
            return Ok(RecordBatch::new_empty(self.schema));
        }
        let mut columns = self.group_values.emit(EmitTo::All)?;
        for (accumulator, _) in &mut self.accumulators {
            if self.emit_state {
                columns.extend(accumulator.state(EmitTo::All)?);
            } else {
                columns.push(accumulator.evaluate(EmitTo::All)?);
            }
        }
        Ok(RecordBatch::try_new(self.schema, columns)?)
    }
}

#[cfg(test)]
mod tests;
