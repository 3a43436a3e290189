//! The restart rule: which failed member's pod to delete, if any, and when to hold off
//! ([`decide_restart`]).

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;

use super::MemberView;
use crate::resources::quorum;

/// What to do about failed members.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Restart {
    /// No member needs a restart.
    Nothing,
    /// Delete this pod (the StatefulSet recreates it).
    Delete { pod: String, reason: String },
    /// A member needs a restart, but not now.
    Hold { pod: String, reason: String },
}

/// The restart rule. A member pod in CrashLoopBackOff, or Running but not answering for at
/// least `unresponsive_after`, is deleted so that the StatefulSet recreates it:
/// - one at a time: not while a member pod is terminating or missing, nor within
///   `unresponsive_after` of the previous restart;
/// - never taking away the last quorum: a candidate that may still serve (the kubelet finds
///   it Ready) is deleted only if the other members that may serve are a quorum;
/// - never on the operator's word alone: when no member answers the operator at all, the
///   fault may be the operator's own network, so running pods are left alone (crash-looping
///   ones are not serving anyway);
/// - once per failure: a member whose pod the operator deleted, and that has not served
///   since, is not restarted again (its new pod fails the same way: the fault is not in the
///   pod);
/// - never a pod that never started (an image that cannot be pulled, a claim that cannot
///   bind, a container the runtime cannot create or start): [`MemberView::failure`] is
///   `None` for it, and the PodsHealthy condition reports it instead.
pub fn decide_restart(
    members: &[MemberView],
    replicas: i32,
    now: Timestamp,
    unresponsive_after: Duration,
    last_restart: Option<Timestamp>,
) -> Restart {
    let candidates: Vec<(&MemberView, String)> = members
        .iter()
        .filter_map(|m| m.failure(now, unresponsive_after).map(|why| (m, why)))
        .collect();
    let Some((first, _)) = candidates.first() else {
        return Restart::Nothing;
    };
    let hold = |reason: String| Restart::Hold {
        pod: first.pod.clone(),
        reason,
    };
    if let Some(m) = members.iter().find(|m| m.terminating || !m.exists) {
        return hold(format!("waiting for {} to be recreated first", m.pod));
    }
    if let Some(last) = last_restart {
        let since = Duration::try_from(now.duration_since(last)).unwrap_or_default();
        if since < unresponsive_after {
            return hold(format!(
                "the previous restart was at {last} (one restart per {}s)",
                unresponsive_after.as_secs()
            ));
        }
    }
    let nobody_answers = !members.iter().any(MemberView::answering);
    let mut reason = String::new();
    for (m, why) in &candidates {
        if let Some(at) = m.restarted_at {
            reason = format!(
                "{} was restarted at {at} and fails again ({why}): another restart would not \
                 help (kubectl logs {} --previous; kubectl describe pod {})",
                m.pod, m.pod, m.pod
            );
            continue;
        }
        if !m.crash_loop && nobody_answers {
            reason = "no member answers the operator: not restarting running pods for what may \
                      be the operator's own network fault"
                .into();
            continue;
        }
        if m.may_serve() {
            let others = members
                .iter()
                .filter(|o| o.ordinal != m.ordinal && o.may_serve())
                .count() as i32;
            if others < quorum(replicas) {
                reason = format!(
                    "{} is Ready for the kubelet and the other members that may serve ({others}) \
                     are not a quorum ({})",
                    m.pod,
                    quorum(replicas)
                );
                continue;
            }
        }
        return Restart::Delete {
            pod: m.pod.clone(),
            reason: why.clone(),
        };
    }
    hold(reason)
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    use super::*;
    use crate::crd::MemberStatus;
    use crate::fixtures::{
        node, pod, start_error_pod, unschedulable_pod, waiting_pod, PodState, UNBOUND_CLAIM,
    };
    use crate::policy::testing::*;

    #[test]
    fn nothing_to_do_when_everyone_serves() {
        assert_eq!(
            decide_restart(&healthy(5), 5, now(), MIN, None),
            Restart::Nothing
        );
        // Silent for less than the threshold: not yet.
        let mut ms = healthy(5);
        ms[3] = silent_since(member(3, PodState::Running, None), 30);
        assert_eq!(decide_restart(&ms, 5, now(), MIN, None), Restart::Nothing);
    }

    #[test]
    fn crash_looping_member_is_restarted() {
        let mut ms = healthy(5);
        ms[4] = member(4, PodState::CrashLoop, None);
        assert_eq!(
            decide_restart(&ms, 5, now(), MIN, None),
            Restart::Delete {
                pod: "gg-4".into(),
                reason: "CrashLoopBackOff".into()
            }
        );
    }

    #[test]
    fn silent_running_member_is_restarted_after_the_threshold() {
        let mut ms = healthy(5);
        ms[2] = silent_since(member(2, PodState::Running, None), 90);
        match decide_restart(&ms, 5, now(), MIN, None) {
            Restart::Delete { pod, reason } => {
                assert_eq!(pod, "gg-2");
                assert!(
                    reason.contains(&format!("not answering since {}", ago(90))),
                    "{reason}"
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn one_at_a_time() {
        // Two failing: only the first is chosen.
        let mut ms = healthy(5);
        ms[1] = member(1, PodState::CrashLoop, None);
        ms[3] = member(3, PodState::CrashLoop, None);
        assert!(matches!(
            decide_restart(&ms, 5, now(), MIN, None),
            Restart::Delete { pod, .. } if pod == "gg-1"
        ));
        // While the previous one is being replaced: hold.
        ms[1] = member(1, PodState::Terminating, None);
        assert!(matches!(
            decide_restart(&ms, 5, now(), MIN, None),
            Restart::Hold { reason, .. } if reason.contains("gg-1")
        ));
        ms[1] = member(1, PodState::Absent, None);
        assert!(matches!(
            decide_restart(&ms, 5, now(), MIN, None),
            Restart::Hold { .. }
        ));
        // Recreated, but the last restart was 20 s ago: hold.
        ms[1] = member(1, PodState::Running, None);
        assert!(matches!(
            decide_restart(&ms, 5, now(), MIN, Some(ago(20))),
            Restart::Hold { reason, .. } if reason.contains(&ago(20).to_string())
        ));
        assert!(matches!(
            decide_restart(&ms, 5, now(), MIN, Some(ago(61))),
            Restart::Delete { pod, .. } if pod == "gg-3"
        ));
    }

    #[test]
    fn never_takes_away_the_last_quorum() {
        // 3 members: gg-0 serves, gg-1 is Ready for the kubelet but silent to the operator,
        // gg-2 is still starting. Deleting gg-1 could leave one member that may serve.
        let ms = vec![
            member(0, PodState::Ready, Some("leader")),
            silent_since(member(1, PodState::Ready, None), 300),
            member(2, PodState::Running, Some("looking")),
        ];
        assert!(matches!(
            decide_restart(&ms, 3, now(), MIN, None),
            Restart::Hold { pod, reason } if pod == "gg-1" && reason.contains("not a quorum")
        ));
        // With gg-2 serving too, gg-1 may go.
        let mut ms = ms;
        ms[2] = member(2, PodState::Ready, Some("follower"));
        assert!(matches!(
            decide_restart(&ms, 3, now(), MIN, None),
            Restart::Delete { pod, .. } if pod == "gg-1"
        ));
        // A silent member that is not Ready either takes nothing away.
        let ms = vec![
            member(0, PodState::Ready, Some("looking")),
            silent_since(member(1, PodState::Running, None), 300),
            member(2, PodState::CrashLoop, None),
        ];
        assert!(matches!(
            decide_restart(&ms, 3, now(), MIN, None),
            Restart::Delete { pod, .. } if pod == "gg-1"
        ));
    }

    #[test]
    fn no_restart_of_running_pods_when_nobody_answers_the_operator() {
        let ms: Vec<_> = (0..3)
            .map(|i| silent_since(member(i, PodState::Running, None), 300))
            .collect();
        assert!(matches!(
            decide_restart(&ms, 3, now(), MIN, None),
            Restart::Hold { reason, .. } if reason.contains("operator's own network")
        ));
        // Crash-looping pods still are.
        let mut ms = ms;
        ms[2] = member(2, PodState::CrashLoop, None);
        assert!(matches!(
            decide_restart(&ms, 3, now(), MIN, None),
            Restart::Delete { pod, .. } if pod == "gg-2"
        ));
    }

    #[test]
    fn pods_that_never_started_are_never_restarted() {
        // Every kind of pod that never ran its container, in a 5-member ensemble whose other
        // members serve: none is a restart candidate, however long it has been stuck.
        let stuck = [
            waiting_pod("gg", 4, "ImagePullBackOff", "Back-off pulling image"),
            waiting_pod(
                "gg",
                4,
                "ErrImageNeverPull",
                "not present with pull policy Never",
            ),
            waiting_pod("gg", 4, "CreateContainerConfigError", "configmap not found"),
            unschedulable_pod("gg", 4, UNBOUND_CLAIM, ago(600)),
            start_error_pod("gg", 4),
        ];
        for p in stuck {
            let mut ms = healthy(5);
            ms[4] = silent_since(member_of(p, None), 600);
            assert_eq!(ms[4].failure(now(), MIN), None, "{:?}", ms[4].problem);
            assert_eq!(
                decide_restart(&ms, 5, now(), MIN, None),
                Restart::Nothing,
                "{:?}",
                ms[4].problem
            );
        }
        // Nor when every pod is stuck (a bad image tag at creation).
        let ms: Vec<_> = (0..5)
            .map(|i| member_of(waiting_pod("gg", i, "ErrImageNeverPull", "m"), None))
            .collect();
        assert_eq!(decide_restart(&ms, 5, now(), MIN, None), Restart::Nothing);
        // A Running pod whose container the runtime cannot start again is not "silent".
        let mut ms = healthy(3);
        ms[2] = silent_since(member_of(start_error_pod("gg", 2), None), 600);
        assert!(ms[2].running && !ms[2].crash_loop);
        assert_eq!(decide_restart(&ms, 3, now(), MIN, None), Restart::Nothing);
    }

    #[test]
    fn a_member_is_restarted_once_per_failure() {
        let mut ms = healthy(5);
        ms[2] = member(2, PodState::CrashLoop, None);
        ms[2].restarted_at = Some(ago(300));
        match decide_restart(&ms, 5, now(), MIN, Some(ago(300))) {
            Restart::Hold { pod, reason } => {
                assert_eq!(pod, "gg-2");
                assert!(reason.contains("would not help"), "{reason}");
                assert!(reason.contains("kubectl logs gg-2 --previous"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        // Another failing member still may be restarted.
        ms[3] = member(3, PodState::CrashLoop, None);
        assert!(matches!(
            decide_restart(&ms, 5, now(), MIN, Some(ago(300))),
            Restart::Delete { pod, .. } if pod == "gg-3"
        ));
        // The restart is remembered while the member does not serve, forgotten once it does.
        let restarted = MemberStatus {
            pod: "gg-2".into(),
            restarted_at: Some(Time(ago(300))),
            ..Default::default()
        };
        let p = pod("gg", 2, PodState::CrashLoop);
        let m = MemberView::observe(2, "gg-2".into(), Some(&p), None, Some(&restarted), now());
        assert_eq!(m.restarted_at, Some(ago(300)));
        assert_eq!(m.to_status().restarted_at, Some(Time(ago(300))));
        let p = pod("gg", 2, PodState::Running);
        let n = node("gg-2", "looking", None);
        let m = MemberView::observe(
            2,
            "gg-2".into(),
            Some(&p),
            Some(&n),
            Some(&restarted),
            now(),
        );
        assert_eq!(m.restarted_at, Some(ago(300)), "answering is not serving");
        let p = pod("gg", 2, PodState::Ready);
        let n = node("gg-2", "follower", Some("gg-0"));
        let m = MemberView::observe(
            2,
            "gg-2".into(),
            Some(&p),
            Some(&n),
            Some(&restarted),
            now(),
        );
        assert_eq!(m.restarted_at, None);
    }
}
