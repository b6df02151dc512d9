//! The workload certificate from files instead of the CA: a certificate chain,
//! its private key and the mesh roots, as Istio mounts them for a proxy
//! without a CA connection (`cert-chain.pem`, `key.pem`, `root-cert.pem`).
//! For benchmarks and tests that run with `--static-config`, and for meshes
//! whose certificates are issued elsewhere.
//!
//! The result is the same [`MeshTls`] a CA-issued certificate gives, so the
//! inbound and outbound paths cannot tell the two apart. The files are read
//! once, at start: rotating them means restarting the proxy.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use identity::{CertChain, CertError, CertManager, KeyAndCsr, SpiffeId, TrustBundle};

use super::MeshTls;

/// Where the certificate files are, and whom they must name.
#[derive(Clone, Debug)]
pub struct CertFiles {
    /// PEM, leaf first, then intermediates (not the root).
    pub cert_chain: PathBuf,
    /// PEM, ECDSA P-256: PKCS#8 (`PRIVATE KEY`) or SEC1 (`EC PRIVATE KEY`).
    pub key: PathBuf,
    /// PEM, one or more mesh root certificates; peers must chain to one of them.
    pub roots: PathBuf,
    /// The mesh's trust domain: the leaf must be
    /// `spiffe://<trust_domain>/ns/<namespace>/sa/<service account>` of this node.
    pub trust_domain: String,
}

/// Why the certificate files cannot be this proxy's identity. Every variant
/// names the file at fault.
#[derive(Debug, thiserror::Error)]
pub enum StaticCertError {
    #[error("{}: cannot read it: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {source}", path.display())]
    Bad {
        path: PathBuf,
        source: Box<CertError>,
    },
    #[error("the node does not name a valid workload identity: {0}")]
    NodeId(#[from] identity::SpiffeIdError),
    #[error(
        "{}: the certificate is for {got}, but this proxy is {expected} \
         (from --trust-domain, --namespace and --service-account)",
        path.display()
    )]
    WrongIdentity {
        path: PathBuf,
        expected: String,
        got: String,
    },
    #[error("{}: the certificate (serial {serial}) is not valid until {not_before}", path.display())]
    NotYetValid {
        path: PathBuf,
        serial: String,
        not_before: String,
    },
    #[error("{}: the certificate (serial {serial}) expired at {not_after}", path.display())]
    Expired {
        path: PathBuf,
        serial: String,
        not_after: String,
    },
    #[error(
        "{}: this private key does not belong to the certificate in {} (serial {serial})",
        key.display(),
        chain.display()
    )]
    KeyMismatch {
        key: PathBuf,
        chain: PathBuf,
        serial: String,
    },
    #[error("mesh TLS config from {}, {} and {}: {source}", files.cert_chain.display(), files.key.display(), files.roots.display())]
    Tls {
        files: Box<CertFiles>,
        source: identity::TlsError,
    },
}

fn read(path: &Path) -> Result<String, StaticCertError> {
    std::fs::read_to_string(path).map_err(|source| StaticCertError::Read {
        path: path.into(),
        source,
    })
}

