//! Carrying a compiler's work over to the next version of the mesh.
//!
//! Most changes in a running mesh are endpoint changes: a pod starts, stops
//! or is relabelled. They change no cluster and no route, only the endpoints
//! of the services selecting the pod, and the inbound listeners of the pod
//! itself. [`Compiler::update`] recognises such a change, patches only those
//! endpoint resources in the scopes that see the services, and says which
//! proxies are affected; every other proxy keeps its snapshot and is neither
//! recompiled nor sent anything. Any other change recompiles everything.
//!
//! A change of VirtualServices alone is handled alike: it changes only the
//! routes of the services their hosts cover (the virtual hosts, and the TCP
//! and TLS routes clusters carry), so only those are rebuilt, in the scopes
//! that see the services, and only those virtual hosts are sent (route
//! configs are sent in pieces, one per virtual host).
//!
//! Told which objects changed ([`Touched`]), the update looks only at them:
//! the services of their namespaces and the workloads they are, not the
//! whole registry, so an endpoint change costs the same in a mesh of ten
//! thousand workloads as in one of ten.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use wire::pb::{self, ProxyKind};
use wire::snapshot::{EncodedResource, ProxySnapshot, TypeSnapshot};

use crate::compile::{self, Compiler, ProxyConfig, SharedTypes};
use crate::encodings::{Encodings, set_version};
use crate::mesh::Mesh;
use crate::registry::{Registry, Workload};
use crate::scope::Scope;

/// The objects a change touched, by kind, namespace and name (the control
/// plane knows them from its store and its watches).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Touched {
    objects: BTreeSet<(api::Kind, String, String)>,
}

/// Whether the registry is read from objects of `kind` (see [`Mesh::build`]).
pub(crate) fn is_registry_kind(kind: api::Kind) -> bool {
    use api::Kind::*;
    matches!(
        kind,
        Service | Pod | EndpointSlice | WorkloadEntry | ServiceEntry
    )
}

impl Touched {
    pub fn insert(&mut self, kind: api::Kind, namespace: &str, name: &str) {
        self.objects
            .insert((kind, namespace.to_string(), name.to_string()));
    }

    pub fn extend(&mut self, other: Touched) {
        self.objects.extend(other.objects);
    }

    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }

    /// Whether an object the registry is read from changed.
    pub fn registry(&self) -> bool {
        self.objects.iter().any(|(k, ..)| is_registry_kind(*k))
    }

    /// The objects of `kind` changed, by namespace and name.
    pub fn of_kind(&self, kind: api::Kind) -> impl Iterator<Item = (&str, &str)> {
        self.objects
            .iter()
            .filter(move |(k, ..)| *k == kind)
            .map(|(_, ns, name)| (ns.as_str(), name.as_str()))
    }

    /// Whether every registry object changed is of one of `kinds`.
    pub(crate) fn registry_only(&self, kinds: &[api::Kind]) -> bool {
        self.objects
            .iter()
            .all(|(k, ..)| !is_registry_kind(*k) || kinds.contains(k))
    }

    /// Whether every object changed is of `kind`.
    pub fn only(&self, kind: api::Kind) -> bool {
        self.objects.iter().all(|(k, ..)| *k == kind)
    }

    /// Whether any other object changed (Istio config, Secrets...).
    pub fn config(&self) -> bool {
        self.objects.iter().any(|(k, ..)| !is_registry_kind(*k))
    }

    /// The namespaces of the registry objects changed.
    fn registry_namespaces(&self) -> HashSet<&str> {
        self.objects
            .iter()
            .filter(|(k, ..)| is_registry_kind(*k))
            .map(|(_, ns, _)| ns.as_str())
            .collect()
    }

    /// The pods and WorkloadEntries changed: the only workloads a proxy
    /// speaks for (see [`crate::Registry::workload`]), whose listeners then
    /// may differ.
    fn workloads(&self) -> HashSet<(String, String)> {
        self.objects
            .iter()
            .filter(|(k, ..)| matches!(k, api::Kind::Pod | api::Kind::WorkloadEntry))
            .map(|(_, ns, name)| (ns.clone(), name.clone()))
            .collect()
    }
}

