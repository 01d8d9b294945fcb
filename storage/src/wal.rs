//! The write-ahead log: every commit to the head is written here before it becomes visible.
//!
//! ```text
//!  HeadAppender::commit ─► Wal::lock() ─► WalWriter::write(record) ─► segment file (page cache)
//!                                                                        │
//!  sync loop, every storage.wal_sync_interval ─► Wal::sync() ─ fdatasync ┘
//!  block flush up to T ─► Wal::rotate() … Wal::remove_segments_before(T)
//!  start-up ─► replay(dir) ─► Head (before /-/ready turns 200)
//! ```
//!
//! The byte format is specified in `wal.md` beside this file: segments named by an 8-digit
//! sequence number, an 8-byte versioned header, then records framed by length and CRC32C.
//!
//! * **Self-contained segments.** A record carries the definition (metric name and labels) of
//!   every series its samples use that the *current segment* has not defined yet. Any segment
//!   can thus be replayed — or deleted — without the others: a corrupt segment costs its own
//!   tail only, and deleting old segments needs no checkpoint rewrite. The price is one
//!   definition per live series per segment (about 100 bytes each), a few percent of a
//!   128 MiB segment.
//! * **Group commit.** A commit is one `write(2)` of one record while the WAL lock is held;
//!   the data is then in the page cache and survives the process being killed. `fdatasync`
//!   runs from [`Wal::sync`] every `storage.wal_sync_interval`, which bounds what an OS crash
//!   or power loss can take.
//! * **Reserved space.** The writer zero-fills the segment ahead of itself, a
//!   [`WalConfig::preallocate`] at a time, and writes records over the zeros at their
//!   offset. The periodic `fdatasync` then writes data blocks only: the file's size and block
//!   map change once per reserve, not on every sync, which saves the metadata write a size
//!   change forces (on ext4 the inode, or a journal commit) nearly every second. Zeros can
//!   never be a record (a payload is never empty), so replay reads a segment up to the first
//!   all-zero frame and drops an all-zero tail quietly. A closed segment is cut back to its
//!   records.
//! * **Faults.** A failed write is cut back off the segment and the next commit starts a new
//!   segment, so a half-written record never sits in front of good ones. Replay truncates a
//!   torn or corrupt tail at the last good record, warns, counts it and goes on with the next
//!   segment; it never panics on what it reads.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::{Mutex, MutexGuard};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tracing::warn;

use crate::head::SeriesRef;

/// First bytes of every segment: the format name and its version.
pub const MAGIC: [u8; 5] = *b"AHWAL";
/// The format version written after [`MAGIC`].
pub const VERSION: u8 = 1;
/// Header length: magic, version, two reserved zero bytes.
pub const HEADER_LEN: usize = 8;
/// Bytes before each record's payload: length and CRC32C, both `u32` little-endian.
pub const FRAME_LEN: usize = 8;
/// Largest payload replay accepts; a longer length field is corruption.
pub const MAX_RECORD: usize = 512 << 20;

/// Record type of a commit: series definitions, then samples.
const RECORD_COMMIT: u8 = 1;

/// WAL settings.
#[derive(Debug, Clone)]
pub struct WalConfig {
    /// A new segment is started once the current one reaches this size.
    pub segment_size: u64,
    /// Bytes zero-filled ahead of the writer at a time (0: none). See the module docs.
    pub preallocate: u64,
}

impl Default for WalConfig {
    fn default() -> Self {
        Self {
            segment_size: 128 << 20,
            // At the ingest benchmark's rate (~80 KB/s) one reserve lasts about 13 s, so the
            // file's size changes on one sync in 13; small enough to leave a nearly full
            // disk's last MiBs to the records themselves.
            preallocate: 1 << 20,
        }
    }
}

impl WalConfig {
    /// Tiny segments and reserves, so tests rotate and extend.
    pub fn test_config() -> Self {
        Self {
            segment_size: 4096,
            preallocate: 1024,
        }
    }

    /// The file length to reserve so that `end` bytes fit: `end` rounded up to a whole number
    /// of reserves.
    fn reserve_for(&self, end: u64) -> u64 {
        if self.preallocate == 0 {
            end
        } else {
            end.div_ceil(self.preallocate)
                .saturating_mul(self.preallocate)
        }
    }
}

