use super::*;

fn eval(kind: CounterKind, samples: &[(i64, f64)]) -> Option<f64> {
    let mut s = samples.to_vec();
    normalise(&mut s);
    kind.evaluate(&s)
}

#[test]
fn counters_count_resets_as_prometheus_does_without_extrapolation() {
    // 10 → 15 → reset to 3 → 8: 5 + 3 + 5 = 13 over 30 s.
    let s = [(0, 10.0), (10_000, 15.0), (20_000, 3.0), (30_000, 8.0)];
    assert_eq!(eval(CounterKind::Increase, &s), Some(13.0));
    assert_eq!(eval(CounterKind::Rate, &s), Some(13.0 / 30.0));
    assert_eq!(eval(CounterKind::Delta, &s), Some(-2.0));
    assert_eq!(eval(CounterKind::Idelta, &s), Some(5.0));
    assert_eq!(eval(CounterKind::Irate, &s), Some(0.5));
    // irate right after a reset uses the new value.
    let reset_last = [(0, 10.0), (2_000, 4.0)];
    assert_eq!(eval(CounterKind::Irate, &reset_last), Some(2.0));
    // Unsorted input gives the same answers.
    let shuffled = [s[2], s[0], s[3], s[1]];
    assert_eq!(eval(CounterKind::Increase, &shuffled), Some(13.0));
    assert_eq!(eval(CounterKind::Irate, &shuffled), Some(0.5));
}

#[test]
fn too_few_samples_nan_and_duplicate_timestamps() {
    for kind in CounterKind::ALL {
        assert_eq!(eval(kind, &[]), None);
        assert_eq!(eval(kind, &[(5, 1.0)]), None, "{kind:?}");
        // Two samples at one timestamp are one sample.
        assert_eq!(eval(kind, &[(5, 1.0), (5, 2.0)]), None, "{kind:?}");
    }
    // The greatest value of a timestamp is kept, whatever the order.
    assert_eq!(
        eval(
            CounterKind::Increase,
            &[(0, 1.0), (1_000, 9.0), (1_000, 4.0)]
        ),
        Some(8.0)
    );
    assert_eq!(
        eval(
            CounterKind::Increase,
            &[(1_000, 4.0), (0, 1.0), (1_000, 9.0)]
        ),
        Some(8.0)
    );
    // NaN propagates as in PromQL arithmetic.
    let nan = eval(CounterKind::Increase, &[(0, 1.0), (1, f64::NAN), (2, 3.0)]).unwrap();
    assert!(nan.is_nan());
}

#[test]
fn bucket_quantile_interpolates_like_prometheus() {
    let mut b = vec![
        (0.1, 10.0),
        (0.5, 60.0),
        (1.0, 90.0),
        (f64::INFINITY, 100.0),
    ];
    // rank 50 of 100 falls in (0.1, 0.5]: 0.1 + 0.4 * (40 / 50).
    assert!((bucket_quantile(0.5, &mut b.clone()) - 0.42).abs() < 1e-12);
    // rank 5 in the first bucket: from 0.
    assert!((bucket_quantile(0.05, &mut b.clone()) - 0.05).abs() < 1e-12);
    // rank in +Inf: the largest finite bound.
    assert_eq!(bucket_quantile(0.99, &mut b.clone()), 1.0);
    assert_eq!(bucket_quantile(-0.1, &mut b.clone()), f64::NEG_INFINITY);
    assert_eq!(bucket_quantile(1.1, &mut b.clone()), f64::INFINITY);
    assert!(bucket_quantile(f64::NAN, &mut b.clone()).is_nan());
    // Order does not matter; a non-monotonic bucket is raised to its predecessor.
    b.reverse();
    b[1].1 = 50.0; // the 1.0 bucket below the 0.5 bucket's 60: raised to 60
    // Rank 70 is then past every finite bucket: the largest finite bound.
    assert_eq!(bucket_quantile(0.7, &mut b.clone()), 1.0);
    // Rank 55 falls in (0.1, 0.5]: 0.1 + 0.4 * (45 / 50), unchanged by the fix-up.
    assert!((bucket_quantile(0.55, &mut b) - 0.46).abs() < 1e-12);
    // Without +Inf, with one bucket, or with no observations: NaN.
    assert!(bucket_quantile(0.5, &mut vec![(0.1, 1.0), (0.5, 2.0)]).is_nan());
    assert!(bucket_quantile(0.5, &mut vec![(f64::INFINITY, 2.0)]).is_nan());
    assert!(bucket_quantile(0.5, &mut vec![(1.0, 0.0), (f64::INFINITY, 0.0)]).is_nan());
    // Equal bounds from several series add up.
    let mut two = vec![
        (1.0, 5.0),
        (f64::INFINITY, 5.0),
        (1.0, 5.0),
        (f64::INFINITY, 5.0),
    ];
    assert!((bucket_quantile(0.5, &mut two) - 0.5).abs() < 1e-12);
    // A first bucket with a bound at or below zero returns its bound.
    assert_eq!(
        bucket_quantile(
            0.1,
            &mut vec![(0.0, 5.0), (1.0, 10.0), (f64::INFINITY, 10.0)]
        ),
        0.0
    );
}

