//! The series model: a series is a metric name plus a set of label pairs.
//!
//! Label sets arrive from ingest as borrowed `(name, value)` pairs in any order; the head
//! interns them (see [`crate::head`]). [`Labels`] is the owned, sorted form handed back to
//! readers (system tables, the WAL's series records).

use std::fmt;

/// An owned label set, sorted by name, names unique, no empty values.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Labels(Vec<(String, String)>);

impl Labels {
    /// Builds a label set from pairs in any order. Empty values are dropped (an empty value means
    /// "no such label", as in Prometheus); for a repeated name the last pair wins.
    pub fn from_pairs<N: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (N, V)>,
    ) -> Self {
        let mut v: Vec<(String, String)> = pairs
            .into_iter()
            .map(|(n, v)| (n.into(), v.into()))
            .filter(|(_, v)| !v.is_empty())
            .collect();
        // Stable sort keeps input order among equal names, so dedup can keep the last.
        v.sort_by(|a, b| a.0.cmp(&b.0));
        let mut out: Vec<(String, String)> = Vec::with_capacity(v.len());
        for pair in v {
            match out.last_mut() {
                Some(last) if last.0 == pair.0 => *last = pair,
                _ => out.push(pair),
            }
        }
        Self(out)
    }

    /// The pairs, sorted by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }

    /// The value of one label.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .binary_search_by(|(n, _)| n.as_str().cmp(name))
            .ok()
            .map(|i| self.0[i].1.as_str())
    }

    /// Number of labels.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when there are no labels.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Renders the set as a JSON object with sorted keys, the form `system` tables use.
    pub fn to_json(&self) -> String {
        let mut s = String::from("{");
        for (i, (n, v)) in self.0.iter().enumerate() {
            if i > 0 {
                s.push(',');
            }
            json_string(&mut s, n);
            s.push(':');
            json_string(&mut s, v);
        }
        s.push('}');
        s
    }
}

fn json_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

impl fmt::Display for Labels {
    /// Prometheus notation: `{a="1", b="2"}`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("{")?;
        for (i, (n, v)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{n}={v:?}")?;
        }
        f.write_str("}")
    }
}

/// True for a valid Prometheus metric name: `[a-zA-Z_:][a-zA-Z0-9_:]*`.
pub fn is_valid_metric_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && (b[0].is_ascii_alphabetic() || b[0] == b'_' || b[0] == b':')
        && b[1..]
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || *c == b'_' || *c == b':')
}

/// True for a valid Prometheus label name: `[a-zA-Z_][a-zA-Z0-9_]*`.
pub fn is_valid_label_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && (b[0].is_ascii_alphabetic() || b[0] == b'_')
        && b[1..]
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || *c == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_pairs_sorts_drops_empty_and_keeps_last() {
        let l = Labels::from_pairs([("b", "2"), ("a", "1"), ("c", ""), ("a", "3")]);
        assert_eq!(l.iter().collect::<Vec<_>>(), vec![("a", "3"), ("b", "2")]);
        assert_eq!(l.get("b"), Some("2"));
        assert_eq!(l.get("c"), None);
        assert_eq!(l.to_string(), r#"{a="3", b="2"}"#);
    }

    #[test]
    fn json_is_sorted_and_escaped() {
        let l = Labels::from_pairs([("z", "q\"uote"), ("a", "back\\slash\n")]);
        assert_eq!(l.to_json(), r#"{"a":"back\\slash\n","z":"q\"uote"}"#);
    }

    #[test]
    fn names_are_validated() {
        assert!(is_valid_metric_name("job:up:ratio"));
        assert!(is_valid_metric_name("_x1"));
        assert!(!is_valid_metric_name("1x"));
        assert!(!is_valid_metric_name(""));
        assert!(is_valid_label_name("__name__"));
        assert!(!is_valid_label_name("a:b"));
        assert!(!is_valid_label_name("a-b"));
    }
}