/// The WAL's counters, exported on `/metrics` as `arrowhead_wal_*`.
#[derive(Debug, Clone, Default)]
pub struct WalMetrics {
    /// Records written.
    pub records: Counter,
    /// Bytes written, framing included.
    pub bytes: Counter,
    /// Completed `fdatasync` calls.
    pub fsyncs: Counter,
    /// Writes or syncs that failed (disk full, I/O error).
    pub failures: Counter,
    /// Torn or corrupt segment tails found by replay.
    pub corruptions: Counter,
    /// Segment files on disk.
    pub segments: Gauge,
    /// Samples read back at start-up.
    pub replayed_samples: Counter,
}

impl WalMetrics {
    /// Registers the counters.
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("arrowhead_wal");
        r.register(
            "records",
            "Records written to the WAL",
            self.records.clone(),
        );
        r.register(
            "bytes",
            "Bytes written to the WAL, framing included",
            self.bytes.clone(),
        );
        r.register("fsyncs", "WAL fdatasync calls", self.fsyncs.clone());
        r.register(
            "failures",
            "WAL writes or syncs that failed",
            self.failures.clone(),
        );
        r.register(
            "corruptions",
            "Torn or corrupt WAL segment tails truncated at start-up",
            self.corruptions.clone(),
        );
        r.register("segments", "WAL segment files", self.segments.clone());
        r.register(
            "replayed_samples",
            "Samples replayed from the WAL at start-up",
            self.replayed_samples.clone(),
        );
    }
}

/// An open WAL, appended to by commits. Shared by the head (writes) and the sync loop.
#[derive(Debug)]
pub struct Wal {
    dir: PathBuf,
    config: WalConfig,
    /// The current segment; held for a whole commit, so record order is commit order.
    state: Mutex<State>,
    metrics: WalMetrics,
}

#[derive(Debug)]
struct State {
    /// Sequence number of the segment being written.
    seq: u32,
    /// Shared with [`Wal::sync`], which syncs outside the lock.
    file: Arc<File>,
    /// Bytes of records in the current segment (with its header): where the next one goes.
    size: u64,
    /// Length of the current segment file: `size` plus the zeros reserved after it.
    allocated: u64,
    /// Newest sample timestamp in the current segment.
    max_ts: i64,
    /// Set after a failed write: the next commit starts a new segment.
    rotate: bool,
    /// True when something was written since the last sync.
    dirty: bool,
    /// Older segments still on disk → their newest sample timestamp.
    closed: BTreeMap<u32, i64>,
    /// The frame being written, kept between commits for its allocation.
    frame: Vec<u8>,
}

/// A frame buffer grown past this by a huge commit is not kept for the next one.
const FRAME_KEEP: usize = 8 << 20;

/// Zeros for reserving segment space.
static ZEROS: [u8; 64 << 10] = [0; 64 << 10];

/// What [`replay`] found.
#[derive(Debug, Default)]
pub struct ReplayOutcome {
    /// Every segment read → its newest sample timestamp (`i64::MIN` when it had none).
    pub segments: BTreeMap<u32, i64>,
    /// Records read.
    pub records: u64,
    /// Samples read.
    pub samples: u64,
    /// Segments whose tail was torn or corrupt (and was truncated).
    pub corruptions: u64,
    /// Highest sequence number found, including segments moved aside or removed.
    pub highest_segment: u32,
}

impl ReplayOutcome {
    /// The sequence number for the next segment: numbers are never reused.
    pub fn next_segment(&self) -> u32 {
        self.highest_segment.saturating_add(1)
    }
}

/// One series definition in a record: the id the record's samples use, and its labels.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesDef {
    /// The series' id within its segment (the writer's head ref).
    pub id: SeriesRef,
    /// Metric name.
    pub metric: String,
    /// Label pairs, without the metric name.
    pub labels: Vec<(String, String)>,
}

/// A decoded record.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Record {
    /// Series first used in this segment by this record.
    pub series: Vec<SeriesDef>,
    /// Samples in commit order.
    pub samples: Vec<(SeriesRef, i64, f64)>,
}

/// Path of segment `seq` in `dir`.
pub fn segment_path(dir: &Path, seq: u32) -> PathBuf {
    dir.join(format!("{seq:08}"))
}

