//! The GuessGame controller: reconcile = apply the owned objects, look at the members and the
//! ensemble's committed configuration, take the next scaling step or restart a failed member,
//! write the status.

use std::collections::HashMap;
use std::fmt::Debug;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use guessgame_client::status::{ensemble_status, NodeStatus};
use guessgame_client::{ClientError, Configuration, Reconfig};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Service};
use k8s_openapi::api::events::v1::Event as K8sEvent;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use k8s_openapi::NamespaceResourceScope;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{EventType, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use prometheus_client::registry::Registry;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::RwLock;
use tracing::{debug, info, warn};

use crate::crd::{
    condition, GuessGame, GuessGameStatus, MemberStatus, ScalingStatus, API_VERSION, KIND,
};
use crate::policy::{
    condition_values, decide_restart, decide_scale, is_true, problem_note, replicas_refusal,
    scaling_status, to_conditions, valid_size, ConfigMember, MemberView, Observation, Restart,
    ScaleInput, ScaleStep,
};
use crate::resources::{self, MemberAddress, FIELD_MANAGER, INSTANCE_LABEL};
use crate::{Error, Metrics, Result};

/// How the operator behaves (command-line flags of `guessgame-operator`).
#[derive(Clone, Debug)]
pub struct Settings {
    /// Reconcile every GuessGame at least this often (status freshness).
    pub requeue: Duration,
    /// A Running member that has not answered for this long is restarted; also the minimum
    /// time between two restarts of one GuessGame.
    pub unresponsive_after: Duration,
    /// Budget of one member status query.
    pub probe_timeout: Duration,
    pub member_address: MemberAddress,
    /// Appended to member DNS names as `.svc.<domain>` (default: none, `.svc`).
    pub cluster_domain: Option<String>,
    /// Watch only this namespace (default: all).
    pub namespace: Option<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            requeue: Duration::from_secs(5),
            unresponsive_after: Duration::from_secs(60),
            probe_timeout: Duration::from_secs(1),
            member_address: MemberAddress::Auto,
            cluster_domain: None,
            namespace: None,
        }
    }
}

/// What the members answered.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Probe {
    /// One answer per member, in the order asked (`role == "unreachable"`: no answer).
    pub nodes: Vec<NodeStatus>,
    /// The leader a majority follows.
    pub leader: Option<String>,
    /// The open round and its target, read from the leader.
    pub round: Option<u64>,
    pub target: Option<u32>,
}

/// Talks to the members (`(node id, host:port)` pairs): their status, the ensemble's
/// configuration, membership changes. A trait so tests can stand in for real nodes.
pub trait Prober: Send + Sync + 'static {
    fn probe(&self, members: Vec<(String, String)>, timeout: Duration)
        -> BoxFuture<'static, Probe>;
    /// The configuration as the leader knows it (`Err`: no leader answered).
    fn configuration(
        &self,
        members: Vec<(String, String)>,
        timeout: Duration,
    ) -> BoxFuture<'static, Result<Configuration, String>>;
    /// One membership change, through the leader; answers once it has committed.
    fn reconfig(
        &self,
        members: Vec<(String, String)>,
        change: Reconfig,
        timeout: Duration,
    ) -> BoxFuture<'static, Result<Configuration, ClientError>>;
}

/// The real thing: gRPC, with the client library.
pub struct GrpcProber;

impl Prober for GrpcProber {
    fn probe(
        &self,
        members: Vec<(String, String)>,
        timeout: Duration,
    ) -> BoxFuture<'static, Probe> {
        async move {
            let ensemble = ensemble_status(&members, timeout).await;
            let mut probe = Probe {
                nodes: ensemble.nodes,
                leader: ensemble.leader,
                ..Default::default()
            };
            if let Some((id, addr)) = probe
                .leader
                .as_ref()
                .and_then(|l| members.iter().find(|(id, _)| id == l))
            {
                match guessgame_client::Client::new(&[(id.clone(), addr.clone())], timeout) {
                    Ok(mut client) => match client.read(false).await {
                        Ok(game) => {
                            probe.round = Some(game.round);
                            probe.target = game.target;
                        }
                        Err(e) => debug!(leader = %id, "reading the game state: {e}"),
                    },
                    Err(e) => debug!(leader = %id, "client for the leader: {e}"),
                }
            }
            probe
        }
        .boxed()
    }

    fn configuration(
        &self,
        members: Vec<(String, String)>,
        timeout: Duration,
    ) -> BoxFuture<'static, Result<Configuration, String>> {
        async move {
            let mut client =
                guessgame_client::Client::new(&members, timeout).map_err(|e| e.message)?;
            let c = client.configuration().await.map_err(|e| e.message)?;
            match &c.leader {
                Some(l) if *l == c.node => Ok(c),
                Some(l) => Err(format!("{} follows {l}, which did not answer", c.node)),
                None => Err(format!("{} knows no leader", c.node)),
            }
        }
        .boxed()
    }

    fn reconfig(
        &self,
        members: Vec<(String, String)>,
        change: Reconfig,
        timeout: Duration,
    ) -> BoxFuture<'static, Result<Configuration, ClientError>> {
        async move {
            guessgame_client::Client::new(&members, timeout)?
                .reconfig(change)
                .await
        }
        .boxed()
    }
}

/// Shown by the web server.
#[derive(Clone, Debug, Serialize)]
pub struct Diagnostics {
    pub last_event: Timestamp,
    #[serde(skip)]
    pub reporter: Reporter,
}

impl Default for Diagnostics {
    fn default() -> Self {
        Diagnostics {
            last_event: Timestamp::now(),
            reporter: Reporter {
                controller: FIELD_MANAGER.into(),
                instance: std::env::var("POD_NAME").ok(),
            },
        }
    }
}

/// What the operator remembers of one GuessGame between reconciliations.
#[derive(Clone, Debug, Default)]
struct Memory {
    /// The last status written (the watched object may lag behind it).
    status: Option<GuessGameStatus>,
    /// Consecutive failed reconciliations (for the back-off).
    failures: u32,
}

/// Shared by the reconciler and the error policy.
pub struct Context {
    pub client: Client,
    pub metrics: Arc<Metrics>,
    pub diagnostics: Arc<RwLock<Diagnostics>>,
    pub settings: Settings,
    pub prober: Arc<dyn Prober>,
    reporter: Reporter,
    memory: Mutex<HashMap<(String, String), Memory>>,
}

impl Context {
    pub fn new(
        client: Client,
        metrics: Arc<Metrics>,
        diagnostics: Arc<RwLock<Diagnostics>>,
        settings: Settings,
        prober: Arc<dyn Prober>,
        reporter: Reporter,
    ) -> Context {
        Context {
            reporter,
            client,
            metrics,
            diagnostics,
            settings,
            prober,
            memory: Mutex::default(),
        }
    }

    fn memory(&self, key: &(String, String)) -> Memory {
        self.memory
            .lock()
            .expect("memory lock")
            .get(key)
            .cloned()
            .unwrap_or_default()
    }

    fn remember(&self, key: (String, String), f: impl FnOnce(&mut Memory)) {
        f(self
            .memory
            .lock()
            .expect("memory lock")
            .entry(key)
            .or_default());
    }

    /// Writes an `events.k8s.io/v1` Event about `gg`. Each call creates a new Event: kube's
    /// `Recorder` would fold a second event of the same reason into a series of the first,
    /// keeping the first note ("demo-2 leads") for a different leader.
    async fn publish(
        &self,
        gg: &GuessGame,
        type_: EventType,
        reason: &str,
        action: &str,
        note: String,
    ) {
        let now = Timestamp::now();
        let ns = gg.namespace().unwrap_or_default();
        let event = K8sEvent {
            metadata: ObjectMeta {
                name: Some(format!("{}.{:x}", gg.name_any(), now.as_nanosecond())),
                namespace: Some(ns.clone()),
                ..Default::default()
            },
            event_time: Some(MicroTime(now)),
            type_: Some(
                match type_ {
                    EventType::Normal => "Normal",
                    EventType::Warning => "Warning",
                }
                .into(),
            ),
            reason: Some(reason.into()),
            action: Some(action.into()),
            // The API server limits notes to 1 kB.
            note: Some(note.chars().take(1000).collect()),
            regarding: Some(gg.object_ref(&())),
            reporting_controller: Some(self.reporter.controller.clone()),
            reporting_instance: Some(
                self.reporter
                    .instance
                    .clone()
                    .unwrap_or_else(|| self.reporter.controller.clone()),
            ),
            ..Default::default()
        };
        let events: Api<K8sEvent> = Api::namespaced(self.client.clone(), &ns);
        // An event that cannot be written is not worth failing the reconciliation for.
        if let Err(e) = events.create(&PostParams::default(), &event).await {
            warn!(guessgame = %gg.name_any(), %reason, "cannot publish event: {e}");
        }
    }
}