/// Reads and checks the files: the leaf's SPIFFE id must be this node's
/// identity (`namespace`, `service_account`), it must be valid now, and the
/// key must be the leaf's.
pub fn load(
    files: &CertFiles,
    namespace: &str,
    service_account: &str,
) -> Result<Arc<MeshTls>, StaticCertError> {
    let expected = SpiffeId::new(&files.trust_domain, namespace, service_account)?;
    let chain_path = &files.cert_chain;
    let bad = |path: &Path| {
        let path = path.to_path_buf();
        move |source| StaticCertError::Bad {
            path,
            source: Box::new(source),
        }
    };
    let chain = CertChain::from_pem(&read(chain_path)?).map_err(bad(chain_path))?;
    let info = chain.info().map_err(bad(chain_path))?;
    if info.spiffe_id != expected {
        return Err(StaticCertError::WrongIdentity {
            path: chain_path.clone(),
            expected: expected.to_string(),
            got: info.spiffe_id.to_string(),
        });
    }
    let now = SystemTime::now();
    if info.not_after <= now {
        return Err(StaticCertError::Expired {
            path: chain_path.clone(),
            serial: info.serial,
            not_after: info.not_after.to_string(),
        });
    }
    if info.not_before > now {
        return Err(StaticCertError::NotYetValid {
            path: chain_path.clone(),
            serial: info.serial,
            not_before: info.not_before.to_string(),
        });
    }
    let key =
        KeyAndCsr::from_private_key_pem(&expected, &read(&files.key)?).map_err(bad(&files.key))?;
    let roots = TrustBundle::from_pem(&read(&files.roots)?).map_err(bad(&files.roots))?;
    let certs = Arc::new(CertManager::new(expected));
    certs.install(key, &chain).map_err(|e| match e {
        CertError::KeyMismatch { serial } => StaticCertError::KeyMismatch {
            key: files.key.clone(),
            chain: chain_path.clone(),
            serial,
        },
        other => StaticCertError::Bad {
            path: chain_path.clone(),
            source: Box::new(other),
        },
    })?;
    let mesh = MeshTls::new(certs, roots).map_err(|source| StaticCertError::Tls {
        files: Box::new(files.clone()),
        source,
    })?;
    tracing::info!(id = %mesh.id(), serial = %info.serial, not_after = %info.not_after,
        chain = %chain_path.display(), "workload certificate from files");
    Ok(Arc::new(mesh))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::testing::TestCa;

    /// Writes a chain issued by `ca` for `default/<sa>` and its key, and the CA's roots.
    fn write_files(ca: &TestCa, sa: &str, dir: &Path) -> CertFiles {
        let id = SpiffeId::new("cluster.local", "default", sa).expect("id");
        let (chain, key_pem) = issue(ca, &id);
        let files = CertFiles {
            cert_chain: dir.join("cert-chain.pem"),
            key: dir.join("key.pem"),
            roots: dir.join("root-cert.pem"),
            trust_domain: "cluster.local".into(),
        };
        std::fs::write(&files.cert_chain, chain).expect("write chain");
        std::fs::write(&files.key, key_pem).expect("write key");
        std::fs::write(&files.roots, ca.ca.trust_bundle().to_pem()).expect("write roots");
        files
    }

    /// A chain signed by the CA for a key made here (rcgen), and that key as PEM.
    fn issue(ca: &TestCa, id: &SpiffeId) -> (String, String) {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
        let mut params = rcgen::CertificateParams::default();
        params.subject_alt_names =
            vec![rcgen::SanType::URI(id.to_string().try_into().expect("uri"))];
        let csr = params.serialize_request(&key).expect("csr");
        let chain = ca
            .ca
            .sign(&csr.pem().expect("csr pem"), id, None)
            .expect("sign");
        (chain.to_pem(), key.serialize_pem())
    }

    #[test]
    fn loads_a_matching_chain_key_and_roots() {
        let ca = TestCa::new();
        let dir = tempfile::tempdir().expect("tempdir");
        let files = write_files(&ca, "bench", dir.path());
        let mesh = load(&files, "default", "bench").expect("loads");
        assert_eq!(
            mesh.id().to_string(),
            "spiffe://cluster.local/ns/default/sa/bench"
        );
        assert!(mesh.current().is_some());
    }

    #[test]
    fn a_key_of_another_certificate_is_refused_naming_the_key_file() {
        let ca = TestCa::new();
        let dir = tempfile::tempdir().expect("tempdir");
        let files = write_files(&ca, "bench", dir.path());
        let other = tempfile::tempdir().expect("tempdir");
        let stolen = write_files(&ca, "bench", other.path());
        let files = CertFiles {
            key: stolen.key,
            ..files
        };
        let err = load(&files, "default", "bench").expect_err("wrong key");
        assert!(matches!(err, StaticCertError::KeyMismatch { .. }), "{err}");
        assert!(
            err.to_string().contains(&files.key.display().to_string()),
            "{err}"
        );
    }

    #[test]
    fn a_certificate_for_another_identity_is_refused() {
        let ca = TestCa::new();
        let dir = tempfile::tempdir().expect("tempdir");
        let files = write_files(&ca, "bench", dir.path());
        let err = load(&files, "default", "sleep").expect_err("wrong identity");
        let text = err.to_string();
        assert!(text.contains("cert-chain.pem"), "{text}");
        assert!(
            text.contains("sa/bench") && text.contains("sa/sleep"),
            "{text}"
        );
    }

    #[test]
    fn a_certificate_without_spiffe_san_is_refused_naming_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
        let cert = rcgen::CertificateParams::new(vec!["echo.example".to_string()])
            .expect("params")
            .self_signed(&key)
            .expect("cert");
        let files = CertFiles {
            cert_chain: dir.path().join("cert-chain.pem"),
            key: dir.path().join("key.pem"),
            roots: dir.path().join("root-cert.pem"),
            trust_domain: "cluster.local".into(),
        };
        std::fs::write(&files.cert_chain, cert.pem()).expect("write");
        std::fs::write(&files.key, key.serialize_pem()).expect("write");
        std::fs::write(&files.roots, cert.pem()).expect("write");
        let err = load(&files, "default", "bench").expect_err("no SPIFFE id");
        let text = err.to_string();
        assert!(
            text.contains("cert-chain.pem") && text.contains("SAN"),
            "{text}"
        );
    }

    #[test]
    fn an_expired_certificate_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let id = SpiffeId::new("cluster.local", "default", "bench").expect("id");
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
        let mut params = rcgen::CertificateParams::default();
        params.subject_alt_names =
            vec![rcgen::SanType::URI(id.to_string().try_into().expect("uri"))];
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2020, 1, 2);
        let cert = params.self_signed(&key).expect("cert");
        let files = CertFiles {
            cert_chain: dir.path().join("cert-chain.pem"),
            key: dir.path().join("key.pem"),
            roots: dir.path().join("root-cert.pem"),
            trust_domain: "cluster.local".into(),
        };
        std::fs::write(&files.cert_chain, cert.pem()).expect("write");
        std::fs::write(&files.key, key.serialize_pem()).expect("write");
        std::fs::write(&files.roots, cert.pem()).expect("write");
        let err = load(&files, "default", "bench").expect_err("expired");
        assert!(matches!(err, StaticCertError::Expired { .. }), "{err}");
        assert!(err.to_string().contains("cert-chain.pem"), "{err}");
    }

    #[test]
    fn a_missing_file_is_named() {
        let files = CertFiles {
            cert_chain: "/nonexistent/cert-chain.pem".into(),
            key: "/nonexistent/key.pem".into(),
            roots: "/nonexistent/root-cert.pem".into(),
            trust_domain: "cluster.local".into(),
        };
        let err = load(&files, "default", "bench").expect_err("missing");
        assert!(
            err.to_string().contains("/nonexistent/cert-chain.pem"),
            "{err}"
        );
    }
}
