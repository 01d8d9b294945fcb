//! Reads local block files for DataFusion's Parquet source on the query thread itself.
//!
//! DataFusion reads a file through its object store; the local-filesystem store hands every
//! read to tokio's blocking pool and wakes the query task when it is done, so a query over one
//! small block file paid two thread hand-offs per column-chunk read. Block files are local,
//! immutable and small (one metric of one block), their pages are nearly always in the page
//! cache (written or read recently), and each read is one column chunk: a `pread` here takes
//! microseconds, less than the hand-off. So local files are read in place, on the query
//! runtime's own thread. A read that does go to a slow disk holds that query thread for its
//! duration, which can delay other queries but never scraping, the WAL or rule evaluation: they
//! run on other threads (DESIGN.md §7).
//!
//! Measured on the query benchmark's max-per-instance over 1 h (one 2 h block; 320 queries,
//! `perf stat -p` on the server, four alternations of the two builds): context switches 28 →
//! 12.3–13 per query; server CPU 4.6–5.0 → 3.7–4.7 ms per query (a noisy machine). In the whole
//! benchmark the gain is within the noise (ratio to Prometheus 1.98 → 1.79 in one pair of runs,
//! 1.84 for both in a pair in the other order). The histogram p99 (two partitions over a large
//! file, medians of 30): 121 and 116 ms → 114 and 112 ms, 225 → 77 context switches per query.
//!
//! Metadata (footer and page index) still comes from the runtime's metadata cache, as with
//! DataFusion's `CachedParquetFileReaderFactory`, filled through the object store on a miss;
//! remote files keep DataFusion's reader. Written here because DataFusion has no reader that
//! skips the blocking pool; it is the part of its reader that reads data, done synchronously.

use std::collections::HashMap;
use std::fs::File;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::parquet::metadata::DFParquetMetadata;
use datafusion::datasource::physical_plan::parquet::{
    ParquetFileMetrics, ParquetFileReaderFactory,
};
use datafusion::execution::cache::cache_manager::FileMetadataCache;
use datafusion::parquet::arrow::arrow_reader::ArrowReaderOptions;
use datafusion::parquet::arrow::async_reader::AsyncFileReader;
use datafusion::parquet::errors::ParquetError;
use datafusion::parquet::file::metadata::ParquetMetaData;
use datafusion::physical_plan::metrics::ExecutionPlanMetricsSet;
use futures::FutureExt;
use futures::future::BoxFuture;
use object_store::ObjectStore;

/// Gives DataFusion's Parquet source a [`LocalBlockFile`] reader for each file of one scan.
#[derive(Debug)]
pub(crate) struct LocalBlockFiles {
    /// The local filesystem store, for metadata not in the cache.
    store: Arc<dyn ObjectStore>,
    metadata_cache: Arc<FileMetadataCache>,
    /// Each file's path on disk, by the location DataFusion names it with.
    paths: HashMap<String, PathBuf>,
}

impl LocalBlockFiles {
    /// Readers for the files `paths` maps (location as in the scan's `PartitionedFile`s →
    /// path on disk).
    pub(crate) fn new(
        store: Arc<dyn ObjectStore>,
        metadata_cache: Arc<FileMetadataCache>,
        paths: HashMap<String, PathBuf>,
    ) -> Self {
        Self {
            store,
            metadata_cache,
            paths,
        }
    }
}

impl ParquetFileReaderFactory for LocalBlockFiles {
    fn create_reader(
        &self,
        partition_index: usize,
        file: PartitionedFile,
        metadata_size_hint: Option<usize>,
        metrics: &ExecutionPlanMetricsSet,
    ) -> datafusion::common::Result<Box<dyn AsyncFileReader + Send>> {
        let location = file.object_meta.location.as_ref();
        let Some(path) = self.paths.get(location).cloned() else {
            return Err(datafusion::common::DataFusionError::Internal(format!(
                "block file {location} is not part of this scan"
            )));
        };
        Ok(Box::new(LocalBlockFile {
            metrics: ParquetFileMetrics::new(partition_index, location, metrics),
            store: Arc::clone(&self.store),
            metadata_cache: Arc::clone(&self.metadata_cache),
            metadata_size_hint,
            file,
            path,
            open: None,
        }))
    }
}

/// One local block file, opened at its first data read.
struct LocalBlockFile {
    metrics: ParquetFileMetrics,
    store: Arc<dyn ObjectStore>,
    metadata_cache: Arc<FileMetadataCache>,
    metadata_size_hint: Option<usize>,
    file: PartitionedFile,
    path: PathBuf,
    /// The file and its length on disk, once opened.
    open: Option<(File, u64)>,
}

impl LocalBlockFile {
    fn read(&mut self, range: Range<u64>) -> Result<Bytes, ParquetError> {
        let path = &self.path;
        let (file, file_len) = match &mut self.open {
            Some(open) => &*open,
            open @ None => {
                let file = File::open(path).map_err(|e| io_error(path, e))?;
                let len = file.metadata().map_err(|e| io_error(path, e))?.len();
                open.insert((file, len))
            }
        };
        // The range comes from the file's own metadata: a damaged footer may ask for anything,
        // so it is checked against the file before a buffer is allocated for it.
        let len = match range.end.checked_sub(range.start).map(usize::try_from) {
            Some(Ok(n)) if range.end <= *file_len => n,
            _ => {
                return Err(ParquetError::General(format!(
                    "block file {}: byte range {range:?} is outside the file ({file_len} bytes)",
                    path.display()
                )));
            }
        };
        let mut buf = vec![0; len];
        file.read_exact_at(&mut buf, range.start)
            .map_err(|e| io_error(path, e))?;
        self.metrics.bytes_scanned.add(len);
        Ok(Bytes::from(buf))
    }
}

