use proptest::prelude::*;

use super::*;

fn r(metric: u32, series: u32) -> SeriesRef {
    SeriesRef { metric, series }
}

fn sample_record() -> Record {
    Record {
        series: vec![
            SeriesDef {
                id: r(0, 0),
                metric: "up".into(),
                labels: vec![
                    ("job".into(), "node".into()),
                    ("instance".into(), "a:1".into()),
                ],
            },
            SeriesDef {
                id: r(3, 7),
                metric: "x_total".into(),
                labels: vec![],
            },
        ],
        samples: vec![
            (r(0, 0), 1_700_000_000_000, 1.0),
            (r(0, 0), 1_699_999_999_000, f64::NAN),
            (r(3, 7), -5, f64::NEG_INFINITY),
            (r(3, 7), i64::MAX, -0.0),
            (r(0, 0), i64::MIN, 3.5),
        ],
    }
}

fn encode(record: &Record) -> RecordEncoder {
    encode_into(RecordEncoder::default(), record)
}

fn encode_into(mut enc: RecordEncoder, record: &Record) -> RecordEncoder {
    enc.clear();
    for def in &record.series {
        enc.add_series(
            def.id,
            &def.metric,
            def.labels.iter().map(|(n, v)| (n.as_str(), v.as_str())),
        );
    }
    for &(id, t, v) in &record.samples {
        enc.add_sample(id, t, v);
    }
    enc
}

/// Compares with NaN equal to itself, bit for bit.
fn same(a: &Record, b: &Record) -> bool {
    a.series == b.series
        && a.samples.len() == b.samples.len()
        && a.samples
            .iter()
            .zip(&b.samples)
            .all(|(x, y)| x.0 == y.0 && x.1 == y.1 && x.2.to_bits() == y.2.to_bits())
}

fn open(dir: &Path, config: WalConfig) -> (Wal, Vec<(u32, Record)>, ReplayOutcome) {
    let metrics = WalMetrics::default();
    let mut records = Vec::new();
    let outcome = replay(dir, &metrics, |seq, rec| records.push((seq, rec))).unwrap();
    let wal = Wal::create(
        dir,
        outcome.next_segment(),
        outcome.segments.clone(),
        config,
        metrics,
    )
    .unwrap();
    (wal, records, outcome)
}

fn write(wal: &Wal, record: &Record) {
    wal.lock().unwrap().write(&encode(record)).unwrap();
}

#[test]
fn record_round_trips_with_runs_negative_deltas_and_nan_bits() {
    let record = sample_record();
    let decoded = decode_record(&encode(&record).finish()).unwrap();
    assert!(same(&record, &decoded), "{decoded:?}");
    // Room made up front (an appender sized by its last commit) changes nothing written,
    // whether the record is smaller or larger than that room.
    for room in [1, 1000] {
        let sized = encode_into(RecordEncoder::with_capacity(room), &record).finish();
        assert_eq!(sized, encode(&record).finish(), "room for {room}");
    }
}

#[test]
fn records_survive_reopen_in_order_across_segments() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, records, _) = open(dir.path(), WalConfig::test_config());
    assert!(records.is_empty());
    let mut written = Vec::new();
    for i in 0..200 {
        let rec = Record {
            series: vec![],
            samples: (0..20)
                .map(|j| (r(1, j), i * 1000 + i64::from(j), 0.5))
                .collect(),
        };
        write(&wal, &rec);
        written.push(rec);
    }
    wal.sync().unwrap();
    assert!(wal.segments().len() > 3, "4 KiB segments rotate");
    drop(wal);

    let (wal, records, outcome) = open(dir.path(), WalConfig::test_config());
    assert_eq!(records.len(), written.len());
    for ((_, got), want) in records.iter().zip(&written) {
        assert!(same(got, want));
    }
    assert_eq!(outcome.corruptions, 0);
    assert_eq!(outcome.samples, 200 * 20);
    // Each segment's newest timestamp is known, and the new segment follows the old ones.
    let last = *outcome.segments.keys().next_back().unwrap();
    assert_eq!(wal.segments().last(), Some(&(last + 1)));
    assert_eq!(outcome.segments[&last], 199 * 1000 + 19);
}

#[test]
fn torn_tail_is_truncated_and_the_rest_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _, _) = open(dir.path(), WalConfig::default());
    for i in 0..5 {
        write(
            &wal,
            &Record {
                series: vec![],
                samples: vec![(r(0, 0), i, 1.0)],
            },
        );
    }
    let seq = *wal.segments().last().unwrap();
    drop(wal);
    let path = segment_path(dir.path(), seq);
    let len = std::fs::metadata(&path).unwrap().len();
    // Cut the last record in half, as a crash mid-write would.
    OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(len - 7)
        .unwrap();

    let (wal, records, outcome) = open(dir.path(), WalConfig::default());
    assert_eq!(records.len(), 4);
    assert_eq!(outcome.corruptions, 1);
    assert_eq!(wal.metrics().corruptions.get(), 1);
    // The file now ends at the last good record, so the next replay is clean.
    drop(wal);
    let (_, records, outcome) = open(dir.path(), WalConfig::default());
    assert_eq!(records.len(), 4);
    assert_eq!(outcome.corruptions, 0);
}

