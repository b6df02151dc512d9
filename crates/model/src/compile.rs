//! Compiles the mesh into one proxy's configuration.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use wire::pb::resource::Kind;
use wire::pb::{self, ProxyKind};
use wire::snapshot::{ProxySnapshot, TypeSnapshot};

use crate::cluster_policy;
use crate::encodings::{Encodings, set_version};
use crate::gateway;
use crate::host;
use crate::mesh::Mesh;
use crate::mtls;
use crate::protocol;
use crate::registry::{Service, Workload};
use crate::routes;
use crate::scope::Scope;

/// Everything one proxy needs, by type.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ProxyConfig {
    pub clusters: Vec<pb::Cluster>,
    pub endpoints: Vec<pb::ClusterEndpoints>,
    pub listeners: Vec<pb::Listener>,
    pub routes: Vec<pb::RouteConfig>,
}

pub fn compile(mesh: &Mesh, node: &pb::Node) -> ProxyConfig {
    let scope = Scope::for_node(mesh, node);
    let mut config = ProxyConfig::default();
    outbound_clusters(mesh, &scope, &mut config);
    per_proxy(mesh, node, &scope, &mut config);
    crate::telemetry::apply(mesh, node, &mut config);
    config
}

/// What depends on the proxy itself rather than on its scope: gateway
/// listeners and routes, a sidecar's inbound listeners.
fn per_proxy(mesh: &Mesh, node: &pb::Node, scope: &Scope, config: &mut ProxyConfig) {
    if node.kind() == ProxyKind::Gateway {
        gateway::compile(mesh, node, config);
    } else {
        config.routes = outbound_routes(mesh, scope);
        if let Some(w) = mesh.registry.workload(&node.pod_name, &node.namespace) {
            config.listeners = inbound_listeners(mesh, w);
            config
                .listeners
                .push(virtual_inbound(mesh, w, &config.listeners));
        }
        config.listeners.push(virtual_outbound(scope));
    }
}

/// What capture sends a sidecar's outbound connections to (Istio's
/// "virtualOutbound" on 15001), with the outbound traffic policy.
fn virtual_outbound(scope: &Scope) -> pb::Listener {
    pb::Listener {
        name: "virtualOutbound".into(),
        address: "0.0.0.0".into(),
        port: 15001,
        direction: pb::Direction::Outbound as i32,
        registry_only: scope.registry_only,
        ..Default::default()
    }
}

/// What capture sends a sidecar's inbound connections to (Istio's
/// "virtualInbound" on 15006): for ports with no inbound listener, which are
/// passed through to the application, the workload's PeerAuthentication
/// modes and its TCP authorization policies, as on any inbound port.
fn virtual_inbound(mesh: &Mesh, w: &Workload, inbound: &[pb::Listener]) -> pb::Listener {
    let listened = inbound.iter().map(|l| l.port).collect();
    let (mode, per_port) = mtls::passthrough_modes(mesh, w, &listened);
    let (_, authz_tcp) = crate::authz::WorkloadAuthz::new(mesh, w).for_port(pb::Protocol::Tcp);
    pb::Listener {
        name: "virtualInbound".into(),
        address: "0.0.0.0".into(),
        port: 15006,
        direction: pb::Direction::Inbound as i32,
        protocol: pb::Protocol::Tcp as i32,
        mtls_mode: mode as i32,
        port_mtls_modes: per_port
            .into_iter()
            .map(|(port, mode)| (port, mode as i32))
            .collect(),
        authz_tcp,
        path_normalization: mesh.config.path_normalization.normalization.to_pb() as i32,
        ..Default::default()
    }
}

/// Compiles many proxies against one mesh, sharing what proxies with the same
/// scope have in common: with a thousand sidecars in a namespace, their
/// clusters and endpoints are built and versioned once, not a thousand times,
/// and each resource is encoded once for every scope and mesh version that
/// has it (see [`Encodings`]).
pub struct Compiler {
    pub(crate) mesh: Arc<Mesh>,
    pub(crate) shared:
        std::sync::Mutex<std::collections::HashMap<String, Arc<std::sync::OnceLock<SharedTypes>>>>,
    pub(crate) encodings: Arc<Encodings>,
    /// On-demand proxies' directories, by [`crate::on_demand::OnDemand::directory_key`].
    pub(crate) directories: DirectoryCache,
}

