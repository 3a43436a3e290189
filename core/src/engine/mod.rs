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
//! (the rules are in `reconfig.rs`, `Engine::reconfig_refusal`; README "Membership" says why
//! they suffice).
//!
//! This file is the dispatcher; each concern has its own file:
//! - `events.rs`: what goes in and comes out ([`Event`], [`Output`], client requests).
//! - `state.rs`: the per-role state held inside [`Role`] variants.
//! - `log.rs`: the replicated log, its commit point and its configurations.
//! - `quorum.rs`: counting votes and acknowledgements among voters.
//! - `messages.rs`: building the messages this node sends.
//! - `election.rs`: looking and standing (`Hello`, `NewEpoch`, `EpochRejected`, `LeaderIs`).
//! - `follower.rs`: following a leader (sync, proposals, commits, heartbeats).
//! - `leader.rs`: becoming and staying leader, proposing client requests.
//! - `replication.rs`: a leader's per-follower progress, commit counting, catch-up.
//! - `reconfig.rs`: membership changes, one voter at a time.
//! - `reads.rs`: linearizable reads (ReadIndex over a heartbeat round).
//! - `forward.rs`: a follower's client moves forwarded to the leader inside the protocol.
//! - `snapshot.rs`: SNAP, a leader's snapshot sent in pieces to a follower behind its log.
//!   (Taking snapshots and compacting is `log.rs`, `ReplicatedLog::maybe_compact`.)

mod election;
mod events;
mod follower;
mod forward;
mod leader;
mod log;
mod messages;
mod quorum;
mod reads;
mod reconfig;
mod replication;
mod snapshot;
mod state;

pub use events::{
    split_early, ClientError, ClientOp, ClientReply, Event, Output, Persistent, RequestId,
    RoleKind, StorageOp, Timing,
};

use crate::game::Game;
use crate::message::{EpochSummary, GameMove, Message};
use crate::snapshot::{Snapshot, SnapshotPolicy};
use crate::types::{Credentials, Entry, Member, Membership, NodeId, Zxid};
use log::ReplicatedLog;
use state::{LookingState, Role};

/// One member's protocol state.
#[derive(Debug)]
pub struct Engine {
    id: NodeId,
    timing: Timing,
    now: u64,
    rng: u64,

