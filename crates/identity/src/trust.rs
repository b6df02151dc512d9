//! The mesh trust bundle: the root certificates a workload accepts peers from.
//!
//! It is a shared, atomically swapped handle so that a root rotation (two roots
//! trusted during the overlap, then only the new one) reaches every TLS config built
//! from it without rebuilding them: verifiers load the current roots per handshake.

use std::fmt;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::RootCertStore;
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::ClientCertVerifier;
use rustls_pki_types::CertificateDer;

use crate::cert::{CertError, certs_from_pem, der_to_pem};
use crate::tls::crypto_provider;

/// The roots trusted for mesh mTLS. Cheap to clone; clones share updates.
#[derive(Clone)]
pub struct TrustBundle {
    current: Arc<ArcSwap<Roots>>,
}

/// One immutable generation of the bundle.
pub(crate) struct Roots {
    pub(crate) store: Arc<RootCertStore>,
    pub(crate) certs: Vec<CertificateDer<'static>>,
    /// rustls's own client-certificate verifier over `store`, built once per
    /// generation because building it is not free and handshakes are hot.
    pub(crate) client_verifier: Arc<dyn ClientCertVerifier>,
}

impl TrustBundle {
    /// A bundle from one or more concatenated PEM root certificates.
    pub fn from_pem(pem: &str) -> Result<Self, CertError> {
        Ok(TrustBundle {
            current: Arc::new(ArcSwap::from_pointee(Roots::from_pem(pem)?)),
        })
    }

    /// A bundle from DER root certificates (at least one).
    pub fn from_certs(certs: Vec<CertificateDer<'static>>) -> Result<Self, CertError> {
        Ok(TrustBundle {
            current: Arc::new(ArcSwap::from_pointee(Roots::from_certs(certs)?)),
        })
    }

    /// Replaces the roots. Handshakes that start afterwards use the new roots;
    /// established connections are not affected.
    pub fn update(&self, pem: &str) -> Result<(), CertError> {
        let roots = Roots::from_pem(pem)?;
        tracing::info!(roots = roots.certs.len(), "mesh trust bundle updated");
        self.current.store(Arc::new(roots));
        Ok(())
    }

    /// The roots as concatenated PEM.
    pub fn to_pem(&self) -> String {
        self.current
            .load()
            .certs
            .iter()
            .map(|c| der_to_pem(c))
            .collect()
    }

    /// The root certificates, DER.
    pub fn certs(&self) -> Vec<CertificateDer<'static>> {
        self.current.load().certs.clone()
    }

    pub(crate) fn load(&self) -> Arc<Roots> {
        self.current.load_full()
    }
}

impl fmt::Debug for TrustBundle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TrustBundle")
            .field("roots", &self.current.load().certs.len())
            .finish()
    }
}

impl Roots {
    fn from_pem(pem: &str) -> Result<Self, CertError> {
        Self::from_certs(certs_from_pem("trust bundle", pem)?)
    }

    fn from_certs(certs: Vec<CertificateDer<'static>>) -> Result<Self, CertError> {
        let what = "trust bundle";
        if certs.is_empty() {
            return Err(CertError::Empty { what: what.into() });
        }
        let mut store = RootCertStore::empty();
        for cert in &certs {
            store.add(cert.clone()).map_err(|e| CertError::Parse {
                what: what.into(),
                reason: format!("not usable as a trust anchor: {e}"),
            })?;
        }
        let store = Arc::new(store);
        let client_verifier =
            WebPkiClientVerifier::builder_with_provider(store.clone(), crypto_provider())
                .build()
                .map_err(|e| CertError::Parse {
                    what: what.into(),
                    reason: format!("cannot build a verifier: {e}"),
                })?;
        Ok(Roots {
            store,
            certs,
            client_verifier,
        })
    }
}
