//! The `scrape_configs` section of `arrowhead.yml`, in Prometheus's shape.
//!
//! [`ScrapeConfig`] is what the YAML says; [`ScrapeJob`] is what the scrape manager runs,
//! with `global` defaults applied and every target resolved to a URL and label set.
//! Prometheus keys that a later version implements are recognised and refused with
//! "not supported yet", never silently ignored.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use storage::Labels;
use storage::units::Duration;

pub use storage::config::NotSupportedYet;

/// `http` or `https`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scheme {
    /// Plain HTTP (the default).
    #[default]
    Http,
    /// HTTP over TLS, verified against the system's roots.
    Https,
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Http => "http",
            Self::Https => "https",
        })
    }
}

/// One entry of `scrape_configs`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ScrapeConfig {
    /// The `job` label of every series scraped by this job; unique across the file.
    pub job_name: String,
    /// How often to scrape (default: `global.scrape_interval`).
    pub scrape_interval: Option<Duration>,
    /// Per-scrape timeout (default: `global.scrape_timeout`, capped at the interval).
    pub scrape_timeout: Option<Duration>,
    /// HTTP path of the metrics endpoint.
    #[serde(default = "default_metrics_path")]
    pub metrics_path: String,
    /// `http` or `https`.
    #[serde(default)]
    pub scheme: Scheme,
    /// URL query parameters sent with every scrape.
    #[serde(default)]
    pub params: BTreeMap<String, Vec<String>>,
    /// On a clash between a scraped label and a target label, keep the scraped one (true) or
    /// rename it to `exported_<name>` (false, the default).
    #[serde(default)]
    pub honor_labels: bool,
    /// Use timestamps from the exposition (true, the default) or the scrape time.
    #[serde(default = "default_true")]
    pub honor_timestamps: bool,
    /// Fixed targets.
    #[serde(default)]
    pub static_configs: Vec<StaticConfig>,

    /// Not supported yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_sd_configs: Option<NotSupportedYet>,
    /// Not supported yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relabel_configs: Option<NotSupportedYet>,
    /// Not supported yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric_relabel_configs: Option<NotSupportedYet>,
    /// Not supported yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sample_limit: Option<NotSupportedYet>,
    /// Not supported yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_limit: Option<NotSupportedYet>,
    /// Not supported yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_name_length_limit: Option<NotSupportedYet>,
    /// Not supported yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_value_length_limit: Option<NotSupportedYet>,
    /// Not supported yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_size_limit: Option<NotSupportedYet>,
    /// Not supported yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub basic_auth: Option<NotSupportedYet>,
    /// Not supported yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorization: Option<NotSupportedYet>,
    /// Not supported yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_config: Option<NotSupportedYet>,
}

fn default_metrics_path() -> String {
    "/metrics".to_string()
}

fn default_true() -> bool {
    true
}

/// A `static_configs` entry: addresses plus labels for all of them.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StaticConfig {
    /// `host:port` addresses.
    #[serde(default)]
    pub targets: Vec<String>,
    /// Labels added to every series of these targets.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// Defaults from `global` that jobs inherit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScrapeDefaults {
    /// `global.scrape_interval`.
    pub scrape_interval: Duration,
    /// `global.scrape_timeout`.
    pub scrape_timeout: Duration,
}

impl Default for ScrapeDefaults {
    /// Prometheus's defaults: every minute, 10 s timeout.
    fn default() -> Self {
        Self {
            scrape_interval: Duration::from_secs(60),
            scrape_timeout: Duration::from_secs(10),
        }
    }
}

/// A job ready to run: defaults applied, targets resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct ScrapeJob {
    /// `job_name`.
    pub name: String,
    /// Resolved interval.
    pub interval: std::time::Duration,
    /// Resolved timeout (≤ interval).
    pub timeout: std::time::Duration,
    /// See [`ScrapeConfig::honor_labels`].
    pub honor_labels: bool,
    /// See [`ScrapeConfig::honor_timestamps`].
    pub honor_timestamps: bool,
    /// The targets.
    pub targets: Vec<TargetSpec>,
}

/// One target: where to scrape and the labels its series get.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TargetSpec {
    /// The full scrape URL.
    pub url: String,
    /// Target labels: `job`, `instance` and the static config's labels.
    pub labels: Labels,
}

