//! Becoming and staying leader, and turning client requests into proposals.

use std::collections::BTreeMap;

use super::events::{ClientError, ClientOp, ClientReply, Output, RequestId, StorageOp};
use super::state::{FollowerProgress, LeaderState, Pending, Role};
use super::{send, send_all, send_early, Engine};
use crate::game::{Applied, AppliedRequest, Seen};
use crate::message::{EpochSummary, Message};
use crate::types::{Entry, NodeId, Op, Zxid};

impl Engine {
    pub(super) fn tick_leading(&mut self, out: &mut Vec<Output>) {
        let now = self.now;
        let et = self.timing.election_timeout_ms;
        let Role::Leading(l) = &self.role else {
            return;
        };
        // Step down when a quorum has not been heard for an election timeout: a leader that
        // cannot commit must not keep taking writes. Counted in the configuration in use (a
        // leader being removed does not count itself).
        let config = self.log.config();
        let heard = l
            .followers
            .iter()
            .filter(|(m, f)| now.saturating_sub(f.last_heard) <= et && config.is_voter(m))
            .count()
            + usize::from(config.is_voter(&self.id));
        if heard < self.quorum() && now.saturating_sub(l.since) > et {
            tracing::warn!(node = %self.id, heard, "leader lost its quorum; stepping down");
            self.become_looking(out);
            return;
        }
        if now.saturating_sub(l.last_hb) >= self.timing.heartbeat_ms {
            self.send_heartbeats(out);
        }
        self.resend_stalled_syncs(out);
        self.progress_reconfig(out);
        self.maybe_hand_over(out);
    }

    /// This node is stopping. A leader takes no new requests (they are refused as "not the
    /// leader": nothing written, the client retries), lets those in flight commit, then
    /// hands over ([`Engine::maybe_hand_over`]).
    pub(super) fn on_shutdown(&mut self, out: &mut Vec<Output>) {
        self.stopping = true;
        let now = self.now;
        if let Role::Leading(l) = &mut self.role {
            tracing::info!(node = %self.id, epoch = l.epoch, "stopping: handing leadership over");
            l.stopping_since.get_or_insert(now);
        }
        self.maybe_hand_over(out);
    }

    /// A stopping leader steps down once nothing is in flight (or after two heartbeats):
    /// `StepDown` tells the followers to elect at once — they hold every committed entry,
    /// and the most up-to-date of them ranks highest — instead of waiting for the election
    /// timeout, as they would after a crash.
    pub(super) fn maybe_hand_over(&mut self, out: &mut Vec<Output>) {
        let Role::Leading(l) = &self.role else {
            return;
        };
        let Some(since) = l.stopping_since else {
            return;
        };
        let drained = l.pending.is_empty()
            && l.refusals.is_empty()
            && l.replays.is_empty()
            && l.reconfig.is_none();
        if !drained && self.now.saturating_sub(since) < 2 * self.timing.heartbeat_ms {
            return;
        }
        let epoch = l.epoch;
        tracing::info!(node = %self.id, epoch, "stepping down before stopping");
        let to = self.others();
        send_all(out, to, Message::StepDown { epoch });
        self.become_looking(out);
    }

    pub(super) fn send_heartbeats(&mut self, out: &mut Vec<Output>) {
        let commit = self.log.committed();
        let Role::Leading(l) = &mut self.role else {
            return;
        };
        l.hb_seq += 1;
        l.last_hb = self.now;
        let msg = Message::Heartbeat {
            epoch: l.epoch,
            commit,
            seq: l.hb_seq,
        };
        for to in l.followers.keys() {
            send_early(out, to, msg.clone());
        }
    }

