//! The `scrape_configs` section of `arrowhead.yml`, in Prometheus's shape.
//!
//! [`ScrapeConfig`] is what the YAML says; [`ScrapeJob`] is what the scrape manager runs,
//! with `global` defaults applied and every target resolved to a URL and label set.
//!
//! Resolving a target follows Prometheus: the discovered labels plus `__address__` get the
//! job's defaults as internal labels (`job`, `__scheme__`, `__metrics_path__`,
//! `__scrape_interval__`, `__scrape_timeout__`, `__param_<name>`), then `relabel_configs` run
//! (and may drop the target). What is left decides the URL (`__scheme__://__address__
//! __metrics_path__?params`, a missing port defaulting to 80/443 as in Prometheus 2.x), the
//! interval and timeout, and `instance` (default: the address). Labels starting with `__` are
//! then removed: the rest are the target labels every scraped series carries.
//! Prometheus keys that a later version implements are recognised and refused with
//! "not supported yet", never silently ignored.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use storage::Labels;
use storage::units::{ByteSize, Duration};

use crate::auth::{Authorization, BasicAuth, Credentials, TlsConfig, TlsSettings};
use crate::discovery::FileSdConfig;
use crate::relabel::{LabelSet, RelabelConfig, Rule, relabel};

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

    /// Targets from JSON/YAML files, re-read when they change; see [`crate::discovery`].
    #[serde(default)]
    pub file_sd_configs: Vec<FileSdConfig>,
    /// Rewrite (or drop) targets before scraping; see [`crate::relabel`].
    #[serde(default)]
    pub relabel_configs: Vec<RelabelConfig>,
    /// Rewrite (or drop) scraped series before they are stored.
    #[serde(default)]
    pub metric_relabel_configs: Vec<RelabelConfig>,
    /// Fail a scrape with more samples than this after metric relabelling (0 = no limit).
    #[serde(default)]
    pub sample_limit: u64,
    /// Fail a scrape with a series of more labels than this, `__name__` included (0 = no limit).
    #[serde(default)]
    pub label_limit: u64,
    /// Fail a scrape with a label name longer than this many bytes (0 = no limit).
    #[serde(default)]
    pub label_name_length_limit: u64,
    /// Fail a scrape with a label value longer than this many bytes (0 = no limit).
    #[serde(default)]
    pub label_value_length_limit: u64,
    /// Fail a scrape whose uncompressed body is larger than this (unset or 0 = no limit).
    #[serde(default)]
    pub body_size_limit: Option<ByteSize>,
    /// HTTP basic auth for the targets.
    #[serde(default)]
    pub basic_auth: Option<BasicAuth>,
    /// An `Authorization` header for the targets (bearer token by default).
    #[serde(default)]
    pub authorization: Option<Authorization>,
    /// TLS settings for `https` targets.
    #[serde(default)]
    pub tls_config: Option<TlsConfig>,
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

/// A job ready to run: defaults applied, rules compiled, static targets resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct ScrapeJob {
    /// `job_name`.
    pub name: String,
    /// Resolved interval (a target may override it through `__scrape_interval__`).
    pub interval: std::time::Duration,
    /// Resolved timeout, ≤ interval (a target may override it through `__scrape_timeout__`).
    pub timeout: std::time::Duration,
    /// See [`ScrapeConfig::honor_labels`].
    pub honor_labels: bool,
    /// See [`ScrapeConfig::honor_timestamps`].
    pub honor_timestamps: bool,
    /// `scheme`, as the default of `__scheme__`.
    pub scheme: Scheme,
    /// `metrics_path`, as the default of `__metrics_path__`.
    pub metrics_path: String,
    /// `params`, as the defaults of `__param_<name>`.
    pub params: BTreeMap<String, Vec<String>>,
    /// Target relabelling.
    pub relabel: Vec<Rule>,
    /// Series relabelling, applied when a scrape first sees a series.
    pub metric_relabel: Vec<Rule>,
    /// Limits that fail a scrape whole.
    pub limits: ScrapeLimits,
    /// Sent with every scrape.
    pub credentials: Credentials,
    /// TLS material, when `tls_config` is set.
    pub tls: Option<TlsSettings>,
    /// Targets from `static_configs`, relabelled.
    pub targets: Vec<TargetSpec>,
    /// `file_sd_configs` patterns, absolute; their targets are resolved as files change.
    pub file_patterns: Vec<std::path::PathBuf>,
    /// How often target files are re-read without a change event (the shortest configured).
    pub file_refresh: std::time::Duration,
    /// Static targets dropped by `relabel_configs`.
    pub dropped_targets: usize,
}

