//! The scrape manager: one loop per target, each fetching `/metrics` on its schedule and
//! appending the result to the head.
//!
//! ```text
//! ScrapeManager::run(jobs) ─► targets: static + file_sd (watched), relabelled
//!                          ─► per target: ScrapeLoop (own task, own ScrapeCache)
//!     every interval, at a fixed offset:  GET url ──► append_body ──► commit
//!                                         │ failure: rollback, up = 0, error kept
//!                                         └─► synthetic series: up, scrape_duration_seconds, ...
//! ScrapeManager::targets() ─► TargetStatus rows for `system.targets`
//! ```
//!
//! Offsets: each target scrapes at `hash(target, seed) mod interval` within every interval,
//! as Prometheus does, so many targets spread over the interval instead of firing together,
//! and a target keeps its phase across restarts. The seed comes from the external labels, so
//! the two replicas of a pair scrape at different phases.
//!
//! HTTP: a plain `http://` target is fetched over the loop's own kept-alive connection
//! (`http1`, the cheaper path; see there why); `https://` targets, and a target once it has
//! answered with a redirect, go through reqwest, which brings TLS and follows redirects.
//!
//! Shutdown: cancelling the manager's token stops every loop at its next await point; a
//! scrape in flight is dropped before its commit, so no partial scrape is ever visible.

use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use parking_lot::Mutex;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;
use storage::{Appender, Head, Labels, SeriesRef};
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;
use tracing::{debug, info, warn};

use crate::append::{AppendOptions, ScrapeCache, append_body};
use crate::config::{ScrapeJob, TargetSpec};
use crate::discovery::FileTargets;
use crate::exposition::Format;

mod http1;
mod stream;
use http1::{Fetched, Http1Target};

/// The `Accept` header sent with every scrape, as Prometheus 2.x sends it: OpenMetrics
/// preferred, the Prometheus text format next. The response's `Content-Type` picks the parser.
pub const ACCEPT_HEADER: &str = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

/// The `User-Agent` of scrapes.
const USER_AGENT: &str = concat!("Arrowhead/", env!("CARGO_PKG_VERSION"));

/// The header telling a target how long the scrape may take, as Prometheus sends it
/// (`X-Prometheus-Scrape-Timeout-Seconds`; HTTP/1 header names are case-insensitive).
const TIMEOUT_HEADER: HeaderName = HeaderName::from_static("x-prometheus-scrape-timeout-seconds");

/// Health of a target, as `system.targets.health` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// The last scrape succeeded.
    Up,
    /// The last scrape failed.
    Down,
    /// Not scraped yet.
    Unknown,
}

impl Health {
    /// `up`, `down` or `unknown`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Up => "up",
            Self::Down => "down",
            Self::Unknown => "unknown",
        }
    }
}

/// The state of one target after its last scrape.
#[derive(Debug, Clone, PartialEq)]
pub struct TargetStatus {
    /// The `job` label.
    pub job: String,
    /// The `instance` label.
    pub instance: String,
    /// The scrape URL.
    pub url: String,
    /// All target labels.
    pub labels: Labels,
    /// Result of the last scrape.
    pub health: Health,
    /// Start of the last scrape, ms since the epoch.
    pub last_scrape: Option<i64>,
    /// How long the last scrape took, seconds.
    pub last_duration_seconds: Option<f64>,
    /// Why the last scrape failed.
    pub last_error: Option<String>,
    /// Samples in the last successful scrape's body.
    pub samples: u64,
}

/// Counters for `/metrics`.
#[derive(Debug, Clone, Default)]
pub struct ScrapeMetrics {
    /// Scrapes attempted.
    pub scrapes: Counter,
    /// Scrapes that failed (fetch or parse).
    pub scrape_failures: Counter,
    /// Samples read from successful scrapes.
    pub samples_scraped: Counter,
}

impl ScrapeMetrics {
    /// Registers the counters under `arrowhead_scrape_*`.
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("arrowhead_scrape");
        r.register("attempts", "Scrapes attempted", self.scrapes.clone());
        r.register(
            "failures",
            "Scrapes that failed to fetch or parse",
            self.scrape_failures.clone(),
        );
        r.register(
            "samples_scraped",
            "Samples read from successful scrapes",
            self.samples_scraped.clone(),
        );
    }
}

