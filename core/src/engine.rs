//! The protocol state machine: election, sync and broadcast, with no I/O.
//!
//! `Engine::step(event)` returns a list of [`Output`]s. The caller must carry them out
//! **in order**, and every [`Output::Persist`] must be durable before any later `Send`,
//! `Apply` or `Reply` of the same batch leaves the process. A runtime may group the
//! persists of several steps into one transaction and delay the sends behind it: delaying
//! a send is always safe, sending before persisting is not (that is how ZooKeeper lost
//! committed data, ZOOKEEPER-3911). One exception: `StorageOp::SetCommitted` is a hint (the
//! commit point is re-learned from the leader, and the entries behind it are already
//! durable), so storage may write a batch holding only that op without its own fsync.
//!
//! Time comes only from `Event::Tick { now_ms }`; randomness from a seeded generator.
//!
//! Membership is part of the log (`Op::Config`): every quorum is counted among the voters of
//! the latest configuration in the node's log, and a leader changes it one voter at a time
//! (the rules are in `Engine::reconfig_refusal`; README "Membership" says why they suffice).

use std::collections::BTreeMap;

use crate::game::{Game, GameError};
use crate::message::{EpochSummary, Message};
use crate::types::{Credentials, Entry, Member, Membership, NodeId, Op, RoundResult, Zxid};

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
            }
        }
    }
}

/// A change to durable state. Carried out atomically per batch by the storage layer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StorageOp {
    SetAcceptedEpoch(u64),
    /// Recorded only after the entries of the sync it concludes.
    SetCurrentEpoch(u64),
    /// Remove every entry after this zxid.
    TruncateAfter(Zxid),
    Append(Vec<Entry>),
    SetCommitted(Zxid),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientOp {
    Write {
        client: String,
        value: u32,
    },
    Guess {
        client: String,
        value: u32,
    },
    /// Add `member`: first as a learner, then (once it holds every committed entry, and
    /// when `voter`) promoted to voter. Answered when the last step has committed.
    AddMember {
        member: Member,
        voter: bool,
    },
    /// Remove `id` (voter or learner). Answered when the configuration without it committed.
    RemoveMember {
        id: NodeId,
    },
}

/// Upper bound on voters (the ensemble sizes this system is built and tested for).
pub const MAX_VOTERS: usize = 9;

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
    /// A membership change that was refused; `retryable` when it may succeed later (another
    /// change in flight, a learner still catching up). The configuration is unchanged, or —
    /// for a learner that did not catch up in time — it stays a learner.
    Reconfig { reason: String, retryable: bool },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    Tick { now_ms: u64 },
    Message { from: NodeId, msg: Message },
    Propose { req: RequestId, op: ClientOp },
    LinearizableRead { req: RequestId },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Make durable before anything that follows it leaves the process.
    Persist(StorageOp),
    Send {
        to: NodeId,
        msg: Message,
    },
    /// A committed entry, in zxid order, to apply to the game.
    Apply(Entry),
    Reply {
        req: RequestId,
        result: Result<ClientReply, ClientError>,
    },
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

#[derive(Debug)]
struct CandidateState {
    epoch: u64,
    started: u64,
    /// Members that accepted `epoch`, with their log summary.
    acks: BTreeMap<NodeId, EpochSummary>,
    last_sent: u64,
}

#[derive(Debug, Default)]
struct FollowerProgress {
    /// A `Sync` was sent in this epoch: proposals may follow it.
    in_sync: bool,
    /// Highest zxid this follower has on disk, matching our log.
    acked: Zxid,
    last_heard: u64,
    hb_acked: u64,
}

#[derive(Debug)]
struct Pending {
    req: RequestId,
    reply: ClientReply,
}

/// The membership change a leader is carrying out (one at a time).
#[derive(Debug)]
struct PendingReconfig {
    req: RequestId,
    member: Option<Member>,
    id: NodeId,
    stage: ReconfigStage,
    /// A learner that has not caught up by then stays a learner and the request fails.
    deadline: u64,
}

#[derive(Debug, PartialEq, Eq)]
enum ReconfigStage {
    /// Waiting for the config entry at this zxid to commit; then the request is answered,
    /// or (adding a voter, entry that made it a learner) catching up starts.
    Committing { zxid: Zxid, then_promote: bool },
    /// The learner is receiving the log; promoted once it holds everything committed.
    CatchingUp,
}

#[derive(Debug)]
struct PendingRead {
    req: RequestId,
    seq: u64,
    index: Zxid,
}

#[derive(Debug)]
struct LeaderState {
    epoch: u64,
    since: u64,
    followers: BTreeMap<NodeId, FollowerProgress>,
    /// Game state after the whole log (committed or not): requests are checked against it.
    speculative: Game,
    pending: BTreeMap<Zxid, Pending>,
    reads: Vec<PendingRead>,
    /// Refusals decided on uncommitted state (e.g. "already guessed" because of a guess not
    /// yet committed): answered only once that state is committed, so a refusal never rests
    /// on an entry a later leader could drop. `(request, why, last zxid it depends on)`.
    refusals: Vec<(RequestId, GameError, Zxid)>,
    hb_seq: u64,
    last_hb: u64,
    /// `hb_seq` when the last entry was appended: a heartbeat with a higher seq was sent
    /// after it, so a follower answering that heartbeat should already hold it.
    appended_at_seq: u64,
    reconfig: Option<PendingReconfig>,
    /// (configuration in use, committed configuration) the follower set was built for.
    followers_for: (Zxid, Zxid),
}

impl LeaderState {
    /// Followers that were sent a `Sync` in this epoch: proposals and commits go to them.
    fn in_sync_followers(&self) -> Vec<NodeId> {
        self.followers
            .iter()
            .filter(|(_, p)| p.in_sync)
            .map(|(m, _)| m.clone())
            .collect()
    }
}

#[derive(Debug)]
enum Role {
    Looking,
    Candidate(CandidateState),
    Following,
    Leading(Box<LeaderState>),
}

/// One member's protocol state.
#[derive(Debug)]
pub struct Engine {
    id: NodeId,
    /// The configuration used while the log holds none (start-up flags of a new ensemble;
    /// empty for a node that waits to be added).
    bootstrap: Membership,
    /// Every `Op::Config` in the log, in order: the last one is the configuration in use.
    configs: Vec<(Zxid, Membership)>,
    /// The configuration in use (the latest in the log, committed or not; else `bootstrap`).
    config: Membership,
    /// A leader told us the committed configuration leaves us out (or we committed one that
    /// does): we take no part until a leader syncs us again.
    removed: bool,
    timing: Timing,
    now: u64,
    rng: u64,

    accepted_epoch: u64,
    current_epoch: u64,
    log: Vec<Entry>,
    /// Number of committed entries at the head of `log`.
    commit_len: usize,
    /// Committed state (mirrors what the runtime applies); the leader's speculation starts here.
    game: Game,

    role: Role,
    leader: Option<NodeId>,
    last_leader_contact: u64,
    /// Our log is a prefix of the current leader's log (set by its `Sync`).
    synced: bool,
    last_resync: u64,
    /// Looking: who announced itself recently: rank, accepted epoch, when.
    heard: BTreeMap<NodeId, (Credentials, u64, u64)>,
    looking_since: u64,
    candidacy_at: u64,
    last_hello: u64,
    max_seen_epoch: u64,
    /// Looking: a leader we asked to follow, and when.
    joining: Option<(NodeId, u64)>,
    /// A leader that left the ensemble (`StepDown`) in an epoch: its messages still in
    /// flight must not make us follow it again.
    departed: Option<(NodeId, u64)>,
    /// Looking: when we last answered a `Hello` from each node (answers are rate-limited:
    /// two nodes outside each other's configuration would otherwise answer each other's
    /// answers forever).
    answered: BTreeMap<NodeId, u64>,
}

impl Engine {
    /// A node of a new ensemble whose voters are `members` (addresses unknown to the core).
    /// `quorum` must be a majority of `members` (checked by config); it is recomputed from
    /// the configuration from then on.
    pub fn new(
        id: NodeId,
        members: Vec<NodeId>,
        quorum: usize,
        timing: Timing,
        state: Persistent,
        seed: u64,
    ) -> Engine {
        let bootstrap = Membership::of_voters(
            members
                .into_iter()
                .map(|id| Member {
                    id,
                    address: String::new(),
                })
                .collect(),
        );
        debug_assert!(bootstrap.voters.is_empty() || quorum == bootstrap.quorum());
        Engine::with_membership(id, bootstrap, timing, state, seed)
    }

