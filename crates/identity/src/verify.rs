//! Peer certificate verification for mesh mTLS: the chain must lead to a mesh root
//! (webpki does that, with validity and EKU checks), and the leaf must carry exactly
//! one SPIFFE id — which, on the client side, must be one the control plane listed
//! for the destination (secure naming).
//!
//! Every rejection is logged here, once, with the peer's id when it can be read, so
//! that an operator sees *why* a handshake failed on the side that refused it.

use std::fmt;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::verify_server_cert_signed_by_trust_anchor;
use rustls::crypto::{WebPkiSupportedAlgorithms, verify_tls12_signature, verify_tls13_signature};
use rustls::server::ParsedCertificate;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, OtherError, SignatureScheme,
};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use crate::cert::{CertError, spiffe_id_of};
use crate::spiffe::SpiffeId;
use crate::trust::TrustBundle;

/// Why a peer was refused beyond what webpki reports (chain, validity, usage).
/// Carried inside `rustls::Error::InvalidCertificate(CertificateError::Other(..))`.
#[derive(thiserror::Error)]
pub enum VerifyError {
    #[error(
        "peer identity {got} is not one of the identities expected for this destination: {expected}"
    )]
    UnexpectedIdentity { got: SpiffeId, expected: String },
    #[error("peer certificate has no usable SPIFFE identity: {0}")]
    NoIdentity(CertError),
}

// rustls prints `CertificateError::Other` with Debug; make that the readable text.
impl fmt::Debug for VerifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A one-line reason for a failed mesh handshake, for logs: what the peer's
/// certificate lacked (untrusted root, expired, not yet valid, wrong identity, none
/// sent), or the TLS/IO error as is. Accepts the `io::Error` tokio-rustls returns.
pub fn handshake_failure_reason(err: &std::io::Error) -> String {
    match err
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>())
    {
        Some(tls) => explain(tls),
        None => err.to_string(),
    }
}

/// See [`handshake_failure_reason`]; for a `rustls::Error` at hand.
pub fn explain(err: &rustls::Error) -> String {
    use CertificateError as C;
    match err {
        rustls::Error::InvalidCertificate(C::Other(other)) => other.0.to_string(),
        // Every self-signed Istio root is named O=<trust domain>, so a certificate
        // from a foreign root often fails on the signature rather than the name.
        rustls::Error::InvalidCertificate(e @ (C::UnknownIssuer | C::BadSignature)) => {
            format!("certificate is not issued by a trusted mesh root ({e:?})")
        }
        rustls::Error::InvalidCertificate(C::ExpiredContext { time, not_after }) => format!(
            "certificate expired at {} ({} s before verification)",
            rfc3339(not_after.as_secs()),
            time.as_secs().saturating_sub(not_after.as_secs())
        ),
        rustls::Error::InvalidCertificate(C::NotValidYetContext { time, not_before }) => format!(
            "certificate not valid yet: valid from {} ({} s after verification; clock skew?)",
            rfc3339(not_before.as_secs()),
            not_before.as_secs().saturating_sub(time.as_secs())
        ),
        rustls::Error::InvalidCertificate(e) => format!("invalid certificate: {e}"),
        rustls::Error::NoCertificatesPresented => "peer presented no certificate".into(),
        rustls::Error::AlertReceived(alert) => {
            format!("peer refused the handshake (TLS alert {alert:?}); its log says why")
        }
        other => other.to_string(),
    }
}

impl From<VerifyError> for rustls::Error {
    fn from(e: VerifyError) -> Self {
        rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(e))))
    }
}

/// Verifies the server's certificate on the client side.
pub(crate) struct MeshServerVerifier {
    pub(crate) bundle: TrustBundle,
    pub(crate) expected: Vec<SpiffeId>,
    pub(crate) algs: WebPkiSupportedAlgorithms,
}

impl fmt::Debug for MeshServerVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MeshServerVerifier")
            .field("expected", &self.expected)
            .finish()
    }
}

