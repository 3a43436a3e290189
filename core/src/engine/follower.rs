//! Following a leader: adopting its epoch, being synced (DIFF/TRUNC), taking its proposals,
//! commits and heartbeats, and leaving it when it goes silent, steps down or says we are out.

use super::events::{Output, StorageOp};
use super::state::{FollowerState, Role};
use super::{send, Engine};
use crate::message::Message;
use crate::types::{Entry, NodeId, Zxid};

impl Engine {
    pub(super) fn tick_following(&mut self, out: &mut Vec<Output>) {
        let Role::Following(f) = &self.role else {
            return;
        };
        if self.now.saturating_sub(f.last_contact) > self.timing.election_timeout_ms {
            tracing::info!(node = %self.id, leader = %f.leader, "leader silent; looking");
            self.become_looking(out);
        } else if !f.synced
            && self.now.saturating_sub(self.last_resync) >= self.timing.heartbeat_ms
            && !self.awaiting_snapshot()
        {
            self.request_sync(out);
        }
    }

    fn following(&mut self) -> Option<&mut FollowerState> {
        match &mut self.role {
            Role::Following(f) => Some(f),
            _ => None,
        }
    }

    /// Following `from` in `epoch` already (no need to adopt it).
    fn follows(&self, from: &NodeId, epoch: u64) -> bool {
        matches!(&self.role, Role::Following(f) if f.leader == *from)
            && epoch == self.accepted_epoch
    }

    fn is_synced(&self) -> bool {
        matches!(&self.role, Role::Following(f) if f.synced)
    }

    /// Describe our log to the leader we follow, so that it syncs us.
    pub(super) fn request_sync(&mut self, out: &mut Vec<Output>) {
        let Role::Following(f) = &self.role else {
            return;
        };
        let leader = f.leader.clone();
        self.last_resync = self.now;
        send(out, &leader, self.follower_info(self.accepted_epoch));
    }

    /// Adopt `epoch` (greater than or equal to ours) led by `leader`: not yet synced.
    pub(super) fn follow(&mut self, leader: &NodeId, epoch: u64, out: &mut Vec<Output>) {
        // A new epoch is a new leadership even when the leader is the same node: it may have
        // followed someone else (and truncated) in between, so our log must be synced again.
        // (Keeping `synced` here let a follower commit its stale log against the new epoch's
        // commit point and never receive the new epoch's entries; tests/simulation/regressions.rs:
        // same_leader_in_a_new_epoch_resyncs_its_followers.)
        let same_leadership = self.follows(leader, epoch);
        if self.gone.as_ref().is_some_and(|(g, _)| g == leader) {
            self.gone = None; // it was not gone after all (a spurious connection loss)
        }
        if epoch > self.accepted_epoch {
            self.accepted_epoch = epoch;
            out.push(Output::Persist(StorageOp::SetAcceptedEpoch(epoch)));
        }
        self.max_seen_epoch = self.max_seen_epoch.max(epoch);
        if !same_leadership {
            if matches!(self.role, Role::Leading(_)) {
                self.become_looking(out);
            }
            self.role = Role::Following(FollowerState {
                leader: leader.clone(),
                last_contact: self.now,
                synced: false,
                receiving: None,
            });
        }
        let now = self.now;
        if let Some(f) = self.following() {
            f.last_contact = now;
        }
    }

    /// `from` led `epoch` and left the ensemble (its `StepDown` reached us).
    pub(super) fn departed(&self, from: &NodeId, epoch: u64) -> bool {
        self.departed
            .as_ref()
            .is_some_and(|(leader, e)| leader == from && *e == epoch)
    }

    /// Common checks for messages only a leader sends. Returns true when `from` is the
    /// leader of our accepted epoch and we are (now) following it.
    fn check_leader_message(&mut self, from: &NodeId, epoch: u64, out: &mut Vec<Output>) -> bool {
        if self.departed(from, epoch) {
            return false;
        }
        if epoch < self.accepted_epoch {
            send(out, from, self.epoch_rejected(epoch, None));
            return false;
        }
        if let Role::Leading(l) = &self.role {
            if epoch == l.epoch {
                return false; // cannot happen: one leader per epoch
            }
        }
        if !self.follows(from, epoch) {
            self.follow(from, epoch, out);
        }
        let now = self.now;
        if let Some(f) = self.following() {
            f.last_contact = now;
        }
        if !self.is_synced()
            && self.now.saturating_sub(self.last_resync) >= self.timing.heartbeat_ms / 2
            && !self.awaiting_snapshot()
        {
            self.request_sync(out);
        }
        true
    }

