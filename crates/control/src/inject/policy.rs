//! Whether a pod gets a sidecar: Istio's injection policy, in the order
//! istiod decides it — host-network pods and the system namespaces never;
//! a pod that has one already never again; then the namespace's labels
//! (`istio-injection` before `istio.io/rev`), then the pod's own
//! `sidecar.istio.io/inject` (its label over its annotation), then the
//! injector's default policy.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;

use super::{PROXY_CONTAINER, STATUS_ANNOTATION};

/// Istio's `sidecar.istio.io/inject`, a label (current) or an annotation (older).
pub const INJECT: &str = "sidecar.istio.io/inject";
/// The namespace label that turns injection on (`enabled`) or off (`disabled`).
pub const NAMESPACE_INJECTION: &str = "istio-injection";
/// The namespace (or pod) label naming the control-plane revision that injects.
pub const REVISION: &str = "istio.io/rev";

/// Namespaces istiod never injects in.
const IGNORED_NAMESPACES: &[&str] = &["kube-system", "kube-public"];

/// The injector's `policy`: what an unlabelled pod in a selected namespace gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Policy {
    /// Inject unless the pod says `sidecar.istio.io/inject: "false"` (Istio's default).
    #[default]
    Enabled,
    /// Inject only pods that say `sidecar.istio.io/inject: "true"`.
    Disabled,
}

/// Where the pod is, as far as the decision goes.
#[derive(Clone, Copy, Debug)]
pub enum Scope<'a> {
    /// A pod being created in a namespace with these labels (the webhook).
    Namespace {
        name: &'a str,
        labels: &'a BTreeMap<String, String>,
    },
    /// The caller chose the pod already (`kube-inject`, as `istioctl
    /// kube-inject` injects whatever file it is given).
    Chosen,
}

/// The decision, with the reason for a skip (logged by the webhook, shown by kube-inject).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    Inject,
    Skip(String),
}

/// Istio's `injectRequired`, with the namespace selection the webhook's
/// configuration does in front of it.
pub fn decide(pod: &Pod, scope: Scope<'_>, policy: Policy, revision: &str) -> Decision {
    let skip = |why: String| Decision::Skip(why);
    let spec = pod.spec.as_ref();
    if spec.and_then(|s| s.host_network).unwrap_or(false) {
        return skip("the pod uses the host's network".into());
    }
    let meta = &pod.metadata;
    if meta
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(STATUS_ANNOTATION))
        || spec.is_some_and(|s| {
            s.containers.iter().any(|c| c.name == PROXY_CONTAINER)
                || s.init_containers
                    .iter()
                    .flatten()
                    .any(|c| c.name == PROXY_CONTAINER)
        })
    {
        return skip("the pod has a sidecar already".into());
    }
    // The pod's own word: the label wins over the (deprecated) annotation.
    let own = meta
        .labels
        .as_ref()
        .and_then(|l| l.get(INJECT))
        .or_else(|| meta.annotations.as_ref().and_then(|a| a.get(INJECT)));
    let own = own.map(|v| matches!(v.to_ascii_lowercase().as_str(), "y" | "yes" | "true" | "on"));
    if let Scope::Namespace { name, labels } = scope {
        if IGNORED_NAMESPACES.contains(&name) {
            return skip(format!("namespace {name} is never injected"));
        }
        match (
            labels.get(NAMESPACE_INJECTION).map(String::as_str),
            labels.get(REVISION),
        ) {
            (Some("enabled"), _) => {}
            (Some(other), _) => {
                return skip(format!(
                    "namespace {name} has {NAMESPACE_INJECTION}={other}"
                ));
            }
            (None, Some(rev)) if rev != revision => {
                return skip(format!(
                    "namespace {name} is injected by revision {rev}, this is {revision}"
                ));
            }
            (None, Some(_)) => {}
            // Not selected by its namespace: only a pod that asks for a
            // sidecar (and names no other revision) gets one.
            (None, None) => {
                let pod_rev = meta.labels.as_ref().and_then(|l| l.get(REVISION));
                return match (own, pod_rev) {
                    (Some(true), None) => Decision::Inject,
                    (_, Some(rev)) if rev == revision && own != Some(false) => Decision::Inject,
                    _ => skip(format!(
                        "namespace {name} has neither {NAMESPACE_INJECTION}=enabled nor {REVISION}, and the pod does not ask for a sidecar"
                    )),
                };
            }
        }
    }
    match (own, policy) {
        (Some(true), _) | (None, Policy::Enabled) => Decision::Inject,
        (Some(false), _) => skip(format!("the pod says {INJECT}: false")),
        (None, Policy::Disabled) => skip(format!(
            "the injection policy is disabled and the pod does not say {INJECT}: true"
        )),
    }
}
