//! `guessgame read [--linearizable | --allow-stale]`: the game as one node (or the leader and a
//! quorum) knows it.

use guessgame_client::{ClientError, GameState, RoundResult};

use super::{print_json, Ctx};

pub(super) async fn run(
    mut ctx: Ctx,
    linearizable: bool,
    allow_stale: bool,
) -> Result<(), ClientError> {
    let s = if allow_stale {
        ctx.client.read_allowing_stale().await?
    } else {
        ctx.client.read(linearizable).await?
    };
    if ctx.json {
        print_json(&s);
    } else {
        println!("{}", describe(&s));
    }
    Ok(())
}

/// `round 2: target 75, 0 guess(es); round 1 (target 50) won by c3 with 45 [node2 at 1:3]`,
/// and `[node2 at 1:3; STALE: ...]` from a node in no quorum.
fn describe(s: &GameState) -> String {
    let game = game_text(s.round, s.target, s.guesses, s.last_result.as_ref());
    match &s.stale {
        None => format!("{game} [{} at {}]", s.node, s.applied),
        Some(why) => format!(
            "{game} [{} at {}; STALE: {} is {why}, this may be far behind the ensemble]",
            s.node, s.applied, s.node
        ),
    }
}

/// `round 2: target 75, 0 guess(es); round 1 (target 50) won by c3 with 45`.
pub(super) fn game_text(
    round: u64,
    target: Option<u32>,
    guesses: u64,
    last_result: Option<&RoundResult>,
) -> String {
    let mut out = match target {
        Some(t) => format!("round {round}: target {t}, {guesses} guess(es)"),
        None => "no round yet: a client must `write` a target first".to_string(),
    };
    if let Some(r) = last_result {
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
    out
}

#[cfg(test)]
mod tests {
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
            stale: None,
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
        s.stale = Some("looking for a leader (in no quorum)".into());
        assert!(
            describe(&s).ends_with(
                "[node2 at 1:3; STALE: node2 is looking for a leader (in no quorum), this may be \
                 far behind the ensemble]"
            ),
            "{}",
            describe(&s)
        );
    }
}
