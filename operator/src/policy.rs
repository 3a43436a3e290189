//! The operator's decisions, as plain functions of what it observed: the next scaling step,
//! which member to restart (if any), the status conditions, the member list.

use std::time::Duration;

use guessgame_client::status::NodeStatus;
use k8s_openapi::api::core::v1::{ContainerStatus, Pod, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

use crate::crd::{condition, MemberStatus, PodProblem, ScalingStatus};
use crate::resources::quorum;

/// How long a pod may stay unschedulable before it counts as a problem: a claim of a class
/// with immediate binding is unbound for a moment while its volume is provisioned.
pub const UNSCHEDULABLE_GRACE: Duration = Duration::from_secs(20);

/// What keeps a pod from running, from its status: the first container (init containers
/// first) that waits for a reason other than starting up, else the scheduler's verdict once
/// the pod has been unschedulable for [`UNSCHEDULABLE_GRACE`]. `ErrImagePull` and
/// `ImagePullBackOff` (which the kubelet alternates between) are both `ImagePullBackOff`; a
/// crash loop of a container that never started (`StartError`: the runtime could not run it)
/// is `StartError`.
pub fn pod_problem(status: &PodStatus, now: Timestamp) -> Option<PodProblem> {
    let containers = status
        .init_container_statuses
        .iter()
        .chain(status.container_statuses.iter())
        .flatten();
    for c in containers {
        if let Some(problem) = container_problem(c) {
            return Some(problem);
        }
    }
    if status.phase.as_deref() != Some("Pending") {
        return None;
    }
    let unschedulable = status.conditions.iter().flatten().find(|c| {
        c.type_ == "PodScheduled"
            && c.status == "False"
            && c.reason.as_deref() == Some("Unschedulable")
    })?;
    let since = unschedulable.last_transition_time.as_ref().map(|t| t.0);
    let long = since.is_none_or(|t| {
        Duration::try_from(now.duration_since(t)).unwrap_or_default() >= UNSCHEDULABLE_GRACE
    });
    if !long {
        return None;
    }
    let message = unschedulable.message.clone().unwrap_or_default();
    let lower = message.to_ascii_lowercase();
    let volume = lower.contains("persistentvolumeclaim")
        || lower.contains("persistent volume")
        || lower.contains("volume node affinity")
        || lower.contains("storageclass");
    Some(PodProblem {
        reason: if volume {
            "VolumeUnbound"
        } else {
            "Unschedulable"
        }
        .into(),
        message,
    })
}

fn container_problem(c: &ContainerStatus) -> Option<PodProblem> {
    let waiting = c.state.as_ref()?.waiting.as_ref()?;
    let reason = waiting.reason.as_deref().unwrap_or_default();
    let message = waiting.message.clone().unwrap_or_default();
    let problem = |reason: &str, message: String| {
        Some(PodProblem {
            reason: reason.into(),
            message,
        })
    };
    match reason {
        "ErrImagePull" | "ImagePullBackOff" => problem("ImagePullBackOff", message),
        "ErrImageNeverPull"
        | "InvalidImageName"
        | "CreateContainerConfigError"
        | "CreateContainerError"
        | "RunContainerError"
        | "PreStartHookError"
        | "PostStartHookError" => problem(reason, message),
        "CrashLoopBackOff" => {
            // Whether the container ever ran: a runtime that cannot start it (exec format,
            // seccomp, a missing binary) reports StartError (ContainerCannotRun with docker).
            let last = c.last_state.as_ref().and_then(|s| s.terminated.as_ref());
            match last {
                Some(t)
                    if matches!(
                        t.reason.as_deref(),
                        Some("StartError" | "ContainerCannotRun")
                    ) =>
                {
                    problem(
                        "StartError",
                        t.message
                            .clone()
                            .filter(|m| !m.is_empty())
                            .unwrap_or(message),
                    )
                }
                _ => problem("CrashLoopBackOff", message),
            }
        }
        _ => None,
    }
}

/// One member (ordinal) as observed in one reconciliation.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MemberView {
    pub ordinal: usize,
    pub pod: String,
    /// The pod exists.
    pub exists: bool,
    /// The pod is being deleted.
    pub terminating: bool,
    /// The pod's phase is Running.
    pub running: bool,
    /// A container of the pod waits in CrashLoopBackOff (after it ran: a container the
    /// runtime cannot start is a `StartError` problem).
    pub crash_loop: bool,
    /// What keeps the pod from running, if anything (kept with its first message while the
    /// reason stays the same, so the status does not change with every kubelet retry).
    pub problem: Option<PodProblem>,
    /// When the operator deleted this member's pod, as long as the member has not served
    /// since (carried over between reconciliations).
    pub restarted_at: Option<Timestamp>,
    /// The pod's Ready condition (the kubelet's gRPC readiness probe: SERVING).
    pub pod_ready: bool,
    /// When the node container last started (else the pod).
    pub started_at: Option<Timestamp>,
    /// What the node answered the operator (`None`: it did not answer).
    pub node: Option<NodeStatus>,
    /// Running but not answering the operator since (carried over between reconciliations).
    pub not_answering_since: Option<Timestamp>,
}

