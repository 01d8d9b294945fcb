use super::*;

/// A parsed sample line: name, labels, value, timestamp.
type Row = (String, Vec<(String, String)>, f64, Option<i64>);

/// The sample lines of `input` in `format`, or the first error.
fn rows(input: &str, format: Format) -> Result<Vec<Row>, ParseError> {
    TextParser::with_format(input.as_bytes(), format)
        .filter_map(|e| match e {
            Ok(Entry::Sample(s)) => Some(Ok((
                s.name.to_string(),
                s.labels()
                    .map(|(n, v)| (n.to_string(), v.into_owned()))
                    .collect(),
                s.value,
                s.timestamp,
            ))),
            Ok(_) => None,
            Err(e) => Some(Err(e)),
        })
        .collect()
}

fn samples(input: &str) -> Vec<Row> {
    rows(input, Format::Prometheus).unwrap()
}

fn error(input: &str) -> ParseError {
    TextParser::new(input.as_bytes())
        .find_map(|e| e.err())
        .expect("input should not parse")
}

fn l(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect()
}

#[test]
fn node_exporter_payload_parses_completely() {
    let body = include_bytes!("../../../testdata/node_exporter.prom");
    let mut help = 0;
    let mut types = 0;
    let mut n = 0;
    for entry in TextParser::new(body) {
        match entry.unwrap() {
            Entry::Help { .. } => help += 1,
            Entry::Type { .. } => types += 1,
            Entry::Sample(s) => {
                n += 1;
                assert!(s.series.starts_with(s.name.as_bytes()));
                for (name, _) in s.labels() {
                    assert!(storage::labels::is_valid_label_name(name), "{name}");
                }
            }
            Entry::Unit { .. } => {}
        }
    }
    let text = std::str::from_utf8(body).unwrap();
    let expected_samples = text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .count();
    assert_eq!(n, expected_samples);
    assert_eq!(
        help,
        text.lines().filter(|l| l.starts_with("# HELP")).count()
    );
    assert_eq!(
        types,
        text.lines().filter(|l| l.starts_with("# TYPE")).count()
    );
    assert!(n > 100);
}

#[test]
fn arrowhead_own_metrics_payload_parses() {
    let body = include_bytes!("../../../testdata/arrowhead_metrics.txt");
    let parsed: Vec<_> = TextParser::new(body).collect::<Result<_, _>>().unwrap();
    assert!(parsed.iter().any(
        |e| matches!(e, Entry::Sample(s) if s.name == "arrowhead_head_samples_appended_total")
    ));
}

#[test]
fn metadata_lines_are_entries() {
    let input = "# HELP http_requests_total The total number of HTTP requests.\n\
                 # TYPE http_requests_total counter\n\
                 # UNIT http_request_seconds seconds\n\
                 # just a comment\n\
                 #\n";
    let entries: Vec<Entry> = TextParser::new(input.as_bytes())
        .map(Result::unwrap)
        .collect();
    assert_eq!(
        entries,
        vec![
            Entry::Help {
                metric: "http_requests_total",
                help: Cow::Borrowed("The total number of HTTP requests.")
            },
            Entry::Type {
                metric: "http_requests_total",
                kind: MetricType::Counter
            },
            Entry::Unit {
                metric: "http_request_seconds",
                unit: "seconds"
            },
        ]
    );
}

#[test]
fn help_escapes_are_undone() {
    let entries: Vec<Entry> = TextParser::new(br"# HELP m a\\b\nc\x".as_slice())
        .map(Result::unwrap)
        .collect();
    assert_eq!(
        entries,
        vec![Entry::Help {
            metric: "m",
            help: Cow::Owned("a\\b\nc\\x".into())
        }]
    );
}

