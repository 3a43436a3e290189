//! Scaling and membership changes: at most one step per pass towards `spec.replicas` voters
//! ([`decide_scale`], from the committed configuration), then the StatefulSet and the
//! PodDisruptionBudget applied.

use std::time::Duration;

use guessgame_client::Reconfig;
use k8s_openapi::api::apps::v1::StatefulSet;
use kube::runtime::events::EventType;
use kube::ResourceExt;
use tracing::{info, warn};

use super::apply::{apply, write_status};
use super::observe::{config_members, Committed, Existing, Members};
use super::Pass;
use crate::controller::Context;
use crate::crd::{GuessGame, GuessGameStatus, ScalingStatus};
use crate::policy::{
    decide_scale, replicas_refusal, scaling_status, ConfigMember, MemberView, ScaleInput, ScaleStep,
};
use crate::resources;
use crate::Result;

/// What the scaling step leaves for the restart rule and the status.
pub(super) struct Scaled {
    /// The voters of the committed configuration (after this pass's change).
    pub voters: i32,
    /// Why `spec.replicas` is not applied (an invalid value), if it is not.
    pub refused: Option<String>,
    /// The StatefulSet's replicas, as applied.
    pub statefulset_replicas: i32,
    /// The committed configuration (after this pass's change), if known.
    pub committed: Option<Vec<ConfigMember>>,
    /// `status.scaling`.
    pub scaling: Option<ScalingStatus>,
    /// This pass changed the membership.
    pub changed_membership: bool,
}

/// Takes the next scaling step, if any, and applies the StatefulSet and the
/// PodDisruptionBudget.
pub(super) async fn scale(
    ctx: &Context,
    pass: &Pass<'_>,
    existing: &Existing,
    members: &Members,
    committed: Committed,
) -> Result<Scaled> {
    let gg = pass.gg;
    let mut s = Scaling::new(pass, existing, &members.views, committed.members);
    if s.ongoing.is_none() {
        if let Some(first) = s.step.as_ref().filter(|st| **st != ScaleStep::Steady) {
            announce(ctx, pass, first, s.voters, s.desired).await?;
        }
    }
    // At most one step per pass.
    match s.step.clone() {
        Some(ScaleStep::Resize { replicas }) => {
            s.statefulset = replicas as i32;
        }
        Some(ScaleStep::Add { ordinal }) => {
            let change = Reconfig::Add {
                id: resources::pod_name(gg, ordinal),
                address: ctx.settings.member_address.config_address(gg, ordinal),
            };
            s.changed(change_membership(ctx, pass, &members.to_leader, change).await);
        }
        Some(ScaleStep::Remove { ordinal }) => {
            let change = Reconfig::Remove {
                id: resources::pod_name(gg, ordinal),
            };
            s.changed(change_membership(ctx, pass, &members.to_leader, change).await);
        }
        _ => {}
    }
    if apply_statefulset(ctx, pass, existing, s.statefulset).await? {
        s.step = s.decide();
    }
    // At most the voters that may be lost while a quorum of them stays.
    let pdb = resources::pod_disruption_budget(gg, s.voters);
    apply(&ctx.client, pass.ns, &pdb).await?;
    let scaling = s.status(committed.waiting_for);
    Ok(Scaled {
        voters: s.voters,
        refused: s.refused,
        statefulset_replicas: s.statefulset,
        committed: s.committed,
        scaling,
        changed_membership: s.changed_membership,
    })
}

/// The scaling through one pass: what it knows and what it did so far.
struct Scaling<'a> {
    gg: &'a GuessGame,
    previous: &'a GuessGameStatus,
    /// The voters wanted: `spec.replicas`, unless that is refused.
    desired: usize,
    refused: Option<String>,
    /// Ordinals whose node answers the operator.
    answering: Vec<usize>,
    voters: i32,
    /// The voters before this pass (`from` of a scaling that starts now).
    voters_before: i32,
    /// The scaling under way towards `desired` (one towards another size is a new one).
    ongoing: Option<ScalingStatus>,
    /// The StatefulSet's replicas.
    statefulset: i32,
    committed: Option<Vec<ConfigMember>>,
    /// The next step (`None`: the committed configuration is unknown).
    step: Option<ScaleStep>,
    /// Why this pass's membership change failed.
    failed: Option<String>,
    changed_membership: bool,
}

