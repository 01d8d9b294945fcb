//! Durability: the WAL and blocks across `kill -9`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arrow::array::AsArray;
use arrow::datatypes::{Float64Type, Int64Type, TimestampMillisecondType};
use prost::Message;
use proto::prometheus::{Label, Sample, TimeSeries, WriteRequest};

use crate::support::Replica;

/// Short blocks, so cuts happen while the test writes; a short sync interval.
const CONFIG: &str =
    "global: {scrape_interval: 1s}\nstorage: {block_duration: 2s, wal_sync_interval: 200ms}\n";
const SERIES: usize = 20;

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// One sample for each of `SERIES` series at `t`, valued `t` plus the series number.
fn request(t: i64) -> Vec<u8> {
    let timeseries = (0..SERIES)
        .map(|s| TimeSeries {
            labels: vec![
                Label {
                    name: "__name__".into(),
                    value: "crash_test".into(),
                },
                Label {
                    name: "s".into(),
                    value: format!("{s:02}"),
                },
            ],
            samples: vec![Sample {
                value: (t + s as i64) as f64,
                timestamp: t,
            }],
            ..Default::default()
        })
        .collect();
    let request = WriteRequest {
        timeseries,
        metadata: vec![],
    };
    snap::raw::Encoder::new()
        .compress_vec(&request.encode_to_vec())
        .unwrap()
}

/// Writes until the replica stops answering; records every timestamp it acknowledged.
async fn write_until_refused(url: String, acked: Arc<Mutex<Vec<i64>>>, deadline: Instant) {
    let client = reqwest::Client::new();
    let mut t = acked.lock().unwrap().last().copied().unwrap_or(0);
    while Instant::now() < deadline {
        t = (t + 1).max(now_ms());
        let sent = client
            .post(&url)
            .header("Content-Encoding", "snappy")
            .header("Content-Type", "application/x-protobuf")
            .body(request(t))
            .send()
            .await;
        match sent {
            Ok(r) if r.status().as_u16() == 204 => acked.lock().unwrap().push(t),
            Ok(r) => panic!("write refused: {} {:?}", r.status(), r.text().await),
            Err(_) => return,
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Kills the real binary with SIGKILL mid-ingest three times, restarting it each time, while
/// blocks are being cut every 2 s. Remote write acknowledges a request only once its record is
/// in the WAL (the page cache survives a killed process), so the margin here is zero: every
/// acknowledged sample must come back, once. Requests in flight at the kill may or may not.
#[tokio::test]
async fn sigkill_during_ingest_loses_nothing_acknowledged_and_duplicates_nothing() {
    let mut replica = Replica::start(Some(CONFIG)).await;
    let acked = Arc::new(Mutex::new(Vec::new()));
    for round in 0..3u64 {
        let url = format!("http://{}/api/v1/write", replica.http);
        #[allow(clippy::disallowed_methods)] // owned by an AbortOnDropHandle
        let writer = tokio_util::task::AbortOnDropHandle::new(tokio::spawn(write_until_refused(
            url,
            Arc::clone(&acked),
            Instant::now() + Duration::from_secs(20),
        )));
        // Kill at a different point of the block cycle each round.
        tokio::time::sleep(Duration::from_millis(1500 + 700 * round)).await;
        replica = replica.restart().await;
        tokio::time::timeout(Duration::from_secs(10), writer)
            .await
            .expect("writer stops once the replica is gone")
            .unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() > 50,
        "only {} requests acknowledged",
        acked.len()
    );

    let (_, batches) = replica
        .query("SELECT s, timestamp, value FROM crash_test ORDER BY timestamp, s")
        .await;
    let mut stored: BTreeMap<i64, Vec<f64>> = BTreeMap::new();
    let mut rows = 0;
    for b in &batches {
        let ts = b.column(1).as_primitive::<TimestampMillisecondType>();
        let vs = b.column(2).as_primitive::<Float64Type>();
        for i in 0..b.num_rows() {
            stored.entry(ts.value(i)).or_default().push(vs.value(i));
            rows += 1;
        }
    }
    let missing: Vec<i64> = acked
        .iter()
        .filter(|t| stored.get(t).is_none_or(|v| v.len() != SERIES))
        .copied()
        .collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged requests missing or partial, first {:?}\n{}",
        missing.len(),
        &missing[..missing.len().min(5)],
        replica.log()
    );
    // Nothing twice: each timestamp holds each series once, with its own value.
    for (t, values) in &stored {
        assert_eq!(values.len(), SERIES, "timestamp {t}: {values:?}");
        let want: Vec<f64> = (0..SERIES).map(|s| (t + s as i64) as f64).collect();
        assert_eq!(values, &want, "timestamp {t}");
    }
    let (_, b) = replica
        .query("SELECT count(*) FROM (SELECT DISTINCT s, timestamp FROM crash_test)")
        .await;
    assert_eq!(
        b[0].column(0).as_primitive::<Int64Type>().value(0) as usize,
        rows
    );
    // Blocks were cut along the way, and the log shows replays.
    let blocks = std::fs::read_dir(replica.data_dir().join("blocks"))
        .unwrap()
        .count();
    assert!(blocks > 0, "no block was cut\n{}", replica.log());
    assert!(replica.log().contains("WAL replayed"), "{}", replica.log());
}