#[test]
fn the_format_documentation_example_parses() {
    // The example from the Prometheus exposition format documentation.
    let input = r#"
# HELP http_requests_total The total number of HTTP requests.
# TYPE http_requests_total counter
http_requests_total{method="post",code="200"} 1027 1395066363000
http_requests_total{method="post",code="400"}    3 1395066363000

# Escaping in label values:
msdos_file_access_time_seconds{path="C:\\DIR\\FILE.TXT",error="Cannot find file:\n\"FILE.TXT\""} 1.458255915e9

# Minimalistic line:
metric_without_timestamp_and_labels 12.47

# A weird metric from before the epoch:
something_weird{problem="division by zero"} +Inf -3982045

# A histogram, which has a pretty complex representation in the text format:
# HELP http_request_duration_seconds A histogram of the request duration.
# TYPE http_request_duration_seconds histogram
http_request_duration_seconds_bucket{le="0.05"} 24054
http_request_duration_seconds_bucket{le="+Inf"} 144320
http_request_duration_seconds_sum 53423
http_request_duration_seconds_count 144320
"#;
    let s = samples(input);
    assert_eq!(s.len(), 9);
    assert_eq!(
        s[0],
        (
            "http_requests_total".into(),
            l(&[("method", "post"), ("code", "200")]),
            1027.0,
            Some(1395066363000)
        )
    );
    assert_eq!(s[1].2, 3.0);
    assert_eq!(
        s[2].1,
        l(&[
            ("path", r"C:\DIR\FILE.TXT"),
            ("error", "Cannot find file:\n\"FILE.TXT\"")
        ])
    );
    assert_eq!(s[2].2, 1.458255915e9);
    assert_eq!(
        s[3],
        (
            "metric_without_timestamp_and_labels".into(),
            vec![],
            12.47,
            None
        )
    );
    assert_eq!(s[4].2, f64::INFINITY);
    assert_eq!(s[4].3, Some(-3982045));
    assert_eq!(s[6].1, l(&[("le", "+Inf")]));
}

#[test]
fn special_values_and_numbers() {
    let s = samples("a NaN\nb -Inf\nc +Inf\nd 1e-3\ne -0.5\nf 18446744073709551616\ng inf\n");
    assert!(s[0].2.is_nan());
    assert_eq!(s[1].2, f64::NEG_INFINITY);
    assert_eq!(s[2].2, f64::INFINITY);
    assert_eq!(s[3].2, 0.001);
    assert_eq!(s[4].2, -0.5);
    assert_eq!(s[5].2, 18446744073709551616.0);
    assert_eq!(s[6].2, f64::INFINITY);
}

/// Decimals of 16 to 19 digits, past what an f64 holds exactly, each rounded to the nearest
/// f64 (ties to even) on both paths: a known series' tail and a line parsed in full.
#[test]
fn long_decimals_round_to_the_nearest_f64() {
    let cases: [(&str, f64); 9] = [
        // 2^53 + 1 lies halfway between two f64s: to the even one, 2^53.
        ("9007199254740993", 9007199254740992.0),
        ("9007199254740995", 9007199254740996.0),
        ("123456.78901234567", 123456.78901234567),
        ("-999983.0187310298", -999983.0187310298),
        ("0.10000000000000001", 0.1),
        ("1234567890123456789", 1234567890123456789.0),
        ("9999999999999999999", 1e19),
        ("-0.000000000000000001", -1e-18),
        // 20 digits: the general parser's.
        ("12345678901234567890", 12345678901234567890.0),
    ];
    for (text, want) in cases {
        assert_eq!(parse_value(text.as_bytes()), Some(want), "{text}");
        let body = format!("a{{b=\"c\"}} 1\na{{b=\"c\"}} {text}\n");
        let mut p = TextParser::new(body.as_bytes());
        let Some(Ok(Entry::Sample(first))) = p.next() else {
            panic!("{body}")
        };
        let (_, value, timestamp) = p.next_known(first.series).expect(text);
        assert_eq!(
            (value.to_bits(), timestamp),
            (want.to_bits(), None),
            "{text}"
        );
        assert!(p.next().is_none());
    }
}

