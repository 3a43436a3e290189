//! Asks each member for its own view: role, epoch, last logged and committed zxid.

use std::time::Duration;

use guessgame_wire::channel::channel;
use guessgame_wire::proto::{self as pb, game_client::GameClient};
use serde::Serialize;

use crate::types::{Membership, Role, Zxid};

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NodeStatus {
    pub id: String,
    /// `leader`, `follower`, `looking` or `unreachable`.
    pub role: Role,
    pub epoch: u64,
    pub accepted_epoch: u64,
    pub last_zxid: Zxid,
    pub last_committed: Zxid,
    /// Its latest snapshot (0:0: none), the last zxid compacted away (its log holds the
    /// entries after it) and the first entry its log holds (0:0: empty). A node that
    /// compacts shows `log_start` moving up behind `snapshot`.
    pub snapshot: Zxid,
    pub log_start: Zxid,
    pub first_zxid: Zxid,
    /// The leader this node follows (or is), if any.
    pub leader: Option<String>,
    /// `voter`, `learner` or `none` in the configuration this node uses (`removed` once a
    /// leader told it it is out, `unknown` if it did not answer), and how many voters that
    /// configuration has.
    pub membership: Membership,
    pub voters: u32,
    pub address: String,
    /// How long the storage write its engine is blocked in has been running, when that is
    /// a second or more: a slow or full disk, or its database locked by another process.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub storage_stalled_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct EnsembleStatus {
    /// The leader a majority of the reachable nodes agree on (none during elections).
    pub leader: Option<String>,
    pub nodes: Vec<NodeStatus>,
}

/// Queries one node.
pub async fn node_status(id: &str, address: &str, timeout: Duration) -> NodeStatus {
    let unreachable = |e: String| NodeStatus {
        id: id.to_string(),
        role: Role::Unreachable,
        epoch: 0,
        accepted_epoch: 0,
        last_zxid: Zxid::ZERO,
        last_committed: Zxid::ZERO,
        snapshot: Zxid::ZERO,
        log_start: Zxid::ZERO,
        first_zxid: Zxid::ZERO,
        leader: None,
        membership: Membership::Unknown,
        voters: 0,
        address: address.to_string(),
        storage_stalled_ms: None,
        error: Some(e),
    };
    let ch = match channel(address, timeout) {
        Ok(ch) => ch,
        Err(e) => return unreachable(e.to_string()),
    };
    match GameClient::new(ch).status(pb::StatusRequest {}).await {
        Ok(r) => {
            let r = r.into_inner();
            NodeStatus {
                id: if r.node_id.is_empty() {
                    id.to_string()
                } else {
                    r.node_id
                },
                role: r.role.into(),
                epoch: r.current_epoch,
                accepted_epoch: r.accepted_epoch,
                last_zxid: r.last_zxid.into(),
                last_committed: r.last_committed.into(),
                snapshot: r.snapshot.into(),
                log_start: r.log_start.into(),
                first_zxid: r.first_zxid.into(),
                leader: (!r.leader.is_empty()).then_some(r.leader),
                membership: if r.removed {
                    Membership::Removed
                } else {
                    r.membership.into()
                },
                voters: r.members,
                address: address.to_string(),
                storage_stalled_ms: (r.storage_stalled_ms > 0).then_some(r.storage_stalled_ms),
                error: None,
            }
        }
        Err(s) => unreachable(s.message().to_string()),
    }
}

/// Queries all `(id, address)` members concurrently.
pub async fn ensemble_status(members: &[(String, String)], timeout: Duration) -> EnsembleStatus {
    let futures = members
        .iter()
        .map(|(id, addr)| node_status(id, addr, timeout));
    let nodes: Vec<NodeStatus> = futures::future::join_all(futures).await;
    // The leader is the node that says it leads and that a majority of its configuration's
    // voters follow (members added or removed since the list was made are still counted
    // right: the leader says how many voters it has).
    let leader = nodes
        .iter()
        .filter(|n| n.role == Role::Leader)
        .find(|l| {
            let backing = nodes
                .iter()
                .filter(|n| n.leader.as_deref() == Some(&l.id) && n.membership == Membership::Voter)
                .count();
            let voters = if l.voters > 0 {
                l.voters as usize
            } else {
                members.len()
            };
            2 * backing > voters
        })
        .map(|n| n.id.clone());
    EnsembleStatus { leader, nodes }
}
