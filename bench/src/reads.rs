//! The read workloads: C closed-loop readers spread round-robin over the members (as the
//! writers are), each reading a small value through its own connection — local reads
//! (served by the member asked) and linearizable reads (confirmed by the leader).

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use indicatif::ProgressBar;
use serde::{Deserialize, Serialize};

use crate::load::{closed_loop, LoadResult, Reads};
use crate::systems::Ensemble;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReadKind {
    /// guessgame `Read(linearizable=false)`, ZooKeeper `getData`, etcd serializable `Range`.
    Local,
    /// guessgame `Read(linearizable=true)`, etcd linearizable `Range`; for ZooKeeper
    /// `sync` + `getData`, which is not linearizable (the report says so).
    Linearizable,
}

impl ReadKind {
    pub fn label(self) -> &'static str {
        match self {
            ReadKind::Local => "local",
            ReadKind::Linearizable => "linearizable",
        }
    }
}

/// One (system, read kind, C) point.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ReadRun {
    pub kind: ReadKind,
    /// What one read is on this system.
    pub op: String,
    /// Whether that read is linearizable (false for ZooKeeper's sync + getData).
    pub linearizable: bool,
    pub run: LoadResult,
}

/// Whether `system`'s read of `kind` is linearizable.
pub fn is_linearizable(system: &str, kind: ReadKind) -> bool {
    kind == ReadKind::Linearizable && system != "zookeeper"
}

/// One read window of `clients` readers of `kind`.
#[allow(clippy::too_many_arguments)]
pub async fn window<E: Ensemble>(
    ens: &E,
    system: &str,
    kind: ReadKind,
    clients: usize,
    warmup: Duration,
    window: Duration,
    next_op: &Arc<AtomicU64>,
    pb: &ProgressBar,
) -> anyhow::Result<ReadRun> {
    pb.set_message(format!(
        "{system}: connecting {clients} {} readers",
        kind.label()
    ));
    let mut rs = Vec::with_capacity(clients);
    for i in 0..clients {
        rs.push(Reads(ens.reader(i, kind).await?));
    }
    let run = closed_loop(
        rs,
        warmup,
        window,
        next_op,
        pb,
        &format!("{system} {} reads C={clients}", kind.label()),
        None,
    )
    .await;
    Ok(ReadRun {
        kind,
        op: ens.read_op(kind),
        linearizable: is_linearizable(system, kind),
        run,
    })
}
