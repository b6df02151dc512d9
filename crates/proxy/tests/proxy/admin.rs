//! The admin port's changes need proof of the right (issue 13, finding 4:
//! seven unauthenticated `POST /quitquitquit` restarted a sidecar seven
//! times), and Istio's health port answers readiness.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use proxy::admin::{AdminAuth, AdminToken};

use crate::support::*;

/// `POST path` to `addr` from a socket bound to `from` (any address if
/// `None`), with `token` as a bearer token if given.
async fn post_from(
    from: Option<IpAddr>,
    addr: SocketAddr,
    path: &str,
    token: Option<&str>,
) -> std::io::Result<Resp> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    if let Some(ip) = from {
        socket.bind(SocketAddr::new(ip, 0))?;
    }
    let stream = socket.connect(addr).await?;
    let (tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(std::io::Error::other)?;
    tokio::spawn(conn);
    let mut req = Request::post(path).header("host", "admin");
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    Client { tx }
        .send(req.body(Full::<Bytes>::default()).expect("request"))
        .await
}

async fn post(addr: SocketAddr, path: &str, token: Option<&str>) -> Resp {
    post_from(None, addr, path, token).await.expect("admin")
}

#[tokio::test]
async fn quitquitquit_needs_the_proxys_admin_token() {
    let ip = test_ip();
    let token = AdminToken::generate().expect("token");
    let mut config = Proxy::config(ip);
    config.admin_auth = AdminAuth::Token(token.clone());
    let proxy = Proxy::start_with(config, vec![]).await;

    // The finding: seven POSTs from any local process. Now each is refused
    // and the proxy keeps serving.
    for _ in 0..7 {
        let r = post(proxy.admin, "/quitquitquit", None).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.body);
        assert!(r.header("www-authenticate").starts_with("Bearer"));
    }
    let other = AdminToken::generate().expect("token");
    let r = post(proxy.admin, "/quitquitquit", Some(other.as_str())).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "another token");
    let r = post(proxy.admin, "/healthcheck/fail", None).await;
    assert_eq!(
        r.status,
        StatusCode::UNAUTHORIZED,
        "every change is guarded"
    );
    // A change is never made by a GET, token or not.
    let r = admin_get(proxy.admin, "/quitquitquit")
        .await
        .expect("admin");
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(
        admin_get(proxy.admin, "/ready")
            .await
            .expect("ready")
            .status,
        StatusCode::OK,
        "refused calls changed nothing"
    );
    // Views stay open.
    let certs = admin_get(proxy.admin, "/certs").await.expect("certs");
    assert_eq!(certs.status, StatusCode::OK);

    let r = post(proxy.admin, "/quitquitquit", Some(token.as_str())).await;
    assert_eq!(r.status, StatusCode::OK);
    let Proxy { task, .. } = proxy;
    let result = tokio::time::timeout(Duration::from_secs(5), task).await;
    assert!(
        matches!(result, Ok(Ok(Ok(())))),
        "quitquitquit with the token did not stop the proxy"
    );
}

#[tokio::test]
async fn without_an_auth_mode_changes_are_closed() {
    let ip = test_ip();
    let proxy = Proxy::start(ip, vec![]).await;
    let r = post(proxy.admin, "/quitquitquit", Some("anything")).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    assert_eq!(
        admin_get(proxy.admin, "/ready")
            .await
            .expect("ready")
            .status,
        StatusCode::OK
    );
    proxy.stop().await;
}

/// In a pod's own network namespace only the pod reaches 127.0.0.1: there
/// the admin port takes changes from 127.0.0.1 and ::1, and from no other
/// address (on a shared loopback, any other 127.x address is another pod's).
#[tokio::test]
async fn loopback_mode_takes_changes_from_localhost_only() {
    let ip = test_ip();
    let mut config = Proxy::config(ip);
    config.admin_auth = AdminAuth::Loopback;
    let proxy = Proxy::start_with(config, vec![]).await;
    let other_pod = test_ip();
    let r = post_from(Some(other_pod), proxy.admin, "/healthcheck/fail", None)
        .await
        .expect("admin");
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    assert!(r.body.contains(&other_pod.to_string()), "{}", r.body);
    assert_eq!(
        admin_get(proxy.admin, "/ready")
            .await
            .expect("ready")
            .status,
        StatusCode::OK
    );
    let localhost = Some(IpAddr::V4(Ipv4Addr::LOCALHOST));
    let r = post_from(localhost, proxy.admin, "/healthcheck/fail", None)
        .await
        .expect("admin");
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let ready = admin_get(proxy.admin, "/ready").await.expect("ready");
    assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(ready.body.trim(), "HEALTH_CHECK_FAILED");
    proxy.stop().await;
}

