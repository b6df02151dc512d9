//! The proxy end to end: a real `proxy::run` with static config (or a real
//! discovery server), tiny hyper upstreams, real sockets. Every test gets
//! loopback addresses of its own (127.0.0.0/8 is all loopback on Linux), so
//! tests running in parallel never share a port.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch};
use wire::pb::{self, resource::Kind, string_match};
use wire::server::{ConfigProvider, ProxySnapshot, TypeSnapshot};

// ---------- addresses ----------

static NEXT_IP: AtomicU32 = AtomicU32::new(1);

/// A loopback address no other test (or test binary) uses.
fn test_ip() -> IpAddr {
    let n = NEXT_IP.fetch_add(1, Ordering::Relaxed);
    let pid = std::process::id();
    IpAddr::V4(Ipv4Addr::new(
        127,
        100 + (pid % 100) as u8,
        (pid / 100 % 250) as u8 + 1,
        (n % 250) as u8 + 1,
    ))
}

/// A port free on `ip` right now; `ip` is this test's own, so it stays free.
fn free_port(ip: IpAddr) -> u16 {
    let l = std::net::TcpListener::bind((ip, 0)).expect("bind probe");
    l.local_addr().expect("probe address").port()
}

// ---------- upstreams ----------

#[derive(Clone, Default)]
struct Behave {
    delay: Option<Duration>,
    /// Answer 503 to this many requests first.
    fail_first: usize,
    hits: Arc<AtomicUsize>,
}

