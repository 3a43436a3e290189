//! A `LogStore` in memory: what a crash keeps in the simulation.

use super::{LogStore, StorageError};
use guessgame_core::{Persistent, StorageOp};

#[derive(Clone, Debug, Default)]
pub struct MemoryStore {
    pub state: Persistent,
}

impl LogStore for MemoryStore {
    fn load(&mut self) -> Result<Persistent, StorageError> {
        Ok(self.state.clone())
    }

    /// `Persistent::apply` is the reference semantics of every op, `SaveSnapshot` included:
    /// the compacted entries leave the image at once.
    fn persist(&mut self, ops: &[StorageOp]) -> Result<(), StorageError> {
        self.state.apply(ops);
        Ok(())
    }
}
