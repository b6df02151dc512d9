//! Config from a real discovery server: NACKs, readiness, the admin
//! server, listener reconciliation and graceful shutdown.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{Request, StatusCode};
use http_body_util::Full;
use tokio::net::TcpStream;
use wire::pb::{self, resource::Kind, string_match};
use wire::snapshot::{ProxySnapshot, TypeSnapshot};

use crate::support::*;

#[test]
fn nack_keeps_the_old_routes() {
    use wire::client::ConfigHandler;
    let store = Arc::new(proxy::config::ConfigStore::new(&pb::Node::default()));
    let handler = proxy::config::XdsHandler(store.clone());
    let good = route_config(
        "9080",
        &["reviews"],
        vec![route("r", vec![prefix("/")], fwd(forward(&[("c", 100)])))],
    );
    let mut bad_route = route("r", vec![], fwd(forward(&[("c", 100)])));
    bad_route.matches = vec![pb::RouteMatch {
        path: Some(pb::StringMatch {
            kind: Some(string_match::Kind::Regex("([a-z".into())),
        }),
        ..Default::default()
    }];
    let bad = route_config("9080", &["reviews"], vec![bad_route]);
    handler
        .apply(
            wire::types::CLUSTER,
            "1",
            vec![cluster("c", &[])[0].clone()],
        )
        .expect("clusters");
    handler
        .apply(wire::types::ENDPOINTS, "1", vec![])
        .expect("endpoints");
    handler
        .apply(wire::types::LISTENER, "1", vec![])
        .expect("listeners");
    handler
        .apply(wire::types::ROUTE_CONFIG, "1", vec![good])
        .expect("routes");
    let err = handler
        .apply(wire::types::ROUTE_CONFIG, "2", vec![bad])
        .expect_err("NACK");
    assert!(
        err.contains("does not compile") && err.contains("9080"),
        "{err}"
    );
    let snapshot = store.current().expect("config");
    assert_eq!(snapshot.types[wire::types::ROUTE_CONFIG].version, "1");
    assert!(
        snapshot.routes_by_port[&9080]
            .virtual_host("reviews")
            .is_some()
    );
    // Weights that sum to zero and unknown directions are rejected too.
    let zero = route_config(
        "9080",
        &["reviews"],
        vec![route("r", vec![], fwd(forward(&[("c", 0), ("d", 0)])))],
    );
    assert!(
        handler
            .apply(wire::types::ROUTE_CONFIG, "3", vec![zero])
            .is_err()
    );
}

/// A route config sent in pieces (one resource per virtual host, each
/// naming the config) is one route table; a partial update replaces one
/// piece and keeps the others; a domain two pieces list is refused.
#[test]
fn the_pieces_of_a_route_config_make_one_table() {
    use wire::client::ConfigHandler;
    let store = Arc::new(proxy::config::ConfigStore::new(&pb::Node::default()));
    let handler = proxy::config::XdsHandler(store.clone());
    let piece = |host: &str, domain: &str, cluster: &str| {
        let mut r = route_config(
            "9080",
            &[domain],
            vec![route(
                &format!("to-{cluster}"),
                vec![prefix("/")],
                fwd(forward(&[(cluster, 100)])),
            )],
        );
        r.name = format!("9080/{host}");
        r
    };
    let mut clusters = cluster("c", &[]);
    clusters.extend(cluster("d", &[]));
    clusters.retain(|r| matches!(r.kind, Some(Kind::Cluster(_))));
    handler
        .apply(wire::types::CLUSTER, "1", clusters)
        .expect("clusters");
    handler
        .apply(wire::types::ENDPOINTS, "1", vec![])
        .expect("endpoints");
    handler
        .apply(wire::types::LISTENER, "1", vec![])
        .expect("listeners");
    handler
        .apply(
            wire::types::ROUTE_CONFIG,
            "1",
            vec![piece("a", "a", "c"), piece("b", "b", "c")],
        )
        .expect("pieces");
    let target = |host: &str| {
        let snapshot = store.current().expect("config");
        let table = snapshot.routes_by_port[&9080].clone();
        let vh = table.virtual_host(host).expect("virtual host");
        vh.routes[0].name.to_string()
    };
    assert_eq!(target("a"), "to-c");
    assert_eq!(target("b"), "to-c");
    handler
        .apply_partial(
            wire::types::ROUTE_CONFIG,
            "2",
            vec![piece("b", "b", "d")],
            vec![],
        )
        .expect("one piece changed");
    assert_eq!(target("a"), "to-c");
    assert_eq!(target("b"), "to-d");
    let err = handler
        .apply_partial(
            wire::types::ROUTE_CONFIG,
            "3",
            vec![piece("a2", "a", "d")],
            vec![],
        )
        .expect_err("a domain listed by two pieces");
    assert!(err.contains("9080") && err.contains("\"a\""), "{err}");
}

