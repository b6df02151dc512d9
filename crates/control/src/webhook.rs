//! The admission webhooks, served over TLS on Istio's port 15017 as istiod
//! serves them: `POST /inject` (AdmissionReview v1 for Pods, answered with
//! a JSONPatch adding the sidecar, see [`crate::inject`]) and
//! `POST /validate` (Istio resources, refused with `trellis validate`'s
//! messages and field paths).
//!
//! The serving certificate is the mesh CA's, for the istiod Service's names
//! (see [`crate::serving_cert`]): the leader patches the mesh root into the
//! webhook configurations' `caBundle` (see [`crate::webhook_config`]).

use std::sync::{Arc, Weak};
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::routing::{get, post};
use hyper_util::rt::{TokioExecutor, TokioIo};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::Api;
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use rustls::ServerConfig;

use crate::ControlPlane;
use crate::inject::{self, Decision, Scope};

#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("the webhooks' serving certificate needs the mesh CA (--ca-dir)")]
    NoCa,
    #[error(transparent)]
    ServingCert(#[from] crate::serving_cert::ServingCertError),
}

/// What the handlers need.
pub struct Webhooks {
    /// How to inject; its mesh config is replaced by the control plane's
    /// current one on every request.
    pub injection: inject::Config,
    pub control_plane: Weak<ControlPlane>,
    /// Reads the namespaces' labels; `None` off Kubernetes, where the
    /// caller's selection stands.
    pub client: Option<kube::Client>,
}

/// Serves the webhooks on `listener` until `stop` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    tls: Arc<ServerConfig>,
    webhooks: Arc<Webhooks>,
    stop: impl Future<Output = ()>,
) {
    let app = axum::Router::new()
        .route("/inject", post(inject_handler))
        .route("/validate", post(validate_handler))
        .route("/ready", get(|| async { "ready\n" }))
        .with_state(webhooks);
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let mut stop = std::pin::pin!(stop);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(error) => {
                    tracing::warn!(%error, "webhook accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut stop => return,
        };
        let (acceptor, app) = (acceptor.clone(), app.clone());
        tokio::spawn(async move {
            let tls = match acceptor.accept(tcp).await {
                Ok(t) => t,
                Err(error) => {
                    return tracing::debug!(%peer, %error, "webhook TLS handshake failed");
                }
            };
            let service = hyper_util::service::TowerToHyperService::new(app);
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tls), service)
                .await;
        });
    }
}

type Review = AdmissionReview<DynamicObject>;

fn request_of(review: Review) -> Result<AdmissionRequest<DynamicObject>, Box<Json<Review>>> {
    review.try_into().map_err(|_| {
        Box::new(Json(
            AdmissionResponse::invalid("not an AdmissionReview request").into_review(),
        ))
    })
}

async fn inject_handler(
    State(webhooks): State<Arc<Webhooks>>,
    Json(review): Json<Review>,
) -> Json<Review> {
    let req = match request_of(review) {
        Ok(r) => r,
        Err(invalid) => return *invalid,
    };
    Json(webhooks.admit_pod(&req).await.into_review())
}

async fn validate_handler(Json(review): Json<Review>) -> Json<Review> {
    let req = match request_of(review) {
        Ok(r) => r,
        Err(invalid) => return *invalid,
    };
    Json(validate(&req).into_review())
}

impl Webhooks {
    async fn admit_pod(&self, req: &AdmissionRequest<DynamicObject>) -> AdmissionResponse {
        let allow = AdmissionResponse::from(req);
        if req.kind.kind != "Pod" || req.operation != Operation::Create {
            return allow;
        }
        let Some(object) = &req.object else {
            return allow;
        };
        let original = match serde_json::to_value(object).and_then(serde_json::from_value::<Pod>) {
            Ok(p) => p,
            Err(e) => return allow.deny(format!("the object is not a Pod: {e}")),
        };
        let namespace = req
            .namespace
            .clone()
            .or_else(|| original.metadata.namespace.clone())
            .unwrap_or_else(|| "default".into());
        let mut pod = original;
        pod.metadata.namespace = Some(namespace.clone());
        let ns = match &self.client {
            Some(client) => match Api::<Namespace>::all(client.clone()).get(&namespace).await {
                Ok(ns) => Some(ns.metadata),
                Err(e) => {
                    return allow.deny(format!(
                        "sidecar injection: cannot read namespace {namespace}: {e}"
                    ));
                }
            },
            None => None,
        };
        let labels = ns.as_ref().map(|m| m.labels.clone().unwrap_or_default());
        let scope = match &labels {
            Some(labels) => Scope::Namespace {
                name: &namespace,
                labels,
            },
            None => Scope::Chosen,
        };
        let name = pod
            .metadata
            .name
            .clone()
            .or_else(|| pod.metadata.generate_name.clone())
            .unwrap_or_default();
        let mut config = self.config();
        match inject::decide(&pod, scope, config.policy, &config.revision) {
            Decision::Skip(why) => {
                tracing::debug!(pod = %name, %namespace, reason = %why, "not injected");
                return allow;
            }
            Decision::Inject => {}
        }
        match inject::Discovery::chosen(ns.as_ref().and_then(|m| m.annotations.as_ref())) {
            Ok(chosen) => config.namespace_discovery = chosen.unwrap_or_default(),
            Err(e) => {
                return allow.deny(format!(
                    "sidecar injection: namespace {namespace}: annotation {}: {e}",
                    inject::DISCOVERY_ANNOTATION
                ));
            }
        }
        let injected = match inject::inject(&pod, &config, None) {
            Ok(i) => i,
            Err(e) => {
                tracing::info!(pod = %name, %namespace, error = %e, "injection refused");
                return allow.deny(format!("sidecar injection: {e}"));
            }
        };
        let patch = match inject::patch(&pod, &injected.pod) {
            Ok(p) => p,
            Err(e) => return allow.deny(format!("sidecar injection: {e}")),
        };
        tracing::info!(pod = %name, %namespace, "injected the sidecar");
        let mut response = match allow.clone().with_patch(patch) {
            Ok(r) => r,
            Err(e) => return allow.deny(format!("sidecar injection: {e}")),
        };
        if !injected.warnings.is_empty() {
            response.warnings = Some(injected.warnings);
        }
        response
    }

