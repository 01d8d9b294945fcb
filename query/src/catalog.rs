//! The catalog DataFusion sees: catalog `arrowhead`, schema `public` with one table per
//! metric (the default schema, so metrics are reachable unqualified), and schema `system`.
//!
//! Tables are resolved from the head when a query is planned, so a metric that appeared a
//! moment ago is queryable at once, and its schema is the one of that moment.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::catalog::{CatalogProvider, SchemaProvider, TableProvider};
use datafusion::common::DataFusionError;
use storage::Head;
use storage::block::Blocks;

use crate::scan::MetricTable;
use crate::system::{SystemSchema, TargetsSource};

/// Name of the catalog.
pub const CATALOG: &str = "arrowhead";
/// The default schema, holding one table per metric.
pub const METRICS_SCHEMA: &str = "public";
/// The schema describing the replica.
pub const SYSTEM_SCHEMA: &str = "system";

/// The `arrowhead` catalog.
#[derive(Debug)]
pub struct ArrowheadCatalog {
    metrics: Arc<MetricSchema>,
    system: Arc<SystemSchema>,
}

impl ArrowheadCatalog {
    /// A catalog over the head, the blocks (if the replica has any) and a targets source.
    pub fn new(
        head: Arc<Head>,
        blocks: Option<Arc<Blocks>>,
        targets: Arc<dyn TargetsSource>,
    ) -> Self {
        Self {
            metrics: Arc::new(MetricSchema {
                head: Arc::clone(&head),
                blocks: blocks.clone(),
            }),
            system: Arc::new(SystemSchema::new(head, blocks, targets)),
        }
    }
}

impl CatalogProvider for ArrowheadCatalog {
    fn schema_names(&self) -> Vec<String> {
        vec![METRICS_SCHEMA.to_string(), SYSTEM_SCHEMA.to_string()]
    }

    fn schema(&self, name: &str) -> Option<Arc<dyn SchemaProvider>> {
        match name {
            METRICS_SCHEMA => Some(Arc::clone(&self.metrics) as Arc<dyn SchemaProvider>),
            SYSTEM_SCHEMA => Some(Arc::clone(&self.system) as Arc<dyn SchemaProvider>),
            _ => None,
        }
    }
}

/// Every metric in the head or in a block, sorted: the tables of `public`.
pub(crate) fn metric_names(head: &Head, blocks: Option<&Blocks>) -> Vec<String> {
    let mut names = head.metric_names();
    if let Some(blocks) = blocks {
        names.extend(blocks.view().metric_names());
        names.sort();
        names.dedup();
    }
    names
}

/// `public`: every metric in the head or in a block is a table.
#[derive(Debug)]
pub struct MetricSchema {
    head: Arc<Head>,
    blocks: Option<Arc<Blocks>>,
}

#[async_trait]
impl SchemaProvider for MetricSchema {
    fn table_names(&self) -> Vec<String> {
        metric_names(&self.head, self.blocks.as_deref())
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>, DataFusionError> {
        let view = self.blocks.as_ref().map(|b| b.view());
        Ok(
            MetricTable::new(self.head.metric(name), view.as_ref(), name)
                .map(|t| Arc::new(t) as Arc<dyn TableProvider>),
        )
    }

    fn table_exist(&self, name: &str) -> bool {
        self.head.metric(name).is_some()
            || self.blocks.as_ref().is_some_and(|b| {
                b.view()
                    .blocks
                    .iter()
                    .any(|b| b.meta.metrics.contains_key(name))
            })
    }
}