/// Runs every target's scrape loop and reports their status.
#[derive(Debug)]
pub struct ScrapeManager {
    head: Arc<Head>,
    client: reqwest::Client,
    /// Offsets target phases; see the module docs.
    seed: u64,
    metrics: ScrapeMetrics,
    /// The jobs in force and what their target files say now. Locked while targets are
    /// recomputed, so a reload and a file change never interleave.
    jobs: Mutex<Vec<JobState>>,
    /// The running loops, in configuration order. Dropping a handle aborts its loop.
    loops: Mutex<Vec<LoopHandle>>,
    /// One watcher task per job with `file_sd_configs`; replaced on every [`Self::run`].
    watchers: Mutex<Vec<AbortOnDropHandle<()>>>,
    /// Cancelled by [`Self::stop`]; each loop watches a child of it.
    cancel: CancellationToken,
}

#[derive(Debug)]
struct JobState {
    job: Arc<ScrapeJob>,
    files: FileTargets,
    /// The shared client, or one with this job's TLS settings.
    client: reqwest::Client,
}

#[derive(Debug)]
struct LoopHandle {
    target: Arc<Target>,
    cancel: CancellationToken,
    task: AbortOnDropHandle<()>,
}

#[derive(Debug)]
struct Target {
    spec: TargetSpec,
    job: Arc<ScrapeJob>,
    status: Mutex<TargetStatus>,
}

impl ScrapeManager {
    /// A manager appending to `head`. `seed_labels` (the external labels) set the phase seed.
    pub fn new(head: Arc<Head>, seed_labels: &Labels) -> Result<Self, String> {
        // Scrape TLS uses rustls with the ring provider; installing it twice is harmless.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = build_client(None)?;
        let mut h = std::hash::DefaultHasher::new();
        seed_labels.hash(&mut h);
        Ok(Self {
            head,
            client,
            seed: h.finish(),
            metrics: ScrapeMetrics::default(),
            jobs: Mutex::new(Vec::new()),
            loops: Mutex::new(Vec::new()),
            watchers: Mutex::new(Vec::new()),
            cancel: CancellationToken::new(),
        })
    }

    /// The scrape counters.
    pub fn metrics(&self) -> &ScrapeMetrics {
        &self.metrics
    }

    /// Runs a loop per target of `jobs` (static targets, and file targets as their files say
    /// now and later). On a second call (a reload) loops whose target and job settings are
    /// unchanged keep running, with their scrape cache, phase and status; loops for removed or
    /// changed targets stop at once; new ones start. Must be called inside a Tokio runtime.
    pub fn run(self: &Arc<Self>, jobs: Vec<ScrapeJob>) {
        let mut watchers = Vec::new();
        {
            let mut states = self.jobs.lock();
            *states = jobs
                .into_iter()
                .enumerate()
                .map(|(index, job)| {
                    let client = match &job.tls {
                        None => self.client.clone(),
                        Some(tls) => build_client(Some(tls)).unwrap_or_else(|e| {
                            // The files were checked at load; a failure here is exceptional.
                            warn!(job = %job.name, error = %e, "cannot apply tls_config; using defaults");
                            self.client.clone()
                        }),
                    };
                    let mut files = FileTargets::new(job.file_patterns.clone());
                    if !job.file_patterns.is_empty() {
                        files.refresh();
                        #[allow(clippy::disallowed_methods)] // owned by an AbortOnDropHandle
                        watchers.push(AbortOnDropHandle::new(tokio::spawn(watch_files(
                            Arc::downgrade(self),
                            index,
                            job.file_patterns.clone(),
                            job.file_refresh,
                        ))));
                    }
                    JobState {
                        job: Arc::new(job),
                        files,
                        client,
                    }
                })
                .collect();
            self.reconcile(&states);
        }
        // Dropping the old watchers stops them.
        *self.watchers.lock() = watchers;
    }