impl MemberView {
    /// Builds the view of member `ordinal` from its pod (if any), the node's answer (if
    /// any), and the member's previous status.
    pub fn observe(
        ordinal: usize,
        pod_name: String,
        pod: Option<&Pod>,
        node: Option<&NodeStatus>,
        previous: Option<&MemberStatus>,
        now: Timestamp,
    ) -> MemberView {
        let status = pod.and_then(|p| p.status.as_ref());
        let running = status.and_then(|s| s.phase.as_deref()) == Some("Running");
        let containers = status
            .and_then(|s| s.container_statuses.as_deref())
            .unwrap_or_default();
        let problem = status.and_then(|s| pod_problem(s, now)).map(|p| {
            match previous.and_then(|m| m.problem.as_ref()) {
                Some(before) if before.reason == p.reason => before.clone(),
                _ => p,
            }
        });
        let crash_loop = problem
            .as_ref()
            .is_some_and(|p| p.reason == "CrashLoopBackOff");
        let pod_ready = status
            .and_then(|s| s.conditions.as_deref())
            .unwrap_or_default()
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True");
        let started_at = containers
            .iter()
            .filter_map(|c| c.state.as_ref()?.running.as_ref()?.started_at.as_ref())
            .map(|t| t.0)
            .max()
            .or_else(|| status.and_then(|s| s.start_time.as_ref()).map(|t| t.0));
        let node = node.filter(|n| n.role != "unreachable").cloned();
        let not_answering_since = (running && node.is_none()).then(|| {
            previous
                .and_then(|p| p.not_answering_since.as_ref())
                .map(|t| t.0)
                .unwrap_or(now)
        });
        let terminating = pod.is_some_and(|p| p.metadata.deletion_timestamp.is_some());
        let mut view = MemberView {
            ordinal,
            pod: pod_name,
            exists: pod.is_some(),
            terminating,
            running,
            crash_loop,
            problem,
            restarted_at: None,
            pod_ready,
            started_at,
            node,
            not_answering_since,
        };
        // A restart is remembered until the member serves again from a pod that stays.
        if !view.serving() || terminating {
            view.restarted_at = previous.and_then(|p| p.restarted_at.as_ref()).map(|t| t.0);
        }
        view
    }

    /// The node answered the operator.
    pub fn answering(&self) -> bool {
        self.node.is_some()
    }

    /// Serving: the leader, or a follower of a leader (what the readiness probe checks).
    pub fn serving(&self) -> bool {
        self.node
            .as_ref()
            .is_some_and(|n| n.role == "leader" || (n.role == "follower" && n.leader.is_some()))
    }

    /// Possibly part of the working quorum: serving as the operator sees it, or Ready as the
    /// kubelet sees it (the operator's own view may be the broken one).
    pub fn may_serve(&self) -> bool {
        !self.terminating && (self.serving() || self.pod_ready)
    }

    /// Since when the running pod has not answered (counted from its last start at the
    /// earliest).
    pub fn silent_since(&self) -> Option<Timestamp> {
        let since = self.not_answering_since?;
        Some(self.started_at.map_or(since, |s| s.max(since)))
    }