#[test]
fn lenient_spacing_and_line_endings() {
    let s = samples("m { a = \"1\" , b=\"2\", } 1 \r\n\tn{} 2\r\no{a=\"\"}\t3\t42\n");
    assert_eq!(s[0], ("m".into(), l(&[("a", "1"), ("b", "2")]), 1.0, None));
    assert_eq!(s[1], ("n".into(), vec![], 2.0, None));
    assert_eq!(s[2], ("o".into(), l(&[("a", "")]), 3.0, Some(42)));
}

#[test]
fn series_span_is_name_and_label_section() {
    let mut p = TextParser::new(b"up{job=\"x\"} 1 5\nfoo 2\n".as_slice());
    let Some(Ok(Entry::Sample(a))) = p.next() else {
        panic!()
    };
    assert_eq!(a.series, b"up{job=\"x\"}");
    let Some(Ok(Entry::Sample(b))) = p.next() else {
        panic!()
    };
    assert_eq!(b.series, b"foo");
}

#[test]
fn eof_ends_the_exposition() {
    assert_eq!(samples("a 1\n# EOF\nthis is not parsed\n").len(), 1);
}

#[test]
fn labels_may_contain_braces_and_commas() {
    let s = samples("m{a=\"}{,\\\"\",b=\"x\"} 1\n");
    assert_eq!(s[0].1, l(&[("a", "}{,\""), ("b", "x")]));
}

#[test]
fn utf8_label_values_are_accepted() {
    let s = samples("m{city=\"Zürich\",emoji=\"📈\"} 1\n");
    assert_eq!(s[0].1, l(&[("city", "Zürich"), ("emoji", "📈")]));
}

#[test]
fn errors_name_the_line_and_problem() {
    let cases = [
        ("a 1\nb{x=\"1\" 2\n", 2, "expected ',' or '}'"),
        (
            "a 1\n\nc{x=1} 2\n",
            3,
            "expected '\"' to start the value of label \"x\"",
        ),
        ("m{1x=\"1\"} 1", 1, "invalid label name"),
        ("m{x\"1\"} 1", 1, "expected '=' after label name \"x\""),
        ("m{x=\"1} 1", 1, "unterminated value of label \"x\""),
        ("m{x=\"1\"", 1, "missing '}'"),
        ("m", 1, "missing value for m"),
        ("m abc", 1, "invalid value \"abc\" for m"),
        ("m 1 2.5", 1, "invalid timestamp \"2.5\" for m"),
        ("m 1 2 3", 1, "unexpected text \"3\""),
        ("1m 1", 1, "expected a metric name"),
        ("# TYPE m countr", 1, "invalid metric type \"countr\" for m"),
        ("# HELP", 1, "expected a metric name after # HELP"),
        ("m{x=\"1\"}2", 1, "expected a blank before the value of m"),
    ];
    for (input, line, message) in cases {
        let e = error(input);
        assert_eq!(e.line, line, "{input:?}: {e}");
        assert!(
            e.message.contains(message),
            "{input:?}: got {e}, want {message:?}"
        );
    }
}

#[test]
fn invalid_utf8_in_label_values_is_an_error() {
    let e = TextParser::new(b"m{a=\"\xff\xfe\"} 1\n".as_slice())
        .find_map(|e| e.err())
        .unwrap();
    assert!(e.message.contains("not valid UTF-8"), "{e}");
}

#[test]
fn parsing_stops_after_the_first_error() {
    let results: Vec<_> = TextParser::new(b"a 1\nb x\nc 3\n".as_slice()).collect();
    assert_eq!(results.len(), 2);
    assert!(results[1].is_err());
}

#[test]
fn arbitrary_bytes_never_panic() {
    // A cheap deterministic stand-in for fuzzing: mutate the real payload byte by byte.
    let body = include_bytes!("../../../testdata/node_exporter.prom");
    let specials = [
        b'"', b'\\', b'{', b'}', b'=', b',', b' ', b'\n', b'#', 0xff, b'\t',
    ];
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..2000 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let mut mutated = body[..4096.min(body.len())].to_vec();
        let at = (state as usize) % mutated.len();
        mutated[at] = specials[(state >> 32) as usize % specials.len()];
        for e in TextParser::new(&mutated) {
            if let Ok(Entry::Sample(s)) = e {
                s.labels().for_each(drop);
            }
        }
    }
}

