//! Client requests: issuing writes, guesses, reads and membership changes, and checking
//! each reply as it arrives (invariants 5 and 7, linearizable reads).

use guessgame_core::{ClientError, ClientOp, ClientReply, Entry, Event, Zxid};

use crate::node::node_id;
use crate::sim::Sim;

#[derive(Clone, Debug)]
pub enum ReqKind {
    /// `seq`: the client's request number (0: unnumbered).
    Write {
        client: String,
        value: u32,
        seq: u64,
    },
    Guess {
        client: String,
        value: u32,
        seq: u64,
    },
    Read,
    /// Add node `.0` (learner, then voter).
    Add(usize),
    Remove(usize),
}

#[derive(Debug)]
pub struct Request {
    pub node: usize,
    pub incarnation: u32,
    pub kind: ReqKind,
    /// Nothing older may be returned to a read issued now: the highest zxid of every write
    /// acknowledged and every read answered before.
    pub floor: Zxid,
    pub reply: Option<Result<ClientReply, ClientError>>,
    /// A move sent again under its number after an unknown outcome.
    pub retry: bool,
}

impl Sim {
    // ------------------------------------------------------------------ clients

    pub fn request(&mut self, i: usize, kind: ReqKind) -> u64 {
        self.send_request(i, kind, false)
    }

    /// Issues `kind` to node `i`; `retry`: a move sent again under its number.
    fn send_request(&mut self, i: usize, kind: ReqKind, retry: bool) -> u64 {
        let req = self.requests.len() as u64 + 1;
        self.requests.push(Request {
            node: i,
            incarnation: self.nodes[i].incarnation,
            kind: kind.clone(),
            floor: self.floor,
            reply: None,
            retry,
        });
        let ev = match kind {
            ReqKind::Write { client, value, seq } => Event::Propose {
                req,
                op: ClientOp::Write { client, value, seq },
            },
            ReqKind::Guess { client, value, seq } => Event::Propose {
                req,
                op: ClientOp::Guess { client, value, seq },
            },
            ReqKind::Read => Event::LinearizableRead { req },
            ReqKind::Add(j) => Event::Propose {
                req,
                op: ClientOp::AddMember {
                    member: Sim::member(j),
                    voter: true,
                },
            },
            ReqKind::Remove(j) => Event::Propose {
                req,
                op: ClientOp::RemoveMember { id: node_id(j) },
            },
        };
        let (incarnation, last) = (self.nodes[i].incarnation, self.engine(i).last_zxid());
        self.deliver(i, ev);
        // A refused request writes nothing.
        let refused = matches!(
            self.reply(req),
            Some(Err(ClientError::NotLeader { .. }
                | ClientError::Game(_)
                | ClientError::Reconfig { .. }))
        );
        if refused && self.nodes[i].incarnation == incarnation && self.engine(i).last_zxid() != last
        {
            self.fail(format!("request {req} was refused but its node's log grew"));
        }
        req
    }

    /// A new numbered write (a client numbers every move).
    pub fn write(&mut self, i: usize, client: &str, value: u32) -> u64 {
        self.request_seq += 1;
        let seq = self.request_seq;
        self.request(
            i,
            ReqKind::Write {
                client: client.into(),
                value,
                seq,
            },
        )
    }

    pub fn guess(&mut self, i: usize, client: &str, value: u32) -> u64 {
        self.request_seq += 1;
        let seq = self.request_seq;
        self.request(
            i,
            ReqKind::Guess {
                client: client.into(),
                value,
                seq,
            },
        )
    }

    /// Sends a move whose outcome was unknown again, to node `i`, under its number.
    pub fn retry(&mut self, i: usize, kind: ReqKind) -> u64 {
        self.stats.retries += 1;
        self.send_request(i, kind, true)
    }

    pub fn read(&mut self, i: usize) -> u64 {
        self.request(i, ReqKind::Read)
    }

