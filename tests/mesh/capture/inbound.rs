//! Inbound capture: a server that knows nothing of the mesh is protected
//! by its sidecar (STRICT refuses plaintext from another namespace),
//! excluded ports bypass it, and ports no Service names are passed through
//! under PeerAuthentication to the pod's address; Service ports go to the
//! pod's address too; IPv6 is captured as IPv4 is; TLS an application
//! terminates itself passes through a PERMISSIVE port untouched.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, ensure};

use super::lab::{check, ip6, run, wait_for};
use super::pods::Running;

/// A workload certificate for `spiffe_id` issued by the mesh CA in
/// `ca_dir`, as a mesh client outside these pods would hold: (cert, key) PEM.
fn mesh_client_cert(ca_dir: &Path, spiffe_id: &str) -> Result<(String, String)> {
    use rcgen::{
        CertificateParams, DistinguishedName, ExtendedKeyUsagePurpose, Issuer, KeyPair, SanType,
    };
    let ca_cert = std::fs::read_to_string(ca_dir.join("ca-cert.pem"))?;
    let ca_key = KeyPair::from_pem(&std::fs::read_to_string(ca_dir.join("ca-key.pem"))?)?;
    let issuer = Issuer::from_ca_cert_pem(&ca_cert, ca_key)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.subject_alt_names = vec![SanType::URI(spiffe_id.try_into()?)];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let cert = params.signed_by(&key, &issuer)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// 2. STRICT: a plaintext client outside the mesh (pod c) is refused by
///    b's captured inbound port, though b's app knows nothing of mTLS.
pub fn strict_refuses_plaintext(m: &Running) -> Result<()> {
    let lab = &m.lab;
    let (status, body) = lab.curl("c", "http://10.77.0.3:8080/direct")?;
    ensure!(
        status != 0 && !body.contains("/direct"),
        "STRICT refuses plaintext from another namespace: {status} {body}"
    );
    Ok(())
}

/// 3. An excluded inbound port bypasses the sidecar.
pub fn excluded_inbound_port(m: &Running) -> Result<()> {
    let lab = &m.lab;
    let (status, body) = lab.curl("c", "http://10.77.0.3:9090/excluded")?;
    ensure!(
        status == 0 && body.contains("/excluded"),
        "port 9090 is not captured: {status} {body}"
    );
    Ok(())
}

/// 3b. Inbound passthrough (ports no Service names) is still inbound:
///     PeerAuthentication applies (STRICT refuses plaintext; a
///     portLevelMtls entry overrides it), a mesh client's mTLS is
///     accepted, and the bytes go to the pod's address, not its
///     127.0.0.1, so an app bound only to loopback stays private.
pub fn passthrough_ports(m: &Running) -> Result<()> {
    let (lab, ca_dir) = (&m.lab, &m.ca_dir);
    let (status, body) = lab.curl("c", "http://10.77.0.3:7071/plain")?;
    ensure!(
        status != 0 && !body.contains("/plain"),
        "STRICT refuses plaintext on a port no Service names: {status} {body}"
    );
    ensure!(
        lab.log("proxy-b.log")
            .lines()
            .any(|l| l.contains("inbound connection refused")
                && l.contains("InboundPassthroughCluster")
                && l.contains("mode=Strict")),
        "the passthrough refusal is logged: {}",
        lab.log("proxy-b.log")
    );
    let (status, body) = lab.curl("c", "http://10.77.0.3:7073/permissive")?;
    ensure!(
        status == 0 && body.contains("/permissive") && body.ends_with("\n200"),
        "portLevelMtls PERMISSIVE lets plaintext through to the app: {status} {body}"
    );
    let (status, body) = lab.curl("c", "http://10.77.0.3:7072/loopback")?;
    ensure!(
        status != 0 && !body.contains("/loopback"),
        "an app on the pod's 127.0.0.1 is not reachable from outside: {status} {body}"
    );
    let (cert, key) = mesh_client_cert(ca_dir, "spiffe://cluster.local/ns/default/sa/c")?;
    let (cert_path, key_path) = (
        lab.dir.path().join("c.pem"),
        lab.dir.path().join("c-key.pem"),
    );
    std::fs::write(&cert_path, cert)?;
    std::fs::write(&key_path, key)?;
    let mtls = |url: &str| {
        run(&mut lab.exec(
            "c",
            &[
                "curl",
                "-sS",
                "--max-time",
                "5",
                // The server's certificate names a SPIFFE id, not an address;
                // what is tested is that b's sidecar accepts this client.
                "-k",
                "--no-alpn",
                "--cert",
                &cert_path.display().to_string(),
                "--key",
                &key_path.display().to_string(),
                "-w",
                "\n%{http_code}",
                url,
            ],
        ))
    };
    let out = mtls("https://10.77.0.3:7071/mtls")?;
    let body = String::from_utf8_lossy(&out.stdout);
    ensure!(
        body.contains("/mtls") && body.ends_with("\n200"),
        "a mesh client's mTLS is terminated and passed through: {body} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = mtls("https://10.77.0.3:7072/loopback-mtls")?;
    ensure!(
        !String::from_utf8_lossy(&out.stdout).contains("/loopback-mtls"),
        "not even a mesh client reaches an app on the pod's 127.0.0.1"
    );
    Ok(())
}

/// 3c. A Service port's connections go to the pod's address, where the
///     client meant to reach it (Istio 1.10 and later): an application
///     bound only to the pod's address is reachable through the mesh; one
///     bound only to the pod's 127.0.0.1 is not, as in Istio.
pub fn service_ports_reach_the_pod_address(m: &Running) -> Result<()> {
    let lab = &m.lab;
    let mut got = (0, String::new());
    wait_for(
        Duration::from_secs(15),
        "a calls http://b-podip:8082",
        || {
            got = lab.curl("a", "http://b-podip:8082/podip")?;
            Ok(got.1.ends_with("\n200"))
        },
    )
    .with_context(|| format!("last: {got:?}\n{}", lab.log("proxy-b.log")))?;
    ensure!(
        got.1.contains("/podip") && got.1.contains("spiffe://cluster.local/ns/default/sa/a"),
        "an app bound to the pod's address only, through both sidecars: {}",
        got.1
    );
    let (_, body) = lab.curl("a", "http://b-loopback:8083/loopback")?;
    ensure!(
        !body.contains("/loopback") && !body.ends_with("\n200"),
        "an app bound to the pod's 127.0.0.1 only is not reachable through its sidecar: {body}"
    );
    Ok(())
}

/// 3d. IPv6: the rules capture it as IPv4 (ip6tables), the sidecar reads
///     the original destination (IP6T_SO_ORIGINAL_DST) and passes the
///     connection on from `::6`, which `trellis-proxy iptables` put on the
///     pod's loopback as Istio's init container does.
pub fn ipv6_is_captured(m: &Running) -> Result<()> {
    let lab = &m.lab;
    let b6 = ip6("10.77.0.3");
    let (status, body) = lab.curl("c", &format!("http://[{b6}]:7073/v6"))?;
    ensure!(
        status == 0 && body.contains("/v6") && body.ends_with("\n200"),
        "PERMISSIVE passthrough over IPv6: {status} {body}\n{}",
        lab.log("proxy-b.log")
    );
    let lo = check(&mut lab.exec("b", &["ip", "-6", "addr", "show", "dev", "lo"]))?;
    ensure!(
        lo.contains("inet6 ::6/128"),
        "the inbound passthrough source on b's loopback: {lo}"
    );
    let (status, body) = lab.curl("c", &format!("http://[{b6}]:8080/v6-strict"))?;
    ensure!(
        status != 0 && !body.contains("/v6-strict"),
        "STRICT refuses plaintext over IPv6 too: {status} {body}"
    );
    Ok(())
}

/// 3e. TLS an application does itself on a PERMISSIVE port no Service
///     names: a client in pod a with TLS of its own (curl: ALPN h2 and
///     http/1.1, no mesh ALPN id) reaches b's own TLS server, through both
///     sidecars, untouched. b's sidecar tells it from mesh mTLS by ALPN, as
///     Istio does; it used to terminate it as mesh mTLS.
pub fn application_tls_passes_through(m: &Running) -> Result<()> {
    let lab = &m.lab;
    let out = run(&mut lab.exec(
        "a",
        &[
            "curl",
            "-sS",
            "--max-time",
            "5",
            // b's own certificate, which no one signed.
            "-k",
            "-w",
            "\n%{http_code}",
            "https://10.77.0.3:7074/own-tls",
        ],
    ))?;
    let body = String::from_utf8_lossy(&out.stdout);
    ensure!(
        body.starts_with("tls-app /own-tls\n200"),
        "b's TLS server answered through both sidecars: {body} {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        lab.log("proxy-b.log")
    );
    Ok(())
}

/// A TLS server of the application's own (rustls, a self-signed
/// certificate for `tls-app.test`) on `port` in the network namespace
/// `netns`: it answers each HTTP/1.1 request with "tls-app <path>".
pub fn tls_app(netns: &str, port: u16) -> Result<()> {
    use std::io::{BufRead, Write};
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let cert =
        rcgen::CertificateParams::new(vec!["tls-app.test".to_string()])?.self_signed(&key)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls_pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let config = Arc::new(config);
    let path = format!("/var/run/netns/{netns}");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let bound = (|| -> Result<std::net::TcpListener> {
            let ns = std::fs::File::open(&path)?;
            nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET)?;
            Ok(std::net::TcpListener::bind(("0.0.0.0", port))?)
        })();
        let listener = match bound {
            Ok(l) => {
                let _ = tx.send(Ok(()));
                l
            }
            Err(e) => {
                let _ = tx.send(Err(e));
                return;
            }
        };
        for conn in listener.incoming().flatten() {
            let config = config.clone();
            std::thread::spawn(move || -> Result<()> {
                let tls = rustls::ServerConnection::new(config)?;
                let mut stream = rustls::StreamOwned::new(tls, conn);
                let mut reader = std::io::BufReader::new(&mut stream);
                let mut request_line = String::new();
                reader.read_line(&mut request_line)?;
                // The headers, up to the blank line (or the end).
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line)? <= 2 {
                        break;
                    }
                }
                drop(reader);
                let path = request_line.split_whitespace().nth(1).unwrap_or("?");
                let body = format!("tls-app {path}");
                write!(
                    stream,
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                )?;
                stream.flush()?;
                stream.conn.send_close_notify();
                stream.flush()?;
                Ok(())
            });
        }
    });
    rx.recv()?
}
