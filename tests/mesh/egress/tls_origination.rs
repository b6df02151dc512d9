//! Istio's "Egress TLS Origination" task: the sidecar (DestinationRule
//! `tls` SIMPLE/MUTUAL with files) and the egress gateway (`credentialName`)
//! originate TLS to real TLS servers, and a server certificate that does
//! not verify is refused.

use super::*;

/// A CA the test makes, for the external servers and their clients.
pub(super) struct Ca {
    pub(super) cert: String,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

impl Ca {
    pub(super) fn new(name: &str) -> Result<Ca> {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyUsagePurpose};
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::OrganizationName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key)?.pem();
        Ok(Ca {
            cert,
            issuer: rcgen::Issuer::new(params, key),
        })
    }

    /// A leaf for `names`: (certificate PEM, key PEM).
    pub(super) fn issue(&self, names: &[&str]) -> Result<(String, String)> {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())?;
        Ok((
            params.signed_by(&key, &self.issuer)?.pem(),
            key.serialize_pem(),
        ))
    }
}

/// A TLS server config with `cert`; with `client_ca`, client certificates
/// from that CA are required.
pub(super) fn tls_server(
    cert: &(String, String),
    client_ca: Option<&str>,
) -> Result<rustls::ServerConfig> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = CertificateDer::pem_slice_iter(cert.0.as_bytes()).collect::<Result<Vec<_>, _>>()?;
    let key = PrivateKeyDer::from_pem_slice(cert.1.as_bytes())?;
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_slice_iter(ca.as_bytes()) {
                roots.add(c?)?;
            }
            builder.with_client_cert_verifier(
                rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider,
                )
                .build()?,
            )
        }
    };
    Ok(builder.with_single_cert(chain, key)?)
}

/// Istio's "Egress TLS Origination" task: the app sends plain HTTP to port
/// 80, which the ServiceEntry maps to the server's TLS port, and the
/// sidecar originates TLS as the DestinationRule says.
fn origination(ca: &str, simple: u16, mutual: u16, client: (&str, &str)) -> String {
    format!(
        "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: edition}}
spec:
  hosts: [edition.example.test]
  location: MESH_EXTERNAL
  ports:
  - {{number: 80, name: http-port, protocol: HTTP, targetPort: 443}}
  - {{number: 443, name: https-port, protocol: HTTPS}}
  resolution: DNS
  endpoints: [{{address: 127.0.0.1, ports: {{http-port: {simple}, https-port: {simple}}}}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: edition}}
spec:
  host: edition.example.test
  trafficPolicy:
    portLevelSettings:
    - port: {{number: 80}}
      tls: {{mode: SIMPLE, caCertificates: {ca}}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: mutual}}
spec:
  hosts: [mutual.example.test]
  location: MESH_EXTERNAL
  ports: [{{number: 80, name: http-port, protocol: HTTP}}]
  resolution: DNS
  endpoints: [{{address: 127.0.0.1, ports: {{http-port: {mutual}}}}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: mutual}}
spec:
  host: mutual.example.test
  trafficPolicy:
    tls: {{mode: MUTUAL, caCertificates: {ca}, clientCertificate: {}, privateKey: {}}}
---
",
        client.0, client.1
    )
}

/// Istio's "Egress Gateways with TLS Origination" task, mutual form: the
/// sidecar sends secure.example.test to the egress gateway (ISTIO_MUTUAL),
/// which originates mutual TLS with the client certificate of the Secret
/// its DestinationRule's `credentialName` names.
fn gateway_origination(mutual: u16, client: &(String, String), ca: &str) -> String {
    let indent = |pem: &str| pem.trim_end().replace('\n', "\n    ");
    format!(
        "apiVersion: v1
kind: Secret
metadata: {{name: client-credential, namespace: istio-system}}
type: Opaque
stringData:
  tls.crt: |
    {}
  tls.key: |
    {}
  ca.crt: |
    {}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: secure}}
