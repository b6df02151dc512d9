//! The compiled view of the whole proxy config. A new `Snapshot` is built
//! whenever a config type changes and swapped in atomically; requests hold
//! the one they started with.
//!
//! A compile rebuilds only what changed: every part of the previous
//! snapshot whose resources' bytes (and what it depends on) are the same is
//! shared with the new one (the same `Arc`), and an update that changes only
//! clusters' endpoints replaces those in the live clusters
//! ([`Compiled::commit`]), so that the routes, VIPs and listeners holding
//! the clusters stay. Under endpoint churn a proxy thus never holds two
//! generations of its config, and an update costs what it changes: the
//! accepted resources and the endpoints' sources are `SharedMap`s, of
//! which an update copies the shard it touches, not 1,000 entries.

pub mod domains;
mod listener_part;
pub mod matcher;
pub mod mtls;
pub mod routes;
mod shared_map;
mod type_state;

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use wire::pb;
use wire::pb::resource::Kind;

use crate::lb::{BuildEnv, Cluster, Endpoint, NewEndpoints};
use crate::path::Normalization;
use crate::policy::authz::ListenerAuthz;
use crate::policy::rate_limit::LocalRateLimit;
use crate::telemetry::meta::{PeerMeta, Peers, ServiceMeta};
use listener_part::{ListenerPart, compile_listeners};
use mtls::MtlsMode;
use routes::RouteTable;
use shared_map::SharedMap;
use type_state::Encoded;
pub use type_state::TypeState;

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    Inbound,
    Outbound,
    Gateway,
}

/// How a listener treats its connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Serve {
    Http,
    /// Raw bytes to the application (TCP, and TLS the application terminates).
    Tcp,
    /// Look at the first bytes: HTTP if they look like HTTP, else TCP.
    Sniff,
    /// A gateway's TCP or TLS server: each connection goes whole to the
    /// cluster its VirtualService `tcp` or `tls` route picks
    /// ([`Snapshot::l4_routes`]); TLS is passed through, never terminated.
    L4,
}

/// A listener the proxy should have bound.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenerSpec {
    pub name: Arc<str>,
    pub bind: SocketAddr,
    pub direction: Direction,
    pub serve: Serve,
    /// Speak HTTP/2 to the application (inbound HTTP2/gRPC ports).
    pub app_http2: bool,
    pub app_port: u16,
    pub route_config: Arc<str>,
    /// Inbound: PeerAuthentication's mode for the port. Other listeners
    /// face clients outside the mesh: DISABLE.
    pub mtls: MtlsMode,
    /// Gateway HTTPS port: TLS is terminated with these certificates.
    pub gateway_tls: Option<Arc<crate::tls::gateway::GatewayTls>>,
    /// Gateway plaintext port whose servers asked for `httpsRedirect`.
    pub https_redirect: bool,
    /// How request paths are normalised (Istio's `pathNormalization`).
    pub path_normalization: Normalization,
    /// Gateways: Istio's numTrustedProxies (whom x-forwarded-for is believed).
    pub num_trusted_proxies: u32,
}

/// A service's VIP and port, as captured outbound connections reach it.
#[derive(Clone)]
pub struct Vip {
    pub cluster: Arc<Cluster>,
    /// The VirtualService `tcp` route of this service port, if any: TCP
    /// connections go to its clusters instead of `cluster`.
    pub tcp_route: Option<Arc<crate::tcp::TcpRoute>>,
    /// The VirtualService `tls` routes of this service port, if any: TLS
    /// connections whose SNI one matches go to its clusters.
    pub tls_routes: Option<Arc<crate::tcp::L4Routes>>,
    /// The port's protocol (its name or appProtocol); UNSPECIFIED: sniffed.
    pub protocol: pb::Protocol,
}

