//! Plain data shared by the protocol core, the game and storage.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A member's name, as in the configuration (`node1`, …).
pub type NodeId = String;

/// ZooKeeper transaction id: (epoch, counter). Ordered by epoch, then counter.
/// A leader of epoch `e` writes `(e, 0)` (its NEWLEADER marker) first, then `(e, 1)`, `(e, 2)`, ….
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
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

/// One ensemble member: its id and the `host:port` its peers and clients reach it at.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Member {
    pub id: NodeId,
    pub address: String,
}

/// The ensemble's configuration: who votes, and who only receives the log.
///
/// It is replicated like any other state: an [`Op::Config`] entry in the log. A node always
/// uses the **latest configuration in its log**, committed or not (as Raft's single-server
/// changes do), and a leader proposes a change only when the previous one has committed and
/// it changes at most one voter, so any two configurations in use at the same time have
/// overlapping majorities.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Membership {
    /// Sorted by id.
    pub voters: Vec<Member>,
    /// Non-voting members (catching up before promotion); sorted by id.
    #[serde(default)]
    pub learners: Vec<Member>,
}

impl Membership {
    /// Every member votes (how a new ensemble starts).
    pub fn of_voters(mut voters: Vec<Member>) -> Membership {
        voters.sort();
        voters.dedup_by(|a, b| a.id == b.id);
        Membership {
            voters,
            learners: Vec::new(),
        }
    }
    pub fn is_voter(&self, id: &str) -> bool {
        self.voters.iter().any(|m| m.id == id)
    }
    pub fn is_learner(&self, id: &str) -> bool {
        self.learners.iter().any(|m| m.id == id)
    }
    pub fn contains(&self, id: &str) -> bool {
        self.is_voter(id) || self.is_learner(id)
    }
    /// Majority of the voters.
    pub fn quorum(&self) -> usize {
        crate::rules::majority(self.voters.len())
    }
    pub fn voter_ids(&self) -> impl Iterator<Item = &NodeId> {
        self.voters.iter().map(|m| &m.id)
    }
    /// Voters, then learners.
    pub fn all(&self) -> impl Iterator<Item = &Member> {
        self.voters.iter().chain(self.learners.iter())
    }
    pub fn member(&self, id: &str) -> Option<&Member> {
        self.all().find(|m| m.id == id)
    }
    /// A copy with `member` as a learner (and not a voter).
    pub fn with_learner(&self, member: Member) -> Membership {
        let mut next = self.without(&member.id);
        next.learners.push(member);
        next.learners.sort();
        next
    }
    /// A copy with `id` promoted from learner to voter.
    pub fn with_voter(&self, member: Member) -> Membership {
        let mut next = self.without(&member.id);
        next.voters.push(member);
        next.voters.sort();
        next
    }
    /// A copy without `id`.
    pub fn without(&self, id: &str) -> Membership {
        Membership {
            voters: self.voters.iter().filter(|m| m.id != id).cloned().collect(),
            learners: self
                .learners
                .iter()
                .filter(|m| m.id != id)
                .cloned()
                .collect(),
        }
    }
}

impl fmt::Display for Membership {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let voters: Vec<&str> = self.voters.iter().map(|m| m.id.as_str()).collect();
        write!(f, "voters [{}]", voters.join(","))?;
        if !self.learners.is_empty() {
            let learners: Vec<&str> = self.learners.iter().map(|m| m.id.as_str()).collect();
            write!(f, " learners [{}]", learners.join(","))?;
        }
        Ok(())
    }
}

/// What a log entry does to the game.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Op {
    /// First entry of every epoch (ZAB's NEWLEADER). Committing it commits the whole
    /// history the new leader synced.
    NewLeader { leader: NodeId },
    /// Opens `round` with `value` as its target (written by `client`, as its request `seq`).
    Target {
        round: u64,
        value: u32,
        client: String,
        /// The client's request number ([`crate::game::Requests`]); 0: none (not deduplicated).
        #[serde(default, skip_serializing_if = "is_zero")]
        seq: u64,
    },
    /// A guess recorded in `round` (`client`'s request `seq`, 0: none).
    Guess {
        round: u64,
        client: String,
        value: u32,
        #[serde(default, skip_serializing_if = "is_zero")]
        seq: u64,
    },
    /// The result of a closed round, decided by the leader when it was proposed.
    Result(RoundResult),
    /// The ensemble's configuration from this entry on (no effect on the game).
    Config(Membership),
}

fn is_zero(n: &u64) -> bool {
    *n == 0
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