    /// Re-reads job `index`'s target files; recomputes targets when they changed.
    fn refresh_files(&self, index: usize, patterns: &[std::path::PathBuf]) {
        let mut states = self.jobs.lock();
        let Some(state) = states.get_mut(index) else {
            return;
        };
        // A watcher from before a reload may outlive it by a moment: only act on our job.
        if state.files.patterns() != patterns {
            return;
        }
        if state.files.refresh() {
            debug!(job = %state.job.name, "target files changed");
            self.reconcile(&states);
        }
    }

    /// Makes the running loops match the targets of `states`.
    fn reconcile(&self, states: &[JobState]) {
        let mut desired: Vec<(&JobState, TargetSpec)> = Vec::new();
        for state in states {
            let job = &state.job;
            desired.extend(job.targets.iter().map(|t| (state, t.clone())));
            for (address, labels) in state.files.targets() {
                let labels = labels.iter().map(|(n, v)| (n.as_str(), v.as_str()));
                match job.target(&address, labels) {
                    Ok(Some(spec)) => desired.push((state, spec)),
                    Ok(None) => {}
                    Err(e) => {
                        warn!(job = %job.name, target = %address, error = %e, "target skipped")
                    }
                }
            }
        }
        let mut loops = self.loops.lock();
        let mut old: HashMap<(String, TargetSpec), LoopHandle> = std::mem::take(&mut *loops)
            .into_iter()
            .map(|l| ((l.target.job.name.clone(), l.target.spec.clone()), l))
            .collect();
        let mut seen = HashSet::new();
        let (mut kept, mut started, mut stopped) = (0, 0, 0);
        for (state, spec) in desired {
            let job = &state.job;
            let key = (job.name.clone(), spec);
            // The same target listed twice (say, statically and in a file) is scraped once.
            if !seen.insert(key.clone()) {
                continue;
            }
            match old.remove(&key) {
                Some(handle) if same_settings(&handle.target.job, job) => {
                    kept += 1;
                    loops.push(handle);
                }
                changed => {
                    if let Some(handle) = changed {
                        handle.cancel.cancel();
                        stopped += 1;
                    }
                    started += 1;
                    loops.push(self.start_loop(Arc::clone(job), key.1, state.client.clone()));
                }
            }
        }
        stopped += old.len();
        for l in old.into_values() {
            l.cancel.cancel();
        }
        info!(started, kept, stopped, "scrape loops updated");
    }

    fn start_loop(
        &self,
        job: Arc<ScrapeJob>,
        spec: TargetSpec,
        client: reqwest::Client,
    ) -> LoopHandle {
        let target = Arc::new(Target {
            status: Mutex::new(TargetStatus {
                job: spec.labels.get("job").unwrap_or_default().to_string(),
                instance: spec.labels.get("instance").unwrap_or_default().to_string(),
                url: spec.url.to_string(),
                labels: spec.labels.clone(),
                health: Health::Unknown,
                last_scrape: None,
                last_duration_seconds: None,
                last_error: None,
                samples: 0,
            }),
            spec,
            job,
        });
        let cancel = self.cancel.child_token();
        // Formatted once, as the URL is parsed once (`TargetSpec::url`): parsing the URL (with
        // its IDNA step) and formatting this header for every request were ~1 % of a
        // replica's steady ingest CPU by perf (50 targets × 1,969 series at 15 s).
        let timeout_header = HeaderValue::from_str(&target.spec.timeout.as_secs_f64().to_string())
            .expect("a number is a valid header value");
        let scrape_loop = ScrapeLoop {
            http1: Http1Target::new(&target.spec.url),
            target: Arc::clone(&target),
            head: Arc::clone(&self.head),
            client,
            timeout_header,
            metrics: self.metrics.clone(),
            cache: ScrapeCache::default(),
            report_series: [None; REPORT.len()],
        };
        let offset = target.offset(self.seed);
        #[allow(clippy::disallowed_methods)] // owned by an AbortOnDropHandle
        let task = AbortOnDropHandle::new(tokio::spawn(scrape_loop.run(offset, cancel.clone())));
        LoopHandle {
            target,
            cancel,
            task,
        }
    }

