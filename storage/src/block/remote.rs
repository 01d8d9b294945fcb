//! The object-store tier: finished blocks moved to a bucket (`storage.object_store`).
//!
//! ```text
//!  <data>/blocks/<id>/      cut, merged, imported: written with fsync + rename (local disk)
//!        │ once no merge will touch it again (its largest compaction window is complete)
//!        ▼ upload: every Parquet file, then meta.json last
//!  <url>/<id>/…             served from the bucket; the local copy is deleted
//! ```
//!
//! * **Same layout** as `<data>/blocks`: `<prefix>/<id>/meta.json` and one Parquet file per
//!   metric, so DuckDB (`read_parquet('s3://bucket/prefix/*/up.parquet')`), Spark or Trino
//!   read a bucket without Arrowhead.
//! * **Completeness.** A block in the bucket counts only once its `meta.json` is there, and
//!   that is written last; an upload cut short is repeated (objects are overwritten) from the
//!   local copy, which is deleted only after `meta.json` is stored. At start-up a block
//!   present in both places is served from the bucket and its local copy deleted.
//! * **Why local first.** Object stores have no rename and no fsync: writing cuts locally
//!   keeps the crash guarantees of `block.md`, and blocks are moved only when final, so
//!   compaction rarely reads back from the bucket (it can: a merge reads its inputs wherever
//!   they are).
//! * **Runtime.** `object_store` is async; storage code runs on blocking threads. Calls go to a
//!   small runtime owned here (one worker), so they work from any thread, and connections
//!   opened for block moves stay serviced.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use tracing::info;

use super::{Block, BlockMeta, META_FILE, META_VERSION};
use crate::config::ObjectStoreConfig;

/// Errors of the object-store tier.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    /// `storage.object_store` is not usable as written.
    #[error("storage.object_store: {0}")]
    Config(String),
    /// The store refused or failed an operation.
    #[error("object store {url}: {source}")]
    Store {
        /// The store's URL (no credentials: those are options).
        url: String,
        /// The underlying error.
        source: object_store::Error,
    },
    /// A local file could not be read for upload.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
}

/// What [`RemoteStore::list`] finds: the blocks served, and (name, reason) of directories
/// that are not.
pub type Listing = (Vec<BlockMeta>, Vec<(String, String)>);

/// A bucket (or directory) holding finished blocks under a prefix.
pub struct RemoteStore {
    store: Arc<dyn ObjectStore>,
    /// `scheme://bucket`: where DataFusion finds `store`.
    root: url::Url,
    /// The configured URL, for messages.
    url: String,
    prefix: ObjectPath,
    /// Taken at drop, to shut down without blocking (drop may run on an async thread).
    runtime: Option<tokio::runtime::Runtime>,
}

impl Drop for RemoteStore {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl std::fmt::Debug for RemoteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteStore")
            .field("url", &self.url)
            .finish()
    }
}

impl RemoteStore {
    /// Connects to the store of `config` (no request is made yet). Unknown option names are
    /// refused, not ignored.
    pub fn open(config: &ObjectStoreConfig) -> Result<Self, RemoteError> {
        let (store, root, prefix) = build(config)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("arrowhead-objstore")
            .enable_all()
            .build()
            .map_err(|e| RemoteError::Config(format!("cannot start its runtime: {e}")))?;
        Ok(Self {
            store,
            root,
            url: config.url.clone(),
            prefix,
            runtime: Some(runtime),
        })
    }

    /// The store, for DataFusion to read block files from.
    pub fn store(&self) -> Arc<dyn ObjectStore> {
        Arc::clone(&self.store)
    }

    /// `scheme://bucket/`: the URL DataFusion registers [`RemoteStore::store`] under.
    pub fn root(&self) -> &url::Url {
        &self.root
    }

    /// The configured URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Where a block file lives in the store.
    pub fn path(&self, id: &str, file: &str) -> ObjectPath {
        self.prefix.clone().join(id).join(file)
    }

