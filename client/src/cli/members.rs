//! `guessgame members`: the configuration (voters, learners, its version) and each member's
//! own view.

use guessgame_client::{ClientError, MembersReport};

use super::{print_json, Ctx};

pub(super) async fn run(mut ctx: Ctx) -> Result<(), ClientError> {
    let report = ctx.client.members_report().await?;
    if ctx.json {
        print_json(&report);
    } else {
        print!("{}", table(&report));
    }
    Ok(())
}

/// The configuration's summary line, one line per member, and a note while a change is in
/// flight.
fn table(report: &MembersReport) -> String {
    let c = &report.configuration;
    let mut out = format!(
        "configuration {} (committed {}): {} voters, quorum {}; leader {}\n",
        c.config,
        c.committed_config,
        report.voters,
        report.quorum,
        c.leader.as_deref().unwrap_or("(none)")
    );
    out += &format!(
        "{:<10} {:<8} {:<10} {:<8} {:>6} {:>12} {:>15}  address\n",
        "member", "kind", "role", "config", "epoch", "last_zxid", "last_committed"
    );
    for m in &c.members {
        let st = report.nodes.iter().find(|n| n.id == m.id);
        let (role, membership, epoch, last, committed) = match st {
            Some(n) => (
                n.role.as_str(),
                n.membership.as_str(),
                n.epoch.to_string(),
                n.last_zxid.to_string(),
                n.last_committed.to_string(),
            ),
            None => ("?", "?", "-".into(), "-".into(), "-".into()),
        };
        out += &format!(
            "{:<10} {:<8} {:<10} {:<8} {:>6} {:>12} {:>15}  {}\n",
            m.id, m.kind, role, membership, epoch, last, committed, m.address
        );
    }
    if c.config != c.committed_config {
        out += "(a membership change is in flight)\n";
    }
    out
}

#[cfg(test)]
mod tests {
    use guessgame_client::status::NodeStatus;
    use guessgame_client::{Configuration, MemberInfo, MemberKind, Membership, Role, Zxid};

    use super::*;

    #[test]
    fn members_without_an_answer_show_question_marks() {
        let member = |id: &str, kind| MemberInfo {
            id: id.into(),
            address: format!("{id}:7100"),
            kind,
        };
        let members = vec![
            member("node1", MemberKind::Voter),
            member("node4", MemberKind::Learner),
        ];
        let report = MembersReport {
            configuration: Configuration {
                node: "node1".into(),
                leader: Some("node1".into()),
                config: Zxid::new(2, 5),
                members: members.clone(),
                committed_config: Zxid::new(2, 1),
                committed_members: members[..1].to_vec(),
            },
            voters: 1,
            quorum: 1,
            nodes: vec![NodeStatus {
                id: "node1".into(),
                role: Role::Leader,
                epoch: 2,
                accepted_epoch: 2,
                last_zxid: Zxid::new(2, 5),
                last_committed: Zxid::new(2, 5),
                snapshot: Zxid::ZERO,
                log_start: Zxid::ZERO,
                first_zxid: Zxid::new(2, 1),
                storage_stalled_ms: None,
                leader: Some("node1".into()),
                membership: Membership::Voter,
                voters: 1,
                address: "node1:7100".into(),
                error: None,
            }],
        };
        assert_eq!(
            table(&report),
            "configuration 2:5 (committed 2:1): 1 voters, quorum 1; leader node1\n\
             member     kind     role       config    epoch    last_zxid  last_committed  address\n\
             node1      voter    leader     voter         2          2:5             2:5  node1:7100\n\
             node4      learner  ?          ?             -            -               -  node4:7100\n\
             (a membership change is in flight)\n"
        );
        let json = serde_json::to_string(&report).unwrap();
        assert!(
            json.starts_with(
                r#"{"node":"node1","leader":"node1","config":"2:5","members":[{"id":"node1","address":"node1:7100","kind":"voter"},{"id":"node4","address":"node4:7100","kind":"learner"}],"committed_config":"2:1","#
            ),
            "{json}"
        );
    }
}