impl Wal {
    /// Starts writing segment `first_seq` in `dir`. `closed` lists the segments already there
    /// (from [`replay`]) with their newest timestamps, so they can be removed once persisted;
    /// `metrics` are the counters replay already used.
    pub fn create(
        dir: impl Into<PathBuf>,
        first_seq: u32,
        closed: BTreeMap<u32, i64>,
        config: WalConfig,
        metrics: WalMetrics,
    ) -> io::Result<Self> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir)?;
        let (file, allocated) = create_segment(&dir, first_seq, &config)?;
        metrics.segments.set(closed.len() as i64 + 1);
        Ok(Self {
            state: Mutex::new(State {
                seq: first_seq,
                file: Arc::new(file),
                size: HEADER_LEN as u64,
                allocated,
                max_ts: i64::MIN,
                rotate: false,
                dirty: false,
                closed,
                frame: Vec::new(),
            }),
            dir,
            config,
            metrics,
        })
    }

    /// The WAL's counters.
    pub fn metrics(&self) -> &WalMetrics {
        &self.metrics
    }

    /// The directory holding the segments.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Takes the WAL for one commit, starting a new segment first when the current one is full
    /// or broken. The writer's [`WalWriter::segment`] stays the same until it is dropped.
    pub fn lock(&self) -> io::Result<WalWriter<'_>> {
        let mut state = self.state.lock();
        if state.rotate || state.size >= self.config.segment_size {
            self.rotate_locked(&mut state)?;
        }
        Ok(WalWriter { wal: self, state })
    }

    /// Closes the current segment and starts the next one, so that everything written so far
    /// becomes removable by [`Self::remove_segments_before`].
    pub fn rotate(&self) -> io::Result<()> {
        let mut state = self.state.lock();
        if state.size > HEADER_LEN as u64 || state.rotate {
            self.rotate_locked(&mut state)?;
        }
        Ok(())
    }

    fn rotate_locked(&self, state: &mut State) -> io::Result<()> {
        let next = state.seq.checked_add(1).ok_or_else(|| {
            io::Error::other("WAL segment numbers exhausted (2^32 segments written)")
        })?;
        // The closing segment loses its reserve and is synced now; later syncs only look at
        // the current one. Should the cut fail, replay drops the zeros.
        if state.allocated > state.size && state.file.set_len(state.size).is_ok() {
            state.allocated = state.size;
        }
        if let Err(e) = state.file.sync_data() {
            self.metrics.failures.inc();
            return Err(e);
        }
        let (file, allocated) = match create_segment(&self.dir, next, &self.config) {
            Ok(f) => f,
            Err(e) => {
                self.metrics.failures.inc();
                return Err(e);
            }
        };
        let closed_seq = state.seq;
        let closed_ts = state.max_ts;
        state.closed.insert(closed_seq, closed_ts);
        state.seq = next;
        state.file = Arc::new(file);
        state.size = HEADER_LEN as u64;
        state.allocated = allocated;
        state.max_ts = i64::MIN;
        state.rotate = false;
        state.dirty = false;
        self.metrics.segments.set(state.closed.len() as i64 + 1);
        Ok(())
    }

    /// Flushes what was written to stable storage (`fdatasync`), without holding up commits.
    pub fn sync(&self) -> io::Result<()> {
        let file = {
            let mut state = self.state.lock();
            if !state.dirty {
                return Ok(());
            }
            state.dirty = false;
            Arc::clone(&state.file)
        };
        match file.sync_data() {
            Ok(()) => {
                self.metrics.fsyncs.inc();
                Ok(())
            }
            Err(e) => {
                self.metrics.failures.inc();
                self.state.lock().dirty = true;
                Err(e)
            }
        }
    }

    /// Deletes closed segments whose samples are all older than `min_timestamp` (they are in
    /// persisted blocks). Returns how many were removed.
    pub fn remove_segments_before(&self, min_timestamp: i64) -> io::Result<usize> {
        let doomed: Vec<u32> = {
            let state = self.state.lock();
            state
                .closed
                .iter()
                .filter(|(_, max_ts)| **max_ts < min_timestamp)
                .map(|(seq, _)| *seq)
                .collect()
        };
        let mut removed = 0;
        for seq in doomed {
            match std::fs::remove_file(segment_path(&self.dir, seq)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
            let mut state = self.state.lock();
            state.closed.remove(&seq);
            self.metrics.segments.set(state.closed.len() as i64 + 1);
            removed += 1;
        }
        if removed > 0 {
            sync_dir(&self.dir)?;
        }
        Ok(removed)
    }

    /// Sequence numbers of the segments on disk, oldest first (the current one last).
    pub fn segments(&self) -> Vec<u32> {
        let state = self.state.lock();
        state
            .closed
            .keys()
            .copied()
            .chain(std::iter::once(state.seq))
            .collect()
    }
}

