//! `arrowhead serve`: wiring one replica together, and taking it down in order.
//!
//! ```text
//! config ─► DataDir (lock) ─► Head ◄── ScrapeManager (ingest)
//!                              ▲   ◄── HTTP POST /api/v1/write (remote write)
//!                              │
//!                              └──► QueryEngine ─► FlightSqlServer (gRPC, server.flight_listen)
//! registry ◄── head, scrape and query counters ─► HTTP /metrics (server.http_listen)
//! ```
//!
//! Reload on SIGHUP or `POST /-/reload`: the file is read and validated again; scrape
//! configuration changes apply at once (unchanged targets keep scraping undisturbed); changes
//! to `storage`, `server` or `query` are reported as needing a restart. A file that does not
//! load leaves the running configuration in place and says why.
//!
//! Shutdown on SIGINT/SIGTERM, in order: stop the scrape loops (no scrape is half-appended),
//! then stop the Flight SQL and HTTP servers (in-flight requests get a short grace period),
//! then release the data directory lock. The WAL is synced between the first two steps.
//!
//! Start-up replays the WAL (`<storage.path>/wal`) into the head before anything listens.
//!
//! Background loops owned here: WAL sync (every `storage.wal_sync_interval`), block cuts
//! (every `storage.block_duration`), compaction and pick-up of imported blocks (as often as
//! cuts), retention over blocks and head (once a minute).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use ingest::scrape::ScrapeManager;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use query::QueryEngine;
use query::flight_sql::{BearerAuth, FlightSqlServer};
use query::system::{TargetRow, TargetsSource};
use storage::block::{Blocks, CompactionConfig, RemoteStore};
use storage::wal::WalConfig;
use storage::{DataDir, Head, HeadConfig, Labels};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;
use tonic::transport::{Identity, ServerTlsConfig};
use tracing::{info, warn};

use crate::ServeArgs;
use crate::config::{Config, Overrides};
use crate::http::{self, HttpState, Reload};
use crate::{memory, sched};

/// How long servers get to finish in-flight requests at shutdown.
const GRACE: Duration = Duration::from_secs(3);

/// What each thread of the query runtime runs first: it allocates from the query allocator
/// (see [`memory`]) and is scheduled as batch work (see [`sched`]).
fn query_thread_start() {
    memory::use_query_allocator();
    sched::run_as_batch();
}

pub(crate) fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    memory::configure_allocator();
    query::engine::on_query_thread_start(query_thread_start);
    init_logging();
    let (mut config, origin) = match &args.config {
        Some(path) => (Config::read(path)?, path.display().to_string()),
        None => (Config::embedded(), "<embedded default>".to_string()),
    };
    let overrides = Overrides {
        data_dir: args.data_dir,
        http_listen: args.http_listen,
        flight_listen: args.flight_listen,
    };
    config.apply(&overrides);
    config.validate(&origin)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("arrowhead")
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(serve(config, args.config, overrides))
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

