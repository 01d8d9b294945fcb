//! From a scraped body to head samples: parse, attach target labels, append.
//!
//! The [`ScrapeCache`] is what makes repeated scrapes cheap. It maps each series span exactly
//! as the target wrote it (`node_cpu_seconds_total{cpu="0",mode="idle"}`) to the head's
//! [`SeriesRef`]. A hit skips label decoding, target-label merging and the head's series
//! lookup; only new series (a miss) pay for those. The cache is per target, so the same span
//! from two targets maps to two series. Entries not seen in the last two scrapes are evicted
//! so the cache tracks what the target exposes now.
//!
//! Targets write their series in the same order every time, so the cache also keeps the order
//! of the last body's series: the next line is first compared with the span expected at that
//! place ([`TextParser::next_known`]), which costs one comparison of bytes instead of
//! scanning the name and labels and hashing them. A line that differs (a new series, a
//! reordered one) takes the full path, and the expected place moves to where that series was
//! last time when it is close by, so one inserted or removed series costs one slow line.

use std::borrow::Cow;
use std::collections::HashMap;

use storage::{AppendError, Appender, Labels, MetricMetadata, SeriesRef};

use crate::config::ScrapeLimits;
use crate::exposition::{Entry, Format, ParseError, TextParser};
use crate::relabel::{LabelSet, Rule, relabel};

/// Per-target memory of series spans already resolved to head series.
///
/// Held for every target between scrapes, so it is laid out for size: each span's bytes are
/// kept once, back to back in one arena (no allocation per series, and no copy of the last
/// body: the expected-order comparison reads the arena); an entry is 20 bytes in a slab, the
/// hash index holds 4-byte slab numbers, and the order of a body is 4 bytes per line. The
/// earlier layout (a map from a boxed span to its entry, the whole last body, 16-byte order
/// records) held about 260 bytes per series against about 110 now, by count, for the ingest
/// benchmark's lines (~65-byte spans in a 157 KB body of 1,969 lines). Measured side by side
/// (50 targets, 5 minutes, before any cut returns freed pages): 1,078 against 1,128 bytes of
/// RSS per series, and 0.91x the CPU per sample (no copy of each body, smaller orders).
#[derive(Debug, Default)]
pub struct ScrapeCache {
    /// The spans of the entries, back to back.
    arena: Vec<u8>,
    /// Arena bytes no live entry points to (evicted); reclaimed once they are half of it.
    garbage: usize,
    /// The entries, numbered by their place here; a slot freed by eviction is reused.
    entries: Vec<CacheEntry>,
    /// Free slots of `entries`.
    free: Vec<u32>,
    /// The live entries' numbers, found by the hash of their span.
    index: hashbrown::HashTable<u32>,
    hasher: ahash::RandomState,
    /// The metadata this target declared, so the head is told only about changes.
    metadata: HashMap<String, MetricMetadata, ahash::RandomState>,
    /// Hash of the last scrape's metadata lines: equal means nothing to do.
    metadata_hash: u64,
    /// Incremented (wrapping) per scrape; entries remember the last scrape that saw them.
    iteration: u32,
    /// The entries of the last appended body's sample lines, in order.
    last_order: Vec<u32>,
    /// The order being recorded for the current scrape.
    order: Vec<u32>,
}

/// The head series a span resolved to, or [`Resolved::DROPPED`] when
/// `metric_relabel_configs` dropped it: an `Option<SeriesRef>` in 8 bytes instead of 12. No
/// head reaches `u32::MAX` metrics, so that metric index is free to mean "none".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Resolved(SeriesRef);

impl Resolved {
    const DROPPED: Resolved = Resolved(SeriesRef {
        metric: u32::MAX,
        series: u32::MAX,
    });

    fn new(series: Option<SeriesRef>) -> Self {
        series.map_or(Self::DROPPED, Resolved)
    }

    fn get(self) -> Option<SeriesRef> {
        (self != Self::DROPPED).then_some(self.0)
    }
}

/// How far ahead of the expected place a slow-path line is looked for in the last order.
const RESYNC_WINDOW: usize = 16;

/// A series span as the target wrote it and what it resolved to.
#[derive(Debug, Clone, Copy)]
struct CacheEntry {
    /// Where the span is in the arena.
    start: u32,
    len: u32,
    /// Dropped when `metric_relabel_configs` drop the series: remembered, so a dropped series
    /// costs one lookup per scrape, like a kept one.
    series: Resolved,
    last_seen: u32,
}

