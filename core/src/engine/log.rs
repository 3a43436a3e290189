//! The replicated log as one member holds it: the latest snapshot, the entries after the
//! log's start, the commit point, the committed game, and the configurations the log carries
//! (the latest one is in use).
//!
//! Positions (`len`, `commit_len`, `position_after`, …) count the entries *held*, after
//! `start`: position 0 is `start` itself (the last zxid compacted away, or ZERO).

use super::events::{Output, StorageOp};
use crate::game::Game;
use crate::message::EpochSummary;
use crate::snapshot::{approx_size, Snapshot, SnapshotPolicy};
use crate::types::{Entry, Member, Membership, NodeId, Op, Zxid};

#[derive(Debug)]
pub(super) struct ReplicatedLog {
    /// The entries held start after this zxid (entries up to it were compacted into the
    /// snapshot); ZERO when the log holds the whole history.
    start: Zxid,
    /// The latest snapshot (at or after `start`, at or before the commit point).
    snapshot: Option<Snapshot>,
    /// Committed entries (and their approximate bytes) since `snapshot`: when to take the next.
    since_snapshot: (usize, u64),
    entries: Vec<Entry>,
    /// Number of committed entries at the head of `entries`.
    commit_len: usize,
    /// Committed state (mirrors what the runtime applies); the leader's speculation starts here.
    game: Game,
    /// The configuration used while the log holds none (start-up flags of a new ensemble;
    /// empty for a node that waits to be added).
    bootstrap: Membership,
    /// Every `Op::Config` in the log after the snapshot, in order, preceded by the snapshot's
    /// configuration: the last one is the configuration in use.
    configs: Vec<(Zxid, Membership)>,
    /// The configuration in use (the latest in the log, committed or not; else `bootstrap`).
    config: Membership,
}

impl ReplicatedLog {
    /// The log a node restarts with: the snapshot's game, then the `committed` entries after
    /// it applied at once. `entries` follow `start` (entries at or below it are ignored).
    pub fn new(
        snapshot: Option<Snapshot>,
        start: Zxid,
        mut entries: Vec<Entry>,
        committed: Zxid,
        bootstrap: Membership,
    ) -> ReplicatedLog {
        entries.retain(|e| e.zxid > start);
        let snapshot_zxid = snapshot.as_ref().map_or(Zxid::ZERO, |s| s.zxid);
        // The snapshot is committed, even if a commit-point hint after it was lost.
        let committed = committed.max(snapshot_zxid);
        let mut game = snapshot
            .as_ref()
            .map(|s| s.game.clone())
            .unwrap_or_default();
        let commit_len = entries.partition_point(|e| e.zxid <= committed);
        let mut since_snapshot = (0, 0);
        for e in entries[..commit_len]
            .iter()
            .filter(|e| e.zxid > snapshot_zxid)
        {
            game.apply(e);
            since_snapshot.0 += 1;
            since_snapshot.1 += approx_size(e);
        }
        let mut log = ReplicatedLog {
            start,
            snapshot: None,
            since_snapshot,
            entries: Vec::new(),
            commit_len,
            game,
            bootstrap,
            configs: Vec::new(),
            config: Membership::default(),
        };
        log.entries = entries;
        log.snapshot = snapshot;
        log.rebuild_configs();
        log
    }

    /// `configs` and `config` from the snapshot's configuration and the entries after it.
    fn rebuild_configs(&mut self) {
        let from = self.snapshot.as_ref().map_or(Zxid::ZERO, |s| s.zxid);
        let base = self
            .snapshot
            .as_ref()
            .filter(|s| s.config_zxid != Zxid::ZERO)
            .map(|s| (s.config_zxid, s.config.clone()));
        self.configs = base
            .into_iter()
            .chain(
                self.entries
                    .iter()
                    .filter(|e| e.zxid > from)
                    .filter_map(|e| match &e.op {
                        Op::Config(m) => Some((e.zxid, m.clone())),
                        _ => None,
                    }),
            )
            .collect();
        self.config = self
            .configs
            .last()
            .map(|(_, m)| m.clone())
            .unwrap_or_else(|| self.bootstrap.clone());
    }

    // ------------------------------------------------------------------ snapshots

    /// The last zxid compacted away (entries held follow it); ZERO: the whole history.
    pub fn start(&self) -> Zxid {
        self.start
    }
    pub fn snapshot(&self) -> Option<&Snapshot> {
        self.snapshot.as_ref()
    }
    /// The committed state now, as a snapshot (what a backup saves).
    pub fn committed_snapshot(&self) -> Snapshot {
        let (config_zxid, config) = self.committed_membership();
        Snapshot {
            zxid: self.committed(),
            game: self.game.clone(),
            config_zxid,
            config: config.clone(),
        }
    }

