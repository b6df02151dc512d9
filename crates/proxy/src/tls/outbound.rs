//! How connections to an upstream endpoint are secured, from the cluster's
//! TLS mode (DestinationRule `trafficPolicy.tls`, resolved by the control plane):
//! - AUTO (auto mTLS): mesh mTLS to endpoints that have a sidecar, plaintext
//!   to the others, as Istio's `enableAutoMtls`;
//! - ISTIO_MUTUAL: mesh mTLS to every endpoint;
//! - SIMPLE / MUTUAL: TLS origination with the system's or the given roots
//!   (and, for MUTUAL, a client certificate from files);
//! - DISABLE: plaintext.
//!
//! Mesh mTLS checks secure naming: the server must present the SPIFFE id the
//! control plane listed for that endpoint (or the rule's `subjectAltNames`).
//! The decision is made once per endpoint when the config is built; a connect
//! only does the handshake. Mesh client configs are made on first connect and
//! shared by every endpoint with the same identity (`MeshTls::client_config`):
//! a proxy with thousands of services it never calls holds no TLS state for them.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use http::uri::Authority;
use identity::SpiffeId;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use wire::pb;

use super::MeshTls;
use super::io::{MaybeTls, UpstreamIo};
use crate::failure::Failure;

/// How long a TLS handshake with an upstream may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Where Debian, Fedora and Alpine keep the system's CA bundle, for SIMPLE
/// TLS without `caCertificates`.
const SYSTEM_CA_BUNDLES: [&str; 3] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
];

/// How to secure connections to one endpoint.
pub enum Upstream {
    /// Mesh mTLS with secure naming: the peer must prove to be `expected`.
    Mesh {
        mesh: Arc<MeshTls>,
        expected: SpiffeId,
        server_name: ServerName<'static>,
    },
    /// TLS origination (SIMPLE, MUTUAL).
    Tls {
        http1: Arc<ClientConfig>,
        http2: Arc<ClientConfig>,
        server_name: ServerName<'static>,
        /// What the server must prove, for logs ("spiffe://…", "SIMPLE api.example.com").
        expect: String,
    },
    /// The mode asks for what this endpoint or proxy cannot do (mesh mTLS
    /// without a certificate or an identity to expect): every connect fails.
    Refuse(String),
}

impl fmt::Debug for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Upstream::Mesh { expected, .. } => write!(f, "Mesh({expected})"),
            Upstream::Tls { expect, .. } => write!(f, "Tls({expect})"),
            Upstream::Refuse(reason) => write!(f, "Refuse({reason})"),
        }
    }
}

/// A cluster's TLS setting, ready to be applied per endpoint.
pub enum ClusterTls {
    Plain,
    Auto(Arc<MeshTls>),
    IstioMutual {
        mesh: Option<Arc<MeshTls>>,
        /// `subjectAltNames`: accepted instead of each endpoint's own identity.
        sans: Vec<SpiffeId>,
        sni: Option<ServerName<'static>>,
    },
    /// SIMPLE and MUTUAL: the same for every endpoint.
    Origination(Arc<Upstream>),
}

