//! The status of a pass, the Events on what changed since the previous one, and when to look
//! again.

use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};
use tracing::{info, warn};

use super::apply::write_status;
use super::observe::{Existing, Members};
use super::restart::Restarts;
use super::scale::Scaled;
use super::Pass;
use crate::controller::{Context, Settings};
use crate::crd::{condition, GuessGameStatus, MemberStatus};
use crate::policy::{
    condition_values, is_true, problem_note, to_conditions, MemberView, Observation,
};
use crate::Result;

/// The status: the members, the leader and the game, the scaling, the restarts and the
/// conditions. It contains no elapsed times, so that it does not change on every pass.
pub(super) fn status(
    pass: &Pass<'_>,
    unresponsive_after: Duration,
    existing: &Existing,
    members: &Members,
    scaled: &Scaled,
    restarts: Restarts,
) -> GuessGameStatus {
    let (gg, previous, now) = (pass.gg, &pass.previous, pass.now);
    let (views, probe) = (&members.views, &members.probe);
    let leader = probe.leader.clone();
    let leader_node = leader
        .as_ref()
        .and_then(|l| views.iter().find(|v| &v.pod == l))
        .and_then(|v| v.node.clone());
    let values = condition_values(&Observation {
        replicas: scaled.voters,
        refused: scaled.refused.clone(),
        scaling: scaled.scaling.as_ref(),
        members: views,
        leader: leader.as_deref(),
        rolled_out: rolled_out(existing.statefulset.as_ref(), scaled.statefulset_replicas),
        now,
        unresponsive_after,
    });
    let mut conditions = to_conditions(values, &previous.conditions, gg.meta().generation, now);
    if let Some(held) = restarts.held {
        if let Some(c) = conditions
            .iter_mut()
            .find(|c| c.type_ == condition::DEGRADED && c.status == "True")
        {
            c.message = format!("{}; {held}", c.message);
        }
    }
    let membership = |pod: &str| {
        let c = scaled.committed.as_ref()?;
        Some(
            c.iter()
                .find(|m| m.id == pod)
                .map_or("none", |m| if m.voter { "voter" } else { "learner" })
                .to_string(),
        )
    };
    GuessGameStatus {
        observed_generation: gg.meta().generation,
        replicas: scaled.voters,
        bootstrap_replicas: Some(existing.bootstrap),
        scaling: scaled.scaling.clone(),
        ready_replicas: views.iter().filter(|v| v.serving()).count() as i32,
        leader: leader.clone(),
        epoch: match &leader_node {
            Some(n) => Some(n.epoch as i64),
            None => views
                .iter()
                .filter_map(|v| v.node.as_ref().map(|n| n.epoch as i64))
                .max(),
        },
        last_committed: leader_node.as_ref().map(|n| n.last_committed.to_string()),
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
        restarts: restarts.count,
        last_restart_time: restarts.last,
        conditions,
    }
}

fn rolled_out(sts: Option<&StatefulSet>, replicas: i32) -> bool {
    let Some(status) = sts.and_then(|s| s.status.as_ref()) else {
        return false;
    };
    status.updated_replicas.unwrap_or(0) >= replicas
        && status.current_revision.is_some()
        && status.current_revision == status.update_revision
}

/// Events on what changed since the previous pass: the leader, the pod problems, a refused
/// size, the end of a scaling.
pub(super) async fn publish_events(
    ctx: &Context,
    pass: &Pass<'_>,
    views: &[MemberView],
    scaled: &Scaled,
    status: &GuessGameStatus,
) {
    leader_events(ctx, pass, status).await;
    problem_events(ctx, pass, views).await;
    if let Some(message) = &scaled.refused {
        refusal_event(ctx, pass, message).await;
    }
    if let (Some(old), None) = (&pass.previous.scaling, &status.scaling) {
        let note = format!(
            "the ensemble has {} voters (scaled from {}); the StatefulSet has {} pods",
            scaled.voters, old.from, scaled.statefulset_replicas
        );
        info!(guessgame = %pass.gg.name_any(), "{note}");
        ctx.publish(pass.gg, EventType::Normal, "ScalingDone", "Scale", note)
            .await;
    }
}

/// `LeaderElected` or `LeaderLost`, when the leader changed.
async fn leader_events(ctx: &Context, pass: &Pass<'_>, status: &GuessGameStatus) {
    let (gg, previous) = (pass.gg, &pass.previous);
    if status.leader == previous.leader {
        return;
    }
    match (&status.leader, &previous.leader) {
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

/// One Warning Event per distinct pod problem (a new reason for a member's pod).
async fn problem_events(ctx: &Context, pass: &Pass<'_>, views: &[MemberView]) {
    let gg = pass.gg;
    for v in views.iter().filter(|v| !v.terminating) {
        let Some(problem) = &v.problem else { continue };
        let before = pass
            .previous
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
}

/// `ScaleRefused`, when `spec.replicas` is newly refused (or for a new reason).
async fn refusal_event(ctx: &Context, pass: &Pass<'_>, message: &str) {
    let conditions = &pass.previous.conditions;
    let old = conditions
        .iter()
        .find(|c| c.type_ == condition::SCALE_REFUSED);
    if !is_true(conditions, condition::SCALE_REFUSED) || old.is_some_and(|c| c.message != message) {
        warn!(guessgame = %pass.gg.name_any(), "{message}");
        ctx.publish(
            pass.gg,
            EventType::Warning,
            "ScaleRefused",
            "Scale",
            message.to_string(),
        )
        .await;
    }
}

/// While there is no leader (an election, a lost quorum) look again soon, so that the new
/// leader shows within a second or two of its election; while scaling, take the next step
/// soon.
pub(super) fn requeue_after(settings: &Settings, status: &GuessGameStatus) -> Duration {
    if status.leader.is_none() || status.scaling.is_some() {
        settings.requeue.min(Duration::from_secs(1))
    } else {
        settings.requeue
    }
}

/// Writes the status, unless it is unchanged (the status patch would trigger a watch event
/// and another reconciliation for nothing), and remembers it for the next pass.
pub(super) async fn write(
    ctx: &Context,
    pass: &Pass<'_>,
    key: &(String, String),
    status: GuessGameStatus,
) -> Result<()> {
    let unchanged = pass.gg.status.as_ref() == Some(&status)
        || ctx.memory(key).status.as_ref() == Some(&status);
    if !unchanged {
        write_status(&ctx.client, pass.ns, pass.gg, &status).await?;
    }
    ctx.remember(key.clone(), |m| m.status = Some(status));
    Ok(())
}