impl ScrapeConfig {
    /// Applies `global` defaults and resolves targets. Errors name the job and key.
    pub fn resolve(&self, defaults: &ScrapeDefaults) -> Result<ScrapeJob, String> {
        let job = &self.job_name;
        if job.is_empty() {
            return Err("scrape_configs: job_name must not be empty".into());
        }
        let interval = self
            .scrape_interval
            .unwrap_or(defaults.scrape_interval)
            .get();
        if interval.is_zero() {
            return Err(format!(
                "job {job:?}: scrape_interval must be greater than 0"
            ));
        }
        let timeout = match self.scrape_timeout {
            Some(t) if t.get() > interval => {
                return Err(format!(
                    "job {job:?}: scrape_timeout ({t}) is greater than scrape_interval ({})",
                    Duration(interval)
                ));
            }
            Some(t) => t.get(),
            // As Prometheus: the global timeout, but never longer than this job's interval.
            None => defaults.scrape_timeout.get().min(interval),
        };
        if timeout.is_zero() {
            return Err(format!(
                "job {job:?}: scrape_timeout must be greater than 0"
            ));
        }
        if !self.metrics_path.starts_with('/') {
            return Err(format!(
                "job {job:?}: metrics_path {:?} must start with '/'",
                self.metrics_path
            ));
        }
        let mut targets = Vec::new();
        for (i, sc) in self.static_configs.iter().enumerate() {
            for name in sc.labels.keys() {
                if !storage::labels::is_valid_label_name(name) {
                    return Err(format!(
                        "job {job:?}: static_configs[{i}].labels: invalid label name {name:?}"
                    ));
                }
            }
            for address in &sc.targets {
                validate_address(address).map_err(|e| {
                    format!("job {job:?}: static_configs[{i}].targets: {address:?} {e}")
                })?;
                let url = self.url_for(address)?;
                // As in Prometheus, a static `job` or `instance` label overrides the default;
                // `from_pairs` keeps the last of a repeated name.
                let labels = Labels::from_pairs(
                    [("job", job.as_str()), ("instance", address.as_str())]
                        .into_iter()
                        .chain(sc.labels.iter().map(|(n, v)| (n.as_str(), v.as_str()))),
                );
                targets.push(TargetSpec { url, labels });
            }
        }
        Ok(ScrapeJob {
            name: job.clone(),
            interval,
            timeout,
            honor_labels: self.honor_labels,
            honor_timestamps: self.honor_timestamps,
            targets,
        })
    }

    fn url_for(&self, address: &str) -> Result<String, String> {
        let mut url = format!("{}://{}{}", self.scheme, address, self.metrics_path);
        let mut first = true;
        for (key, values) in &self.params {
            for value in values {
                url.push(if first { '?' } else { '&' });
                first = false;
                url.push_str(&form_encode(key));
                url.push('=');
                url.push_str(&form_encode(value));
            }
        }
        reqwest::Url::parse(&url)
            .map(|u| u.to_string())
            .map_err(|e| format!("job {:?}: invalid target URL {url:?}: {e}", self.job_name))
    }
}

/// `host:port` or `host`, where host may be a bracketed IPv6 address. No scheme, no path.
fn validate_address(address: &str) -> Result<(), &'static str> {
    if address.is_empty() {
        return Err("is empty");
    }
    if address.contains("://") {
        return Err("must be host:port without a scheme (set `scheme:` instead)");
    }
    if address.contains(['/', '?', '#', ' ', '@']) {
        return Err("must be host:port, without a path, query or credentials");
    }
    Ok(())
}

fn form_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(yaml: &str) -> Result<ScrapeJob, String> {
        let cfg: ScrapeConfig = serde_norway::from_str(yaml).map_err(|e| e.to_string())?;
        cfg.resolve(&ScrapeDefaults::default())
    }

    #[test]
    fn defaults_follow_prometheus() {
        let j = job("job_name: node\nstatic_configs: [{targets: ['localhost:9100']}]").unwrap();
        assert_eq!(j.interval, std::time::Duration::from_secs(60));
        assert_eq!(j.timeout, std::time::Duration::from_secs(10));
        assert!(j.honor_timestamps);
        assert!(!j.honor_labels);
        assert_eq!(j.targets[0].url, "http://localhost:9100/metrics");
        assert_eq!(
            j.targets[0].labels,
            Labels::from_pairs([("instance", "localhost:9100"), ("job", "node")])
        );
    }

    #[test]
    fn timeout_is_capped_at_a_short_interval_unless_explicit() {
        let j = job("job_name: a\nscrape_interval: 5s").unwrap();
        assert_eq!(j.timeout, std::time::Duration::from_secs(5));
        let e = job("job_name: a\nscrape_interval: 5s\nscrape_timeout: 6s").unwrap_err();
        assert!(
            e.contains("scrape_timeout (6s) is greater than scrape_interval (5s)"),
            "{e}"
        );
    }

    #[test]
    fn params_scheme_and_labels_shape_the_target() {
        let j = job(
            "job_name: snmp\nscheme: https\nmetrics_path: /snmp\nparams: {module: [if_mib, x y]}\n\
             static_configs: [{targets: ['[::1]:9116'], labels: {env: prod, job: custom}}]",
        )
        .unwrap();
        assert_eq!(
            j.targets[0].url,
            "https://[::1]:9116/snmp?module=if_mib&module=x+y"
        );
        assert_eq!(
            j.targets[0].labels,
            Labels::from_pairs([
                ("env", "prod"),
                ("instance", "[::1]:9116"),
                ("job", "custom")
            ])
        );
    }

    #[test]
    fn bad_targets_are_named() {
        let e = job("job_name: a\nstatic_configs: [{targets: ['http://x:1']}]").unwrap_err();
        assert!(
            e.contains("\"http://x:1\" must be host:port without a scheme"),
            "{e}"
        );
        let e = job("job_name: a\nstatic_configs: [{targets: ['x:1/metrics']}]").unwrap_err();
        assert!(e.contains("without a path"), "{e}");
        let e = job("job_name: a\nmetrics_path: metrics").unwrap_err();
        assert!(e.contains("must start with '/'"), "{e}");
    }

    #[test]
    fn later_keys_are_refused_not_ignored() {
        let e = job("job_name: a\nrelabel_configs: []").unwrap_err();
        assert!(e.contains("not supported yet"), "{e}");
    }
}
