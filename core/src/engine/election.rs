//! Looking and standing: bully-style leader election over `(accepted epoch, last logged zxid,
//! node id)`. A candidate needs a quorum of voters to persist its epoch before it leads.

use std::collections::BTreeMap;

use super::events::{Output, StorageOp};
use super::quorum::voters_among;
use super::state::{CandidateState, FollowerState, Heard, LookingState, Refusal, Role};
use super::{send, send_all, ClientError, Engine};
use crate::message::Message;
use crate::types::{Credentials, NodeId};

impl Engine {
    pub(super) fn tick_looking(&mut self, out: &mut Vec<Output>) {
        // A removed or stopping node is silent: it neither looks for a leader nor stands.
        if self.removed || self.stopping {
            return;
        }
        let now = self.now;
        let hb = self.timing.heartbeat_ms;
        let et = self.timing.election_timeout_ms;
        let Role::Looking(s) = &mut self.role else {
            return;
        };
        let hello_due = now.saturating_sub(s.last_hello) >= hb;
        if hello_due {
            s.last_hello = now;
            self.send_hellos(out);
        }
        let Role::Looking(s) = &mut self.role else {
            return;
        };
        s.heard.retain(|_, h| now.saturating_sub(h.at) <= et);
        // A leader we were pointed to gets a few heartbeats to sync us; if it is dead (the
        // pointer was stale), stop waiting for it.
        if let Some((_, at)) = &s.joining {
            if now.saturating_sub(*at) > 3 * hb {
                s.joining = None;
            }
        }
        self.maybe_stand(out);
    }

    pub(super) fn tick_candidate(&mut self, out: &mut Vec<Output>) {
        let now = self.now;
        let Role::Candidate(c) = &mut self.role else {
            return;
        };
        if now.saturating_sub(c.started) > self.timing.election_timeout_ms {
            self.become_looking(out);
        } else if now.saturating_sub(c.last_sent) >= self.timing.heartbeat_ms {
            c.last_sent = now;
            self.resend_new_epoch(out);
        }
    }

    /// How long a looking node gathers `Hello`s before it may stand (ZooKeeper's finalizeWait).
    pub(super) fn candidacy_delay(&mut self) -> u64 {
        let hb = self.timing.heartbeat_ms;
        self.now + 2 * hb + self.random(hb)
    }

