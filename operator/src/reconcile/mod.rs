//! One reconciliation of a GuessGame ([`reconcile`]), step by step:
//! 1. [`observe`]: the StatefulSet and the bootstrap size; the member pods and what their
//!    nodes answer (over gRPC, through the [`Prober`](crate::prober::Prober)); the ensemble's
//!    committed configuration, as its leader knows it;
//! 2. [`apply`]: the owned objects that do not depend on the members (the ConfigMap, the
//!    Services), with server-side apply;
//! 3. [`scale`]: at most one scaling step (a membership change or the StatefulSet's
//!    replicas), then the StatefulSet and the PodDisruptionBudget;
//! 4. [`restart`]: a failed member's pod deleted, if the restart rule allows it;
//! 5. [`status`]: the status, the Events on what changed, and when to look again.

use std::sync::Arc;

use k8s_openapi::jiff::Timestamp;
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};

use crate::controller::Context;
use crate::crd::{GuessGame, GuessGameStatus};
use crate::{Error, Result};

mod apply;
mod observe;
mod restart;
mod scale;
mod status;
#[cfg(test)]
mod tests;

pub use observe::bootstrap_size;

/// What every step of one reconciliation reads: the GuessGame, where it is, what the
/// previous pass wrote, and the time of this pass.
struct Pass<'a> {
    gg: &'a GuessGame,
    ns: &'a str,
    /// The last status written (the watched object may lag behind it), else the watched one.
    previous: GuessGameStatus,
    /// Whole seconds: what the API server stores, so unchanged statuses compare equal.
    now: Timestamp,
}

/// The reconciler.
pub async fn reconcile(gg: Arc<GuessGame>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.count_and_measure();
    ctx.diagnostics.write().await.last_event = Timestamp::now();
    let ns = gg
        .namespace()
        .ok_or_else(|| Error::Invalid("a GuessGame is namespaced".into()))?;
    if gg.meta().deletion_timestamp.is_some() {
        // The owned objects go with it (owner references): nothing to do.
        return Ok(Action::await_change());
    }
    let key = (ns.clone(), gg.name_any());
    let pass = Pass {
        gg: &gg,
        ns: &ns,
        now: Timestamp::from_second(Timestamp::now().as_second()).expect("now is in range"),
        previous: ctx
            .memory(&key)
            .status
            .or_else(|| gg.status.clone())
            .unwrap_or_default(),
    };

    let existing = observe::statefulset(&ctx.client, &pass).await?;
    apply::config_and_services(&ctx.client, &pass, existing.bootstrap).await?;
    let mut members = observe::members(&ctx, &pass, existing.replicas).await?;
    let committed = observe::committed_configuration(&ctx, &pass, &existing, &members).await;
    let scaled = scale::scale(&ctx, &pass, &existing, &members, committed).await?;
    let restarts = restart::restart(&ctx, &pass, &mut members, &scaled).await?;
    let unresponsive_after = ctx.settings.unresponsive_after;
    let status = status::status(
        &pass,
        unresponsive_after,
        &existing,
        &members,
        &scaled,
        restarts,
    );
    status::publish_events(&ctx, &pass, &members.views, &scaled, &status).await;
    let next = status::requeue_after(&ctx.settings, &status);
    status::write(&ctx, &pass, &key, status).await?;

    ctx.remember(key, |m| m.failures = 0);
    Ok(Action::requeue(next))
}
