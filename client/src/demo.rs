//! `guessgame demo`: a guided run of the original lab's scenario on a fresh local ensemble.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::cluster::LocalCluster;
use crate::types::Role;
use crate::Client;

fn step(text: &str) {
    println!("\n== {text}");
}

/// `target 50`, or `no target` before the first write.
fn target(t: Option<u32>) -> String {
    match t {
        Some(t) => format!("target {t}"),
        None => "no target".to_string(),
    }
}

async fn show_status(cluster: &LocalCluster) {
    let st = cluster.status().await;
    println!("   leader: {}", st.leader.as_deref().unwrap_or("(none)"));
    for n in st.nodes {
        println!(
            "   {:<6} {:<11} epoch {:<3} last {:<6} committed {}",
            n.id, n.role, n.epoch, n.last_zxid, n.last_committed
        );
    }
}

pub async fn run(dir: Option<PathBuf>) -> anyhow::Result<()> {
    let mut cluster = LocalCluster::new(5, dir, |_| {})?;
    println!(
        "guessgame demo: five nodes on 127.0.0.1, files in {}",
        cluster.dir.display()
    );
    cluster.start_all()?;
    step("electing a leader (bully rule: highest (epoch, last zxid, node id) among a quorum)");
    let leader = cluster.wait_for_leader(Duration::from_secs(20)).await?;
    show_status(&cluster).await;

    step("playing the original lab's scenario, each client on its own node");
    let mut c1 = cluster.client_of("node1", Duration::from_secs(6))?;
    let w = c1.write("client1", 50).await?;
    println!(
        "   client1 @node1: write 50   -> round {} target {} (zxid {})",
        w.round, w.target, w.zxid
    );
    let s = cluster
        .client_of("node2", Duration::from_secs(6))?
        .read(false)
        .await?;
    println!(
        "   client2 @node2: read       -> round {} {}",
        s.round,
        target(s.target)
    );
    for (client, node, value) in [
        ("client3", "node3", 45),
        ("client4", "node4", 55),
        ("client5", "node5", 60),
    ] {
        let g = cluster
            .client_of(node, Duration::from_secs(6))?
            .guess(client, value)
            .await?;
        println!(
            "   {client} @{node}: guess {value}   -> recorded in round {} (zxid {})",
            g.round, g.zxid
        );
    }
    let w = c1.write("client1", 75).await?;
    if let Some(r) = &w.closed {
        println!(
            "   client1 @node1: write 75   -> round {} closed, winner {} with {} (target {}); round {} opens",
            r.round,
            r.winner.as_deref().unwrap_or("-"),
            r.guess.map(|g| g.to_string()).unwrap_or("-".into()),
            r.target,
            w.round
        );
    }
    step("every node sees the same game");
    for id in cluster.ids() {
        let s = cluster
            .client_of(&id, Duration::from_secs(6))?
            .read(true)
            .await?;
        println!(
            "   read --linearizable via {id}: round {} {}, answered by {}",
            s.round,
            target(s.target),
            s.node
        );
    }

    step(&format!("crashing the leader {leader} (SIGKILL)"));
    cluster.kill(&leader)?;
    let killed = Instant::now();
    let survivors: Vec<(String, String)> = cluster
        .endpoints()
        .into_iter()
        .filter(|(id, _)| *id != leader)
        .collect();
    let mut any = Client::new(&survivors, Duration::from_secs(10))?;
    let g = any
        .guess("client2", 70)
        .await
        .context("guess after the crash")?;
    println!(
        "   first write after the crash committed {} ms later by {} (zxid {})",
        killed.elapsed().as_millis(),
        g.leader,
        g.zxid
    );
    show_status(&cluster).await;

    step("the game goes on");
    let w = any.write("client1", 20).await?;
    if let Some(r) = &w.closed {
        println!(
            "   write 20 -> round {} won by {} with {}; round {} target {}",
            r.round,
            r.winner.as_deref().unwrap_or("-"),
            r.guess.map(|g| g.to_string()).unwrap_or("-".into()),
            w.round,
            w.target
        );
    }

    step(&format!(
        "restarting {leader}: it rejoins as a follower and catches up"
    ));
    cluster.start(&leader)?;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let st = cluster.status().await;
        let me = st.nodes.iter().find(|n| n.id == leader).cloned();
        let leader_now = st
            .nodes
            .iter()
            .find(|n| Some(&n.id) == st.leader.as_ref())
            .cloned();
        if let (Some(me), Some(l)) = (me, leader_now) {
            if me.role == Role::Follower && me.last_committed == l.last_committed {
                break;
            }
        }
        if Instant::now() > deadline {
            anyhow::bail!("{leader} did not catch up in 15 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let s = cluster
        .client_of(&leader, Duration::from_secs(6))?
        .read(false)
        .await?;
    println!(
        "   read via {leader}: round {} {}",
        s.round,
        target(s.target)
    );
    show_status(&cluster).await;

    step("stopping the ensemble");
    cluster.kill_all();
    println!("   done. Try it by hand: `guessgame-node all` in one terminal, `guessgame status` in another.");
    Ok(())
}