async fn serve(
    mut config: Config,
    config_path: Option<PathBuf>,
    overrides: Overrides,
) -> anyhow::Result<ExitCode> {
    let origin = config_path
        .as_ref()
        .map_or("<embedded default>".to_string(), |p| {
            p.display().to_string()
        });
    let data_dir = DataDir::open(&config.storage.path)?;
    let remote = config
        .storage
        .object_store
        .as_ref()
        .map(RemoteStore::open)
        .transpose()?;
    let blocks = Arc::new(
        Blocks::open_with(data_dir.path(), remote)
            .with_context(|| format!("cannot open the blocks in {}", data_dir.path().display()))?,
    );
    if let Some(remote) = blocks.remote() {
        info!(
            url = remote.url(),
            "finished blocks move to the object store"
        );
    }
    let wal_dir = data_dir.path().join("wal");
    let (head, _replayed) = Head::open(
        HeadConfig {
            max_series: config.storage.max_series,
            ..HeadConfig::default()
        },
        &wal_dir,
        WalConfig::default(),
        blocks.head_from(),
    )
    .with_context(|| format!("cannot open the WAL in {}", wal_dir.display()))?;
    let head = Arc::new(head);

    let http_listener = bind(&config.server.http_listen, "server.http_listen").await?;
    let flight_listener = bind(&config.server.flight_listen, "server.flight_listen").await?;
    let http_addr = http_listener.local_addr()?;
    let flight_addr = flight_listener.local_addr()?;
    if config.scrapes_self_placeholder() {
        config.set_self_target(&self_address(http_addr));
    }
    let jobs = config
        .scrape_jobs()
        .map_err(|e| anyhow::anyhow!("{origin}: {e}"))?;

    let external_labels = Labels::from_pairs(config.global.external_labels.clone());
    let scrapes = Arc::new(
        ScrapeManager::new(Arc::clone(&head), &external_labels).map_err(anyhow::Error::msg)?,
    );
    let engine = QueryEngine::with_blocks(
        Arc::clone(&head),
        Some(Arc::clone(&blocks)),
        Arc::new(ScrapeTargets(Arc::clone(&scrapes))),
        &config.query,
    )?;

    let mut registry = Registry::default();
    head.metrics().register(&mut registry);
    if let Some(wal) = head.wal() {
        wal.metrics().register(&mut registry);
    }
    blocks.metrics().register(&mut registry);
    scrapes.metrics().register(&mut registry);
    engine.metrics().register(&mut registry);
    let reloader = Arc::new(Reloader {
        path: config_path,
        overrides,
        scrapes: Arc::clone(&scrapes),
        current: Mutex::new(config.clone()),
        metrics: ReloadMetrics::default(),
    });
    reloader.metrics.register(&mut registry);
    let remote_write = ingest::remote_write::RemoteWriteMetrics::default();
    remote_write.register(&mut registry);
    let ready = Arc::new(AtomicBool::new(false));
    let stop_servers = CancellationToken::new();

    let http_state = HttpState {
        registry: Arc::new(registry),
        ready: Arc::clone(&ready),
        reload: Arc::clone(&reloader) as Arc<dyn Reload>,
        head: Arc::clone(&head),
        remote_write,
    };
    let http_stop = stop_servers.clone();
    #[allow(clippy::disallowed_methods)] // owned by an AbortOnDropHandle
    let http_task = AbortOnDropHandle::new(tokio::spawn(async move {
        axum::serve(http_listener, http::router(http_state))
            .with_graceful_shutdown(http_stop.cancelled_owned())
            .await
    }));
    let security = config
        .server
        .flight_security(&config.base_dir)
        .map_err(|e| anyhow::anyhow!("{origin}: {e}"))?;
    let mut flight_server = tonic::transport::Server::builder();
    if let Some((cert, key)) = &security.tls {
        flight_server = flight_server
            .tls_config(ServerTlsConfig::new().identity(Identity::from_pem(cert, key)))
            .map_err(|e| anyhow::anyhow!("{origin}: server.tls: {e}"))?;
    }
    // Flight SQL is served from the query runtime, where its queries run: planning a statement
    // never takes a thread that scrapes, writes the WAL or serves HTTP, and a query's batches
    // reach its connection without crossing to another runtime (each crossing woke a thread
    // of the other pool). The listener is moved to that runtime's I/O driver.
    let query_runtime = engine.runtime().clone();
    let flight_listener = flight_listener.into_std()?;
    let flight_service = FlightSqlServer::new(engine)
        .into_service_with_auth(BearerAuth::new(security.token.as_deref()));
    let flight_stop = stop_servers.clone();
    let flight_task = AbortOnDropHandle::new(query_runtime.spawn(async move {
        let listener = TcpListener::from_std(flight_listener)?;
        flight_server
            .add_service(flight_service)
            .serve_with_incoming_shutdown(
                no_delay(tokio_stream::wrappers::TcpListenerStream::new(listener)),
                flight_stop.cancelled_owned(),
            )
            .await
            .map_err(anyhow::Error::from)
    }));

    let retention = config.storage.retention.get();
    let retention_size = config.storage.retention_size.map(|s| s.bytes());
    let _retention_task = (!retention.is_zero() || retention_size.is_some()).then(|| {
        let head = Arc::clone(&head);
        let blocks = Arc::clone(&blocks);
        #[allow(clippy::disallowed_methods)] // owned by an AbortOnDropHandle
        AbortOnDropHandle::new(tokio::spawn(retention_loop(
            head,
            blocks,
            retention,
            retention_size,
        )))
    });
    let _cut_task = {
        let head = Arc::clone(&head);
        let blocks = Arc::clone(&blocks);
        let every = config.storage.block_duration.get();
        #[allow(clippy::disallowed_methods)] // owned by an AbortOnDropHandle
        AbortOnDropHandle::new(tokio::spawn(cut_loop(head, blocks, every)))
    };
    let _compaction_task = {
        let blocks = Arc::clone(&blocks);
        let compaction = CompactionConfig::new(config.storage.block_duration.get(), retention);
        let every = config.storage.block_duration.get();
        #[allow(clippy::disallowed_methods)] // owned by an AbortOnDropHandle
        AbortOnDropHandle::new(tokio::spawn(compaction_loop(blocks, compaction, every)))
    };

    let wal_syncer = WalSyncer::start(Arc::clone(&head), config.storage.wal_sync_interval.get())?;

    scrapes.run(jobs);
    ready.store(true, Ordering::Release);
    info!(
        http = %http_addr,
        flight = %flight_addr,
        flight_tls = security.tls.is_some(),
        flight_auth = if security.token.is_some() { "bearer token" } else { "none" },
        data_dir = %data_dir.path().display(),
        config = %origin,
        "arrowhead replica ready"
    );

    let signal = wait_for_signals(reloader.as_ref()).await;
    info!(signal, "shutting down: stopping scrapes");
    ready.store(false, Ordering::Release);
    scrapes.stop().await;
    wal_syncer.stop().await;
    info!("stopping servers");
    stop_servers.cancel();
    let servers = async {
        let (h, f) = tokio::join!(http_task, flight_task);
        if let Ok(Err(e)) = h {
            warn!(error = %e, "HTTP server ended with an error");
        }
        if let Ok(Err(e)) = f {
            warn!(error = %e, "Flight SQL server ended with an error");
        }
    };
    if tokio::time::timeout(GRACE, servers).await.is_err() {
        warn!("servers did not finish in {GRACE:?}; closing remaining connections");
    }
    drop(data_dir);
    info!("shutdown complete");
    Ok(ExitCode::SUCCESS)
}

