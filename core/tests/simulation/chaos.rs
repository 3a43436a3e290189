//! Chaos: random partitions, crashes, pauses, clock freezes, client traffic and membership
//! changes, one step at a time.

use crate::clients::ReqKind;
use crate::node::node_id;
use crate::sim::{Sim, STEP_MS};

#[derive(Clone, Debug)]
pub struct Chaos {
    /// Mean time between events of each kind (0 = never).
    pub partition_every_ms: u64,
    pub partition_max_ms: u64,
    /// Share of partitions that cut the current leader off.
    pub leader_bias: f64,
    pub crash_every_ms: u64,
    pub pause_every_ms: u64,
    /// Clock stops while the node keeps working.
    pub freeze_every_ms: u64,
    pub client_every_ms: u64,
    /// Membership changes (0 = never).
    pub reconfig_every_ms: u64,
}

const CLIENTS: [&str; 6] = ["c1", "c2", "c3", "c4", "c5", "c6"];

impl Sim {
    pub fn every(&mut self, mean_ms: u64) -> bool {
        mean_ms > 0 && self.rng.chance(STEP_MS as f64 / mean_ms as f64)
    }

    /// `chaos` until virtual time `end_ms`.
    pub fn chaos_until(&mut self, chaos: &Chaos, end_ms: u64) {
        let mut partition_until = None;
        while self.now < end_ms {
            self.chaos_step(chaos, &mut partition_until);
        }
    }

    /// One step of faults and client traffic, then one step of time.
    pub fn chaos_step(&mut self, chaos: &Chaos, partition_until: &mut Option<u64>) {
        let n = self.n();
        if let Some(until) = *partition_until {
            if self.now >= until {
                self.heal();
                *partition_until = None;
            }
        } else if n > 1 && self.every(chaos.partition_every_ms) {
            let groups = self.random_partition(chaos.leader_bias);
            self.partition(&groups);
            *partition_until = Some(self.now + self.rng.range(200, chaos.partition_max_ms));
        }
        if self.every(chaos.crash_every_ms) {
            let i = self.rng.below(n as u64) as usize;
            if self.nodes[i].up() && self.nodes[i].stop_at.is_none() {
                let kind = self.rng.below(10);
                if kind < 4 {
                    // Crash while carrying out its next batch.
                    self.nodes[i].crash_armed = true;
                } else if kind < 6 {
                    self.crash(i);
                } else if kind < 7 {
                    // An OS crash or power loss: what was not fsynced is gone too.
                    self.power_loss(i);
                } else {
                    // SIGTERM: a leader hands over; the process exits soon, handed over or not.
                    self.stop(i, 400);
                }
                let down = self.rng.range(50, 3_000);
                self.nodes[i].restart_at = Some(self.now + down);
            }
        }
        if n > 1 && self.every(chaos.crash_every_ms.saturating_mul(2)) {
            // A connection reset between live processes.
            let to = self.rng.below(n as u64) as usize;
            let peer = self.rng.below(n as u64) as usize;
            if to != peer && self.nodes[to].up() {
                self.peer_lost(to, peer);
            }
        }
        if self.every(chaos.pause_every_ms) {
            let i = self.rng.below(n as u64) as usize;
            if self.nodes[i].up() && self.nodes[i].paused_until.is_none() {
                let ms = self.rng.range(100, 2_500);
                self.pause(i, ms);
            }
        }
        if self.every(chaos.freeze_every_ms) {
            let i = self.rng.below(n as u64) as usize;
            if self.nodes[i].up() && !self.nodes[i].frozen_clock {
                let ms = self.rng.range(100, 3_000);
                if self.trace {
                    eprintln!("[{:>7}] {}'s clock stops for {ms}ms", self.now, node_id(i));
                }
                self.set_frozen(i, true);
                self.nodes[i].unfreeze_at = Some(self.now + ms);
            }
        }
        if self.every(chaos.client_every_ms) {
            self.random_request();
        }
        if self.every(chaos.reconfig_every_ms) {
            self.random_reconfig();
        }
        self.step();
    }

    /// Adds a node outside the leader's configuration, or removes one in it (never the last
    /// voter: the engine refuses that, which is tested elsewhere).
    pub fn random_reconfig(&mut self) {
        let n = self.n();
        let target = match self.current_leader() {
            Some(l) if self.rng.chance(0.8) => l,
            _ => self.rng.below(n as u64) as usize,
        };
        let node = &self.nodes[target];
        if !node.up() || node.paused_until.is_some() || node.crash_armed {
            return;
        }
        let config = self.engine(target).membership().clone();
        let j = self.rng.below(n as u64) as usize;
        let kind = if config.contains(&node_id(j)) {
            ReqKind::Remove(j)
        } else {
            ReqKind::Add(j)
        };
        if self.trace {
            eprintln!(
                "[{:>7}] reconfig {kind:?} via {}",
                self.now,
                node_id(target)
            );
        }
        self.request(target, kind);
    }

    /// A random split; with probability `leader_bias` one that cuts the current leader (if
    /// any) off into a minority, alone or with company.
    pub fn random_partition(&mut self, leader_bias: f64) -> Vec<Vec<usize>> {
        let n = self.n();
        let mut order: Vec<usize> = (0..n).collect();
        for k in (1..n).rev() {
            let j = self.rng.below(k as u64 + 1) as usize;
            order.swap(k, j);
        }
        let leader = self.current_leader();
        if let Some(l) = leader {
            // Put the leader first so the leader-in-minority shapes below catch it.
            let at = order.iter().position(|&i| i == l).expect("member");
            order.swap(0, at);
        }
        let shape = if self.rng.chance(leader_bias) {
            self.rng.below(2)
        } else {
            2 + self.rng.below(2)
        };
        match shape {
            // Leader (or someone) alone.
            0 => vec![vec![order[0]], order[1..].to_vec()],
            // Leader in a minority with company.
            1 => {
                let minority = (n - 1) / 2;
                let minority = minority.max(1);
                vec![order[..minority].to_vec(), order[minority..].to_vec()]
            }
            // Random two-way split.
            2 => {
                let cut = self.rng.range(1, n as u64 - 1) as usize;
                vec![order[..cut].to_vec(), order[cut..].to_vec()]
            }
            // Random three-way split (some groups may be empty).
            _ => {
                let mut groups = vec![Vec::new(), Vec::new(), Vec::new()];
                for &i in &order {
                    groups[self.rng.below(3) as usize].push(i);
                }
                groups
            }
        }
    }

    pub fn random_request(&mut self) {
        let n = self.n();
        let target = match self.current_leader() {
            Some(l) if self.rng.chance(0.6) => l,
            _ => self.rng.below(n as u64) as usize,
        };
        let node = &self.nodes[target];
        if !node.up() || node.paused_until.is_some() || node.crash_armed {
            return;
        }
        if !self.unknown_moves.is_empty() && self.rng.chance(0.3) {
            // A client whose move's outcome was unknown sends it again, to any node.
            let k = self.rng.below(self.unknown_moves.len() as u64) as usize;
            let kind = self.unknown_moves.swap_remove(k);
            self.retry(target, kind);
            return;
        }
        let client = CLIENTS[self.rng.below(CLIENTS.len() as u64) as usize];
        let value = self.rng.range(0, 100) as u32;
        match self.rng.below(10) {
            0..=3 => {
                self.write(target, client, value);
            }
            4..=7 => {
                self.guess(target, client, value);
            }
            _ => {
                self.read(target);
            }
        }
    }
}
