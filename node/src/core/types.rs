//! Plain data shared by the protocol core, the game and storage.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A member's name, as in the configuration (`node1`, …).
pub type NodeId = String;

/// ZooKeeper transaction id: (epoch, counter). Ordered by epoch, then counter.
/// A leader of epoch `e` writes `(e, 0)` (its NEWLEADER marker) first, then `(e, 1)`, `(e, 2)`, ….
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Zxid {
    pub epoch: u64,
    pub counter: u64,
}

impl Zxid {
    /// "Nothing logged yet".
    pub const ZERO: Zxid = Zxid {
        epoch: 0,
        counter: 0,
    };

    pub const fn new(epoch: u64, counter: u64) -> Self {
        Zxid { epoch, counter }
    }
}

impl fmt::Display for Zxid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.epoch, self.counter)
    }
}

/// The outcome of a closed round: the guess closest to the round's target
/// (ties go to the earliest committed guess).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoundResult {
    pub round: u64,
    pub target: u32,
    /// `(client, guess)`; `None` when nobody guessed.
    pub winner: Option<(String, u32)>,
}

/// What a log entry does to the game.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Op {
    /// First entry of every epoch (ZAB's NEWLEADER). Committing it commits the whole
    /// history the new leader synced.
    NewLeader { leader: NodeId },
    /// Opens `round` with `value` as its target (written by `client`).
    Target {
        round: u64,
        value: u32,
        client: String,
    },
    /// A guess recorded in `round`.
    Guess {
        round: u64,
        client: String,
        value: u32,
    },
    /// The result of a closed round, decided by the leader when it was proposed.
    Result(RoundResult),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub zxid: Zxid,
    pub op: Op,
}

/// What a candidate is ranked by, bully-style: last *logged* zxid, then node id.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Credentials {
    pub last_zxid: Zxid,
    pub node_id: NodeId,
}