pub(crate) type DirectoryCache =
    std::sync::Mutex<std::collections::HashMap<String, Arc<TypeSnapshot>>>;

#[derive(Clone)]
pub(crate) struct SharedTypes {
    pub(crate) scope: Scope,
    pub(crate) clusters: Arc<TypeSnapshot>,
    pub(crate) endpoints: Arc<TypeSnapshot>,
    pub(crate) routes: Option<Arc<TypeSnapshot>>,
}

impl Compiler {
    pub fn new(mesh: Arc<Mesh>) -> Self {
        Self::with_encodings(mesh, Default::default())
    }

    /// A compiler that reuses `encodings` (a previous compiler's).
    pub(crate) fn with_encodings(mesh: Arc<Mesh>, encodings: Arc<Encodings>) -> Self {
        Compiler {
            mesh,
            shared: Default::default(),
            encodings,
            directories: Default::default(),
        }
    }

    /// The types `scope`'s proxies share, if compiled already.
    pub(crate) fn cached(&self, scope: &str) -> Option<SharedTypes> {
        self.shared
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(scope)
            .and_then(|c| c.get().cloned())
    }

    /// How many distinct resources this compiler's snapshots share.
    pub fn encoded_resources(&self) -> usize {
        self.encodings.len()
    }

    pub fn mesh(&self) -> &Arc<Mesh> {
        &self.mesh
    }

    pub fn snapshot(&self, node: &pb::Node) -> ProxySnapshot {
        let scope = Scope::for_node(&self.mesh, node);
        let gateway = node.kind() == ProxyKind::Gateway;
        let encode = |resources| Arc::new(self.encodings.type_snapshot(resources));
        let compute = || {
            let (clusters, endpoints) = self.encoded_clusters(&scope);
            let routes =
                (!gateway).then(|| encode(route_resources(outbound_routes(&self.mesh, &scope))));
            SharedTypes {
                scope: scope.clone(),
                clusters: Arc::new(clusters),
                endpoints: Arc::new(endpoints),
                routes,
            }
        };
        let shared = if gateway {
            // Gateways compute routes per proxy, so they share only clusters and endpoints.
            let cached = self
                .shared
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&scope.key)
                .and_then(|c| c.get().cloned());
            cached.unwrap_or_else(compute)
        } else {
            // One computation per scope, however many of its proxies connect at
            // once: the others wait for it instead of each building a copy.
            let cell = self
                .shared
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry(scope.key.clone())
                .or_default()
                .clone();
            cell.get_or_init(compute).clone()
        };
        let mut own = ProxyConfig::default();
        let mut types = BTreeMap::new();
        if gateway {
            gateway::compile(&self.mesh, node, &mut own);
            types.insert(
                wire::types::ROUTE_CONFIG.to_string(),
                encode(route_resources(std::mem::take(&mut own.routes))),
            );
        } else {
            if let Some(w) = self.mesh.registry.workload(&node.pod_name, &node.namespace) {
                own.listeners = inbound_listeners(&self.mesh, w);
                own.listeners
                    .push(virtual_inbound(&self.mesh, w, &own.listeners));
            }
            own.listeners.push(virtual_outbound(&scope));
        }
        crate::telemetry::apply(&self.mesh, node, &mut own);
        types.insert(wire::types::CLUSTER.to_string(), shared.clusters);
        types.insert(wire::types::ENDPOINTS.to_string(), shared.endpoints);
        if let Some(on_demand) = &scope.on_demand {
            types.insert(
                wire::types::DIRECTORY.to_string(),
                self.directory(&scope, on_demand),
            );
        }
        if let Some(routes) = shared.routes {
            types.insert(wire::types::ROUTE_CONFIG.to_string(), routes);
        }
        types.insert(
            wire::types::LISTENER.to_string(),
            encode(listener_resources(own.listeners)),
        );
        ProxySnapshot { types }
    }
}

