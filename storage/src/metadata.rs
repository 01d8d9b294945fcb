//! Metric metadata: the type, help and unit that expositions declare per metric family
//! (`# TYPE`, `# HELP`, `# UNIT`), served as `system.metrics`.
//!
//! Metadata is kept per family name, last writer wins (two targets that disagree about a
//! family's help text are rare and harmless). Tables are named after series, not families, so
//! [`MetadataStore::for_table`] maps `x_bucket`, `x_sum`, `x_count` to histogram or summary
//! `x`, and `x_total` / `x_created` / `x_info` to their OpenMetrics families.

use std::collections::HashMap;

use parking_lot::RwLock;

/// What an exposition says about one family.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetricMetadata {
    /// `counter`, `gauge`, `histogram`, `summary`, `unknown`, `info`, `stateset`,
    /// `gaugehistogram`.
    pub kind: String,
    /// `# HELP` text.
    pub help: String,
    /// `# UNIT` (OpenMetrics).
    pub unit: String,
}

/// Family name → metadata, shared by every appender of a head.
#[derive(Debug, Default)]
pub struct MetadataStore {
    families: RwLock<HashMap<String, MetricMetadata>>,
}

impl MetadataStore {
    /// Records a family's metadata.
    pub fn set(&self, family: &str, metadata: MetricMetadata) {
        let mut families = self.families.write();
        match families.get_mut(family) {
            Some(existing) => *existing = metadata,
            None => {
                families.insert(family.to_string(), metadata);
            }
        }
    }

    /// One family's metadata.
    pub fn get(&self, family: &str) -> Option<MetricMetadata> {
        self.families.read().get(family).cloned()
    }

    /// The metadata that describes the table (series name) `metric`: its own family, or the
    /// family it is a part of.
    pub fn for_table(&self, metric: &str) -> Option<MetricMetadata> {
        let families = self.families.read();
        if let Some(m) = families.get(metric) {
            return Some(m.clone());
        }
        let parts: [(&str, &[&str]); 5] = [
            ("_bucket", &["histogram", "gaugehistogram"]),
            ("_sum", &["histogram", "summary", "gaugehistogram"]),
            ("_count", &["histogram", "summary", "gaugehistogram"]),
            ("_total", &["counter"]),
            ("_info", &["info"]),
        ];
        parts.iter().find_map(|(suffix, kinds)| {
            let family = metric.strip_suffix(suffix)?;
            families
                .get(family)
                .filter(|m| kinds.contains(&m.kind.as_str()))
                .cloned()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(kind: &str) -> MetricMetadata {
        MetricMetadata {
            kind: kind.into(),
            help: format!("a {kind}"),
            unit: String::new(),
        }
    }

    #[test]
    fn tables_find_their_family() {
        let store = MetadataStore::default();
        store.set("http_duration_seconds", meta("histogram"));
        store.set("rpc_seconds", meta("summary"));
        store.set("requests", meta("counter"));
        store.set("build", meta("info"));
        store.set("temp", meta("gauge"));
        let kind = |t: &str| store.for_table(t).map(|m| m.kind);
        assert_eq!(
            kind("http_duration_seconds_bucket").as_deref(),
            Some("histogram")
        );
        assert_eq!(
            kind("http_duration_seconds_count").as_deref(),
            Some("histogram")
        );
        assert_eq!(kind("rpc_seconds_sum").as_deref(), Some("summary"));
        assert_eq!(kind("rpc_seconds_bucket"), None, "a summary has no buckets");
        assert_eq!(kind("requests_total").as_deref(), Some("counter"));
        assert_eq!(kind("build_info").as_deref(), Some("info"));
        assert_eq!(kind("temp").as_deref(), Some("gauge"));
        assert_eq!(kind("temp_sum"), None, "a gauge has no parts");
        assert_eq!(kind("nothing"), None);
        store.set("temp", meta("counter"));
        assert_eq!(kind("temp").as_deref(), Some("counter"), "last writer wins");
    }
}