/// Server-side apply of an owned object, as the operator's field manager.
async fn apply<K>(client: &Client, ns: &str, obj: &K) -> Result<K>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + Debug
        + DeserializeOwned
        + Serialize,
{
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    let name = obj.meta().name.clone().unwrap_or_default();
    Ok(api
        .patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(obj),
        )
        .await?)
}

/// Server-side apply of the whole status (a partial one would drop the fields it omits).
async fn write_status(
    client: &Client,
    ns: &str,
    gg: &GuessGame,
    status: &GuessGameStatus,
) -> Result<()> {
    let api: Api<GuessGame> = Api::namespaced(client.clone(), ns);
    let patch = Patch::Apply(serde_json::json!({
        "apiVersion": API_VERSION,
        "kind": KIND,
        "status": status,
    }));
    api.patch_status(
        &gg.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &patch,
    )
    .await?;
    Ok(())
}

/// The size the ensemble was created with (`GUESSGAME_REPLICAS`, only the bootstrap
/// configuration): as recorded in the status, else in the ConfigMap, else (a status written
/// by an operator that did not scale) the recorded size, else the StatefulSet's replicas,
/// else the spec (creation).
pub fn bootstrap_size(
    recorded: Option<i32>,
    config_map: Option<&ConfigMap>,
    old_recorded: i32,
    statefulset: Option<&StatefulSet>,
    spec: i32,
) -> i32 {
    let valid = |r: &i32| valid_size(*r);
    recorded
        .filter(valid)
        .or_else(|| {
            config_map
                .and_then(|c| c.data.as_ref()?.get("GUESSGAME_REPLICAS")?.parse().ok())
                .filter(valid)
        })
        .or(Some(old_recorded).filter(valid))
        .or_else(|| statefulset.and_then(|s| s.spec.replicas).filter(valid))
        .unwrap_or(spec)
}

fn rolled_out(sts: Option<&StatefulSet>, replicas: i32) -> bool {
    let Some(status) = sts.and_then(|s| s.status.as_ref()) else {
        return false;
    };
    status.updated_replicas.unwrap_or(0) >= replicas
        && status.current_revision.is_some()
        && status.current_revision == status.update_revision
}

/// The reconciler.
pub async fn reconcile(gg: Arc<GuessGame>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.count_and_measure();
    ctx.diagnostics.write().await.last_event = Timestamp::now();
    let ns = gg
        .namespace()
        .ok_or_else(|| Error::Invalid("a GuessGame is namespaced".into()))?;
    let name = gg.name_any();
    if gg.meta().deletion_timestamp.is_some() {
        // The owned objects go with it (owner references): nothing to do.
        return Ok(Action::await_change());
    }
    let key = (ns.clone(), name.clone());
    let action = reconcile_inner(&gg, &ctx, &ns, &key).await?;
    ctx.remember(key, |m| m.failures = 0);
    Ok(action)
}

