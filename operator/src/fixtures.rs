//! Test helpers: sample objects, a stand-in for the members, and a fake API server behind
//! kube's client (tower-test), as in controller-rs.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;
use guessgame_client::status::NodeStatus;
use guessgame_client::{ClientError, Configuration, ErrorKind, MemberInfo, Reconfig};
use guessgame_client::{MemberKind, Zxid};
use http::{Request, Response, StatusCode};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
    ContainerStatus, Pod, PodCondition, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::client::Body;
use kube::runtime::events::Reporter;
use kube::Client;
use serde_json::{json, Value};
use tower_test::mock;

use crate::controller::{Context, Settings};
use crate::crd::{GuessGame, GuessGameSpec};
use crate::prober::{Probe, Prober};
use crate::resources::INSTANCE_LABEL;
use crate::Metrics;

pub const NS: &str = "testns";

/// A GuessGame as read from the API server.
pub fn guessgame(name: &str, replicas: i32) -> GuessGame {
    let mut gg = GuessGame::new(
        name,
        GuessGameSpec {
            replicas,
            ..Default::default()
        },
    );
    gg.metadata.namespace = Some(NS.into());
    gg.metadata.uid = Some(format!("uid-{name}"));
    gg.metadata.generation = Some(1);
    gg
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PodState {
    /// Scheduled, not started.
    Pending,
    /// Running, not Ready.
    Running,
    /// Running and Ready.
    Ready,
    /// Running, its container waiting in CrashLoopBackOff.
    CrashLoop,
    /// Being deleted.
    Terminating,
    /// No pod (only meaningful to callers that skip the pod).
    Absent,
}

/// Member pod `<sts>-<ordinal>` in the given state.
pub fn pod(sts: &str, ordinal: usize, state: PodState) -> Pod {
    let name = format!("{sts}-{ordinal}");
    let running = !matches!(state, PodState::Pending);
    let container_state = match state {
        PodState::CrashLoop => ContainerState {
            waiting: Some(ContainerStateWaiting {
                reason: Some("CrashLoopBackOff".into()),
                message: Some("back-off 40s restarting failed container".into()),
            }),
            ..Default::default()
        },
        PodState::Pending => ContainerState {
            waiting: Some(ContainerStateWaiting {
                reason: Some("ContainerCreating".into()),
                message: None,
            }),
            ..Default::default()
        },
        _ => ContainerState {
            running: Some(ContainerStateRunning { started_at: None }),
            ..Default::default()
        },
    };
    Pod {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(NS.into()),
            uid: Some(format!("uid-{name}")),
            labels: Some([(INSTANCE_LABEL.to_string(), sts.to_string())].into()),
            deletion_timestamp: (state == PodState::Terminating).then(|| Time(Timestamp::now())),
            ..Default::default()
        },
        spec: None,
        status: Some(PodStatus {
            phase: Some(if running { "Running" } else { "Pending" }.into()),
            pod_ip: running.then(|| format!("10.0.0.{}", ordinal + 10)),
            conditions: Some(vec![PodCondition {
                type_: "Ready".into(),
                status: if state == PodState::Ready {
                    "True"
                } else {
                    "False"
                }
                .into(),
                ..Default::default()
            }]),
            container_statuses: Some(vec![ContainerStatus {
                name: "node".into(),
                image: "guessgame-node:0.1.0".into(),
                image_id: String::new(),
                ready: state == PodState::Ready,
                restart_count: if state == PodState::CrashLoop { 5 } else { 0 },
                state: Some(container_state),
                ..Default::default()
            }]),
            ..Default::default()
        }),
    }
}

/// Pod `<sts>-<ordinal>`, Pending, whose container waits for `reason` (`ErrImagePull`,
/// `ImagePullBackOff`, `ErrImageNeverPull`, `CreateContainerConfigError`, ...).
pub fn waiting_pod(sts: &str, ordinal: usize, reason: &str, message: &str) -> Pod {
    let mut p = pod(sts, ordinal, PodState::Pending);
    let status = p.status.as_mut().unwrap();
    status.pod_ip = Some(format!("10.0.0.{}", ordinal + 10));
    status.container_statuses.as_mut().unwrap()[0].state = Some(ContainerState {
        waiting: Some(ContainerStateWaiting {
            reason: Some(reason.into()),
            message: Some(message.into()),
        }),
        ..Default::default()
    });
    p
}

