//! Istio's "Secure Gateways" task on a running mesh: HTTPS servers on the
//! ingress gateway whose certificates come from Secrets (`credentialName`),
//! SIMPLE and MUTUAL, and `httpsRedirect` on the plaintext server.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use e2e::{Mesh, eventually};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A CA and what it signed, PEM.
struct Ca {
    cert: String,
    issuer: Issuer<'static, KeyPair>,
}

impl Ca {
    fn new(org: &str) -> Result<Ca> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::OrganizationName, org);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key)?.pem();
        let issuer = Issuer::new(params, key);
        Ok(Ca { cert, issuer })
    }

    /// A leaf for `name` (a DNS SAN; client certificates carry one too): certificate and key PEM.
    fn issue(&self, name: &str) -> Result<(String, String)> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let params = CertificateParams::new(vec![name.to_string()])?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok((cert.pem(), key.serialize_pem()))
    }
}

fn indent(pem: &str) -> String {
    pem.lines().map(|l| format!("    {l}\n")).collect()
}

/// A kubernetes.io/tls Secret in istio-system, where the default ingress gateway reads it.
fn tls_secret(name: &str, cert: &str, key: &str, ca: Option<&str>) -> String {
    let ca = ca
        .map(|ca| format!("  ca.crt: |\n{}", indent(ca)))
        .unwrap_or_default();
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: istio-system}}\ntype: kubernetes.io/tls\nstringData:\n  tls.crt: |\n{}  tls.key: |\n{}{ca}---\n",
        indent(cert),
        indent(key)
    )
}

const GATEWAY: &str = r#"apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: mygateway}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 443, name: https, protocol: HTTPS}
    tls: {mode: SIMPLE, credentialName: bookinfo-credential}
    hosts: [bookinfo.example.com]
  - port: {number: 443, name: https-mutual, protocol: HTTPS}
    tls: {mode: MUTUAL, credentialName: mutual-credential}
    hosts: [mutual.example.com]
  - port: {number: 80, name: http, protocol: HTTP}
    tls: {httpsRedirect: true}
    hosts: [bookinfo.example.com]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: echo}
spec:
  hosts: [bookinfo.example.com, mutual.example.com]
  gateways: [mygateway]
  http: [{route: [{destination: {host: echo, port: {number: 8080}}}]}]
---
"#;