    /// Takes a snapshot of the committed state when `policy` says it is time, and drops the
    /// entries below the retained margin (emitting `SaveSnapshot`). Cheap when it is not time.
    pub fn maybe_compact(&mut self, me: &NodeId, policy: &SnapshotPolicy, out: &mut Vec<Output>) {
        let (n, bytes) = self.since_snapshot;
        if n == 0 || (n < policy.every_entries && bytes < policy.every_bytes) {
            return;
        }
        let snapshot = self.committed_snapshot();
        let dropped = self.commit_len.saturating_sub(policy.retain_entries);
        let start = self.zxid_at(dropped).max(self.start);
        self.entries.drain(..dropped);
        self.commit_len -= dropped;
        self.start = start;
        tracing::info!(node = %me, zxid = %snapshot.zxid, log_start = %start, held = self.entries.len(), "snapshot taken; log compacted");
        self.snapshot = Some(snapshot.clone());
        self.since_snapshot = (0, 0);
        self.rebuild_configs();
        out.push(Output::Persist(StorageOp::SaveSnapshot {
            snapshot,
            log_start: start,
        }));
    }

    /// Replaces the whole log with `snapshot` (a leader's, installed by its follower): the
    /// log then ends at the snapshot's zxid, which is committed.
    pub fn install(&mut self, me: &NodeId, snapshot: Snapshot) {
        tracing::info!(node = %me, zxid = %snapshot.zxid, dropped = self.entries.len(), "installing the leader's snapshot");
        self.start = snapshot.zxid;
        self.entries.clear();
        self.commit_len = 0;
        self.game = snapshot.game.clone();
        self.snapshot = Some(snapshot);
        self.since_snapshot = (0, 0);
        self.rebuild_configs();
        tracing::info!(node = %me, config = %self.config, "configuration in use");
    }

    /// Entries from 0-based position `from`, at most `max_entries` and (past the first) about
    /// `max_bytes`: one piece of a DIFF.
    pub fn piece(&self, from: usize, max_entries: usize, max_bytes: u64) -> Vec<Entry> {
        let mut bytes = 0;
        let mut end = from;
        while end < self.entries.len() && end - from < max_entries.max(1) {
            bytes += approx_size(&self.entries[end]);
            if end > from && bytes > max_bytes {
                break;
            }
            end += 1;
        }
        self.entries[from..end].to_vec()
    }

