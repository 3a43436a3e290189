//! The status conditions (Available, Progressing, Degraded, ScaleRefused, PodsHealthy) from
//! one observation ([`condition_values`]), and their transition times ([`to_conditions`]).

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

use super::members::problem_reason;
use super::MemberView;
use crate::crd::{condition, PodProblem, ScalingStatus};
use crate::resources::quorum;

/// One condition's value, before timestamps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConditionValue {
    pub type_: &'static str,
    pub status: bool,
    pub reason: &'static str,
    pub message: String,
}

/// Everything the conditions depend on.
#[derive(Clone, Debug)]
pub struct Observation<'a> {
    /// The ensemble's size (voters).
    pub replicas: i32,
    /// Why `spec.replicas` is not applied (an invalid value), if it is not.
    pub refused: Option<String>,
    /// The scaling under way.
    pub scaling: Option<&'a ScalingStatus>,
    pub members: &'a [MemberView],
    pub leader: Option<&'a str>,
    /// The StatefulSet's rollout is complete (all pods at the current revision).
    pub rolled_out: bool,
    pub now: Timestamp,
    pub unresponsive_after: Duration,
}

/// Available, Progressing, Degraded and ScaleRefused, from one observation.
pub fn condition_values(o: &Observation) -> Vec<ConditionValue> {
    let ready = o.members.iter().filter(|m| m.serving()).count() as i32;
    let q = quorum(o.replicas);
    let available = o.leader.is_some() && ready >= q;
    let failing: Vec<String> = o
        .members
        .iter()
        .filter_map(
            |m| match (m.failure(o.now, o.unresponsive_after), &m.problem) {
                (Some(why), _) => Some(format!("{}: {why}", m.pod)),
                (None, Some(p)) if m.never_started() && !m.terminating => Some(format!(
                    "{}: {} (not restarted: it never started)",
                    m.pod, p.reason
                )),
                _ => None,
            },
        )
        .collect();
    let stuck = |m: &MemberView| m.never_started() && !m.terminating;
    let starting: Vec<String> = o
        .members
        .iter()
        .filter(|m| !m.serving() && m.failure(o.now, o.unresponsive_after).is_none() && !stuck(m))
        .map(|m| {
            let state = if !m.exists {
                "no pod yet"
            } else if m.terminating {
                "terminating"
            } else if !m.running {
                "pod not running yet"
            } else if m.answering() {
                "not in sync with a leader yet"
            } else {
                "not answering yet"
            };
            format!("{}: {state}", m.pod)
        })
        .collect();

    let available_c = if available {
        ConditionValue {
            type_: condition::AVAILABLE,
            status: true,
            reason: "QuorumReady",
            message: format!(
                "{} leads; {ready} of {} members serve (quorum {q})",
                o.leader.unwrap_or_default(),
                o.replicas
            ),
        }
    } else {
        ConditionValue {
            type_: condition::AVAILABLE,
            status: false,
            reason: if o.leader.is_none() {
                "NoLeader"
            } else {
                "NoQuorum"
            },
            message: format!(
                "{ready} of {} members serve (quorum {q}){}",
                o.replicas,
                if o.leader.is_none() {
                    "; no leader elected"
                } else {
                    ""
                }
            ),
        }
    };
    let progressing = o.scaling.is_some() || !o.rolled_out || !starting.is_empty();
    let progressing_c = if let Some(scaling) = o.scaling {
        ConditionValue {
            type_: condition::PROGRESSING,
            status: true,
            reason: "Scaling",
            message: format!(
                "scaling from {} to {} voters: {}",
                scaling.from, scaling.to, scaling.message
            ),
        }
    } else if progressing {
        ConditionValue {
            type_: condition::PROGRESSING,
            status: true,
            reason: if o.rolled_out {
                "MembersStarting"
            } else {
                "RollingOut"
            },
            message: if starting.is_empty() {
                "the StatefulSet is rolling out".into()
            } else {
                starting.join("; ")
            },
        }
    } else {
        ConditionValue {
            type_: condition::PROGRESSING,
            status: false,
            reason: if failing.is_empty() {
                "Stable"
            } else {
                "Stalled"
            },
            message: if failing.is_empty() {
                format!("all {} members serve", o.replicas)
            } else {
                "no member is starting".into()
            },
        }
    };
    let degraded_c = if !failing.is_empty() {
        ConditionValue {
            type_: condition::DEGRADED,
            status: true,
            reason: "MembersFailing",
            message: failing.join("; "),
        }
    } else if !available && !progressing {
        ConditionValue {
            type_: condition::DEGRADED,
            status: true,
            reason: "NoQuorum",
            message: available_c.message.clone(),
        }
    } else {
        ConditionValue {
            type_: condition::DEGRADED,
            status: false,
            reason: "AsExpected",
            message: String::new(),
        }
    };
    let scale_c = match &o.refused {
        Some(message) => ConditionValue {
            type_: condition::SCALE_REFUSED,
            status: true,
            reason: "InvalidReplicas",
            message: message.clone(),
        },
        None => ConditionValue {
            type_: condition::SCALE_REFUSED,
            status: false,
            reason: "AsRequested",
            message: String::new(),
        },
    };
    let problems: Vec<(&MemberView, &PodProblem)> = o
        .members
        .iter()
        .filter(|m| !m.terminating)
        .filter_map(|m| m.problem.as_ref().map(|p| (m, p)))
        .collect();
    let pods_c = match problems.first() {
        None => ConditionValue {
            type_: condition::PODS_HEALTHY,
            status: true,
            reason: "AsExpected",
            message: String::new(),
        },
        Some((_, first)) => ConditionValue {
            type_: condition::PODS_HEALTHY,
            status: false,
            reason: problem_reason(&first.reason),
            message: problems
                .iter()
                .map(|(m, p)| format!("{}: {}: {}", m.pod, p.reason, p.message))
                .collect::<Vec<_>>()
                .join("; "),
        },
    };
    vec![available_c, progressing_c, degraded_c, scale_c, pods_c]
}

