//! Egress (issue 18) on a running mesh, as Istio's egress tasks do it with
//! a server the test runs on loopback standing in for the outside world:
//! sidecar → egress gateway over ISTIO_MUTUAL → external service; TLS
//! origination by DestinationRule `tls: SIMPLE` and `MUTUAL`; and
//! `outboundTrafficPolicy: REGISTRY_ONLY`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use e2e::{Mesh, eventually};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

mod passthrough;
mod tls_origination;

/// A server outside the mesh: answers every HTTP/1.1 request with JSON
/// naming itself, the Host and path it was asked for, and whether the
/// client showed a certificate; counts the requests.
struct External {
    port: u16,
    served: Arc<AtomicU32>,
}

impl External {
    /// Plain HTTP, or TLS with `tls` (which may require a client certificate).
    async fn start(name: &'static str, tls: Option<rustls::ServerConfig>) -> Result<External> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let served = Arc::new(AtomicU32::new(0));
        let acceptor = tls.map(|c| tokio_rustls::TlsAcceptor::from(Arc::new(c)));
        let counter = served.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, counter) = (acceptor.clone(), counter.clone());
                tokio::spawn(async move {
                    match acceptor {
                        None => serve(tcp, name, false, &counter).await,
                        Some(a) => {
                            if let Ok(tls) = a.accept(tcp).await {
                                let cert = tls.get_ref().1.peer_certificates().is_some();
                                serve(tls, name, cert, &counter).await;
                            }
                        }
                    }
                });
            }
        });
        Ok(External { port, served })
    }

    fn served(&self) -> u32 {
        self.served.load(Ordering::SeqCst)
    }
}

/// Requests on one connection (keep-alive), each answered with the JSON.
async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    name: &str,
    client_cert: bool,
    served: &AtomicU32,
) {
    let mut stream = BufReader::new(stream);
    loop {
        let mut request_line = String::new();
        match stream.read_line(&mut request_line).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let path = request_line
            .split_whitespace()
            .nth(1)
            .unwrap_or_default()
            .to_string();
        let mut host = String::new();
        loop {
            let mut line = String::new();
            match stream.read_line(&mut line).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':')
                && k.eq_ignore_ascii_case("host")
            {
                host = v.trim().to_string();
            }
        }
        served.fetch_add(1, Ordering::SeqCst);
        let body = serde_json::json!({
            "external": name, "host": host, "path": path, "client_cert": client_cert,
        })
        .to_string();
        let reply = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        if stream.get_mut().write_all(reply.as_bytes()).await.is_err() {
            return;
        }
    }
}

/// The client pod's app: GET `url` through its sidecar; the upstream status
/// and body its echo reports (an error text if the call itself failed).
async fn call(app: &e2e::App, url: &str) -> Result<(u16, Value)> {
    let (status, body) = app.get(&format!("/?call={url}")).await?;
    ensure!(status == 200, "{status} from the caller's app: {body}");
    let reply: Value = serde_json::from_str(&body)?;
    let upstream = &reply["upstream"];
    match upstream["status"].as_u64() {
        Some(s) => Ok((s as u16, upstream["body"].clone())),
        None => bail!("the call failed: {upstream}"),
    }
}

/// A pod's proxy metrics (loopback mode: port 15090 next to its admin port).
async fn proxy_stats(pod: &Value) -> Result<String> {
    let admin = pod["metadata"]["annotations"]["proxy.trellis.io/admin"]
        .as_str()
        .context("admin annotation")?;
    let ip = admin.rsplit_once(':').context("admin address")?.0;
    Ok(e2e::http()
        .get(format!("http://{ip}:15090/stats/prometheus"))
        .send()
        .await?
        .text()
        .await?)
}

/// A pod's explicit outbound proxy (loopback mode: port 15001 at its
/// application's address, next to its admin port).
fn outbound_proxy(pod: &Value) -> Result<SocketAddr> {
    let admin = pod["metadata"]["annotations"]["proxy.trellis.io/admin"]
        .as_str()
        .context("admin annotation")?;
    let ip = admin.rsplit_once(':').context("admin address")?.0;
    Ok(SocketAddr::new(ip.parse()?, 15001))
}

