use super::*;

#[test]
fn default_is_five_local_nodes_with_majority_quorum() {
    let c = Config::default();
    c.validate().unwrap();
    assert_eq!(c.ids(), ["node1", "node2", "node3", "node4", "node5"]);
    assert_eq!(c.quorum(), 3);
    assert_eq!(c.address_of("node2"), Some("127.0.0.1:7102"));
}

#[test]
fn quorum_that_is_not_a_majority_is_refused() {
    let mut c = Config {
        quorum_size: Some(2),
        ..Default::default()
    };
    let err = c.validate().unwrap_err().to_string();
    assert!(err.contains("not a majority"), "{err}");
    c.quorum_size = Some(6);
    assert!(c.validate().is_err());
    c.quorum_size = Some(4);
    c.validate().unwrap();
}

#[test]
fn snapshot_settings_come_from_the_file_and_bad_ones_are_refused() {
    let text = "snapshot_every = 500\nsnapshot_retain = 50\n[[nodes]]\nid='a'\naddress='h:1'\n";
    let c: Config = toml::from_str(text).unwrap();
    c.validate().unwrap();
    let p = c.snapshot_policy();
    assert_eq!((p.every_entries, p.retain_entries), (500, 50));
    let d = Config::default().snapshot_policy();
    assert_eq!(d, guessgame_core::SnapshotPolicy::default());
    assert_eq!(
        Config::default().max_peer_message_bytes,
        64 << 20,
        "the peer message limit stays 64 MiB unless configured"
    );
    let zero = Config {
        snapshot_every: 0,
        ..Default::default()
    };
    let err = zero.validate().unwrap_err().to_string();
    assert!(
        err.contains("snapshot_every (--snapshot-every) must be at least 1"),
        "{err}"
    );
    let huge = Config {
        snapshot_retain: MAX_SNAPSHOT_RETAIN + 1,
        ..Default::default()
    };
    let err = huge.validate().unwrap_err().to_string();
    assert!(err.contains("snapshot_retain"), "{err}");
    // Keeping no entries below a snapshot is allowed (every follower behind it gets SNAP).
    Config {
        snapshot_retain: 0,
        ..Default::default()
    }
    .validate()
    .unwrap();
}

#[test]
fn a_lowered_peer_message_limit_shrinks_the_catch_up_pieces_to_fit() {
    let text = "max_peer_message_bytes = 65536\n[[nodes]]\nid='a'\naddress='h:1'\n";
    let c: Config = toml::from_str(text).unwrap();
    c.validate().unwrap();
    let p = c.snapshot_policy();
    assert_eq!((p.chunk_bytes, p.diff_bytes), (16 << 10, 16 << 10));
    assert_eq!(
        p.every_entries,
        guessgame_core::SnapshotPolicy::default().every_entries
    );
    for bad in [0, MIN_PEER_MESSAGE_BYTES - 1, MAX_PEER_MESSAGE_BYTES + 1] {
        let c = Config {
            max_peer_message_bytes: bad,
            ..Default::default()
        };
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("max_peer_message_bytes"), "{bad}: {err}");
    }
}

#[test]
fn command_line_overrides_replace_the_file_settings_and_are_validated() {
    let mut c = Config::default();
    c.override_with(&Overrides {
        snapshot_every: Some(40),
        snapshot_retain: None,
        max_peer_message_bytes: Some(1 << 20),
    })
    .unwrap();
    assert_eq!(c.snapshot_every, 40);
    assert_eq!(
        c.snapshot_retain,
        guessgame_core::SnapshotPolicy::default().retain_entries
    );
    assert_eq!(c.max_peer_message_bytes, 1 << 20);
    let err = c
        .override_with(&Overrides {
            snapshot_every: Some(0),
            ..Overrides::default()
        })
        .unwrap_err()
        .to_string();
    assert!(err.contains("--snapshot-every"), "{err}");
}

#[test]
fn toml_round_trips_and_unknown_keys_are_errors() {
    let c = Config::local(3, 9000);
    let back: Config = toml::from_str(&c.to_toml()).unwrap();
    assert_eq!(back, c);
    let text = "heartbeat_interval_ms = 100\nbogus = 1\n[[nodes]]\nid='a'\naddress='h:1'\n";
    assert!(toml::from_str::<Config>(text).is_err());
}

