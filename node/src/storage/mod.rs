//! Durable state behind a small trait, so the runtime can use SQLite and tests memory.

mod memory;
mod sqlite;

pub use memory::MemoryStore;
pub use sqlite::{SqliteLog, StorageError};

use crate::core::{Persistent, StorageOp};

/// Where a node keeps its log, epochs and commit point.
pub trait LogStore: Send {
    /// Everything persisted so far.
    fn load(&mut self) -> Result<Persistent, StorageError>;
    /// Carry out `ops` in order, atomically, and make them durable before returning.
    fn persist(&mut self, ops: &[StorageOp]) -> Result<(), StorageError>;
}

/// Applies `ops` to an in-memory image (shared by `MemoryStore` and tests).
pub fn apply_ops(state: &mut Persistent, ops: &[StorageOp]) {
    for op in ops {
        match op {
            StorageOp::SetAcceptedEpoch(e) => state.accepted_epoch = *e,
            StorageOp::SetCurrentEpoch(e) => state.current_epoch = *e,
            StorageOp::TruncateAfter(z) => state.log.retain(|e| e.zxid <= *z),
            StorageOp::Append(entries) => state.log.extend(entries.iter().cloned()),
            StorageOp::SetCommitted(z) => state.committed = *z,
        }
    }
}
