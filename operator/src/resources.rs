//! The objects a `GuessGame` owns, built from its spec: plain functions, no API calls.
//!
//! | object | name | why |
//! |---|---|---|
//! | ConfigMap | `<name>-config` | the pods' ensemble settings (`GUESSGAME_*`, read as env) |
//! | Service (headless) | `<name>-headless` | stable peer DNS names; `publishNotReadyAddresses` so peers resolve before they are Ready (readiness needs a quorum) |
//! | Service | `<name>` | what clients dial: Ready members only |
//! | StatefulSet | `<name>` | the members `<name>-0..`; `Parallel` (OrderedReady deadlocks: readiness needs a quorum) |
//! | PodDisruptionBudget | `<name>` | voluntary disruptions never take away the quorum |

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetSpec,
    StatefulSetUpdateStrategy,
};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, ConfigMapEnvSource, Container, ContainerPort, EmptyDirVolumeSource,
    EnvFromSource, EnvVar, EnvVarSource, GRPCAction, ObjectFieldSelector, PersistentVolumeClaim,
    PersistentVolumeClaimSpec, PodAffinityTerm, PodAntiAffinity, PodSecurityContext, PodSpec,
    PodTemplateSpec, Probe, SeccompProfile, SecurityContext, Service, ServicePort, ServiceSpec,
    TCPSocketAction, Volume, VolumeMount, VolumeResourceRequirements, WeightedPodAffinityTerm,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{Resource, ResourceExt};

use crate::crd::GuessGame;

/// The gRPC port every node listens on (clients, peers, health).
pub const NODE_PORT: i32 = 7100;
/// Where each member's volume is mounted (`logs_<pod>.db` lives there).
pub const DATA_DIR: &str = "/data";
/// The unprivileged user and group of the node image.
pub const NODE_UID: i64 = 10001;
/// Label on every pod and owned object: the owning GuessGame's name (pods are owned by the
/// StatefulSet, so this label maps a pod back to its GuessGame).
pub const INSTANCE_LABEL: &str = "guessgame.dev/instance";
/// Label on every owned object.
pub const MANAGED_BY: &str = "guessgame-operator";
/// Pod template annotation: hash of the ConfigMap's data, so a settings change rolls out
/// (one pod at a time, each waiting for the previous to be Ready again).
pub const CONFIG_HASH_ANNOTATION: &str = "guessgame.dev/config-hash";
/// The field manager of the operator's server-side apply patches.
pub const FIELD_MANAGER: &str = "guessgame-operator";

pub fn headless_service_name(gg: &GuessGame) -> String {
    format!("{}-headless", gg.name_any())
}
pub fn client_service_name(gg: &GuessGame) -> String {
    gg.name_any()
}
pub fn config_map_name(gg: &GuessGame) -> String {
    format!("{}-config", gg.name_any())
}
pub fn statefulset_name(gg: &GuessGame) -> String {
    gg.name_any()
}
pub fn pdb_name(gg: &GuessGame) -> String {
    gg.name_any()
}
/// The member pod with this ordinal.
pub fn pod_name(gg: &GuessGame, ordinal: usize) -> String {
    format!("{}-{ordinal}", statefulset_name(gg))
}

/// Members that form a majority.
pub fn quorum(replicas: i32) -> i32 {
    guessgame_core::rules::majority(replicas.max(0) as usize) as i32
}

/// The selector labels of the member pods (never change: a StatefulSet selector is immutable).
pub fn selector_labels(gg: &GuessGame) -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            "app.kubernetes.io/name".to_string(),
            "guessgame".to_string(),
        ),
        (INSTANCE_LABEL.to_string(), gg.name_any()),
    ])
}

/// `guessgame.dev/instance=<name>`: selects one GuessGame's member pods.
pub fn pod_selector(gg: &GuessGame) -> String {
    format!("{INSTANCE_LABEL}={}", gg.name_any())
}

