//! `guessgame read [--linearizable]`: the game as one node (or the leader and a quorum) knows it.

use guessgame_client::{ClientError, GameState};

use super::{print_json, Ctx};

pub(super) async fn run(mut ctx: Ctx, linearizable: bool) -> Result<(), ClientError> {
    let s = ctx.client.read(linearizable).await?;
    if ctx.json {
        print_json(&s);
    } else {
        println!("{}", describe(&s));
    }
    Ok(())
}

/// `round 2: target 75, 0 guess(es); round 1 (target 50) won by c3 with 45 [node2 at 1:3]`.
fn describe(s: &GameState) -> String {
    let mut out = match s.target {
        Some(t) => format!("round {}: target {t}, {} guess(es)", s.round, s.guesses),
        None => "no round yet: a client must `write` a target first".to_string(),
    };
    if let Some(r) = &s.last_result {
        match (&r.winner, r.guess) {
            (Some(w), Some(g)) => {
                out += &format!(
                    "; round {} (target {}) won by {w} with {g}",
                    r.round, r.target
                )
            }
            _ => out += &format!("; round {} (target {}) had no guesses", r.round, r.target),
        }
    }
    format!("{out} [{} at {}]", s.node, s.applied)
}

#[cfg(test)]
mod tests {
    use guessgame_client::RoundResult;

    use super::*;

    #[test]
    fn the_state_reads_as_a_sentence() {
        let mut s = GameState {
            round: 0,
            target: None,
            guesses: 0,
            last_result: None,
            node: "node2".into(),
            applied: "1:0".into(),
        };
        assert_eq!(
            describe(&s),
            "no round yet: a client must `write` a target first [node2 at 1:0]"
        );
        s.round = 2;
        s.target = Some(75);
        s.applied = "1:3".into();
        s.last_result = Some(RoundResult {
            round: 1,
            target: 50,
            winner: Some("c3".into()),
            guess: Some(45),
        });
        assert_eq!(
            describe(&s),
            "round 2: target 75, 0 guess(es); round 1 (target 50) won by c3 with 45 [node2 at 1:3]"
        );
        s.last_result.as_mut().unwrap().winner = None;
        assert!(describe(&s).contains("; round 1 (target 50) had no guesses ["));
    }
}
