//! A member as the operator sees it in one pass ([`MemberView`]: its pod and what its node
//! answered), and what keeps a pod from running ([`pod_problem`]) with the Event note saying
//! what to do about it ([`problem_note`]).

use std::time::Duration;

use guessgame_client::status::NodeStatus;
use guessgame_client::{Role, Zxid};
use k8s_openapi::api::core::v1::{ContainerStatus, Pod, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use crate::crd::{MemberStatus, PodProblem};

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
        let node = node.filter(|n| n.role != Role::Unreachable).cloned();
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
        self.node.as_ref().is_some_and(|n| {
            n.role == Role::Leader || (n.role == Role::Follower && n.leader.is_some())
        })
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
            (Some(n), _) => n.role.to_string(),
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
                .map_or_else(Zxid::default, |n| n.last_zxid)
                .to_string(),
            ready: self.serving(),
            membership: None,
            not_answering_since: self.not_answering_since.map(Time),
            problem: self.problem.clone(),
            restarted_at: self.restarted_at.map(Time),
        }
    }
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
pub(super) fn problem_reason(reason: &str) -> &'static str {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{
        pod, start_error_pod, unschedulable_pod, waiting_pod, PodState, UNBOUND_CLAIM,
    };
    use crate::policy::testing::*;

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
}
