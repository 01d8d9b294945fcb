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

/// What a parse yields, reduced to comparable parts: each sample's span, value bits and
/// timestamp; each other entry by its debug form; the error with its line.
type Outcome = Vec<Result<(Vec<u8>, u64, Option<i64>), String>>;

/// One entry of an [`Outcome`].
fn reduce(entry: Result<Entry<'_>, ParseError>) -> Result<(Vec<u8>, u64, Option<i64>), String> {
    match entry {
        Ok(Entry::Sample(s)) => Ok((s.series.to_vec(), s.value.to_bits(), s.timestamp)),
        Ok(other) => Err(format!("{other:?}")),
        Err(e) => Err(e.to_string()),
    }
}

/// Parses with `next` only.
fn plain(input: &[u8], format: Format) -> Outcome {
    TextParser::with_format(input, format).map(reduce).collect()
}

/// Parses trying every span of `known` on each line first, as the scrape cache does with the
/// one it expects.
fn with_known(input: &[u8], format: Format, known: &[Vec<u8>]) -> Outcome {
    let mut parser = TextParser::with_format(input, format);
    let mut out = Vec::new();
    'lines: loop {
        for span in known {
            if let Some((start, value, ts)) = parser.next_known(span) {
                assert_eq!(
                    &input[start..start + span.len()],
                    span.as_slice(),
                    "next_known returned a start that is not the span"
                );
                out.push(Ok((span.clone(), value.to_bits(), ts)));
                continue 'lines;
            }
        }
        match parser.next() {
            None => return out,
            Some(entry) => out.push(reduce(entry)),
        }
    }
}

fn spans(input: &[u8], format: Format) -> Vec<Vec<u8>> {
    plain(input, format)
        .into_iter()
        .filter_map(|o| o.ok().map(|(span, _, _)| span))
        .collect()
}

