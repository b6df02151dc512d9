//! Workload identity on Kubernetes, as istiod establishes it: a proxy
//! presents its pod's projected service-account token (audience
//! `istio-ca`), and the API server's TokenReview says whether it is valid
//! and whose it is. The proxy is then that namespace's service account, and
//! nothing else — whatever its CSR or node claims.

use identity::SpiffeId;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use kube::api::{Api, PostParams};
use wire::certs::BearerToken;

use crate::ca_service::Authenticator;

/// The audience Istio's proxies request their tokens for.
pub const AUDIENCE: &str = "istio-ca";
/// How the API server names a service account as a user.
const SERVICE_ACCOUNT_USER: &str = "system:serviceaccount:";

/// Authenticates callers by TokenReview (trellisd needs `create` on
/// `tokenreviews.authentication.k8s.io`, as istiod has).
pub struct TokenReviews<F> {
    client: kube::Client,
    /// The mesh's trust domain right now.
    trust_domain: F,
}

impl<F> TokenReviews<F>
where
    F: Fn() -> String + Send + Sync + 'static,
{
    pub fn new(client: kube::Client, trust_domain: F) -> Self {
        TokenReviews {
            client,
            trust_domain,
        }
    }
}

#[tonic::async_trait]
impl<F> Authenticator for TokenReviews<F>
where
    F: Fn() -> String + Send + Sync + 'static,
{
    async fn authenticate(&self, token: &BearerToken) -> Result<SpiffeId, String> {
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.expose().to_string()),
                audiences: Some(vec![AUDIENCE.into()]),
            },
            ..Default::default()
        };
        let reviewed = Api::<TokenReview>::all(self.client.clone())
            .create(&PostParams::default(), &review)
            .await
            .map_err(|e| format!("the Kubernetes TokenReview failed: {e}"))?;
        let status = reviewed.status.unwrap_or_default();
        if status.authenticated != Some(true) {
            return Err(format!(
                "the Kubernetes API server did not accept the token: {}",
                status.error.as_deref().unwrap_or("not authenticated")
            ));
        }
        // A token for no audience in particular is reviewed against the API
        // server's own; only one made for the CA is accepted.
        if !status
            .audiences
            .as_deref()
            .unwrap_or_default()
            .iter()
            .any(|a| a == AUDIENCE)
        {
            return Err(format!("the token is not for the audience {AUDIENCE:?}"));
        }
        let username = status.user.and_then(|u| u.username).unwrap_or_default();
        let (namespace, account) = service_account(&username)
            .ok_or_else(|| format!("the token is {username:?}'s, not a service account's"))?;
        SpiffeId::new(&(self.trust_domain)(), namespace, account).map_err(|e| e.to_string())
    }
}

/// `(namespace, service account)` of `system:serviceaccount:NS:SA`.
fn service_account(username: &str) -> Option<(&str, &str)> {
    let (namespace, account) = username
        .strip_prefix(SERVICE_ACCOUNT_USER)?
        .split_once(':')?;
    (!namespace.is_empty() && !account.is_empty() && !account.contains(':'))
        .then_some((namespace, account))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_service_account_users_are_workloads() {
        assert_eq!(
            service_account("system:serviceaccount:prod:sleep"),
            Some(("prod", "sleep"))
        );
        assert_eq!(service_account("admin"), None);
        assert_eq!(service_account("system:serviceaccount:prod"), None);
        assert_eq!(service_account("system:serviceaccount::sleep"), None);
        assert_eq!(service_account("system:serviceaccount:a:b:c"), None);
    }
}