/// Pod `<sts>-<ordinal>` whose container the runtime could not start (`StartError`), now in
/// CrashLoopBackOff; the pod is Running (it ran before, or the phase says so).
pub fn start_error_pod(sts: &str, ordinal: usize) -> Pod {
    let mut p = pod(sts, ordinal, PodState::CrashLoop);
    let c = &mut p
        .status
        .as_mut()
        .unwrap()
        .container_statuses
        .as_mut()
        .unwrap()[0];
    c.last_state = Some(ContainerState {
        terminated: Some(ContainerStateTerminated {
            exit_code: 128,
            reason: Some("StartError".into()),
            message: Some(
                "failed to create containerd task: exec: \"guessgame-node\": executable file \
                 not found in $PATH"
                    .into(),
            ),
            ..Default::default()
        }),
        ..Default::default()
    });
    p
}

/// Pod `<sts>-<ordinal>`, Pending, not scheduled since `since` (the scheduler's `message`),
/// without container statuses (the kubelet never saw it).
pub fn unschedulable_pod(sts: &str, ordinal: usize, message: &str, since: Timestamp) -> Pod {
    let mut p = pod(sts, ordinal, PodState::Pending);
    let status = p.status.as_mut().unwrap();
    status.pod_ip = None;
    status.container_statuses = None;
    status.conditions = Some(vec![PodCondition {
        type_: "PodScheduled".into(),
        status: "False".into(),
        reason: Some("Unschedulable".into()),
        message: Some(message.into()),
        last_transition_time: Some(Time(since)),
        ..Default::default()
    }]);
    p
}

/// What the scheduler says about a pod whose claim asks for a StorageClass that does not
/// exist (the claim stays Pending).
pub const UNBOUND_CLAIM: &str = "0/1 nodes are available: pod has unbound immediate \
    PersistentVolumeClaims. preemption: 0/1 nodes are available: 1 Preemption is not helpful \
    for scheduling.";

/// A node's answer (`role == "unreachable"`: no answer).
pub fn node(id: &str, role: &str, leader: Option<&str>) -> NodeStatus {
    let answered = role != "unreachable";
    NodeStatus {
        id: id.into(),
        role: role.into(),
        epoch: if answered { 3 } else { 0 },
        accepted_epoch: if answered { 3 } else { 0 },
        last_zxid: if answered {
            Zxid::new(3, 7)
        } else {
            Zxid::default()
        },
        last_committed: if answered {
            Zxid::new(3, 7)
        } else {
            Zxid::default()
        },
        snapshot: Zxid::default(),
        log_start: Zxid::default(),
        first_zxid: Zxid::default(),
        storage_stalled_ms: None,
        leader: leader.filter(|_| answered).map(str::to_string),
        membership: if answered { "voter" } else { "unknown" }.into(),
        voters: if answered { 3 } else { 0 },
        address: format!("{id}:7100"),
        error: (!answered).then(|| "connection refused".into()),
    }
}

/// Members that always answer the same.
pub struct StaticProber(pub Probe);

impl StaticProber {
    /// `n` members, none answering.
    pub fn unreachable(n: usize) -> StaticProber {
        StaticProber(Probe {
            nodes: (0..n)
                .map(|i| node(&format!("demo-{i}"), "unreachable", None))
                .collect(),
            ..Default::default()
        })
    }
}

impl Prober for StaticProber {
    fn probe(&self, members: Vec<(String, String)>, _: Duration) -> BoxFuture<'static, Probe> {
        let mut probe = self.0.clone();
        probe.nodes.truncate(members.len());
        async move { probe }.boxed()
    }

    /// With a leader: every member asked about is a voter.
    fn configuration(
        &self,
        members: Vec<(String, String)>,
        _: Duration,
    ) -> BoxFuture<'static, Result<Configuration, String>> {
        let result = match &self.0.leader {
            Some(leader) => {
                let members: Vec<MemberInfo> = members
                    .into_iter()
                    .map(|(id, address)| MemberInfo {
                        id,
                        address,
                        kind: "voter".into(),
                    })
                    .collect();
                Ok(configuration(leader, members))
            }
            None => Err("no leader".into()),
        };
        async move { result }.boxed()
    }

    fn reconfig(
        &self,
        _: Vec<(String, String)>,
        _: Reconfig,
        _: Duration,
    ) -> BoxFuture<'static, Result<Configuration, ClientError>> {
        async { Err(ClientError::new(ErrorKind::Unavailable, "static members")) }.boxed()
    }
}

