//! The ensemble configuration (the original lab's `config.py`, as TOML), read by node and client.
//!
//! Looked up in this order: `--config FILE`, `$GUESSGAME_CONFIG`, then — in a Kubernetes
//! StatefulSet pod, when `$GUESSGAME_REPLICAS` is set — the ensemble derived from the pod's
//! environment ([`PodSettings`]), then the built-in default: five nodes `node1`..`node5` on
//! 127.0.0.1:7101..7105.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use guessgame_core::{rules, SnapshotPolicy, Timing};

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
    /// Snapshot the committed state every this many committed entries (ZooKeeper's
    /// `snapCount`), then drop the log below `snapshot_retain` entries under it.
    #[serde(default = "default_snapshot_every")]
    pub snapshot_every: usize,
    /// Entries kept below a snapshot, so that a follower a little behind gets a DIFF.
    #[serde(default = "default_snapshot_retain")]
    pub snapshot_retain: usize,
    /// The largest peer message (one batch of a peer stream) a node accepts, in bytes.
    /// Catch-up pieces (DIFF and snapshot) are sized to fit well inside it. Lowered by tests,
    /// so that "a follower further behind than one message holds" takes seconds to set up.
    #[serde(default = "default_max_peer_message_bytes")]
    pub max_peer_message_bytes: usize,
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
fn default_snapshot_every() -> usize {
    SnapshotPolicy::default().every_entries
}
fn default_snapshot_retain() -> usize {
    SnapshotPolicy::default().retain_entries
}
fn default_max_peer_message_bytes() -> usize {
    DEFAULT_MAX_PEER_MESSAGE_BYTES
}
/// More entries than this below a snapshot would defeat the point of snapshotting.
pub const MAX_SNAPSHOT_RETAIN: usize = 10_000_000;
/// The peer service's decode limit unless the configuration says otherwise.
pub const DEFAULT_MAX_PEER_MESSAGE_BYTES: usize = 64 << 20;
/// Bounds of `max_peer_message_bytes`: below the lower one a batch of ordinary proposals
/// would not fit; above the upper one a peer could make a node buffer gigabytes.
pub const MIN_PEER_MESSAGE_BYTES: usize = 16 << 10;
pub const MAX_PEER_MESSAGE_BYTES: usize = 1 << 30;
/// A catch-up piece takes at most this share of the peer message limit (its entries are
/// counted approximately; a piece is one message of a batch).
const PIECE_SHARE: usize = 4;

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
    #[error("invalid pod environment: {0}")]
    Pod(String),
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
            snapshot_every: default_snapshot_every(),
            snapshot_retain: default_snapshot_retain(),
            max_peer_message_bytes: default_max_peer_message_bytes(),
            nodes: (1..=count)
                .map(|i| NodeConfig {
                    id: format!("node{i}"),
                    address: format!("127.0.0.1:{}", first_port + i as u16 - 1),
                })
                .collect(),
        }
    }

    /// `--config` if given, else `$GUESSGAME_CONFIG`, else the pod environment (when
    /// `$GUESSGAME_REPLICAS` is set, see [`PodSettings`]), else the built-in default.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let from_env = std::env::var_os(CONFIG_ENV).map(PathBuf::from);
        if path.is_none() && from_env.is_some() && std::env::var_os(REPLICAS_ENV).is_some() {
            return Err(ConfigError::Invalid(format!(
                "${CONFIG_ENV} and ${REPLICAS_ENV} are both set: use a config file or the pod \
                 environment, not both"
            )));
        }
        let config = match path.map(Path::to_path_buf).or(from_env) {
            Some(path) => Self::from_file(&path)?,
            None => match PodSettings::from_env()? {
                Some(pod) => pod.config()?,
                None => Config::default(),
            },
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
        if !rules::is_ensemble_size(n) {
            return Err(ConfigError::Invalid(format!(
                "an ensemble has an odd number of nodes between 1 and {}, got {n}",
                rules::MAX_VOTERS
            )));
        }
        for (i, node) in self.nodes.iter().enumerate() {
            if rules::check_member_id(&node.id).is_err() {
                return Err(ConfigError::Invalid(format!(
                    "node id {:?} must be 1-{} letters, digits, '-', '_' or '.'",
                    node.id,
                    rules::MAX_MEMBER_ID_LEN
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
            if rules::split_host_port(&node.address).is_err() {
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
                    rules::majority(n)
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
        if self.snapshot_every == 0 {
            return Err(ConfigError::Invalid(
                "snapshot_every (--snapshot-every) must be at least 1 committed entry, got 0"
                    .into(),
            ));
        }
        if self.snapshot_retain > MAX_SNAPSHOT_RETAIN {
            return Err(ConfigError::Invalid(format!(
                "snapshot_retain (--snapshot-retain) must be at most {MAX_SNAPSHOT_RETAIN} \
                 entries, got {}",
                self.snapshot_retain
            )));
        }
        if !(MIN_PEER_MESSAGE_BYTES..=MAX_PEER_MESSAGE_BYTES).contains(&self.max_peer_message_bytes)
        {
            return Err(ConfigError::Invalid(format!(
                "max_peer_message_bytes (--max-peer-message-bytes) must be between \
                 {MIN_PEER_MESSAGE_BYTES} and {MAX_PEER_MESSAGE_BYTES}, got {}",
                self.max_peer_message_bytes
            )));
        }
        Ok(())
    }

    /// When the node snapshots, how much log it keeps, and how big catch-up pieces are: the
    /// core's defaults, made smaller where a piece would not fit well inside
    /// `max_peer_message_bytes`.
    pub fn snapshot_policy(&self) -> SnapshotPolicy {
        let d = SnapshotPolicy::default();
        let piece = (self.max_peer_message_bytes / PIECE_SHARE).max(1);
        SnapshotPolicy {
            every_entries: self.snapshot_every,
            retain_entries: self.snapshot_retain,
            chunk_bytes: d.chunk_bytes.min(piece),
            diff_bytes: d.diff_bytes.min(piece as u64),
            ..d
        }
    }

    /// Settings given on the command line (or in the environment) replace the file's.
    pub fn override_with(&mut self, o: &Overrides) -> Result<(), ConfigError> {
        if let Some(v) = o.snapshot_every {
            self.snapshot_every = v;
        }
        if let Some(v) = o.snapshot_retain {
            self.snapshot_retain = v;
        }
        if let Some(v) = o.max_peer_message_bytes {
            self.max_peer_message_bytes = v;
        }
        self.validate()
    }

    pub fn quorum(&self) -> usize {
        self.quorum_size
            .unwrap_or(rules::majority(self.nodes.len()))
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

/// Node settings that `guessgame-node` flags (`--snapshot-every`, `--snapshot-retain`,
/// `--max-peer-message-bytes`) set over the configuration file's.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Overrides {
    pub snapshot_every: Option<usize>,
    pub snapshot_retain: Option<usize>,
    pub max_peer_message_bytes: Option<usize>,
}

/// Set in a StatefulSet pod: the number of ensemble members. Turns on the pod mode
/// ([`PodSettings`]).
pub const REPLICAS_ENV: &str = "GUESSGAME_REPLICAS";
/// The node port in the pod mode unless `$GUESSGAME_PORT` says otherwise.
pub const DEFAULT_POD_PORT: u16 = 7100;

/// The ensemble as seen from a Kubernetes StatefulSet pod, read from its environment.
///
/// The members are the StatefulSet's pods `<statefulset>-0` .. `<statefulset>-<replicas-1>`;
/// a node's id is its pod name, and peers are dialled at their stable DNS names in the
/// headless Service. `$GUESSGAME_REPLICAS` is the size the ensemble was **created** with: it
/// only bootstraps the first configuration, which then lives in the log. A pod whose ordinal
/// is outside it starts outside the configuration and waits to be added (the operator does
/// that one member at a time, see `guessgame reconfig`).
///
/// | variable | meaning | default |
/// |---|---|---|
/// | `GUESSGAME_REPLICAS` | ensemble size (odd, 1-9); turns the pod mode on | — |
/// | `POD_NAME` | this pod, `<statefulset>-<ordinal>` (downward API) | `$HOSTNAME`, else the kernel's hostname |
/// | `GUESSGAME_STATEFULSET` | the StatefulSet's name (needed only where no pod name is known, e.g. a client outside the pods) | from the pod name |
/// | `GUESSGAME_SERVICE` | the headless Service | `<statefulset>-headless` |
/// | `POD_NAMESPACE` | the namespace (downward API) | none: `<pod>.<service>` resolves through the pod's DNS search path |
/// | `GUESSGAME_PORT` | the node port, listened on at `0.0.0.0` | `7100` |
/// | `GUESSGAME_CLUSTER_DOMAIN` | appended as `.svc.<domain>` | none: `<pod>.<service>.<namespace>.svc` |
/// | `GUESSGAME_PEER_TEMPLATE` | a member's `host:port`, with `{pod}`, `{ordinal}`, `{statefulset}`, `{service}`, `{namespace}`, `{port}`, `{domain}` | see above |
/// | `GUESSGAME_HEARTBEAT_INTERVAL_MS`, `GUESSGAME_ELECTION_TIMEOUT_MS`, `GUESSGAME_REQUEST_TIMEOUT_MS` | timing | as in the TOML file |
///
/// DNS records of a new pod can lag by tens of seconds even with `publishNotReadyAddresses`:
/// peers are dialled through lazily connecting channels, so a name that does not resolve yet
/// is simply an unreachable peer, retried on every send (logged at debug level).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodSettings {
    /// This pod's name (= its node id); `None` for a client outside the pods.
    pub pod_name: Option<String>,
    pub statefulset: String,
    pub ordinal: Option<usize>,
    pub replicas: usize,
    pub namespace: Option<String>,
    pub service: String,
    pub port: u16,
    pub cluster_domain: Option<String>,
    pub peer_template: Option<String>,
    pub heartbeat_interval_ms: Option<u64>,
    pub election_timeout_ms: Option<u64>,
    pub request_timeout_ms: Option<u64>,
}

fn parse_env<T: std::str::FromStr>(name: &str, value: &str) -> Result<T, ConfigError> {
    value
        .parse()
        .map_err(|_| ConfigError::Pod(format!("${name} = {value:?} is not a valid number")))
}

/// `web-3` → (`web`, 3). Only canonical ordinals (no sign, no leading zeros).
pub fn split_pod_name(pod: &str) -> Option<(&str, usize)> {
    let (prefix, ordinal) = pod.rsplit_once('-')?;
    let n: usize = ordinal.parse().ok()?;
    (!prefix.is_empty() && n.to_string() == ordinal).then_some((prefix, n))
}

impl PodSettings {
    /// Reads the process environment; `Ok(None)` when `$GUESSGAME_REPLICAS` is not set.
    pub fn from_env() -> Result<Option<PodSettings>, ConfigError> {
        let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|h| h.trim().to_string());
        Self::from_vars(|name| std::env::var(name).ok(), hostname)
    }

    /// Like [`from_env`](Self::from_env), with the variables from `var` and the kernel's
    /// hostname given (for tests).
    pub fn from_vars(
        var: impl Fn(&str) -> Option<String>,
        hostname: Option<String>,
    ) -> Result<Option<PodSettings>, ConfigError> {
        let get = |name: &str| {
            var(name)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        let Some(replicas) = get(REPLICAS_ENV) else {
            return Ok(None);
        };
        let replicas: usize = parse_env(REPLICAS_ENV, &replicas)?;
        let sts_env = get("GUESSGAME_STATEFULSET");
        let (pod_name, statefulset, ordinal) = if let Some(pod) = get("POD_NAME") {
            let (prefix, n) = split_pod_name(&pod).ok_or_else(|| {
                ConfigError::Pod(format!(
                    "$POD_NAME = {pod:?} is not a StatefulSet pod name <statefulset>-<ordinal>"
                ))
            })?;
            if let Some(sts) = sts_env.as_deref().filter(|s| *s != prefix) {
                return Err(ConfigError::Pod(format!(
                    "pod {pod:?} does not belong to StatefulSet {sts:?} ($GUESSGAME_STATEFULSET)"
                )));
            }
            (Some(pod.clone()), prefix.to_string(), Some(n))
        } else if let Some((host, prefix, n)) = get("HOSTNAME")
            .or(hostname.filter(|h| !h.is_empty()))
            .and_then(|h| {
                let (prefix, n) = split_pod_name(&h)?;
                Some((h.clone(), prefix.to_string(), n))
            })
            .filter(|(_, prefix, _)| sts_env.as_deref().is_none_or(|s| s == prefix))
        {
            (Some(host), prefix, Some(n))
        } else if let Some(sts) = sts_env {
            (None, sts, None)
        } else {
            return Err(ConfigError::Pod(
                "cannot tell this pod's name: set $POD_NAME (downward API metadata.name), \
                 or $GUESSGAME_STATEFULSET outside a pod"
                    .into(),
            ));
        };
        // A pod with an ordinal past the bootstrap size is a member added later (the
        // operator scales one member at a time): it starts outside the configuration and
        // waits to be added; see `main.rs`.
        let number = |name: &str| get(name).map(|v| parse_env::<u64>(name, &v)).transpose();
        let port = match get("GUESSGAME_PORT") {
            Some(p) => match parse_env::<u16>("GUESSGAME_PORT", &p)? {
                0 => return Err(ConfigError::Pod("$GUESSGAME_PORT must not be 0".into())),
                p => p,
            },
            None => DEFAULT_POD_PORT,
        };
        let settings = PodSettings {
            pod_name,
            service: get("GUESSGAME_SERVICE").unwrap_or_else(|| format!("{statefulset}-headless")),
            statefulset,
            ordinal,
            replicas,
            namespace: get("POD_NAMESPACE"),
            port,
            cluster_domain: get("GUESSGAME_CLUSTER_DOMAIN")
                .map(|d| d.trim_matches('.').to_string()),
            peer_template: get("GUESSGAME_PEER_TEMPLATE"),
            heartbeat_interval_ms: number("GUESSGAME_HEARTBEAT_INTERVAL_MS")?,
            election_timeout_ms: number("GUESSGAME_ELECTION_TIMEOUT_MS")?,
            request_timeout_ms: number("GUESSGAME_REQUEST_TIMEOUT_MS")?,
        };
        settings.config()?;
        Ok(Some(settings))
    }

    /// This node's id (its pod name), when running in a pod.
    pub fn node_id(&self) -> Option<&str> {
        self.pod_name.as_deref()
    }

    /// Where the node listens: every interface, on the node port.
    pub fn listen_address(&self) -> String {
        format!("0.0.0.0:{}", self.port)
    }

    /// The `host:port` of the member with this ordinal.
    pub fn address(&self, ordinal: usize) -> Result<String, ConfigError> {
        let pod = format!("{}-{ordinal}", self.statefulset);
        let (svc, port) = (&self.service, self.port);
        let Some(template) = &self.peer_template else {
            return Ok(match (&self.namespace, &self.cluster_domain) {
                (Some(ns), Some(domain)) => format!("{pod}.{svc}.{ns}.svc.{domain}:{port}"),
                (Some(ns), None) => format!("{pod}.{svc}.{ns}.svc:{port}"),
                (None, _) => format!("{pod}.{svc}:{port}"),
            });
        };
        let value = |name: &str| {
            Some(Ok(match name {
                "pod" => pod.clone(),
                "ordinal" => ordinal.to_string(),
                "statefulset" => self.statefulset.clone(),
                "service" => svc.clone(),
                "port" => port.to_string(),
                "domain" => self
                    .cluster_domain
                    .clone()
                    .unwrap_or_else(|| "cluster.local".into()),
                "namespace" => {
                    return Some(self.namespace.clone().ok_or_else(|| {
                        "$GUESSGAME_PEER_TEMPLATE uses {namespace}: set $POD_NAMESPACE".to_string()
                    }))
                }
                _ => return None,
            }))
        };
        rules::expand_template(template, value).map_err(|e| {
            ConfigError::Pod(match e {
                rules::TemplateError::Unclosed => {
                    format!("$GUESSGAME_PEER_TEMPLATE {template:?}: unclosed '{{'")
                }
                rules::TemplateError::Unknown(other) => format!(
                    "$GUESSGAME_PEER_TEMPLATE {template:?}: unknown placeholder {{{other}}} \
                     (known: pod, ordinal, statefulset, service, namespace, port, domain)"
                ),
                rules::TemplateError::NoValue(why) => why,
            })
        })
    }

    /// The ensemble: `<statefulset>-0` .. `<statefulset>-<replicas-1>` at their addresses.
    pub fn config(&self) -> Result<Config, ConfigError> {
        let nodes = (0..self.replicas)
            .map(|i| {
                Ok(NodeConfig {
                    id: format!("{}-{i}", self.statefulset),
                    address: self.address(i)?,
                })
            })
            .collect::<Result<Vec<_>, ConfigError>>()?;
        let config = Config {
            heartbeat_interval_ms: self.heartbeat_interval_ms.unwrap_or_else(default_heartbeat),
            election_timeout_ms: self
                .election_timeout_ms
                .unwrap_or_else(default_election_timeout),
            request_timeout_ms: self
                .request_timeout_ms
                .unwrap_or_else(default_request_timeout),
            quorum_size: None,
            data_dir: None,
            snapshot_every: default_snapshot_every(),
            snapshot_retain: default_snapshot_retain(),
            max_peer_message_bytes: default_max_peer_message_bytes(),
            nodes,
        };
        config.validate()?;
        Ok(config)
    }
}

#[cfg(test)]
mod tests;
