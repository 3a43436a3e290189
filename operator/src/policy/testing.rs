//! Members in every state, for the tests of the decisions.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;

use super::MemberView;
use crate::crd::MemberStatus;
use crate::fixtures::{node, pod, PodState};

pub(super) const MIN: Duration = Duration::from_secs(60);

pub(super) fn now() -> Timestamp {
    Timestamp::from_second(1_800_000_000).unwrap()
}

pub(super) fn ago(secs: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 - secs).unwrap()
}

/// A member from a pod state and the node's answer.
pub(super) fn member(ordinal: usize, state: PodState, role: Option<&str>) -> MemberView {
    let name = format!("gg-{ordinal}");
    let p = pod("gg", ordinal, state);
    let n = role.map(|r| node(&name, r, Some("gg-0")));
    let mut m = MemberView::observe(ordinal, name, Some(&p), n.as_ref(), None, now());
    if state == PodState::Absent {
        m = MemberView::observe(ordinal, m.pod, None, None, None, now());
    }
    m
}

pub(super) fn silent_since(mut m: MemberView, secs: i64) -> MemberView {
    m.not_answering_since = Some(ago(secs));
    m.started_at = Some(ago(secs + 5));
    m
}

pub(super) fn healthy(n: usize) -> Vec<MemberView> {
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

/// A member whose pod is `p` (its node does not answer).
pub(super) fn member_of(p: Pod, previous: Option<&MemberStatus>) -> MemberView {
    let name = p.metadata.name.clone().unwrap();
    let ordinal = name.rsplit('-').next().unwrap().parse().unwrap();
    MemberView::observe(ordinal, name, Some(&p), None, previous, now())
}
