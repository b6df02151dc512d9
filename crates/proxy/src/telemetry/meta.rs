//! Workload metadata for Istio's standard metric labels: who the source and
//! the destination are. Values are shared `Arc<str>` so that labelling a
//! request copies pointers, not strings.

use std::collections::{BTreeMap, HashMap};
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
        Self::from_names(names(labels, pod, namespace, principal))
    }

    fn from_names([workload, namespace, principal, app, version]: Names<'_>) -> Self {
        PeerMeta {
            workload: workload.into(),
            namespace: namespace.into(),
            principal: principal.into(),
            app: app.into(),
            version: version.into(),
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
}

/// Workload, namespace, principal, app, version; never empty.
type Names<'a> = [&'a str; 5];

fn names<'a>(
    labels: &'a BTreeMap<String, String>,
    workload: &'a str,
    namespace: &'a str,
    principal: &'a str,
) -> Names<'a> {
    let first = |keys: &[&str]| -> &'a str {
        keys.iter()
            .find_map(|k| labels.get(*k).filter(|v| !v.is_empty()))
            .map_or(UNKNOWN, String::as_str)
    };
    let or_unknown = |s: &'a str| if s.is_empty() { UNKNOWN } else { s };
    let workload = labels
        .get("service.istio.io/workload-name")
        .map(String::as_str)
        .filter(|s| !s.is_empty())
        .unwrap_or(workload);
    [
        or_unknown(workload),
        or_unknown(namespace),
        or_unknown(principal),
        first(&[
            "service.istio.io/canonical-name",
            "app.kubernetes.io/name",
            "app",
        ]),
        first(&[
            "service.istio.io/canonical-revision",
            "app.kubernetes.io/version",
            "version",
        ]),
    ]
}

/// The metadata of a cluster's endpoints, one shared copy per workload: a
/// cluster lists every replica of a workload, and the labels are the same.
#[derive(Default)]
pub struct EndpointMetas<'a>(HashMap<Names<'a>, Arc<PeerMeta>>);

impl<'a> EndpointMetas<'a> {
    /// Metadata of an endpoint: the workload is the control plane's
    /// (the Deployment's name), else the pod's; the namespace comes from
    /// "<pod>.<namespace>", else from its SPIFFE id, else from the service
    /// it belongs to.
    pub fn of(&mut self, ep: &'a pb::Endpoint, service_namespace: &'a str) -> Arc<PeerMeta> {
        let (pod, ns) = ep.pod.split_once('.').unwrap_or((ep.pod.as_str(), ""));
        let ns = if !ns.is_empty() {
            ns
        } else {
            ep.identity
                .split_once("/ns/")
                .and_then(|(_, rest)| rest.split('/').next())
                .unwrap_or(service_namespace)
        };
        let workload = if ep.workload.is_empty() {
            pod
        } else {
            ep.workload.as_str()
        };
        let names = names(&ep.labels, workload, ns, &ep.identity);
        self.0
            .entry(names)
            .or_insert_with(|| Arc::new(PeerMeta::from_names(names)))
            .clone()
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
        let mut metas = EndpointMetas::default();
        let m = metas.of(&ep, "x");
        assert_eq!(&*m.workload, "reviews-v2-abc");
        assert_eq!(&*m.namespace, "default");
        assert_eq!(&*m.app, "reviews");
        assert_eq!(&*m.version, "v2");
        assert_eq!(&*m.principal, UNKNOWN);

        // The control plane's workload name (the Deployment's) wins over
        // the pod's, and replicas share one copy.
        let replica = |pod: &str| pb::Endpoint {
            pod: pod.into(),
            workload: "reviews-v2".into(),
            ..ep.clone()
        };
        let (a, b) = (
            replica("reviews-v2-abc.default"),
            replica("reviews-v2-def.default"),
        );
        let (ma, mb) = (metas.of(&a, "x"), metas.of(&b, "x"));
        assert_eq!(&*ma.workload, "reviews-v2");
        assert!(Arc::ptr_eq(&ma, &mb));
    }

    #[test]
    fn service_from_host() {
        let s = ServiceMeta::from_host("reviews.default.svc.cluster.local");
        assert_eq!((&*s.name, &*s.namespace), ("reviews", "default"));
        let s = ServiceMeta::from_host("api.example.com");
        assert_eq!((&*s.name, &*s.namespace), ("api", UNKNOWN));
    }
}
