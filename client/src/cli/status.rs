//! `guessgame status`: every node's own view (role, membership, epoch, zxids) and the leader
//! a majority backs.

use std::time::Duration;

use guessgame_client::status::{ensemble_status, EnsembleStatus};
use guessgame_client::{ClientError, ErrorKind, Role};

use super::{print_json, Ctx};

pub(super) async fn run(ctx: Ctx) -> Result<(), ClientError> {
    // The members the ensemble itself reports (the file may predate changes), plus any node
    // named on the command line.
    let mut members: Vec<(String, String)> = if ctx.nodes.is_empty() {
        ctx.config
            .nodes
            .iter()
            .map(|n| (n.id.clone(), n.address.clone()))
            .collect()
    } else {
        ctx.endpoints
    };
    let short = ctx.timeout.min(Duration::from_secs(2));
    let mut probe = ctx.client;
    probe.set_timeout(short);
    if let Ok(live) = probe.configuration().await {
        for (id, address) in live.endpoints() {
            if !members.iter().any(|(m, _)| *m == id) {
                members.push((id, address));
            }
        }
    }
    let st = ensemble_status(&members, short).await;
    if ctx.json {
        print_json(&st);
    } else {
        print!("{}", table(&st));
    }
    if st.nodes.iter().all(|n| n.role == Role::Unreachable) {
        return Err(ClientError::new(
            ErrorKind::Unavailable,
            "no node reachable",
        ));
    }
    Ok(())
}

/// The leader, then one line per node.
fn table(st: &EnsembleStatus) -> String {
    let mut out = format!("leader: {}\n", st.leader.as_deref().unwrap_or("(none)"));
    out += &format!(
        "{:<10} {:<12} {:<8} {:>6} {:>12} {:>15} {:>10} {:>10}  address\n",
        "node", "role", "member", "epoch", "last_zxid", "last_committed", "snapshot", "log_start"
    );
    for n in &st.nodes {
        out += &format!(
            "{:<10} {:<12} {:<8} {:>6} {:>12} {:>15} {:>10} {:>10}  {}\n",
            n.id,
            n.role,
            n.membership,
            n.epoch,
            n.last_zxid,
            n.last_committed,
            n.snapshot,
            n.log_start,
            n.address
        );
        if let Some(ms) = n.storage_stalled_ms {
            out.pop();
            out += &format!(
                "  STORAGE STALLED {:.1} s (slow or full disk, or its database locked)\n",
                ms as f64 / 1000.0
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use guessgame_client::status::NodeStatus;
    use guessgame_client::{Membership, Zxid};

    use super::*;

    #[test]
    fn one_aligned_line_per_node() {
        let st = EnsembleStatus {
            leader: Some("node2".into()),
            nodes: vec![
                NodeStatus {
                    id: "node2".into(),
                    role: Role::Leader,
                    epoch: 3,
                    accepted_epoch: 3,
                    last_zxid: Zxid::new(3, 17),
                    last_committed: Zxid::new(3, 16),
                    snapshot: Zxid::new(3, 10),
                    log_start: Zxid::new(3, 6),
                    first_zxid: Zxid::new(3, 7),
                    storage_stalled_ms: None,
                    leader: Some("node2".into()),
                    membership: Membership::Voter,
                    voters: 3,
                    address: "127.0.0.1:7102".into(),
                    error: None,
                },
                NodeStatus {
                    id: "node3".into(),
                    role: Role::Unreachable,
                    epoch: 0,
                    accepted_epoch: 0,
                    last_zxid: Zxid::ZERO,
                    last_committed: Zxid::ZERO,
                    snapshot: Zxid::ZERO,
                    log_start: Zxid::ZERO,
                    first_zxid: Zxid::ZERO,
                    storage_stalled_ms: None,
                    leader: None,
                    membership: Membership::Unknown,
                    voters: 0,
                    address: "127.0.0.1:7103".into(),
                    error: Some("connection refused".into()),
                },
            ],
        };
        assert_eq!(
            table(&st),
            "leader: node2\n\
             node       role         member    epoch    last_zxid  last_committed   snapshot  log_start  address\n\
             node2      leader       voter         3         3:17            3:16       3:10        3:6  127.0.0.1:7102\n\
             node3      unreachable  unknown       0          0:0             0:0        0:0        0:0  127.0.0.1:7103\n"
        );
        assert_eq!(
            serde_json::to_string(&st.nodes[1]).unwrap(),
            r#"{"id":"node3","role":"unreachable","epoch":0,"accepted_epoch":0,"last_zxid":"0:0","last_committed":"0:0","snapshot":"0:0","log_start":"0:0","first_zxid":"0:0","leader":null,"membership":"unknown","voters":0,"address":"127.0.0.1:7103","error":"connection refused"}"#
        );
    }
}
