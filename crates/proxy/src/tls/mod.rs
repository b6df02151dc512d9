//! Mesh mTLS in the proxy.
//!
//! - [`workload`]: obtaining the workload certificate from the control plane's
//!   CA and keeping it fresh;
//! - [`inbound`]: what an inbound port accepts (PeerAuthentication's mode),
//!   terminating mesh TLS and exposing the peer's identity to the request path;
//! - [`outbound`]: how connections to an upstream endpoint are secured (auto
//!   mTLS with secure naming, DestinationRule `tls`);
//! - [`static_files`]: the workload certificate from files instead (no CA).
//!
//! [`MeshTls`] is this proxy's identity at run time: the certificate manager
//! (whose current certificate every new handshake presents) and the mesh
//! roots (read per handshake), so rotation needs no rebuild of anything here.

pub mod gateway;
pub mod inbound;
pub mod io;
pub mod outbound;
pub mod static_files;
pub mod workload;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use identity::{CertInfo, CertManager, ClientAuth, SpiffeId, TrustBundle};
use rustls::{ClientConfig, ServerConfig};

pub use identity::PeerIdentity;

/// Cached client configs beyond this many are dropped and rebuilt on demand:
/// identities that left the mesh must not pile up forever.
const MAX_CACHED_CLIENT_CONFIGS: usize = 1024;

/// This proxy's mesh identity and the TLS configs made from it.
pub struct MeshTls {
    certs: Arc<CertManager>,
    roots: TrustBundle,
    strict: Arc<ServerConfig>,
    permissive: Arc<ServerConfig>,
    /// Per (expected peer identity, HTTP/2): configs are cheap to share and
    /// many endpoints have the same identity.
    /// By peer and ALPN offer: HTTP/1.1 (0), HTTP/2 (1), raw TCP (2).
    clients: Mutex<HashMap<(SpiffeId, u8), Arc<ClientConfig>>>,
}

/// The ALPN id a mesh client offers besides its HTTP version, as Istio's
/// sidecars mark their mTLS: it tells a mesh handshake from other TLS.
pub const ALPN_MESH: &[u8] = b"istio";

impl MeshTls {
    pub fn new(certs: Arc<CertManager>, roots: TrustBundle) -> Result<Self, identity::TlsError> {
        // Besides HTTP, the mesh ALPN alone: what a mesh client's raw TCP
        // offers (without it the handshake would end in NoApplicationProtocol).
        let server = |auth| {
            identity::server_config(certs.clone(), &roots, auth).map(|mut config| {
                config.alpn_protocols.push(ALPN_MESH.to_vec());
                Arc::new(config)
            })
        };
        Ok(MeshTls {
            strict: server(ClientAuth::Required)?,
            permissive: server(ClientAuth::Optional)?,
            certs,
            roots,
            clients: Mutex::default(),
        })
    }

    /// Who this proxy is.
    pub fn id(&self) -> &SpiffeId {
        self.certs.id()
    }

    /// The current certificate, for the admin server; never the key.
    pub fn current(&self) -> Option<Arc<CertInfo>> {
        self.certs.current()
    }

    /// The mesh roots as PEM, for the admin server.
    pub fn roots_pem(&self) -> String {
        self.roots.to_pem()
    }

    /// The server side: STRICT demands a client certificate; PERMISSIVE
    /// verifies one if sent.
    pub fn server_config(&self, client_cert_required: bool) -> Arc<ServerConfig> {
        if client_cert_required {
            self.strict.clone()
        } else {
            self.permissive.clone()
        }
    }

    /// The client side towards a peer that must prove to be `expected`
    /// (secure naming), speaking HTTP/2 or HTTP/1.1 over it.
    pub fn client_config(
        &self,
        expected: &SpiffeId,
        http2: bool,
    ) -> Result<Arc<ClientConfig>, identity::TlsError> {
        let alpn: &[u8] = if http2 {
            identity::ALPN_H2
        } else {
            identity::ALPN_HTTP11
        };
        self.client_config_offering(expected, u8::from(http2), Some(alpn))
    }

    /// The client side for raw TCP (captured TCP connections): the mesh ALPN
    /// alone, so that the peer forwards the bytes instead of parsing HTTP.
    pub fn tcp_client_config(
        &self,
        expected: &SpiffeId,
    ) -> Result<Arc<ClientConfig>, identity::TlsError> {
        self.client_config_offering(expected, 2, None)
    }

    fn client_config_offering(
        &self,
        expected: &SpiffeId,
        kind: u8,
        http: Option<&[u8]>,
    ) -> Result<Arc<ClientConfig>, identity::TlsError> {
        let key = (expected.clone(), kind);
        let mut cache = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = cache.get(&key) {
            return Ok(c.clone());
        }
        let mut config =
            identity::client_config(self.certs.clone(), &self.roots, vec![expected.clone()])?;
        config.alpn_protocols = http
            .into_iter()
            .map(<[u8]>::to_vec)
            .chain([ALPN_MESH.to_vec()])
            .collect();
        let config = Arc::new(config);
        if cache.len() >= MAX_CACHED_CLIENT_CONFIGS {
            cache.clear();
        }
        cache.insert(key, config.clone());
        Ok(config)
    }
}

/// What the admin server's `/certs` shows (Istio's `proxy-config secret`):
/// the workload certificate and the mesh roots. Public material only: the
/// private key is not reachable from here.
#[derive(Debug, serde::Serialize)]
pub struct SecretsDump {
    /// This proxy's SPIFFE id; `None` without mesh TLS.
    pub identity: Option<String>,
    /// The current workload certificate (chain leaf first).
    pub workload: Option<CertInfo>,
    pub roots_pem: Option<String>,
}

impl SecretsDump {
    pub fn of(mesh: Option<&MeshTls>) -> Self {
        SecretsDump {
            identity: mesh.map(|m| m.id().to_string()),
            workload: mesh.and_then(MeshTls::current).map(|c| (*c).clone()),
            roots_pem: mesh.map(MeshTls::roots_pem),
        }
    }
}

impl std::fmt::Debug for MeshTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeshTls")
            .field("certs", &self.certs)
            .finish_non_exhaustive()
    }
}

/// Mesh identities for tests, from a throwaway CA.
#[cfg(test)]
pub(crate) mod testing {
    use std::sync::Arc;

    use identity::{Ca, CertManager, KeyAndCsr, SpiffeId};

    use super::MeshTls;

    pub struct TestCa {
        pub ca: Ca,
        _dir: tempfile::TempDir,
    }

    impl TestCa {
        pub fn new() -> Self {
            let dir = tempfile::tempdir().expect("tempdir");
            let ca = Ca::self_signed("cluster.local", dir.path()).expect("ca");
            TestCa { ca, _dir: dir }
        }

        /// A proxy identity for `default/<sa>` with a certificate installed.
        pub fn mesh_tls(&self, sa: &str) -> Arc<MeshTls> {
            let id = SpiffeId::new("cluster.local", "default", sa).expect("id");
            let certs = Arc::new(CertManager::new(id.clone()));
            let key = KeyAndCsr::generate(&id).expect("csr");
            let chain = self.ca.sign(key.csr_pem(), &id, None).expect("sign");
            certs.install(key, &chain).expect("install");
            Arc::new(MeshTls::new(certs, self.ca.trust_bundle()).expect("mesh tls"))
        }
    }
}
