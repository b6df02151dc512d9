//! Certificate chains as the CA issues them and workloads present them, and the few
//! facts about a certificate the mesh cares about (SPIFFE id, serial, validity).

use std::fmt;

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

use crate::spiffe::{SpiffeId, SpiffeIdError};

/// Why a certificate, chain or key could not be used.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("{what}: not valid PEM: {reason}")]
    Pem { what: String, reason: String },
    #[error("{what}: contains no certificate")]
    Empty { what: String },
    #[error("{what}: not a valid X.509 certificate: {reason}")]
    Parse { what: String, reason: String },
    #[error("certificate (serial {serial}) has no URI SAN, so it carries no SPIFFE id")]
    NoSpiffeId { serial: String },
    #[error(
        "certificate (serial {serial}) has {} URI SANs {uris:?}; an X.509-SVID has exactly one",
        uris.len()
    )]
    ManyUris { serial: String, uris: Vec<String> },
    #[error("certificate (serial {serial}): {source}")]
    BadSpiffeId {
        serial: String,
        #[source]
        source: SpiffeIdError,
    },
    #[error("certificate is for {got}, but it was requested for {expected}")]
    WrongIdentity { expected: String, got: String },
    #[error(
        "certificate (serial {serial}) does not carry the public key of the private key it was requested with"
    )]
    KeyMismatch { serial: String },
    #[error("certificate (serial {serial}) expired at {not_after}")]
    Expired { serial: String, not_after: String },
    #[error("cannot generate a key or CSR: {0}")]
    Generate(String),
    #[error("TLS library rejected the certificate and key: {0}")]
    Rustls(String),
    #[error("peer presented no certificate")]
    NoPeerCertificate,
}

/// A certificate chain, leaf first, then intermediates; never the root (peers have it).
///
/// This is what the CA returns for a CSR and what a workload presents in a handshake.
#[derive(Clone, PartialEq, Eq)]
pub struct CertChain {
    certs: Vec<CertificateDer<'static>>,
}

/// What `trellis proxy-config secrets` shows about a workload certificate. Never the key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertInfo {
    /// The identity in the leaf's URI SAN.
    pub spiffe_id: SpiffeId,
    /// Leaf serial number, lowercase hex without separators.
    pub serial: String,
    /// Start of validity (backdated by the CA for clock skew). RFC 3339 in JSON.
    #[serde(with = "time::serde::rfc3339")]
    pub not_before: OffsetDateTime,
    /// End of validity. RFC 3339 in JSON.
    #[serde(with = "time::serde::rfc3339")]
    pub not_after: OffsetDateTime,
    /// The chain as PEM, leaf first.
    pub chain_pem: String,
}

impl CertChain {
    /// A chain from DER certificates, leaf first. Fails if empty or the leaf does not parse.
    pub fn from_der(certs: Vec<CertificateDer<'static>>) -> Result<Self, CertError> {
        let what = "certificate chain";
        let leaf = certs
            .first()
            .ok_or_else(|| CertError::Empty { what: what.into() })?;
        parse(what, leaf)?;
        Ok(CertChain { certs })
    }

    /// A chain from concatenated PEM certificates, leaf first.
    pub fn from_pem(pem: &str) -> Result<Self, CertError> {
        Self::from_der(certs_from_pem("certificate chain", pem)?)
    }

    /// The chain as concatenated PEM, leaf first.
    pub fn to_pem(&self) -> String {
        self.certs.iter().map(|c| der_to_pem(c)).collect()
    }

    /// Each certificate as a PEM block of its own, leaf first (the shape of
    /// Istio's `IstioCertificateResponse.cert_chain`).
    pub fn pem_blocks(&self) -> Vec<String> {
        self.certs.iter().map(|c| der_to_pem(c)).collect()
    }

    /// The leaf (end-entity) certificate.
    pub fn leaf(&self) -> &CertificateDer<'static> {
        // Constructors refuse an empty chain.
        &self.certs[0]
    }

    /// All certificates, leaf first.
    pub fn certs(&self) -> &[CertificateDer<'static>] {
        &self.certs
    }

    /// The SPIFFE id in the leaf's URI SAN.
    pub fn spiffe_id(&self) -> Result<SpiffeId, CertError> {
        spiffe_id_of(self.leaf())
    }

    /// Id, serial, validity and PEM of the chain, for display.
    pub fn info(&self) -> Result<CertInfo, CertError> {
        let facts = LeafFacts::of("certificate chain", self.leaf())?;
        Ok(CertInfo {
            spiffe_id: facts.spiffe_id()?,
            serial: facts.serial,
            not_before: facts.not_before,
            not_after: facts.not_after,
            chain_pem: self.to_pem(),
        })
    }
}