/// Labels of every owned object and pod.
pub fn labels(gg: &GuessGame) -> BTreeMap<String, String> {
    let mut labels = selector_labels(gg);
    labels.insert("app.kubernetes.io/instance".into(), gg.name_any());
    labels.insert("app.kubernetes.io/component".into(), "node".into());
    labels.insert("app.kubernetes.io/managed-by".into(), MANAGED_BY.into());
    labels
}

/// The controller owner reference to `gg`, with `blockOwnerDeletion` (the chart grants
/// `guessgames/finalizers` for it): a foreground deletion of the GuessGame waits for its
/// objects to go first.
fn owner(gg: &GuessGame) -> OwnerReference {
    OwnerReference {
        block_owner_deletion: Some(true),
        ..gg.controller_owner_ref(&())
            .expect("a GuessGame read from the API has a name and uid")
    }
}

fn meta(gg: &GuessGame, name: String) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: gg.namespace(),
        labels: Some(labels(gg)),
        owner_references: Some(vec![owner(gg)]),
        ..Default::default()
    }
}

/// The pods' settings, read by `guessgame-node` (see `PodSettings` in the node crate).
pub fn config_data(gg: &GuessGame, replicas: i32) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("GUESSGAME_REPLICAS".into(), replicas.to_string()),
        ("GUESSGAME_STATEFULSET".into(), statefulset_name(gg)),
        ("GUESSGAME_SERVICE".into(), headless_service_name(gg)),
        ("GUESSGAME_PORT".into(), NODE_PORT.to_string()),
        ("GUESSGAME_DATA_DIR".into(), DATA_DIR.into()),
        (
            "GUESSGAME_HEARTBEAT_INTERVAL_MS".into(),
            gg.spec.heartbeat_interval_ms.to_string(),
        ),
        (
            "GUESSGAME_ELECTION_TIMEOUT_MS".into(),
            gg.spec.election_timeout_ms.to_string(),
        ),
    ])
}

/// FNV-1a over the sorted data: stable across builds and Rust versions.
pub fn config_hash(data: &BTreeMap<String, String>) -> String {
    let bytes = data
        .iter()
        .flat_map(|(k, v)| k.bytes().chain([0]).chain(v.bytes()).chain([0]));
    format!("{:016x}", guessgame_core::rules::fnv1a(bytes))
}

pub fn config_map(gg: &GuessGame, replicas: i32) -> ConfigMap {
    ConfigMap {
        metadata: meta(gg, config_map_name(gg)),
        data: Some(config_data(gg, replicas)),
        ..Default::default()
    }
}

fn grpc_port() -> ServicePort {
    ServicePort {
        name: Some("grpc".into()),
        port: NODE_PORT,
        target_port: Some(IntOrString::String("grpc".into())),
        protocol: Some("TCP".into()),
        ..Default::default()
    }
}