fn configuration(leader: &str, members: Vec<MemberInfo>) -> Configuration {
    Configuration {
        node: leader.into(),
        leader: Some(leader.into()),
        config: Zxid::new(3, 1),
        members: members.clone(),
        committed_config: Zxid::new(3, 1),
        committed_members: members,
    }
}

/// What [`EnsembleProber`] simulates: a configuration that changes with `reconfig`.
#[derive(Debug, Default)]
pub struct Ensemble {
    /// The committed configuration (`demo-0` leads while it is in it).
    pub config: Vec<MemberInfo>,
    /// Pods whose node does not answer.
    pub down: Vec<String>,
    /// The changes asked for, in order.
    pub changes: Vec<Reconfig>,
    /// The answer to the next change instead of making it.
    pub fail_next: Option<ClientError>,
}

impl Ensemble {
    /// `demo-0 .. demo-<n-1>` voters, and learners for `learners`.
    pub fn of(n: usize, learners: &[usize]) -> Ensemble {
        let member = |i: usize, kind: &str| MemberInfo {
            id: format!("demo-{i}"),
            address: format!("demo-{i}.demo-headless.{NS}.svc:7100"),
            kind: kind.into(),
        };
        let mut config: Vec<MemberInfo> = (0..n).map(|i| member(i, "voter")).collect();
        config.extend(learners.iter().map(|i| member(*i, "learner")));
        Ensemble {
            config,
            ..Default::default()
        }
    }
    pub fn ids(&self) -> Vec<String> {
        self.config
            .iter()
            .map(|m| format!("{}:{}", m.id, m.kind))
            .collect()
    }
}

/// Members that follow a simulated configuration: voters follow `demo-0`, other pods answer
/// `looking` with no membership; membership changes change the configuration.
#[derive(Clone, Default)]
pub struct EnsembleProber(pub Arc<Mutex<Ensemble>>);

impl EnsembleProber {
    pub fn new(ensemble: Ensemble) -> EnsembleProber {
        EnsembleProber(Arc::new(Mutex::new(ensemble)))
    }
    pub fn state(&self) -> std::sync::MutexGuard<'_, Ensemble> {
        self.0.lock().unwrap()
    }
}

impl Prober for EnsembleProber {
    fn probe(&self, members: Vec<(String, String)>, _: Duration) -> BoxFuture<'static, Probe> {
        let e = self.state();
        let leads = e.config.iter().any(|m| m.id == "demo-0");
        let nodes = members
            .iter()
            .map(|(id, _)| {
                if e.down.contains(id) {
                    return node(id, "unreachable", None);
                }
                match e.config.iter().find(|m| &m.id == id) {
                    Some(m) => {
                        let role = if id == "demo-0" { "leader" } else { "follower" };
                        let mut n = node(id, role, leads.then_some("demo-0"));
                        n.membership = m.kind.clone().into();
                        n.voters = e
                            .config
                            .iter()
                            .filter(|m| m.kind == MemberKind::Voter)
                            .count() as u32;
                        n
                    }
                    None => {
                        let mut n = node(id, "looking", None);
                        n.membership = "none".into();
                        n
                    }
                }
            })
            .collect();
        let probe = Probe {
            nodes,
            leader: (leads && !e.down.iter().any(|d| d == "demo-0")).then(|| "demo-0".into()),
            round: Some(1),
            target: Some(7),
        };
        async move { probe }.boxed()
    }

    fn configuration(
        &self,
        _: Vec<(String, String)>,
        _: Duration,
    ) -> BoxFuture<'static, Result<Configuration, String>> {
        let c = configuration("demo-0", self.state().config.clone());
        async move { Ok(c) }.boxed()
    }

    fn reconfig(
        &self,
        _: Vec<(String, String)>,
        change: Reconfig,
        _: Duration,
    ) -> BoxFuture<'static, Result<Configuration, ClientError>> {
        let mut e = self.state();
        e.changes.push(change.clone());
        let result = match e.fail_next.take() {
            Some(err) => Err(err),
            None => {
                match change {
                    Reconfig::Add { id, address } => {
                        e.config.retain(|m| m.id != id);
                        e.config.push(MemberInfo {
                            id,
                            address,
                            kind: "voter".into(),
                        });
                    }
                    Reconfig::Remove { id } => e.config.retain(|m| m.id != id),
                }
                Ok(configuration("demo-0", e.config.clone()))
            }
        };
        async move { result }.boxed()
    }
}

