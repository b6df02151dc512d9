//! TLS termination on a gateway's HTTPS ports (Istio Gateway servers with
//! `tls.mode` SIMPLE or MUTUAL and a `credentialName`, or ISTIO_MUTUAL:
//! mesh mTLS with the gateway's own workload certificate, as sidecars reach
//! an egress gateway).
//!
//! Every server on the port gets its own rustls config, because a MUTUAL
//! server verifies clients against its own CA and rustls picks the client
//! verifier per config, not per certificate. The ClientHello is read first
//! and its SNI chooses the server, as Envoy's filter chain match does: an
//! exact name, else the longest wildcard, else a `*` server; no match and the
//! handshake is refused.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tokio::net::TcpStream;
use tokio_rustls::LazyConfigAcceptor;
use tokio_rustls::server::TlsStream;
use wire::pb;

use super::{MeshTls, PeerIdentity};

/// A client that has not finished its handshake by then is dropped, so that
/// idle connections cannot pile up on a public port.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What a gateway HTTPS port serves: one entry per Gateway server.
pub struct GatewayTls {
    servers: Vec<Server>,
    /// What it was built from, so that an unchanged config compares equal.
    source: Vec<pb::GatewayTls>,
}

struct Server {
    /// Lowercase; `*.example.com` wildcards; `*` (or none) matches anything.
    names: Vec<String>,
    config: Arc<ServerConfig>,
    /// ISTIO_MUTUAL: the client is a mesh workload; its SPIFFE id is the
    /// request's source principal.
    mesh: bool,
    /// Routes only this server's hosts; empty: the listener's.
    route_config: Arc<str>,
}

impl PartialEq for GatewayTls {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl Eq for GatewayTls {}

// Never the key: only what an operator needs to tell servers apart.
impl fmt::Debug for GatewayTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<_> = self.servers.iter().map(|s| &s.names).collect();
        f.debug_struct("GatewayTls")
            .field("servers", &names)
            .finish()
    }
}

impl GatewayTls {
    /// `Err` names the server (by its first SNI name) and what is wrong.
    /// `mesh`: this proxy's workload identity, for ISTIO_MUTUAL servers.
    pub fn new(entries: &[pb::GatewayTls], mesh: Option<&Arc<MeshTls>>) -> Result<Self, String> {
        let servers = entries
            .iter()
            .enumerate()
            .map(|(i, e)| {
                let label = e.sni.first().map_or_else(|| format!("#{i}"), Clone::clone);
                let built = if e.istio_mutual {
                    mesh_server(e, mesh)
                } else {
                    server(e)
                };
                built.map_err(|why| format!("gateway_tls[{i}] ({label}): {why}"))
            })
            .collect::<Result<_, _>>()?;
        Ok(GatewayTls {
            servers,
            source: entries.to_vec(),
        })
    }

    /// The server for a ClientHello's SNI (`None`: the client sent none).
    fn select(&self, sni: Option<&str>) -> Option<&Server> {
        let sni = sni.map(str::to_ascii_lowercase);
        let any = |s: &&Server| s.names.is_empty() || s.names.iter().any(|n| n == "*");
        let Some(sni) = sni else {
            return self.servers.iter().find(any);
        };
        if let Some(s) = self.servers.iter().find(|s| s.names.contains(&sni)) {
            return Some(s);
        }
        let wildcard = self
            .servers
            .iter()
            .flat_map(|s| s.names.iter().map(move |n| (n, s)))
            .filter_map(|(n, s)| {
                let suffix = n.strip_prefix('*')?;
                (suffix.starts_with('.') && sni.ends_with(suffix) && sni.len() > suffix.len())
                    .then_some((suffix.len(), s))
            })
            .max_by_key(|(len, _)| *len);
        match wildcard {
            Some((_, s)) => Some(s),
            None => self.servers.iter().find(any),
        }
    }