/// Which proxies a mesh change may have changed the config of.
#[derive(Debug)]
pub enum Affected {
    All,
    Endpoints {
        /// Services whose endpoints changed.
        hosts: HashSet<String>,
        /// Scopes (see [`Scope::key`]) whose endpoints were patched.
        scopes: HashSet<String>,
        /// Scopes carried over from the previous compiler, changed or not.
        known: HashSet<String>,
        /// Workloads (namespace, name) added, removed or changed: their own
        /// proxies' listeners may differ.
        workloads: HashSet<(String, String)>,
        /// Kubernetes Services added, removed or changed (their ports, say),
        /// by hostname: the proxies that see one, before or after, compile
        /// whole (their listeners name it), and so do gateways.
        services: HashSet<String>,
        /// Scopes that see one of `services`: compiled again.
        recompile: HashSet<String>,
    },
    /// Only VirtualServices changed: the routes of the services they cover.
    Routes {
        /// Services whose routes may have changed.
        hosts: HashSet<String>,
        /// Scopes whose clusters and routes were patched.
        scopes: HashSet<String>,
        /// Scopes carried over from the previous compiler, changed or not.
        known: HashSet<String>,
    },
}

impl Affected {
    /// Whether `node`'s config may differ under `compiler` (the updated one).
    pub fn proxy(&self, compiler: &Compiler, node: &pb::Node) -> bool {
        let (hosts, scopes, known) = match self {
            Affected::All => return true,
            Affected::Endpoints {
                hosts,
                scopes,
                known,
                workloads,
                services,
                recompile,
            } => {
                if workloads.contains(&(node.namespace.clone(), node.pod_name.clone())) {
                    return true;
                }
                if !services.is_empty() {
                    if node.kind() == ProxyKind::Gateway {
                        return true;
                    }
                    let key = Scope::for_node(compiler.mesh(), node).key;
                    if recompile.contains(&key) || !known.contains(&key) {
                        return true;
                    }
                }
                (hosts, scopes, known)
            }
            // Gateways' routes are compiled per proxy from the VirtualServices
            // bound to them, which no service's host need cover; they are few.
            Affected::Routes { .. } if node.kind() == ProxyKind::Gateway => return true,
            Affected::Routes {
                hosts,
                scopes,
                known,
            } => (hosts, scopes, known),
        };
        if hosts.is_empty() {
            return false;
        }
        // Gateways' config is not cached by scope; they are few.
        if node.kind() == ProxyKind::Gateway {
            return true;
        }
        let key = Scope::for_node(compiler.mesh(), node).key;
        scopes.contains(&key) || !known.contains(&key)
    }

    /// `node`'s config under `compiler` (the updated one), given what it had
    /// before. After an endpoint change that left the proxy's own workload
    /// alone, only its scope's shared types can differ: they are taken from
    /// the scope and its own listeners kept, which makes pushing one endpoint
    /// change to a thousand proxies a thousand map updates, not compilations.
    pub fn snapshot(
        &self,
        compiler: &Compiler,
        node: &pb::Node,
        previous: &ProxySnapshot,
    ) -> ProxySnapshot {
        let own_workload_changed = match self {
            Affected::All => true,
            Affected::Endpoints {
                workloads,
                recompile,
                ..
            } => {
                workloads.contains(&(node.namespace.clone(), node.pod_name.clone()))
                    || (!recompile.is_empty()
                        && recompile.contains(&Scope::for_node(compiler.mesh(), node).key))
            }
            Affected::Routes { .. } => false,
        };
        if !own_workload_changed
            && node.kind() == ProxyKind::Sidecar
            && previous.types.contains_key(wire::types::LISTENER)
            && let Some(shared) = compiler.cached(&Scope::for_node(compiler.mesh(), node).key)
        {
            let mut types = previous.types.clone();
            types.insert(wire::types::CLUSTER.to_string(), shared.clusters);
            types.insert(wire::types::ENDPOINTS.to_string(), shared.endpoints);
            if let Some(routes) = shared.routes {
                types.insert(wire::types::ROUTE_CONFIG.to_string(), routes);
            }
            return ProxySnapshot { types };
        }
        compiler.snapshot(node)
    }

