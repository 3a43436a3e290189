//! Bad input gets a clear error and loses nothing.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use guessgame_tests::*;

#[test]
fn out_of_range_negative_and_non_numeric_values_are_refused_and_write_nothing() {
    let _turn = serial();
    let rt = runtime();
    let _enter = rt.enter();
    let (cluster, _) = started(&rt, 3, |_| {});
    cli_json(&cluster, &["--client-id", "c", "write", "50"]);
    let before = cli_json(&cluster, &["read", "--linearizable"]);
    for (args, expect) in [
        (vec!["write", "101"], "out of range"),
        (vec!["write", "-1"], "out of range"),
        (vec!["guess", "abc"], "not an integer"),
        (vec!["guess", "4.5"], "not an integer"),
        (vec!["--command", "write", "--value", "-7"], "out of range"),
        (vec!["--command", "guess"], "value"),
    ] {
        let o = cli(&cluster, &args);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(expect), "{args:?}: {}", stderr(&o));
    }
    let after = cli_json(&cluster, &["read", "--linearizable"]);
    assert_eq!(before["applied"], after["applied"], "something was written");

    // The node itself refuses out-of-range values (a client that skips the CLI's check).
    let mut c =
        guessgame_client::Client::new(&cluster.endpoints(), Duration::from_secs(5)).unwrap();
    let e = rt.block_on(c.guess("c2", 1000)).unwrap_err();
    assert_eq!(e.kind, guessgame_client::ErrorKind::InvalidArgument, "{e}");
    let e = rt.block_on(c.write("bad id!", 5)).unwrap_err();
    assert_eq!(e.kind, guessgame_client::ErrorKind::InvalidArgument, "{e}");
}

#[test]
fn unknown_node_id_is_a_clear_error() {
    let _turn = serial();
    ensure_binaries();
    let cluster = LocalCluster::new(3, None, |_| {}).unwrap();
    let o = cli(&cluster, &["--node", "node9", "read"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("unknown node \"node9\""),
        "{}",
        stderr(&o)
    );
    let o = Command::new(find_binary("guessgame-node").unwrap())
        .args(["--node-id", "node9", "--config"])
        .arg(&cluster.config_path)
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("unknown node \"node9\""));
}

#[test]
fn garbage_bytes_on_a_node_port_do_not_stop_it() {
    let _turn = serial();
    let rt = runtime();
    let _enter = rt.enter();
    let (cluster, leader) = started(&rt, 3, |_| {});
    for garbage in [
        &b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..],
        &[0xffu8; 4096][..],
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x04\x08\x00\x00\x00\x00\x00",
    ] {
        for id in cluster.ids() {
            let mut s = TcpStream::connect(cluster.address(&id)).unwrap();
            s.set_read_timeout(Some(Duration::from_millis(500)))
                .unwrap();
            let _ = s.write_all(garbage);
            let mut buf = [0u8; 256];
            let _ = s.read(&mut buf);
        }
    }
    let w = cli_json(&cluster, &["--client-id", "c", "write", "42"]);
    assert_eq!(w["target"], 42);
    let st = cli_json(&cluster, &["status"]);
    assert_eq!(st["leader"], leader.as_str());
}

#[test]
fn corrupt_or_foreign_sqlite_file_is_refused_and_left_untouched() {
    let _turn = serial();
    ensure_binaries();
    let cluster = LocalCluster::new(3, None, |_| {}).unwrap();
    std::fs::create_dir_all(cluster.data_dir()).unwrap();
    let path = cluster.db_path("node1");
    let garbage = b"SQLite format 3\x00 but then nothing sensible at all ".repeat(100);
    std::fs::write(&path, &garbage).unwrap();
    let run = || {
        Command::new(find_binary("guessgame-node").unwrap())
            .args(["--node-id", "node1", "--config"])
            .arg(&cluster.config_path)
            .output()
            .unwrap()
    };
    let o = run();
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(!o.status.success());
    assert!(
        err.contains("logs_node1.db")
            && (err.contains("corrupt") || err.contains("not a guessgame log")),
        "{err}"
    );
    assert_eq!(
        std::fs::read(&path).unwrap(),
        garbage,
        "the file was modified"
    );

    // A valid SQLite database of some other application.
    std::fs::remove_file(&path).unwrap();
    let c = rusqlite::Connection::open(&path).unwrap();
    c.execute_batch("CREATE TABLE notes(t TEXT); INSERT INTO notes VALUES ('keep me');")
        .unwrap();
    drop(c);
    let o = run();
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(!o.status.success());
    assert!(err.contains("not a guessgame log"), "{err}");
    let c = rusqlite::Connection::open(&path).unwrap();
    let t: String = c
        .query_row("SELECT t FROM notes", [], |r| r.get(0))
        .unwrap();
    assert_eq!(t, "keep me");
}

#[test]
fn a_quorum_size_that_is_not_a_majority_is_refused_at_start() {
    let _turn = serial();
    ensure_binaries();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.toml");
    std::fs::write(&cfg, "quorum_size = 2\n[[nodes]]\nid='node1'\naddress='127.0.0.1:1'\n[[nodes]]\nid='node2'\naddress='127.0.0.1:2'\n[[nodes]]\nid='node3'\naddress='127.0.0.1:3'\n[[nodes]]\nid='node4'\naddress='127.0.0.1:4'\n[[nodes]]\nid='node5'\naddress='127.0.0.1:5'\n").unwrap();
    let o = Command::new(find_binary("guessgame-node").unwrap())
        .args(["--node-id", "node1", "--data-dir"])
        .arg(dir.path())
        .arg("--config")
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("quorum_size = 2 is not a majority of 5 nodes"),
        "{err}"
    );
    assert!(!dir.path().join("logs_node1.db").exists());
}
