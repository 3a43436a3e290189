//! `guessgame reconfig add ID ADDRESS | remove ID`: one membership change, through the leader.

use guessgame_client::{ClientError, Configuration, MemberInfo, Reconfig};

use super::args::ReconfigCmd;
use super::{invalid, print_json, Ctx};

pub(super) async fn run(mut ctx: Ctx, change: ReconfigCmd) -> Result<(), ClientError> {
    let change = match change {
        ReconfigCmd::Add { id, address } => Reconfig::Add { id, address },
        ReconfigCmd::Remove { id } => {
            // The ensemble answers a removal of a non-member with "done" (so that a repeated
            // request is harmless); a user naming an unknown node gets an error instead.
            let current = ctx.client.configuration().await?;
            let known = current
                .members
                .iter()
                .chain(current.committed_members.iter())
                .any(|m| m.id == id);
            if !known {
                let ids: Vec<&str> = current.members.iter().map(|m| m.id.as_str()).collect();
                return Err(invalid(format!(
                    "{id} is not a member (members: {}); nothing changed",
                    ids.join(", ")
                )));
            }
            Reconfig::Remove { id }
        }
    };
    let c = ctx.client.reconfig(change.clone()).await?;
    if ctx.json {
        print_json(&c);
    } else {
        println!("{}", describe(&change, &c));
    }
    Ok(())
}

/// `node4 added as a voter: configuration 2:7 committed, voters [node1,node2,node3,node4]
/// (leader node1)`, with `, learners [...]` if there are any.
fn describe(change: &Reconfig, c: &Configuration) -> String {
    let what = match change {
        Reconfig::Add { id, .. } => format!("{id} added as a voter"),
        Reconfig::Remove { id } => format!("{id} removed"),
    };
    let learners = ids(c.learners());
    format!(
        "{what}: configuration {} committed, voters [{}]{} (leader {})",
        c.config,
        ids(c.voters()),
        if learners.is_empty() {
            String::new()
        } else {
            format!(", learners [{learners}]")
        },
        c.leader.as_deref().unwrap_or("?")
    )
}

fn ids<'a>(members: impl Iterator<Item = &'a MemberInfo>) -> String {
    members.map(|m| m.id.as_str()).collect::<Vec<_>>().join(",")
}

#[cfg(test)]
mod tests {
    use guessgame_client::{MemberKind, Zxid};

    use super::*;

    #[test]
    fn a_change_lists_the_voters_and_any_learners() {
        let member = |id: &str, kind| MemberInfo {
            id: id.into(),
            address: format!("{id}:7100"),
            kind,
        };
        let mut c = Configuration {
            node: "node1".into(),
            leader: Some("node1".into()),
            config: Zxid::new(2, 7),
            members: vec![
                member("node1", MemberKind::Voter),
                member("node2", MemberKind::Voter),
            ],
            committed_config: Zxid::new(2, 7),
            committed_members: vec![],
        };
        let add = Reconfig::Add {
            id: "node2".into(),
            address: "node2:7100".into(),
        };
        assert_eq!(
            describe(&add, &c),
            "node2 added as a voter: configuration 2:7 committed, voters [node1,node2] (leader node1)"
        );
        c.members.push(member("node3", MemberKind::Learner));
        c.leader = None;
        let remove = Reconfig::Remove { id: "node4".into() };
        assert_eq!(
            describe(&remove, &c),
            "node4 removed: configuration 2:7 committed, voters [node1,node2], learners [node3] (leader ?)"
        );
    }
}
