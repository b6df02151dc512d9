//! A Kubernetes Service's endpoints from its EndpointSlices, as Istio's
//! Kubernetes registry reads them: when a Service has slices (on a cluster,
//! the endpoint-slice controller writes them; a Service without a selector
//! has hand-written ones), they — not the selector — say which addresses
//! and ports back it. The pod an endpoint names (`targetRef`) lends it its
//! labels (subsets), service account (identity) and sidecar status.
//! Endpoints whose `ready` condition is false are left out.

use std::collections::HashMap;
use std::sync::Arc;

use api::SlimPod;
use k8s_openapi::api::discovery::v1::EndpointSlice;

use crate::registry::{ContainerPort, Registry, Workload, WorkloadKind};

/// The label naming the Service a slice belongs to.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// A Service's endpoints from its slices, with what they were read from:
/// a change to one of those objects is what changes them (see
/// [`crate::registry_patch`]).
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Sliced {
    pub(crate) workloads: Arc<[Workload]>,
    /// The slices, by name (in the Service's namespace).
    pub(crate) slices: Vec<String>,
    /// The pods their endpoints name, by (namespace, name), found or not.
    pub(crate) pods: Vec<(String, String)>,
}

impl Registry {
    /// Adds the endpoints of `slices` to the Services they name, which must
    /// already be in the registry (slices of other Services are ignored).
    /// `pods` are every pod, by (namespace, name), whether or not it has an IP.
    pub fn add_endpoint_slices(
        &mut self,
        slices: &[&EndpointSlice],
        pods: &HashMap<(&str, &str), &SlimPod>,
        domain_suffix: &str,
    ) {
        let mut by_service: HashMap<String, Vec<&EndpointSlice>> = HashMap::new();
        for slice in slices {
            let Some(hostname) = service_of(slice, domain_suffix) else {
                continue;
            };
            if self.services.contains_key(&hostname) {
                by_service.entry(hostname).or_default().push(slice);
            }
        }
        for (hostname, slices) in by_service {
            let sliced = read_slices(&slices, |ns, name| pods.get(&(ns, name)).copied());
            self.slices_cross_namespaces |= sliced.1;
            self.sliced.insert(hostname, sliced.0);
        }
    }
}

/// The hostname of the Service `slice` belongs to, if it names one.
pub(crate) fn service_of(slice: &EndpointSlice, domain_suffix: &str) -> Option<String> {
    let namespace = slice.metadata.namespace.as_deref().unwrap_or("default");
    let service = slice
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(SERVICE_NAME_LABEL))?;
    Some(crate::host::fqdn(service, namespace, domain_suffix))
}

/// The pods the endpoints of `slice` name, by (namespace, name).
pub(crate) fn pods_named(slice: &EndpointSlice) -> impl Iterator<Item = (&str, &str)> {
    let namespace = slice.metadata.namespace.as_deref().unwrap_or("default");
    slice
        .endpoints
        .iter()
        .filter_map(|e| e.target_ref.as_ref())
        .filter(|r| r.kind.as_deref() == Some("Pod"))
        .filter_map(move |r| {
            Some((
                r.namespace.as_deref().unwrap_or(namespace),
                r.name.as_deref()?,
            ))
        })
}

/// The endpoints of one Service's `slices` (in their order), the pods they
/// name found by `pod`; and whether one names a pod in another namespace.
/// A Service with slices is backed by them alone, even by none that are ready.
pub(crate) fn read_slices<'p>(
    slices: &[&EndpointSlice],
    pod: impl Fn(&str, &str) -> Option<&'p SlimPod>,
) -> (Sliced, bool) {
    let mut own = Vec::new();
    let mut cross_namespaces = false;
    let mut named = Vec::new();
    for slice in slices {
        let namespace = slice.metadata.namespace.as_deref().unwrap_or("default");
        let ports: Vec<ContainerPort> = slice
            .ports
            .iter()
            .flatten()
            .filter_map(|p| {
                Some(ContainerPort {
                    name: p.name.clone().filter(|n| !n.is_empty()),
                    port: u32::try_from(p.port?).ok()?,
                })
            })
            .collect();
        for (ns, name) in pods_named(slice) {
            cross_namespaces |= ns != namespace;
            named.push((ns.to_string(), name.to_string()));
        }
        for endpoint in &slice.endpoints {
            if endpoint.conditions.as_ref().and_then(|c| c.ready) == Some(false) {
                continue;
            }
            let pod = endpoint
                .target_ref
                .as_ref()
                .filter(|r| r.kind.as_deref() == Some("Pod"))
                .and_then(|r| {
                    pod(
                        r.namespace.as_deref().unwrap_or(namespace),
                        r.name.as_deref()?,
                    )
                });
            for address in &endpoint.addresses {
                own.push(workload(namespace, address, pod, ports.clone()));
            }
        }
    }
    let sliced = Sliced {
        workloads: own.into(),
        slices: slices
            .iter()
            .map(|s| s.metadata.name.clone().unwrap_or_default())
            .collect(),
        pods: named,
    };
    (sliced, cross_namespaces)
}

