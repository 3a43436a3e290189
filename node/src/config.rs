//! The ensemble configuration (the original lab's `config.py`, as TOML), read by node and client.
//!
//! Looked up in this order: `--config FILE`, `$GUESSGAME_CONFIG`, then the built-in default:
//! five nodes `node1`..`node5` on 127.0.0.1:7101..7105.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::core::Timing;

pub const CONFIG_ENV: &str = "GUESSGAME_CONFIG";

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    pub id: String,
    /// `host:port` the node listens on and peers dial.
    pub address: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default = "default_heartbeat")]
    pub heartbeat_interval_ms: u64,
    #[serde(default = "default_election_timeout")]
    pub election_timeout_ms: u64,
    /// How long a client request may wait (for a leader, for its commit) before it fails.
    #[serde(default = "default_request_timeout")]
    pub request_timeout_ms: u64,
    /// Defaults to a majority of `nodes`; anything that is not a majority is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quorum_size: Option<usize>,
    /// Where `logs_<node_id>.db` files go (overridden by `--data-dir`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    pub nodes: Vec<NodeConfig>,
}

fn default_heartbeat() -> u64 {
    100
}
fn default_election_timeout() -> u64 {
    1000
}
fn default_request_timeout() -> u64 {
    5000
}

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid config: {0}")]
    Invalid(String),
    #[error("unknown node {id:?}: the configured nodes are {known}")]
    UnknownNode { id: String, known: String },
}

impl Default for Config {
    fn default() -> Self {
        Config::local(5, 7101)
    }
}

impl Config {
    /// `count` nodes `node1..` on 127.0.0.1 from `first_port` up.
    pub fn local(count: usize, first_port: u16) -> Config {
        Config {
            heartbeat_interval_ms: default_heartbeat(),
            election_timeout_ms: default_election_timeout(),
            request_timeout_ms: default_request_timeout(),
            quorum_size: None,
            data_dir: None,
            nodes: (1..=count)
                .map(|i| NodeConfig {
                    id: format!("node{i}"),
                    address: format!("127.0.0.1:{}", first_port + i as u16 - 1),
                })
                .collect(),
        }
    }

    /// `--config` if given, else `$GUESSGAME_CONFIG`, else the built-in default.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let from_env = std::env::var_os(CONFIG_ENV).map(PathBuf::from);
        let config = match path.map(Path::to_path_buf).or(from_env) {
            Some(path) => Self::from_file(&path)?,
            None => Config::default(),
        };
        config.validate()?;
        Ok(config)
    }

    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let config: Config = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        config.validate()?;
        Ok(config)
    }

    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("config serializes")
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let n = self.nodes.len();
        if n == 0 || n > 9 || n.is_multiple_of(2) {
            return Err(ConfigError::Invalid(format!(
                "an ensemble has an odd number of nodes between 1 and 9, got {n}"
            )));
        }
        for (i, node) in self.nodes.iter().enumerate() {
            if crate::game::check_client_id(&node.id).is_err() {
                return Err(ConfigError::Invalid(format!(
                    "node id {:?} must be 1-64 letters, digits, '-', '_' or '.'",
                    node.id
                )));
            }
            if self.nodes[..i].iter().any(|o| o.id == node.id) {
                return Err(ConfigError::Invalid(format!(
                    "node id {:?} appears twice",
                    node.id
                )));
            }
            if self.nodes[..i].iter().any(|o| o.address == node.address) {
                return Err(ConfigError::Invalid(format!(
                    "address {} is used by two nodes",
                    node.address
                )));
            }
            let port_ok = node
                .address
                .rsplit_once(':')
                .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0));
            if !port_ok {
                return Err(ConfigError::Invalid(format!(
                    "address {:?} of {} must be host:port",
                    node.address, node.id
                )));
            }
        }
        if let Some(q) = self.quorum_size {
            if q > n || 2 * q <= n {
                return Err(ConfigError::Invalid(format!(
                    "quorum_size = {q} is not a majority of {n} nodes (it must be between {} and {n}); \
                     two disjoint quorums could each elect a leader",
                    n / 2 + 1
                )));
            }
        }
        if self.heartbeat_interval_ms == 0
            || self.election_timeout_ms < 2 * self.heartbeat_interval_ms
        {
            return Err(ConfigError::Invalid(format!(
                "election_timeout_ms ({}) must be at least twice heartbeat_interval_ms ({}), which must be > 0",
                self.election_timeout_ms, self.heartbeat_interval_ms
            )));
        }
        Ok(())
    }

    pub fn quorum(&self) -> usize {
        self.quorum_size.unwrap_or(self.nodes.len() / 2 + 1)
    }

    pub fn timing(&self) -> Timing {
        Timing {
            heartbeat_ms: self.heartbeat_interval_ms,
            election_timeout_ms: self.election_timeout_ms,
        }
    }

    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }

    pub fn ids(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.id.clone()).collect()
    }

    pub fn node(&self, id: &str) -> Result<&NodeConfig, ConfigError> {
        self.nodes
            .iter()
            .find(|n| n.id == id)
            .ok_or_else(|| ConfigError::UnknownNode {
                id: id.to_string(),
                known: self.ids().join(", "),
            })
    }

    pub fn address_of(&self, id: &str) -> Option<&str> {
        self.nodes
            .iter()
            .find(|n| n.id == id)
            .map(|n| n.address.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_five_local_nodes_with_majority_quorum() {
        let c = Config::default();
        c.validate().unwrap();
        assert_eq!(c.ids(), ["node1", "node2", "node3", "node4", "node5"]);
        assert_eq!(c.quorum(), 3);
        assert_eq!(c.address_of("node2"), Some("127.0.0.1:7102"));
    }

    #[test]
    fn quorum_that_is_not_a_majority_is_refused() {
        let mut c = Config {
            quorum_size: Some(2),
            ..Default::default()
        };
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("not a majority"), "{err}");
        c.quorum_size = Some(6);
        assert!(c.validate().is_err());
        c.quorum_size = Some(4);
        c.validate().unwrap();
    }

    #[test]
    fn toml_round_trips_and_unknown_keys_are_errors() {
        let c = Config::local(3, 9000);
        let back: Config = toml::from_str(&c.to_toml()).unwrap();
        assert_eq!(back, c);
        let text = "heartbeat_interval_ms = 100\nbogus = 1\n[[nodes]]\nid='a'\naddress='h:1'\n";
        assert!(toml::from_str::<Config>(text).is_err());
    }

    #[test]
    fn unknown_node_error_lists_the_known_ones() {
        let err = Config::default().node("node9").unwrap_err().to_string();
        assert!(
            err.contains("node9") && err.contains("node1, node2"),
            "{err}"
        );
    }
}
