//! Workload metadata for Istio's standard metric labels: who the source and
//! the destination are. Values are shared `Arc<str>` so that labelling a
//! request copies pointers, not strings.

use std::collections::BTreeMap;
use std::sync::Arc;

use wire::pb;

pub const UNKNOWN: &str = "unknown";

/// One side of a request: a workload, as Istio's labels name it.
#[derive(Clone, Debug)]
pub struct PeerMeta {
    pub workload: Arc<str>,
    pub namespace: Arc<str>,
    pub principal: Arc<str>,
    pub app: Arc<str>,
    pub version: Arc<str>,
}

impl PeerMeta {
    pub fn unknown() -> Self {
        let u: Arc<str> = UNKNOWN.into();
        PeerMeta {
            workload: u.clone(),
            namespace: u.clone(),
            principal: u.clone(),
            app: u.clone(),
            version: u,
        }
    }

    /// Istio takes the workload name from the pod's owner; the control plane
    /// passes it as the `service.istio.io/workload-name` label when it knows
    /// it, else the pod name is the best name there is.
    pub fn from_labels(
        labels: &BTreeMap<String, String>,
        pod: &str,
        namespace: &str,
        principal: &str,
    ) -> Self {
        let first = |keys: &[&str]| -> Arc<str> {
            keys.iter()
                .find_map(|k| labels.get(*k).filter(|v| !v.is_empty()))
                .map_or_else(|| UNKNOWN.into(), |v| v.as_str().into())
        };
        let or_unknown = |s: &str| -> Arc<str> {
            if s.is_empty() {
                UNKNOWN.into()
            } else {
                s.into()
            }
        };
        let workload = labels
            .get("service.istio.io/workload-name")
            .map(String::as_str)
            .filter(|s| !s.is_empty())
            .unwrap_or(pod);
        PeerMeta {
            workload: or_unknown(workload),
            namespace: or_unknown(namespace),
            principal: or_unknown(principal),
            app: first(&[
                "service.istio.io/canonical-name",
                "app.kubernetes.io/name",
                "app",
            ]),
            version: first(&[
                "service.istio.io/canonical-revision",
                "app.kubernetes.io/version",
                "version",
            ]),
        }
    }

    pub fn from_node(node: &pb::Node) -> Self {
        let principal = if node.service_account.is_empty() || node.namespace.is_empty() {
            String::new()
        } else {
            // The trust domain is the control plane's to choose; Istio's default is assumed.
            format!(
                "spiffe://cluster.local/ns/{}/sa/{}",
                node.namespace, node.service_account
            )
        };
        PeerMeta::from_labels(&node.labels, &node.pod_name, &node.namespace, &principal)
    }

    /// Metadata of an endpoint: the namespace comes from "<pod>.<namespace>",
    /// else from its SPIFFE id, else from the service it belongs to.
    pub fn from_endpoint(ep: &pb::Endpoint, service_namespace: &str) -> Self {
        let (pod, ns) = ep.pod.split_once('.').unwrap_or((ep.pod.as_str(), ""));
        let ns = if !ns.is_empty() {
            ns
        } else {
            ep.identity
                .split_once("/ns/")
                .and_then(|(_, rest)| rest.split('/').next())
                .unwrap_or(service_namespace)
        };
        PeerMeta::from_labels(&ep.labels, pod, ns, &ep.identity)
    }
}

/// The destination service of a request.
#[derive(Clone, Debug)]
pub struct ServiceMeta {
    pub host: Arc<str>,
    pub name: Arc<str>,
    pub namespace: Arc<str>,
}

impl ServiceMeta {
    /// "reviews.default.svc.cluster.local" → name "reviews", namespace "default".
    /// A host outside the cluster domain ("api.example.com") has no namespace.
    pub fn from_host(host: &str) -> Self {
        if host.is_empty() {
            let u: Arc<str> = UNKNOWN.into();
            return ServiceMeta {
                host: u.clone(),
                name: u.clone(),
                namespace: u,
            };
        }
        let mut parts = host.split('.');
        let name = parts.next().unwrap_or(host);
        let namespace = if host.contains(".svc.") {
            parts.next().unwrap_or(UNKNOWN)
        } else {
            UNKNOWN
        };
        ServiceMeta {
            host: host.into(),
            name: name.into(),
            namespace: namespace.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_metadata() {
        let ep = pb::Endpoint {
            pod: "reviews-v2-abc.default".into(),
            labels: [
                ("app".to_string(), "reviews".to_string()),
                ("version".to_string(), "v2".to_string()),
            ]
            .into(),
            ..Default::default()
        };
        let m = PeerMeta::from_endpoint(&ep, "x");
        assert_eq!(&*m.workload, "reviews-v2-abc");
        assert_eq!(&*m.namespace, "default");
        assert_eq!(&*m.app, "reviews");
        assert_eq!(&*m.version, "v2");
        assert_eq!(&*m.principal, UNKNOWN);
    }

    #[test]
    fn service_from_host() {
        let s = ServiceMeta::from_host("reviews.default.svc.cluster.local");
        assert_eq!((&*s.name, &*s.namespace), ("reviews", "default"));
        let s = ServiceMeta::from_host("api.example.com");
        assert_eq!((&*s.name, &*s.namespace), ("api", UNKNOWN));
    }
}