    /// Runs `fut` on this store's runtime and waits for it; callable from any thread.
    fn run<T: Send + 'static>(
        &self,
        fut: impl Future<Output = Result<T, object_store::Error>> + Send + 'static,
    ) -> Result<T, RemoteError> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let runtime = self.runtime.as_ref().expect("runtime lives until drop");
        runtime.spawn(async move {
            let _ = tx.send(fut.await);
        });
        let out = rx.recv().unwrap_or_else(|_| {
            Err(object_store::Error::Generic {
                store: "arrowhead",
                source: "the object store runtime stopped".into(),
            })
        });
        out.map_err(|source| RemoteError::Store {
            url: self.url.clone(),
            source,
        })
    }

    /// The blocks in the store with their metadata: those with a `meta.json` that parses,
    /// names its own directory, and whose files are all there with the recorded sizes.
    /// Others (an upload cut short, a foreign directory) are skipped and returned by name
    /// with the reason.
    pub fn list(&self) -> Result<Listing, RemoteError> {
        let store = self.store();
        let prefix = self.prefix.clone();
        let objects = self.run(async move {
            store
                .list(Some(&prefix))
                .try_collect::<Vec<object_store::ObjectMeta>>()
                .await
        })?;
        // id → file → size
        let mut dirs: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
        let depth = self.prefix.parts().count();
        for o in objects {
            let parts: Vec<String> = o.location.parts().map(|p| p.as_ref().to_string()).collect();
            if parts.len() == depth + 2 {
                dirs.entry(parts[depth].clone())
                    .or_default()
                    .insert(parts[depth + 1].clone(), o.size);
            }
        }
        let mut metas = Vec::new();
        let mut skipped = Vec::new();
        for (id, files) in dirs {
            if !files.contains_key(META_FILE) {
                skipped.push((id, format!("no {META_FILE} (an upload cut short)")));
                continue;
            }
            let bytes = self.get(&id, META_FILE)?;
            let meta: BlockMeta = match serde_json::from_slice(&bytes) {
                Ok(m) => m,
                Err(e) => {
                    skipped.push((id, format!("invalid {META_FILE}: {e}")));
                    continue;
                }
            };
            let problem = if meta.version != META_VERSION || meta.id != id {
                Some(format!(
                    "{META_FILE} is for block {:?} v{}",
                    meta.id, meta.version
                ))
            } else {
                meta.metrics
                    .iter()
                    .find_map(|(metric, f)| match files.get(&f.file) {
                        Some(&size) if size == f.bytes && !f.file.contains('/') => None,
                        Some(&size) => {
                            Some(format!("metric {metric:?}: {} has {size} bytes", f.file))
                        }
                        None => Some(format!("metric {metric:?}: {} is missing", f.file)),
                    })
            };
            match problem {
                Some(reason) => skipped.push((id, reason)),
                None => metas.push(meta),
            }
        }
        Ok((metas, skipped))
    }

    /// One object of a block, whole.
    pub fn get(&self, id: &str, file: &str) -> Result<Bytes, RemoteError> {
        let store = self.store();
        let path = self.path(id, file);
        self.run(async move { store.get(&path).await?.bytes().await })
    }

    /// Copies a local block into the store: every file, then `meta.json`.
    pub fn upload(&self, block: &Block) -> Result<(), RemoteError> {
        let mut files: Vec<&str> = block
            .meta
            .metrics
            .values()
            .map(|f| f.file.as_str())
            .collect();
        files.push(META_FILE);
        for file in files {
            let local = block.dir.join(file);
            let store = self.store();
            let path = self.path(&block.meta.id, file);
            let read = local.clone();
            let result = self.run(async move {
                let mut source = tokio::fs::File::open(&read).await.map_err(|e| {
                    object_store::Error::Generic {
                        store: "local",
                        source: Box::new(e),
                    }
                })?;
                // A single PUT for small files, a multipart upload for large ones.
                let mut sink = object_store::buffered::BufWriter::new(store, path);
                tokio::io::copy(&mut source, &mut sink).await.map_err(|e| {
                    object_store::Error::Generic {
                        store: "upload",
                        source: Box::new(e),
                    }
                })?;
                tokio::io::AsyncWriteExt::shutdown(&mut sink)
                    .await
                    .map_err(|e| object_store::Error::Generic {
                        store: "upload",
                        source: Box::new(e),
                    })
            });
            if let Err(RemoteError::Store { source, .. }) = &result
                && let object_store::Error::Generic { store: "local", .. } = source
            {
                return Err(RemoteError::Io {
                    path: local,
                    source: std::io::Error::other(source.to_string()),
                });
            }
            result?;
        }
        info!(block = %block.meta.id, url = %self.url, bytes = block.meta.bytes, "block moved to the object store");
        Ok(())
    }

    /// Deletes a block's objects, `meta.json` first (so a half-deleted block is not served).
    pub fn delete(&self, block: &BlockMeta) -> Result<(), RemoteError> {
        let mut paths = vec![self.path(&block.id, META_FILE)];
        paths.extend(
            block
                .metrics
                .values()
                .map(|f| self.path(&block.id, &f.file)),
        );
        for path in paths {
            let store = self.store();
            match self.run(async move { store.delete(&path).await }) {
                Ok(())
                | Err(RemoteError::Store {
                    source: object_store::Error::NotFound { .. },
                    ..
                }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Writes an object (tests; `meta.json` of a block put aside).
    pub fn put(&self, id: &str, file: &str, bytes: Bytes) -> Result<(), RemoteError> {
        let store = self.store();
        let path = self.path(id, file);
        self.run(async move { store.put(&path, PutPayload::from(bytes)).await.map(|_| ()) })
    }
}

/// The store, its root URL and the prefix of `config`, checked (see [`RemoteStore::open`]).
fn build(
    config: &ObjectStoreConfig,
) -> Result<(Arc<dyn ObjectStore>, url::Url, ObjectPath), RemoteError> {
    let url = url::Url::parse(&config.url)
        .map_err(|e| RemoteError::Config(format!("url {:?}: {e}", config.url)))?;
    let scheme = url.scheme().to_string();
    let known = |key: &str| -> bool {
        match scheme.as_str() {
            "s3" | "s3a" => key.parse::<object_store::aws::AmazonS3ConfigKey>().is_ok(),
            "gs" => key.parse::<object_store::gcp::GoogleConfigKey>().is_ok(),
            "az" | "azure" | "abfs" | "abfss" => {
                key.parse::<object_store::azure::AzureConfigKey>().is_ok()
            }
            _ => false,
        }
    };
    if !matches!(
        scheme.as_str(),
        "s3" | "s3a" | "gs" | "az" | "azure" | "abfs" | "abfss" | "file"
    ) {
        return Err(RemoteError::Config(format!(
            "url {:?}: scheme {scheme:?} is not supported (s3, gs, az, file)",
            config.url
        )));
    }
    if let Some(bad) = config.options.keys().find(|k| !known(k)) {
        return Err(RemoteError::Config(format!(
            "unknown option {bad:?} for a {scheme}:// store"
        )));
    }
    // The cloud's environment variables first, the config's options over them.
    let mut options: BTreeMap<String, String> = std::env::vars()
        .filter(|(k, _)| {
            let k = k.to_ascii_uppercase();
            (k.starts_with("AWS_") || k.starts_with("GOOGLE_") || k.starts_with("AZURE_"))
                && known(&k.to_ascii_lowercase())
        })
        .map(|(k, v)| (k.to_ascii_lowercase(), v))
        .collect();
    options.extend(config.options.clone());
    let store_err = |source: object_store::Error| RemoteError::Store {
        url: config.url.clone(),
        source,
    };
    // A bounded retry: an unreachable store is reported within seconds (at start-up the
    // bucket is listed, and a block move is retried at the next pass anyway).
    let retry = object_store::RetryConfig {
        max_retries: 4,
        retry_timeout: std::time::Duration::from_secs(20),
        ..Default::default()
    };
    macro_rules! cloud {
        ($builder:ty, $key:ty) => {{
            let builder = options.iter().fold(
                <$builder>::new().with_url(url.as_str()).with_retry(retry),
                |b, (k, v)| match k.parse::<$key>() {
                    Ok(key) => b.with_config(key, v),
                    Err(_) => b,
                },
            );
            Arc::new(builder.build().map_err(store_err)?) as Arc<dyn ObjectStore>
        }};
    }
    let (_, prefix) =
        object_store::ObjectStoreScheme::parse(&url).map_err(|e| store_err(e.into()))?;
    let prefix = ObjectPath::parse(prefix).map_err(|e| store_err(e.into()))?;
    let store: Arc<dyn ObjectStore> = match scheme.as_str() {
        "s3" | "s3a" => cloud!(
            object_store::aws::AmazonS3Builder,
            object_store::aws::AmazonS3ConfigKey
        ),
        "gs" => cloud!(
            object_store::gcp::GoogleCloudStorageBuilder,
            object_store::gcp::GoogleConfigKey
        ),
        "file" => Arc::new(object_store::local::LocalFileSystem::new()),
        _ => cloud!(
            object_store::azure::MicrosoftAzureBuilder,
            object_store::azure::AzureConfigKey
        ),
    };
    let mut root = url.clone();
    root.set_path("");
    root.set_query(None);
    root.set_fragment(None);
    if scheme == "file" {
        // DataFusion's local store is rooted at `/`: objects are named by absolute path.
        root = url::Url::parse("file:///").expect("valid URL");
    }
    Ok((store, root, prefix))
}

/// Checks `storage.object_store` without connecting: the URL parses, its scheme is one this
/// build supports, and every option name is known for it.
pub fn check_config(config: &ObjectStoreConfig) -> Result<(), String> {
    build(config).map(|_| ()).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests;