    /// `bootstrap` is used only while the log holds no configuration: the voters of a new
    /// ensemble, or nobody for a node that waits to be added (`--join`).
    pub fn with_membership(
        id: NodeId,
        bootstrap: Membership,
        timing: Timing,
        state: Persistent,
        seed: u64,
    ) -> Engine {
        let mut game = Game::default();
        let commit_len = state.log.partition_point(|e| e.zxid <= state.committed);
        for e in &state.log[..commit_len] {
            game.apply(e);
        }
        let configs: Vec<(Zxid, Membership)> = state
            .log
            .iter()
            .filter_map(|e| match &e.op {
                Op::Config(m) => Some((e.zxid, m.clone())),
                _ => None,
            })
            .collect();
        let config = configs
            .last()
            .map(|(_, m)| m.clone())
            .unwrap_or_else(|| bootstrap.clone());
        let mut engine = Engine {
            id,
            bootstrap,
            configs,
            config,
            removed: false,
            timing,
            now: 0,
            rng: seed | 1,
            accepted_epoch: state.accepted_epoch,
            current_epoch: state.current_epoch,
            log: state.log,
            commit_len,
            game,
            role: Role::Looking,
            leader: None,
            last_leader_contact: 0,
            synced: false,
            last_resync: 0,
            heard: BTreeMap::new(),
            looking_since: 0,
            candidacy_at: 0,
            last_hello: 0,
            max_seen_epoch: state.accepted_epoch,
            joining: None,
            departed: None,
            answered: BTreeMap::new(),
        };
        engine.candidacy_at = engine.candidacy_delay();
        engine
    }

    // ------------------------------------------------------------------ queries

    pub fn id(&self) -> &NodeId {
        &self.id
    }
    pub fn role(&self) -> RoleKind {
        match self.role {
            Role::Looking => RoleKind::Looking,
            Role::Candidate(_) => RoleKind::Candidate,
            Role::Following => RoleKind::Following,
            Role::Leading(_) => RoleKind::Leading,
        }
    }
    /// The leader this node follows or is; `None` while looking.
    pub fn leader(&self) -> Option<&NodeId> {
        match self.role {
            Role::Leading(_) => Some(&self.id),
            Role::Following => self.leader.as_ref(),
            _ => None,
        }
    }
    pub fn accepted_epoch(&self) -> u64 {
        self.accepted_epoch
    }
    pub fn current_epoch(&self) -> u64 {
        self.current_epoch
    }
    /// Epoch of the leadership this node is in (leading it or following it).
    pub fn epoch(&self) -> Option<u64> {
        match &self.role {
            Role::Leading(l) => Some(l.epoch),
            Role::Following => Some(self.accepted_epoch),
            _ => None,
        }
    }
    pub fn last_zxid(&self) -> Zxid {
        self.log.last().map(|e| e.zxid).unwrap_or(Zxid::ZERO)
    }
    pub fn committed(&self) -> Zxid {
        self.zxid_at(self.commit_len)
    }
    pub fn log(&self) -> &[Entry] {
        &self.log
    }
    pub fn committed_entries(&self) -> &[Entry] {
        &self.log[..self.commit_len]
    }
    pub fn game(&self) -> &Game {
        &self.game
    }
    /// Majority of the voters of the configuration in use.
    pub fn quorum(&self) -> usize {
        self.config.quorum()
    }
    /// The configuration in use: the latest in the log (committed or not), else the bootstrap.
    pub fn membership(&self) -> &Membership {
        &self.config
    }
    /// Zxid of the configuration entry in use (ZERO: the bootstrap configuration).
    pub fn config_zxid(&self) -> Zxid {
        self.configs.last().map(|(z, _)| *z).unwrap_or(Zxid::ZERO)
    }
    /// The latest committed configuration and its zxid.
    pub fn committed_membership(&self) -> (Zxid, &Membership) {
        let committed = self.committed();
        self.configs
            .iter()
            .rev()
            .find(|(z, _)| *z <= committed)
            .map(|(z, m)| (*z, m))
            .unwrap_or((Zxid::ZERO, &self.bootstrap))
    }
    /// A leader said (or we committed) that the configuration leaves us out.
    pub fn is_removed(&self) -> bool {
        self.removed
    }
    pub fn is_voter(&self) -> bool {
        self.config.is_voter(&self.id)
    }
    /// Everyone this node may need to talk to: members of the configuration in use, of the
    /// committed one, and of the bootstrap (with their addresses, where known).
    pub fn known_members(&self) -> Vec<Member> {
        self.others_in(&[&self.config, self.committed_membership().1, &self.bootstrap])
    }

    /// Everyone but us in any of `configs`, by id (the first address wins).
    fn others_in(&self, configs: &[&Membership]) -> Vec<Member> {
        let mut all: Vec<Member> = configs
            .iter()
            .flat_map(|c| c.all())
            .filter(|m| m.id != self.id)
            .cloned()
            .collect();
        all.sort_by(|a, b| a.id.cmp(&b.id));
        all.dedup_by(|a, b| a.id == b.id);
        all
    }
    /// Leading, and the first entry of its epoch is committed (ready for reads).
    pub fn is_established_leader(&self) -> bool {
        match &self.role {
            Role::Leading(l) => self.committed().epoch == l.epoch,
            _ => false,
        }
    }

    fn creds(&self) -> Credentials {
        Credentials {
            last_zxid: self.last_zxid(),
            node_id: self.id.clone(),
        }
    }

    /// Zxid of the entry at 1-based position `len` (0 → ZERO).
    fn zxid_at(&self, len: usize) -> Zxid {
        if len == 0 {
            Zxid::ZERO
        } else {
            self.log[len - 1].zxid
        }
    }

    /// Position just after `zxid` in the log, if `zxid` is ZERO or logged.
    fn position_after(&self, zxid: Zxid) -> Option<usize> {
        if zxid == Zxid::ZERO {
            return Some(0);
        }
        self.log
            .binary_search_by(|e| e.zxid.cmp(&zxid))
            .ok()
            .map(|i| i + 1)
    }

    pub fn summary(&self) -> EpochSummary {
        let mut out: EpochSummary = Vec::new();
        let mut i = 0;
        while i < self.log.len() {
            let epoch = self.log[i].zxid.epoch;
            let end = self.log.partition_point(|e| e.zxid.epoch <= epoch);
            out.push((epoch, self.log[end - 1].zxid.counter));
            i = end;
        }
        out
    }

    /// Everyone else in the configuration in use (voters and learners).
    fn others(&self) -> Vec<NodeId> {
        self.config
            .all()
            .filter(|m| m.id != self.id)
            .map(|m| m.id.clone())
            .collect()
    }

    /// The other voters of the configuration in use.
    fn other_voters(&self) -> Vec<NodeId> {
        self.config
            .voter_ids()
            .filter(|m| **m != self.id)
            .cloned()
            .collect()
    }

