//! `Forward` / `ForwardReply`: a follower's client moves and the leader's answers.

use super::{result_from_pb, result_to_pb, zxid_from_pb, zxid_to_pb, WireError};
use crate::proto as pb;
use guessgame_core::game::{check_client_id, check_value, GameError};
use guessgame_core::{ClientError, ClientReply, GameMove};

pub(super) fn forward_to_pb(req: u64, mv: &GameMove) -> pb::Forward {
    use pb::forward::Op;
    let op = match mv {
        GameMove::Write { client, value, seq } => Op::Write(pb::MoveOp {
            client_id: client.clone(),
            value: *value,
            seq: *seq,
        }),
        GameMove::Guess { client, value, seq } => Op::Guess(pb::MoveOp {
            client_id: client.clone(),
            value: *value,
            seq: *seq,
        }),
    };
    pb::Forward { req, op: Some(op) }
}

pub(super) fn forward_from_pb(f: pb::Forward) -> Result<(u64, GameMove), WireError> {
    use pb::forward::Op;
    let mv = match f.op.ok_or(WireError::Missing("forwarded move"))? {
        Op::Write(m) => GameMove::Write {
            client: m.client_id,
            value: m.value,
            seq: m.seq,
        },
        Op::Guess(m) => GameMove::Guess {
            client: m.client_id,
            value: m.value,
            seq: m.seq,
        },
    };
    // Untrusted like any peer input: a move the game would refuse at the door is malformed.
    let (GameMove::Write { client, value, .. } | GameMove::Guess { client, value, .. }) = &mv;
    check_value(i64::from(*value))
        .and_then(|_| check_client_id(client))
        .map_err(|e| WireError::Invalid(format!("forwarded move: {e}")))?;
    Ok((f.req, mv))
}

pub(super) fn forward_reply_to_pb(
    req: u64,
    result: &Result<ClientReply, ClientError>,
) -> pb::ForwardReply {
    use pb::forward_error::Kind;
    use pb::forward_reply::Result as R;
    let error = |kind| R::Error(pb::ForwardError { kind: Some(kind) });
    let result = match result {
        Ok(ClientReply::Written {
            zxid,
            round,
            target,
            closed,
        }) => R::Written(pb::Written {
            zxid: Some(zxid_to_pb(*zxid)),
            round: *round,
            target: *target,
            closed: closed.as_ref().map(result_to_pb),
        }),
        Ok(ClientReply::Guessed { zxid, round }) => R::Guessed(pb::Guessed {
            zxid: Some(zxid_to_pb(*zxid)),
            round: *round,
        }),
        // A move is answered by one of the two above or an error; the engine never answers
        // one with a read index or a configuration. Were it to, the follower could not
        // tell its client what happened.
        Ok(ClientReply::ReadIndex { .. } | ClientReply::Reconfigured { .. })
        | Err(
            ClientError::OutcomeUnknown
            | ClientError::Reconfig { .. }
            | ClientError::LeftAsLearner { .. },
        ) => error(Kind::OutcomeUnknown(true)),
        Err(ClientError::Forgotten { oldest }) => error(Kind::Forgotten(*oldest)),
        Err(ClientError::NotLeader { leader }) => {
            error(Kind::NotLeader(leader.clone().unwrap_or_default()))
        }
        Err(ClientError::Game(e)) => error(Kind::Game(refusal_to_pb(e))),
    };
    pb::ForwardReply {
        req,
        result: Some(result),
    }
}

pub(super) fn forward_reply_from_pb(
    r: pb::ForwardReply,
) -> Result<(u64, Result<ClientReply, ClientError>), WireError> {
    use pb::forward_error::Kind;
    use pb::forward_reply::Result as R;
    let result = match r.result.ok_or(WireError::Missing("forward result"))? {
        R::Written(w) => Ok(ClientReply::Written {
            zxid: zxid_from_pb(w.zxid),
            round: w.round,
            target: w.target,
            closed: w.closed.map(result_from_pb),
        }),
        R::Guessed(g) => Ok(ClientReply::Guessed {
            zxid: zxid_from_pb(g.zxid),
            round: g.round,
        }),
        R::Error(e) => Err(match e.kind.ok_or(WireError::Missing("forward error"))? {
            Kind::NotLeader(l) => ClientError::NotLeader {
                leader: (!l.is_empty()).then_some(l),
            },
            Kind::Game(g) => ClientError::Game(refusal_from_pb(g)?),
            Kind::OutcomeUnknown(_) => ClientError::OutcomeUnknown,
            Kind::Forgotten(oldest) => ClientError::Forgotten { oldest },
        }),
    };
    Ok((r.req, result))
}

fn refusal_to_pb(e: &GameError) -> pb::GameRefusal {
    use pb::game_refusal::Why;
    let why = match e {
        GameError::OutOfRange(v) => Why::OutOfRange(*v),
        GameError::BadClientId => Why::BadClientId(true),
        GameError::NoOpenRound => Why::NoOpenRound(true),
        GameError::DuplicateGuess { client, round } => Why::DuplicateGuess(pb::DuplicateGuess {
            client_id: client.clone(),
            round: *round,
        }),
    };
    pb::GameRefusal { why: Some(why) }
}

fn refusal_from_pb(g: pb::GameRefusal) -> Result<GameError, WireError> {
    use pb::game_refusal::Why;
    Ok(match g.why.ok_or(WireError::Missing("refusal reason"))? {
        Why::OutOfRange(v) => GameError::OutOfRange(v),
        Why::BadClientId(_) => GameError::BadClientId,
        Why::NoOpenRound(_) => GameError::NoOpenRound,
        Why::DuplicateGuess(d) => GameError::DuplicateGuess {
            client: d.client_id,
            round: d.round,
        },
    })
}