impl CacheEntry {
    fn span(&self) -> std::ops::Range<usize> {
        self.start as usize..self.start as usize + self.len as usize
    }
}

impl ScrapeCache {
    /// Entries in the cache.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Sample lines in the last body: a size hint for the next scrape's appender.
    pub fn last_samples(&self) -> usize {
        self.last_order.len()
    }

    /// True when the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// The entry holding `span`, whose hash is `hash`.
    fn find(&self, hash: u64, span: &[u8]) -> Option<u32> {
        let (arena, entries) = (&self.arena, &self.entries);
        self.index
            .find(hash, |&i| arena[entries[i as usize].span()] == *span)
            .copied()
    }

    /// Adds an entry for `span` (not in the cache); `None` when the arena or the slab would
    /// pass 4 GiB or 2³² entries, in which case the span is simply not cached.
    fn insert(&mut self, hash: u64, span: &[u8], series: Resolved, seen: u32) -> Option<u32> {
        let start = u32::try_from(self.arena.len()).ok()?;
        let len = u32::try_from(span.len()).ok()?;
        start.checked_add(len)?;
        let entry = CacheEntry {
            start,
            len,
            series,
            last_seen: seen,
        };
        let i = match self.free.pop() {
            Some(i) => {
                self.entries[i as usize] = entry;
                i
            }
            None => {
                let i = u32::try_from(self.entries.len()).ok()?;
                self.entries.push(entry);
                i
            }
        };
        self.arena.extend_from_slice(span);
        let (arena, entries, hasher) = (&self.arena, &self.entries, &self.hasher);
        self.index.insert_unique(hash, i, |&j| {
            hasher.hash_one(&arena[entries[j as usize].span()])
        });
        Some(i)
    }

    /// Drops the entries the last two scrapes did not see, and reclaims their room once it is
    /// half of what the cache holds. Called after a body is appended, before its order
    /// becomes the last order: `order` holds only entries seen now, so none is dropped.
    fn evict(&mut self, iteration: u32) {
        let (entries, free, garbage) = (&self.entries, &mut self.free, &mut self.garbage);
        self.index.retain(|&mut i| {
            let e = &entries[i as usize];
            let keep = iteration.wrapping_sub(e.last_seen) <= 1;
            if !keep {
                free.push(i);
                *garbage += e.len as usize;
            }
            keep
        });
        if self.garbage > self.arena.len() / 2 || self.free.len() > self.entries.len() / 2 {
            self.compact();
        }
    }

    /// Rewrites the arena and the slab with the live entries only, in the order of the
    /// current body (so the next scrape reads both front to back), renumbering them.
    fn compact(&mut self) {
        const NONE: u32 = u32::MAX;
        let mut renumber = vec![NONE; self.entries.len()];
        let mut arena = Vec::with_capacity(self.arena.len() - self.garbage);
        let mut entries = Vec::with_capacity(self.index.len());
        let live = self.order.iter().chain(self.index.iter());
        for &i in live {
            if renumber[i as usize] != NONE {
                continue;
            }
            let e = self.entries[i as usize];
            renumber[i as usize] = entries.len() as u32;
            entries.push(CacheEntry {
                start: arena.len() as u32,
                ..e
            });
            arena.extend_from_slice(&self.arena[e.span()]);
        }
        for i in self.index.iter_mut().chain(self.order.iter_mut()) {
            *i = renumber[*i as usize];
        }
        self.arena = arena;
        self.entries = entries;
        self.free.clear();
        self.free.shrink_to_fit();
        self.garbage = 0;
    }
}

/// How a scrape's samples are labelled and stamped.
#[derive(Debug, Clone, Copy)]
pub struct AppendOptions<'a> {
    /// Target labels (`job`, `instance`, static labels).
    pub target_labels: &'a Labels,
    /// Keep scraped labels on a clash instead of renaming them `exported_<name>`.
    pub honor_labels: bool,
    /// Use exposition timestamps when present.
    pub honor_timestamps: bool,
    /// `metric_relabel_configs`, applied to new series.
    pub metric_relabel: &'a [Rule],
    /// Limits that fail the body whole.
    pub limits: ScrapeLimits,
    /// The body's exposition format.
    pub format: Format,
    /// The scrape's start time (ms): the timestamp of samples that carry none.
    pub default_timestamp: i64,
}