impl ServerCertVerifier for MeshServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // The server name (SNI) is not an identity in the mesh: it names the route.
        // Identity is the SPIFFE URI SAN, checked against `expected` below.
        let result = (|| {
            let roots = self.bundle.load();
            let parsed = ParsedCertificate::try_from(end_entity)?;
            verify_server_cert_signed_by_trust_anchor(
                &parsed,
                &roots.store,
                intermediates,
                now,
                self.algs.all,
            )?;
            let got = spiffe_id_of(end_entity).map_err(VerifyError::NoIdentity)?;
            if !self.expected.contains(&got) {
                return Err(VerifyError::UnexpectedIdentity {
                    got,
                    expected: join(&self.expected),
                }
                .into());
            }
            Ok(ServerCertVerified::assertion())
        })();
        log_rejection("server", end_entity, &result);
        result
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

/// Verifies the client's certificate on the server side.
pub(crate) struct MeshClientVerifier {
    pub(crate) bundle: TrustBundle,
    /// STRICT: a client certificate is required. PERMISSIVE-over-TLS: optional, but
    /// verified in full when presented.
    pub(crate) mandatory: bool,
    pub(crate) algs: WebPkiSupportedAlgorithms,
}

impl fmt::Debug for MeshClientVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MeshClientVerifier")
            .field("mandatory", &self.mandatory)
            .finish()
    }
}

impl ClientCertVerifier for MeshClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // Workloads have exactly one certificate; hints would only enlarge the handshake.
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let result = (|| {
            let roots = self.bundle.load();
            roots
                .client_verifier
                .verify_client_cert(end_entity, intermediates, now)?;
            // Authorization works on the SPIFFE id; a certificate without one is useless
            // to it and never issued by the mesh CA, so refuse it here.
            spiffe_id_of(end_entity).map_err(VerifyError::NoIdentity)?;
            Ok(ClientCertVerified::assertion())
        })();
        log_rejection("client", end_entity, &result);
        result
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

fn log_rejection<T>(role: &str, cert: &CertificateDer<'_>, result: &Result<T, rustls::Error>) {
    if let Err(error) = result {
        let peer = spiffe_id_of(cert)
            .map(|id| id.to_string())
            .unwrap_or_else(|_| "<no SPIFFE id>".into());
        let mut reason = explain(error);
        let issuer = issuer_of(cert);
        let untrusted = matches!(
            error,
            rustls::Error::InvalidCertificate(
                CertificateError::UnknownIssuer | CertificateError::BadSignature
            )
        );
        // A self-signed leaf claiming a mesh identity is the classic forgery: say so.
        if untrusted && issuer.as_ref().is_some_and(|(_, self_signed)| *self_signed) {
            reason.push_str("; it is self-signed, so anyone could have made it");
        }
        let issuer = issuer.map_or_else(|| "<unreadable>".into(), |(dn, _)| dn);
        tracing::warn!(%peer, peer_role = role, %issuer, %reason, "mTLS peer certificate rejected");
    }
}

/// The issuer's distinguished name, and whether it is the subject's (self-signed).
fn issuer_of(cert: &CertificateDer<'_>) -> Option<(String, bool)> {
    use x509_parser::prelude::{FromDer, X509Certificate};
    let (_, parsed) = X509Certificate::from_der(cert).ok()?;
    let issuer = parsed.issuer();
    let dn = issuer.to_string();
    let dn = if dn.is_empty() { "<empty>".into() } else { dn };
    Some((dn, issuer.as_raw() == parsed.subject().as_raw()))
}

fn rfc3339(unix_secs: u64) -> String {
    i64::try_from(unix_secs)
        .ok()
        .and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok())
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| format!("{unix_secs} (UNIX)"))
}

fn join(ids: &[SpiffeId]) -> String {
    ids.iter()
        .map(|id| id.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}
