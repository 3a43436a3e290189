//! `guessgame snapshot save FILE | status FILE`: a consistent backup of the running ensemble,
//! and what a backup file holds. Restoring is `guessgame-node snapshot restore` (the node
//! binary: it writes SQLite logs, which this client never links).

use guessgame_client::snapshot::{self, Summary};
use guessgame_client::ClientError;

use super::args::{Opts, Output, SnapshotCmd};
use super::{print_json, read::game_text, Ctx};

pub(super) async fn run(cmd: SnapshotCmd, opts: Opts) -> Result<(), ClientError> {
    let json = opts.output == Output::Json;
    let summary = match cmd {
        SnapshotCmd::Save { file } => {
            let mut ctx = Ctx::new(opts, false)?;
            let taken = ctx.client.snapshot().await?;
            let s = snapshot::save(&file, &taken)?;
            if !json {
                println!("{}", saved(&s));
            }
            s
        }
        SnapshotCmd::Status { file } => {
            let s = snapshot::read(&file)?;
            if !json {
                print!("{}", status(&s));
            }
            s
        }
    };
    if json {
        print_json(&summary);
    }
    Ok(())
}

fn members(s: &Summary) -> String {
    s.members
        .iter()
        .map(|m| match m.kind {
            guessgame_client::MemberKind::Voter => m.id.clone(),
            _ => format!("{} ({})", m.id, m.kind),
        })
        .collect::<Vec<_>>()
        .join(",")
}

fn game(s: &Summary) -> String {
    game_text(s.round, s.target, s.guesses, s.last_result.as_ref())
}

/// `saved b.snap: zxid 3:17, round 2: target 75, 1 guess(es), members node1,node2,node3,
/// 412 bytes (from node2 of ensemble 4f0c…)`.
fn saved(s: &Summary) -> String {
    format!(
        "saved {}: zxid {}, {}, members {}, {} bytes (from {} of ensemble {})",
        s.file,
        s.zxid,
        game(s),
        members(s),
        s.bytes,
        s.node,
        s.ensemble_id.as_deref().unwrap_or("(unknown)")
    )
}

/// One line per fact, the checksum verified.
fn status(s: &Summary) -> String {
    let addresses: Vec<String> = s
        .members
        .iter()
        .map(|m| format!("{}={} ({})", m.id, m.address, m.kind))
        .collect();
    format!(
        "{}: {}, {} bytes, checksum ok (sha256 {})\n\
         zxid:     {}\n\
         game:     {}\n\
         members:  {} (configuration {})\n\
         source:   ensemble {}, node {}, taken {}\n",
        s.file,
        s.format,
        s.bytes,
        s.sha256,
        s.zxid,
        game(s),
        addresses.join(", "),
        s.config,
        s.ensemble_id.as_deref().unwrap_or("(unknown)"),
        s.node,
        s.created
    )
}

#[cfg(test)]
mod tests {
    use guessgame_client::{MemberInfo, MemberKind, RoundResult};

    use super::*;

    #[test]
    fn save_and_status_say_what_the_file_holds() {
        let member = |id: &str, kind| MemberInfo {
            id: id.into(),
            address: format!("{id}:7100"),
            kind,
        };
        let s = Summary {
            file: "b.snap".into(),
            format: "guessgame-snapshot 1".into(),
            zxid: "3:17".into(),
            round: 2,
            target: Some(75),
            guesses: 1,
            last_result: Some(RoundResult {
                round: 1,
                target: 50,
                winner: Some("c3".into()),
                guess: Some(45),
            }),
            config: "1:1".into(),
            members: vec![
                member("node1", MemberKind::Voter),
                member("node4", MemberKind::Learner),
            ],
            ensemble_id: Some("4f0c".into()),
            node: "node2".into(),
            created: "2025-12-02T11:40:00Z".into(),
            created_unix_ms: 1_764_675_600_000,
            bytes: 412,
            sha256: "ab".into(),
        };
        assert_eq!(
            saved(&s),
            "saved b.snap: zxid 3:17, round 2: target 75, 1 guess(es); round 1 (target 50) won \
             by c3 with 45, members node1,node4 (learner), 412 bytes (from node2 of ensemble 4f0c)"
        );
        assert_eq!(
            status(&s),
            "b.snap: guessgame-snapshot 1, 412 bytes, checksum ok (sha256 ab)\n\
             zxid:     3:17\n\
             game:     round 2: target 75, 1 guess(es); round 1 (target 50) won by c3 with 45\n\
             members:  node1=node1:7100 (voter), node4=node4:7100 (learner) (configuration 1:1)\n\
             source:   ensemble 4f0c, node node2, taken 2025-12-02T11:40:00Z\n"
        );
        let json = serde_json::to_string(&s).unwrap();
        assert!(
            json.starts_with(r#"{"file":"b.snap","format":"guessgame-snapshot 1","zxid":"3:17","round":2,"target":75,"guesses":1,"#),
            "{json}"
        );
    }
}
