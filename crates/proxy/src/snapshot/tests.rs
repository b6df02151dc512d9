//! A compile reuses what did not change, and what it makes is what a
//! compile from scratch makes.

use std::fmt::Write as _;

use super::*;
use crate::lb::locality::Local;
use crate::limits::Limits;
use routes::Action;

fn resource(name: &str, kind: Kind) -> pb::Resource {
    pb::Resource {
        name: name.into(),
        kind: Some(kind),
        ..Default::default()
    }
}

/// Service `name` on port 8080 at VIP 10.0.0.`vip`.
fn cluster(name: &str, vip: u8, lb: pb::LoadBalancer) -> pb::Resource {
    resource(
        name,
        Kind::Cluster(pb::Cluster {
            name: name.into(),
            service: format!("{name}.ns.svc.cluster.local"),
            port: 8080,
            addresses: vec![format!("10.0.0.{vip}")],
            lb: lb as i32,
            ..Default::default()
        }),
    )
}

/// `cluster`'s endpoints: 127.0.0.`h`:80 for each `h`.
fn endpoints(cluster: &str, hosts: &[u8]) -> pb::Resource {
    resource(
        cluster,
        Kind::Endpoints(pb::ClusterEndpoints {
            cluster: cluster.into(),
            compact: None,
            endpoints: hosts
                .iter()
                .map(|h| pb::Endpoint {
                    address: format!("127.0.0.{h}"),
                    port: 80,
                    healthy: true,
                    ..Default::default()
                })
                .collect(),
        }),
    )
}

/// Route config "8080": a virtual host per cluster, `timeout_ms` on each route.
fn routes(clusters: &[&str], timeout_ms: u64) -> pb::Resource {
    resource(
        "8080",
        Kind::RouteConfig(pb::RouteConfig {
            name: "8080".into(),
            virtual_hosts: clusters
                .iter()
                .map(|c| pb::VirtualHost {
                    name: format!("{c}:8080"),
                    domains: vec![format!("{c}.ns.svc.cluster.local")],
                    routes: vec![pb::Route {
                        action: Some(pb::route::Action::Forward(pb::RouteAction {
                            clusters: vec![pb::WeightedCluster {
                                cluster: (*c).into(),
                                weight: 100,
                                ..Default::default()
                            }],
                            timeout_ms,
                            ..Default::default()
                        })),
                        ..Default::default()
                    }],
                })
                .collect(),
        }),
    )
}

fn inbound_listener() -> pb::Resource {
    resource(
        "inbound|8080",
        Kind::Listener(pb::Listener {
            name: "inbound|8080".into(),
            address: "127.0.0.1".into(),
            port: 18080,
            direction: pb::Direction::Inbound as i32,
            protocol: pb::Protocol::Http as i32,
            route_config: "inbound|8080".into(),
            ..Default::default()
        }),
    )
}

type Types = BTreeMap<&'static str, Arc<TypeState>>;

fn state(version: &str, resources: &[pb::Resource]) -> TypeState {
    TypeState::new(version, resources).expect("no name twice")
}

fn initial() -> Types {
    let mut t = Types::new();
    t.insert(
        wire::types::CLUSTER,
        Arc::new(state(
            "1",
            &[
                cluster("a", 1, pb::LoadBalancer::LeastRequest),
                cluster("b", 2, pb::LoadBalancer::LeastRequest),
                cluster("c", 3, pb::LoadBalancer::LeastRequest),
            ],
        )),
    );
    t.insert(
        wire::types::ENDPOINTS,
        Arc::new(state(
            "1",
            &[
                endpoints("a", &[1, 2]),
                endpoints("b", &[3, 4]),
                endpoints("c", &[5]),
            ],
        )),
    );
    t.insert(
        wire::types::ROUTE_CONFIG,
        Arc::new(state("1", &[routes(&["a", "b", "c"], 1000)])),
    );
    t.insert(
        wire::types::LISTENER,
        Arc::new(state("1", &[inbound_listener()])),
    );
    t
}

/// `types` with `changed` and `removed` merged into type `t`, as a partial update does.
fn update(types: &Types, t: &'static str, changed: &[pb::Resource], removed: &[&str]) -> Types {
    let mut next = types.clone();
    let removed: Vec<String> = removed.iter().map(|s| s.to_string()).collect();
    next.insert(t, Arc::new(types[t].merge("2", changed, &removed)));
    next
}