/// Peer discovery: one DNS name per pod, published before the pods are Ready.
pub fn headless_service(gg: &GuessGame) -> Service {
    Service {
        metadata: meta(gg, headless_service_name(gg)),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            publish_not_ready_addresses: Some(true),
            selector: Some(selector_labels(gg)),
            ports: Some(vec![grpc_port()]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// What clients dial: only Ready (serving) members.
pub fn client_service(gg: &GuessGame) -> Service {
    Service {
        metadata: meta(gg, client_service_name(gg)),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            selector: Some(selector_labels(gg)),
            ports: Some(vec![grpc_port()]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// At most `replicas - quorum` members may be voluntarily disrupted (evicted, drained), so a
/// quorum always stays; unhealthy pods (not serving anyway) may always be evicted.
pub fn pod_disruption_budget(gg: &GuessGame, replicas: i32) -> PodDisruptionBudget {
    PodDisruptionBudget {
        metadata: meta(gg, pdb_name(gg)),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(replicas - quorum(replicas))),
            selector: Some(LabelSelector {
                match_labels: Some(selector_labels(gg)),
                ..Default::default()
            }),
            unhealthy_pod_eviction_policy: Some("AlwaysAllow".into()),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn env_from_field(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The members' pods. `bootstrap` is the size the ensemble was created with (the ConfigMap's
/// `GUESSGAME_REPLICAS`, hashed into the pod template: it never changes, or every pod would
/// roll); `replicas` is the pod count (the scaling steps change it one at a time); `existing`
/// is the current StatefulSet, whose immutable volume claim templates are kept.
pub fn statefulset(
    gg: &GuessGame,
    bootstrap: i32,
    replicas: i32,
    existing: Option<&StatefulSet>,
) -> StatefulSet {
    let data = config_data(gg, bootstrap);
    let mut pod_labels = labels(gg);
    pod_labels.remove("app.kubernetes.io/managed-by");
    let container = Container {
        name: "node".into(),
        image: Some(gg.spec.image.reference()),
        image_pull_policy: Some(gg.spec.image.pull_policy.as_str().into()),
        env: Some(vec![
            env_from_field("POD_NAME", "metadata.name"),
            env_from_field("POD_NAMESPACE", "metadata.namespace"),
        ]),
        env_from: Some(vec![EnvFromSource {
            config_map_ref: Some(ConfigMapEnvSource {
                name: config_map_name(gg),
                optional: Some(false),
            }),
            ..Default::default()
        }]),
        ports: Some(vec![ContainerPort {
            name: Some("grpc".into()),
            container_port: NODE_PORT,
            protocol: Some("TCP".into()),
            ..Default::default()
        }]),
        // Ready = SERVING on the standard gRPC health service: the leader, or a follower in
        // sync with one. Not ready during elections and without a quorum.
        readiness_probe: Some(Probe {
            grpc: Some(GRPCAction {
                port: NODE_PORT,
                service: None,
                ..Default::default()
            }),
            period_seconds: Some(2),
            timeout_seconds: Some(1),
            failure_threshold: Some(3),
            success_threshold: Some(1),
            ..Default::default()
        }),
        // Started = the node port accepts connections: the node has opened and checked its
        // log (a long one takes a while) and listens. Every second, for up to 5 minutes;
        // readiness and liveness begin once it succeeds, so a slow start is not killed.
        startup_probe: Some(Probe {
            tcp_socket: Some(TCPSocketAction {
                port: IntOrString::String("grpc".into()),
                ..Default::default()
            }),
            period_seconds: Some(1),
            timeout_seconds: Some(1),
            failure_threshold: Some(300),
            ..Default::default()
        }),
        // Alive = the process accepts connections on the node port. Not the health service:
        // it is NOT_SERVING whenever the quorum is lost, and killing members then would only
        // make the outage longer (restart back-off).
        liveness_probe: Some(Probe {
            tcp_socket: Some(TCPSocketAction {
                port: IntOrString::String("grpc".into()),
                ..Default::default()
            }),
            period_seconds: Some(10),
            timeout_seconds: Some(2),
            failure_threshold: Some(6),
            ..Default::default()
        }),
        resources: gg.spec.resources.clone(),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            run_as_user: Some(NODE_UID),
            run_as_group: Some(NODE_UID),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                ..Default::default()
            }),
            ..Default::default()
        }),
        volume_mounts: Some(vec![
            VolumeMount {
                name: "data".into(),
                mount_path: DATA_DIR.into(),
                ..Default::default()
            },
            VolumeMount {
                name: "tmp".into(),
                mount_path: "/tmp".into(),
                ..Default::default()
            },
        ]),
        ..Default::default()
    };
    let pod_spec = PodSpec {
        containers: vec![container],
        automount_service_account_token: Some(false),
        enable_service_links: Some(false),
        termination_grace_period_seconds: Some(10),
        security_context: Some(PodSecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(NODE_UID),
            run_as_group: Some(NODE_UID),
            fs_group: Some(NODE_UID),
            fs_group_change_policy: Some("OnRootMismatch".into()),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        // Spread members over nodes where the cluster has several (a preference only, so
        // single-node clusters such as kind still schedule every member).
        affinity: Some(k8s_openapi::api::core::v1::Affinity {
            pod_anti_affinity: Some(PodAntiAffinity {
                preferred_during_scheduling_ignored_during_execution: Some(vec![
                    WeightedPodAffinityTerm {
                        weight: 100,
                        pod_affinity_term: PodAffinityTerm {
                            label_selector: Some(LabelSelector {
                                match_labels: Some(selector_labels(gg)),
                                ..Default::default()
                            }),
                            topology_key: "kubernetes.io/hostname".into(),
                            ..Default::default()
                        },
                    },
                ]),
                ..Default::default()
            }),
            ..Default::default()
        }),
        volumes: Some(vec![Volume {
            name: "tmp".into(),
            empty_dir: Some(EmptyDirVolumeSource {
                size_limit: Some(k8s_openapi::apimachinery::pkg::api::resource::Quantity(
                    "64Mi".into(),
                )),
                ..Default::default()
            }),
            ..Default::default()
        }]),
        ..Default::default()
    };
    let claim_templates = existing
        .and_then(|s| s.spec.volume_claim_templates.clone())
        .map(|templates| {
            // Keep what the API server stored, minus the server-filled parts.
            templates
                .into_iter()
                .map(|t| PersistentVolumeClaim {
                    metadata: ObjectMeta {
                        name: t.metadata.name,
                        labels: t.metadata.labels,
                        ..Default::default()
                    },
                    spec: t.spec,
                    status: None,
                })
                .collect()
        })
        .unwrap_or_else(|| vec![data_claim_template(gg)]);
    StatefulSet {
        metadata: meta(gg, statefulset_name(gg)),
        spec: StatefulSetSpec {
            replicas: Some(replicas),
            service_name: Some(headless_service_name(gg)),
            pod_management_policy: Some("Parallel".into()),
            selector: LabelSelector {
                match_labels: Some(selector_labels(gg)),
                ..Default::default()
            },
            update_strategy: Some(StatefulSetUpdateStrategy {
                type_: Some("RollingUpdate".into()),
                ..Default::default()
            }),
            // Logs outlive the pods, and deleting the GuessGame keeps them (delete the PVCs
            // by label to reset). Scaling down deletes the claim of the pod that goes: its
            // member was removed from the configuration first, and a later pod with the same
            // ordinal must start empty and sync from the leader, not from a stale log.
            persistent_volume_claim_retention_policy: Some(
                StatefulSetPersistentVolumeClaimRetentionPolicy {
                    when_deleted: Some("Retain".into()),
                    when_scaled: Some("Delete".into()),
                },
            ),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    annotations: Some(BTreeMap::from([(
                        CONFIG_HASH_ANNOTATION.to_string(),
                        config_hash(&data),
                    )])),
                    ..Default::default()
                }),
                spec: Some(pod_spec),
            },
            volume_claim_templates: Some(claim_templates),
            ..Default::default()
        },
        status: None,
    }
}

/// The `data` claim template, from `spec.storage`.
pub fn data_claim_template(gg: &GuessGame) -> PersistentVolumeClaim {
    PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some("data".into()),
            labels: Some(selector_labels(gg)),
            ..Default::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            storage_class_name: gg.spec.storage.storage_class_name.clone(),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".to_string(),
                    gg.spec.storage.size.clone(),
                )])),
                ..Default::default()
            }),
            ..Default::default()
        }),
        status: None,
    }
}