    /// How long the running pod has not answered.
    pub fn not_answering_for(&self, now: Timestamp) -> Option<Duration> {
        let since = self.silent_since()?;
        Some(Duration::try_from(now.duration_since(since)).unwrap_or_default())
    }

    /// The pod never ran its container (an image, volume, scheduling or runtime problem):
    /// deleting it cannot help.
    pub fn never_started(&self) -> bool {
        self.problem.as_ref().is_some_and(PodProblem::never_started)
    }

    /// Why this member counts as failed in a way a restart may fix, if it does: a crash
    /// loop, or running without answering. A pod that never started is not (see
    /// [`MemberView::problem`]).
    pub fn failure(&self, now: Timestamp, unresponsive_after: Duration) -> Option<String> {
        if !self.exists || self.terminating || self.never_started() {
            return None;
        }
        if self.crash_loop {
            return Some("CrashLoopBackOff".into());
        }
        // No elapsed time in the text: it goes into the status, which must not change on
        // every pass (each status write triggers another reconciliation).
        match self.not_answering_for(now) {
            Some(d) if d >= unresponsive_after => Some(format!(
                "running but not answering since {} (more than {}s)",
                self.silent_since()
                    .map(|t| t.to_string())
                    .unwrap_or_default(),
                unresponsive_after.as_secs()
            )),
            _ => None,
        }
    }

    /// The member's entry in `status.members`.
    pub fn to_status(&self) -> MemberStatus {
        let role = match (&self.node, self.exists) {
            (Some(n), _) => n.role.clone(),
            (None, false) => "absent".into(),
            (None, true) => "unreachable".into(),
        };
        MemberStatus {
            pod: self.pod.clone(),
            node_id: self
                .node
                .as_ref()
                .map_or_else(|| self.pod.clone(), |n| n.id.clone()),
            role,
            epoch: self.node.as_ref().map_or(0, |n| n.epoch as i64),
            last_zxid: self
                .node
                .as_ref()
                .map_or_else(|| "0:0".into(), |n| n.last_zxid.clone()),
            ready: self.serving(),
            membership: None,
            not_answering_since: self.not_answering_since.map(Time),
            problem: self.problem.clone(),
            restarted_at: self.restarted_at.map(Time),
        }
    }
}

/// A member of the ensemble's committed configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigMember {
    pub id: String,
    /// The StatefulSet ordinal, when the id is `<statefulset>-<ordinal>` (else a member the
    /// operator did not add, which it leaves alone).
    pub ordinal: Option<usize>,
    pub voter: bool,
}

impl ConfigMember {
    /// The member `id` of the StatefulSet `statefulset`.
    pub fn new(id: &str, statefulset: &str, voter: bool) -> ConfigMember {
        let ordinal = guessgame_node::config::split_pod_name(id)
            .filter(|(prefix, _)| *prefix == statefulset)
            .map(|(_, n)| n);
        ConfigMember {
            id: id.into(),
            ordinal,
            voter,
        }
    }
}

/// Everything the next scaling step depends on.
#[derive(Clone, Debug)]
pub struct ScaleInput<'a> {
    /// `spec.replicas`: the voters wanted, `<sts>-0 .. <sts>-<desired-1>`.
    pub desired: usize,
    /// The StatefulSet's replicas now.
    pub statefulset: usize,
    /// The ensemble's committed configuration, as its leader knows it.
    pub committed: &'a [ConfigMember],
    /// Ordinals whose node answers the operator (its pod is up).
    pub answering: &'a [usize],
}

/// The next step of a scaling.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ScaleStep {
    /// The committed configuration is `<sts>-0 .. <sts>-<desired-1>`, all voters, and the
    /// StatefulSet has exactly their pods.
    Steady,
    /// Set the StatefulSet's replicas: one more pod for the next member, or one pod less
    /// after its member was removed (never below the highest member's ordinal + 1).
    Resize { replicas: usize },
    /// The pod of the next member is not up yet.
    WaitForPod { ordinal: usize },
    /// Add this member (a learner first, a voter once caught up; a learner already in the
    /// configuration, from an interrupted add, is promoted the same way).
    Add { ordinal: usize },
    /// Remove this member from the configuration (its pod stays until the next step).
    Remove { ordinal: usize },
}

