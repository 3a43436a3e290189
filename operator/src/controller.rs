//! The GuessGame controller: its [`Context`] and [`Settings`], the state shared with the web
//! server ([`State`]), the `Controller` ([`run`]) and what happens when a reconciliation
//! fails ([`error_policy`]). The reconciliation itself is in [`crate::reconcile`].

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Service};
use k8s_openapi::api::events::v1::Event as K8sEvent;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use k8s_openapi::NamespaceResourceScope;
use kube::api::{Api, ListParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{EventType, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use prometheus_client::registry::Registry;
use serde::Serialize;
use tokio::sync::RwLock;
use tracing::{debug, info, warn};

use crate::crd::{GuessGame, GuessGameStatus};
use crate::prober::{GrpcProber, Prober};
use crate::reconcile::reconcile;
use crate::resources::{self, MemberAddress, FIELD_MANAGER, INSTANCE_LABEL};
use crate::{Error, Metrics};

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
pub(crate) struct Memory {
    /// The last status written (the watched object may lag behind it).
    pub(crate) status: Option<GuessGameStatus>,
    /// Consecutive failed reconciliations (for the back-off).
    pub(crate) failures: u32,
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

    pub(crate) fn memory(&self, key: &(String, String)) -> Memory {
        self.memory
            .lock()
            .expect("memory lock")
            .get(key)
            .cloned()
            .unwrap_or_default()
    }

    pub(crate) fn remember(&self, key: (String, String), f: impl FnOnce(&mut Memory)) {
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
    pub(crate) async fn publish(
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
    use crate::fixtures::{guessgame, FakeApi, StaticProber};

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
}
