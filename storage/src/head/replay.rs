//! Opening a head from its WAL: replaying every segment, then logging new commits.

use std::collections::HashMap;
use std::io;
use std::path::Path;

use tracing::{info, warn};

use super::{Appender, Head, HeadConfig, SeriesRef};
use crate::wal::{self, ReplayOutcome, Wal, WalConfig, WalMetrics};

/// What [`Head::open`] did.
#[derive(Debug, Default)]
pub struct ReplayStats {
    /// What the WAL held.
    pub outcome: ReplayOutcome,
    /// Samples put back into the head.
    pub samples_restored: u64,
    /// Samples skipped because they are older than the head's lower bound (already in blocks).
    pub samples_skipped: u64,
    /// Samples whose series definition was lost with a corrupt part of their segment.
    pub samples_orphaned: u64,
    /// Series whose definition was refused (invalid labels in the log).
    pub series_refused: u64,
    /// Wall time of the replay.
    pub elapsed: std::time::Duration,
}

impl Head {
    /// Opens a head whose commits are logged in `wal_dir`: replays the segments already there
    /// (skipping samples older than `min_valid_ts`, which blocks hold), then starts a new
    /// segment. Samples older than `min_valid_ts` are refused from then on.
    pub fn open(
        config: HeadConfig,
        wal_dir: &Path,
        wal_config: WalConfig,
        min_valid_ts: i64,
    ) -> io::Result<(Self, ReplayStats)> {
        let started = std::time::Instant::now();
        let mut head = Head::new(config);
        head.set_min_valid_timestamp(min_valid_ts);
        let metrics = WalMetrics::default();
        let mut stats = ReplayStats::default();
        let outcome = {
            let mut app = head.appender();
            app.unlimited = true;
            // Series ids are scoped to their segment.
            let mut ids: HashMap<SeriesRef, Option<SeriesRef>> = HashMap::new();
            let mut current = None;
            wal::replay(wal_dir, &metrics, |seq, record| {
                if current != Some(seq) {
                    ids.clear();
                    current = Some(seq);
                }
                for def in &record.series {
                    let labels: Vec<(&str, &str)> = def
                        .labels
                        .iter()
                        .map(|(n, v)| (n.as_str(), v.as_str()))
                        .collect();
                    let resolved = match app.series(&def.metric, &labels) {
                        Ok(r) => Some(r),
                        Err(e) => {
                            stats.series_refused += 1;
                            warn!(segment = seq, error = %e, "WAL series definition refused");
                            None
                        }
                    };
                    ids.insert(def.id, resolved);
                }
                for &(id, t, v) in &record.samples {
                    if t < min_valid_ts {
                        stats.samples_skipped += 1;
                        continue;
                    }
                    match ids.get(&id) {
                        Some(Some(r)) => app.append(*r, t, v),
                        _ => stats.samples_orphaned += 1,
                    }
                }
                match app.commit() {
                    Ok(s) => stats.samples_restored += s.appended,
                    Err(e) => warn!(segment = seq, error = %e, "WAL record not restored"),
                }
            })?
        };
        let wal = Wal::create(
            wal_dir,
            outcome.next_segment(),
            outcome.segments.clone(),
            wal_config,
            metrics,
        )?;
        head.wal = Some(wal);
        stats.elapsed = started.elapsed();
        stats.outcome = outcome;
        if stats.outcome.records > 0 {
            info!(
                segments = stats.outcome.segments.len(),
                samples = stats.samples_restored,
                skipped = stats.samples_skipped,
                series = head.series_count(),
                elapsed_ms = stats.elapsed.as_millis() as u64,
                "WAL replayed"
            );
        }
        if stats.samples_orphaned > 0 {
            warn!(
                samples = stats.samples_orphaned,
                "WAL samples lost with their series definitions in a corrupt segment"
            );
        }
        Ok((head, stats))
    }
}
