//! What every test needs: loopback addresses of its own, tiny upstreams,
//! config builders, a running proxy and clients.

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
use tokio::task::JoinHandle;
use wire::pb::{self, resource::Kind, string_match};
use wire::server::ConfigProvider;
use wire::snapshot::ProxySnapshot;

// ---------- addresses ----------

pub static NEXT_IP: AtomicU32 = AtomicU32::new(1);

/// A loopback address no other test (or test binary) uses.
pub fn test_ip() -> IpAddr {
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
pub fn free_port(ip: IpAddr) -> u16 {
    let l = std::net::TcpListener::bind((ip, 0)).expect("bind probe");
    l.local_addr().expect("probe address").port()
}

// ---------- upstreams ----------

#[derive(Clone, Default)]
pub struct Behave {
    pub delay: Option<Duration>,
    /// Answer 503 to this many requests first.
    pub fail_first: usize,
    pub hits: Arc<AtomicUsize>,
    /// Hold each response until the test adds a permit.
    pub gate: Option<Arc<tokio::sync::Semaphore>>,
}

/// An echo server: says who it is, what it saw (path, host, `x-*` headers).
pub async fn upstream(ip: IpAddr, name: &'static str, behave: Behave) -> SocketAddr {
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
                        if let Some(g) = &behave.gate
                            && let Ok(p) = g.acquire().await
                        {
                            p.forget();
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
                        // Host as a header (HTTP/1.1), the authority as
                        // `:authority` (HTTP/2): a request must not carry both.
                        if let Some(host) = req.headers().get("host") {
                            h.insert("x-seen-host", host.clone());
                        }
                        if let Some(scheme) = req.uri().scheme_str() {
                            h.insert("x-seen-scheme", scheme.parse().expect("value"));
                        }
                        if let Some(a) = req.uri().authority() {
                            h.insert("x-seen-authority", a.as_str().parse().expect("value"));
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

pub fn resource(name: &str, kind: Kind) -> pb::Resource {
    pb::Resource {
        name: name.into(),
        version: String::new(),
        kind: Some(kind),
    }
}

/// A cluster and its endpoints; each endpoint labelled with its version.
pub fn cluster(name: &str, endpoints: &[(SocketAddr, &str)]) -> Vec<pb::Resource> {
    cluster_with(
        pb::Cluster {
            name: name.into(),
            ..Default::default()
        },
        endpoints,
    )
}

/// `spec` (its name, traffic policy) with the test defaults and endpoints.
pub fn cluster_with(spec: pb::Cluster, endpoints: &[(SocketAddr, &str)]) -> Vec<pb::Resource> {
    let name = spec.name.clone();
    let name = name.as_str();
    let c = pb::Cluster {
        service: "reviews.default.svc.cluster.local".into(),
        connect_timeout_ms: 1000,
        ..spec
    };
    let e = pb::ClusterEndpoints {
        cluster: name.into(),
        compact: None,
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

pub fn route_config(name: &str, domains: &[&str], routes: Vec<pb::Route>) -> pb::Resource {
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

pub fn prefix(p: &str) -> pb::RouteMatch {
    pb::RouteMatch {
        path: Some(pb::StringMatch {
            kind: Some(string_match::Kind::Prefix(p.into())),
        }),
        ..Default::default()
    }
}

pub fn forward(clusters: &[(&str, u32)]) -> pb::RouteAction {
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

pub fn route(name: &str, matches: Vec<pb::RouteMatch>, action: pb::route::Action) -> pb::Route {
    pb::Route {
        name: name.into(),
        matches,
        action: Some(action),
        ..Default::default()
    }
}

pub fn fwd(action: pb::RouteAction) -> pb::route::Action {
    pb::route::Action::Forward(action)
}

// ---------- the proxy ----------

pub struct Proxy {
    pub admin: SocketAddr,
    pub outbound: SocketAddr,
    pub stop: Option<oneshot::Sender<()>>,
    pub task: tokio::task::JoinHandle<Result<(), proxy::Error>>,
    pub _dir: Option<tempfile::TempDir>,
}

impl Proxy {
    pub fn config(ip: IpAddr) -> proxy::Config {
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

    pub fn spawn(config: proxy::Config, dir: Option<tempfile::TempDir>) -> Proxy {
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
    pub async fn start(ip: IpAddr, resources: Vec<pb::Resource>) -> Proxy {
        Self::start_with(Self::config(ip), resources).await
    }

    pub async fn start_with(mut config: proxy::Config, resources: Vec<pb::Resource>) -> Proxy {
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

    pub async fn wait_ready(&self) {
        // Generous: a loaded CI machine can stall a starting proxy for seconds.
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut last = None;
        while Instant::now() < deadline {
            match admin_get(self.admin, "/ready").await {
                Ok(r) if r.status == StatusCode::OK => return,
                Ok(r) => last = Some(format!("{} {}", r.status, r.body)),
                Err(e) => last = Some(e.to_string()),
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("proxy not ready in time; /ready said: {last:?}");
    }

    pub async fn get(&self, host: &str, path: &str, headers: &[(&str, &str)]) -> Resp {
        send(self.outbound, host, path, headers).await
    }

    pub async fn stop(mut self) {
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
pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Resp {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

/// One HTTP/1.1 connection; requests go as the explicit-proxy Host-header form.
pub struct Client {
    pub tx: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
}

impl Client {
    pub async fn connect(addr: SocketAddr) -> std::io::Result<Client> {
        let stream = TcpStream::connect(addr).await?;
        let (tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(std::io::Error::other)?;
        tokio::spawn(conn);
        Ok(Client { tx })
    }

    pub async fn send(&mut self, req: Request<Full<Bytes>>) -> std::io::Result<Resp> {
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

    pub async fn get(&mut self, host: &str, path: &str, headers: &[(&str, &str)]) -> Resp {
        let mut b = Request::get(path).header("host", host);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        self.send(b.body(Full::default()).expect("request"))
            .await
            .expect("response")
    }
}

pub async fn send(addr: SocketAddr, host: &str, path: &str, headers: &[(&str, &str)]) -> Resp {
    Client::connect(addr)
        .await
        .expect("connect")
        .get(host, path, headers)
        .await
}

pub async fn admin_get(admin: SocketAddr, path: &str) -> std::io::Result<Resp> {
    let mut c = Client::connect(admin).await?;
    c.send(
        Request::get(path)
            .header("host", "admin")
            .body(Full::default())
            .expect("request"),
    )
    .await
}

// ---------- a control plane ----------

/// A control plane for one proxy: the test sets its config through `tx`
/// and reads the NACKs the proxy sent back.
pub struct TestControlPlane {
    pub tx: watch::Sender<Arc<ProxySnapshot>>,
    pub nacks: Mutex<Vec<String>>,
}

#[tonic::async_trait]
impl ConfigProvider for TestControlPlane {
    async fn connect(
        &self,
        node: &pb::Node,
        _token: Option<&wire::certs::BearerToken>,
    ) -> Result<wire::server::Accepted, tonic::Status> {
        Ok(wire::server::Accepted {
            node: node.clone(),
            config: self.tx.subscribe(),
        })
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

impl TestControlPlane {
    /// Serves xDS on a free port of `ip`, starting from `first`; returns the
    /// control plane, the server's address and its task.
    pub async fn serve(
        ip: IpAddr,
        first: Arc<ProxySnapshot>,
    ) -> (
        Arc<Self>,
        SocketAddr,
        JoinHandle<Result<(), tonic::transport::Error>>,
    ) {
        let cp = Arc::new(TestControlPlane {
            tx: watch::Sender::new(first),
            nacks: Mutex::default(),
        });
        let xds = TcpListener::bind((ip, 0)).await.expect("bind xds");
        let addr = xds.local_addr().expect("xds address");
        let server = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(wire::server::DiscoveryService::new(cp.clone()))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(xds)),
        );
        (cp, addr, server)
    }
}
