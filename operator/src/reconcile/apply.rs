//! Server-side apply, as the operator's field manager: the owned objects and the status.

use std::fmt::Debug;

use k8s_openapi::NamespaceResourceScope;
use kube::api::{Api, Patch, PatchParams};
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::Pass;
use crate::crd::{GuessGame, GuessGameStatus, API_VERSION, KIND};
use crate::resources::{self, FIELD_MANAGER};
use crate::Result;

/// The owned objects that do not depend on the members — the ConfigMap (of the bootstrap
/// size) and the Services — every time (server-side apply: a no-op when nothing changed).
pub(super) async fn config_and_services(
    client: &Client,
    pass: &Pass<'_>,
    bootstrap: i32,
) -> Result<()> {
    let (gg, ns) = (pass.gg, pass.ns);
    apply(client, ns, &resources::config_map(gg, bootstrap)).await?;
    apply(client, ns, &resources::headless_service(gg)).await?;
    apply(client, ns, &resources::client_service(gg)).await?;
    Ok(())
}

/// Server-side apply of an owned object, as the operator's field manager.
pub(super) async fn apply<K>(client: &Client, ns: &str, obj: &K) -> Result<K>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + Debug
        + DeserializeOwned
        + Serialize,
{
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    let name = obj.meta().name.clone().unwrap_or_default();
    Ok(api
        .patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(obj),
        )
        .await?)
}

/// Server-side apply of the whole status (a partial one would drop the fields it omits).
pub(super) async fn write_status(
    client: &Client,
    ns: &str,
    gg: &GuessGame,
    status: &GuessGameStatus,
) -> Result<()> {
    let api: Api<GuessGame> = Api::namespaced(client.clone(), ns);
    let patch = Patch::Apply(serde_json::json!({
        "apiVersion": API_VERSION,
        "kind": KIND,
        "status": status,
    }));
    api.patch_status(
        &gg.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &patch,
    )
    .await?;
    Ok(())
}