/// Accepted connections with Nagle's algorithm off. gRPC writes a response as several small
/// frames (headers, data, trailers); with Nagle on, the last one waits for the client's
/// delayed ACK (~40 ms on Linux), which made every small query take ~90 ms.
fn no_delay(
    incoming: tokio_stream::wrappers::TcpListenerStream,
) -> impl futures::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    use futures::StreamExt;
    incoming.map(|stream| {
        if let Ok(s) = &stream
            && let Err(e) = s.set_nodelay(true)
        {
            warn!(error = %e, "cannot set TCP_NODELAY on a Flight SQL connection");
        }
        stream
    })
}

/// Group commit: commits write their WAL records at once; this thread makes them durable
/// every `storage.wal_sync_interval` (that long after the last sync ended), and once more
/// when it stops.
///
/// A thread of its own, not a task: as a task, each sync woke the async runtime for its
/// timer, handed the `fdatasync` to the blocking pool (a second thread woken), and woke the
/// runtime again when it returned, three wake-ups a second where this thread has one (by
/// `strace` of a replica scraping `benches/ingest_vs_prometheus.py`'s targets: futex and
/// eventfd calls around each `fdatasync`).
struct WalSyncer {
    stop: std::sync::mpsc::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl WalSyncer {
    fn start(head: Arc<Head>, every: Duration) -> anyhow::Result<Self> {
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("arrowhead-wal-sync".to_string())
            .spawn(move || {
                loop {
                    // A stop, or the sender dropped (serve returned early): one last sync.
                    let last = !matches!(
                        stopped.recv_timeout(every),
                        Err(std::sync::mpsc::RecvTimeoutError::Timeout)
                    );
                    if let Some(Err(e)) = head.wal().map(|w| w.sync()) {
                        warn!(error = %e, "WAL sync failed; will retry");
                    }
                    if last {
                        break;
                    }
                }
            })
            .context("cannot start the WAL sync thread")?;
        Ok(Self { stop, thread })
    }

    /// Syncs once more and ends the thread.
    async fn stop(self) {
        let _ = self.stop.send(());
        let thread = self.thread;
        let _ = tokio::task::spawn_blocking(move || thread.join()).await;
    }
}

/// Once a minute: whole blocks whose newest sample is older than `storage.retention` (when
/// not 0) are deleted, and so are head chunks that old (a head holds them only when no cut ran
/// yet); then the oldest blocks while all blocks exceed `storage.retention_size` (when set).
async fn retention_loop(
    head: Arc<Head>,
    blocks: Arc<Blocks>,
    retention: Duration,
    retention_size: Option<u64>,
) {
    let mut ticker = tokio::time::interval(Duration::from_secs(60));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let cut = if retention.is_zero() {
            i64::MIN
        } else {
            let retention_ms = i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
            ingest::scrape::unix_ms().saturating_sub(retention_ms)
        };
        let dropped = head.truncate(cut);
        if dropped > 0 {
            info!(
                samples = dropped,
                "retention removed old samples from the head"
            );
        }
        let blocks = Arc::clone(&blocks);
        let deleted = tokio::task::spawn_blocking(move || {
            blocks.delete_before(cut)?;
            match retention_size {
                Some(max) => blocks.delete_over_size(max),
                None => Ok(0),
            }
        })
        .await;
        if let Ok(Err(e)) = deleted {
            warn!(error = %e, "retention could not delete a block; will retry");
        }
    }
}

