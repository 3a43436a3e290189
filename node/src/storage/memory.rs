//! A `LogStore` in memory: what a crash keeps in the simulation.

use super::{apply_ops, LogStore, StorageError};
use crate::core::{Persistent, StorageOp};

#[derive(Clone, Debug, Default)]
pub struct MemoryStore {
    pub state: Persistent,
}

impl LogStore for MemoryStore {
    fn load(&mut self) -> Result<Persistent, StorageError> {
        Ok(self.state.clone())
    }

    fn persist(&mut self, ops: &[StorageOp]) -> Result<(), StorageError> {
        apply_ops(&mut self.state, ops);
        Ok(())
    }
}
