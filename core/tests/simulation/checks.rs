//! The checkers: invariants after every step of every node, reply and apply checks, the
//! game rules, and the final heal-and-check.

use guessgame_core::game::Game;
use guessgame_core::{ClientReply, Entry, Op, Output, RoleKind, Snapshot, StorageOp, Zxid};

use crate::clients::ReqKind;
use crate::network::Faults;
use crate::node::node_id;
use crate::sim::{Sim, ELECTION_TIMEOUT_MS, HEARTBEAT_MS};

impl Sim {
    // ------------------------------------------------------------------ replies and applies

    /// An `Ok` membership change names a committed configuration entry equal to its answer,
    /// in which the member is a voter (added) or absent (removed).
    pub fn check_reconfig_reply(&self, req: u64, kind: &ReqKind, reply: &ClientReply) {
        let ClientReply::Reconfigured { zxid, membership } = reply else {
            self.fail(format!("request {req} ({kind:?}) got {reply:?}"));
        };
        match self.committed_entry(*zxid) {
            Some(Entry {
                op: Op::Config(m), ..
            }) if m == membership => {}
            other => self.fail(format!(
                "request {req} ({kind:?}) answered {reply:?} but {zxid} is {other:?}"
            )),
        }
        let ok = match kind {
            ReqKind::Add(j) => membership.is_voter(&node_id(*j)),
            ReqKind::Remove(j) => !membership.contains(&node_id(*j)),
            _ => false,
        };
        if !ok {
            self.fail(format!("request {req} ({kind:?}) answered {membership}"));
        }
    }

    /// An `Ok` write or guess names committed entries matching the request.
    pub fn check_write_reply(&self, req: u64, kind: &ReqKind, reply: &ClientReply, when: &str) {
        let entry_at = |zxid: Zxid| {
            self.committed_entry(zxid).unwrap_or_else(|| {
                self.fail(format!(
                    "request {req} ({kind:?}) acknowledged {zxid}, which is not committed {when}"
                ))
            })
        };
        match (kind, reply) {
            (
                ReqKind::Write { client, value, seq },
                ClientReply::Written {
                    zxid,
                    round,
                    target,
                    closed,
                },
            ) => {
                let expected = Op::Target {
                    round: *round,
                    value: *value,
                    client: client.clone(),
                    seq: *seq,
                };
                if target != value || entry_at(*zxid).op != expected {
                    self.fail(format!(
                        "request {req} ({kind:?}) acknowledged as {reply:?} but {zxid} is {:?}",
                        entry_at(*zxid).op
                    ));
                }
                if let Some(result) = closed {
                    let prev = Zxid::new(zxid.epoch, zxid.counter - 1);
                    if entry_at(prev).op != Op::Result(result.clone()) {
                        self.fail(format!(
                            "request {req}: closed round {result:?} is not at {prev}"
                        ));
                    }
                }
            }
            (ReqKind::Guess { client, value, seq }, ClientReply::Guessed { zxid, round }) => {
                let expected = Op::Guess {
                    round: *round,
                    client: client.clone(),
                    value: *value,
                    seq: *seq,
                };
                if entry_at(*zxid).op != expected {
                    self.fail(format!(
                        "request {req} ({kind:?}) acknowledged as {reply:?} but {zxid} is {:?}",
                        entry_at(*zxid).op
                    ));
                }
            }
            _ => self.fail(format!("request {req} ({kind:?}) got {reply:?}")),
        }
    }

    pub fn on_apply(&mut self, i: usize, entry: Entry) {
        let node = &self.nodes[i];
        let pos = node.applied_len;
        if entry.zxid <= node.applied.applied && pos > 0 {
            self.fail(format!(
                "{} applied {} after {}: not in zxid order",
                node.id, entry.zxid, node.applied.applied
            ));
        }
        match self.committed.get(pos) {
            Some(e) if *e == entry => {}
            other => self.fail(format!(
                "{} applied {:?} as its entry #{pos}, but the committed sequence has {:?}",
                node.id, entry, other
            )),
        }
        let node = &mut self.nodes[i];
        node.applied.apply(&entry);
        node.applied_len += 1;
        node.applies += 1;
    }

