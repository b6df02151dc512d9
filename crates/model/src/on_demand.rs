//! On-demand discovery: a sidecar whose node says `on_demand` is compiled
//! outbound config only for the hosts it asked for (`Node.asked_hosts`) and
//! those their routes send to, and is sent a directory of every host its
//! scope admits (what its DNS proxy answers, and what tells it which host a
//! captured VIP or a Host header means, so that it can ask).
//!
//! Istio's answer to a proxy's config growing with the mesh is the Sidecar
//! resource, written by hand; this learns the same from the calls made.
//! Envoy does the like with on-demand VHDS/CDS, Linkerd by resolving each
//! destination when first used.

use std::collections::BTreeSet;

use api::networking::{Destination, VirtualService};
use wire::pb::{self, resource::Kind};

use crate::compile::mesh_virtual_service;
use crate::mesh::Mesh;
use crate::registry::Service;
use crate::scope::Scope;

/// What an on-demand proxy's scope adds to a Sidecar's and exportTo's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OnDemand {
    /// The hosts it gets outbound config for: those it asked for that it
    /// may see, and the hosts their routes send to (transitively).
    pub hosts: BTreeSet<String>,
    /// The key of the scope without them: proxies whose keys are the same
    /// here see the same directory.
    pub directory_key: String,
}

impl OnDemand {
    /// `asked` as `scope` (the proxy's scope without on-demand) admits them,
    /// with the hosts their routes send to.
    pub(crate) fn new(mesh: &Mesh, scope: &Scope, asked: &[String]) -> OnDemand {
        let mut hosts = BTreeSet::new();
        let mut next: Vec<&Service> = asked
            .iter()
            .filter_map(|h| mesh.registry.service(h))
            .filter(|svc| in_directory(scope, svc))
            .collect();
        while let Some(svc) = next.pop() {
            if !hosts.insert(svc.hostname.clone()) {
                continue;
            }
            let Some(vs) = mesh_virtual_service(mesh, &svc.hostname, scope) else {
                continue;
            };
            let ns = vs.metadata.namespace.as_deref().unwrap_or("default");
            for d in destinations(&vs.spec) {
                let host = mesh.fqdn(&d.host, ns);
                if let Some(dest) = mesh.registry.service(&host)
                    && in_directory(scope, dest)
                    && !hosts.contains(&dest.hostname)
                {
                    next.push(dest);
                }
            }
        }
        OnDemand {
            hosts,
            directory_key: scope.key.clone(),
        }
    }

    /// What the scope key adds for these hosts.
    pub(crate) fn key(&self) -> String {
        let hosts: Vec<&str> = self.hosts.iter().map(String::as_str).collect();
        format!("|on-demand:{}", hosts.join(","))
    }
}

/// Every host a VirtualService's routes send to or mirror to.
fn destinations(vs: &VirtualService) -> impl Iterator<Item = &Destination> {
    let http = vs.http.iter().flat_map(|r| {
        r.route
            .iter()
            .map(|d| &d.destination)
            .chain(&r.mirror)
            .chain(r.mirrors.iter().map(|m| &m.destination))
    });
    let tcp = vs
        .tcp
        .iter()
        .flat_map(|r| r.route.iter().map(|d| &d.destination));
    let tls = vs
        .tls
        .iter()
        .flat_map(|r| r.route.iter().map(|d| &d.destination));
    http.chain(tcp).chain(tls)
}

/// Whether `svc` is in the directory of a proxy of `scope`: whether it
/// exports to the proxy's namespace and its Sidecar's egress admits it.
pub(crate) fn in_directory(scope: &Scope, svc: &Service) -> bool {
    scope.exported(&svc.namespace, &svc.export_to) && scope.admits(&svc.namespace, &svc.hostname)
}

/// The directory of a proxy of `scope`: a resource per host it may call.
pub(crate) fn directory(mesh: &Mesh, scope: &Scope) -> Vec<(String, Kind)> {
    mesh.registry
        .services
        .values()
        .filter(|svc| in_directory(scope, svc))
        .map(|svc| {
            let entry = pb::DirectoryHost {
                host: svc.hostname.clone(),
                // Single addresses only, as clusters carry them.
                addresses: svc
                    .cluster_ip
                    .iter()
                    .chain(&svc.addresses)
                    .filter(|a| a.parse::<std::net::IpAddr>().is_ok())
                    .cloned()
                    .collect(),
                ports: svc
                    .ports
                    .iter()
                    .map(|p| pb::DirectoryPort {
                        port: p.port,
                        protocol: p.protocol as i32,
                    })
                    .collect(),
            };
            (svc.hostname.clone(), Kind::DirectoryHost(entry))
        })
        .collect()
}

/// Why the proxy `node` may not have `host` on demand; `None`: it may.
pub fn refusal(mesh: &Mesh, node: &pb::Node, host: &str) -> Option<String> {
    if node.kind() != pb::ProxyKind::Sidecar {
        return Some("gateways are sent every host they route to; they do not ask".into());
    }
    if !node.on_demand {
        return Some("the proxy did not subscribe on demand (Node.on_demand)".into());
    }
    let Some(svc) = mesh.registry.service(host) else {
        return Some(format!("no service or ServiceEntry has host {host}"));
    };
    let scope = Scope::for_node(mesh, node);
    if !scope.exported(&svc.namespace, &svc.export_to) {
        return Some(format!(
            "{host} is not exported to namespace {} (exportTo {:?})",
            node.namespace, svc.export_to
        ));
    }
    if !scope.admits(&svc.namespace, &svc.hostname) {
        let sidecar = crate::scope::applicable_sidecar(mesh, node)
            .map(|s| {
                format!(
                    "{}/{}",
                    s.metadata.namespace.as_deref().unwrap_or("default"),
                    s.metadata.name
                )
            })
            .unwrap_or_default();
        return Some(format!(
            "the egress hosts of Sidecar {sidecar}, which applies to this proxy, do not admit {host}"
        ));
    }
    None
}
