use std::sync::Arc;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Float64Type, TimestampMillisecondType};

use super::*;

fn head() -> Head {
    Head::new(HeadConfig::test_config())
}

fn append(head: &Head, metric: &str, labels: &[(&str, &str)], samples: &[(i64, f64)]) {
    let mut app = head.appender();
    let r = app.series(metric, labels).unwrap();
    for &(t, v) in samples {
        app.append(r, t, v);
    }
    app.commit().unwrap();
}

/// Reads every chunk of a snapshot with the full schema, no filters.
fn read_all(snap: &MetricSnapshot) -> Vec<RecordBatch> {
    let schema = snap.schema();
    snap.chunks()
        .iter()
        .filter_map(|c| snap.read(c, &schema, TimeRange::default(), None).unwrap())
        .collect()
}

/// The snapshot's column names, in schema order.
fn column_names(snap: &MetricSnapshot) -> Vec<String> {
    snap.schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect()
}

/// Rows as (labels rendered "a=1,b=2", timestamp, value), label NULLs left out.
fn rows(batches: &[RecordBatch]) -> Vec<(String, i64, f64)> {
    let mut out = Vec::new();
    for b in batches {
        let schema = b.schema();
        let ts = b
            .column_by_name("timestamp")
            .unwrap()
            .as_primitive::<TimestampMillisecondType>();
        let vs = b
            .column_by_name("value")
            .unwrap()
            .as_primitive::<Float64Type>();
        let labels: Vec<(String, arrow::array::ArrayRef)> = schema
            .fields()
            .iter()
            .zip(b.columns())
            .filter(|(f, _)| f.name() != "timestamp" && f.name() != "value")
            .map(|(f, c)| (f.name().clone(), cast(c, &DataType::Utf8).unwrap()))
            .collect();
        for i in 0..b.num_rows() {
            let l: Vec<String> = labels
                .iter()
                .filter(|(_, c)| c.is_valid(i))
                .map(|(n, c)| format!("{n}={}", c.as_string::<i32>().value(i)))
                .collect();
            out.push((l.join(","), ts.value(i), vs.value(i)));
        }
    }
    out.sort_by(|a, b| (a.0.as_str(), a.1).cmp(&(b.0.as_str(), b.1)));
    out
}

#[test]
fn appended_samples_are_read_back_with_labels() {
    let h = head();
    append(
        &h,
        "m",
        &[("job", "a"), ("instance", "x")],
        &[(1, 1.0), (2, 2.0)],
    );
    append(&h, "m", &[("instance", "y"), ("job", "a")], &[(1, 10.0)]);
    let snap = h.metric("m").unwrap().snapshot();
    let schema = snap.schema();
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    assert_eq!(names, ["instance", "job", "timestamp", "value"]);
    assert_eq!(
        rows(&read_all(&snap)),
        vec![
            ("instance=x,job=a".into(), 1, 1.0),
            ("instance=x,job=a".into(), 2, 2.0),
            ("instance=y,job=a".into(), 1, 10.0),
        ]
    );
    assert_eq!(h.series_count(), 2);
    assert_eq!(h.metrics().samples_appended.get(), 3);
}

#[test]
fn label_order_does_not_create_a_new_series() {
    let h = head();
    let mut app = h.appender();
    let a = app.series("m", &[("a", "1"), ("b", "2")]).unwrap();
    let b = app.series("m", &[("b", "2"), ("a", "1")]).unwrap();
    let c = app
        .series("m", &[("b", "2"), ("a", "1"), ("c", "")])
        .unwrap();
    assert_eq!(a, b);
    assert_eq!(a, c);
    assert_ne!(a, app.series("m", &[("a", "1")]).unwrap());
}

#[test]
fn new_labels_widen_the_table_and_old_rows_read_null() {
    let h = head();
    append(&h, "m", &[("job", "a")], &[(1, 1.0)]);
    let before = h.metric("m").unwrap().snapshot();
    append(&h, "m", &[("job", "a"), ("zone", "eu")], &[(2, 2.0)]);
    let snap = h.metric("m").unwrap().snapshot();
    assert_eq!(snap.schema().fields().len(), 4);
    assert_eq!(
        rows(&read_all(&snap)),
        vec![("job=a".into(), 1, 1.0), ("job=a,zone=eu".into(), 2, 2.0)]
    );
    // The older snapshot is unchanged.
    assert_eq!(before.schema().fields().len(), 3);
    assert_eq!(rows(&read_all(&before)), vec![("job=a".into(), 1, 1.0)]);
}

#[test]
fn labels_named_like_fixed_columns_are_renamed() {
    let h = head();
    append(&h, "m", &[("value", "v"), ("timestamp", "t")], &[(1, 1.0)]);
    let snap = h.metric("m").unwrap().snapshot();
    let names = column_names(&snap);
    assert_eq!(
        names,
        ["label_timestamp", "label_value", "timestamp", "value"]
    );
    assert_eq!(
        rows(&read_all(&snap)),
        vec![("label_timestamp=t,label_value=v".into(), 1, 1.0)]
    );
}

