//! The certificate service (Istio's IstioCertificateService): a proxy sends a
//! CSR with its bootstrap token; the control plane works out from the token
//! alone who the caller is, and the CA signs the CSR only for that identity.
//!
//! Served with discovery on the TLS port only, as istiod serves both on
//! 15012: a request on the plaintext port is refused before its token is
//! looked at (see [`wire::server::TOKEN_OVER_PLAINTEXT`]).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use identity::{CaError, SpiffeId};
use tonic::{Request, Response, Status};
use wire::certs::BearerToken;
use wire::pb::certificate_service_server::{CertificateService, CertificateServiceServer};
use wire::pb::{CertificateRequest, CertificateResponse};

use crate::bootstrap_token::TokenSecret;
use crate::live_ca::LiveCa;

/// Who may ask for a certificate, and as whom.
#[tonic::async_trait]
pub trait Authenticator: Send + Sync + 'static {
    /// The identity `token` proves, or why it proves none. Async: proving
    /// may take asking another service (Kubernetes' TokenReview).
    async fn authenticate(&self, token: &BearerToken) -> Result<SpiffeId, String>;
}

/// Bootstrap tokens from `trellis up`: a token is valid for a service account
/// of a workload the control plane knows, in its trust domain.
pub struct BootstrapTokens<F> {
    secret: TokenSecret,
    /// `(trust domain, [(namespace, service account)])` of the mesh right now.
    known: F,
}

impl<F> BootstrapTokens<F>
where
    F: Fn() -> (String, BTreeSet<(String, String)>) + Send + Sync + 'static,
{
    pub fn new(secret: TokenSecret, known: F) -> Self {
        BootstrapTokens { secret, known }
    }
}

#[tonic::async_trait]
impl<F> Authenticator for BootstrapTokens<F>
where
    F: Fn() -> (String, BTreeSet<(String, String)>) + Send + Sync + 'static,
{
    async fn authenticate(&self, token: &BearerToken) -> Result<SpiffeId, String> {
        let (trust_domain, accounts) = (self.known)();
        // Every candidate is checked, so the time taken does not tell which
        // service account came close.
        let mut found = None;
        for (ns, sa) in &accounts {
            if self.secret.verify(token.expose(), ns, sa) && found.is_none() {
                found = Some((ns, sa));
            }
        }
        let (ns, sa) =
            found.ok_or("the token is not the bootstrap token of any workload in the mesh")?;
        SpiffeId::new(&trust_domain, ns, sa).map_err(|e| e.to_string())
    }
}

/// Refuses everyone: for a control plane started without a way to authenticate workloads.
pub struct NoAuthenticator;

#[tonic::async_trait]
impl Authenticator for NoAuthenticator {
    async fn authenticate(&self, _token: &BearerToken) -> Result<SpiffeId, String> {
        Err("this control plane has no way to authenticate workloads (start trellisd with --token-secret)".into())
    }
}

pub struct CaService {
    ca: Arc<LiveCa>,
    auth: Arc<dyn Authenticator>,
}

impl CaService {
    pub fn new(ca: Arc<LiveCa>, auth: Arc<dyn Authenticator>) -> CertificateServiceServer<Self> {
        CertificateServiceServer::new(CaService { ca, auth })
    }
}

#[tonic::async_trait]
impl CertificateService for CaService {
    async fn create_certificate(
        &self,
        request: Request<CertificateRequest>,
    ) -> Result<Response<CertificateResponse>, Status> {
        let peer = request
            .remote_addr()
            .map_or_else(|| "unknown".to_string(), |a| a.to_string());
        if !wire::server::over_tls(&request) {
            tracing::warn!(%peer, "certificate request refused: it came over plaintext");
            return Err(Status::unauthenticated(wire::server::TOKEN_OVER_PLAINTEXT));
        }
        let Some(token) = BearerToken::from_metadata(request.metadata()) else {
            tracing::warn!(%peer, "certificate request refused: no `authorization: Bearer <token>` metadata");
            return Err(Status::unauthenticated(
                "send the bootstrap token as `authorization: Bearer <token>`",
            ));
        };
        let id = match self.auth.authenticate(&token).await {
            Ok(id) => id,
            Err(reason) => {
                tracing::warn!(%peer, %reason, "certificate request refused: not authenticated");
                return Err(Status::unauthenticated(reason));
            }
        };
        let CertificateRequest {
            csr,
            validity_seconds,
        } = request.into_inner();
        let ttl = u64::try_from(validity_seconds)
            .ok()
            .filter(|s| *s > 0)
            .map(Duration::from_secs);
        // The CA now: a reload while this request is signed does not mix
        // the new chain with the old roots.
        let ca = self.ca.current();
        let roots = ca.roots();
        let signer_id = id.clone();
        // Signing is CPU work: keep it off the threads that serve discovery streams.
        let signed = tokio::task::spawn_blocking(move || ca.sign(&csr, &signer_id, ttl))
            .await
            .map_err(|_| Status::internal("the signer stopped"))?;
        // The CA logs the issued or refused certificate itself; add who asked.
        let chain = signed.map_err(|e| {
            tracing::warn!(%peer, %id, "certificate request refused by the CA");
            match e {
                CaError::IdentityMismatch { .. } => Status::permission_denied(e.to_string()),
                CaError::Csr(_) | CaError::Ttl(_) => Status::invalid_argument(e.to_string()),
                other => Status::internal(other.to_string()),
            }
        })?;
        Ok(Response::new(CertificateResponse {
            cert_chain: chain.pem_blocks(),
            roots,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn known() -> (String, BTreeSet<(String, String)>) {
        let accounts = [
            ("default", "sleep"),
            ("default", "httpbin"),
            ("prod", "sleep"),
        ]
        .into_iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
        ("cluster.local".into(), accounts)
    }

    #[tokio::test]
    async fn a_token_maps_to_exactly_its_service_account() {
        let secret = TokenSecret::from_bytes(&[1; 32]);
        let auth = BootstrapTokens::new(secret.clone(), known);
        let id = auth
            .authenticate(&BearerToken::new(secret.token("prod", "sleep")))
            .await
            .expect("known");
        assert_eq!(id.to_string(), "spiffe://cluster.local/ns/prod/sa/sleep");
        // A well-formed token of a service account no workload runs as.
        assert!(
            auth.authenticate(&BearerToken::new(secret.token("prod", "ghost")))
                .await
                .is_err()
        );
        // A token made with another secret.
        let other = TokenSecret::from_bytes(&[2; 32]);
        assert!(
            auth.authenticate(&BearerToken::new(other.token("default", "sleep")))
                .await
                .is_err()
        );
    }
}
