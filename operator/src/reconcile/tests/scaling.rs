//! Scaling, one member at a time, through whole reconciliations.

use std::sync::Arc;

use guessgame_client::{ClientError, MemberKind, Reconfig};

use super::*;
use crate::fixtures::{guessgame, pod, Ensemble, FakeApi, PodState, StaticProber};

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
    assert_eq!(ensemble.state().config[3].kind, MemberKind::Voter);
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