impl ClusterTls {
    /// Reads the cluster's mode. SIMPLE and MUTUAL settings that cannot be
    /// loaded make a cluster that refuses every connection; an ISTIO_MUTUAL
    /// SAN that is no SPIFFE id is an error, so the config is NACKed.
    pub fn new(spec: &pb::Cluster, mesh: Option<&Arc<MeshTls>>) -> Result<Self, String> {
        let tls = spec.tls.clone().unwrap_or_default();
        let mode = pb::UpstreamTlsMode::try_from(tls.mode)
            .map_err(|_| format!("tls: unknown mode {}", tls.mode))?;
        match mode {
            pb::UpstreamTlsMode::Disable => Ok(ClusterTls::Plain),
            // A proxy without a certificate (static config) cannot do mesh
            // mTLS; auto mTLS then falls back to plaintext, as to a pod without sidecar.
            pb::UpstreamTlsMode::Auto => {
                Ok(mesh.map_or(ClusterTls::Plain, |m| ClusterTls::Auto(m.clone())))
            }
            pb::UpstreamTlsMode::IstioMutual => {
                let sans = tls
                    .subject_alt_names
                    .iter()
                    .map(|s| {
                        s.parse::<SpiffeId>()
                            .map_err(|e| format!("tls.subject_alt_names: {e}"))
                    })
                    .collect::<Result<_, _>>()?;
                let sni = (!tls.sni.is_empty())
                    .then(|| server_name(&tls.sni))
                    .transpose()?;
                Ok(ClusterTls::IstioMutual {
                    mesh: mesh.cloned(),
                    sans,
                    sni,
                })
            }
            pb::UpstreamTlsMode::Simple | pb::UpstreamTlsMode::Mutual => {
                let mutual = mode == pb::UpstreamTlsMode::Mutual;
                // Settings that cannot be loaded (a file unreadable, a Secret
                // missing) fail this cluster alone, as Envoy's cluster warming
                // does: its connections are refused saying why, the rest of
                // the config applies.
                let upstream = origination(spec, &tls, mutual).unwrap_or_else(|why| {
                    let why = match tls.destination_rule.as_str() {
                        "" => why,
                        dr => format!("DestinationRule {dr}: {why}"),
                    };
                    tracing::warn!(cluster = %spec.name, reason = %why, "cluster TLS settings cannot be loaded; its requests fail");
                    Upstream::Refuse(why)
                });
                Ok(ClusterTls::Origination(Arc::new(upstream)))
            }
        }
    }

    /// How to secure connections to each of `eps`; `None`: plaintext.
    /// Endpoints with the same identity share one setting.
    pub fn for_endpoints(
        &self,
        spec: &pb::Cluster,
        eps: &[pb::Endpoint],
    ) -> Vec<Option<Arc<Upstream>>> {
        let mut by_identity: HashMap<(&str, bool), Option<Arc<Upstream>>> = HashMap::new();
        eps.iter()
            .map(|ep| {
                by_identity
                    .entry((&ep.identity, ep.has_sidecar))
                    .or_insert_with(|| self.for_endpoint(spec, ep))
                    .clone()
            })
            .collect()
    }

    fn for_endpoint(&self, spec: &pb::Cluster, ep: &pb::Endpoint) -> Option<Arc<Upstream>> {
        match self {
            ClusterTls::Plain => None,
            ClusterTls::Auto(mesh) => {
                // Istio's auto mTLS: only a destination with a sidecar can answer mTLS.
                if !ep.has_sidecar {
                    return None;
                }
                Some(Arc::new(mesh_upstream(mesh, spec, ep, &[], None)))
            }
            ClusterTls::IstioMutual { mesh, sans, sni } => Some(Arc::new(match mesh {
                Some(mesh) => mesh_upstream(mesh, spec, ep, sans, sni.clone()),
                None => Upstream::Refuse(
                    "tls mode ISTIO_MUTUAL, but this proxy has no workload certificate".into(),
                ),
            })),
            ClusterTls::Origination(up) => Some(up.clone()),
        }
    }
}

fn mesh_upstream(
    mesh: &Arc<MeshTls>,
    spec: &pb::Cluster,
    ep: &pb::Endpoint,
    sans: &[SpiffeId],
    sni: Option<ServerName<'static>>,
) -> Upstream {
    let expected = match sans.first() {
        // identity's client config takes one expected id per config; the
        // rule's first SAN is the one checked (Istio lists the service's one).
        Some(san) => san.clone(),
        None => match ep.identity.parse::<SpiffeId>() {
            Ok(id) => id,
            Err(e) => {
                return Upstream::Refuse(format!(
                    "mesh mTLS to {}:{}, but the endpoint has no usable identity ({e}): secure naming is impossible",
                    ep.address, ep.port
                ));
            }
        },
    };
    Upstream::Mesh {
        mesh: mesh.clone(),
        expected,
        server_name: sni.unwrap_or_else(|| mesh_sni(spec)),
    }
}

