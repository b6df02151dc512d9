//! The proxy's workload certificate: its own key and a CSR for its own
//! identity, signed by the control plane's CA, renewed at half-life (see
//! [`identity::CertManager`]). The proxy asks only for the identity its node
//! names; the CA checks that against the workload's token anyway.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use identity::{CertChain, CertManager, SpiffeId, TrustBundle};
use wire::address::XdsAddress;
use wire::certs::TokenSource;

use super::MeshTls;

/// Where and how to obtain the workload certificate. Its `Debug` shows no
/// token (see [`wire::certs::BearerToken`]).
#[derive(Clone, Debug)]
pub struct WorkloadIdentity {
    /// The certificate service ("https://127.10.0.1:15012", usually the
    /// discovery address).
    pub ca_address: XdsAddress,
    /// Proves to the CA which workload this is; read again for every
    /// request (a projected token is rotated). Never logged.
    pub token: TokenSource,
    pub trust_domain: String,
    /// Lifetime to ask for; `None`: the CA's default (24 h).
    pub cert_ttl: Option<Duration>,
}

/// Why the proxy cannot even start asking for a certificate.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("the node does not name a valid workload identity: {0}")]
    Id(#[from] identity::SpiffeIdError),
    #[error("the CA sent no mesh roots")]
    NoRoots,
    #[error("mesh TLS config: {0}")]
    Tls(#[from] identity::TlsError),
}

/// Starts obtaining and renewing the certificate of `namespace/service_account`.
///
/// Returns the renewal loop (to run for the life of the proxy) and a future
/// that resolves to the mesh TLS state once the first certificate and the
/// mesh roots are in. The loop retries with backoff while the CA is away.
pub fn start(
    config: &WorkloadIdentity,
    namespace: &str,
    service_account: &str,
) -> Result<
    (
        impl Future<Output = ()> + Send + 'static,
        impl Future<Output = Result<Arc<MeshTls>, IdentityError>> + Send + 'static,
    ),
    IdentityError,
> {
    let id = SpiffeId::new(&config.trust_domain, namespace, service_account)?;
    let certs = Arc::new(CertManager::new(id));
    // Set from the first response; later responses update it in place (root rotation).
    let roots: Arc<OnceLock<TrustBundle>> = Arc::default();
    let renewal = {
        let (certs, roots, config) = (certs.clone(), roots.clone(), config.clone());
        async move {
            certs.run(|csr| fetch(&config, &roots, csr)).await;
        }
    };
    let ready = async move {
        certs.wait_ready().await;
        // The roots are set before the chain is returned to the manager, so
        // they are there once it has a certificate.
        let roots = roots.get().cloned().ok_or(IdentityError::NoRoots)?;
        tracing::info!(id = %certs.id(), "workload certificate ready");
        Ok(Arc::new(MeshTls::new(certs, roots)?))
    };
    Ok((renewal, ready))
}

/// One request to the CA; installs the roots that come with the chain.
async fn fetch(
    config: &WorkloadIdentity,
    roots: &OnceLock<TrustBundle>,
    csr: String,
) -> Result<CertChain, String> {
    let token = config.token.read().await.map_err(|e| e.to_string())?;
    let issued = wire::certs::create_certificate(&config.ca_address, &token, csr, config.cert_ttl)
        .await
        .map_err(|e| e.to_string())?;
    let chain = CertChain::from_pem(&issued.chain_pem).map_err(|e| e.to_string())?;
    let received = TrustBundle::from_pem(&issued.roots_pem).map_err(|e| e.to_string())?;
    match roots.get() {
        // Only a real change is applied (and logged): the CA sends the roots every time.
        Some(bundle) if bundle.certs() != received.certs() => {
            bundle
                .update(&issued.roots_pem)
                .map_err(|e| e.to_string())?;
        }
        Some(_) => {}
        None => {
            let _ = roots.set(received);
        }
    }
    Ok(chain)
}
