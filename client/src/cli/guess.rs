//! `guessgame guess VALUE`: one guess in the open round.

use guessgame_client::ClientError;

use super::{print_json, Ctx};

pub(super) async fn run(mut ctx: Ctx, value: &str) -> Result<(), ClientError> {
    let value = ctx.play_value(value)?;
    let seq = ctx.request_seq();
    let g = ctx
        .client
        .guess_numbered(&ctx.client_id, value, seq)
        .await
        .map_err(|e| ctx.retry_hint(e, seq, &format!("guess {value}")))?;
    let client_id = &ctx.client_id;
    if ctx.json {
        print_json(
            &serde_json::json!({"client": client_id, "round": g.round, "guess": g.value, "zxid": g.zxid, "leader": g.leader}),
        );
    } else {
        println!(
            "{client_id} guessed {} in round {} (zxid {}, leader {})",
            g.value, g.round, g.zxid, g.leader
        );
    }
    Ok(())
}
