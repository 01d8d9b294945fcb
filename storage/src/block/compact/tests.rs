use std::path::Path;

use super::*;
use crate::block::{BlockMeta, META_FILE, META_VERSION, MetricBuilder};
use crate::head::{Head, HeadConfig};
use crate::testing::{append, rendered_rows};

fn config(range: i64) -> CompactionConfig {
    CompactionConfig {
        ranges: vec![range],
        delete_delay: Duration::ZERO,
    }
}

/// A block with only metadata, for planning.
fn meta_block(id: &str, min: i64, max: i64, level: u32) -> Arc<Block> {
    Arc::new(Block {
        meta: BlockMeta {
            version: META_VERSION,
            id: id.to_string(),
            range_start: min,
            range_end: max + 1,
            min_timestamp: min,
            max_timestamp: max,
            rows: 1,
            bytes: 1,
            level,
            parents: Vec::new(),
            metrics: BTreeMap::new(),
        },
        dir: std::path::PathBuf::from(id),
        remote: false,
    })
}

fn ids(blocks: &[Arc<Block>]) -> Vec<&str> {
    let mut v: Vec<&str> = blocks.iter().map(|b| b.meta.id.as_str()).collect();
    v.sort_unstable();
    v
}

/// Every row of `metric` over the served blocks, in block order per file, files in view order.
fn served_rows(blocks: &Blocks, metric: &str) -> Vec<(String, i64, f64)> {
    let mut out = Vec::new();
    for (location, _) in blocks.view().files(metric) {
        let crate::block::FileLocation::Local(path) = location else {
            panic!("no object store here");
        };
        out.extend(rendered_rows(&read_parquet(&path).unwrap()));
    }
    out
}