impl<'a> Scaling<'a> {
    fn new(
        pass: &'a Pass<'_>,
        existing: &Existing,
        views: &[MemberView],
        committed: Option<Vec<ConfigMember>>,
    ) -> Scaling<'a> {
        let previous = &pass.previous;
        let voters = match &committed {
            Some(c) => voters_of(c),
            None if previous.replicas > 0 => previous.replicas,
            None => existing.replicas,
        };
        let requested = pass.gg.spec.replicas;
        let refused = replicas_refusal(requested, voters);
        let desired = if refused.is_some() { voters } else { requested } as usize;
        let mut s = Scaling {
            gg: pass.gg,
            previous,
            desired,
            refused,
            answering: views
                .iter()
                .filter(|v| v.answering())
                .map(|v| v.ordinal)
                .collect(),
            voters,
            voters_before: voters,
            ongoing: previous.scaling.clone().filter(|s| s.to == desired as i32),
            statefulset: existing.replicas,
            committed,
            step: None,
            failed: None,
            changed_membership: false,
        };
        s.step = s.decide();
        s
    }

    /// The next step, from the committed configuration and the StatefulSet's replicas.
    fn decide(&self) -> Option<ScaleStep> {
        self.committed.as_deref().map(|c| {
            decide_scale(&ScaleInput {
                desired: self.desired,
                statefulset: self.statefulset as usize,
                committed: c,
                answering: &self.answering,
            })
        })
    }

    /// Records the outcome of a membership change: the new configuration, or why it failed.
    fn changed(&mut self, outcome: Result<Vec<ConfigMember>, String>) {
        match outcome {
            Ok(members) => {
                self.voters = voters_of(&members);
                self.committed = Some(members);
                // What the status shows: the step after this one.
                self.step = self.decide();
                self.changed_membership = true;
            }
            Err(failed) => self.failed = Some(failed),
        }
    }

    /// `status.scaling`: where the scaling stands after this pass (`None`: steady).
    fn status(&self, waiting_for: Option<String>) -> Option<ScalingStatus> {
        let (voters, desired, previous) = (self.voters, self.desired, self.previous);
        let pod = |o: usize| resources::pod_name(self.gg, o);
        match (&self.committed, &self.step) {
            (Some(_), Some(step)) => {
                scaling_status(step, self.ongoing.as_ref(), voters as usize, desired, pod).map(
                    |mut s| {
                        if self.ongoing.is_none() {
                            s.from = self.voters_before;
                        }
                        if let Some(failed) = &self.failed {
                            s.message = format!("{voters} of {desired} voters; {failed}");
                        }
                        s
                    },
                )
            }
            _ if previous.scaling.is_some()
                || (previous.replicas > 0 && voters != desired as i32) =>
            {
                Some(ScalingStatus {
                    from: previous.scaling.as_ref().map_or(voters, |s| s.from),
                    to: desired as i32,
                    step: "wait leader".into(),
                    message: format!(
                        "{voters} of {desired} voters; waiting for {}",
                        waiting_for
                            .unwrap_or_else(|| "a leader (the committed configuration)".into())
                    ),
                })
            }
            _ => None,
        }
    }
}

fn voters_of(c: &[ConfigMember]) -> i32 {
    c.iter().filter(|m| m.voter).count() as i32
}

/// A new scaling (its first step): logged and announced with a `ScalingStarted` Event. A
/// first step that changes the membership is recorded before it is taken: an operator
/// killed right after it commits then resumes this scaling (same `from`, no second
/// ScalingStarted) instead of starting a new one.
async fn announce(
    ctx: &Context,
    pass: &Pass<'_>,
    first_step: &ScaleStep,
    voters: i32,
    desired: usize,
) -> Result<()> {
    let gg = pass.gg;
    let pod = |o: usize| resources::pod_name(gg, o);
    let first = scaling_status(first_step, None, voters as usize, desired, pod)
        .map(|s| s.step)
        .unwrap_or_default();
    let note = if voters == desired as i32 {
        format!("the StatefulSet does not match the {voters} voters (first step: {first})")
    } else {
        format!(
            "scaling from {voters} to {desired} voters, one member at a time (first step: \
             {first})"
        )
    };
    info!(guessgame = %gg.name_any(), "{note}");
    if matches!(first_step, ScaleStep::Add { .. } | ScaleStep::Remove { .. }) {
        let mut early = gg.status.clone().unwrap_or_default();
        early.scaling = Some(ScalingStatus {
            from: voters,
            to: desired as i32,
            step: first.clone(),
            message: note.clone(),
        });
        write_status(&ctx.client, pass.ns, gg, &early).await?;
    }
    ctx.publish(gg, EventType::Normal, "ScalingStarted", "Scale", note)
        .await;
    Ok(())
}