fn workload(
    namespace: &str,
    address: &str,
    pod: Option<&SlimPod>,
    ports: Vec<ContainerPort>,
) -> Workload {
    let name = pod.map_or_else(|| address.to_string(), |p| p.name.clone());
    Workload {
        // Never selected by labels: the slice attaches it to its Service.
        kind: WorkloadKind::Inline,
        workload: pod
            .and_then(crate::registry::owner_workload)
            .unwrap_or_else(|| name.clone()),
        name,
        namespace: namespace.to_string(),
        labels: pod.map(|p| p.labels.clone()).unwrap_or_default(),
        ip: address.to_string(),
        service_account: pod
            .map(|p| {
                p.service_account
                    .clone()
                    .unwrap_or_else(|| "default".into())
            })
            .unwrap_or_default(),
        ports,
        has_sidecar: pod.is_some_and(|p| p.annotations.contains_key("sidecar.istio.io/status")),
        gateway: crate::registry::has_gateway_template(pod.map(|p| &*p.annotations)),
        // Istio's locality is the node's region/zone/subzone, which a
        // slice does not carry.
        locality: String::new(),
        weight: 0,
    }
}

#[cfg(test)]
mod tests {
    use crate::{Mesh, MeshConfig};

    const CLUSTER: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: shop}
spec:
  selector: {app: reviews}
  ports: [{name: http, port: 9080, targetPort: 8080}]
---
apiVersion: v1
kind: Pod
metadata: {name: reviews-v2-abc, namespace: shop, labels: {app: reviews, version: v2}}
spec:
  serviceAccountName: bookinfo-reviews
  containers: [{name: app, image: reviews}]
status: {podIP: 10.0.0.9}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: reviews-x1, namespace: shop, labels: {kubernetes.io/service-name: reviews}}
addressType: IPv4
ports: [{name: http, port: 8080}]
endpoints:
- addresses: [10.0.0.7]
  targetRef: {kind: Pod, name: reviews-v1-def, namespace: shop}
- addresses: [10.0.0.8]
  conditions: {ready: false}
- addresses: [10.0.0.6]
---
apiVersion: v1
kind: Pod
metadata: {name: reviews-v1-def, namespace: shop, labels: {app: reviews, version: v1}}
spec:
  serviceAccountName: bookinfo-reviews
  containers: [{name: app, image: reviews}]
"#;

    fn endpoints(mesh: &Mesh, subset: &[(&str, &str)]) -> Vec<(String, u32, String)> {
        let svc = mesh
            .registry
            .service("reviews.shop.svc.cluster.local")
            .unwrap();
        let subset = subset
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        mesh.registry
            .endpoints(svc, &svc.ports[0], &subset)
            .map(|(w, port)| (w.ip.clone(), port, w.spiffe_id("cluster.local")))
            .collect()
    }

    #[test]
    fn slices_replace_the_selector_and_lend_pod_labels_and_identity() {
        let resources = api::parse("cluster.yaml", CLUSTER).unwrap();
        let mesh = Mesh::build(&resources, MeshConfig::default());
        let sa = "spiffe://cluster.local/ns/shop/sa/bookinfo-reviews".to_string();
        // The pod with an IP but in no slice is not an endpoint; the unready
        // endpoint is left out; the one without a pod has no identity.
        assert_eq!(
            endpoints(&mesh, &[]),
            [
                ("10.0.0.7".to_string(), 8080, sa.clone()),
                ("10.0.0.6".to_string(), 8080, String::new())
            ]
        );
        assert_eq!(
            endpoints(&mesh, &[("version", "v1")]),
            [("10.0.0.7".to_string(), 8080, sa)]
        );
    }

    #[test]
    fn without_slices_the_selector_picks_pods() {
        let without: Vec<_> = api::parse("cluster.yaml", CLUSTER)
            .unwrap()
            .into_iter()
            .filter(|r| r.kind() != api::Kind::EndpointSlice)
            .collect();
        let mesh = Mesh::build(&without, MeshConfig::default());
        assert_eq!(endpoints(&mesh, &[]).len(), 1);
        assert_eq!(endpoints(&mesh, &[])[0].0, "10.0.0.9");
    }
}