/// The WAL held for one commit.
#[derive(Debug)]
pub struct WalWriter<'a> {
    wal: &'a Wal,
    state: MutexGuard<'a, State>,
}

impl WalWriter<'_> {
    /// The segment this commit goes to: series not yet defined in it need a definition.
    pub fn segment(&self) -> u32 {
        self.state.seq
    }

    /// Appends one encoded record (see [`RecordEncoder`]) whose newest sample is `max_ts`.
    /// On failure nothing of the record stays in the segment, and the next commit starts a new
    /// segment (the caller's series definitions for this one are void).
    pub fn write(&mut self, record: &RecordEncoder) -> io::Result<()> {
        let state = &mut *self.state;
        let mut frame = std::mem::take(&mut state.frame);
        frame.clear();
        frame.extend_from_slice(&[0; FRAME_LEN]);
        record.finish_into(&mut frame);
        let written = frame_payload(&mut frame).and_then(|()| {
            let end = state.size + frame.len() as u64;
            if end > state.allocated {
                // Reserve more (zeros after the record: the record itself fills the gap
                // before); without it (a full disk) the record still goes in if it fits.
                let reserve = self.wal.config.reserve_for(end);
                match fill_zeros(&state.file, end.max(state.allocated), reserve) {
                    Ok(()) => state.allocated = reserve,
                    Err(_) => {
                        let _ = state.file.set_len(state.allocated);
                    }
                }
            }
            state.file.write_all_at(&frame, state.size)
        });
        let len = frame.len() as u64;
        if frame.capacity() <= FRAME_KEEP {
            state.frame = frame;
        }
        if let Err(e) = written {
            self.wal.metrics.failures.inc();
            // Cut a partial record (and the reserve) back off; if even that fails, replay
            // truncates it.
            if state.file.set_len(state.size).is_ok() {
                state.allocated = state.size;
            }
            state.rotate = true;
            return Err(e);
        }
        state.size += len;
        state.allocated = state.allocated.max(state.size);
        state.max_ts = state.max_ts.max(record.max_ts);
        state.dirty = true;
        self.wal.metrics.records.inc();
        self.wal.metrics.bytes.inc_by(len);
        Ok(())
    }
}

/// Fills in the frame header of `frame` (`FRAME_LEN` placeholder bytes, then the payload).
fn frame_payload(frame: &mut [u8]) -> io::Result<()> {
    let (header, payload) = frame.split_at_mut(FRAME_LEN);
    let len = u32::try_from(payload.len())
        .ok()
        .filter(|&l| l as usize <= MAX_RECORD)
        .ok_or_else(|| io::Error::other("WAL record too large"))?;
    header[..4].copy_from_slice(&len.to_le_bytes());
    header[4..].copy_from_slice(&crc32c::crc32c(payload).to_le_bytes());
    Ok(())
}

/// Writes zeros over `[from, to)` of `file`.
fn fill_zeros(file: &File, from: u64, to: u64) -> io::Result<()> {
    let mut at = from;
    while at < to {
        let n = (to - at).min(ZEROS.len() as u64) as usize;
        file.write_all_at(&ZEROS[..n], at)?;
        at += n as u64;
    }
    Ok(())
}

impl Drop for Wal {
    /// A clean stop leaves the current segment without its reserve.
    fn drop(&mut self) {
        let state = self.state.get_mut();
        if state.allocated > state.size {
            let _ = state.file.set_len(state.size);
        }
    }
}

/// Creates segment `seq` with its header and a first reserve (none when the disk has no room
/// for it), synced. Returns the file and its length.
fn create_segment(dir: &Path, seq: u32, config: &WalConfig) -> io::Result<(File, u64)> {
    let path = segment_path(dir, seq);
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
    let mut header = [0u8; HEADER_LEN];
    header[..MAGIC.len()].copy_from_slice(&MAGIC);
    header[MAGIC.len()] = VERSION;
    let mut allocated = HEADER_LEN as u64;
    let written = file.write_all(&header).and_then(|()| {
        let reserve = config.reserve_for(allocated + 1);
        match fill_zeros(&file, allocated, reserve) {
            Ok(()) => allocated = reserve,
            Err(_) => file.set_len(allocated)?,
        }
        file.sync_data()?;
        sync_dir(dir)
    });
    if let Err(e) = written {
        // A full disk: leave no half-made segment behind, so the next attempt can retry
        // under the same number.
        drop(file);
        let _ = std::fs::remove_file(&path);
        return Err(e);
    }
    // Records are written at their offset (`write_all_at`), over the reserve.
    Ok((file, allocated))
}

