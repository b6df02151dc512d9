//! What one proxy may see of the mesh: the egress hosts of the Sidecar
//! resource that applies to it, and every resource's `exportTo`. Istio's
//! main lever on sidecar memory: a proxy only receives the services it may call.

use api::Object;
use api::networking::Sidecar;
use wire::pb::{self, ProxyKind};

use crate::mesh::Mesh;

#[derive(Clone, Debug)]
pub struct Scope {
    pub namespace: String,
    /// `(namespace pattern, host pattern)` from the Sidecar's egress hosts;
    /// `None` when no Sidecar applies (everything exported is visible).
    egress: Option<Vec<(String, String)>>,
    /// Identifies proxies that see the same outbound config, for caching.
    pub key: String,
    /// outboundTrafficPolicy REGISTRY_ONLY: the Sidecar's, else the mesh's.
    pub registry_only: bool,
}

impl Scope {
    pub fn for_node(mesh: &Mesh, node: &pb::Node) -> Scope {
        let ns = node.namespace.clone();
        let sidecar = (node.kind() == ProxyKind::Sidecar)
            .then(|| applicable_sidecar(mesh, node))
            .flatten();
        let mesh_registry_only = mesh.config.outbound_traffic_policy.mode == "REGISTRY_ONLY";
        let Some(sidecar) = sidecar else {
            return Scope {
                key: format!("{ns}|"),
                namespace: ns,
                egress: None,
                registry_only: mesh_registry_only,
            };
        };
        let registry_only = match sidecar
            .spec
            .outbound_traffic_policy
            .as_ref()
            .and_then(|p| p.mode)
        {
            Some(api::networking::OutboundTrafficPolicyMode::RegistryOnly) => true,
            Some(_) => false,
            None => mesh_registry_only,
        };
        let sidecar_ns = sidecar.metadata.namespace.as_deref().unwrap_or("default");
        // No egress section: Istio's default, every host (only the traffic policy applies).
        let egress = (!sidecar.spec.egress.is_empty()).then(|| {
            sidecar
                .spec
                .egress
                .iter()
                .flat_map(|e| &e.hosts)
                .filter_map(|h| {
                    let (n, host) = h.split_once('/')?;
                    let n = if n == "." { sidecar_ns } else { n };
                    Some((n.to_string(), host.to_string()))
                })
                .collect()
        });
        Scope {
            key: format!("{ns}|{sidecar_ns}/{}", sidecar.metadata.name),
            namespace: ns,
            egress,
            registry_only,
        }
    }

    /// Whether a resource in `resource_ns` exported to `export_to` is visible here.
    pub fn exported(&self, resource_ns: &str, export_to: &[String]) -> bool {
        crate::mesh::exported_to(export_to, resource_ns, &self.namespace)
    }

    /// Whether the Sidecar's egress hosts admit `hostname` in `namespace`.
    pub fn admits(&self, namespace: &str, hostname: &str) -> bool {
        let Some(egress) = &self.egress else {
            return true;
        };
        egress.iter().any(|(n, h)| {
            let ns_ok = n == "*" || n == namespace;
            let host_ok = h == "*"
                || crate::host::matches(h, hostname)
                || hostname.split('.').next() == Some(h.as_str());
            n != "~" && ns_ok && host_ok
        })
    }
}

/// A workload's Sidecar: one in its namespace whose selector matches it, else
/// its namespace's Sidecar without selector, else the root namespace's.
fn applicable_sidecar<'a>(mesh: &'a Mesh, node: &pb::Node) -> Option<&'a Object<Sidecar>> {
    fn in_ns<'a, 'n>(
        mesh: &'a Mesh,
        ns: &'n str,
    ) -> impl Iterator<Item = &'a Object<Sidecar>> + use<'a, 'n> {
        mesh.sidecars
            .iter()
            .filter(move |s| s.metadata.namespace.as_deref().unwrap_or("default") == ns)
    }
    let selected = in_ns(mesh, &node.namespace).find(|s| {
        s.spec.workload_selector.as_ref().is_some_and(|sel| {
            !sel.labels.is_empty()
                && sel
                    .labels
                    .iter()
                    .all(|(k, v)| node.labels.get(k) == Some(v))
        })
    });
    selected
        .or_else(|| in_ns(mesh, &node.namespace).find(|s| s.spec.workload_selector.is_none()))
        .or_else(|| {
            in_ns(mesh, &mesh.config.root_namespace).find(|s| s.spec.workload_selector.is_none())
        })
}