impl Compiler {
    /// The clusters and endpoints `scope` sees, compiled and encoded a
    /// service at a time: a scope of a thousand services never holds all its
    /// endpoints in their whole form at once (11,000 endpoints are ~6 MiB
    /// so, and a scope's first proxies compile two scopes at once).
    fn encoded_clusters(&self, scope: &Scope) -> (TypeSnapshot, TypeSnapshot) {
        let (mut clusters, mut endpoints) = (Vec::new(), Vec::new());
        for svc in visible_services(&self.mesh, scope) {
            let mut config = ProxyConfig::default();
            service_clusters(&self.mesh, scope, svc, &mut config);
            self.encodings
                .encode(cluster_resources(config.clusters), &mut clusters);
            self.encodings
                .encode(endpoint_resources(config.endpoints), &mut endpoints);
        }
        (set_version(clusters), set_version(endpoints))
    }

    /// The directory of an on-demand proxy of `scope`, built once for the
    /// proxies that see the same hosts whatever each asked for.
    fn directory(
        &self,
        scope: &Scope,
        on_demand: &crate::on_demand::OnDemand,
    ) -> Arc<TypeSnapshot> {
        let cached = self
            .directories
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&on_demand.directory_key)
            .cloned();
        cached.unwrap_or_else(|| {
            let built = Arc::new(
                self.encodings
                    .type_snapshot(crate::on_demand::directory(&self.mesh, scope)),
            );
            self.directories
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(on_demand.directory_key.clone(), built.clone());
            built
        })
    }
}

/// A cluster per service port, and one per DestinationRule subset.
fn outbound_clusters(mesh: &Mesh, scope: &Scope, config: &mut ProxyConfig) {
    for svc in visible_services(mesh, scope) {
        service_clusters(mesh, scope, svc, config);
    }
}

/// The clusters of one service, with their endpoints.
pub(crate) fn service_clusters(
    mesh: &Mesh,
    scope: &Scope,
    svc: &Service,
    config: &mut ProxyConfig,
) {
    let dr = mesh.destination_rule(&svc.hostname, &scope.namespace);
    let top_policy = dr.and_then(|d| d.spec.traffic_policy.as_ref());
    for port in &svc.ports {
        // Each subset's own policy; cluster_policy merges it over the top level.
        let mut subsets = vec![("", BTreeMap::new(), None)];
        for s in dr.map(|d| d.spec.subsets.as_slice()).unwrap_or_default() {
            subsets.push((s.name.as_str(), s.labels.clone(), s.traffic_policy.as_ref()));
        }
        for (subset, labels, policy) in subsets {
            let name = routes::cluster_name(port.port, subset, &svc.hostname);
            let mut fields =
                cluster_policy::cluster_fields(top_policy, policy, port.port, &mesh.config);
            if svc.resolution == crate::registry::Resolution::Passthrough {
                // ServiceEntry resolution NONE: Envoy's ORIGINAL_DST, whatever the DestinationRule says.
                fields.lb = pb::LoadBalancer::Passthrough as i32;
            }
            let tcp_route = if subset.is_empty() && !protocol::is_http(port.protocol) {
                tcp_route(mesh, scope, svc, port.port)
            } else {
                Vec::new()
            };
            let tls_routes = if subset.is_empty()
                && matches!(port.protocol, pb::Protocol::Tls | pb::Protocol::Https)
            {
                crate::l4_routes::sidecar_tls_routes(mesh, scope, svc, port.port)
            } else {
                Vec::new()
            };
            config.clusters.push(pb::Cluster {
                tcp_route,
                tls_routes,
                name: name.clone(),
                service: svc.hostname.clone(),
                port: port.port,
                subset: subset.to_string(),
                protocol: port.protocol as i32,
                tls: mtls::upstream_tls(mesh, top_policy, policy, port.port).map(|mut tls| {
                    if let Some(name) = mtls::credential_name(top_policy, policy, port.port) {
                        if scope.gateway {
                            gateway::client_credential(mesh, &scope.namespace, name, &mut tls);
                        } else if tls.mode == pb::UpstreamTlsMode::Mutual as i32
                            && (tls.client_certificate.is_empty() || tls.private_key.is_empty())
                        {
                            // Istio's sidecars keep to the certificate paths; without
                            // them this cluster cannot connect (and says why) while
                            // the rest of the proxy's config stays good.
                            tls.credential_error = format!(
                                "tls.credentialName {name} is used at gateways only (as in Istio); a sidecar's MUTUAL needs clientCertificate and privateKey"
                            );
                        }
                    }
                    if let Some(d) = dr {
                        tls.destination_rule = format!(
                            "{}/{}",
                            d.metadata.namespace.as_deref().unwrap_or("default"),
                            d.metadata.name
                        );
                    }
                    tls
                }),
                // Single addresses only: a ServiceEntry's CIDRs are no VIP.
                addresses: svc
                    .cluster_ip
                    .iter()
                    .chain(&svc.addresses)
                    .filter(|a| a.parse::<std::net::IpAddr>().is_ok())
                    .cloned()
                    .collect(),
                ..fields
            });
            let endpoints = mesh
                .registry
                .endpoints(svc, port, &labels)
                .map(|(w, target)| endpoint(mesh, w, target))
                .collect();
            config.endpoints.push(pb::ClusterEndpoints {
                cluster: name,
                compact: None,
                endpoints,
            });
        }
    }
}

