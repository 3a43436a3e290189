//! The messages this node builds in more than one place, each built in one.

use super::quorum::voters_among;
use super::state::Role;
use super::Engine;
use crate::message::Message;
use crate::types::{Entry, NodeId, Zxid};

impl Engine {
    /// "I am looking": what this node would be ranked by.
    pub(super) fn hello(&self) -> Message {
        let sees_only_a_minority = match &self.role {
            Role::Looking(s) => {
                self.now >= s.candidacy_at
                    && voters_among(self.log.config(), &self.id, s.heard.keys(), true)
                        < self.quorum()
            }
            _ => false,
        };
        Message::Hello {
            accepted_epoch: self.accepted_epoch,
            creds: self.creds(),
            sees_only_a_minority,
        }
    }

    /// Refusal of `epoch`, with our accepted epoch, our rank and (when we have one) the live
    /// leader we stay with.
    pub(super) fn epoch_rejected(&self, epoch: u64, leader: Option<NodeId>) -> Message {
        Message::EpochRejected {
            epoch,
            accepted_epoch: self.accepted_epoch,
            creds: self.creds(),
            leader,
        }
    }

    /// "I follow you in `epoch`; this is my log" (ZAB's FOLLOWERINFO / ACKEPOCH).
    pub(super) fn follower_info(&self, epoch: u64) -> Message {
        Message::FollowerInfo {
            epoch,
            summary: self.log.summary(),
            last_zxid: self.log.last_zxid(),
        }
    }
}

/// DIFF and TRUNC for a follower: keep what it has up to `truncate_to`, then `entries`.
pub(super) fn sync(epoch: u64, truncate_to: Zxid, entries: Vec<Entry>, commit: Zxid) -> Message {
    Message::Sync {
        epoch,
        truncate_to,
        entries,
        commit,
    }
}