async fn reconcile_inner(
    gg: &GuessGame,
    ctx: &Context,
    ns: &str,
    key: &(String, String),
) -> Result<Action> {
    let client = &ctx.client;
    let settings = &ctx.settings;
    // Whole seconds: what the API server stores, so unchanged statuses compare equal.
    let now = Timestamp::from_second(Timestamp::now().as_second()).expect("now is in range");
    let previous = ctx
        .memory(key)
        .status
        .or_else(|| gg.status.clone())
        .unwrap_or_default();

    let requested = gg.spec.replicas;
    let statefulsets: Api<StatefulSet> = Api::namespaced(client.clone(), ns);
    let existing = statefulsets
        .get_opt(&resources::statefulset_name(gg))
        .await?;
    let existing_cm = match previous.bootstrap_replicas {
        Some(_) => None,
        None => {
            Api::<ConfigMap>::namespaced(client.clone(), ns)
                .get_opt(&resources::config_map_name(gg))
                .await?
        }
    };
    let bootstrap = bootstrap_size(
        previous.bootstrap_replicas,
        existing_cm.as_ref(),
        previous.replicas,
        existing.as_ref(),
        requested,
    );
    if existing.is_none() {
        if let Some(refused) = replicas_refusal(bootstrap, bootstrap) {
            return Err(Error::Invalid(refused));
        }
    }
    // The pods: as many as the StatefulSet has (the scaling steps change that).
    let mut sts_replicas = existing
        .as_ref()
        .and_then(|s| s.spec.replicas)
        .unwrap_or(bootstrap);

    // The owned objects, every time (server-side apply: a no-op when nothing changed).
    apply(client, ns, &resources::config_map(gg, bootstrap)).await?;
    apply(client, ns, &resources::headless_service(gg)).await?;
    apply(client, ns, &resources::client_service(gg)).await?;

    // The members: their pods, and what they answer.
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let pod_list = pods
        .list(&ListParams::default().labels(&resources::pod_selector(gg)))
        .await?
        .items;
    let count = sts_replicas as usize;
    let pod_of = |ordinal: usize| {
        let name = resources::pod_name(gg, ordinal);
        pod_list
            .iter()
            .find(|p| p.metadata.name.as_deref() == Some(&name))
    };
    let targets: Vec<(String, String)> = (0..count)
        .map(|i| {
            let ip = pod_of(i).and_then(|p| p.status.as_ref()?.pod_ip.as_deref());
            (
                resources::pod_name(gg, i),
                settings
                    .member_address
                    .resolve(gg, i, ip, settings.cluster_domain.as_deref()),
            )
        })
        .collect();
    let probe = ctx
        .prober
        .probe(targets.clone(), settings.probe_timeout)
        .await;
    let mut views: Vec<MemberView> = (0..count)
        .map(|i| {
            let pod = resources::pod_name(gg, i);
            let before = previous.members.iter().find(|m| m.pod == pod);
            MemberView::observe(i, pod, pod_of(i), probe.nodes.get(i), before, now)
        })
        .collect();
    // The leader first: it answers for the configuration and makes the changes.
    let mut to_leader = targets.clone();
    if let Some(l) = &probe.leader {
        to_leader.sort_by_key(|(id, _)| id != l);
    }

    // The committed configuration, as the leader knows it: what the scaling steps follow.
    let sts_name = resources::statefulset_name(gg);
    let mut committed: Option<Vec<ConfigMember>> = None;
    let mut waiting_for = None;
    if existing.is_some() && probe.leader.is_some() {
        match ctx
            .prober
            .configuration(to_leader.clone(), settings.probe_timeout * 2)
            .await
        {
            Ok(c) => committed = Some(config_members(&c, &sts_name)),
            Err(e) => {
                debug!(guessgame = %gg.name_any(), "no configuration: {e}");
                waiting_for = Some(format!("the leader's configuration ({e})"));
            }
        }
    }
    let voters_of = |c: &[ConfigMember]| c.iter().filter(|m| m.voter).count() as i32;
    let mut voters = match &committed {
        Some(c) => voters_of(c),
        None if previous.replicas > 0 => previous.replicas,
        None => sts_replicas,
    };
    let refused = replicas_refusal(requested, voters);
    let desired = if refused.is_some() { voters } else { requested } as usize;

    // Scaling: at most one step per pass.
    let answering: Vec<usize> = views
        .iter()
        .filter(|v| v.answering())
        .map(|v| v.ordinal)
        .collect();
    let decide = |c: &[ConfigMember], sts: i32| {
        decide_scale(&ScaleInput {
            desired,
            statefulset: sts as usize,
            committed: c,
            answering: &answering,
        })
    };
    let pod = |o: usize| resources::pod_name(gg, o);
    let mut step = committed.as_deref().map(|c| decide(c, sts_replicas));
    let mut failed: Option<String> = None;
    let mut changed_membership = false;
    // A scaling under way towards another size is a new one.
    let ongoing = previous.scaling.clone().filter(|s| s.to == desired as i32);
    let voters_before = voters;
    if let Some(first_step) = step.clone().filter(|s| *s != ScaleStep::Steady) {
        let first = &first_step;
        if ongoing.is_none() {
            let first = scaling_status(first, None, voters as usize, desired, pod)
                .map(|s| s.step)
                .unwrap_or_default();
            let note = if voters == desired as i32 {
                format!("the StatefulSet does not match the {voters} voters (first step: {first})")
            } else {
                format!(
                    "scaling from {voters} to {desired} voters, one member at a time (first \
                     step: {first})"
                )
            };
            info!(guessgame = %gg.name_any(), "{note}");
            // A first step that changes the membership is recorded before it is taken: an
            // operator killed right after it commits then resumes this scaling (same
            // `from`, no second ScalingStarted) instead of starting a new one.
            if matches!(first_step, ScaleStep::Add { .. } | ScaleStep::Remove { .. }) {
                let mut early = gg.status.clone().unwrap_or_default();
                early.scaling = Some(ScalingStatus {
                    from: voters,
                    to: desired as i32,
                    step: first.clone(),
                    message: note.clone(),
                });
                write_status(client, ns, gg, &early).await?;
            }
            ctx.publish(gg, EventType::Normal, "ScalingStarted", "Scale", note)
                .await;
        }
    }
    match step.clone() {
        Some(ScaleStep::Resize { replicas }) => {
            sts_replicas = replicas as i32;
        }
        Some(ScaleStep::Add { ordinal }) | Some(ScaleStep::Remove { ordinal }) => {
            let id = pod(ordinal);
            let (change, verb) = match step {
                Some(ScaleStep::Add { .. }) => (
                    Reconfig::Add {
                        id: id.clone(),
                        address: settings.member_address.config_address(gg, ordinal),
                    },
                    "adding",
                ),
                _ => (Reconfig::Remove { id: id.clone() }, "removing"),
            };
            info!(guessgame = %gg.name_any(), ?change, "membership change");
            let timeout = Duration::from_millis(
                (gg.spec.election_timeout_ms.max(1) as u64).saturating_mul(20),
            )
            .max(Duration::from_secs(30));
            match ctx
                .prober
                .reconfig(to_leader.clone(), change.clone(), timeout)
                .await
            {
                Ok(c) => {
                    let members = config_members(&c, &sts_name);
                    voters = voters_of(&members);
                    let (reason, note) = match change {
                        Reconfig::Add { address, .. } => (
                            "MemberAdded",
                            format!(
                                "{id} ({address}) added to the configuration: a voter \
                                 ({voters} voters)"
                            ),
                        ),
                        Reconfig::Remove { .. } => (
                            "MemberRemoved",
                            format!(
                                "{id} removed from the configuration ({voters} voters); its pod \
                                 goes next"
                            ),
                        ),
                    };
                    info!(guessgame = %gg.name_any(), "{note}");
                    ctx.publish(gg, EventType::Normal, reason, "Reconfigure", note)
                        .await;
                    // What the status shows: the step after this one.
                    step = Some(decide(&members, sts_replicas));
                    committed = Some(members);
                    changed_membership = true;
                }
                Err(e) => {
                    let text = format!("{verb} {id}: {} (trying again)", e.message);
                    warn!(guessgame = %gg.name_any(), kind = ?e.kind, "{text}");
                    let busy = e.kind == guessgame_client::ErrorKind::ReconfigBusy;
                    let reported = previous
                        .scaling
                        .as_ref()
                        .is_some_and(|s| s.message.ends_with(&text));
                    if !busy && !reported {
                        ctx.publish(
                            gg,
                            EventType::Warning,
                            "ReconfigFailed",
                            "Reconfigure",
                            text.clone(),
                        )
                        .await;
                    }
                    failed = Some(text);
                }
            }
        }
        _ => {}
    }

    apply(
        client,
        ns,
        &resources::statefulset(gg, bootstrap, sts_replicas, existing.as_ref()),
    )
    .await?;
    let before = existing.as_ref().and_then(|s| s.spec.replicas);
    if before.is_some_and(|b| b != sts_replicas) {
        let b = before.unwrap_or_default();
        let note = if sts_replicas > b {
            format!(
                "StatefulSet {sts_name}: {b} -> {sts_replicas} replicas (pod {} for the next \
                 member)",
                pod(sts_replicas as usize - 1)
            )
        } else {
            format!(
                "StatefulSet {sts_name}: {b} -> {sts_replicas} replicas (pods not in the \
                 configuration go)"
            )
        };
        info!(guessgame = %gg.name_any(), "{note}");
        ctx.publish(gg, EventType::Normal, "StatefulSetResized", "Scale", note)
            .await;
        step = committed.as_deref().map(|c| decide(c, sts_replicas));
    }
    // At most the voters that may be lost while a quorum of them stays.
    apply(client, ns, &resources::pod_disruption_budget(gg, voters)).await?;

    let scaling = match (&committed, &step) {
        (Some(_), Some(step)) => {
            scaling_status(step, ongoing.as_ref(), voters as usize, desired, pod).map(|mut s| {
                if ongoing.is_none() {
                    s.from = voters_before;
                }
                if let Some(failed) = &failed {
                    s.message = format!("{voters} of {desired} voters; {failed}");
                }
                s
            })
        }
        _ if previous.scaling.is_some() || (previous.replicas > 0 && voters != desired as i32) => {
            Some(ScalingStatus {
                from: previous.scaling.as_ref().map_or(voters, |s| s.from),
                to: desired as i32,
                step: "wait leader".into(),
                message: format!(
                    "{voters} of {desired} voters; waiting for {}",
                    waiting_for
                        .clone()
                        .unwrap_or_else(|| "a leader (the committed configuration)".into())
                ),
            })
        }
        _ => None,
    };

    // Restart a failed member, if that is safe (not in a pass that changed the membership:
    // one disruption at a time).
    let mut restarts = previous.restarts;
    let mut last_restart = previous.last_restart_time.clone();
    let mut held = None;
    let restart = if changed_membership {
        Restart::Nothing
    } else {
        decide_restart(
            &views,
            voters,
            now,
            settings.unresponsive_after,
            last_restart.as_ref().map(|t| t.0),
        )
    };
    match restart {
        Restart::Nothing => {}
        Restart::Hold { pod, reason } => {
            debug!(guessgame = %gg.name_any(), %pod, "restart held: {reason}");
            held = Some(format!("restart of {pod} held: {reason}"));
        }
        Restart::Delete { pod, reason } => {
            let uid = pod_of_name(&pod_list, &pod).and_then(|p| p.metadata.uid.clone());
            let params = DeleteParams {
                preconditions: Some(Preconditions {
                    uid,
                    resource_version: None,
                }),
                ..Default::default()
            };
            match pods.delete(&pod, &params).await {
                Ok(_) => {
                    restarts += 1;
                    last_restart = Some(Time(now));
                    ctx.metrics.restarts.inc();
                    if let Some(v) = views.iter_mut().find(|v| v.pod == pod) {
                        v.terminating = true;
                        v.restarted_at = Some(now);
                    }
                    info!(guessgame = %gg.name_any(), %pod, "restarted member: {reason}");
                    ctx.publish(
                        gg,
                        EventType::Warning,
                        "MemberRestarted",
                        "RestartMember",
                        format!("deleted pod {pod} ({reason}); the StatefulSet recreates it"),
                    )
                    .await;
                }
                // Gone already, or replaced meanwhile: nothing to restart.
                Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
                Err(e) => return Err(e.into()),
            }
        }
    }

    // Status.
    let leader = probe.leader.clone();
    let leader_node = leader
        .as_ref()
        .and_then(|l| views.iter().find(|v| &v.pod == l))
        .and_then(|v| v.node.clone());
    let values = condition_values(&Observation {
        replicas: voters,
        refused: refused.clone(),
        scaling: scaling.as_ref(),
        members: &views,
        leader: leader.as_deref(),
        rolled_out: rolled_out(existing.as_ref(), sts_replicas),
        now,
        unresponsive_after: settings.unresponsive_after,
    });
    let mut conditions = to_conditions(values, &previous.conditions, gg.meta().generation, now);
    if let Some(held) = held {
        if let Some(c) = conditions
            .iter_mut()
            .find(|c| c.type_ == condition::DEGRADED && c.status == "True")
        {
            c.message = format!("{}; {held}", c.message);
        }
    }
    let membership = |pod: &str| {
        let c = committed.as_ref()?;
        Some(
            c.iter()
                .find(|m| m.id == pod)
                .map_or("none", |m| if m.voter { "voter" } else { "learner" })
                .to_string(),
        )
    };
    let status = GuessGameStatus {
        observed_generation: gg.meta().generation,
        replicas: voters,
        bootstrap_replicas: Some(bootstrap),
        scaling: scaling.clone(),
        ready_replicas: views.iter().filter(|v| v.serving()).count() as i32,
        leader: leader.clone(),
        epoch: match &leader_node {
            Some(n) => Some(n.epoch as i64),
            None => views
                .iter()
                .filter_map(|v| v.node.as_ref().map(|n| n.epoch as i64))
                .max(),
        },
        last_committed: leader_node.as_ref().map(|n| n.last_committed.clone()),
        // During an election the game state is unknown: show the last one read.
        round: probe.round.map(|r| r as i64).or(previous.round),
        target: match probe.round {
            Some(_) => probe.target.map(i64::from),
            None => previous.target,
        },
        members: views
            .iter()
            .map(|v| MemberStatus {
                membership: membership(&v.pod),
                ..v.to_status()
            })
            .collect(),
        restarts,
        last_restart_time: last_restart,
        conditions,
    };

    // Events on what changed.
    if leader != previous.leader {
        match (&leader, &previous.leader) {
            (Some(new), old) => {
                let epoch = status.epoch.unwrap_or_default();
                let note = match old {
                    Some(old) => format!("{new} leads in epoch {epoch} (previously {old})"),
                    None => format!("{new} leads in epoch {epoch}"),
                };
                ctx.publish(
                    gg,
                    EventType::Normal,
                    "LeaderElected",
                    "ObserveLeader",
                    note,
                )
                .await;
            }
            (None, Some(old)) => {
                ctx.publish(
                    gg,
                    EventType::Warning,
                    "LeaderLost",
                    "ObserveLeader",
                    format!("{old} no longer leads a majority; an election is under way"),
                )
                .await;
            }
            (None, None) => {}
        }
    }
    // One Warning Event per distinct pod problem (a new reason for a member's pod).
    for v in views.iter().filter(|v| !v.terminating) {
        let Some(problem) = &v.problem else { continue };
        let before = previous
            .members
            .iter()
            .find(|m| m.pod == v.pod)
            .and_then(|m| m.problem.as_ref());
        if before.is_some_and(|b| b.reason == problem.reason) {
            continue;
        }
        let note = problem_note(
            &v.pod,
            problem,
            &gg.spec.image.reference(),
            gg.spec.storage.storage_class_name.as_deref(),
        );
        warn!(guessgame = %gg.name_any(), pod = %v.pod, reason = %problem.reason, "{note}");
        ctx.publish(gg, EventType::Warning, &problem.reason, "ObservePod", note)
            .await;
    }
    if let Some(message) = &refused {
        let old = previous
            .conditions
            .iter()
            .find(|c| c.type_ == condition::SCALE_REFUSED);
        if !is_true(&previous.conditions, condition::SCALE_REFUSED)
            || old.is_some_and(|c| &c.message != message)
        {
            warn!(guessgame = %gg.name_any(), "{message}");
            ctx.publish(
                gg,
                EventType::Warning,
                "ScaleRefused",
                "Scale",
                message.clone(),
            )
            .await;
        }
    }
    if let (Some(old), None) = (&previous.scaling, &status.scaling) {
        let note = format!(
            "the ensemble has {voters} voters (scaled from {}); the StatefulSet has \
             {sts_replicas} pods",
            old.from
        );
        info!(guessgame = %gg.name_any(), "{note}");
        ctx.publish(gg, EventType::Normal, "ScalingDone", "Scale", note)
            .await;
    }

    // Unchanged statuses are not written again (the status patch would trigger a watch event
    // and another reconciliation for nothing).
    let unchanged =
        gg.status.as_ref() == Some(&status) || ctx.memory(key).status.as_ref() == Some(&status);
    if !unchanged {
        write_status(client, ns, gg, &status).await?;
    }
    // While there is no leader (an election, a lost quorum) look again soon, so that the new
    // leader shows within a second or two of its election; while scaling, take the next
    // step soon.
    let next = if status.leader.is_none() || status.scaling.is_some() {
        settings.requeue.min(Duration::from_secs(1))
    } else {
        settings.requeue
    };
    ctx.remember(key.clone(), |m| m.status = Some(status));
    Ok(Action::requeue(next))
}