/// The VirtualService `tcp` route a sidecar applies to connections to
/// `svc` on its TCP port `port`: the first route with no match or a match
/// for this port (and, if it names them, the sidecars' "mesh" gateway and
/// the client's namespace, labels and address), its destinations weighted
/// as HTTP ones are. Matches on destination subnets are not understood:
/// such a match never applies here (analyze says so, TRL0005).
pub(crate) fn tcp_route(
    mesh: &Mesh,
    scope: &Scope,
    svc: &Service,
    port: u32,
) -> Vec<pb::WeightedCluster> {
    let Some(vs) = mesh_virtual_service(mesh, &svc.hostname, scope) else {
        return Vec::new();
    };
    let ns = vs.metadata.namespace.as_deref().unwrap_or("default");
    let applies = |m: &api::networking::L4MatchAttributes| {
        m.port.is_none_or(|p| p == port)
            && (m.gateways.is_empty() || m.gateways.iter().any(|g| g == "mesh"))
            && m.source_namespace
                .as_deref()
                .is_none_or(|n| n == scope.namespace)
            && scope.source.matches(m)
            && m.destination_subnets.is_empty()
    };
    let Some(route) = vs
        .spec
        .tcp
        .iter()
        .find(|r| r.r#match.is_empty() || r.r#match.iter().any(applies))
    else {
        return Vec::new();
    };
    crate::l4_routes::weighted(mesh, &route.route, ns, port)
}

fn endpoint(mesh: &Mesh, w: &Workload, port: u32) -> pb::Endpoint {
    pb::Endpoint {
        address: w.ip.clone(),
        port,
        labels: (*w.labels).clone(),
        pod: format!("{}.{}", w.name, w.namespace),
        identity: w.spiffe_id(&mesh.config.trust_domain),
        locality: w.locality.clone(),
        weight: w.weight.max(1),
        healthy: true,
        // What auto mTLS goes by. Istio's sidecar injection labels a pod
        // `security.istio.io/tlsMode: istio`; its gateway template does not,
        // so auto mTLS reaches a gateway in plaintext (the client's own TLS
        // reaches an egress gateway's PASSTHROUGH server unwrapped).
        has_sidecar: w.has_sidecar && !w.gateway,
        workload: w.workload.clone(),
    }
}

fn visible_services<'a>(
    mesh: &'a Mesh,
    scope: &'a Scope,
) -> impl Iterator<Item = &'a Service> + 'a {
    mesh.registry
        .services
        .values()
        .filter(|svc| visible(scope, svc))
}