fn try_compile(types: &Types, prev: Option<&Snapshot>) -> Result<Compiled, String> {
    let (limits, local) = (Limits::default(), Local::default());
    let env = BuildEnv {
        limits: &limits,
        local: &local,
        mesh_tls: None,
        pod_ip: None,
    };
    compile(types.clone(), None, prev, &env)
}

fn compile_on(types: &Types, prev: Option<&Snapshot>) -> Snapshot {
    try_compile(types, prev).expect("valid").commit()
}

fn keys(c: &Cluster) -> Vec<String> {
    c.endpoints().iter().map(|e| e.key().to_string()).collect()
}

/// Everything a snapshot routes by, as text: equal for equal configs.
/// References to clusters are checked to be the snapshot's own.
fn describe(s: &Snapshot) -> String {
    let mut out = String::new();
    let own = |name: &str, c: &Arc<Cluster>| {
        s.clusters
            .get(name)
            .is_some_and(|mine| Arc::ptr_eq(mine, c))
    };
    let mut clusters: Vec<_> = s.clusters.values().collect();
    clusters.sort_by(|a, b| a.name.cmp(&b.name));
    for c in clusters {
        let eps: Vec<String> = c
            .endpoints()
            .iter()
            .map(|e| format!("{}/{}/{}", e.key(), e.healthy, e.weight))
            .collect();
        let _ = writeln!(
            out,
            "cluster {} {:?} {:?} {:?} {eps:?}",
            c.name, c.balancer, c.protocol, c.breakers.limits
        );
    }
    let mut tables: Vec<_> = s.routes.iter().collect();
    tables.sort_by(|a, b| a.0.cmp(b.0));
    for (name, t) in tables {
        for vh in &t.virtual_hosts {
            for r in &vh.routes {
                let Action::Forward(f) = &r.action else {
                    let _ = writeln!(out, "route {name} {} not forward", vh.name);
                    continue;
                };
                for target in &f.targets {
                    let resolved = target.cluster.as_ref().map(|c| own(&target.name, c));
                    let _ = writeln!(
                        out,
                        "route {name} {} -> {} {resolved:?} {:?}",
                        vh.name, target.name, f.timeout
                    );
                }
            }
        }
    }
    let mut ports: Vec<_> = s.routes_by_port.keys().collect();
    ports.sort();
    let _ = writeln!(out, "ports {ports:?}");
    let mut vips: Vec<_> = s.vips.iter().collect();
    vips.sort_by_key(|(addr, _)| **addr);
    for (addr, v) in vips {
        let _ = writeln!(
            out,
            "vip {addr} -> {} {} {:?}",
            v.cluster.name,
            own(&v.cluster.name, &v.cluster),
            v.protocol
        );
    }
    let _ = writeln!(out, "hosts {:?}", s.hosts);
    let _ = writeln!(out, "listeners {:?}", s.listeners);
    let _ = writeln!(
        out,
        "registry_only {} normalization {:?}",
        s.registry_only, s.path_normalization
    );
    out
}

