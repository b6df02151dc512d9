//! Compiles the mesh into one proxy's configuration.

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{Hash, Hasher};

use api::networking::{SimpleLb, TrafficPolicy};
use prost::Message;
use wire::pb::{self, ProxyKind};
use wire::pb::resource::Kind;
use wire::server::{ProxySnapshot, TypeSnapshot};

use crate::gateway;
use crate::host;
use crate::mesh::Mesh;
use crate::protocol;
use crate::registry::{Service, Workload};
use crate::routes;

/// Everything one proxy needs, by type.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ProxyConfig {
    pub clusters: Vec<pb::Cluster>,
    pub endpoints: Vec<pb::ClusterEndpoints>,
    pub listeners: Vec<pb::Listener>,
    pub routes: Vec<pb::RouteConfig>,
}

pub fn compile(mesh: &Mesh, node: &pb::Node) -> ProxyConfig {
    let mut config = ProxyConfig::default();
    outbound_clusters(mesh, &node.namespace, &mut config);
    if node.kind() == ProxyKind::Gateway {
        gateway::compile(mesh, node, &mut config);
    } else {
        config.routes = outbound_routes(mesh, &node.namespace);
        if let Some(w) = mesh.registry.workload(&node.pod_name, &node.namespace) {
            config.listeners = inbound_listeners(mesh, w);
        }
    }
    config
}

/// A cluster per service port, and one per DestinationRule subset.
fn outbound_clusters(mesh: &Mesh, client_ns: &str, config: &mut ProxyConfig) {
    for svc in mesh.registry.services.values() {
        let dr = mesh.destination_rule(&svc.hostname, client_ns);
        let top_policy = dr.and_then(|d| d.spec.traffic_policy.as_ref());
        for port in &svc.ports {
            let mut subsets = vec![("", BTreeMap::new(), top_policy)];
            for s in dr.map(|d| d.spec.subsets.as_slice()).unwrap_or_default() {
                subsets.push((s.name.as_str(), s.labels.clone(), s.traffic_policy.as_ref().or(top_policy)));
            }
            for (subset, labels, policy) in subsets {
                let name = routes::cluster_name(port.port, subset, &svc.hostname);
                config.clusters.push(pb::Cluster {
                    name: name.clone(),
                    service: svc.hostname.clone(),
                    port: port.port,
                    subset: subset.to_string(),
                    lb: load_balancer(policy) as i32,
                    connect_timeout_ms: connect_timeout(policy).unwrap_or(mesh.config.connect_timeout_ms),
                    protocol: port.protocol as i32,
                });
                let endpoints = mesh
                    .registry
                    .endpoints(svc, port, &labels)
                    .map(|(w, target)| endpoint(mesh, w, target))
                    .collect();
                config.endpoints.push(pb::ClusterEndpoints { cluster: name, endpoints });
            }
        }
    }
}

fn load_balancer(policy: Option<&TrafficPolicy>) -> pb::LoadBalancer {
    match policy.and_then(|p| p.load_balancer.as_ref()).and_then(|lb| lb.simple) {
        Some(SimpleLb::RoundRobin) => pb::LoadBalancer::RoundRobin,
        Some(SimpleLb::Random) => pb::LoadBalancer::Random,
        Some(SimpleLb::Passthrough) => pb::LoadBalancer::Passthrough,
        _ => pb::LoadBalancer::LeastRequest,
    }
}

fn connect_timeout(policy: Option<&TrafficPolicy>) -> Option<u64> {
    let tcp = policy?.connection_pool.as_ref()?.tcp.as_ref()?;
    Some(tcp.connect_timeout?.as_std().as_millis() as u64)
}

fn endpoint(mesh: &Mesh, w: &Workload, port: u32) -> pb::Endpoint {
    pb::Endpoint {
        address: w.ip.clone(),
        port,
        labels: w.labels.clone(),
        pod: format!("{}.{}", w.name, w.namespace),
        identity: w.spiffe_id(&mesh.config.trust_domain),
        locality: String::new(),
        weight: 1,
        healthy: true,
        has_sidecar: w.has_sidecar,
        workload: w.workload.clone(),
    }
}

/// One route config per port number, with a virtual host per service on it.
fn outbound_routes(mesh: &Mesh, client_ns: &str) -> Vec<pb::RouteConfig> {
    let mut by_port: BTreeMap<u32, Vec<pb::VirtualHost>> = BTreeMap::new();
    for svc in mesh.registry.services.values() {
        for port in svc.ports.iter().filter(|p| protocol::is_http(p.protocol)) {
            by_port.entry(port.port).or_default().push(virtual_host(mesh, svc, port.port, client_ns));
        }
    }
    by_port
        .into_iter()
        .map(|(port, virtual_hosts)| pb::RouteConfig { name: port.to_string(), virtual_hosts })
        .collect()
}