    accepted_epoch: u64,
    current_epoch: u64,
    /// The highest epoch heard of from anyone: a candidate stands above it.
    max_seen_epoch: u64,
    log: ReplicatedLog,
    role: Role,
    /// A leader told us the committed configuration leaves us out (or we committed one that
    /// does): we take no part until a leader syncs us again.
    removed: bool,
    /// When we last described our log to a leader (`FollowerInfo`), looking or following:
    /// such requests are rate-limited.
    last_resync: u64,
    /// A leader that left the ensemble (`StepDown`) in an epoch: its messages still in
    /// flight must not make us follow it again.
    departed: Option<(NodeId, u64)>,
    /// The leader of an epoch that we know is gone (it stepped down, or its connection to
    /// us closed): a looking node does not wait for it, nor follow pointers to it.
    gone: Option<(NodeId, u64)>,
    /// Shutting down (`Event::Shutdown`): takes no requests, never stands.
    stopping: bool,
    forwarding: forward::Forwarding,
    /// The last zxid of our log known to be on disk (`Event::Persisted`): a leader's own vote
    /// in a commit quorum.
    durable: Zxid,
    /// When to snapshot and compact, and how big sync pieces are.
    snapshots: SnapshotPolicy,
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
        let mut engine = Engine {
            id,
            timing,
            now: 0,
            rng: seed | 1,
            accepted_epoch: state.accepted_epoch,
            current_epoch: state.current_epoch,
            max_seen_epoch: state.accepted_epoch,
            log: ReplicatedLog::new(
                state.snapshot,
                state.log_start,
                state.log,
                state.committed,
                bootstrap,
            ),
            role: Role::Looking(LookingState::new(0, 0)),
            removed: false,
            last_resync: 0,
            departed: None,
            gone: None,
            stopping: false,
            forwarding: Default::default(),
            durable: Zxid::ZERO,
            snapshots: SnapshotPolicy::default(),
        };
        engine.durable = engine.log.last_zxid(); // loaded from disk
        let candidacy_at = engine.candidacy_delay();
        engine.role = Role::Looking(LookingState::new(0, candidacy_at));
        engine
    }

    /// Snapshots and sync pieces by `policy` instead of the defaults.
    pub fn with_snapshot_policy(mut self, policy: SnapshotPolicy) -> Engine {
        self.snapshots = policy;
        self
    }

    // ------------------------------------------------------------------ queries

    pub fn id(&self) -> &NodeId {
        &self.id
    }
    pub fn role(&self) -> RoleKind {
        match self.role {
            Role::Looking(_) => RoleKind::Looking,
            Role::Candidate(_) => RoleKind::Candidate,
            Role::Following(_) => RoleKind::Following,
            Role::Leading(_) => RoleKind::Leading,
        }
    }
    /// The leader this node follows or is; `None` while looking.
    pub fn leader(&self) -> Option<&NodeId> {
        match &self.role {
            Role::Leading(_) => Some(&self.id),
            Role::Following(f) => Some(&f.leader),
            _ => None,
        }
    }
    pub fn accepted_epoch(&self) -> u64 {
        self.accepted_epoch
    }
    pub fn current_epoch(&self) -> u64 {
        self.current_epoch
    }

    /// Whether this node's applied game may be answered as a local read: it leads, or
    /// follows a leader that synced it, and its commit point is in the current epoch (the
    /// leadership's first entry committed). Before that its game may be older than one it
    /// served before a crash (a power loss can cost the last commit-point update, which is
    /// written without its own fsync); committing in the current epoch commits every
    /// earlier entry, so from then on the game it serves never goes back, across restarts
    /// too (ZooKeeper likewise serves clients only once its leader says UPTODATE).
    pub fn serves_local_reads(&self) -> bool {
        if self.removed || self.stopping {
            return false;
        }
        let in_quorum = match &self.role {
            Role::Leading(_) => true,
            Role::Following(f) => f.synced,
            _ => false,
        };
        in_quorum && self.log.committed().epoch == self.current_epoch
    }
    /// Epoch of the leadership this node is in (leading it or following it).
    pub fn epoch(&self) -> Option<u64> {
        match &self.role {
            Role::Leading(l) => Some(l.epoch),
            Role::Following(_) => Some(self.accepted_epoch),
            _ => None,
        }
    }
    pub fn last_zxid(&self) -> Zxid {
        self.log.last_zxid()
    }
    pub fn committed(&self) -> Zxid {
        self.log.committed()
    }
    /// The entries held: those after [`Engine::log_start`].
    pub fn log(&self) -> &[Entry] {
        self.log.entries()
    }
    /// The last zxid compacted away (the log holds the entries after it); ZERO: none.
    pub fn log_start(&self) -> Zxid {
        self.log.start()
    }
    /// The latest snapshot taken (or installed from a leader).
    pub fn snapshot(&self) -> Option<&Snapshot> {
        self.log.snapshot()
    }
    /// The committed state now, as a snapshot: what a backup saves.
    pub fn committed_snapshot(&self) -> Snapshot {
        self.log.committed_snapshot()
    }
    pub fn committed_entries(&self) -> &[Entry] {
        self.log.committed_entries()
    }
    pub fn game(&self) -> &Game {
        self.log.game()
    }
    /// Majority of the voters of the configuration in use.
    pub fn quorum(&self) -> usize {
        self.log.config().quorum()
    }
    /// The configuration in use: the latest in the log (committed or not), else the bootstrap.
    pub fn membership(&self) -> &Membership {
        self.log.config()
    }
    /// Zxid of the configuration entry in use (ZERO: the bootstrap configuration).
    pub fn config_zxid(&self) -> Zxid {
        self.log.config_zxid()
    }
    /// The latest committed configuration and its zxid.
    pub fn committed_membership(&self) -> (Zxid, &Membership) {
        self.log.committed_membership()
    }
    /// A leader said (or we committed) that the configuration leaves us out.
    /// Told to stop (`Event::Shutdown`): it takes no requests.
    pub fn is_stopping(&self) -> bool {
        self.stopping
    }
    pub fn is_removed(&self) -> bool {
        self.removed
    }
    pub fn is_voter(&self) -> bool {
        self.log.config().is_voter(&self.id)
    }
    /// Everyone this node may need to talk to: members of the configuration in use, of the
    /// committed one, and of the bootstrap (with their addresses, where known).
    pub fn known_members(&self) -> Vec<Member> {
        self.log.known_members(&self.id)
    }
    /// Leading, and the first entry of its epoch is committed (ready for reads).
    pub fn is_established_leader(&self) -> bool {
        match &self.role {
            Role::Leading(l) => self.log.committed().epoch == l.epoch,
            _ => false,
        }
    }
    pub fn summary(&self) -> EpochSummary {
        self.log.summary()
    }

    /// What this node is ranked by in an election.
    fn creds(&self) -> Credentials {
        Credentials {
            last_zxid: self.log.last_zxid(),
            node_id: self.id.clone(),
        }
    }

    /// Everyone else in the configuration in use (voters and learners).
    fn others(&self) -> Vec<NodeId> {
        self.log
            .config()
            .all()
            .filter(|m| m.id != self.id)
            .map(|m| m.id.clone())
            .collect()
    }

    /// The other voters of the configuration in use.
    fn other_voters(&self) -> Vec<NodeId> {
        self.log
            .config()
            .voter_ids()
            .filter(|m| **m != self.id)
            .cloned()
            .collect()
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
                // A stopping node that no longer leads is as good as gone: silent, so that
                // its rank cannot hold up the election of its successor.
                let gone = self.stopping && !matches!(self.role, Role::Leading(_));
                if from != self.id && !gone {
                    self.on_message(from, msg, &mut out);
                }
            }
            Event::Propose { req, .. } | Event::LinearizableRead { req } if self.stopping => {
                // Nothing written: the client retries on the next leader.
                out.push(Output::Reply {
                    req,
                    result: Err(ClientError::NotLeader { leader: None }),
                });
            }
            Event::Propose { req, op } => {
                let forwarded = match GameMove::of(&op) {
                    Some(mv) if !matches!(self.role, Role::Leading(_)) => {
                        self.forward(req, mv, &mut out)
                    }
                    _ => false,
                };
                if !forwarded {
                    self.on_propose(req, op, &mut out);
                }
            }
            Event::LinearizableRead { req } => self.on_read(req, &mut out),
            Event::PeerLost { peer } => self.on_peer_lost(peer, &mut out),
            Event::Shutdown => self.on_shutdown(&mut out),
            Event::Persisted => {
                self.durable = self.log.last_zxid();
                self.try_commit(&mut out);
            }
        }
        self.settle_forwards(&mut out);
        self.route_forwarded_replies(&mut out);
        out
    }

    fn on_tick(&mut self, out: &mut Vec<Output>) {
        match &self.role {
            Role::Looking(_) => self.tick_looking(out),
            Role::Candidate(_) => self.tick_candidate(out),
            Role::Following(_) => self.tick_following(out),
            Role::Leading(_) => self.tick_leading(out),
        }
    }

    fn on_message(&mut self, from: NodeId, msg: Message, out: &mut Vec<Output>) {
        match msg {
            Message::Hello {
                accepted_epoch,
                creds,
                sees_only_a_minority,
            } => self.on_hello(from, accepted_epoch, creds, sees_only_a_minority, out),
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
            Message::SnapshotChunk {
                epoch,
                zxid,
                offset,
                total,
                data,
            } => self.on_snapshot_chunk(from, epoch, zxid, offset, total, data, out),
            Message::SnapshotAck {
                epoch,
                zxid,
                received,
            } => self.on_snapshot_ack(from, epoch, zxid, received, out),
            Message::Proposal {
                epoch,
                prev,
                entries,
                commit,
            } => self.on_proposal(from, epoch, prev, entries, commit, out),
            Message::Ack { epoch, zxid } => self.on_ack(from, epoch, zxid, out),
            Message::Commit { epoch, zxid } => self.on_commit(from, epoch, zxid, out),
            Message::Heartbeat { epoch, commit, seq } => {
                self.on_heartbeat(from, epoch, commit, seq, out)
            }
            Message::HeartbeatAck {
                epoch,
                seq,
                last_zxid,
            } => self.on_heartbeat_ack(from, epoch, seq, last_zxid, out),
            Message::NotMember { epoch, config } => self.on_not_member(from, epoch, config, out),
            Message::StepDown { epoch } => self.on_step_down(from, epoch, out),
            Message::Forward { req, op } => self.on_forward(from, req, op, out),
            Message::ForwardReply { req, result } => self.on_forward_reply(from, req, result, out),
        }
    }
}

/// Queues `msg` for `to`.
fn send(out: &mut Vec<Output>, to: &NodeId, msg: Message) {
    out.push(Output::Send {
        to: to.clone(),
        msg,
    });
}

/// Queues `msg` for `to`, allowed to leave before this batch's persists (see
/// [`Output::SendEarly`]).
fn send_early(out: &mut Vec<Output>, to: &NodeId, msg: Message) {
    out.push(Output::SendEarly {
        to: to.clone(),
        msg,
    });
}

/// Queues a copy of `msg` for each of `to`.
fn send_all(out: &mut Vec<Output>, to: Vec<NodeId>, msg: Message) {
    for m in to {
        out.push(Output::Send {
            to: m,
            msg: msg.clone(),
        });
    }
}
