//! A refusal is an observation too: "already guessed" must not rest on a guess that is not
//! committed yet (a later leader could drop it, and the refusal would then explain a state
//! that never existed). Spotted while writing the Porcupine model of `guessgame-chaos`.

use guessgame_core::game::GameError;
use guessgame_core::{
    ClientError, ClientOp, ClientReply, Credentials, Engine, Event, Message, Output, Persistent,
    Timing, Zxid,
};

/// Steps `c` as the runtime does: a batch that changed the log is followed by `Persisted`.
fn step(c: &mut Engine, event: Event) -> Vec<Output> {
    let mut out = c.step(event);
    let log_changed = out
        .iter()
        .any(|o| matches!(o, Output::Persist(op) if op.changes_log()));
    if log_changed {
        out.extend(step(c, Event::Persisted));
    }
    out
}

fn replies(out: &[Output]) -> Vec<(u64, Result<ClientReply, ClientError>)> {
    out.iter()
        .filter_map(|o| match o {
            Output::Reply { req, result } => Some((*req, result.clone())),
            _ => None,
        })
        .collect()
}

/// Node "c" of {a, b, c} elected with "a"'s vote, its epoch marker committed (its log:
/// the marker at 1:0, the bootstrap configuration at 1:1, then client entries).
fn leader() -> Engine {
    let ids = ["a", "b", "c"].map(String::from).to_vec();
    let mut c = Engine::new(
        "c".into(),
        ids,
        2,
        Timing::default(),
        Persistent::default(),
        1,
    );
    step(&mut c, Event::Tick { now_ms: 0 });
    step(
        &mut c,
        Event::Message {
            from: "a".into(),
            msg: Message::Hello {
                accepted_epoch: 0,
                creds: Credentials {
                    last_zxid: Zxid::ZERO,
                    node_id: "a".into(),
                },
                sees_only_a_minority: false,
            },
        },
    );
    step(&mut c, Event::Tick { now_ms: 1000 });
    let a_accepts = Message::FollowerInfo {
        epoch: 1,
        summary: vec![],
        last_zxid: Zxid::ZERO,
    };
    step(
        &mut c,
        Event::Message {
            from: "a".into(),
            msg: a_accepts,
        },
    );
    step(
        &mut c,
        Event::Message {
            from: "a".into(),
            msg: Message::Ack {
                epoch: 1,
                zxid: Zxid::new(1, 0),
            },
        },
    );
    assert!(c.is_established_leader());
    c
}

#[test]
fn a_duplicate_guess_is_refused_only_after_the_first_guess_commits() {
    let mut c = leader();
    step(
        &mut c,
        Event::Propose {
            req: 1,
            op: ClientOp::Write {
                client: "w".into(),
                value: 50,
                seq: 0,
            },
        },
    );
    let out = step(
        &mut c,
        Event::Message {
            from: "a".into(),
            msg: Message::Ack {
                epoch: 1,
                zxid: Zxid::new(1, 2),
            },
        },
    );
    assert!(matches!(
        replies(&out)[..],
        [(1, Ok(ClientReply::Written { .. }))]
    ));

    let out = step(
        &mut c,
        Event::Propose {
            req: 2,
            op: ClientOp::Guess {
                client: "x".into(),
                value: 10,
                seq: 0,
            },
        },
    );
    assert!(replies(&out).is_empty());
    let out = step(
        &mut c,
        Event::Propose {
            req: 3,
            op: ClientOp::Guess {
                client: "x".into(),
                value: 20,
                seq: 0,
            },
        },
    );
    assert!(
        replies(&out).is_empty(),
        "refused on an uncommitted guess: {out:?}"
    );

    let out = step(
        &mut c,
        Event::Message {
            from: "a".into(),
            msg: Message::Ack {
                epoch: 1,
                zxid: Zxid::new(1, 3),
            },
        },
    );
    let r = replies(&out);
    assert!(
        matches!(r[0], (2, Ok(ClientReply::Guessed { round: 1, .. }))),
        "{r:?}"
    );
    assert!(
        matches!(
            &r[1],
            (
                3,
                Err(ClientError::Game(GameError::DuplicateGuess {
                    round: 1,
                    ..
                }))
            )
        ),
        "{r:?}"
    );
    // With nothing uncommitted, a refusal is immediate.
    let out = step(
        &mut c,
        Event::Propose {
            req: 4,
            op: ClientOp::Guess {
                client: "x".into(),
                value: 30,
                seq: 0,
            },
        },
    );
    assert!(matches!(
        &replies(&out)[..],
        [(4, Err(ClientError::Game(_)))]
    ));
}

#[test]
fn a_parked_refusal_becomes_retryable_when_leadership_is_lost() {
    let mut c = leader();
    step(
        &mut c,
        Event::Propose {
            req: 1,
            op: ClientOp::Write {
                client: "w".into(),
                value: 50,
                seq: 0,
            },
        },
    );
    step(
        &mut c,
        Event::Propose {
            req: 2,
            op: ClientOp::Guess {
                client: "x".into(),
                value: 10,
                seq: 0,
            },
        },
    );
    step(
        &mut c,
        Event::Propose {
            req: 3,
            op: ClientOp::Guess {
                client: "x".into(),
                value: 20,
                seq: 0,
            },
        },
    );
    // Nobody answers for longer than the election timeout: the leader steps down.
    let out = step(&mut c, Event::Tick { now_ms: 10_000 });
    let r = replies(&out);
    assert!(
        r.iter()
            .any(|(req, res)| *req == 2 && *res == Err(ClientError::OutcomeUnknown)),
        "{r:?}"
    );
    assert!(
        r.iter()
            .any(|(req, res)| *req == 3 && matches!(res, Err(ClientError::NotLeader { .. }))),
        "{r:?}"
    );
}