/// The next step towards `desired` voters, from the committed configuration, so that an
/// interrupted operator resumes where the ensemble is, whatever it had done itself:
/// 1. the StatefulSet never has fewer pods than the highest member's ordinal + 1 (a member
///    without a pod would be a lost voter): grow it back first;
/// 2. pods above both the members and `desired` go (removed members, a reverted growth);
/// 3. members with an ordinal ≥ `desired` are removed, learners first, then the highest
///    ordinal (as long as a member below `desired` remains, so the last voter never goes);
/// 4. a learner below `desired` (an interrupted add) is promoted;
/// 5. the lowest missing ordinal below `desired` is added: its pod first (StatefulSet +1),
///    then, once the node answers, the member.
pub fn decide_scale(input: &ScaleInput) -> ScaleStep {
    let ordinals = || input.committed.iter().filter_map(|m| m.ordinal);
    let floor = ordinals().max().map_or(0, |o| o + 1);
    let (desired, sts) = (input.desired, input.statefulset);
    if sts < floor {
        return ScaleStep::Resize { replicas: floor };
    }
    if sts > floor.max(desired) {
        return ScaleStep::Resize {
            replicas: floor.max(desired),
        };
    }
    let stays = |m: &ConfigMember| m.ordinal.is_some_and(|o| o < desired) || m.ordinal.is_none();
    if input.committed.iter().any(|m| stays(m) && m.voter) {
        let leaving = input
            .committed
            .iter()
            .filter_map(|m| m.ordinal.filter(|o| *o >= desired).map(|o| (m.voter, o)))
            .min_by_key(|(voter, o)| (*voter, std::cmp::Reverse(*o)));
        if let Some((_, ordinal)) = leaving {
            return ScaleStep::Remove { ordinal };
        }
    }
    if let Some(ordinal) = input
        .committed
        .iter()
        .filter(|m| !m.voter)
        .filter_map(|m| m.ordinal.filter(|o| *o < desired))
        .min()
    {
        return ScaleStep::Add { ordinal };
    }
    if let Some(ordinal) = (0..desired).find(|o| !ordinals().any(|m| m == *o)) {
        return if sts <= ordinal {
            ScaleStep::Resize {
                replicas: ordinal + 1,
            }
        } else if !input.answering.contains(&ordinal) {
            ScaleStep::WaitForPod { ordinal }
        } else {
            ScaleStep::Add { ordinal }
        };
    }
    ScaleStep::Steady
}

/// The `status.scaling` block for a step (`None`: steady). `from` is kept from the scaling
/// under way, else the voters now.
pub fn scaling_status(
    step: &ScaleStep,
    previous: Option<&ScalingStatus>,
    voters: usize,
    desired: usize,
    pod: impl Fn(usize) -> String,
) -> Option<ScalingStatus> {
    let (step_text, message) = match step {
        ScaleStep::Steady => return None,
        ScaleStep::Resize { replicas } => (
            format!("statefulset {replicas}"),
            format!("setting the StatefulSet to {replicas} replicas"),
        ),
        ScaleStep::WaitForPod { ordinal } => (
            format!("wait {}", pod(*ordinal)),
            format!(
                "waiting for pod {} to start and answer before adding it",
                pod(*ordinal)
            ),
        ),
        ScaleStep::Add { ordinal } => (
            format!("add {}", pod(*ordinal)),
            format!(
                "adding {} (a learner until it has caught up, then a voter)",
                pod(*ordinal)
            ),
        ),
        ScaleStep::Remove { ordinal } => (
            format!("remove {}", pod(*ordinal)),
            format!("removing {} from the configuration", pod(*ordinal)),
        ),
    };
    Some(ScalingStatus {
        from: previous.map_or(voters as i32, |p| p.from),
        to: desired as i32,
        step: step_text,
        message: format!("{voters} of {desired} voters; {message}"),
    })
}

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

