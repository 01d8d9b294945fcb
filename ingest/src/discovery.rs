//! File-based service discovery (`file_sd_configs`), as Prometheus does it.
//!
//! Each pattern names JSON or YAML files (a `*` glob is allowed in the last path element).
//! Each file holds a list of target groups:
//!
//! ```yaml
//! - targets: ['10.0.0.1:9100', '10.0.0.2:9100']
//!   labels: {env: prod}
//! ```
//!
//! Every target of a file also gets `__meta_filepath` (the file's path), which relabelling can
//! use and which is removed, like every `__` label, before scraping.
//!
//! Files are re-read when the directory watcher reports a change (inotify through `notify`),
//! and every `refresh_interval` in case an event was missed (network filesystems, editors that
//! replace files in odd ways). A file that fails to read or parse keeps its last good targets,
//! with a warning; a file that disappears takes its targets with it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use storage::units::Duration;
use tracing::warn;

/// One `file_sd_configs` entry.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FileSdConfig {
    /// File patterns; relative ones are relative to the configuration file's directory.
    pub files: Vec<String>,
    /// How often to re-read the files even without a change event (default 5m).
    #[serde(default = "default_refresh")]
    pub refresh_interval: Duration,
}

fn default_refresh() -> Duration {
    Duration::from_secs(300)
}

impl FileSdConfig {
    /// Checks the patterns and makes them absolute against `base_dir`.
    pub fn resolve(&self, base_dir: &Path) -> Result<Vec<PathBuf>, String> {
        if self.files.is_empty() {
            return Err("file_sd_configs: files must list at least one pattern".into());
        }
        if self.refresh_interval.get().is_zero() {
            return Err("file_sd_configs: refresh_interval must be greater than 0".into());
        }
        self.files
            .iter()
            .map(|pattern| {
                let path = base_dir.join(pattern);
                let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
                if !matches!(ext, "json" | "yml" | "yaml") {
                    return Err(format!(
                        "file_sd_configs: {pattern:?}: only .json, .yml and .yaml files can hold targets"
                    ));
                }
                let parent = path.parent().map(|p| p.to_string_lossy().into_owned());
                if parent.is_some_and(|p| p.contains(['*', '?', '['])) {
                    return Err(format!(
                        "file_sd_configs: {pattern:?}: a glob is allowed only in the file name"
                    ));
                }
                Ok(path)
            })
            .collect()
    }
}

/// Targets sharing labels, from one file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TargetGroup {
    /// Addresses (`host:port`).
    pub targets: Vec<String>,
    /// Labels for all of them.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// Reads one target file.
pub fn read_file(path: &Path) -> Result<Vec<TargetGroup>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read: {e}"))?;
    let groups: Vec<TargetGroup> = match path.extension().and_then(|e| e.to_str()) {
        Some("json") => serde_json::from_str(&text).map_err(|e| e.to_string())?,
        _ if text.trim().is_empty() => Vec::new(),
        _ => serde_norway::from_str(&text).map_err(|e| e.to_string())?,
    };
    for g in &groups {
        if let Some(name) = g
            .labels
            .keys()
            .find(|n| !storage::labels::is_valid_label_name(n))
        {
            return Err(format!("invalid label name {name:?}"));
        }
    }
    Ok(groups)
}

/// The current targets of a set of file patterns.
#[derive(Debug, Clone, Default)]
pub struct FileTargets {
    patterns: Vec<PathBuf>,
    /// File → its last good groups.
    files: BTreeMap<PathBuf, Vec<TargetGroup>>,
}

impl FileTargets {
    /// Targets of `patterns` (absolute), not read yet.
    pub fn new(patterns: Vec<PathBuf>) -> Self {
        Self {
            patterns,
            files: BTreeMap::new(),
        }
    }

    /// The patterns watched.
    pub fn patterns(&self) -> &[PathBuf] {
        &self.patterns
    }

    /// Re-reads every matching file. Returns true when the targets changed.
    pub fn refresh(&mut self) -> bool {
        let mut next = BTreeMap::new();
        for pattern in &self.patterns {
            let Some(pattern_str) = pattern.to_str() else {
                continue;
            };
            let paths = match glob::glob(pattern_str) {
                Ok(paths) => paths,
                Err(e) => {
                    warn!(pattern = pattern_str, error = %e, "bad file_sd pattern");
                    continue;
                }
            };
            for path in paths.flatten() {
                match read_file(&path) {
                    Ok(groups) => {
                        next.insert(path, groups);
                    }
                    Err(e) => {
                        warn!(file = %path.display(), error = %e, "cannot load targets; keeping the last good ones");
                        if let Some(old) = self.files.get(&path) {
                            next.insert(path, old.clone());
                        }
                    }
                }
            }
        }
        let changed = next != self.files;
        self.files = next;
        changed
    }

