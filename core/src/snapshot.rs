//! Snapshots: the applied state at a committed zxid, which replaces the log below it.
//!
//! A node snapshots its committed state every [`SnapshotPolicy::every_entries`] entries (or
//! `every_bytes`), keeps [`SnapshotPolicy::retain_entries`] entries below the snapshot (so a
//! follower that lags a little still gets a DIFF), and drops the rest of its history. A
//! follower behind the retained log receives the leader's snapshot in chunks (ZooKeeper's
//! SNAP, Raft's InstallSnapshot), then the DIFF. The same encoding is the backup file's body.

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::game::Game;
use crate::types::{Entry, Membership, Op, Zxid};

/// The committed state at `zxid`: the game and the configuration in use there.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// The last entry the snapshot covers (always committed).
    pub zxid: Zxid,
    pub game: Game,
    /// The configuration at `zxid` (the latest `Op::Config` at or below it) and its entry's
    /// zxid (ZERO: no configuration entry yet, the bootstrap one).
    pub config_zxid: Zxid,
    pub config: Membership,
}

#[derive(Debug, Error, PartialEq, Eq)]
#[error("not a guessgame snapshot: {0}")]
pub struct SnapshotError(pub String);

impl Snapshot {
    /// The wire and file form (JSON: the state is small, and a human can read a backup).
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a snapshot always serializes")
    }

    pub fn decode(bytes: &[u8]) -> Result<Snapshot, SnapshotError> {
        let s: Snapshot =
            serde_json::from_slice(bytes).map_err(|e| SnapshotError(e.to_string()))?;
        if s.game.applied > s.zxid {
            return Err(SnapshotError(format!(
                "its game was applied up to {} but the snapshot claims {}",
                s.game.applied, s.zxid
            )));
        }
        if s.config_zxid > s.zxid {
            return Err(SnapshotError(format!(
                "its configuration entry {} is after the snapshot {}",
                s.config_zxid, s.zxid
            )));
        }
        Ok(s)
    }
}

/// When to snapshot, how much log to keep, and how big the pieces of a catch-up are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotPolicy {
    /// Snapshot once this many entries were committed since the last snapshot (ZooKeeper's
    /// `snapCount`).
    pub every_entries: usize,
    /// …or once the entries committed since the last snapshot take about this many bytes.
    pub every_bytes: u64,
    /// Entries kept below the snapshot, so that a follower a little behind gets a DIFF.
    pub retain_entries: usize,
    /// Size of one piece of a snapshot sent to a follower.
    pub chunk_bytes: usize,
    /// Most entries (and about most bytes) in one DIFF message; the next follows its `Ack`.
    pub diff_entries: usize,
    pub diff_bytes: u64,
}

impl Default for SnapshotPolicy {
    fn default() -> Self {
        SnapshotPolicy {
            every_entries: 10_000,
            every_bytes: 8 << 20,
            retain_entries: 5_000,
            chunk_bytes: 1 << 20,
            diff_entries: 4_096,
            diff_bytes: 1 << 20,
        }
    }
}

/// About how many bytes `entry` takes on the wire and on disk (for the byte limits above).
pub fn approx_size(entry: &Entry) -> u64 {
    let body = match &entry.op {
        Op::NewLeader { leader } => leader.len(),
        Op::Target { client, .. } | Op::Guess { client, .. } => client.len() + 8,
        Op::Result(r) => 16 + r.winner.as_ref().map_or(0, |(c, _)| c.len()),
        Op::Config(m) => m
            .all()
            .map(|m| m.id.len() + m.address.len() + 8)
            .sum::<usize>(),
    };
    (32 + body) as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Member;

    #[test]
    fn a_snapshot_survives_encoding_and_garbage_is_refused() {
        let mut game = Game::default();
        game.apply(&Entry {
            zxid: Zxid::new(1, 2),
            op: Op::Target {
                round: 1,
                value: 40,
                client: "c1".into(),
                seq: 0,
            },
        });
        let s = Snapshot {
            zxid: Zxid::new(1, 3),
            game,
            config_zxid: Zxid::new(1, 1),
            config: Membership::of_voters(vec![Member {
                id: "node1".into(),
                address: "127.0.0.1:7001".into(),
            }]),
        };
        assert_eq!(Snapshot::decode(&s.encode()).unwrap(), s);
        assert!(Snapshot::decode(b"hello").is_err());
        let mut wrong = s.clone();
        wrong.zxid = Zxid::new(1, 1);
        assert!(Snapshot::decode(&wrong.encode()).is_err());
    }
}
