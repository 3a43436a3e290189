//! One node process per log file.
//!
//! Two processes writing the same log would each believe it holds the node's promises
//! (accepted epoch, acknowledged entries): the second one could vote or acknowledge against
//! what the first already promised. So a store holds an exclusive advisory lock on
//! `logs_<id>.db.lock` for its whole lifetime, and a second open — from another process or
//! the same one — is refused. The kernel drops the lock when the holder exits, however it
//! exits, so a crash never leaves the directory locked.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::StorageError;

/// The lock file that guards the log at `db_path`.
pub fn lock_path(db_path: &Path) -> PathBuf {
    let mut name = db_path.as_os_str().to_os_string();
    name.push(".lock");
    PathBuf::from(name)
}

/// Held while the store is open; released when dropped (or when the process dies).
#[derive(Debug)]
pub(super) struct FileLock {
    _file: File,
}

impl FileLock {
    /// Locks the log at `db_path`, or says who holds it.
    pub(super) fn acquire(db_path: &Path) -> Result<FileLock, StorageError> {
        let path = lock_path(db_path);
        let io = |source| StorageError::Io {
            path: path.clone(),
            source,
        };
        // Never truncated or removed: removing it could let a second process lock a fresh
        // file while the first still holds the old, unlinked one.
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                return Err(StorageError::Locked {
                    path: db_path.to_path_buf(),
                    pid: holder.trim().parse().ok(),
                });
            }
            Err(TryLockError::Error(e)) => return Err(io(e)),
        }
        // Only a hint for the message above (a pid can be reused), so not synced.
        file.set_len(0).map_err(io)?;
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        writeln!(file, "{}", std::process::id()).map_err(io)?;
        Ok(FileLock { _file: file })
    }
}

/// "pid 1234?" — the pid the holder wrote, which may since belong to another process.
pub(super) fn describe_holder(pid: &Option<u32>) -> String {
    match pid {
        Some(pid) => format!("pid {pid}?"),
        None => "pid unknown".to_string(),
    }
}
