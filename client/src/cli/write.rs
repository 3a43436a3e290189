//! `guessgame write VALUE`: closes the open round and opens the next with VALUE as target.

use guessgame_client::{ClientError, WriteOutcome};

use super::{print_json, Ctx};

pub(super) async fn run(mut ctx: Ctx, value: &str) -> Result<(), ClientError> {
    let value = ctx.play_value(value)?;
    let seq = ctx.request_seq();
    let w = ctx
        .client
        .write_numbered(&ctx.client_id, value, seq)
        .await
        .map_err(|e| ctx.retry_hint(e, seq, &format!("write {value}")))?;
    if ctx.json {
        print_json(&w);
    } else {
        println!("{}", describe(&w));
    }
    Ok(())
}

/// `round 1 closed: target 50 won by c3 with 45; round 2 open with target 75 (zxid 1:3,
/// leader node5)`.
fn describe(w: &WriteOutcome) -> String {
    let closed = match &w.closed {
        Some(r) => match (&r.winner, r.guess) {
            (Some(who), Some(g)) => format!(
                "round {} closed: target {} won by {who} with {g}; ",
                r.round, r.target
            ),
            _ => format!("round {} closed with no guesses; ", r.round),
        },
        None => String::new(),
    };
    format!(
        "{closed}round {} open with target {} (zxid {}, leader {})",
        w.round, w.target, w.zxid, w.leader
    )
}

#[cfg(test)]
mod tests {
    use guessgame_client::RoundResult;

    use super::*;

    #[test]
    fn a_write_says_which_round_it_closed_and_which_it_opened() {
        let mut w = WriteOutcome {
            round: 1,
            target: 50,
            zxid: "1:1".into(),
            closed: None,
            leader: "node5".into(),
        };
        assert_eq!(
            describe(&w),
            "round 1 open with target 50 (zxid 1:1, leader node5)"
        );
        w.round = 2;
        w.closed = Some(RoundResult {
            round: 1,
            target: 50,
            winner: Some("c3".into()),
            guess: Some(45),
        });
        assert_eq!(
            describe(&w),
            "round 1 closed: target 50 won by c3 with 45; round 2 open with target 50 (zxid 1:1, leader node5)"
        );
        w.closed = Some(RoundResult {
            round: 1,
            target: 50,
            winner: None,
            guess: None,
        });
        assert!(describe(&w).starts_with("round 1 closed with no guesses; round 2 open"));
    }
}