    /// The status of every target, in configuration order.
    pub fn targets(&self) -> Vec<TargetStatus> {
        self.loops
            .lock()
            .iter()
            .map(|l| l.target.status.lock().clone())
            .collect()
    }

    /// Stops every loop and waits for them to finish (a scrape in flight is abandoned).
    pub async fn stop(&self) {
        self.watchers.lock().clear();
        self.cancel.cancel();
        let loops = std::mem::take(&mut *self.loops.lock());
        for l in loops {
            let _ = l.task.await;
        }
    }
}

/// The scrape HTTP client: gzip, no proxy, and the job's TLS settings if it has any.
fn build_client(tls: Option<&crate::auth::TlsSettings>) -> Result<reqwest::Client, String> {
    let mut builder = reqwest::Client::builder()
        .user_agent(USER_AGENT)
        .gzip(true)
        .no_proxy();
    if let Some(tls) = tls {
        builder = tls.apply(builder)?;
    }
    builder
        .build()
        .map_err(|e| format!("cannot build the scrape HTTP client: {e}"))
}

/// Watches target files: re-reads them on a change event (debounced) or every `refresh`.
/// Holds the manager weakly: the manager owns this task, not the other way round.
async fn watch_files(
    manager: std::sync::Weak<ScrapeManager>,
    index: usize,
    patterns: Vec<std::path::PathBuf>,
    refresh: Duration,
) {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(1);
    let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if event.is_ok() {
            let _ = tx.try_send(());
        }
    });
    let _watcher = match watcher {
        Ok(mut w) => {
            use notify::Watcher;
            let dirs: std::collections::BTreeSet<&std::path::Path> =
                patterns.iter().filter_map(|p| p.parent()).collect();
            for dir in dirs {
                if let Err(e) = w.watch(dir, notify::RecursiveMode::NonRecursive) {
                    warn!(dir = %dir.display(), error = %e, "cannot watch target directory; polling every refresh_interval");
                }
            }
            Some(w)
        }
        Err(e) => {
            warn!(error = %e, "cannot watch target files; polling every refresh_interval");
            None
        }
    };
    let mut ticker = tokio::time::interval(refresh);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    loop {
        tokio::select! {
            Some(()) = rx.recv() => {
                // Editors write in several steps: let them finish.
                tokio::time::sleep(Duration::from_millis(100)).await;
                while rx.try_recv().is_ok() {}
            }
            _ = ticker.tick() => {}
        }
        let Some(manager) = manager.upgrade() else {
            return;
        };
        manager.refresh_files(index, &patterns);
    }
}

/// True when two jobs treat a scraped body the same way (the target itself, with its URL,
/// labels, interval and timeout, is compared separately).
fn same_settings(a: &ScrapeJob, b: &ScrapeJob) -> bool {
    a.name == b.name
        && a.honor_labels == b.honor_labels
        && a.honor_timestamps == b.honor_timestamps
        && a.metric_relabel == b.metric_relabel
        && a.limits == b.limits
        && a.credentials == b.credentials
        && a.tls == b.tls
}

impl Target {
    /// This target's phase within its interval.
    fn offset(&self, seed: u64) -> Duration {
        let mut h = std::hash::DefaultHasher::new();
        self.spec.url.hash(&mut h);
        self.spec.labels.hash(&mut h);
        let interval_ms = self.spec.interval.as_millis().max(1) as u64;
        Duration::from_millis((h.finish() ^ seed) % interval_ms)
    }
}

/// One target's loop and the state it owns alone.
struct ScrapeLoop {
    target: Arc<Target>,
    head: Arc<Head>,
    /// The client for plain `http://` targets ([`http1`]); `None` for the others, and once
    /// the target has answered with a redirect.
    http1: Option<Http1Target>,
    /// The general client: TLS, redirects.
    client: reqwest::Client,
    /// `X-Prometheus-Scrape-Timeout-Seconds`.
    timeout_header: HeaderValue,
    metrics: ScrapeMetrics,
    cache: ScrapeCache,
    /// The head series of the report ([`REPORT`]), resolved at the first scrape that could
    /// create them and kept: head series live as long as the head, and the target's labels
    /// are fixed for the life of the loop. One left `None` (refused by `storage.max_series`)
    /// is tried again next scrape.
    report_series: [Option<SeriesRef>; REPORT.len()],
}