/// What appending one body did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BodyStats {
    /// Sample lines in the body.
    pub scraped: u64,
    /// Samples left after `metric_relabel_configs`.
    pub post_relabel: u64,
    /// Series not in the cache before this scrape.
    pub series_added: u64,
    /// Samples dropped because `storage.max_series` refused their new series.
    pub series_rejected: u64,
}

/// Why a body was not appended.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// The body does not parse.
    #[error("parse error: {0}")]
    Parse(#[from] ParseError),
    /// A series was refused by the head for a reason other than the series limit.
    #[error("{0}")]
    Append(AppendError),
    /// A job limit (`sample_limit`, `label_limit`, ...) was exceeded.
    #[error("{0}")]
    Limit(String),
}

/// Parses `body` and appends its samples to `app` (not committed). On error the caller rolls
/// back: a scrape is taken whole or not at all.
pub fn append_body(
    body: &[u8],
    cache: &mut ScrapeCache,
    app: &mut dyn Appender,
    opts: &AppendOptions<'_>,
) -> Result<BodyStats, BodyError> {
    cache.iteration = cache.iteration.wrapping_add(1);
    let iteration = cache.iteration;
    let mut stats = BodyStats::default();
    let mut scratch: Vec<(Cow<'_, str>, Cow<'_, str>)> = Vec::new();
    // Metadata lines are collected as they come and compared with the last scrape's by one
    // hash: when nothing changed (every scrape but the first, usually) the per-family
    // bookkeeping is skipped entirely.
    // Sized from the last scrape (a `# HELP` and a `# TYPE` per family, usually), so that it
    // does not grow by doubling at every scrape.
    let mut metadata: Vec<(&str, MetaField, Cow<'_, str>)> =
        Vec::with_capacity(cache.metadata.len() * 2);
    let mut parser = TextParser::with_format(body, opts.format);
    let stamp = |t: Option<i64>| match t {
        Some(t) if opts.honor_timestamps => t,
        _ => opts.default_timestamp,
    };
    // The place in `last_order` of the span expected next.
    let mut cursor = 0;
    cache.order.clear();
    loop {
        let known = cache.last_order.get(cursor).and_then(|&i| {
            let e = &cache.entries[i as usize];
            let span = &cache.arena[e.span()];
            parser
                .next_known(span)
                .map(|(_, value, timestamp)| (i, value, timestamp))
        });
        if let Some((i, value, timestamp)) = known {
            cursor += 1;
            stats.scraped += 1;
            cache.order.push(i);
            let e = &mut cache.entries[i as usize];
            e.last_seen = iteration;
            if let Some(series) = e.series.get() {
                stats.post_relabel += 1;
                app.append(series, stamp(timestamp), value);
            }
            continue;
        }
        let Some(entry) = parser.next() else {
            break;
        };
        let sample = match entry? {
            Entry::Sample(sample) => sample,
            Entry::Help { metric, help } => {
                metadata.push((metric, MetaField::Help, help));
                continue;
            }
            Entry::Type { metric, kind } => {
                metadata.push((metric, MetaField::Kind, Cow::Borrowed(kind.as_str())));
                continue;
            }
            Entry::Unit { metric, unit } => {
                metadata.push((metric, MetaField::Unit, Cow::Borrowed(unit)));
                continue;
            }
        };
        stats.scraped += 1;
        let timestamp = stamp(sample.timestamp);
        let hash = cache.hasher.hash_one(sample.series);
        let series = match cache.find(hash, sample.series) {
            Some(i) => {
                let e = &mut cache.entries[i as usize];
                e.last_seen = iteration;
                let series = e.series.get();
                // Seen before but not where expected: move the expected place to just after
                // where it was, if that is near (a series removed or inserted before it).
                let mut near = cache.last_order.iter().skip(cursor).take(RESYNC_WINDOW);
                if let Some(d) = near.position(|&k| k == i) {
                    cursor += d + 1;
                }
                cache.order.push(i);
                series
            }
            None => {
                merge_labels(&mut scratch, sample.labels(), opts);
                let resolved = if opts.metric_relabel.is_empty() {
                    let pairs: Vec<(&str, &str)> = scratch
                        .iter()
                        .map(|(n, v)| (n.as_ref(), v.as_ref()))
                        .collect();
                    check_label_limits(sample.name, &pairs, &opts.limits)?;
                    app.series(sample.name, &pairs).map(Some)
                } else {
                    relabel_series(sample.name, &scratch, opts, app)?
                };
                let series = match resolved {
                    Ok(series) => series,
                    Err(AppendError::SeriesLimit { .. }) => {
                        stats.series_rejected += 1;
                        continue;
                    }
                    Err(e) => return Err(BodyError::Append(e)),
                };
                stats.series_added += u64::from(series.is_some());
                // A span the cache cannot hold (past 4 GiB) leaves a gap in the order: the
                // next scrape resolves that line on the full path again.
                if let Some(i) = cache.insert(hash, sample.series, Resolved::new(series), iteration)
                {
                    cache.order.push(i);
                }
                series
            }
        };
        if let Some(series) = series {
            stats.post_relabel += 1;
            app.append(series, timestamp, sample.value);
        }
    }
    if opts.limits.samples > 0 && stats.post_relabel > opts.limits.samples {
        return Err(BodyError::Limit(format!(
            "sample_limit exceeded: {} samples, limit {}",
            stats.post_relabel, opts.limits.samples
        )));
    }
    update_metadata(cache, app, &metadata);
    // Some entries were not in this body (lines seen now are marked as they are read): drop
    // what the last two scrapes did not see.
    if cache.index.len() > cache.order.len() {
        cache.evict(iteration);
    }
    // Growth by doubling leaves up to half of a buffer unused, held for as long as the
    // target is scraped: give back what is well over the need once the additions are done.
    if stats.series_added > 0 {
        shrink_slack(&mut cache.arena);
        shrink_slack(&mut cache.entries);
    }
    std::mem::swap(&mut cache.last_order, &mut cache.order);
    Ok(stats)
}

/// Gives back a buffer's unused room when it is over a quarter of what is used.
fn shrink_slack<T>(v: &mut Vec<T>) {
    if v.capacity() - v.len() > v.len() / 4 {
        v.shrink_to_fit();
    }
}

/// Which `# …` line a metadata value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum MetaField {
    Help,
    Kind,
    Unit,
}

