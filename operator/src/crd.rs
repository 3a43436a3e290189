//! The `GuessGame` custom resource (`guessgame.dev/v1alpha1`, short name `gg`).
//!
//! `cargo run -p guessgame-operator --bin crdgen` prints its CustomResourceDefinition; that
//! output is committed as `manifests/crd.yaml` and `charts/guessgame/crds/guessgames.yaml`
//! (a unit test fails when either is stale).

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// API group of the resource.
pub const GROUP: &str = "guessgame.dev";
/// API version of the resource.
pub const VERSION: &str = "v1alpha1";
/// `apiVersion` of the resource.
pub const API_VERSION: &str = "guessgame.dev/v1alpha1";
/// Kind of the resource.
pub const KIND: &str = "GuessGame";

/// Condition types in `status.conditions`.
pub mod condition {
    /// A leader is elected and a quorum of members is ready: the game can be played.
    pub const AVAILABLE: &str = "Available";
    /// The ensemble is being created, rolled out, or members are (re)starting.
    pub const PROGRESSING: &str = "Progressing";
    /// Members are failing (crash loop, not answering) or the quorum is lost.
    pub const DEGRADED: &str = "Degraded";
    /// `spec.replicas` is not a size the operator can run (odd, 1 to 9; the CRD's schema
    /// refuses other values, an older CRD may not): it is not applied, the ensemble keeps
    /// its size. A valid change is applied step by step (`status.scaling`, Progressing).
    pub const SCALE_REFUSED: &str = "ScaleRefused";
    /// False while a member's pod cannot run: an image that cannot be pulled, a volume claim
    /// that cannot bind (the pod stays unschedulable), a container that cannot be created or
    /// started, a crash loop. The reason is the first problem's (`ImagePullBackOff`,
    /// `ErrImageNeverPull`, `VolumeUnbound`, `Unschedulable`, `CreateContainerConfigError`,
    /// `StartError`, `CrashLoopBackOff`, ...), the message lists every pod with the kubelet's
    /// or the scheduler's words. Each problem also gets one Warning Event of that reason. The
    /// operator never deletes a pod that never started: a new one would meet the same fault.
    pub const PODS_HEALTHY: &str = "PodsHealthy";
}

/// A guessgame ensemble: an odd number of replicated nodes (a StatefulSet) that elect a
/// leader and play the number-guessing game.
// Several printer columns have the same type: not a duplicated attribute.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "guessgame.dev",
    version = "v1alpha1",
    kind = "GuessGame",
    plural = "guessgames",
    shortname = "gg",
    namespaced,
    status = "GuessGameStatus",
    derive = "PartialEq",
    doc = "A guessgame ensemble: an odd number of replicated nodes that elect a leader and play the number-guessing game.",
    printcolumn(name = "Replicas", type_ = "integer", json_path = ".spec.replicas"),
    printcolumn(name = "Ready", type_ = "integer", json_path = ".status.readyReplicas"),
    printcolumn(name = "Leader", type_ = "string", json_path = ".status.leader"),
    printcolumn(name = "Epoch", type_ = "integer", json_path = ".status.epoch"),
    printcolumn(name = "Round", type_ = "integer", json_path = ".status.round"),
    printcolumn(name = "Target", type_ = "integer", json_path = ".status.target"),
    printcolumn(name = "Scaling", type_ = "string", json_path = ".status.scaling.step"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "self.electionTimeoutMs >= 2 * self.heartbeatIntervalMs",
    "message": "electionTimeoutMs must be at least twice heartbeatIntervalMs"
}]))]
pub struct GuessGameSpec {
    /// Number of voting members: odd, 1 to 9. A change is applied one member at a time
    /// through the ensemble's replicated configuration: growing, the StatefulSet gets one
    /// more pod and the operator adds it (a learner, then a voter once caught up); shrinking,
    /// the operator removes the highest ordinal, then the StatefulSet loses that pod.
    /// Progress shows in `status.scaling`, the Progressing condition and Events.
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 1, max = 9), extend("x-kubernetes-validations" = [{
        "rule": "self % 2 == 1",
        "message": "replicas must be odd: 1, 3, 5, 7 or 9"
    }]))]
    pub replicas: i32,
    /// The node image (it also carries the `guessgame` client).
    #[serde(default)]
    pub image: ImageSpec,
    /// The volume each member keeps its log on (one PersistentVolumeClaim per member).
    /// Used at creation only: volume claim templates cannot change afterwards.
    #[serde(default)]
    pub storage: StorageSpec,
    /// Compute resources of each node container (`requests` and `limits`, as in a pod).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "resources_schema")]
    pub resources: Option<ResourceRequirements>,
    /// Leader → followers heartbeat period, in milliseconds.
    #[serde(default = "default_heartbeat")]
    #[schemars(range(min = 1, max = 60000))]
    pub heartbeat_interval_ms: i64,
    /// A follower that hears no leader for this long starts an election; a leader that hears
    /// no quorum for this long steps down. Milliseconds, at least twice the heartbeat.
    #[serde(default = "default_election_timeout")]
    #[schemars(range(min = 2, max = 600000))]
    pub election_timeout_ms: i64,
}