/// The series every scrape writes about itself, in this order (Prometheus's names).
const REPORT: [&str; 5] = [
    "up",
    "scrape_duration_seconds",
    "scrape_samples_scraped",
    "scrape_samples_post_metric_relabeling",
    "scrape_series_added",
];

impl ScrapeLoop {
    async fn run(mut self, offset: Duration, cancel: CancellationToken) {
        let interval = self.target.spec.interval;
        let interval_ms = interval.as_millis().max(1) as u64;
        let now_ms = unix_ms() as u64;
        let wait = (offset.as_millis() as u64 + interval_ms - now_ms % interval_ms) % interval_ms;
        let start = tokio::time::Instant::now() + Duration::from_millis(wait);
        let mut ticker = tokio::time::interval_at(start, interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = ticker.tick() => {}
            }
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = self.scrape_once() => {}
            }
        }
    }

    async fn scrape_once(&mut self) {
        let start_ms = unix_ms();
        let started = Instant::now();
        self.metrics.scrapes.inc();
        let fetched = self.fetch().await;
        let job = Arc::clone(&self.target.job);
        let labels = &self.target.spec.labels;
        // Room for the body as last time and the report: an appender that outgrows its
        // buffers doubles them.
        let mut app = self
            .head
            .appender_with_capacity(self.cache.last_samples() + REPORT.len());
        let result = fetched.and_then(|(body, format)| {
            let opts = AppendOptions {
                target_labels: labels,
                honor_labels: job.honor_labels,
                honor_timestamps: job.honor_timestamps,
                metric_relabel: &job.metric_relabel,
                limits: job.limits,
                format,
                default_timestamp: start_ms,
            };
            append_body(&body, &mut self.cache, &mut app, &opts).map_err(|e| e.to_string())
        });
        let duration = started.elapsed().as_secs_f64();
        let (up, stats, error) = match result {
            Ok(stats) => (1.0, stats, None),
            Err(e) => {
                app.rollback();
                self.metrics.scrape_failures.inc();
                debug!(url = %self.target.spec.url, error = %e, "scrape failed");
                (0.0, Default::default(), Some(e))
            }
        };
        self.metrics.samples_scraped.inc_by(stats.scraped);
        let values = [
            up,
            duration,
            stats.scraped as f64,
            stats.scraped as f64,
            stats.series_added as f64,
        ];
        if self.report_series.contains(&None) {
            let pairs: Vec<(&str, &str)> = labels.iter().collect();
            for (slot, name) in self.report_series.iter_mut().zip(REPORT) {
                if slot.is_none() {
                    match app.series(name, &pairs) {
                        Ok(r) => *slot = Some(r),
                        Err(e) => debug!(error = %e, "cannot record {name}"),
                    }
                }
            }
        }
        // Collected first: a sized list goes in front of the body with one move of it.
        let report: Vec<(SeriesRef, i64, f64)> = self
            .report_series
            .iter()
            .zip(values)
            .filter_map(|(r, v)| r.map(|r| (r, start_ms, v)))
            .collect();
        // One commit (one WAL record) for the report and the body, the report first: should
        // the target expose a series named like one of these (say `up` without a timestamp),
        // the target's sample is the one dropped as a duplicate, never the replica's own
        // verdict.
        app.prepend(report);
        let mut error = error;
        if let Err(e) = app.commit() {
            // The WAL could not be written (disk full, I/O error): the scrape is lost, and
            // the target shows why.
            warn!(url = %self.target.spec.url, error = %e, "scraped samples not stored");
            error.get_or_insert_with(|| e.to_string());
        }
        let mut status = self.target.status.lock();
        status.last_scrape = Some(start_ms);
        status.last_duration_seconds = Some(duration);
        if error.is_none() {
            status.samples = stats.scraped;
        }
        status.health = if error.is_none() {
            Health::Up
        } else {
            Health::Down
        };
        status.last_error = error;
    }

    async fn fetch(&mut self) -> Result<(bytes::Bytes, Format), String> {
        let timeout = self.target.spec.timeout;
        let deadline = tokio::time::Instant::now() + timeout;
        if let Some(http1) = self.http1.as_mut() {
            let mut headers = HeaderMap::with_capacity(6);
            headers.insert(header::USER_AGENT, HeaderValue::from_static(USER_AGENT));
            headers.insert(header::ACCEPT, HeaderValue::from_static(ACCEPT_HEADER));
            headers.insert(header::ACCEPT_ENCODING, HeaderValue::from_static("gzip"));
            headers.insert(TIMEOUT_HEADER, self.timeout_header.clone());
            if let Some(auth) = self.target.job.credentials.header()? {
                headers.insert(header::AUTHORIZATION, auth);
            }
            let limit = self.target.job.limits.body_size;
            match tokio::time::timeout_at(deadline, http1.fetch(headers, limit)).await {
                Err(_) => {
                    http1.disconnect();
                    return Err(timed_out(timeout));
                }
                Ok(Ok(Fetched::Body(body, format))) => return Ok((body, format)),
                Ok(Err(e)) => return Err(e),
                Ok(Ok(Fetched::Redirect)) => {
                    debug!(url = %self.target.spec.url, "target redirects; following with the general client from now on");
                    self.http1 = None;
                }
            }
        }
        // What is left of the scrape's time, after a redirect answered on the path above.
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        self.fetch_general(timeout, remaining).await
    }

    /// [`Self::fetch`] through reqwest: TLS targets, and redirects followed. reqwest's own
    /// timeout, `remaining`, bounds the whole request, body included; errors name `timeout`.
    async fn fetch_general(
        &self,
        timeout: Duration,
        remaining: Duration,
    ) -> Result<(bytes::Bytes, Format), String> {
        let request = self.client.get(self.target.spec.url.clone());
        let mut response = self
            .target
            .job
            .credentials
            .apply(request)?
            .header(reqwest::header::ACCEPT, ACCEPT_HEADER)
            .header(TIMEOUT_HEADER, self.timeout_header.clone())
            .timeout(remaining)
            .send()
            .await
            .map_err(|e| describe_reqwest_error(&e, timeout))?;
        let status = response.status();
        if !status.is_success() {
            return Err(format!("server returned HTTP status {status}"));
        }
        let format = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map_or(Format::Prometheus, Format::from_content_type);
        let limit = self.target.job.limits.body_size;
        if limit == 0 {
            return response
                .bytes()
                .await
                .map(|b| (b, format))
                .map_err(|e| describe_reqwest_error(&e, timeout));
        }
        // Read chunk by chunk (decompressed) and give up as soon as the limit is passed, so a
        // huge or gzip-bombed body never sits in memory whole.
        let mut body = bytes::BytesMut::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| describe_reqwest_error(&e, timeout))?
        {
            if (body.len() + chunk.len()) as u64 > limit {
                return Err(http1::limit_exceeded(limit));
            }
            body.extend_from_slice(&chunk);
        }
        Ok((body.freeze(), format))
    }
}

/// A reqwest error with its causes, which hold the useful part ("connection refused").
fn describe_reqwest_error(e: &reqwest::Error, timeout: Duration) -> String {
    if e.is_timeout() {
        return timed_out(timeout);
    }
    with_causes(e.to_string(), e)
}

/// The error of a scrape that took longer than its `timeout`.
fn timed_out(timeout: Duration) -> String {
    format!(
        "scrape timed out after {}",
        storage::units::Duration(timeout)
    )
}

/// `msg` followed by the chain of `e`'s sources, each after ": ".
fn with_causes(mut msg: String, e: &dyn std::error::Error) -> String {
    let mut source = e.source();
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    msg
}

/// Now, in ms since the epoch.
pub fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests;
