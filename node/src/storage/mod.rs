//! Durable state behind a small trait, so the runtime can use SQLite and tests memory.

mod housekeeping;
mod lock;
mod memory;
mod sqlite;
mod stall;

pub use lock::lock_path;
pub use memory::MemoryStore;
pub use sqlite::{log_file_name, SqliteLog, StorageError};
pub use stall::{report_stalls, StorageWatch};

use guessgame_core::{Persistent, StorageOp};

/// Where a node keeps its log, epochs and commit point.
pub trait LogStore: Send {
    /// Everything persisted so far.
    fn load(&mut self) -> Result<Persistent, StorageError>;
    /// Carry out `ops` in order, atomically, and make them durable before returning.
    fn persist(&mut self, ops: &[StorageOp]) -> Result<(), StorageError>;
}
