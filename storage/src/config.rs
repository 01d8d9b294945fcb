//! The `storage:` section of `arrowhead.yml` (DESIGN.md §5).
//!
//! Every key is parsed and validated now. The head acts on `path` and `max_series`; the WAL,
//! block, retention and object-store keys are carried for the durable-storage work and keep
//! their documented defaults until then.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::units::{ByteSize, Duration};

/// Storage settings. Field docs say what each one controls.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// The data directory: locked by one replica at a time.
    pub path: PathBuf,
    /// How often the head is cut and flushed to a Parquet block.
    pub block_duration: Duration,
    /// Delete blocks older than this (`0` = keep by age forever).
    pub retention: Duration,
    /// Delete the oldest blocks while all blocks together exceed this (unset = no size bound).
    pub retention_size: Option<ByteSize>,
    /// Bound on the data a crash may lose: the WAL is fsynced this often.
    pub wal_sync_interval: Duration,
    /// Cap on active head series; new series beyond it are rejected and counted (0 = off).
    pub max_series: u64,
    /// Where blocks go for long-term storage (unset = the local data directory).
    pub object_store: Option<ObjectStoreConfig>,
}

/// `storage.object_store`: a bucket URL plus backend options, passed through to `object_store`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct ObjectStoreConfig {
    /// e.g. `s3://bucket/prefix`, `gs://bucket`, `az://container`, `file:///mnt/blocks`.
    pub url: String,
    /// Backend options (region, endpoint, credentials file, ...), as `object_store` names them.
    #[serde(flatten)]
    pub options: std::collections::BTreeMap<String, String>,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            path: PathBuf::from("./data"),
            block_duration: Duration::from_secs(600),
            retention: Duration::from_secs(15 * 24 * 3600),
            retention_size: None,
            wal_sync_interval: Duration::from_secs(1),
            max_series: 0,
            object_store: None,
        }
    }
}

impl StorageConfig {
    /// Settings for tests: the given directory, otherwise defaults.
    pub fn test_config(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            ..Self::default()
        }
    }

    /// Checks the relations between keys; the message names the key.
    pub fn validate(&self) -> Result<(), String> {
        if self.block_duration.get().is_zero() {
            return Err("storage.block_duration: must be greater than 0".into());
        }
        if self.wal_sync_interval.get().is_zero() {
            return Err("storage.wal_sync_interval: must be greater than 0".into());
        }
        if self.path.as_os_str().is_empty() {
            return Err("storage.path: must not be empty".into());
        }
        Ok(())
    }
}
