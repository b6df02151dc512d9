//! Routing, splits, header operations, rewrites, timeouts, retries, faults,
//! passthrough, inbound, gateways, HTTP/2 and CONNECT.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;
use wire::pb::{self, resource::Kind, string_match};

use crate::support::*;

/// Two versions behind one host: header and path rules pick v2, the rest v1.
async fn two_versions(ip: IpAddr, mut extra: Vec<pb::Route>) -> (Proxy, SocketAddr, SocketAddr) {
    let v1 = upstream(ip, "v1", Behave::default()).await;
    let v2 = upstream(ip, "v2", Behave::default()).await;
    let mut routes = vec![
        route(
            "jason",
            vec![pb::RouteMatch {
                headers: [(
                    "end-user".to_string(),
                    pb::StringMatch {
                        kind: Some(string_match::Kind::Exact("jason".into())),
                    },
                )]
                .into(),
                ..Default::default()
            }],
            fwd(forward(&[("v2", 100)])),
        ),
        route(
            "v2-path",
            vec![prefix("/v2/")],
            fwd(forward(&[("v2", 100)])),
        ),
    ];
    routes.append(&mut extra);
    routes.push(route(
        "default",
        vec![prefix("/")],
        fwd(forward(&[("v1", 100)])),
    ));
    let mut resources = cluster("v1", &[(v1, "v1")]);
    resources.extend(cluster("v2", &[(v2, "v2")]));
    resources.push(route_config("9080", &["reviews", "reviews:9080"], routes));
    (Proxy::start(ip, resources).await, v1, v2)
}

#[tokio::test]
async fn routes_by_path_and_header() {
    let ip = test_ip();
    let (proxy, _, _) = two_versions(ip, vec![]).await;
    assert_eq!(proxy.get("reviews:9080", "/x", &[]).await.body, "v1");
    assert_eq!(proxy.get("reviews:9080", "/x", &[]).await.body, "v1");
    assert_eq!(
        proxy
            .get("reviews:9080", "/x", &[("end-user", "jason")])
            .await
            .body,
        "v2"
    );
    assert_eq!(proxy.get("reviews:9080", "/v2/x", &[]).await.body, "v2");
    let r = proxy
        .get("reviews:9080", "/x", &[("x-request-id", "abc")])
        .await;
    assert_eq!(
        r.header("echo-x-request-id"),
        "abc",
        "the request id is kept"
    );
    let r = proxy.get("reviews:9080", "/x", &[]).await;
    assert_eq!(
        r.header("echo-x-request-id").len(),
        36,
        "a request id is generated"
    );
    assert_eq!(
        r.header("x-seen-host"),
        "reviews:9080",
        "the Host header is preserved"
    );
    // Absolute-form, as HTTP_PROXY clients send it.
    let mut c = Client::connect(proxy.outbound).await.expect("connect");
    let req = Request::get("http://reviews:9080/v2/abs")
        .body(Full::default())
        .expect("request");
    assert_eq!(c.send(req).await.expect("response").body, "v2");
    proxy.stop().await;
}

#[tokio::test]
async fn weighted_split_80_20() {
    let ip = test_ip();
    let v1 = upstream(ip, "v1", Behave::default()).await;
    let v2 = upstream(ip, "v2", Behave::default()).await;
    let mut resources = cluster("v1", &[(v1, "v1")]);
    resources.extend(cluster("v2", &[(v2, "v2")]));
    resources.push(route_config(
        "9080",
        &["reviews"],
        vec![route(
            "split",
            vec![],
            fwd(forward(&[("v1", 80), ("v2", 20)])),
        )],
    ));
    let proxy = Proxy::start(ip, resources).await;
    let mut client = Client::connect(proxy.outbound).await.expect("connect");
    let mut v1_count = 0;
    for _ in 0..2000 {
        if client.get("reviews:9080", "/", &[]).await.body == "v1" {
            v1_count += 1;
        }
    }
    assert!(
        (1540..=1660).contains(&v1_count),
        "v1 got {v1_count} of 2000, want 1600 ± 3%"
    );
    proxy.stop().await;
}