    pub fn is_nothing(&self) -> bool {
        matches!(self, Affected::Endpoints { hosts, workloads, services, .. }
            if hosts.is_empty() && workloads.is_empty() && services.is_empty())
    }

    /// The scopes whose shared types were patched for `hosts`, or left out
    /// to compile again; the others carried over as they were.
    fn scopes(
        compiler: &Compiler,
        mesh: &Mesh,
        hosts: &HashSet<String>,
        mut patch: impl FnMut(&SharedTypes, &[&crate::registry::Service]) -> Option<SharedTypes>,
    ) -> (CarriedScopes, HashSet<String>, HashSet<String>) {
        let cached: Vec<(String, SharedTypes)> = compiler
            .shared
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter_map(|(k, cell)| Some((k.clone(), cell.get()?.clone())))
            .collect();
        let known: HashSet<String> = cached.iter().map(|(k, _)| k.clone()).collect();
        let mut scopes = HashSet::new();
        let mut carried = HashMap::with_capacity(cached.len());
        for (key, types) in cached {
            let seen: Vec<&crate::registry::Service> = hosts
                .iter()
                .filter_map(|h| mesh.registry.service(h))
                .filter(|svc| compile::visible(&types.scope, svc))
                .collect();
            if seen.is_empty() {
                carried.insert(key, Arc::new(std::sync::OnceLock::from(types)));
                continue;
            }
            scopes.insert(key.clone());
            // A scope that cannot be patched is compiled again when one of
            // its proxies asks.
            if let Some(patched) = patch(&types, &seen) {
                carried.insert(key, Arc::new(std::sync::OnceLock::from(patched)));
            }
        }
        (carried, scopes, known)
    }
}

impl Compiler {
    /// A compiler for `mesh`, the next version of this one's. When only
    /// workloads changed, the scopes' clusters and routes are carried over and
    /// only the endpoints of services whose backends changed are rebuilt.
    pub fn update(&self, mesh: Arc<Mesh>) -> (Compiler, Affected) {
        self.carry_over(mesh, None)
    }

    /// [`Compiler::update`] after a change of only the objects `touched`
    /// (`mesh` is the mesh with them changed): only their namespaces'
    /// services and the workloads they are are compared.
    pub fn update_touched(&self, mesh: Arc<Mesh>, touched: &Touched) -> (Compiler, Affected) {
        self.carry_over(mesh, Some(touched))
    }

