//! Bridge partitions against real processes (issue 14, item 1): the leader is cut from all
//! its followers but one (the bridge), and the four followers still reach each other — a
//! connected majority. Each run measures how long until a write sent only to the four
//! followers commits, and how many epochs the ensemble went through while cut and after
//! healing (a node that sees only a minority must not start elections that disturb the
//! majority's leader).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use guessgame_client::Client;
use serde::Serialize;

use super::cluster::NetCluster;
use super::{checks, current_leader, wait_for_leader, Rng};

/// One bridge cut and its recovery.
#[derive(Clone, Debug, Serialize)]
pub struct BridgeRun {
    pub leader: usize,
    pub bridge: usize,
    /// From the cut to the first committed write through the four followers (None: not
    /// within the run's limit).
    pub recovered_ms: Option<u64>,
    /// Epochs started while cut (the highest epoch a node accepted, before and after).
    pub epochs_while_cut: u64,
    /// Epochs started in the seconds after healing (a working majority left alone: 0).
    pub epochs_after_heal: u64,
}

/// The highest epoch any reachable node has accepted.
async fn max_accepted(c: &NetCluster) -> u64 {
    let st =
        guessgame_client::status::ensemble_status(&c.endpoints(), Duration::from_millis(300)).await;
    st.nodes.iter().map(|n| n.accepted_epoch).max().unwrap_or(0)
}

/// Writes through `through` until one commits or `limit` passes.
async fn write_until_committed(
    through: &[(String, String)],
    limit: Duration,
    started: Instant,
) -> Option<u64> {
    let mut client = Client::new(through, Duration::from_millis(1500)).ok()?;
    let mut k = 0u32;
    while started.elapsed() < limit {
        k += 1;
        if client.write("bridge", k % 101).await.is_ok() {
            return Some(started.elapsed().as_millis() as u64);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    None
}

/// `runs` bridge cuts on one five-node ensemble, each healed and settled before the next.
pub async fn run_bridges(
    out: PathBuf,
    runs: usize,
    seed: u64,
    limit: Duration,
) -> anyhow::Result<Vec<BridgeRun>> {
    let dir = out.join(format!("bridge-{seed}"));
    let _ = std::fs::remove_dir_all(&dir);
    let mut c = NetCluster::new(5, dir)?;
    c.start_all()?;
    let mut rng = Rng::new(seed);
    let mut results = Vec::new();
    for _ in 0..runs {
        let leader = wait_for_leader(&c, Duration::from_secs(30)).await?;
        checks::wait_converged(&c, Duration::from_secs(30)).await?;
        // Something committed in the current epoch before the cut.
        let all = c.endpoints();
        write_until_committed(&all, Duration::from_secs(10), Instant::now())
            .await
            .ok_or_else(|| anyhow::anyhow!("no write commits before the cut"))?;
        let followers: Vec<usize> = (1..=c.n()).filter(|&k| k != leader).collect();
        let bridge = followers[rng.below(followers.len() as u64) as usize];
        let before = max_accepted(&c).await;
        let cut_at = Instant::now();
        for &f in &followers {
            if f != bridge {
                c.net.cut(leader, f)?;
            }
        }
        let through: Vec<(String, String)> =
            followers.iter().map(|&k| all[k - 1].clone()).collect();
        let recovered_ms = write_until_committed(&through, limit, cut_at).await;
        // Let it run cut a little longer: no more elections should follow a recovery.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let while_cut = max_accepted(&c).await;
        c.net.heal()?;
        tokio::time::sleep(Duration::from_millis(3000)).await;
        let after = max_accepted(&c).await;
        let run = BridgeRun {
            leader,
            bridge,
            recovered_ms,
            epochs_while_cut: while_cut.saturating_sub(before),
            epochs_after_heal: after.saturating_sub(while_cut),
        };
        println!(
            "cut node{leader} (leader) from all but node{bridge}: {}; epochs while cut {}, after healing {}; leader now {:?}",
            run.recovered_ms
                .map_or("no write committed".to_string(), |ms| format!("write committed after {ms} ms")),
            run.epochs_while_cut,
            run.epochs_after_heal,
            current_leader(&c).await.map(|k| format!("node{k}")),
        );
        results.push(run);
    }
    c.stop_all();
    Ok(results)
}
