use std::fs::File;

use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use super::*;
use crate::head::{Appender, HeadConfig};
use crate::testing::append;

/// (labels "k=v,…", timestamp, value) of every row of a Parquet file, in file order.
fn read_file(path: &Path) -> Vec<(String, i64, f64)> {
    let batches: Vec<RecordBatch> =
        ParquetRecordBatchReaderBuilder::try_new(File::open(path).unwrap())
            .unwrap()
            .build()
            .unwrap()
            .map(|b| b.unwrap())
            .collect();
    crate::testing::rendered_rows(&batches)
}

#[test]
fn file_names_are_plain_and_stay_inside_the_block() {
    assert_eq!(
        file_name("node_cpu_seconds_total"),
        "node_cpu_seconds_total.parquet"
    );
    assert_eq!(file_name("job:up:ratio"), "job:up:ratio.parquet");
    assert_eq!(file_name("../etc/passwd"), "-2E-2E-2Fetc-2Fpasswd.parquet");
    assert_eq!(file_name("a-2F"), "a-2D2F.parquet");
    assert_eq!(file_name("a%b"), "a-25b.parquet");
    assert_ne!(file_name("a.b"), file_name("a-2Eb"));
    let long = "x".repeat(300);
    let name = file_name(&long);
    assert!(name.len() < 220 && name.ends_with(".parquet"));
    assert_ne!(name, file_name(&"x".repeat(301)));
}

#[test]
fn a_cut_writes_sorted_files_and_hands_the_range_over_from_the_head() {
    let dir = tempfile::tempdir().unwrap();
    let head = Head::new(HeadConfig::test_config());
    let blocks = Blocks::open(dir.path()).unwrap();
    append(
        &head,
        "up",
        &[("job", "b"), ("instance", "1")],
        &[(10, 1.0), (20, 1.0), (120, 1.0)],
    );
    append(
        &head,
        "up",
        &[("job", "a"), ("instance", "2")],
        &[(15, 0.0), (25, 1.0)],
    );
    append(&head, "up", &[("job", "a")], &[(16, 5.0)]);
    append(&head, "late", &[("x", "y")], &[(150, 2.0)]);

    let block = blocks.cut(&head, 100).unwrap().unwrap();
    assert_eq!(block.meta.rows, 5);
    assert_eq!(
        (block.meta.min_timestamp, block.meta.max_timestamp),
        (10, 25)
    );
    assert_eq!(
        (block.meta.range_start, block.meta.range_end),
        (i64::MIN, 100)
    );
    assert!(
        !block.meta.metrics.contains_key("late"),
        "nothing of it before 100"
    );
    let (path, file) = block.file("up").unwrap();
    assert_eq!(file.labels, vec!["instance", "job"]);
    // Sorted by label values in column order (a missing label first), then time.
    assert_eq!(
        read_file(&path),
        vec![
            ("job=a".to_string(), 16, 5.0),
            ("instance=1,job=b".to_string(), 10, 1.0),
            ("instance=1,job=b".to_string(), 20, 1.0),
            ("instance=2,job=a".to_string(), 15, 0.0),
            ("instance=2,job=a".to_string(), 25, 1.0),
        ]
    );
    assert_eq!(blocks.head_from(), 100);
    // The head refuses what the block now covers.
    let mut app = head.appender();
    let r = app.series("up", &[("job", "a")]).unwrap();
    app.append(r, 99, 1.0);
    assert_eq!(app.commit().unwrap().out_of_bounds, 1);

    // A second cut covers only the time since the first.
    let block2 = blocks.cut(&head, 200).unwrap().unwrap();
    assert_eq!((block2.meta.range_start, block2.meta.rows), (100, 2));
    assert_eq!(blocks.view().files("up").len(), 2);
    assert_eq!(blocks.view().metric_names(), vec!["late", "up"]);
    // Nothing left to cut.
    assert!(blocks.cut(&head, 300).unwrap().is_none());
    assert_eq!(blocks.head_from(), 300);

    // Reopening finds both blocks and the same bound.
    drop(blocks);
    let blocks = Blocks::open(dir.path()).unwrap();
    let view = blocks.view();
    assert_eq!(view.blocks.len(), 2);
    assert_eq!(view.head_from, 200);
    assert_eq!(view.blocks[0].meta, block.meta);
}