/// How the operator reaches a member for its status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MemberAddress {
    /// The pod IP when known, else the pod's DNS name in the headless Service.
    Auto,
    /// The pod's DNS name `<pod>.<name>-headless.<namespace>.svc[.<domain>]:<port>`.
    Dns,
    /// A template with `{pod}`, `{ordinal}`, `{name}`, `{service}`, `{namespace}`, `{port}`,
    /// `{podIP}`, e.g. `127.0.0.1:710{ordinal}` for nodes run on loopback in tests.
    Template(String),
}

impl std::str::FromStr for MemberAddress {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(MemberAddress::Auto),
            "dns" => Ok(MemberAddress::Dns),
            t if t.contains('{') => {
                // Every placeholder must be known: a typo would give every member a wrong
                // address.
                expand_member_template(t, |_| Some(String::new()))
                    .map_err(|e| format!("{t:?}: {e}"))?;
                Ok(MemberAddress::Template(t.to_string()))
            }
            other => Err(format!(
                "{other:?}: use auto, dns, or a template with {{pod}}, {{ordinal}}, {{podIP}}, ..."
            )),
        }
    }
}

impl MemberAddress {
    /// The `host:port` member `ordinal` has in the ensemble's configuration: what its node
    /// advertises (`PodSettings::address` in the node crate with the ConfigMap's settings),
    /// so never the pod IP, which changes when the pod is recreated. With a template (nodes
    /// given `GUESSGAME_PEER_TEMPLATE`, as in tests), the template; else the pod's DNS name
    /// `<pod>.<name>-headless.<namespace>.svc:<port>` (the ConfigMap sets no cluster
    /// domain).
    pub fn config_address(&self, gg: &GuessGame, ordinal: usize) -> String {
        match self {
            MemberAddress::Template(_) => self.resolve(gg, ordinal, None, None),
            MemberAddress::Auto | MemberAddress::Dns => {
                MemberAddress::Dns.resolve(gg, ordinal, None, None)
            }
        }
    }