    pub fn reply(&self, req: u64) -> Option<&Result<ClientReply, ClientError>> {
        self.requests[req as usize - 1].reply.as_ref()
    }

    pub fn committed_entry(&self, zxid: Zxid) -> Option<&Entry> {
        self.committed
            .binary_search_by(|e| e.zxid.cmp(&zxid))
            .ok()
            .map(|k| &self.committed[k])
    }

    pub fn on_reply(&mut self, i: usize, req: u64, result: Result<ClientReply, ClientError>) {
        let Some(r) = self.requests.get(req.wrapping_sub(1) as usize) else {
            self.fail(format!("{} answered unknown request {req}", node_id(i)));
        };
        if r.node != i || r.incarnation != self.nodes[i].incarnation {
            self.fail(format!(
                "{} answered request {req} it never got",
                node_id(i)
            ));
        }
        if let Some(prev) = &r.reply {
            self.fail(format!(
                "request {req} answered twice: {prev:?} then {result:?}"
            ));
        }
        let kind = r.kind.clone();
        let floor = r.floor;
        if r.retry && result.is_ok() {
            self.stats.retries_ok += 1;
        }
        match (&kind, &result) {
            (ReqKind::Write { .. } | ReqKind::Guess { .. }, Ok(reply)) => {
                self.check_write_reply(req, &kind, reply, "when acknowledged");
                let zxid = match reply {
                    ClientReply::Written { zxid, .. } | ClientReply::Guessed { zxid, .. } => *zxid,
                    _ => unreachable!("checked"),
                };
                self.floor = self.floor.max(zxid);
                if matches!(kind, ReqKind::Write { .. }) {
                    self.stats.writes_ok += 1;
                } else {
                    self.stats.guesses_ok += 1;
                }
            }
            (ReqKind::Read, Ok(ClientReply::ReadIndex { index })) => {
                if *index < floor {
                    self.fail(format!(
                        "stale linearizable read on {}: index {index} but {floor} had completed before it was issued",
                        node_id(i)
                    ));
                }
                if *index != Zxid::ZERO && self.committed_entry(*index).is_none() {
                    self.fail(format!("read index {index} is not a committed zxid"));
                }
                self.floor = self.floor.max(*index);
                self.stats.reads_ok += 1;
            }
            (ReqKind::Add(_) | ReqKind::Remove(_), Ok(reply)) => {
                self.check_reconfig_reply(req, &kind, reply);
                self.stats.reconfigs_ok += 1;
            }
            (ReqKind::Add(_) | ReqKind::Remove(_), Err(ClientError::Reconfig { .. })) => {}
            (ReqKind::Add(_), Err(ClientError::LeftAsLearner { .. })) => {}
            (
                ReqKind::Write { seq, .. } | ReqKind::Guess { seq, .. },
                Err(ClientError::OutcomeUnknown),
            ) => {
                self.stats.unknown += 1;
                if *seq != 0 && self.unknown_moves.len() < 64 {
                    self.unknown_moves.push(kind.clone());
                }
            }
            (ReqKind::Add(_) | ReqKind::Remove(_), Err(ClientError::OutcomeUnknown)) => {
                self.stats.unknown += 1;
            }
            (
                ReqKind::Write { seq, .. } | ReqKind::Guess { seq, .. },
                Err(ClientError::Forgotten { oldest }),
            ) if *seq != 0 && seq < oldest => {
                self.stats.forgotten += 1;
            }
            (ReqKind::Write { .. } | ReqKind::Guess { .. }, Err(ClientError::Game(_)))
            | (_, Err(ClientError::NotLeader { .. })) => {}
            _ => self.fail(format!("request {req} ({kind:?}) got {result:?}")),
        }
        if self.trace {
            eprintln!("[{:>7}] reply {req} ({kind:?}): {result:?}", self.now);
        }
        self.requests[req as usize - 1].reply = Some(result);
    }
}