    fn config(&self) -> inject::Config {
        let mut config = self.injection.clone();
        if let Some(cp) = self.control_plane.upgrade() {
            config.mesh = cp.mesh().config.clone();
        }
        config
    }
}

/// Istio resources as `trellis validate` checks them: parse errors and rule
/// violations refuse the object, each with its field path; what is
/// accepted but not enforced comes back as a warning.
fn validate(req: &AdmissionRequest<DynamicObject>) -> AdmissionResponse {
    let allow = AdmissionResponse::from(req);
    if !matches!(req.operation, Operation::Create | Operation::Update) {
        return allow;
    }
    let Some(object) = &req.object else {
        return allow;
    };
    let mut value = match serde_json::to_value(object) {
        Ok(v) => v,
        Err(e) => return allow.deny(format!("cannot read the object: {e}")),
    };
    // Fields the API server keeps are none of the resource's content.
    if let Some(meta) = value.get_mut("metadata").and_then(|m| m.as_object_mut()) {
        meta.remove("managedFields");
    }
    if let Some(fields) = value.as_object_mut() {
        fields.remove("status");
    }
    let source = format!(
        "{}/{}",
        req.namespace.as_deref().unwrap_or_default(),
        req.name
    );
    let resource = match api::parse_value(&source, value) {
        Ok(r) => r,
        Err(e) => {
            let at = if e.path.is_empty() {
                String::new()
            } else {
                format!("{}: ", e.path)
            };
            return allow.deny(format!("configuration is invalid: {at}{}", e.message));
        }
    };
    let errors = api::validate(&resource);
    if !errors.is_empty() {
        let list: Vec<String> = errors.iter().map(ToString::to_string).collect();
        return allow.deny(format!("configuration is invalid: {}", list.join("; ")));
    }
    let mut warnings = Vec::new();
    if let api::Resource::Unsupported { kind, reason, .. } = &resource {
        warnings.push(format!("{kind}: {reason}"));
    }
    if let Some(w) = model::analyze::not_enforced(&resource) {
        warnings.push(w);
    }
    let mut response = allow;
    if !warnings.is_empty() {
        response.warnings = Some(warnings);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn review(object: serde_json::Value, operation: &str) -> AdmissionRequest<DynamicObject> {
        let review: Review = serde_json::from_value(json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "u1",
                "kind": {"group": "networking.istio.io", "version": "v1", "kind": "VirtualService"},
                "resource": {"group": "networking.istio.io", "version": "v1", "resource": "virtualservices"},
                "name": "reviews",
                "namespace": "shop",
                "operation": operation,
                "userInfo": {},
                "object": object,
            }
        }))
        .unwrap();
        review.try_into().unwrap()
    }

    #[test]
    fn validation_refuses_with_field_paths() {
        let vs = |weight: i64| {
            json!({
                "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
                "metadata": {"name": "reviews", "namespace": "shop", "managedFields": [{"manager": "kubectl"}]},
                "spec": {"hosts": ["reviews"], "http": [{"route": [
                    {"destination": {"host": "reviews", "subset": "v1"}, "weight": weight},
                    {"destination": {"host": "reviews", "subset": "v2"}, "weight": 50}]}]}
            })
        };
        let ok = validate(&review(vs(50), "CREATE"));
        assert!(ok.allowed, "{:?}", ok.result);
        let refused = validate(&review(vs(-5), "CREATE"));
        assert!(!refused.allowed);
        assert!(
            refused
                .result
                .message
                .contains("spec.http[0].route[0].weight"),
            "{}",
            refused.result.message
        );
        let mut unknown = vs(50);
        unknown["spec"]["htp"] = json!([]);
        let refused = validate(&review(unknown, "UPDATE"));
        assert!(!refused.allowed);
        assert!(
            refused.result.message.contains("htp"),
            "{}",
            refused.result.message
        );
        // Deleting is never refused.
        assert!(validate(&review(vs(-5), "DELETE")).allowed);
    }
}
