use super::*;
use crate::on_demand::{DEFAULT_TIMEOUT, OnDemand};
use crate::telemetry::meta::{PeerMeta, ServiceMeta};
use crate::telemetry::metrics::{
    ByPtr, Metrics, Peers, Protocol, RequestKey, RequestSample, Security, TcpKey,
};
use crate::telemetry::{Flags, Reporter};
use wire::pb::{self, resource::Kind};

const U: &str = "u.a.svc.cluster.local";
const T: &str = "t.b.svc.cluster.local";
const S: &str = "s.a.svc.cluster.local";
const X: &str = "x.c.svc.cluster.local";

fn resource(name: &str, kind: Kind) -> pb::Resource {
    pb::Resource {
        name: name.into(),
        kind: Some(kind),
        ..Default::default()
    }
}

/// The cluster of `host` on port 8080 at `vip`.
fn cluster(host: &str, vip: &str) -> pb::Resource {
    let name = format!("outbound|8080||{host}");
    resource(
        &name,
        Kind::Cluster(pb::Cluster {
            name: name.clone(),
            service: host.into(),
            port: 8080,
            addresses: vec![vip.into()],
            ..Default::default()
        }),
    )
}

/// `host`'s virtual host on port 8080, every request to `to`'s cluster.
fn virtual_host(host: &str, to: &str) -> pb::VirtualHost {
    pb::VirtualHost {
        name: format!("{host}:8080"),
        domains: vec![host.into()],
        routes: vec![pb::Route {
            action: Some(pb::route::Action::Forward(pb::RouteAction {
                clusters: vec![pb::WeightedCluster {
                    cluster: format!("outbound|8080||{to}"),
                    weight: 100,
                    ..Default::default()
                }],
                ..Default::default()
            })),
            ..Default::default()
        }],
    }
}

/// An on-demand proxy's store with u (whose routes send to t), t, s and
/// x (TCP, called by its VIP, its connections sent to s).
fn store() -> Arc<ConfigStore> {
    let node = pb::Node {
        pod_ip: "127.0.0.1".into(),
        namespace: "a".into(),
        ..Default::default()
    };
    let store = ConfigStore::new(&node).with_on_demand(OnDemand::new("a", DEFAULT_TIMEOUT));
    // x's connections go to s (a VirtualService `tcp` route).
    let mut x = cluster(X, "10.96.0.4");
    if let Some(Kind::Cluster(c)) = &mut x.kind {
        c.tcp_route = vec![pb::WeightedCluster {
            cluster: format!("outbound|8080||{S}"),
            weight: 100,
            ..Default::default()
        }];
    }
    let clusters = vec![
        cluster(U, "10.96.0.2"),
        cluster(T, "10.96.0.3"),
        cluster(S, "10.96.0.1"),
        x,
    ];
    store
        .apply(wire::types::CLUSTER, "1", clusters)
        .expect("clusters");
    store
        .apply(wire::types::ENDPOINTS, "1", vec![])
        .expect("endpoints");
    store
        .apply(wire::types::LISTENER, "1", vec![])
        .expect("listeners");
    let routes = pb::RouteConfig {
        name: "8080".into(),
        virtual_hosts: vec![virtual_host(U, T), virtual_host(T, T), virtual_host(S, S)],
    };
    store
        .apply(
            wire::types::ROUTE_CONFIG,
            "1",
            vec![resource("8080", Kind::RouteConfig(routes))],
        )
        .expect("routes");
    Arc::new(store)
}

fn peers(host: &str) -> Peers {
    let unknown = Arc::new(PeerMeta::unknown());
    Peers {
        reporter: Reporter::Source,
        source: ByPtr(unknown.clone()),
        destination: ByPtr(unknown),
        service: ByPtr(Arc::new(ServiceMeta::from_host(host))),
        security: Security::Unknown,
    }
}

/// A request to `host`'s service finished, as the client side records it.
fn request(metrics: &Metrics, host: &str) {
    let key = RequestKey {
        peers: peers(host),
        protocol: Protocol::Http,
        response_code: 200,
        grpc_status: None,
        flags: Flags::default(),
    };
    metrics.record_request(&key, &RequestSample::default());
}

fn names(hosts: &[&str]) -> BTreeSet<Arc<str>> {
    hosts.iter().map(|h| Arc::from(*h)).collect()
}

#[test]
fn a_hosts_services_are_those_its_routes_and_vips_send_to() {
    let store = store();
    let snapshot = store.current().expect("complete");
    assert_eq!(services(Some(&snapshot), U), names(&[T, U]));
    assert_eq!(services(Some(&snapshot), T), names(&[T]));
    assert_eq!(
        services(Some(&snapshot), X),
        names(&[S, X]),
        "by its VIP's TCP route"
    );
    assert_eq!(
        services(Some(&snapshot), "nowhere.example.com"),
        names(&["nowhere.example.com"])
    );
    assert_eq!(services(None, U), names(&[U]));
}

#[tokio::test(start_paused = true)]
async fn a_host_unused_for_the_idle_period_is_forgotten_one_in_use_kept() {
    let minutes = |m: u64| Duration::from_secs(60 * m);
    let store = store();
    let telemetry = Arc::new(Telemetry::new(&pb::Node::default(), "", false));
    let asks = store.on_demand().expect("on demand").asks();
    for host in [U, S, X] {
        asks.ask(host);
    }
    tokio::spawn(run(store.clone(), telemetry.clone(), minutes(30)));
    // u is called (its routes send to t) every ten minutes; a connection
    // to x stays open; s is never called.
    let x = telemetry.metrics.tcp_opened(&TcpKey {
        peers: peers(X),
        flags: Flags::default(),
    });
    let calls = {
        let telemetry = telemetry.clone();
        tokio::spawn(async move {
            loop {
                request(&telemetry.metrics, T);
                tokio::time::sleep(minutes(10)).await;
            }
        })
    };
    tokio::time::sleep(minutes(29)).await;
    assert_eq!(asks.asked(), vec![S, U, X], "none idle for 30 minutes yet");
    tokio::time::sleep(minutes(3)).await;
    assert_eq!(asks.asked(), vec![U, X], "s unused for 30 minutes");
    // x's connection closes: x is unused from then on.
    Metrics::tcp_closed(&x);
    tokio::time::sleep(minutes(29)).await;
    assert_eq!(asks.asked(), vec![U, X]);
    tokio::time::sleep(minutes(3)).await;
    assert_eq!(asks.asked(), vec![U]);
    // u's calls stop: it goes too.
    calls.abort();
    tokio::time::sleep(minutes(32)).await;
    assert!(asks.asked().is_empty());
    // Called again, it is asked for again and counts from then.
    asks.ask(S);
    tokio::time::sleep(minutes(29)).await;
    assert_eq!(asks.asked(), vec![S]);
}

#[test]
fn the_sweep_looks_each_minute_or_four_times_in_a_shorter_idle_period() {
    assert_eq!(
        period(Duration::from_secs(30 * 60)),
        Duration::from_secs(60)
    );
    assert_eq!(period(Duration::from_secs(2)), Duration::from_millis(500));
}
