//! Forwarding: a follower hands its clients' moves to the leader inside the protocol
//! (`Forward` → `ForwardReply`) instead of one RPC per request, so they share the peer
//! stream and its batches.
//!
//! - Follower: a move proposed to a synced follower is forwarded under the request's own id
//!   and remembered with the leadership it was sent to. The answer is handed out once this
//!   node has committed the entry too, so the client reads its own write here. When the
//!   leadership changes first (or no answer comes within an election timeout: the `Forward`
//!   or its answer was lost) the request may or may not have been applied:
//!   `OutcomeUnknown`.
//! - Leader: a forwarded move is proposed like a local one under a surrogate request id; the
//!   `Reply` the engine makes for it becomes a `ForwardReply` to the follower
//!   ([`Engine::route_forwarded_replies`], the one place that translates).

use std::collections::BTreeMap;

use super::events::{ClientError, ClientReply, Output, RequestId};
use super::state::Role;
use super::{send, Engine};
use crate::message::{GameMove, Message};
use crate::types::{NodeId, Zxid};

/// Surrogate ids of forwarded requests have this bit set; the runtime's own ids never do.
const REMOTE: RequestId = 1 << 63;

/// A move this follower forwarded and has no answer for yet.
#[derive(Debug)]
pub(super) struct Forwarded {
    leader: NodeId,
    epoch: u64,
    at: u64,
}

/// Forwarding state of one node (either side).
#[derive(Debug, Default)]
pub(super) struct Forwarding {
    /// Follower: forwarded requests waiting for their answer.
    waiting: BTreeMap<RequestId, Forwarded>,
    /// Follower: answers that name an entry this node has not committed yet.
    parked: Vec<(Zxid, RequestId, Result<ClientReply, ClientError>)>,
    /// Leader: surrogate id → (follower, its request id).
    remote: BTreeMap<RequestId, (NodeId, RequestId)>,
    next_surrogate: u64,
}

fn zxid_of(reply: &ClientReply) -> Option<Zxid> {
    match reply {
        ClientReply::Written { zxid, .. } | ClientReply::Guessed { zxid, .. } => Some(*zxid),
        ClientReply::ReadIndex { .. } | ClientReply::Reconfigured { .. } => None,
    }
}

impl Engine {
    /// The leader a follower may forward to: synced in our accepted epoch.
    fn forward_target(&self) -> Option<(NodeId, u64)> {
        match &self.role {
            Role::Following(f) if f.synced => Some((f.leader.clone(), self.accepted_epoch)),
            _ => None,
        }
    }

    /// Follower: forward `mv` (request `req`) to the leader. False when this node has no
    /// leader to forward to (the caller answers as it would without forwarding).
    pub(super) fn forward(&mut self, req: RequestId, mv: GameMove, out: &mut Vec<Output>) -> bool {
        let Some((leader, epoch)) = self.forward_target() else {
            return false;
        };
        send(out, &leader, Message::Forward { req, op: mv });
        let at = self.now;
        self.forwarding
            .waiting
            .insert(req, Forwarded { leader, epoch, at });
        true
    }

    /// Leader: a follower's forwarded move.
    pub(super) fn on_forward(
        &mut self,
        from: NodeId,
        req: RequestId,
        mv: GameMove,
        out: &mut Vec<Output>,
    ) {
        let f = &mut self.forwarding;
        let surrogate = REMOTE | f.next_surrogate;
        f.next_surrogate = (f.next_surrogate + 1) & !REMOTE;
        f.remote.insert(surrogate, (from, req));
        if self.stopping {
            out.push(Output::Reply {
                req: surrogate,
                result: Err(ClientError::NotLeader { leader: None }),
            });
        } else {
            self.on_propose(surrogate, mv.into(), out);
        }
    }

    /// Follower: the leader's answer to a forwarded move.
    pub(super) fn on_forward_reply(
        &mut self,
        from: NodeId,
        req: RequestId,
        result: Result<ClientReply, ClientError>,
        out: &mut Vec<Output>,
    ) {
        let Some(f) = self.forwarding.waiting.get(&req) else {
            return; // answered already (timed out, leadership changed), or a duplicate
        };
        if f.leader != from {
            return;
        }
        self.forwarding.waiting.remove(&req);
        let result = match result {
            // "Not the leader" from the node we took for the leader: it wrote nothing,
            // but it may know who leads now.
            Err(ClientError::NotLeader { leader }) => Err(ClientError::NotLeader {
                leader: leader.filter(|l| *l != self.id),
            }),
            r => r,
        };
        match result.as_ref().ok().and_then(zxid_of) {
            Some(zxid) if zxid > self.log.committed() => {
                self.forwarding.parked.push((zxid, req, result))
            }
            _ => out.push(Output::Reply { req, result }),
        }
    }

    /// After every step. Leader: the replies made for forwarded requests go back to their
    /// followers. Follower: answers whose entry we have now committed are handed out, and
    /// requests forwarded to a leadership we no longer follow (or long unanswered) end as
    /// `OutcomeUnknown`.
    pub(super) fn route_forwarded_replies(&mut self, out: &mut [Output]) {
        let f = &mut self.forwarding;
        if f.remote.is_empty() {
            return;
        }
        for o in out.iter_mut() {
            let Output::Reply { req, result } = o else {
                continue;
            };
            if *req & REMOTE == 0 {
                continue;
            }
            let Some((to, their_req)) = f.remote.remove(req) else {
                continue;
            };
            let result = std::mem::replace(result, Err(ClientError::OutcomeUnknown));
            *o = Output::Send {
                to,
                msg: Message::ForwardReply {
                    req: their_req,
                    result,
                },
            };
        }
    }

    pub(super) fn settle_forwards(&mut self, out: &mut Vec<Output>) {
        let f = &self.forwarding;
        if f.waiting.is_empty() && f.parked.is_empty() {
            return;
        }
        let committed = self.log.committed();
        let target = match &self.role {
            Role::Following(fs) => Some((fs.leader.clone(), self.accepted_epoch)),
            _ => None,
        };
        let now = self.now;
        let patience = self.timing.election_timeout_ms;
        let f = &mut self.forwarding;
        // Committed on a quorum (the leader said so): once we committed it too, or once we
        // no longer follow (our log will be synced by whoever leads next), it is answered.
        f.parked.retain_mut(|(zxid, req, result)| {
            if *zxid <= committed || target.is_none() {
                let result = std::mem::replace(result, Err(ClientError::OutcomeUnknown));
                out.push(Output::Reply { req: *req, result });
                false
            } else {
                true
            }
        });
        f.waiting.retain(|req, w| {
            let same = target
                .as_ref()
                .is_some_and(|(l, e)| *l == w.leader && *e == w.epoch);
            if same && now.saturating_sub(w.at) <= patience {
                return true;
            }
            out.push(Output::Reply {
                req: *req,
                result: Err(ClientError::OutcomeUnknown),
            });
            false
        });
    }
}