/// `CONNECT authority` through a sidecar's explicit proxy at `proxy`, as
/// an application's HTTPS call through `HTTPS_PROXY` begins: the status
/// the proxy answered, and the connection (a tunnel after a 200).
async fn connect(proxy: SocketAddr, authority: &str) -> Result<(u16, tokio::net::TcpStream)> {
    let mut tcp = tokio::net::TcpStream::connect(proxy).await?;
    tcp.write_all(format!("CONNECT {authority} HTTP/1.1\r\nhost: {authority}\r\n\r\n").as_bytes())
        .await?;
    // The head byte by byte: what follows it belongs to the tunnel.
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        ensure!(
            head.len() < 16 * 1024,
            "no end to the CONNECT response head"
        );
        let byte = tokio::io::AsyncReadExt::read_u8(&mut tcp)
            .await
            .with_context(|| {
                format!(
                    "CONNECT response head: {:?}",
                    String::from_utf8_lossy(&head)
                )
            })?;
        head.push(byte);
    }
    let head = String::from_utf8_lossy(&head);
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("CONNECT response: {head}"))?;
    Ok((status, tcp))
}

/// A tunnel to `authority` through the explicit proxy at `proxy`.
async fn connect_tunnel(proxy: SocketAddr, authority: &str) -> Result<tokio::net::TcpStream> {
    let (status, tcp) = connect(proxy, authority).await?;
    ensure!(status == 200, "CONNECT {authority}: {status}");
    Ok(tcp)
}