#[test]
fn unknown_node_error_lists_the_known_ones() {
    let err = Config::default().node("node9").unwrap_err().to_string();
    assert!(
        err.contains("node9") && err.contains("node1, node2"),
        "{err}"
    );
}

fn pod(vars: &[(&str, &str)], hostname: Option<&str>) -> Result<Option<PodSettings>, ConfigError> {
    let vars: Vec<(String, String)> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    PodSettings::from_vars(
        |name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()),
        hostname.map(str::to_string),
    )
}

#[test]
fn pod_mode_is_off_without_replicas() {
    assert_eq!(pod(&[("POD_NAME", "gg-0")], Some("gg-0")).unwrap(), None);
    assert_eq!(pod(&[("GUESSGAME_REPLICAS", " ")], None).unwrap(), None);
}

#[test]
fn pod_derives_its_id_and_peers_from_the_statefulset() {
    let p = pod(
        &[
            ("GUESSGAME_REPLICAS", "5"),
            ("POD_NAME", "demo-game-3"),
            ("POD_NAMESPACE", "games"),
            ("GUESSGAME_SERVICE", "demo-game-headless"),
        ],
        Some("ignored-7"),
    )
    .unwrap()
    .unwrap();
    assert_eq!(p.node_id(), Some("demo-game-3"));
    assert_eq!((p.statefulset.as_str(), p.ordinal), ("demo-game", Some(3)));
    assert_eq!(p.listen_address(), "0.0.0.0:7100");
    let c = p.config().unwrap();
    assert_eq!(
        c.ids(),
        [
            "demo-game-0",
            "demo-game-1",
            "demo-game-2",
            "demo-game-3",
            "demo-game-4"
        ]
    );
    assert_eq!(
        c.address_of("demo-game-0"),
        Some("demo-game-0.demo-game-headless.games.svc:7100")
    );
    assert_eq!(c.quorum(), 3);
    // Timing defaults as in the TOML file.
    assert_eq!(
        (c.heartbeat_interval_ms, c.election_timeout_ms),
        (100, 1000)
    );
    c.node("demo-game-3").unwrap();
}

#[test]
fn pod_past_the_bootstrap_size_is_outside_the_configuration_but_has_an_address() {
    let p = pod(
        &[
            ("GUESSGAME_REPLICAS", "3"),
            ("POD_NAME", "gg-4"),
            ("POD_NAMESPACE", "games"),
        ],
        None,
    )
    .unwrap()
    .unwrap();
    let c = p.config().unwrap();
    assert_eq!(c.ids(), ["gg-0", "gg-1", "gg-2"]);
    assert!(c.address_of("gg-4").is_none());
    assert_eq!(p.address(4).unwrap(), "gg-4.gg-headless.games.svc:7100");
}

#[test]
fn pod_name_falls_back_to_the_hostname_and_service_to_sts_headless() {
    let p = pod(&[("GUESSGAME_REPLICAS", "3"), ("HOSTNAME", "gg-2")], None)
        .unwrap()
        .unwrap();
    assert_eq!(p.node_id(), Some("gg-2"));
    // No namespace: the short name resolves through the pod's DNS search path.
    assert_eq!(p.address(1).unwrap(), "gg-1.gg-headless:7100");
    let p = pod(&[("GUESSGAME_REPLICAS", "3")], Some("gg-1"))
        .unwrap()
        .unwrap();
    assert_eq!(p.node_id(), Some("gg-1"));
}

#[test]
fn cluster_domain_port_and_timing_come_from_the_environment() {
    let p = pod(
        &[
            ("GUESSGAME_REPLICAS", "3"),
            ("POD_NAME", "gg-0"),
            ("POD_NAMESPACE", "ns"),
            ("GUESSGAME_PORT", "9000"),
            ("GUESSGAME_CLUSTER_DOMAIN", "example.internal."),
            ("GUESSGAME_HEARTBEAT_INTERVAL_MS", "50"),
            ("GUESSGAME_ELECTION_TIMEOUT_MS", "700"),
            ("GUESSGAME_REQUEST_TIMEOUT_MS", "3000"),
        ],
        None,
    )
    .unwrap()
    .unwrap();
    let c = p.config().unwrap();
    assert_eq!(
        c.address_of("gg-2"),
        Some("gg-2.gg-headless.ns.svc.example.internal:9000")
    );
    assert_eq!(p.listen_address(), "0.0.0.0:9000");
    assert_eq!(
        (
            c.heartbeat_interval_ms,
            c.election_timeout_ms,
            c.request_timeout_ms
        ),
        (50, 700, 3000)
    );
}

