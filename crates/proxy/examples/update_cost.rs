//! What a config update costs the proxy, for a profiler: applies the config
//! a sidecar of the churn benchmark's mesh is sent (1,000 services on port
//! 8080, 10 endpoints each, one in ten with a `v1` subset; clusters, their
//! endpoints and the route pieces in the control plane's compact forms),
//! then `UPDATES` partial endpoint updates of one service each, as
//! trellisd sends them under churn (`bench/proxy-churn.sh`).
//!
//! Counted with callgrind, the difference between two runs is the cost of
//! the updates alone, repeatable on a busy machine:
//!
//! ```text
//! cargo build --release -p proxy --example update_cost
//! valgrind --tool=callgrind target/release/examples/update_cost 0
//! valgrind --tool=callgrind target/release/examples/update_cost 200
//! ```
//!
//! Only the store's public API is used, so that the same driver runs
//! against earlier versions of the proxy.

use std::collections::BTreeMap;

use proxy::config::ConfigStore;
use wire::pb;
use wire::pb::resource::Kind;

const SERVICES: usize = 1000;
const ENDPOINTS: usize = 10;
const NAMESPACES: usize = 10;
const PORT: u32 = 8080;
/// Endpoint updates made ready, of which `UPDATES` are applied.
const POOL: usize = 500;

fn host(s: usize) -> String {
    format!("svc{s}.ns{}.svc.cluster.local", s % NAMESPACES)
}

fn cluster_name(s: usize, subset: &str) -> String {
    format!("outbound|{PORT}|{subset}|{}", host(s))
}

/// A resource in the compact form: the names its name gives left out.
fn resource(name: String, mut kind: Kind) -> pb::Resource {
    wire::names::leave_out(&name, &mut kind);
    pb::Resource {
        name,
        kind: Some(kind),
        ..Default::default()
    }
}

/// The clusters of service `s`: its own, and its subset's one in ten.
fn subsets(s: usize) -> &'static [&'static str] {
    if s.is_multiple_of(10) {
        &["", "v1"]
    } else {
        &[""]
    }
}

fn clusters() -> Vec<pb::Resource> {
    (0..SERVICES)
        .flat_map(|s| subsets(s).iter().map(move |subset| (s, *subset)))
        .map(|(s, subset)| {
            let name = cluster_name(s, subset);
            let cluster = pb::Cluster {
                name: name.clone(),
                service: host(s),
                port: PORT,
                subset: subset.into(),
                protocol: pb::Protocol::Http.into(),
                ..Default::default()
            };
            resource(name, Kind::Cluster(cluster))
        })
        .collect()
}

/// Service `s`'s endpoints, the `generation`-th of them: one endpoint
/// moved to a new address each generation, as the benchmark's changes do.
fn endpoints(s: usize, subset: &str, generation: usize) -> pb::Resource {
    let ns = s % NAMESPACES;
    let moved = generation % ENDPOINTS;
    let list = (0..ENDPOINTS)
        .map(|e| {
            let last = if generation > 0 && e == moved {
                100 + generation % 150
            } else {
                e + 1
            };
            pb::Endpoint {
                address: format!("10.{}.{}.{last}", s / 250, s % 250),
                port: PORT,
                labels: BTreeMap::from([
                    ("app".to_string(), format!("svc{s}")),
                    ("version".to_string(), "v1".to_string()),
                ]),
                pod: format!("svc{s}-{e}.ns{ns}"),
                identity: format!("spiffe://cluster.local/ns/ns{ns}/sa/default"),
                weight: 1,
                healthy: true,
                has_sidecar: true,
                workload: format!("svc{s}"),
                ..Default::default()
            }
        })
        .collect();
    let name = cluster_name(s, subset);
    let endpoints = pb::ClusterEndpoints {
        cluster: name.clone(),
        compact: Some(wire::endpoints::compact(list)),
        ..Default::default()
    };
    resource(name, Kind::Endpoints(endpoints))
}

/// The outbound route config of port 8080, a piece per virtual host.
fn route_pieces() -> Vec<pb::Resource> {
    (0..SERVICES)
        .map(|s| {
            let host = host(s);
            let subset = subsets(s).last().copied().unwrap_or_default();
            let route = pb::Route {
                matches: vec![pb::RouteMatch::default()],
                action: Some(pb::route::Action::Forward(pb::RouteAction {
                    clusters: vec![pb::WeightedCluster {
                        cluster: cluster_name(s, subset),
                        weight: 100,
                        ..Default::default()
                    }],
                    ..Default::default()
                })),
                ..Default::default()
            };
            let config = pb::RouteConfig {
                name: PORT.to_string(),
                virtual_hosts: vec![pb::VirtualHost {
                    name: format!("{host}:{PORT}"),
                    domains: vec![host.clone(), format!("{host}:{PORT}")],
                    routes: vec![route],
                }],
            };
            resource(format!("{PORT}/{host}:{PORT}"), Kind::RouteConfig(config))
        })
        .collect()
}

fn listeners() -> Vec<pb::Resource> {
    let listener = pb::Listener {
        name: format!("0.0.0.0_{PORT}"),
        address: "0.0.0.0".into(),
        port: PORT,
        direction: pb::Direction::Outbound.into(),
        protocol: pb::Protocol::Http.into(),
        route_config: PORT.to_string(),
        ..Default::default()
    };
    vec![resource(listener.name.clone(), Kind::Listener(listener))]
}

fn main() -> Result<(), String> {
    let updates: usize = match std::env::args().nth(1) {
        Some(n) => n.parse().map_err(|e| format!("UPDATES {n:?}: {e}"))?,
        None => 0,
    };
    let store = ConfigStore::new(&pb::Node {
        pod_ip: "10.255.0.1".into(),
        ..Default::default()
    });
    let all_endpoints = (0..SERVICES)
        .flat_map(|s| subsets(s).iter().map(move |subset| endpoints(s, subset, 0)))
        .collect();
    store.apply(wire::types::CLUSTER, "1", clusters())?;
    store.apply(wire::types::ENDPOINTS, "1", all_endpoints)?;
    store.apply(wire::types::LISTENER, "1", listeners())?;
    store.apply(wire::types::ROUTE_CONFIG, "1", route_pieces())?;
    let first = store.current().ok_or("the config is not complete")?;
    // Made before any is applied, and as many whatever UPDATES is, so that
    // the difference between two runs is the applying alone.
    let mut pool: Vec<Vec<pb::Resource>> = (0..POOL)
        .map(|n| {
            // Spread over the services as the benchmark's changes are (7919 is prime).
            let s = (n * 7919) % SERVICES;
            subsets(s)
                .iter()
                .map(|subset| endpoints(s, subset, n + 1))
                .collect()
        })
        .collect();
    if updates > POOL {
        return Err(format!("UPDATES: at most {POOL}"));
    }
    for (n, changed) in pool.drain(..updates).enumerate() {
        let version = (n + 2).to_string();
        store.apply_partial(wire::types::ENDPOINTS, &version, changed, Vec::new())?;
    }
    let last = store.current().ok_or("no config in force")?;
    println!(
        "{} clusters, {} updates applied",
        first.clusters.len(),
        updates
    );
    drop(last);
    Ok(())
}