    /// `host:port` the operator reaches member `ordinal` at, whose pod IP is `pod_ip` when
    /// known.
    pub fn resolve(
        &self,
        gg: &GuessGame,
        ordinal: usize,
        pod_ip: Option<&str>,
        cluster_domain: Option<&str>,
    ) -> String {
        let pod = pod_name(gg, ordinal);
        let ns = gg.namespace().unwrap_or_default();
        let svc = headless_service_name(gg);
        let dns = match cluster_domain {
            Some(d) => format!("{pod}.{svc}.{ns}.svc.{d}:{NODE_PORT}"),
            None => format!("{pod}.{svc}.{ns}.svc:{NODE_PORT}"),
        };
        match self {
            MemberAddress::Dns => dns,
            MemberAddress::Auto => match pod_ip.filter(|ip| !ip.is_empty()) {
                Some(ip) if ip.contains(':') => format!("[{ip}]:{NODE_PORT}"),
                Some(ip) => format!("{ip}:{NODE_PORT}"),
                None => dns,
            },
            MemberAddress::Template(t) => expand_member_template(t, |name| {
                Some(match name {
                    "pod" => pod.clone(),
                    "ordinal" => ordinal.to_string(),
                    "name" => gg.name_any(),
                    "service" => svc.clone(),
                    "namespace" => ns.clone(),
                    "port" => NODE_PORT.to_string(),
                    "podIP" => pod_ip.unwrap_or_default().to_string(),
                    _ => return None,
                })
            })
            // Checked when parsed; a template built in code with an unknown placeholder
            // keeps it as written.
            .unwrap_or_else(|_| t.clone()),
        }
    }
}

/// Expands a member address template (placeholders `{pod}`, `{ordinal}`, `{name}`,
/// `{service}`, `{namespace}`, `{port}`, `{podIP}`) with `value`.
fn expand_member_template(
    template: &str,
    value: impl Fn(&str) -> Option<String>,
) -> Result<String, String> {
    const KNOWN: [&str; 7] = [
        "pod",
        "ordinal",
        "name",
        "service",
        "namespace",
        "port",
        "podIP",
    ];
    use guessgame_core::rules::{expand_template, TemplateError};
    expand_template(template, |name| {
        KNOWN
            .contains(&name)
            .then(|| Ok(value(name).unwrap_or_default()))
    })
    .map_err(|e| match e {
        TemplateError::Unclosed => "unclosed '{'".to_string(),
        TemplateError::Unknown(name) => format!(
            "unknown placeholder {{{name}}} (known: {})",
            KNOWN.join(", ")
        ),
        TemplateError::NoValue(why) => why,
    })
}

#[cfg(test)]
mod tests;