#[tokio::test]
async fn header_ops_and_rewrites() {
    let ip = test_ip();
    let mut ops_route = route(
        "ops",
        vec![prefix("/api/")],
        fwd(pb::RouteAction {
            clusters: vec![pb::WeightedCluster {
                cluster: "v1".into(),
                weight: 100,
                request_headers: Some(pb::HeaderOps {
                    set: [("x-dest".to_string(), "v1".to_string())].into(),
                    ..Default::default()
                }),
                response_headers: Some(pb::HeaderOps {
                    add: [("x-dest-resp".to_string(), "1".to_string())].into(),
                    ..Default::default()
                }),
            }],
            prefix_rewrite: "/v1/".into(),
            ..Default::default()
        }),
    );
    ops_route.request_headers = Some(pb::HeaderOps {
        set: [("x-added".to_string(), "yes".to_string())].into(),
        remove: vec!["x-remove".into()],
        ..Default::default()
    });
    ops_route.response_headers = Some(pb::HeaderOps {
        set: [("x-resp".to_string(), "set".to_string())].into(),
        remove: vec!["x-upstream".into()],
        ..Default::default()
    });
    let authority = route(
        "authority",
        vec![prefix("/auth")],
        fwd(pb::RouteAction {
            authority_rewrite: "ratings.internal".into(),
            ..forward(&[("v1", 100)])
        }),
    );
    let (proxy, _, _) = two_versions(ip, vec![ops_route, authority]).await;
    let r = proxy
        .get(
            "reviews:9080",
            "/api/users?id=7",
            &[("x-remove", "1"), ("x-keep", "1")],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("echo-x-added"), "yes");
    assert_eq!(r.header("echo-x-dest"), "v1");
    assert_eq!(r.header("echo-x-remove"), "");
    assert_eq!(r.header("echo-x-keep"), "1");
    assert_eq!(r.header("x-resp"), "set");
    assert_eq!(r.header("x-dest-resp"), "1");
    assert_eq!(r.header("x-upstream"), "", "response header removed");
    assert_eq!(
        r.header("x-seen-path"),
        "/v1/users?id=7",
        "prefix rewritten, query kept"
    );
    assert_eq!(r.header("echo-x-forwarded-proto"), "http");
    let r = proxy.get("reviews:9080", "/auth", &[]).await;
    assert_eq!(r.header("x-seen-host"), "ratings.internal");
    proxy.stop().await;
}

#[tokio::test]
async fn redirect_and_direct_response() {
    let ip = test_ip();
    let redirect = route(
        "redirect",
        vec![prefix("/old")],
        pb::route::Action::Redirect(pb::Redirect {
            path: "/new".into(),
            authority: "new.example.com".into(),
            ..Default::default()
        }),
    );
    let direct = route(
        "direct",
        vec![prefix("/teapot")],
        pb::route::Action::DirectResponse(pb::DirectResponse {
            status: 418,
            body: b"short and stout".to_vec(),
        }),
    );
    let (proxy, _, _) = two_versions(ip, vec![redirect, direct]).await;
    let r = proxy.get("reviews:9080", "/old?q=1", &[]).await;
    assert_eq!(r.status, StatusCode::MOVED_PERMANENTLY);
    assert_eq!(r.header("location"), "http://new.example.com/new?q=1");
    let r = proxy.get("reviews:9080", "/teapot", &[]).await;
    assert_eq!(
        (r.status.as_u16(), r.body.as_str()),
        (418, "short and stout")
    );
    proxy.stop().await;
}