fn block_dirs(data: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(data.join("blocks"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// A data directory with one cut block per time `t` in `times`, each holding `up{job="a"}`
/// = 1 at `t` and ending at `t + 90`.
fn cut_blocks(times: &[i64]) -> (tempfile::TempDir, Blocks) {
    let dir = tempfile::tempdir().unwrap();
    let head = Head::new(HeadConfig::test_config());
    let blocks = Blocks::open(dir.path()).unwrap();
    for &t in times {
        append(&head, "up", &[("job", "a")], &[(t, 1.0)]);
        blocks.cut(&head, t + 90).unwrap().unwrap();
    }
    (dir, blocks)
}

/// Writes a block the way `arrowhead import` does, without serving it.
fn write_import(data: &Path, metric: &str, samples: &[(&str, i64, f64)]) -> String {
    let mut b = MetricBuilder::default();
    for &(job, t, v) in samples {
        let s = b.series([("job", job)]);
        b.push(s, t, v);
    }
    let batch = b.finish().unwrap().unwrap();
    let id = ulid::Ulid::new().to_string();
    let mut w = BlockWriter::create(&data.join("blocks"), id.clone(), 2).unwrap();
    w.write_metric(metric, &batch).unwrap();
    let min = samples.iter().map(|s| s.1).min().unwrap();
    let max = samples.iter().map(|s| s.1).max().unwrap();
    w.finish(min, max + 1, Vec::new()).unwrap().unwrap();
    id
}

#[test]
fn windows_are_merged_once_complete_and_overlaps_first() {
    let a = meta_block("A", 0, 99, 1);
    let b = meta_block("B", 100, 199, 1);
    let c = meta_block("C", 300, 399, 1);
    let blocks = vec![Arc::clone(&a), Arc::clone(&b), Arc::clone(&c)];
    // The window [0, 300) is complete only once the head starts at 300 or later.
    assert_eq!(plan(&blocks, &[300], 299), None);
    match plan(&blocks, &[300], 300) {
        Some(Plan::Window { level, blocks }) => {
            assert_eq!(level, 2);
            assert_eq!(ids(&blocks), vec!["A", "B"]);
        }
        other => panic!("{other:?}"),
    }
    // A window whose blocks are all at the window's level already is left alone.
    let merged = meta_block("AB", 0, 199, 2);
    assert_eq!(plan(&[merged, Arc::clone(&c)], &[300], 1_000), None);
    // A block straddling a window boundary stays out of both windows.
    let straddle = meta_block("S", 250, 350, 1);
    assert_eq!(
        plan(&[straddle, meta_block("D", 400, 499, 1)], &[300], 10_000),
        None
    );
    // Overlapping blocks come first, at the highest input level.
    let x = meta_block("X", 150, 160, 2);
    match plan(&[a, b, c, x], &[300], 0) {
        Some(Plan::Overlap(group)) => assert_eq!(ids(&group), vec!["B", "X"]),
        other => panic!("{other:?}"),
    }
    // The second range merges what the first made, once its window is complete.
    let l2 = vec![meta_block("P", 0, 299, 2), meta_block("Q", 300, 599, 2)];
    assert_eq!(plan(&l2, &[300, 900], 600), None);
    match plan(&l2, &[300, 900], 900) {
        Some(Plan::Window { level, blocks }) => {
            assert_eq!((level, blocks.len()), (3, 2));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn ranges_follow_the_block_duration_and_stay_within_a_tenth_of_retention() {
    let ten_min = Duration::from_secs(600);
    let day = 24 * 3_600_000;
    assert_eq!(
        CompactionConfig::new(ten_min, Duration::from_secs(15 * 86_400)).ranges,
        vec![2 * 3_600_000, day]
    );
    assert_eq!(
        CompactionConfig::new(ten_min, Duration::ZERO).ranges,
        vec![2 * 3_600_000, day]
    );
    assert_eq!(
        CompactionConfig::new(ten_min, Duration::from_secs(86_400)).ranges,
        vec![2 * 3_600_000],
        "2.4 h cap"
    );
    assert!(
        CompactionConfig::new(ten_min, Duration::from_secs(3_600))
            .ranges
            .is_empty()
    );
}

#[test]
fn cut_blocks_are_merged_without_losing_or_doubling_a_sample() {
    let dir = tempfile::tempdir().unwrap();
    let head = Head::new(HeadConfig::test_config());
    let blocks = Blocks::open(dir.path()).unwrap();
    let mut expected = Vec::new();
    for step in 0..4 {
        let t0 = step * 100;
        append(
            &head,
            "up",
            &[("job", "a")],
            &[(t0 + 10, 1.0), (t0 + 60, 2.0)],
        );
        append(
            &head,
            "up",
            &[("job", "b"), ("zone", "z")],
            &[(t0 + 20, 3.0)],
        );
        if step == 1 {
            append(&head, "other", &[("x", "y")], &[(t0 + 30, 4.0)]);
        }
        blocks.cut(&head, t0 + 100).unwrap().unwrap();
        expected.extend([
            ("job=a".to_string(), t0 + 10, 1.0),
            ("job=a".to_string(), t0 + 60, 2.0),
            ("job=b,zone=z".to_string(), t0 + 20, 3.0),
        ]);
    }
    expected.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
    assert_eq!(blocks.view().blocks.len(), 4);
    assert!(
        !blocks.merge_due(&config(1_000)),
        "no window of 1000 is complete"
    );

    // The window [0, 300) is complete (head from 400): its three blocks become one.
    assert!(blocks.merge_due(&config(300)));
    assert_eq!(blocks.compact(&config(300), 10).unwrap(), 1);
    let view = blocks.view();
    assert_eq!(view.blocks.len(), 2);
    let merged = &view.blocks[0];
    assert_eq!(merged.meta.level, 2);
    assert_eq!(merged.meta.parents.len(), 3);
    assert_eq!(
        (merged.meta.min_timestamp, merged.meta.max_timestamp),
        (10, 260)
    );
    assert_eq!(merged.meta.rows, 10);
    assert_eq!(view.head_from, 400, "merging never moves the head bound");
    let (_, other) = merged.file("other").unwrap();
    assert_eq!(other.rows, 1);
    // One file per metric, sorted across the old block boundaries; the last block unchanged.
    let rows = rendered_rows(&read_parquet(&merged.file("up").unwrap().0).unwrap());
    assert_eq!(
        rows,
        expected[..]
            .iter()
            .filter(|r| r.1 < 300)
            .cloned()
            .collect::<Vec<_>>()
    );
    let mut all = served_rows(&blocks, "up");
    all.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
    assert_eq!(all, expected);
    // Inputs deleted (delay 0); nothing left to do.
    assert_eq!(block_dirs(dir.path()).len(), 2);
    assert!(!blocks.merge_due(&config(300)));
    assert_eq!(blocks.compact(&config(300), 10).unwrap(), 0);
    assert_eq!(blocks.metrics().compactions.get(), 1);

    // Reopened, the merged block is what is served.
    drop(blocks);
    let reopened = Blocks::open(dir.path()).unwrap();
    assert_eq!(reopened.view().blocks.len(), 2);
    assert_eq!(reopened.head_from(), 400);
}

#[test]
fn a_merge_keeps_its_inputs_until_the_delay_is_over() {
    let (dir, blocks) = cut_blocks(&[10, 110]);
    let delayed = CompactionConfig {
        ranges: vec![200],
        delete_delay: Duration::from_secs(3_600),
    };
    assert_eq!(blocks.compact(&delayed, 10).unwrap(), 1);
    assert_eq!(blocks.view().blocks.len(), 1);
    assert_eq!(
        block_dirs(dir.path()).len(),
        3,
        "inputs still there for readers"
    );
    // Not rediscovered as imports while they wait.
    assert_eq!(blocks.discover().unwrap(), 0);
    blocks.delete_retired(Duration::ZERO);
    assert_eq!(block_dirs(dir.path()).len(), 1);
}

#[test]
fn inputs_left_behind_by_a_crash_are_deleted_at_start_up() {
    let (dir, blocks) = cut_blocks(&[10, 110]);
    // Keep a copy of an input, merge, then put the copy back as a crash would have left it.
    let input = blocks.view().blocks[0].dir.clone();
    let copy = dir.path().join("copy");
    std::fs::create_dir(&copy).unwrap();
    for f in std::fs::read_dir(&input).unwrap() {
        let f = f.unwrap();
        std::fs::copy(f.path(), copy.join(f.file_name())).unwrap();
    }
    blocks.compact(&config(200), 10).unwrap();
    drop(blocks);
    std::fs::rename(&copy, &input).unwrap();
    assert_eq!(block_dirs(dir.path()).len(), 2);

    let reopened = Blocks::open(dir.path()).unwrap();
    assert_eq!(reopened.view().blocks.len(), 1);
    assert_eq!(block_dirs(dir.path()).len(), 1);
    assert_eq!(
        served_rows(&reopened, "up"),
        vec![
            ("job=a".to_string(), 10, 1.0),
            ("job=a".to_string(), 110, 1.0)
        ]
    );
}

#[test]
fn a_found_block_overriding_served_samples_wins_and_is_merged_before_it_is_served() {
    let dir = tempfile::tempdir().unwrap();
    let head = Head::new(HeadConfig::test_config());
    let blocks = Blocks::open(dir.path()).unwrap();
    append(
        &head,
        "up",
        &[("job", "a")],
        &[(10, 1.0), (20, 1.0), (30, 1.0)],
    );
    blocks.cut(&head, 100).unwrap().unwrap();
    // An import overlapping in time: one sample replaced, one added, another series and an
    // older, separate range.
    write_import(
        dir.path(),
        "up",
        &[("a", 20, 5.0), ("a", 25, 6.0), ("b", 30, 7.0)],
    );
    write_import(dir.path(), "old", &[("a", -1_000, 1.0)]);
    assert_eq!(blocks.discover().unwrap(), 2);
    let view = blocks.view();
    assert_eq!(view.blocks.len(), 2, "the overlapping import was merged in");
    assert_eq!(
        served_rows(&blocks, "up"),
        vec![
            ("job=a".to_string(), 10, 1.0),
            ("job=a".to_string(), 20, 5.0),
            ("job=a".to_string(), 25, 6.0),
            ("job=a".to_string(), 30, 1.0),
            ("job=b".to_string(), 30, 7.0),
        ]
    );
    assert_eq!(view.head_from, 100);
    assert_eq!(blocks.discover().unwrap(), 0, "nothing new the second time");

    // The same holds when the replica was down during the import: merged at start-up.
    drop(blocks);
    write_import(dir.path(), "up", &[("a", 10, 9.0)]);
    let reopened = Blocks::open(dir.path()).unwrap();
    assert_eq!(reopened.view().blocks.len(), 2);
    assert_eq!(
        served_rows(&reopened, "up")[0],
        ("job=a".to_string(), 10, 9.0)
    );
    assert_eq!(reopened.head_from(), 100);
}

#[test]
fn a_found_block_that_is_broken_goes_to_corrupted() {
    let dir = tempfile::tempdir().unwrap();
    let blocks = Blocks::open(dir.path()).unwrap();
    let id = write_import(dir.path(), "up", &[("a", 10, 1.0)]);
    std::fs::write(dir.path().join("blocks").join(&id).join(META_FILE), b"{").unwrap();
    assert_eq!(blocks.discover().unwrap(), 0);
    assert!(dir.path().join("corrupted").join(&id).exists());
    assert_eq!(blocks.corrupted().len(), 1);
    assert_eq!(blocks.metrics().corrupted.get(), 1);
}

#[test]
fn an_undecodable_input_is_moved_aside_and_the_rest_merges_later() {
    let (_dir, blocks) = cut_blocks(&[10, 110, 210]);
    // Damage the middle of the first block's file, keeping its size and footer.
    let (path, _) = blocks.view().blocks[0].file("up").unwrap();
    let mut bytes = std::fs::read(&path).unwrap();
    for b in &mut bytes[4..40] {
        *b = 0xff;
    }
    std::fs::write(&path, bytes).unwrap();
    assert!(blocks.compact(&config(300), 10).is_err());
    assert_eq!(blocks.corrupted().len(), 1);
    assert_eq!(blocks.metrics().compaction_failures.get(), 1);
    // The two good blocks are still served and merge on the next pass.
    assert_eq!(blocks.view().blocks.len(), 2);
    assert_eq!(blocks.compact(&config(300), 10).unwrap(), 1);
    assert_eq!(
        served_rows(&blocks, "up"),
        vec![
            ("job=a".to_string(), 110, 1.0),
            ("job=a".to_string(), 210, 1.0)
        ]
    );
}

#[test]
fn a_merge_whose_input_was_deleted_meanwhile_is_dropped() {
    let (dir, blocks) = cut_blocks(&[10, 110]);
    let inputs = blocks.view().blocks;
    // Retention takes the first block out of service while the merge reads it.
    blocks.replace_blocks(|state| state.blocks.remove(0));
    assert!(!blocks.merge(&inputs, 2, 2).unwrap());
    assert_eq!(ids(&blocks.view().blocks), ids(&inputs[1..]));
    assert_eq!(
        block_dirs(dir.path()).len(),
        2,
        "the dropped result left nothing"
    );
}