    fn carry_over(&self, mesh: Arc<Mesh>, touched: Option<&Touched>) -> (Compiler, Affected) {
        let old = self.mesh();
        // What the proxies still hold stays shared; what none holds is forgotten.
        self.encodings.prune();
        let mut services = HashSet::new();
        let same = match touched {
            // The Istio config was read from the same objects.
            Some(t) if !t.config() && old.config == mesh.config => {
                if old.registry.services != mesh.registry.services
                    && t.registry_only(&[
                        api::Kind::Service,
                        api::Kind::Pod,
                        api::Kind::EndpointSlice,
                        api::Kind::WorkloadEntry,
                    ])
                {
                    services = changed_services(&old.registry, &mesh.registry);
                }
                old.registry.services == mesh.registry.services || !services.is_empty()
            }
            _ => same_but_workloads(old, &mesh),
        };
        if !same {
            if let Some(hosts) = virtual_service_hosts(old, &mesh, touched) {
                return self.carry_routes(mesh, hosts);
            }
            return (
                Compiler::with_encodings(mesh, self.encodings.clone()),
                Affected::All,
            );
        }
        let changed_backends =
            |h: &&String| !old.registry.backends(h).eq(mesh.registry.backends(h));
        let (hosts, workloads): (HashSet<String>, _) = match touched {
            Some(_) if Arc::ptr_eq(&old.registry, &mesh.registry) => {
                (HashSet::new(), HashSet::new())
            }
            Some(t) => {
                let namespaces = t.registry_namespaces();
                let everywhere =
                    old.registry.slices_cross_namespaces || mesh.registry.slices_cross_namespaces;
                let hosts = mesh
                    .registry
                    .services
                    .iter()
                    .filter(|(_, svc)| everywhere || namespaces.contains(svc.namespace.as_str()))
                    .map(|(h, _)| h)
                    .filter(changed_backends)
                    .cloned()
                    .collect();
                (hosts, t.workloads())
            }
            None => (
                mesh.registry
                    .services
                    .keys()
                    .filter(changed_backends)
                    .cloned()
                    .collect(),
                changed_workloads(&old.registry.workloads, &mesh.registry.workloads),
            ),
        };
        let mut workloads = workloads;
        for h in &hosts {
            workloads.extend(moved_backends(&old.registry, &mesh.registry, h));
        }
        // A changed Service's backends, before and after, name it in their
        // inbound listeners however their set changed.
        for h in &services {
            for r in [&old.registry, &mesh.registry] {
                workloads.extend(r.backends(h).map(|w| (w.namespace.clone(), w.name.clone())));
            }
        }
        let (mut carried, scopes, known) = Affected::scopes(self, &mesh, &hosts, |types, seen| {
            let endpoints = Arc::new(patch_endpoints(&mesh, &self.encodings, types, seen));
            Some(SharedTypes {
                endpoints,
                ..types.clone()
            })
        });
        // The scopes that see a changed Service, before or after: compiled
        // again when one of their proxies asks.
        let mut recompile = HashSet::new();
        if !services.is_empty() {
            let sees = |types: &SharedTypes| {
                services.iter().any(|h| {
                    [&old.registry, &mesh.registry]
                        .iter()
                        .filter_map(|r| r.service(h))
                        .any(|svc| compile::visible(&types.scope, svc))
                })
            };
            carried.retain(|key, cell| {
                let keep = !cell.get().is_some_and(sees);
                if !keep {
                    recompile.insert(key.clone());
                }
                keep
            });
        }
        let compiler = Compiler {
            mesh,
            shared: std::sync::Mutex::new(carried),
            encodings: self.encodings.clone(),
            directories: Default::default(),
        };
        (
            compiler,
            Affected::Endpoints {
                hosts,
                scopes,
                known,
                workloads,
                services,
                recompile,
            },
        )
    }
}

/// The services (by hostname) added, removed or changed between two registries.
fn changed_services(old: &Registry, new: &Registry) -> HashSet<String> {
    let (a, b) = (&old.services, &new.services);
    a.keys()
        .chain(b.keys())
        .filter(|h| a.get(*h) != b.get(*h))
        .cloned()
        .collect()
}

type CarriedScopes = HashMap<String, Arc<std::sync::OnceLock<SharedTypes>>>;

impl Compiler {
    /// The next compiler after a change of VirtualServices only, which may
    /// have changed the routes of `hosts`: in each scope that sees one of
    /// them, their clusters (which carry TCP and TLS routes) and virtual
    /// hosts are compiled again, every other resource carried over.
    fn carry_routes(&self, mesh: Arc<Mesh>, hosts: HashSet<String>) -> (Compiler, Affected) {
        let (carried, scopes, known) = Affected::scopes(self, &mesh, &hosts, |types, seen| {
            patch_routes(&mesh, &self.encodings, types, seen)
        });
        let compiler = Compiler {
            mesh,
            shared: std::sync::Mutex::new(carried),
            encodings: self.encodings.clone(),
            directories: Default::default(),
        };
        (
            compiler,
            Affected::Routes {
                hosts,
                scopes,
                known,
            },
        )
    }
}

