//! The Prometheus remote-write 1.0 receiver: `POST /api/v1/write`.
//!
//! ```text
//! body ─snappy (block format, size-capped)─► protobuf WriteRequest ─validate all─► Appender ─► commit
//! ```
//!
//! A request is taken whole or not at all: every series is validated (a non-empty
//! `__name__`, valid and unique label names, UTF-8 guaranteed by protobuf) before anything is
//! appended, so a malformed request gets a 400 with the reason and leaves the store as it was.
//! Samples older than their series' newest sample are dropped and counted, as for scrapes;
//! new series beyond `storage.max_series` are skipped and counted, the rest of the request is
//! stored (as for scrapes: existing series keep flowing, and the sender is not made to retry
//! a batch that would fail again).
//! Native histograms (field 4) are not stored: they are counted and dropped. Metadata entries
//! update `system.metrics`.
//!
//! The HTTP layer lives in the binary; this module turns bytes into appended samples and a
//! classified error.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;
use prost::Message;
use proto::prometheus::{WriteRequest, metric_metadata::MetricType};
use storage::{AppendError, Appender, MetricMetadata};

/// Largest decompressed request accepted. Prometheus senders batch a few thousand samples
/// (well under 1 MB); this leaves room while bounding memory per request.
pub const MAX_DECODED_BYTES: usize = 64 << 20;

/// Why a request was refused; the HTTP layer maps each to a status code.
#[derive(Debug, thiserror::Error)]
pub enum RemoteWriteError {
    /// Not a snappy block, or it decodes to more than [`MAX_DECODED_BYTES`].
    #[error("{0}")]
    Snappy(String),
    /// Not a protobuf `WriteRequest`.
    #[error("invalid protobuf WriteRequest: {0}")]
    Protobuf(#[from] prost::DecodeError),
    /// A series in the request is not valid; nothing was stored.
    #[error("series {index}: {reason}")]
    InvalidSeries {
        /// Position of the series in the request.
        index: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// Storage could not take the samples (the WAL write failed): nothing was stored, and the
    /// sender should retry later.
    #[error("{0}")]
    Unavailable(String),
}

impl RemoteWriteError {
    /// True when retrying the same request later can succeed (HTTP 503), false when the
    /// request itself is at fault (HTTP 400).
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }
}

/// Counters for `/metrics`.
#[derive(Debug, Clone, Default)]
pub struct RemoteWriteMetrics {
    /// Requests received.
    pub requests: Counter,
    /// Requests refused (malformed or over a limit).
    pub rejected: Counter,
    /// Samples appended.
    pub samples: Counter,
    /// Samples dropped as older than their series' newest sample.
    pub samples_out_of_order: Counter,
    /// Native histogram samples dropped (not supported).
    pub histograms_dropped: Counter,
    /// Series skipped because `storage.max_series` was reached.
    pub series_rejected: Counter,
}

impl RemoteWriteMetrics {
    /// Registers the counters under `arrowhead_remote_write_*`.
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("arrowhead_remote_write");
        r.register(
            "requests",
            "Remote-write requests received",
            self.requests.clone(),
        );
        r.register(
            "rejected",
            "Remote-write requests refused as malformed or over a limit",
            self.rejected.clone(),
        );
        r.register(
            "samples",
            "Remote-write samples appended",
            self.samples.clone(),
        );
        r.register(
            "samples_out_of_order",
            "Remote-write samples dropped as older than their series' newest sample, or than the time already cut into blocks",
            self.samples_out_of_order.clone(),
        );
        r.register(
            "histograms_dropped",
            "Remote-write native histogram samples dropped (not supported)",
            self.histograms_dropped.clone(),
        );
        r.register(
            "series_rejected",
            "Remote-write series skipped because storage.max_series was reached",
            self.series_rejected.clone(),
        );
    }
}

/// What one request did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteStats {
    /// Series in the request.
    pub series: usize,
    /// Samples appended.
    pub samples: u64,
    /// Samples dropped as out of order, or older than the time already cut into blocks.
    pub out_of_order: u64,
    /// Native histogram samples dropped.
    pub histograms: u64,
    /// Series skipped at the series limit.
    pub series_rejected: u64,
}

/// Handles one request body: decode, validate, append, commit. Every outcome is counted.
pub fn receive(
    body: &[u8],
    app: &mut dyn Appender,
    metrics: &RemoteWriteMetrics,
) -> Result<WriteStats, RemoteWriteError> {
    match decode(body) {
        Ok(request) => write(&request, app, metrics),
        Err(e) => {
            metrics.requests.inc();
            metrics.rejected.inc();
            Err(e)
        }
    }
}

/// Decodes a snappy-compressed `WriteRequest`.
pub fn decode(body: &[u8]) -> Result<WriteRequest, RemoteWriteError> {
    let len = snap::raw::decompress_len(body)
        .map_err(|e| RemoteWriteError::Snappy(format!("invalid snappy body: {e}")))?;
    if len > MAX_DECODED_BYTES {
        return Err(RemoteWriteError::Snappy(format!(
            "request decompresses to {len} bytes, more than the {MAX_DECODED_BYTES} accepted"
        )));
    }
    let raw = snap::raw::Decoder::new()
        .decompress_vec(body)
        .map_err(|e| RemoteWriteError::Snappy(format!("invalid snappy body: {e}")))?;
    Ok(WriteRequest::decode(raw.as_slice())?)
}

