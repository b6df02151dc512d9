//! The edge (issue 18) on a running mesh: an ingress gateway's TLS
//! passthrough server routes by SNI to backends that terminate TLS
//! themselves; TLS and TCP routes split connections by weight; and the
//! local rate limit Istio users write as an EnvoyFilter.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use e2e::{Mesh, eventually};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A CA the test makes; its leaves are the backends' own certificates.
struct Ca {
    cert: String,
    issuer: Issuer<'static, KeyPair>,
}

impl Ca {
    fn new() -> Result<Ca> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::OrganizationName, "edge test backends CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key)?.pem();
        Ok(Ca {
            cert,
            issuer: Issuer::new(params, key),
        })
    }

    fn issue(&self, names: &[&str]) -> Result<(String, String)> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())?;
        Ok((
            params.signed_by(&key, &self.issuer)?.pem(),
            key.serialize_pem(),
        ))
    }
}

/// A backend outside the mesh that terminates TLS with its own certificate
/// and greets every client with its name: the client only reads the name
/// if the gateway passed the handshake through untouched.
async fn tls_backend(name: &'static str, cert: String, key: String) -> Result<u16> {
    let chain = CertificateDer::pem_slice_iter(cert.as_bytes()).collect::<Result<Vec<_>, _>>()?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(chain, PrivateKeyDer::from_pem_slice(key.as_bytes())?)?;
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                if let Ok(mut tls) = acceptor.accept(tcp).await {
                    let _ = tls.write_all(format!("{name}\n").as_bytes()).await;
                    let _ = tls.shutdown().await;
                }
            });
        }
    });
    Ok(port)
}

/// A plain TCP backend that greets every client with its name.
async fn tcp_backend(name: &'static str) -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let _ = tcp.write_all(format!("{name}\n").as_bytes()).await;
                let _ = tcp.shutdown().await;
            });
        }
    });
    Ok(port)
}

/// Connects over TLS with `sni`, verifying the server against `ca` for
/// that name, and reads the greeting.
async fn tls_greeting(addr: SocketAddr, sni: &str, ca: &str) -> Result<String> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca.as_bytes()) {
        roots.add(c?)?;
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let attempt = async {
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(ServerName::try_from(sni.to_string())?, tcp)
            .await?;
        let mut greeting = String::new();
        tls.read_to_string(&mut greeting).await?;
        anyhow::Ok(greeting.trim().to_string())
    };
    tokio::time::timeout(Duration::from_secs(10), attempt)
        .await
        .unwrap_or_else(|_| Err(anyhow::anyhow!("no greeting in 10 s")))
}

async fn tcp_greeting(addr: SocketAddr) -> Result<String> {
    let attempt = async {
        let mut tcp = tokio::net::TcpStream::connect(addr).await?;
        let mut greeting = String::new();
        tcp.read_to_string(&mut greeting).await?;
        anyhow::Ok(greeting.trim().to_string())
    };
    tokio::time::timeout(Duration::from_secs(10), attempt)
        .await
        .unwrap_or_else(|_| Err(anyhow::anyhow!("no greeting in 10 s")))
}

/// A ServiceEntry `host` whose one endpoint is the test's backend on `port`.
fn backend_entry(name: &str, host: &str, protocol: &str, port: u16) -> String {
    format!(
        "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: {name}, namespace: default}}
spec:
  hosts: [{host}]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 9000, name: {proto_l}, protocol: {protocol}}}]
  endpoints: [{{address: 127.0.0.1, ports: {{{proto_l}: {port}}}}}]
---
",
        proto_l = protocol.to_ascii_lowercase()
    )
}

const EDGE: &str = r#"apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: edge, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 443, name: tls-passthrough, protocol: HTTPS}
    tls: {mode: PASSTHROUGH}
    hosts: [a.example.com, b.example.com]
  - port: {number: 9443, name: tls-split, protocol: TLS}
    tls: {mode: PASSTHROUGH}
    hosts: [w.example.com]
  - port: {number: 31400, name: tcp, protocol: TCP}
    hosts: ["*"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: passthrough, namespace: default}
spec:
  hosts: [a.example.com, b.example.com, w.example.com]
  gateways: [istio-system/edge]
  tls:
  - match: [{port: 443, sniHosts: [a.example.com]}]
    route: [{destination: {host: tls-a.backends.internal, port: {number: 9000}}}]
  - match: [{port: 443, sniHosts: [b.example.com]}]
    route: [{destination: {host: tls-b.backends.internal, port: {number: 9000}}}]
  - match: [{port: 9443, sniHosts: [w.example.com]}]
    route:
    - {destination: {host: tls-a.backends.internal, port: {number: 9000}}, weight: 50}
    - {destination: {host: tls-b.backends.internal, port: {number: 9000}}, weight: 50}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: tcp-split, namespace: default}