spec:
  hosts: [secure.example.test]
  location: MESH_EXTERNAL
  ports:
  - {{number: 80, name: http, protocol: HTTP}}
  - {{number: 443, name: https, protocol: HTTPS}}
  resolution: DNS
  endpoints: [{{address: 127.0.0.1, ports: {{http: {mutual}, https: {mutual}}}}}]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: istio-egressgateway}}
spec:
  selector: {{istio: egressgateway}}
  servers:
  - port: {{number: 443, name: https, protocol: HTTPS}}
    hosts: [secure.example.test]
    tls: {{mode: ISTIO_MUTUAL}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: egressgateway-for-secure}}
spec:
  host: istio-egressgateway.istio-system.svc.cluster.local
  subsets:
  - name: secure
    trafficPolicy:
      portLevelSettings:
      - port: {{number: 443}}
        tls: {{mode: ISTIO_MUTUAL, sni: secure.example.test}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: secure-through-egress-gateway}}
spec:
  hosts: [secure.example.test]
  gateways: [istio-egressgateway, mesh]
  http:
  - match: [{{gateways: [mesh], port: 80}}]
    route:
    - destination:
        host: istio-egressgateway.istio-system.svc.cluster.local
        subset: secure
        port: {{number: 443}}
  - match: [{{gateways: [istio-egressgateway], port: 443}}]
    route:
    - destination: {{host: secure.example.test, port: {{number: 443}}}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: originate-mtls-for-secure}}
spec:
  host: secure.example.test
  trafficPolicy:
    portLevelSettings:
    - port: {{number: 443}}
      tls: {{mode: MUTUAL, credentialName: client-credential, sni: secure.example.test}}
