//! Observing the cluster: the StatefulSet and the bootstrap size, the member pods and what
//! their nodes answer, and the ensemble's committed configuration.

use guessgame_client::{Configuration, MemberKind};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};
use tracing::debug;

use super::Pass;
use crate::controller::Context;
use crate::policy::{replicas_refusal, valid_size, ConfigMember, MemberView};
use crate::prober::Probe;
use crate::resources;
use crate::{Error, Result};

/// The StatefulSet as this pass found it, and the sizes that follow from it.
pub(super) struct Existing {
    /// `None`: the GuessGame is being created.
    pub statefulset: Option<StatefulSet>,
    /// The size the ensemble was created with (see [`bootstrap_size`]): it never changes.
    pub bootstrap: i32,
    /// The pods: as many as the StatefulSet has (the scaling steps change that), else the
    /// bootstrap size.
    pub replicas: i32,
}

/// The StatefulSet and the bootstrap size. At creation, an invalid size fails the
/// reconciliation (there is no ensemble to keep at its size).
pub(super) async fn statefulset(client: &Client, pass: &Pass<'_>) -> Result<Existing> {
    let (gg, ns, previous) = (pass.gg, pass.ns, &pass.previous);
    let statefulsets: Api<StatefulSet> = Api::namespaced(client.clone(), ns);
    let existing = statefulsets
        .get_opt(&resources::statefulset_name(gg))
        .await?;
    let existing_cm = match previous.bootstrap_replicas {
        Some(_) => None,
        None => {
            Api::<ConfigMap>::namespaced(client.clone(), ns)
                .get_opt(&resources::config_map_name(gg))
                .await?
        }
    };
    let bootstrap = bootstrap_size(
        previous.bootstrap_replicas,
        existing_cm.as_ref(),
        previous.replicas,
        existing.as_ref(),
        gg.spec.replicas,
    );
    if existing.is_none() {
        if let Some(refused) = replicas_refusal(bootstrap, bootstrap) {
            return Err(Error::Invalid(refused));
        }
    }
    let replicas = existing
        .as_ref()
        .and_then(|s| s.spec.replicas)
        .unwrap_or(bootstrap);
    Ok(Existing {
        statefulset: existing,
        bootstrap,
        replicas,
    })
}

/// The size the ensemble was created with (`GUESSGAME_REPLICAS`, only the bootstrap
/// configuration): as recorded in the status, else in the ConfigMap, else (a status written
/// by an operator that did not scale) the recorded size, else the StatefulSet's replicas,
/// else the spec (creation).
pub fn bootstrap_size(
    recorded: Option<i32>,
    config_map: Option<&ConfigMap>,
    old_recorded: i32,
    statefulset: Option<&StatefulSet>,
    spec: i32,
) -> i32 {
    let valid = |r: &i32| valid_size(*r);
    recorded
        .filter(valid)
        .or_else(|| {
            config_map
                .and_then(|c| c.data.as_ref()?.get("GUESSGAME_REPLICAS")?.parse().ok())
                .filter(valid)
        })
        .or(Some(old_recorded).filter(valid))
        .or_else(|| statefulset.and_then(|s| s.spec.replicas).filter(valid))
        .unwrap_or(spec)
}

/// The members as observed in this pass.
pub(super) struct Members {
    /// The GuessGame's pods (by its selector).
    pub pods: Vec<Pod>,
    /// What the members answered.
    pub probe: Probe,
    /// One per pod of the StatefulSet, by ordinal.
    pub views: Vec<MemberView>,
    /// The members' `(node id, host:port)`, the leader first: it answers for the
    /// configuration and makes the changes.
    pub to_leader: Vec<(String, String)>,
}

/// The member pods `0..replicas` and what their nodes answer.
pub(super) async fn members(ctx: &Context, pass: &Pass<'_>, replicas: i32) -> Result<Members> {
    let (gg, settings) = (pass.gg, &ctx.settings);
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), pass.ns);
    let pod_list = pods
        .list(&ListParams::default().labels(&resources::pod_selector(gg)))
        .await?
        .items;
    let count = replicas as usize;
    let pod_of = |ordinal: usize| {
        let name = resources::pod_name(gg, ordinal);
        pod_list
            .iter()
            .find(|p| p.metadata.name.as_deref() == Some(&name))
    };
    let targets: Vec<(String, String)> = (0..count)
        .map(|i| {
            let ip = pod_of(i).and_then(|p| p.status.as_ref()?.pod_ip.as_deref());
            (
                resources::pod_name(gg, i),
                settings
                    .member_address
                    .resolve(gg, i, ip, settings.cluster_domain.as_deref()),
            )
        })
        .collect();
    let probe = ctx
        .prober
        .probe(targets.clone(), settings.probe_timeout)
        .await;
    let views: Vec<MemberView> = (0..count)
        .map(|i| {
            let pod = resources::pod_name(gg, i);
            let before = pass.previous.members.iter().find(|m| m.pod == pod);
            MemberView::observe(i, pod, pod_of(i), probe.nodes.get(i), before, pass.now)
        })
        .collect();
    let mut to_leader = targets;
    if let Some(l) = &probe.leader {
        to_leader.sort_by_key(|(id, _)| id != l);
    }
    Ok(Members {
        pods: pod_list,
        probe,
        views,
        to_leader,
    })
}

/// The ensemble's committed configuration, as its leader knows it: what the scaling steps
/// follow.
pub(super) struct Committed {
    /// `None`: unknown (no StatefulSet yet, no leader, or the leader did not tell).
    pub members: Option<Vec<ConfigMember>>,
    /// Why it is unknown although there is a leader.
    pub waiting_for: Option<String>,
}

/// Asks the leader for the committed configuration (once the StatefulSet exists).
pub(super) async fn committed_configuration(
    ctx: &Context,
    pass: &Pass<'_>,
    existing: &Existing,
    members: &Members,
) -> Committed {
    let gg = pass.gg;
    let mut committed = Committed {
        members: None,
        waiting_for: None,
    };
    if existing.statefulset.is_some() && members.probe.leader.is_some() {
        match ctx
            .prober
            .configuration(members.to_leader.clone(), ctx.settings.probe_timeout * 2)
            .await
        {
            Ok(c) => committed.members = Some(config_members(&c, &resources::statefulset_name(gg))),
            Err(e) => {
                debug!(guessgame = %gg.name_any(), "no configuration: {e}");
                committed.waiting_for = Some(format!("the leader's configuration ({e})"));
            }
        }
    }
    committed
}

/// The members of a configuration's committed part.
pub(super) fn config_members(c: &Configuration, statefulset: &str) -> Vec<ConfigMember> {
    c.committed_members
        .iter()
        .map(|m| ConfigMember::new(&m.id, statefulset, m.kind == MemberKind::Voter))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::guessgame;

    #[test]
    fn bootstrap_size_prefers_the_record_then_the_config_map() {
        let gg = guessgame("demo", 3);
        let sts = resources::statefulset(&gg, 3, 5, None);
        let cm = resources::config_map(&gg, 3);
        assert_eq!(bootstrap_size(Some(3), Some(&cm), 5, Some(&sts), 7), 3);
        assert_eq!(bootstrap_size(None, Some(&cm), 5, Some(&sts), 7), 3);
        // A status of an operator that did not scale: its size is the bootstrap size.
        assert_eq!(bootstrap_size(None, None, 5, Some(&sts), 7), 5);
        assert_eq!(bootstrap_size(None, None, 0, Some(&sts), 7), 5);
        assert_eq!(bootstrap_size(None, None, 0, None, 7), 7);
    }
}
