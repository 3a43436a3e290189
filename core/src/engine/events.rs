//! What goes into the engine and what comes out of it: events, outputs, the durable image
//! it starts from, and the client requests and answers it carries.

use crate::game::GameError;
use crate::message::Message;
use crate::snapshot::Snapshot;
use crate::types::{Entry, Member, Membership, NodeId, RoundResult, Zxid};

/// Identifies a client request inside one runtime.
pub type RequestId = u64;

#[derive(Clone, Debug)]
pub struct Timing {
    pub heartbeat_ms: u64,
    pub election_timeout_ms: u64,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            heartbeat_ms: 100,
            election_timeout_ms: 1000,
        }
    }
}

/// What survived on disk: handed to [`Engine::new`] at start.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Persistent {
    pub accepted_epoch: u64,
    pub current_epoch: u64,
    /// The latest snapshot (the committed state at its zxid), if one was taken.
    pub snapshot: Option<Snapshot>,
    /// The log holds the entries after this zxid (ZERO: the whole history). Never above the
    /// snapshot's zxid: the entries between it and the snapshot are the retained margin.
    pub log_start: Zxid,
    /// The entries after `log_start`, in zxid order.
    pub log: Vec<Entry>,
    pub committed: Zxid,
}

impl Persistent {
    /// Carries out `ops` on this in-memory image, in order (what a store holds after them).
    pub fn apply(&mut self, ops: &[StorageOp]) {
        for op in ops {
            match op {
                StorageOp::SetAcceptedEpoch(e) => self.accepted_epoch = *e,
                StorageOp::SetCurrentEpoch(e) => self.current_epoch = *e,
                StorageOp::TruncateAfter(z) => self.log.retain(|e| e.zxid <= *z),
                StorageOp::Append(entries) => self.log.extend(entries.iter().cloned()),
                StorageOp::SetCommitted(z) => self.committed = *z,
                StorageOp::SaveSnapshot {
                    snapshot,
                    log_start,
                } => {
                    self.snapshot = Some(snapshot.clone());
                    self.log_start = self.log_start.max(*log_start);
                    let start = self.log_start;
                    self.log.retain(|e| e.zxid > start);
                }
            }
        }
    }
}

/// A change to durable state. Carried out atomically per batch by the storage layer.
// `SaveSnapshot` (a whole game state inline) is the large one; it comes once per snapshot,
// against thousands of the others, so boxing it would buy nothing measurable.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StorageOp {
    SetAcceptedEpoch(u64),
    /// Recorded only after the entries of the sync it concludes.
    SetCurrentEpoch(u64),
    /// Remove every entry after this zxid.
    TruncateAfter(Zxid),
    Append(Vec<Entry>),
    SetCommitted(Zxid),
    /// Keep `snapshot` as the latest one; the log now starts after `log_start` (at most the
    /// snapshot's zxid). Entries at or below `log_start` are no longer needed: storage may
    /// delete them at leisure (off the engine's path) but never returns them from a load.
    /// A follower installing its leader's snapshot follows this with `TruncateAfter` of the
    /// snapshot's zxid (its own later entries are not the leader's).
    SaveSnapshot {
        snapshot: Snapshot,
        log_start: Zxid,
    },
}

