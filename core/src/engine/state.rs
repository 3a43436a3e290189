//! Per-role state: each [`Role`] variant holds what only that role needs, so entering a role
//! starts it afresh and leaving it drops it (nothing to reset by hand).

use std::collections::BTreeMap;
use std::sync::Arc;

use super::events::{ClientReply, RequestId};
use crate::game::{Game, GameError};
use crate::message::EpochSummary;
use crate::types::{Credentials, Member, NodeId, Zxid};

#[derive(Debug)]
pub(super) enum Role {
    Looking(LookingState),
    Candidate(CandidateState),
    Following(FollowerState),
    Leading(Box<LeaderState>),
}

/// Looking for a leader: gathering `Hello`s until this node may stand or is pointed to one.
#[derive(Debug)]
pub(super) struct LookingState {
    /// Who announced itself recently, and what it said.
    pub heard: BTreeMap<NodeId, Heard>,
    /// When this looking phase started.
    pub since: u64,
    /// Not before this may the node stand (ZooKeeper's finalizeWait).
    pub candidacy_at: u64,
    pub last_hello: u64,
    /// A leader we asked to follow, and when.
    pub joining: Option<(NodeId, u64)>,
    /// When we last answered a `Hello` from each node (answers are rate-limited: two nodes
    /// outside each other's configuration would otherwise answer each other's answers
    /// forever).
    pub answered: BTreeMap<NodeId, u64>,
    /// The rank of a node that refused our last candidacy for ranking above us: deferred
    /// to for this looking phase's patience whatever it says of itself (it may not be
    /// able to win, but it and the others like it keep us from winning).
    pub deferring_to: Option<Credentials>,
}

impl LookingState {
    pub fn new(now: u64, candidacy_at: u64) -> LookingState {
        LookingState {
            heard: BTreeMap::new(),
            since: now,
            candidacy_at,
            last_hello: now,
            joining: None,
            answered: BTreeMap::new(),
            deferring_to: None,
        }
    }
}

/// A looking voter's latest `Hello`.
#[derive(Clone, Debug)]
pub(super) struct Heard {
    pub creds: Credentials,
    pub accepted_epoch: u64,
    /// When it arrived.
    pub at: u64,
    /// The sender said it cannot win: it gathered for a whole window and hears fewer than
    /// a quorum of looking voters.
    pub sees_only_a_minority: bool,
}

/// Why a member refused our epoch.
#[derive(Clone, Debug)]
pub(super) struct Refusal {
    pub leader: Option<NodeId>,
    pub creds: Credentials,
    pub accepted_epoch: u64,
}

/// Standing for leader in `epoch`.
#[derive(Debug)]
pub(super) struct CandidateState {
    pub epoch: u64,
    pub started: u64,
    /// Members that accepted `epoch`, with their log summary.
    pub acks: BTreeMap<NodeId, EpochSummary>,
    /// Members that refused `epoch`: the live leader each stays with (if any), its rank
    /// and accepted epoch. A candidate goes on while a quorum of acceptances is still
    /// possible: a refusal usually arrives first (it is sent before any fsync, an
    /// acceptance after one), and the refusing node may be one that cannot win itself
    /// (a leader cut from all but one follower, say).
    pub refused: BTreeMap<NodeId, Refusal>,
    /// Our accepted epoch before we stood (see `maybe_give_up`).
    pub accepted_before: u64,
    pub last_sent: u64,
}

/// Following `leader` in the accepted epoch.
#[derive(Debug)]
pub(super) struct FollowerState {
    pub leader: NodeId,
    pub last_contact: u64,
    /// Our log is a prefix of the leader's log (set by its `Sync`, or by installing its
    /// snapshot).
    pub synced: bool,
    /// The leader's snapshot as it arrives in pieces.
    pub receiving: Option<IncomingSnapshot>,
}

/// A snapshot arriving in pieces: the bytes so far, and when the last piece came.
#[derive(Debug)]
pub(super) struct IncomingSnapshot {
    pub zxid: Zxid,
    pub total: u64,
    pub data: Vec<u8>,
    pub at: u64,
}

