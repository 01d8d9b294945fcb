//! Appending to the head: resolve series, buffer samples, commit them at once.

use std::sync::Arc;

use super::{Head, MetricHead, SeriesRef};
use crate::metadata::MetricMetadata;
use crate::wal::{RecordEncoder, Wal, WalWriter};

/// The write seam of storage: scrapes, remote write and recording rules all append through
/// it. `series` resolves (or creates) a series once; `append` buffers a sample for it;
/// `commit` makes the buffered samples visible together; `rollback` drops them.
pub trait Appender {
    /// Finds or creates the series `metric{labels}`. Pairs may come in any order; pairs with
    /// an empty value are ignored (an empty label is an absent label). The returned ref stays
    /// valid for the life of the head.
    fn series(&mut self, metric: &str, labels: &[(&str, &str)]) -> Result<SeriesRef, AppendError>;

    /// Buffers one sample (timestamp in ms since the epoch).
    fn append(&mut self, series: SeriesRef, timestamp_ms: i64, value: f64);

    /// Makes every buffered sample visible; the appender can be used again afterwards.
    fn commit(&mut self) -> Result<AppendStats, AppendError>;

    /// Drops every buffered sample. Series already created stay (they are merely empty).
    fn rollback(&mut self);

    /// Records a metric family's type, help and unit. Takes effect at once (metadata is not
    /// part of the commit: it describes, it does not count).
    fn update_metadata(&mut self, family: &str, metadata: MetricMetadata);
}

/// Why a series or sample was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AppendError {
    /// `storage.max_series` is reached; existing series still accept samples.
    #[error(
        "series limit reached: the head holds {limit} series (storage.max_series), new series are rejected"
    )]
    SeriesLimit {
        /// The configured cap.
        limit: u64,
    },
    /// The label set is not valid.
    #[error("invalid series {metric}: {reason}")]
    InvalidSeries {
        /// Metric name.
        metric: String,
        /// What is wrong.
        reason: String,
    },
    /// The WAL could not be written (disk full, I/O error): nothing of the commit was kept.
    #[error("cannot write the WAL, nothing of this commit was stored: {message}")]
    Storage {
        /// The I/O error.
        message: String,
    },
}

/// What a commit did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AppendStats {
    /// Samples now in the head.
    pub appended: u64,
    /// Samples dropped because their series already had a sample at that time or later.
    pub out_of_order: u64,
    /// Samples dropped because they were older than the head's lower bound (already cut
    /// into blocks).
    pub out_of_bounds: u64,
}

/// The head's [`Appender`].
#[derive(Debug)]
pub struct HeadAppender<'a> {
    head: &'a Head,
    /// Samples waiting for commit, in append order.
    samples: Vec<(SeriesRef, i64, f64)>,
    /// Scratch space for series keys and label pairs, reused across calls.
    key: Vec<u32>,
    /// The WAL record being built, reused across commits.
    record: RecordEncoder,
    /// Replay recreates series that existed before a restart: `max_series` does not apply.
    pub(super) unlimited: bool,
}

impl<'a> HeadAppender<'a> {
    /// Buffers `samples` ahead of every sample already buffered, as if appended first: where
    /// one of them and a later-buffered sample have the same series and timestamp, this one
    /// is kept and the other counted out of order. A scrape puts its report (`up`, …) there,
    /// so a target cannot override the replica's own verdict, and body and report still make
    /// one commit.
    pub fn prepend(&mut self, samples: impl IntoIterator<Item = (SeriesRef, i64, f64)>) {
        self.samples.splice(0..0, samples);
    }

    pub(super) fn new(head: &'a Head, samples: usize) -> Self {
        Self {
            head,
            samples: Vec::with_capacity(samples),
            key: Vec::new(),
            record: RecordEncoder::with_capacity(samples),
            unlimited: false,
        }
    }

    /// Writes the commit's record: every sample the head may accept, preceded by the
    /// definitions of series the current segment has not defined yet. The returned writer
    /// keeps the WAL locked until the samples are applied, so the head applies commits in
    /// log order and replay reaches the same state; so is the lower bound, read here, the one
    /// the samples are applied under (see [`Head::close_before`]).
    fn log<'w>(
        &mut self,
        wal: &'w Wal,
        metrics: &[Arc<MetricHead>],
        samples: &[(SeriesRef, i64, f64)],
    ) -> std::io::Result<(WalWriter<'w>, i64)> {
        let mut writer = wal.lock()?;
        let min_valid = self.head.min_valid_timestamp();
        let segment = writer.segment();
        self.record.clear();
        for run in samples.chunk_by(|a, b| a.0.metric == b.0.metric) {
            let Some(metric) = metrics.get(run[0].0.metric as usize) else {
                continue;
            };
            let mut state = metric.state.lock();
            for &(r, t, v) in run {
                if t < min_valid {
                    continue;
                }
                let Some(info) = state.series.get(r.series as usize) else {
                    continue;
                };
                if info.wal_segment != segment {
                    let labels = state.label_pairs(r.series);
                    self.record
                        .add_series(r, &metric.name, labels.iter().copied());
                    state.series[r.series as usize].wal_segment = segment;
                }
                self.record.add_sample(r, t, v);
            }
        }
        if !self.record.is_empty() {
            writer.write(&self.record)?;
        }
        Ok((writer, min_valid))
    }
}