#[tokio::test]
async fn timeout_gives_504() {
    let ip = test_ip();
    let slow = upstream(
        ip,
        "slow",
        Behave {
            delay: Some(Duration::from_secs(2)),
            ..Default::default()
        },
    )
    .await;
    let mut resources = cluster("slow", &[(slow, "v1")]);
    let action = pb::RouteAction {
        timeout_ms: 200,
        ..forward(&[("slow", 100)])
    };
    resources.push(route_config(
        "9080",
        &["slow"],
        vec![route("slow", vec![], fwd(action))],
    ));
    let proxy = Proxy::start(ip, resources).await;
    let started = Instant::now();
    let r = proxy.get("slow:9080", "/", &[]).await;
    let took = started.elapsed();
    assert_eq!(r.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(r.body, "upstream request timeout");
    assert!(
        took >= Duration::from_millis(190) && took < Duration::from_millis(1500),
        "took {took:?}"
    );
    proxy.stop().await;
}

#[tokio::test]
async fn retries_turn_503s_into_200() {
    let ip = test_ip();
    let hits = Arc::new(AtomicUsize::new(0));
    let flaky = upstream(
        ip,
        "flaky",
        Behave {
            fail_first: 2,
            hits: hits.clone(),
            ..Default::default()
        },
    )
    .await;
    let mut resources = cluster("flaky", &[(flaky, "v1")]);
    let retry = pb::RetryPolicy {
        attempts: 3,
        retry_on_bits: wire::retry_on::FIVE_XX,
        backoff_base_ms: 5,
        ..Default::default()
    };
    let action = pb::RouteAction {
        retry: Some(retry),
        ..forward(&[("flaky", 100)])
    };
    resources.push(route_config(
        "9080",
        &["flaky"],
        vec![route("flaky", vec![], fwd(action))],
    ));
    let proxy = Proxy::start(ip, resources).await;
    let r = proxy.get("flaky:9080", "/", &[]).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(hits.load(Ordering::SeqCst), 3, "two failures and a success");

    // With more failures than retries the last 503 is what the client sees.
    let hits2 = Arc::new(AtomicUsize::new(0));
    let broken = upstream(
        ip,
        "broken",
        Behave {
            fail_first: 100,
            hits: hits2.clone(),
            ..Default::default()
        },
    )
    .await;
    let mut resources = cluster("broken", &[(broken, "v1")]);
    let retry = pb::RetryPolicy {
        attempts: 2,
        retry_on_bits: wire::retry_on::RETRIABLE_STATUS_CODES,
        retriable_status_codes: vec![503],
        backoff_base_ms: 5,
        ..Default::default()
    };
    resources.push(route_config(
        "9080",
        &["broken"],
        vec![route(
            "broken",
            vec![],
            fwd(pb::RouteAction {
                retry: Some(retry),
                ..forward(&[("broken", 100)])
            }),
        )],
    ));
    let proxy2 = Proxy::start(test_ip(), resources).await;
    let r = proxy2.get("broken:9080", "/", &[]).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(hits2.load(Ordering::SeqCst), 3);
    proxy.stop().await;
    proxy2.stop().await;
}

#[tokio::test]
async fn connect_failure_is_503_uf() {
    let ip = test_ip();
    let dead = SocketAddr::new(ip, free_port(ip)); // nothing listens here
    let mut resources = cluster("dead", &[(dead, "v1")]);
    resources.extend(cluster("empty", &[]));
    resources.push(route_config(
        "9080",
        &["dead", "empty"],
        vec![
            route(
                "dead",
                vec![pb::RouteMatch {
                    authority: Some(pb::StringMatch {
                        kind: Some(string_match::Kind::Prefix("dead".into())),
                    }),
                    ..Default::default()
                }],
                fwd(forward(&[("dead", 100)])),
            ),
            route("empty", vec![], fwd(forward(&[("empty", 100)]))),
        ],
    ));
    let proxy = Proxy::start(ip, resources).await;
    let r = proxy.get("dead:9080", "/", &[]).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(r.body.contains("connection failure"), "{}", r.body);
    let r = proxy.get("empty:9080", "/", &[]).await;
    assert_eq!(
        (r.status, r.body.as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, "no healthy upstream")
    );
    // Metrics are written as the response ends; poll briefly.
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let stats = admin_get(proxy.admin, "/stats/prometheus")
            .await
            .expect("stats")
            .body;
        if stats.contains("response_flags=\"UF\"") && stats.contains("response_flags=\"UH\"") {
            break;
        }
        assert!(Instant::now() < deadline, "no UF/UH metrics: {stats}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    proxy.stop().await;
}

#[tokio::test]
async fn fault_abort_and_delay() {
    let ip = test_ip();
    let mut abort = route(
        "abort",
        vec![prefix("/abort")],
        fwd(forward(&[("v1", 100)])),
    );
    abort.fault = Some(pb::Fault {
        abort_percent: 100.0,
        abort_http_status: 503,
        ..Default::default()
    });
    let mut delay = route(
        "delay",
        vec![prefix("/delay")],
        fwd(forward(&[("v1", 100)])),
    );
    delay.fault = Some(pb::Fault {
        delay_percent: 100.0,
        delay_ms: 300,
        ..Default::default()
    });
    let (proxy, _, _) = two_versions(ip, vec![abort, delay]).await;
    let r = proxy.get("reviews:9080", "/abort", &[]).await;
    assert_eq!(
        (r.status, r.body.as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, "fault filter abort")
    );
    let started = Instant::now();
    let r = proxy.get("reviews:9080", "/delay", &[]).await;
    assert_eq!((r.status, r.body.as_str()), (StatusCode::OK, "v1"));
    assert!(
        started.elapsed() >= Duration::from_millis(290),
        "delay not applied: {:?}",
        started.elapsed()
    );
    proxy.stop().await;
}

#[tokio::test]
async fn unknown_host_passes_through() {
    let ip = test_ip();
    let (proxy, _, _) = two_versions(ip, vec![]).await;
    let outside = upstream(test_ip(), "outside", Behave::default()).await;
    let r = proxy.get(&outside.to_string(), "/pt", &[]).await;
    assert_eq!((r.status, r.body.as_str()), (StatusCode::OK, "outside"));
    assert_eq!(r.header("x-seen-path"), "/pt");
    let mut c = Client::connect(proxy.outbound).await.expect("connect");
    let req = Request::get(format!("http://{outside}/abs"))
        .body(Full::default())
        .expect("request");
    assert_eq!(
        c.send(req).await.expect("response").header("x-seen-path"),
        "/abs"
    );
    proxy.stop().await;
}

#[tokio::test]
async fn inbound_forwards_to_the_app() {
    let pod_ip = test_ip();
    let app_ip = test_ip();
    let app = upstream(app_ip, "app", Behave::default()).await;
    let port = free_port(pod_ip);
    let listener = pb::Listener {
        name: format!("inbound|{port}"),
        port: u32::from(port),
        direction: pb::Direction::Inbound as i32,
        protocol: pb::Protocol::Http as i32,
        app_port: u32::from(app.port()),
        ..Default::default()
    };
    let mut config = Proxy::config(pod_ip);
    config.app_ip = app_ip;
    let proxy =
        Proxy::start_with(config, vec![resource("inbound", Kind::Listener(listener))]).await;
    let r = send(
        SocketAddr::new(pod_ip, port),
        "reviews:9080",
        "/in?x=1",
        &[("x-request-id", "rid")],
    )
    .await;
    assert_eq!((r.status, r.body.as_str()), (StatusCode::OK, "app"));
    assert_eq!(r.header("x-seen-path"), "/in?x=1");
    assert_eq!(r.header("x-seen-host"), "reviews:9080");
    assert_eq!(r.header("echo-x-forwarded-proto"), "http");
    assert_eq!(r.header("echo-x-request-id"), "rid");
    let stats = admin_get(proxy.admin, "/stats/prometheus")
        .await
        .expect("stats")
        .body;
    assert!(stats.contains("reporter=\"destination\""), "{stats}");
    proxy.stop().await;
}

#[tokio::test]
async fn gateway_routes_by_listener_route_config() {
    let ip = test_ip();
    let v1 = upstream(ip, "v1", Behave::default()).await;
    let port = free_port(ip);
    let mut resources = cluster("v1", &[(v1, "v1")]);
    resources.push(resource(
        "gw",
        Kind::Listener(pb::Listener {
            name: format!("gateway|{port}"),
            port: u32::from(port),
            direction: pb::Direction::Gateway as i32,
            protocol: pb::Protocol::Http as i32,
            route_config: "http.8080".into(),
            ..Default::default()
        }),
    ));
    resources.push(route_config(
        "http.8080",
        &["bookinfo.example.com"],
        vec![route(
            "gw",
            vec![prefix("/productpage")],
            fwd(forward(&[("v1", 100)])),
        )],
    ));
    let mut config = Proxy::config(ip);
    config.node.kind = pb::ProxyKind::Gateway as i32;
    let proxy = Proxy::start_with(config, resources).await;
    let gw = SocketAddr::new(ip, port);
    assert_eq!(
        send(gw, "bookinfo.example.com", "/productpage", &[])
            .await
            .body,
        "v1"
    );
    assert_eq!(
        send(gw, "bookinfo.example.com", "/other", &[]).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        send(gw, "unknown.example.com", "/productpage", &[])
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    proxy.stop().await;
}

#[tokio::test]
async fn shutdown_lets_in_flight_requests_finish() {
    let ip = test_ip();
    let slow = upstream(
        ip,
        "slow",
        Behave {
            delay: Some(Duration::from_millis(400)),
            ..Default::default()
        },
    )
    .await;
    let mut resources = cluster("slow", &[(slow, "v1")]);
    resources.push(route_config(
        "9080",
        &["slow"],
        vec![route("slow", vec![], fwd(forward(&[("slow", 100)])))],
    ));
    let proxy = Proxy::start(ip, resources).await;
    let outbound = proxy.outbound;
    let in_flight = tokio::spawn(async move { send(outbound, "slow:9080", "/", &[]).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    proxy.stop().await;
    let r = in_flight.await.expect("request task");
    assert_eq!((r.status, r.body.as_str()), (StatusCode::OK, "slow"));
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "drain waited for the timeout: {:?}",
        started.elapsed()
    );
    assert!(
        TcpStream::connect(outbound).await.is_err(),
        "still accepting after shutdown"
    );
}

#[tokio::test]
async fn http2_prior_knowledge_both_sides() {
    let ip = test_ip();
    let v1 = upstream(ip, "v1", Behave::default()).await;
    // "h1" speaks HTTP/1.1 whatever the client speaks; "h2" speaks HTTP/2.
    let mut resources = cluster("h1", &[(v1, "v1")]);
    if let Some(Kind::Cluster(spec)) = &mut resources[0].kind {
        spec.protocol = pb::Protocol::Http as i32;
    }
    let [mut c, e] = <[pb::Resource; 2]>::try_from(cluster("h2", &[(v1, "v1")])).expect("two");
    if let Some(Kind::Cluster(spec)) = &mut c.kind {
        spec.protocol = pb::Protocol::Http2 as i32;
    }
    resources.extend([c, e]);
    resources.push(route_config(
        "9080",
        &["reviews:9080"],
        vec![
            route("h2", vec![prefix("/h2")], fwd(forward(&[("h2", 100)]))),
            route("h1", vec![], fwd(forward(&[("h1", 100)]))),
        ],
    ));
    let proxy = Proxy::start(ip, resources).await;
    let stream = TcpStream::connect(proxy.outbound).await.expect("connect");
    let (mut tx, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("h2 handshake");
    tokio::spawn(conn);
    for (path, upstream_version) in [("/h2", "HTTP/2.0"), ("/x", "HTTP/1.1")] {
        let req = Request::get(format!("http://reviews:9080{path}"))
            .body(Full::<Bytes>::default())
            .expect("request");
        let resp = tx.send_request(req).await.expect("response");
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(
            resp.headers()
                .get("x-seen-version")
                .and_then(|v| v.to_str().ok()),
            Some(upstream_version),
            "{path}"
        );
        // The client's authority, once: `:authority` on HTTP/2 (nginx
        // refuses a second, different Host), `Host` on HTTP/1.1.
        let seen = |name: &str| resp.headers().get(name).and_then(|v| v.to_str().ok());
        let (host, authority) = match upstream_version {
            "HTTP/2.0" => (None, Some("reviews:9080")),
            _ => (Some("reviews:9080"), None),
        };
        assert_eq!(seen("x-seen-host"), host, "{path}");
        assert_eq!(seen("x-seen-authority"), authority, "{path}");
    }
    proxy.stop().await;
}

#[tokio::test]
async fn connect_tunnels_to_the_destination() {
    let ip = test_ip();
    let (proxy, _, _) = two_versions(ip, vec![]).await;
    let outside = upstream(test_ip(), "outside", Behave::default()).await;
    let stream = TcpStream::connect(proxy.outbound).await.expect("connect");
    let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn.with_upgrades());
    let req = Request::connect(outside.to_string())
        .body(Full::<Bytes>::default())
        .expect("request");
    let resp = tx.send_request(req).await.expect("CONNECT response");
    assert_eq!(resp.status(), StatusCode::OK);
    let tunnel = hyper::upgrade::on(resp).await.expect("upgrade");
    // Speak HTTP/1.1 to the destination through the tunnel.
    let (mut inner, conn) = hyper::client::conn::http1::handshake(tunnel)
        .await
        .expect("inner handshake");
    tokio::spawn(conn);
    let req = Request::get("/through")
        .header("host", "outside")
        .body(Full::<Bytes>::default())
        .expect("request");
    let resp = inner.send_request(req).await.expect("tunnelled response");
    assert_eq!(
        resp.headers()
            .get("x-seen-path")
            .and_then(|v| v.to_str().ok()),
        Some("/through")
    );
    proxy.stop().await;
}