#[test]
fn broken_blocks_are_moved_aside_and_interrupted_cuts_removed() {
    let dir = tempfile::tempdir().unwrap();
    let head = Head::new(HeadConfig::test_config());
    let blocks = Blocks::open(dir.path()).unwrap();
    for i in 0..4 {
        append(&head, "m", &[("i", &i.to_string())], &[(i * 100 + 1, 1.0)]);
        blocks.cut(&head, i * 100 + 50).unwrap().unwrap();
    }
    append(&head, "m", &[("i", "4")], &[(401, 1.0)]);
    blocks.cut(&head, 450).unwrap().unwrap();
    let ids: Vec<PathBuf> = blocks.view().blocks.iter().map(|b| b.dir.clone()).collect();
    drop(blocks);
    // 4: the Parquet footer damaged, size unchanged.
    let data = ids[4].join("m.parquet");
    let mut bytes = std::fs::read(&data).unwrap();
    let n = bytes.len();
    bytes[n - 8..n - 4].copy_from_slice(&[0xff; 4]);
    std::fs::write(&data, bytes).unwrap();
    // 0: meta.json unparsable; 1: a data file missing; 2: a file name escaping the block;
    // 4 (below): a damaged Parquet footer.
    std::fs::write(ids[0].join(META_FILE), b"{not json").unwrap();
    std::fs::remove_file(ids[1].join("m.parquet")).unwrap();
    let meta_path = ids[2].join(META_FILE);
    let text = std::fs::read_to_string(&meta_path)
        .unwrap()
        .replace("\"m.parquet\"", "\"../../lock\"");
    std::fs::write(&meta_path, text).unwrap();
    std::fs::create_dir_all(dir.path().join("blocks/01ABC.tmp")).unwrap();

    let blocks = Blocks::open(dir.path()).unwrap();
    let view = blocks.view();
    assert_eq!(view.blocks.len(), 1);
    assert_eq!(view.blocks[0].dir, ids[3]);
    assert_eq!(blocks.metrics().corrupted.get(), 4);
    assert_eq!(blocks.corrupted().len(), 4);
    assert_eq!(
        std::fs::read_dir(blocks.corrupted_dir()).unwrap().count(),
        4
    );
    assert!(!dir.path().join("blocks/01ABC.tmp").exists());
}

#[test]
fn retention_deletes_whole_blocks_by_their_newest_sample() {
    let dir = tempfile::tempdir().unwrap();
    let head = Head::new(HeadConfig::test_config());
    let blocks = Blocks::open(dir.path()).unwrap();
    append(&head, "m", &[], &[(10, 1.0), (90, 1.0)]);
    blocks.cut(&head, 100).unwrap();
    append(&head, "m", &[], &[(110, 1.0), (190, 1.0)]);
    blocks.cut(&head, 200).unwrap();
    assert_eq!(blocks.delete_before(90).unwrap(), 0);
    assert_eq!(blocks.delete_before(91).unwrap(), 1);
    assert_eq!(blocks.view().blocks.len(), 1);
    assert_eq!(blocks.metrics().deleted.get(), 1);
    assert_eq!(
        std::fs::read_dir(dir.path().join("blocks"))
            .unwrap()
            .count(),
        1
    );
}

#[test]
fn a_cut_removes_the_wal_segments_it_persisted() {
    let dir = tempfile::tempdir().unwrap();
    let (head, _) = Head::open(
        HeadConfig::test_config(),
        &dir.path().join("wal"),
        crate::wal::WalConfig::default(),
        i64::MIN,
    )
    .unwrap();
    let blocks = Blocks::open(dir.path()).unwrap();
    append(&head, "m", &[], &[(10, 1.0)]);
    blocks.cut(&head, 100).unwrap().unwrap();
    append(&head, "m", &[], &[(110, 1.0)]);
    // The first segment (newest sample 10) went with the first cut; a restart replays only
    // what is newer than the blocks.
    assert_eq!(head.wal().unwrap().segments(), vec![2]);
    drop(head);
    let (head, stats) = Head::open(
        HeadConfig::test_config(),
        &dir.path().join("wal"),
        crate::wal::WalConfig::default(),
        blocks.head_from(),
    )
    .unwrap();
    assert_eq!(stats.samples_restored, 1);
    assert_eq!(stats.samples_skipped, 0);
    assert_eq!(head.metric("m").unwrap().snapshot().rows(), 1);
}

