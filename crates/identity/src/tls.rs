//! rustls configurations for mesh mTLS between sidecars.
//!
//! - [`server_config`]: the inbound side. `ClientAuth::Required` for STRICT;
//!   `ClientAuth::Optional` for PERMISSIVE when the first bytes were TLS (a client
//!   certificate, if sent, is still fully verified).
//! - [`client_config`]: the outbound side, one per destination: the server must
//!   chain to the mesh roots *and* present one of the SPIFFE ids the control plane
//!   listed for that destination (secure naming).
//!
//! Certificates come from a resolver — normally the [`CertManager`](crate::CertManager),
//! so each new handshake uses the newest certificate. Roots come from a
//! [`TrustBundle`], read per handshake, so root rotation needs no rebuild either.

use std::sync::{Arc, OnceLock};

use rustls::client::{ResolvesClientCert, Resumption};
use rustls::crypto::CryptoProvider;
use rustls::server::{NoServerSessionStorage, ResolvesServerCert};
use rustls::{ClientConfig, ServerConfig};

use crate::spiffe::SpiffeId;
use crate::trust::TrustBundle;
use crate::verify::{MeshClientVerifier, MeshServerVerifier};

/// ALPN id for HTTP/2, offered first by default.
pub const ALPN_H2: &[u8] = b"h2";
/// ALPN id for HTTP/1.1, offered second by default.
pub const ALPN_HTTP11: &[u8] = b"http/1.1";

/// Whether the inbound side demands a client certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// STRICT: no certificate, no connection.
    Required,
    /// PERMISSIVE over TLS: a client without a certificate is let in unauthenticated.
    Optional,
}

/// Why a TLS config could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error(
        "no expected SPIFFE identities for this destination: secure naming would accept no server"
    )]
    NoExpectedIdentities,
    #[error("cannot build TLS config: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The crypto provider used everywhere in the mesh: rustls with *ring*.
///
/// Passed explicitly (never installed process-wide) so that a binary that links
/// another provider elsewhere still gets the same one here.
pub fn crypto_provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

/// The inbound (server) side of mesh mTLS.
///
/// ALPN offers `h2` and `http/1.1`; change `alpn_protocols` on the result if needed.
pub fn server_config(
    certs: Arc<dyn ResolvesServerCert>,
    roots: &TrustBundle,
    client_auth: ClientAuth,
) -> Result<ServerConfig, TlsError> {
    let provider = crypto_provider();
    let verifier = Arc::new(MeshClientVerifier {
        bundle: roots.clone(),
        mandatory: client_auth == ClientAuth::Required,
        algs: provider.signature_verification_algorithms,
    });
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(certs);
    config.alpn_protocols = vec![ALPN_H2.to_vec(), ALPN_HTTP11.to_vec()];
    // No session resumption: a resumed session skips certificate verification, so
    // the peer identity would be the one from the *first* handshake — stale after a
    // rotation, and still accepted after a root was removed from the bundle.
    config.session_storage = Arc::new(NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    Ok(config)
}

/// The outbound (client) side of mesh mTLS towards one destination.
///
/// `expected` are the SPIFFE ids the control plane listed for the destination's
/// endpoints; the server must present one of them. An empty list is refused
/// rather than read as "anyone in the mesh".
pub fn client_config(
    certs: Arc<dyn ResolvesClientCert>,
    roots: &TrustBundle,
    expected: Vec<SpiffeId>,
) -> Result<ClientConfig, TlsError> {
    if expected.is_empty() {
        return Err(TlsError::NoExpectedIdentities);
    }
    let provider = crypto_provider();
    let verifier = Arc::new(MeshServerVerifier {
        bundle: roots.clone(),
        expected,
        algs: provider.signature_verification_algorithms,
    });
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .dangerous()
        // "dangerous" only because the verifier is custom: it performs full webpki
        // chain validation plus the SPIFFE id check (see `verify`).
        .with_custom_certificate_verifier(verifier)
        .with_client_cert_resolver(certs);
    config.alpn_protocols = vec![ALPN_H2.to_vec(), ALPN_HTTP11.to_vec()];
    // See server_config: every connection re-verifies the peer's current certificate.
    config.resumption = Resumption::disabled();
    Ok(config)
}
