//! Messages between ensemble members (ZAB vocabulary where it has a word for it).

use crate::engine::{ClientError, ClientOp, ClientReply};
use crate::types::{Credentials, Entry, NodeId, Zxid};

/// `(epoch, last counter logged in that epoch)` for every epoch in a log: enough for a
/// leader to find the last zxid it shares with a follower (entries of one epoch come from
/// that epoch's single leader, always starting at counter 0).
pub type EpochSummary = Vec<(u64, u64)>;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// A looking node announces itself (periodically) with what it would be ranked by.
    Hello {
        accepted_epoch: u64,
        creds: Credentials,
        /// The sender has looked for a leader for a whole gathering window and still hears
        /// fewer than a quorum of looking voters (itself included): it cannot win an
        /// election, so nobody defers to it (a leader cut from all followers but one must
        /// not hold the connected majority back). False while it is still gathering.
        sees_only_a_minority: bool,
    },
    /// Answer to `Hello` from a node that has a live leader.
    LeaderIs {
        leader: NodeId,
        epoch: u64,
    },
    /// A candidate asks members to accept `epoch` (they persist it before answering).
    NewEpoch {
        epoch: u64,
        creds: Credentials,
    },
    /// Refusal of `epoch`, with why: the refuser's accepted epoch, its rank, its live leader.
    EpochRejected {
        epoch: u64,
        accepted_epoch: u64,
        creds: Credentials,
        leader: Option<NodeId>,
    },
    /// ZAB's FOLLOWERINFO / ACKEPOCH: "I follow you in `epoch`; this is my log".
    FollowerInfo {
        epoch: u64,
        summary: EpochSummary,
        last_zxid: Zxid,
    },
    /// DIFF and TRUNC in one: drop everything after `truncate_to`, append `entries`.
    Sync {
        epoch: u64,
        truncate_to: Zxid,
        entries: Vec<Entry>,
        commit: Zxid,
    },
    /// SNAP, in pieces: bytes `offset..offset + data.len()` of the leader's snapshot at
    /// `zxid` (`Snapshot::encode`), `total` bytes in all. The follower installs it when it
    /// has every byte, then gets the DIFF from `zxid` on. Sent one piece at a time: the
    /// next follows the `SnapshotAck` of this one.
    SnapshotChunk {
        epoch: u64,
        zxid: Zxid,
        offset: u64,
        total: u64,
        data: Vec<u8>,
    },
    /// "I hold the first `received` bytes of your snapshot at `zxid`" (all of them, and it is
    /// installed and on disk, when `received` is its total).
    SnapshotAck {
        epoch: u64,
        zxid: Zxid,
        received: u64,
    },
    /// New entries that follow `prev` in the leader's log.
    Proposal {
        epoch: u64,
        prev: Zxid,
        entries: Vec<Entry>,
        commit: Zxid,
    },
    /// "My log equals yours up to `zxid`, on disk."
    Ack {
        epoch: u64,
        zxid: Zxid,
    },
    Commit {
        epoch: u64,
        zxid: Zxid,
    },
    Heartbeat {
        epoch: u64,
        commit: Zxid,
        seq: u64,
    },
    HeartbeatAck {
        epoch: u64,
        seq: u64,
        last_zxid: Zxid,
    },
    /// From a leader: "the committed configuration `config` (the zxid of its entry) does not
    /// include you". The receiver stops taking part (no hellos, no candidacy) until a leader
    /// syncs it again.
    NotMember {
        epoch: u64,
        config: Zxid,
    },
    /// From a leader that was removed from the configuration and leaves: its followers start
    /// an election at once instead of waiting for the election timeout.
    StepDown {
        epoch: u64,
    },
    /// A follower hands its leader a client's move (ZooKeeper's followers forward requests
    /// over the quorum connection too): it rides the peer stream with everything else, so
    /// a turn's forwarded moves travel in one batch. `req` is the follower's own request id.
    Forward {
        req: u64,
        op: GameMove,
    },
    /// The leader's answer to a `Forward`, sent once it is decided (committed, refused).
    ForwardReply {
        req: u64,
        result: Result<ClientReply, ClientError>,
    },
}

/// The requests a follower forwards through the protocol: moves of the game. Membership
/// changes and linearizable reads go to the leader by RPC.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GameMove {
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
}

impl GameMove {
    /// The move in `op`, if it is one.
    pub fn of(op: &ClientOp) -> Option<GameMove> {
        match op {
            ClientOp::Write { client, value, seq } => Some(GameMove::Write {
                client: client.clone(),
                value: *value,
                seq: *seq,
            }),
            ClientOp::Guess { client, value, seq } => Some(GameMove::Guess {
                client: client.clone(),
                value: *value,
                seq: *seq,
            }),
            ClientOp::AddMember { .. } | ClientOp::RemoveMember { .. } => None,
        }
    }
}

impl From<GameMove> for ClientOp {
    fn from(m: GameMove) -> ClientOp {
        match m {
            GameMove::Write { client, value, seq } => ClientOp::Write { client, value, seq },
            GameMove::Guess { client, value, seq } => ClientOp::Guess { client, value, seq },
        }
    }
}

impl Message {
    /// Short name for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Message::Hello { .. } => "hello",
            Message::LeaderIs { .. } => "leader_is",
            Message::NewEpoch { .. } => "new_epoch",
            Message::EpochRejected { .. } => "epoch_rejected",
            Message::FollowerInfo { .. } => "follower_info",
            Message::Sync { .. } => "sync",
            Message::SnapshotChunk { .. } => "snapshot_chunk",
            Message::SnapshotAck { .. } => "snapshot_ack",
            Message::Proposal { .. } => "proposal",
            Message::Ack { .. } => "ack",
            Message::Commit { .. } => "commit",
            Message::Heartbeat { .. } => "heartbeat",
            Message::HeartbeatAck { .. } => "heartbeat_ack",
            Message::NotMember { .. } => "not_member",
            Message::StepDown { .. } => "step_down",
            Message::Forward { .. } => "forward",
            Message::ForwardReply { .. } => "forward_reply",
        }
    }
}
