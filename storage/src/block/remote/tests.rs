//! The object-store tier against a `file://` store (the S3 path is tested end to end
//! against a real S3 server in `tests/e2e/object_store.rs`).

use std::path::Path;
use std::time::Duration;

use super::*;
use crate::block::{Blocks, CompactionConfig};
use crate::head::{Head, HeadConfig};
use crate::testing::{append, rendered_rows};

fn config(dir: &Path) -> ObjectStoreConfig {
    ObjectStoreConfig {
        url: format!("file://{}", dir.display()),
        options: BTreeMap::new(),
    }
}

fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Block directories in a `file://` store that hold a `meta.json` (deleting objects leaves
/// empty directories behind, which an object store does not have).
fn stored_blocks(dir: &Path) -> Vec<String> {
    entries(dir)
        .into_iter()
        .filter(|d| dir.join(d).join("meta.json").exists())
        .collect()
}

/// Every row of `metric` as seen through the blocks' files, wherever they are.
fn rows(blocks: &Blocks, metric: &str) -> Vec<(String, i64, f64)> {
    let view = blocks.view();
    let mut out = Vec::new();
    for (location, file) in view.files(metric) {
        let bytes = match location {
            crate::block::FileLocation::Local(p) => Bytes::from(std::fs::read(p).unwrap()),
            crate::block::FileLocation::Remote(p) => {
                let id = p.parts().rev().nth(1).unwrap().as_ref().to_string();
                view.remote.as_ref().unwrap().get(&id, &file.file).unwrap()
            }
        };
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes)
            .unwrap()
            .build()
            .unwrap();
        let batches: Vec<_> = reader.map(|b| b.unwrap()).collect();
        out.extend(rendered_rows(&batches));
    }
    out
}

#[test]
fn options_and_schemes_are_checked_without_connecting() {
    let ok = ObjectStoreConfig {
        url: "s3://bucket/prefix".into(),
        options: [("endpoint", "http://127.0.0.1:1"), ("allow_http", "true")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    };
    check_config(&ok).unwrap();
    let mut typo = ok.clone();
    typo.options.insert("secret_acess_key".into(), "x".into());
    let e = check_config(&typo).unwrap_err();
    assert!(e.contains("unknown option \"secret_acess_key\""), "{e}");
    let e = check_config(&ObjectStoreConfig {
        url: "ftp://host/x".into(),
        options: BTreeMap::new(),
    })
    .unwrap_err();
    assert!(e.contains("not supported"), "{e}");
    assert!(
        check_config(&ObjectStoreConfig {
            url: "not a url".into(),
            options: BTreeMap::new(),
        })
        .is_err()
    );
    // Secrets stay out of debug output.
    let mut secret = ok;
    secret
        .options
        .insert("secret_access_key".into(), "hunter2".into());
    assert!(!format!("{secret:?}").contains("hunter2"));
}

#[test]
fn finished_blocks_move_to_the_store_and_are_served_from_it_after_a_restart() {
    let data = tempfile::tempdir().unwrap();
    let bucket = tempfile::tempdir().unwrap();
    let head = Head::new(HeadConfig::test_config());
    let blocks = Blocks::open_with(
        data.path(),
        Some(RemoteStore::open(&config(bucket.path())).unwrap()),
    )
    .unwrap();
    for t in [10, 110, 210] {
        append(&head, "up", &[("job", "a")], &[(t, t as f64)]);
        blocks.cut(&head, t + 90).unwrap().unwrap();
    }
    let expected = vec![
        ("job=a".to_string(), 10, 10.0),
        ("job=a".to_string(), 110, 110.0),
        ("job=a".to_string(), 210, 210.0),
    ];
    // Only blocks older than the bound move; the local copies go after the delay (0 here).
    assert_eq!(blocks.move_to_remote(200, Duration::ZERO).unwrap(), 2);
    let view = blocks.view();
    assert_eq!(
        view.blocks.iter().map(|b| b.remote).collect::<Vec<_>>(),
        vec![true, true, false]
    );
    assert_eq!(entries(&data.path().join("blocks")).len(), 1);
    let uploaded = stored_blocks(bucket.path());
    assert_eq!(uploaded.len(), 2);
    assert_eq!(
        entries(&bucket.path().join(&uploaded[0])),
        vec!["meta.json", "up.parquet"]
    );
    assert_eq!(rows(&blocks, "up"), expected);
    assert_eq!(blocks.metrics().uploads.get(), 2);

    // A merge reads inputs from the store; its result is local until it moves too.
    let merge = CompactionConfig {
        ranges: vec![300],
        delete_delay: Duration::ZERO,
    };
    assert_eq!(blocks.compact(&merge, 10).unwrap(), 1);
    assert!(
        stored_blocks(bucket.path()).is_empty(),
        "merged-away remote blocks deleted"
    );
    assert_eq!(rows(&blocks, "up"), expected);
    assert_eq!(blocks.move_to_remote(1_000, Duration::ZERO).unwrap(), 1);
    assert!(entries(&data.path().join("blocks")).is_empty());
    drop(blocks);

    // Restart: served from the store. An upload cut short (no meta.json) is not served.
    std::fs::create_dir(bucket.path().join("01KBHALFUPLOAD0000000000000")).unwrap();
    std::fs::write(
        bucket.path().join("01KBHALFUPLOAD0000000000000/up.parquet"),
        b"x",
    )
    .unwrap();
    let reopened = Blocks::open_with(
        data.path(),
        Some(RemoteStore::open(&config(bucket.path())).unwrap()),
    )
    .unwrap();
    assert_eq!(reopened.view().blocks.len(), 1);
    assert!(reopened.view().blocks[0].remote);
    assert_eq!(reopened.head_from(), 300);
    assert_eq!(rows(&reopened, "up"), expected);

    // Retention deletes from the store.
    assert_eq!(reopened.delete_before(1_000).unwrap(), 1);
    assert!(stored_blocks(bucket.path()).is_empty());
    assert!(
        bucket
            .path()
            .join("01KBHALFUPLOAD0000000000000/up.parquet")
            .exists(),
        "an incomplete upload is left alone"
    );
}

#[test]
fn a_block_both_local_and_in_the_store_is_served_from_the_store() {
    let data = tempfile::tempdir().unwrap();
    let bucket = tempfile::tempdir().unwrap();
    let head = Head::new(HeadConfig::test_config());
    let store = RemoteStore::open(&config(bucket.path())).unwrap();
    let blocks = Blocks::open(data.path()).unwrap();
    append(&head, "up", &[("job", "a")], &[(10, 1.0)]);
    let block = blocks.cut(&head, 100).unwrap().unwrap();
    // The upload finished, then the process stopped before deleting the local copy.
    store.upload(&block).unwrap();
    drop(blocks);
    let reopened = Blocks::open_with(data.path(), Some(store)).unwrap();
    assert_eq!(reopened.view().blocks.len(), 1);
    assert!(reopened.view().blocks[0].remote);
    assert!(entries(&data.path().join("blocks")).is_empty());
    assert_eq!(rows(&reopened, "up"), vec![("job=a".to_string(), 10, 1.0)]);
}