/// The members of a configuration's committed part.
fn config_members(c: &Configuration, statefulset: &str) -> Vec<ConfigMember> {
    c.committed_members
        .iter()
        .map(|m| ConfigMember::new(&m.id, statefulset, m.kind == "voter"))
        .collect()
}

fn pod_of_name<'a>(pods: &'a [Pod], name: &str) -> Option<&'a Pod> {
    pods.iter()
        .find(|p| p.metadata.name.as_deref() == Some(name))
}

/// Back-off after `failures` consecutive failed reconciliations: 1 s, 2 s, 4 s, … 5 min.
pub fn backoff(failures: u32) -> Duration {
    let exp = failures.saturating_sub(1).min(9);
    Duration::from_secs((1u64 << exp).min(300))
}

/// What happens when a reconciliation fails: count it, retry with a growing delay.
pub fn error_policy(gg: Arc<GuessGame>, error: &Error, ctx: Arc<Context>) -> Action {
    let key = (gg.namespace().unwrap_or_default(), gg.name_any());
    let mut failures = 0;
    ctx.remember(key, |m| {
        m.failures += 1;
        failures = m.failures;
    });
    warn!(guessgame = %gg.name_any(), failures, "reconcile failed: {error}");
    ctx.metrics.reconcile_failure(&gg, error);
    Action::requeue(backoff(failures))
}

/// Why the first list of GuessGames ended the start-up (`None`: try again). The API server's
/// answers are final; a connection that fails is retried for a minute.
fn startup_error(e: &kube::Error, waited: Duration) -> Option<String> {
    match e {
        kube::Error::Api(s) if s.code == 404 => Some(format!(
            "cannot list GuessGames ({e}): is the CRD installed? (kubectl apply \
             --server-side -f manifests/crd.yaml, or cargo run -p guessgame-operator --bin \
             crdgen | kubectl apply -f -)"
        )),
        kube::Error::Api(s) if s.code == 401 || s.code == 403 => Some(format!(
            "cannot list GuessGames ({e}): the operator's ServiceAccount needs RBAC for \
             guessgames (see charts/guessgame/templates/rbac.yaml)"
        )),
        kube::Error::Api(_) => Some(format!("cannot list GuessGames ({e})")),
        _ if waited >= Duration::from_secs(60) => Some(format!(
            "cannot reach the API server for a minute ({e}); in a pod: \
             KUBERNETES_SERVICE_HOST/_PORT, the kubernetes Service (kube-proxy), and a \
             serving certificate valid for that address"
        )),
        _ => None,
    }
}

/// State shared by the controller and the web server.
#[derive(Clone)]
pub struct State {
    diagnostics: Arc<RwLock<Diagnostics>>,
    registry: Arc<Registry>,
    metrics: Arc<Metrics>,
    ready: Arc<AtomicBool>,
}

impl Default for State {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("guessgame_operator");
        let metrics = Arc::new(Metrics::register(&mut registry));
        State {
            diagnostics: Arc::default(),
            registry: Arc::new(registry),
            metrics,
            ready: Arc::default(),
        }
    }
}

impl State {
    /// The Prometheus text exposition of the metrics.
    pub fn metrics_text(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String");
        out
    }

    pub async fn diagnostics(&self) -> Diagnostics {
        self.diagnostics.read().await.clone()
    }

    /// Ready: the CRD is served and the controller runs.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    /// A controller context sharing this state.
    pub async fn to_context(
        &self,
        client: Client,
        settings: Settings,
        prober: Arc<dyn Prober>,
    ) -> Arc<Context> {
        let reporter = self.diagnostics.read().await.reporter.clone();
        Arc::new(Context::new(
            client,
            self.metrics.clone(),
            self.diagnostics.clone(),
            settings,
            prober,
            reporter,
        ))
    }
}

