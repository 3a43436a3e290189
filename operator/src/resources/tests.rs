//! Tests of the owned objects built from a spec, and of member addresses.

use super::*;
use crate::fixtures::guessgame;

#[test]
fn headless_service_publishes_not_ready_addresses() {
    let gg = guessgame("demo", 5);
    let svc = headless_service(&gg);
    assert_eq!(svc.metadata.name.as_deref(), Some("demo-headless"));
    let spec = svc.spec.unwrap();
    assert_eq!(spec.cluster_ip.as_deref(), Some("None"));
    assert_eq!(spec.publish_not_ready_addresses, Some(true));
    assert_eq!(spec.selector.unwrap()[INSTANCE_LABEL], "demo");
    let owner = &svc.metadata.owner_references.unwrap()[0];
    assert_eq!(
        (
            owner.kind.as_str(),
            owner.controller,
            owner.block_owner_deletion
        ),
        ("GuessGame", Some(true), Some(true))
    );
    let client = client_service(&gg).spec.unwrap();
    assert_eq!(client.publish_not_ready_addresses, None);
    assert_eq!(client.ports.unwrap()[0].port, 7100);
}

#[test]
fn statefulset_is_parallel_non_root_with_probes_and_claims() {
    let mut gg = guessgame("demo", 5);
    gg.spec.storage.storage_class_name = Some("fast".into());
    let sts = statefulset(&gg, 5, 5, None);
    let spec = sts.spec;
    assert_eq!(spec.replicas, Some(5));
    assert_eq!(spec.pod_management_policy.as_deref(), Some("Parallel"));
    assert_eq!(spec.service_name.as_deref(), Some("demo-headless"));
    let claims = spec.volume_claim_templates.unwrap();
    let claim = claims[0].spec.as_ref().unwrap();
    assert_eq!(claim.storage_class_name.as_deref(), Some("fast"));
    assert_eq!(
        claim.resources.as_ref().unwrap().requests.as_ref().unwrap()["storage"].0,
        "1Gi"
    );
    let pod = spec.template.spec.unwrap();
    let psc = pod.security_context.unwrap();
    assert_eq!(
        (psc.run_as_non_root, psc.fs_group),
        (Some(true), Some(NODE_UID))
    );
    let c = &pod.containers[0];
    assert_eq!(c.image.as_deref(), Some("guessgame-node:0.1.0"));
    assert_eq!(c.image_pull_policy.as_deref(), Some("IfNotPresent"));
    let csc = c.security_context.as_ref().unwrap();
    assert_eq!(csc.read_only_root_filesystem, Some(true));
    assert_eq!(csc.allow_privilege_escalation, Some(false));
    // Readiness: the kubelet's gRPC probe of the standard health service, service ""
    // (what the node reports for the whole server).
    let readiness = c.readiness_probe.as_ref().unwrap().grpc.as_ref().unwrap();
    assert_eq!(
        (readiness.port, readiness.service.as_deref()),
        (NODE_PORT, None)
    );
    // Liveness and startup: the port, never the quorum.
    for probe in [&c.liveness_probe, &c.startup_probe] {
        let probe = probe.as_ref().unwrap();
        assert!(probe.tcp_socket.is_some() && probe.grpc.is_none());
    }
    let startup = c.startup_probe.as_ref().unwrap();
    assert_eq!(
        startup.period_seconds.unwrap() * startup.failure_threshold.unwrap(),
        300
    );
    assert_eq!(pod.termination_grace_period_seconds, Some(10));
    assert_eq!(pod.enable_service_links, Some(false));
    assert_eq!(pod.automount_service_account_token, Some(false));
    let env: Vec<_> = c
        .env
        .as_ref()
        .unwrap()
        .iter()
        .map(|e| e.name.as_str())
        .collect();
    assert_eq!(env, ["POD_NAME", "POD_NAMESPACE"]);
    assert_eq!(
        c.env_from.as_ref().unwrap()[0]
            .config_map_ref
            .as_ref()
            .unwrap()
            .name,
        "demo-config"
    );
    let mounts: Vec<_> = c
        .volume_mounts
        .as_ref()
        .unwrap()
        .iter()
        .map(|m| m.mount_path.as_str())
        .collect();
    assert_eq!(mounts, ["/data", "/tmp"]);
}

