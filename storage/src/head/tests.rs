use arrow::array::RecordBatch;
use std::sync::Arc;

use super::*;
use crate::testing::append;

fn head() -> Head {
    Head::new(HeadConfig::test_config())
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

/// Rows as (labels rendered "a=1,b=2", timestamp, value), label NULLs left out, sorted.
fn rows(batches: &[RecordBatch]) -> Vec<(String, i64, f64)> {
    let mut out = crate::testing::rendered_rows(batches);
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
            out_of_order: 2,
            out_of_bounds: 0,
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
fn prepended_samples_win_over_buffered_duplicates_in_one_wal_record() {
    let dir = tempfile::tempdir().unwrap();
    let (h, _) = open_wal(dir.path(), i64::MIN);
    let mut app = h.appender();
    let up = app.series("up", &[("job", "a")]).unwrap();
    let other = app.series("other", &[("job", "a")]).unwrap();
    // The body: a target's own `up` and another series.
    app.append(up, 10, 0.0);
    app.append(other, 10, 5.0);
    // The report, placed first.
    app.prepend([(up, 10, 1.0)]);
    let stats = app.commit().unwrap();
    assert_eq!((stats.appended, stats.out_of_order), (2, 1));
    let up_rows = rows(&read_all(&h.metric("up").unwrap().snapshot()));
    assert_eq!(up_rows, vec![("job=a".to_string(), 10, 1.0)]);
    drop(app);
    drop(h);
    // Replay keeps the same verdict: the record lists the prepended sample first.
    let (h, _) = open_wal(dir.path(), i64::MIN);
    let up_rows = rows(&read_all(&h.metric("up").unwrap().snapshot()));
    assert_eq!(up_rows, vec![("job=a".to_string(), 10, 1.0)]);
    assert_eq!(h.metric("other").unwrap().snapshot().rows(), 1);
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

/// Every row of every metric, as (metric, labels, timestamp, value), sorted.
fn dump(head: &Head) -> Vec<(String, String, i64, u64)> {
    let mut out = Vec::new();
    for name in head.metric_names() {
        let snap = head.metric(&name).unwrap().snapshot();
        for (labels, t, v) in rows(&read_all(&snap)) {
            out.push((name.clone(), labels, t, v.to_bits()));
        }
    }
    out.sort();
    out
}

fn open_wal(dir: &std::path::Path, min_valid: i64) -> (Head, ReplayStats) {
    Head::open(
        HeadConfig::test_config(),
        dir,
        crate::wal::WalConfig::test_config(),
        min_valid,
    )
    .unwrap()
}

#[test]
fn wal_replay_restores_every_committed_sample_and_nothing_rolled_back() {
    let dir = tempfile::tempdir().unwrap();
    let (h, stats) = open_wal(dir.path(), i64::MIN);
    assert_eq!(stats.outcome.records, 0);
    for i in 0..300i64 {
        let metric = format!("m{}", i % 7);
        let instance = format!("host{}", i % 13);
        append(
            &h,
            &metric,
            &[("instance", &instance), ("job", "j")],
            &[(i, i as f64)],
        );
    }
    // Out-of-order samples are logged and refused again by replay.
    append(
        &h,
        "m0",
        &[("instance", "host0"), ("job", "j")],
        &[(0, 9.0), (1000, f64::NAN)],
    );
    // A rolled-back append never reaches the log.
    let mut app = h.appender();
    let r = app.series("rolled", &[("a", "b")]).unwrap();
    app.append(r, 5, 5.0);
    app.rollback();
    drop(app);
    let before = dump(&h);
    assert!(
        h.wal().unwrap().segments().len() > 2,
        "small segments rotate"
    );
    drop(h);

    let (h, stats) = open_wal(dir.path(), i64::MIN);
    assert_eq!(dump(&h), before);
    assert_eq!(stats.samples_restored, 301);
    assert_eq!(stats.samples_orphaned, 0);
    assert!(h.metric("rolled").is_none_or(|m| m.snapshot().rows() == 0));

    // Appends after a replay go to a new segment with fresh definitions, and a second
    // restart sees old and new.
    append(
        &h,
        "m1",
        &[("instance", "host1"), ("job", "j")],
        &[(5000, 1.5)],
    );
    append(&h, "new", &[], &[(5001, 2.5)]);
    let before = dump(&h);
    drop(h);
    let (h, _) = open_wal(dir.path(), i64::MIN);
    assert_eq!(dump(&h), before);
}

#[test]
fn wal_replay_skips_what_blocks_hold_and_ignores_max_series() {
    let dir = tempfile::tempdir().unwrap();
    let (h, _) = open_wal(dir.path(), i64::MIN);
    for i in 0..10 {
        append(
            &h,
            "m",
            &[("i", &i.to_string())],
            &[(i, 1.0), (100 + i, 2.0)],
        );
    }
    drop(h);
    let (h, stats) = Head::open(
        HeadConfig {
            max_series: 3,
            ..HeadConfig::test_config()
        },
        dir.path(),
        crate::wal::WalConfig::test_config(),
        100,
    )
    .unwrap();
    assert_eq!(stats.samples_skipped, 10);
    assert_eq!(stats.samples_restored, 10);
    assert_eq!(h.series_count(), 10);
    assert!(dump(&h).iter().all(|(_, _, t, _)| *t >= 100));
    // Samples below the bound are refused from now on, and counted.
    let mut app = h.appender();
    let r = app.series("m", &[("i", "1")]).unwrap();
    app.append(r, 99, 1.0);
    app.append(r, 200, 1.0);
    let s = app.commit().unwrap();
    assert_eq!((s.appended, s.out_of_bounds), (1, 1));
    assert_eq!(h.metrics().samples_out_of_bounds.get(), 1);
}

#[test]
fn failed_wal_write_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (h, _) = open_wal(dir.path(), i64::MIN);
    let mut app = h.appender();
    let r = app.series("m", &[]).unwrap();
    // Fill the current segment, so the next commit must start a new one, and put a
    // directory where that segment would go: creating it fails, as on a full disk.
    for t in 0..2000 {
        app.append(r, t, 1.0);
    }
    app.commit().unwrap();
    let rows_before = h.metric("m").unwrap().snapshot().rows();
    let next = h.wal().unwrap().segments().last().unwrap() + 1;
    let blocker = crate::wal::segment_path(dir.path(), next);
    std::fs::create_dir(&blocker).unwrap();
    app.append(r, 5000, 1.0);
    let result = app.commit();
    assert!(
        matches!(result, Err(AppendError::Storage { .. })),
        "{result:?}"
    );
    assert!(
        result
            .unwrap_err()
            .to_string()
            .contains("cannot write the WAL")
    );
    assert_eq!(h.metric("m").unwrap().snapshot().rows(), rows_before);
    assert_eq!(h.wal().unwrap().metrics().failures.get(), 1);
    // Once the way is clear again, commits resume; a restart sees exactly what was stored.
    std::fs::remove_dir(&blocker).unwrap();
    app.append(r, 5001, 1.0);
    assert_eq!(app.commit().unwrap().appended, 1);
    let before = dump(&h);
    drop(app);
    drop(h);
    let (h, _) = open_wal(dir.path(), i64::MIN);
    assert_eq!(dump(&h), before);
}

#[test]
fn sealed_chunks_are_packed_and_read_back_exactly() {
    let head = Head::new(HeadConfig {
        chunk_rows: 1024,
        max_series: 0,
    });
    // 32 scrapes of 64 series of a counter, as a scraper commits them.
    let mut expected = Vec::new();
    for scrape in 0..32i64 {
        let mut app = head.appender();
        for s in 0..64 {
            let instance = format!("host-{s}:9100");
            let r = app
                .series("requests_total", &[("instance", instance.as_str())])
                .unwrap();
            let t = 1_767_225_600_000 + scrape * 15_000;
            let v = (scrape * 100 + s) as f64 * 1.5;
            app.append(r, t, v);
            expected.push((format!("instance={instance}"), t, v));
        }
        app.commit().unwrap();
    }
    let snap = head.metric("requests_total").unwrap().snapshot();
    let sealed: Vec<_> = snap.chunks().iter().filter(|c| c.len() == 1024).collect();
    assert_eq!(sealed.len(), 2, "2048 rows seal two chunks");
    for c in &sealed {
        assert!(
            c.memory_bytes() * 4 < c.len() * 20,
            "{} bytes for {} rows: not packed",
            c.memory_bytes(),
            c.len()
        );
    }
    let batches = read_all(&snap);
    let mut got: Vec<(String, i64, f64)> = rows(&batches);
    got.sort_by(|a, b| a.partial_cmp(b).unwrap());
    expected.sort_by(|a, b| a.partial_cmp(b).unwrap());
    assert_eq!(got, expected);
    // A time-filtered read of a packed chunk keeps only its rows in range.
    let schema = snap.schema();
    let range = TimeRange {
        start: 1_767_225_600_000 + 15_000,
        end: 1_767_225_600_000 + 15_000,
    };
    let n: usize = snap
        .chunks()
        .iter()
        .filter_map(|c| snap.read(c, &schema, range, None).unwrap())
        .map(|b| b.num_rows())
        .sum();
    assert_eq!(n, 64);
}

#[test]
fn sorted_rows_order_series_by_label_values_then_time() {
    // Series created in an order unrelated to their labels, some without a label, values
    // with multi-byte characters; each scrape commits every series, and small chunks make
    // most rows come from packed chunks.
    let head = Head::new(HeadConfig {
        chunk_rows: 64,
        max_series: 0,
    });
    let labels = |s: u64| -> Vec<(String, String)> {
        let mut l = vec![("path".to_string(), format!("/r{}/{s}", (s * 7) % 5))];
        if !s.is_multiple_of(3) {
            l.push((
                "code".to_string(),
                ["500", "200", "é", "404"][(s % 4) as usize].into(),
            ));
        }
        if s % 4 == 1 {
            l.push(("zone".to_string(), format!("z{}", s % 2)));
        }
        l
    };
    let mut expected = Vec::new();
    for scrape in 0..20i64 {
        let mut app = head.appender();
        for s in (0..24u64).rev() {
            let l = labels(s);
            let pairs: Vec<(&str, &str)> =
                l.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
            let r = app.series("m", &pairs).unwrap();
            // Series skip some scrapes, so their rows are spread unevenly across chunks.
            if (scrape + s as i64) % 5 == 0 {
                continue;
            }
            let t = 1_000 + scrape * 15;
            app.append(r, t, (scrape * 100 + s as i64) as f64);
            let get = |n: &str| l.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
            expected.push((
                (get("code"), get("path"), get("zone")),
                t,
                (scrape * 100 + s as i64) as f64,
            ));
        }
        app.commit().unwrap();
    }
    // Columns in name order (code, path, zone); a missing value first; then time.
    expected.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let batch = head
        .metric("m")
        .unwrap()
        .snapshot()
        .sorted_rows(i64::MIN, i64::MAX)
        .unwrap()
        .unwrap();
    let render = |(code, path, zone): &(Option<String>, Option<String>, Option<String>)| {
        [("code", code), ("path", path), ("zone", zone)]
            .iter()
            .filter_map(|(n, v)| v.as_ref().map(|v| format!("{n}={v}")))
            .collect::<Vec<_>>()
            .join(",")
    };
    let want: Vec<(String, i64, f64)> = expected
        .iter()
        .map(|(l, t, v)| (render(l), *t, *v))
        .collect();
    assert_eq!(crate::testing::rendered_rows(&[batch]), want);

    // A range cuts rows out of chunks at both ends; a series with no row in it is left out.
    let (start, end) = (1_000 + 5 * 15, 1_000 + 12 * 15);
    let batch = head
        .metric("m")
        .unwrap()
        .snapshot()
        .sorted_rows(start, end)
        .unwrap()
        .unwrap();
    let in_range: Vec<(String, i64, f64)> = want
        .iter()
        .filter(|(_, t, _)| (start..end).contains(t))
        .cloned()
        .collect();
    // Scrapes 5 to 11 of the 24 series, less the 33 rows those scrapes skip.
    assert_eq!(in_range.len(), 7 * 24 - 33);
    assert_eq!(crate::testing::rendered_rows(&[batch]), in_range);
    let none = head.metric("m").unwrap().snapshot().sorted_rows(0, 1_000);
    assert!(none.unwrap().is_none());
}

#[test]
fn label_dictionaries_cast_to_views_through_a_dictionary_of_views() {
    use arrow::array::{Array, ArrayRef, DictionaryArray, StringArray, StringViewArray};
    use arrow::datatypes::{DataType, Int32Type};

    let dict: DictionaryArray<Int32Type> =
        vec![Some("a"), None, Some("a-value-longer-than-12"), Some("a")]
            .into_iter()
            .collect();
    let dict: ArrayRef = Arc::new(dict);
    assert_eq!(
        label_view_dictionary(dict.data_type(), &DataType::Utf8View),
        Some(DataType::Dictionary(
            Box::new(DataType::Int32),
            Box::new(DataType::Utf8View)
        ))
    );
    let views = cast_labels(&dict, &DataType::Utf8View).unwrap();
    let expected = StringViewArray::from(vec![
        Some("a"),
        None,
        Some("a-value-longer-than-12"),
        Some("a"),
    ]);
    assert_eq!(
        views.as_any().downcast_ref::<StringViewArray>(),
        Some(&expected)
    );
    // Other targets cast directly.
    assert_eq!(
        label_view_dictionary(dict.data_type(), &DataType::Utf8),
        None
    );
    let plain = cast_labels(&dict, &DataType::Utf8).unwrap();
    assert_eq!(
        plain
            .as_any()
            .downcast_ref::<StringArray>()
            .unwrap()
            .value(2),
        "a-value-longer-than-12"
    );
}