fn proxy_snapshot(version: &str, by_type: Vec<(&str, Vec<pb::Resource>)>) -> Arc<ProxySnapshot> {
    let types: BTreeMap<String, Arc<TypeSnapshot>> = by_type
        .into_iter()
        .map(|(t, resources)| {
            (
                t.to_string(),
                Arc::new(TypeSnapshot::new(version, &resources)),
            )
        })
        .collect();
    Arc::new(ProxySnapshot { types })
}

#[tokio::test]
async fn admin_over_xds_ready_dump_stats_and_nack() {
    let ip = test_ip();
    let (cp, xds_addr, _server) = TestControlPlane::serve(ip, Arc::default()).await;

    let mut config = Proxy::config(ip);
    config.xds_address = Some(
        wire::address::XdsAddress::parse(&format!("http://{xds_addr}"), None).expect("address"),
    );
    config.access_log = true;
    let token = proxy::admin::AdminToken::generate().expect("token");
    config.admin_auth = proxy::admin::AdminAuth::Token(token.clone());
    let proxy = Proxy::spawn(config, None);

    // No config yet: not ready, and no listener open.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = admin_get(proxy.admin, "/ready").await.expect("admin");
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        TcpStream::connect(proxy.outbound).await.is_err(),
        "a listener opened before the first config"
    );

    let v1 = upstream(ip, "v1", Behave::default()).await;
    let [c, e] = <[pb::Resource; 2]>::try_from(cluster("v1", &[(v1, "v1")])).expect("two");
    let routes = |regex: &str| {
        let m = pb::RouteMatch {
            path: Some(pb::StringMatch {
                kind: Some(string_match::Kind::Regex(regex.into())),
            }),
            ..Default::default()
        };
        vec![route_config(
            "9080",
            &["reviews"],
            vec![route("r", vec![m], fwd(forward(&[("v1", 100)])))],
        )]
    };
    let types_with = |v: &str, regex: &str, listeners: Vec<pb::Resource>| {
        proxy_snapshot(
            v,
            vec![
                (wire::types::CLUSTER, vec![c.clone()]),
                (wire::types::ENDPOINTS, vec![e.clone()]),
                (wire::types::LISTENER, listeners),
                (wire::types::ROUTE_CONFIG, routes(regex)),
            ],
        )
    };
    let types = |v: &str, regex: &str| types_with(v, regex, vec![]);
    cp.tx.send_replace(types("1", "/ok.*"));
    proxy.wait_ready().await;
    assert_eq!(proxy.get("reviews:9080", "/ok", &[]).await.body, "v1");

    // A config the proxy cannot compile is NACKed; the old one keeps serving.
    cp.tx.send_replace(types("2", "/ok(.*"));
    let deadline = Instant::now() + Duration::from_secs(5);
    while cp.nacks.lock().expect("lock").is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let nacks = cp.nacks.lock().expect("lock").clone();
    assert!(
        nacks.iter().any(|n| n.contains("does not compile")),
        "{nacks:?}"
    );
    assert_eq!(proxy.get("reviews:9080", "/ok", &[]).await.body, "v1");

    let dump: serde_json::Value = serde_json::from_str(
        &admin_get(proxy.admin, "/config_dump")
            .await
            .expect("dump")
            .body,
    )
    .expect("json");
    assert_eq!(dump["configs"]["routes"]["version"], "1");
    assert_eq!(
        dump["configs"]["clusters"]["resources"][0]["kind"]["cluster"]["name"],
        "v1"
    );

    let clusters = admin_get(proxy.admin, "/clusters")
        .await
        .expect("clusters")
        .body;
    assert!(
        clusters.contains(&format!("v1::{v1}::rq_total::2")),
        "{clusters}"
    );

    // Metrics are written when the response body ends: give it a moment.
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let stats = admin_get(proxy.admin, "/stats/prometheus")
            .await
            .expect("stats")
            .body;
        let line = stats
            .lines()
            .find(|l| l.starts_with("istio_requests_total{"))
            .unwrap_or_default()
            .to_string();
        if line.contains("response_code=\"200\"") {
            assert!(line.contains("reporter=\"source\""), "{line}");
            assert!(line.contains("destination_version=\"v1\""), "{line}");
            assert!(
                line.contains("destination_service_name=\"reviews\""),
                "{line}"
            );
            assert!(line.contains("source_workload=\"sleep\""), "{line}");
            assert!(line.ends_with(" 2"), "two requests: {line}");
            assert!(
                stats.contains("istio_request_duration_milliseconds_bucket{"),
                "{stats}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "no request metrics: {stats}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Listeners are reconciled: a new one is bound, a removed one closed,
    // and connections to a kept one survive the update.
    let mut kept = Client::connect(proxy.outbound).await.expect("connect");
    assert_eq!(kept.get("reviews:9080", "/ok", &[]).await.body, "v1");
    let app = upstream(ip, "app", Behave::default()).await;
    let port = free_port(ip);
    let inbound = pb::Listener {
        name: format!("inbound|{port}"),
        port: u32::from(port),
        direction: pb::Direction::Inbound as i32,
        protocol: pb::Protocol::Http as i32,
        app_port: u32::from(app.port()),
        ..Default::default()
    };
    cp.tx.send_replace(types_with(
        "3",
        "/ok.*",
        vec![resource("inbound", Kind::Listener(inbound))],
    ));
    let inbound_addr = SocketAddr::new(ip, port);
    let deadline = Instant::now() + Duration::from_secs(5);
    while TcpStream::connect(inbound_addr).await.is_err() {
        assert!(Instant::now() < deadline, "the new listener was not bound");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        send(inbound_addr, "reviews:9080", "/", &[]).await.body,
        "app"
    );
    assert_eq!(
        kept.get("reviews:9080", "/ok", &[]).await.body,
        "v1",
        "kept connection broken"
    );
    cp.tx.send_replace(types("4", "/ok.*"));
    let deadline = Instant::now() + Duration::from_secs(5);
    while TcpStream::connect(inbound_addr).await.is_ok() {
        assert!(
            Instant::now() < deadline,
            "the removed listener is still open"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        kept.get("reviews:9080", "/ok", &[]).await.body,
        "v1",
        "kept connection broken"
    );

    // POST /quitquitquit drains and stops the proxy.
    let mut c = Client::connect(proxy.admin).await.expect("connect");
    let r = c
        .send(
            Request::post("/quitquitquit")
                .header("host", "admin")
                .header("authorization", format!("Bearer {}", token.as_str()))
                .body(Full::default())
                .expect("request"),
        )
        .await
        .expect("quit");
    assert_eq!(r.status, StatusCode::OK);
    let Proxy { task, .. } = proxy;
    let result = tokio::time::timeout(Duration::from_secs(5), task).await;
    assert!(
        matches!(result, Ok(Ok(Ok(())))),
        "quitquitquit did not stop the proxy"
    );
}

/// Config compiles and memory releases stay off the data plane's thread:
/// the binary's setup hook runs on the control thread, and a release that
/// config updates put off (four types applied at once) runs there too —
/// a heap walk on the worker would hold up its requests.
#[tokio::test]
async fn put_off_memory_releases_and_the_control_setup_run_on_the_control_thread() {
    use std::sync::Mutex;
    static SETUP: Mutex<Vec<String>> = Mutex::new(Vec::new());
    static RELEASES: Mutex<Vec<String>> = Mutex::new(Vec::new());
    fn thread_name() -> String {
        std::thread::current().name().unwrap_or("?").to_string()
    }
    fn setup() {
        SETUP.lock().expect("lock").push(thread_name());
    }
    fn release() {
        RELEASES.lock().expect("lock").push(thread_name());
    }
    let ip = test_ip();
    let mut config = Proxy::config(ip);
    config.on_control_thread = Some(setup);
    config.release_freed_memory = Some(release);
    let proxy = Proxy::start_with(config, vec![]).await;
    assert_eq!(*SETUP.lock().expect("lock"), ["trellis-control"]);
    // The put-off release comes with the next periodic tick (a second).
    let deadline = Instant::now() + Duration::from_secs(30);
    while !RELEASES
        .lock()
        .expect("lock")
        .iter()
        .any(|t| t == "trellis-control")
    {
        assert!(
            Instant::now() < deadline,
            "no put-off release on the control thread: {:?}",
            RELEASES.lock().expect("lock")
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let releases = RELEASES.lock().expect("lock").clone();
    assert!(
        !releases.iter().any(|t| t.starts_with("trellis-worker")),
        "a release ran on the data plane: {releases:?}"
    );
    proxy.stop().await;
}
