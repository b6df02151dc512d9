//! Istio's egress-gateway task in its HTTPS form ("Egress gateway for HTTPS
//! traffic"): the application originates TLS itself, its sidecar routes the
//! connection by SNI to the egress gateway (a `tls` route from the mesh
//! gateway), and the gateway's PASSTHROUGH server routes it by SNI again to
//! the external host — nobody but the external server terminates it. In
//! loopback mode the application's HTTPS leaves as `CONNECT host:443`
//! through its sidecar's explicit proxy, which this test speaks as curl
//! with `HTTPS_PROXY` does.

use std::sync::Mutex;

use tokio::io::AsyncReadExt;

use super::tls_origination::{Ca, tls_server};
use super::*;

/// The external HTTPS server: answers as [`External`] does and records the
/// server name each client asked for in its ClientHello.
struct TlsExternal {
    port: u16,
    snis: Arc<Mutex<Vec<String>>>,
}

impl TlsExternal {
    async fn start(config: rustls::ServerConfig) -> Result<TlsExternal> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let snis = Arc::new(Mutex::new(Vec::new()));
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let seen = snis.clone();
        tokio::spawn(async move {
            let served = Arc::new(AtomicU32::new(0));
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, seen, served) = (acceptor.clone(), seen.clone(), served.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let sni = tls.get_ref().1.server_name().unwrap_or("").to_string();
                    seen.lock().unwrap_or_else(|e| e.into_inner()).push(sni);
                    serve(tls, "edition", false, &served).await;
                });
            }
        });
        Ok(TlsExternal { port, snis })
    }

    /// How many TLS clients asked for `name`.
    fn saw(&self, name: &str) -> usize {
        let snis = self.snis.lock().unwrap_or_else(|e| e.into_inner());
        snis.iter().filter(|s| s.as_str() == name).count()
    }
}

/// The task's configuration, with the test's server as the external
/// host's one endpoint: a ServiceEntry with a TLS port 443, a Gateway with
/// a PASSTHROUGH server, a DestinationRule with only the subset (no TLS
/// setting: auto mTLS must leave the client's TLS alone), and `tls` routes
/// matching `sniHosts` from the mesh to the gateway and from the gateway to
/// the external host.
fn https_through_egress_gateway(port: u16) -> String {
    format!(
        "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: edition}}
spec:
  hosts: [edition.example.test]
  ports:
  - {{number: 443, name: tls, protocol: TLS}}
  resolution: DNS
  endpoints: [{{address: 127.0.0.1, ports: {{tls: {port}}}}}]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: istio-egressgateway}}
spec:
  selector: {{istio: egressgateway}}
  servers:
  - port: {{number: 443, name: tls, protocol: TLS}}
    hosts: [edition.example.test]
    tls: {{mode: PASSTHROUGH}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: egressgateway-for-edition}}
spec:
  host: istio-egressgateway.istio-system.svc.cluster.local
  subsets:
  - name: edition
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: direct-edition-through-egress-gateway}}
spec:
  hosts: [edition.example.test]
  gateways: [mesh, istio-egressgateway]
  tls:
  - match:
    - gateways: [mesh]
      port: 443
      sniHosts: [edition.example.test]
    route:
    - destination:
        host: istio-egressgateway.istio-system.svc.cluster.local
        subset: edition
        port: {{number: 443}}
  - match:
    - gateways: [istio-egressgateway]
      port: 443
      sniHosts: [edition.example.test]
    route:
    - destination:
        host: edition.example.test
        port: {{number: 443}}
      weight: 100
"
    )
}

/// An application's HTTPS GET through its sidecar's explicit proxy at
/// `proxy`, as curl with `HTTPS_PROXY` makes it: `CONNECT authority`, then
/// TLS with the server name `sni`, the server's certificate verified
/// against `ca` for that name, then the request. The JSON the server answers.
async fn https_get(
    proxy: SocketAddr,
    authority: &str,
    sni: &str,
    ca: &str,
    path: &str,
) -> Result<Value> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
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
    let call = async {
        let tcp = connect_tunnel(proxy, authority).await?;
        let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(
                rustls_pki_types::ServerName::try_from(sni.to_string())?,
                tcp,
            )
            .await
            .context("TLS handshake with the external server")?;
        tls.write_all(
            format!("GET {path} HTTP/1.1\r\nhost: {sni}\r\nconnection: close\r\n\r\n").as_bytes(),
        )
        .await?;
        let mut reply = Vec::new();
        // The test server keeps the connection open: read one response.
        let mut buf = [0u8; 4096];
        loop {
            let n = tls.read(&mut buf).await?;
            ensure!(n > 0, "closed after {reply:?}");
            reply.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&reply);
            if let Some((head, body)) = text.split_once("\r\n\r\n")
                && let Some(len) = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length: "))
                && body.len() >= len.trim().parse::<usize>()?
            {
                ensure!(head.starts_with("HTTP/1.1 200"), "{head}");
                return Ok(serde_json::from_str(body)?);
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(15), call)
        .await
        .unwrap_or_else(|_| Err(anyhow::anyhow!("no answer in 15 s")))
}

