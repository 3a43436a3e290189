//! A leader's side of replication: syncing followers, tracking what each holds, counting a
//! quorum to commit, and re-sending what a follower lost. Also where any member's commit
//! point advances.

use super::events::{ClientError, ClientReply, Output, RequestId};
use super::messages;
use super::quorum::quorum_value;
use super::state::{Role, SyncState};
use super::{send, send_all, send_early, Engine};
use crate::message::{EpochSummary, Message};
use crate::types::{NodeId, Zxid};

impl Engine {
    /// Brings `follower`'s log up to ours from its `summary`: TRUNC of whatever it holds past
    /// the last zxid both logs share, then the rest (DIFF) in pieces — or, when that point
    /// was compacted away here, our snapshot in pieces first (SNAP, `snapshot.rs`).
    pub(super) fn sync_follower(
        &mut self,
        follower: &NodeId,
        summary: &EpochSummary,
        out: &mut Vec<Output>,
    ) {
        let common = self.log.last_common(summary);
        self.start_sync(follower, common, out);
    }

    /// Syncs `follower`, whose log is a prefix of ours up to `common` (its later entries, if
    /// any, are not ours).
    pub(super) fn start_sync(&mut self, follower: &NodeId, common: Zxid, out: &mut Vec<Output>) {
        if self.log.position_after(common).is_none() {
            return self.start_snapshot(follower, out);
        }
        let now = self.now;
        let Role::Leading(l) = &mut self.role else {
            return;
        };
        // Not `last_heard`: sending a follower something says nothing of whether it is
        // there (a follower that can never finish its sync must not keep us leading).
        l.followers.entry(follower.clone()).or_default().sync = SyncState::Diff {
            base: common,
            through: common,
            at: now,
        };
        self.send_diff_piece(follower, out);
    }

    /// Sends the next piece of `follower`'s DIFF: what follows `base` (which it holds), at
    /// most `diff_entries` / about `diff_bytes`. The piece that reaches our last entry
    /// makes it in sync: proposals follow it on the same stream.
    pub(super) fn send_diff_piece(&mut self, follower: &NodeId, out: &mut Vec<Output>) {
        let (now, last, commit) = (self.now, self.log.last_zxid(), self.log.committed());
        let Role::Leading(l) = &mut self.role else {
            return;
        };
        let Some(p) = l.followers.get_mut(follower) else {
            return;
        };
        let SyncState::Diff { base, .. } = p.sync else {
            return;
        };
        let Some(from) = self.log.position_after(base) else {
            // Compacted away while it was syncing: it needs the snapshot now.
            return self.start_snapshot(follower, out);
        };
        let entries = self
            .log
            .piece(from, self.snapshots.diff_entries, self.snapshots.diff_bytes);
        let through = entries.last().map_or(base, |e| e.zxid);
        p.sync = if through == last {
            SyncState::InSync
        } else {
            SyncState::Diff {
                base,
                through,
                at: now,
            }
        };
        send(
            out,
            follower,
            messages::sync(l.epoch, base, entries, commit),
        );
    }

    /// Re-sends the piece of a DIFF or snapshot whose acknowledgement did not come (lost,
    /// or the follower restarted): every half election timeout while one is outstanding.
    pub(super) fn resend_stalled_syncs(&mut self, out: &mut Vec<Output>) {
        let now = self.now;
        let patience = self.timing.election_timeout_ms / 2;
        let Role::Leading(l) = &self.role else {
            return;
        };
        let stalled: Vec<(NodeId, bool)> = l
            .followers
            .iter()
            .filter_map(|(m, p)| match p.sync {
                SyncState::Diff { at, .. } if now.saturating_sub(at) >= patience => {
                    Some((m.clone(), false))
                }
                SyncState::Snapshot { at, .. } if now.saturating_sub(at) >= patience => {
                    Some((m.clone(), true))
                }
                _ => None,
            })
            .collect();
        for (m, snapshot) in stalled {
            if snapshot {
                self.send_snapshot_piece(&m, out);
            } else {
                self.send_diff_piece(&m, out);
            }
        }
    }

    pub(super) fn on_ack(&mut self, from: NodeId, epoch: u64, zxid: Zxid, out: &mut Vec<Output>) {
        let now = self.now;
        let Role::Leading(l) = &mut self.role else {
            return;
        };
        if l.epoch != epoch {
            return;
        }
        let mut next_piece = false;
        if let Some(p) = l.followers.get_mut(&from) {
            p.acked = p.acked.max(zxid);
            p.last_heard = now;
            if let SyncState::Diff { through, .. } = p.sync {
                if zxid >= through {
                    // Its log is ours up to `zxid` now: the next piece follows it.
                    p.sync = SyncState::Diff {
                        base: zxid,
                        through: zxid,
                        at: now,
                    };
                    next_piece = true;
                }
            }
        }
        if next_piece {
            self.send_diff_piece(&from, out);
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
            if matches!(p.sync, SyncState::Diff { .. } | SyncState::Snapshot { .. }) {
                // Being synced in pieces: the next piece follows the last one's ack.
            } else if !p.in_sync() {
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
            // Re-sends what it lacks after `last_zxid` (a zxid of our log, as its log is a
            // prefix of ours), in pieces; proposals wait until it has all of it.
            self.start_sync(&from, last_zxid, out);
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
        answer_committed(&mut l.refusals, candidate, out, |e| {
            Err(ClientError::Game(e))
        });
        answer_committed(&mut l.replays, candidate, out, Ok);
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
        self.log.maybe_compact(&self.id, &self.snapshots, out);
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

/// Answers the requests in `waiting` whose answer waited for the entry they name to commit
/// (`through` is committed now), in the order they came; the others keep waiting.
fn answer_committed<T>(
    waiting: &mut Vec<(RequestId, T, Zxid)>,
    through: Zxid,
    out: &mut Vec<Output>,
    result: impl Fn(T) -> Result<ClientReply, ClientError>,
) {
    for (req, answer, _) in waiting.extract_if(.., |(_, _, zxid)| *zxid <= through) {
        out.push(Output::Reply {
            req,
            result: result(answer),
        });
    }
}