pub struct Snapshot {
    /// Accepted resources by type URL.
    pub types: BTreeMap<&'static str, Arc<TypeState>>,
    pub listeners: Vec<ListenerSpec>,
    pub routes: HashMap<String, Arc<RouteTable>>,
    /// Outbound route configs are named by port ("9080"); indexed by number
    /// so that a request needs no formatting to find its own.
    pub routes_by_port: HashMap<u16, Arc<RouteTable>>,
    pub clusters: Arc<HashMap<String, Arc<Cluster>>>,
    /// Inbound and gateway listeners' local rate limits, by bind address.
    pub rate_limits: HashMap<SocketAddr, Arc<LocalRateLimit>>,
    /// Inbound and gateway listeners' global rate limits, by bind address.
    pub global_rate_limits:
        HashMap<SocketAddr, Arc<crate::policy::global_rate_limit::GlobalRateLimit>>,
    /// Gateway TCP and TLS listeners' routes, by bind address.
    pub l4_routes: HashMap<SocketAddr, Arc<crate::tcp::L4Routes>>,
    /// Inbound listeners' authorization policies, by bind address.
    pub authz: HashMap<SocketAddr, Arc<ListenerAuthz>>,
    /// The mesh's path normalization, for the listeners this proxy makes
    /// itself (the explicit outbound proxy): every listener the control
    /// plane sends carries the same mesh-wide setting.
    pub path_normalization: Normalization,
    /// Captured outbound connections: the service cluster behind a VIP and port.
    pub vips: Arc<HashMap<SocketAddr, Vip>>,
    /// Every service host this proxy knows, with its VIPs (none: the DNS
    /// proxy allocates one), for the DNS proxy.
    pub hosts: Arc<BTreeMap<String, Vec<IpAddr>>>,
    /// outboundTrafficPolicy REGISTRY_ONLY: unknown destinations are refused.
    pub registry_only: bool,
    /// Captured inbound connections to ports with no inbound listener.
    pub inbound_passthrough: InboundPassthrough,
    /// Inbound listeners' services (Istio's `destination_service`), by bind address.
    pub inbound_services: HashMap<SocketAddr, Arc<ServiceMeta>>,
    /// The mesh's workloads as inbound peers, from the endpoint data.
    pub peers: Arc<Peers>,
    /// How requests are traced on each side (`None`: not traced): the
    /// inbound listeners' policy for the server side, virtualOutbound's or
    /// the gateway's for the client side.
    pub tracing: Sides<Option<Arc<crate::telemetry::trace::Policy>>>,
    /// The access logs of each side (`None`: not logged).
    pub access_logs: Sides<Option<Arc<crate::telemetry::access_log::AccessLogs>>>,
    /// The Telemetry API's metrics overrides of each side's reporter.
    pub metrics: Sides<Option<Arc<crate::telemetry::metrics::Overrides>>>,
    /// What the parts above were compiled from, for the next compile.
    sources: Sources,
}

/// A setting per side of the proxy, as Istio's Telemetry `match.mode` splits them.
#[derive(Clone, Default)]
pub struct Sides<T> {
    pub server: T,
    pub client: T,
}

impl<T> Sides<T> {
    pub fn side(&self, direction: Direction) -> &T {
        match direction {
            Direction::Inbound => &self.server,
            Direction::Outbound | Direction::Gateway => &self.client,
        }
    }
}

/// What applies to a captured inbound connection to a port no inbound
/// listener serves, before it is passed through to the application:
/// PeerAuthentication (the workload's mode, or its portLevelMtls entry for
/// the port) and the workload's TCP authorization policies.
#[derive(Clone, Default)]
pub struct InboundPassthrough {
    /// Istio's default without a PeerAuthentication (and what a control
    /// plane that sends no "virtualInbound" gets): PERMISSIVE.
    pub mtls: MtlsMode,
    pub port_mtls: HashMap<u16, MtlsMode>,
    pub authz: Arc<ListenerAuthz>,
}

impl InboundPassthrough {
    fn compile(l: &pb::Listener) -> Result<Self, String> {
        let mut port_mtls = HashMap::new();
        for (port, mode) in &l.port_mtls_modes {
            let port = u16::try_from(*port)
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| format!("port_mtls_modes: port {port} is invalid"))?;
            port_mtls.insert(port, MtlsMode::from_pb(*mode)?);
        }
        Ok(InboundPassthrough {
            mtls: MtlsMode::from_pb(l.mtls_mode)?,
            port_mtls,
            authz: Arc::new(ListenerAuthz::compile(l)?),
        })
    }

    /// The PeerAuthentication mode of connections to `port`.
    pub fn mtls_for(&self, port: u16) -> MtlsMode {
        self.port_mtls.get(&port).copied().unwrap_or(self.mtls)
    }
}