// Certificates are public, but a chain of base64 is noise in logs: show what identifies it.
impl fmt::Debug for CertChain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("CertChain");
        match LeafFacts::of("leaf", self.leaf()) {
            Ok(facts) => d
                .field("uris", &facts.uris)
                .field("serial", &facts.serial)
                .field("not_after", &facts.not_after),
            Err(e) => d.field("leaf", &e.to_string()),
        };
        d.field("len", &self.certs.len()).finish()
    }
}

/// The SPIFFE id of a certificate: its single URI SAN, parsed.
pub fn spiffe_id_of(cert: &CertificateDer<'_>) -> Result<SpiffeId, CertError> {
    LeafFacts::of("certificate", cert)?.spiffe_id()
}

/// The facts about one certificate this crate needs, read once with x509-parser.
pub(crate) struct LeafFacts {
    pub(crate) uris: Vec<String>,
    pub(crate) serial: String,
    pub(crate) not_before: OffsetDateTime,
    pub(crate) not_after: OffsetDateTime,
    /// The subjectPublicKey BIT STRING contents (the raw public key).
    pub(crate) public_key: Vec<u8>,
    pub(crate) is_ca: bool,
}

impl LeafFacts {
    pub(crate) fn of(what: &str, der: &[u8]) -> Result<Self, CertError> {
        let cert = parse(what, der)?;
        let parse_err = |reason: String| CertError::Parse {
            what: what.to_owned(),
            reason,
        };
        let mut uris = Vec::new();
        if let Some(san) = cert
            .subject_alternative_name()
            .map_err(|e| parse_err(format!("subjectAltName: {e}")))?
        {
            for name in &san.value.general_names {
                if let GeneralName::URI(uri) = name {
                    uris.push((*uri).to_owned());
                }
            }
        }
        Ok(LeafFacts {
            uris,
            serial: hex(trim_leading_zeros(cert.raw_serial())),
            not_before: cert.validity().not_before.to_datetime(),
            not_after: cert.validity().not_after.to_datetime(),
            public_key: cert.public_key().subject_public_key.data.to_vec(),
            is_ca: cert.is_ca(),
        })
    }

    pub(crate) fn spiffe_id(&self) -> Result<SpiffeId, CertError> {
        match self.uris.as_slice() {
            [] => Err(CertError::NoSpiffeId {
                serial: self.serial.clone(),
            }),
            [uri] => uri.parse().map_err(|source| CertError::BadSpiffeId {
                serial: self.serial.clone(),
                source,
            }),
            many => Err(CertError::ManyUris {
                serial: self.serial.clone(),
                uris: many.to_vec(),
            }),
        }
    }
}

fn parse<'a>(what: &str, der: &'a [u8]) -> Result<X509Certificate<'a>, CertError> {
    let (rest, cert) = X509Certificate::from_der(der).map_err(|e| CertError::Parse {
        what: what.to_owned(),
        reason: e.to_string(),
    })?;
    if !rest.is_empty() {
        return Err(CertError::Parse {
            what: what.to_owned(),
            reason: format!("{} trailing bytes after the certificate", rest.len()),
        });
    }
    Ok(cert)
}

/// All `CERTIFICATE` blocks of a PEM text (other blocks are skipped), at least one.
pub(crate) fn certs_from_pem(
    what: &str,
    pem: &str,
) -> Result<Vec<CertificateDer<'static>>, CertError> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CertError::Pem {
            what: what.to_owned(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(CertError::Empty {
            what: what.to_owned(),
        });
    }
    for cert in &certs {
        parse(what, cert)?;
    }
    Ok(certs)
}

pub(crate) fn der_to_pem(der: &[u8]) -> String {
    // LF line endings everywhere: these files are read by Unix tools and Istio.
    pem::encode_config(
        &pem::Pem::new("CERTIFICATE", der),
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    )
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    use fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            // Writing to a String cannot fail.
            let _ = write!(s, "{b:02x}");
            s
        })
}

fn trim_leading_zeros(bytes: &[u8]) -> &[u8] {
    let first = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    match &bytes[first..] {
        [] => &bytes[bytes.len().saturating_sub(1)..],
        rest => rest,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_and_serial_trimming() {
        assert_eq!(hex(&[0x00, 0xab, 0x01]), "00ab01");
        assert_eq!(trim_leading_zeros(&[0, 0, 5]), &[5]);
        assert_eq!(trim_leading_zeros(&[0]), &[0]);
        assert_eq!(trim_leading_zeros(&[]), &[] as &[u8]);
    }

    #[test]
    fn garbage_is_rejected_with_context() {
        let err = CertChain::from_pem("not pem at all").expect_err("no certs");
        assert!(err.to_string().contains("certificate chain"), "{err}");
        let err = CertChain::from_der(vec![CertificateDer::from(vec![1u8, 2, 3])])
            .expect_err("not a certificate");
        assert!(err.to_string().contains("not a valid X.509"), "{err}");
    }
}
