//! The restart rule and pod problems, through whole reconciliations.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use super::*;
use crate::fixtures::{unschedulable_pod, waiting_pod, UNBOUND_CLAIM};

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
