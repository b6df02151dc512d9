//! What one proxy may see of the mesh: the egress hosts of the Sidecar
//! resource that applies to it, and every resource's `exportTo`. Istio's
//! main lever on sidecar memory: a proxy only receives the services it may call.
//! And who the proxy is, for the routes that depend on their source
//! (VirtualService `tcp` matches on `sourceLabels` and `sourceSubnet`).

use std::collections::BTreeMap;
use std::net::IpAddr;

use api::Object;
use api::networking::{L4MatchAttributes, Sidecar};
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
    /// A sidecar discovering its hosts on demand: the hosts it gets
    /// outbound config for (see [`crate::on_demand`]).
    pub on_demand: Option<crate::on_demand::OnDemand>,
    /// outboundTrafficPolicy REGISTRY_ONLY: the Sidecar's, else the mesh's.
    pub registry_only: bool,
    /// The proxy as the source of the connections it sends.
    pub source: Source,
    /// A gateway: DestinationRule `credentialName`s apply (Istio resolves
    /// them at gateways only, from Secrets in the gateway's namespace).
    pub gateway: bool,
}

/// A sidecar as the source of its application's outbound connections: its
/// workload's labels, and its pod's address (what the connections come
/// from). Istio filters a proxy's routes by them in the control plane;
/// so does Trellis, and proxies whose matches come out alike share config.
#[derive(Clone, Debug, Default)]
pub struct Source {
    labels: BTreeMap<String, String>,
    ip: Option<IpAddr>,
}

impl Source {
    fn of(node: &pb::Node) -> Source {
        Source {
            labels: node
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            ip: node.pod_ip.parse().ok(),
        }
    }

    /// Whether an L4 match's source conditions hold for this proxy:
    /// every `sourceLabels` label is the workload's, and the pod's address
    /// is in `sourceSubnet` (an address or a CIDR).
    pub fn matches(&self, m: &L4MatchAttributes) -> bool {
        let labels = m
            .source_labels
            .iter()
            .all(|(k, v)| self.labels.get(k) == Some(v));
        let subnet = m.source_subnet.as_deref().is_none_or(|s| {
            let net = s
                .parse::<ipnet::IpNet>()
                .or_else(|_| s.parse::<IpAddr>().map(ipnet::IpNet::from));
            matches!((net, self.ip), (Ok(net), Some(ip)) if net.contains(&ip))
        });
        labels && subnet
    }
}

/// What tells proxies apart for the mesh's source-dependent matches: for
/// each `tcp` match with `sourceLabels` or `sourceSubnet`, in order,
/// whether it holds for `source`. Empty when the mesh has none (the usual
/// case: no proxy's config is made per workload for nothing).
fn source_key(mesh: &Mesh, source: &Source) -> String {
    let bits: String = mesh
        .virtual_services
        .iter()
        .flat_map(|vs| &vs.spec.tcp)
        .flat_map(|r| &r.r#match)
        .filter(|m| !m.source_labels.is_empty() || m.source_subnet.is_some())
        .map(|m| if source.matches(m) { '1' } else { '0' })
        .collect();
    if bits.is_empty() {
        bits
    } else {
        format!("|source:{bits}")
    }
}

impl Scope {
    pub fn for_node(mesh: &Mesh, node: &pb::Node) -> Scope {
        let mut scope = Self::admitted(mesh, node);
        if node.on_demand && node.kind() == ProxyKind::Sidecar {
            let on_demand = crate::on_demand::OnDemand::new(mesh, &scope, &node.asked_hosts);
            scope.key.push_str(&on_demand.key());
            scope.on_demand = Some(on_demand);
        }
        scope
    }

    /// The scope the Sidecar resource and exportTo give.
    fn admitted(mesh: &Mesh, node: &pb::Node) -> Scope {
        let ns = node.namespace.clone();
        let sidecar = (node.kind() == ProxyKind::Sidecar)
            .then(|| applicable_sidecar(mesh, node))
            .flatten();
        let mesh_registry_only = mesh.config.outbound_traffic_policy.mode == "REGISTRY_ONLY";
        let source = Source::of(node);
        let gateway = node.kind() == ProxyKind::Gateway;
        let source_key = format!(
            "{}{}",
            source_key(mesh, &source),
            if gateway { "|gateway" } else { "" }
        );
        let Some(sidecar) = sidecar else {
            return Scope {
                key: format!("{ns}|{source_key}"),
                namespace: ns,
                egress: None,
                registry_only: mesh_registry_only,
                source,
                gateway,
                on_demand: None,
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
            key: format!("{ns}|{sidecar_ns}/{}{source_key}", sidecar.metadata.name),
            namespace: ns,
            egress,
            registry_only,
            source,
            gateway,
            on_demand: None,
        }
    }

    /// Whether a resource in `resource_ns` exported to `export_to` is visible here.
    pub fn exported(&self, resource_ns: &str, export_to: &[String]) -> bool {
        crate::mesh::exported_to(export_to, resource_ns, &self.namespace)
    }

    /// Whether a proxy discovering on demand has asked for `hostname` (or
    /// a host routed to it); every host, for the others.
    pub fn wants(&self, hostname: &str) -> bool {
        self.on_demand
            .as_ref()
            .is_none_or(|o| o.hosts.contains(hostname))
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
pub(crate) fn applicable_sidecar<'a>(
    mesh: &'a Mesh,
    node: &pb::Node,
) -> Option<&'a Object<Sidecar>> {
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
