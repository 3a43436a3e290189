//! guessgame client library: a smart client for a guessgame ensemble.
//!
//! - [`Client`] (`client.rs`): endpoint list, failover across nodes, retries of what is safe
//!   to retry, typed errors ([`ClientError`], [`ErrorKind`]) that say whether a write may have
//!   happened; `write`, `guess`, `read`.
//! - [`Session`] (`session.rs`): one node, requests on one long-lived stream
//!   (`Game.Session`), for busy clients; no failover.
//! - `types.rs`: what the nodes report as text, typed: [`Role`], [`Membership`],
//!   [`MemberKind`], [`Zxid`]. They display and serialize as the node's words (`leader`,
//!   `voter`, `3:17`); a word this client does not know is kept as `Other(word)`.
//! - [`status`]: asks every member for its view (used by `guessgame status` and the operator).
//! - [`members`]: the configuration ([`Configuration`], [`MemberInfo`]), and changing it one
//!   member at a time ([`Reconfig`]).
//! - [`snapshot`]: backups — a consistent snapshot of the ensemble (`Client::snapshot`), and
//!   saving and checking backup files (`guessgame snapshot save|status`).
//! - [`cluster`]: starts a local ensemble of `guessgame-node` processes (demo and tests).
//! - [`demo`]: the guided tour behind `guessgame demo`.
//! - [`resolve_endpoints`] (here): `--node` arguments to `(id, host:port)` pairs.
//!
//! The `guessgame` binary is `main.rs` (parses the command line, reports errors) and `cli/`:
//! `cli/args.rs` the command line, `cli/mod.rs` the dispatch and what the subcommands share,
//! and one module per subcommand (`write`, `guess`, `read`, `status`, `members`, `reconfig`,
//! `snapshot`).

mod client;
pub mod cluster;
pub mod demo;
pub mod members;
mod session;
pub mod snapshot;
pub mod status;
mod types;

pub use client::{
    Client, ClientError, ErrorKind, GameState, GuessOutcome, RoundResult, WriteOutcome,
};
pub use guessgame_wire::config::{Config, NodeConfig};
pub use members::{Configuration, MemberInfo, MembersReport, Reconfig};
pub use session::Session;
pub use types::{MemberKind, Membership, ParseZxidError, Role, Zxid};

/// Resolves `--node` arguments: node ids from the config or `host:port`, comma-separated or
/// repeated. Empty → every configured node; inside a member's pod (pod mode, `POD_NAME` or the
/// hostname names a member) that member first, so `kubectl exec demo-3 -- guessgame read`
/// reads demo-3's own state, as `zkCli.sh` in a ZooKeeper pod talks to its local server.
pub fn resolve_endpoints(
    config: &Config,
    nodes: &[String],
) -> Result<Vec<(String, String)>, ClientError> {
    let mut out = Vec::new();
    for item in nodes
        .iter()
        .flat_map(|n| n.split(','))
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        if let Some(addr) = config.address_of(item) {
            out.push((item.to_string(), addr.to_string()));
        } else if guessgame_core::rules::split_host_port(item).is_ok() {
            out.push((item.to_string(), item.to_string()));
        } else {
            return Err(ClientError::new(
                ErrorKind::InvalidArgument,
                format!(
                    "unknown node {item:?}: use a configured id ({}) or host:port",
                    config.ids().join(", ")
                ),
            ));
        }
    }
    if out.is_empty() {
        out = config
            .nodes
            .iter()
            .map(|n| (n.id.clone(), n.address.clone()))
            .collect();
        let local = guessgame_wire::config::PodSettings::from_env()
            .ok()
            .flatten()
            .and_then(|pod| pod.pod_name);
        local_first(&mut out, local.as_deref());
    }
    Ok(out)
}

/// Moves the endpoint of node `local` (if it is one of them) to the front, keeping the order
/// of the others.
fn local_first(endpoints: &mut [(String, String)], local: Option<&str>) {
    if let Some(i) = local.and_then(|id| endpoints.iter().position(|(n, _)| n == id)) {
        endpoints[..=i].rotate_right(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eps(ids: &[&str]) -> Vec<(String, String)> {
        ids.iter()
            .map(|i| (i.to_string(), format!("{i}:7100")))
            .collect()
    }

    #[test]
    fn local_member_is_asked_first_and_the_others_keep_their_order() {
        let mut e = eps(&["demo-0", "demo-1", "demo-2", "demo-3"]);
        local_first(&mut e, Some("demo-2"));
        let ids: Vec<_> = e.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(ids, ["demo-2", "demo-0", "demo-1", "demo-3"]);
    }

    #[test]
    fn no_or_unknown_local_node_keeps_the_configured_order() {
        let mut e = eps(&["demo-0", "demo-1"]);
        local_first(&mut e, None);
        local_first(&mut e, Some("other-7"));
        let ids: Vec<_> = e.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(ids, ["demo-0", "demo-1"]);
    }
}