#[derive(Clone, Debug)]
struct Recorded {
    method: String,
    path: String,
    query: String,
    body: Value,
}

struct World {
    gg: GuessGame,
    statefulset: Option<StatefulSet>,
    pods: Vec<Pod>,
    log: Vec<Recorded>,
    fail_patches_of: Option<String>,
    /// Applied StatefulSets replace `statefulset` (what the next GET returns).
    track_statefulset: bool,
}

/// A fake API server: answers kube's requests from a small in-memory world and records them.
#[derive(Clone)]
pub struct FakeApi(Arc<Mutex<World>>);

fn json_response(code: StatusCode, body: &Value) -> Response<Body> {
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(Body::from(serde_json::to_vec(body).unwrap()))
        .unwrap()
}

fn status_error(code: u16, reason: &str) -> Response<Body> {
    json_response(
        StatusCode::from_u16(code).unwrap(),
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": reason, "reason": reason, "code": code}),
    )
}

impl FakeApi {
    /// A controller context whose client talks to a new fake API server.
    pub fn context(
        gg: GuessGame,
        statefulset: Option<StatefulSet>,
        pods: Vec<Pod>,
        prober: impl Prober,
    ) -> (Arc<Context>, FakeApi) {
        let (service, mut handle) = mock::pair::<Request<Body>, Response<Body>>();
        let api = FakeApi(Arc::new(Mutex::new(World {
            gg,
            statefulset,
            pods,
            log: Vec::new(),
            fail_patches_of: None,
            track_statefulset: false,
        })));
        let server = api.clone();
        tokio::spawn(async move {
            while let Some((request, send)) = handle.next_request().await {
                let response = server.answer(request).await;
                send.send_response(response);
            }
        });
        let client = Client::new(service, NS);
        let ctx = Context::new(
            client,
            Arc::new(Metrics::default()),
            Arc::default(),
            Settings::default(),
            Arc::new(prober),
            Reporter {
                controller: "guessgame-operator".into(),
                instance: None,
            },
        );
        (Arc::new(ctx), api)
    }

