//! The workload side of issuance: a fresh private key, made in memory, and a CSR for
//! the workload's SPIFFE id. The key leaves this module only as a rustls signing key
//! inside a `CertifiedKey`; it is never written to disk, sent, or printed.

use std::fmt;
use std::sync::Arc;

use rcgen::{CertificateParams, DistinguishedName, KeyPair, PKCS_ECDSA_P256_SHA256, SanType};
use rustls::sign::CertifiedKey;
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::cert::{CertChain, CertError, LeafFacts};
use crate::spiffe::SpiffeId;
use crate::tls::crypto_provider;

/// A new ECDSA P-256 key and a CSR asking for exactly one SAN: the workload's id.
pub struct KeyAndCsr {
    id: SpiffeId,
    key: KeyPair,
    csr_pem: String,
}

impl KeyAndCsr {
    /// Generates the key and the CSR.
    pub fn generate(id: &SpiffeId) -> Result<Self, CertError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
            .map_err(|e| CertError::Generate(e.to_string()))?;
        Self::with_key(id, key)
    }

    /// An existing ECDSA P-256 key, PEM: PKCS#8 (`PRIVATE KEY`) or SEC1
    /// (`EC PRIVATE KEY`, as Istio's and OpenSSL's tools write it). For a
    /// certificate issued outside the mesh's CA (files); `CertManager::install`
    /// still checks that the certificate carries this key.
    pub fn from_private_key_pem(id: &SpiffeId, key_pem: &str) -> Result<Self, CertError> {
        let bad = |reason: String| CertError::Pem {
            what: "private key".into(),
            reason,
        };
        let blocks = pem::parse_many(key_pem).map_err(|e| bad(e.to_string()))?;
        let pkcs8 = match blocks
            .iter()
            .find(|b| b.tag().ends_with("PRIVATE KEY"))
            .map(|b| (b.tag(), b.contents()))
        {
            Some(("PRIVATE KEY", der)) => der.to_vec(),
            Some(("EC PRIVATE KEY", der)) => sec1_p256_to_pkcs8(der),
            Some((tag, _)) => {
                return Err(bad(format!(
                    "a {tag:?} block; the mesh uses ECDSA P-256 keys"
                )));
            }
            None => return Err(bad("no PRIVATE KEY block".into())),
        };
        let key = KeyPair::from_pkcs8_der_and_sign_algo(
            &PrivatePkcs8KeyDer::from(pkcs8),
            &PKCS_ECDSA_P256_SHA256,
        )
        .map_err(|e| bad(format!("not an ECDSA P-256 key: {e}")))?;
        Self::with_key(id, key)
    }

    fn with_key(id: &SpiffeId, key: KeyPair) -> Result<Self, CertError> {
        let gen_err = |e: rcgen::Error| CertError::Generate(e.to_string());
        let mut params = CertificateParams::default();
        // Istio workload certificates have an empty subject; the identity is the SAN.
        params.distinguished_name = DistinguishedName::new();
        let uri = id
            .to_string()
            .try_into()
            .map_err(|e: rcgen::Error| CertError::Generate(format!("SAN {id}: {e}")))?;
        params.subject_alt_names = vec![SanType::URI(uri)];
        let csr_pem = params
            .serialize_request(&key)
            .and_then(|csr| csr.pem())
            .map_err(gen_err)?;
        Ok(KeyAndCsr {
            id: id.clone(),
            key,
            csr_pem,
        })
    }

    /// The identity the CSR asks for.
    pub fn id(&self) -> &SpiffeId {
        &self.id
    }

    /// The CSR, PEM (`CERTIFICATE REQUEST`): this is what is sent to the CA.
    pub fn csr_pem(&self) -> &str {
        &self.csr_pem
    }

    /// Pairs the key with the chain the CA returned, after checking that the leaf is
    /// for this key and this identity (a confused or malicious CA must not make us
    /// present someone else's certificate).
    pub fn into_certified_key(self, chain: &CertChain) -> Result<Arc<CertifiedKey>, CertError> {
        let facts = LeafFacts::of("issued certificate", chain.leaf())?;
        if facts.public_key != self.key.public_key_raw() {
            return Err(CertError::KeyMismatch {
                serial: facts.serial,
            });
        }
        let got = facts.spiffe_id()?;
        if got != self.id {
            return Err(CertError::WrongIdentity {
                expected: self.id.to_string(),
                got: got.to_string(),
            });
        }
        // The only place the private key is serialized: straight into rustls's
        // in-memory signing key.
        let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key.serialize_der()));
        let certified = CertifiedKey::from_der(chain.certs().to_vec(), der, &crypto_provider())
            .map_err(|e| CertError::Rustls(e.to_string()))?;
        Ok(Arc::new(certified))
    }
}

