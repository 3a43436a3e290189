//! The replicated log as one member holds it: entries, the commit point, the committed game,
//! and the configurations the log carries (the latest one is in use).

use super::events::{Output, StorageOp};
use crate::game::Game;
use crate::message::EpochSummary;
use crate::types::{Entry, Member, Membership, NodeId, Op, Zxid};

#[derive(Debug)]
pub(super) struct ReplicatedLog {
    entries: Vec<Entry>,
    /// Number of committed entries at the head of `entries`.
    commit_len: usize,
    /// Committed state (mirrors what the runtime applies); the leader's speculation starts here.
    game: Game,
    /// The configuration used while the log holds none (start-up flags of a new ensemble;
    /// empty for a node that waits to be added).
    bootstrap: Membership,
    /// Every `Op::Config` in the log, in order: the last one is the configuration in use.
    configs: Vec<(Zxid, Membership)>,
    /// The configuration in use (the latest in the log, committed or not; else `bootstrap`).
    config: Membership,
}

impl ReplicatedLog {
    /// The log a node restarts with: `committed` entries are applied to the game at once.
    pub fn new(entries: Vec<Entry>, committed: Zxid, bootstrap: Membership) -> ReplicatedLog {
        let mut game = Game::default();
        let commit_len = entries.partition_point(|e| e.zxid <= committed);
        for e in &entries[..commit_len] {
            game.apply(e);
        }
        let configs: Vec<(Zxid, Membership)> = entries
            .iter()
            .filter_map(|e| match &e.op {
                Op::Config(m) => Some((e.zxid, m.clone())),
                _ => None,
            })
            .collect();
        let config = configs
            .last()
            .map(|(_, m)| m.clone())
            .unwrap_or_else(|| bootstrap.clone());
        ReplicatedLog {
            entries,
            commit_len,
            game,
            bootstrap,
            configs,
            config,
        }
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
        self.entries.last().map(|e| e.zxid).unwrap_or(Zxid::ZERO)
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

    /// Zxid of the entry at 1-based position `len` (0 → ZERO).
    pub fn zxid_at(&self, len: usize) -> Zxid {
        if len == 0 {
            Zxid::ZERO
        } else {
            self.entries[len - 1].zxid
        }
    }

    /// Zxid of the entry at 0-based `index`.
    pub fn zxid_of(&self, index: usize) -> Zxid {
        self.entries[index].zxid
    }

    /// Position just after `zxid` in the log, if `zxid` is ZERO or logged.
    pub fn position_after(&self, zxid: Zxid) -> Option<usize> {
        if zxid == Zxid::ZERO {
            return Some(0);
        }
        self.entries
            .binary_search_by(|e| e.zxid.cmp(&zxid))
            .ok()
            .map(|i| i + 1)
    }

    /// Number of entries at or below `zxid`.
    pub fn len_through(&self, zxid: Zxid) -> usize {
        self.entries.partition_point(|e| e.zxid <= zxid)
    }

    /// Everything from 0-based position `from` on.
    pub fn suffix(&self, from: usize) -> Vec<Entry> {
        self.entries[from..].to_vec()
    }

    /// `(epoch, last counter)` for every epoch in the log.
    pub fn summary(&self) -> EpochSummary {
        let mut out: EpochSummary = Vec::new();
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
    pub fn last_common(&self, summary: &EpochSummary) -> Zxid {
        let mut common = Zxid::ZERO;
        for &(epoch, last_counter) in summary {
            let end = self.entries.partition_point(|e| e.zxid.epoch <= epoch);
            if end > 0 && self.entries[end - 1].zxid.epoch == epoch {
                let ours = self.entries[end - 1].zxid.counter;
                common = common.max(Zxid::new(epoch, ours.min(last_counter)));
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
