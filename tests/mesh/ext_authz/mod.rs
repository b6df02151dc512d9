//! AuthorizationPolicy CUSTOM with external authorizers (issue 18), in the
//! shape of Istio's ext_authz task: the test runs a gRPC authorizer
//! (Envoy's `envoy.service.auth.v3.Authorization`) and an HTTP one, both
//! allowing a request that carries `x-ext-authz: allow` and denying the
//! rest with their own status, body and `x-ext-authz-check-result` header;
//! meshConfig names them as extension providers, and CUSTOM policies on two
//! workloads send the requests for `/headers` to them. Then the authorizers
//! are stopped: the gRPC provider fails closed (403), the HTTP one is
//! `failOpen`. A CUSTOM policy naming a provider that does not exist denies
//! what it selects, as istiod makes it.
//!
//! A CUSTOM policy on a TCP port asks the gRPC authorizer once per
//! connection, which is then served or closed.
//!
//! A second mesh checks `includeRequestBodyInCheck`: the authorizers then
//! decide on the request body (allowing one that starts with "allow"), a
//! body over `maxRequestBytes` is refused with 413 — unless partial
//! messages are allowed — and the app gets the whole body either way.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use bytes::Bytes;
use e2e::{Mesh, eventually};
use http_body_util::Full;
use wire::envoy::config::core::v3 as core;
use wire::envoy::service::auth::v3 as auth;
use wire::envoy::service::auth::v3::authorization_server::{Authorization, AuthorizationServer};

mod tcp;

const DENIED_BODY: &str =
    "denied by ext_authz for not found header `x-ext-authz: allow` in the request";