    /// A quorum accepted `epoch`: write its first entry (NEWLEADER), sync those that
    /// accepted, and start leading.
    pub(super) fn become_leader(
        &mut self,
        epoch: u64,
        acks: BTreeMap<NodeId, EpochSummary>,
        out: &mut Vec<Output>,
    ) {
        tracing::info!(node = %self.id, epoch, "elected leader");
        let marker = Entry {
            zxid: Zxid::new(epoch, 0),
            op: Op::NewLeader {
                leader: self.id.clone(),
            },
        };
        self.log.append(&self.id, vec![marker.clone()]);
        let mut first = vec![marker];
        // The first leader of a new ensemble writes the bootstrap configuration into the log:
        // from then on every node (restarted ones too) takes it from there, not from flags.
        if !self.log.has_config_entry() && !self.log.bootstrap().voters.is_empty() {
            let config = Entry {
                zxid: Zxid::new(epoch, 1),
                op: Op::Config(self.log.bootstrap().clone()),
            };
            self.log.append(&self.id, vec![config.clone()]);
            first.push(config);
        }
        out.push(Output::Persist(StorageOp::Append(first)));
        self.current_epoch = epoch;
        out.push(Output::Persist(StorageOp::SetCurrentEpoch(epoch)));

        let targets = self.log.replication_targets(&self.id);
        let followers = targets
            .iter()
            .map(|m| (m.clone(), FollowerProgress::default()))
            .collect();
        self.role = Role::Leading(Box::new(LeaderState {
            epoch,
            since: self.now,
            followers,
            speculative: self.log.speculative_game(),
            pending: BTreeMap::new(),
            reads: Vec::new(),
            refusals: Vec::new(),
            replays: Vec::new(),
            hb_seq: 0,
            last_hb: self.now,
            appended_at_seq: 0,
            reconfig: None,
            followers_for: (self.log.config_zxid(), self.log.committed_membership().0),
            stopping_since: None,
        }));
        self.gone = None;
        for (m, summary) in acks {
            if m != self.id && targets.contains(&m) {
                self.sync_follower(&m, &summary, out);
            }
        }
        self.try_commit(out);
    }

    /// Leader: makes the follower set match the replication targets (members of the
    /// configuration in use and of the committed one); a member no longer in any
    /// configuration is told it is out.
    pub(super) fn refresh_followers(&mut self, out: &mut Vec<Output>) {
        let (config_zxid, _) = self.log.committed_membership();
        let now_for = (self.log.config_zxid(), config_zxid);
        let Role::Leading(l) = &mut self.role else {
            return;
        };
        if l.followers_for == now_for {
            return;
        }
        let targets = self.log.replication_targets(&self.id);
        l.followers_for = now_for;
        let epoch = l.epoch;
        let gone: Vec<NodeId> = l
            .followers
            .keys()
            .filter(|m| !targets.contains(m))
            .cloned()
            .collect();
        for m in &gone {
            l.followers.remove(m);
        }
        for m in targets {
            l.followers.entry(m).or_default();
        }
        for m in gone {
            let msg = Message::NotMember {
                epoch,
                config: config_zxid,
            };
            send(out, &m, msg);
        }
    }

    /// A member describes its log: a candidate counts it as a vote; a leader syncs it (or
    /// tells it that it is not a member).
    pub(super) fn on_follower_info(
        &mut self,
        from: NodeId,
        epoch: u64,
        summary: EpochSummary,
        out: &mut Vec<Output>,
    ) {
        match &mut self.role {
            Role::Candidate(c) if c.epoch == epoch => {
                c.acks.insert(from, summary);
                self.maybe_win(out);
            }
            Role::Leading(l) if l.epoch == epoch => {
                if l.followers.contains_key(&from) {
                    self.sync_follower(&from, &summary, out);
                } else {
                    let config = self.log.committed_membership().0;
                    send(out, &from, Message::NotMember { epoch, config });
                }
            }
            _ => {}
        }
    }