/// Wraps a SEC1 `ECPrivateKey` (RFC 5915) of a P-256 key in a PKCS#8
/// `PrivateKeyInfo` (RFC 5958), the only form ring reads. A key of another
/// curve still fails when ring parses the result.
fn sec1_p256_to_pkcs8(sec1: &[u8]) -> Vec<u8> {
    fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
        let mut v = vec![tag];
        let n = content.len();
        if n < 0x80 {
            v.push(n as u8);
        } else if n <= 0xff {
            v.extend([0x81, n as u8]);
        } else {
            v.extend([0x82, (n >> 8) as u8, n as u8]);
        }
        v.extend_from_slice(content);
        v
    }
    // SEQUENCE { OID id-ecPublicKey, OID prime256v1 }
    const ALGORITHM: &[u8] = &[
        0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a, 0x86,
        0x48, 0xce, 0x3d, 0x03, 0x01, 0x07,
    ];
    let mut info = vec![0x02, 0x01, 0x00];
    info.extend_from_slice(ALGORITHM);
    info.extend(tlv(0x04, sec1));
    tlv(0x30, &info)
}

impl fmt::Debug for KeyAndCsr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyAndCsr")
            .field("id", &self.id)
            .field("key", &"<redacted ECDSA P-256 private key>")
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_prints_no_key_material() {
        let id = SpiffeId::new("cluster.local", "default", "sleep").expect("valid id");
        let k = KeyAndCsr::generate(&id).expect("generates");
        let debug = format!("{k:?} {k:#?}");
        let der = k.key.serialize_der();
        let pem = k.key.serialize_pem();
        // Neither the PEM body nor any long run of the DER (hex) may appear.
        let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        assert!(!debug.contains(&body[..32]), "{debug}");
        assert!(
            !debug.contains(&crate::cert::hex(&der[der.len() - 16..])),
            "{debug}"
        );
        assert!(!debug.contains("PRIVATE KEY"));
        assert!(debug.contains("spiffe://cluster.local/ns/default/sa/sleep"));
    }

    #[test]
    fn reads_pkcs8_and_sec1_keys_and_only_p256() {
        let id = SpiffeId::new("cluster.local", "default", "bench").expect("valid id");
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("key");
        let pkcs8 = key.serialize_der();
        // ring writes PKCS#8 as: SEQUENCE header (3), version (3), algorithm (21),
        // OCTET STRING header (2), then the SEC1 ECPrivateKey.
        let sec1 = &pkcs8[29..];
        assert_eq!(sec1_p256_to_pkcs8(sec1), pkcs8);
        let sec1_pem = pem::encode(&pem::Pem::new("EC PRIVATE KEY", sec1.to_vec()));
        for text in [key.serialize_pem(), sec1_pem] {
            let k = KeyAndCsr::from_private_key_pem(&id, &text).expect("reads");
            assert_eq!(k.key.public_key_raw(), key.public_key_raw());
        }
        let rsa = pem::encode(&pem::Pem::new("RSA PRIVATE KEY", vec![0x30, 0x00]));
        let err = KeyAndCsr::from_private_key_pem(&id, &rsa).expect_err("not P-256");
        assert!(err.to_string().contains("RSA PRIVATE KEY"), "{err}");
    }

    #[test]
    fn csr_carries_exactly_the_id() {
        use x509_parser::prelude::{FromDer, GeneralName, ParsedExtension};
        let id = SpiffeId::new("td", "ns", "sa").expect("valid id");
        let k = KeyAndCsr::generate(&id).expect("generates");
        let der = pem::parse(k.csr_pem()).expect("pem").into_contents();
        let (_, csr) = x509_parser::certification_request::X509CertificationRequest::from_der(&der)
            .expect("parses");
        csr.verify_signature().expect("self-signed CSR verifies");
        let sans: Vec<String> = csr
            .requested_extensions()
            .into_iter()
            .flatten()
            .filter_map(|e| match e {
                ParsedExtension::SubjectAlternativeName(san) => Some(san),
                _ => None,
            })
            .flat_map(|san| san.general_names.iter())
            .map(|n| match n {
                GeneralName::URI(u) => (*u).to_owned(),
                other => format!("{other:?}"),
            })
            .collect();
        assert_eq!(sans, vec!["spiffe://td/ns/ns/sa/sa".to_owned()]);
    }
}