#[test]
fn label_column_names_never_collide() {
    let h = head();
    append(
        &h,
        "m",
        &[
            ("value", "a"),
            ("label_value", "b"),
            ("label_label_value", "c"),
        ],
        &[(1, 1.0)],
    );
    let snap = h.metric("m").unwrap().snapshot();
    let names = column_names(&snap);
    assert_eq!(
        names,
        [
            "label_label_label_value",
            "label_label_value",
            "label_value",
            "timestamp",
            "value"
        ]
    );
    assert_eq!(
        rows(&read_all(&snap)),
        vec![(
            "label_label_label_value=c,label_label_value=b,label_value=a".into(),
            1,
            1.0
        )]
    );
    assert_eq!(label_column_name("labels"), "labels");
    assert_eq!(label_column_name("label_x"), "label_x");
}

#[test]
fn out_of_order_and_duplicate_samples_are_dropped_and_counted() {
    let h = head();
    let mut app = h.appender();
    let r = app.series("m", &[]).unwrap();
    app.append(r, 10, 1.0);
    app.append(r, 10, 2.0);
    app.append(r, 5, 3.0);
    app.append(r, 11, 4.0);
    let stats = app.commit().unwrap();
    assert_eq!(
        stats,
        AppendStats {
            appended: 2,
            out_of_order: 2
        }
    );
    assert_eq!(h.metrics().samples_out_of_order.get(), 2);
    let snap = h.metric("m").unwrap().snapshot();
    assert_eq!(
        rows(&read_all(&snap)),
        vec![(String::new(), 10, 1.0), (String::new(), 11, 4.0)]
    );
}

#[test]
fn nothing_is_visible_before_commit_and_rollback_drops() {
    let h = head();
    let mut app = h.appender();
    let r = app.series("m", &[("a", "1")]).unwrap();
    app.append(r, 1, 1.0);
    assert_eq!(h.metric("m").unwrap().snapshot().rows(), 0);
    app.rollback();
    app.commit().unwrap();
    assert_eq!(h.metric("m").unwrap().snapshot().rows(), 0);
    app.append(r, 2, 2.0);
    app.commit().unwrap();
    assert_eq!(h.metric("m").unwrap().snapshot().rows(), 1);
}

#[test]
fn chunks_seal_and_snapshots_are_stable_while_appending() {
    let h = head();
    let samples: Vec<(i64, f64)> = (0..10).map(|i| (i, i as f64)).collect();
    append(&h, "m", &[("a", "1")], &samples);
    let snap = h.metric("m").unwrap().snapshot();
    // chunk_rows = 4 in the test config: 4 + 4 sealed, 2 open.
    assert_eq!(snap.chunks().len(), 3);
    append(&h, "m", &[("a", "1")], &[(100, 1.0)]);
    assert_eq!(snap.rows(), 10);
    assert_eq!(h.metric("m").unwrap().snapshot().rows(), 11);
}

#[test]
fn time_range_and_label_matchers_prune_rows() {
    let h = head();
    for (cpu, mode) in [("0", "idle"), ("0", "user"), ("1", "idle")] {
        let samples: Vec<(i64, f64)> = (0..6).map(|i| (i * 10, i as f64)).collect();
        append(&h, "cpu", &[("cpu", cpu), ("mode", mode)], &samples);
    }
    append(&h, "cpu", &[("cpu", "2")], &[(0, 0.0)]);
    let snap = h.metric("cpu").unwrap().snapshot();
    let schema = snap.schema();
    let read = |time: TimeRange, matchers: &[LabelMatcher]| {
        let mask = snap.series_mask(matchers);
        let batches: Vec<RecordBatch> = snap
            .chunks()
            .iter()
            .filter_map(|c| snap.read(c, &schema, time, mask.as_deref()).unwrap())
            .collect();
        rows(&batches)
    };
    let eq = |c: &str, v: &str| LabelMatcher {
        column: c.into(),
        op: MatchOp::Eq(v.into()),
    };
    let idle = read(TimeRange::default(), &[eq("mode", "idle")]);
    assert_eq!(idle.len(), 12);
    assert!(idle.iter().all(|r| r.0.contains("mode=idle")));
    let window = read(
        TimeRange { start: 20, end: 30 },
        &[eq("mode", "idle"), eq("cpu", "1")],
    );
    assert_eq!(
        window,
        vec![
            ("cpu=1,mode=idle".into(), 20, 2.0),
            ("cpu=1,mode=idle".into(), 30, 3.0)
        ]
    );
    // A series without the label never matches, as NULL never does in SQL.
    let not_idle = read(
        TimeRange::default(),
        &[LabelMatcher {
            column: "mode".into(),
            op: MatchOp::NotEq("idle".into()),
        }],
    );
    assert_eq!(not_idle.len(), 6);
    let in_list = read(
        TimeRange::default(),
        &[LabelMatcher {
            column: "cpu".into(),
            op: MatchOp::In(vec!["1".into(), "2".into()]),
        }],
    );
    assert_eq!(in_list.len(), 7);
    assert!(read(TimeRange::default(), &[eq("nope", "x")]).is_empty());
    assert!(
        read(
            TimeRange {
                start: 100,
                end: 200
            },
            &[]
        )
        .is_empty()
    );
}