impl PartialEq for Rule {
    fn eq(&self, other: &Self) -> bool {
        self.config() == other.config()
    }
}

/// Per-job limits (0 = none). Breaking one fails the scrape whole, as in Prometheus: nothing
/// of the body is stored, `up` is 0 and the reason is in `system.targets`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScrapeLimits {
    /// `sample_limit`.
    pub samples: u64,
    /// `label_limit`.
    pub labels: u64,
    /// `label_name_length_limit`.
    pub label_name_length: u64,
    /// `label_value_length_limit`.
    pub label_value_length: u64,
    /// `body_size_limit`, bytes.
    pub body_size: u64,
}

/// One target: where and how often to scrape, and the labels its series get.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TargetSpec {
    /// The full scrape URL, parsed once here for every scrape of the target.
    pub url: reqwest::Url,
    /// Target labels: `job`, `instance` and whatever discovery and relabelling left,
    /// without `__`-prefixed labels.
    pub labels: Labels,
    /// Scrape interval.
    pub interval: std::time::Duration,
    /// Scrape timeout (≤ interval).
    pub timeout: std::time::Duration,
}

impl ScrapeConfig {
    /// Applies `global` defaults, compiles relabel rules and resolves static targets; relative
    /// `file_sd_configs` paths are taken from `base_dir` (the config file's directory). Errors
    /// name the job and key.
    pub fn resolve(
        &self,
        defaults: &ScrapeDefaults,
        base_dir: &std::path::Path,
    ) -> Result<ScrapeJob, String> {
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
        let compile = |key: &str, configs: &[RelabelConfig]| {
            configs
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    Rule::new(c.clone()).map_err(|e| format!("job {job:?}: {key}[{i}]: {e}"))
                })
                .collect::<Result<Vec<_>, _>>()
        };
        let mut resolved = ScrapeJob {
            name: job.clone(),
            interval,
            timeout,
            honor_labels: self.honor_labels,
            honor_timestamps: self.honor_timestamps,
            scheme: self.scheme,
            metrics_path: self.metrics_path.clone(),
            params: self.params.clone(),
            relabel: compile("relabel_configs", &self.relabel_configs)?,
            metric_relabel: compile("metric_relabel_configs", &self.metric_relabel_configs)?,
            limits: ScrapeLimits {
                samples: self.sample_limit,
                labels: self.label_limit,
                label_name_length: self.label_name_length_limit,
                label_value_length: self.label_value_length_limit,
                body_size: self.body_size_limit.map_or(0, ByteSize::bytes),
            },
            credentials: Credentials::resolve(&self.basic_auth, &self.authorization, base_dir)
                .map_err(|e| format!("job {job:?}: {e}"))?,
            tls: self
                .tls_config
                .as_ref()
                .map(|t| TlsSettings::load(t, base_dir))
                .transpose()
                .map_err(|e| format!("job {job:?}: tls_config: {e}"))?,
            targets: Vec::new(),
            dropped_targets: 0,
            file_patterns: Vec::new(),
            file_refresh: std::time::Duration::from_secs(300),
        };
        for (i, fsd) in self.file_sd_configs.iter().enumerate() {
            let patterns = fsd
                .resolve(base_dir)
                .map_err(|e| format!("job {job:?}: file_sd_configs[{i}]: {e}"))?;
            resolved.file_patterns.extend(patterns);
            resolved.file_refresh = resolved.file_refresh.min(fsd.refresh_interval.get());
        }
        for (i, sc) in self.static_configs.iter().enumerate() {
            for name in sc.labels.keys() {
                if !storage::labels::is_valid_label_name(name) {
                    return Err(format!(
                        "job {job:?}: static_configs[{i}].labels: invalid label name {name:?}"
                    ));
                }
            }
            for address in &sc.targets {
                // The address is checked after relabelling, which may move it elsewhere (the
                // blackbox pattern turns a URL target into `__param_target`).
                let discovered = sc.labels.iter().map(|(n, v)| (n.as_str(), v.as_str()));
                match resolved.target(address, discovered) {
                    Ok(Some(target)) => resolved.targets.push(target),
                    Ok(None) => resolved.dropped_targets += 1,
                    Err(e) => {
                        return Err(format!(
                            "job {job:?}: static_configs[{i}].targets: {address:?}: {e}"
                        ));
                    }
                }
            }
        }
        Ok(resolved)
    }
}