/// Fsyncs a directory, making renames and deletions in it durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Builds one commit record. Series definitions and samples may be added in any interleaving;
/// samples of one metric should come together (each change of metric starts a new run).
#[derive(Debug, Default)]
pub struct RecordEncoder {
    defs: Vec<u8>,
    def_count: u32,
    samples: Vec<u8>,
    run_count: u32,
    /// Start of the current run's sample count (patched when the run ends), its metric and
    /// count.
    run: Option<(usize, u32, u32)>,
    prev_ts: i64,
    max_ts: i64,
}

impl RecordEncoder {
    /// An encoder with room for about `samples` samples of one metric run.
    pub fn with_capacity(samples: usize) -> Self {
        Self {
            // A sample takes 8 bytes of value and a varint each of series id and timestamp
            // difference (1–3 bytes on a scrape's rows), and each run of a metric a varint
            // and a count; a record that outgrows its buffer doubles it.
            samples: Vec::with_capacity(samples * 13),
            ..Self::default()
        }
    }

    /// Empties the encoder for the next record, keeping its buffers.
    pub fn clear(&mut self) {
        self.defs.clear();
        self.def_count = 0;
        self.samples.clear();
        self.run_count = 0;
        self.run = None;
        self.prev_ts = 0;
        self.max_ts = i64::MIN;
    }

    /// True when nothing was added.
    pub fn is_empty(&self) -> bool {
        self.def_count == 0 && self.run_count == 0
    }

    /// Adds a series definition.
    pub fn add_series<'a>(
        &mut self,
        id: SeriesRef,
        metric: &str,
        labels: impl ExactSizeIterator<Item = (&'a str, &'a str)>,
    ) {
        self.def_count += 1;
        put_varint(&mut self.defs, u64::from(id.metric));
        put_varint(&mut self.defs, u64::from(id.series));
        put_str(&mut self.defs, metric);
        put_varint(&mut self.defs, labels.len() as u64);
        for (name, value) in labels {
            put_str(&mut self.defs, name);
            put_str(&mut self.defs, value);
        }
    }

    /// Adds a sample.
    pub fn add_sample(&mut self, id: SeriesRef, timestamp: i64, value: f64) {
        match &mut self.run {
            Some((_, metric, count)) if *metric == id.metric => *count += 1,
            _ => {
                self.end_run();
                self.run_count += 1;
                put_varint(&mut self.samples, u64::from(id.metric));
                let at = self.samples.len();
                self.samples.extend_from_slice(&[0; 4]);
                self.run = Some((at, id.metric, 1));
            }
        }
        put_varint(&mut self.samples, u64::from(id.series));
        put_varint(
            &mut self.samples,
            zigzag(timestamp.wrapping_sub(self.prev_ts)),
        );
        self.samples
            .extend_from_slice(&value.to_bits().to_le_bytes());
        self.prev_ts = timestamp;
        self.max_ts = self.max_ts.max(timestamp);
    }

    fn end_run(&mut self) {
        if let Some((at, _, count)) = self.run.take() {
            self.samples[at..at + 4].copy_from_slice(&count.to_le_bytes());
        }
    }

    /// The payload: type, definitions, sample runs.
    #[cfg(test)]
    fn finish(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.finish_into(&mut out);
        out
    }

    /// Appends the payload to `out`.
    fn finish_into(&self, out: &mut Vec<u8>) {
        out.reserve(9 + self.defs.len() + self.samples.len());
        out.push(RECORD_COMMIT);
        out.extend_from_slice(&self.def_count.to_le_bytes());
        out.extend_from_slice(&self.defs);
        out.extend_from_slice(&self.run_count.to_le_bytes());
        let start = out.len();
        out.extend_from_slice(&self.samples);
        if let Some((at, _, count)) = self.run {
            out[start + at..start + at + 4].copy_from_slice(&count.to_le_bytes());
        }
    }
}