#[test]
fn peer_template_placeholders() {
    let p = pod(
        &[
            ("GUESSGAME_REPLICAS", "3"),
            ("POD_NAME", "gg-1"),
            ("POD_NAMESPACE", "ns"),
            (
                "GUESSGAME_PEER_TEMPLATE",
                "{pod}.{service}.{namespace}.svc.{domain}:{port}",
            ),
        ],
        None,
    )
    .unwrap()
    .unwrap();
    assert_eq!(
        p.address(2).unwrap(),
        "gg-2.gg-headless.ns.svc.cluster.local:7100"
    );
    // Loopback ensembles (tests): one port per ordinal.
    let p = pod(
        &[
            ("GUESSGAME_REPLICAS", "3"),
            ("POD_NAME", "gg-1"),
            ("GUESSGAME_PEER_TEMPLATE", "127.0.0.1:710{ordinal}"),
        ],
        None,
    )
    .unwrap()
    .unwrap();
    assert_eq!(
        p.config().unwrap().address_of("gg-2"),
        Some("127.0.0.1:7102")
    );
    for (template, expect) in [
        ("{pod}:{bogus}", "unknown placeholder {bogus}"),
        ("{pod:7100", "unclosed"),
        ("{pod}.{namespace}:1", "set $POD_NAMESPACE"),
    ] {
        let err = pod(
            &[
                ("GUESSGAME_REPLICAS", "3"),
                ("POD_NAME", "gg-1"),
                ("GUESSGAME_PEER_TEMPLATE", template),
            ],
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains(expect), "{template}: {err}");
    }
}

#[test]
fn bad_pod_environments_are_refused_with_a_reason() {
    let cases: &[(&[(&str, &str)], &str)] = &[
        (
            &[("GUESSGAME_REPLICAS", "4"), ("POD_NAME", "gg-0")],
            "odd number",
        ),
        (
            &[("GUESSGAME_REPLICAS", "11"), ("POD_NAME", "gg-0")],
            "odd number",
        ),
        (
            &[("GUESSGAME_REPLICAS", "five"), ("POD_NAME", "gg-0")],
            "not a valid number",
        ),
        (
            &[("GUESSGAME_REPLICAS", "3"), ("POD_NAME", "gg")],
            "not a StatefulSet pod name",
        ),
        (
            &[("GUESSGAME_REPLICAS", "3"), ("POD_NAME", "gg-01")],
            "not a StatefulSet pod",
        ),
        (&[("GUESSGAME_REPLICAS", "3")], "set $POD_NAME"),
        (
            &[
                ("GUESSGAME_REPLICAS", "3"),
                ("POD_NAME", "gg-0"),
                ("GUESSGAME_STATEFULSET", "other"),
            ],
            "does not belong",
        ),
        (
            &[
                ("GUESSGAME_REPLICAS", "3"),
                ("POD_NAME", "gg-0"),
                ("GUESSGAME_PORT", "0"),
            ],
            "must not be 0",
        ),
        (
            &[
                ("GUESSGAME_REPLICAS", "3"),
                ("POD_NAME", "gg-0"),
                ("GUESSGAME_HEARTBEAT_INTERVAL_MS", "600"),
            ],
            "at least twice",
        ),
    ];
    for (vars, expect) in cases {
        let err = pod(vars, None).unwrap_err().to_string();
        assert!(err.contains(expect), "{vars:?}: {err}");
    }
}

#[test]
fn a_client_outside_the_pods_needs_only_the_statefulset_name() {
    // A hostname that is not a pod of this StatefulSet is ignored.
    let p = pod(
        &[
            ("GUESSGAME_REPLICAS", "3"),
            ("GUESSGAME_STATEFULSET", "gg"),
            ("POD_NAMESPACE", "ns"),
        ],
        Some("laptop-1"),
    )
    .unwrap()
    .unwrap();
    assert_eq!(p.node_id(), None);
    assert_eq!(p.config().unwrap().ids(), ["gg-0", "gg-1", "gg-2"]);
}