#[test]
fn existing_claim_templates_are_kept() {
    let gg = guessgame("demo", 3);
    let existing = statefulset(&gg, 3, 3, None);
    let mut bigger = gg.clone();
    bigger.spec.storage.size =
        k8s_openapi::apimachinery::pkg::api::resource::Quantity("5Gi".into());
    let sts = statefulset(&bigger, 3, 3, Some(&existing));
    let claims = sts.spec.volume_claim_templates.unwrap();
    assert_eq!(
        claims[0]
            .spec
            .as_ref()
            .unwrap()
            .resources
            .as_ref()
            .unwrap()
            .requests
            .as_ref()
            .unwrap()["storage"]
            .0,
        "1Gi"
    );
}

#[test]
fn config_map_carries_the_pod_settings_and_its_hash_rolls_the_pods() {
    let mut gg = guessgame("demo", 5);
    let data = config_map(&gg, 5).data.unwrap();
    assert_eq!(data["GUESSGAME_REPLICAS"], "5");
    assert_eq!(data["GUESSGAME_SERVICE"], "demo-headless");
    assert_eq!(data["GUESSGAME_PORT"], "7100");
    assert_eq!(data["GUESSGAME_DATA_DIR"], "/data");
    let hash = |gg: &GuessGame| {
        statefulset(gg, 5, 5, None)
            .spec
            .template
            .metadata
            .unwrap()
            .annotations
            .unwrap()[CONFIG_HASH_ANNOTATION]
            .clone()
    };
    let before = hash(&gg);
    assert_eq!(before, hash(&gg));
    // Scaling changes the pod count, not the template.
    let scaled = statefulset(&gg, 5, 7, None);
    assert_eq!(scaled.spec.replicas, Some(7));
    assert_eq!(
        scaled.spec.template.metadata.unwrap().annotations.unwrap()[CONFIG_HASH_ANNOTATION],
        before
    );
    gg.spec.heartbeat_interval_ms = 50;
    assert_ne!(before, hash(&gg));
}

#[test]
fn pdb_keeps_a_quorum() {
    for (replicas, max_unavailable) in [(1, 0), (3, 1), (5, 2), (7, 3), (9, 4)] {
        let gg = guessgame("demo", replicas);
        let spec = pod_disruption_budget(&gg, replicas).spec.unwrap();
        assert_eq!(
            spec.max_unavailable,
            Some(IntOrString::Int(max_unavailable))
        );
        // What stays is always a majority.
        assert!(2 * (replicas - max_unavailable) > replicas);
        assert_eq!(
            spec.unhealthy_pod_eviction_policy.as_deref(),
            Some("AlwaysAllow")
        );
    }
}

#[test]
fn member_addresses() {
    let gg = guessgame("demo", 3);
    assert_eq!(
        MemberAddress::Auto.resolve(&gg, 1, Some("10.1.2.3"), None),
        "10.1.2.3:7100"
    );
    assert_eq!(
        MemberAddress::Auto.resolve(&gg, 1, None, None),
        "demo-1.demo-headless.testns.svc:7100"
    );
    assert_eq!(
        MemberAddress::Dns.resolve(&gg, 2, Some("10.1.2.3"), Some("cluster.local")),
        "demo-2.demo-headless.testns.svc.cluster.local:7100"
    );
    let t: MemberAddress = "127.0.0.1:710{ordinal}".parse().unwrap();
    assert_eq!(t.resolve(&gg, 2, None, None), "127.0.0.1:7102");
    // In the configuration: never the pod IP, and as the nodes compute it.
    assert_eq!(t.config_address(&gg, 3), "127.0.0.1:7103");
    for a in [MemberAddress::Auto, MemberAddress::Dns] {
        assert_eq!(
            a.config_address(&gg, 3),
            "demo-3.demo-headless.testns.svc:7100"
        );
    }
    assert!("nonsense".parse::<MemberAddress>().is_err());
    // A typo in a placeholder would give every member a wrong address: refused when parsed.
    let typo = "{pod}.{namespce}:7100"
        .parse::<MemberAddress>()
        .unwrap_err();
    assert!(typo.contains("unknown placeholder {namespce}"), "{typo}");
    assert!("{pod".parse::<MemberAddress>().is_err());
    let all: MemberAddress = "{pod}/{name}/{service}/{namespace}/{port}/{podIP}"
        .parse()
        .unwrap();
    assert_eq!(
        all.resolve(&gg, 0, Some("10.1.2.3"), None),
        "demo-0/demo/demo-headless/testns/7100/10.1.2.3"
    );
}
