//! Property tests: well-formed expositions round-trip through both parsers, and no input —
//! random bytes or exposition-shaped noise — makes either parser panic. These run in CI in
//! place of the cargo-fuzz target in `ingest/fuzz` (which needs a nightly toolchain).

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;

#[derive(Debug, Clone)]
struct Line {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
    timestamp: Option<i64>,
}

fn line() -> impl Strategy<Value = Line> {
    (
        "[a-zA-Z_:][a-zA-Z0-9_:]{0,20}",
        prop::collection::btree_map("[a-zA-Z_][a-zA-Z0-9_]{0,10}", any::<String>(), 0..5),
        prop_oneof![
            any::<f64>(),
            Just(f64::NAN),
            Just(f64::INFINITY),
            Just(f64::NEG_INFINITY),
            (0u64..1_000_000).prop_map(|n| n as f64),
        ],
        prop::option::of(-10_000_000_000_000i64..10_000_000_000_000),
    )
        .prop_map(|(name, labels, value, timestamp)| Line {
            name,
            labels,
            value,
            timestamp,
        })
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn render_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{v:?}")
    }
}

fn render(lines: &[Line], format: Format) -> String {
    let mut out = String::new();
    for l in lines {
        out.push_str(&format!("# HELP {} help for \\\\ {}\n", l.name, l.name));
        out.push_str(&l.name);
        if !l.labels.is_empty() {
            let labels: Vec<String> = l
                .labels
                .iter()
                .map(|(n, v)| format!("{n}=\"{}\"", escape(v)))
                .collect();
            out.push_str(&format!("{{{}}}", labels.join(",")));
        }
        out.push(' ');
        out.push_str(&render_value(l.value));
        if let Some(ts) = l.timestamp {
            match format {
                Format::Prometheus => out.push_str(&format!(" {ts}")),
                Format::OpenMetrics => {
                    let sign = if ts < 0 { "-" } else { "" };
                    let abs = ts.unsigned_abs();
                    out.push_str(&format!(" {sign}{}.{:03}", abs / 1000, abs % 1000));
                }
            }
        }
        out.push('\n');
    }
    if format == Format::OpenMetrics {
        out.push_str("# EOF\n");
    }
    out
}

fn same_value(a: f64, b: f64) -> bool {
    (a.is_nan() && b.is_nan()) || a == b
}

proptest! {
    #[test]
    fn well_formed_expositions_round_trip(lines in prop::collection::vec(line(), 0..20)) {
        for format in [Format::Prometheus, Format::OpenMetrics] {
            let text = render(&lines, format);
            let mut samples = Vec::new();
            let mut helps = 0;
            for entry in TextParser::with_format(text.as_bytes(), format) {
                match entry {
                    Ok(Entry::Sample(s)) => samples.push((
                        s.name.to_string(),
                        s.labels().map(|(n, v)| (n.to_string(), v.into_owned())).collect::<BTreeMap<_, _>>(),
                        s.value,
                        s.timestamp,
                    )),
                    Ok(Entry::Help { metric, help }) => {
                        helps += 1;
                        prop_assert_eq!(help.as_ref(), format!("help for \\ {metric}"));
                    }
                    Ok(_) => {}
                    Err(e) => prop_assert!(false, "{:?}: {} in\n{}", format, e, text),
                }
            }
            prop_assert_eq!(helps, lines.len());
            prop_assert_eq!(samples.len(), lines.len());
            for (l, (name, labels, value, ts)) in lines.iter().zip(samples) {
                prop_assert_eq!(&l.name, &name);
                prop_assert_eq!(&l.labels, &labels);
                prop_assert!(same_value(l.value, value), "{} != {}", l.value, value);
                prop_assert_eq!(l.timestamp, ts);
            }
        }
    }

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        for format in [Format::Prometheus, Format::OpenMetrics] {
            for entry in TextParser::with_format(&bytes, format) {
                if let Ok(Entry::Sample(s)) = entry {
                    s.labels().for_each(drop);
                }
            }
        }
    }

    #[test]
    fn exposition_shaped_noise_never_panics(text in "[a-z_{}=\",# \\\\\n\t0-9.+eE:-]{0,300}") {
        for format in [Format::Prometheus, Format::OpenMetrics] {
            for entry in TextParser::with_format(text.as_bytes(), format) {
                if let Ok(Entry::Sample(s)) = entry {
                    s.labels().for_each(drop);
                }
            }
        }
    }
}