/// Istio's SNI for mesh mTLS: `outbound_.<port>_.<subset>_.<host>`.
#[allow(
    clippy::expect_used,
    reason = "the last fallback is a literal valid DNS name"
)]
fn mesh_sni(spec: &pb::Cluster) -> ServerName<'static> {
    let sni = format!("outbound_.{}_.{}_.{}", spec.port, spec.subset, spec.service);
    server_name(&sni)
        .or_else(|_| server_name(&spec.service))
        .unwrap_or_else(|_| ServerName::try_from("mesh.invalid").expect("a valid DNS name"))
}

fn server_name(name: &str) -> Result<ServerName<'static>, String> {
    ServerName::try_from(name.to_string())
        .map_err(|e| format!("tls.sni: {name:?} is not a valid server name: {e}"))
}

/// SIMPLE (server verified against `ca_certificates` or the system's roots)
/// and MUTUAL (and a client certificate from files).
fn origination(
    spec: &pb::Cluster,
    tls: &pb::UpstreamTls,
    mutual: bool,
) -> Result<Upstream, String> {
    if !tls.credential_error.is_empty() {
        // The control plane could not resolve credentialName: refuse rather
        // than verify against some other roots.
        return Err(tls.credential_error.clone());
    }
    let provider = identity::crypto_provider();
    let host = if tls.sni.is_empty() {
        spec.service.as_str()
    } else {
        tls.sni.as_str()
    };
    let sni = server_name(host)?;
    let mut roots = RootCertStore::empty();
    let (ca_certs, ca_source) = if !tls.ca_certificates_pem.is_empty() {
        (
            pem_certs(&tls.ca_certificates_pem, "ca_certificates_pem")?,
            "the credentialName Secret's CA".to_string(),
        )
    } else {
        let ca_path = if tls.ca_certificates.is_empty() {
            SYSTEM_CA_BUNDLES
                .iter()
                .map(Path::new)
                .find(|p| p.is_file())
                .ok_or("tls: no caCertificates given and no system CA bundle found")?
        } else {
            Path::new(&tls.ca_certificates)
        };
        (read_certs(ca_path)?, ca_path.display().to_string())
    };
    let (added, _) = roots.add_parsable_certificates(ca_certs);
    if added == 0 {
        return Err(format!(
            "tls.ca_certificates: {ca_source} holds no usable certificate"
        ));
    }
    let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| format!("tls: {e}"))?;
    let names = tls
        .subject_alt_names
        .iter()
        .map(|n| server_name(n))
        .collect::<Result<Vec<_>, _>>()?;
    let verifier = Arc::new(NamesVerifier {
        inner: webpki,
        names,
        skip: tls.insecure_skip_verify,
    });
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("tls: {e}"))?
        .dangerous()
        // Custom only to check `subjectAltNames` instead of the SNI name; the
        // chain is verified by webpki unless insecureSkipVerify says otherwise.
        .with_custom_certificate_verifier(verifier);
    let config = if mutual {
        let (certs, key) = if !tls.client_certificate_pem.is_empty() {
            let key = PrivateKeyDer::from_pem_slice(tls.private_key_pem.as_bytes())
                // Never the parse error: it could quote the key.
                .map_err(|_| "tls.private_key_pem is not a PEM private key".to_string())?;
            (
                pem_certs(&tls.client_certificate_pem, "client_certificate_pem")?,
                key,
            )
        } else {
            if tls.client_certificate.is_empty() || tls.private_key.is_empty() {
                return Err("tls mode MUTUAL needs clientCertificate and privateKey".into());
            }
            let certs = read_certs(Path::new(&tls.client_certificate))?;
            let key = PrivateKeyDer::from_pem_file(&tls.private_key)
                // The path only: the key's bytes must never reach a log.
                .map_err(|e| format!("tls.private_key: {}: {e}", tls.private_key))?;
            (certs, key)
        };
        builder
            .with_client_auth_cert(certs, key)
            .map_err(|e| format!("tls.client_certificate: {e}"))?
    } else {
        builder.with_no_client_auth()
    };
    let mut http2 = config.clone();
    http2.alpn_protocols = vec![identity::ALPN_H2.to_vec()];
    Ok(Upstream::Tls {
        http1: Arc::new(config),
        http2: Arc::new(http2),
        server_name: sni,
        expect: format!("{} {host}", if mutual { "MUTUAL" } else { "SIMPLE" }),
    })
}

