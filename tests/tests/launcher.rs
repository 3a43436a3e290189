//! `guessgame-node all`: every configured node as a child process, stopped together.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use guessgame_tests::*;

/// `guessgame-node all` with `args`, for `cluster`'s config.
fn node_all(cluster: &LocalCluster, args: &[&str], stdout: Stdio) -> std::process::Child {
    Command::new(find_binary("guessgame-node").unwrap())
        .arg("all")
        .args(args)
        .arg("--config")
        .arg(&cluster.config_path)
        .stdout(stdout)
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

/// Ctrl-C: it stops its nodes and exits cleanly.
fn interrupt(all: &mut std::process::Child) {
    let ok = Command::new("kill")
        .args(["-INT", &all.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
    let status = all.wait().unwrap();
    assert!(status.success(), "{status}");
}

#[test]
fn node_all_starts_every_configured_node_and_sigint_stops_them() {
    let _turn = serial();
    let rt = runtime();
    let _enter = rt.enter();
    ensure_binaries();
    let cluster = LocalCluster::new(3, None, |_| {}).unwrap();
    let mut all = node_all(&cluster, &[], Stdio::piped());
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let st = rt.block_on(cluster.status());
        if st.leader.is_some() && st.nodes.iter().all(|n| n.role != "unreachable") {
            break;
        }
        assert!(Instant::now() < deadline, "no leader: {st:?}");
        sleep_ms(100);
    }
    // The data files land in the config's data_dir, named like the lab's.
    for id in cluster.ids() {
        assert!(cluster.db_path(&id).exists(), "{id}");
    }
    interrupt(&mut all);
    let out = std::io::read_to_string(all.stdout.take().unwrap()).unwrap();
    assert!(
        out.contains("[node1] started") && out.contains("[node3] stopped"),
        "{out}"
    );
    let st = rt.block_on(cluster.status());
    assert!(st.nodes.iter().all(|n| n.role == "unreachable"), "{st:?}");
}

#[test]
fn node_all_passes_the_snapshot_flags_on_to_every_node() {
    let _turn = serial();
    let rt = runtime();
    let _enter = rt.enter();
    ensure_binaries();
    // The file keeps the defaults (a snapshot every 10,000 entries): only the flags compact.
    let cluster = LocalCluster::new(3, None, |_| {}).unwrap();
    let mut all = node_all(
        &cluster,
        &["--snapshot-every", "5", "--snapshot-retain", "1"],
        Stdio::null(),
    );
    let mut c =
        guessgame_client::Client::new(&cluster.endpoints(), Duration::from_secs(20)).unwrap();
    rt.block_on(async {
        c.write("w", 1).await.unwrap();
        for i in 0..20 {
            c.guess(&format!("g{i}"), i).await.unwrap();
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let st = rt.block_on(cluster.status());
        let compacted = st
            .nodes
            .iter()
            .all(|n| n.log_start > guessgame_client::Zxid::ZERO && n.snapshot >= n.log_start);
        if compacted {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not every node compacted: {st:?}"
        );
        sleep_ms(100);
    }
    interrupt(&mut all);
}