spec:
  hosts: ["*"]
  gateways: [istio-system/edge]
  tcp:
  - match: [{port: 31400}]
    route:
    - {destination: {host: tcp-1.backends.internal, port: {number: 9000}}, weight: 50}
    - {destination: {host: tcp-2.backends.internal, port: {number: 9000}}, weight: 50}
---
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passthrough_by_sni_and_weighted_tls_and_tcp_routes() -> Result<()> {
    let ca = Ca::new()?;
    // Each backend's certificate names it and the shared w.example.com.
    let (a_cert, a_key) = ca.issue(&["a.example.com", "w.example.com"])?;
    let (b_cert, b_key) = ca.issue(&["b.example.com", "w.example.com"])?;
    let a = tls_backend("backend-a", a_cert, a_key).await?;
    let b = tls_backend("backend-b", b_cert, b_key).await?;
    let t1 = tcp_backend("tcp-1").await?;
    let t2 = tcp_backend("tcp-2").await?;

    let dir = tempfile::tempdir()?;
    // Istio's JSON access log on stdout, for the connections' lines.
    std::fs::write(
        dir.path().join("mesh.yaml"),
        "accessLogFile: /dev/stdout\naccessLogEncoding: JSON\n",
    )?;
    std::fs::write(
        dir.path().join("edge.yaml"),
        format!(
            "{}{}{}{}{EDGE}",
            backend_entry("tls-a", "tls-a.backends.internal", "TLS", a),
            backend_entry("tls-b", "tls-b.backends.internal", "TLS", b),
            backend_entry("tcp-1", "tcp-1.backends.internal", "TCP", t1),
            backend_entry("tcp-2", "tcp-2.backends.internal", "TCP", t2),
        ),
    )?;
    let mesh = Mesh::up(dir.path())?;
    let gateway_ip = mesh
        .gateway
        .trim_start_matches("http://")
        .parse::<SocketAddr>()
        .context("gateway address")?
        .ip();
    // The ingress Service maps 443 to 8443; other server ports are the gateway's own.
    let passthrough = SocketAddr::new(gateway_ip, 8443);
    let split = SocketAddr::new(gateway_ip, 9443);
    let tcp = SocketAddr::new(gateway_ip, 31400);

    // SNI picks the backend; the client verifies that backend's own
    // certificate for the name, which the gateway has no key for: the TLS
    // session is the backend's, end to end.
    let greeting = eventually(Duration::from_secs(30), || {
        tls_greeting(passthrough, "a.example.com", &ca.cert)
    })
    .await?;
    ensure!(greeting == "backend-a", "{greeting}");
    let greeting = tls_greeting(passthrough, "b.example.com", &ca.cert).await?;
    ensure!(greeting == "backend-b", "{greeting}");
    // A name no route has is closed, never sent to some backend.
    let unknown = tls_greeting(passthrough, "c.example.com", &ca.cert).await;
    ensure!(unknown.is_err(), "an unrouted SNI reached {unknown:?}");

    // 50/50 by weight, per connection: both backends serve some of 40.
    let mut seen = std::collections::BTreeMap::new();
    for _ in 0..40 {
        let g = eventually(Duration::from_secs(20), || {
            tls_greeting(split, "w.example.com", &ca.cert)
        })
        .await?;
        *seen.entry(g).or_insert(0) += 1;
    }
    ensure!(
        seen.get("backend-a").is_some_and(|n| *n > 0)
            && seen.get("backend-b").is_some_and(|n| *n > 0)
            && seen.len() == 2,
        "TLS route split: {seen:?}"
    );
    let mut seen = std::collections::BTreeMap::new();
    for _ in 0..40 {
        let g = eventually(Duration::from_secs(20), || tcp_greeting(tcp)).await?;
        *seen.entry(g).or_insert(0) += 1;
    }
    ensure!(
        seen.get("tcp-1").is_some_and(|n| *n > 0)
            && seen.get("tcp-2").is_some_and(|n| *n > 0)
            && seen.len() == 2,
        "TCP route split: {seen:?}"
    );

    // Each connection has its access log line, with the SNI and the route.
    let logged = eventually(Duration::from_secs(10), || async {
        for entry in std::fs::read_dir(mesh.logs())? {
            let text = std::fs::read_to_string(entry?.path()).unwrap_or_default();
            if text.contains(r#""requested_server_name":"b.example.com""#)
                && text.contains("VirtualService/default/passthrough")
            {
                return Ok(());
            }
        }
        bail!("no access log line for the passthrough connection")
    })
    .await;
    logged?;
    mesh.stop()?;
    Ok(())
}

/// Istio's local rate limit example, at 10 requests per second, on one
/// workload's inbound listener.
const LOCAL_RATE_LIMIT: &str = r#"apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata: {name: filter-local-ratelimit-svc, namespace: istio-system}
spec:
  workloadSelector:
    labels: {app: limited}
  configPatches:
  - applyTo: HTTP_FILTER
    match:
      context: SIDECAR_INBOUND
      listener:
        filterChain:
          filter: {name: "envoy.filters.network.http_connection_manager"}
    patch:
      operation: INSERT_BEFORE
      value:
        name: envoy.filters.http.local_ratelimit
        typed_config:
          "@type": type.googleapis.com/udpa.type.v1.TypedStruct
          type_url: type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit
          value:
            stat_prefix: http_local_rate_limiter
            token_bucket: {max_tokens: 10, tokens_per_fill: 10, fill_interval: 1s}
            filter_enabled:
              runtime_key: local_rate_limit_enabled
              default_value: {numerator: 100, denominator: HUNDRED}
            filter_enforced:
              runtime_key: local_rate_limit_enforced
              default_value: {numerator: 100, denominator: HUNDRED}
            response_headers_to_add:
            - append: false
              header: {key: x-local-rate-limit, value: 'true'}
            enable_x_ratelimit_headers: DRAFT_VERSION_03
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: web, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: [limited.example.com, free.example.com]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: limited}
spec:
  hosts: [limited.example.com]
  gateways: [istio-system/web]
  http: [{route: [{destination: {host: limited, port: {number: 8080}}}]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: free}
spec:
  hosts: [free.example.com]
  gateways: [istio-system/web]
  http: [{route: [{destination: {host: free, port: {number: 8080}}}]}]
---
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_rate_limit_lets_about_ten_per_second_through() -> Result<()> {
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("mesh.yaml"), "{}\n")?;
    std::fs::write(
        dir.path().join("limited.yaml"),
        e2e::echo_workload("limited", ""),
    )?;
    std::fs::write(dir.path().join("free.yaml"), e2e::echo_workload("free", ""))?;
    std::fs::write(dir.path().join("limit.yaml"), LOCAL_RATE_LIMIT)?;
    let mesh = Mesh::up(dir.path())?;
    let client = e2e::http();
    let get = |host: &'static str| {
        let client = client.clone();
        let url = format!("{}/", mesh.gateway);
        async move { client.get(url).header("host", host).send().await }
    };
    // Both up (the limited one may already answer 429 to this probing).
    for host in ["limited.example.com", "free.example.com"] {
        eventually(Duration::from_secs(30), || async {
            let status = get(host).await?.status().as_u16();
            ensure!(status == 200 || status == 429, "{host}: {status}");
            Ok(())
        })
        .await?;
    }
    // Let the bucket fill again.
    tokio::time::sleep(Duration::from_millis(1100)).await;

    // A window of about 2 s, sequential requests (bounded in number).
    let start = Instant::now();
    let (mut allowed, mut limited) = (0u32, 0u32);
    let mut limited_headers = None;
    for _ in 0..2000 {
        if start.elapsed() >= Duration::from_secs(2) {
            break;
        }
        let r = get("limited.example.com").await?;
        match r.status().as_u16() {
            200 => allowed += 1,
            429 => {
                limited += 1;
                if limited_headers.is_none() {
                    let h = r.headers().clone();
                    let body = r.text().await?;
                    limited_headers = Some((h, body));
                }
            }
            other => bail!("unexpected status {other}"),
        }
    }
    let window = start.elapsed().as_secs_f64();
    // The full bucket, then 10 per started second: loose for a busy machine.
    let most = 10.0 + 10.0 * (window.ceil() + 1.0);
    ensure!(
        allowed >= 10 && f64::from(allowed) <= most,
        "{allowed} allowed, {limited} limited in {window:.2} s (at most {most})"
    );
    ensure!(
        limited > 0,
        "{allowed} allowed in {window:.2} s and none limited"
    );
    let (headers, body) = limited_headers.context("a 429")?;
    ensure!(body == "local_rate_limited", "{body}");
    for (name, want) in [
        ("x-local-rate-limit", Some("true")),
        ("x-envoy-ratelimited", Some("true")),
        ("x-ratelimit-limit", Some("10")),
        ("x-ratelimit-remaining", Some("0")),
        ("x-ratelimit-reset", None),
    ] {
        let got = headers.get(name).and_then(|v| v.to_str().ok());
        ensure!(
            got.is_some() && (want.is_none() || got == want),
            "{name}: {got:?} in {headers:?}"
        );
    }

    // The unlimited workload is unaffected.
    for _ in 0..40 {
        let status = get("free.example.com").await?.status().as_u16();
        ensure!(status == 200, "free.example.com answered {status}");
    }

    // The limited requests are in the workload proxy's metrics: 429, flag RL.
    let pod = mesh.pod_of("limited")?;
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
    let counted = e2e::counter_sum(
        &text,
        "istio_requests_total",
        &[("response_code", "429"), ("response_flags", "RL")],
    );
    ensure!(
        counted >= f64::from(limited),
        "istio_requests_total 429/RL: {counted}, limited {limited}"
    );
    mesh.stop()?;
    Ok(())
}
