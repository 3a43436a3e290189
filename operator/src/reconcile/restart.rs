//! Restarting a failed member: its pod deleted (the StatefulSet recreates it) when the
//! restart rule ([`decide_restart`]) allows it.

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, Preconditions};
use kube::runtime::events::EventType;
use kube::ResourceExt;
use tracing::{debug, info};

use super::observe::Members;
use super::scale::Scaled;
use super::Pass;
use crate::controller::Context;
use crate::policy::{decide_restart, Restart};
use crate::Result;

/// The restarts, as the status records them.
pub(super) struct Restarts {
    /// `status.restarts`.
    pub count: i32,
    /// `status.lastRestartTime`.
    pub last: Option<Time>,
    /// Why a restart that is needed was not made (added to the Degraded condition).
    pub held: Option<String>,
}

/// Restarts a failed member, if that is safe — not in a pass that changed the membership
/// (one disruption at a time). The member deleted is marked terminating in `members`.
pub(super) async fn restart(
    ctx: &Context,
    pass: &Pass<'_>,
    members: &mut Members,
    scaled: &Scaled,
) -> Result<Restarts> {
    let (gg, now) = (pass.gg, pass.now);
    let mut restarts = Restarts {
        count: pass.previous.restarts,
        last: pass.previous.last_restart_time.clone(),
        held: None,
    };
    let restart = if scaled.changed_membership {
        Restart::Nothing
    } else {
        decide_restart(
            &members.views,
            scaled.voters,
            now,
            ctx.settings.unresponsive_after,
            restarts.last.as_ref().map(|t| t.0),
        )
    };
    match restart {
        Restart::Nothing => {}
        Restart::Hold { pod, reason } => {
            debug!(guessgame = %gg.name_any(), %pod, "restart held: {reason}");
            restarts.held = Some(format!("restart of {pod} held: {reason}"));
        }
        Restart::Delete { pod, reason } => {
            let uid = pod_of_name(&members.pods, &pod).and_then(|p| p.metadata.uid.clone());
            let params = DeleteParams {
                preconditions: Some(Preconditions {
                    uid,
                    resource_version: None,
                }),
                ..Default::default()
            };
            let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), pass.ns);
            match pods.delete(&pod, &params).await {
                Ok(_) => {
                    restarts.count += 1;
                    restarts.last = Some(Time(now));
                    ctx.metrics.restarts.inc();
                    if let Some(v) = members.views.iter_mut().find(|v| v.pod == pod) {
                        v.terminating = true;
                        v.restarted_at = Some(now);
                    }
                    info!(guessgame = %gg.name_any(), %pod, "restarted member: {reason}");
                    ctx.publish(
                        gg,
                        EventType::Warning,
                        "MemberRestarted",
                        "RestartMember",
                        format!("deleted pod {pod} ({reason}); the StatefulSet recreates it"),
                    )
                    .await;
                }
                // Gone already, or replaced meanwhile: nothing to restart.
                Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(restarts)
}

fn pod_of_name<'a>(pods: &'a [Pod], name: &str) -> Option<&'a Pod> {
    pods.iter()
        .find(|p| p.metadata.name.as_deref() == Some(name))
}