async fn sql(ctx: &SessionContext, q: &str) -> String {
    let batches = ctx.sql(q).await.unwrap().collect().await.unwrap();
    arrow::util::pretty::pretty_format_batches(&batches)
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn functions_run_in_sql_with_grouping_and_partial_aggregation() {
    let ctx = SessionContext::new_with_config(
        datafusion::prelude::SessionConfig::new().with_target_partitions(4),
    );
    register(&ctx);
    ctx.sql(
        "CREATE VIEW c AS SELECT * FROM (VALUES \
         ('a', 10.0, 0), ('a', 15.0, 10000), ('a', 3.0, 20000), ('a', 8.0, 30000), \
         ('b', 1.0, 0), ('b', 2.0, 10000)) AS t(s, value, ms)",
    )
    .await
    .unwrap();
    let out = sql(
        &ctx,
        "SELECT s, increase(value, to_timestamp_millis(ms)) AS inc, \
         rate(value, to_timestamp_millis(ms)) AS r, irate(value, ms) AS ir, \
         delta(value, ms) AS d, idelta(value, ms) AS id \
         FROM c GROUP BY s ORDER BY s",
    )
    .await;
    assert!(
        out.contains("| a | 13.0 | 0.43333333333333335 | 0.5 | -2.0 | 5.0 |"),
        "{out}"
    );
    assert!(
        out.contains("| b | 1.0  | 0.1                 | 0.1 | 1.0  | 1.0 |"),
        "{out}"
    );
    let out = sql(
        &ctx,
        "SELECT histogram_quantile(0.5, le, v) AS p50 FROM (VALUES \
         ('0.1', 10.0), ('0.5', 60.0), ('1', 90.0), ('+Inf', 100.0)) AS t(le, v)",
    )
    .await;
    assert!(out.contains("0.42"), "{out}");
    let err = ctx
        .sql("SELECT increase('x', 1)")
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("value must be a number"), "{err}");
}

fn counter_inputs(rows: &[(i64, Option<f64>)]) -> Vec<ArrayRef> {
    let v: Float64Array = rows.iter().map(|r| r.1).collect();
    let t =
        arrow::array::TimestampMillisecondArray::from(rows.iter().map(|r| r.0).collect::<Vec<_>>())
            .with_timezone("UTC");
    vec![Arc::new(v), Arc::new(t)]
}

fn groups(kind: CounterKind) -> CounterGroups {
    CounterGroups::new(kind)
}

#[test]
fn grouped_counters_match_the_plain_accumulator_through_partial_states() {
    // Two groups, rows interleaved and unsorted, a NULL value and a filtered-out row.
    let rows = [
        (3_000, Some(5.0)),
        (0, Some(1.0)),
        (1_000, Some(10.0)),
        (2_000, Some(4.0)), // group 0 reset 10 → 4
        (1_000, None),
        (4_000, Some(100.0)),
        (0, Some(20.0)),
    ];
    let group_of = [0, 0, 0, 0, 1, 1, 1];
    let filter = BooleanArray::from(vec![true, true, true, true, true, true, true]);
    for kind in CounterKind::ALL {
        // Partial in two halves, each turned into state, then merged into a final one.
        let mut final_ = groups(kind);
        for (lo, hi) in [(0, 4), (4, 7)] {
            let mut partial = groups(kind);
            partial
                .update_batch(&counter_inputs(&rows[lo..hi]), &group_of[lo..hi], None, 2)
                .unwrap();
            let state = partial.state(EmitTo::All).unwrap();
            final_.merge_batch(&state, &[0, 1], 2).unwrap();
        }
        let grouped = final_.evaluate(EmitTo::All).unwrap();
        let grouped = grouped.as_primitive::<Float64Type>();

        // Each row as its own group's state (what skipping partial aggregation does).
        let mut from_rows = groups(kind);
        let state = from_rows
            .convert_to_state(&counter_inputs(&rows), Some(&filter))
            .unwrap();
        from_rows.merge_batch(&state, &group_of, 2).unwrap();
        let converted = from_rows.evaluate(EmitTo::All).unwrap();
        let converted = converted.as_primitive::<Float64Type>();

        for g in 0..2 {
            let mut samples: Vec<(i64, f64)> = rows
                .iter()
                .zip(group_of)
                .filter(|(r, gg)| *gg == g && r.1.is_some())
                .map(|(r, _)| (r.0, r.1.unwrap()))
                .collect();
            normalise(&mut samples);
            let want = kind.evaluate(&samples);
            assert_eq!(
                grouped.is_valid(g).then(|| grouped.value(g)),
                want,
                "{kind:?} {g}"
            );
            assert_eq!(
                converted.is_valid(g).then(|| converted.value(g)),
                want,
                "{kind:?} {g}"
            );
        }
    }
    // The reset counts: 0→1 s +9, reset +4, then +1 = 14.
    let mut g = groups(CounterKind::Increase);
    g.update_batch(&counter_inputs(&rows[..4]), &[0; 4], None, 1)
        .unwrap();
    assert_eq!(
        g.evaluate(EmitTo::All)
            .unwrap()
            .as_primitive::<Float64Type>()
            .value(0),
        14.0
    );
    assert!(g.size() < 1024);
}