#[test]
fn an_endpoints_change_replaces_only_that_clusters_endpoints() {
    let t1 = initial();
    let s1 = compile_on(&t1, None);
    let a = s1.clusters["a"].clone();
    let kept = a.endpoints()[0].clone();
    let t2 = update(&t1, wire::types::ENDPOINTS, &[endpoints("a", &[1, 9])], &[]);
    let compiled = try_compile(&t2, Some(&s1)).expect("valid");
    // Nothing in force changes before the commit.
    assert_eq!(keys(&a), ["127.0.0.1:80", "127.0.0.2:80"]);
    let s2 = compiled.commit();
    // The same clusters: the changed one has its new endpoints in place,
    // the state of the endpoint it keeps carried over.
    for name in ["a", "b", "c"] {
        assert!(
            Arc::ptr_eq(&s1.clusters[name], &s2.clusters[name]),
            "{name}"
        );
    }
    assert!(Arc::ptr_eq(&s1.clusters, &s2.clusters));
    assert_eq!(keys(&a), ["127.0.0.1:80", "127.0.0.9:80"]);
    assert!(Arc::ptr_eq(kept.pool(), a.endpoints()[0].pool()));
    assert!(std::ptr::eq(kept.load(), a.endpoints()[0].load()));
    // What holds the clusters is not rebuilt.
    assert!(Arc::ptr_eq(&s1.routes["8080"], &s2.routes["8080"]));
    assert!(Arc::ptr_eq(&s1.vips, &s2.vips));
    assert!(Arc::ptr_eq(&s1.hosts, &s2.hosts));
    assert_eq!(describe(&s2), describe(&compile_on(&t2, None)));

    // Endpoints removed: the cluster has none.
    let t3 = update(&t2, wire::types::ENDPOINTS, &[], &["b"]);
    let s3 = compile_on(&t3, Some(&s2));
    assert!(Arc::ptr_eq(&s2.clusters["b"], &s3.clusters["b"]));
    assert!(keys(&s3.clusters["b"]).is_empty());
    assert_eq!(describe(&s3), describe(&compile_on(&t3, None)));
}

#[test]
fn an_endpoints_update_that_fails_changes_no_cluster() {
    let t1 = initial();
    let s1 = compile_on(&t1, None);
    let bad = resource(
        "b",
        Kind::Endpoints(pb::ClusterEndpoints {
            cluster: "b".into(),
            compact: None,
            endpoints: vec![pb::Endpoint {
                address: "127.0.0.3".into(),
                port: 0,
                ..Default::default()
            }],
        }),
    );
    let t2 = update(
        &t1,
        wire::types::ENDPOINTS,
        &[endpoints("a", &[7]), bad],
        &[],
    );
    let err = try_compile(&t2, Some(&s1))
        .err()
        .expect("port 0 is refused");
    assert!(err.contains("cluster \"b\""), "{err}");
    assert_eq!(keys(&s1.clusters["a"]), ["127.0.0.1:80", "127.0.0.2:80"]);
}

#[test]
fn a_cluster_change_rebuilds_that_cluster_with_its_run_time_state() {
    let t1 = initial();
    let s1 = compile_on(&t1, None);
    let t2 = update(
        &t1,
        wire::types::CLUSTER,
        &[cluster("a", 1, pb::LoadBalancer::RoundRobin)],
        &[],
    );
    let s2 = compile_on(&t2, Some(&s1));
    let (old, new) = (&s1.clusters["a"], &s2.clusters["a"]);
    assert!(!Arc::ptr_eq(old, new));
    assert_eq!(new.balancer, crate::lb::Balancer::RoundRobin);
    assert!(Arc::ptr_eq(&old.breakers.usage, &new.breakers.usage));
    assert!(Arc::ptr_eq(
        old.endpoints()[0].pool(),
        new.endpoints()[0].pool()
    ));
    assert!(Arc::ptr_eq(&s1.clusters["b"], &s2.clusters["b"]));
    // The routes and VIPs now hold the new cluster (describe checks each
    // reference is the snapshot's own).
    assert_eq!(describe(&s2), describe(&compile_on(&t2, None)));
    assert!(describe(&s2).contains("vip 10.0.0.1:8080 -> a true"));

    // A cluster removed: its VIP and route target go with it.
    let t3 = update(&t2, wire::types::CLUSTER, &[], &["c"]);
    let s3 = compile_on(&t3, Some(&s2));
    assert!(!s3.clusters.contains_key("c"));
    assert!(Arc::ptr_eq(&s2.clusters["a"], &s3.clusters["a"]));
    assert_eq!(describe(&s3), describe(&compile_on(&t3, None)));
    assert!(describe(&s3).contains("-> c None"));
}

