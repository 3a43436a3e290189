//! Linearizable reads, ReadIndex-style: a read waits for a quorum to answer a heartbeat sent
//! after it arrived, then may be served from any state that has applied the commit point it
//! arrived at.

use super::events::{ClientError, ClientReply, Output, RequestId};
use super::quorum::quorum_value;
use super::state::{PendingRead, Role};
use super::Engine;

impl Engine {
    pub(super) fn on_read(&mut self, req: RequestId, out: &mut Vec<Output>) {
        if !self.is_established_leader() {
            out.push(Output::Reply {
                req,
                result: Err(ClientError::NotLeader {
                    leader: self.leader().filter(|l| **l != self.id).cloned(),
                }),
            });
            return;
        }
        let index = self.log.committed();
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
    pub(super) fn answer_reads(&mut self, out: &mut Vec<Output>) {
        let Role::Leading(l) = &self.role else {
            return;
        };
        if l.reads.is_empty() {
            return;
        }
        let acked = l.followers.iter().map(|(m, f)| (m, f.hb_acked));
        let Some(confirmed) = quorum_value(self.log.config(), &self.id, acked, u64::MAX) else {
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
