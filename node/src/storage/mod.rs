//! Durable state behind a small trait, so the runtime can use SQLite and tests memory.

mod checkpoint;
mod memory;
mod sqlite;

pub use memory::MemoryStore;
pub use sqlite::{SqliteLog, StorageError};

use guessgame_core::{Persistent, StorageOp};

/// Where a node keeps its log, epochs and commit point.
pub trait LogStore: Send {
    /// Everything persisted so far.
    fn load(&mut self) -> Result<Persistent, StorageError>;
    /// Carry out `ops` in order, atomically, and make them durable before returning.
    fn persist(&mut self, ops: &[StorageOp]) -> Result<(), StorageError>;
}