impl Snapshot {
    /// Whether every type has been received at least once.
    pub fn complete(&self) -> bool {
        wire::types::ALL.iter().all(|t| self.types.contains_key(t))
    }
}

/// Builds a snapshot from accepted resources. `prev` (the snapshot in
/// force) lends what did not change, and the run-time state that must
/// survive an update (connections, load counters, outlier records) to what
/// did. Nothing in force changes until [`Compiled::commit`].
pub fn compile(
    types: BTreeMap<&'static str, Arc<TypeState>>,
    pod_ip: Option<IpAddr>,
    prev: Option<&Snapshot>,
    env: &BuildEnv<'_>,
) -> Result<Compiled, String> {
    let empty = TypeState::default();
    let state = |t: &str| types.get(t).map_or(&empty, |s| &**s);
    // Whether type `t` is the one `prev` was compiled from.
    let same = |t: &str| {
        prev.and_then(|p| p.types.get(t))
            .zip(types.get(t))
            .is_some_and(|(a, b)| Arc::ptr_eq(a, b))
    };
    // Endpoints by cluster. Endpoints of a cluster the proxy does not have are
    // ignored, as Envoy ignores EDS for unknown clusters.
    let endpoints = match prev {
        Some(p) if same(wire::types::ENDPOINTS) => p.sources.endpoints.clone(),
        _ => {
            // What `prev`'s were made of: only what changed since is decoded.
            let before = prev.and_then(|p| {
                let made_of = p.types.get(wire::types::ENDPOINTS)?;
                Some((&*p.sources.endpoints, &**made_of))
            });
            Arc::new(EndpointSources::new(state(wire::types::ENDPOINTS), before)?)
        }
    };

    let mut swaps = Vec::new();
    let built = match prev {
        Some(p) if same(wire::types::CLUSTER) => {
            // The same clusters: those whose endpoints changed get them.
            for (name, now) in endpoints.changed_since(&p.sources.endpoints) {
                if let (Some(cluster), Some(spec)) =
                    (p.clusters.get(name), p.sources.clusters.by_name.get(name))
                {
                    swaps.push(new_endpoints(cluster, spec, now, env)?);
                }
            }
            Built {
                clusters: p.clusters.clone(),
                sources: p.sources.clusters.clone(),
                changed: false,
            }
        }
        _ => build_clusters(
            state(wire::types::CLUSTER),
            &endpoints,
            prev,
            env,
            &mut swaps,
        )?,
    };
    let clusters = built.clusters;

    // What the clusters' configs make: VIPs, hosts, TCP and TLS routes.
    let (vips, hosts) = match prev {
        Some(p) if !built.changed => (p.vips.clone(), p.hosts.clone()),
        _ => addressing(state(wire::types::CLUSTER), &clusters)?,
    };

    // The same clusters: the peers table is updated for the endpoints
    // replaced, at commit. Else it is built from every cluster's endpoints.
    let update_peers = prev.is_some() && !built.changed;
    let peers = match prev {
        Some(p) if update_peers => p.peers.clone(),
        _ => {
            let replaced: HashMap<*const Cluster, &NewEndpoints> =
                swaps.iter().map(|(c, e)| (Arc::as_ptr(c), e)).collect();
            let endpoints: Vec<_> = clusters
                .values()
                .map(|c| match replaced.get(&Arc::as_ptr(c)) {
                    Some(new) => new.endpoints(),
                    None => c.endpoints(),
                })
                .collect();
            Arc::new(Peers::of(endpoints.iter().flat_map(|e| peer_entries(e))))
        }
    };

    // Route tables hold the clusters they send to: reused while those are.
    let reusable = prev.filter(|_| !built.changed);
    let (routes, routes_by_port, route_sources) = match reusable {
        Some(p) if same(wire::types::ROUTE_CONFIG) => (
            p.routes.clone(),
            p.routes_by_port.clone(),
            p.sources.routes.clone(),
        ),
        _ => compile_routes(state(wire::types::ROUTE_CONFIG), &clusters, reusable)?,
    };

    let listeners = match reusable {
        Some(p) if same(wire::types::LISTENER) => ListenerPart::of(p),
        _ => compile_listeners(state(wire::types::LISTENER), pod_ip, prev, env, &clusters)?,
    };

    let ListenerPart {
        listeners,
        registry_only,
        inbound_passthrough,
        authz,
        l4_routes,
        rate_limits,
        global_rate_limits,
        inbound_services,
        path_normalization,
        tracing,
        access_logs,
        metrics,
    } = listeners;
    Ok(Compiled {
        snapshot: Snapshot {
            types,
            listeners,
            routes,
            routes_by_port,
            clusters,
            l4_routes,
            rate_limits,
            global_rate_limits,
            authz,
            path_normalization,
            vips,
            hosts,
            inbound_services,
            peers,
            registry_only,
            inbound_passthrough,
            tracing,
            access_logs,
            metrics,
            sources: Sources {
                endpoints,
                clusters: built.sources,
                routes: route_sources,
            },
        },
        swaps,
        update_peers,
    })
}

