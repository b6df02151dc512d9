//! A Kubernetes Service's endpoints from its EndpointSlices, as Istio's
//! Kubernetes registry reads them: when a Service has slices (on a cluster,
//! the endpoint-slice controller writes them; a Service without a selector
//! has hand-written ones), they — not the selector — say which addresses
//! and ports back it. The pod an endpoint names (`targetRef`) lends it its
//! labels (subsets), service account (identity) and sidecar status.
//! Endpoints whose `ready` condition is false are left out.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::discovery::v1::EndpointSlice;

use crate::registry::{ContainerPort, Registry, Workload, WorkloadKind};

/// The label naming the Service a slice belongs to.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

impl Registry {
    /// Adds the endpoints of `slices` to the Services they name, which must
    /// already be in the registry (slices of other Services are ignored).
    /// `pods` are every pod, by (namespace, name), whether or not it has an IP.
    pub fn add_endpoint_slices(
        &mut self,
        slices: &[&EndpointSlice],
        pods: &HashMap<(&str, &str), &Pod>,
        domain_suffix: &str,
    ) {
        for slice in slices {
            let namespace = slice.metadata.namespace.as_deref().unwrap_or("default");
            let Some(service) = slice
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(SERVICE_NAME_LABEL))
            else {
                continue;
            };
            let hostname = crate::host::fqdn(service, namespace, domain_suffix);
            if !self.services.contains_key(&hostname) {
                continue;
            }
            // A Service with slices is backed by them alone, even by none
            // that are ready.
            let mut own = self.sliced.remove(&hostname).unwrap_or_default();
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
            for endpoint in &slice.endpoints {
                if endpoint.conditions.as_ref().and_then(|c| c.ready) == Some(false) {
                    continue;
                }
                let pod = endpoint
                    .target_ref
                    .as_ref()
                    .filter(|r| r.kind.as_deref() == Some("Pod"))
                    .and_then(|r| {
                        let ns = r.namespace.as_deref().unwrap_or(namespace);
                        self.slices_cross_namespaces |= ns != namespace;
                        pods.get(&(ns, r.name.as_deref()?)).copied()
                    });
                for address in &endpoint.addresses {
                    own.push(self.workloads.len());
                    self.workloads
                        .push(workload(namespace, address, pod, ports.clone()));
                }
            }
            self.sliced.insert(hostname, own);
        }
    }
}

fn workload(
    namespace: &str,
    address: &str,
    pod: Option<&Pod>,
    ports: Vec<ContainerPort>,
) -> Workload {
    let meta = pod.map(|p| &p.metadata);
    let name = meta
        .and_then(|m| m.name.clone())
        .unwrap_or_else(|| address.to_string());
    Workload {
        // Never selected by labels: the slice attaches it to its Service.
        kind: WorkloadKind::Inline,
        workload: pod
            .and_then(crate::registry::owner_workload)
            .unwrap_or_else(|| name.clone()),
        name,
        namespace: namespace.to_string(),
        labels: meta.and_then(|m| m.labels.clone()).unwrap_or_default(),
        ip: address.to_string(),
        service_account: pod
            .and_then(|p| p.spec.as_ref())
            .map(|s| {
                s.service_account_name
                    .clone()
                    .unwrap_or_else(|| "default".into())
            })
            .unwrap_or_default(),
        ports,
        has_sidecar: meta
            .and_then(|m| m.annotations.as_ref())
            .is_some_and(|a| a.contains_key("sidecar.istio.io/status")),
        gateway: crate::registry::has_gateway_template(meta.and_then(|m| m.annotations.as_ref())),
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