/// When the meshes differ in their VirtualServices alone, the services
/// whose routes that may change: those a changed VirtualService's hosts
/// (before or after the change) cover. `None` when anything else differs.
fn virtual_service_hosts(
    old: &Mesh,
    new: &Mesh,
    touched: Option<&Touched>,
) -> Option<HashSet<String>> {
    if let Some(t) = touched
        && !t.only(api::Kind::VirtualService)
    {
        return None;
    }
    if !same_but_virtual_services(old, new) {
        return None;
    }
    let key = |vs: &&api::Object<api::networking::VirtualService>| {
        (vs.metadata.namespace.clone(), vs.metadata.name.clone())
    };
    let before: HashMap<_, _> = old.virtual_services.iter().map(|v| (key(&v), v)).collect();
    let after: HashMap<_, _> = new.virtual_services.iter().map(|v| (key(&v), v)).collect();
    let changed = before
        .iter()
        .filter(|(k, v)| after.get(*k) != Some(*v))
        .chain(after.iter().filter(|(k, v)| before.get(*k) != Some(*v)))
        .map(|(_, v)| *v);
    let mut patterns = Vec::new();
    for vs in changed {
        let ns = vs.metadata.namespace.as_deref().unwrap_or("default");
        patterns.extend(vs.spec.hosts.iter().map(|h| new.fqdn(h, ns)));
    }
    Some(
        new.registry
            .services
            .keys()
            .filter(|h| patterns.iter().any(|p| crate::host::matches(p, h)))
            .cloned()
            .collect(),
    )
}

/// The scope's clusters and routes with those of `services` compiled again
/// from `mesh`; `None` if one of theirs is new to the scope (then it is
/// compiled whole).
fn patch_routes(
    mesh: &Mesh,
    encodings: &Encodings,
    types: &SharedTypes,
    services: &[&crate::registry::Service],
) -> Option<SharedTypes> {
    let mut config = ProxyConfig::default();
    for svc in services {
        compile::service_clusters(mesh, &types.scope, svc, &mut config);
    }
    let fresh = encodings.type_snapshot(compile::cluster_resources(config.clusters));
    let clusters = Arc::new(replace(&types.clusters, fresh)?);
    let routes = match &types.routes {
        Some(routes) => {
            let pieces = compile::route_resources(compile::outbound_routes_of(
                mesh,
                &types.scope,
                services.iter().copied(),
            ));
            Some(Arc::new(replace(routes, encodings.type_snapshot(pieces))?))
        }
        None => None,
    };
    Some(SharedTypes {
        clusters,
        routes,
        ..types.clone()
    })
}

/// `old` with its resources of the names in `fresh` replaced by those, or
/// `None` if `fresh` has a name `old` lacks.
fn replace(old: &TypeSnapshot, fresh: TypeSnapshot) -> Option<TypeSnapshot> {
    let mut fresh: HashMap<String, Arc<EncodedResource>> = fresh
        .resources
        .into_iter()
        .map(|r| (r.name.clone(), r))
        .collect();
    let resources = old
        .resources
        .iter()
        .map(|r| fresh.remove(&r.name).unwrap_or_else(|| r.clone()))
        .collect();
    fresh.is_empty().then(|| set_version(resources))
}

