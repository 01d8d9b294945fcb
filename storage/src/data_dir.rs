//! The data directory and its lock.
//!
//! A replica owns its data directory exclusively: [`DataDir::open`] creates the directory and
//! takes an advisory `flock` on `<dir>/lock`, which the kernel releases when the process
//! exits, however it exits (a `kill -9` leaves no stale lock behind). The file holds the
//! owner's pid so the refusal message can name it.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// Errors opening the data directory.
#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    /// The directory could not be created or the lock file opened.
    #[error("cannot open data directory {path}: {source}")]
    Io {
        /// The directory.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Another process holds the lock.
    #[error(
        "data directory {path} is in use by another Arrowhead process{holder}: each replica needs its own data directory"
    )]
    Locked {
        /// The directory.
        path: PathBuf,
        /// ` (pid N)` when the lock file names the holder.
        holder: String,
    },
}

/// An open, locked data directory. Dropping it releases the lock.
#[derive(Debug)]
pub struct DataDir {
    path: PathBuf,
    /// Held open for the lifetime of the replica: the flock lives as long as this handle.
    _lock: File,
}

impl DataDir {
    /// Creates `path` if needed and locks it, or says who holds it.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, DataDirError> {
        let path = path.as_ref().to_path_buf();
        let io = |source| DataDirError::Io {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(&path).map_err(io)?;
        let mut lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path.join("lock"))
            .map_err(io)?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut pid = String::new();
                let _ = lock.read_to_string(&mut pid);
                let pid = pid.trim();
                let holder = if pid.is_empty() {
                    String::new()
                } else {
                    format!(" (pid {pid})")
                };
                return Err(DataDirError::Locked { path, holder });
            }
            Err(TryLockError::Error(e)) => return Err(io(e)),
        }
        lock.set_len(0).map_err(io)?;
        lock.seek(SeekFrom::Start(0)).map_err(io)?;
        writeln!(lock, "{}", std::process::id()).map_err(io)?;
        Ok(Self { path, _lock: lock })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_open_is_refused_until_the_first_is_dropped() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        let first = DataDir::open(&dir).unwrap();
        let err = DataDir::open(&dir).unwrap_err().to_string();
        assert!(err.contains("in use by another Arrowhead process"), "{err}");
        assert!(
            err.contains(&format!("pid {}", std::process::id())),
            "{err}"
        );
        drop(first);
        DataDir::open(&dir).unwrap();
    }
}