    pub(super) fn on_propose(&mut self, req: RequestId, op: ClientOp, out: &mut Vec<Output>) {
        let op = match op {
            ClientOp::AddMember { member, voter } => {
                return self.on_add_member(req, member, voter, out)
            }
            ClientOp::RemoveMember { id } => return self.on_remove_member(req, id, out),
            op => op,
        };
        let leader = self.leader().cloned();
        let last = self.log.last_zxid();
        let commit = self.log.committed();
        let Role::Leading(l) = &mut self.role else {
            out.push(Output::Reply {
                req,
                result: Err(ClientError::NotLeader { leader }),
            });
            return;
        };
        if let ClientOp::Write { client, seq, .. } | ClientOp::Guess { client, seq, .. } = &op {
            match l.speculative.requests.seen(client, *seq) {
                Seen::New => {}
                Seen::Applied(done) => {
                    // A retry of a request already in the log: answered with what it did
                    // once that entry commits, and nothing is written again.
                    let (reply, zxid) = (reply_of_applied(done), done.zxid);
                    if zxid <= commit {
                        out.push(Output::Reply {
                            req,
                            result: Ok(reply),
                        });
                    } else {
                        l.replays.push((req, reply, zxid));
                    }
                    return;
                }
                Seen::Forgotten { oldest } => {
                    out.push(Output::Reply {
                        req,
                        result: Err(ClientError::Forgotten { oldest }),
                    });
                    return;
                }
            }
        }
        let (ops, reply_of): (Vec<Op>, Box<dyn Fn(Zxid) -> ClientReply>) = match op {
            ClientOp::Guess { client, value, seq } => {
                if let Err(e) = l.speculative.check_guess(&client) {
                    if commit >= last {
                        out.push(Output::Reply {
                            req,
                            result: Err(ClientError::Game(e)),
                        });
                    } else {
                        l.refusals.push((req, e, last));
                    }
                    return;
                }
                let round = l.speculative.round;
                (
                    vec![Op::Guess {
                        round,
                        client,
                        value,
                        seq,
                    }],
                    Box::new(move |zxid| ClientReply::Guessed { zxid, round }),
                )
            }
            ClientOp::AddMember { .. } | ClientOp::RemoveMember { .. } => unreachable!(),
            ClientOp::Write { client, value, seq } => {
                let ops = l.speculative.ops_for_write(&client, value, seq);
                let closed = l.speculative.result_of_open_round();
                let round = l.speculative.round + 1;
                (
                    ops,
                    Box::new(move |zxid| ClientReply::Written {
                        zxid,
                        round,
                        target: value,
                        closed: closed.clone(),
                    }),
                )
            }
        };
        let zxid = Zxid::new(l.epoch, last.counter + ops.len() as u64);
        l.pending.insert(
            zxid,
            Pending {
                req,
                reply: reply_of(zxid),
            },
        );
        self.append_and_propose(ops, out);
        self.try_commit(out);
    }

    /// Leader: appends `ops` as the next entries of its epoch, persists them and proposes
    /// them to the synced followers. Returns the zxid of the last one.
    pub(super) fn append_and_propose(&mut self, ops: Vec<Op>, out: &mut Vec<Output>) -> Zxid {
        let last = self.log.last_zxid();
        let commit = self.log.committed();
        let Role::Leading(l) = &mut self.role else {
            unreachable!("only a leader appends");
        };
        let mut counter = last.counter;
        let entries: Vec<Entry> = ops
            .into_iter()
            .map(|op| {
                counter += 1;
                Entry {
                    zxid: Zxid::new(l.epoch, counter),
                    op,
                }
            })
            .collect();
        for e in &entries {
            l.speculative.apply(e);
        }
        l.appended_at_seq = l.hb_seq;
        let epoch = l.epoch;
        let in_sync = l.in_sync_followers();
        self.log.append(&self.id, entries.clone());
        out.push(Output::Persist(StorageOp::Append(entries.clone())));
        let zxid = self.log.last_zxid();
        for m in in_sync {
            let msg = Message::Proposal {
                epoch,
                prev: last,
                entries: entries.clone(),
                commit,
            };
            send_early(out, &m, msg);
        }
        zxid
    }
}

/// The answer a request that `done` records got (or would have got) when it was applied.
fn reply_of_applied(done: &AppliedRequest) -> ClientReply {
    match &done.applied {
        Applied::Wrote {
            round,
            target,
            closed,
        } => ClientReply::Written {
            zxid: done.zxid,
            round: *round,
            target: *target,
            closed: closed.clone(),
        },
        Applied::Guessed { round } => ClientReply::Guessed {
            zxid: done.zxid,
            round: *round,
        },
    }
}