---
",
        indent(&client.0),
        indent(&client.1),
        indent(ca)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_origination_simple_mutual_and_credential_name() -> Result<()> {
    let server_ca = Ca::new("external servers CA")?;
    let client_ca = Ca::new("external clients CA")?;
    let names = [
        "edition.example.test",
        "mutual.example.test",
        "secure.example.test",
    ];
    let server_cert = server_ca.issue(&names)?;
    let client_cert = client_ca.issue(&["client.example.test"])?;
    let simple = External::start("simple", Some(tls_server(&server_cert, None)?)).await?;
    let mutual = External::start(
        "mutual",
        Some(tls_server(&server_cert, Some(&client_ca.cert))?),
    )
    .await?;

    let certs = tempfile::tempdir()?;
    let file = |name: &str, text: &str| -> Result<String> {
        let path = certs.path().join(name);
        std::fs::write(&path, text)?;
        Ok(path.display().to_string())
    };
    let ca = file("ca.pem", &server_ca.cert)?;
    let other_ca = file("other-ca.pem", &Ca::new("another CA")?.cert)?;
    let client = (
        file("client.pem", &client_cert.0)?,
        file("client-key.pem", &client_cert.1)?,
    );

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
        dir.path().join("origination.yaml"),
        format!(
            "{}{}",
            origination(&ca, simple.port, mutual.port, (&client.0, &client.1)),
            gateway_origination(mutual.port, &client_cert, &server_ca.cert)
        ),
    )?;
    let mesh = Mesh::up(dir.path())?;
    let app = mesh.app(&mesh.pod_of("client")?, 8080)?;
    let ok = |url: &'static str| {
        let app = &app;
        async move {
            eventually(Duration::from_secs(30), || async {
                let (status, body) = call(app, url).await?;
                ensure!(status == 200, "{url}: {status}: {body}");
                Ok(body)
            })
            .await
        }
    };

    // SIMPLE: the app's plain HTTP reaches the TLS server, verified against caCertificates.
    let body = ok("http://edition.example.test/simple").await?;
    ensure!(
        body["external"] == "simple" && body["path"] == "/simple" && body["client_cert"] == false,
        "{body}"
    );
    // MUTUAL with files: the server that requires a client certificate gets one.
    let body = ok("http://mutual.example.test/files").await?;
    ensure!(
        body["external"] == "mutual" && body["client_cert"] == true,
        "{body}"
    );
    // MUTUAL at the egress gateway with credentialName: the Secret's certificate.
    let served = mutual.served();
    let body = ok("http://secure.example.test/secret").await?;
    ensure!(
        body["external"] == "mutual" && body["client_cert"] == true,
        "{body}"
    );
    ensure!(mutual.served() > served);
    let gateway = mesh.pod_of("istio-egressgateway")?;
    let stats = proxy_stats(&gateway).await?;
    ensure!(
        requests_for(&stats, "secure.example.test", 200) >= 1.0,
        "the egress gateway did not originate it: {stats:.3000}"
    );

    // A server certificate that does not verify: 503, and the sidecar says why.
    let rule = format!(
        "apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: edition}}
spec:
  host: edition.example.test
  trafficPolicy:
    portLevelSettings:
    - port: {{number: 80}}
      tls: {{mode: SIMPLE, caCertificates: {other_ca}}}
"
    );
    apply(&mesh, dir.path(), "apply", "other-ca.yaml", &rule)?;
    eventually(Duration::from_secs(30), || async {
        let (status, body) = call(&app, "http://edition.example.test/unverified").await?;
        ensure!(status == 503, "{status}: {body}");
        Ok(())
    })
    .await?;
    // Once the rule is in force, no request reaches the server.
    let served = simple.served();
    let (status, _) = call(&app, "http://edition.example.test/unverified").await?;
    ensure!(
        status == 503 && simple.served() == served,
        "the request reached a server that did not verify: {status}"
    );
    let client_pod = mesh.pod_of("client")?;
    let log = std::fs::read_to_string(mesh.logs().join(format!(
        "default.{}.istio-proxy.log",
        client_pod["metadata"]["name"].as_str().unwrap_or_default()
    )))?;
    ensure!(
        log.lines()
            .any(|l| l.contains("UnknownIssuer") || l.contains("certificate")),
        "no log line says the certificate did not verify: {log:.4000}"
    );

    // The MUTUAL server refuses a client without a certificate (SIMPLE).
    let rule = format!(
        "apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: mutual}}
spec:
  host: mutual.example.test
  trafficPolicy:
    tls: {{mode: SIMPLE, caCertificates: {ca}}}
"
    );
    apply(&mesh, dir.path(), "apply", "no-client-cert.yaml", &rule)?;
    eventually(Duration::from_secs(30), || async {
        let (status, body) = call(&app, "http://mutual.example.test/anonymous").await?;
        ensure!(status == 503, "{status}: {body}");
        Ok(())
    })
    .await?;

    // A rule whose CA file cannot be read fails its own cluster only: in the
    // same push, mutual.example.test's rule gets its client certificate back
    // and works again, while edition.example.test answers 503 and the
    // sidecar names the rule and the file.
    let missing = certs.path().join("missing-ca.pem").display().to_string();
    let rules = format!(
        "apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: edition}}
spec:
  host: edition.example.test
  trafficPolicy:
    portLevelSettings:
    - port: {{number: 80}}
      tls: {{mode: SIMPLE, caCertificates: {missing}}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: mutual}}
spec:
  host: mutual.example.test
  trafficPolicy:
    tls: {{mode: MUTUAL, caCertificates: {ca}, clientCertificate: {}, privateKey: {}}}
",
        client.0, client.1
    );
    apply(&mesh, dir.path(), "apply", "unreadable-ca.yaml", &rules)?;
    let body = ok("http://mutual.example.test/after-unreadable").await?;
    ensure!(body["client_cert"] == true, "{body}");
    let served = simple.served();
    let (status, body) = call(&app, "http://edition.example.test/unreadable").await?;
    ensure!(
        status == 503 && simple.served() == served,
        "a cluster whose CA cannot be read: {status}: {body}"
    );
    let log = std::fs::read_to_string(mesh.logs().join(format!(
        "default.{}.istio-proxy.log",
        client_pod["metadata"]["name"].as_str().unwrap_or_default()
    )))?;
    ensure!(
        log.lines()
            .any(|l| l.contains("DestinationRule default/edition") && l.contains(&missing)),
        "no log line names the rule and the file: {log:.4000}"
    );
    mesh.stop()?;
    Ok(())
}