/// The peers table's entries for `endpoints`: those at an IP address.
fn peer_entries(endpoints: &[Arc<Endpoint>]) -> impl Iterator<Item = (IpAddr, &Arc<PeerMeta>)> {
    endpoints.iter().filter_map(|e| {
        let addr = e.key().parse::<SocketAddr>().ok()?;
        Some((addr.ip(), &e.meta))
    })
}

/// A compiled snapshot, and the endpoints it replaces in clusters it shares
/// with the snapshot in force.
pub struct Compiled {
    snapshot: Snapshot,
    swaps: Vec<(Arc<Cluster>, NewEndpoints)>,
    /// The snapshot shares the peers table of the one in force, which the
    /// swaps' endpoints update.
    update_peers: bool,
}

impl Compiled {
    pub fn snapshot(&self) -> &Snapshot {
        &self.snapshot
    }

    /// The snapshot, once the clusters it shares with the one in force have
    /// their new endpoints: for the snapshot that goes in force only.
    pub fn commit(self) -> Snapshot {
        for (cluster, endpoints) in self.swaps {
            if self.update_peers {
                let (old, new) = (cluster.endpoints(), endpoints.endpoints());
                self.snapshot
                    .peers
                    .replace(peer_entries(&old), peer_entries(&new));
            }
            cluster.replace_endpoints(endpoints);
        }
        self.snapshot
    }
}

/// What a snapshot's parts were compiled from, by resource, so that the next
/// compile can tell what changed without decoding. Names and bytes are
/// shared with the accepted [`TypeState`]s, not copied.
#[derive(Default)]
struct Sources {
    endpoints: Arc<EndpointSources>,
    clusters: Arc<ClusterSources>,
    /// Route config resources: the route table each made.
    routes: Arc<BuiltFrom>,
}

/// Resources by name: their bytes and the name of what was built from
/// each.
type BuiltFrom = HashMap<Arc<str>, (Arc<Encoded>, Arc<str>)>;

/// Which cluster each endpoints resource is for. Kept as [`SharedMap`]s, so
/// that an update of one cluster's endpoints copies and compares a shard of
/// each, not the whole.
#[derive(Clone, Default)]
struct EndpointSources {
    /// Endpoints resources by name: the cluster they are for.
    by_resource: SharedMap<Arc<str>, Arc<str>>,
    /// The endpoints resource of each cluster.
    by_cluster: SharedMap<Arc<str>, Arc<Encoded>>,
}

impl EndpointSources {
    /// The sources of `state`: `before`'s (and the endpoints resources it
    /// was made of), with the resources that changed since then decoded.
    fn new(
        state: &TypeState,
        before: Option<(&EndpointSources, &TypeState)>,
    ) -> Result<Self, String> {
        let Some((known, known_state)) = before else {
            let mut out = EndpointSources::default();
            for r in state.in_order() {
                out.add(r, cluster_of(r)?)?;
            }
            return Ok(out);
        };
        let mut out = known.clone();
        // The resources changed since, with the cluster each is for now.
        let mut changed = Vec::new();
        for (name, now) in state.changed_since(known_state) {
            let now = match now {
                Some(r) => Some((r, cluster_of(r)?)),
                None => None,
            };
            changed.push((name, now));
        }
        // The clusters that lose their resource go first: a cluster may
        // move from one resource to another in one update.
        for (name, now) in &changed {
            let before = out.by_resource.get(&**name);
            if before.is_some()
                && before != now.as_ref().map(|(_, cluster)| cluster)
                && let Some(cluster) = out.by_resource.remove(&**name)
            {
                out.by_cluster.remove(&cluster);
            }
        }
        for (name, now) in changed {
            let Some((r, cluster)) = now else { continue };
            if out.by_resource.get(&**name) == Some(&cluster) {
                // Still for the same cluster: only its bytes are new.
                out.by_cluster.insert(cluster, r.clone());
            } else {
                out.add(r, cluster)?;
            }
        }
        Ok(out)
    }