/// A client trusting `ca`, presenting `client` (certificate and key PEM) if given.
fn client_config(ca: &str, client: Option<&(String, String)>) -> Result<rustls::ClientConfig> {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca.as_bytes()) {
        roots.add(c?)?;
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots);
    let mut config = match client {
        Some((cert, key)) => {
            let chain =
                CertificateDer::pem_slice_iter(cert.as_bytes()).collect::<Result<Vec<_>, _>>()?;
            builder.with_client_auth_cert(chain, PrivateKeyDer::from_pem_slice(key.as_bytes())?)?
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// GET / over TLS to `addr` for `host` (SNI and Host): the whole reply, or
/// why the handshake or the request failed.
async fn https_get(addr: SocketAddr, host: &str, config: rustls::ClientConfig) -> Result<String> {
    https_get_as(addr, host, host, config).await
}

/// As `https_get`, with an SNI that need not be the Host.
async fn https_get_as(
    addr: SocketAddr,
    sni: &str,
    host: &str,
    config: rustls::ClientConfig,
) -> Result<String> {
    let attempt = async {
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        let name = ServerName::try_from(sni.to_string())?;
        let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await?;
        // TLS 1.3 clients learn that their certificate was refused on the first read.
        tls.write_all(
            format!("GET / HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n").as_bytes(),
        )
        .await?;
        let mut reply = Vec::new();
        tls.read_to_end(&mut reply).await?;
        ensure!(!reply.is_empty(), "closed without a reply");
        Ok(String::from_utf8_lossy(&reply).into_owned())
    };
    tokio::time::timeout(Duration::from_secs(10), attempt)
        .await
        .unwrap_or_else(|_| Err(anyhow::anyhow!("no answer in 10 s")))
}

/// A plaintext request: the reply, or what went wrong.
async fn plain_get(addr: SocketAddr, host: &str, path: &str) -> Result<String> {
    let attempt = async {
        let mut tcp = tokio::net::TcpStream::connect(addr).await?;
        tcp.write_all(
            format!("GET {path} HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n").as_bytes(),
        )
        .await?;
        let mut reply = Vec::new();
        tcp.read_to_end(&mut reply).await?;
        Ok(String::from_utf8_lossy(&reply).into_owned())
    };
    tokio::time::timeout(Duration::from_secs(10), attempt)
        .await
        .unwrap_or_else(|_| Err(anyhow::anyhow!("no answer in 10 s")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_gateway_simple_mutual_and_redirect() -> Result<()> {
    let server_ca = Ca::new("example.com server CA")?;
    let client_ca = Ca::new("example.com client CA")?;
    let (bookinfo_cert, bookinfo_key) = server_ca.issue("bookinfo.example.com")?;
    let (mutual_cert, mutual_key) = server_ca.issue("mutual.example.com")?;
    let client = client_ca.issue("client.example.com")?;

    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("mesh.yaml"), "{}\n")?;
    std::fs::write(dir.path().join("echo.yaml"), e2e::echo_workload("echo", ""))?;
    std::fs::write(
        dir.path().join("gateway.yaml"),
        format!(
            "{}{}{GATEWAY}",
            tls_secret("bookinfo-credential", &bookinfo_cert, &bookinfo_key, None),
            tls_secret(
                "mutual-credential",
                &mutual_cert,
                &mutual_key,
                Some(&client_ca.cert)
            ),
        ),
    )?;
    let mesh = Mesh::up(dir.path())?;
    let http_addr: SocketAddr = mesh
        .gateway
        .trim_start_matches("http://")
        .parse()
        .context("gateway address")?;
    // The ingress Service maps 443 to 8443, as Istio's does.
    let https_addr = SocketAddr::new(http_addr.ip(), 8443);

    // SIMPLE: the server certificate verifies for bookinfo.example.com and the echo answers.
    let reply = eventually(Duration::from_secs(30), || async {
        let reply = https_get(
            https_addr,
            "bookinfo.example.com",
            client_config(&server_ca.cert, None)?,
        )
        .await?;
        ensure!(reply.starts_with("HTTP/1.1 200"), "{reply}");
        Ok(reply)
    })
    .await?;
    ensure!(
        reply.contains(r#""service":"echo""#),
        "not the echo's answer: {reply}"
    );
    ensure!(
        reply.contains(r#""x-forwarded-proto":"https""#),
        "the app is not told the scheme was https: {reply}"
    );

    // Plaintext on the HTTPS port is no HTTP: no response comes back.
    let plain = plain_get(https_addr, "bookinfo.example.com", "/").await;
    ensure!(
        !plain
            .as_deref()
            .unwrap_or_default()
            .starts_with("HTTP/1.1 200"),
        "plaintext on the HTTPS port was served: {plain:?}"
    );
    // A name no server on the port has is refused at the handshake.
    let other = https_get(
        https_addr,
        "other.example.com",
        client_config(&server_ca.cert, None)?,
    )
    .await;
    ensure!(other.is_err(), "an unknown SNI was served: {other:?}");

    // MUTUAL: SNI selects the second server; without a client certificate it refuses.
    let anonymous = https_get(
        https_addr,
        "mutual.example.com",
        client_config(&server_ca.cert, None)?,
    )
    .await;
    ensure!(
        anonymous.is_err(),
        "MUTUAL served a client without a certificate: {anonymous:?}"
    );
    // A certificate from another CA is refused too.
    let stranger = Ca::new("stranger")?.issue("client.example.com")?;
    let forged = https_get(
        https_addr,
        "mutual.example.com",
        client_config(&server_ca.cert, Some(&stranger))?,
    )
    .await;
    ensure!(
        forged.is_err(),
        "MUTUAL served a client of another CA: {forged:?}"
    );
    let reply = https_get(
        https_addr,
        "mutual.example.com",
        client_config(&server_ca.cert, Some(&client))?,
    )
    .await?;
    ensure!(
        reply.starts_with("HTTP/1.1 200") && reply.contains(r#""service":"echo""#),
        "{reply}"
    );

    // The SIMPLE server's SNI does not open the MUTUAL server's hosts: each
    // server routes only its own (Envoy answers 404 for an unknown host).
    let smuggled = https_get_as(
        https_addr,
        "bookinfo.example.com",
        "mutual.example.com",
        client_config(&server_ca.cert, None)?,
    )
    .await?;
    ensure!(smuggled.starts_with("HTTP/1.1 404"), "{smuggled}");

    // httpsRedirect on the plaintext server: 301 to the same path with https.
    let redirect = plain_get(http_addr, "bookinfo.example.com", "/productpage?u=normal").await?;
    ensure!(redirect.starts_with("HTTP/1.1 301"), "{redirect}");
    ensure!(
        redirect
            .to_ascii_lowercase()
            .contains("location: https://bookinfo.example.com/productpage?u=normal\r\n"),
        "{redirect}"
    );

    // Rotation: a new certificate from another CA, applied to the running
    // mesh, is what new handshakes get.
    let next_ca = Ca::new("example.com next CA")?;
    let (next_cert, next_key) = next_ca.issue("bookinfo.example.com")?;
    let rotated = dir.path().join("rotated.yaml");
    let secret = tls_secret("bookinfo-credential", &next_cert, &next_key, None);
    std::fs::write(&rotated, secret.strip_suffix("---\n").unwrap_or(&secret))?;
    let out = mesh.trellis(&["apply", "-f", &rotated.display().to_string()]);
    ensure!(
        out.status.success(),
        "apply: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    eventually(Duration::from_secs(30), || async {
        let reply = https_get(
            https_addr,
            "bookinfo.example.com",
            client_config(&next_ca.cert, None)?,
        )
        .await?;
        ensure!(reply.starts_with("HTTP/1.1 200"), "{reply}");
        Ok(())
    })
    .await
    // A NACK (why the gateway refused the new certificate) is in its log.
    .inspect_err(|_| {
        for f in std::fs::read_dir(mesh.logs())
            .into_iter()
            .flatten()
            .flatten()
        {
            if f.file_name().to_string_lossy().contains("ingressgateway") {
                let log = std::fs::read_to_string(f.path()).unwrap_or_default();
                eprintln!("{}:\n{log}", f.path().display());
            }
        }
    })?;
    let old = https_get(
        https_addr,
        "bookinfo.example.com",
        client_config(&server_ca.cert, None)?,
    )
    .await;
    ensure!(
        old.is_err(),
        "the replaced certificate is still served: {old:?}"
    );

    // The key reaches the gateway, but no dump shows it.
    let pods = mesh.pods()?;
    let gateway_pod = pods
        .iter()
        .find(|p| p["metadata"]["labels"]["istio"] == "ingressgateway")
        .and_then(|p| p["metadata"]["name"].as_str())
        .context("gateway pod")?
        .to_string();
    let out = mesh.trellis(&[
        "proxy-config",
        "listeners",
        &format!("{gateway_pod}.istio-system"),
        "-o",
        "json",
    ]);
    ensure!(
        out.status.success(),
        "proxy-config: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dump = String::from_utf8_lossy(&out.stdout);
    ensure!(
        dump.contains("[redacted]"),
        "no gateway_tls in the listeners: {dump}"
    );
    let key_body: &str = next_key.lines().nth(1).context("key PEM")?;
    ensure!(
        !dump.contains(key_body),
        "the private key is in proxy-config's output"
    );
    ensure!(
        dump.contains(next_cert.lines().nth(1).context("cert PEM")?),
        "the certificate is not shown"
    );
    Ok(())
}
