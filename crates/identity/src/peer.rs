//! The peer's identity after a handshake: for authorization (`principals`) and for
//! the `X-Forwarded-Client-Cert` header the server side hands to the application.

use std::fmt;

use rustls::CommonState;

use crate::cert::{CertError, hex, spiffe_id_of};
use crate::spiffe::SpiffeId;

/// Who is on the other end of a verified mesh connection.
#[derive(Clone, PartialEq, Eq)]
pub struct PeerIdentity {
    id: SpiffeId,
    cert_sha256: [u8; 32],
}

/// The verified peer's identity on a rustls connection (client or server side;
/// pass `&ServerConnection`/`&ClientConnection`, e.g. `tls_stream.get_ref().1`).
///
/// Fails with [`CertError::NoPeerCertificate`] when the peer sent none (PERMISSIVE
/// without a client certificate) or the handshake has not completed.
pub fn peer_identity(conn: &CommonState) -> Result<PeerIdentity, CertError> {
    let leaf = conn
        .peer_certificates()
        .and_then(|certs| certs.first())
        .ok_or(CertError::NoPeerCertificate)?;
    let id = spiffe_id_of(leaf)?;
    let digest = ring::digest::digest(&ring::digest::SHA256, leaf);
    let mut cert_sha256 = [0u8; 32];
    cert_sha256.copy_from_slice(digest.as_ref());
    Ok(PeerIdentity { id, cert_sha256 })
}

impl PeerIdentity {
    /// The peer's SPIFFE id.
    pub fn id(&self) -> &SpiffeId {
        &self.id
    }

    /// SHA-256 of the peer's leaf certificate (DER), lowercase hex.
    pub fn cert_sha256_hex(&self) -> String {
        hex(&self.cert_sha256)
    }

    /// The `X-Forwarded-Client-Cert` value Envoy sets in Istio sidecars:
    /// `By=<own id>;Hash=<sha256 of peer cert>;Subject="";URI=<peer id>`.
    /// Mesh certificates have an empty subject, hence `Subject=""`.
    pub fn xfcc(&self, own: &SpiffeId) -> String {
        format!(
            "By={own};Hash={};Subject=\"\";URI={}",
            self.cert_sha256_hex(),
            self.id
        )
    }
}

impl fmt::Debug for PeerIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeerIdentity")
            .field("id", &self.id)
            .field("cert_sha256", &self.cert_sha256_hex())
            .finish()
    }
}