    /// Node `i` replaced its applied state with its leader's snapshot: it must be the
    /// committed sequence's state at the snapshot's zxid, and never go back.
    pub fn on_restore(&mut self, i: usize, snapshot: Snapshot) {
        let node = &self.nodes[i];
        let Some(len) = self.committed.iter().position(|e| e.zxid == snapshot.zxid) else {
            let msg = format!(
                "{} restored a snapshot at {}, which is not in the committed sequence",
                node.id, snapshot.zxid
            );
            self.fail(msg);
        };
        let len = len + 1;
        if len < node.applied_len {
            let msg = format!(
                "{} restored a snapshot at {} below what it had applied ({})",
                node.id, snapshot.zxid, node.applied.applied
            );
            self.fail(msg);
        }
        let mut replay = Game::default();
        for e in &self.committed[..len] {
            replay.apply(e);
        }
        if replay != snapshot.game {
            let msg = format!(
                "{}: the snapshot at {} holds a game unlike the committed sequence's",
                node.id, snapshot.zxid
            );
            self.fail(msg);
        }
        self.stats.installs += 1;
        let node = &mut self.nodes[i];
        node.applied = snapshot.game;
        node.applied_len = len;
    }

    /// Entries of the global committed sequence up to and including `zxid` (ZERO: none);
    /// `None` when `zxid` is not in it.
    pub fn global_len(&self, zxid: Zxid) -> Option<usize> {
        if zxid == Zxid::ZERO {
            return Some(0);
        }
        self.committed
            .binary_search_by(|e| e.zxid.cmp(&zxid))
            .ok()
            .map(|k| k + 1)
    }

    /// `id` committed `new` right after the end of the global committed sequence: each must
    /// follow the game's rules and change at most one voter.
    fn extend_committed(&mut self, id: &str, new: Vec<Entry>) {
        for e in &new {
            if let Err(why) = game_rule(&self.referee, e) {
                self.fail(format!(
                    "{id} committed {e:?}, which breaks the game: {why}"
                ));
            }
            if self.committed.last().is_some_and(|l| l.zxid >= e.zxid) {
                self.fail(format!("{id} committed {} out of zxid order", e.zxid));
            }
            if let Op::Target { client, seq, .. } | Op::Guess { client, seq, .. } = &e.op {
                if *seq != 0 && !self.applied_requests.insert((client.clone(), *seq)) {
                    self.fail(format!(
                        "{id} committed request {seq} of {client} again at {}: a retry was applied twice",
                        e.zxid
                    ));
                }
            }
            self.referee.apply(e);
            if let Op::Config(next) = &e.op {
                if let Some(prev) = &self.referee_config {
                    let changed = prev
                        .voter_ids()
                        .filter(|v| !next.is_voter(v))
                        .chain(next.voter_ids().filter(|v| !prev.is_voter(v)))
                        .count();
                    if changed > 1 {
                        self.fail(format!(
                            "{id} committed configuration {next} at {}: {changed} voters changed from {prev}",
                            e.zxid
                        ));
                    }
                }
                if self.trace {
                    eprintln!(
                        "[{:>7}] configuration {next} committed at {}",
                        self.now, e.zxid
                    );
                }
                self.referee_config = Some(next.clone());
            }
        }
        self.committed.extend(new);
    }

    // ------------------------------------------------------------------ invariants