/// `requests` / `limits` maps of quantities: the container's schema without the long
/// descriptions of every Kubernetes type inside.
fn resources_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let quantities = serde_json::json!({
        "type": "object",
        "additionalProperties": {"x-kubernetes-int-or-string": true}
    });
    schemars::json_schema!({
        "type": "object",
        "nullable": true,
        "properties": {
            "requests": quantities,
            "limits": quantities
        }
    })
}

fn default_replicas() -> i32 {
    5
}
fn default_heartbeat() -> i64 {
    100
}
fn default_election_timeout() -> i64 {
    1000
}

impl Default for GuessGameSpec {
    fn default() -> Self {
        GuessGameSpec {
            replicas: default_replicas(),
            image: ImageSpec::default(),
            storage: StorageSpec::default(),
            resources: None,
            heartbeat_interval_ms: default_heartbeat(),
            election_timeout_ms: default_election_timeout(),
        }
    }
}

/// Image pull policy of the node container.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum PullPolicy {
    Always,
    /// The default: kind's side-loaded images (`kind load docker-image`) are never pulled.
    #[default]
    IfNotPresent,
    Never,
}

impl PullPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            PullPolicy::Always => "Always",
            PullPolicy::IfNotPresent => "IfNotPresent",
            PullPolicy::Never => "Never",
        }
    }
}

/// The node image.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImageSpec {
    #[serde(default = "default_repository")]
    #[schemars(length(min = 1))]
    pub repository: String,
    /// A fixed tag (not `latest`: with kind's side-loaded images it causes pulls).
    #[serde(default = "default_tag")]
    #[schemars(length(min = 1))]
    pub tag: String,
    #[serde(default)]
    pub pull_policy: PullPolicy,
}

fn default_repository() -> String {
    "guessgame-node".into()
}
fn default_tag() -> String {
    env!("CARGO_PKG_VERSION").into()
}

impl Default for ImageSpec {
    fn default() -> Self {
        ImageSpec {
            repository: default_repository(),
            tag: default_tag(),
            pull_policy: PullPolicy::default(),
        }
    }
}

impl ImageSpec {
    /// `repository:tag`, or `repository@digest` when the tag is a digest.
    pub fn reference(&self) -> String {
        if self.tag.contains(':') {
            format!("{}@{}", self.repository, self.tag)
        } else {
            format!("{}:{}", self.repository, self.tag)
        }
    }
}

/// Per-member persistent storage for the SQLite log.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StorageSpec {
    /// Size of each member's volume.
    #[serde(default = "default_size")]
    pub size: Quantity,
    /// StorageClass of the volumes (default: the cluster's default class).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
}

fn default_size() -> Quantity {
    Quantity("1Gi".into())
}

impl Default for StorageSpec {
    fn default() -> Self {
        StorageSpec {
            size: default_size(),
            storage_class_name: None,
        }
    }
}

/// What the operator observed, written on every reconciliation.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GuessGameStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The ensemble's size: voters in its committed configuration (before the first
    /// configuration is read: the StatefulSet's replicas).
    #[serde(default)]
    pub replicas: i32,
    /// The size the ensemble was created with: `GUESSGAME_REPLICAS` in the ConfigMap, which
    /// only bootstraps the first configuration (it never changes: a change would roll every
    /// pod). The configuration in use lives in the replicated log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bootstrap_replicas: Option<i32>,
    /// A `spec.replicas` change under way; absent when the ensemble has the requested size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scaling: Option<ScalingStatus>,
    /// Members that serve: the leader, and followers in sync with it.
    #[serde(default)]
    pub ready_replicas: i32,
    /// The leading member's pod, when a majority follows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader: Option<String>,
    /// The leader's epoch (the highest epoch seen during an election).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<i64>,
    /// The leader's last committed zxid (`epoch:counter`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_committed: Option<String>,
    /// The open round (as last read from the leader).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub round: Option<i64>,
    /// The open round's target (as last read from the leader).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<i64>,
    /// One entry per member, by ordinal.
    #[serde(default)]
    pub members: Vec<MemberStatus>,
    /// Member pods the operator deleted so the StatefulSet would recreate them.
    #[serde(default)]
    pub restarts: i32,
    /// When the operator last deleted a member pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_restart_time: Option<Time>,
    /// Available, Progressing, Degraded, ScaleRefused, PodsHealthy.
    #[serde(default)]
    pub conditions: Vec<Condition>,
}