#[test]
fn a_route_change_rebuilds_no_cluster() {
    let t1 = initial();
    let s1 = compile_on(&t1, None);
    let t2 = update(
        &t1,
        wire::types::ROUTE_CONFIG,
        &[routes(&["a", "b", "c"], 2000)],
        &[],
    );
    let s2 = compile_on(&t2, Some(&s1));
    assert!(Arc::ptr_eq(&s1.clusters, &s2.clusters));
    assert!(Arc::ptr_eq(&s1.vips, &s2.vips));
    assert!(!Arc::ptr_eq(&s1.routes["8080"], &s2.routes["8080"]));
    assert_eq!(describe(&s2), describe(&compile_on(&t2, None)));
    assert!(describe(&s2).contains("Some(2s)"));
    // A listener change rebuilds neither.
    let mut l = inbound_listener();
    if let Some(Kind::Listener(x)) = &mut l.kind {
        x.port = 18081;
    }
    let t3 = update(&t2, wire::types::LISTENER, &[l], &[]);
    let s3 = compile_on(&t3, Some(&s2));
    assert!(Arc::ptr_eq(&s2.clusters, &s3.clusters));
    assert!(Arc::ptr_eq(&s2.routes["8080"], &s3.routes["8080"]));
    assert_eq!(s3.listeners[0].bind.port(), 18081);
}

/// One piece of route config "8080", as the control plane sends a config:
/// resource "8080/<cluster>" holding that cluster's virtual host.
fn route_piece(cluster: &str, timeout_ms: u64) -> pb::Resource {
    let mut r = routes(&[cluster], timeout_ms);
    r.name = format!("8080/{cluster}");
    r
}

#[test]
fn route_config_pieces_make_one_table_rebuilt_when_a_piece_changes() {
    let mut t1 = initial();
    t1.insert(
        wire::types::ROUTE_CONFIG,
        Arc::new(state(
            "1",
            &[route_piece("a", 1000), route_piece("b", 1000)],
        )),
    );
    let s1 = compile_on(&t1, None);
    let hosts = |s: &Snapshot| -> Vec<String> {
        s.routes["8080"]
            .virtual_hosts
            .iter()
            .map(|vh| vh.name.to_string())
            .collect()
    };
    assert_eq!(hosts(&s1), ["a:8080", "b:8080"]);

    // A piece changed: the table is rebuilt from both pieces.
    let t2 = update(
        &t1,
        wire::types::ROUTE_CONFIG,
        &[route_piece("b", 2000)],
        &[],
    );
    let s2 = compile_on(&t2, Some(&s1));
    assert!(!Arc::ptr_eq(&s1.routes["8080"], &s2.routes["8080"]));
    assert_eq!(hosts(&s2), ["a:8080", "b:8080"]);
    assert_eq!(describe(&s2), describe(&compile_on(&t2, None)));

    // A piece added, then one removed: the table follows.
    let t3 = update(
        &t2,
        wire::types::ROUTE_CONFIG,
        &[route_piece("c", 1000)],
        &[],
    );
    let s3 = compile_on(&t3, Some(&s2));
    assert_eq!(hosts(&s3), ["a:8080", "b:8080", "c:8080"]);
    let t4 = update(&t3, wire::types::ROUTE_CONFIG, &[], &["8080/a"]);
    let s4 = compile_on(&t4, Some(&s3));
    assert_eq!(hosts(&s4), ["b:8080", "c:8080"]);
    assert_eq!(describe(&s4), describe(&compile_on(&t4, None)));

    // Nothing of it changed (an endpoints update): the same table.
    let t5 = update(&t4, wire::types::ENDPOINTS, &[endpoints("c", &[7])], &[]);
    let s5 = compile_on(&t5, Some(&s4));
    assert!(Arc::ptr_eq(&s4.routes["8080"], &s5.routes["8080"]));
}

#[test]
fn a_full_update_with_the_same_bytes_reuses_everything() {
    let t1 = initial();
    let s1 = compile_on(&t1, None);
    let mut t2 = t1.clone();
    // The whole set again (a reconnect's first push), one endpoint changed.
    t2.insert(
        wire::types::ENDPOINTS,
        Arc::new(
            TypeState::replacing(
                Some(&t1[wire::types::ENDPOINTS]),
                "2",
                &[
                    endpoints("a", &[1, 2]),
                    endpoints("b", &[3, 4]),
                    endpoints("c", &[6]),
                ],
            )
            .expect("valid"),
        ),
    );
    let s2 = compile_on(&t2, Some(&s1));
    assert!(Arc::ptr_eq(&s1.clusters, &s2.clusters));
    assert_eq!(keys(&s2.clusters["c"]), ["127.0.0.6:80"]);
    assert_eq!(keys(&s2.clusters["a"]), ["127.0.0.1:80", "127.0.0.2:80"]);
    assert_eq!(describe(&s2), describe(&compile_on(&t2, None)));
}