/// The note of the Warning Event about a pod problem: what the kubelet or the scheduler
/// says, and what to do about it. `image` is the node image in the spec, `storage_class` the
/// spec's StorageClass (`None`: the cluster's default).
pub fn problem_note(
    pod: &str,
    problem: &PodProblem,
    image: &str,
    storage_class: Option<&str>,
) -> String {
    let what = match problem.reason.as_str() {
        "ImagePullBackOff" | "ErrImageNeverPull" | "InvalidImageName" => format!(
            "the image {image} cannot be pulled and is not on the node: load it there (kind load \
             docker-image {image}) or set spec.image to an image the nodes have"
        ),
        "VolumeUnbound" => format!(
            "its volume claim data-{pod} is not bound, so the pod cannot be scheduled: \
             {} (kubectl get storageclass; kubectl describe pvc data-{pod})",
            match storage_class {
                Some(class) =>
                    format!("spec.storage.storageClassName is {class:?}; is there such a class?"),
                None => "the claim asks for the default StorageClass; is there one?".into(),
            }
        ),
        "Unschedulable" => format!("no node can take the pod (kubectl describe pod {pod})"),
        "CrashLoopBackOff" => format!(
            "its container keeps exiting (kubectl logs {pod} --previous); the operator \
             restarts a member once per failure"
        ),
        _ => format!("its container cannot be created or started (kubectl describe pod {pod})"),
    };
    let restart = if problem.never_started() {
        "; the operator does not restart a pod that never started"
    } else {
        ""
    };
    format!(
        "pod {pod}: {}: {}; {what}{restart}",
        problem.reason, problem.message
    )
}

/// A problem's reason as a condition reason (those are static strings).
fn problem_reason(reason: &str) -> &'static str {
    const KNOWN: [&str; 12] = [
        "ImagePullBackOff",
        "ErrImageNeverPull",
        "InvalidImageName",
        "VolumeUnbound",
        "Unschedulable",
        "CreateContainerConfigError",
        "CreateContainerError",
        "RunContainerError",
        "PreStartHookError",
        "PostStartHookError",
        "StartError",
        "CrashLoopBackOff",
    ];
    KNOWN
        .into_iter()
        .find(|k| *k == reason)
        .unwrap_or("PodProblem")
}

/// An ensemble size the operator runs: odd, 1 to 9.
pub fn valid_size(voters: i32) -> bool {
    (1..=9).contains(&voters) && voters % 2 == 1
}