/// Records of `n` samples each, at timestamps `first..`.
fn one_sample_records(first: i64, n: i64) -> Vec<Record> {
    (first..first + n)
        .map(|t| Record {
            series: vec![],
            samples: vec![(r(0, 0), t, 1.0)],
        })
        .collect()
}

#[test]
fn reserve_is_zero_filled_ahead_and_left_out_of_closed_segments() {
    let dir = tempfile::tempdir().unwrap();
    let config = WalConfig {
        segment_size: 1 << 20,
        preallocate: 1024,
    };
    let (wal, _, _) = open(dir.path(), config.clone());
    let seq = wal.segments()[0];
    let path = segment_path(dir.path(), seq);
    let len = || std::fs::metadata(&path).unwrap().len();
    assert_eq!(len(), 1024, "a new segment starts with one reserve");
    let mut records = 0u64;
    for rec in one_sample_records(0, 100) {
        write(&wal, &rec);
        records = wal.metrics().bytes.get() + HEADER_LEN as u64;
        // The file is the records rounded up to whole reserves, all zeros after the records.
        assert_eq!(len(), records.div_ceil(1024) * 1024);
    }
    assert!(records > 2048, "the reserve was extended: {records}");
    let data = std::fs::read(&path).unwrap();
    assert!(data[records as usize..].iter().all(|&b| b == 0));
    // Closing the segment cuts the reserve off.
    wal.rotate().unwrap();
    assert_eq!(len(), records);
    // So does a clean stop, for the current segment.
    write(&wal, &one_sample_records(100, 1)[0]);
    let current = segment_path(dir.path(), seq + 1);
    assert_eq!(std::fs::metadata(&current).unwrap().len(), 1024);
    drop(wal);
    let one = std::fs::metadata(&current).unwrap().len();
    assert!(one > HEADER_LEN as u64 && one < 1024, "{one}");
    let (_, replayed, outcome) = open(dir.path(), config);
    assert_eq!(replayed.len(), 101);
    assert_eq!(outcome.corruptions, 0);
}

#[test]
fn a_kill_leaves_the_reserve_which_replay_drops_without_loss() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _, _) = open(dir.path(), WalConfig::test_config());
    let written = one_sample_records(0, 30);
    for rec in &written {
        write(&wal, rec);
    }
    let segments = wal.segments();
    let current = segment_path(dir.path(), *segments.last().unwrap());
    let with_reserve = std::fs::metadata(&current).unwrap().len();
    // Killed: no destructor runs, the current segment keeps its zeros.
    std::mem::forget(wal);
    let data = std::fs::read(&current).unwrap();
    assert_eq!(data.len() as u64, with_reserve);
    assert_eq!(*data.last().unwrap(), 0, "the reserve is still there");

    let (_, replayed, outcome) = open(dir.path(), WalConfig::test_config());
    assert_eq!(replayed.len(), written.len());
    for ((_, got), want) in replayed.iter().zip(&written) {
        assert!(same(got, want));
    }
    assert_eq!(outcome.corruptions, 0, "a reserve is not corruption");
    let trimmed = std::fs::read(&current).unwrap();
    assert!(trimmed.len() < data.len(), "the reserve was cut off");
    assert_eq!(trimmed[..], data[..trimmed.len()]);
    assert_ne!(
        *trimmed.last().unwrap(),
        0,
        "the segment ends with its last record"
    );
}

#[test]
fn zeros_followed_by_data_are_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _, _) = open(dir.path(), WalConfig::default());
    for rec in one_sample_records(0, 3) {
        write(&wal, &rec);
    }
    let seq = *wal.segments().last().unwrap();
    let end = (wal.metrics().bytes.get() + HEADER_LEN as u64) as usize;
    std::mem::forget(wal);
    // A crash wrote a later page but not the one before it.
    let path = segment_path(dir.path(), seq);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[end + 100] = 7;
    std::fs::write(&path, &bytes).unwrap();

    let (_, replayed, outcome) = open(dir.path(), WalConfig::default());
    assert_eq!(replayed.len(), 3);
    assert_eq!(outcome.corruptions, 1);
    assert_eq!(std::fs::metadata(&path).unwrap().len(), end as u64);
}

#[test]
fn min_timestamp_reads_without_repairing() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(min_timestamp(&dir.path().join("absent")).unwrap(), None);
    let (wal, _, _) = open(dir.path(), WalConfig::default());
    assert_eq!(
        min_timestamp(dir.path()).unwrap(),
        None,
        "segment without records"
    );
    for t in [500, 300, 900] {
        write(
            &wal,
            &Record {
                series: vec![],
                samples: vec![(r(0, 0), t, 1.0)],
            },
        );
    }
    let seq = *wal.segments().last().unwrap();
    drop(wal);
    let path = segment_path(dir.path(), seq);
    let len = std::fs::metadata(&path).unwrap().len();
    // A torn tail (a record being written) stops the scan but is left as it is.
    let mut file = OpenOptions::new().append(true).open(&path).unwrap();
    std::io::Write::write_all(&mut file, &[9, 0, 0, 0, 1]).unwrap();
    assert_eq!(min_timestamp(dir.path()).unwrap(), Some(300));
    assert_eq!(std::fs::metadata(&path).unwrap().len(), len + 5);
}