/// One check an authorizer saw: (protocol, path, source principal).
type Check = (&'static str, String, String);

/// The gRPC authorizer's answer to TCP connection checks (they carry no
/// request to decide on): allow while set.
static ALLOW_CONNECTIONS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// A body a check carried: (protocol, body, `x-envoy-auth-partial-body`).
type SeenBody = (&'static str, Vec<u8>, String);

/// What the authorizers saw.
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<Check>>>, Arc<Mutex<Vec<SeenBody>>>);

impl Seen {
    fn push_body(&self, protocol: &'static str, body: Vec<u8>, partial: String) {
        if !body.is_empty() {
            self.1
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((protocol, body, partial));
        }
    }

    fn bodies(&self) -> Vec<SeenBody> {
        self.1.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn push(&self, protocol: &'static str, path: String, principal: String) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((protocol, path, principal));
    }

    fn all(&self) -> Vec<Check> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

#[tonic::async_trait]
impl Authorization for Seen {
    async fn check(
        &self,
        req: tonic::Request<auth::CheckRequest>,
    ) -> Result<tonic::Response<auth::CheckResponse>, tonic::Status> {
        let attrs = req.into_inner().attributes.unwrap_or_default();
        let principal = attrs
            .source
            .as_ref()
            .map(|s| s.principal.clone())
            .unwrap_or_default();
        let Some(http) = attrs.request.and_then(|r| r.http) else {
            // A TCP connection (Envoy's network ext_authz): no request.
            self.push("tcp", String::new(), principal);
            let allow = ALLOW_CONNECTIONS.load(std::sync::atomic::Ordering::SeqCst);
            return Ok(tonic::Response::new(auth::CheckResponse {
                status: Some(wire::google::rpc::Status {
                    code: if allow { 0 } else { 7 },
                    message: String::new(),
                }),
                http_response: None,
            }));
        };
        self.push("grpc", http.path.clone(), principal);
        let body = if http.raw_body.is_empty() {
            http.body.clone().into_bytes()
        } else {
            http.raw_body.clone()
        };
        let partial = http
            .headers
            .get("x-envoy-auth-partial-body")
            .cloned()
            .unwrap_or_default();
        self.push_body("grpc", body.clone(), partial);
        let allow = http.headers.get("x-ext-authz").map(String::as_str) == Some("allow")
            || body.starts_with(b"allow");
        let header = |value: &str| core::HeaderValueOption {
            header: Some(core::HeaderValue {
                key: "x-ext-authz-check-result".into(),
                value: value.into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        use auth::check_response::HttpResponse;
        let resp = if allow {
            auth::CheckResponse {
                status: Some(wire::google::rpc::Status::default()),
                http_response: Some(HttpResponse::OkResponse(auth::OkHttpResponse {
                    headers: vec![header("allowed")],
                    ..Default::default()
                })),
            }
        } else {
            auth::CheckResponse {
                // PERMISSION_DENIED
                status: Some(wire::google::rpc::Status {
                    code: 7,
                    message: String::new(),
                }),
                http_response: Some(HttpResponse::DeniedResponse(auth::DeniedHttpResponse {
                    status: Some(wire::envoy::r#type::v3::HttpStatus { code: 403 }),
                    headers: vec![header("denied")],
                    body: DENIED_BODY.into(),
                })),
            }
        };
        Ok(tonic::Response::new(resp))
    }
}

/// The HTTP authorizer: 200 with `x-ext-authz-check-result: allowed`, or
/// 403 with the denial body and `x-ext-authz-check-result: denied`.
async fn http_check(
    seen: Seen,
    req: hyper::Request<hyper::body::Incoming>,
) -> Result<hyper::Response<Full<Bytes>>, Infallible> {
    use http_body_util::BodyExt;
    seen.push("http", req.uri().to_string(), String::new());
    let header = req
        .headers()
        .get("x-ext-authz")
        .is_some_and(|v| v.as_bytes() == b"allow");
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes().to_vec())
        .unwrap_or_default();
    seen.push_body("http", body.clone(), String::new());
    let allow = header || body.starts_with(b"allow");
    let (status, result, body) = if allow {
        (200, "allowed", "")
    } else {
        (403, "denied", DENIED_BODY)
    };
    let mut resp = hyper::Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *resp.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or_default();
    resp.headers_mut()
        .insert("x-ext-authz-check-result", result.parse().expect("value"));
    resp.headers_mut()
        .insert("x-ext-authz-extra", "not-forwarded".parse().expect("value"));
    Ok(resp)
}

/// Both authorizers on their own runtime: shutting it down closes their
/// listeners and every connection the proxies hold to them.
struct Authorizers {
    rt: Option<tokio::runtime::Runtime>,
    grpc: SocketAddr,
    http: SocketAddr,
    seen: Seen,
}

impl Authorizers {
    fn start() -> Result<Authorizers> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?;
        let seen = Seen::default();
        let grpc_listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        let http_listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        let (grpc, http) = (grpc_listener.local_addr()?, http_listener.local_addr()?);
        grpc_listener.set_nonblocking(true)?;
        http_listener.set_nonblocking(true)?;
        let service = AuthorizationServer::new(seen.clone());
        let s = seen.clone();
        rt.spawn(async move {
            let Ok(listener) = tokio::net::TcpListener::from_std(grpc_listener) else {
                return;
            };
            let _ = tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
                .await;
        });
        rt.spawn(async move {
            let Ok(listener) = tokio::net::TcpListener::from_std(http_listener) else {
                return;
            };
            while let Ok((stream, _)) = listener.accept().await {
                let s = s.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| http_check(s.clone(), req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(Authorizers {
            rt: Some(rt),
            grpc,
            http,
            seen,
        })
    }

    fn stop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

impl Drop for Authorizers {
    fn drop(&mut self) {
        self.stop();
    }
}

const MESH_CONFIG: &str = r#"extensionProviders:
- name: ext-authz-grpc
  envoyExtAuthzGrpc:
    service: ext-authz-grpc.authz.internal
    port: 9000
    timeout: 2s
- name: ext-authz-http
  envoyExtAuthzHttp:
    service: ext-authz-http.authz.internal
    port: 8000
    timeout: 2s
    failOpen: true
    includeRequestHeadersInCheck: ["x-ext-authz"]
    headersToUpstreamOnAllow: ["x-ext-authz-check-result"]
    headersToDownstreamOnDeny: ["x-ext-authz-check-result"]
"#;

fn entry(host: &str, protocol: &str, addr: SocketAddr) -> String {
    let p = protocol.to_ascii_lowercase();
    format!(
        "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: {name}, namespace: default}}
spec:
  hosts: [{host}]
  location: MESH_EXTERNAL
  resolution: STATIC
  ports: [{{number: {port}, name: {p}, protocol: {protocol}}}]
  endpoints: [{{address: {ip}, ports: {{{p}: {target}}}}}]
---
",
        name = host.split('.').next().unwrap_or(host),
        port = if protocol == "GRPC" { 9000 } else { 8000 },
        ip = addr.ip(),
        target = addr.port(),
    )
}

/// A CUSTOM policy on `app` sending `/headers` to `provider`.
fn custom(app: &str, provider: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: ext-authz-{app}, namespace: default}}
spec:
  selector: {{matchLabels: {{app: {app}}}}}
  action: CUSTOM
  provider: {{name: {provider}}}
  rules: [{{to: [{{operation: {{paths: [/headers]}}}}]}}]
---
"
    )
}

/// The ingress gateway asks the gRPC authorizer about `/gateway-check`.
const GATEWAY_CUSTOM: &str = r#"apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ext-authz-at-the-edge, namespace: istio-system}
spec:
  selector: {matchLabels: {istio: ingressgateway}}
  action: CUSTOM
  provider: {name: ext-authz-grpc}
  rules: [{to: [{operation: {paths: [/gateway-check]}}]}]
---
"#;

const GATEWAY: &str = r#"apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: web, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ["*.example.com"]
---
"#;

/// `<app>.example.com` at the gateway goes to `app`.
fn route(app: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: {app}}}
spec:
  hosts: [{app}.example.com]
  gateways: [istio-system/web]
  http: [{{route: [{{destination: {{host: {app}, port: {{number: 8080}}}}}}]}}]
---
"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_policies_ask_grpc_and_http_authorizers() -> Result<()> {
    let mut authorizers = Authorizers::start()?;
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("mesh.yaml"), MESH_CONFIG)?;
    for app in ["by-grpc", "by-http", "by-nobody"] {
        std::fs::write(
            dir.path().join(format!("{app}.yaml")),
            e2e::echo_workload(app, ""),
        )?;
    }
    let config = [
        entry("ext-authz-grpc.authz.internal", "GRPC", authorizers.grpc),
        entry("ext-authz-http.authz.internal", "HTTP", authorizers.http),
        custom("by-grpc", "ext-authz-grpc"),
        custom("by-http", "ext-authz-http"),
        custom("by-nobody", "no-such-provider"),
        GATEWAY_CUSTOM.to_string(),
        GATEWAY.to_string(),
        route("by-grpc"),
        route("by-http"),
        route("by-nobody"),
    ]
    .concat();
    std::fs::write(dir.path().join("authz.yaml"), config)?;
    let mesh = Mesh::up(dir.path())?;
    let client = e2e::http();
    let get = |host: &'static str, path: &'static str, header: Option<&'static str>| {
        let client = client.clone();
        let url = format!("{}{path}", mesh.gateway);
        async move {
            let mut r = client.get(url).header("host", host);
            if let Some(v) = header {
                r = r.header("x-ext-authz", v);
            }
            r.send().await
        }
    };
    // Up: a path no rule selects is served without asking anyone.
    for host in [
        "by-grpc.example.com",
        "by-http.example.com",
        "by-nobody.example.com",
    ] {
        eventually(Duration::from_secs(40), || async {
            let status = get(host, "/ip", None).await?.status().as_u16();
            ensure!(status == 200, "{host}/ip: {status}");
            Ok(())
        })
        .await?;
    }
    ensure!(
        authorizers.seen.all().is_empty(),
        "requests no CUSTOM rule selects reached an authorizer: {:?}",
        authorizers.seen.all()
    );

    for (host, protocol) in [
        ("by-grpc.example.com", "grpc"),
        ("by-http.example.com", "http"),
    ] {
        // Allowed: the app sees the header the authorizer added.
        let r = get(host, "/headers", Some("allow")).await?;
        ensure!(r.status() == 200, "{host} allow: {}", r.status());
        let body: serde_json::Value = r.json().await?;
        let headers = &body["headers"];
        ensure!(
            headers.to_string().contains("x-ext-authz-check-result")
                && headers.to_string().contains("allowed"),
            "{host}: the app did not get x-ext-authz-check-result: allowed: {headers}"
        );
        // Denied: the authorizer's status, body and header reach the client.
        for header in [Some("deny"), None] {
            let r = get(host, "/headers", header).await?;
            ensure!(r.status() == 403, "{host} {header:?}: {}", r.status());
            let result = r
                .headers()
                .get("x-ext-authz-check-result")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            ensure!(
                r.headers().get("x-ext-authz-extra").is_none(),
                "{host}: a header headersToDownstreamOnDeny does not name reached the client"
            );
            let text = r.text().await?;
            ensure!(text == DENIED_BODY, "{host}: body {text:?}");
            ensure!(result.as_deref() == Some("denied"), "{host}: {result:?}");
        }
        let seen: Vec<_> = authorizers
            .seen
            .all()
            .into_iter()
            .filter(|s| s.0 == protocol)
            .collect();
        ensure!(seen.len() == 3, "{protocol} authorizer saw {seen:?}");
        ensure!(
            seen.iter().all(|s| s.1 == "/headers"),
            "{protocol} paths: {seen:?}"
        );
    }
    // The gRPC check names the client by its mesh identity (the gateway's).
    let principal = authorizers
        .seen
        .all()
        .into_iter()
        .find(|s| s.0 == "grpc")
        .map(|s| s.2)
        .context("no gRPC check")?;
    ensure!(
        principal.starts_with("spiffe://cluster.local/ns/istio-system/"),
        "source principal {principal:?}"
    );

    // At the ingress gateway too: checked there, denied or passed on.
    let r = get("by-http.example.com", "/gateway-check", None).await?;
    ensure!(r.status() == 403, "gateway check denied: {}", r.status());
    ensure!(r.text().await? == DENIED_BODY, "gateway denial body");
    let r = get("by-http.example.com", "/gateway-check", Some("allow")).await?;
    ensure!(r.status() == 200, "gateway check allowed: {}", r.status());
    let gateway_checks = authorizers
        .seen
        .all()
        .into_iter()
        .filter(|s| s.1 == "/gateway-check")
        .count();
    ensure!(gateway_checks == 2, "gateway checks: {gateway_checks}");

    // A provider that does not exist: what the policy selects is denied.
    let r = get("by-nobody.example.com", "/headers", Some("allow")).await?;
    ensure!(r.status() == 403, "unknown provider: {}", r.status());

    // The authorizers stop: gRPC (failOpen false) refuses with 403, HTTP
    // (failOpen true) lets the request through.
    authorizers.stop();
    let r = get("by-grpc.example.com", "/headers", Some("allow")).await?;
    ensure!(r.status() == 403, "gRPC authorizer down: {}", r.status());
    ensure!(r.text().await?.is_empty(), "statusOnError has no body");
    let r = get("by-http.example.com", "/headers", Some("allow")).await?;
    ensure!(
        r.status() == 200,
        "HTTP authorizer down, failOpen: {}",
        r.status()
    );

    // The sidecar counted each result.
    let pod = mesh.pod_of("by-grpc")?;
    let endpoints = pod["metadata"]["annotations"]["proxy.trellis.io/metrics"]
        .as_str()
        .context("no metrics annotation")?
        .to_string();
    let stats = endpoints.split(' ').nth(1).context("no 15090")?;
    let text = client
        .get(format!("http://{stats}/stats/prometheus"))
        .send()
        .await?
        .text()
        .await?;
    for (result, want) in [("ok", 1.0), ("denied", 2.0), ("error", 1.0)] {
        let n = e2e::counter_sum(
            &text,
            "trellis_ext_authz_total",
            &[("provider", "ext-authz-grpc"), ("result", result)],
        );
        ensure!(
            n == want,
            "trellis_ext_authz_total {result}: {n}, want {want}"
        );
    }
    mesh.stop()?;
    Ok(())
}

const BODY_MESH_CONFIG: &str = r#"extensionProviders:
- name: grpc-body
  envoyExtAuthzGrpc:
    service: ext-authz-grpc.authz.internal
    port: 9000
    timeout: 2s
    includeRequestBodyInCheck: {maxRequestBytes: 16}
- name: grpc-partial
  envoyExtAuthzGrpc:
    service: ext-authz-grpc.authz.internal
    port: 9000
    timeout: 2s
    includeRequestBodyInCheck: {maxRequestBytes: 8, allowPartialMessage: true, packAsBytes: true}
- name: http-body
  envoyExtAuthzHttp:
    service: ext-authz-http.authz.internal
    port: 8000
    timeout: 2s
    includeRequestBodyInCheck: {maxRequestBytes: 16}
"#;

/// A CUSTOM policy on `app` sending POSTs to `/post` to `provider`.
fn custom_post(app: &str, provider: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: ext-authz-{app}, namespace: default}}
spec:
  selector: {{matchLabels: {{app: {app}}}}}
  action: CUSTOM
  provider: {{name: {provider}}}
  rules: [{{to: [{{operation: {{methods: [POST], paths: [/post]}}}}]}}]
---
"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_checks_carry_the_request_body() -> Result<()> {
    let authorizers = Authorizers::start()?;
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("mesh.yaml"), BODY_MESH_CONFIG)?;
    let apps = [
        ("grpc-body", "grpc"),
        ("grpc-partial", "grpc"),
        ("http-body", "http"),
    ];
    let mut config = vec![
        entry("ext-authz-grpc.authz.internal", "GRPC", authorizers.grpc),
        entry("ext-authz-http.authz.internal", "HTTP", authorizers.http),
        GATEWAY.to_string(),
    ];
    for (app, _) in apps {
        std::fs::write(
            dir.path().join(format!("{app}.yaml")),
            e2e::echo_workload(app, ""),
        )?;
        config.push(custom_post(app, app));
        config.push(route(app));
    }
    std::fs::write(dir.path().join("authz.yaml"), config.concat())?;
    let mesh = Mesh::up(dir.path())?;
    let client = e2e::http();
    let post = |app: &str, body: Vec<u8>| {
        let client = client.clone();
        let url = format!("{}/post", mesh.gateway);
        let host = format!("{app}.example.com");
        async move {
            client
                .post(url)
                .header("host", host)
                .body(body)
                .send()
                .await
        }
    };
    // The policies are in place once a body the authorizer refuses is refused.
    for (app, _) in apps {
        eventually(Duration::from_secs(40), || async {
            let status = post(app, b"deny".to_vec()).await?.status().as_u16();
            ensure!(status == 403, "{app} deny: {status}");
            Ok(())
        })
        .await?;
    }
    let bodies_before = authorizers.seen.bodies().len();
    // What the app got: the number of body bytes it read.
    let served = |r: reqwest::Response| async move {
        ensure!(r.status() == 200, "status {}", r.status());
        let echo: serde_json::Value = r.json().await?;
        echo["body_bytes"].as_u64().context("no body_bytes")
    };

    for (app, protocol) in [("grpc-body", "grpc"), ("http-body", "http")] {
        // Within maxRequestBytes: the authorizer decides on the body, the
        // app gets it whole.
        let n = served(post(app, b"allow: 16 bytes!".to_vec()).await?).await?;
        ensure!(n == 16, "{app}: the app got {n} body bytes, not 16");
        let last = authorizers.seen.bodies().pop().context("no body seen")?;
        ensure!(
            last.0 == protocol && last.1 == b"allow: 16 bytes!",
            "{app}: the authorizer saw {last:?}"
        );
        if protocol == "grpc" {
            ensure!(last.2 == "false", "{app}: partial-body header {:?}", last.2);
        }
        let r = post(app, b"denied: 16 bytes".to_vec()).await?;
        ensure!(r.status() == 403, "{app} denied body: {}", r.status());
        // One byte over: 413, the authorizer not asked.
        let seen = authorizers.seen.bodies().len();
        let r = post(app, b"allow: 17 bytes!!".to_vec()).await?;
        ensure!(
            r.status() == 413,
            "{app} over maxRequestBytes: {}",
            r.status()
        );
        ensure!(
            authorizers.seen.bodies().len() == seen,
            "{app}: a body over maxRequestBytes reached the authorizer"
        );
    }

    // allowPartialMessage: the first 8 bytes go, as raw bytes (packAsBytes),
    // marked partial; the app still gets all 100 000.
    let mut big = b"allow-".to_vec();
    big.resize(100_000, b'x');
    let n = served(post("grpc-partial", big).await?).await?;
    ensure!(n == 100_000, "grpc-partial: the app got {n} body bytes");
    let last = authorizers.seen.bodies().pop().context("no body seen")?;
    ensure!(
        last.1 == b"allow-xx" && last.2 == "true",
        "grpc-partial: the authorizer saw {last:?}"
    );
    let mut big = b"nope".to_vec();
    big.resize(100_000, b'x');
    let r = post("grpc-partial", big).await?;
    ensure!(r.status() == 403, "grpc-partial denied: {}", r.status());
    ensure!(
        authorizers.seen.bodies().len() > bodies_before,
        "no bodies seen"
    );
    mesh.stop()?;
    Ok(())
}
