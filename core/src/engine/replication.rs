//! A leader's side of replication: syncing followers, tracking what each holds, counting a
//! quorum to commit, and re-sending what a follower lost. Also where any member's commit
//! point advances.

use super::events::{ClientError, Output};
use super::messages;
use super::quorum::quorum_value;
use super::state::Role;
use super::{send, send_all, send_early, Engine};
use crate::message::{EpochSummary, Message};
use crate::types::{NodeId, Zxid};

impl Engine {
    /// Sends `Sync` so that `follower`'s log becomes a prefix of ours: it keeps the last
    /// zxid both logs hold (TRUNC of anything after it) and receives the rest (DIFF).
    pub(super) fn sync_follower(
        &mut self,
        follower: &NodeId,
        summary: &EpochSummary,
        out: &mut Vec<Output>,
    ) {
        let common = self.log.last_common(summary);
        let from = self.log.position_after(common).unwrap_or(0);
        let entries = self.log.suffix(from);
        let commit = self.log.committed();
        let now = self.now;
        let Role::Leading(l) = &mut self.role else {
            return;
        };
        let p = l.followers.entry(follower.clone()).or_default();
        p.in_sync = true;
        p.last_heard = now;
        send(
            out,
            follower,
            messages::sync(l.epoch, common, entries, commit),
        );
    }

    /// Re-sends what a synced follower lacks after `its_last` (a zxid of our log, as the
    /// follower's log is a prefix of ours). `Sync` tolerates overlap with what it has.
    fn catch_up(&mut self, follower: &NodeId, its_last: Zxid, out: &mut Vec<Output>) {
        let Some(from) = self.log.position_after(its_last) else {
            return;
        };
        let entries = self.log.suffix(from);
        let commit = self.log.committed();
        let Role::Leading(l) = &mut self.role else {
            return;
        };
        if let Some(p) = l.followers.get_mut(follower) {
            p.in_sync = true;
        }
        send(
            out,
            follower,
            messages::sync(l.epoch, its_last, entries, commit),
        );
    }

    pub(super) fn on_ack(&mut self, from: NodeId, epoch: u64, zxid: Zxid, out: &mut Vec<Output>) {
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

    pub(super) fn on_heartbeat_ack(
        &mut self,
        from: NodeId,
        epoch: u64,
        seq: u64,
        last_zxid: Zxid,
        out: &mut Vec<Output>,
    ) {
        let now = self.now;
        let last = self.log.last_zxid();
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
                // (tests/simulation/regressions.rs: entry_commits_although_every_ack_is_lost).
                p.acked = p.acked.max(last_zxid);
                // The heartbeat was sent after our last append, yet the follower lacks
                // entries: a proposal was lost. A follower only notices a gap when the next
                // proposal arrives, so in a quiet ensemble it would stay behind (and an
                // entry no follower got would never commit) without this catch-up
                // (tests/simulation/regressions.rs: follower_that_missed_proposals_catches_up_while_idle).
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

    /// Leader: commit the highest zxid of this epoch that a quorum holds.
    pub(super) fn try_commit(&mut self, out: &mut Vec<Output>) {
        let last = self.log.last_zxid();
        let Role::Leading(l) = &self.role else {
            return;
        };
        // Counted over the voters of the configuration in use, committed or not (the
        // single-server change rule: consecutive configurations share a majority).
        let acked = l.followers.iter().map(|(m, f)| (m, f.acked));
        // Our own copy counts once it is on disk: our proposals leave before our write.
        let mine = last.min(self.durable);
        let Some(candidate) = quorum_value(self.log.config(), &self.id, acked, mine) else {
            return;
        };
        // Only entries of our own epoch are committed by counting (earlier ones follow).
        if candidate.epoch != l.epoch || candidate <= self.log.committed() {
            return;
        }
        let epoch = l.epoch;
        let new_len = self.log.len_through(candidate);
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
            let msg = Message::Commit {
                epoch,
                zxid: candidate,
            };
            send_early(out, &m, msg);
        }
        self.answer_reads(out);
        self.refresh_followers(out);
        self.progress_reconfig(out);
        self.maybe_hand_over(out);
        if self.removed && matches!(self.role, Role::Leading(_)) {
            // The configuration without us committed: hand over at once. Our followers
            // start an election now (they hold every committed entry) instead of waiting
            // for the election timeout.
            tracing::warn!(node = %self.id, epoch, "removed from the ensemble; leader steps down");
            let to = self.others();
            send_all(out, to, Message::StepDown { epoch });
            self.become_looking(out);
        }
    }

    /// Commits the first `new_len` entries of the log (leader or follower), and notices when
    /// that commits our own removal.
    pub(super) fn advance_commit(&mut self, new_len: usize, out: &mut Vec<Output>) {
        let config_before = self.log.committed_membership().0;
        if !self.log.commit_to(new_len, out) {
            return;
        }
        let (config_zxid, config) = self.log.committed_membership();
        if config_zxid != config_before
            && !config.contains(&self.id)
            && !self.log.config().contains(&self.id)
            && !self.removed
        {
            // Our removal committed. A follower just stops taking part; a leader hands over
            // in `try_commit` once it has answered the requests this commit completed.
            tracing::warn!(node = %self.id, %config_zxid, "removed from the ensemble");
            self.removed = true;
        }
    }
}