/// Runs the controller until `shutdown` completes (then lets running reconciliations finish).
pub async fn run(
    client: Client,
    state: State,
    settings: Settings,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> anyhow::Result<()> {
    let api = |client: &Client| -> Api<GuessGame> {
        match &settings.namespace {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        }
    };
    let shutdown = shutdown.shared();
    let guessgames = api(&client);
    // The API server may not be reachable for a moment when the operator's pod starts (its
    // Service address is programmed by kube-proxy): connection errors are retried for a
    // minute; the API server's answers are not (the CRD missing, RBAC).
    let started = std::time::Instant::now();
    loop {
        match guessgames.list(&ListParams::default().limit(1)).await {
            Ok(_) => break,
            Err(e) => match startup_error(&e, started.elapsed()) {
                Some(fatal) => anyhow::bail!(fatal),
                None => {
                    warn!("cannot reach the API server yet ({e}); trying again");
                    tokio::select! {
                        _ = shutdown.clone() => {
                            info!("stopped before the controller started");
                            return Ok(());
                        }
                        _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                    }
                }
            },
        }
    }
    fn scoped<K: Resource<Scope = NamespaceResourceScope>>(
        client: &Client,
        ns: &Option<String>,
    ) -> Api<K>
    where
        K::DynamicType: Default,
    {
        match ns {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        }
    }
    let ns = settings.namespace.clone();
    let owned = watcher::Config::default().labels(&format!(
        "app.kubernetes.io/managed-by={}",
        resources::MANAGED_BY
    ));
    let ctx = state
        .to_context(client.clone(), settings, Arc::new(GrpcProber))
        .await;
    state.set_ready(true);
    info!("controller started");
    Controller::new(guessgames, watcher::Config::default())
        .owns(scoped::<StatefulSet>(&client, &ns), owned.clone())
        .owns(scoped::<Service>(&client, &ns), owned.clone())
        .owns(scoped::<ConfigMap>(&client, &ns), owned.clone())
        .owns(scoped::<PodDisruptionBudget>(&client, &ns), owned)
        // Pods belong to the StatefulSet, not to the GuessGame: map them by label.
        .watches(
            scoped::<Pod>(&client, &ns),
            watcher::Config::default().labels(INSTANCE_LABEL),
            |pod| {
                let name = pod.labels().get(INSTANCE_LABEL)?.clone();
                let ns = pod.namespace()?;
                Some(ObjectRef::<GuessGame>::new(&name).within(&ns))
            },
        )
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok((obj, _)) => debug!(guessgame = %obj.name, "reconciled"),
                Err(e) => debug!("reconcile: {e}"),
            }
        })
        .await;
    state.set_ready(false);
    info!("controller stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{
        guessgame, node, pod, unschedulable_pod, waiting_pod, Ensemble, EnsembleProber, FakeApi,
        PodState, StaticProber, UNBOUND_CLAIM,
    };
    use kube::runtime::events::EventType;

    fn healthy_probe(n: usize) -> Probe {
        Probe {
            nodes: (0..n)
                .map(|i| {
                    node(
                        &format!("demo-{i}"),
                        if i == 0 { "leader" } else { "follower" },
                        Some("demo-0"),
                    )
                })
                .collect(),
            leader: Some("demo-0".into()),
            round: Some(2),
            target: Some(42),
        }
    }

    #[tokio::test]
    async fn creates_the_owned_objects_and_writes_the_status() {
        let gg = guessgame("demo", 5);
        let (ctx, api) = FakeApi::context(gg.clone(), None, vec![], StaticProber::unreachable(5));
        reconcile(Arc::new(gg), ctx.clone())
            .await
            .expect("reconcile");
        let patched = api.applied();
        let kinds: Vec<_> = patched
            .iter()
            .map(|(kind, name, _)| format!("{kind}/{name}"))
            .collect();
        assert_eq!(
            kinds,
            [
                "ConfigMap/demo-config",
                "Service/demo-headless",
                "Service/demo",
                "StatefulSet/demo",
                "PodDisruptionBudget/demo",
            ]
        );
        for (_, _, body) in &patched {
            assert_eq!(body["metadata"]["ownerReferences"][0]["kind"], "GuessGame");
            assert_eq!(body["metadata"]["ownerReferences"][0]["controller"], true);
        }
        for (path, query) in api.patch_queries() {
            assert!(
                query.contains("fieldManager=guessgame-operator"),
                "{path}?{query}"
            );
            assert!(query.contains("force=true"), "{path}?{query}");
        }
        let sts = &patched[3].2;
        assert_eq!(sts["spec"]["replicas"], 5);
        assert_eq!(sts["spec"]["podManagementPolicy"], "Parallel");
        assert_eq!(patched[1].2["spec"]["publishNotReadyAddresses"], true);
        assert_eq!(patched[4].2["spec"]["maxUnavailable"], 2);
        let status = api.last_status().expect("status written");
        assert_eq!(status["replicas"], 5);
        assert_eq!(status["readyReplicas"], 0);
        assert_eq!(status["members"].as_array().unwrap().len(), 5);
        assert_eq!(status["members"][0]["role"], "absent");
        let condition = |t: &str| {
            status["conditions"]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["type"] == t)
                .cloned()
                .unwrap()
        };
        assert_eq!(condition("Available")["status"], "False");
        assert_eq!(condition("Progressing")["status"], "True");
        assert_eq!(condition("ScaleRefused")["status"], "False");
        assert!(api.deleted().is_empty());
        assert!(api.events().is_empty());
    }

    #[tokio::test]
    async fn healthy_ensemble_reports_leader_round_and_target_with_one_event() {
        let gg = guessgame("demo", 3);
        let pods = (0..3).map(|i| pod("demo", i, PodState::Ready)).collect();
        let (ctx, api) = FakeApi::context(gg.clone(), None, pods, StaticProber(healthy_probe(3)));
        reconcile(Arc::new(gg.clone()), ctx.clone()).await.unwrap();
        let status = api.last_status().unwrap();
        assert_eq!(status["leader"], "demo-0");
        assert_eq!(status["readyReplicas"], 3);
        assert_eq!(
            (status["round"].clone(), status["target"].clone()),
            (2.into(), 42.into())
        );
        assert_eq!(status["conditions"][0]["type"], "Available");
        assert_eq!(status["conditions"][0]["status"], "True");
        let events = api.events();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0]["reason"], "LeaderElected");
        // Nothing changed: no second event, no second status write.
        reconcile(Arc::new(gg), ctx).await.unwrap();
        assert_eq!(api.events().len(), 1);
        assert_eq!(api.status_writes(), 1);
    }

    /// A GuessGame of `from` members (status written by a previous pass) asking for `to`,
    /// its StatefulSet at `sts` replicas, pods `0..sts` Ready, and a simulated ensemble.
    fn scaling_world(
        from: usize,
        to: i32,
        sts: i32,
        ensemble: Ensemble,
    ) -> (GuessGame, Arc<Context>, FakeApi, EnsembleProber) {
        let mut gg = guessgame("demo", from as i32);
        let existing = resources::statefulset(&gg, from as i32, sts, None);
        gg.spec.replicas = to;
        gg.metadata.generation = Some(2);
        gg.status = Some(GuessGameStatus {
            replicas: from as i32,
            bootstrap_replicas: Some(from as i32),
            ..Default::default()
        });
        let pods = (0..sts as usize)
            .map(|i| pod("demo", i, PodState::Ready))
            .collect();
        let prober = EnsembleProber::new(ensemble);
        let (ctx, api) = FakeApi::context(gg.clone(), Some(existing), pods, prober.clone());
        api.track_statefulset();
        (gg, ctx, api, prober)
    }
    fn reasons(api: &FakeApi) -> Vec<String> {
        api.events()
            .iter()
            .map(|e| e["reason"].as_str().unwrap_or_default().to_string())
            .filter(|r| r != "LeaderElected")
            .collect()
    }
    fn condition_of(status: &serde_json::Value, t: &str) -> serde_json::Value {
        status["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == t)
            .cloned()
            .unwrap()
    }

    #[tokio::test]
    async fn scaling_up_adds_one_member_at_a_time() {
        let (gg, ctx, api, ensemble) = scaling_world(3, 5, 3, Ensemble::of(3, &[]));
        let gg = Arc::new(gg);
        // Pass 1: one more pod.
        ensemble.state().down.push("demo-3".into());
        reconcile(gg.clone(), ctx.clone()).await.unwrap();
        assert_eq!(api.statefulset_replicas(), Some(4));
        let status = api.last_status().unwrap();
        assert_eq!(status["scaling"]["from"], 3);
        assert_eq!(status["scaling"]["to"], 5);
        assert_eq!(status["scaling"]["step"], "wait demo-3");
        assert_eq!(status["replicas"], 3);
        assert_eq!(status["bootstrapReplicas"], 3);
        let progressing = condition_of(&status, "Progressing");
        assert_eq!(
            (
                progressing["status"].as_str(),
                progressing["reason"].as_str()
            ),
            (Some("True"), Some("Scaling"))
        );
        assert_eq!(condition_of(&status, "ScaleRefused")["status"], "False");
        assert_eq!(reasons(&api), ["ScalingStarted", "StatefulSetResized"]);
        // Pass 2: the pod is not up yet: nothing changes.
        reconcile(gg.clone(), ctx.clone()).await.unwrap();
        assert!(ensemble.state().changes.is_empty());
        assert_eq!(api.statefulset_replicas(), Some(4));
        // Pass 3: it answers: added (at its DNS name, never its pod IP).
        api.put_pod(pod("demo", 3, PodState::Running));
        ensemble.state().down.clear();
        reconcile(gg.clone(), ctx.clone()).await.unwrap();
        assert_eq!(
            ensemble.state().changes,
            [Reconfig::Add {
                id: "demo-3".into(),
                address: "demo-3.demo-headless.testns.svc:7100".into()
            }]
        );
        let status = api.last_status().unwrap();
        assert_eq!(status["replicas"], 4);
        assert_eq!(status["scaling"]["step"], "statefulset 5");
        assert_eq!(status["scaling"]["from"], 3, "kept while scaling");
        // Passes 4, 5: the last pod, then its member.
        reconcile(gg.clone(), ctx.clone()).await.unwrap();
        assert_eq!(api.statefulset_replicas(), Some(5));
        api.put_pod(pod("demo", 4, PodState::Running));
        reconcile(gg.clone(), ctx.clone()).await.unwrap();
        assert_eq!(
            ensemble.state().ids(),
            [
                "demo-0:voter",
                "demo-1:voter",
                "demo-2:voter",
                "demo-3:voter",
                "demo-4:voter"
            ]
        );
        let status = api.last_status().unwrap();
        assert_eq!(status["replicas"], 5);
        assert!(status.get("scaling").is_none(), "cleared: {status}");
        assert_ne!(condition_of(&status, "Progressing")["reason"], "Scaling");
        assert_eq!(status["members"][4]["membership"], "voter");
        assert_eq!(
            reasons(&api),
            [
                "ScalingStarted",
                "StatefulSetResized",
                "MemberAdded",
                "StatefulSetResized",
                "MemberAdded",
                "ScalingDone"
            ]
        );
        // Never the pod template or the bootstrap size; the PDB follows the voters.
        let applied = api.applied();
        let hashes: std::collections::BTreeSet<_> = applied
            .iter()
            .filter(|(k, _, _)| k == "StatefulSet")
            .map(|(_, _, b)| {
                b["spec"]["template"]["metadata"]["annotations"]["guessgame.dev/config-hash"]
                    .to_string()
            })
            .collect();
        assert_eq!(hashes.len(), 1);
        assert!(applied
            .iter()
            .filter(|(k, _, _)| k == "ConfigMap")
            .all(|(_, _, b)| b["data"]["GUESSGAME_REPLICAS"] == "3"));
        let pdbs: Vec<_> = applied
            .iter()
            .filter(|(k, _, _)| k == "PodDisruptionBudget")
            .map(|(_, _, b)| b["spec"]["maxUnavailable"].as_i64().unwrap())
            .collect();
        assert_eq!(pdbs, [1, 1, 1, 1, 2], "3, 4 voters: 1; 5 voters: 2");
        // Steady: nothing more.
        reconcile(gg, ctx).await.unwrap();
        assert_eq!(ensemble.state().changes.len(), 2);
        assert_eq!(api.statefulset_replicas(), Some(5));
    }

    #[tokio::test]
    async fn scaling_down_removes_the_member_before_its_pod() {
        let (gg, ctx, api, ensemble) = scaling_world(5, 3, 5, Ensemble::of(5, &[]));
        let gg = Arc::new(gg);
        let mut trail = Vec::new();
        for pass in 0..5 {
            reconcile(gg.clone(), ctx.clone()).await.unwrap();
            if pass == 0 {
                let scaling = &api.last_status().unwrap()["scaling"];
                assert_eq!(
                    (scaling["from"].as_i64(), scaling["to"].as_i64()),
                    (Some(5), Some(3))
                );
            }
            let sts = api.statefulset_replicas().unwrap();
            trail.push(format!(
                "{} voters/{sts} pods",
                ensemble.state().config.len()
            ));
            for i in sts as usize..5 {
                api.remove_pod(&format!("demo-{i}"));
            }
        }
        let events = api.events();
        let started = events
            .iter()
            .find(|e| e["reason"] == "ScalingStarted")
            .unwrap();
        assert!(started["note"]
            .as_str()
            .unwrap()
            .starts_with("scaling from 5 to 3 voters"));
        assert_eq!(
            trail,
            [
                "4 voters/5 pods",
                "4 voters/4 pods",
                "3 voters/4 pods",
                "3 voters/3 pods",
                "3 voters/3 pods"
            ]
        );
        assert_eq!(
            ensemble.state().changes,
            [
                Reconfig::Remove {
                    id: "demo-4".into()
                },
                Reconfig::Remove {
                    id: "demo-3".into()
                }
            ]
        );
        assert_eq!(
            reasons(&api),
            [
                "ScalingStarted",
                "MemberRemoved",
                "StatefulSetResized",
                "MemberRemoved",
                "StatefulSetResized",
                "ScalingDone"
            ]
        );
        let status = api.last_status().unwrap();
        assert_eq!(status["replicas"], 3);
        assert!(status.get("scaling").is_none());
    }

    #[tokio::test]
    async fn a_first_removal_is_recorded_before_it_is_made_so_a_restart_resumes_it() {
        let (gg, ctx, api, ensemble) = scaling_world(5, 3, 5, Ensemble::of(5, &[]));
        reconcile(Arc::new(gg.clone()), ctx).await.unwrap();
        assert_eq!(ensemble.state().config.len(), 4, "demo-4 removed");
        // The pass wrote the scaling before removing demo-4, then its outcome.
        let statuses = api.status_patches();
        assert!(statuses.len() >= 2, "{statuses:?}");
        let early = statuses[0]["status"]["scaling"].clone();
        assert_eq!(
            (early["from"].as_i64(), early["to"].as_i64()),
            (Some(5), Some(3))
        );
        assert_eq!(early["step"], "remove demo-4");
        // An operator killed right after the removal finds that status: a fresh one resumes
        // the same scaling (from 5), without announcing a new one.
        let (mut seen, ctx, api, _) = scaling_world(5, 3, 5, Ensemble::of(4, &[]));
        seen.status = Some(serde_json::from_value(statuses[0]["status"].clone()).unwrap());
        reconcile(Arc::new(seen), ctx).await.unwrap();
        assert!(
            !reasons(&api).contains(&"ScalingStarted".to_string()),
            "{:?}",
            reasons(&api)
        );
        assert_eq!(api.last_status().unwrap()["scaling"]["from"], 5);
    }

    #[tokio::test]
    async fn a_resumed_operator_restores_the_pods_then_promotes_the_learner() {
        // An interrupted add: demo-3 is a learner, and the StatefulSet was set back to 3
        // meanwhile (by hand). Its pod comes back first, then it is promoted.
        let (gg, ctx, api, ensemble) = scaling_world(3, 5, 3, Ensemble::of(3, &[3]));
        let gg = Arc::new(gg);
        reconcile(gg.clone(), ctx.clone()).await.unwrap();
        assert_eq!(api.statefulset_replicas(), Some(4));
        assert!(ensemble.state().changes.is_empty());
        api.put_pod(pod("demo", 3, PodState::Running));
        reconcile(gg.clone(), ctx.clone()).await.unwrap();
        assert!(matches!(
            &ensemble.state().changes[..],
            [Reconfig::Add { id, .. }] if id == "demo-3"
        ));
        assert_eq!(ensemble.state().config[3].kind, "voter");
        // Reverted to 3: demo-3 goes, then its pod.
        let mut back = (*gg).clone();
        back.spec.replicas = 3;
        let back = Arc::new(back);
        reconcile(back.clone(), ctx.clone()).await.unwrap();
        reconcile(back.clone(), ctx.clone()).await.unwrap();
        assert_eq!(ensemble.state().config.len(), 3);
        assert_eq!(api.statefulset_replicas(), Some(3));
        assert!(reasons(&api).contains(&"ScalingDone".to_string()));
    }

    #[tokio::test]
    async fn a_manually_scaled_statefulset_is_set_back() {
        // More pods than members: the extra pods go (they are in no configuration).
        let (gg, ctx, api, _) = scaling_world(3, 3, 7, Ensemble::of(3, &[]));
        reconcile(Arc::new(gg), ctx).await.unwrap();
        assert_eq!(api.statefulset_replicas(), Some(3));
        // Fewer pods than members: never below the highest member's ordinal + 1.
        let (gg, ctx, api, _) = scaling_world(3, 3, 1, Ensemble::of(3, &[]));
        reconcile(Arc::new(gg), ctx).await.unwrap();
        assert_eq!(api.statefulset_replicas(), Some(3));
    }

    #[tokio::test]
    async fn failed_changes_are_retried_and_refusals_reported_once() {
        let (gg, ctx, api, ensemble) = scaling_world(3, 5, 4, Ensemble::of(3, &[]));
        let gg = Arc::new(gg);
        ensemble.state().fail_next = Some(ClientError::new(
            guessgame_client::ErrorKind::ReconfigBusy,
            "another change is in flight",
        ));
        reconcile(gg.clone(), ctx.clone()).await.unwrap();
        let status = api.last_status().unwrap();
        let message = status["scaling"]["message"].as_str().unwrap();
        assert!(
            message.contains("adding demo-3: another change is in flight (trying again)"),
            "{message}"
        );
        assert!(!reasons(&api).contains(&"ReconfigFailed".to_string()));
        for _ in 0..2 {
            ensemble.state().fail_next = Some(ClientError::new(
                guessgame_client::ErrorKind::ReconfigRefused,
                "address in use",
            ));
            reconcile(gg.clone(), ctx.clone()).await.unwrap();
        }
        let failed: Vec<_> = api
            .events()
            .into_iter()
            .filter(|e| e["reason"] == "ReconfigFailed")
            .collect();
        assert_eq!(failed.len(), 1, "once per distinct failure");
        assert_eq!(failed[0]["type"], "Warning");
        // Then it works.
        reconcile(gg.clone(), ctx.clone()).await.unwrap();
        assert_eq!(ensemble.state().changes.len(), 4);
        assert_eq!(ensemble.state().config.len(), 4);
    }

    #[tokio::test]
    async fn an_invalid_size_is_refused_and_the_status_kept_fresh() {
        // Only an API server with an older CRD (no schema rules) lets these through.
        for bad in [4, 11, 0] {
            let (gg, ctx, api, ensemble) = scaling_world(3, bad, 3, Ensemble::of(3, &[]));
            reconcile(Arc::new(gg.clone()), ctx.clone()).await.unwrap();
            assert_eq!(api.statefulset_replicas(), Some(3));
            assert!(ensemble.state().changes.is_empty());
            let status = api.last_status().unwrap();
            assert_eq!(status["replicas"], 3);
            assert_eq!(status["leader"], "demo-0");
            assert!(status.get("scaling").is_none());
            let refused = condition_of(&status, "ScaleRefused");
            assert_eq!(refused["status"], "True");
            assert_eq!(refused["reason"], "InvalidReplicas");
            assert_eq!(refused["observedGeneration"], 2);
            assert!(refused["message"]
                .as_str()
                .unwrap()
                .contains(&format!("spec.replicas = {bad} is not applied")));
            // One Warning Event, not one per pass.
            reconcile(Arc::new(gg), ctx).await.unwrap();
            let warnings: Vec<_> = api
                .events()
                .into_iter()
                .filter(|e| e["reason"] == "ScaleRefused")
                .collect();
            assert_eq!(warnings.len(), 1);
            assert_eq!(warnings[0]["type"], "Warning");
        }
        // At creation there is nothing to keep: the reconciliation fails.
        let gg = guessgame("demo", 4);
        let (ctx, _) = FakeApi::context(gg.clone(), None, vec![], StaticProber::unreachable(3));
        let err = reconcile(Arc::new(gg), ctx).await.unwrap_err();
        assert!(err.to_string().contains("odd number"), "{err}");
    }

    #[tokio::test]
    async fn restart_rule_deletes_one_crash_looping_pod() {
        let gg = guessgame("demo", 5);
        let mut pods: Vec<Pod> = (0..5).map(|i| pod("demo", i, PodState::Ready)).collect();
        pods[2] = pod("demo", 2, PodState::CrashLoop);
        pods[4] = pod("demo", 4, PodState::CrashLoop);
        let mut probe = healthy_probe(5);
        for i in [2, 4] {
            probe.nodes[i] = node(&format!("demo-{i}"), "unreachable", None);
        }
        let (ctx, api) = FakeApi::context(gg.clone(), None, pods, StaticProber(probe));
        reconcile(Arc::new(gg.clone()), ctx.clone()).await.unwrap();
        assert_eq!(api.deleted(), ["demo-2"]);
        let status = api.last_status().unwrap();
        assert_eq!(status["restarts"], 1);
        assert!(status["lastRestartTime"].is_string());
        assert_eq!(
            status["members"][2]["restartedAt"],
            status["lastRestartTime"]
        );
        assert!(status["members"][4].get("restartedAt").is_none());
        let restarts: Vec<_> = api
            .events()
            .into_iter()
            .filter(|e| e["reason"] == "MemberRestarted")
            .collect();
        assert_eq!(restarts.len(), 1);
        assert!(restarts[0]["note"].as_str().unwrap().contains("demo-2"));
        assert_eq!(ctx.metrics.restarts.get(), 1);
        // demo-2 is now terminating (the fake API server marked it): the next pass restarts
        // nothing else.
        reconcile(Arc::new(gg), ctx).await.unwrap();
        assert_eq!(api.deleted(), ["demo-2"]);
        assert_eq!(api.last_status().unwrap()["restarts"], 1);
    }

    #[tokio::test]
    async fn stuck_pods_get_a_condition_and_one_event_each_and_are_never_deleted() {
        // demo-2's image is not on the node: the kubelet alternates ErrImagePull and
        // ImagePullBackOff. The condition says so, one Warning Event, no restart.
        let gg = guessgame("demo", 3);
        let mut pods: Vec<Pod> = (0..3).map(|i| pod("demo", i, PodState::Ready)).collect();
        pods[2] = waiting_pod(
            "demo",
            2,
            "ErrImagePull",
            "failed to pull image: no such host",
        );
        let mut probe = healthy_probe(3);
        probe.nodes[2] = node("demo-2", "unreachable", None);
        let (ctx, api) = FakeApi::context(gg.clone(), None, pods, StaticProber(probe.clone()));
        for pass in 0..4 {
            let reason = if pass % 2 == 0 {
                "ImagePullBackOff"
            } else {
                "ErrImagePull"
            };
            reconcile(Arc::new(gg.clone()), ctx.clone()).await.unwrap();
            api.put_pod(waiting_pod("demo", 2, reason, "Back-off pulling image"));
        }
        assert!(api.deleted().is_empty(), "deleted {:?}", api.deleted());
        let warnings: Vec<_> = api
            .events()
            .into_iter()
            .filter(|e| e["reason"] == "ImagePullBackOff")
            .collect();
        assert_eq!(warnings.len(), 1, "once per distinct problem");
        assert_eq!(warnings[0]["type"], "Warning");
        let note = warnings[0]["note"].as_str().unwrap();
        assert!(
            note.starts_with("pod demo-2: ImagePullBackOff: failed to pull image"),
            "{note}"
        );
        assert!(note.contains("guessgame-node:0.1.0"), "{note}");
        let status = api.last_status().unwrap();
        let healthy = condition_of(&status, "PodsHealthy");
        assert_eq!(
            (healthy["status"].as_str(), healthy["reason"].as_str()),
            (Some("False"), Some("ImagePullBackOff"))
        );
        assert!(healthy["message"]
            .as_str()
            .unwrap()
            .starts_with("demo-2: ImagePullBackOff: failed to pull image"));
        assert_eq!(
            status["members"][2]["problem"]["reason"],
            "ImagePullBackOff"
        );
        assert_eq!(condition_of(&status, "Available")["status"], "True");
        assert_eq!(condition_of(&status, "Degraded")["status"], "True");
        assert_eq!(status["restarts"], 0);
        // A new operator (restarted: no memory) finds the status: no second Event.
        let mut seen = gg.clone();
        seen.status = Some(serde_json::from_value(status.clone()).unwrap());
        let pods = vec![
            pod("demo", 0, PodState::Ready),
            pod("demo", 1, PodState::Ready),
            waiting_pod("demo", 2, "ImagePullBackOff", "Back-off pulling image"),
        ];
        let (ctx, api) = FakeApi::context(seen.clone(), None, pods, StaticProber(probe));
        reconcile(Arc::new(seen), ctx).await.unwrap();
        assert!(!api
            .events()
            .iter()
            .any(|e| e["reason"] == "ImagePullBackOff"));
        assert!(api.deleted().is_empty());
    }

    #[tokio::test]
    async fn unbound_claims_get_a_condition_and_events_and_no_restart() {
        // spec.storage.storageClassName names no StorageClass: the claims stay Pending, the
        // scheduler cannot place the pods.
        let mut gg = guessgame("demo", 3);
        gg.spec.storage.storage_class_name = Some("no-such-class".into());
        let since = Timestamp::now() - k8s_openapi::jiff::SignedDuration::from_secs(60);
        let pods = (0..3)
            .map(|i| unschedulable_pod("demo", i, UNBOUND_CLAIM, since))
            .collect();
        let (ctx, api) = FakeApi::context(gg.clone(), None, pods, StaticProber::unreachable(3));
        reconcile(Arc::new(gg.clone()), ctx.clone()).await.unwrap();
        reconcile(Arc::new(gg), ctx).await.unwrap();
        assert!(api.deleted().is_empty());
        let events: Vec<_> = api
            .events()
            .into_iter()
            .filter(|e| e["reason"] == "VolumeUnbound")
            .collect();
        assert_eq!(events.len(), 3, "one per pod");
        assert!(events[0]["note"]
            .as_str()
            .unwrap()
            .contains("storageClassName is \"no-such-class\""));
        let status = api.last_status().unwrap();
        let healthy = condition_of(&status, "PodsHealthy");
        assert_eq!(healthy["reason"], "VolumeUnbound");
        assert!(healthy["message"]
            .as_str()
            .unwrap()
            .contains("demo-1: VolumeUnbound: 0/1 nodes are available: pod has unbound"));
        // Stuck pods are not "starting" (the fake StatefulSet has no status: rolling out).
        assert_eq!(condition_of(&status, "Progressing")["reason"], "RollingOut");
    }

    #[tokio::test]
    async fn a_member_that_fails_again_after_its_restart_is_left_alone() {
        // demo-2 was restarted 10 minutes ago and its new pod crash-loops too.
        let mut gg = guessgame("demo", 3);
        let long_ago = Time(Timestamp::now() - k8s_openapi::jiff::SignedDuration::from_secs(600));
        gg.status = Some(GuessGameStatus {
            replicas: 3,
            restarts: 1,
            last_restart_time: Some(long_ago.clone()),
            members: vec![crate::crd::MemberStatus {
                pod: "demo-2".into(),
                restarted_at: Some(long_ago),
                ..Default::default()
            }],
            ..Default::default()
        });
        let pods = vec![
            pod("demo", 0, PodState::Ready),
            pod("demo", 1, PodState::Ready),
            pod("demo", 2, PodState::CrashLoop),
        ];
        let mut probe = healthy_probe(3);
        probe.nodes[2] = node("demo-2", "unreachable", None);
        let (ctx, api) = FakeApi::context(gg.clone(), None, pods, StaticProber(probe));
        reconcile(Arc::new(gg), ctx).await.unwrap();
        assert!(api.deleted().is_empty(), "deleted {:?}", api.deleted());
        let status = api.last_status().unwrap();
        assert_eq!(status["restarts"], 1);
        let degraded = condition_of(&status, "Degraded");
        assert!(
            degraded["message"]
                .as_str()
                .unwrap()
                .contains("restart of demo-2 held: demo-2 was restarted at"),
            "{degraded}"
        );
        assert_eq!(
            condition_of(&status, "PodsHealthy")["reason"],
            "CrashLoopBackOff"
        );
    }

    #[tokio::test]
    async fn restart_rule_never_takes_away_the_last_quorum() {
        // demo-1 is Ready for the kubelet but has not answered the operator for 10 minutes;
        // demo-2 is still starting. Only demo-0 surely serves: deleting demo-1 could break
        // the quorum (2 of 3), so nothing is deleted.
        let mut gg = guessgame("demo", 3);
        let long_ago = Time(Timestamp::now() - k8s_openapi::jiff::SignedDuration::from_secs(600));
        gg.status = Some(GuessGameStatus {
            replicas: 3,
            members: vec![crate::crd::MemberStatus {
                pod: "demo-1".into(),
                not_answering_since: Some(long_ago),
                ..Default::default()
            }],
            ..Default::default()
        });
        let pods = vec![
            pod("demo", 0, PodState::Ready),
            pod("demo", 1, PodState::Ready),
            pod("demo", 2, PodState::Running),
        ];
        let probe = Probe {
            nodes: vec![
                node("demo-0", "leader", Some("demo-0")),
                node("demo-1", "unreachable", None),
                node("demo-2", "looking", None),
            ],
            leader: None,
            ..Default::default()
        };
        let (ctx, api) = FakeApi::context(gg.clone(), None, pods, StaticProber(probe));
        reconcile(Arc::new(gg.clone()), ctx.clone()).await.unwrap();
        assert!(api.deleted().is_empty(), "deleted {:?}", api.deleted());
        // The status carries no elapsed times: a second pass a second later writes nothing
        // (each status write would trigger another reconciliation).
        tokio::time::sleep(Duration::from_millis(1100)).await;
        reconcile(Arc::new(gg), ctx).await.unwrap();
        assert_eq!(api.status_writes(), 1);
        assert!(api.deleted().is_empty());
        let status = api.last_status().unwrap();
        assert_eq!(status["restarts"], 0);
        let degraded = status["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == "Degraded")
            .unwrap();
        assert_eq!(degraded["status"], "True");
        assert!(degraded["message"]
            .as_str()
            .unwrap()
            .contains("demo-1: running but not answering"));
    }

    #[tokio::test]
    async fn api_errors_fail_the_reconciliation_and_back_off() {
        let gg = guessgame("demo", 3);
        let (ctx, api) = FakeApi::context(gg.clone(), None, vec![], StaticProber::unreachable(3));
        api.fail_patches_of("statefulsets");
        let err = reconcile(Arc::new(gg.clone()), ctx.clone())
            .await
            .unwrap_err();
        assert!(err.to_string().contains("kube"), "{err}");
        let first = error_policy(Arc::new(gg.clone()), &err, ctx.clone());
        let second = error_policy(Arc::new(gg.clone()), &err, ctx.clone());
        assert_eq!(first, Action::requeue(Duration::from_secs(1)));
        assert_eq!(second, Action::requeue(Duration::from_secs(2)));
        let failures = ctx.metrics.failures_of("demo", &err);
        assert_eq!(failures, 2);
        assert_eq!(backoff(20), Duration::from_secs(300));
        let _ = EventType::Normal;
    }

    #[test]
    fn start_up_errors_say_what_is_missing_and_connections_are_retried() {
        let api = |code: u16| {
            kube::Error::Api(
                kube::core::Status::failure("m", "r")
                    .with_code(code)
                    .boxed(),
            )
        };
        let now = Duration::ZERO;
        assert!(startup_error(&api(404), now)
            .unwrap()
            .contains("is the CRD installed?"));
        for code in [401, 403] {
            assert!(startup_error(&api(code), now).unwrap().contains("RBAC"));
        }
        assert!(startup_error(&api(500), now).is_some());
        let connect = kube::Error::Service("client error (Connect)".into());
        assert_eq!(startup_error(&connect, Duration::from_secs(10)), None);
        assert!(startup_error(&connect, Duration::from_secs(61))
            .unwrap()
            .contains("cannot reach the API server"));
    }

    #[test]
    fn bootstrap_size_prefers_the_record_then_the_config_map() {
        let gg = guessgame("demo", 3);
        let sts = resources::statefulset(&gg, 3, 5, None);
        let cm = resources::config_map(&gg, 3);
        assert_eq!(bootstrap_size(Some(3), Some(&cm), 5, Some(&sts), 7), 3);
        assert_eq!(bootstrap_size(None, Some(&cm), 5, Some(&sts), 7), 3);
        // A status of an operator that did not scale: its size is the bootstrap size.
        assert_eq!(bootstrap_size(None, None, 5, Some(&sts), 7), 5);
        assert_eq!(bootstrap_size(None, None, 0, Some(&sts), 7), 5);
        assert_eq!(bootstrap_size(None, None, 0, None, 7), 7);
    }
}
