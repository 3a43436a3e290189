//! Membership changes through the log, one at a time and at most one voter each: add a
//! member as a learner, promote it once it holds every committed entry, or remove one.

use super::events::{ClientError, ClientReply, Output, RequestId};
use super::state::{PendingReconfig, ReconfigStage, Role};
use super::Engine;
use crate::rules::MAX_VOTERS;
use crate::types::{Member, NodeId, Op};

impl Engine {
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
        if self.log.config_zxid() > self.log.committed() {
            return Some(ClientError::Reconfig {
                reason: "the previous configuration is not committed yet".into(),
                retryable: true,
            });
        }
        None
    }

    /// The change asked for is already in effect: answer with the configuration as it is
    /// (so that a repeated request is harmless).
    fn reply_unchanged(&self, out: &mut Vec<Output>, req: RequestId) {
        let zxid = self.log.config_zxid();
        let membership = self.log.config().clone();
        reply(out, req, Ok(ClientReply::Reconfigured { zxid, membership }));
    }

    pub(super) fn on_add_member(
        &mut self,
        req: RequestId,
        member: Member,
        voter: bool,
        out: &mut Vec<Output>,
    ) {
        if let Some(e) = self.reconfig_refusal() {
            return reply(out, req, Err(e));
        }
        if member.id.is_empty() || member.address.is_empty() {
            return refuse_reconfig(out, req, "a member needs an id and an address".into());
        }
        if let Some(other) = self
            .log
            .config()
            .all()
            .find(|m| m.id != member.id && m.address == member.address)
        {
            return refuse_reconfig(
                out,
                req,
                format!("{} already uses address {}", other.id, member.address),
            );
        }
        if let Some(existing) = self.log.config().member(&member.id) {
            if existing.address != member.address {
                return refuse_reconfig(
                    out,
                    req,
                    format!(
                        "{} is already a member at {}; remove it first to change its address",
                        member.id, existing.address
                    ),
                );
            }
        }
        let is_voter = self.log.config().is_voter(&member.id);
        if voter && !is_voter && self.log.config().voters.len() >= MAX_VOTERS {
            return refuse_reconfig(
                out,
                req,
                format!("an ensemble has at most {MAX_VOTERS} voters"),
            );
        }
        let deadline = self.now + 10 * self.timing.election_timeout_ms;
        let stage = if is_voter || (!voter && self.log.config().is_learner(&member.id)) {
            return self.reply_unchanged(out, req);
        } else if self.log.config().is_learner(&member.id) {
            ReconfigStage::CatchingUp
        } else {
            let next = self.log.config().with_learner(member.clone());
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

    pub(super) fn on_remove_member(&mut self, req: RequestId, id: NodeId, out: &mut Vec<Output>) {
        if let Some(e) = self.reconfig_refusal() {
            return reply(out, req, Err(e));
        }
        if !self.log.config().contains(&id) {
            return self.reply_unchanged(out, req);
        }
        if self.log.config().is_voter(&id) && self.log.config().voters.len() == 1 {
            return refuse_reconfig(out, req, format!("{id} is the last voter"));
        }
        tracing::info!(node = %self.id, member = %id, "removing a member");
        let next = self.log.config().without(&id);
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
    pub(super) fn progress_reconfig(&mut self, out: &mut Vec<Output>) {
        let committed = self.log.committed();
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
                    let membership = self.log.config().clone();
                    tracing::info!(node = %self.id, %zxid, config = %membership, "membership change committed");
                    return reply(
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
            .is_some_and(|p| p.in_sync() && p.acked >= committed);
        if caught_up {
            let member = r.member.clone().expect("adding a member");
            let next = self.log.config().with_voter(member);
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
            reply(out, r.req, Err(ClientError::LeftAsLearner { id: r.id }));
        }
    }
}

fn reply(out: &mut Vec<Output>, req: RequestId, result: Result<ClientReply, ClientError>) {
    out.push(Output::Reply { req, result });
}

fn refuse_reconfig(out: &mut Vec<Output>, req: RequestId, reason: String) {
    let refusal = ClientError::Reconfig {
        reason,
        retryable: false,
    };
    reply(out, req, Err(refusal));
}
