//! Inbound capture: a server that knows nothing of the mesh is protected
//! by its sidecar (STRICT refuses plaintext from another namespace),
//! excluded ports bypass it, and ports no Service names are passed through
//! under PeerAuthentication to the pod's address.

use std::path::Path;

use anyhow::{Result, ensure};

use super::lab::run;
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
    let (cert, key) = mesh_client_cert(&ca_dir, "spiffe://cluster.local/ns/default/sa/c")?;
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