/// Tells the head about the families whose metadata changed since this target's last scrape.
fn update_metadata(
    cache: &mut ScrapeCache,
    app: &mut dyn Appender,
    metadata: &[(&str, MetaField, Cow<'_, str>)],
) {
    let hash = ahash::RandomState::with_seeds(1, 2, 3, 4).hash_one(metadata);
    if hash == cache.metadata_hash {
        return;
    }
    cache.metadata_hash = hash;
    let mut changed: Vec<&str> = Vec::new();
    for (family, field, value) in metadata {
        let entry = match cache.metadata.get_mut(*family) {
            Some(m) => m,
            None => cache.metadata.entry(family.to_string()).or_default(),
        };
        let slot = match field {
            MetaField::Help => &mut entry.help,
            MetaField::Kind => &mut entry.kind,
            MetaField::Unit => &mut entry.unit,
        };
        if slot != value {
            value.as_ref().clone_into(slot);
            changed.push(family);
        }
    }
    changed.sort_unstable();
    changed.dedup();
    for family in changed {
        if let Some(m) = cache.metadata.get(family) {
            app.update_metadata(family, m.clone());
        }
    }
}

/// Runs `metric_relabel_configs` on a new series (its name as `__name__`), checks the label
/// limits on the result and resolves it; `None` when relabelling drops it.
fn relabel_series(
    name: &str,
    labels: &[(Cow<'_, str>, Cow<'_, str>)],
    opts: &AppendOptions<'_>,
    app: &mut dyn Appender,
) -> Result<Result<Option<SeriesRef>, AppendError>, BodyError> {
    let rules = opts.metric_relabel;
    let mut set = LabelSet::from_pairs(
        labels
            .iter()
            .map(|(n, v)| (n.as_ref(), v.as_ref()))
            .chain([("__name__", name)]),
    );
    if !relabel(&mut set, rules) {
        return Ok(Ok(None));
    }
    let name = set.get("__name__").to_string();
    if name.is_empty() {
        // Relabelling removed the name: nothing to store it under (Prometheus drops it too).
        return Ok(Ok(None));
    }
    let pairs: Vec<(&str, &str)> = set.iter().filter(|(n, _)| *n != "__name__").collect();
    check_label_limits(&name, &pairs, &opts.limits)?;
    Ok(app.series(&name, &pairs).map(Some))
}

/// Prometheus's label limits, checked when a series is first seen (the metric name counts as
/// a label, `__name__`, as in Prometheus).
fn check_label_limits(
    name: &str,
    labels: &[(&str, &str)],
    limits: &ScrapeLimits,
) -> Result<(), BodyError> {
    let short: String = name.chars().take(50).collect();
    let count = labels.len() as u64 + 1;
    if limits.labels > 0 && count > limits.labels {
        return Err(BodyError::Limit(format!(
            "label_limit exceeded (metric: {short}, number of labels: {count}, limit: {})",
            limits.labels
        )));
    }
    for (n, v) in labels.iter().copied().chain([("__name__", name)]) {
        if limits.label_name_length > 0 && n.len() as u64 > limits.label_name_length {
            return Err(BodyError::Limit(format!(
                "label_name_length_limit exceeded (metric: {short}, label name: {n}, length: {}, limit: {})",
                n.len(),
                limits.label_name_length
            )));
        }
        if limits.label_value_length > 0 && v.len() as u64 > limits.label_value_length {
            return Err(BodyError::Limit(format!(
                "label_value_length_limit exceeded (metric: {short}, label name: {n}, value: {:?}, length: {}, limit: {})",
                v.chars().take(50).collect::<String>(),
                v.len(),
                limits.label_value_length
            )));
        }
    }
    Ok(())
}

/// Combines scraped labels with target labels into `out`, as Prometheus does: with
/// `honor_labels` the scraped value wins; without it the target value wins and the scraped
/// one is kept as `exported_<name>` (prefixed again while that name is taken too).
fn merge_labels<'a>(
    out: &mut Vec<(Cow<'a, str>, Cow<'a, str>)>,
    scraped: impl Iterator<Item = (&'a str, Cow<'a, str>)>,
    opts: &AppendOptions<'a>,
) {
    out.clear();
    out.extend(scraped.map(|(n, v)| (Cow::Borrowed(n), v)));
    for (name, value) in opts.target_labels.iter() {
        match out.iter().position(|(n, _)| n == name) {
            None => out.push((Cow::Borrowed(name), Cow::Borrowed(value))),
            Some(_) if opts.honor_labels => {}
            Some(i) => {
                let mut exported = format!("exported_{name}");
                while out.iter().any(|(n, _)| *n == exported)
                    || opts.target_labels.get(&exported).is_some()
                {
                    exported.insert_str(0, "exported_");
                }
                out[i].0 = Cow::Owned(exported);
                out.push((Cow::Borrowed(name), Cow::Borrowed(value)));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use storage::{Head, HeadConfig};

    use super::*;

    fn opts(labels: &Labels) -> AppendOptions<'_> {
        AppendOptions {
            target_labels: labels,
            honor_labels: false,
            honor_timestamps: true,
            metric_relabel: &[],
            limits: ScrapeLimits::default(),
            format: Format::Prometheus,
            default_timestamp: 1000,
        }
    }

    fn series_of(head: &Head, metric: &str) -> Vec<(Labels, i64)> {
        let mut s: Vec<(Labels, i64)> = head
            .metric(metric)
            .unwrap()
            .series()
            .into_iter()
            .map(|s| (s.labels, s.last_timestamp))
            .collect();
        s.sort();
        s
    }

    #[test]
    fn target_labels_are_added_and_clashes_exported() {
        let head = Head::new(HeadConfig::default());
        let target = Labels::from_pairs([("job", "node"), ("instance", "h:1")]);
        let mut cache = ScrapeCache::default();
        let mut app = head.appender();
        let body = b"m{job=\"inner\",exported_job=\"x\",a=\"1\"} 1\nn 2 5\n";
        let stats = append_body(body, &mut cache, &mut app, &opts(&target)).unwrap();
        app.commit().unwrap();
        assert_eq!(
            stats,
            BodyStats {
                scraped: 2,
                post_relabel: 2,
                series_added: 2,
                series_rejected: 0
            }
        );
        assert_eq!(
            series_of(&head, "m"),
            vec![(
                Labels::from_pairs([
                    ("a", "1"),
                    ("exported_exported_job", "inner"),
                    ("exported_job", "x"),
                    ("instance", "h:1"),
                    ("job", "node")
                ]),
                1000
            )]
        );
        assert_eq!(
            series_of(&head, "n")[0].1,
            5,
            "exposition timestamp honoured"
        );
    }

    #[test]
    fn honor_labels_keeps_scraped_values() {
        let head = Head::new(HeadConfig::default());
        let target = Labels::from_pairs([("job", "node"), ("instance", "h:1")]);
        let mut cache = ScrapeCache::default();
        let mut app = head.appender();
        let o = AppendOptions {
            honor_labels: true,
            honor_timestamps: false,
            ..opts(&target)
        };
        append_body(b"m{job=\"inner\"} 1 5\n", &mut cache, &mut app, &o).unwrap();
        app.commit().unwrap();
        assert_eq!(
            series_of(&head, "m"),
            vec![(
                Labels::from_pairs([("instance", "h:1"), ("job", "inner")]),
                1000
            )]
        );
    }

    #[test]
    fn the_cache_resolves_repeat_scrapes_and_forgets_vanished_series() {
        resolve_repeat_scrapes_and_forget_vanished_series(0);
    }

    #[test]
    fn the_cache_keeps_small_records_and_evicts_across_the_counter_wrap() {
        assert_eq!(std::mem::size_of::<CacheEntry>(), 20);
        assert_eq!(Resolved::new(None).get(), None);
        let r = SeriesRef {
            metric: 3,
            series: u32::MAX,
        };
        assert_eq!(Resolved::new(Some(r)).get(), Some(r));
        // The scrape counter wraps during the sequence: eviction still counts two scrapes.
        resolve_repeat_scrapes_and_forget_vanished_series(u32::MAX - 2);
    }

    fn resolve_repeat_scrapes_and_forget_vanished_series(first_iteration: u32) {
        let head = Head::new(HeadConfig::default());
        let target = Labels::from_pairs([("job", "j")]);
        let mut cache = ScrapeCache {
            iteration: first_iteration,
            ..ScrapeCache::default()
        };
        let mut app = head.appender();
        let mut scrape = |cache: &mut ScrapeCache, body: &[u8], t: i64| {
            let o = AppendOptions {
                default_timestamp: t,
                ..opts(&target)
            };
            let s = append_body(body, cache, &mut app, &o).unwrap();
            app.commit().unwrap();
            s.series_added
        };
        assert_eq!(scrape(&mut cache, b"a 1\nb 1\n", 1), 2);
        assert_eq!(scrape(&mut cache, b"a 2\nb 2\n", 2), 0);
        assert_eq!(scrape(&mut cache, b"a 3\n", 3), 0);
        assert_eq!(scrape(&mut cache, b"a 4\n", 4), 0);
        assert_eq!(cache.len(), 1, "b was evicted after two scrapes without it");
        assert_eq!(scrape(&mut cache, b"a 5\nb 5\n", 5), 1);
        assert_eq!(
            head.series_count(),
            2,
            "b came back as the same head series"
        );
        assert_eq!(head.metric("a").unwrap().snapshot().rows(), 5);
    }

    #[test]
    fn the_cache_reclaims_room_when_most_series_vanish() {
        let head = Head::new(HeadConfig::default());
        let target = Labels::from_pairs([("job", "j")]);
        let mut cache = ScrapeCache::default();
        let mut app = head.appender();
        let mut scrape = |cache: &mut ScrapeCache, body: &str, t: i64| {
            let o = AppendOptions {
                default_timestamp: t,
                ..opts(&target)
            };
            let s = append_body(body.as_bytes(), cache, &mut app, &o).unwrap();
            app.commit().unwrap();
            (s.scraped, s.series_added)
        };
        let all: String = (0..100).map(|i| format!("m{{i=\"{i}\"}} 1\n")).collect();
        let few: String = (50..55).map(|i| format!("m{{i=\"{i}\"}} 1\n")).collect();
        assert_eq!(scrape(&mut cache, &all, 1), (100, 100));
        assert_eq!(scrape(&mut cache, &all, 2), (100, 0));
        let full_arena = cache.arena.len();
        for t in 3..6 {
            assert_eq!(
                scrape(&mut cache, &(few.clone() + "x 1\n"), t),
                (6, u64::from(t == 3))
            );
        }
        assert_eq!(cache.len(), 6);
        assert_eq!(cache.entries.len(), 6, "the slab was rewritten");
        assert_eq!(
            cache.arena.len(),
            5 * "m{i=\"50\"}".len() + 1,
            "the arena too"
        );
        assert!(cache.arena.len() < full_arena / 10);
        // Renumbered entries still resolve to their series, on both paths.
        let back = format!("m{{i=\"7\"}} 1\nx 1\n{few}");
        assert_eq!(scrape(&mut cache, &back, 6), (7, 1), "m{{i=7}} was evicted");
        assert_eq!(scrape(&mut cache, &back, 7), (7, 0));
        assert_eq!(
            head.series_count(),
            101,
            "m{{i=7}} came back as the same series"
        );
        let rows = |i: u32| {
            let labels = Labels::from_pairs([("i", i.to_string().as_str()), ("job", "j")]);
            let s = head.metric("m").unwrap().series();
            s.into_iter()
                .find(|s| s.labels == labels)
                .unwrap()
                .last_timestamp
        };
        assert_eq!((rows(7), rows(52), rows(99)), (7, 7, 2));
        assert_eq!(
            head.metric("m").unwrap().snapshot().rows(),
            200 + 5 * 3 + 6 * 2
        );
    }

    #[test]
    fn the_expected_order_follows_changes_and_stores_what_a_fresh_cache_would() {
        // The same bodies into two heads: one keeps its cache (fast path where the order
        // holds, resynchronised where it does not), the other starts every scrape with an
        // empty cache (every line on the full path).
        let bodies: [&[u8]; 6] = [
            b"a 1\nb{x=\"1\"} 1\nc 1\nd 1\n",
            b"a 2\nc 2\nd 2\n",
            b"new 3\na 3\nb{x=\"1\"} 3\nc 3\nd 3\n",
            b"d 4\nc 4\nb{x=\"1\"} 4\na 4\nnew 4\n",
            b"a 5\nb{x=\"1\"} 5\nb{x=\"1\"} 6 6\nc 5\nd  5\nd{y=\"2\"} 5\n",
            b"a 7\nb{x=\"1\"} 7\nc 7\nd{y=\"2\"} 7\nd 7\n",
        ];
        let target = Labels::from_pairs([("job", "j")]);
        let kept = Head::new(HeadConfig::default());
        let fresh = Head::new(HeadConfig::default());
        let mut cache = ScrapeCache::default();
        for (t, body) in bodies.iter().enumerate() {
            let o = AppendOptions {
                default_timestamp: t as i64,
                ..opts(&target)
            };
            let mut app = kept.appender();
            let a = append_body(body, &mut cache, &mut app, &o).unwrap();
            app.commit().unwrap();
            let mut app = fresh.appender();
            let b = append_body(body, &mut ScrapeCache::default(), &mut app, &o).unwrap();
            app.commit().unwrap();
            assert_eq!(
                (a.scraped, a.post_relabel),
                (b.scraped, b.post_relabel),
                "scrape {t}"
            );
        }
        assert_eq!(cache.len(), 5, "a, b, c, d, d{{y}}: `new` was evicted");
        assert_eq!(kept.metric_names(), fresh.metric_names());
        for name in kept.metric_names() {
            let rows = |h: &Head| {
                h.metric(&name)
                    .unwrap()
                    .snapshot()
                    .sorted_rows(i64::MIN, i64::MAX)
                    .unwrap()
            };
            assert_eq!(rows(&kept), rows(&fresh), "{name}");
        }
        assert_eq!(kept.metric("b").unwrap().snapshot().rows(), 5);
    }

    #[test]
    fn a_parse_error_fails_the_whole_body() {
        let head = Head::new(HeadConfig::default());
        let target = Labels::default();
        let mut cache = ScrapeCache::default();
        let mut app = head.appender();
        let err = append_body(b"a 1\nb{ 2\n", &mut cache, &mut app, &opts(&target)).unwrap_err();
        assert!(err.to_string().starts_with("parse error: line 2:"), "{err}");
        app.rollback();
        app.commit().unwrap();
        assert_eq!(head.metric("a").unwrap().snapshot().rows(), 0);
    }

    #[test]
    fn metric_relabelling_drops_and_rewrites_new_series_once() {
        let head = Head::new(HeadConfig::default());
        let target = Labels::from_pairs([("job", "j"), ("instance", "i")]);
        let configs: Vec<crate::relabel::RelabelConfig> = serde_norway::from_str(
            "[{source_labels: [__name__], regex: 'go_.*', action: drop},\n\
              {source_labels: [__name__], regex: 'old_(.*)', target_label: __name__, replacement: 'new_$1'},\n\
              {regex: secret, action: labeldrop}]",
        )
        .unwrap();
        let rules: Vec<Rule> = configs.into_iter().map(|c| Rule::new(c).unwrap()).collect();
        let mut cache = ScrapeCache::default();
        let mut app = head.appender();
        let body = b"go_goroutines 5\nold_total{secret=\"x\",a=\"1\"} 2\nkeep 3\n";
        for t in [1, 2] {
            let o = AppendOptions {
                metric_relabel: &rules,
                default_timestamp: t,
                ..opts(&target)
            };
            let stats = append_body(body, &mut cache, &mut app, &o).unwrap();
            app.commit().unwrap();
            assert_eq!(stats.scraped, 3);
            assert_eq!(stats.post_relabel, 2);
            assert_eq!(stats.series_added, if t == 1 { 2 } else { 0 });
        }
        assert_eq!(head.metric_names(), vec!["keep", "new_total"]);
        assert_eq!(
            series_of(&head, "new_total"),
            vec![(
                Labels::from_pairs([("a", "1"), ("instance", "i"), ("job", "j")]),
                2
            )]
        );
        assert_eq!(cache.len(), 3, "the dropped series is cached as dropped");
    }

    #[test]
    fn metadata_reaches_the_head_and_only_changes_are_sent() {
        let head = Head::new(HeadConfig::default());
        let target = Labels::default();
        let mut cache = ScrapeCache::default();
        let mut app = head.appender();
        let body = b"# HELP req Requests.\n# TYPE req counter\nreq 1\n# TYPE t gauge\nt 2\n";
        append_body(body, &mut cache, &mut app, &opts(&target)).unwrap();
        let req = head.metadata().get("req").unwrap();
        assert_eq!(
            (req.kind.as_str(), req.help.as_str()),
            ("counter", "Requests.")
        );
        assert_eq!(head.metadata().get("t").unwrap().kind, "gauge");
        // Someone else changes the head's view; an unchanged exposition does not resend.
        head.metadata().set("req", MetricMetadata::default());
        append_body(body, &mut cache, &mut app, &opts(&target)).unwrap();
        assert_eq!(
            head.metadata().get("req").unwrap(),
            MetricMetadata::default()
        );
        let changed = b"# HELP req Requests served.\n# TYPE req counter\nreq 1\n";
        append_body(changed, &mut cache, &mut app, &opts(&target)).unwrap();
        assert_eq!(head.metadata().get("req").unwrap().help, "Requests served.");
    }

    #[test]
    fn limits_fail_the_body_whole() {
        let target = Labels::from_pairs([("job", "j"), ("instance", "i")]);
        let body = b"a{x=\"1\"} 1\nb{long_label_name=\"a-long-value\"} 2\nc 3\n";
        let cases = [
            (
                ScrapeLimits {
                    samples: 2,
                    ..Default::default()
                },
                "sample_limit exceeded: 3 samples, limit 2",
            ),
            (
                ScrapeLimits {
                    labels: 3,
                    ..Default::default()
                },
                "label_limit exceeded (metric: a, number of labels: 4, limit: 3)",
            ),
            (
                ScrapeLimits {
                    label_name_length: 10,
                    ..Default::default()
                },
                "label_name_length_limit exceeded (metric: b, label name: long_label_name, length: 15, limit: 10)",
            ),
            (
                ScrapeLimits {
                    label_value_length: 5,
                    ..Default::default()
                },
                "label_value_length_limit exceeded (metric: b, label name: long_label_name, value: \"a-long-value\", length: 12, limit: 5)",
            ),
        ];
        for (limits, message) in cases {
            let head = Head::new(HeadConfig::default());
            let mut cache = ScrapeCache::default();
            let mut app = head.appender();
            let o = AppendOptions {
                limits,
                ..opts(&target)
            };
            let err = append_body(body, &mut cache, &mut app, &o).unwrap_err();
            assert_eq!(err.to_string(), message);
        }
        // At the limit is fine.
        let head = Head::new(HeadConfig::default());
        let mut cache = ScrapeCache::default();
        let mut app = head.appender();
        let limits = ScrapeLimits {
            samples: 3,
            labels: 4,
            label_name_length: 15,
            label_value_length: 12,
            body_size: 0,
        };
        append_body(
            body,
            &mut cache,
            &mut app,
            &AppendOptions {
                limits,
                ..opts(&target)
            },
        )
        .unwrap();
    }

    #[test]
    fn series_over_the_limit_are_skipped_and_counted() {
        let head = Head::new(HeadConfig {
            max_series: 1,
            ..HeadConfig::default()
        });
        let target = Labels::default();
        let mut cache = ScrapeCache::default();
        let mut app = head.appender();
        let stats = append_body(b"a 1\nb 1\nc 1\n", &mut cache, &mut app, &opts(&target)).unwrap();
        app.commit().unwrap();
        assert_eq!(stats.series_rejected, 2);
        assert_eq!(head.metric_names(), vec!["a"]);
    }
}