#[test]
fn emitting_the_first_groups_keeps_and_renumbers_the_rest() {
    // Three groups, interleaved; group 1 in reverse time order.
    let rows = [
        (0, Some(1.0)),
        (2_000, Some(7.0)),
        (0, Some(100.0)),
        (1_000, Some(3.0)),
        (0, Some(5.0)),
        (1_000, Some(101.0)),
        (2_000, Some(9.0)),
    ];
    let group_of = [0, 1, 2, 0, 1, 2, 1];
    let mut g = groups(CounterKind::Increase);
    g.update_batch(&counter_inputs(&rows), &group_of, None, 3)
        .unwrap();
    let first = g.evaluate(EmitTo::First(2)).unwrap();
    let first = first.as_primitive::<Float64Type>();
    assert_eq!(first.values().to_vec(), vec![2.0, 4.0]);
    // Group 2 is now group 0; a new row for it joins the samples kept.
    g.update_batch(&counter_inputs(&[(2_000, Some(104.0))]), &[0], None, 1)
        .unwrap();
    let rest = g.evaluate(EmitTo::All).unwrap();
    assert_eq!(
        rest.as_primitive::<Float64Type>().values().to_vec(),
        vec![4.0]
    );
    assert_eq!(g.size(), std::mem::size_of::<CounterGroups>());
}

#[test]
fn whole_batches_sliced_batches_and_filtered_rows_give_the_same_samples() {
    let rows = [
        (0, Some(1.0)),
        (1_000, Some(3.0)),
        (2_000, Some(2.0)),
        (3_000, Some(8.0)),
        (4_000, Some(9.0)),
    ];
    let increase = |g: &mut CounterGroups| {
        g.evaluate(EmitTo::All)
            .unwrap()
            .as_primitive::<Float64Type>()
            .values()
            .to_vec()
    };
    // Rows 1..4 through the whole-column copy, from arrays that are slices of larger ones.
    let mut sliced = groups(CounterKind::Increase);
    let inputs: Vec<ArrayRef> = counter_inputs(&rows)
        .iter()
        .map(|a| a.slice(1, 3))
        .collect();
    sliced.update_batch(&inputs, &[0, 0, 0], None, 1).unwrap();
    // The same rows through the row-by-row path: a filter that drops rows 0 and 4.
    let mut filtered = groups(CounterKind::Increase);
    let keep = BooleanArray::from(vec![false, true, true, true, false]);
    filtered
        .update_batch(&counter_inputs(&rows), &[0; 5], Some(&keep), 1)
        .unwrap();
    // 3 → 2 is a reset: +2, then +6.
    assert_eq!(increase(&mut sliced), vec![8.0]);
    assert_eq!(increase(&mut filtered), vec![8.0]);
}

#[test]
fn samples_spread_over_segments_are_gathered_in_order() {
    // Three groups of counters that reset often (so every sample counts), over more batches
    // and rows than one segment holds; half the batches arrive through partial states.
    let rows_per_batch = 50_000;
    let mut g = groups(CounterKind::Increase);
    let mut partial = groups(CounterKind::Increase);
    let mut samples: [Vec<(i64, f64)>; 3] = Default::default();
    for batch in 0..4 {
        let group_of: Vec<usize> = (0..rows_per_batch).map(|r| (r + batch) % 3).collect();
        let rows: Vec<(i64, Option<f64>)> = group_of
            .iter()
            .map(|&grp| {
                let t = (samples[grp].len() as i64 + 1) * 1000;
                let v = ((t / 1000 * 7919) % 13) as f64;
                samples[grp].push((t, v));
                (t, Some(v))
            })
            .collect();
        let target = if batch % 2 == 0 { &mut g } else { &mut partial };
        target
            .update_batch(&counter_inputs(&rows), &group_of, None, 3)
            .unwrap();
    }
    let state = partial.state(EmitTo::All).unwrap();
    g.merge_batch(&state, &[0, 1, 2], 3).unwrap();
    assert!(g.size() > 4 * rows_per_batch * 20, "{}", g.size());
    let first = g.evaluate(EmitTo::First(1)).unwrap();
    let rest = g.evaluate(EmitTo::All).unwrap();
    let got: Vec<f64> = [first, rest]
        .iter()
        .flat_map(|a| a.as_primitive::<Float64Type>().values().to_vec())
        .collect();
    let want: Vec<f64> = samples
        .iter()
        .map(|s| CounterKind::Increase.evaluate(s).unwrap())
        .collect();
    assert_eq!(got, want);
    assert_eq!(g.size(), std::mem::size_of::<CounterGroups>());
}
