//! Table-driven cases. Each states Prometheus's documented behaviour for the action (see the
//! `<relabel_config>` section of the Prometheus configuration docs); hashmod values were
//! computed independently as MD5's last 8 bytes, big-endian, modulo the modulus.

use super::*;

fn rules(yaml: &str) -> Vec<Rule> {
    let configs: Vec<RelabelConfig> = serde_norway::from_str(yaml).unwrap();
    configs.into_iter().map(|c| Rule::new(c).unwrap()).collect()
}

fn set(pairs: &[(&str, &str)]) -> LabelSet {
    LabelSet::from_pairs(pairs.iter().copied())
}

/// (name, rules, input, expected output or None for dropped)
type Case<'a> = (
    &'a str,
    &'a str,
    &'a [(&'a str, &'a str)],
    Option<&'a [(&'a str, &'a str)]>,
);

#[test]
fn actions_follow_prometheus() {
    let cases: &[Case] = &[
        (
            "replace with a capture group",
            "[{source_labels: [a], regex: 'f(.*)', target_label: d, replacement: 'ch${1}-ch${1}'}]",
            &[("a", "foo")],
            Some(&[("a", "foo"), ("d", "choo-choo")]),
        ),
        (
            "replace leaves the set alone when the regex does not match",
            "[{source_labels: [a], regex: 'f(.*)', target_label: d}]",
            &[("a", "bar")],
            Some(&[("a", "bar")]),
        ),
        (
            "the regex is anchored at both ends",
            "[{source_labels: [a], regex: 'oo', target_label: d, replacement: hit}]",
            &[("a", "foo")],
            Some(&[("a", "foo")]),
        ),
        (
            "source values are joined with the separator",
            "[{source_labels: [a, b], separator: '|', target_label: c}]",
            &[("a", "1"), ("b", "2")],
            Some(&[("a", "1"), ("b", "2"), ("c", "1|2")]),
        ),
        (
            "missing source labels join as empty strings",
            "[{source_labels: [a, nope, b], target_label: c}]",
            &[("a", "1"), ("b", "2")],
            Some(&[("a", "1"), ("b", "2"), ("c", "1;;2")]),
        ),
        (
            "an empty replacement removes the target label",
            "[{source_labels: [a], regex: '.*', target_label: b, replacement: ''}]",
            &[("a", "x"), ("b", "y")],
            Some(&[("a", "x")]),
        ),
        (
            "target_label may use capture groups",
            "[{source_labels: [a], regex: '(.+)=(.+)', target_label: '${1}', replacement: '${2}'}]",
            &[("a", "zone=eu")],
            Some(&[("a", "zone=eu"), ("zone", "eu")]),
        ),
        (
            "an expanded target that is not a label name changes nothing",
            "[{source_labels: [a], regex: '(.+)', target_label: '${1}', replacement: x}]",
            &[("a", "1-bad")],
            Some(&[("a", "1-bad")]),
        ),
        (
            "$1x names a group that does not exist and expands to nothing",
            "[{source_labels: [a], regex: '(.+)', target_label: b, replacement: '$1x'}]",
            &[("a", "v"), ("b", "old")],
            Some(&[("a", "v")]),
        ),
        (
            "$$ is a literal dollar",
            "[{source_labels: [a], regex: '(.+)', target_label: b, replacement: '$$${1}'}]",
            &[("a", "5")],
            Some(&[("a", "5"), ("b", "$5")]),
        ),
        (
            "rules run in order, each seeing the previous result",
            "[{source_labels: [a], target_label: b}, {source_labels: [b], regex: '(.*)', target_label: c, replacement: '${1}!'}]",
            &[("a", "x")],
            Some(&[("a", "x"), ("b", "x"), ("c", "x!")]),
        ),
        (
            "keep keeps what matches",
            "[{source_labels: [job], regex: 'node|api', action: keep}]",
            &[("job", "node")],
            Some(&[("job", "node")]),
        ),
        (
            "keep drops what does not match",
            "[{source_labels: [job], regex: 'node|api', action: keep}]",
            &[("job", "nodes")],
            None,
        ),
        (
            "drop drops what matches",
            "[{source_labels: [__name__], regex: 'go_.*', action: drop}]",
            &[("__name__", "go_goroutines")],
            None,
        ),
        (
            "drop keeps what does not match",
            "[{source_labels: [__name__], regex: 'go_.*', action: drop}]",
            &[("__name__", "up")],
            Some(&[("__name__", "up")]),
        ),
        (
            "keepequal keeps equal values",
            "[{source_labels: [a], target_label: b, action: keepequal}]",
            &[("a", "1"), ("b", "1")],
            Some(&[("a", "1"), ("b", "1")]),
        ),
        (
            "keepequal drops different values",
            "[{source_labels: [a], target_label: b, action: keepequal}]",
            &[("a", "1"), ("b", "2")],
            None,
        ),
        (
            "dropequal drops equal values",
            "[{source_labels: [a], target_label: b, action: dropequal}]",
            &[("a", "1"), ("b", "1")],
            None,
        ),
        (
            "hashmod is MD5 modulo the modulus",
            "[{source_labels: [a], target_label: shard, modulus: 10, action: hashmod}, \
              {source_labels: [b], target_label: shard2, modulus: 1000, action: hashmod}]",
            &[("a", "foo"), ("b", "127.0.0.1:9100")],
            Some(&[
                ("a", "foo"),
                ("b", "127.0.0.1:9100"),
                ("shard", "6"),
                ("shard2", "150"),
            ]),
        ),
        (
            "hashmod and keep shard targets",
            "[{source_labels: [__address__], target_label: __tmp_hash, modulus: 10, action: hashmod}, \
              {source_labels: [__tmp_hash], regex: '2', action: keep}]",
            &[("__address__", "bar")],
            Some(&[("__address__", "bar"), ("__tmp_hash", "2")]),
        ),
        (
            "labelmap copies matching label names",
            "[{regex: '__meta_kubernetes_pod_label_(.+)', action: labelmap}]",
            &[("__meta_kubernetes_pod_label_app", "web"), ("x", "1")],
            Some(&[
                ("__meta_kubernetes_pod_label_app", "web"),
                ("app", "web"),
                ("x", "1"),
            ]),
        ),
        (
            "labelmap with a replacement template",
            "[{regex: 'tag_(.+)', replacement: 'k_${1}', action: labelmap}]",
            &[("tag_a", "1"), ("tag_b", "2")],
            Some(&[("k_a", "1"), ("k_b", "2"), ("tag_a", "1"), ("tag_b", "2")]),
        ),
        (
            "labeldrop removes matching names",
            "[{regex: 'tmp_.*', action: labeldrop}]",
            &[("tmp_a", "1"), ("tmp_b", "2"), ("keep", "3")],
            Some(&[("keep", "3")]),
        ),
        (
            "labelkeep removes names that do not match",
            "[{regex: 'job|instance', action: labelkeep}]",
            &[("job", "a"), ("instance", "b"), ("other", "c")],
            Some(&[("instance", "b"), ("job", "a")]),
        ),
        (
            "lowercase and uppercase",
            "[{source_labels: [a], target_label: lower, action: lowercase}, \
              {source_labels: [a], target_label: upper, action: uppercase}]",
            &[("a", "MiXeD")],
            Some(&[("a", "MiXeD"), ("lower", "mixed"), ("upper", "MIXED")]),
        ),
    ];
    let mut failures = Vec::new();
    for (name, yaml, input, expected) in cases {
        let mut labels = set(input);
        let kept = relabel(&mut labels, &rules(yaml));
        let got = kept.then_some(labels);
        let want = expected.map(set);
        if got != want {
            failures.push(format!("{name}: got {got:?}, want {want:?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn invalid_rules_are_refused_with_the_reason() {
    let cases = [
        (
            "{action: replace, source_labels: [a]}",
            "requires target_label",
        ),
        (
            "{action: hashmod, source_labels: [a], target_label: b}",
            "modulus greater than 0",
        ),
        (
            "{action: lowercase, source_labels: [a], target_label: '${1}'}",
            "invalid target_label for lowercase",
        ),
        (
            "{action: replace, source_labels: [a], target_label: 'a-b'}",
            "invalid target_label for replace",
        ),
        (
            "{action: labelmap, regex: '(.*)', replacement: '-'}",
            "invalid replacement for labelmap",
        ),
        (
            "{action: labeldrop, regex: a, source_labels: [x]}",
            "requires only 'regex'",
        ),
        (
            "{action: keepequal, source_labels: [a], target_label: b, regex: x}",
            "requires only 'source_labels' and 'target_label'",
        ),
    ];
    for (yaml, expected) in cases {
        let config: RelabelConfig = serde_norway::from_str(yaml).unwrap();
        let err = Rule::new(config).unwrap_err();
        assert!(err.contains(expected), "{yaml}: {err}");
    }
    let err =
        serde_norway::from_str::<RelabelConfig>("{action: keep, regex: '(unclosed'}").unwrap_err();
    assert!(
        err.to_string().contains("invalid regex \"(unclosed\""),
        "{err}"
    );
    let err = serde_norway::from_str::<RelabelConfig>("{action: explode}").unwrap_err();
    assert!(
        err.to_string().contains("unknown variant `explode`"),
        "{err}"
    );
}

#[test]
fn target_templates_match_prometheus_pattern() {
    for ok in ["a", "_a1", "${1}", "$1", "foo${bar}baz", "${1}2", "a$b"] {
        assert!(is_valid_target_template(ok), "{ok}");
    }
    for bad in ["", "1a", "a-b", "${}", "${a", "$", "a b"] {
        assert!(!is_valid_target_template(bad), "{bad}");
    }
}