/// One membership change, through the leader (`to_leader`: the members, the leader first),
/// with an Event: `MemberAdded` or `MemberRemoved` and the committed configuration once it
/// has committed; else why it failed (a `ReconfigFailed` Event once per distinct failure,
/// none while another change is in flight).
async fn change_membership(
    ctx: &Context,
    pass: &Pass<'_>,
    to_leader: &[(String, String)],
    change: Reconfig,
) -> Result<Vec<ConfigMember>, String> {
    let gg = pass.gg;
    let (id, verb) = match &change {
        Reconfig::Add { id, .. } => (id.clone(), "adding"),
        Reconfig::Remove { id } => (id.clone(), "removing"),
    };
    info!(guessgame = %gg.name_any(), ?change, "membership change");
    let timeout =
        Duration::from_millis((gg.spec.election_timeout_ms.max(1) as u64).saturating_mul(20))
            .max(Duration::from_secs(30));
    match ctx
        .prober
        .reconfig(to_leader.to_vec(), change.clone(), timeout)
        .await
    {
        Ok(c) => {
            let members = config_members(&c, &resources::statefulset_name(gg));
            let voters = voters_of(&members);
            let (reason, note) = match change {
                Reconfig::Add { address, .. } => (
                    "MemberAdded",
                    format!(
                        "{id} ({address}) added to the configuration: a voter ({voters} voters)"
                    ),
                ),
                Reconfig::Remove { .. } => (
                    "MemberRemoved",
                    format!(
                        "{id} removed from the configuration ({voters} voters); its pod goes \
                         next"
                    ),
                ),
            };
            info!(guessgame = %gg.name_any(), "{note}");
            ctx.publish(gg, EventType::Normal, reason, "Reconfigure", note)
                .await;
            Ok(members)
        }
        Err(e) => {
            let text = format!("{verb} {id}: {} (trying again)", e.message);
            warn!(guessgame = %gg.name_any(), kind = ?e.kind, "{text}");
            let busy = e.kind == guessgame_client::ErrorKind::ReconfigBusy;
            let reported = pass
                .previous
                .scaling
                .as_ref()
                .is_some_and(|s| s.message.ends_with(&text));
            if !busy && !reported {
                ctx.publish(
                    gg,
                    EventType::Warning,
                    "ReconfigFailed",
                    "Reconfigure",
                    text.clone(),
                )
                .await;
            }
            Err(text)
        }
    }
}

/// Applies the StatefulSet with `replicas`; when that changes its replicas, says so with a
/// `StatefulSetResized` Event and returns true.
async fn apply_statefulset(
    ctx: &Context,
    pass: &Pass<'_>,
    existing: &Existing,
    replicas: i32,
) -> Result<bool> {
    let gg = pass.gg;
    let current: Option<&StatefulSet> = existing.statefulset.as_ref();
    let sts = resources::statefulset(gg, existing.bootstrap, replicas, current);
    apply(&ctx.client, pass.ns, &sts).await?;
    let Some(before) = current
        .and_then(|s| s.spec.replicas)
        .filter(|b| *b != replicas)
    else {
        return Ok(false);
    };
    let sts_name = resources::statefulset_name(gg);
    let note = if replicas > before {
        format!(
            "StatefulSet {sts_name}: {before} -> {replicas} replicas (pod {} for the next member)",
            resources::pod_name(gg, replicas as usize - 1)
        )
    } else {
        format!(
            "StatefulSet {sts_name}: {before} -> {replicas} replicas (pods not in the \
             configuration go)"
        )
    };
    info!(guessgame = %gg.name_any(), "{note}");
    ctx.publish(gg, EventType::Normal, "StatefulSetResized", "Scale", note)
        .await;
    Ok(true)
}