#[test]
fn a_sequence_of_updates_ends_as_a_compile_from_scratch() {
    let mut types = initial();
    let mut live = compile_on(&types, None);
    let steps: Vec<(&'static str, Vec<pb::Resource>, Vec<&str>)> = vec![
        (
            wire::types::ENDPOINTS,
            vec![endpoints("c", &[5, 6, 7])],
            vec![],
        ),
        (
            wire::types::CLUSTER,
            vec![cluster("d", 4, pb::LoadBalancer::Random)],
            vec![],
        ),
        (wire::types::ENDPOINTS, vec![endpoints("d", &[8])], vec![]),
        (
            wire::types::ROUTE_CONFIG,
            vec![routes(&["a", "d"], 500)],
            vec![],
        ),
        (
            wire::types::ENDPOINTS,
            vec![endpoints("a", &[2])],
            vec!["c"],
        ),
        (
            wire::types::CLUSTER,
            vec![cluster("b", 9, pb::LoadBalancer::RoundRobin)],
            vec!["c"],
        ),
        (wire::types::ENDPOINTS, vec![endpoints("c", &[1])], vec![]),
        (
            wire::types::CLUSTER,
            vec![cluster("c", 3, pb::LoadBalancer::LeastRequest)],
            vec![],
        ),
        (
            wire::types::ROUTE_CONFIG,
            vec![routes(&["a", "b", "c", "d"], 500)],
            vec![],
        ),
        // Cluster c's endpoints move to another resource, and a's and d's
        // swap resources, in one update each.
        (
            wire::types::ENDPOINTS,
            vec![renamed(endpoints("c", &[1]), "c-moved")],
            vec!["c"],
        ),
        (
            wire::types::ENDPOINTS,
            vec![
                renamed(endpoints("a", &[2]), "d"),
                renamed(endpoints("d", &[8]), "a"),
            ],
            vec![],
        ),
    ];
    for (i, (t, changed, removed)) in steps.into_iter().enumerate() {
        types = update(&types, t, &changed, &removed);
        live = compile_on(&types, Some(&live));
        assert_eq!(
            describe(&live),
            describe(&compile_on(&types, None)),
            "step {i}"
        );
    }
    assert_eq!(keys(&live.clusters["c"]), ["127.0.0.1:80"]);
    assert_eq!(keys(&live.clusters["d"]), ["127.0.0.8:80"]);
}

/// `r` under the resource name `name`.
fn renamed(mut r: pb::Resource, name: &str) -> pb::Resource {
    r.name = name.into();
    r
}

#[test]
fn an_endpoints_update_copies_only_what_it_touches() {
    use shared_map::SHARDS;
    let names: Vec<String> = (0..200).map(|i| format!("s{i}")).collect();
    let t0 = initial();
    let specs: Vec<_> = (10..)
        .zip(&names)
        .map(|(vip, n)| cluster(n, vip, pb::LoadBalancer::LeastRequest))
        .collect();
    let t0 = update(&t0, wire::types::CLUSTER, &specs, &[]);
    let eps: Vec<_> = names.iter().map(|n| endpoints(n, &[1, 2])).collect();
    let t1 = update(&t0, wire::types::ENDPOINTS, &eps, &[]);
    let s1 = compile_on(&t1, None);

    let t2 = update(&t1, wire::types::ENDPOINTS, &[endpoints("s7", &[3])], &[]);
    let s2 = compile_on(&t2, Some(&s1));
    assert_eq!(keys(&s2.clusters["s7"]), ["127.0.0.3:80"]);
    // The accepted resources and what the compile keeps of them: the
    // shard of the one resource copied, the rest shared, nothing rebuilt.
    let types = wire::types::ENDPOINTS;
    assert_eq!(t2[types].shared_shards(&t1[types]), SHARDS - 1);
    let (e1, e2) = (&s1.sources.endpoints, &s2.sources.endpoints);
    assert_eq!(e2.by_cluster.shared_shards(&e1.by_cluster), SHARDS - 1);
    assert!(!e2.by_cluster.shares_shard_of(&e1.by_cluster, "s7"));
    assert_eq!(
        e2.by_resource.shared_shards(&e1.by_resource),
        SHARDS,
        "the same cluster"
    );
    // Everything that holds clusters is the previous snapshot's.
    assert!(Arc::ptr_eq(&s1.clusters, &s2.clusters));
    assert!(Arc::ptr_eq(&s1.sources.clusters, &s2.sources.clusters));
    assert!(Arc::ptr_eq(&s1.sources.routes, &s2.sources.routes));
    assert!(Arc::ptr_eq(&s1.vips, &s2.vips));
    assert!(Arc::ptr_eq(&s1.hosts, &s2.hosts));
    assert!(Arc::ptr_eq(&s1.peers, &s2.peers));
    for (name, table) in &s1.routes {
        assert!(Arc::ptr_eq(table, &s2.routes[name]), "{name}");
    }
    assert_eq!(describe(&s2), describe(&compile_on(&t2, None)));
}