    fn add(&mut self, r: &Arc<Encoded>, cluster: Arc<str>) -> Result<(), String> {
        if self.by_cluster.insert(cluster.clone(), r.clone()).is_some() {
            return Err(format!("endpoints: cluster {cluster:?} is listed twice"));
        }
        self.by_resource.insert(r.name.clone(), cluster);
        Ok(())
    }

    /// The clusters whose endpoints differ from `before`'s, with their
    /// endpoints now (`None`: they have none).
    fn changed_since<'a>(
        &'a self,
        before: &'a EndpointSources,
    ) -> impl Iterator<Item = (&'a str, Option<&'a Arc<Encoded>>)> {
        self.by_cluster
            .changed_since(&before.by_cluster, Arc::ptr_eq)
            .map(|(name, now)| (&**name, now))
    }
}

#[derive(Default)]
struct ClusterSources {
    /// Cluster resources by name: the bytes and the cluster's name.
    by_resource: BuiltFrom,
    /// The resource of each cluster, by the cluster's name.
    by_name: HashMap<Arc<str>, Arc<Encoded>>,
}

/// The clusters a compile made.
struct Built {
    clusters: Arc<HashMap<String, Arc<Cluster>>>,
    sources: Arc<ClusterSources>,
    /// Some cluster is new, rebuilt or gone: what holds clusters is rebuilt.
    changed: bool,
}

/// `r`'s content with the names its compact form leaves to the resource.
fn decode_kind(r: &Encoded) -> Result<Option<Kind>, String> {
    let mut kind = r.decode()?.kind;
    if let Some(k) = &mut kind {
        wire::names::put_back(&r.name, k);
    }
    Ok(kind)
}

/// The cluster an endpoints resource is for.
fn cluster_of(r: &Encoded) -> Result<Arc<str>, String> {
    match decode_kind(r)? {
        Some(Kind::Endpoints(e)) => Ok(Arc::from(e.cluster)),
        _ => Err(wrong_kind("endpoints", &r.name)),
    }
}

fn decode_cluster(r: &Encoded) -> Result<pb::Cluster, String> {
    match decode_kind(r)? {
        Some(Kind::Cluster(c)) => Ok(c),
        _ => Err(wrong_kind("clusters", &r.name)),
    }
}

fn decode_endpoints(r: &Encoded) -> Result<pb::ClusterEndpoints, String> {
    match decode_kind(r)? {
        // The compact form read back into whole endpoints.
        Some(Kind::Endpoints(e)) => {
            wire::endpoints::whole(e).map_err(|e| format!("endpoints {:?}: {e}", r.name))
        }
        _ => Err(wrong_kind("endpoints", &r.name)),
    }
}

/// `cluster`'s endpoints as `endpoints` lists them (its config unchanged, `spec`).
fn new_endpoints(
    cluster: &Arc<Cluster>,
    spec: &Encoded,
    endpoints: Option<&Arc<Encoded>>,
    env: &BuildEnv<'_>,
) -> Result<(Arc<Cluster>, NewEndpoints), String> {
    let spec = decode_cluster(spec)?;
    let endpoints = endpoints.map(|e| decode_endpoints(e)).transpose()?;
    let new = cluster
        .build_endpoints(&spec, endpoints.as_ref(), env)
        .map_err(|e| format!("cluster {:?}: {e}", spec.name))?;
    Ok((cluster.clone(), new))
}

