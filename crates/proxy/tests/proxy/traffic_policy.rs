//! DestinationRule traffic policy as the proxy applies it: circuit breakers,
//! outlier detection, consistent hashing and locality-aware balancing.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use http::StatusCode;
use tokio::sync::Semaphore;
use wire::pb;

use crate::support::*;

const OVERFLOW: &str =
    "upstream connect error or disconnect/reset before headers. reset reason: overflow";

fn reviews_route(cluster: &str) -> pb::Resource {
    route_config(
        "9080",
        &["reviews", "reviews:9080"],
        vec![route("all", vec![], fwd(forward(&[(cluster, 100)])))],
    )
}

/// Polls the proxy's metrics until `needle` shows up (metrics are written
/// when a response body ends).
async fn wait_for_metric(proxy: &Proxy, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let stats = admin_get(proxy.admin, "/stats/prometheus")
            .await
            .expect("stats")
            .body;
        if stats.contains(needle) {
            return stats;
        }
        assert!(Instant::now() < deadline, "no {needle} in: {stats}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn circuit_breaker_overflows_with_503_uo_and_sequential_requests_pass() {
    let ip = test_ip();
    let gate = Arc::new(Semaphore::new(0));
    let behave = Behave {
        gate: Some(gate.clone()),
        ..Default::default()
    };
    let up = upstream(ip, "v1", behave.clone()).await;
    let mut resources = cluster_with(
        pb::Cluster {
            name: "v1".into(),
            connection_pool: Some(pb::ConnectionPool {
                max_connections: 1,
                max_pending_requests: 1,
                ..Default::default()
            }),
            ..Default::default()
        },
        &[(up, "v1")],
    );
    resources.push(reviews_route("v1"));
    let proxy = Proxy::start(ip, resources).await;

    // Sequential requests never overflow.
    for _ in 0..5 {
        gate.add_permits(1);
        let r = proxy.get("reviews:9080", "/", &[]).await;
        assert_eq!((r.status, r.body.as_str()), (StatusCode::OK, "v1"));
    }

    // The last response's connection goes back to the pool as the proxy
    // finishes writing it; give it that moment.
    tokio::time::sleep(Duration::from_millis(50)).await;
    // Five at once while the upstream holds its answers: one request has the
    // only connection, one waits as pending, three overflow at once.
    let outbound = proxy.outbound;
    let tasks: Vec<_> = (0..5)
        .map(|_| tokio::spawn(async move { send(outbound, "reviews:9080", "/", &[]).await }))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(5);
    while tasks.iter().filter(|t| t.is_finished()).count() < 3 {
        assert!(Instant::now() < deadline, "no overflow");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        behave.hits.load(Ordering::SeqCst),
        6,
        "only one reached the upstream"
    );
    gate.add_permits(2);
    let mut ok = 0;
    for t in tasks {
        let r = t.await.expect("task");
        match r.status {
            StatusCode::OK => ok += 1,
            StatusCode::SERVICE_UNAVAILABLE => assert_eq!(r.body, OVERFLOW),
            s => panic!("unexpected {s}"),
        }
    }
    assert_eq!(ok, 2, "the active request and the pending one");
    wait_for_metric(&proxy, "response_flags=\"UO\"").await;
    proxy.stop().await;
}

#[tokio::test]
async fn max_requests_bounds_requests_in_flight() {
    let ip = test_ip();
    let gate = Arc::new(Semaphore::new(0));
    let behave = Behave {
        gate: Some(gate.clone()),
        ..Default::default()
    };
    let up = upstream(ip, "v1", behave.clone()).await;
    let mut resources = cluster_with(
        pb::Cluster {
            name: "v1".into(),
            connection_pool: Some(pb::ConnectionPool {
                max_requests: 2,
                ..Default::default()
            }),
            ..Default::default()
        },
        &[(up, "v1")],
    );
    resources.push(reviews_route("v1"));
    let proxy = Proxy::start(ip, resources).await;
    let outbound = proxy.outbound;
    let held: Vec<_> = (0..2)
        .map(|_| tokio::spawn(async move { send(outbound, "reviews:9080", "/", &[]).await }))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(5);
    while behave.hits.load(Ordering::SeqCst) < 2 {
        assert!(Instant::now() < deadline, "the two requests did not arrive");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let r = proxy.get("reviews:9080", "/", &[]).await;
    assert_eq!(
        (r.status, r.body.as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, OVERFLOW),
        "a third request in flight overflows"
    );
    gate.add_permits(3);
    for t in held {
        assert_eq!(t.await.expect("task").status, StatusCode::OK);
    }
    let r = proxy.get("reviews:9080", "/", &[]).await;
    assert_eq!(r.status, StatusCode::OK, "room again");
    proxy.stop().await;
}

fn outlier_cluster(base_ejection_ms: u64) -> pb::Cluster {
    pb::Cluster {
        name: "reviews".into(),
        lb: pb::LoadBalancer::RoundRobin as i32,
        outlier_detection: Some(pb::OutlierDetection {
            consecutive_5xx: 3,
            interval_ms: 100,
            base_ejection_time_ms: base_ejection_ms,
            max_ejection_percent: 100,
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[tokio::test]
async fn outlier_detection_ejects_a_failing_endpoint_until_its_time_is_up() {
    let ip = test_ip();
    let good = Behave::default();
    let bad = Behave {
        fail_first: usize::MAX,
        ..Default::default()
    };
    let good_addr = upstream(ip, "good", good.clone()).await;
    let bad_addr = upstream(ip, "bad", bad.clone()).await;
    let mut resources = cluster_with(
        outlier_cluster(2_000),
        &[(good_addr, "v1"), (bad_addr, "v2")],
    );
    resources.push(reviews_route("reviews"));
    let proxy = Proxy::start(ip, resources).await;

    // Round robin: the bad endpoint gets every other request until its
    // third 503 in a row ejects it.
    let mut c = Client::connect(proxy.outbound).await.expect("connect");
    let mut failures = 0;
    for _ in 0..6 {
        if c.get("reviews:9080", "/", &[]).await.status == StatusCode::SERVICE_UNAVAILABLE {
            failures += 1;
        }
    }
    assert_eq!(failures, 3);
    assert_eq!(bad.hits.load(Ordering::SeqCst), 3);
    let ejected_at = Instant::now();
    let clusters = admin_get(proxy.admin, "/clusters")
        .await
        .expect("clusters")
        .body;
    assert!(
        clusters.contains(&format!(
            "reviews::{bad_addr}::health_flags::/failed_outlier_check"
        )),
        "{clusters}"
    );
    for _ in 0..10 {
        let r = c.get("reviews:9080", "/", &[]).await;
        assert_eq!((r.status, r.body.as_str()), (StatusCode::OK, "good"));
    }
    assert!(
        ejected_at.elapsed() < Duration::from_secs(2),
        "too slow to tell: {:?}",
        ejected_at.elapsed()
    );
    assert_eq!(
        bad.hits.load(Ordering::SeqCst),
        3,
        "no traffic while ejected"
    );

    // Back after the base ejection time (and the next sweep).
    tokio::time::sleep(Duration::from_millis(2_300).saturating_sub(ejected_at.elapsed())).await;
    for _ in 0..4 {
        c.get("reviews:9080", "/", &[]).await;
    }
    assert!(
        bad.hits.load(Ordering::SeqCst) > 3,
        "the endpoint came back"
    );
    proxy.stop().await;
}

fn hashed_cluster(key: pb::consistent_hash::Key, algorithm: pb::HashAlgorithm) -> pb::Cluster {
    pb::Cluster {
        name: "reviews".into(),
        consistent_hash: Some(pb::ConsistentHash {
            key: Some(key),
            algorithm: algorithm as i32,
            table_size: 0,
        }),
        ..Default::default()
    }
}

async fn three_upstreams(ip: std::net::IpAddr) -> Vec<(SocketAddr, &'static str)> {
    let mut v = Vec::new();
    for name in ["v1", "v2", "v3"] {
        v.push((upstream(ip, name, Behave::default()).await, name));
    }
    v
}

#[tokio::test]
async fn consistent_hash_by_header_sticks_each_user_to_one_endpoint() {
    for algorithm in [pb::HashAlgorithm::RingHash, pb::HashAlgorithm::Maglev] {
        let ip = test_ip();
        let ups = three_upstreams(ip).await;
        let mut resources = cluster_with(
            hashed_cluster(pb::consistent_hash::Key::Header("x-user".into()), algorithm),
            &ups,
        );
        resources.push(reviews_route("reviews"));
        let proxy = Proxy::start(ip, resources).await;
        let mut c = Client::connect(proxy.outbound).await.expect("connect");
        let mut seen = HashSet::new();
        for user in 0..30 {
            let user = format!("user-{user}");
            let first = c.get("reviews:9080", "/", &[("x-user", &user)]).await.body;
            for _ in 0..3 {
                assert_eq!(
                    c.get("reviews:9080", "/", &[("x-user", &user)]).await.body,
                    first,
                    "{algorithm:?}: {user} moved"
                );
            }
            seen.insert(first);
        }
        assert_eq!(
            seen.len(),
            3,
            "{algorithm:?}: 30 users spread over all three"
        );
        proxy.stop().await;
    }
}

#[tokio::test]
async fn consistent_hash_cookie_is_generated_and_sticks() {
    let ip = test_ip();
    let ups = three_upstreams(ip).await;
    let mut resources = cluster_with(
        hashed_cluster(
            pb::consistent_hash::Key::Cookie(pb::HashCookie {
                name: "session".into(),
                path: "/".into(),
                ttl_ms: Some(60_000),
            }),
            pb::HashAlgorithm::RingHash,
        ),
        &ups,
    );
    resources.push(reviews_route("reviews"));
    let proxy = Proxy::start(ip, resources).await;
    let first = proxy.get("reviews:9080", "/", &[]).await;
    let set = first.header("set-cookie").to_string();
    assert!(
        set.starts_with("session=\"") && set.contains("Max-Age=60"),
        "{set}"
    );
    let cookie = set.split(';').next().expect("name=value").to_string();
    for _ in 0..5 {
        // A new connection each time: only the cookie ties them together.
        let r = proxy.get("reviews:9080", "/", &[("cookie", &cookie)]).await;
        assert_eq!(r.body, first.body);
        assert_eq!(
            r.header("set-cookie"),
            "",
            "a present cookie is not set again"
        );
    }
    proxy.stop().await;
}

#[tokio::test]
async fn locality_failover_prefers_the_proxys_own_zone() {
    let ip = test_ip();
    let near = Behave::default();
    let far = Behave::default();
    let near_addr = upstream(ip, "near", near.clone()).await;
    let far_addr = upstream(ip, "far", far.clone()).await;
    let mut resources = cluster_with(
        pb::Cluster {
            name: "reviews".into(),
            lb: pb::LoadBalancer::RoundRobin as i32,
            locality_lb: Some(pb::LocalityLb::default()),
            ..Default::default()
        },
        &[(far_addr, "v1"), (near_addr, "v2")],
    );
    if let Some(pb::resource::Kind::Endpoints(e)) = &mut resources[1].kind {
        e.endpoints[0].locality = "us-west/us-west-1a".into();
        e.endpoints[1].locality = "us-east/us-east-1a".into();
    }
    resources.push(reviews_route("reviews"));
    let mut config = Proxy::config(ip);
    config.node.labels = BTreeMap::from([
        (
            "topology.kubernetes.io/region".to_string(),
            "us-east".to_string(),
        ),
        (
            "topology.kubernetes.io/zone".to_string(),
            "us-east-1a".to_string(),
        ),
    ]);
    let proxy = Proxy::start_with(config, resources).await;
    for _ in 0..10 {
        assert_eq!(proxy.get("reviews:9080", "/", &[]).await.body, "near");
    }
    assert_eq!(far.hits.load(Ordering::SeqCst), 0);
    proxy.stop().await;
}

#[tokio::test]
async fn max_retries_bounds_retries_in_flight() {
    let ip = test_ip();
    let gate = Arc::new(Semaphore::new(0));
    let bad = upstream(
        ip,
        "bad",
        Behave {
            fail_first: usize::MAX,
            ..Default::default()
        },
    )
    .await;
    let slow_behave = Behave {
        gate: Some(gate.clone()),
        ..Default::default()
    };
    let slow = upstream(ip, "slow", slow_behave.clone()).await;
    let mut resources = cluster_with(
        pb::Cluster {
            name: "reviews".into(),
            lb: pb::LoadBalancer::RoundRobin as i32,
            connection_pool: Some(pb::ConnectionPool {
                max_retries: 1,
                ..Default::default()
            }),
            ..Default::default()
        },
        &[(bad, "v1"), (slow, "v2")],
    );
    let mut action = forward(&[("reviews", 100)]);
    action.retry = Some(pb::RetryPolicy {
        attempts: 2,
        retry_on_bits: wire::retry_on::FIVE_XX,
        backoff_base_ms: 1,
        ..Default::default()
    });
    resources.push(route_config(
        "9080",
        &["reviews:9080"],
        vec![route("all", vec![], fwd(action))],
    ));
    let proxy = Proxy::start(ip, resources).await;
    // Round robin: the first request fails on "bad" and its retry waits on "slow".
    let outbound = proxy.outbound;
    let first = tokio::spawn(async move { send(outbound, "reviews:9080", "/", &[]).await });
    let deadline = Instant::now() + Duration::from_secs(5);
    while slow_behave.hits.load(Ordering::SeqCst) == 0 {
        assert!(Instant::now() < deadline, "the retry did not arrive");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The second fails on "bad" too, but the one retry allowed is in flight:
    // it gets the upstream's 503 as it is.
    let r = proxy.get("reviews:9080", "/", &[]).await;
    assert_eq!(
        (r.status, r.body.as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, "bad")
    );
    wait_for_metric(&proxy, "response_flags=\"UO\"").await;
    gate.add_permits(1);
    let r = first.await.expect("task");
    assert_eq!(
        (r.status, r.body.as_str()),
        (StatusCode::OK, "slow"),
        "retried"
    );
    proxy.stop().await;
}