fn om_samples(input: &str) -> Result<Vec<Row>, ParseError> {
    rows(input, Format::OpenMetrics)
}

#[test]
fn openmetrics_payloads_parse() {
    let body = include_bytes!("../../../testdata/arrowhead_metrics.txt");
    let parsed: Vec<_> = TextParser::with_format(body, Format::OpenMetrics)
        .collect::<Result<_, _>>()
        .unwrap();
    assert!(parsed.iter().any(|e| matches!(e, Entry::Sample(_))));
    let body = include_bytes!("../../../testdata/openmetrics.txt");
    let s = om_samples(std::str::from_utf8(body).unwrap()).unwrap();
    let names: Vec<&str> = s.iter().map(|r| r.0.as_str()).collect();
    assert_eq!(
        names,
        [
            "acme_http_router_request_seconds_sum",
            "acme_http_router_request_seconds_count",
            "go_goroutines",
            "build_info",
            "alarm",
            "alarm",
            "http_requests_total",
            "http_requests_total",
            "rpc_duration_seconds_bucket",
            "rpc_duration_seconds_bucket",
            "rpc_duration_seconds_sum",
            "rpc_duration_seconds_count",
            "process_start_created",
        ],
        "_created samples of counters, histograms and summaries are dropped; a gauge named *_created is kept"
    );
    // Timestamps are seconds with a fraction.
    assert_eq!(s[2].3, Some(1_520_879_607_789));
    // Exemplars are dropped, the sample stays.
    assert_eq!(s[6].2, 1027.0);
    assert_eq!(s[8].1, l(&[("le", "0.1")]));
}

#[test]
fn openmetrics_metadata_keeps_units_and_quote_escapes() {
    let input = "# TYPE x_seconds counter\n# UNIT x_seconds seconds\n# HELP x_seconds A \\\"quoted\\\" help.\nx_seconds_total 1\n# EOF\n";
    let entries: Vec<Entry> = TextParser::with_format(input.as_bytes(), Format::OpenMetrics)
        .map(Result::unwrap)
        .collect();
    assert!(entries.contains(&Entry::Unit {
        metric: "x_seconds",
        unit: "seconds"
    }));
    assert!(entries.contains(&Entry::Help {
        metric: "x_seconds",
        help: Cow::Owned("A \"quoted\" help.".into())
    }));
}

#[test]
fn openmetrics_errors() {
    let cases = [
        ("a 1\n", 2, "missing # EOF"),
        ("a 1\n# EOF\nb 2\n", 2, "unexpected data after # EOF"),
        (
            "a 1 # {x=\"1\"}\n# EOF\n",
            1,
            "invalid exemplar of a: missing value",
        ),
        ("a 1 # x\n# EOF\n", 1, "invalid exemplar of a: expected '{'"),
        ("a 1 abc\n# EOF\n", 1, "invalid timestamp \"abc\""),
    ];
    for (input, line, message) in cases {
        let e = om_samples(input).unwrap_err();
        assert_eq!(e.line, line, "{input:?}: {e}");
        assert!(
            e.message.contains(message),
            "{input:?}: got {e}, want {message:?}"
        );
    }
    // The Prometheus format has no exemplars.
    let e = error("a 1 # {x=\"1\"} 2\n");
    assert!(e.message.contains("invalid timestamp \"#\""), "{e}");
}

#[test]
fn content_types_choose_the_parser() {
    assert_eq!(
        Format::from_content_type("application/openmetrics-text; version=1.0.0; charset=utf-8"),
        Format::OpenMetrics
    );
    assert_eq!(
        Format::from_content_type("text/plain; version=0.0.4"),
        Format::Prometheus
    );
    assert_eq!(Format::from_content_type(""), Format::Prometheus);
}