    /// Checks node `i` after it persisted `ops`.
    /// `outputs` are the rest of the batch (after its persists): the applies and restores.
    pub fn check_node(&mut self, i: usize, ops: &[StorageOp], outputs: &[Output]) {
        let node = &self.nodes[i];
        let Some(engine) = node.engine.as_ref() else {
            return;
        };
        let id = &node.id;

        // Nothing changes in memory without being persisted. (The accepted epoch may be
        // lower in memory: a candidate that every answer refused for a live leader
        // withdraws its own epoch there only, and a restart from the file is stricter.)
        let durable = &node.store.state;
        if durable.accepted_epoch < engine.accepted_epoch()
            || durable.current_epoch != engine.current_epoch()
            || durable.committed != engine.committed()
            || durable.log_start != engine.log_start()
            || durable.snapshot.as_ref() != engine.snapshot()
            || durable.log.len() != engine.log().len()
            || durable.log.last().map(|e| e.zxid)
                != Some(engine.last_zxid()).filter(|_| !durable.log.is_empty())
        {
            self.fail(format!(
                "{id}: durable image (accepted {}, current {}, committed {}, {} entries) differs from memory (accepted {}, current {}, committed {}, {} entries)",
                durable.accepted_epoch, durable.current_epoch, durable.committed, durable.log.len(),
                engine.accepted_epoch(), engine.current_epoch(), engine.committed(), engine.log().len()
            ));
        }
        if ops.iter().any(|op| {
            matches!(
                op,
                StorageOp::Append(_) | StorageOp::TruncateAfter(_) | StorageOp::SaveSnapshot { .. }
            )
        }) {
            self.check_durable_full(i);
        }
        // The log is strictly ordered by zxid (checked where it changes).
        if ops.iter().any(|op| matches!(op, StorageOp::Append(_))) {
            let log = engine.log();
            if log.windows(2).any(|w| w[0].zxid >= w[1].zxid) {
                self.fail(format!("{id}: log not in zxid order"));
            }
        }

        // 1. One leader per epoch, ever.
        let mut claims: Vec<u64> = Vec::new();
        if engine.role() == RoleKind::Leading {
            claims.push(engine.epoch().expect("a leader has an epoch"));
        }
        for op in ops {
            if let StorageOp::Append(entries) = op {
                for e in entries {
                    if let Op::NewLeader { leader } = &e.op {
                        if leader != id {
                            // Followers log other leaders' markers; only the leader itself
                            // writes its marker with counter 0 from `become_leader`.
                            continue;
                        }
                        claims.push(e.zxid.epoch);
                    }
                }
            }
        }
        for epoch in claims {
            match self.leaders.get(&epoch) {
                Some(other) if other != id => {
                    self.fail(format!("two leaders in epoch {epoch}: {other} and {id}"))
                }
                Some(_) => {}
                None => {
                    if self.trace {
                        eprintln!("[{:>7}] {id} leads epoch {epoch}", self.now);
                    }
                    self.leaders.insert(epoch, id.clone());
                }
            }
        }

        // 2 and 3. Committed prefixes agree with the one global committed sequence. What this
        // batch committed comes out as `Apply`s (a snapshot install as a `Restore`); the
        // entries may be compacted away in the same batch, so the global sequence learns
        // them from there first.
        let id = &id.clone();
        let mut pos = node.applied_len;
        for o in outputs {
            match o {
                Output::Restore(s) => match self.global_len(s.zxid) {
                    Some(len) => pos = len,
                    None => self.fail(format!(
                        "{id} installed a snapshot at {}, which was never committed",
                        s.zxid
                    )),
                },
                Output::Apply(e) => {
                    if pos == self.committed.len() {
                        self.extend_committed(id, vec![e.clone()]);
                    } else if pos > self.committed.len() {
                        self.fail(format!(
                            "{id} applied {} as entry #{pos}, past the end of the committed sequence ({})",
                            e.zxid,
                            self.committed.len()
                        ));
                    }
                    pos += 1;
                }
                _ => {}
            }
        }
        let node = &self.nodes[i];
        let engine = node.engine.as_ref().expect("up");
        let start = engine.log_start();
        let Some(offset) = self.global_len(start) else {
            self.fail(format!(
                "{id} compacted its log through {start}, which is not in the committed sequence"
            ));
        };
        let mine = engine.committed_entries();
        let known = self.committed.len().saturating_sub(offset).min(mine.len());
        // Entries this incarnation already matched in full are compared by zxid only.
        let verified = node.verified.saturating_sub(offset).min(known);
        let differs = |k: usize| {
            if k < verified {
                mine[k].zxid != self.committed[offset + k].zxid
            } else {
                mine[k] != self.committed[offset + k]
            }
        };
        if let Some(k) = (0..known).find(|&k| differs(k)) {
            self.fail(format!(
                "{id} committed {:?} at position {}, but {:?} was committed there before",
                mine[k],
                offset + k,
                self.committed[offset + k]
            ));
        }
        if offset + mine.len() > self.committed.len() {
            let new: Vec<Entry> = mine[self.committed.len() - offset..].to_vec();
            if self.trace {
                eprintln!(
                    "[{:>7}] {id} commits {} more, up to {}",
                    self.now,
                    new.len(),
                    engine.committed()
                );
            }
            self.extend_committed(id, new);
        }
        let node = &self.nodes[i];
        let engine = node.engine.as_ref().expect("up");
        let verified = offset + engine.committed_entries().len();

        // 4. Equal applied zxid, equal game.
        let game = engine.game();
        if node.last_checked_applied != Some(game.applied) {
            match self.games.get(&game.applied) {
                Some(g) if g != game => self.fail(format!(
                    "{id}: game after {} is {game:?}, another node had {g:?}",
                    game.applied
                )),
                Some(_) => {}
                None => {
                    self.games.insert(game.applied, game.clone());
                }
            }
            self.nodes[i].last_checked_applied =
                Some(self.nodes[i].engine.as_ref().expect("up").game().applied);
        }

        self.nodes[i].verified = verified;
        for op in ops {
            if let StorageOp::TruncateAfter(z) = op {
                self.nodes[i].truncations.push(*z);
            }
        }
    }

    pub fn check_durable_full(&self, i: usize) {
        let node = &self.nodes[i];
        let engine = node.engine.as_ref().expect("up");
        if node.store.state.log != engine.log() {
            self.fail(format!(
                "{}: durable log differs from the engine's log",
                node.id
            ));
        }
    }

    // ------------------------------------------------------------------ final checks