/// Istio's health port: `GET /healthz/ready` is 503 until identity and
/// config are in force, 200 then, and 503 again when an operator fails the
/// health check or the proxy drains. It serves nothing else.
#[tokio::test]
async fn health_port_answers_readiness_as_istios() {
    let ip = test_ip();
    let (cp, xds_addr, _server) = TestControlPlane::serve(ip, Arc::default()).await;
    let token = AdminToken::generate().expect("token");
    let mut config = Proxy::config(ip);
    config.xds_address = Some(
        wire::address::XdsAddress::parse(&format!("http://{xds_addr}"), None).expect("address"),
    );
    config.admin_auth = AdminAuth::Token(token.clone());
    let health = SocketAddr::new(ip, free_port(ip));
    config.health_addr = Some(health);
    let proxy = Proxy::spawn(config, None);

    let ready = || async {
        let mut c = Client::connect(health).await?;
        c.send(
            Request::get("/healthz/ready")
                .header("host", "health")
                .body(Full::default())
                .expect("request"),
        )
        .await
    };
    // Bound from the start, answering "not yet" until the first config.
    let r = eventually_ok(ready).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.body.trim(), "PRE_INITIALIZING");

    let types = wire::types::ALL
        .iter()
        .map(|t| {
            (
                t.to_string(),
                Arc::new(wire::snapshot::TypeSnapshot::new("1", &[])),
            )
        })
        .collect();
    cp.tx
        .send_replace(Arc::new(wire::snapshot::ProxySnapshot { types }));
    proxy.wait_ready().await;
    let r = ready().await.expect("health");
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body.trim(), "LIVE");

    // The health port takes no changes and shows nothing else.
    let r = post(health, "/quitquitquit", Some(token.as_str())).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let mut c = Client::connect(health).await.expect("health");
    let r = c.get("health", "/config_dump", &[]).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);

    let r = post(proxy.admin, "/healthcheck/fail", Some(token.as_str())).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        ready().await.expect("health").status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    let r = post(proxy.admin, "/healthcheck/ok", Some(token.as_str())).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(ready().await.expect("health").status, StatusCode::OK);
    proxy.stop().await;
}

/// `f` once it answers (the listener may not be bound the very first instant).
async fn eventually_ok<F, Fut>(f: F) -> Resp
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = std::io::Result<Resp>>,
{
    for _ in 0..250 {
        if let Ok(r) = f().await {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("no answer");
}

/// An application's own metrics endpoint, in the OpenMetrics format (which
/// ends in `# EOF`).
async fn app_metrics(ip: IpAddr) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind((ip, 0))
        .await
        .expect("bind app");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let svc =
                    hyper::service::service_fn(|req: Request<hyper::body::Incoming>| async move {
                        let body = if req.uri().path() == "/app/metrics" {
                            "# TYPE app_orders counter\napp_orders_total 7\n# EOF\n"
                        } else {
                            "not here"
                        };
                        Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(
                            Bytes::from(body),
                        )))
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

/// Istio's Prometheus ports: 15090 serves the proxy's own metrics (the
/// standard metrics of the requests it handled, and its health), 15020 the
/// same merged with the application's (its `prometheus.io/*` endpoint),
/// which never ends the proxy's exposition early. Both are streamed (HTTP/1.1
/// chunks, no length known ahead): a scrape never holds its whole text.
#[tokio::test]
async fn metrics_ports_serve_the_proxys_and_merge_the_apps() {
    let ip = test_ip();
    let app = app_metrics(ip).await;
    let upstream = upstream(ip, "v1", Behave::default()).await;
    let mut config = Proxy::config(ip);
    let (stats, merged) = (
        SocketAddr::new(ip, free_port(ip)),
        SocketAddr::new(ip, free_port(ip)),
    );
    config.stats_addr = Some(stats);
    config.status_addr = Some(merged);
    config.status.app_metrics = Some(proxy::admin::stats::AppMetrics {
        addr: app,
        path: "/app/metrics".into(),
    });
    let mut resources = cluster("v1", &[(upstream, "v1")]);
    resources.push(route_config(
        "9080",
        &["reviews:9080"],
        vec![route("r", vec![prefix("/")], fwd(forward(&[("v1", 100)])))],
    ));
    let proxy = Proxy::start_with(config, resources).await;
    for _ in 0..3 {
        assert_eq!(proxy.get("reviews:9080", "/", &[]).await.status, 200);
    }
    let scrape = |addr: SocketAddr| async move {
        let mut c = Client::connect(addr).await.expect("connect");
        c.get("metrics", "/stats/prometheus", &[]).await
    };
    let own = scrape(stats).await;
    assert_eq!(own.status, StatusCode::OK);
    assert!(
        own.header("content-type")
            .starts_with("text/plain; version=0.0.4")
    );
    let streamed = |r: &Resp| {
        r.header("transfer-encoding") == "chunked" && r.header("content-length").is_empty()
    };
    assert!(streamed(&own), "{:?}", own.headers);
    let requests = |text: &str| {
        text.lines()
            .find(|l| {
                l.starts_with("istio_requests_total{")
                    && l.contains("reporter=\"source\"")
                    && l.contains("destination_workload=\"reviews-v1\"")
                    && l.contains("destination_canonical_revision=\"v1\"")
                    && l.contains("response_code=\"200\"")
            })
            .and_then(|l| l.rsplit(' ').next())
            .map(str::to_string)
    };
    assert_eq!(requests(&own.body).as_deref(), Some("3"), "{}", own.body);
    for health in [
        "envoy_server_live 1",
        "trellis_proxy_config_updates_total{type=\"clusters\",result=\"accepted\"}",
    ] {
        assert!(own.body.contains(health), "{health} in\n{}", own.body);
    }
    assert!(!own.body.contains("app_orders_total"));

    let all = scrape(merged).await;
    assert_eq!(all.status, StatusCode::OK);
    assert!(streamed(&all), "{:?}", all.headers);
    assert_eq!(requests(&all.body).as_deref(), Some("3"));
    assert!(all.body.contains("app_orders_total 7"), "{}", all.body);
    assert!(!all.body.contains("# EOF"), "{}", all.body);
    proxy.stop().await;
}
