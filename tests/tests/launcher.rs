//! `guessgame-node all`: every configured node as a child process, stopped together.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use guessgame_tests::*;

#[test]
fn node_all_starts_every_configured_node_and_sigint_stops_them() {
    let _turn = serial();
    let rt = runtime();
    let _enter = rt.enter();
    ensure_binaries();
    let cluster = LocalCluster::new(3, None, |_| {}).unwrap();
    let mut all = Command::new(find_binary("guessgame-node").unwrap())
        .arg("all")
        .arg("--config")
        .arg(&cluster.config_path)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
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
    let ok = Command::new("kill")
        .args(["-INT", &all.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
    let status = all.wait().unwrap();
    assert!(status.success(), "{status}");
    let out = std::io::read_to_string(all.stdout.take().unwrap()).unwrap();
    assert!(
        out.contains("[node1] started") && out.contains("[node3] stopped"),
        "{out}"
    );
    let st = rt.block_on(cluster.status());
    assert!(st.nodes.iter().all(|n| n.role == "unreachable"), "{st:?}");
}