/// The clusters of `state`: those whose config is unchanged since `prev`
/// are its clusters (in `swaps` with new endpoints if theirs changed), the
/// others are built, with the run-time state of `prev`'s of the same name.
fn build_clusters(
    state: &TypeState,
    endpoints: &EndpointSources,
    prev: Option<&Snapshot>,
    env: &BuildEnv<'_>,
    swaps: &mut Vec<(Arc<Cluster>, NewEndpoints)>,
) -> Result<Built, String> {
    let mut clusters = HashMap::with_capacity(state.len());
    let mut sources = ClusterSources::default();
    let mut changed = false;
    for r in state.in_order() {
        let kept = prev.and_then(|p| {
            let (bytes, name) = p.sources.clusters.by_resource.get(&r.name)?;
            let cluster = p.clusters.get(&**name)?;
            Arc::ptr_eq(bytes, r).then_some((p, name, cluster))
        });
        let (name, cluster) = match kept {
            Some((p, name, cluster)) => {
                let now = endpoints.by_cluster.get(name);
                let before = p.sources.endpoints.by_cluster.get(name);
                let same = match (now, before) {
                    (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                    (None, None) => true,
                    _ => false,
                };
                if !same {
                    swaps.push(new_endpoints(cluster, r, now, env)?);
                }
                (name.clone(), cluster.clone())
            }
            None => {
                let c = decode_cluster(r)?;
                if c.name.is_empty() {
                    return Err("clusters: a cluster has no name".into());
                }
                let previous = prev.and_then(|p| p.clusters.get(&c.name)).map(Arc::as_ref);
                let eps = endpoints
                    .by_cluster
                    .get(c.name.as_str())
                    .map(|e| decode_endpoints(e))
                    .transpose()?;
                let built = Cluster::build(&c, eps.as_ref(), previous, env)
                    .map_err(|e| format!("cluster {:?}: {e}", c.name))?;
                changed = true;
                (Arc::from(c.name), Arc::new(built))
            }
        };
        if clusters.insert(name.to_string(), cluster).is_some() {
            return Err(format!("clusters: {name:?} is listed twice"));
        }
        sources.by_name.insert(name.clone(), r.clone());
        sources
            .by_resource
            .insert(r.name.clone(), (r.clone(), name));
    }
    // Every cluster kept, none added: gone ones are the only change.
    changed |= prev.is_none_or(|p| p.clusters.len() != clusters.len());
    Ok(Built {
        clusters: Arc::new(clusters),
        sources: Arc::new(sources),
        changed,
    })
}

type Vips = Arc<HashMap<SocketAddr, Vip>>;
type Hosts = Arc<BTreeMap<String, Vec<IpAddr>>>;

/// The services' VIPs (with the TCP and TLS routes of their ports) and
/// hosts, from every cluster's config.
fn addressing(
    state: &TypeState,
    clusters: &HashMap<String, Arc<Cluster>>,
) -> Result<(Vips, Hosts), String> {
    let specs = state
        .in_order()
        .into_iter()
        .map(|r| decode_cluster(r))
        .collect::<Result<Vec<_>, _>>()?;
    let mut tcp_routes = HashMap::new();
    let mut tls_routes = HashMap::new();
    for c in &specs {
        if !c.tcp_route.is_empty() {
            let route = crate::tcp::TcpRoute::new(&c.tcp_route, clusters);
            tcp_routes.insert(c.name.clone(), Arc::new(route));
        }
        if !c.tls_routes.is_empty() {
            let routes = crate::tcp::L4Routes::new(&c.tls_routes, true, false, clusters)
                .map_err(|e| format!("cluster {:?}: {e}", c.name))?;
            tls_routes.insert(c.name.clone(), Arc::new(routes));
        }
    }
    let vip = |c: &pb::Cluster, cluster: &Arc<Cluster>| Vip {
        cluster: Arc::clone(cluster),
        tcp_route: tcp_routes.get(&c.name).cloned(),
        tls_routes: tls_routes.get(&c.name).cloned(),
        protocol: pb::Protocol::try_from(c.protocol).unwrap_or_default(),
    };

    let mut vips = HashMap::new();
    let mut hosts: BTreeMap<String, Vec<IpAddr>> = BTreeMap::new();
    for c in &specs {
        if c.service.is_empty() {
            continue;
        }
        let known = hosts.entry(c.service.clone()).or_default();
        let Ok(port) = u16::try_from(c.port) else {
            continue;
        };
        for a in &c.addresses {
            let ip = a
                .parse::<IpAddr>()
                .map_err(|_| format!("cluster {:?}: address {a:?} is not an IP address", c.name))?;
            if !known.contains(&ip) {
                known.push(ip);
            }
            // The service's own cluster, not a subset's.
            if c.subset.is_empty()
                && let Some(cluster) = clusters.get(&c.name)
            {
                vips.insert(SocketAddr::new(ip, port), vip(c, cluster));
            }
        }
    }

    // Hosts without a VIP get one, as Istio's DNS auto-allocation does, so
    // that the DNS proxy can answer them and capture can route to them.
    let allocated = crate::dns::allocate(&hosts);
    for c in &specs {
        let (Some(ips), Ok(port), Some(cluster)) = (
            allocated.get(&c.service),
            u16::try_from(c.port),
            clusters.get(&c.name),
        ) else {
            continue;
        };
        if c.subset.is_empty() {
            for ip in ips {
                vips.insert(SocketAddr::new(*ip, port), vip(c, cluster));
            }
        }
    }
    hosts.extend(allocated);
    Ok((Arc::new(vips), Arc::new(hosts)))
}

type RouteTables = (
    HashMap<String, Arc<RouteTable>>,
    HashMap<u16, Arc<RouteTable>>,
    Arc<BuiltFrom>,
);

/// A route config's pieces: each resource, decoded when the last compile
/// did not have its bytes.
type Pieces<'a> = Vec<(&'a Arc<Encoded>, Option<pb::RouteConfig>)>;