#[test]
fn bit_flip_loses_its_segment_tail_only() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _, _) = open(dir.path(), WalConfig::default());
    for i in 0..10 {
        write(
            &wal,
            &Record {
                series: vec![],
                samples: vec![(r(0, 0), i, 1.0)],
            },
        );
        if i == 5 {
            wal.rotate().unwrap();
        }
    }
    let segments = wal.segments();
    drop(wal);
    assert_eq!(segments.len(), 2);
    // Flip one bit in the third record of the first segment (records 0..=5 live there).
    let path = segment_path(dir.path(), segments[0]);
    let mut bytes = std::fs::read(&path).unwrap();
    let record_len = (bytes.len() - HEADER_LEN) / 6;
    bytes[HEADER_LEN + 2 * record_len + FRAME_LEN + 3] ^= 0x10;
    std::fs::write(&path, &bytes).unwrap();

    let (_, records, outcome) = open(dir.path(), WalConfig::default());
    let timestamps: Vec<i64> = records.iter().map(|(_, r)| r.samples[0].1).collect();
    assert_eq!(timestamps, vec![0, 1, 6, 7, 8, 9]);
    assert_eq!(outcome.corruptions, 1);
}

#[test]
fn unknown_header_is_moved_aside_and_short_segment_removed() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(segment_path(dir.path(), 1), b"NOTAWAL!rest").unwrap();
    std::fs::write(segment_path(dir.path(), 2), b"AHW").unwrap();
    std::fs::write(dir.path().join("README"), b"not a segment").unwrap();
    let (wal, records, outcome) = open(dir.path(), WalConfig::default());
    assert!(records.is_empty());
    assert_eq!(outcome.corruptions, 1);
    assert!(dir.path().join("00000001.corrupt").exists());
    assert!(!segment_path(dir.path(), 2).exists());
    assert!(dir.path().join("README").exists());
    // Numbering continues after the highest segment seen, so nothing is overwritten.
    assert_eq!(wal.segments(), vec![3]);
}

#[test]
fn persisted_segments_are_removed_but_not_the_current_one() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _, _) = open(dir.path(), WalConfig::default());
    for (i, t) in [100, 200, 300].into_iter().enumerate() {
        write(
            &wal,
            &Record {
                series: vec![],
                samples: vec![(r(0, i as u32), t, 1.0)],
            },
        );
        wal.rotate().unwrap();
    }
    write(
        &wal,
        &Record {
            series: vec![],
            samples: vec![(r(0, 9), 50, 1.0)],
        },
    );
    assert_eq!(wal.segments(), vec![1, 2, 3, 4]);
    // Segments whose newest sample is older than 250 go; the current one stays even though
    // its only sample is older.
    assert_eq!(wal.remove_segments_before(250).unwrap(), 2);
    assert_eq!(wal.segments(), vec![3, 4]);
    assert!(!segment_path(dir.path(), 1).exists());
    assert!(segment_path(dir.path(), 3).exists());
    assert_eq!(wal.metrics().segments.get(), 2);
    // Rotating an empty segment does nothing.
    wal.rotate().unwrap();
    wal.rotate().unwrap();
    assert_eq!(wal.segments(), vec![3, 4, 5]);
}

#[test]
fn sync_only_when_dirty() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _, _) = open(dir.path(), WalConfig::default());
    wal.sync().unwrap();
    assert_eq!(wal.metrics().fsyncs.get(), 0);
    write(&wal, &sample_record());
    wal.sync().unwrap();
    wal.sync().unwrap();
    assert_eq!(wal.metrics().fsyncs.get(), 1);
}

fn arb_record() -> impl Strategy<Value = Record> {
    let def = (
        any::<u32>(),
        any::<u32>(),
        "[a-z_:]{1,12}",
        prop::collection::vec(("[a-z_]{1,8}", "\\PC{0,12}"), 0..5),
    )
        .prop_map(|(m, s, metric, labels)| SeriesDef {
            id: r(m, s),
            metric,
            labels,
        });
    let sample = (0u32..4, any::<u32>(), any::<i64>(), any::<f64>())
        .prop_map(|(m, s, t, v)| (r(m, s), t, v));
    (
        prop::collection::vec(def, 0..4),
        prop::collection::vec(sample, 0..40),
    )
        .prop_map(|(series, samples)| Record { series, samples })
}

proptest! {
    #[test]
    fn any_record_round_trips(record in arb_record()) {
        let decoded = decode_record(&encode(&record).finish()).unwrap();
        prop_assert!(same(&record, &decoded));
    }

    #[test]
    fn garbage_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = decode_record(&bytes);
        let _ = next_record(&bytes);
    }

    #[test]
    fn truncated_records_are_errors(record in arb_record(), cut in 1usize..64) {
        let payload = encode(&record).finish();
        let cut = cut.min(payload.len());
        prop_assert!(decode_record(&payload[..payload.len() - cut]).is_err());
    }
}
