//! The `storage:` section of `arrowhead.yml` (DESIGN.md §5).
//!
//! Every key is parsed and validated. `path` holds the WAL and the blocks, `block_duration`
//! paces block cuts, `retention` and `retention_size` delete whole blocks,
//! `wal_sync_interval` paces WAL fsyncs, `max_series` caps the head, `object_store` moves
//! finished blocks to a bucket.

use std::path::PathBuf;

use serde::{Deserialize, Deserializer, Serialize};

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
    /// Where finished blocks go for long-term storage (unset = they stay in the data
    /// directory).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub object_store: Option<ObjectStoreConfig>,
}

/// `storage.object_store`: a bucket (or directory) that finished blocks move to, in the same
/// layout as `<data>/blocks`, so Spark, Trino or DuckDB read them in place.
#[derive(Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ObjectStoreConfig {
    /// `s3://bucket/prefix`, `gs://bucket/prefix`, `az://container/prefix` or
    /// `file:///absolute/dir`.
    pub url: String,
    /// Store options by `object_store` key (`endpoint`, `region`, `access_key_id`,
    /// `secret_access_key`, `allow_http`, …). The cloud's usual environment variables
    /// (`AWS_*`, `GOOGLE_*`, `AZURE_*`) are read too; options given here win.
    #[serde(default)]
    pub options: std::collections::BTreeMap<String, String>,
}

impl std::fmt::Debug for ObjectStoreConfig {
    // Options may hold secrets: only their names are shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectStoreConfig")
            .field("url", &self.url)
            .field("options", &self.options.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// A key that this version recognises but does not implement yet. Its presence in a config
/// file is an error naming the key and line (the YAML loader adds both), never silently
/// ignored: a user who sets it expects it to act.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct NotSupportedYet;

impl<'de> Deserialize<'de> for NotSupportedYet {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Fail from inside a visitor, so the YAML deserializer attaches this key's own line
        // and path to the error (failing before visiting would report the parent's).
        struct Refuse;
        fn refuse<E: serde::de::Error>() -> Result<NotSupportedYet, E> {
            Err(E::custom(
                "not supported yet by this version of Arrowhead; remove this key",
            ))
        }
        impl<'de> serde::de::Visitor<'de> for Refuse {
            type Value = NotSupportedYet;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("nothing (this key is not supported yet)")
            }
            fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<Self::Value, E> {
                refuse()
            }
            fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<Self::Value, E> {
                refuse()
            }
            fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<Self::Value, E> {
                refuse()
            }
            fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<Self::Value, E> {
                refuse()
            }
            fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<Self::Value, E> {
                refuse()
            }
            fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
                refuse()
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                _: A,
            ) -> Result<Self::Value, A::Error> {
                refuse()
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                _: A,
            ) -> Result<Self::Value, A::Error> {
                refuse()
            }
        }
        d.deserialize_any(Refuse)
    }
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
        if let Some(store) = &self.object_store {
            crate::block::remote::check_config(store)?;
        }
        Ok(())
    }
}