/// Validates every series, then appends and commits them all.
pub fn write(
    request: &WriteRequest,
    app: &mut dyn Appender,
    metrics: &RemoteWriteMetrics,
) -> Result<WriteStats, RemoteWriteError> {
    metrics.requests.inc();
    let result = write_inner(request, app);
    match &result {
        Ok(stats) => {
            metrics.samples.inc_by(stats.samples);
            metrics.samples_out_of_order.inc_by(stats.out_of_order);
            metrics.histograms_dropped.inc_by(stats.histograms);
            metrics.series_rejected.inc_by(stats.series_rejected);
        }
        Err(_) => {
            metrics.rejected.inc();
        }
    }
    result
}

fn write_inner(
    request: &WriteRequest,
    app: &mut dyn Appender,
) -> Result<WriteStats, RemoteWriteError> {
    // Validate everything first: a bad series refuses the request before anything is stored.
    let mut parsed: Vec<(&str, Vec<(&str, &str)>)> = Vec::with_capacity(request.timeseries.len());
    for (index, ts) in request.timeseries.iter().enumerate() {
        let invalid = |reason: String| RemoteWriteError::InvalidSeries { index, reason };
        let mut name = None;
        let mut labels = Vec::with_capacity(ts.labels.len());
        for l in &ts.labels {
            if l.name == "__name__" {
                name = Some(l.value.as_str());
            } else if !storage::labels::is_valid_label_name(&l.name) {
                return Err(invalid(format!("invalid label name {:?}", l.name)));
            } else {
                labels.push((l.name.as_str(), l.value.as_str()));
            }
        }
        let name = name
            .filter(|n| !n.is_empty())
            .ok_or_else(|| invalid("no __name__ label".into()))?;
        labels.sort_unstable_by(|a, b| a.0.cmp(b.0));
        if let Some(w) = labels.windows(2).find(|w| w[0].0 == w[1].0) {
            return Err(invalid(format!("label {:?} appears twice", w[0].0)));
        }
        parsed.push((name, labels));
    }
    let mut stats = WriteStats {
        series: parsed.len(),
        ..WriteStats::default()
    };
    for (index, (ts, (name, labels))) in request.timeseries.iter().zip(&parsed).enumerate() {
        stats.histograms += ts.histograms.len() as u64;
        if ts.samples.is_empty() {
            continue;
        }
        let series = match app.series(name, labels) {
            Ok(s) => s,
            Err(AppendError::SeriesLimit { .. }) => {
                stats.series_rejected += 1;
                continue;
            }
            Err(e) => {
                app.rollback();
                return Err(RemoteWriteError::InvalidSeries {
                    index,
                    reason: e.to_string(),
                });
            }
        };
        for s in &ts.samples {
            app.append(series, s.timestamp, s.value);
        }
    }
    let committed = app.commit().map_err(|e| match e {
        AppendError::Storage { .. } => RemoteWriteError::Unavailable(e.to_string()),
        other => RemoteWriteError::InvalidSeries {
            index: 0,
            reason: other.to_string(),
        },
    })?;
    stats.samples = committed.appended;
    stats.out_of_order = committed.out_of_order + committed.out_of_bounds;
    for m in &request.metadata {
        if m.metric_family_name.is_empty() {
            continue;
        }
        let kind = MetricType::try_from(m.r#type).unwrap_or(MetricType::Unknown);
        app.update_metadata(
            &m.metric_family_name,
            MetricMetadata {
                kind: kind.as_str_name().to_ascii_lowercase(),
                help: m.help.clone(),
                unit: m.unit.clone(),
            },
        );
    }
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use proto::prometheus::{Label, MetricMetadata as PbMetadata, Sample, TimeSeries};
    use storage::{Head, HeadConfig};

    use super::*;

    fn series(labels: &[(&str, &str)], samples: &[(i64, f64)]) -> TimeSeries {
        TimeSeries {
            labels: labels
                .iter()
                .map(|(n, v)| Label {
                    name: n.to_string(),
                    value: v.to_string(),
                })
                .collect(),
            samples: samples
                .iter()
                .map(|&(t, v)| Sample {
                    value: v,
                    timestamp: t,
                })
                .collect(),
            ..Default::default()
        }
    }

    /// What a Prometheus sender puts on the wire.
    fn encode(request: &WriteRequest) -> Vec<u8> {
        snap::raw::Encoder::new()
            .compress_vec(&request.encode_to_vec())
            .unwrap()
    }

    fn rows(head: &Head, metric: &str) -> usize {
        head.metric(metric).map_or(0, |m| m.snapshot().rows())
    }

    #[test]
    fn a_request_round_trips_into_the_head() {
        let head = Head::new(HeadConfig::default());
        let request = WriteRequest {
            timeseries: vec![
                series(
                    &[("__name__", "up"), ("job", "prom"), ("instance", "a:1")],
                    &[(1000, 1.0), (2000, 1.0)],
                ),
                series(
                    &[
                        ("job", "prom"),
                        ("__name__", "http_requests_total"),
                        ("code", "200"),
                    ],
                    &[(1000, 5.0)],
                ),
            ],
            metadata: vec![PbMetadata {
                r#type: MetricType::Counter as i32,
                metric_family_name: "http_requests_total".into(),
                help: "Requests.".into(),
                unit: String::new(),
            }],
        };
        let decoded = decode(&encode(&request)).unwrap();
        assert_eq!(decoded, request);
        let metrics = RemoteWriteMetrics::default();
        let stats = write(&decoded, &mut head.appender(), &metrics).unwrap();
        assert_eq!(
            stats,
            WriteStats {
                series: 2,
                samples: 3,
                out_of_order: 0,
                histograms: 0,
                series_rejected: 0
            }
        );
        assert_eq!(rows(&head, "up"), 2);
        assert_eq!(rows(&head, "http_requests_total"), 1);
        assert_eq!(
            head.metadata().get("http_requests_total").unwrap().kind,
            "counter"
        );
        // A resend (the sender retried) stores nothing twice.
        let stats = write(&decoded, &mut head.appender(), &metrics).unwrap();
        assert_eq!(stats.out_of_order, 3);
        assert_eq!(rows(&head, "up"), 2);
        assert_eq!(metrics.samples.get(), 3);
    }

    #[test]
    fn malformed_requests_are_refused_and_store_nothing() {
        let head = Head::new(HeadConfig::default());
        let metrics = RemoteWriteMetrics::default();
        let good = series(&[("__name__", "good")], &[(1, 1.0)]);
        let cases = [
            (
                series(&[("job", "x")], &[(1, 1.0)]),
                "series 1: no __name__ label",
            ),
            (
                series(&[("__name__", "")], &[(1, 1.0)]),
                "series 1: no __name__ label",
            ),
            (
                series(&[("__name__", "m"), ("bad-name", "x")], &[(1, 1.0)]),
                "series 1: invalid label name \"bad-name\"",
            ),
            (
                series(&[("__name__", "m"), ("a", "1"), ("a", "2")], &[(1, 1.0)]),
                "series 1: label \"a\" appears twice",
            ),
        ];
        for (bad, message) in cases {
            let request = WriteRequest {
                timeseries: vec![good.clone(), bad],
                metadata: vec![],
            };
            let err = write(&request, &mut head.appender(), &metrics).unwrap_err();
            assert_eq!(err.to_string(), message);
        }
        assert_eq!(
            rows(&head, "good"),
            0,
            "the valid series of a refused request is not stored"
        );
        assert_eq!(metrics.rejected.get(), 4);

        for (body, message) in [
            (b"not snappy at all".to_vec(), "invalid snappy body"),
            (
                snap::raw::Encoder::new()
                    .compress_vec(b"\xff\xff\xff")
                    .unwrap(),
                "invalid protobuf WriteRequest",
            ),
        ] {
            let err = decode(&body).unwrap_err();
            assert!(err.to_string().contains(message), "{err}");
        }
    }

    #[test]
    fn oversized_bodies_are_refused_before_decompressing() {
        // A snappy header that claims 1 GB.
        // (Snappy's length header is the same LEB128 varint as protobuf's.)
        let mut body = Vec::new();
        prost::encoding::encode_varint(1 << 30, &mut body);
        body.extend_from_slice(&[0; 16]);
        let err = decode(&body).unwrap_err();
        assert!(
            err.to_string().contains("more than the 67108864 accepted"),
            "{err}"
        );
    }

    #[test]
    fn new_series_over_the_limit_are_skipped_the_rest_stored() {
        let head = Head::new(HeadConfig {
            max_series: 1,
            ..HeadConfig::default()
        });
        let request = WriteRequest {
            timeseries: vec![
                series(&[("__name__", "a")], &[(1, 1.0)]),
                series(&[("__name__", "b")], &[(1, 1.0)]),
            ],
            metadata: vec![],
        };
        let metrics = RemoteWriteMetrics::default();
        let stats = write(&request, &mut head.appender(), &metrics).unwrap();
        assert_eq!(stats.series_rejected, 1);
        assert_eq!(rows(&head, "a"), 1);
        assert_eq!(rows(&head, "b"), 0);
        assert_eq!(metrics.series_rejected.get(), 1);
    }

    #[test]
    fn native_histograms_are_counted_and_dropped() {
        let head = Head::new(HeadConfig::default());
        let mut ts = series(&[("__name__", "h")], &[]);
        ts.histograms = vec![vec![1, 2, 3]];
        let request = WriteRequest {
            timeseries: vec![ts],
            metadata: vec![],
        };
        let stats = write(
            &request,
            &mut head.appender(),
            &RemoteWriteMetrics::default(),
        )
        .unwrap();
        assert_eq!(stats.histograms, 1);
        assert!(head.metric("h").is_none());
    }
}