    async fn answer(&self, request: Request<Body>) -> Response<Body> {
        let method = request.method().to_string();
        let path = request.uri().path().to_string();
        let query = request.uri().query().unwrap_or_default().to_string();
        let bytes = request.into_body().collect_bytes().await.unwrap();
        let body: Value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or(Value::Null)
        };
        let mut world = self.0.lock().unwrap();
        world.log.push(Recorded {
            method: method.clone(),
            path: path.clone(),
            query,
            body: body.clone(),
        });
        let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let resource = segments
            .iter()
            .rev()
            .find(|s| s.ends_with('s') && **s != "status");
        let name = segments.last().copied().unwrap_or_default();
        match (method.as_str(), segments.as_slice()) {
            ("PATCH", _)
                if world
                    .fail_patches_of
                    .as_ref()
                    .is_some_and(|r| path.contains(&format!("/{r}/"))) =>
            {
                status_error(500, "InternalError")
            }
            ("GET", [.., "statefulsets", _]) => match &world.statefulset {
                Some(s) => json_response(StatusCode::OK, &serde_json::to_value(s).unwrap()),
                None => status_error(404, "NotFound"),
            },
            ("GET", [.., "pods"]) => json_response(
                StatusCode::OK,
                &json!({"apiVersion": "v1", "kind": "PodList", "metadata": {"resourceVersion": "1"},
                        "items": world.pods}),
            ),
            ("DELETE", [.., "pods", pod]) => {
                let pod = pod.to_string();
                match world
                    .pods
                    .iter_mut()
                    .find(|p| p.metadata.name.as_deref() == Some(&pod))
                {
                    Some(p) => {
                        p.metadata.deletion_timestamp = Some(Time(Timestamp::now()));
                        json_response(StatusCode::OK, &serde_json::to_value(&*p).unwrap())
                    }
                    None => status_error(404, "NotFound"),
                }
            }
            ("PATCH", [.., "guessgames", _, "status"]) => {
                let mut gg = serde_json::to_value(&world.gg).unwrap();
                gg["status"] = body["status"].clone();
                json_response(StatusCode::OK, &gg)
            }
            ("PATCH", [.., "statefulsets", _]) if world.track_statefulset => {
                let sts: StatefulSet = serde_json::from_value(body.clone()).unwrap();
                world.statefulset = Some(sts);
                json_response(StatusCode::OK, &body)
            }
            ("PATCH", _) | ("POST", [.., "events"]) => json_response(StatusCode::OK, &body),
            _ => {
                let _ = (resource, name);
                status_error(404, "NotFound")
            }
        }
    }

    fn log(&self) -> Vec<Recorded> {
        self.0.lock().unwrap().log.clone()
    }

    /// Server-side applies of owned objects, in order: (kind, name, body).
    pub fn applied(&self) -> Vec<(String, String, Value)> {
        self.log()
            .into_iter()
            .filter(|r| {
                r.method == "PATCH" && !r.path.ends_with("/status") && !r.path.contains("/events")
            })
            .map(|r| {
                let kind = r.body["kind"].as_str().unwrap_or_default().to_string();
                let name = r.path.rsplit('/').next().unwrap_or_default().to_string();
                (kind, name, r.body)
            })
            .collect()
    }

    /// (path, query) of every PATCH.
    pub fn patch_queries(&self) -> Vec<(String, String)> {
        self.log()
            .into_iter()
            .filter(|r| r.method == "PATCH" && !r.path.contains("/events"))
            .map(|r| (r.path, r.query))
            .collect()
    }

    /// The status of the last status patch.
    pub fn last_status(&self) -> Option<Value> {
        self.status_patches().last().map(|b| {
            assert_eq!(
                b["apiVersion"], "guessgame.dev/v1alpha1",
                "SSA needs apiVersion"
            );
            assert_eq!(b["kind"], "GuessGame", "SSA needs kind");
            b["status"].clone()
        })
    }

    pub fn status_patches(&self) -> Vec<Value> {
        self.log()
            .into_iter()
            .filter(|r| r.method == "PATCH" && r.path.ends_with("/guessgames/demo/status"))
            .map(|r| r.body)
            .collect()
    }

    pub fn status_writes(&self) -> usize {
        self.status_patches().len()
    }

    /// Names of deleted pods.
    pub fn deleted(&self) -> Vec<String> {
        self.log()
            .into_iter()
            .filter(|r| r.method == "DELETE")
            .map(|r| r.path.rsplit('/').next().unwrap_or_default().to_string())
            .collect()
    }

    /// Created events.
    pub fn events(&self) -> Vec<Value> {
        self.log()
            .into_iter()
            .filter(|r| r.method == "POST" && r.path.ends_with("/events"))
            .map(|r| r.body)
            .collect()
    }

    /// Applied StatefulSets are what the next GET returns (as the API server does).
    pub fn track_statefulset(&self) {
        self.0.lock().unwrap().track_statefulset = true;
    }

    /// The StatefulSet's replicas, as last applied.
    pub fn statefulset_replicas(&self) -> Option<i32> {
        self.0.lock().unwrap().statefulset.as_ref()?.spec.replicas
    }

    /// Adds (or replaces) a pod, as the StatefulSet controller and the kubelet would.
    pub fn put_pod(&self, pod: Pod) {
        let mut world = self.0.lock().unwrap();
        world.pods.retain(|p| p.metadata.name != pod.metadata.name);
        world.pods.push(pod);
    }

    /// Removes a pod.
    pub fn remove_pod(&self, name: &str) {
        let mut world = self.0.lock().unwrap();
        world
            .pods
            .retain(|p| p.metadata.name.as_deref() != Some(name));
    }

    /// Answer server errors to PATCHes of this resource (plural).
    pub fn fail_patches_of(&self, resource: &str) {
        self.0.lock().unwrap().fail_patches_of = Some(resource.into());
    }
}