    /// Every discovered target: (address, labels including `__meta_filepath`).
    pub fn targets(&self) -> Vec<(String, Vec<(String, String)>)> {
        let mut out = Vec::new();
        for (path, groups) in &self.files {
            let filepath = path.to_string_lossy().into_owned();
            for g in groups {
                for address in &g.targets {
                    let mut labels: Vec<(String, String)> = g
                        .labels
                        .iter()
                        .map(|(n, v)| (n.clone(), v.clone()))
                        .collect();
                    labels.push(("__meta_filepath".into(), filepath.clone()));
                    out.push((address.clone(), labels));
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_and_yaml_files_are_read_with_their_path() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("a.json"),
            r#"[{"targets": ["h1:9100", "h2:9100"], "labels": {"env": "prod"}}]"#,
        )
        .unwrap();
        std::fs::write(dir.path().join("b.yml"), "- targets: ['h3:9100']\n").unwrap();
        std::fs::write(dir.path().join("c.txt"), "ignored").unwrap();
        let cfg: FileSdConfig = serde_norway::from_str("files: ['*.json', 'b.yml']").unwrap();
        let mut ft = FileTargets::new(cfg.resolve(dir.path()).unwrap());
        assert!(ft.refresh());
        let targets = ft.targets();
        assert_eq!(targets.len(), 3);
        let a = dir.path().join("a.json").to_string_lossy().into_owned();
        assert_eq!(targets[0].0, "h1:9100");
        assert_eq!(
            targets[0].1,
            vec![("env".into(), "prod".into()), ("__meta_filepath".into(), a)]
        );
        assert!(!ft.refresh(), "no change, no update");
    }

    #[test]
    fn a_broken_file_keeps_its_last_good_targets_and_a_removed_one_loses_them() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("t.json");
        std::fs::write(&file, r#"[{"targets": ["h1:1"]}]"#).unwrap();
        let mut ft = FileTargets::new(vec![dir.path().join("*.json")]);
        ft.refresh();
        std::fs::write(&file, r#"[{"targets": ["h1:1"], "bogus": 1}"#).unwrap();
        assert!(!ft.refresh());
        assert_eq!(ft.targets().len(), 1);
        std::fs::write(&file, r#"[{"targets": ["h1:1", "h2:1"]}]"#).unwrap();
        assert!(ft.refresh());
        assert_eq!(ft.targets().len(), 2);
        std::fs::remove_file(&file).unwrap();
        assert!(ft.refresh());
        assert!(ft.targets().is_empty());
    }

    #[test]
    fn patterns_are_checked() {
        let cfg = |y: &str| serde_norway::from_str::<FileSdConfig>(y).unwrap();
        let e = cfg("files: [targets.txt]")
            .resolve(Path::new("/etc"))
            .unwrap_err();
        assert!(e.contains("only .json, .yml and .yaml"), "{e}");
        let e = cfg("files: ['*/t.json']")
            .resolve(Path::new("/etc"))
            .unwrap_err();
        assert!(e.contains("only in the file name"), "{e}");
        let e = cfg("files: []").resolve(Path::new("/etc")).unwrap_err();
        assert!(e.contains("at least one pattern"), "{e}");
        assert_eq!(
            cfg("files: [t.json]")
                .resolve(Path::new("/etc/arrowhead"))
                .unwrap(),
            vec![PathBuf::from("/etc/arrowhead/t.json")]
        );
        assert_eq!(
            cfg("files: [t.json]").refresh_interval,
            Duration::from_secs(300)
        );
        let e = read_file(Path::new("/nonexistent.json")).unwrap_err();
        assert!(e.starts_with("cannot read"), "{e}");
    }

    #[test]
    fn invalid_label_names_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("t.yml");
        std::fs::write(&file, "- targets: [a:1]\n  labels: {'bad-name': x}\n").unwrap();
        assert!(
            read_file(&file)
                .unwrap_err()
                .contains("invalid label name \"bad-name\"")
        );
    }
}