/// A scaling under way: one member is added or removed at a time.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScalingStatus {
    /// Voters when the scaling started.
    pub from: i32,
    /// Voters requested (`spec.replicas`).
    pub to: i32,
    /// The current step, e.g. `add demo-3`, `remove demo-4`, `statefulset 4`, `wait demo-3`.
    pub step: String,
    /// What the step waits for or did last.
    pub message: String,
}

/// One member as the operator sees it.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MemberStatus {
    /// The member's pod.
    pub pod: String,
    /// The node id the member reports (its pod name).
    pub node_id: String,
    /// `leader`, `follower`, `looking`, `unreachable` (not answering), or `absent` (no pod).
    pub role: String,
    pub epoch: i64,
    /// Last logged zxid (`epoch:counter`).
    pub last_zxid: String,
    /// `voter` or `learner` in the ensemble's committed configuration, or `none` (a pod
    /// not yet added, or already removed); absent while the configuration is unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub membership: Option<String>,
    /// Serving: the leader, or a follower of a leader.
    pub ready: bool,
    /// Since when the member's pod has been running without answering the operator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_answering_since: Option<Time>,
    /// What keeps the member's pod from running, as the kubelet or the scheduler says it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<PodProblem>,
    /// When the operator deleted this member's pod to restart it, until the member serves
    /// again: a member is restarted once per failure (a recreated pod that fails again would
    /// fail after every restart).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restarted_at: Option<Time>,
}

/// A member pod that cannot run, in the kubelet's or the scheduler's words.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodProblem {
    /// `ImagePullBackOff` (also for `ErrImagePull`), `ErrImageNeverPull`, `InvalidImageName`,
    /// `VolumeUnbound`, `Unschedulable`, `CreateContainerConfigError`,
    /// `CreateContainerError`, `RunContainerError`, `StartError` (the container never
    /// started), `CrashLoopBackOff` (it started, and exits).
    pub reason: String,
    /// The kubelet's or the scheduler's message (the first one seen for this reason).
    pub message: String,
}

impl PodProblem {
    /// The pod never ran its container: restarting (deleting) it cannot help, a new pod
    /// meets the same fault.
    pub fn never_started(&self) -> bool {
        self.reason != "CrashLoopBackOff"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::CustomResourceExt;

    #[test]
    fn crd_names_scope_and_subresources() {
        let crd = GuessGame::crd();
        assert_eq!(
            crd.metadata.name.as_deref(),
            Some("guessgames.guessgame.dev")
        );
        assert_eq!(crd.spec.group, GROUP);
        assert_eq!(crd.spec.scope, "Namespaced");
        assert_eq!(crd.spec.names.plural, "guessgames");
        assert_eq!(crd.spec.names.short_names, Some(vec!["gg".to_string()]));
        let v = &crd.spec.versions[0];
        assert_eq!(v.name, VERSION);
        assert!(v.subresources.as_ref().unwrap().status.is_some());
        let columns: Vec<_> = v
            .additional_printer_columns
            .as_ref()
            .unwrap()
            .iter()
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(
            columns,
            ["Replicas", "Ready", "Leader", "Epoch", "Round", "Target", "Scaling", "Age"]
        );
    }

    #[test]
    fn schema_defaults_and_validations() {
        let crd = serde_json::to_value(GuessGame::crd()).unwrap();
        let spec = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
        let replicas = &spec["properties"]["replicas"];
        assert_eq!(replicas["default"], 5);
        assert_eq!(replicas["minimum"].as_f64(), Some(1.0));
        assert_eq!(replicas["maximum"].as_f64(), Some(9.0));
        assert_eq!(
            replicas["x-kubernetes-validations"][0]["rule"],
            "self % 2 == 1"
        );
        assert_eq!(
            spec["x-kubernetes-validations"][0]["rule"],
            "self.electionTimeoutMs >= 2 * self.heartbeatIntervalMs"
        );
        let image = &spec["properties"]["image"]["properties"];
        assert_eq!(image["pullPolicy"]["default"], "IfNotPresent");
        assert_eq!(spec["properties"]["heartbeatIntervalMs"]["default"], 100);
        assert_eq!(spec["properties"]["electionTimeoutMs"]["default"], 1000);
    }

    #[test]
    fn an_empty_spec_gets_the_defaults() {
        let gg: GuessGame = serde_json::from_value(serde_json::json!({
            "apiVersion": API_VERSION, "kind": KIND,
            "metadata": {"name": "g", "namespace": "ns"},
            "spec": {}
        }))
        .unwrap();
        assert_eq!(gg.spec, GuessGameSpec::default());
        assert_eq!(
            gg.spec.image.reference(),
            format!("guessgame-node:{}", env!("CARGO_PKG_VERSION"))
        );
    }
}