    pub(super) fn on_commit(
        &mut self,
        from: NodeId,
        epoch: u64,
        zxid: Zxid,
        out: &mut Vec<Output>,
    ) {
        if self.check_leader_message(&from, epoch, out) {
            self.follower_commit(zxid, out);
        }
    }

    pub(super) fn on_heartbeat(
        &mut self,
        from: NodeId,
        epoch: u64,
        commit: Zxid,
        seq: u64,
        out: &mut Vec<Output>,
    ) {
        if self.check_leader_message(&from, epoch, out) {
            self.follower_commit(commit, out);
            if self.is_synced() {
                let msg = Message::HeartbeatAck {
                    epoch,
                    seq,
                    last_zxid: self.last_zxid(),
                };
                send(out, &from, msg);
            }
        }
    }

    pub(super) fn on_step_down(&mut self, from: NodeId, epoch: u64, out: &mut Vec<Output>) {
        if self.follows(&from, epoch) {
            tracing::info!(node = %self.id, leader = %from, "leader left the ensemble; looking");
            self.departed = Some((from.clone(), epoch));
            self.gone = Some((from, epoch));
            self.become_looking(out);
        }
    }

    /// The connection `peer` held to us closed. When `peer` is our leader, its process is
    /// most likely dead: look for a new leader now rather than after the election timeout.
    /// Safe when spurious: a live leader's next heartbeat makes us follow it again, and a
    /// node that alone stopped following cannot stand (the others still follow and do not
    /// look).
    pub(super) fn on_peer_lost(&mut self, peer: NodeId, out: &mut Vec<Output>) {
        let epoch = self.accepted_epoch;
        match &mut self.role {
            Role::Following(f) if f.leader == peer => {
                tracing::info!(node = %self.id, leader = %peer, "connection to the leader closed; looking");
                self.gone = Some((peer, epoch));
                self.become_looking(out);
            }
            Role::Looking(s) if s.joining.as_ref().is_some_and(|(j, _)| *j == peer) => {
                s.joining = None;
                self.gone = Some((peer, epoch));
            }
            _ => {}
        }
    }

    /// `leader` is the leader of `epoch` that we know is gone.
    pub(super) fn is_gone(&self, leader: &NodeId, epoch: u64) -> bool {
        self.gone
            .as_ref()
            .is_some_and(|(g, e)| g == leader && epoch <= *e)
    }

    /// A leader says its committed configuration leaves us out: stop taking part (until a
    /// leader that counts us syncs us again).
    pub(super) fn on_not_member(
        &mut self,
        from: NodeId,
        epoch: u64,
        config: Zxid,
        out: &mut Vec<Output>,
    ) {
        if epoch < self.accepted_epoch || matches!(self.role, Role::Leading(_)) {
            return;
        }
        // A late answer about an older configuration than ours that counts us: ignore it.
        if self.log.config_zxid() > config && self.log.config().contains(&self.id) {
            return;
        }
        if !self.removed {
            tracing::warn!(node = %self.id, leader = %from, %config, "not a member of the committed configuration; standing by");
        }
        self.removed = true;
        if !matches!(self.role, Role::Looking(_)) {
            self.become_looking(out);
        }
    }

    /// A leader's sync (DIFF piece or snapshot piece) from `from` in `epoch`: follow it,
    /// unless the epoch is older than ours, `from` left, or we lead. Returns whether to go on.
    pub(super) fn take_sync_from(
        &mut self,
        from: &NodeId,
        epoch: u64,
        out: &mut Vec<Output>,
    ) -> bool {
        if epoch < self.accepted_epoch
            || self.departed(from, epoch)
            || matches!(self.role, Role::Leading(_))
        {
            return false;
        }
        self.follow(from, epoch, out);
        true
    }

