//! guessgame client library: a smart client for a guessgame ensemble.
//!
//! - [`Client`]: endpoint list, failover across nodes, retries of what is safe to retry,
//!   typed errors that say whether a write may have happened.
//! - [`status`]: asks every member for its view (used by `guessgame status` and the operator).
//! - [`members`]: the configuration, and changing it one member at a time.
//! - [`cluster`]: starts a local ensemble of `guessgame-node` processes (demo and tests).
//! - [`demo`]: the guided tour behind `guessgame demo`.

mod client;
pub mod cluster;
pub mod demo;
pub mod members;
pub mod status;

pub use client::{
    Client, ClientError, ErrorKind, GameState, GuessOutcome, RoundResult, WriteOutcome,
};
pub use guessgame_node::config::{Config, NodeConfig};
pub use members::{Configuration, MemberInfo, MembersReport, Reconfig};

/// Resolves `--node` arguments: node ids from the config or `host:port`, comma-separated or
/// repeated. Empty → every configured node.
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
        } else if item
            .rsplit_once(':')
            .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok())
        {
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
    }
    Ok(out)
}