/// The route tables of `state`; those whose bytes are `reusable`'s are its
/// tables (its clusters being the same).
fn compile_routes(
    state: &TypeState,
    clusters: &HashMap<String, Arc<Cluster>>,
    reusable: Option<&Snapshot>,
) -> Result<RouteTables, String> {
    let mut routes = HashMap::new();
    let mut routes_by_port = HashMap::new();
    // The resources naming one route config are its pieces (see
    // `RouteConfig` in proxy.proto): their virtual hosts make one table. A
    // piece whose bytes the last compile had is not decoded to learn its
    // config; a config all of whose pieces it had is not compiled again.
    let mut configs: BTreeMap<Arc<str>, Pieces<'_>> = BTreeMap::new();
    for r in state.in_order() {
        let known = reusable.and_then(|p| {
            let (bytes, name) = p.sources.routes.get(&r.name)?;
            Arc::ptr_eq(bytes, r).then(|| name.clone())
        });
        match known {
            Some(name) => configs.entry(name).or_default().push((r, None)),
            None => {
                let Some(Kind::RouteConfig(rc)) = decode_kind(r)? else {
                    return Err(wrong_kind("routes", &r.name));
                };
                configs
                    .entry(rc.name.as_str().into())
                    .or_default()
                    .push((r, Some(rc)));
            }
        }
    }
    let mut previous_pieces: HashMap<&str, usize> = HashMap::new();
    for (_, name) in reusable.iter().flat_map(|p| p.sources.routes.values()) {
        *previous_pieces.entry(&**name).or_default() += 1;
    }
    let mut sources = HashMap::new();
    for (name, pieces) in configs {
        let unchanged = pieces.iter().all(|(_, rc)| rc.is_none())
            && previous_pieces.get(&*name) == Some(&pieces.len());
        let kept = reusable
            .filter(|_| unchanged)
            .and_then(|p| p.routes.get(&*name).cloned());
        let table = match kept {
            Some(table) => table,
            None => {
                let decoded = pieces
                    .iter()
                    .map(|(r, rc)| match rc {
                        Some(rc) => Ok(rc.clone()),
                        None => match decode_kind(r)? {
                            Some(Kind::RouteConfig(rc)) => Ok(rc),
                            _ => Err(wrong_kind("routes", &r.name)),
                        },
                    })
                    .collect::<Result<Vec<_>, String>>()?;
                let hosts: Vec<&pb::VirtualHost> =
                    decoded.iter().flat_map(|rc| &rc.virtual_hosts).collect();
                Arc::new(
                    RouteTable::compile_hosts(&name, &hosts, clusters)
                        .map_err(|e| format!("route config {name:?}: {e}"))?,
                )
            }
        };
        for (r, _) in &pieces {
            sources.insert(r.name.clone(), ((*r).clone(), name.clone()));
        }
        if let Ok(port) = name.parse::<u16>() {
            routes_by_port.insert(port, table.clone());
        }
        routes.insert(name.to_string(), table);
    }
    Ok((routes, routes_by_port, Arc::new(sources)))
}

fn wrong_kind(what: &str, name: &str) -> String {
    format!("{what}: resource {name:?} is of another type")
}

#[cfg(test)]
mod tests;
