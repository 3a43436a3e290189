//! Whole reconciliations against a fake API server (tower-test) and simulated members: the
//! owned objects and the status here, scaling in [`scaling`], restarts and pod problems in
//! [`restarts`].

use std::sync::Arc;

use crate::controller::Context;
use crate::crd::{GuessGame, GuessGameStatus};
use crate::fixtures::{
    guessgame, node, pod, Ensemble, EnsembleProber, FakeApi, PodState, StaticProber,
};
use crate::prober::Probe;
use crate::reconcile::reconcile;
use crate::resources;

mod restarts;
mod scaling;

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
