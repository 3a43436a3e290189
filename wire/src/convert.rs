//! Conversions between the protocol core's types and the protobuf messages on the wire.
//! Anything a peer sends is untrusted: malformed input becomes a `WireError`, never a panic.

use thiserror::Error;

use crate::proto as pb;
use guessgame_core::{Credentials, Entry, Member, Membership, Message, Op, RoundResult, Zxid};
use pb::peer_message::Body;

mod forward;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum WireError {
    #[error("malformed message: missing {0}")]
    Missing(&'static str),
    #[error("malformed message: {0}")]
    Invalid(String),
}

pub fn zxid_to_pb(z: Zxid) -> pb::Zxid {
    pb::Zxid {
        epoch: z.epoch,
        counter: z.counter,
    }
}

pub fn zxid_from_pb(z: Option<pb::Zxid>) -> Zxid {
    z.map(|z| Zxid::new(z.epoch, z.counter))
        .unwrap_or(Zxid::ZERO)
}

pub fn result_to_pb(r: &RoundResult) -> pb::RoundResult {
    let (winner, guess) = r.winner.clone().unwrap_or_default();
    pb::RoundResult {
        round: r.round,
        target: r.target,
        has_winner: r.winner.is_some(),
        winner,
        guess,
    }
}

pub fn result_from_pb(r: pb::RoundResult) -> RoundResult {
    RoundResult {
        round: r.round,
        target: r.target,
        winner: r.has_winner.then_some((r.winner, r.guess)),
    }
}

fn creds_to_pb(c: &Credentials) -> pb::Credentials {
    pb::Credentials {
        last_zxid: Some(zxid_to_pb(c.last_zxid)),
        node_id: c.node_id.clone(),
    }
}

fn creds_from_pb(c: Option<pb::Credentials>) -> Result<Credentials, WireError> {
    let c = c.ok_or(WireError::Missing("credentials"))?;
    Ok(Credentials {
        last_zxid: zxid_from_pb(c.last_zxid),
        node_id: c.node_id,
    })
}

pub fn entry_to_pb(e: &Entry) -> pb::Entry {
    use pb::entry::Op as P;
    let op = match &e.op {
        Op::NewLeader { leader } => P::NewLeader(pb::NewLeaderOp {
            leader: leader.clone(),
        }),
        Op::Target {
            round,
            value,
            client,
            seq,
        } => P::Target(pb::TargetOp {
            round: *round,
            value: *value,
            client_id: client.clone(),
            seq: *seq,
        }),
        Op::Guess {
            round,
            client,
            value,
            seq,
        } => P::Guess(pb::GuessOp {
            round: *round,
            client_id: client.clone(),
            value: *value,
            seq: *seq,
        }),
        Op::Result(r) => P::Result(pb::ResultOp {
            result: Some(result_to_pb(r)),
        }),
        Op::Config(m) => P::Config(pb::ConfigOp {
            voters: m.voters.iter().map(|m| member_to_pb(m, true)).collect(),
            learners: m.learners.iter().map(|m| member_to_pb(m, false)).collect(),
        }),
    };
    pb::Entry {
        zxid: Some(zxid_to_pb(e.zxid)),
        op: Some(op),
    }
}

pub fn entry_from_pb(e: pb::Entry) -> Result<Entry, WireError> {
    use pb::entry::Op as P;
    let zxid = zxid_from_pb(Some(e.zxid.ok_or(WireError::Missing("entry.zxid"))?));
    let op = match e.op.ok_or(WireError::Missing("entry.op"))? {
        P::NewLeader(o) => Op::NewLeader { leader: o.leader },
        P::Target(o) => Op::Target {
            round: o.round,
            value: checked_value(o.value)?,
            client: o.client_id,
            seq: o.seq,
        },
        P::Guess(o) => Op::Guess {
            round: o.round,
            client: o.client_id,
            value: checked_value(o.value)?,
            seq: o.seq,
        },
        P::Result(o) => Op::Result(result_from_pb(
            o.result.ok_or(WireError::Missing("result"))?,
        )),
        P::Config(c) => {
            let voters: Vec<Member> = c
                .voters
                .into_iter()
                .map(member_from_pb)
                .collect::<Result<_, _>>()?;
            if voters.is_empty() {
                return Err(WireError::Invalid("a configuration without voters".into()));
            }
            let mut m = Membership::of_voters(voters);
            m.learners = c
                .learners
                .into_iter()
                .map(member_from_pb)
                .collect::<Result<_, _>>()?;
            m.learners.sort();
            Op::Config(m)
        }
    };
    Ok(Entry { zxid, op })
}

pub fn member_to_pb(m: &Member, voter: bool) -> pb::Member {
    pb::Member {
        id: m.id.clone(),
        address: m.address.clone(),
        voter,
    }
}

/// The members of `m`, voters first, as the `Members`/`Reconfig` answers list them.
pub fn membership_to_pb(m: &Membership) -> Vec<pb::Member> {
    m.voters
        .iter()
        .map(|v| member_to_pb(v, true))
        .chain(m.learners.iter().map(|l| member_to_pb(l, false)))
        .collect()
}

/// The inverse of [`membership_to_pb`].
pub fn membership_from_pb(members: Vec<pb::Member>) -> Result<Membership, WireError> {
    let mut m = Membership::default();
    for pm in members {
        let voter = pm.voter;
        let member = member_from_pb(pm)?;
        if voter {
            m.voters.push(member);
        } else {
            m.learners.push(member);
        }
    }
    m.voters.sort();
    m.learners.sort();
    Ok(m)
}

pub fn member_from_pb(m: pb::Member) -> Result<Member, WireError> {
    if m.id.is_empty() {
        return Err(WireError::Invalid("a member without an id".into()));
    }
    Ok(Member {
        id: m.id,
        address: m.address,
    })
}

fn checked_value(v: u32) -> Result<u32, WireError> {
    guessgame_core::game::check_value(v as i64).map_err(|e| WireError::Invalid(e.to_string()))
}

fn entries_from_pb(entries: Vec<pb::Entry>) -> Result<Vec<Entry>, WireError> {
    let entries: Vec<Entry> = entries
        .into_iter()
        .map(entry_from_pb)
        .collect::<Result<_, _>>()?;
    if entries.windows(2).any(|w| w[0].zxid >= w[1].zxid) {
        return Err(WireError::Invalid("entries out of zxid order".into()));
    }
    Ok(entries)
}

pub fn message_to_pb(m: &Message) -> pb::PeerMessage {
    let body = match m {
        Message::Hello {
            accepted_epoch,
            creds,
            sees_only_a_minority,
        } => Body::Hello(pb::Hello {
            accepted_epoch: *accepted_epoch,
            creds: Some(creds_to_pb(creds)),
            sees_only_a_minority: *sees_only_a_minority,
        }),
        Message::LeaderIs { leader, epoch } => Body::LeaderIs(pb::LeaderIs {
            leader: leader.clone(),
            epoch: *epoch,
        }),
        Message::NewEpoch { epoch, creds } => Body::NewEpoch(pb::NewEpoch {
            epoch: *epoch,
            creds: Some(creds_to_pb(creds)),
        }),
        Message::EpochRejected {
            epoch,
            accepted_epoch,
            creds,
            leader,
        } => Body::EpochRejected(pb::EpochRejected {
            epoch: *epoch,
            accepted_epoch: *accepted_epoch,
            creds: Some(creds_to_pb(creds)),
            leader: leader.clone().unwrap_or_default(),
        }),
        Message::FollowerInfo {
            epoch,
            summary,
            last_zxid,
        } => Body::FollowerInfo(pb::FollowerInfo {
            epoch: *epoch,
            summary: summary
                .iter()
                .map(|&(epoch, last_counter)| pb::EpochSummary {
                    epoch,
                    last_counter,
                })
                .collect(),
            last_zxid: Some(zxid_to_pb(*last_zxid)),
        }),
        Message::Sync {
            epoch,
            truncate_to,
            entries,
            commit,
        } => Body::Sync(pb::Sync {
            epoch: *epoch,
            truncate_to: Some(zxid_to_pb(*truncate_to)),
            entries: entries.iter().map(entry_to_pb).collect(),
            commit: Some(zxid_to_pb(*commit)),
        }),
        Message::SnapshotChunk {
            epoch,
            zxid,
            offset,
            total,
            data,
        } => Body::SnapshotChunk(pb::SnapshotChunk {
            epoch: *epoch,
            zxid: Some(zxid_to_pb(*zxid)),
            offset: *offset,
            total: *total,
            data: data.clone(),
        }),
        Message::SnapshotAck {
            epoch,
            zxid,
            received,
        } => Body::SnapshotAck(pb::SnapshotAck {
            epoch: *epoch,
            zxid: Some(zxid_to_pb(*zxid)),
            received: *received,
        }),
        Message::Proposal {
            epoch,
            prev,
            entries,
            commit,
        } => Body::Proposal(pb::Proposal {
            epoch: *epoch,
            prev: Some(zxid_to_pb(*prev)),
            entries: entries.iter().map(entry_to_pb).collect(),
            commit: Some(zxid_to_pb(*commit)),
        }),
        Message::Ack { epoch, zxid } => Body::Ack(pb::Ack {
            epoch: *epoch,
            zxid: Some(zxid_to_pb(*zxid)),
        }),
        Message::Commit { epoch, zxid } => Body::Commit(pb::Commit {
            epoch: *epoch,
            zxid: Some(zxid_to_pb(*zxid)),
        }),
        Message::Heartbeat { epoch, commit, seq } => Body::Heartbeat(pb::Heartbeat {
            epoch: *epoch,
            commit: Some(zxid_to_pb(*commit)),
            seq: *seq,
        }),
        Message::HeartbeatAck {
            epoch,
            seq,
            last_zxid,
        } => Body::HeartbeatAck(pb::HeartbeatAck {
            epoch: *epoch,
            seq: *seq,
            last_zxid: Some(zxid_to_pb(*last_zxid)),
        }),
        Message::NotMember { epoch, config } => Body::NotMember(pb::NotMember {
            epoch: *epoch,
            config: Some(zxid_to_pb(*config)),
        }),
        Message::StepDown { epoch } => Body::StepDown(pb::StepDown { epoch: *epoch }),
        Message::Forward { req, op } => Body::Forward(forward::forward_to_pb(*req, op)),
        Message::ForwardReply { req, result } => {
            Body::ForwardReply(forward::forward_reply_to_pb(*req, result))
        }
    };
    pb::PeerMessage { body: Some(body) }
}

pub fn message_from_pb(m: pb::PeerMessage) -> Result<Message, WireError> {
    Ok(match m.body.ok_or(WireError::Missing("message body"))? {
        Body::Hello(h) => Message::Hello {
            accepted_epoch: h.accepted_epoch,
            creds: creds_from_pb(h.creds)?,
            sees_only_a_minority: h.sees_only_a_minority,
        },
        Body::LeaderIs(l) => Message::LeaderIs {
            leader: l.leader,
            epoch: l.epoch,
        },
        Body::NewEpoch(n) => Message::NewEpoch {
            epoch: n.epoch,
            creds: creds_from_pb(n.creds)?,
        },
        Body::EpochRejected(r) => Message::EpochRejected {
            epoch: r.epoch,
            accepted_epoch: r.accepted_epoch,
            creds: creds_from_pb(r.creds)?,
            leader: (!r.leader.is_empty()).then_some(r.leader),
        },
        Body::FollowerInfo(f) => Message::FollowerInfo {
            epoch: f.epoch,
            summary: f
                .summary
                .iter()
                .map(|s| (s.epoch, s.last_counter))
                .collect(),
            last_zxid: zxid_from_pb(f.last_zxid),
        },
        Body::Sync(s) => Message::Sync {
            epoch: s.epoch,
            truncate_to: zxid_from_pb(s.truncate_to),
            entries: entries_from_pb(s.entries)?,
            commit: zxid_from_pb(s.commit),
        },
        Body::SnapshotChunk(c) => {
            if c.offset.saturating_add(c.data.len() as u64) > c.total {
                return Err(WireError::Invalid("snapshot piece past its total".into()));
            }
            Message::SnapshotChunk {
                epoch: c.epoch,
                zxid: zxid_from_pb(c.zxid),
                offset: c.offset,
                total: c.total,
                data: c.data,
            }
        }
        Body::SnapshotAck(a) => Message::SnapshotAck {
            epoch: a.epoch,
            zxid: zxid_from_pb(a.zxid),
            received: a.received,
        },
        Body::Proposal(p) => Message::Proposal {
            epoch: p.epoch,
            prev: zxid_from_pb(p.prev),
            entries: entries_from_pb(p.entries)?,
            commit: zxid_from_pb(p.commit),
        },
        Body::Ack(a) => Message::Ack {
            epoch: a.epoch,
            zxid: zxid_from_pb(a.zxid),
        },
        Body::Commit(c) => Message::Commit {
            epoch: c.epoch,
            zxid: zxid_from_pb(c.zxid),
        },
        Body::Heartbeat(h) => Message::Heartbeat {
            epoch: h.epoch,
            commit: zxid_from_pb(h.commit),
            seq: h.seq,
        },
        Body::HeartbeatAck(h) => Message::HeartbeatAck {
            epoch: h.epoch,
            seq: h.seq,
            last_zxid: zxid_from_pb(h.last_zxid),
        },
        Body::NotMember(n) => Message::NotMember {
            epoch: n.epoch,
            config: zxid_from_pb(n.config),
        },
        Body::StepDown(s) => Message::StepDown { epoch: s.epoch },
        Body::Forward(f) => {
            let (req, op) = forward::forward_from_pb(f)?;
            Message::Forward { req, op }
        }
        Body::ForwardReply(r) => {
            let (req, result) = forward::forward_reply_from_pb(r)?;
            Message::ForwardReply { req, result }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message as _;

    #[test]
    fn every_message_round_trips_through_protobuf() {
        let creds = Credentials {
            last_zxid: Zxid::new(2, 7),
            node_id: "node3".into(),
        };
        let entries = vec![
            Entry {
                zxid: Zxid::new(3, 0),
                op: Op::NewLeader {
                    leader: "node3".into(),
                },
            },
            Entry {
                zxid: Zxid::new(3, 1),
                op: Op::Result(RoundResult {
                    round: 1,
                    target: 50,
                    winner: Some(("c3".into(), 45)),
                }),
            },
            Entry {
                zxid: Zxid::new(3, 2),
                op: Op::Config(Membership {
                    voters: vec![Member {
                        id: "node1".into(),
                        address: "127.0.0.1:7101".into(),
                    }],
                    learners: vec![Member {
                        id: "node6".into(),
                        address: "h6:7100".into(),
                    }],
                }),
            },
        ];
        let msgs = vec![
            Message::Hello {
                accepted_epoch: 2,
                creds: creds.clone(),
                sees_only_a_minority: true,
            },
            Message::EpochRejected {
                epoch: 3,
                accepted_epoch: 4,
                creds,
                leader: None,
            },
            Message::FollowerInfo {
                epoch: 3,
                summary: vec![(1, 4), (2, 7)],
                last_zxid: Zxid::new(2, 7),
            },
            Message::Sync {
                epoch: 3,
                truncate_to: Zxid::new(1, 4),
                entries,
                commit: Zxid::new(1, 4),
            },
            Message::NotMember {
                epoch: 3,
                config: Zxid::new(3, 2),
            },
            Message::StepDown { epoch: 3 },
            Message::SnapshotChunk {
                epoch: 3,
                zxid: Zxid::new(2, 9),
                offset: 4,
                total: 10,
                data: b"abcdef".to_vec(),
            },
            Message::SnapshotAck {
                epoch: 3,
                zxid: Zxid::new(2, 9),
                received: 10,
            },
            Message::Forward {
                req: 7,
                op: guessgame_core::GameMove::Guess {
                    client: "ann".into(),
                    value: 41,
                    seq: 1_733_612_345_000_001,
                },
            },
            Message::ForwardReply {
                req: 7,
                result: Ok(guessgame_core::ClientReply::Written {
                    zxid: Zxid::new(3, 9),
                    round: 4,
                    target: 41,
                    closed: None,
                }),
            },
            Message::ForwardReply {
                req: 8,
                result: Err(guessgame_core::ClientError::Game(
                    guessgame_core::game::GameError::DuplicateGuess {
                        client: "ann".into(),
                        round: 4,
                    },
                )),
            },
            Message::ForwardReply {
                req: 9,
                result: Err(guessgame_core::ClientError::NotLeader {
                    leader: Some("node2".into()),
                }),
            },
            Message::ForwardReply {
                req: 10,
                result: Err(guessgame_core::ClientError::Forgotten { oldest: 40 }),
            },
        ];
        for m in msgs {
            let bytes = message_to_pb(&m).encode_to_vec();
            let back = message_from_pb(pb::PeerMessage::decode(&bytes[..]).unwrap()).unwrap();
            assert_eq!(back, m);
        }
    }

    #[test]
    fn malformed_messages_are_errors_not_panics() {
        assert_eq!(
            message_from_pb(pb::PeerMessage { body: None }),
            Err(WireError::Missing("message body"))
        );
        let bad_value = pb::PeerMessage {
            body: Some(Body::Proposal(pb::Proposal {
                epoch: 1,
                prev: None,
                entries: vec![pb::Entry {
                    zxid: Some(zxid_to_pb(Zxid::new(1, 1))),
                    op: Some(pb::entry::Op::Guess(pb::GuessOp {
                        round: 1,
                        client_id: "x".into(),
                        value: 1000,
                        seq: 0,
                    })),
                }],
                commit: None,
            })),
        };
        assert!(message_from_pb(bad_value).is_err());
    }
}