/// Turns values into conditions, keeping `lastTransitionTime` of those whose status did not
/// change.
pub fn to_conditions(
    values: Vec<ConditionValue>,
    previous: &[Condition],
    generation: Option<i64>,
    now: Timestamp,
) -> Vec<Condition> {
    values
        .into_iter()
        .map(|v| {
            let status = if v.status { "True" } else { "False" };
            let since = previous
                .iter()
                .find(|c| c.type_ == v.type_ && c.status == status)
                .map(|c| c.last_transition_time.clone())
                .unwrap_or(Time(now));
            Condition {
                type_: v.type_.into(),
                status: status.into(),
                reason: v.reason.into(),
                message: v.message,
                observed_generation: generation,
                last_transition_time: since,
            }
        })
        .collect()
}

/// True when the condition `type_` is present with status True.
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    conditions
        .iter()
        .any(|c| c.type_ == type_ && c.status == "True")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{unschedulable_pod, waiting_pod, PodState, UNBOUND_CLAIM};
    use crate::policy::testing::*;
    use crate::policy::{replicas_refusal, scaling_status, ScaleStep};

    #[test]
    fn conditions_report_stuck_pods() {
        let mut ms = healthy(5);
        ms[4] = member_of(
            waiting_pod(
                "gg",
                4,
                "ImagePullBackOff",
                "Back-off pulling image \"gg:9\"",
            ),
            None,
        );
        let v = condition_values(&observation(&ms, Some("gg-0")));
        let pods = v.iter().find(|c| c.type_ == "PodsHealthy").unwrap();
        assert_eq!((pods.status, pods.reason), (false, "ImagePullBackOff"));
        assert_eq!(
            pods.message,
            "gg-4: ImagePullBackOff: Back-off pulling image \"gg:9\""
        );
        assert_eq!((v[0].status, v[0].reason), (true, "QuorumReady"));
        assert_eq!((v[2].status, v[2].reason), (true, "MembersFailing"));
        assert!(
            v[2].message
                .contains("gg-4: ImagePullBackOff (not restarted"),
            "{}",
            v[2].message
        );
        // Stuck is not starting.
        assert_eq!((v[1].status, v[1].reason), (false, "Stalled"));
        // Every pod unschedulable for want of a volume: no leader, nothing starting.
        let ms: Vec<_> = (0..3)
            .map(|i| member_of(unschedulable_pod("gg", i, UNBOUND_CLAIM, ago(60)), None))
            .collect();
        let v = condition_values(&observation(&ms, None));
        let pods = v.iter().find(|c| c.type_ == "PodsHealthy").unwrap();
        assert_eq!((pods.status, pods.reason), (false, "VolumeUnbound"));
        assert!(
            pods.message.starts_with("gg-0: VolumeUnbound: 0/1 nodes"),
            "{}",
            pods.message
        );
        assert!(
            pods.message.contains("; gg-2: VolumeUnbound"),
            "{}",
            pods.message
        );
        assert_eq!((v[0].status, v[0].reason), (false, "NoLeader"));
        assert_eq!((v[1].status, v[2].status), (false, true));
        // Healthy pods.
        let ms = healthy(3);
        let v = condition_values(&observation(&ms, Some("gg-0")));
        assert_eq!(
            (v[4].type_, v[4].status, v[4].reason),
            ("PodsHealthy", true, "AsExpected")
        );
    }

    fn values(o: &Observation) -> Vec<(&'static str, bool, &'static str)> {
        condition_values(o)
            .into_iter()
            .map(|c| (c.type_, c.status, c.reason))
            .collect()
    }

    fn observation<'a>(members: &'a [MemberView], leader: Option<&'a str>) -> Observation<'a> {
        Observation {
            replicas: members.len() as i32,
            refused: None,
            scaling: None,
            members,
            leader,
            rolled_out: true,
            now: now(),
            unresponsive_after: MIN,
        }
    }

    #[test]
    fn conditions_of_a_healthy_ensemble() {
        let ms = healthy(5);
        assert_eq!(
            values(&observation(&ms, Some("gg-0"))),
            [
                ("Available", true, "QuorumReady"),
                ("Progressing", false, "Stable"),
                ("Degraded", false, "AsExpected"),
                ("ScaleRefused", false, "AsRequested"),
                ("PodsHealthy", true, "AsExpected"),
            ]
        );
    }

    #[test]
    fn conditions_while_starting_and_rolling_out() {
        let ms: Vec<_> = (0..3).map(|i| member(i, PodState::Pending, None)).collect();
        assert_eq!(
            values(&observation(&ms, None))[..3],
            [
                ("Available", false, "NoLeader"),
                ("Progressing", true, "MembersStarting"),
                ("Degraded", false, "AsExpected"),
            ]
        );
        let ms = healthy(3);
        let mut o = observation(&ms, Some("gg-0"));
        o.rolled_out = false;
        assert_eq!(values(&o)[1], ("Progressing", true, "RollingOut"));
    }

    #[test]
    fn conditions_with_failing_members_and_lost_quorum() {
        let mut ms = healthy(5);
        ms[3] = member(3, PodState::CrashLoop, None);
        let v = condition_values(&observation(&ms, Some("gg-0")));
        assert_eq!(
            (v[0].status, v[2].status, v[2].reason),
            (true, true, "MembersFailing")
        );
        assert!(
            v[2].message.contains("gg-3: CrashLoopBackOff"),
            "{}",
            v[2].message
        );
        // Three of five crash-loop: no quorum.
        ms[1] = member(1, PodState::CrashLoop, None);
        ms[2] = member(2, PodState::CrashLoop, None);
        ms[0] = member(0, PodState::Running, Some("looking"));
        ms[4] = member(4, PodState::Running, Some("looking"));
        let v = values(&observation(&ms, None));
        assert_eq!(v[0], ("Available", false, "NoLeader"));
        assert_eq!(v[2], ("Degraded", true, "MembersFailing"));
    }

    #[test]
    fn an_invalid_size_is_refused_in_a_condition() {
        let ms = healthy(5);
        let mut o = observation(&ms, Some("gg-0"));
        o.refused = replicas_refusal(4, 5);
        let v = condition_values(&o);
        assert_eq!(
            (v[3].type_, v[3].status, v[3].reason),
            ("ScaleRefused", true, "InvalidReplicas")
        );
        assert!(
            v[3].message.contains("spec.replicas = 4"),
            "{}",
            v[3].message
        );
        assert!(v[3].message.contains("stays at 5"), "{}", v[3].message);
        for ok in [1, 3, 5, 7, 9] {
            assert_eq!(replicas_refusal(ok, 5), None);
        }
        for bad in [0, -1, 2, 11] {
            assert!(replicas_refusal(bad, 5).is_some());
        }
    }

    #[test]
    fn scaling_is_progressing() {
        let ms = healthy(3);
        let scaling = scaling_status(&ScaleStep::Add { ordinal: 3 }, None, 3, 5, |o| {
            format!("gg-{o}")
        })
        .unwrap();
        assert_eq!((scaling.from, scaling.to), (3, 5));
        assert_eq!(scaling.step, "add gg-3");
        let mut o = observation(&ms, Some("gg-0"));
        o.scaling = Some(&scaling);
        let v = condition_values(&o);
        assert_eq!((v[1].status, v[1].reason), (true, "Scaling"));
        assert!(
            v[1].message
                .contains("from 3 to 5 voters: 3 of 5 voters; adding gg-3"),
            "{}",
            v[1].message
        );
        assert!(v[0].status, "still available");
        // `from` stays that of the scaling under way.
        let next = scaling_status(
            &ScaleStep::Resize { replicas: 5 },
            Some(&scaling),
            4,
            5,
            |o| format!("gg-{o}"),
        )
        .unwrap();
        assert_eq!((next.from, next.step.as_str()), (3, "statefulset 5"));
        assert_eq!(
            scaling_status(&ScaleStep::Steady, Some(&scaling), 5, 5, |o| o.to_string()),
            None
        );
    }

    #[test]
    fn transition_times_change_only_with_the_status() {
        let ms = healthy(3);
        let first = to_conditions(
            condition_values(&observation(&ms, Some("gg-0"))),
            &[],
            Some(1),
            ago(100),
        );
        let again = to_conditions(
            condition_values(&observation(&ms, Some("gg-0"))),
            &first,
            Some(2),
            now(),
        );
        assert_eq!(again[0].last_transition_time, Time(ago(100)));
        assert_eq!(again[0].observed_generation, Some(2));
        let lost = to_conditions(
            condition_values(&observation(&ms, None)),
            &again,
            Some(2),
            now(),
        );
        assert_eq!(lost[0].status, "False");
        assert_eq!(lost[0].last_transition_time, Time(now()));
        assert!(is_true(&first, "Available") && !is_true(&lost, "Available"));
    }
}