#[test]
fn known_spans_change_nothing_on_edge_cases() {
    let cases: &[(&str, &[&str], Format)] = &[
        ("ab 1\na 2\n", &["a"], Format::Prometheus),
        (
            "a  {x=\"1\"} 3\na{x=\"1\"} 4\n",
            &["a", "a{x=\"1\"}"],
            Format::Prometheus,
        ),
        ("a{x=\"1\"}1\n", &["a{x=\"1\"}"], Format::Prometheus),
        ("a{x=\"1\"} 1 2 3\n", &["a{x=\"1\"}"], Format::Prometheus),
        ("a{x=\"1\"} 1 # {} 1\n", &["a{x=\"1\"}"], Format::Prometheus),
        (
            "a{x=\"1\"} 1 # {} 1\n# EOF\n",
            &["a{x=\"1\"}"],
            Format::OpenMetrics,
        ),
        ("a 1\r\na 2", &["a"], Format::Prometheus),
        ("a 1\r\n", &["a 1"], Format::Prometheus),
        ("a 1\r\n", &["a 1\r"], Format::Prometheus),
        ("a 1\nb 2\n", &["a 1\nb"], Format::Prometheus),
        ("  a 1\na\t1\t5\na 1 x\n", &["a"], Format::Prometheus),
        (
            "a nan\na +Inf\na 0x1p3\na 1e400\na\n",
            &["a"],
            Format::Prometheus,
        ),
        (
            "# TYPE foo counter\nfoo_total 1\nfoo_created 123\n# EOF\n",
            &["foo_created", "foo_total"],
            Format::OpenMetrics,
        ),
        (
            "# TYPE foo counter\nfoo_created{a=\"b\"} 1\n# TYPE bar gauge\nfoo_created{a=\"b\"} 2\n# EOF\n",
            &["foo_created{a=\"b\"}"],
            Format::OpenMetrics,
        ),
        ("a 1\n# EOF\na 2\n", &["a"], Format::OpenMetrics),
        // The one-pass tail (`plain_tail`) and what it leaves to the general path. A parse
        // error ends a body, so each failing tail has a body of its own.
        (
            "a 1.\na .5\na +1\na 1e3\na -0\na 007\na -12.50\na 0.5\n",
            &["a"],
            Format::Prometheus,
        ),
        (
            "a 123456789012345\na 1234567890123456\na 12345678.9012345\na 0.0000000000000001\n",
            &["a"],
            Format::Prometheus,
        ),
        (
            "a 9007199254740993\na 123456.78901234567\na -1234567890123456789\na 12345678901234567890\na 0.00000000000000000001\n",
            &["a"],
            Format::Prometheus,
        ),
        ("a  1\na\t1\na 1 \na 1\r\na 1.5", &["a"], Format::Prometheus),
        ("a 1\na -\n", &["a"], Format::Prometheus),
        ("a 1\na 1..5\n", &["a"], Format::Prometheus),
        ("a 1\na 1.5.5\n", &["a"], Format::Prometheus),
        ("a 1\na 12a\n", &["a"], Format::Prometheus),
        ("a 1\na -1-\n", &["a"], Format::Prometheus),
        ("a 1\na \n", &["a"], Format::Prometheus),
        ("a 1\na 1.5 x\n", &["a"], Format::Prometheus),
        ("a{x=\"1\"} 42\n", &["a{x=\"1\"}"], Format::Prometheus),
        ("a 1 1.5\na 2 1\n# EOF\n", &["a"], Format::OpenMetrics),
    ];
    for (body, known, format) in cases {
        let known: Vec<Vec<u8>> = known.iter().map(|k| k.as_bytes().to_vec()).collect();
        assert_eq!(
            with_known(body.as_bytes(), *format, &known),
            plain(body.as_bytes(), *format),
            "{body:?} with {known:?}"
        );
    }
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

    #[test]
    fn known_spans_change_nothing_on_well_formed_bodies(
        lines in prop::collection::vec(line(), 0..20),
        extra in prop::collection::vec(line(), 0..4),
        values in prop::collection::vec(any::<f64>(), 20),
    ) {
        for format in [Format::Prometheus, Format::OpenMetrics] {
            let known = spans(render(&lines, format).as_bytes(), format);
            // The next scrape: new values, a few new series in front, one series gone.
            let mut next: Vec<Line> = extra.clone();
            next.extend(lines.iter().skip(1).zip(&values).map(|(l, v)| Line { value: *v, ..l.clone() }));
            let text = render(&next, format);
            prop_assert_eq!(with_known(text.as_bytes(), format, &known), plain(text.as_bytes(), format));
        }
    }

    #[test]
    fn known_spans_change_nothing_on_noise(
        first in "[a-z_{}=\",# \\\\\n\t0-9.+eE:-]{0,200}",
        second in "[a-z_{}=\",# \\\\\n\t0-9.+eE:-]{0,200}",
    ) {
        for format in [Format::Prometheus, Format::OpenMetrics] {
            let known = spans(first.as_bytes(), format);
            let text = format!("{second}{first}{second}");
            prop_assert_eq!(with_known(text.as_bytes(), format, &known), plain(text.as_bytes(), format));
        }
    }

    #[test]
    fn values_parse_as_the_general_parser_reads_them(
        token in "-?[0-9]{0,17}(\\.[0-9]{0,17})?",
        digits in "[0-9]{1,9}",
        fraction in "[0-9]{1,8}",
        long in "[1-9][0-9]{5,9}\\.[0-9]{9,11}",
    ) {
        // Random tokens, and decimals such as gauges and sums write (`long`: 16 to 21
        // digits, as a gauge's f64 prints); every one must give the general parser's result
        // to the bit (or be rejected where it rejects).
        let decimal = format!("{digits}.{fraction}");
        let negative = format!("-{decimal}");
        let long_negative = format!("-{long}");
        for t in [token.as_str(), decimal.as_str(), negative.as_str(), long.as_str(), long_negative.as_str()] {
            let general = t.parse::<f64>().ok();
            prop_assert_eq!(parse_value(t.as_bytes()).map(f64::to_bits), general.map(f64::to_bits), "{}", t);
        }
    }
}