impl Appender for HeadAppender<'_> {
    fn series(&mut self, metric: &str, labels: &[(&str, &str)]) -> Result<SeriesRef, AppendError> {
        if metric.is_empty() {
            return Err(AppendError::InvalidSeries {
                metric: String::new(),
                reason: "empty metric name".into(),
            });
        }
        let mut pairs: Vec<(&str, &str)> = labels
            .iter()
            .copied()
            .filter(|(_, v)| !v.is_empty())
            .collect();
        pairs.sort_unstable_by(|a, b| a.0.cmp(b.0));
        if let Some(w) = pairs.windows(2).find(|w| w[0].0 == w[1].0) {
            return Err(AppendError::InvalidSeries {
                metric: metric.to_string(),
                reason: format!("label {:?} appears twice", w[0].0),
            });
        }
        if let Some((name, _)) = pairs.iter().find(|(n, _)| n.is_empty()) {
            return Err(AppendError::InvalidSeries {
                metric: metric.to_string(),
                reason: format!("empty label name {name:?}"),
            });
        }

        if let Some(m) = self.head.metric(metric) {
            let state = m.state.lock();
            if let Some(series) = state.find_series(&pairs, &mut self.key) {
                return Ok(SeriesRef {
                    metric: m.id,
                    series,
                });
            }
        }
        if !self.head.reserve_series(self.unlimited) {
            return Err(AppendError::SeriesLimit {
                limit: self.head.config.max_series,
            });
        }
        let m = self.head.get_or_create_metric(metric);
        let mut state = m.state.lock();
        // Another appender may have created it between the lookup and here.
        if let Some(series) = state.find_series(&pairs, &mut self.key) {
            drop(state);
            self.head.release_series();
            return Ok(SeriesRef {
                metric: m.id,
                series,
            });
        }
        let series = state.create_series(&pairs);
        self.head.stats.series_created.inc();
        self.head.stats.series.inc();
        Ok(SeriesRef {
            metric: m.id,
            series,
        })
    }

    fn append(&mut self, series: SeriesRef, timestamp_ms: i64, value: f64) {
        self.samples.push((series, timestamp_ms, value));
    }

    fn commit(&mut self) -> Result<AppendStats, AppendError> {
        let mut stats = AppendStats::default();
        let chunk_rows = self.head.config.chunk_rows.max(1);
        let samples = std::mem::take(&mut self.samples);
        // One read of the metric index for the whole commit, where each run of a metric took
        // one (and a reference count) per pass: a scrape switches metric every few samples
        // in a histogram. Only adding a metric waits for it, and a commit takes no other
        // lock of the index.
        let head = self.head;
        let index = head.metrics.read();
        let metrics = index.list.as_slice();
        // Held until the samples are applied (see `log`).
        let (_wal, min_valid) = match &head.wal {
            Some(wal) => match self.log(wal, metrics, &samples) {
                Ok((writer, min_valid)) => (Some(writer), min_valid),
                Err(e) => {
                    self.samples = samples;
                    self.samples.clear();
                    return Err(AppendError::Storage {
                        message: e.to_string(),
                    });
                }
            },
            None => (None, head.min_valid_timestamp()),
        };
        let mut i = 0;
        // Samples arrive grouped by metric (an exposition lists a family's samples together),
        // so each run of one metric takes that metric's lock once.
        while i < samples.len() {
            let metric_id = samples[i].0.metric;
            let end = samples[i..]
                .iter()
                .position(|(r, _, _)| r.metric != metric_id)
                .map_or(samples.len(), |p| i + p);
            match metrics.get(metric_id as usize) {
                Some(metric) => {
                    let mut state = metric.state.lock();
                    for &(r, t, v) in &samples[i..end] {
                        if t < min_valid {
                            stats.out_of_bounds += 1;
                        } else if state.append(r.series, t, v, chunk_rows) {
                            stats.appended += 1;
                        } else {
                            stats.out_of_order += 1;
                        }
                    }
                }
                // A ref from another head: nothing to append to.
                None => stats.out_of_order += (end - i) as u64,
            }
            i = end;
        }
        drop(index);
        self.head.stats.samples_appended.inc_by(stats.appended);
        self.head
            .stats
            .samples_out_of_order
            .inc_by(stats.out_of_order);
        self.head
            .stats
            .samples_out_of_bounds
            .inc_by(stats.out_of_bounds);
        // Keep the allocation for the next scrape.
        self.samples = samples;
        self.samples.clear();
        Ok(stats)
    }

    fn rollback(&mut self) {
        self.samples.clear();
    }

    fn update_metadata(&mut self, family: &str, metadata: MetricMetadata) {
        self.head.metadata.set(family, metadata);
    }
}

impl Head {
    /// Gives back a reservation taken by `reserve_series` that was not used.
    fn release_series(&self) {
        self.series_total
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

impl super::MetricState {
    /// Appends one sample; false when it is not newer than its series' last sample.
    fn append(&mut self, sid: u32, t: i64, v: f64, chunk_rows: usize) -> bool {
        let Some(info) = self.series.get_mut(sid as usize) else {
            return false;
        };
        if t <= info.last_ts {
            return false;
        }
        if info.first_ts == i64::MAX {
            info.first_ts = t;
        }
        info.last_ts = t;
        self.open.push(sid, t, v);
        if self.open.len() >= chunk_rows {
            let chunk = self.open.seal();
            self.sealed.push(std::sync::Arc::new(chunk));
        }
        true
    }
}
