//! `guessgame-node all`: starts every configured node as a child process (the original
//! lab's `start_all_nodes.py`), prefixes their output with the node id, and stops them all
//! on Ctrl-C or when one of them fails. A node that exits cleanly (it was removed from the
//! ensemble with `guessgame reconfig remove`) just leaves; the others go on.

use std::path::PathBuf;
use std::process::Stdio;

use anyhow::Context;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use guessgame_wire::config::{Config, Overrides};

pub async fn run_all(
    config: &Config,
    config_path: Option<PathBuf>,
    data_dir: Option<PathBuf>,
    overrides: &Overrides,
) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("finding guessgame-node's own path")?;
    let mut children: Vec<(String, Child)> = Vec::new();
    for node in &config.nodes {
        let mut cmd = Command::new(&exe);
        cmd.arg("--node-id").arg(&node.id);
        if let Some(p) = &config_path {
            cmd.arg("--config").arg(p);
        }
        if let Some(d) = &data_dir {
            cmd.arg("--data-dir").arg(d);
        }
        // What the command line set over the file, as the children's own flags.
        for (flag, value) in [
            ("--snapshot-every", overrides.snapshot_every),
            ("--snapshot-retain", overrides.snapshot_retain),
            ("--max-peer-message-bytes", overrides.max_peer_message_bytes),
        ] {
            if let Some(v) = value {
                cmd.arg(flag).arg(v.to_string());
            }
        }
        cmd.stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting {}", node.id))?;
        println!(
            "[{}] started (pid {}) on {}",
            node.id,
            child.id().unwrap_or(0),
            node.address
        );
        for stream in [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let id = node.id.clone();
            tokio::spawn(async move {
                let mut lines = BufReader::new(stream).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    println!("[{id}] {line}");
                }
            });
        }
        children.push((node.id.clone(), child));
    }
    println!("all {} nodes started; Ctrl-C stops them", children.len());

    let mut exited = None;
    while !children.is_empty() {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {
                println!("stopping all nodes");
                break;
            }
            (id, status) = first_exit(&mut children) => {
                children.retain(|(c, _)| *c != id);
                if status.success() {
                    println!("[{id}] left the ensemble (exit status 0); the others go on");
                } else {
                    exited = Some((id, status));
                    break;
                }
            }
        }
    }
    for (id, child) in &mut children {
        if let Some(pid) = child.id() {
            // SIGTERM first: the nodes shut down gracefully.
            let _ = std::process::Command::new("kill")
                .arg("-TERM")
                .arg(pid.to_string())
                .status();
        }
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), child.wait()).await;
        let _ = child.kill().await;
        println!("[{id}] stopped");
    }
    match exited {
        Some((id, status)) => anyhow::bail!("{id} exited ({status}); stopped the others"),
        None => Ok(()),
    }
}

async fn first_exit(children: &mut [(String, Child)]) -> (String, std::process::ExitStatus) {
    loop {
        for (id, child) in children.iter_mut() {
            if let Ok(Some(status)) = child.try_wait() {
                return (id.clone(), status);
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}
