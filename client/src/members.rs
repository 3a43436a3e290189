//! Membership: who is in the ensemble (`guessgame members`) and changing it one member at a
//! time (`guessgame reconfig add|remove`), always through the leader.

use std::time::Duration;

use guessgame_wire::proto::{self as pb, reconfig_request::Change};
use serde::Serialize;
use tokio::time::{sleep, Instant};

use crate::client::{Client, ClientError, ErrorKind, Resend};
use crate::status::{ensemble_status, NodeStatus};
use crate::types::{MemberKind, Zxid};

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MemberInfo {
    pub id: String,
    pub address: String,
    /// `voter` or `learner`.
    pub kind: MemberKind,
}

impl From<pb::Member> for MemberInfo {
    fn from(m: pb::Member) -> Self {
        MemberInfo {
            id: m.id,
            address: m.address,
            kind: if m.voter {
                MemberKind::Voter
            } else {
                MemberKind::Learner
            },
        }
    }
}

/// The configuration as one node knows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Configuration {
    /// The node that answered, and the leader it knows.
    pub node: String,
    pub leader: Option<String>,
    /// The configuration in use: the zxid of its log entry (`0:0`: only the bootstrap one is
    /// known) and its members.
    pub config: Zxid,
    pub members: Vec<MemberInfo>,
    /// The latest committed configuration (differs while a change is in flight).
    pub committed_config: Zxid,
    pub committed_members: Vec<MemberInfo>,
}

impl Configuration {
    pub fn voters(&self) -> impl Iterator<Item = &MemberInfo> {
        self.members.iter().filter(|m| m.kind == MemberKind::Voter)
    }
    pub fn learners(&self) -> impl Iterator<Item = &MemberInfo> {
        self.members
            .iter()
            .filter(|m| m.kind == MemberKind::Learner)
    }
    /// `(id, address)` of every member, for [`ensemble_status`].
    pub fn endpoints(&self) -> Vec<(String, String)> {
        self.members
            .iter()
            .map(|m| (m.id.clone(), m.address.clone()))
            .collect()
    }
}

/// `guessgame members`: the configuration plus each member's own view.
#[derive(Clone, Debug, Serialize)]
pub struct MembersReport {
    #[serde(flatten)]
    pub configuration: Configuration,
    /// Voters in the configuration and the majority they need.
    pub voters: usize,
    pub quorum: usize,
    /// Each member's role, epoch and zxids as it reports them.
    pub nodes: Vec<NodeStatus>,
}

/// A membership change to make.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reconfig {
    /// Add `id` at `address`: as a learner, then as a voter once it has caught up.
    Add {
        id: String,
        address: String,
    },
    Remove {
        id: String,
    },
}

impl Client {
    /// The configuration, preferably as the leader knows it (a follower may lag): asks the
    /// endpoints in turn, and if the first answer names another leader, asks that one.
    pub async fn configuration(&mut self) -> Result<Configuration, ClientError> {
        let mut config = self.members_rpc().await?;
        if let Some(leader) = config.leader.clone().filter(|l| *l != config.node) {
            if let Some(address) = config
                .members
                .iter()
                .chain(config.committed_members.iter())
                .find(|m| m.id == leader)
                .map(|m| m.address.clone())
            {
                let mut at_leader = Client::new(&[(leader, address)], self.timeout)?;
                if let Ok(c) = at_leader.members_rpc().await {
                    config = c;
                }
            }
        }
        Ok(config)
    }

    /// One `Members` call, to the first endpoint that answers.
    async fn members_rpc(&mut self) -> Result<Configuration, ClientError> {
        let r = self
            .with_failover(Resend::Always, |mut c| async move {
                Ok(Ok(c.members(pb::MembersRequest {}).await?.into_inner()))
            })
            .await?;
        Ok(configuration_of(r))
    }

    /// The configuration and every member's own status.
    pub async fn members_report(&mut self) -> Result<MembersReport, ClientError> {
        let configuration = self.configuration().await?;
        let st = ensemble_status(
            &configuration.endpoints(),
            self.timeout.min(Duration::from_secs(2)),
        )
        .await;
        let voters = configuration.voters().count();
        Ok(MembersReport {
            quorum: guessgame_core::rules::majority(voters),
            voters,
            nodes: st.nodes,
            configuration,
        })
    }

    /// Makes one membership change through the leader and returns the configuration after
    /// it. Repeating a change that already happened is not an error (adding a member that is
    /// a voter, removing one that is gone). While another change is in flight it waits
    /// (within the client's timeout) and tries again.
    pub async fn reconfig(&mut self, change: Reconfig) -> Result<Configuration, ClientError> {
        let req = pb::ReconfigRequest {
            change: Some(match &change {
                Reconfig::Add { id, address } => Change::Add(pb::Member {
                    id: id.clone(),
                    address: address.clone(),
                    voter: true,
                }),
                Reconfig::Remove { id } => Change::Remove(id.clone()),
            }),
            forwarded: false,
        };
        let deadline = Instant::now() + self.timeout;
        loop {
            let result = self
                // Safe to send again: a change is idempotent.
                .with_failover(Resend::Always, |mut c| {
                    let req = req.clone();
                    async move {
                        let r = c.reconfig(req).await?.into_inner();
                        Ok(match r.error {
                            Some(e) => Err(e),
                            None => Ok(r),
                        })
                    }
                })
                .await;
            match result {
                Ok(r) => {
                    let members: Vec<MemberInfo> = r.members.into_iter().map(Into::into).collect();
                    return Ok(Configuration {
                        node: r.leader.clone(),
                        leader: Some(r.leader),
                        config: r.config.into(),
                        committed_config: r.config.into(),
                        committed_members: members.clone(),
                        members,
                    });
                }
                Err(e) if e.kind == ErrorKind::ReconfigBusy && Instant::now() < deadline => {
                    tracing::info!("{}; trying again", e.message);
                    sleep(Duration::from_millis(500)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }
}

fn configuration_of(r: pb::MembersResponse) -> Configuration {
    Configuration {
        node: r.node,
        leader: (!r.leader.is_empty()).then_some(r.leader),
        config: r.config.into(),
        members: r.members.into_iter().map(Into::into).collect(),
        committed_config: r.committed_config.into(),
        committed_members: r.committed_members.into_iter().map(Into::into).collect(),
    }
}