impl StorageOp {
    /// Changes the log itself (not only an epoch or the commit point): a batch holding one
    /// is followed by `Event::Persisted` once durable.
    pub fn changes_log(&self) -> bool {
        matches!(self, StorageOp::Append(_) | StorageOp::TruncateAfter(_))
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientOp {
    /// `seq`: the client's number for this request (0: unnumbered). A numbered request
    /// that was applied already is answered with what it did and not applied again.
    Write {
        client: String,
        value: u32,
        seq: u64,
    },
    Guess {
        client: String,
        value: u32,
        seq: u64,
    },
    /// Add `member`: first as a learner, then (once it holds every committed entry, and
    /// when `voter`) promoted to voter. Answered when the last step has committed.
    AddMember { member: Member, voter: bool },
    /// Remove `id` (voter or learner). Answered when the configuration without it committed.
    RemoveMember { id: NodeId },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientReply {
    Written {
        zxid: Zxid,
        round: u64,
        target: u32,
        closed: Option<RoundResult>,
    },
    Guessed {
        zxid: Zxid,
        round: u64,
    },
    /// A linearizable read may be answered from any state that has applied `index`.
    ReadIndex {
        index: Zxid,
    },
    /// The configuration after a membership change (committed at `zxid`).
    Reconfigured {
        zxid: Zxid,
        membership: Membership,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientError {
    /// Not applied; ask `leader` (if known) or retry later.
    NotLeader { leader: Option<NodeId> },
    /// Refused by the game rules; not applied.
    Game(GameError),
    /// Proposed, but leadership was lost before it committed: it may or may not commit.
    OutcomeUnknown,
    /// A numbered request older than every request of its client the game still
    /// remembers (`oldest`): whether it was applied is no longer known. Not applied now.
    Forgotten { oldest: u64 },
    /// A membership change that was refused; `retryable` when it may succeed later (another
    /// change in flight). The configuration is unchanged.
    Reconfig { reason: String, retryable: bool },
    /// Adding voter `id` went half way: it was added as a learner (committed), but did not
    /// catch up with the log in time, so it was not promoted. Repeating the request may.
    LeftAsLearner { id: NodeId },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    Tick {
        now_ms: u64,
    },
    Message {
        from: NodeId,
        msg: Message,
    },
    Propose {
        req: RequestId,
        op: ClientOp,
    },
    LinearizableRead {
        req: RequestId,
    },
    /// The connection `peer` held open to us closed: its process is gone (a dead process
    /// closes its sockets) or the network reset it. A follower of `peer` looks for a new
    /// leader at once instead of waiting for the election timeout. May be spurious.
    PeerLost {
        peer: NodeId,
    },
    /// This node is stopping (SIGTERM). A leader stops taking requests, lets the ones in
    /// flight commit, then hands over (it no longer leads).
    Shutdown,
    /// Every `Persist` output so far is durable. The runtime steps this after carrying out a
    /// batch that changed the log; a leader counts its own copy of an entry towards a quorum
    /// only from then on (so its proposals may leave before its own write: `SendEarly`).
    Persisted,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Make durable before anything that follows it leaves the process.
    Persist(StorageOp),
    Send {
        to: NodeId,
        msg: Message,
    },
    /// Like `Send`, but it may leave **before** the persists of its batch are durable: a
    /// leader's proposals, commits and heartbeats. None of them claims anything of the leader's
    /// own durability (a leader counts itself in a quorum only after `Event::Persisted`), so
    /// the leader's fsync overlaps its followers' (as ZAB and Raft allow). A runtime must keep
    /// each peer's messages in order: one that follows a `Send` to the same peer in the batch
    /// waits with it.
    SendEarly {
        to: NodeId,
        msg: Message,
    },
    /// A committed entry, in zxid order, to apply to the game.
    Apply(Entry),
    /// The committed state jumps to `snapshot` (a follower installed its leader's snapshot):
    /// replace the applied game with its game; the `Apply`s that follow continue from it.
    Restore(Snapshot),
    Reply {
        req: RequestId,
        result: Result<ClientReply, ClientError>,
    },
}

/// Splits a batch as [`Output::SendEarly`] allows: the messages that may leave before the
/// batch's persists, in order, and the rest of the batch, in order. A `SendEarly` to a peer
/// that a plain `Send` precedes in the batch waits with it (as a `Send`), so that each peer's
/// messages stay in order.
pub fn split_early(outputs: Vec<Output>) -> (Vec<(NodeId, Message)>, Vec<Output>) {
    let mut blocked: Vec<NodeId> = Vec::new();
    let mut early = Vec::new();
    let mut rest = Vec::with_capacity(outputs.len());
    for o in outputs {
        match o {
            Output::SendEarly { to, msg } if !blocked.contains(&to) => early.push((to, msg)),
            Output::SendEarly { to, msg } => rest.push(Output::Send { to, msg }),
            Output::Send { to, msg } => {
                if !blocked.contains(&to) {
                    blocked.push(to.clone());
                }
                rest.push(Output::Send { to, msg });
            }
            o => rest.push(o),
        }
    }
    (early, rest)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RoleKind {
    Looking,
    Candidate,
    Following,
    Leading,
}

impl RoleKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            RoleKind::Looking | RoleKind::Candidate => "looking",
            RoleKind::Following => "follower",
            RoleKind::Leading => "leader",
        }
    }
}
