//! Relabelling, with Prometheus's semantics: `relabel_configs` rewrite target labels before a
//! scrape, `metric_relabel_configs` rewrite (or drop) series after parsing.
//!
//! A rule joins the values of `source_labels` with `separator`, matches the result against
//! `regex` (anchored at both ends, as Prometheus anchors it) and acts:
//!
//! | action | does |
//! |---|---|
//! | `replace` (default) | on a match, set `target_label` to `replacement` with `$1`/`${name}` expanded; an empty result removes the label |
//! | `lowercase` / `uppercase` | set `target_label` to the joined value in lower / upper case |
//! | `keep` / `drop` | keep only / drop what matches |
//! | `keepequal` / `dropequal` | keep only / drop when the joined value equals `target_label`'s value |
//! | `hashmod` | set `target_label` to the MD5 of the joined value modulo `modulus` |
//! | `labelmap` | copy every label whose *name* matches to the name `replacement` expands to |
//! | `labeldrop` / `labelkeep` | remove every label whose name matches / does not match |
//!
//! Regexes use the `regex` crate, whose syntax is RE2's, as Go's `regexp` (no look-around, no
//! back-references). Expansion follows Go's `Regexp.Expand`, which `regex::Captures::expand`
//! mirrors: `$1`, `${1}`, `$name`, `${name}`, and `$$` for a literal `$`; `$1x` names a group
//! `1x`, which does not exist, so it expands to nothing (write `${1}x`).
//!
//! Relabelling runs on the cold path only: targets are relabelled when the configuration is
//! (re)loaded, and series when the scrape cache first sees them; the cache remembers the
//! result, including "dropped".

use std::fmt;

use md5::{Digest, Md5};
use regex::Regex;
use serde::{Deserialize, Deserializer, Serialize};

/// One relabelling rule as written in YAML.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RelabelConfig {
    /// Labels whose values are joined to form the input.
    #[serde(default)]
    pub source_labels: Vec<String>,
    /// Joins the source values (default `;`).
    #[serde(default = "default_separator")]
    pub separator: String,
    /// The label written by replace, lowercase, uppercase, hashmod; compared by keepequal and
    /// dropequal.
    #[serde(default)]
    pub target_label: Option<String>,
    /// Matched against the joined value (or label names for labelmap/labeldrop/labelkeep).
    #[serde(default)]
    pub regex: Option<RelabelRegex>,
    /// Divisor for hashmod.
    #[serde(default)]
    pub modulus: Option<u64>,
    /// Written by replace and labelmap (default `$1`).
    #[serde(default = "default_replacement")]
    pub replacement: String,
    /// What to do.
    #[serde(default)]
    pub action: Action,
}

fn default_separator() -> String {
    ";".into()
}

fn default_replacement() -> String {
    "$1".into()
}

/// The relabel actions of DESIGN.md §5.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// See the module docs.
    #[default]
    Replace,
    /// See the module docs.
    Keep,
    /// See the module docs.
    Drop,
    /// See the module docs.
    KeepEqual,
    /// See the module docs.
    DropEqual,
    /// See the module docs.
    HashMod,
    /// See the module docs.
    LabelMap,
    /// See the module docs.
    LabelDrop,
    /// See the module docs.
    LabelKeep,
    /// See the module docs.
    Lowercase,
    /// See the module docs.
    Uppercase,
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Replace => "replace",
            Self::Keep => "keep",
            Self::Drop => "drop",
            Self::KeepEqual => "keepequal",
            Self::DropEqual => "dropequal",
            Self::HashMod => "hashmod",
            Self::LabelMap => "labelmap",
            Self::LabelDrop => "labeldrop",
            Self::LabelKeep => "labelkeep",
            Self::Lowercase => "lowercase",
            Self::Uppercase => "uppercase",
        })
    }
}

/// A regex as written, compiled anchored (`^(?:…)$`) when deserialised, so a bad pattern is
/// reported with the line it is on.
#[derive(Debug, Clone)]
pub struct RelabelRegex {
    source: String,
    anchored: Regex,
}