/// Why `spec.replicas` cannot be applied, if it cannot: an ensemble has an odd number of
/// voters, 1 to 9 (the CRD's schema refuses other values; an older CRD may not).
pub fn replicas_refusal(requested: i32, replicas: i32) -> Option<String> {
    (!valid_size(requested)).then(|| {
        format!(
            "spec.replicas = {requested} is not applied: an ensemble has an odd number of \
             voters, 1 to 9; it stays at {replicas}"
        )
    })
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
    use crate::fixtures::{
        node, pod, start_error_pod, unschedulable_pod, waiting_pod, PodState, UNBOUND_CLAIM,
    };

    const MIN: Duration = Duration::from_secs(60);

    fn now() -> Timestamp {
        Timestamp::from_second(1_800_000_000).unwrap()
    }
    fn ago(secs: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 - secs).unwrap()
    }

    /// A member from a pod state and the node's answer.
    fn member(ordinal: usize, state: PodState, role: Option<&str>) -> MemberView {
        let name = format!("gg-{ordinal}");
        let p = pod("gg", ordinal, state);
        let n = role.map(|r| node(&name, r, Some("gg-0")));
        let mut m = MemberView::observe(ordinal, name, Some(&p), n.as_ref(), None, now());
        if state == PodState::Absent {
            m = MemberView::observe(ordinal, m.pod, None, None, None, now());
        }
        m
    }
    fn silent_since(mut m: MemberView, secs: i64) -> MemberView {
        m.not_answering_since = Some(ago(secs));
        m.started_at = Some(ago(secs + 5));
        m
    }
    fn healthy(n: usize) -> Vec<MemberView> {
        (0..n)
            .map(|i| {
                member(
                    i,
                    PodState::Ready,
                    Some(if i == 0 { "leader" } else { "follower" }),
                )
            })
            .collect()
    }

    #[test]
    fn observe_reads_the_pod_and_the_node() {
        let m = member(2, PodState::Ready, Some("follower"));
        assert!(m.exists && m.running && m.pod_ready && m.serving() && !m.crash_loop);
        assert_eq!(m.not_answering_since, None);
        let m = member(2, PodState::CrashLoop, None);
        assert!(m.crash_loop && !m.serving());
        let m = member(2, PodState::Running, None);
        assert_eq!(m.not_answering_since, Some(now()), "first seen silent now");
        let previous = MemberStatus {
            not_answering_since: Some(Time(ago(30))),
            ..Default::default()
        };
        let p = pod("gg", 2, PodState::Running);
        let m = MemberView::observe(2, "gg-2".into(), Some(&p), None, Some(&previous), now());
        assert_eq!(m.not_answering_since, Some(ago(30)), "carried over");
        // A looking node answers but does not serve.
        let m = member(1, PodState::Running, Some("looking"));
        assert!(m.answering() && !m.serving());
        assert_eq!(m.to_status().role, "looking");
        let m = member(4, PodState::Absent, None);
        assert_eq!(m.to_status().role, "absent");
    }

    #[test]
    fn silence_is_counted_from_the_last_container_start() {
        let mut m = silent_since(member(1, PodState::Running, None), 600);
        m.started_at = Some(ago(10));
        assert_eq!(m.not_answering_for(now()), Some(Duration::from_secs(10)));
        assert_eq!(m.failure(now(), MIN), None);
    }

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

    /// A member whose pod is `p` (its node does not answer).
    fn member_of(p: Pod, previous: Option<&MemberStatus>) -> MemberView {
        let name = p.metadata.name.clone().unwrap();
        let ordinal = name.rsplit('-').next().unwrap().parse().unwrap();
        MemberView::observe(ordinal, name, Some(&p), None, previous, now())
    }
    fn problem_of(p: Pod) -> Option<(String, String)> {
        pod_problem(p.status.as_ref().unwrap(), now()).map(|p| (p.reason, p.message))
    }

    #[test]
    fn pod_problems_from_the_kubelet_and_the_scheduler() {
        let image = "Back-off pulling image \"guessgame-node:9.9.9\"";
        // ErrImagePull and ImagePullBackOff alternate: one problem.
        for reason in ["ErrImagePull", "ImagePullBackOff"] {
            assert_eq!(
                problem_of(waiting_pod("gg", 1, reason, image)),
                Some(("ImagePullBackOff".into(), image.into()))
            );
        }
        for reason in [
            "ErrImageNeverPull",
            "InvalidImageName",
            "CreateContainerConfigError",
            "CreateContainerError",
            "RunContainerError",
        ] {
            assert_eq!(
                problem_of(waiting_pod("gg", 1, reason, "m")),
                Some((reason.into(), "m".into()))
            );
        }
        // Starting up is not a problem.
        for reason in ["ContainerCreating", "PodInitializing"] {
            assert_eq!(problem_of(waiting_pod("gg", 1, reason, "")), None);
        }
        for state in [PodState::Pending, PodState::Running, PodState::Ready] {
            assert_eq!(problem_of(pod("gg", 1, state)), None, "{state:?}");
        }
        // A crash loop: of a container that ran, or of one the runtime cannot start.
        assert_eq!(
            problem_of(pod("gg", 1, PodState::CrashLoop)).map(|p| p.0),
            Some("CrashLoopBackOff".into())
        );
        let (reason, message) = problem_of(start_error_pod("gg", 1)).unwrap();
        assert_eq!(reason, "StartError");
        assert!(message.contains("executable file not found"), "{message}");
        // Unschedulable: only after the grace period; a claim that cannot bind is named so.
        assert_eq!(
            problem_of(unschedulable_pod("gg", 1, UNBOUND_CLAIM, ago(5))),
            None
        );
        assert_eq!(
            problem_of(unschedulable_pod("gg", 1, UNBOUND_CLAIM, ago(30))),
            Some(("VolumeUnbound".into(), UNBOUND_CLAIM.into()))
        );
        let cpu = "0/1 nodes are available: 1 Insufficient cpu.";
        assert_eq!(
            problem_of(unschedulable_pod("gg", 1, cpu, ago(30))),
            Some(("Unschedulable".into(), cpu.into()))
        );
    }

    #[test]
    fn a_problem_keeps_its_first_message_while_its_reason_stays() {
        let first = member_of(
            waiting_pod("gg", 2, "ErrImagePull", "failed to pull: no such host"),
            None,
        );
        assert!(first.never_started() && !first.crash_loop);
        let again = member_of(
            waiting_pod("gg", 2, "ImagePullBackOff", "Back-off pulling image"),
            Some(&first.to_status()),
        );
        assert_eq!(again.problem, first.problem);
        assert_eq!(
            again.to_status(),
            first.to_status(),
            "the status does not flap"
        );
        let other = member_of(
            waiting_pod("gg", 2, "ErrImageNeverPull", "not present"),
            Some(&first.to_status()),
        );
        assert_eq!(other.problem.unwrap().message, "not present");
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

    #[test]
    fn problem_notes_say_what_to_do() {
        let problem = |reason: &str| PodProblem {
            reason: reason.into(),
            message: "kubelet says".into(),
        };
        let note = problem_note(
            "demo-3",
            &problem("ErrImageNeverPull"),
            "guessgame-node:9",
            None,
        );
        assert!(
            note.starts_with("pod demo-3: ErrImageNeverPull: kubelet says; "),
            "{note}"
        );
        assert!(
            note.contains("kind load docker-image guessgame-node:9"),
            "{note}"
        );
        assert!(
            note.contains("does not restart a pod that never started"),
            "{note}"
        );
        let note = problem_note("demo-0", &problem("VolumeUnbound"), "i", Some("nope"));
        assert!(note.contains("data-demo-0"), "{note}");
        assert!(note.contains("storageClassName is \"nope\""), "{note}");
        let note = problem_note("demo-0", &problem("CrashLoopBackOff"), "i", None);
        assert!(!note.contains("never started"), "{note}");
        assert_eq!(problem_reason("SomethingNew"), "PodProblem");
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

    fn config(members: &[(usize, bool)]) -> Vec<ConfigMember> {
        members
            .iter()
            .map(|(o, voter)| ConfigMember::new(&format!("gg-{o}"), "gg", *voter))
            .collect()
    }
    fn voters(n: usize) -> Vec<ConfigMember> {
        config(&(0..n).map(|o| (o, true)).collect::<Vec<_>>())
    }
    fn step(desired: usize, sts: usize, committed: &[ConfigMember], up: &[usize]) -> ScaleStep {
        decide_scale(&ScaleInput {
            desired,
            statefulset: sts,
            committed,
            answering: up,
        })
    }

    #[test]
    fn config_member_ordinals() {
        assert_eq!(ConfigMember::new("gg-3", "gg", true).ordinal, Some(3));
        assert_eq!(ConfigMember::new("gg-10", "gg", true).ordinal, Some(10));
        assert_eq!(ConfigMember::new("gg-0", "gg", true).ordinal, Some(0));
        for other in ["gg-03", "gg-", "gg3", "other-1", "gg-x", "ggg-1"] {
            assert_eq!(
                ConfigMember::new(other, "gg", true).ordinal,
                None,
                "{other}"
            );
        }
    }

    #[test]
    fn steady_when_the_configuration_and_the_statefulset_match() {
        for n in [1, 3, 5] {
            assert_eq!(
                step(n, n, &voters(n), &(0..n).collect::<Vec<_>>()),
                ScaleStep::Steady
            );
        }
    }

    #[test]
    fn scale_up_walks_one_member_at_a_time() {
        use ScaleStep::*;
        let all: Vec<usize> = (0..5).collect();
        // 3 -> 5: a pod, wait for it, add it; again.
        assert_eq!(step(5, 3, &voters(3), &all[..3]), Resize { replicas: 4 });
        assert_eq!(step(5, 4, &voters(3), &all[..3]), WaitForPod { ordinal: 3 });
        assert_eq!(step(5, 4, &voters(3), &all[..4]), Add { ordinal: 3 });
        assert_eq!(step(5, 4, &voters(4), &all[..4]), Resize { replicas: 5 });
        assert_eq!(step(5, 5, &voters(4), &all[..4]), WaitForPod { ordinal: 4 });
        assert_eq!(step(5, 5, &voters(4), &all), Add { ordinal: 4 });
        assert_eq!(step(5, 5, &voters(5), &all), Steady);
    }

    #[test]
    fn scale_down_removes_the_highest_ordinal_then_its_pod() {
        use ScaleStep::*;
        let all: Vec<usize> = (0..5).collect();
        assert_eq!(step(3, 5, &voters(5), &all), Remove { ordinal: 4 });
        assert_eq!(step(3, 5, &voters(4), &all), Resize { replicas: 4 });
        assert_eq!(step(3, 4, &voters(4), &all), Remove { ordinal: 3 });
        assert_eq!(step(3, 4, &voters(3), &all), Resize { replicas: 3 });
        assert_eq!(step(3, 3, &voters(3), &all), Steady);
        // Down to one.
        assert_eq!(step(1, 3, &voters(3), &all), Remove { ordinal: 2 });
        assert_eq!(step(1, 2, &voters(2), &all), Remove { ordinal: 1 });
        assert_eq!(step(1, 2, &voters(1), &all), Resize { replicas: 1 });
    }

    #[test]
    fn an_interrupted_operator_resumes_from_the_committed_configuration() {
        use ScaleStep::*;
        let all: Vec<usize> = (0..7).collect();
        // A half-done add: gg-3 is a learner. Still growing: promote it.
        let half = config(&[(0, true), (1, true), (2, true), (3, false)]);
        assert_eq!(step(5, 4, &half, &all), Add { ordinal: 3 });
        // ... even when its node does not answer the operator (the leader decides).
        assert_eq!(step(5, 4, &half, &all[..3]), Add { ordinal: 3 });
        // Reverted to 3 meanwhile: the learner goes first.
        assert_eq!(step(3, 4, &half, &all), Remove { ordinal: 3 });
        // A learner is removed before a higher voter.
        let mixed = config(&[(0, true), (1, true), (2, true), (3, true), (4, false)]);
        assert_eq!(step(3, 5, &mixed, &all), Remove { ordinal: 4 });
        let mixed = config(&[(0, true), (1, true), (2, true), (3, false), (4, true)]);
        assert_eq!(step(3, 5, &mixed, &all), Remove { ordinal: 3 });
        // A member above `desired` is removed before the StatefulSet shrinks, and the
        // StatefulSet is never below the highest member's ordinal + 1.
        assert_eq!(step(3, 5, &voters(5), &all), Remove { ordinal: 4 });
        assert_eq!(step(3, 3, &voters(5), &all), Resize { replicas: 5 });
        assert_eq!(step(5, 2, &voters(3), &all), Resize { replicas: 3 });
        // A pod left over from a reverted growth goes.
        assert_eq!(step(3, 4, &voters(3), &all), Resize { replicas: 3 });
        // A hole (gg-1 removed by hand) is filled before the next ordinal.
        let hole = config(&[(0, true), (2, true), (3, true)]);
        assert_eq!(step(5, 4, &hole, &all), Add { ordinal: 1 });
        assert_eq!(step(5, 4, &hole, &[0, 2, 3]), WaitForPod { ordinal: 1 });
    }

    #[test]
    fn the_last_voter_is_never_removed() {
        use ScaleStep::*;
        let all: Vec<usize> = (0..7).collect();
        // Only members above `desired` (an odd history): add below first.
        let high = config(&[(3, true), (4, true), (5, true)]);
        assert_eq!(step(3, 6, &high, &all), Add { ordinal: 0 });
        // Learners below `desired` do not count as staying voters.
        let high = config(&[(0, false), (3, true)]);
        assert_eq!(step(1, 4, &high, &all), Add { ordinal: 0 });
        // Members the operator did not add (not `<sts>-<n>`) are left alone, and count as
        // staying voters.
        let foreign = vec![
            ConfigMember::new("outsider", "gg", true),
            ConfigMember::new("gg-0", "gg", true),
            ConfigMember::new("gg-1", "gg", true),
            ConfigMember::new("gg-2", "gg", true),
        ];
        assert_eq!(step(3, 3, &foreign, &all), Steady);
        assert_eq!(step(1, 3, &foreign, &all), Remove { ordinal: 2 });
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