    /// A request to a still-running incarnation that has no reply yet.
    pub fn unanswered(&self) -> Option<u64> {
        self.requests
            .iter()
            .position(|r| r.reply.is_none() && self.nodes[r.node].incarnation == r.incarnation)
            .map(|k| k as u64 + 1)
    }

    /// After healing and convergence: every acknowledged write is in every node's committed
    /// log, and no request to a still-running node is left unanswered.
    pub fn check_final(&self) {
        let l = self
            .converged()
            .unwrap_or_else(|why| self.fail(format!("not converged: {why}")));
        let leader = self.engine(l);
        let log = leader.committed_entries();
        let offset = self.global_len(leader.log_start());
        if offset.is_none_or(|o| {
            o + log.len() != self.committed.len()
                || log.iter().zip(&self.committed[o..]).any(|(a, b)| a != b)
        }) {
            self.fail("the final committed log is not the global committed sequence");
        }
        if *leader.game() != self.referee {
            self.fail("the final game is not the game of the global committed sequence");
        }
        for (k, r) in self.requests.iter().enumerate() {
            let req = k as u64 + 1;
            match &r.reply {
                Some(Ok(reply)) if matches!(r.kind, ReqKind::Add(_) | ReqKind::Remove(_)) => {
                    self.check_reconfig_reply(req, &r.kind, reply);
                }
                Some(Ok(reply)) if !matches!(r.kind, ReqKind::Read) => {
                    self.check_write_reply(req, &r.kind, reply, "at the end");
                }
                Some(_) => {}
                None => {
                    if self.nodes[r.node].incarnation == r.incarnation {
                        self.fail(format!(
                            "request {req} ({:?}) to {} was never answered",
                            r.kind,
                            node_id(r.node)
                        ));
                    }
                }
            }
        }
    }

    /// Heal the network, restart everything, wait for one leader with equal logs, commit one
    /// more write through it and check the end state.
    pub fn heal_and_check(&mut self) -> usize {
        self.faults = Faults::none();
        self.heal();
        for i in 0..self.n() {
            if self.nodes[i].stop_at.is_some() {
                self.crash(i); // a stopping process exits now, and starts again below
            }
            self.restart(i);
            self.set_frozen(i, false);
            let node = &mut self.nodes[i];
            node.paused_until = None;
            node.unfreeze_at = None;
            node.crash_armed = false;
            node.restart_at = None;
        }
        // Let pre-heal state play out (a leader that heard nobody for a while steps down).
        self.run_for(ELECTION_TIMEOUT_MS + 2 * HEARTBEAT_MS);
        let l = self.run_until_converged(30_000);
        let req = self.write(l, "final", 42);
        if !self.run_until(3_000, |s| s.reply(req).is_some()) {
            self.fail("a write to the healed leader was not answered");
        }
        if !matches!(self.reply(req), Some(Ok(ClientReply::Written { .. }))) {
            self.fail(format!(
                "a write to the healed leader failed: {:?}",
                self.reply(req)
            ));
        }
        // Reads wait for the next heartbeat round; give what is still pending a moment.
        self.run_until(2_000, |s| s.unanswered().is_none());
        let l2 = self.run_until_converged(5_000);
        if l2 != l {
            self.fail("leadership changed in a quiet, healthy ensemble");
        }
        self.check_final();
        l
    }
}

/// Whether committing `e` after the history that produced `game` follows the rules: a guess
/// only for the open round and once per client, a result equal to the closest guess, a new
/// round only right after the previous one was closed.
fn game_rule(game: &Game, e: &Entry) -> Result<(), String> {
    let closed = game.last_result.as_ref().map(|r| r.round) == Some(game.round);
    let open = game.target.is_some() && !closed;
    match &e.op {
        Op::NewLeader { .. } | Op::Config(_) => Ok(()),
        Op::Target { round, .. } if *round != game.round + 1 => {
            Err(format!("round {round} after round {}", game.round))
        }
        Op::Target { .. } if open => Err("a new round while the last is not closed".into()),
        Op::Target { .. } => Ok(()),
        Op::Guess { round, client, .. } => {
            if !open || *round != game.round {
                Err(format!(
                    "a guess for round {round}, open: {open} {}",
                    game.round
                ))
            } else if game.guesses.iter().any(|(c, _)| c == client) {
                Err(format!("a second guess by {client}"))
            } else {
                Ok(())
            }
        }
        Op::Result(r) => {
            if !open {
                Err("a result with no open round".into())
            } else if game.result_of_open_round().as_ref() != Some(r) {
                Err(format!("expected {:?}", game.result_of_open_round()))
            } else {
                Ok(())
            }
        }
    }
}