/// Why a record did not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The payload ended inside a field.
    #[error("record ends early")]
    Truncated,
    /// A field holds an impossible value.
    #[error("invalid record: {0}")]
    Invalid(&'static str),
}

/// Decodes one record payload.
pub fn decode_record(payload: &[u8]) -> Result<Record, DecodeError> {
    let mut r = Reader(payload);
    if r.u8()? != RECORD_COMMIT {
        return Err(DecodeError::Invalid("unknown record type"));
    }
    let mut record = Record::default();
    let defs = r.u32()?;
    for _ in 0..defs {
        let id = SeriesRef {
            metric: r.varint_u32()?,
            series: r.varint_u32()?,
        };
        let metric = r.str()?.to_string();
        let n = r.varint()?;
        // Each pair takes at least two bytes: a bound that rejects absurd counts early.
        if n > r.0.len() as u64 / 2 {
            return Err(DecodeError::Truncated);
        }
        let mut labels = Vec::with_capacity(n as usize);
        for _ in 0..n {
            let name = r.str()?.to_string();
            let value = r.str()?.to_string();
            labels.push((name, value));
        }
        record.series.push(SeriesDef { id, metric, labels });
    }
    let runs = r.u32()?;
    let mut prev_ts = 0i64;
    for _ in 0..runs {
        let metric = r.varint_u32()?;
        let n = r.u32()?;
        // A sample takes at least ten bytes.
        if u64::from(n) > r.0.len() as u64 / 10 {
            return Err(DecodeError::Truncated);
        }
        record.samples.reserve(n as usize);
        for _ in 0..n {
            let series = r.varint_u32()?;
            let ts = prev_ts.wrapping_add(unzigzag(r.varint()?));
            let value = f64::from_bits(u64::from_le_bytes(r.array()?));
            record
                .samples
                .push((SeriesRef { metric, series }, ts, value));
            prev_ts = ts;
        }
    }
    if !r.0.is_empty() {
        return Err(DecodeError::Invalid("trailing bytes"));
    }
    Ok(record)
}

/// Reads every segment in `dir` in order, handing each record and its segment number to
/// `apply` (series ids are scoped to their segment), and repairs what it
/// cannot read: a torn or corrupt tail is truncated at the last good record, a segment with a
/// bad header is renamed to `<seq>.corrupt`. A writer's all-zero reserve after the last
/// record is cut off without a warning. Files that are not segments are left alone.
pub fn replay(
    dir: &Path,
    metrics: &WalMetrics,
    mut apply: impl FnMut(u32, Record),
) -> io::Result<ReplayOutcome> {
    let mut outcome = ReplayOutcome::default();
    let (seqs, highest) = segment_numbers(dir)?;
    outcome.highest_segment = highest;
    for seq in seqs {
        let path = segment_path(dir, seq);
        let data = std::fs::read(&path)?;
        if data.len() < HEADER_LEN {
            // Creation was cut short: nothing was ever acknowledged from it.
            warn!(segment = %path.display(), "WAL segment without a full header: removed");
            std::fs::remove_file(&path)?;
            continue;
        }
        if data[..MAGIC.len()] != MAGIC || data[MAGIC.len()] != VERSION {
            let aside = path.with_extension("corrupt");
            warn!(
                segment = %path.display(),
                moved_to = %aside.display(),
                "WAL segment has an unknown header: moved aside, not replayed"
            );
            std::fs::rename(&path, &aside)?;
            metrics.corruptions.inc();
            outcome.corruptions += 1;
            continue;
        }
        let mut max_ts = i64::MIN;
        let mut offset = HEADER_LEN;
        let mut problem = None;
        while offset < data.len() {
            if data[offset..].iter().all(|&b| b == 0) {
                // The writer's reserve (a stop without a clean shutdown): no record was ever
                // there. Cut it off so the closed segment holds only its records; a failure
                // to do so costs only disk space, and the next replay tries again.
                if let Ok(file) = OpenOptions::new().write(true).open(&path) {
                    let _ = file.set_len(offset as u64);
                }
                break;
            }
            match next_record(&data[offset..]) {
                Ok((record, used)) => {
                    for &(_, t, _) in &record.samples {
                        max_ts = max_ts.max(t);
                    }
                    outcome.records += 1;
                    outcome.samples += record.samples.len() as u64;
                    metrics.replayed_samples.inc_by(record.samples.len() as u64);
                    apply(seq, record);
                    offset += used;
                }
                Err(reason) => {
                    problem = Some(reason);
                    break;
                }
            }
        }
        if let Some(reason) = problem {
            warn!(
                segment = %path.display(),
                offset,
                dropped_bytes = data.len() - offset,
                reason,
                "WAL segment has a torn or corrupt tail: truncated at the last good record"
            );
            let file = OpenOptions::new().write(true).open(&path)?;
            file.set_len(offset as u64)?;
            file.sync_all()?;
            metrics.corruptions.inc();
            outcome.corruptions += 1;
        }
        outcome.segments.insert(seq, max_ts);
    }
    Ok(outcome)
}