impl ScrapeJob {
    /// Resolves one discovered target (its address and discovery labels) into what to scrape,
    /// or `None` when `relabel_configs` drop it. See the module docs for the steps.
    pub fn target<'a>(
        &self,
        address: &str,
        discovered: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Option<TargetSpec>, String> {
        let mut ls = LabelSet::from_pairs(discovered);
        ls.set("__address__".into(), address.into());
        let set_default = |ls: &mut LabelSet, name: &str, value: String| {
            if ls.get(name).is_empty() {
                ls.set(name.into(), value);
            }
        };
        set_default(&mut ls, "job", self.name.clone());
        set_default(&mut ls, "__scheme__", self.scheme.to_string());
        set_default(&mut ls, "__metrics_path__", self.metrics_path.clone());
        set_default(
            &mut ls,
            "__scrape_interval__",
            Duration(self.interval).to_string(),
        );
        set_default(
            &mut ls,
            "__scrape_timeout__",
            Duration(self.timeout).to_string(),
        );
        for (key, values) in &self.params {
            if let Some(first) = values.first() {
                set_default(&mut ls, &format!("__param_{key}"), first.clone());
            }
        }
        if !relabel(&mut ls, &self.relabel) {
            return Ok(None);
        }
        let scheme = ls.get("__scheme__").to_string();
        let default_port = match scheme.as_str() {
            "http" => 80,
            "https" => 443,
            other => return Err(format!("invalid scheme {other:?} (want http or https)")),
        };
        let mut address = ls.get("__address__").to_string();
        if address.is_empty() {
            return Err("no __address__ label after relabelling".into());
        }
        validate_address(&address).map_err(|e| format!("address {address:?} {e}"))?;
        if !has_port(&address) {
            address = format!("{address}:{default_port}");
            ls.set("__address__".into(), address.clone());
        }
        let parse = |name: &str| -> Result<std::time::Duration, String> {
            ls.get(name)
                .parse::<Duration>()
                .map(Duration::get)
                .map_err(|e| format!("{name}: {e}"))
        };
        let interval = parse("__scrape_interval__")?;
        let timeout = parse("__scrape_timeout__")?;
        if interval.is_zero() || timeout.is_zero() {
            return Err("scrape interval and timeout must be greater than 0".into());
        }
        if timeout > interval {
            return Err(format!(
                "scrape timeout ({}) is greater than scrape interval ({})",
                Duration(timeout),
                Duration(interval)
            ));
        }
        let path = ls.get("__metrics_path__");
        if !path.starts_with('/') {
            return Err(format!("__metrics_path__ {path:?} must start with '/'"));
        }
        // Query parameters: the job's, each `__param_<name>` label replacing that name's first
        // value (or adding it), as Prometheus builds the scrape URL.
        let mut params: BTreeMap<String, Vec<String>> = self.params.clone();
        for (name, value) in ls.iter() {
            if let Some(key) = name.strip_prefix("__param_") {
                let values = params.entry(key.to_string()).or_default();
                match values.first_mut() {
                    Some(first) => *first = value.to_string(),
                    None => values.push(value.to_string()),
                }
            }
        }
        let mut url = format!("{scheme}://{address}{path}");
        let mut first = true;
        for (key, values) in &params {
            for value in values {
                url.push(if first { '?' } else { '&' });
                first = false;
                url.push_str(&form_encode(key));
                url.push('=');
                url.push_str(&form_encode(value));
            }
        }
        let url =
            reqwest::Url::parse(&url).map_err(|e| format!("invalid target URL {url:?}: {e}"))?;
        if ls.get("instance").is_empty() {
            ls.set("instance".into(), address);
        }
        let labels = Labels::from_pairs(ls.iter().filter(|(n, _)| !n.starts_with("__")));
        Ok(Some(TargetSpec {
            url,
            labels,
            interval,
            timeout,
        }))
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

/// True when the address ends in a port (`host:9100`, `[::1]:9100`).
fn has_port(address: &str) -> bool {
    match address.rfind(':') {
        Some(i) => {
            let port = &address[i + 1..];
            let host = &address[..i];
            !port.is_empty()
                && port.bytes().all(|b| b.is_ascii_digit())
                && (!host.contains(':') || host.ends_with(']'))
        }
        None => false,
    }
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
        cfg.resolve(
            &ScrapeDefaults::default(),
            std::path::Path::new("/etc/arrowhead"),
        )
    }

    #[test]
    fn defaults_follow_prometheus() {
        let j = job("job_name: node\nstatic_configs: [{targets: ['localhost:9100']}]").unwrap();
        assert_eq!(j.interval, std::time::Duration::from_secs(60));
        assert_eq!(j.timeout, std::time::Duration::from_secs(10));
        assert!(j.honor_timestamps);
        assert!(!j.honor_labels);
        assert_eq!(j.targets[0].url.as_str(), "http://localhost:9100/metrics");
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
            j.targets[0].url.as_str(),
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
        let e = job("job_name: a\ntls_config: {server_name: x}").unwrap_err();
        assert!(e.contains("not supported yet"), "{e}");
    }

    #[test]
    fn limits_are_read() {
        let j = job(
            "job_name: a\nsample_limit: 5\nlabel_limit: 6\nlabel_name_length_limit: 7\n\
             label_value_length_limit: 8\nbody_size_limit: 1MB",
        )
        .unwrap();
        assert_eq!(
            j.limits,
            ScrapeLimits {
                samples: 5,
                labels: 6,
                label_name_length: 7,
                label_value_length: 8,
                body_size: 1 << 20
            }
        );
        assert_eq!(job("job_name: a").unwrap().limits, ScrapeLimits::default());
    }

    #[test]
    fn file_sd_paths_are_relative_to_the_config_file() {
        let j = job("job_name: a\nfile_sd_configs: [{files: ['t/*.json'], refresh_interval: 1m}, {files: [/abs.yml]}]").unwrap();
        assert_eq!(
            j.file_patterns,
            vec![
                std::path::PathBuf::from("/etc/arrowhead/t/*.json"),
                "/abs.yml".into()
            ]
        );
        assert_eq!(j.file_refresh, std::time::Duration::from_secs(60));
    }

    #[test]
    fn relabel_configs_shape_targets_as_in_prometheus() {
        // The blackbox-exporter pattern: the target becomes a parameter, the exporter the address.
        let j = job(
            "job_name: blackbox\nmetrics_path: /probe\nparams: {module: [http_2xx]}\n\
             static_configs: [{targets: ['https://example.org/a?b', 'drop.me'], labels: {team: x}}]\n\
             relabel_configs:\n\
             - {source_labels: [__address__], regex: 'drop\\..*', action: drop}\n\
             - {source_labels: [__address__], target_label: __param_target}\n\
             - {source_labels: [__param_target], target_label: instance}\n\
             - {target_label: __address__, replacement: '127.0.0.1:9115'}\n\
             - {target_label: __scrape_interval__, replacement: 30s}\n",
        )
        .unwrap();
        assert_eq!(j.dropped_targets, 1);
        assert_eq!(j.targets.len(), 1);
        let t = &j.targets[0];
        assert_eq!(
            t.url.as_str(),
            "http://127.0.0.1:9115/probe?module=http_2xx&target=https%3A%2F%2Fexample.org%2Fa%3Fb"
        );
        assert_eq!(
            t.labels,
            Labels::from_pairs([
                ("instance", "https://example.org/a?b"),
                ("job", "blackbox"),
                ("team", "x")
            ])
        );
        assert_eq!(t.interval, std::time::Duration::from_secs(30));
        assert_eq!(t.timeout, std::time::Duration::from_secs(10));
    }

    #[test]
    fn a_missing_port_defaults_by_scheme() {
        let j = job("job_name: a\nstatic_configs: [{targets: ['h', '[::1]', 'h:1']}]").unwrap();
        let instances: Vec<&str> = j
            .targets
            .iter()
            .map(|t| t.labels.get("instance").unwrap())
            .collect();
        assert_eq!(instances, ["h:80", "[::1]:80", "h:1"]);
        let j = job("job_name: a\nscheme: https\nstatic_configs: [{targets: ['h']}]").unwrap();
        // The URL omits the scheme's default port; the instance label keeps it.
        assert_eq!(j.targets[0].url.as_str(), "https://h/metrics");
        assert_eq!(j.targets[0].labels.get("instance"), Some("h:443"));
    }

    #[test]
    fn relabelling_errors_name_the_job_and_rule() {
        let e = job("job_name: a\nrelabel_configs: [{action: hashmod, source_labels: [x], target_label: y}]").unwrap_err();
        assert!(
            e.contains("job \"a\": relabel_configs[0]: relabel action hashmod requires a modulus"),
            "{e}"
        );
        let e = job("job_name: a\nstatic_configs: [{targets: ['h:1']}]\n\
             relabel_configs: [{target_label: __scrape_timeout__, replacement: 2m}]")
        .unwrap_err();
        assert!(
            e.contains("scrape timeout (2m) is greater than scrape interval (1m)"),
            "{e}"
        );
        let e = job("job_name: a\nstatic_configs: [{targets: ['h:1']}]\n\
             relabel_configs: [{target_label: __scheme__, replacement: ftp}]")
        .unwrap_err();
        assert!(e.contains("invalid scheme \"ftp\""), "{e}");
    }
}