    /// How many of `ids` (plus this node, when `me`) are voters of the configuration in use.
    fn voters_among<'a>(&self, ids: impl Iterator<Item = &'a NodeId>, me: bool) -> usize {
        ids.filter(|m| **m != self.id && self.config.is_voter(m))
            .count()
            + usize::from(me && self.is_voter())
    }

    /// The `quorum`-th highest of `values` taken over the voters (this node's own value is
    /// `mine`, counted only if it votes), or `None` when there are fewer voters than a quorum.
    fn quorum_value<'a, T: Ord + Copy>(
        &self,
        followers: impl Iterator<Item = (&'a NodeId, T)>,
        mine: T,
    ) -> Option<T> {
        let mut values: Vec<T> = followers
            .filter(|(m, _)| **m != self.id && self.config.is_voter(m))
            .map(|(_, v)| v)
            .collect();
        if self.is_voter() {
            values.push(mine);
        }
        values.sort_unstable_by(|a, b| b.cmp(a));
        values.get(self.quorum() - 1).copied()
    }

    /// Keeps `configs`/`config` in step with the log after entries were appended from `from`.
    fn note_appended(&mut self, from: usize) {
        for e in &self.log[from..] {
            if let Op::Config(m) = &e.op {
                self.configs.push((e.zxid, m.clone()));
                self.config = m.clone();
                tracing::info!(node = %self.id, zxid = %e.zxid, config = %m, "configuration in use");
            }
        }
    }

    /// Same after the log was truncated: a dropped configuration entry is no longer in use.
    fn note_truncated(&mut self) {
        let last = self.last_zxid();
        let before = self.configs.len();
        self.configs.retain(|(z, _)| *z <= last);
        if self.configs.len() != before {
            self.config = self
                .configs
                .last()
                .map(|(_, m)| m.clone())
                .unwrap_or_else(|| self.bootstrap.clone());
            tracing::info!(node = %self.id, config = %self.config, "configuration entry truncated; back to the previous one");
        }
    }

    fn random(&mut self, bound: u64) -> u64 {
        // xorshift64*: deterministic per seed, good enough for jitter.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        let r = self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D);
        if bound == 0 {
            0
        } else {
            r % bound
        }
    }

    /// How long a looking node gathers `Hello`s before it may stand (ZooKeeper's finalizeWait).
    fn candidacy_delay(&mut self) -> u64 {
        let hb = self.timing.heartbeat_ms;
        self.now + 2 * hb + self.random(hb)
    }

    fn follower_timeout(&mut self) -> u64 {
        self.timing.election_timeout_ms
    }

    // ------------------------------------------------------------------ step

    pub fn step(&mut self, event: Event) -> Vec<Output> {
        let mut out = Vec::new();
        match event {
            Event::Tick { now_ms } => {
                self.now = self.now.max(now_ms);
                self.on_tick(&mut out);
            }
            Event::Message { from, msg } => {
                // Senders outside our configuration are heard too: a leader may have added us
                // (or itself been added) by an entry we do not hold yet. Each handler decides
                // what a non-member may do (it is never counted in a quorum).
                if from != self.id {
                    self.on_message(from, msg, &mut out);
                }
            }
            Event::Propose { req, op } => self.on_propose(req, op, &mut out),
            Event::LinearizableRead { req } => self.on_read(req, &mut out),
        }
        out
    }

    fn send(&self, out: &mut Vec<Output>, to: &NodeId, msg: Message) {
        out.push(Output::Send {
            to: to.clone(),
            msg,
        });
    }

    fn send_all(&self, out: &mut Vec<Output>, to: Vec<NodeId>, msg: Message) {
        for m in to {
            out.push(Output::Send {
                to: m,
                msg: msg.clone(),
            });
        }
    }

    fn on_tick(&mut self, out: &mut Vec<Output>) {
        let now = self.now;
        let hb = self.timing.heartbeat_ms;
        let et = self.timing.election_timeout_ms;
        match &mut self.role {
            Role::Following => {
                let timeout = self.follower_timeout();
                if now.saturating_sub(self.last_leader_contact) > timeout {
                    tracing::info!(node = %self.id, leader = ?self.leader, "leader silent; looking");
                    self.become_looking(out);
                } else if !self.synced && now.saturating_sub(self.last_resync) >= hb {
                    self.request_sync(out);
                }
            }
            Role::Looking => {
                // A removed node is silent: it neither looks for a leader nor stands.
                if self.removed {
                    return;
                }
                if now.saturating_sub(self.last_hello) >= hb {
                    self.last_hello = now;
                    self.send_hellos(out);
                }
                self.heard
                    .retain(|_, (_, _, at)| now.saturating_sub(*at) <= et);
                // A leader we were pointed to gets a few heartbeats to sync us; if it is
                // dead (the pointer was stale), stop waiting for it.
                if let Some((_, at)) = &self.joining {
                    if now.saturating_sub(*at) > 3 * hb {
                        self.joining = None;
                    }
                }
                self.maybe_stand(out);
            }
            Role::Candidate(c) => {
                if now.saturating_sub(c.started) > et {
                    self.become_looking(out);
                } else if now.saturating_sub(c.last_sent) >= hb {
                    c.last_sent = now;
                    self.resend_new_epoch(out);
                }
            }
            Role::Leading(l) => {
                // Step down when a quorum has not been heard for an election timeout: a leader
                // that cannot commit must not keep taking writes.
                // Counted in the configuration in use (a leader being removed does not count
                // itself).
                let heard = l
                    .followers
                    .iter()
                    .filter(|(m, f)| {
                        now.saturating_sub(f.last_heard) <= et && self.config.is_voter(m)
                    })
                    .count()
                    + usize::from(self.config.is_voter(&self.id));
                let since = l.since;
                let last_hb = l.last_hb;
                if heard < self.quorum() && now.saturating_sub(since) > et {
                    tracing::warn!(node = %self.id, heard, "leader lost its quorum; stepping down");
                    self.become_looking(out);
                    return;
                }
                if now.saturating_sub(last_hb) >= hb {
                    self.send_heartbeats(out);
                }
                self.progress_reconfig(out);
            }
        }
    }

    /// Candidate: ask again those that have not answered (messages may be lost).
    fn resend_new_epoch(&self, out: &mut Vec<Output>) {
        let Role::Candidate(c) = &self.role else {
            return;
        };
        let creds = self.creds();
        for m in self
            .other_voters()
            .iter()
            .filter(|m| !c.acks.contains_key(*m))
        {
            self.send(
                out,
                m,
                Message::NewEpoch {
                    epoch: c.epoch,
                    creds: creds.clone(),
                },
            );
        }
    }

    fn send_heartbeats(&mut self, out: &mut Vec<Output>) {
        let commit = self.committed();
        let Role::Leading(l) = &mut self.role else {
            return;
        };
        l.hb_seq += 1;
        l.last_hb = self.now;
        let msg = Message::Heartbeat {
            epoch: l.epoch,
            commit,
            seq: l.hb_seq,
        };
        let to: Vec<NodeId> = l.followers.keys().cloned().collect();
        self.send_all(out, to, msg);
    }

    // ------------------------------------------------------------------ election

    fn become_looking(&mut self, out: &mut Vec<Output>) {
        if let Role::Leading(l) = &mut self.role {
            for (_, p) in std::mem::take(&mut l.pending) {
                out.push(Output::Reply {
                    req: p.req,
                    result: Err(ClientError::OutcomeUnknown),
                });
            }
            for r in std::mem::take(&mut l.reads) {
                out.push(Output::Reply {
                    req: r.req,
                    result: Err(ClientError::NotLeader { leader: None }),
                });
            }
            // Nothing was written for these: the client may retry them.
            for (req, _, _) in std::mem::take(&mut l.refusals) {
                out.push(Output::Reply {
                    req,
                    result: Err(ClientError::NotLeader { leader: None }),
                });
            }
            if let Some(r) = l.reconfig.take() {
                out.push(Output::Reply {
                    req: r.req,
                    result: Err(ClientError::OutcomeUnknown),
                });
            }
        }
        self.role = Role::Looking;
        self.leader = None;
        self.synced = false;
        self.heard.clear();
        self.answered.clear();
        self.joining = None;
        self.looking_since = self.now;
        self.candidacy_at = self.candidacy_delay();
        self.last_hello = self.now;
        if self.removed {
            return;
        }
        self.send_hellos(out);
    }

    /// Looking: announce ourselves to everyone in any configuration we know (the one in
    /// use, the committed one, the bootstrap). Members may disagree on the configuration in
    /// use while a change is in flight; each must still hear the voters of its own.
    fn send_hellos(&self, out: &mut Vec<Output>) {
        let msg = Message::Hello {
            accepted_epoch: self.accepted_epoch,
            creds: self.creds(),
        };
        let to = self.known_members().into_iter().map(|m| m.id).collect();
        self.send_all(out, to, msg);
    }

    /// Bully rule: stand when a quorum is looking and we rank highest among them. A node
    /// that keeps deferring to a higher one that never wins stands anyway after two
    /// election timeouts (acceptors still refuse a lower-ranked candidate, so this only
    /// helps when the higher one cannot reach a quorum).
    fn maybe_stand(&mut self, out: &mut Vec<Output>) {
        if self.now < self.candidacy_at || self.joining.is_some() {
            return;
        }
        // Only a voter stands: of the configuration in use, or — while a configuration that
        // leaves us out is not committed yet — of the committed one (as in Raft: such a node
        // may hold the only copy of that entry, and the others need it to lead until it
        // commits; it counts votes in the new configuration, without itself). A learner, a
        // node waiting to be added or one whose removal committed never starts an election.
        let leaving = self.config_zxid() > self.committed()
            && self.committed_membership().1.is_voter(&self.id);
        if self.removed || !(self.is_voter() || leaving) {
            return;
        }
        if self.voters_among(self.heard.keys(), true) < self.quorum() {
            return;
        }
        let me = self.creds();
        let highest = self.heard.values().all(|(c, _, _)| *c < me);
        let patience = 2 * self.timing.election_timeout_ms;
        if !highest && self.now.saturating_sub(self.looking_since) < patience {
            return;
        }
        let epoch = self
            .heard
            .values()
            .map(|(_, e, _)| *e)
            .chain([self.accepted_epoch, self.max_seen_epoch])
            .max()
            .unwrap_or(0)
            + 1;
        self.stand(epoch, out);
    }

    fn stand(&mut self, epoch: u64, out: &mut Vec<Output>) {
        tracing::info!(node = %self.id, epoch, last = %self.last_zxid(), "standing for leader");
        self.accepted_epoch = epoch;
        self.max_seen_epoch = self.max_seen_epoch.max(epoch);
        out.push(Output::Persist(StorageOp::SetAcceptedEpoch(epoch)));
        let mut acks = BTreeMap::new();
        acks.insert(self.id.clone(), self.summary());
        self.role = Role::Candidate(CandidateState {
            epoch,
            started: self.now,
            acks,
            last_sent: self.now,
        });
        let msg = Message::NewEpoch {
            epoch,
            creds: self.creds(),
        };
        self.send_all(out, self.other_voters(), msg);
        self.maybe_win(out);
    }

    fn maybe_win(&mut self, out: &mut Vec<Output>) {
        let Role::Candidate(c) = &self.role else {
            return;
        };
        // Only voters of our configuration count (a learner's acceptance is not a vote).
        if self.voters_among(c.acks.keys(), true) < self.quorum() {
            return;
        }
        let epoch = c.epoch;
        let acks = std::mem::take(
            &mut match std::mem::replace(&mut self.role, Role::Looking) {
                Role::Candidate(c) => c,
                _ => unreachable!(),
            }
            .acks,
        );
        self.become_leader(epoch, acks, out);
    }

    fn become_leader(
        &mut self,
        epoch: u64,
        acks: BTreeMap<NodeId, EpochSummary>,
        out: &mut Vec<Output>,
    ) {
        tracing::info!(node = %self.id, epoch, "elected leader");
        let marker = Entry {
            zxid: Zxid::new(epoch, 0),
            op: Op::NewLeader {
                leader: self.id.clone(),
            },
        };
        self.log.push(marker.clone());
        let mut first = vec![marker];
        // The first leader of a new ensemble writes the bootstrap configuration into the log:
        // from then on every node (restarted ones too) takes it from there, not from flags.
        if self.configs.is_empty() && !self.bootstrap.voters.is_empty() {
            let config = Entry {
                zxid: Zxid::new(epoch, 1),
                op: Op::Config(self.bootstrap.clone()),
            };
            self.log.push(config.clone());
            first.push(config);
            self.note_appended(self.log.len() - 1);
        }
        out.push(Output::Persist(StorageOp::Append(first)));
        self.current_epoch = epoch;
        out.push(Output::Persist(StorageOp::SetCurrentEpoch(epoch)));

        let mut speculative = self.game.clone();
        for e in &self.log[self.commit_len..] {
            speculative.apply(e);
        }
        let targets = self.replication_targets();
        let followers = targets
            .iter()
            .map(|m| (m.clone(), FollowerProgress::default()))
            .collect();
        self.role = Role::Leading(Box::new(LeaderState {
            epoch,
            since: self.now,
            followers,
            speculative,
            pending: BTreeMap::new(),
            reads: Vec::new(),
            refusals: Vec::new(),
            hb_seq: 0,
            last_hb: self.now,
            appended_at_seq: 0,
            reconfig: None,
            followers_for: (self.config_zxid(), self.committed_membership().0),
        }));
        self.leader = Some(self.id.clone());
        self.synced = true;
        self.heard.clear();
        for (m, summary) in acks {
            if m != self.id && targets.contains(&m) {
                self.sync_follower(&m, &summary, out);
            }
        }
        self.try_commit(out);
    }

    /// Who a leader replicates to: members of the configuration in use and of the committed
    /// one (a member being removed keeps receiving the log until its removal commits).
    fn replication_targets(&self) -> Vec<NodeId> {
        self.others_in(&[&self.config, self.committed_membership().1])
            .into_iter()
            .map(|m| m.id)
            .collect()
    }

    /// Leader: makes the follower set match [`Self::replication_targets`]; a member no
    /// longer in any configuration is told it is out.
    fn refresh_followers(&mut self, out: &mut Vec<Output>) {
        let (config_zxid, _) = self.committed_membership();
        let now_for = (self.config_zxid(), config_zxid);
        match &self.role {
            Role::Leading(l) if l.followers_for != now_for => {}
            _ => return,
        }
        let targets = self.replication_targets();
        let Role::Leading(l) = &mut self.role else {
            return;
        };
        l.followers_for = now_for;
        let epoch = l.epoch;
        let gone: Vec<NodeId> = l
            .followers
            .keys()
            .filter(|m| !targets.contains(m))
            .cloned()
            .collect();
        for m in &gone {
            l.followers.remove(m);
        }
        for m in targets {
            l.followers.entry(m).or_default();
        }
        for m in gone {
            self.send(
                out,
                &m,
                Message::NotMember {
                    epoch,
                    config: config_zxid,
                },
            );
        }
    }

    /// Sends `Sync` so that `follower`'s log becomes a prefix of ours: it keeps the last
    /// zxid both logs hold (TRUNC of anything after it) and receives the rest (DIFF).
    fn sync_follower(&mut self, follower: &NodeId, summary: &EpochSummary, out: &mut Vec<Output>) {
        let mut common = Zxid::ZERO;
        for &(epoch, last_counter) in summary {
            let end = self.log.partition_point(|e| e.zxid.epoch <= epoch);
            if end > 0 && self.log[end - 1].zxid.epoch == epoch {
                let ours = self.log[end - 1].zxid.counter;
                common = common.max(Zxid::new(epoch, ours.min(last_counter)));
            }
        }
        let from = self.position_after(common).unwrap_or(0);
        let entries = self.log[from..].to_vec();
        let commit = self.committed();
        let now = self.now;
        let Role::Leading(l) = &mut self.role else {
            return;
        };
        let p = l.followers.entry(follower.clone()).or_default();
        p.in_sync = true;
        p.last_heard = now;
        let msg = Message::Sync {
            epoch: l.epoch,
            truncate_to: common,
            entries,
            commit,
        };
        self.send(out, follower, msg);
    }

    fn request_sync(&mut self, out: &mut Vec<Output>) {
        let Some(leader) = self.leader.clone() else {
            return;
        };
        self.last_resync = self.now;
        let msg = Message::FollowerInfo {
            epoch: self.accepted_epoch,
            summary: self.summary(),
            last_zxid: self.last_zxid(),
        };
        self.send(out, &leader, msg);
    }

    /// Adopt `epoch` (greater than or equal to ours) led by `leader`: not yet synced.
    fn follow(&mut self, leader: &NodeId, epoch: u64, out: &mut Vec<Output>) {
        // A new epoch is a new leadership even when the leader is the same node: it may have
        // followed someone else (and truncated) in between, so our log must be synced again.
        // (Keeping `synced` here let a follower commit its stale log against the new epoch's
        // commit point and never receive the new epoch's entries; tests/simulation.rs:
        // same_leader_in_a_new_epoch_resyncs_its_followers.)
        let same_leadership = matches!(self.role, Role::Following)
            && self.leader.as_ref() == Some(leader)
            && epoch == self.accepted_epoch;
        if epoch > self.accepted_epoch {
            self.accepted_epoch = epoch;
            out.push(Output::Persist(StorageOp::SetAcceptedEpoch(epoch)));
        }
        self.max_seen_epoch = self.max_seen_epoch.max(epoch);
        if !same_leadership {
            if matches!(self.role, Role::Leading(_)) {
                self.become_looking(out);
            }
            self.role = Role::Following;
            self.leader = Some(leader.clone());
            self.synced = false;
        }
        self.last_leader_contact = self.now;
        self.joining = None;
    }

    // ------------------------------------------------------------------ messages

    fn on_message(&mut self, from: NodeId, msg: Message, out: &mut Vec<Output>) {
        match msg {
            Message::Hello {
                accepted_epoch,
                creds,
            } => self.on_hello(from, accepted_epoch, creds, out),
            Message::LeaderIs { leader, epoch } => self.on_leader_is(leader, epoch, out),
            Message::NewEpoch { epoch, creds } => self.on_new_epoch(from, epoch, creds, out),
            Message::EpochRejected {
                epoch,
                accepted_epoch,
                creds,
                leader,
            } => self.on_epoch_rejected(from, epoch, accepted_epoch, creds, leader, out),
            Message::FollowerInfo { epoch, summary, .. } => {
                self.on_follower_info(from, epoch, summary, out)
            }
            Message::Sync {
                epoch,
                truncate_to,
                entries,
                commit,
            } => self.on_sync(from, epoch, truncate_to, entries, commit, out),
            Message::Proposal {
                epoch,
                prev,
                entries,
                commit,
            } => self.on_proposal(from, epoch, prev, entries, commit, out),
            Message::Ack { epoch, zxid } => self.on_ack(from, epoch, zxid, out),
            Message::Commit { epoch, zxid } => {
                if self.check_leader_message(&from, epoch, out) {
                    self.follower_commit(zxid, out);
                }
            }
            Message::Heartbeat { epoch, commit, seq } => {
                if self.check_leader_message(&from, epoch, out) {
                    self.follower_commit(commit, out);
                    if self.synced {
                        let msg = Message::HeartbeatAck {
                            epoch,
                            seq,
                            last_zxid: self.last_zxid(),
                        };
                        self.send(out, &from, msg);
                    }
                }
            }
            Message::HeartbeatAck {
                epoch,
                seq,
                last_zxid,
            } => self.on_heartbeat_ack(from, epoch, seq, last_zxid, out),
            Message::NotMember { epoch, config } => self.on_not_member(from, epoch, config, out),
            Message::StepDown { epoch } => {
                let following_it = matches!(self.role, Role::Following)
                    && self.leader.as_ref() == Some(&from)
                    && epoch == self.accepted_epoch;
                if following_it {
                    tracing::info!(node = %self.id, leader = %from, "leader left the ensemble; looking");
                    self.departed = Some((from, epoch));
                    self.become_looking(out);
                }
            }
        }
    }

    /// `from` led `epoch` and left the ensemble (its `StepDown` reached us).
    fn departed(&self, from: &NodeId, epoch: u64) -> bool {
        self.departed
            .as_ref()
            .is_some_and(|(leader, e)| leader == from && *e == epoch)
    }

    /// A leader says its committed configuration leaves us out: stop taking part (until a
    /// leader that counts us syncs us again).
    fn on_not_member(&mut self, from: NodeId, epoch: u64, config: Zxid, out: &mut Vec<Output>) {
        if epoch < self.accepted_epoch || matches!(self.role, Role::Leading(_)) {
            return;
        }
        // A late answer about an older configuration than ours that counts us: ignore it.
        if self.config_zxid() > config && self.config.contains(&self.id) {
            return;
        }
        if !self.removed {
            tracing::warn!(node = %self.id, leader = %from, %config, "not a member of the committed configuration; standing by");
        }
        self.removed = true;
        if !matches!(self.role, Role::Looking) {
            self.become_looking(out);
        }
    }

    /// The leader we lead or follow, if we heard from it within `within` ms.
    fn live_leader(&self, within: u64) -> Option<(NodeId, u64)> {
        match &self.role {
            Role::Leading(l) => Some((self.id.clone(), l.epoch)),
            // Only once synced, i.e. once a `Sync` proved it leads. A node that has merely
            // accepted a candidate's epoch would advertise that candidate in `LeaderIs`; the
            // `FollowerInfo` a looking node then sends it counted as a vote although that
            // node never promised the epoch nor had its rank compared: two leaders in one
            // epoch (tests/simulation.rs:
            // looking_node_never_votes_for_a_candidate_whose_epoch_it_did_not_accept).
            Role::Following
                if self.synced && self.now.saturating_sub(self.last_leader_contact) <= within =>
            {
                self.leader.clone().map(|l| (l, self.accepted_epoch))
            }
            _ => None,
        }
    }

    fn on_hello(
        &mut self,
        from: NodeId,
        accepted_epoch: u64,
        creds: Credentials,
        out: &mut Vec<Output>,
    ) {
        self.max_seen_epoch = self.max_seen_epoch.max(accepted_epoch);
        // Point a looking node only to a leader heard very recently: a stale pointer to a
        // dead leader would only delay the election.
        if let Some((leader, epoch)) = self.live_leader(2 * self.timing.heartbeat_ms) {
            self.send(out, &from, Message::LeaderIs { leader, epoch });
            return;
        }
        // Only voters of our configuration are gathered: a removed node or one from an
        // earlier membership is not counted towards our candidacy.
        if matches!(self.role, Role::Looking) {
            let first = !self.heard.contains_key(&from);
            let voter = self.config.is_voter(&from);
            if voter {
                self.heard
                    .insert(from.clone(), (creds, accepted_epoch, self.now));
            }
            // Answered even when `from` is in no configuration we know: our configuration
            // may be the stale one, and `from` a voter of a newer one that needs to hear us.
            // At most once a heartbeat interval per node, so answers never feed each other.
            let recently = self
                .answered
                .get(&from)
                .is_some_and(|at| self.now.saturating_sub(*at) < self.timing.heartbeat_ms);
            if (first || !voter) && !recently && !self.removed {
                self.answered.insert(from.clone(), self.now);
                // Answer a newcomer at once so both sides learn each other within one trip.
                let msg = Message::Hello {
                    accepted_epoch: self.accepted_epoch,
                    creds: self.creds(),
                };
                self.send(out, &from, msg);
            }
        }
    }

    fn on_leader_is(&mut self, leader: NodeId, epoch: u64, out: &mut Vec<Output>) {
        if leader == self.id || self.removed {
            return;
        }
        if !matches!(self.role, Role::Looking) {
            return;
        }
        if epoch < self.accepted_epoch {
            // We promised a later epoch: tell that leader, it will step down and a new
            // election (which we can join) follows.
            let msg = Message::EpochRejected {
                epoch,
                accepted_epoch: self.accepted_epoch,
                creds: self.creds(),
                leader: None,
            };
            self.send(out, &leader, msg);
            return;
        }
        self.joining = Some((leader.clone(), self.now));
        self.last_resync = self.now;
        let msg = Message::FollowerInfo {
            epoch,
            summary: self.summary(),
            last_zxid: self.last_zxid(),
        };
        self.send(out, &leader, msg);
    }

    fn on_new_epoch(
        &mut self,
        from: NodeId,
        epoch: u64,
        creds: Credentials,
        out: &mut Vec<Output>,
    ) {
        self.max_seen_epoch = self.max_seen_epoch.max(epoch);
        let reject = |me: &Engine, leader: Option<NodeId>| Message::EpochRejected {
            epoch,
            accepted_epoch: me.accepted_epoch,
            creds: me.creds(),
            leader,
        };
        if let Some((leader, _)) = self.live_leader(self.timing.election_timeout_ms) {
            // Leader stickiness: a live leader is not disrupted by a candidate.
            let msg = reject(self, Some(leader));
            self.send(out, &from, msg);
            return;
        }
        // A candidate outside our configuration whose log stops before our configuration
        // entry is refused: it cannot hold the entry that would make it a voter (the rank
        // rule below refuses it too; this says why). A candidate outside it with a log at
        // least as long is accepted, as Raft votes for servers it does not know: it may be
        // a voter added by an entry we lack, or a leader being removed that must finish
        // committing its removal (it then steps down).
        let stale_non_voter = !self.config.is_voter(&from) && creds.last_zxid < self.config_zxid();
        if epoch <= self.accepted_epoch
            || creds < self.creds()
            || creds.node_id != from
            || stale_non_voter
        {
            let msg = reject(self, None);
            self.send(out, &from, msg);
            return;
        }
        // Accept: persist the promise before answering.
        tracing::info!(node = %self.id, candidate = %from, epoch, "accepting epoch");
        self.accepted_epoch = epoch;
        out.push(Output::Persist(StorageOp::SetAcceptedEpoch(epoch)));
        self.role = Role::Following;
        self.leader = Some(from.clone());
        self.synced = false;
        self.last_leader_contact = self.now;
        self.last_resync = self.now;
        let msg = Message::FollowerInfo {
            epoch,
            summary: self.summary(),
            last_zxid: self.last_zxid(),
        };
        self.send(out, &from, msg);
    }

    fn on_epoch_rejected(
        &mut self,
        from: NodeId,
        epoch: u64,
        accepted_epoch: u64,
        creds: Credentials,
        leader: Option<NodeId>,
        out: &mut Vec<Output>,
    ) {
        self.max_seen_epoch = self.max_seen_epoch.max(accepted_epoch);
        match &self.role {
            Role::Candidate(c) if c.epoch == epoch => {
                if let Some(leader) = leader {
                    if leader != self.id {
                        self.become_looking(out);
                        self.on_leader_is(leader, accepted_epoch, out);
                    }
                } else if creds > self.creds() {
                    // Someone ranks higher: defer to it.
                    self.become_looking(out);
                    self.heard.insert(from, (creds, accepted_epoch, self.now));
                }
            }
            Role::Leading(l) if accepted_epoch > l.epoch => {
                tracing::warn!(node = %self.id, %from, accepted_epoch, "a member promised a later epoch; stepping down");
                self.become_looking(out);
            }
            _ => {}
        }
    }

    fn on_follower_info(
        &mut self,
        from: NodeId,
        epoch: u64,
        summary: EpochSummary,
        out: &mut Vec<Output>,
    ) {
        match &mut self.role {
            Role::Candidate(c) if c.epoch == epoch => {
                c.acks.insert(from, summary);
                self.maybe_win(out);
            }
            Role::Leading(l) if l.epoch == epoch => {
                if l.followers.contains_key(&from) {
                    self.sync_follower(&from, &summary, out);
                } else {
                    let config = self.committed_membership().0;
                    self.send(out, &from, Message::NotMember { epoch, config });
                }
            }
            _ => {}
        }
    }

    /// Common checks for messages only a leader sends. Returns true when `from` is the
    /// leader of our accepted epoch and we are (now) following it.
    fn check_leader_message(&mut self, from: &NodeId, epoch: u64, out: &mut Vec<Output>) -> bool {
        if self.departed(from, epoch) {
            return false;
        }
        if epoch < self.accepted_epoch {
            let msg = Message::EpochRejected {
                epoch,
                accepted_epoch: self.accepted_epoch,
                creds: self.creds(),
                leader: None,
            };
            self.send(out, from, msg);
            return false;
        }
        if let Role::Leading(l) = &self.role {
            if epoch == l.epoch {
                return false; // cannot happen: one leader per epoch
            }
        }
        let following_it = matches!(self.role, Role::Following)
            && self.leader.as_ref() == Some(from)
            && epoch == self.accepted_epoch;
        if !following_it {
            self.follow(from, epoch, out);
        }
        self.last_leader_contact = self.now;
        if !self.synced && self.now.saturating_sub(self.last_resync) >= self.timing.heartbeat_ms / 2
        {
            self.request_sync(out);
        }
        true
    }

    fn on_sync(
        &mut self,
        from: NodeId,
        epoch: u64,
        truncate_to: Zxid,
        entries: Vec<Entry>,
        commit: Zxid,
        out: &mut Vec<Output>,
    ) {
        if epoch < self.accepted_epoch || self.departed(&from, epoch) {
            return;
        }
        if matches!(self.role, Role::Leading(_)) {
            return;
        }
        self.follow(&from, epoch, out);
        let Some(mut pos) = self.position_after(truncate_to) else {
            // We no longer hold the point it computed from: describe our log again.
            self.request_sync(out);
            return;
        };
        // Skip what we already hold (same zxid means same entry and same prefix). A stale
        // Sync overtaken by proposals of this epoch thus never removes acknowledged entries.
        let mut entries = entries.into_iter().peekable();
        while pos < self.log.len() && entries.peek().is_some_and(|e| e.zxid == self.log[pos].zxid) {
            entries.next();
            pos += 1;
        }
        let rest: Vec<Entry> = entries.collect();
        // Anything after `pos` that is not this leader's is not in its log: TRUNC.
        let conflict =
            pos < self.log.len() && (!rest.is_empty() || self.log[pos].zxid.epoch != epoch);
        if conflict {
            if pos < self.commit_len {
                // A correct leader holds every committed entry; refuse to lose one.
                tracing::error!(node = %self.id, %truncate_to, committed = %self.committed(), "sync would truncate committed entries; refused");
                return;
            }
            let after = self.zxid_at(pos);
            tracing::info!(node = %self.id, dropped = self.log.len() - pos, %after, "TRUNC");
            self.log.truncate(pos);
            self.note_truncated();
            out.push(Output::Persist(StorageOp::TruncateAfter(after)));
        }
        if !rest.is_empty() {
            let at = self.log.len();
            self.log.extend(rest.iter().cloned());
            self.note_appended(at);
            out.push(Output::Persist(StorageOp::Append(rest)));
        }
        // A leader syncing us counts us as a member.
        self.removed = false;
        // The epoch is recorded after the entries (ZOOKEEPER-4643).
        if self.current_epoch != epoch {
            self.current_epoch = epoch;
            out.push(Output::Persist(StorageOp::SetCurrentEpoch(epoch)));
        }
        self.synced = true;
        self.last_leader_contact = self.now;
        let last = self.last_zxid();
        self.send(out, &from, Message::Ack { epoch, zxid: last });
        self.follower_commit(commit, out);
    }

    fn on_proposal(
        &mut self,
        from: NodeId,
        epoch: u64,
        prev: Zxid,
        entries: Vec<Entry>,
        commit: Zxid,
        out: &mut Vec<Output>,
    ) {
        if !self.check_leader_message(&from, epoch, out) || !self.synced {
            return;
        }
        let last = self.last_zxid();
        if prev == last {
            let at = self.log.len();
            self.log.extend(entries.iter().cloned());
            self.note_appended(at);
            out.push(Output::Persist(StorageOp::Append(entries)));
        } else if entries.last().is_some_and(|e| e.zxid <= last) {
            // Duplicate: already on disk.
        } else {
            // A gap: something was lost. Ask for a fresh sync.
            self.synced = false;
            self.request_sync(out);
            return;
        }
        let zxid = self.last_zxid();
        self.send(out, &from, Message::Ack { epoch, zxid });
        self.follower_commit(commit, out);
    }

    /// Follower: advance the commit point (never past what we hold of the leader's log).
    fn follower_commit(&mut self, commit: Zxid, out: &mut Vec<Output>) {
        if !self.synced || !matches!(self.role, Role::Following) {
            return;
        }
        let target = self.log.partition_point(|e| e.zxid <= commit);
        self.advance_commit(target, out);
    }

    fn advance_commit(&mut self, new_len: usize, out: &mut Vec<Output>) {
        if new_len <= self.commit_len {
            return;
        }
        for e in &self.log[self.commit_len..new_len] {
            self.game.apply(e);
            out.push(Output::Apply(e.clone()));
        }
        let config_before = self.committed_membership().0;
        self.commit_len = new_len;
        out.push(Output::Persist(StorageOp::SetCommitted(self.committed())));
        let (config_zxid, config) = self.committed_membership();
        if config_zxid != config_before
            && !config.contains(&self.id)
            && !self.config.contains(&self.id)
            && !self.removed
        {
            // Our removal committed. A follower just stops taking part; a leader hands over
            // in `try_commit` once it has answered the requests this commit completed.
            tracing::warn!(node = %self.id, %config_zxid, "removed from the ensemble");
            self.removed = true;
        }
    }

    fn on_ack(&mut self, from: NodeId, epoch: u64, zxid: Zxid, out: &mut Vec<Output>) {
        let now = self.now;
        let Role::Leading(l) = &mut self.role else {
            return;
        };
        if l.epoch != epoch {
            return;
        }
        if let Some(p) = l.followers.get_mut(&from) {
            p.acked = p.acked.max(zxid);
            p.last_heard = now;
        }
        self.try_commit(out);
        self.progress_reconfig(out);
    }

    fn on_heartbeat_ack(
        &mut self,
        from: NodeId,
        epoch: u64,
        seq: u64,
        last_zxid: Zxid,
        out: &mut Vec<Output>,
    ) {
        let now = self.now;
        let last = self.last_zxid();
        let Role::Leading(l) = &mut self.role else {
            return;
        };
        if l.epoch != epoch {
            return;
        }
        let mut behind = false;
        if let Some(p) = l.followers.get_mut(&from) {
            p.hb_acked = p.hb_acked.max(seq);
            p.last_heard = now;
            if !p.in_sync {
                // It answers our heartbeat, so a `Sync` of ours reached it in this epoch: its
                // log is a prefix of ours. We forgot that (it was removed and added back, or
                // we re-created its progress): send what it lacks, which puts it in sync.
                behind = true;
            } else {
                // Only a follower synced in this epoch answers our heartbeats: its log is a
                // durable prefix of ours, so `last_zxid` acknowledges like an `Ack`. Without
                // this, entries whose `Ack`s were all lost never commit in a quiet ensemble
                // (tests/simulation.rs: entry_commits_although_every_ack_is_lost).
                p.acked = p.acked.max(last_zxid);
                // The heartbeat was sent after our last append, yet the follower lacks
                // entries: a proposal was lost. A follower only notices a gap when the next
                // proposal arrives, so in a quiet ensemble it would stay behind (and an
                // entry no follower got would never commit) without this catch-up
                // (tests/simulation.rs: follower_that_missed_proposals_catches_up_while_idle).
                behind = seq > l.appended_at_seq && last_zxid < last;
            }
        }
        self.try_commit(out);
        self.answer_reads(out);
        self.progress_reconfig(out);
        if behind {
            self.catch_up(&from, last_zxid, out);
        }
    }

    /// Re-sends what a synced follower lacks after `its_last` (a zxid of our log, as the
    /// follower's log is a prefix of ours). `Sync` tolerates overlap with what it has.
    fn catch_up(&mut self, follower: &NodeId, its_last: Zxid, out: &mut Vec<Output>) {
        let Some(from) = self.position_after(its_last) else {
            return;
        };
        let entries = self.log[from..].to_vec();
        let commit = self.committed();
        let Role::Leading(l) = &mut self.role else {
            return;
        };
        if let Some(p) = l.followers.get_mut(follower) {
            p.in_sync = true;
        }
        let msg = Message::Sync {
            epoch: l.epoch,
            truncate_to: its_last,
            entries,
            commit,
        };
        self.send(out, follower, msg);
    }

    /// Leader: commit the highest zxid of this epoch that a quorum holds.
    fn try_commit(&mut self, out: &mut Vec<Output>) {
        let last = self.last_zxid();
        let Role::Leading(l) = &self.role else {
            return;
        };
        // Counted over the voters of the configuration in use, committed or not (the
        // single-server change rule: consecutive configurations share a majority).
        let Some(candidate) =
            self.quorum_value(l.followers.iter().map(|(m, f)| (m, f.acked)), last)
        else {
            return;
        };
        // Only entries of our own epoch are committed by counting (earlier ones follow).
        if candidate.epoch != l.epoch || candidate <= self.committed() {
            return;
        }
        let epoch = l.epoch;
        let new_len = self.log.partition_point(|e| e.zxid <= candidate);
        self.advance_commit(new_len, out);
        let Role::Leading(l) = &mut self.role else {
            return;
        };
        let done: Vec<Zxid> = l.pending.range(..=candidate).map(|(z, _)| *z).collect();
        for z in done {
            let p = l.pending.remove(&z).expect("pending entry");
            out.push(Output::Reply {
                req: p.req,
                result: Ok(p.reply),
            });
        }
        l.refusals.retain(|(req, e, zxid)| {
            if *zxid <= candidate {
                out.push(Output::Reply {
                    req: *req,
                    result: Err(ClientError::Game(e.clone())),
                });
                false
            } else {
                true
            }
        });
        let in_sync = l.in_sync_followers();
        for m in in_sync {
            self.send(
                out,
                &m,
                Message::Commit {
                    epoch,
                    zxid: candidate,
                },
            );
        }
        self.answer_reads(out);
        self.refresh_followers(out);
        self.progress_reconfig(out);
        if self.removed && matches!(self.role, Role::Leading(_)) {
            // The configuration without us committed: hand over at once. Our followers
            // start an election now (they hold every committed entry) instead of waiting
            // for the election timeout.
            tracing::warn!(node = %self.id, epoch, "removed from the ensemble; leader steps down");
            let to = self.others();
            self.send_all(out, to, Message::StepDown { epoch });
            self.become_looking(out);
        }
    }

    // ------------------------------------------------------------------ clients

    fn on_propose(&mut self, req: RequestId, op: ClientOp, out: &mut Vec<Output>) {
        let op = match op {
            ClientOp::AddMember { member, voter } => {
                return self.on_add_member(req, member, voter, out)
            }
            ClientOp::RemoveMember { id } => return self.on_remove_member(req, id, out),
            op => op,
        };
        let leader = self.leader().cloned();
        let last = self.last_zxid();
        let commit = self.committed();
        let Role::Leading(l) = &mut self.role else {
            out.push(Output::Reply {
                req,
                result: Err(ClientError::NotLeader { leader }),
            });
            return;
        };
        let (ops, reply_of): (Vec<Op>, Box<dyn Fn(Zxid) -> ClientReply>) = match op {
            ClientOp::Guess { client, value } => {
                if let Err(e) = l.speculative.check_guess(&client) {
                    if commit >= last {
                        out.push(Output::Reply {
                            req,
                            result: Err(ClientError::Game(e)),
                        });
                    } else {
                        l.refusals.push((req, e, last));
                    }
                    return;
                }
                let round = l.speculative.round;
                (
                    vec![Op::Guess {
                        round,
                        client,
                        value,
                    }],
                    Box::new(move |zxid| ClientReply::Guessed { zxid, round }),
                )
            }
            ClientOp::AddMember { .. } | ClientOp::RemoveMember { .. } => unreachable!(),
            ClientOp::Write { client, value } => {
                let ops = l.speculative.ops_for_write(&client, value);
                let closed = l.speculative.result_of_open_round();
                let round = l.speculative.round + 1;
                (
                    ops,
                    Box::new(move |zxid| ClientReply::Written {
                        zxid,
                        round,
                        target: value,
                        closed: closed.clone(),
                    }),
                )
            }
        };
        let zxid = Zxid::new(l.epoch, last.counter + ops.len() as u64);
        l.pending.insert(
            zxid,
            Pending {
                req,
                reply: reply_of(zxid),
            },
        );
        self.append_and_propose(ops, out);
        self.try_commit(out);
    }

    /// Leader: appends `ops` as the next entries of its epoch, persists them and proposes
    /// them to the synced followers. Returns the zxid of the last one.
    fn append_and_propose(&mut self, ops: Vec<Op>, out: &mut Vec<Output>) -> Zxid {
        let last = self.last_zxid();
        let commit = self.committed();
        let Role::Leading(l) = &mut self.role else {
            unreachable!("only a leader appends");
        };
        let mut counter = last.counter;
        let entries: Vec<Entry> = ops
            .into_iter()
            .map(|op| {
                counter += 1;
                Entry {
                    zxid: Zxid::new(l.epoch, counter),
                    op,
                }
            })
            .collect();
        for e in &entries {
            l.speculative.apply(e);
        }
        l.appended_at_seq = l.hb_seq;
        let epoch = l.epoch;
        let in_sync = l.in_sync_followers();
        let at = self.log.len();
        self.log.extend(entries.iter().cloned());
        self.note_appended(at);
        out.push(Output::Persist(StorageOp::Append(entries.clone())));
        let zxid = self.last_zxid();
        for m in in_sync {
            self.send(
                out,
                &m,
                Message::Proposal {
                    epoch,
                    prev: last,
                    entries: entries.clone(),
                    commit,
                },
            );
        }
        zxid
    }

    // ------------------------------------------------------------------ membership

    /// Why a membership change cannot start now (`None`: it can). The rules that keep two
    /// configurations in use at once from having disjoint majorities:
    /// - only an established leader (its epoch's first entry committed, so its log holds
    ///   every committed configuration) changes the configuration;
    /// - one change at a time: the configuration in use must be committed;
    /// - a change adds or removes at most one voter (learners do not count).
    fn reconfig_refusal(&self) -> Option<ClientError> {
        let Role::Leading(l) = &self.role else {
            return Some(ClientError::NotLeader {
                leader: self.leader().cloned(),
            });
        };
        if !self.is_established_leader() {
            return Some(ClientError::NotLeader { leader: None });
        }
        if let Some(r) = &l.reconfig {
            return Some(ClientError::Reconfig {
                reason: format!("another membership change (of {}) is in progress", r.id),
                retryable: true,
            });
        }
        if self.config_zxid() > self.committed() {
            return Some(ClientError::Reconfig {
                reason: "the previous configuration is not committed yet".into(),
                retryable: true,
            });
        }
        None
    }

    fn reply(
        &self,
        out: &mut Vec<Output>,
        req: RequestId,
        result: Result<ClientReply, ClientError>,
    ) {
        out.push(Output::Reply { req, result });
    }

    /// The change asked for is already in effect: answer with the configuration as it is
    /// (so that a repeated request is harmless).
    fn reply_unchanged(&self, out: &mut Vec<Output>, req: RequestId) {
        let zxid = self.config_zxid();
        let membership = self.config.clone();
        self.reply(out, req, Ok(ClientReply::Reconfigured { zxid, membership }));
    }

    fn refuse_reconfig(&self, out: &mut Vec<Output>, req: RequestId, reason: String) {
        self.reply(
            out,
            req,
            Err(ClientError::Reconfig {
                reason,
                retryable: false,
            }),
        );
    }

    fn on_add_member(
        &mut self,
        req: RequestId,
        member: Member,
        voter: bool,
        out: &mut Vec<Output>,
    ) {
        if let Some(e) = self.reconfig_refusal() {
            return self.reply(out, req, Err(e));
        }
        if member.id.is_empty() || member.address.is_empty() {
            return self.refuse_reconfig(out, req, "a member needs an id and an address".into());
        }
        if let Some(other) = self
            .config
            .all()
            .find(|m| m.id != member.id && m.address == member.address)
        {
            return self.refuse_reconfig(
                out,
                req,
                format!("{} already uses address {}", other.id, member.address),
            );
        }
        if let Some(existing) = self.config.member(&member.id) {
            if existing.address != member.address {
                return self.refuse_reconfig(
                    out,
                    req,
                    format!(
                        "{} is already a member at {}; remove it first to change its address",
                        member.id, existing.address
                    ),
                );
            }
        }
        let is_voter = self.config.is_voter(&member.id);
        if voter && !is_voter && self.config.voters.len() >= MAX_VOTERS {
            return self.refuse_reconfig(
                out,
                req,
                format!("an ensemble has at most {MAX_VOTERS} voters"),
            );
        }
        let deadline = self.now + 10 * self.timing.election_timeout_ms;
        let stage = if is_voter || (!voter && self.config.is_learner(&member.id)) {
            return self.reply_unchanged(out, req);
        } else if self.config.is_learner(&member.id) {
            ReconfigStage::CatchingUp
        } else {
            let next = self.config.with_learner(member.clone());
            let zxid = self.append_and_propose(vec![Op::Config(next)], out);
            ReconfigStage::Committing {
                zxid,
                then_promote: voter,
            }
        };
        tracing::info!(node = %self.id, member = %member.id, address = %member.address, voter, "adding a member");
        let Role::Leading(l) = &mut self.role else {
            return;
        };
        l.reconfig = Some(PendingReconfig {
            req,
            id: member.id.clone(),
            member: Some(member),
            stage,
            deadline,
        });
        self.refresh_followers(out);
        self.try_commit(out);
        self.progress_reconfig(out);
    }

    fn on_remove_member(&mut self, req: RequestId, id: NodeId, out: &mut Vec<Output>) {
        if let Some(e) = self.reconfig_refusal() {
            return self.reply(out, req, Err(e));
        }
        if !self.config.contains(&id) {
            return self.reply_unchanged(out, req);
        }
        if self.config.is_voter(&id) && self.config.voters.len() == 1 {
            return self.refuse_reconfig(out, req, format!("{id} is the last voter"));
        }
        tracing::info!(node = %self.id, member = %id, "removing a member");
        let next = self.config.without(&id);
        let zxid = self.append_and_propose(vec![Op::Config(next)], out);
        let deadline = self.now + 10 * self.timing.election_timeout_ms;
        let Role::Leading(l) = &mut self.role else {
            return;
        };
        l.reconfig = Some(PendingReconfig {
            req,
            id,
            member: None,
            stage: ReconfigStage::Committing {
                zxid,
                then_promote: false,
            },
            deadline,
        });
        self.try_commit(out);
    }

    /// Leader: moves the pending membership change on — answers it once its entry commits,
    /// promotes a learner that holds everything committed, gives up on one that does not
    /// catch up in time (it stays a learner; the request may be repeated).
    fn progress_reconfig(&mut self, out: &mut Vec<Output>) {
        let committed = self.committed();
        let now = self.now;
        let Role::Leading(l) = &mut self.role else {
            return;
        };
        let Some(r) = &mut l.reconfig else {
            return;
        };
        match r.stage {
            ReconfigStage::Committing { zxid, then_promote } if zxid <= committed => {
                if then_promote {
                    r.stage = ReconfigStage::CatchingUp;
                } else {
                    let r = l.reconfig.take().expect("pending reconfig");
                    let membership = self.config.clone();
                    tracing::info!(node = %self.id, %zxid, config = %membership, "membership change committed");
                    return self.reply(
                        out,
                        r.req,
                        Ok(ClientReply::Reconfigured { zxid, membership }),
                    );
                }
            }
            _ => {}
        }
        if r.stage != ReconfigStage::CatchingUp {
            return;
        }
        let caught_up = l
            .followers
            .get(&r.id)
            .is_some_and(|p| p.in_sync && p.acked >= committed);
        if caught_up {
            let member = r.member.clone().expect("adding a member");
            let next = self.config.with_voter(member);
            let zxid = self.append_and_propose(vec![Op::Config(next)], out);
            if let Role::Leading(l) = &mut self.role {
                if let Some(r) = &mut l.reconfig {
                    r.stage = ReconfigStage::Committing {
                        zxid,
                        then_promote: false,
                    };
                }
            }
            self.try_commit(out);
        } else if now > r.deadline {
            let r = l.reconfig.take().expect("pending reconfig");
            let reason = format!(
                "{} did not catch up with the log in time and stays a learner; make sure it is \
                 running and reachable, then repeat the request",
                r.id
            );
            self.reply(
                out,
                r.req,
                Err(ClientError::Reconfig {
                    reason,
                    retryable: true,
                }),
            );
        }
    }

    fn on_read(&mut self, req: RequestId, out: &mut Vec<Output>) {
        if !self.is_established_leader() {
            out.push(Output::Reply {
                req,
                result: Err(ClientError::NotLeader {
                    leader: self.leader().filter(|l| **l != self.id).cloned(),
                }),
            });
            return;
        }
        let index = self.committed();
        self.send_heartbeats(out);
        let Role::Leading(l) = &mut self.role else {
            return;
        };
        let seq = l.hb_seq;
        l.reads.push(PendingRead { req, seq, index });
        self.answer_reads(out);
    }

    /// Answer reads whose heartbeat round a quorum acknowledged in our epoch: nobody else
    /// could have been committing when they did.
    fn answer_reads(&mut self, out: &mut Vec<Output>) {
        let Role::Leading(l) = &self.role else {
            return;
        };
        if l.reads.is_empty() {
            return;
        }
        let Some(confirmed) =
            self.quorum_value(l.followers.iter().map(|(m, f)| (m, f.hb_acked)), u64::MAX)
        else {
            return;
        };
        let Role::Leading(l) = &mut self.role else {
            return;
        };
        l.reads.retain(|r| {
            if r.seq <= confirmed {
                out.push(Output::Reply {
                    req: r.req,
                    result: Ok(ClientReply::ReadIndex { index: r.index }),
                });
                false
            } else {
                true
            }
        });
    }
}