impl RelabelRegex {
    /// Compiles `source` anchored at both ends.
    pub fn new(source: &str) -> Result<Self, regex::Error> {
        Ok(Self {
            source: source.to_string(),
            anchored: Regex::new(&format!("^(?:{source})$"))?,
        })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }
}

impl PartialEq for RelabelRegex {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl<'de> Deserialize<'de> for RelabelRegex {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = RelabelRegex;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a regular expression")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<RelabelRegex, E> {
                RelabelRegex::new(v).map_err(|e| E::custom(format!("invalid regex {v:?}: {e}")))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<RelabelRegex, E> {
                self.visit_str(&v.to_string())
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<RelabelRegex, E> {
                self.visit_str(&v.to_string())
            }
        }
        d.deserialize_any(V)
    }
}

impl Serialize for RelabelRegex {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.source)
    }
}

/// A validated rule, ready to apply.
#[derive(Debug, Clone)]
pub struct Rule {
    config: RelabelConfig,
    regex: Regex,
}

impl Rule {
    /// Validates a rule as Prometheus does; the message names the offending field.
    pub fn new(config: RelabelConfig) -> Result<Self, String> {
        let regex = config
            .regex
            .as_ref()
            .map(|r| r.anchored.clone())
            .unwrap_or_else(|| Regex::new("^(?:(.*))$").expect("the default regex compiles"));
        let action = config.action;
        let needs_target = matches!(
            action,
            Action::Replace
                | Action::HashMod
                | Action::Lowercase
                | Action::Uppercase
                | Action::KeepEqual
                | Action::DropEqual
        );
        let target = config.target_label.as_deref().unwrap_or("");
        if needs_target && target.is_empty() {
            return Err(format!("relabel action {action} requires target_label"));
        }
        if matches!(
            action,
            Action::Lowercase
                | Action::Uppercase
                | Action::HashMod
                | Action::KeepEqual
                | Action::DropEqual
        ) && !storage::labels::is_valid_label_name(target)
        {
            return Err(format!(
                "{target:?} is an invalid target_label for {action} action"
            ));
        }
        if action == Action::Replace && !is_valid_target_template(target) {
            return Err(format!(
                "{target:?} is an invalid target_label for replace action"
            ));
        }
        if action == Action::HashMod && config.modulus.unwrap_or(0) == 0 {
            return Err("relabel action hashmod requires a modulus greater than 0".into());
        }
        if action == Action::LabelMap && !is_valid_target_template(&config.replacement) {
            return Err(format!(
                "{:?} is an invalid replacement for labelmap action",
                config.replacement
            ));
        }
        if matches!(action, Action::LabelDrop | Action::LabelKeep)
            && (!config.source_labels.is_empty()
                || config.target_label.is_some()
                || config.modulus.is_some()
                || config.separator != default_separator()
                || config.replacement != default_replacement())
        {
            return Err(format!(
                "{action} action requires only 'regex', and no other fields"
            ));
        }
        if matches!(action, Action::KeepEqual | Action::DropEqual)
            && (config.regex.as_ref().is_some_and(|r| r.as_str() != "(.*)")
                || config.modulus.is_some()
                || config.separator != default_separator()
                || config.replacement != default_replacement())
        {
            return Err(format!(
                "{action} action requires only 'source_labels' and 'target_label', and no other fields"
            ));
        }
        Ok(Self { config, regex })
    }

    /// The rule as configured.
    pub fn config(&self) -> &RelabelConfig {
        &self.config
    }
}

/// True for a label name, possibly with `$1` / `${name}` references (Prometheus's
/// `relabelTarget` pattern).
fn is_valid_target_template(s: &str) -> bool {
    if s.is_empty() {
        return false;
    }
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'$' => {
                i += 1;
                if b.get(i) == Some(&b'{') {
                    let end = match s[i..].find('}') {
                        Some(e) => i + e,
                        None => return false,
                    };
                    if end == i + 1 || !s[i + 1..end].bytes().all(is_word) {
                        return false;
                    }
                    i = end + 1;
                } else {
                    let n = b[i..].iter().take_while(|c| is_word(**c)).count();
                    if n == 0 {
                        return false;
                    }
                    i += n;
                }
            }
            c if c.is_ascii_alphabetic() || c == b'_' => i += 1,
            c if c.is_ascii_digit() && i > 0 => i += 1,
            _ => return false,
        }
    }
    true
}