pub(crate) fn visible(scope: &Scope, svc: &Service) -> bool {
    crate::on_demand::in_directory(scope, svc) && scope.wants(&svc.hostname)
}

/// One route config per port number, with a virtual host per service on it.
fn outbound_routes(mesh: &Mesh, scope: &Scope) -> Vec<pb::RouteConfig> {
    outbound_routes_of(mesh, scope, visible_services(mesh, scope))
}

/// The route configs of `services` only, as [`outbound_routes`] has them.
pub(crate) fn outbound_routes_of<'a>(
    mesh: &Mesh,
    scope: &Scope,
    services: impl Iterator<Item = &'a Service>,
) -> Vec<pb::RouteConfig> {
    let mut by_port: BTreeMap<u32, Vec<pb::VirtualHost>> = BTreeMap::new();
    for svc in services {
        for port in svc.ports.iter().filter(|p| protocol::is_http(p.protocol)) {
            by_port
                .entry(port.port)
                .or_default()
                .push(virtual_host(mesh, svc, port.port, scope));
        }
    }
    by_port
        .into_iter()
        .map(|(port, virtual_hosts)| pb::RouteConfig {
            name: port.to_string(),
            virtual_hosts,
        })
        .collect()
}

fn virtual_host(mesh: &Mesh, svc: &Service, port: u32, scope: &Scope) -> pb::VirtualHost {
    let client_ns = scope.namespace.as_str();
    let routes = match mesh_virtual_service(mesh, &svc.hostname, scope) {
        Some(vs) if !vs.spec.http.is_empty() => routes::http_routes(mesh, vs, port, "mesh"),
        _ => vec![routes::default_route(&svc.hostname, port)],
    };
    let mut domains = host::domains(&svc.hostname, &svc.name, &svc.namespace, client_ns, port);
    for ip in svc.cluster_ip.iter().chain(&svc.addresses) {
        domains.push(ip.clone());
        domains.push(format!("{ip}:{port}"));
    }
    pb::VirtualHost {
        name: format!("{}:{port}", svc.hostname),
        domains,
        routes,
    }
}

/// The VirtualService bound to sidecars ("mesh") whose hosts cover `hostname`
/// most specifically.
pub(crate) fn mesh_virtual_service<'a>(
    mesh: &'a Mesh,
    hostname: &str,
    scope: &Scope,
) -> Option<&'a api::Object<api::networking::VirtualService>> {
    mesh.virtual_services
        .iter()
        .filter(|vs| vs.spec.gateways.is_empty() || vs.spec.gateways.iter().any(|g| g == "mesh"))
        .filter(|vs| {
            scope.exported(
                vs.metadata.namespace.as_deref().unwrap_or("default"),
                &vs.spec.export_to,
            )
        })
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
    let mut ports: BTreeMap<u32, (pb::Protocol, String)> = w
        .ports
        .iter()
        .map(|p| (p.port, (pb::Protocol::Unspecified, String::new())))
        .collect();
    for svc in mesh.registry.services_of(w) {
        for sp in &svc.ports {
            for (_, target) in mesh
                .registry
                .endpoints(svc, sp, &BTreeMap::new())
                .filter(|(e, _)| e.name == w.name)
            {
                ports.insert(target, (sp.protocol, svc.hostname.clone()));
            }
        }
    }
    let authz = crate::authz::WorkloadAuthz::new(mesh, w);
    let jwt_rules = crate::jwt::workload_rules(mesh, w);
    let mut listeners: Vec<pb::Listener> = ports
        .into_iter()
        .map(|(port, (protocol, service))| {
            let (authz_http, authz_tcp) = authz.for_port(protocol);
            pb::Listener {
                name: format!("inbound|{port}"),
                address: w.ip.clone(),
                port,
                direction: pb::Direction::Inbound as i32,
                protocol: protocol as i32,
                app_port: port,
                service,
                mtls_mode: mtls::inbound_mode(mesh, w, port) as i32,
                authz_http,
                authz_tcp,
                // Requests only: a TCP port has no request to authenticate.
                jwt_rules: if matches!(
                    protocol,
                    pb::Protocol::Tcp | pb::Protocol::Tls | pb::Protocol::Https
                ) {
                    Vec::new()
                } else {
                    jwt_rules.clone()
                },
                path_normalization: mesh.config.path_normalization.normalization.to_pb() as i32,
                ..Default::default()
            }
        })
        .collect();
    crate::rate_limit::apply(mesh, w, false, &mut listeners);
    listeners
}