/// How long after a block's range ends it is cut: samples may arrive that late (a slow
/// scrape, a remote-write sender catching up) and still be accepted.
fn cut_delay(block: Duration) -> Duration {
    (block / 2).min(Duration::from_secs(300))
}

/// Cuts the head into a block at every multiple of `storage.block_duration` (plus
/// [`cut_delay`]). Encoding runs on the blocking pool: scrapes never wait for it.
async fn cut_loop(head: Arc<Head>, blocks: Arc<Blocks>, block: Duration) {
    let block_ms = i64::try_from(block.as_millis()).unwrap_or(i64::MAX).max(1);
    let delay_ms = i64::try_from(cut_delay(block).as_millis()).unwrap_or(0);
    let mut ticker = tokio::time::interval(
        (block / 8).clamp(Duration::from_millis(100), Duration::from_secs(30)),
    );
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let now = ingest::scrape::unix_ms();
        let end = (now - delay_ms).div_euclid(block_ms) * block_ms;
        if end <= blocks.head_from() {
            continue;
        }
        let (head, blocks) = (Arc::clone(&head), Arc::clone(&blocks));
        let cut = tokio::task::spawn_blocking(move || {
            let _held = memory::HoldFreedMemory::new();
            blocks.cut(&head, end)
        });
        if let Ok(Err(e)) = cut.await {
            warn!(error = %e, "cannot write a block; the head keeps the data and the cut is retried");
        }
    }
}

/// Takes in imported blocks, merges blocks (see `storage::block::CompactionConfig`) and moves
/// finished ones to the object store when one is configured, on the blocking pool, as often as
/// the cut loop looks for work.
async fn compaction_loop(blocks: Arc<Blocks>, config: CompactionConfig, block: Duration) {
    let mut ticker = tokio::time::interval(
        (block / 8).clamp(Duration::from_millis(100), Duration::from_secs(30)),
    );
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let (blocks, config) = (Arc::clone(&blocks), config.clone());
        let done = tokio::task::spawn_blocking(move || {
            blocks.discover()?;
            // A merge keeps the memory it frees until it ends, as a cut does (see
            // `memory::HoldFreedMemory`, whose drop returns it); a merge that became due
            // after the check returns its memory here. A few merges per pass, so a backlog
            // never holds the blocking pool for long.
            let held = blocks.merge_due(&config).then(memory::HoldFreedMemory::new);
            let merged = blocks.compact(&config, 4)?;
            if held.is_none() && merged > 0 {
                memory::release_free_memory();
            }
            drop(held);
            blocks.move_to_remote(config.final_before(blocks.head_from()), config.delete_delay)
        })
        .await;
        if let Ok(Err(e)) = done {
            warn!(error = %e, "block compaction failed; the blocks stay as they are and it is retried");
        }
    }
}

async fn bind(address: &str, key: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(address)
        .await
        .with_context(|| format!("cannot listen on {address} ({key})"))
}

/// Where the replica can reach its own HTTP listener (a wildcard bind is reached on loopback).
fn self_address(addr: SocketAddr) -> String {
    match addr {
        SocketAddr::V4(a) if a.ip().is_unspecified() => format!("127.0.0.1:{}", a.port()),
        SocketAddr::V6(a) if a.ip().is_unspecified() => format!("[::1]:{}", a.port()),
        other => other.to_string(),
    }
}

/// Waits for SIGTERM or SIGINT, reloading the configuration on every SIGHUP meanwhile.
async fn wait_for_signals(reloader: &Reloader) -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) else {
        warn!("cannot install signal handlers; only SIGINT stops the replica");
        let _ = tokio::signal::ctrl_c().await;
        return "SIGINT";
    };
    loop {
        tokio::select! {
            _ = term.recv() => return "SIGTERM",
            _ = int.recv() => return "SIGINT",
            _ = hup.recv() => {
                // Reload logs its own outcome.
                let _ = reloader.reload();
            }
        }
    }
}

/// Counters for reloads, as Prometheus exports them.
#[derive(Debug, Default)]
struct ReloadMetrics {
    reloads: Counter,
    failures: Counter,
    last_successful: Gauge,
}