fn is_word(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

/// A label set under construction: sorted by name, names unique. Setting an empty value
/// removes the label, as in Prometheus.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSet(Vec<(String, String)>);

impl LabelSet {
    /// From pairs in any order (later pairs win; empty values are dropped).
    pub fn from_pairs<N: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (N, V)>,
    ) -> Self {
        let mut s = Self::default();
        for (n, v) in pairs {
            s.set(n.into(), v.into());
        }
        s
    }

    /// The value of `name`, `""` when absent.
    pub fn get(&self, name: &str) -> &str {
        self.position(name).map_or("", |i| self.0[i].1.as_str())
    }

    /// Sets (or, with an empty value, removes) a label.
    pub fn set(&mut self, name: String, value: String) {
        match (self.position(&name), value.is_empty()) {
            (Ok(i), true) => {
                self.0.remove(i);
            }
            (Ok(i), false) => self.0[i].1 = value,
            (Err(_), true) => {}
            (Err(i), false) => self.0.insert(i, (name, value)),
        }
    }

    /// Removes every label for which `f(name)` is true.
    pub fn remove_if(&mut self, mut f: impl FnMut(&str) -> bool) {
        self.0.retain(|(n, _)| !f(n));
    }

    /// The pairs, sorted by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }

    /// Number of labels.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn position(&self, name: &str) -> Result<usize, usize> {
        self.0.binary_search_by(|(n, _)| n.as_str().cmp(name))
    }
}

/// Applies `rules` in order. Returns false when a rule drops the set (the set is then
/// meaningless).
pub fn relabel(labels: &mut LabelSet, rules: &[Rule]) -> bool {
    rules.iter().all(|rule| apply(labels, rule))
}

fn apply(labels: &mut LabelSet, rule: &Rule) -> bool {
    let cfg = &rule.config;
    let joined = || {
        cfg.source_labels
            .iter()
            .map(|n| labels.get(n))
            .collect::<Vec<_>>()
            .join(&cfg.separator)
    };
    let target = cfg.target_label.as_deref().unwrap_or("");
    match cfg.action {
        Action::Keep => rule.regex.is_match(&joined()),
        Action::Drop => !rule.regex.is_match(&joined()),
        Action::KeepEqual => joined() == labels.get(target),
        Action::DropEqual => joined() != labels.get(target),
        Action::Replace => {
            let value = joined();
            let Some(caps) = rule.regex.captures(&value) else {
                return true;
            };
            let mut name = String::new();
            caps.expand(target, &mut name);
            if !storage::labels::is_valid_label_name(&name) {
                return true;
            }
            let mut replaced = String::new();
            caps.expand(&cfg.replacement, &mut replaced);
            labels.set(name, replaced);
            true
        }
        Action::Lowercase => {
            let v = joined().to_lowercase();
            labels.set(target.to_string(), v);
            true
        }
        Action::Uppercase => {
            let v = joined().to_uppercase();
            labels.set(target.to_string(), v);
            true
        }
        Action::HashMod => {
            let digest = Md5::digest(joined().as_bytes());
            let mut tail = [0u8; 8];
            tail.copy_from_slice(&digest[8..16]);
            let modulus = cfg.modulus.unwrap_or(1).max(1);
            labels.set(
                target.to_string(),
                (u64::from_be_bytes(tail) % modulus).to_string(),
            );
            true
        }
        Action::LabelMap => {
            let mut added = Vec::new();
            for (name, value) in labels.iter() {
                if let Some(caps) = rule.regex.captures(name) {
                    let mut new_name = String::new();
                    caps.expand(&cfg.replacement, &mut new_name);
                    added.push((new_name, value.to_string()));
                }
            }
            for (n, v) in added {
                labels.set(n, v);
            }
            true
        }
        Action::LabelDrop => {
            labels.remove_if(|n| rule.regex.is_match(n));
            true
        }
        Action::LabelKeep => {
            labels.remove_if(|n| !rule.regex.is_match(n));
            true
        }
    }
}

#[cfg(test)]
mod tests;