impl ProxyConfig {
    /// Versions each type by its content, so an unchanged type is never re-sent.
    pub fn into_snapshot(self) -> ProxySnapshot {
        let encodings = Encodings::default();
        let type_snapshot = |resources| encodings.type_snapshot(resources);
        let mut types = BTreeMap::new();
        types.insert(
            wire::types::CLUSTER.to_string(),
            Arc::new(type_snapshot(cluster_resources(self.clusters))),
        );
        types.insert(
            wire::types::ENDPOINTS.to_string(),
            Arc::new(type_snapshot(endpoint_resources(self.endpoints))),
        );
        types.insert(
            wire::types::LISTENER.to_string(),
            Arc::new(type_snapshot(listener_resources(self.listeners))),
        );
        types.insert(
            wire::types::ROUTE_CONFIG.to_string(),
            Arc::new(type_snapshot(route_resources(self.routes))),
        );
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

pub(crate) fn cluster_resources(v: Vec<pb::Cluster>) -> Vec<(String, Kind)> {
    v.into_iter()
        .map(|c| (c.name.clone(), Kind::Cluster(c)))
        .collect()
}

/// Endpoints as they are sent: in the compact form (`CompactEndpoints` in
/// proxy.proto), what a cluster's endpoints share written once. A proxy that
/// does not read it is sent them whole by the discovery server.
pub(crate) fn endpoint_resources(v: Vec<pb::ClusterEndpoints>) -> Vec<(String, Kind)> {
    v.into_iter()
        .map(|e| {
            let compact = pb::ClusterEndpoints {
                compact: Some(wire::endpoints::compact(e.endpoints)),
                endpoints: Vec::new(),
                cluster: e.cluster,
            };
            (compact.cluster.clone(), Kind::Endpoints(compact))
        })
        .collect()
}

fn listener_resources(v: Vec<pb::Listener>) -> Vec<(String, Kind)> {
    v.into_iter()
        .map(|l| (l.name.clone(), Kind::Listener(l)))
        .collect()
}

/// Route configs as they are sent: each in pieces of one virtual host,
/// resources named `<config>/<virtual host>` that all carry the config's name
/// (see `RouteConfig` in proxy.proto), so that a VirtualService change
/// re-sends the virtual hosts it changed and not the rest of the port's
/// thousand. A config without virtual hosts is one resource of its own name.
pub(crate) fn route_resources(v: Vec<pb::RouteConfig>) -> Vec<(String, Kind)> {
    let mut out = Vec::new();
    for rc in v {
        if rc.virtual_hosts.is_empty() {
            out.push((rc.name.clone(), Kind::RouteConfig(rc)));
            continue;
        }
        let mut names = std::collections::HashSet::new();
        for (i, vh) in rc.virtual_hosts.into_iter().enumerate() {
            let mut piece = format!("{}/{}", rc.name, vh.name);
            if !names.insert(piece.clone()) {
                // Virtual host names are unique as compiled; if not, the
                // pieces still must be.
                piece = format!("{piece}#{i}");
                names.insert(piece.clone());
            }
            let config = pb::RouteConfig {
                name: rc.name.clone(),
                virtual_hosts: vec![vh],
            };
            out.push((piece, Kind::RouteConfig(config)));
        }
    }
    out
}