#[test]
fn a_full_update_listing_a_name_twice_is_refused() {
    let err = TypeState::new("1", &[endpoints("a", &[1]), endpoints("a", &[2])])
        .expect_err("a is listed twice");
    assert!(err.contains("\"a\" is listed twice"), "{err}");
}

/// `cluster`'s endpoints 127.0.0.`h`:80, of workload `workload` with
/// service account `sa` (none: no identity).
fn workload_endpoints(
    cluster: &str,
    hosts: &[u8],
    workload: &str,
    sa: Option<&str>,
) -> pb::Resource {
    resource(
        cluster,
        Kind::Endpoints(pb::ClusterEndpoints {
            cluster: cluster.into(),
            compact: None,
            endpoints: hosts
                .iter()
                .map(|h| pb::Endpoint {
                    address: format!("127.0.0.{h}"),
                    port: 80,
                    healthy: true,
                    workload: workload.into(),
                    identity: sa
                        .map(|sa| format!("spiffe://cluster.local/ns/ns/sa/{sa}"))
                        .unwrap_or_default(),
                    ..Default::default()
                })
                .collect(),
        }),
    )
}

#[test]
fn peers_after_endpoint_updates_equal_peers_from_scratch() {
    let t1 = update(
        &initial(),
        wire::types::ENDPOINTS,
        &[
            workload_endpoints("a", &[1, 2], "a-v1", Some("a")),
            workload_endpoints("b", &[3, 4], "b-v1", None),
        ],
        &[],
    );
    let s1 = compile_on(&t1, None);
    let scratch = |t: &Types| compile_on(t, None).peers.describe();
    assert_eq!(s1.peers.describe().len(), 3, "{:?}", s1.peers.describe());
    let steps: [(&[pb::Resource], &[&str]); 5] = [
        // Only endpoints without an identity change.
        (&[workload_endpoints("b", &[3, 9], "b-v1", None)], &[]),
        // A workload with an identity moves.
        (&[workload_endpoints("a", &[1, 7], "a-v1", Some("a"))], &[]),
        // Another workload takes the same identity, one of them at an
        // address of the first: what they share, at both keys.
        (&[workload_endpoints("c", &[5, 7], "c-v1", Some("a"))], &[]),
        // Its identity goes, then the first's endpoints.
        (&[workload_endpoints("c", &[5, 7], "c-v1", None)], &[]),
        (&[], &["a"]),
    ];
    let mut types = t1;
    let mut snapshot = s1;
    for (i, (changed, removed)) in steps.iter().enumerate() {
        let next = update(&types, wire::types::ENDPOINTS, changed, removed);
        let s = compile_on(&next, Some(&snapshot));
        assert!(
            Arc::ptr_eq(&s.clusters, &snapshot.clusters),
            "step {i}: endpoints only"
        );
        // Updated in place, to what a compile from scratch makes.
        assert!(Arc::ptr_eq(&s.peers, &snapshot.peers), "step {i}");
        assert_eq!(s.peers.describe(), scratch(&next), "step {i}");
        (types, snapshot) = (next, s);
    }
    assert!(snapshot.peers.describe().is_empty());
}
