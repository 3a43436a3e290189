//! The in-memory network: fault settings, packets in flight, partitions and cut links.

use std::cmp::Ordering;

use guessgame_core::{Message, NodeId};

use crate::node::node_id;
use crate::sim::Sim;

#[derive(Clone, Debug)]
pub struct Faults {
    pub drop: f64,
    pub dup: f64,
    pub min_delay: u64,
    pub max_delay: u64,
    /// Chance that a message is held back for up to `slow_max` ms (reordering).
    pub slow: f64,
    pub slow_max: u64,
}

impl Faults {
    pub fn none() -> Faults {
        Faults {
            drop: 0.0,
            dup: 0.0,
            min_delay: 1,
            max_delay: 5,
            slow: 0.0,
            slow_max: 0,
        }
    }
}

pub struct Packet {
    pub at: u64,
    pub seq: u64,
    pub from: usize,
    pub to: usize,
    pub msg: Message,
}

// Ordered so that the max-heap pops the earliest (at, seq) first.
impl Ord for Packet {
    fn cmp(&self, other: &Self) -> Ordering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}
impl PartialOrd for Packet {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl PartialEq for Packet {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Packet {}

impl Sim {
    /// Split the ensemble; `groups` lists node indices (unlisted nodes form one more group).
    pub fn partition(&mut self, groups: &[Vec<usize>]) {
        self.group = vec![u32::MAX; self.n()];
        for (g, members) in groups.iter().enumerate() {
            for &i in members {
                self.group[i] = g as u32;
            }
        }
        if self.trace {
            eprintln!("[{:>7}] partition {:?}", self.now, self.group);
        }
        self.stats.partitions += 1;
    }

    pub fn heal(&mut self) {
        if self.trace {
            eprintln!("[{:>7}] heal", self.now);
        }
        self.group = vec![0; self.n()];
        self.cut.clear();
        self.lose_kinds.clear();
    }

    /// Messages from `from` to `to` are lost (the other direction is unaffected).
    pub fn cut_link(&mut self, from: usize, to: usize) {
        if self.trace {
            eprintln!("[{:>7}] cut {} -> {}", self.now, node_id(from), node_id(to));
        }
        self.cut.push((from, to));
    }

    pub fn connected(&self, a: usize, b: usize) -> bool {
        self.group[a] == self.group[b] && !self.cut.contains(&(a, b))
    }

    pub fn send(&mut self, from: usize, to: &NodeId, msg: Message) {
        let to = self.index_of(to);
        if to == from {
            self.fail(format!("{} sent a message to itself", node_id(from)));
        }
        self.stats.sent += 1;
        // Catch-up goes in bounded pieces (what the transport's message limit needs).
        let oversized = match &msg {
            Message::Sync { entries, .. } => entries.len() > self.snapshots.diff_entries,
            Message::SnapshotChunk { data, .. } => data.len() > self.snapshots.chunk_bytes,
            _ => false,
        };
        if oversized {
            self.fail(format!(
                "{} sent a {} larger than a piece may be",
                node_id(from),
                msg.kind()
            ));
        }
        if self.rng.chance(self.faults.drop) || self.lose_kinds.contains(&msg.kind()) {
            self.stats.dropped += 1;
            return;
        }
        let mut copies = vec![msg];
        if self.rng.chance(self.faults.dup) {
            self.stats.duplicated += 1;
            copies.push(copies[0].clone());
        }
        for msg in copies {
            let mut delay = self
                .rng
                .range(self.faults.min_delay, self.faults.max_delay.max(1));
            if self.faults.slow > 0.0 && self.rng.chance(self.faults.slow) {
                delay = self.rng.range(self.faults.max_delay, self.faults.slow_max);
            }
            self.next_seq += 1;
            self.net.push(Packet {
                at: self.now + delay.max(1),
                seq: self.next_seq,
                from,
                to,
                msg,
            });
        }
    }
}