    /// Terminates TLS on `stream`: the stream, the SNI and the route config
    /// of the server it chose. `None` (already logged) if the handshake
    /// failed, timed out or named no server of this port.
    pub async fn accept(&self, stream: TcpStream, peer: std::net::SocketAddr) -> Option<Accepted> {
        let handshake = async {
            let start = LazyConfigAcceptor::new(rustls::server::Acceptor::default(), stream)
                .await
                .map_err(|e| format!("reading the ClientHello: {e}"))?;
            let sni: Option<Arc<str>> = start.client_hello().server_name().map(Arc::from);
            let server = self
                .select(sni.as_deref())
                .ok_or_else(|| format!("no server on this port for SNI {sni:?}"))?;
            let stream = start
                .into_stream(server.config.clone())
                .await
                .map_err(|e| format!("handshake: {e}"))?;
            let identity = if server.mesh {
                // The mesh verifier accepted the chain; the SPIFFE id is required.
                let id = identity::peer_identity(stream.get_ref().1)
                    .map_err(|e| format!("mesh client identity: {e}"))?;
                Some(Arc::new(id))
            } else {
                None
            };
            Ok::<_, String>(Accepted {
                stream,
                sni,
                route_config: server.route_config.clone(),
                identity,
            })
        };
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
            Ok(Ok(done)) => Some(done),
            Ok(Err(why)) => {
                tracing::debug!(%peer, "gateway TLS connection refused: {why}");
                None
            }
            Err(_) => {
                tracing::debug!(%peer, "gateway TLS handshake timed out");
                None
            }
        }
    }
}

pub struct Accepted {
    pub stream: TlsStream<TcpStream>,
    pub sni: Option<Arc<str>>,
    pub route_config: Arc<str>,
    /// ISTIO_MUTUAL: the mesh client's verified identity.
    pub identity: Option<Arc<PeerIdentity>>,
}

/// An ISTIO_MUTUAL server: the proxy's mesh server config (its rotating
/// workload certificate; client certificates from the mesh roots required).
/// Versions and cipher suites are the mesh's, as Envoy's ISTIO_MUTUAL
/// filter chains use the mesh TLS context.
fn mesh_server(e: &pb::GatewayTls, mesh: Option<&Arc<MeshTls>>) -> Result<Server, String> {
    let mesh = mesh.ok_or("tls mode ISTIO_MUTUAL, but this gateway has no workload certificate")?;
    Ok(Server {
        names: e.sni.iter().map(|n| n.to_ascii_lowercase()).collect(),
        config: mesh.server_config(true),
        mesh: true,
        route_config: e.route_config.as_str().into(),
    })
}

fn server(e: &pb::GatewayTls) -> Result<Server, String> {
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(e.cert_chain.as_bytes())
            .collect::<Result<_, _>>()
            .map_err(|err| format!("cert_chain is not PEM: {err}"))?;
    if chain.is_empty() {
        return Err("cert_chain holds no certificate".into());
    }
    // The parse error of a key could quote it; say only what failed.
    let key = PrivateKeyDer::from_pem_slice(e.private_key.as_bytes())
        .map_err(|_| "private_key is not a PEM private key".to_string())?;
    let provider = with_cipher_suites(identity::crypto_provider(), &e.cipher_suites)?;
    let versions = protocol_versions(&e.min_protocol_version, &e.max_protocol_version)?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions)
        .map_err(|err| err.to_string())?;
    let builder = if e.client_ca.is_empty() {
        builder.with_no_client_auth()
    } else {
        let mut roots = RootCertStore::empty();
        for ca in CertificateDer::pem_slice_iter(e.client_ca.as_bytes()) {
            let ca = ca.map_err(|err| format!("client_ca is not PEM: {err}"))?;
            roots.add(ca).map_err(|err| format!("client_ca: {err}"))?;
        }
        if roots.is_empty() {
            return Err("client_ca holds no certificate".into());
        }
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .map_err(|err| format!("client_ca: {err}"))?;
        builder.with_client_cert_verifier(verifier)
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|err| format!("certificate and key: {err}"))?;
    config.alpn_protocols = vec![identity::ALPN_H2.to_vec(), identity::ALPN_HTTP11.to_vec()];
    Ok(Server {
        names: e.sni.iter().map(|n| n.to_ascii_lowercase()).collect(),
        config: Arc::new(config),
        mesh: false,
        route_config: e.route_config.as_str().into(),
    })
}