/// The segments in `dir` in order, and the highest number ever used there (counting
/// segments moved aside as `.corrupt`). An absent directory has none.
fn segment_numbers(dir: &Path) -> io::Result<(Vec<u32>, u32)> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((Vec::new(), 0)),
        Err(e) => return Err(e),
    };
    let mut seqs = Vec::new();
    let mut highest = 0;
    for entry in entries {
        let name = entry?.file_name();
        let Some(name) = name.to_str() else { continue };
        let (number, aside) = match name.strip_suffix(".corrupt") {
            Some(n) => (n, true),
            None => (name, false),
        };
        if number.len() == 8
            && number.bytes().all(|b| b.is_ascii_digit())
            && let Ok(seq) = number.parse::<u32>()
        {
            highest = highest.max(seq);
            if !aside {
                seqs.push(seq);
            }
        }
    }
    seqs.sort_unstable();
    Ok((seqs, highest))
}

/// The oldest sample timestamp in the WAL under `dir`, reading without changing anything
/// (a running replica may be writing it): each segment is read up to its first unreadable
/// record. `None` when it holds no sample.
pub fn min_timestamp(dir: &Path) -> io::Result<Option<i64>> {
    let mut min = None;
    for seq in segment_numbers(dir)?.0 {
        let data = match std::fs::read(segment_path(dir, seq)) {
            Ok(d) => d,
            // Removed after a cut since the listing.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        if data.len() < HEADER_LEN || data[..MAGIC.len()] != MAGIC {
            continue;
        }
        let mut offset = HEADER_LEN;
        while let Ok((record, used)) = next_record(&data[offset..]) {
            for &(_, t, _) in &record.samples {
                min = Some(min.map_or(t, |m: i64| m.min(t)));
            }
            offset += used;
        }
    }
    Ok(min)
}

/// Reads the record at the start of `data`: the record and the bytes it took, or why not.
fn next_record(data: &[u8]) -> Result<(Record, usize), &'static str> {
    if data.len() < FRAME_LEN {
        return Err("torn frame header");
    }
    let len = u32::from_le_bytes(data[0..4].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_le_bytes(data[4..8].try_into().expect("4 bytes"));
    if len == 0 {
        // Reserved space (see `replay`), or zeros where a record should be.
        return Err("zero record length");
    }
    if len > MAX_RECORD {
        return Err("impossible record length");
    }
    let Some(payload) = data.get(FRAME_LEN..FRAME_LEN + len) else {
        return Err("torn record");
    };
    if crc32c::crc32c(payload) != crc {
        return Err("checksum mismatch");
    }
    let record = decode_record(payload).map_err(|e| match e {
        DecodeError::Truncated => "record ends early",
        DecodeError::Invalid(r) => r,
    })?;
    Ok((record, FRAME_LEN + len))
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_varint(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.0.len() < n {
            return Err(DecodeError::Truncated);
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        Ok(self.take(N)?.try_into().expect("N bytes"))
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn varint(&mut self) -> Result<u64, DecodeError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.u8()?;
            v |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Ok(v);
            }
        }
        Err(DecodeError::Invalid("varint longer than 64 bits"))
    }

    fn varint_u32(&mut self) -> Result<u32, DecodeError> {
        u32::try_from(self.varint()?).map_err(|_| DecodeError::Invalid("id beyond 32 bits"))
    }

    fn str(&mut self) -> Result<&'a str, DecodeError> {
        let len = self.varint()?;
        let len = usize::try_from(len).map_err(|_| DecodeError::Truncated)?;
        std::str::from_utf8(self.take(len)?).map_err(|_| DecodeError::Invalid("string not UTF-8"))
    }
}

#[cfg(test)]
mod tests;