impl ReloadMetrics {
    fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("arrowhead_config");
        r.register(
            "reloads",
            "Configuration reloads attempted",
            self.reloads.clone(),
        );
        r.register(
            "reload_failures",
            "Configuration reloads that failed and kept the running configuration",
            self.failures.clone(),
        );
        r.register(
            "last_reload_successful",
            "1 when the last configuration reload succeeded (or none was tried yet)",
            self.last_successful.clone(),
        );
        self.last_successful.set(1);
    }
}

/// Re-reads the configuration file: see the module docs for what applies at once.
#[derive(Debug)]
struct Reloader {
    /// The `--config` file; `None` when running the embedded default, which cannot change.
    path: Option<PathBuf>,
    /// Flags keep overriding the file after a reload.
    overrides: Overrides,
    scrapes: Arc<ScrapeManager>,
    /// The configuration in force. Held across a reload so two reloads do not interleave.
    current: Mutex<Config>,
    metrics: ReloadMetrics,
}

impl Reload for Reloader {
    fn reload(&self) -> Result<String, String> {
        self.metrics.reloads.inc();
        let result = self.try_reload();
        match &result {
            Ok(summary) => {
                self.metrics.last_successful.set(1);
                info!("{summary}");
            }
            Err(e) => {
                self.metrics.failures.inc();
                self.metrics.last_successful.set(0);
                warn!(error = %e, "configuration reload failed; the running configuration stays");
            }
        }
        result
    }
}

impl Reloader {
    fn try_reload(&self) -> Result<String, String> {
        let Some(path) = &self.path else {
            return Err("the replica runs the embedded default configuration; \
                        start it with --config FILE to reload"
                .into());
        };
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        let mut config = Config::read(path).map_err(|e| e.to_string())?;
        config.apply(&self.overrides);
        config
            .validate(&path.display().to_string())
            .map_err(|e| e.to_string())?;
        let jobs = config.scrape_jobs()?;
        let targets: usize = jobs.iter().map(|j| j.targets.len()).sum();
        let job_count = jobs.len();
        self.scrapes.run(jobs);
        let mut restart = Vec::new();
        if config.storage != current.storage {
            restart.push("storage");
        }
        if config.server != current.server {
            restart.push("server");
        }
        if config.query != current.query {
            restart.push("query");
        }
        *current = config;
        let mut summary = format!(
            "configuration reloaded from {}: {job_count} scrape jobs, {targets} targets",
            path.display()
        );
        if !restart.is_empty() {
            summary.push_str(&format!(
                "; changes to {} take effect after a restart",
                restart.join(", ")
            ));
        }
        Ok(summary)
    }
}

/// `system.targets` read from the scrape manager: the seam between ingest and query.
#[derive(Debug)]
struct ScrapeTargets(Arc<ScrapeManager>);

impl TargetsSource for ScrapeTargets {
    fn targets(&self) -> Vec<TargetRow> {
        self.0
            .targets()
            .into_iter()
            .map(|t| TargetRow {
                job: t.job,
                instance: t.instance,
                url: t.url,
                health: t.health.as_str().to_string(),
                last_scrape: t.last_scrape,
                last_duration_seconds: t.last_duration_seconds,
                last_error: t.last_error,
                samples: t.samples,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use storage::Appender;

    fn open_head(dir: &std::path::Path) -> Arc<Head> {
        let (head, _) =
            Head::open(HeadConfig::default(), dir, WalConfig::default(), i64::MIN).unwrap();
        Arc::new(head)
    }

    fn commit(head: &Head, t: i64) {
        let mut app = head.appender();
        let series = app.series("m", &[("a", "1")]).unwrap();
        app.append(series, t, 1.0);
        app.commit().unwrap();
    }

    fn fsyncs(head: &Head) -> u64 {
        head.wal().unwrap().metrics().fsyncs.get()
    }

    #[tokio::test]
    async fn the_wal_is_synced_every_interval_and_once_more_at_stop() {
        let dir = tempfile::tempdir().unwrap();
        let head = open_head(dir.path());
        let syncer = WalSyncer::start(Arc::clone(&head), Duration::from_millis(20)).unwrap();
        for round in 1..=2 {
            commit(&head, round * 1000);
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while fsyncs(&head) < round as u64 {
                assert!(
                    std::time::Instant::now() < deadline,
                    "no sync in round {round}"
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        syncer.stop().await;

        // An interval that never passes: only the stop syncs what was written.
        let syncer = WalSyncer::start(Arc::clone(&head), Duration::from_secs(3600)).unwrap();
        commit(&head, 3000);
        let before = fsyncs(&head);
        syncer.stop().await;
        assert_eq!(fsyncs(&head), before + 1);
    }
}