/// Requests a proxy counted for `host` with `code`.
fn requests_for(stats: &str, host: &str, code: u16) -> f64 {
    stats
        .lines()
        .filter(|l| l.starts_with("istio_requests_total{"))
        .filter(|l| l.contains(host) && l.contains(&format!("response_code=\"{code}\"")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn apply(mesh: &Mesh, dir: &std::path::Path, verb: &str, file: &str, yaml: &str) -> Result<()> {
    let path = dir.join(file);
    std::fs::write(&path, yaml)?;
    let out = mesh.trellis(&[verb, "-f", &path.display().to_string()]);
    ensure!(
        out.status.success(),
        "trellis {verb} {file}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// The external service as Istio's task registers edition.cnn.com; its one
/// endpoint is the test's server (DNS resolution of an address resolves to it).
fn service_entry(port: u16) -> String {
    format!(
        "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: edition}}
spec:
  hosts: [edition.example.test]
  location: MESH_EXTERNAL
  ports:
  - {{number: 80, name: http-port, protocol: HTTP}}
  resolution: DNS
  endpoints: [{{address: 127.0.0.1, ports: {{http-port: {port}}}}}]
---
"
    )
}

/// Istio's egress gateway task in its mutual-TLS form: the sidecar sends
/// edition.example.test's port 80 to the egress gateway's 443 over
/// ISTIO_MUTUAL; the gateway sends it on to the external service's port 80.
/// The gateway admits only the client's mesh identity, which only the
/// ISTIO_MUTUAL handshake can have given it.
const THROUGH_EGRESS_GATEWAY: &str = "apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: istio-egressgateway}
spec:
  selector: {istio: egressgateway}
  servers:
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: [edition.example.test]
    tls: {mode: ISTIO_MUTUAL}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: egressgateway-for-edition}
spec:
  host: istio-egressgateway.istio-system.svc.cluster.local
  subsets:
  - name: edition
    trafficPolicy:
      loadBalancer: {simple: ROUND_ROBIN}
      portLevelSettings:
      - port: {number: 443}
        tls: {mode: ISTIO_MUTUAL, sni: edition.example.test}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: only-the-client, namespace: istio-system}
spec:
  selector: {matchLabels: {istio: egressgateway}}
  action: ALLOW
  rules: [{from: [{source: {principals: [cluster.local/ns/default/sa/client]}}]}]
---
";

const EGRESS_VIRTUAL_SERVICE: &str = "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: direct-edition-through-egress-gateway}
spec:
  hosts: [edition.example.test]
  gateways: [istio-egressgateway, mesh]
  http:
  - match: [{gateways: [mesh], port: 80}]
    route:
    - destination:
        host: istio-egressgateway.istio-system.svc.cluster.local
        subset: edition
        port: {number: 443}
      weight: 100
  - match: [{gateways: [istio-egressgateway], port: 443}]
    route:
    - destination: {host: edition.example.test, port: {number: 80}}
      weight: 100
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn egress_gateway_task_over_istio_mutual() -> Result<()> {
    let external = External::start("edition", None).await?;
    let dir = tempfile::tempdir()?;
    std::fs::write(
        dir.path().join("mesh.yaml"),
        "accessLogFile: /dev/stdout\naccessLogEncoding: JSON\n",
    )?;
    std::fs::write(
        dir.path().join("client.yaml"),
        e2e::echo_workload("client", ""),
    )?;
    std::fs::write(
        dir.path().join("egress.yaml"),
        format!(
            "{}{THROUGH_EGRESS_GATEWAY}{EGRESS_VIRTUAL_SERVICE}",
            service_entry(external.port)
        ),
    )?;
    let mesh = Mesh::up(dir.path())?;
    let client = mesh.app(&mesh.pod_of("client")?, 8080)?;
    let gateway = mesh.pod_of("istio-egressgateway")?;
    let gateway_ip: std::net::IpAddr = gateway["status"]["podIP"]
        .as_str()
        .context("egress gateway pod IP")?
        .parse()?;

    // Through the gateway: the external server answers, for its own host.
    let url = "http://edition.example.test/politics";
    let (status, body) = eventually(Duration::from_secs(30), || async {
        let (status, body) = call(&client, url).await?;
        ensure!(status == 200, "{status}: {body}");
        Ok((status, body))
    })
    .await?;
    ensure!(
        status == 200 && body["external"] == "edition" && body["path"] == "/politics",
        "{body}"
    );
    ensure!(body["host"] == "edition.example.test", "{body}");
    // The gateway served it: its metrics and its access log say so.
    let stats = proxy_stats(&gateway).await?;
    let through = requests_for(&stats, "edition.example.test", 200);
    ensure!(
        through >= 1.0,
        "the egress gateway counted no request: {stats:.4000}"
    );
    let gateway_log = mesh.logs().join(format!(
        "istio-system.{}.istio-proxy.log",
        gateway["metadata"]["name"].as_str().unwrap_or_default()
    ));
    eventually(Duration::from_secs(10), || async {
        let log = std::fs::read_to_string(&gateway_log).unwrap_or_default();
        ensure!(
            log.contains(r#""authority":"edition.example.test""#) && log.contains("/politics"),
            "no access log line at the gateway: {log:.3000}"
        );
        Ok(())
    })
    .await?;

    // The gateway's 8443 speaks only mesh mTLS: plaintext and a TLS client
    // without a mesh certificate are refused.
    let https = SocketAddr::new(gateway_ip, 8443);
    let plain = tokio::time::timeout(Duration::from_secs(5), async {
        let mut tcp = tokio::net::TcpStream::connect(https).await?;
        tcp.write_all(b"GET /politics HTTP/1.1\r\nhost: edition.example.test\r\n\r\n")
            .await?;
        let mut reply = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut tcp, &mut reply).await?;
        anyhow::Ok(String::from_utf8_lossy(&reply).into_owned())
    })
    .await;
    ensure!(
        !matches!(&plain, Ok(Ok(r)) if r.contains("200 OK")),
        "plaintext served: {plain:?}"
    );
    ensure!(
        anonymous_tls(https, "edition.example.test").await.is_err(),
        "a client without a mesh certificate got through the ISTIO_MUTUAL server"
    );

    // Without the VirtualService the sidecar calls the external service
    // itself: the request still succeeds and the gateway sees none of it.
    apply(
        &mesh,
        dir.path(),
        "delete",
        "vs.yaml",
        EGRESS_VIRTUAL_SERVICE,
    )?;
    eventually(Duration::from_secs(30), || async {
        let before = requests_for(&proxy_stats(&gateway).await?, "edition.example.test", 200);
        let served = external.served();
        let (status, body) = call(&client, "http://edition.example.test/direct").await?;
        ensure!(
            status == 200 && body["path"] == "/direct",
            "{status}: {body}"
        );
        ensure!(
            external.served() > served,
            "the external server saw nothing"
        );
        let after = requests_for(&proxy_stats(&gateway).await?, "edition.example.test", 200);
        ensure!(
            after == before,
            "still through the gateway ({before} → {after})"
        );
        Ok(())
    })
    .await?;
    mesh.stop()?;
    Ok(())
}

/// A TLS handshake and a request, as a client outside the mesh: no client
/// certificate, any server certificate accepted.
async fn anonymous_tls(addr: SocketAddr, sni: &str) -> Result<String> {
    #[derive(Debug)]
    struct AnyServer(Arc<rustls::crypto::CryptoProvider>);
    impl rustls::client::danger::ServerCertVerifier for AnyServer {
        fn verify_server_cert(
            &self,
            _: &rustls_pki_types::CertificateDer<'_>,
            _: &[rustls_pki_types::CertificateDer<'_>],
            _: &rustls_pki_types::ServerName<'_>,
            _: &[u8],
            _: rustls_pki_types::UnixTime,
        ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            m: &[u8],
            c: &rustls_pki_types::CertificateDer<'_>,
            d: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(
                m,
                c,
                d,
                &self.0.signature_verification_algorithms,
            )
        }
        fn verify_tls13_signature(
            &self,
            m: &[u8],
            c: &rustls_pki_types::CertificateDer<'_>,
            d: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(
                m,
                c,
                d,
                &self.0.signature_verification_algorithms,
            )
        }
        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyServer(provider)))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let attempt = async {
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(
                rustls_pki_types::ServerName::try_from(sni.to_string())?,
                tcp,
            )
            .await?;
        tls.write_all(
            format!("GET / HTTP/1.1\r\nhost: {sni}\r\nconnection: close\r\n\r\n").as_bytes(),
        )
        .await?;
        let mut reply = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut tls, &mut reply).await?;
        ensure!(!reply.is_empty(), "the connection was closed");
        anyhow::Ok(String::from_utf8_lossy(&reply).into_owned())
    };
    tokio::time::timeout(Duration::from_secs(10), attempt)
        .await
        .unwrap_or_else(|_| Err(anyhow::anyhow!("no answer in 10 s")))
}

/// `outboundTrafficPolicy: REGISTRY_ONLY` in mesh config: what a
/// ServiceEntry names is reached, anything else is Istio's BlackHoleCluster
/// (502, logged and counted); a Sidecar with ALLOW_ANY lets it through again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_only_refuses_what_no_service_entry_names() -> Result<()> {
    let known = External::start("edition", None).await?;
    let unknown = External::start("unknown", None).await?;
    let dir = tempfile::tempdir()?;
    std::fs::write(
        dir.path().join("mesh.yaml"),
        "outboundTrafficPolicy: {mode: REGISTRY_ONLY}\n",
    )?;
    std::fs::write(
        dir.path().join("client.yaml"),
        e2e::echo_workload("client", ""),
    )?;
    std::fs::write(dir.path().join("edition.yaml"), service_entry(known.port))?;
    let mesh = Mesh::up(dir.path())?;
    let client_pod = mesh.pod_of("client")?;
    let app = mesh.app(&client_pod, 8080)?;

    let body = eventually(Duration::from_secs(30), || async {
        let (status, body) = call(&app, "http://edition.example.test/known").await?;
        ensure!(status == 200, "{status}: {body}");
        Ok(body)
    })
    .await?;
    ensure!(body["external"] == "edition", "{body}");

    let unknown_url = format!("http://127.0.0.1:{}/unknown", unknown.port);
    let (status, body) = call(&app, &unknown_url).await?;
    ensure!(
        status == 502,
        "REGISTRY_ONLY let it through: {status} {body}"
    );
    ensure!(unknown.served() == 0, "the unknown server was reached");
    let stats = proxy_stats(&client_pod).await?;
    ensure!(
        e2e::counter_sum(
            &stats,
            "istio_requests_total",
            &[
                ("destination_service_name", "BlackHoleCluster"),
                ("response_code", "502")
            ]
        ) >= 1.0,
        "not counted as BlackHoleCluster: {stats:.3000}"
    );
    let client_log = mesh.logs().join(format!(
        "default.{}.istio-proxy.log",
        client_pod["metadata"]["name"].as_str().unwrap_or_default()
    ));
    eventually(Duration::from_secs(10), || async {
        let log = std::fs::read_to_string(&client_log)?;
        ensure!(log.contains("BlackHoleCluster"), "not logged: {log:.3000}");
        Ok(())
    })
    .await?;

    // HTTPS leaves as CONNECT: refused the same way for a destination no
    // ServiceEntry names; a tunnel to one that does reaches it.
    let proxy = outbound_proxy(&client_pod)?;
    let unknown_authority = format!("127.0.0.1:{}", unknown.port);
    let (status, _) = connect(proxy, &unknown_authority).await?;
    ensure!(
        status == 502,
        "REGISTRY_ONLY let a CONNECT through: {status}"
    );
    ensure!(unknown.served() == 0, "the unknown server was reached");
    let mut tunnel = connect_tunnel(proxy, "edition.example.test:80").await?;
    tunnel
        .write_all(
            b"GET /tunnelled HTTP/1.1\r\nhost: edition.example.test\r\nconnection: close\r\n\r\n",
        )
        .await?;
    // The test's server keeps the connection open: read up to the body's end.
    let mut reply = String::new();
    let mut buf = [0u8; 4096];
    while !reply.ends_with('}') {
        let n = tokio::time::timeout(
            Duration::from_secs(10),
            tokio::io::AsyncReadExt::read(&mut tunnel, &mut buf),
        )
        .await
        .context("no answer through the tunnel")??;
        ensure!(n > 0, "the tunnel closed: {reply}");
        reply.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    ensure!(
        reply.starts_with("HTTP/1.1 200") && reply.contains(r#""external":"edition""#),
        "{reply}"
    );

    // The workload's Sidecar says ALLOW_ANY: passed through to where it was sent.
    apply(
        &mesh,
        dir.path(),
        "apply",
        "allow-any.yaml",
        "apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: default}
spec:
  outboundTrafficPolicy: {mode: ALLOW_ANY}
",
    )?;
    let body = eventually(Duration::from_secs(30), || async {
        let (status, body) = call(&app, &unknown_url).await?;
        ensure!(status == 200, "{status}: {body}");
        Ok(body)
    })
    .await?;
    ensure!(body["external"] == "unknown", "{body}");
    let (status, _) = connect(proxy, &unknown_authority).await?;
    ensure!(status == 200, "ALLOW_ANY refused a CONNECT: {status}");
    mesh.stop()?;
    Ok(())
}

/// meshConfig.defaultConfig.gatewayTopology.numTrustedProxies: with one
/// proxy in front of the ingress gateway, `remoteIpBlocks` sees the client
/// that proxy wrote last in x-forwarded-for (not the gateway's peer, nor an
/// entry the client itself could have forged further left).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_ip_blocks_with_num_trusted_proxies_at_the_gateway() -> Result<()> {
    let dir = tempfile::tempdir()?;
    std::fs::write(
        dir.path().join("mesh.yaml"),
        "defaultConfig:\n  gatewayTopology: {numTrustedProxies: 1}\n",
    )?;
    std::fs::write(dir.path().join("echo.yaml"), e2e::echo_workload("echo", ""))?;
    std::fs::write(
        dir.path().join("edge.yaml"),
        "apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: web, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: [echo.example.com]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: echo}
spec:
  hosts: [echo.example.com]
  gateways: [istio-system/web]
  http: [{route: [{destination: {host: echo, port: {number: 8080}}}]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: from-the-office, namespace: istio-system}
spec:
  selector: {matchLabels: {istio: ingressgateway}}
  action: ALLOW
  rules: [{from: [{source: {remoteIpBlocks: [203.0.113.0/24]}}]}]
",
    )?;
    let mesh = Mesh::up(dir.path())?;
    let client = e2e::http();
    let get = |xff: Option<&'static str>| {
        let client = client.clone();
        let url = format!("{}/", mesh.gateway);
        async move {
            let mut req = client.get(url).header("host", "echo.example.com");
            if let Some(xff) = xff {
                req = req.header("x-forwarded-for", xff);
            }
            anyhow::Ok(req.send().await?.status().as_u16())
        }
    };
    eventually(Duration::from_secs(30), || async {
        let status = get(Some("203.0.113.7")).await?;
        ensure!(
            status == 200,
            "the client the trusted proxy names: {status}"
        );
        Ok(())
    })
    .await?;
    // The rightmost entry is the trusted proxy's; a forged one to its left counts for nothing.
    ensure!(get(Some("203.0.113.9, 198.51.100.1")).await? == 403);
    ensure!(
        get(None).await? == 403,
        "no header: the peer, outside the block"
    );
    mesh.stop()?;
    Ok(())
}