/// The TLS versions between Istio's min and max ("TLSV1_2", "TLSV1_3"; empty: no bound).
fn protocol_versions(
    min: &str,
    max: &str,
) -> Result<Vec<&'static rustls::SupportedProtocolVersion>, String> {
    let rank = |v: &str, what: &str| match v {
        "" => Ok(None),
        "TLSV1_2" => Ok(Some(2)),
        "TLSV1_3" => Ok(Some(3)),
        other => Err(format!("{what} {other:?} is not TLSV1_2 or TLSV1_3")),
    };
    let (min, max) = (
        rank(min, "min_protocol_version")?.unwrap_or(2),
        rank(max, "max_protocol_version")?.unwrap_or(3),
    );
    let versions: Vec<_> = [(3, &rustls::version::TLS13), (2, &rustls::version::TLS12)]
        .into_iter()
        .filter(|(r, _)| (min..=max).contains(r))
        .map(|(_, v)| v)
        .collect();
    if versions.is_empty() {
        return Err("min_protocol_version is above max_protocol_version".into());
    }
    Ok(versions)
}

/// The provider with only the TLS 1.2 suites Istio's `cipherSuites` names
/// (OpenSSL names); TLS 1.3's are kept, as Envoy keeps them. Empty: all.
fn with_cipher_suites(
    provider: Arc<rustls::crypto::CryptoProvider>,
    names: &[String],
) -> Result<Arc<rustls::crypto::CryptoProvider>, String> {
    use rustls::CipherSuite as C;
    if names.is_empty() {
        return Ok(provider);
    }
    let wanted: Vec<C> = names
        .iter()
        .filter_map(|n| {
            let suite = match n.as_str() {
                "ECDHE-ECDSA-AES128-GCM-SHA256" => C::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
                "ECDHE-RSA-AES128-GCM-SHA256" => C::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
                "ECDHE-ECDSA-AES256-GCM-SHA384" => C::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
                "ECDHE-RSA-AES256-GCM-SHA384" => C::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
                "ECDHE-ECDSA-CHACHA20-POLY1305" => C::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
                "ECDHE-RSA-CHACHA20-POLY1305" => C::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
                other => {
                    // As Envoy, a suite it cannot offer is left out, not fatal.
                    tracing::warn!(cipher_suite = other, "cipher suite not supported; left out");
                    return None;
                }
            };
            Some(suite)
        })
        .collect();
    let mut p = (*provider).clone();
    p.cipher_suites.retain(|s| match s {
        rustls::SupportedCipherSuite::Tls13(_) => true,
        rustls::SupportedCipherSuite::Tls12(_) => wanted.contains(&s.suite()),
    });
    if !p
        .cipher_suites
        .iter()
        .any(|s| matches!(s, rustls::SupportedCipherSuite::Tls12(_)))
    {
        return Err(format!(
            "cipher_suites {names:?}: none of them is supported"
        ));
    }
    Ok(Arc::new(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(names: &[&str]) -> pb::GatewayTls {
        let key = rcgen::KeyPair::generate().expect("key");
        let params = rcgen::CertificateParams::new(vec!["x.test".to_string()]).expect("params");
        let cert = params.self_signed(&key).expect("cert");
        pb::GatewayTls {
            sni: names.iter().map(|s| s.to_string()).collect(),
            cert_chain: cert.pem(),
            private_key: key.serialize_pem(),
            client_ca: String::new(),
            route_config: String::new(),
            ..Default::default()
        }
    }

    #[test]
    fn versions_and_cipher_suites_restrict_the_handshake() {
        let v = |min: &str, max: &str| {
            protocol_versions(min, max).map(|v| v.iter().map(|v| v.version).collect::<Vec<_>>())
        };
        assert_eq!(
            v("", ""),
            Ok(vec![
                rustls::ProtocolVersion::TLSv1_3,
                rustls::ProtocolVersion::TLSv1_2
            ])
        );
        assert_eq!(v("TLSV1_3", ""), Ok(vec![rustls::ProtocolVersion::TLSv1_3]));
        assert_eq!(v("", "TLSV1_2"), Ok(vec![rustls::ProtocolVersion::TLSv1_2]));
        assert!(v("TLSV1_3", "TLSV1_2").is_err());
        let p = with_cipher_suites(
            identity::crypto_provider(),
            &["ECDHE-ECDSA-AES256-GCM-SHA384".into(), "RC4-MD5".into()],
        )
        .expect("one is supported");
        let tls12: Vec<_> = p
            .cipher_suites
            .iter()
            .filter(|s| matches!(s, rustls::SupportedCipherSuite::Tls12(_)))
            .map(|s| s.suite())
            .collect();
        assert_eq!(
            tls12,
            [rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384]
        );
        assert!(with_cipher_suites(identity::crypto_provider(), &["RC4-MD5".into()]).is_err());
        let mut e = entry(&["a.test"]);
        e.min_protocol_version = "TLSV1_3".into();
        assert!(GatewayTls::new(&[e], None).is_ok());
    }

    fn picked(tls: &GatewayTls, sni: Option<&str>) -> Option<String> {
        tls.select(sni).map(|s| s.names.join(","))
    }

    #[test]
    fn sni_picks_exact_then_longest_wildcard_then_catch_all() {
        let tls = GatewayTls::new(
            &[
                entry(&["*.example.com"]),
                entry(&["*.api.example.com"]),
                entry(&["bookinfo.example.com"]),
            ],
            None,
        )
        .expect("config");
        assert_eq!(
            picked(&tls, Some("Bookinfo.Example.com")).as_deref(),
            Some("bookinfo.example.com")
        );
        assert_eq!(
            picked(&tls, Some("v1.api.example.com")).as_deref(),
            Some("*.api.example.com")
        );
        assert_eq!(
            picked(&tls, Some("other.example.com")).as_deref(),
            Some("*.example.com")
        );
        assert_eq!(picked(&tls, Some("example.com")), None);
        assert_eq!(picked(&tls, None), None);
        let any = GatewayTls::new(&[entry(&["a.test"]), entry(&["*"])], None).expect("config");
        assert_eq!(picked(&any, Some("b.test")).as_deref(), Some("*"));
        assert_eq!(picked(&any, None).as_deref(), Some("*"));
    }

    #[test]
    fn bad_pem_is_named_and_the_key_never_quoted() {
        let mut e = entry(&["a.test"]);
        e.private_key =
            "-----BEGIN PRIVATE KEY-----\nsecretbytes\n-----END PRIVATE KEY-----\n".into();
        let err = GatewayTls::new(&[e], None).expect_err("bad key");
        assert!(err.contains("gateway_tls[0] (a.test)"), "{err}");
        assert!(!err.contains("secretbytes"), "{err}");
        let mut e = entry(&["a.test"]);
        e.cert_chain = "not pem".into();
        assert!(
            GatewayTls::new(&[e], None)
                .expect_err("no cert")
                .contains("no certificate")
        );
    }

    #[test]
    fn debug_shows_no_key() {
        let e = entry(&["a.test"]);
        let key = e.private_key.clone();
        let tls = GatewayTls::new(std::slice::from_ref(&e), None).expect("config");
        assert!(!format!("{tls:?}").contains(&key[30..60]));
        assert!(!format!("{e:?}").contains(&key[30..60]));
        let json = serde_json::to_string(&e).expect("json");
        assert!(
            json.contains("[redacted]") && !json.contains(&key[30..60]),
            "{json}"
        );
    }

    #[test]
    fn istio_mutual_needs_the_workload_certificate_and_uses_the_mesh_config() {
        let e = pb::GatewayTls {
            sni: vec!["edition.example.test".into()],
            istio_mutual: true,
            ..Default::default()
        };
        let err = GatewayTls::new(std::slice::from_ref(&e), None).expect_err("no identity");
        assert!(
            err.contains("ISTIO_MUTUAL") && err.contains("edition.example.test"),
            "{err}"
        );
        let ca = crate::tls::testing::TestCa::new();
        let mesh = ca.mesh_tls("istio-egressgateway");
        let tls = GatewayTls::new(&[e], Some(&mesh)).expect("config");
        let server = tls.select(Some("edition.example.test")).expect("server");
        assert!(server.mesh);
        assert!(Arc::ptr_eq(&server.config, &mesh.server_config(true)));
    }
}