/// An echo server: says who it is, what it saw (path, host, `x-*` headers).
async fn upstream(ip: IpAddr, name: &'static str, behave: Behave) -> SocketAddr {
    let listener = TcpListener::bind((ip, 0)).await.expect("bind upstream");
    let addr = listener.local_addr().expect("upstream address");
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let behave = behave.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| {
                    let behave = behave.clone();
                    async move {
                        let n = behave.hits.fetch_add(1, Ordering::SeqCst);
                        if let Some(d) = behave.delay {
                            tokio::time::sleep(d).await;
                        }
                        let mut resp = Response::new(Full::new(Bytes::from(name)));
                        if n < behave.fail_first {
                            *resp.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
                        }
                        let h = resp.headers_mut();
                        h.insert("x-upstream", name.parse().expect("value"));
                        h.insert(
                            "x-seen-path",
                            req.uri()
                                .path_and_query()
                                .map_or("/".into(), |p| p.to_string())
                                .parse()
                                .expect("value"),
                        );
                        let version = format!("{:?}", req.version());
                        h.insert("x-seen-version", version.parse().expect("value"));
                        if let Some(host) = req.headers().get("host") {
                            h.insert("x-seen-host", host.clone());
                        }
                        for (k, v) in req.headers() {
                            if k.as_str().starts_with("x-") {
                                h.insert(
                                    http::HeaderName::from_bytes(format!("echo-{k}").as_bytes())
                                        .expect("name"),
                                    v.clone(),
                                );
                            }
                        }
                        Ok::<_, std::convert::Infallible>(resp)
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

// ---------- config builders ----------

fn resource(name: &str, kind: Kind) -> pb::Resource {
    pb::Resource {
        name: name.into(),
        version: String::new(),
        kind: Some(kind),
    }
}

/// A cluster and its endpoints; each endpoint labelled with its version.
fn cluster(name: &str, endpoints: &[(SocketAddr, &str)]) -> Vec<pb::Resource> {
    let c = pb::Cluster {
        name: name.into(),
        service: "reviews.default.svc.cluster.local".into(),
        connect_timeout_ms: 1000,
        ..Default::default()
    };
    let e = pb::ClusterEndpoints {
        cluster: name.into(),
        endpoints: endpoints
            .iter()
            .map(|(a, version)| pb::Endpoint {
                address: a.ip().to_string(),
                port: u32::from(a.port()),
                healthy: true,
                pod: format!("reviews-{version}.default"),
                labels: [
                    ("app".to_string(), "reviews".to_string()),
                    ("version".to_string(), version.to_string()),
                ]
                .into(),
                ..Default::default()
            })
            .collect(),
    };
    vec![
        resource(name, Kind::Cluster(c)),
        resource(name, Kind::Endpoints(e)),
    ]
}

fn route_config(name: &str, domains: &[&str], routes: Vec<pb::Route>) -> pb::Resource {
    resource(
        name,
        Kind::RouteConfig(pb::RouteConfig {
            name: name.into(),
            virtual_hosts: vec![pb::VirtualHost {
                name: "vh".into(),
                domains: domains.iter().map(|d| d.to_string()).collect(),
                routes,
            }],
        }),
    )
}

fn prefix(p: &str) -> pb::RouteMatch {
    pb::RouteMatch {
        path: Some(pb::StringMatch {
            kind: Some(string_match::Kind::Prefix(p.into())),
        }),
        ..Default::default()
    }
}

fn forward(clusters: &[(&str, u32)]) -> pb::RouteAction {
    pb::RouteAction {
        clusters: clusters
            .iter()
            .map(|(c, w)| pb::WeightedCluster {
                cluster: c.to_string(),
                weight: *w,
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

fn route(name: &str, matches: Vec<pb::RouteMatch>, action: pb::route::Action) -> pb::Route {
    pb::Route {
        name: name.into(),
        matches,
        action: Some(action),
        ..Default::default()
    }
}

fn fwd(action: pb::RouteAction) -> pb::route::Action {
    pb::route::Action::Forward(action)
}

// ---------- the proxy ----------

struct Proxy {
    admin: SocketAddr,
    outbound: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), proxy::Error>>,
    _dir: Option<tempfile::TempDir>,
}

impl Proxy {
    fn config(ip: IpAddr) -> proxy::Config {
        proxy::Config {
            node: pb::Node {
                id: "sleep.default".into(),
                pod_name: "sleep".into(),
                namespace: "default".into(),
                pod_ip: ip.to_string(),
                ..Default::default()
            },
            app_ip: ip,
            outbound_addr: Some(SocketAddr::new(ip, free_port(ip))),
            admin_addr: SocketAddr::new(ip, free_port(ip)),
            drain_timeout: Duration::from_secs(2),
            access_log: false,
            ..Default::default()
        }
    }

    fn spawn(config: proxy::Config, dir: Option<tempfile::TempDir>) -> Proxy {
        let (stop, stopped) = oneshot::channel::<()>();
        let (admin, outbound) = (config.admin_addr, config.outbound_addr.expect("outbound"));
        let task = tokio::spawn(proxy::run(config, async move {
            let _ = stopped.await;
        }));
        Proxy {
            admin,
            outbound,
            stop: Some(stop),
            task,
            _dir: dir,
        }
    }

    /// A proxy on `ip` with `resources` as static config, once ready.
    async fn start(ip: IpAddr, resources: Vec<pb::Resource>) -> Proxy {
        Self::start_with(Self::config(ip), resources).await
    }

    async fn start_with(mut config: proxy::Config, resources: Vec<pb::Resource>) -> Proxy {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("config.json");
        let json =
            serde_json::to_string(&serde_json::json!({ "resources": resources })).expect("json");
        std::fs::write(&path, json).expect("write config");
        config.static_config = Some(path);
        let p = Self::spawn(config, Some(dir));
        p.wait_ready().await;
        p
    }

    async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(r) = admin_get(self.admin, "/ready").await
                && r.status == StatusCode::OK
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("proxy not ready in time");
    }

    async fn get(&self, host: &str, path: &str, headers: &[(&str, &str)]) -> Resp {
        send(self.outbound, host, path, headers).await
    }

    async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        let result = tokio::time::timeout(Duration::from_secs(5), &mut self.task).await;
        assert!(
            matches!(result, Ok(Ok(Ok(())))),
            "proxy did not stop cleanly"
        );
    }
}

// ---------- clients ----------

#[derive(Debug)]
struct Resp {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Resp {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

/// One HTTP/1.1 connection; requests go as the explicit-proxy Host-header form.
struct Client {
    tx: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
}

impl Client {
    async fn connect(addr: SocketAddr) -> std::io::Result<Client> {
        let stream = TcpStream::connect(addr).await?;
        let (tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(std::io::Error::other)?;
        tokio::spawn(conn);
        Ok(Client { tx })
    }

    async fn send(&mut self, req: Request<Full<Bytes>>) -> std::io::Result<Resp> {
        self.tx.ready().await.map_err(std::io::Error::other)?;
        let resp = self
            .tx
            .send_request(req)
            .await
            .map_err(std::io::Error::other)?;
        let (parts, body) = resp.into_parts();
        let body = body
            .collect()
            .await
            .map_err(std::io::Error::other)?
            .to_bytes();
        Ok(Resp {
            status: parts.status,
            headers: parts.headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    }

    async fn get(&mut self, host: &str, path: &str, headers: &[(&str, &str)]) -> Resp {
        let mut b = Request::get(path).header("host", host);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        self.send(b.body(Full::default()).expect("request"))
            .await
            .expect("response")
    }
}

async fn send(addr: SocketAddr, host: &str, path: &str, headers: &[(&str, &str)]) -> Resp {
    Client::connect(addr)
        .await
        .expect("connect")
        .get(host, path, headers)
        .await
}

async fn admin_get(admin: SocketAddr, path: &str) -> std::io::Result<Resp> {
    let mut c = Client::connect(admin).await?;
    c.send(
        Request::get(path)
            .header("host", "admin")
            .body(Full::default())
            .expect("request"),
    )
    .await
}

// ---------- tests ----------

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
        retry_on: vec!["5xx".into()],
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
        retry_on: vec!["503".into()],
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

/// A control plane for one proxy: the test sets its config through `tx`.
struct TestControlPlane {
    tx: watch::Sender<Arc<ProxySnapshot>>,
    nacks: Mutex<Vec<String>>,
}

impl ConfigProvider for TestControlPlane {
    fn connect(
        &self,
        _node: &pb::Node,
    ) -> Result<watch::Receiver<Arc<ProxySnapshot>>, tonic::Status> {
        Ok(self.tx.subscribe())
    }
    fn ack(&self, _: &pb::Node, _: &str, _: &str) {}
    fn nack(&self, _: &pb::Node, type_url: &str, _: &str, reason: &str) {
        self.nacks
            .lock()
            .expect("lock")
            .push(format!("{type_url}: {reason}"));
    }
    fn sent(&self, _: &pb::Node, _: &str, _: &str) {}
    fn disconnect(&self, _: &pb::Node) {}
}

fn proxy_snapshot(version: &str, by_type: Vec<(&str, Vec<pb::Resource>)>) -> Arc<ProxySnapshot> {
    let types: BTreeMap<String, TypeSnapshot> = by_type
        .into_iter()
        .map(|(t, resources)| {
            (
                t.to_string(),
                TypeSnapshot {
                    version: version.into(),
                    resources,
                },
            )
        })
        .collect();
    Arc::new(ProxySnapshot { types })
}

#[tokio::test]
async fn admin_over_xds_ready_dump_stats_and_nack() {
    let ip = test_ip();
    let cp = Arc::new(TestControlPlane {
        tx: watch::Sender::new(Arc::default()),
        nacks: Mutex::default(),
    });
    let xds = TcpListener::bind((ip, 0)).await.expect("bind xds");
    let xds_addr = xds.local_addr().expect("xds address");
    let server = tonic::transport::Server::builder()
        .add_service(wire::server::DiscoveryService::new(cp.clone()))
        .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(xds));
    tokio::spawn(server);

    let mut config = Proxy::config(ip);
    config.xds_address = Some(format!("http://{xds_addr}"));
    config.access_log = true;
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
        assert_eq!(
            resp.headers()
                .get("x-seen-host")
                .and_then(|v| v.to_str().ok()),
            Some("reviews:9080"),
            "{path}"
        );
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