fn pem_certs(pem: &str, what: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("tls.{what}: {e}"))
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// webpki verification against any of `names` (the SNI name when empty), or
/// none at all with `insecureSkipVerify` (handshake signatures still checked).
#[derive(Debug)]
struct NamesVerifier {
    inner: Arc<WebPkiServerVerifier>,
    names: Vec<ServerName<'static>>,
    skip: bool,
}

impl ServerCertVerifier for NamesVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if self.skip {
            return Ok(ServerCertVerified::assertion());
        }
        if self.names.is_empty() {
            return self.inner.verify_server_cert(
                end_entity,
                intermediates,
                server_name,
                ocsp,
                now,
            );
        }
        let mut last = rustls::Error::General("no subject alt name to check".into());
        for name in &self.names {
            match self
                .inner
                .verify_server_cert(end_entity, intermediates, name, ocsp, now)
            {
                Ok(v) => return Ok(v),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Secures a freshly connected `stream` to `authority` as `upstream` says.
pub async fn secure(
    stream: TcpStream,
    authority: &Authority,
    upstream: Option<&Upstream>,
    http2: bool,
) -> Result<UpstreamIo, Failure> {
    let (config, server_name, expect): (_, _, &(dyn fmt::Display + Sync)) = match upstream {
        None => return Ok(MaybeTls::Plain(stream)),
        Some(Upstream::Refuse(reason)) => {
            tracing::warn!(%authority, reason, "upstream connection not attempted");
            return Err(Failure::Connect);
        }
        Some(Upstream::Mesh {
            mesh,
            expected,
            server_name,
        }) => match mesh.client_config(expected, http2) {
            Ok(config) => (config, server_name, expected),
            Err(e) => {
                tracing::warn!(%authority, expected = %expected, reason = %e, "upstream connection not attempted");
                return Err(Failure::Connect);
            }
        },
        Some(Upstream::Tls {
            http1,
            http2: h2,
            server_name,
            expect,
        }) => (
            (if http2 { h2 } else { http1 }).clone(),
            server_name,
            expect,
        ),
    };
    let connector = TlsConnector::from(config);
    match tokio::time::timeout(
        HANDSHAKE_TIMEOUT,
        connector.connect(server_name.clone(), stream),
    )
    .await
    {
        Ok(Ok(tls)) => Ok(MaybeTls::Tls(Box::new(tls))),
        Ok(Err(e)) => {
            let reason = identity::handshake_failure_reason(&e);
            tracing::warn!(%authority, expected = %expect, reason, "upstream TLS handshake failed");
            Err(Failure::Connect)
        }
        Err(_) => {
            tracing::warn!(%authority, expected = %expect, "upstream TLS handshake timed out");
            Err(Failure::Connect)
        }
    }
}

/// Secures a raw TCP connection (a captured TCP stream to a mesh
/// endpoint): as [`secure`], but a mesh peer is offered no HTTP by ALPN.
pub async fn secure_tcp(
    stream: TcpStream,
    authority: &Authority,
    upstream: Option<&Upstream>,
) -> Result<UpstreamIo, Failure> {
    let Some(Upstream::Mesh {
        mesh,
        expected,
        server_name,
    }) = upstream
    else {
        return secure(stream, authority, upstream, false).await;
    };
    let config = match mesh.tcp_client_config(expected) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(%authority, expected = %expected, reason = %e, "upstream connection not attempted");
            return Err(Failure::Connect);
        }
    };
    match tokio::time::timeout(
        HANDSHAKE_TIMEOUT,
        TlsConnector::from(config).connect(server_name.clone(), stream),
    )
    .await
    {
        Ok(Ok(tls)) => Ok(MaybeTls::Tls(Box::new(tls))),
        Ok(Err(e)) => {
            let reason = identity::handshake_failure_reason(&e);
            tracing::warn!(%authority, expected = %expected, reason, "upstream TLS handshake failed");
            Err(Failure::Connect)
        }
        Err(_) => {
            tracing::warn!(%authority, expected = %expected, "upstream TLS handshake timed out");
            Err(Failure::Connect)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::testing::TestCa;

    fn cluster(mode: pb::UpstreamTlsMode) -> pb::Cluster {
        pb::Cluster {
            name: "outbound|8080||b.default.svc.cluster.local".into(),
            service: "b.default.svc.cluster.local".into(),
            port: 8080,
            tls: Some(pb::UpstreamTls {
                mode: mode as i32,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn endpoint(has_sidecar: bool) -> pb::Endpoint {
        pb::Endpoint {
            address: "127.0.0.1".into(),
            port: 8080,
            identity: "spiffe://cluster.local/ns/default/sa/b".into(),
            has_sidecar,
            ..Default::default()
        }
    }

    /// What each mode does per endpoint, with and without a proxy certificate.
    #[test]
    fn tls_choice_per_mode_and_endpoint() {
        let ca = TestCa::new();
        let mesh = ca.mesh_tls("a");
        use pb::UpstreamTlsMode::*;
        let kind = |up: Option<Arc<Upstream>>| match up.as_deref() {
            None => "plain".to_string(),
            Some(Upstream::Mesh { expected, .. }) => format!("mesh {expected}"),
            Some(Upstream::Tls { expect, .. }) => format!("tls {expect}"),
            Some(Upstream::Refuse(_)) => "refuse".to_string(),
        };
        let b = "mesh spiffe://cluster.local/ns/default/sa/b";
        let cases = [
            (Auto, true, true, b),
            (Auto, false, true, "plain"),
            (Auto, true, false, "plain"),
            (Disable, true, true, "plain"),
            (IstioMutual, false, true, b),
            (IstioMutual, true, false, "refuse"),
        ];
        for (mode, sidecar, with_cert, want) in cases {
            let spec = cluster(mode);
            let m = with_cert.then_some(&mesh);
            let tls = ClusterTls::new(&spec, m).expect("valid");
            assert_eq!(
                kind(tls.for_endpoints(&spec, &[endpoint(sidecar)]).remove(0)),
                want,
                "{mode:?} sidecar={sidecar} cert={with_cert}"
            );
        }
        // No identity to check: refused rather than "anyone in the mesh".
        let spec = cluster(IstioMutual);
        let tls = ClusterTls::new(&spec, Some(&mesh)).expect("valid");
        let anonymous = pb::Endpoint {
            identity: String::new(),
            ..endpoint(true)
        };
        assert_eq!(
            kind(tls.for_endpoints(&spec, &[anonymous]).remove(0)),
            "refuse"
        );
    }

    #[test]
    fn origination_with_unreadable_files_fails_the_cluster_alone() {
        let refusal = |spec: &pb::Cluster| {
            let tls = ClusterTls::new(spec, None).expect("a cluster, not a NACK");
            match tls
                .for_endpoints(spec, &[endpoint(false)])
                .remove(0)
                .as_deref()
            {
                Some(Upstream::Refuse(why)) => why.clone(),
                other => panic!("not refused: {other:?}"),
            }
        };
        for mode in [pb::UpstreamTlsMode::Simple, pb::UpstreamTlsMode::Mutual] {
            let mut spec = cluster(mode);
            if let Some(t) = spec.tls.as_mut() {
                t.ca_certificates = "/nonexistent/ca.pem".into();
                t.destination_rule = "shop/external-tls".into();
            }
            let why = refusal(&spec);
            assert!(
                why.starts_with("DestinationRule shop/external-tls: ")
                    && why.contains("/nonexistent/ca.pem"),
                "{why}"
            );
        }
        let mut spec = cluster(pb::UpstreamTlsMode::Simple);
        if let Some(t) = spec.tls.as_mut() {
            t.credential_error = "tls.credentialName api-creds: no such Secret".into();
        }
        assert_eq!(
            refusal(&spec),
            "tls.credentialName api-creds: no such Secret"
        );
    }
}