/// The scope's endpoints with those of `services` rebuilt from `mesh`. The
/// clusters did not change, so neither do the names nor their order.
fn patch_endpoints(
    mesh: &Mesh,
    encodings: &Encodings,
    types: &SharedTypes,
    services: &[&crate::registry::Service],
) -> wire::snapshot::TypeSnapshot {
    let mut config = ProxyConfig::default();
    for svc in services {
        compile::service_clusters(mesh, &types.scope, svc, &mut config);
    }
    let mut fresh: HashMap<String, Arc<EncodedResource>> = encodings
        .type_snapshot(compile::endpoint_resources(config.endpoints))
        .resources
        .into_iter()
        .map(|r| (r.name.clone(), r))
        .collect();
    let resources = types
        .endpoints
        .resources
        .iter()
        .map(|r| fresh.remove(&r.name).unwrap_or_else(|| r.clone()))
        .collect();
    set_version(resources)
}

/// Whether the meshes differ in nothing but their workloads. Every field is
/// named, so a field added to [`Mesh`] must be decided on here.
fn same_but_workloads(a: &Mesh, b: &Mesh) -> bool {
    let Mesh {
        config,
        registry,
        virtual_services,
        destination_rules,
        gateways,
        sidecars,
        peer_authentications,
        authorization_policies,
        request_authentications,
        telemetries,
        secrets,
        rate_limit_filters,
    } = a;
    *config == b.config
        && registry.services == b.registry.services
        && *virtual_services == b.virtual_services
        && *destination_rules == b.destination_rules
        && *gateways == b.gateways
        && *sidecars == b.sidecars
        && *peer_authentications == b.peer_authentications
        && *authorization_policies == b.authorization_policies
        && *request_authentications == b.request_authentications
        && *telemetries == b.telemetries
        && *secrets == b.secrets
        && *rate_limit_filters == b.rate_limit_filters
}

/// Whether the meshes differ in nothing but their VirtualServices (the
/// registry the very same, or equal).
fn same_but_virtual_services(a: &Mesh, b: &Mesh) -> bool {
    let Mesh {
        config,
        registry,
        virtual_services: _,
        destination_rules,
        gateways,
        sidecars,
        peer_authentications,
        authorization_policies,
        request_authentications,
        telemetries,
        secrets,
        rate_limit_filters,
    } = a;
    *config == b.config
        && (Arc::ptr_eq(registry, &b.registry) || registry.same_content(&b.registry))
        && *destination_rules == b.destination_rules
        && *gateways == b.gateways
        && *sidecars == b.sidecars
        && *peer_authentications == b.peer_authentications
        && *authorization_policies == b.authorization_policies
        && *request_authentications == b.request_authentications
        && *telemetries == b.telemetries
        && *secrets == b.secrets
        && *rate_limit_filters == b.rate_limit_filters
}

fn by_name(ws: &[Arc<Workload>]) -> HashMap<(String, String), Vec<&Workload>> {
    let mut m: HashMap<(String, String), Vec<&Workload>> = HashMap::new();
    for w in ws.iter().map(|w| &**w) {
        m.entry((w.namespace.clone(), w.name.clone()))
            .or_default()
            .push(w);
    }
    m
}

/// The workloads (namespace, name) that joined, left or changed among
/// `hostname`'s backends: a workload's inbound listeners name the services
/// it is a backend of (an EndpointSlice can make a pod one, or stop it
/// being one, without the pod changing).
fn moved_backends(old: &Registry, new: &Registry, hostname: &str) -> HashSet<(String, String)> {
    let by_name = |r: &Registry| {
        let mut m: HashMap<(String, String), Vec<Workload>> = HashMap::new();
        for w in r.backends(hostname) {
            m.entry((w.namespace.clone(), w.name.clone()))
                .or_default()
                .push(w.clone());
        }
        m
    };
    let (a, b) = (by_name(old), by_name(new));
    a.keys()
        .chain(b.keys())
        .filter(|k| a.get(*k) != b.get(*k))
        .cloned()
        .collect()
}

fn changed_workloads(old: &[Arc<Workload>], new: &[Arc<Workload>]) -> HashSet<(String, String)> {
    let (a, b) = (by_name(old), by_name(new));
    a.keys()
        .chain(b.keys())
        .filter(|k| a.get(*k) != b.get(*k))
        .cloned()
        .collect()
}