fn virtual_host(mesh: &Mesh, svc: &Service, port: u32, client_ns: &str) -> pb::VirtualHost {
    let routes = match mesh_virtual_service(mesh, &svc.hostname) {
        Some(vs) if !vs.spec.http.is_empty() => routes::http_routes(mesh, vs, port, "mesh"),
        _ => vec![routes::default_route(&svc.hostname, port)],
    };
    let mut domains = host::domains(&svc.hostname, &svc.name, &svc.namespace, client_ns, port);
    if let Some(ip) = &svc.cluster_ip {
        domains.push(ip.clone());
        domains.push(format!("{ip}:{port}"));
    }
    pb::VirtualHost { name: format!("{}:{port}", svc.hostname), domains, routes }
}

/// The VirtualService bound to sidecars ("mesh") whose hosts cover `hostname`
/// most specifically.
fn mesh_virtual_service<'a>(mesh: &'a Mesh, hostname: &str) -> Option<&'a api::Object<api::networking::VirtualService>> {
    mesh.virtual_services
        .iter()
        .filter(|vs| vs.spec.gateways.is_empty() || vs.spec.gateways.iter().any(|g| g == "mesh"))
        .filter_map(|vs| {
            let ns = vs.metadata.namespace.as_deref().unwrap_or("default");
            vs.spec
                .hosts
                .iter()
                .map(|h| mesh.fqdn(h, ns))
                .filter(|h| host::matches(h, hostname))
                .map(|h| host::specificity(&h))
                .max()
                .map(|s| (s, vs))
        })
        // Stable: among equally specific ones, the first in namespace/name order wins.
        .fold(None, |best: Option<(usize, _)>, (s, vs)| match best {
            Some((b, _)) if b >= s => best,
            _ => Some((s, vs)),
        })
        .map(|(_, vs)| vs)
}

/// An inbound listener per port the workload serves: its container ports and
/// the target ports of the services that select it.
fn inbound_listeners(mesh: &Mesh, w: &Workload) -> Vec<pb::Listener> {
    let mut ports: BTreeMap<u32, (pb::Protocol, String)> =
        w.ports.iter().map(|p| (p.port, (pb::Protocol::Unspecified, String::new()))).collect();
    for svc in mesh.registry.services_of(w) {
        for sp in &svc.ports {
            for (_, target) in mesh.registry.endpoints(svc, sp, &BTreeMap::new()).filter(|(e, _)| e.name == w.name) {
                ports.insert(target, (sp.protocol, svc.hostname.clone()));
            }
        }
    }
    ports
        .into_iter()
        .map(|(port, (protocol, service))| pb::Listener {
            name: format!("inbound|{port}"),
            address: w.ip.clone(),
            port,
            direction: pb::Direction::Inbound as i32,
            protocol: protocol as i32,
            app_port: port,
            route_config: String::new(),
            service,
        })
        .collect()
}

impl ProxyConfig {
    /// Versions each type by its content, so an unchanged type is never re-sent.
    pub fn into_snapshot(self) -> ProxySnapshot {
        let mut types = BTreeMap::new();
        let mut add = |type_url: &str, resources: Vec<(String, Kind)>| {
            let resources: Vec<pb::Resource> = resources
                .into_iter()
                .map(|(name, kind)| {
                    let mut r = pb::Resource { name, version: String::new(), kind: Some(kind) };
                    r.version = digest(&r.encode_to_vec());
                    r
                })
                .collect();
            let version = digest(resources.iter().map(|r| r.version.as_str()).collect::<Vec<_>>().join(",").as_bytes());
            types.insert(type_url.to_string(), TypeSnapshot { version, resources });
        };
        add(wire::types::CLUSTER, self.clusters.into_iter().map(|c| (c.name.clone(), Kind::Cluster(c))).collect());
        add(wire::types::ENDPOINTS, self.endpoints.into_iter().map(|e| (e.cluster.clone(), Kind::Endpoints(e))).collect());
        add(wire::types::LISTENER, self.listeners.into_iter().map(|l| (l.name.clone(), Kind::Listener(l))).collect());
        add(wire::types::ROUTE_CONFIG, self.routes.into_iter().map(|r| (r.name.clone(), Kind::RouteConfig(r))).collect());
        ProxySnapshot { types }
    }

    /// Names of the clusters routes refer to that no cluster provides (a subset
    /// no DestinationRule defines, a host no service provides).
    pub fn dangling_clusters(&self) -> BTreeSet<String> {
        let known: BTreeSet<&str> = self.clusters.iter().map(|c| c.name.as_str()).collect();
        self.routes
            .iter()
            .flat_map(|rc| &rc.virtual_hosts)
            .flat_map(|vh| &vh.routes)
            .filter_map(|r| match &r.action {
                Some(pb::route::Action::Forward(f)) => Some(f),
                _ => None,
            })
            .flat_map(|f| &f.clusters)
            .filter(|c| !known.contains(c.cluster.as_str()))
            .map(|c| c.cluster.clone())
            .collect()
    }
}

fn digest(bytes: &[u8]) -> String {
    // SipHash with fixed keys: stable across restarts of the control plane, so
    // a proxy that reconnects with an unchanged config is not sent it again.
    let mut h = std::hash::DefaultHasher::new();
    bytes.hash(&mut h);
    format!("{:016x}", h.finish())
}