    pub(super) fn on_sync(
        &mut self,
        from: NodeId,
        epoch: u64,
        truncate_to: Zxid,
        entries: Vec<Entry>,
        commit: Zxid,
        out: &mut Vec<Output>,
    ) {
        if !self.take_sync_from(&from, epoch, out) {
            return;
        }
        let Some(mut pos) = self.log.position_after(truncate_to) else {
            // We no longer hold the point it computed from: describe our log again.
            self.request_sync(out);
            return;
        };
        // Skip what we already hold (same zxid means same entry and same prefix). A stale
        // Sync overtaken by proposals of this epoch thus never removes acknowledged entries.
        let mut entries = entries.into_iter().peekable();
        let mut skipped = 0;
        while pos < self.log.len()
            && entries
                .peek()
                .is_some_and(|e| e.zxid == self.log.zxid_of(pos))
        {
            entries.next();
            pos += 1;
            skipped += 1;
        }
        let rest: Vec<Entry> = entries.collect();
        // Anything after `pos` that is not this leader's is not in its log: TRUNC. An entry
        // of ours that differs from the leader's next one is not the leader's. Where the
        // piece simply ends before our log does, what follows is the leader's (of its epoch,
        // or from a later piece) when the piece started with entries we already held: the
        // leader computes a sync from the last zxid we share, so a piece computed for our
        // current log never starts with one of ours — this one is a late duplicate.
        let conflict = pos < self.log.len()
            && (!rest.is_empty() || (skipped == 0 && self.log.zxid_of(pos).epoch != epoch));
        if conflict {
            if pos < self.log.commit_len() {
                // A correct leader holds every committed entry; refuse to lose one.
                tracing::error!(node = %self.id, %truncate_to, committed = %self.committed(), "sync would truncate committed entries; refused");
                return;
            }
            let after = self.log.zxid_at(pos);
            tracing::info!(node = %self.id, dropped = self.log.len() - pos, %after, "TRUNC");
            self.log.truncate(&self.id, pos);
            out.push(Output::Persist(StorageOp::TruncateAfter(after)));
        }
        if !rest.is_empty() {
            self.log.append(&self.id, rest.clone());
            out.push(Output::Persist(StorageOp::Append(rest)));
        }
        // A leader syncing us counts us as a member.
        self.removed = false;
        // The epoch is recorded after the entries (ZOOKEEPER-4643).
        if self.current_epoch != epoch {
            self.current_epoch = epoch;
            out.push(Output::Persist(StorageOp::SetCurrentEpoch(epoch)));
        }
        let now = self.now;
        if let Some(f) = self.following() {
            f.synced = true;
            f.last_contact = now;
        }
        let last = self.last_zxid();
        send(out, &from, Message::Ack { epoch, zxid: last });
        self.follower_commit(commit, out);
    }

    pub(super) fn on_proposal(
        &mut self,
        from: NodeId,
        epoch: u64,
        prev: Zxid,
        entries: Vec<Entry>,
        commit: Zxid,
        out: &mut Vec<Output>,
    ) {
        if !self.check_leader_message(&from, epoch, out) || !self.is_synced() {
            return;
        }
        let last = self.last_zxid();
        if prev == last {
            self.log.append(&self.id, entries.clone());
            out.push(Output::Persist(StorageOp::Append(entries)));
        } else if entries.last().is_some_and(|e| e.zxid <= last) {
            // Duplicate: already on disk.
        } else {
            // A gap: something was lost. Ask for a fresh sync.
            if let Some(f) = self.following() {
                f.synced = false;
            }
            self.request_sync(out);
            return;
        }
        let zxid = self.last_zxid();
        send(out, &from, Message::Ack { epoch, zxid });
        self.follower_commit(commit, out);
    }

    /// Follower: advance the commit point (never past what we hold of the leader's log).
    fn follower_commit(&mut self, commit: Zxid, out: &mut Vec<Output>) {
        if !self.is_synced() {
            return;
        }
        let target = self.log.len_through(commit);
        self.advance_commit(target, out);
    }
}