#[test]
fn retention_size_deletes_the_oldest_blocks_until_the_rest_fit() {
    let dir = tempfile::tempdir().unwrap();
    let head = Head::new(HeadConfig::test_config());
    let blocks = Blocks::open(dir.path()).unwrap();
    for i in 0..3 {
        append(&head, "m", &[], &[(i * 100 + 1, 1.0)]);
        blocks.cut(&head, i * 100 + 50).unwrap().unwrap();
    }
    let sizes: Vec<u64> = blocks.view().blocks.iter().map(|b| b.meta.bytes).collect();
    let total: u64 = sizes.iter().sum();
    assert_eq!(blocks.delete_over_size(total).unwrap(), 0);
    assert_eq!(blocks.delete_over_size(total - 1).unwrap(), 1);
    let left: Vec<i64> = blocks
        .view()
        .blocks
        .iter()
        .map(|b| b.meta.min_timestamp)
        .collect();
    assert_eq!(left, vec![101, 201], "the oldest went first");
    assert_eq!(blocks.delete_over_size(0).unwrap(), 2);
}

/// A Parquet file's footer.
fn file_metadata(path: &Path) -> parquet::file::metadata::ParquetMetaData {
    let reader =
        parquet::file::reader::SerializedFileReader::new(File::open(path).unwrap()).unwrap();
    parquet::file::reader::FileReader::metadata(&reader).clone()
}

/// Whether each column chunk of the file's first row group has statistics, by column name.
fn has_statistics(path: &Path) -> Vec<(String, bool)> {
    file_metadata(path)
        .row_group(0)
        .columns()
        .iter()
        .map(|c| (c.column_path().string(), c.statistics().is_some()))
        .collect()
}

#[test]
fn cut_blocks_skip_label_statistics_and_merged_blocks_keep_them() {
    let dir = tempfile::tempdir().unwrap();
    let head = Head::new(HeadConfig::test_config());
    let blocks = Blocks::open(dir.path()).unwrap();
    append(&head, "up", &[("job", "a")], &[(10, 1.0), (20, 2.0)]);
    let cut = blocks.cut(&head, 100).unwrap().unwrap();
    assert_eq!(cut.meta.level, 1);
    let (path, _) = cut.file("up").unwrap();
    assert_eq!(
        has_statistics(&path),
        [
            ("job".to_string(), false),
            ("timestamp".to_string(), true),
            ("value".to_string(), true)
        ]
    );

    let batch = crate::block::compact::read_parquet(&path)
        .unwrap()
        .remove(0);
    let mut writer = BlockWriter::create(&dir.path().join("blocks"), "merged".into(), 2).unwrap();
    writer.write_metric("up", &batch).unwrap();
    let merged = writer.finish(0, 100, Vec::new()).unwrap().unwrap();
    assert_eq!(merged.meta.level, 2);
    let (path, _) = merged.file("up").unwrap();
    assert!(has_statistics(&path).iter().all(|(_, s)| *s));
    assert_eq!(read_file(&path), read_file(&cut.file("up").unwrap().0));
}

#[test]
fn large_metric_files_are_split_into_row_groups_for_parallel_reads() {
    let dir = tempfile::tempdir().unwrap();
    let head = Head::new(HeadConfig::test_config());
    let blocks = Blocks::open(dir.path()).unwrap();
    let samples: Vec<(i64, f64)> = (0..ROW_GROUP_ROWS as i64 + 1)
        .map(|t| (t, t as f64))
        .collect();
    append(&head, "big", &[("job", "a")], &samples);
    let block = blocks.cut(&head, i64::MAX / 2).unwrap().unwrap();
    let (path, _) = block.file("big").unwrap();
    let rows: Vec<i64> = file_metadata(&path)
        .row_groups()
        .iter()
        .map(|g| g.num_rows())
        .collect();
    assert_eq!(rows, [ROW_GROUP_ROWS as i64, 1]);
    assert_eq!(read_file(&path).len(), ROW_GROUP_ROWS + 1);
}