fn io_error(path: &std::path::Path, e: std::io::Error) -> ParquetError {
    ParquetError::External(Box::new(std::io::Error::new(
        e.kind(),
        format!("cannot read block file {}: {e}", path.display()),
    )))
}

impl AsyncFileReader for LocalBlockFile {
    fn get_bytes(&mut self, range: Range<u64>) -> BoxFuture<'_, Result<Bytes, ParquetError>> {
        let result = self.read(range);
        async move { result }.boxed()
    }

    fn get_byte_ranges(
        &mut self,
        ranges: Vec<Range<u64>>,
    ) -> BoxFuture<'_, Result<Vec<Bytes>, ParquetError>> {
        let result: Result<Vec<Bytes>, ParquetError> =
            ranges.into_iter().map(|r| self.read(r)).collect();
        async move { result }.boxed()
    }

    fn get_metadata<'a>(
        &'a mut self,
        options: Option<&'a ArrowReaderOptions>,
    ) -> BoxFuture<'a, Result<Arc<ParquetMetaData>, ParquetError>> {
        async move {
            DFParquetMetadata::new(self.store.as_ref(), &self.file.object_meta)
                .with_file_metadata_cache(Some(Arc::clone(&self.metadata_cache)))
                .with_metadata_size_hint(self.metadata_size_hint)
                .with_page_index_policy(options.map(|o| o.column_index_policy()))
                .fetch_metadata()
                .await
                .map_err(|e| {
                    ParquetError::General(format!(
                        "cannot read the metadata of block file {}: {e}",
                        self.path.display()
                    ))
                })
        }
        .boxed()
    }
}

impl Drop for LocalBlockFile {
    fn drop(&mut self) {
        // As DataFusion's reader does: the share of the file this reader read.
        self.metrics
            .scan_efficiency_ratio
            .add_part(self.metrics.bytes_scanned.value());
        self.metrics
            .scan_efficiency_ratio
            .set_total(self.file.object_meta.size as usize);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Int64Array, RecordBatch};
    use datafusion::execution::cache::cache_manager::CacheManager;
    use datafusion::execution::cache::cache_manager::CacheManagerConfig;
    use datafusion::parquet::arrow::ArrowWriter;
    use object_store::local::LocalFileSystem;

    use super::*;

    fn factory(path: &std::path::Path) -> (LocalBlockFiles, PartitionedFile) {
        let size = std::fs::metadata(path).map_or(0, |m| m.len());
        let file = PartitionedFile::new(path.to_string_lossy(), size);
        let paths = HashMap::from([(file.object_meta.location.to_string(), path.to_path_buf())]);
        let cache = CacheManager::try_new(&CacheManagerConfig::default())
            .unwrap()
            .get_file_metadata_cache();
        (
            LocalBlockFiles::new(Arc::new(LocalFileSystem::new()), cache, paths),
            file,
        )
    }

    #[tokio::test]
    async fn reads_ranges_and_metadata_in_place_and_counts_the_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.parquet");
        let batch = RecordBatch::try_from_iter([(
            "v",
            Arc::new(Int64Array::from_iter_values(0..1000)) as _,
        )])
        .unwrap();
        let mut writer =
            ArrowWriter::try_new(File::create(&path).unwrap(), batch.schema(), None).unwrap();
        writer.write(&batch).unwrap();
        writer.close().unwrap();
        let bytes = std::fs::read(&path).unwrap();

        let (files, file) = factory(&path);
        let metrics = ExecutionPlanMetricsSet::new();
        let mut reader = files.create_reader(0, file, None, &metrics).unwrap();
        assert_eq!(reader.get_bytes(0..4).await.unwrap(), &bytes[0..4]);
        let n = bytes.len() as u64;
        let parts = reader.get_byte_ranges(vec![4..10, n - 4..n]).await.unwrap();
        assert_eq!(parts[0], &bytes[4..10]);
        assert_eq!(&parts[1][..], b"PAR1");
        let metadata = reader.get_metadata(None).await.unwrap();
        assert_eq!(metadata.file_metadata().num_rows(), 1000);
        drop(reader);
        let scanned = metrics.clone_inner().sum_by_name("bytes_scanned");
        assert_eq!(scanned.map(|m| m.as_usize()), Some(4 + 6 + 4));
        // A range past the end is an error, not a short read, and a huge one (a damaged
        // footer) is refused before anything is allocated for it.
        let (files, file) = factory(&path);
        let mut reader = files.create_reader(0, file, None, &metrics).unwrap();
        // `10..4` is reversed on purpose: damaged metadata could give one.
        #[allow(clippy::reversed_empty_ranges)]
        for range in [n - 2..n + 10, 8..u64::MAX, 10..4] {
            let err = reader.get_bytes(range).await.unwrap_err().to_string();
            assert!(err.contains("outside the file"), "{err}");
        }
    }

    #[tokio::test]
    async fn a_file_gone_from_disk_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gone.parquet");
        let (files, file) = factory(&path);
        let metrics = ExecutionPlanMetricsSet::new();
        let mut reader = files.create_reader(0, file, None, &metrics).unwrap();
        let err = reader.get_bytes(0..4).await.unwrap_err().to_string();
        assert!(
            err.contains("cannot read block file") && err.contains("gone.parquet"),
            "{err}"
        );
        // A file the scan does not list gets no reader.
        let other = PartitionedFile::new("/elsewhere/x.parquet", 10);
        assert!(files.create_reader(0, other, None, &metrics).is_err());
    }
}