    /// Leaves whatever role this node had and looks for a leader. A leader's requests in
    /// flight are answered first: proposed ones may or may not commit, the rest wrote nothing.
    pub(super) fn become_looking(&mut self, out: &mut Vec<Output>) {
        if let Role::Leading(l) = &mut self.role {
            for (_, p) in std::mem::take(&mut l.pending) {
                out.push(Output::Reply {
                    req: p.req,
                    result: Err(ClientError::OutcomeUnknown),
                });
            }
            for (req, _, _) in std::mem::take(&mut l.replays) {
                out.push(Output::Reply {
                    req,
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
        let candidacy_at = self.candidacy_delay();
        self.role = Role::Looking(LookingState::new(self.now, candidacy_at));
        if self.removed || self.stopping {
            return;
        }
        self.send_hellos(out);
    }

    /// Looking: announce ourselves to everyone in any configuration we know (the one in
    /// use, the committed one, the bootstrap). Members may disagree on the configuration in
    /// use while a change is in flight; each must still hear the voters of its own.
    fn send_hellos(&self, out: &mut Vec<Output>) {
        let to = self.known_members().into_iter().map(|m| m.id).collect();
        send_all(out, to, self.hello());
    }

    /// Bully rule: stand when a quorum is looking and we rank highest among those of them
    /// that could win (that hear a quorum of looking voters themselves: a node that sees
    /// only a minority, such as a leader cut from all followers but one, never stands, so
    /// waiting for it would stall the majority). A node that keeps deferring to a higher
    /// one that never wins stands anyway after two election timeouts (acceptors still
    /// refuse a lower-ranked candidate, so this only helps when the higher one cannot
    /// reach a quorum).
    fn maybe_stand(&mut self, out: &mut Vec<Output>) {
        let Role::Looking(s) = &self.role else {
            return;
        };
        if (self.now < s.candidacy_at && !self.heard_all_but_gone(s)) || s.joining.is_some() {
            return;
        }
        // Only a voter stands: of the configuration in use, or — while a configuration that
        // leaves us out is not committed yet — of the committed one (as in Raft: such a node
        // may hold the only copy of that entry, and the others need it to lead until it
        // commits; it counts votes in the new configuration, without itself). A learner, a
        // node waiting to be added or one whose removal committed never starts an election.
        let leaving = self.log.config_zxid() > self.log.committed()
            && self.log.committed_membership().1.is_voter(&self.id);
        if self.removed || !(self.is_voter() || leaving) {
            return;
        }
        if voters_among(self.log.config(), &self.id, s.heard.keys(), true) < self.quorum() {
            return;
        }
        let me = self.creds();
        let highest = s
            .heard
            .values()
            .all(|h| h.sees_only_a_minority || h.creds < me)
            && s.deferring_to.as_ref().is_none_or(|c| *c < me);
        let patience = 2 * self.timing.election_timeout_ms;
        if !highest && self.now.saturating_sub(s.since) < patience {
            return;
        }
        let epoch = s
            .heard
            .values()
            .map(|h| h.accepted_epoch)
            .chain([self.accepted_epoch, self.max_seen_epoch])
            .max()
            .unwrap_or(0)
            + 1;
        self.stand(epoch, out);
    }

    /// After a leader is known gone, the gathering window is only there to hear who else is
    /// looking: once every other voter but that leader has announced itself, nobody is left
    /// to wait for (safety never rests on the window: acceptors still compare ranks).
    fn heard_all_but_gone(&self, s: &LookingState) -> bool {
        let Some((gone, _)) = &self.gone else {
            return false;
        };
        self.log
            .config()
            .voters
            .iter()
            .all(|m| m.id == self.id || m.id == *gone || s.heard.contains_key(&m.id))
    }

    fn stand(&mut self, epoch: u64, out: &mut Vec<Output>) {
        tracing::info!(node = %self.id, epoch, last = %self.last_zxid(), "standing for leader");
        let accepted_before = self.accepted_epoch;
        self.accepted_epoch = epoch;
        self.max_seen_epoch = self.max_seen_epoch.max(epoch);
        out.push(Output::Persist(StorageOp::SetAcceptedEpoch(epoch)));
        let mut acks = BTreeMap::new();
        acks.insert(self.id.clone(), self.log.summary());
        self.role = Role::Candidate(CandidateState {
            epoch,
            started: self.now,
            acks,
            refused: BTreeMap::new(),
            accepted_before,
            last_sent: self.now,
        });
        let msg = Message::NewEpoch {
            epoch,
            creds: self.creds(),
        };
        send_all(out, self.other_voters(), msg);
        self.maybe_win(out);
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
            .filter(|m| !c.acks.contains_key(*m) && !c.refused.contains_key(*m))
        {
            let msg = Message::NewEpoch {
                epoch: c.epoch,
                creds: creds.clone(),
            };
            send(out, m, msg);
        }
    }

    /// Candidate: lead once a quorum of voters of our configuration accepted our epoch (a
    /// learner's acceptance is not a vote).
    pub(super) fn maybe_win(&mut self, out: &mut Vec<Output>) {
        let Role::Candidate(c) = &mut self.role else {
            return;
        };
        let config = self.log.config();
        if voters_among(config, &self.id, c.acks.keys(), true) < config.quorum() {
            return;
        }
        let epoch = c.epoch;
        let acks = std::mem::take(&mut c.acks);
        self.become_leader(epoch, acks, out);
    }

    /// Candidate: once so many voters refused that a quorum of acceptances is out of reach,
    /// stop standing: join the live leader a refusal named, or defer to the highest-ranked
    /// refusing node if it ranks above us, or look again.
    fn maybe_give_up(&mut self, out: &mut Vec<Output>) {
        let Role::Candidate(c) = &self.role else {
            return;
        };
        let config = self.log.config();
        let unanswered = self
            .other_voters()
            .into_iter()
            .filter(|m| !c.acks.contains_key(m) && !c.refused.contains_key(m))
            .count();
        if voters_among(config, &self.id, c.acks.keys(), true) + unanswered >= config.quorum() {
            return;
        }
        let refused = c.refused.clone();
        let accepted_by_others = c.acks.len() > 1;
        let accepted_before = c.accepted_before;
        let leader = refused
            .values()
            .filter_map(|r| r.leader.clone().map(|l| (l, r.accepted_epoch)))
            .max_by_key(|(_, e)| *e);
        let higher = refused
            .values()
            .filter(|r| r.creds > self.creds())
            .max_by(|a, b| a.creds.cmp(&b.creds))
            .cloned();
        tracing::info!(node = %self.id, epoch = self.accepted_epoch, refusals = refused.len(), "a quorum is out of reach: no longer standing");
        self.become_looking(out);
        if let Some((leader, epoch)) = leader {
            // Nobody else accepted our epoch: we alone promised it, to ourselves, for a
            // candidacy that is over, so the promise binds no one and we may follow the
            // live leader of an earlier epoch instead of deposing it. Only in memory: the
            // file keeps the higher epoch (a restarted node is only stricter), and
            // `max_seen_epoch` keeps us from ever standing in this epoch again, so a late
            // acceptance of it (a copy of our `NewEpoch` still in flight) is never used.
            if !accepted_by_others && epoch < self.accepted_epoch {
                tracing::info!(node = %self.id, withdrawn = self.accepted_epoch, %leader, epoch, "every answer named a live leader: withdrawing our epoch to follow it");
                self.accepted_epoch = accepted_before.max(epoch);
            }
            self.on_leader_is(leader, epoch, out);
        } else if let Some(r) = higher {
            // Someone ranks higher: defer to it.
            if let Role::Looking(s) = &mut self.role {
                s.deferring_to = Some(r.creds);
            }
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
            // epoch (tests/simulation/regressions.rs:
            // looking_node_never_votes_for_a_candidate_whose_epoch_it_did_not_accept).
            Role::Following(f) if f.synced && self.now.saturating_sub(f.last_contact) <= within => {
                Some((f.leader.clone(), self.accepted_epoch))
            }
            _ => None,
        }
    }

    pub(super) fn on_hello(
        &mut self,
        from: NodeId,
        accepted_epoch: u64,
        creds: Credentials,
        sees_only_a_minority: bool,
        out: &mut Vec<Output>,
    ) {
        self.max_seen_epoch = self.max_seen_epoch.max(accepted_epoch);
        // Point a looking node only to a leader heard very recently: a stale pointer to a
        // dead leader would only delay the election.
        if let Some((leader, epoch)) = self.live_leader(2 * self.timing.heartbeat_ms) {
            send(out, &from, Message::LeaderIs { leader, epoch });
            return;
        }
        // Only voters of our configuration are gathered: a removed node or one from an
        // earlier membership is not counted towards our candidacy.
        let now = self.now;
        let Role::Looking(s) = &mut self.role else {
            return;
        };
        let first = !s.heard.contains_key(&from);
        // A voter of the configuration in use, or one that is leaving it (a voter of the
        // committed configuration while the one without it is not committed yet): such a
        // node may stand (`maybe_stand`), so it must be ranked against us too. Ignoring it
        // let it and a lower-ranked voter stand at once, each refusing the other, round
        // after round (simulation: membership_campaign seed 2635, 30 epochs, no leader).
        let voter = self.log.config().is_voter(&from)
            || (self.log.config_zxid() > self.log.committed()
                && self.log.committed_membership().1.is_voter(&from));
        if voter {
            let heard = Heard {
                creds,
                accepted_epoch,
                at: now,
                sees_only_a_minority,
            };
            s.heard.insert(from.clone(), heard);
        }
        // Answered even when `from` is in no configuration we know: our configuration may be
        // the stale one, and `from` a voter of a newer one that needs to hear us. At most
        // once a heartbeat interval per node, so answers never feed each other.
        let recently = s
            .answered
            .get(&from)
            .is_some_and(|at| now.saturating_sub(*at) < self.timing.heartbeat_ms);
        if (first || !voter) && !recently && !self.removed {
            s.answered.insert(from.clone(), now);
            // Answer a newcomer at once so both sides learn each other within one trip.
            send(out, &from, self.hello());
        }
        if self.gone.is_some() {
            self.maybe_stand(out); // perhaps the last one we were waiting for
        }
    }

    pub(super) fn on_leader_is(&mut self, leader: NodeId, epoch: u64, out: &mut Vec<Output>) {
        if leader == self.id || self.removed {
            return;
        }
        if !matches!(self.role, Role::Looking(_)) {
            return;
        }
        if self.is_gone(&leader, epoch) {
            return; // a stale pointer: that leader is gone
        }
        if epoch < self.accepted_epoch {
            // We promised a later epoch: tell that leader, it will step down and a new
            // election (which we can join) follows.
            send(out, &leader, self.epoch_rejected(epoch, None));
            return;
        }
        if let Role::Looking(s) = &mut self.role {
            s.joining = Some((leader.clone(), self.now));
        }
        self.last_resync = self.now;
        send(out, &leader, self.follower_info(epoch));
    }

    pub(super) fn on_new_epoch(
        &mut self,
        from: NodeId,
        epoch: u64,
        creds: Credentials,
        out: &mut Vec<Output>,
    ) {
        self.max_seen_epoch = self.max_seen_epoch.max(epoch);
        if let Some((leader, _)) = self.live_leader(self.timing.election_timeout_ms) {
            // Leader stickiness: a live leader is not disrupted by a candidate.
            send(out, &from, self.epoch_rejected(epoch, Some(leader)));
            return;
        }
        // A candidate outside our configuration whose log stops before our configuration
        // entry is refused: it cannot hold the entry that would make it a voter (the rank
        // rule below refuses it too; this says why). A candidate outside it with a log at
        // least as long is accepted, as Raft votes for servers it does not know: it may be
        // a voter added by an entry we lack, or a leader being removed that must finish
        // committing its removal (it then steps down).
        let stale_non_voter =
            !self.log.config().is_voter(&from) && creds.last_zxid < self.log.config_zxid();
        if epoch <= self.accepted_epoch
            || creds < self.creds()
            || creds.node_id != from
            || stale_non_voter
        {
            send(out, &from, self.epoch_rejected(epoch, None));
            return;
        }
        // Accept: persist the promise before answering.
        tracing::info!(node = %self.id, candidate = %from, epoch, "accepting epoch");
        self.accepted_epoch = epoch;
        out.push(Output::Persist(StorageOp::SetAcceptedEpoch(epoch)));
        self.role = Role::Following(FollowerState {
            leader: from.clone(),
            last_contact: self.now,
            synced: false,
            receiving: None,
        });
        self.last_resync = self.now;
        send(out, &from, self.follower_info(epoch));
    }

    pub(super) fn on_epoch_rejected(
        &mut self,
        from: NodeId,
        epoch: u64,
        accepted_epoch: u64,
        creds: Credentials,
        leader: Option<NodeId>,
        out: &mut Vec<Output>,
    ) {
        self.max_seen_epoch = self.max_seen_epoch.max(accepted_epoch);
        let leader = leader.filter(|l| *l != self.id && !self.is_gone(l, accepted_epoch));
        match &mut self.role {
            Role::Candidate(c) if c.epoch == epoch => {
                let refusal = Refusal {
                    leader,
                    creds,
                    accepted_epoch,
                };
                c.refused.insert(from, refusal);
                self.maybe_give_up(out);
            }
            Role::Leading(l) if accepted_epoch > l.epoch => {
                tracing::warn!(node = %self.id, %from, accepted_epoch, "a member promised a later epoch; stepping down");
                self.become_looking(out);
            }
            _ => {}
        }
    }
}