    // ------------------------------------------------------------------ entries

    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }
    pub fn len(&self) -> usize {
        self.entries.len()
    }
    pub fn committed_entries(&self) -> &[Entry] {
        &self.entries[..self.commit_len]
    }
    pub fn uncommitted(&self) -> &[Entry] {
        &self.entries[self.commit_len..]
    }
    pub fn commit_len(&self) -> usize {
        self.commit_len
    }
    pub fn last_zxid(&self) -> Zxid {
        self.entries.last().map(|e| e.zxid).unwrap_or(self.start)
    }
    pub fn committed(&self) -> Zxid {
        self.zxid_at(self.commit_len)
    }
    pub fn game(&self) -> &Game {
        &self.game
    }
    /// The game after every entry, committed or not (where a leader checks requests).
    pub fn speculative_game(&self) -> Game {
        let mut speculative = self.game.clone();
        for e in self.uncommitted() {
            speculative.apply(e);
        }
        speculative
    }

    /// Zxid of the entry at 1-based position `len` (0 → the log's start).
    pub fn zxid_at(&self, len: usize) -> Zxid {
        if len == 0 {
            self.start
        } else {
            self.entries[len - 1].zxid
        }
    }

    /// Zxid of the entry at 0-based `index`.
    pub fn zxid_of(&self, index: usize) -> Zxid {
        self.entries[index].zxid
    }

    /// Position just after `zxid` in the log, if `zxid` is the log's start or held.
    pub fn position_after(&self, zxid: Zxid) -> Option<usize> {
        if zxid == self.start {
            return Some(0);
        }
        self.entries
            .binary_search_by(|e| e.zxid.cmp(&zxid))
            .ok()
            .map(|i| i + 1)
    }

    /// Number of entries held at or below `zxid`.
    pub fn len_through(&self, zxid: Zxid) -> usize {
        self.entries.partition_point(|e| e.zxid <= zxid)
    }

    /// `(epoch, last counter)` for every epoch in the log (from its start on: the start
    /// itself counts as held, since every entry up to it was).
    pub fn summary(&self) -> EpochSummary {
        let mut out: EpochSummary = Vec::new();
        let first_epoch = self.entries.first().map(|e| e.zxid.epoch);
        if self.start != Zxid::ZERO && first_epoch != Some(self.start.epoch) {
            out.push((self.start.epoch, self.start.counter));
        }
        let mut i = 0;
        while i < self.entries.len() {
            let epoch = self.entries[i].zxid.epoch;
            let end = self.entries.partition_point(|e| e.zxid.epoch <= epoch);
            out.push((epoch, self.entries[end - 1].zxid.counter));
            i = end;
        }
        out
    }

    /// The last zxid this log shares with a log described by `summary` (entries of one epoch
    /// come from that epoch's single leader, so equal counters mean equal entries).
    /// May be below our start (then only a snapshot brings that log up to ours).
    pub fn last_common(&self, summary: &EpochSummary) -> Zxid {
        let ours = self.summary();
        let mut common = Zxid::ZERO;
        for &(epoch, last_counter) in summary {
            if let Some(&(_, our_last)) = ours.iter().find(|(e, _)| *e == epoch) {
                common = common.max(Zxid::new(epoch, our_last.min(last_counter)));
            }
        }
        common
    }

    /// Appends `entries` (in memory; the caller persists them), keeping the configurations
    /// in step.
    pub fn append(&mut self, me: &NodeId, entries: Vec<Entry>) {
        let from = self.entries.len();
        self.entries.extend(entries);
        for e in &self.entries[from..] {
            if let Op::Config(m) = &e.op {
                self.configs.push((e.zxid, m.clone()));
                self.config = m.clone();
                tracing::info!(node = %me, zxid = %e.zxid, config = %m, "configuration in use");
            }
        }
    }

    /// Drops every entry from 0-based position `len` on; a dropped configuration entry is
    /// no longer in use.
    pub fn truncate(&mut self, me: &NodeId, len: usize) {
        debug_assert!(len >= self.commit_len, "never truncates committed entries");
        self.entries.truncate(len);
        let last = self.last_zxid();
        let before = self.configs.len();
        self.configs.retain(|(z, _)| *z <= last);
        if self.configs.len() != before {
            self.config = self
                .configs
                .last()
                .map(|(_, m)| m.clone())
                .unwrap_or_else(|| self.bootstrap.clone());
            tracing::info!(node = %me, config = %self.config, "configuration entry truncated; back to the previous one");
        }
    }

    /// Commits the first `new_len` entries: applies the newly committed ones to the game and
    /// emits them (`Apply`), then the new commit point. Returns false when nothing changed.
    pub fn commit_to(&mut self, new_len: usize, out: &mut Vec<Output>) -> bool {
        if new_len <= self.commit_len {
            return false;
        }
        for e in &self.entries[self.commit_len..new_len] {
            self.game.apply(e);
            self.since_snapshot.0 += 1;
            self.since_snapshot.1 += approx_size(e);
            out.push(Output::Apply(e.clone()));
        }
        self.commit_len = new_len;
        out.push(Output::Persist(StorageOp::SetCommitted(self.committed())));
        true
    }

    // ------------------------------------------------------------------ configurations

    pub fn bootstrap(&self) -> &Membership {
        &self.bootstrap
    }
    /// The configuration in use: the latest in the log (committed or not), else the bootstrap.
    pub fn config(&self) -> &Membership {
        &self.config
    }
    /// The log holds a configuration entry (else the bootstrap is in use).
    pub fn has_config_entry(&self) -> bool {
        !self.configs.is_empty()
    }
    /// Zxid of the configuration entry in use (ZERO: the bootstrap configuration).
    pub fn config_zxid(&self) -> Zxid {
        self.configs.last().map(|(z, _)| *z).unwrap_or(Zxid::ZERO)
    }
    /// The latest committed configuration and its zxid.
    pub fn committed_membership(&self) -> (Zxid, &Membership) {
        let committed = self.committed();
        self.configs
            .iter()
            .rev()
            .find(|(z, _)| *z <= committed)
            .map(|(z, m)| (*z, m))
            .unwrap_or((Zxid::ZERO, &self.bootstrap))
    }

    /// Everyone but `me` in any of `configs`, by id (the first address wins).
    pub fn others_in(me: &NodeId, configs: &[&Membership]) -> Vec<Member> {
        let mut all: Vec<Member> = configs
            .iter()
            .flat_map(|c| c.all())
            .filter(|m| m.id != *me)
            .cloned()
            .collect();
        all.sort_by(|a, b| a.id.cmp(&b.id));
        all.dedup_by(|a, b| a.id == b.id);
        all
    }

    /// Everyone `me` may need to talk to: members of the configuration in use, of the
    /// committed one, and of the bootstrap.
    pub fn known_members(&self, me: &NodeId) -> Vec<Member> {
        Self::others_in(
            me,
            &[&self.config, self.committed_membership().1, &self.bootstrap],
        )
    }

    /// Who a leader replicates to: members of the configuration in use and of the committed
    /// one (a member being removed keeps receiving the log until its removal commits).
    pub fn replication_targets(&self, me: &NodeId) -> Vec<NodeId> {
        Self::others_in(me, &[&self.config, self.committed_membership().1])
            .into_iter()
            .map(|m| m.id)
            .collect()
    }
}