/// Where a leader is in bringing one follower's log up to its own.
#[derive(Debug, Default)]
pub(super) enum SyncState {
    /// Nothing sent in this epoch: only heartbeats go to it.
    #[default]
    NotSynced,
    /// Sending our snapshot at `zxid` in pieces: `acked` bytes are confirmed, the piece
    /// from `sent` was sent at `at`.
    Snapshot {
        zxid: Zxid,
        data: Arc<Vec<u8>>,
        acked: u64,
        sent: u64,
        at: u64,
    },
    /// Sending our log in pieces: the follower holds our log through `base`, the piece up to
    /// `through` was sent at `at`.
    Diff { base: Zxid, through: Zxid, at: u64 },
    /// Everything was sent: proposals and commits follow.
    InSync,
}

/// What a leader knows of one follower.
#[derive(Debug, Default)]
pub(super) struct FollowerProgress {
    /// How far its sync has got: proposals follow only once it is `InSync`.
    pub sync: SyncState,
    /// Highest zxid this follower has on disk, matching our log.
    pub acked: Zxid,
    pub last_heard: u64,
    pub hb_acked: u64,
}

/// A client write proposed at some zxid, answered with `reply` when that zxid commits.
#[derive(Debug)]
pub(super) struct Pending {
    pub req: RequestId,
    pub reply: ClientReply,
}

/// The membership change a leader is carrying out (one at a time).
#[derive(Debug)]
pub(super) struct PendingReconfig {
    pub req: RequestId,
    pub member: Option<Member>,
    pub id: NodeId,
    pub stage: ReconfigStage,
    /// A learner that has not caught up by then stays a learner and the request fails
    /// (`LeftAsLearner`).
    pub deadline: u64,
}

#[derive(Debug, PartialEq, Eq)]
pub(super) enum ReconfigStage {
    /// Waiting for the config entry at this zxid to commit; then the request is answered,
    /// or (adding a voter, entry that made it a learner) catching up starts.
    Committing { zxid: Zxid, then_promote: bool },
    /// The learner is receiving the log; promoted once it holds everything committed.
    CatchingUp,
}

/// A linearizable read waiting for a quorum to answer heartbeat `seq`.
#[derive(Debug)]
pub(super) struct PendingRead {
    pub req: RequestId,
    pub seq: u64,
    pub index: Zxid,
}

#[derive(Debug)]
pub(super) struct LeaderState {
    pub epoch: u64,
    pub since: u64,
    pub followers: BTreeMap<NodeId, FollowerProgress>,
    /// Game state after the whole log (committed or not): requests are checked against it.
    pub speculative: Game,
    pub pending: BTreeMap<Zxid, Pending>,
    pub reads: Vec<PendingRead>,
    /// Refusals decided on uncommitted state (e.g. "already guessed" because of a guess not
    /// yet committed): answered only once that state is committed, so a refusal never rests
    /// on an entry a later leader could drop. `(request, why, last zxid it depends on)`.
    pub refusals: Vec<(RequestId, GameError, Zxid)>,
    /// Retries of requests already in the log, not yet committed: answered with what the
    /// request did once its entry `Zxid` commits (`OutcomeUnknown` if leadership is lost).
    pub replays: Vec<(RequestId, ClientReply, Zxid)>,
    pub hb_seq: u64,
    pub last_hb: u64,
    /// `hb_seq` when the last entry was appended: a heartbeat with a higher seq was sent
    /// after it, so a follower answering that heartbeat should already hold it.
    pub appended_at_seq: u64,
    pub reconfig: Option<PendingReconfig>,
    /// (configuration in use, committed configuration) the follower set was built for.
    pub followers_for: (Zxid, Zxid),
    /// When this node was told to stop (`Event::Shutdown`): it hands over once the requests
    /// in flight are answered, or after two heartbeats at most.
    pub stopping_since: Option<u64>,
}

impl FollowerProgress {
    /// The whole log up to ours was sent to it in this epoch: proposals may follow.
    pub fn in_sync(&self) -> bool {
        matches!(self.sync, SyncState::InSync)
    }
}

impl LeaderState {
    /// Followers that were sent our whole log in this epoch: proposals and commits go to them.
    pub fn in_sync_followers(&self) -> Vec<NodeId> {
        self.followers
            .iter()
            .filter(|(_, p)| p.in_sync())
            .map(|(m, _)| m.clone())
            .collect()
    }
}