#[test]
fn projection_reads_only_requested_columns() {
    let h = head();
    append(&h, "m", &[("a", "1"), ("b", "2")], &[(1, 1.0)]);
    let snap = h.metric("m").unwrap().snapshot();
    let projected = Arc::new(snap.schema().project(&[1, 3]).unwrap());
    let batch = snap
        .read(&snap.chunks()[0], &projected, TimeRange::default(), None)
        .unwrap()
        .unwrap();
    assert_eq!(batch.num_columns(), 2);
    assert_eq!(batch.schema().field(0).name(), "b");
    let empty = Arc::new(snap.schema().project(&[]).unwrap());
    let batch = snap
        .read(&snap.chunks()[0], &empty, TimeRange::default(), None)
        .unwrap()
        .unwrap();
    assert_eq!(batch.num_rows(), 1);
}

#[test]
fn series_limit_rejects_new_series_only() {
    let h = Head::new(HeadConfig {
        chunk_rows: 16,
        max_series: 2,
    });
    let mut app = h.appender();
    let a = app.series("m", &[("i", "1")]).unwrap();
    app.series("n", &[]).unwrap();
    let err = app.series("m", &[("i", "3")]).unwrap_err();
    assert_eq!(err, AppendError::SeriesLimit { limit: 2 });
    assert_eq!(app.series("m", &[("i", "1")]).unwrap(), a);
    app.append(a, 1, 1.0);
    assert_eq!(app.commit().unwrap().appended, 1);
    assert_eq!(h.metrics().series_rejected.get(), 1);
    assert_eq!(h.series_count(), 2);
}

#[test]
fn duplicate_label_names_are_refused() {
    let h = head();
    let err = h
        .appender()
        .series("m", &[("a", "1"), ("a", "2")])
        .unwrap_err();
    assert!(
        err.to_string().contains("label \"a\" appears twice"),
        "{err}"
    );
}

#[test]
fn concurrent_appends_and_reads_agree() {
    let h = Arc::new(Head::new(HeadConfig {
        chunk_rows: 64,
        max_series: 0,
    }));
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let h = Arc::clone(&h);
            std::thread::spawn(move || {
                let inst = w.to_string();
                for t in 0..500 {
                    let mut app = h.appender();
                    let r = app.series("m", &[("w", &inst)]).unwrap();
                    app.append(r, t, t as f64);
                    app.commit().unwrap();
                }
            })
        })
        .collect();
    let mut last = 0;
    while !writers.iter().all(|w| w.is_finished()) {
        let rows = h
            .metric("m")
            .map_or(0, |m| rows(&read_all(&m.snapshot())).len());
        assert!(rows >= last, "snapshots never go backwards");
        last = rows;
    }
    for w in writers {
        w.join().unwrap();
    }
    assert_eq!(
        rows(&read_all(&h.metric("m").unwrap().snapshot())).len(),
        2000
    );
    assert_eq!(h.series_count(), 4);
}

#[test]
fn series_summaries_report_first_and_last_timestamps() {
    let h = head();
    append(&h, "m", &[("a", "1")], &[(5, 1.0), (9, 1.0)]);
    let s = h.metric("m").unwrap().series();
    assert_eq!(s.len(), 1);
    assert_eq!(s[0].labels, Labels::from_pairs([("a", "1")]));
    assert_eq!((s[0].first_timestamp, s[0].last_timestamp), (5, 9));
}

#[test]
fn truncate_drops_whole_sealed_chunks_older_than_the_cut() {
    let h = head();
    // chunk_rows = 4: [0..4) [4..8) sealed, [8..10) open.
    let samples: Vec<(i64, f64)> = (0..10).map(|i| (i * 10, i as f64)).collect();
    append(&h, "m", &[("a", "1")], &samples);
    let before = h.metric("m").unwrap().snapshot();
    assert_eq!(
        h.truncate(35),
        4,
        "only the chunk ending at 30 is older than 35"
    );
    assert_eq!(h.metric("m").unwrap().snapshot().rows(), 6);
    assert_eq!(h.truncate(1_000), 4, "the open chunk stays");
    assert_eq!(h.metric("m").unwrap().snapshot().rows(), 2);
    assert_eq!(before.rows(), 10, "an earlier snapshot is unaffected");
    assert_eq!(h.metrics().samples_truncated.get(), 8);
}
