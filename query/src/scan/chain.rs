//! [`ChainExec`]: several inputs read one after another as one partition.
//!
//! A metric table read from both blocks and the head has two inputs. For every core they are
//! united by a `UnionExec` (one partition each, read in parallel). A query planned for one
//! partition gets them chained instead: a union would give it two partitions, and DataFusion
//! would then merge them with a `CoalescePartitionsExec`, which starts a task per input and
//! passes every batch through a channel, or split an aggregate into partial and final stages.
//! Chained, the inputs are read in turn on the query's own task, and the plan keeps the single
//! partition that lets the optimizer skip `EnsureRequirements` (see [`crate::plan_rules`]).

use std::fmt;
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{Result, internal_err};
use datafusion::execution::TaskContext;
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, Partitioning,
    PlanProperties, SendableRecordBatchStream,
};
use futures::{StreamExt, TryStreamExt};

/// Reads every partition of each input in order, as one partition with the inputs' schema.
/// An input is started only when the one before it has ended.
#[derive(Debug)]
pub struct ChainExec {
    inputs: Vec<Arc<dyn ExecutionPlan>>,
    properties: Arc<PlanProperties>,
}

impl ChainExec {
    /// Chains `inputs`, which all have `schema`.
    pub fn new(inputs: Vec<Arc<dyn ExecutionPlan>>, schema: SchemaRef) -> Self {
        let properties = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(schema),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Incremental,
            Boundedness::Bounded,
        ));
        Self { inputs, properties }
    }
}

impl DisplayAs for ChainExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChainExec: inputs={}", self.inputs.len())
    }
}

impl ExecutionPlan for ChainExec {
    fn name(&self) -> &str {
        "ChainExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        self.inputs.iter().collect()
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(Arc::new(Self::new(children, self.schema())))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        if partition != 0 {
            return internal_err!("ChainExec has one partition, not partition {partition}");
        }
        let parts: Vec<(Arc<dyn ExecutionPlan>, usize)> = self
            .inputs
            .iter()
            .flat_map(|input| {
                (0..input.output_partitioning().partition_count())
                    .map(move |i| (Arc::clone(input), i))
            })
            .collect();
        let batches = futures::stream::iter(parts)
            .map(move |(input, i)| input.execute(i, Arc::clone(&context)))
            .try_flatten();
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.schema(),
            batches,
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, RecordBatch};
    use arrow::datatypes::{DataType, Field, Schema};
    use datafusion::datasource::memory::MemorySourceConfig;

    #[tokio::test]
    async fn inputs_are_read_in_order_as_one_partition() {
        let schema = Arc::new(Schema::new(vec![Field::new("a", DataType::Int64, false)]));
        let batch = |values: Vec<i64>| {
            RecordBatch::try_new(
                Arc::clone(&schema),
                vec![Arc::new(Int64Array::from(values))],
            )
            .unwrap()
        };
        // Two partitions, then one.
        let first = MemorySourceConfig::try_new_exec(
            &[vec![batch(vec![1, 2])], vec![batch(vec![3])]],
            Arc::clone(&schema),
            None,
        )
        .unwrap();
        let second =
            MemorySourceConfig::try_new_exec(&[vec![batch(vec![4, 5])]], Arc::clone(&schema), None)
                .unwrap();
        let chain: Arc<dyn ExecutionPlan> =
            Arc::new(ChainExec::new(vec![first, second], Arc::clone(&schema)));
        assert_eq!(chain.output_partitioning().partition_count(), 1);
        let ctx = Arc::new(TaskContext::default());
        let batches: Vec<RecordBatch> = chain
            .execute(0, Arc::clone(&ctx))
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        let values: Vec<i64> = batches
            .iter()
            .flat_map(|b| {
                b.column(0)
                    .as_any()
                    .downcast_ref::<Int64Array>()
                    .unwrap()
                    .values()
                    .to_vec()
            })
            .collect();
        assert_eq!(values, [1, 2, 3, 4, 5]);
        assert!(chain.execute(1, ctx).is_err());
    }
}