/// TCP and TLS connections a proxy's metrics count as opened to `service`.
fn tcp_opened(stats: &str, service: &str) -> f64 {
    e2e::counter_sum(
        stats,
        "istio_tcp_connections_opened_total",
        &[("destination_service", service)],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn egress_gateway_task_for_https_passes_tls_through() -> Result<()> {
    let ca = Ca::new("the outside world")?;
    let cert = ca.issue(&["edition.example.test", "other.example.test"])?;
    let external = TlsExternal::start(tls_server(&cert, None)?).await?;
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
        https_through_egress_gateway(external.port),
    )?;
    let mesh = Mesh::up(dir.path())?;
    let client = mesh.pod_of("client")?;
    let proxy = outbound_proxy(&client)?;
    let gateway = mesh.pod_of("istio-egressgateway")?;
    let log_of = |pod: &Value, ns: &str| {
        mesh.logs().join(format!(
            "{ns}.{}.istio-proxy.log",
            pod["metadata"]["name"].as_str().unwrap_or_default()
        ))
    };
    let (client_log, gateway_log) = (log_of(&client, "default"), log_of(&gateway, "istio-system"));

    // The application's own TLS reaches the external server, which sees the
    // name the application asked for; the application verified the
    // server's certificate (made for that name by a CA only the test and
    // the server know): nobody in between terminated it.
    let body = eventually(Duration::from_secs(30), || async {
        https_get(
            proxy,
            "edition.example.test:443",
            "edition.example.test",
            &ca.cert,
            "/politics",
        )
        .await
    })
    .await?;
    ensure!(
        body["external"] == "edition" && body["path"] == "/politics",
        "{body}"
    );
    ensure!(
        external.saw("edition.example.test") >= 1,
        "the external server saw no ClientHello for edition.example.test"
    );
    // The sidecar sent it to the egress gateway by its `tls` route, and the
    // gateway on to the external host by SNI: their TCP metrics and access
    // logs say so.
    eventually(Duration::from_secs(10), || async {
        let stats = proxy_stats(&gateway).await?;
        ensure!(
            tcp_opened(&stats, "edition.example.test") >= 1.0,
            "the egress gateway counted no connection to edition.example.test: {stats:.4000}"
        );
        let log = std::fs::read_to_string(&gateway_log).unwrap_or_default();
        ensure!(
            log.lines().any(|l| l.contains(r#""upstream_cluster":"outbound|443||edition.example.test""#)
                && l.contains(r#""requested_server_name":"edition.example.test""#)),
            "no TLS passthrough line in the gateway's access log: {log:.3000}"
        );
        let log = std::fs::read_to_string(&client_log).unwrap_or_default();
        ensure!(
            log.lines().any(|l| l.contains(
                r#""upstream_cluster":"outbound|443|edition|istio-egressgateway.istio-system.svc.cluster.local""#
            ) && l.contains(r#""requested_server_name":"edition.example.test""#)),
            "the sidecar's access log has no connection to the egress gateway: {log:.3000}"
        );
        Ok(())
    })
    .await?;

    // A server name no `sniHosts` lists: the sidecar's route does not
    // match, so the connection goes to the external host's own cluster —
    // straight to the server, not through the gateway.
    let before = tcp_opened(&proxy_stats(&gateway).await?, "edition.example.test");
    let body = https_get(
        proxy,
        "edition.example.test:443",
        "other.example.test",
        &ca.cert,
        "/direct",
    )
    .await?;
    ensure!(body["path"] == "/direct", "{body}");
    ensure!(
        external.saw("other.example.test") == 1,
        "the external server did not see other.example.test once"
    );
    eventually(Duration::from_secs(10), || async {
        let log = std::fs::read_to_string(&client_log).unwrap_or_default();
        ensure!(
            log.lines().any(|l| l
                .contains(r#""upstream_cluster":"outbound|443||edition.example.test""#)
                && l.contains(r#""requested_server_name":"other.example.test""#)),
            "the sidecar's access log has no direct connection for other.example.test: {log:.3000}"
        );
        Ok(())
    })
    .await?;
    let after = tcp_opened(&proxy_stats(&gateway).await?, "edition.example.test");
    ensure!(
        after == before,
        "other.example.test went through the gateway ({before} → {after})"
    );
    let log = std::fs::read_to_string(&gateway_log).unwrap_or_default();
    ensure!(
        !log.contains("other.example.test"),
        "the gateway saw other.example.test: {log:.3000}"
    );
    mesh.stop()?;
    Ok(())
}
