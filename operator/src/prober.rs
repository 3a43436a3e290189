//! Talking to the members over gRPC: their status, the ensemble's configuration, membership
//! changes ([`Prober`]; [`GrpcProber`] with the client library, a stand-in in tests).

use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;
use guessgame_client::status::{ensemble_status, NodeStatus};
use guessgame_client::{ClientError, Configuration, Reconfig};
use tracing::debug;

/// What the members answered.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Probe {
    /// One answer per member, in the order asked (`role == "unreachable"`: no answer).
    pub nodes: Vec<NodeStatus>,
    /// The leader a majority follows.
    pub leader: Option<String>,
    /// The open round and its target, read from the leader.
    pub round: Option<u64>,
    pub target: Option<u32>,
}

/// Talks to the members (`(node id, host:port)` pairs): their status, the ensemble's
/// configuration, membership changes. A trait so tests can stand in for real nodes.
pub trait Prober: Send + Sync + 'static {
    fn probe(&self, members: Vec<(String, String)>, timeout: Duration)
        -> BoxFuture<'static, Probe>;
    /// The configuration as the leader knows it (`Err`: no leader answered).
    fn configuration(
        &self,
        members: Vec<(String, String)>,
        timeout: Duration,
    ) -> BoxFuture<'static, Result<Configuration, String>>;
    /// One membership change, through the leader; answers once it has committed.
    fn reconfig(
        &self,
        members: Vec<(String, String)>,
        change: Reconfig,
        timeout: Duration,
    ) -> BoxFuture<'static, Result<Configuration, ClientError>>;
}

/// The real thing: gRPC, with the client library.
pub struct GrpcProber;

impl Prober for GrpcProber {
    fn probe(
        &self,
        members: Vec<(String, String)>,
        timeout: Duration,
    ) -> BoxFuture<'static, Probe> {
        async move {
            let ensemble = ensemble_status(&members, timeout).await;
            let mut probe = Probe {
                nodes: ensemble.nodes,
                leader: ensemble.leader,
                ..Default::default()
            };
            if let Some((id, addr)) = probe
                .leader
                .as_ref()
                .and_then(|l| members.iter().find(|(id, _)| id == l))
            {
                match guessgame_client::Client::new(&[(id.clone(), addr.clone())], timeout) {
                    Ok(mut client) => match client.read(false).await {
                        Ok(game) => {
                            probe.round = Some(game.round);
                            probe.target = game.target;
                        }
                        Err(e) => debug!(leader = %id, "reading the game state: {e}"),
                    },
                    Err(e) => debug!(leader = %id, "client for the leader: {e}"),
                }
            }
            probe
        }
        .boxed()
    }

    fn configuration(
        &self,
        members: Vec<(String, String)>,
        timeout: Duration,
    ) -> BoxFuture<'static, Result<Configuration, String>> {
        async move {
            let mut client =
                guessgame_client::Client::new(&members, timeout).map_err(|e| e.message)?;
            let c = client.configuration().await.map_err(|e| e.message)?;
            match &c.leader {
                Some(l) if *l == c.node => Ok(c),
                Some(l) => Err(format!("{} follows {l}, which did not answer", c.node)),
                None => Err(format!("{} knows no leader", c.node)),
            }
        }
        .boxed()
    }

    fn reconfig(
        &self,
        members: Vec<(String, String)>,
        change: Reconfig,
        timeout: Duration,
    ) -> BoxFuture<'static, Result<Configuration, ClientError>> {
        async move {
            guessgame_client::Client::new(&members, timeout)?
                .reconfig(change)
                .await
        }
        .boxed()
    }
}
