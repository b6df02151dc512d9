//! Clusters at run time: their endpoints, load balancing, circuit breakers,
//! connection pools and outlier detection.
//!
//! A `Cluster` is rebuilt when its config changes; what must survive
//! a config update (connections, per-endpoint load and outlier records, the
//! circuit breakers' usage, the round-robin cursor) is carried over from the
//! previous build by endpoint address. An update that changes only its
//! endpoints replaces them in place ([`Cluster::replace_endpoints`]), as
//! Envoy applies EDS to a live cluster: the routes and VIPs that hold the
//! cluster stay as they are.
//!
//! Which endpoints a request may go to is worked out once and cached (the
//! `Eligible` set: healthy, not ejected, tiered by locality, with the hash
//! table when hashing), and only recomputed when an ejection starts or ends,
//! so that picking costs no allocation.

pub mod breaker;
mod endpoint;
pub mod hash;
pub mod locality;
pub mod outlier;
pub mod passthrough;
pub mod upstream;

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use http::uri::Authority;
use rand::Rng;
use tokio::time::Instant;
use wire::pb;

use crate::telemetry::meta::{EndpointMetas, PeerMeta, ServiceMeta};
use breaker::{Breakers, Limits};
pub use endpoint::{ActiveGuard, Endpoint, Load};
use endpoint::{ClusterConn, EndpointState};
use locality::{Local, Locality, Placement};
use outlier::Outcome;
use passthrough::Passthrough;
use upstream::ConnSettings;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Balancer {
    LeastRequest,
    RoundRobin,
    Random,
    /// Forward to the address the client asked for (Istio's PassthroughCluster, ORIGINAL_DST).
    Passthrough,
}

/// Which HTTP version to speak upstream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpstreamProtocol {
    Http1,
    Http2,
    /// Whatever the downstream spoke (protocol sniffed, as Istio does for unnamed ports).
    Downstream,
}

impl UpstreamProtocol {
    pub fn from_pb(p: i32) -> Self {
        match pb::Protocol::try_from(p) {
            Ok(pb::Protocol::Http2 | pb::Protocol::Grpc) => UpstreamProtocol::Http2,
            Ok(pb::Protocol::Http) => UpstreamProtocol::Http1,
            _ => UpstreamProtocol::Downstream,
        }
    }
}

/// What building a cluster needs besides its own config.
pub struct BuildEnv<'a> {
    /// The proxy's own limits on connections, for every cluster.
    pub limits: &'a crate::limits::Limits,
    pub local: &'a Local,
    /// This proxy's mesh identity, for mTLS to endpoints; `None` without one.
    pub mesh_tls: Option<&'a Arc<crate::tls::MeshTls>>,
    /// This proxy's pod address, if it has one: a loopback one is where its
    /// mesh connections to loopback endpoints come from
    /// ([`ConnSettings::loopback_source`]).
    pub pod_ip: Option<IpAddr>,
}

struct Outlier {
    config: outlier::Config,
    detector: Arc<outlier::Detector>,
}

struct Hashing {
    key: hash::Key,
    algorithm: pb::HashAlgorithm,
    table_size: u64,
}

pub struct Cluster {
    pub name: Arc<str>,
    pub service: Arc<ServiceMeta>,
    pub balancer: Balancer,
    pub protocol: UpstreamProtocol,
    pub breakers: Breakers,
    /// Passthrough clusters only: a pool per destination the clients name.
    pub passthrough: Option<Arc<Passthrough>>,
    hashing: Option<Hashing>,
    outlier: Option<Outlier>,
    /// The endpoints, and which of them a request may go to now: replaced
    /// whole, so that a request sees one endpoint set or the other.
    eligible: ArcSwap<Eligible>,
    cursor: Arc<AtomicUsize>,
    /// What the endpoints' connections were secured with, to tell when a
    /// config update changes it.
    tls_spec: Option<pb::UpstreamTls>,
}

/// The endpoints a request may go to now, by tier.
struct Eligible {
    /// Every endpoint of the cluster, as the config lists them.
    endpoints: Arc<[Arc<Endpoint>]>,
    tiers: Vec<Tier>,
    /// Cumulative percentages of traffic per tier.
    upto: Vec<u32>,
    /// The outlier generation this reflects.
    generation: u64,
    /// When the first ejection in force ends (then this is stale).
    valid_until: Option<Instant>,
}

struct Tier {
    hosts: Vec<Arc<Endpoint>>,
    /// Locality weights (distribute): (cumulative weight, end) per locality,
    /// `hosts` being grouped by locality. Empty: one group.
    groups: Vec<(u64, usize)>,
    table: Option<hash::Table>,
}

impl Cluster {
    pub fn build(
        spec: &pb::Cluster,
        endpoints: Option<&pb::ClusterEndpoints>,
        prev: Option<&Cluster>,
        env: &BuildEnv<'_>,
    ) -> Result<Self, String> {
        let service = ServiceMeta::interned(&spec.service);
        let balancer = match pb::LoadBalancer::try_from(spec.lb) {
            Ok(pb::LoadBalancer::LeastRequest) => Balancer::LeastRequest,
            Ok(pb::LoadBalancer::RoundRobin) => Balancer::RoundRobin,
            Ok(pb::LoadBalancer::Random) => Balancer::Random,
            Ok(pb::LoadBalancer::Passthrough) => Balancer::Passthrough,
            Err(_) => return Err(format!("lb: unknown load balancer {}", spec.lb)),
        };
        let settings = conn_settings(spec, env);
        let breakers = Breakers::new(
            Limits::from_pb(spec.connection_pool.as_ref()),
            prev.map_or_else(Default::default, |p| p.breakers.usage.clone()),
        );
        let hashing = match &spec.consistent_hash {
            None => None,
            Some(ch) => match hash::Key::compile(ch)? {
                None => None,
                Some(key) => {
                    let algorithm = pb::HashAlgorithm::try_from(ch.algorithm).unwrap_or_default();
                    Some(Hashing {
                        key,
                        algorithm,
                        table_size: hash::table_size(algorithm, ch.table_size)?,
                    })
                }
            },
        };
        let outlier =
            outlier::Config::from_pb(spec.outlier_detection.as_ref()).map(|config| Outlier {
                config,
                detector: prev.and_then(|p| p.outlier.as_ref()).map_or_else(
                    || Arc::new(outlier::Detector::new(Instant::now())),
                    |o| o.detector.clone(),
                ),
            });

        let tls_changed = prev.is_some_and(|p| p.tls_spec != spec.tls);
        let previous = prev.map(|p| p.endpoints());
        let eps = make_endpoints(
            spec,
            endpoints,
            previous.as_deref().unwrap_or_default(),
            &EndpointEnv::new(settings, &breakers, tls_changed, &service.namespace, env),
        )?;
        // Kept across config updates, as endpoints' pools are.
        let passthrough = (balancer == Balancer::Passthrough).then(|| {
            match prev.and_then(|p| p.passthrough.clone()) {
                Some(p) => {
                    p.configure(settings, breakers.clone());
                    p
                }
                None => Passthrough::new(settings, breakers.clone()),
            }
        });
        let cluster = Cluster {
            name: spec.name.as_str().into(),
            service,
            balancer,
            protocol: UpstreamProtocol::from_pb(spec.protocol),
            breakers,
            passthrough,
            hashing,
            outlier,
            eligible: ArcSwap::from_pointee(Eligible::empty()),
            cursor: prev.map_or_else(Default::default, |p| p.cursor.clone()),
            tls_spec: spec.tls.clone(),
        };
        cluster
            .eligible
            .store(Arc::new(cluster.compute_eligible(eps, Instant::now())));
        Ok(cluster)
    }

    /// This cluster's endpoints as `endpoints` lists them, for a config
    /// update that changes them and not `spec` (this cluster's own config):
    /// built as [`Cluster::build`] would, the state of the endpoints that
    /// stay carried over. Nothing changes until
    /// [`replace_endpoints`](Self::replace_endpoints).
    pub fn build_endpoints(
        &self,
        spec: &pb::Cluster,
        endpoints: Option<&pb::ClusterEndpoints>,
        env: &BuildEnv<'_>,
    ) -> Result<NewEndpoints, String> {
        let eps = make_endpoints(
            spec,
            endpoints,
            &self.endpoints(),
            &EndpointEnv::new(
                conn_settings(spec, env),
                &self.breakers,
                false,
                &self.service.namespace,
                env,
            ),
        )?;
        Ok(NewEndpoints(Arc::new(
            self.compute_eligible(eps, Instant::now()),
        )))
    }

    /// Puts endpoints [`build_endpoints`](Self::build_endpoints) made in
    /// force: requests from now on pick among them.
    pub fn replace_endpoints(&self, new: NewEndpoints) {
        self.eligible.store(new.0);
    }

    /// Every endpoint of the cluster, healthy or not.
    pub fn endpoints(&self) -> Arc<[Arc<Endpoint>]> {
        self.eligible.load().endpoints.clone()
    }

    /// Picks an endpoint for a request with `hash` (consistent hashing; `None`
    /// draws at random), avoiding `avoid` (the endpoint a retry just failed
    /// on, like Istio's default `previous_hosts` predicate) when there is
    /// another choice. `None`: no endpoint is available.
    pub fn pick(&self, hash: Option<u64>, avoid: Option<&Endpoint>) -> Option<Arc<Endpoint>> {
        let eligible = self.eligible_now();
        let mut rng = rand::rng();
        let draw = match hash {
            // Envoy chooses the tier by the hash too, so a key sticks to it.
            Some(h) => (h % 100) as u32,
            None => rng.random_range(0..100),
        };
        let tier = eligible.tier(draw)?;
        if let Some(table) = &tier.table {
            let avoid = avoid
                .and_then(|a| tier.hosts.iter().position(|e| std::ptr::eq(&**e, a)))
                .and_then(|i| u32::try_from(i).ok());
            let h = hash.unwrap_or_else(|| rng.random());
            return tier.hosts.get(table.lookup(h, avoid) as usize).cloned();
        }
        let hosts = tier.group(&mut rng);
        let n = hosts.len();
        if n <= 1 {
            return hosts.first().cloned();
        }
        let mut i = match self.balancer {
            Balancer::RoundRobin => self.cursor.fetch_add(1, Ordering::Relaxed) % n,
            Balancer::Random | Balancer::Passthrough => rng.random_range(0..n),
            Balancer::LeastRequest => {
                // Power of two choices: two distinct random endpoints, the less loaded wins.
                let a = rng.random_range(0..n);
                let b = (a + rng.random_range(1..n)) % n;
                let load = |i: usize| hosts[i].load().active.load(Ordering::Relaxed);
                if load(b) < load(a) { b } else { a }
            }
        };
        // Step past the endpoint that failed: deterministic where re-drawing
        // would only make it likely.
        if avoid.is_some_and(|a| std::ptr::eq(&*hosts[i], a)) {
            i = (i + 1) % n;
        }
        hosts.get(i).cloned()
    }

    /// The hash of a request, if this cluster balances by one.
    pub fn hash_key(&self) -> Option<&hash::Key> {
        self.hashing.as_ref().map(|h| &h.key)
    }

    /// Records what became of a request to `endpoint`, for outlier detection.
    pub fn report(&self, endpoint: &Endpoint, outcome: Outcome) {
        let Some(o) = &self.outlier else { return };
        let eligible = self.eligible.load();
        let ejected = o.detector.report(
            &o.config,
            endpoint.outlier_record(),
            eligible.endpoints.iter().map(|e| e.outlier()),
            outcome,
            Instant::now(),
        );
        if ejected {
            tracing::info!(cluster = %self.name, endpoint = %endpoint.key(), "outlier detection: endpoint ejected");
        }
    }

    /// Whether `endpoint` is ejected now (for operators).
    pub fn is_ejected(&self, endpoint: &Endpoint) -> bool {
        self.outlier.is_some()
            && endpoint
                .outlier()
                .and_then(|o| o.ejected_until(Instant::now()))
                .is_some()
    }

    fn eligible_now(&self) -> Arc<Eligible> {
        let current = self.eligible.load_full();
        let Some(o) = &self.outlier else {
            return current;
        };
        let stale = current.generation != o.detector.generation()
            || current.valid_until.is_some_and(|t| Instant::now() >= t);
        if !stale {
            return current;
        }
        // Several requests may recompute at once; they compute the same
        // thing. One computed from endpoints a config update has replaced
        // meanwhile serves its request, and is not stored.
        let fresh = Arc::new(self.compute_eligible(current.endpoints.clone(), Instant::now()));
        self.eligible.compare_and_swap(&current, fresh.clone());
        fresh
    }

    fn compute_eligible(&self, endpoints: Arc<[Arc<Endpoint>]>, now: Instant) -> Eligible {
        let generation = self.outlier.as_ref().map_or(0, |o| o.detector.generation());
        let mut valid_until: Option<Instant> = None;
        let mut available: Vec<bool> = endpoints
            .iter()
            .map(|e| {
                let ejected = match &self.outlier {
                    Some(_) => e.outlier().and_then(|o| o.ejected_until(now)),
                    None => None,
                };
                if let Some(u) = ejected {
                    valid_until = Some(valid_until.map_or(u, |v| v.min(u)));
                }
                e.healthy && ejected.is_none()
            })
            .collect();
        // Envoy's panic threshold (Istio's minHealthPercent): with too few
        // endpoints available, use them all rather than overload the rest.
        if let Some(o) = &self.outlier {
            let n = available.iter().filter(|a| **a).count();
            let min = o.config.min_health_percent as usize;
            if min > 0 && n * 100 < min * endpoints.len() {
                available.iter_mut().for_each(|a| *a = true);
            }
        }
        let mut by_priority: BTreeMap<u32, (Vec<Arc<Endpoint>>, usize)> = BTreeMap::new();
        for (e, ok) in endpoints.iter().zip(&available) {
            let entry = by_priority.entry(e.placement.priority).or_default();
            entry.1 += 1;
            if *ok {
                entry.0.push(e.clone());
            }
        }
        let counts: Vec<(usize, usize)> = by_priority
            .values()
            .map(|(hosts, total)| (hosts.len(), *total))
            .collect();
        let loads = locality::tier_loads(&counts);
        let mut sum = 0;
        let upto = loads
            .iter()
            .map(|l| {
                sum += l;
                sum
            })
            .collect();
        let tiers = by_priority
            .into_values()
            .map(|(hosts, _)| self.tier(&endpoints, hosts))
            .collect();
        Eligible {
            endpoints,
            tiers,
            upto,
            generation,
            valid_until,
        }
    }

    fn tier(&self, endpoints: &[Arc<Endpoint>], mut hosts: Vec<Arc<Endpoint>>) -> Tier {
        let table = self.hashing.as_ref().and_then(|h| {
            let names: Vec<(&str, u32)> = hosts.iter().map(|e| (e.key(), e.weight)).collect();
            hash::Table::build(h.algorithm, h.table_size, &names)
        });
        let mut groups = Vec::new();
        // Locality weights; consistent hashing ignores them, as Envoy's does.
        if table.is_none() && hosts.iter().any(|e| e.placement.weight.is_some()) {
            let all_by_locality =
                endpoints
                    .iter()
                    .fold(BTreeMap::<&Locality, usize>::new(), |mut m, e| {
                        *m.entry(&*e.locality).or_default() += 1;
                        m
                    });
            hosts.sort_by(|a, b| a.locality.cmp(&b.locality));
            let mut cumulative = 0u64;
            let mut start = 0;
            while start < hosts.len() {
                let loc = hosts[start].locality.clone();
                let end = start + hosts[start..].partition_point(|e| e.locality == loc);
                let weight: u64 = hosts[start..end]
                    .iter()
                    .map(|e| u64::from(e.placement.weight.unwrap_or(0)))
                    .sum();
                // A locality with fewer endpoints available weighs less (Envoy's
                // availability × over-provisioning).
                let total = all_by_locality.get(&*loc).copied().unwrap_or(end - start);
                cumulative += weight * locality::health(end - start, total) / 100;
                groups.push((cumulative, end));
                start = end;
            }
        }
        Tier {
            hosts,
            groups,
            table,
        }
    }
}

impl Eligible {
    fn empty() -> Self {
        Eligible {
            endpoints: Arc::new([]),
            tiers: Vec::new(),
            upto: Vec::new(),
            generation: 0,
            valid_until: None,
        }
    }

    /// The tier that takes traffic percentile `draw` (0..100).
    fn tier(&self, draw: u32) -> Option<&Tier> {
        let i = self.upto.iter().position(|u| draw < *u)?;
        self.tiers.get(i).filter(|t| !t.hosts.is_empty())
    }
}

impl Tier {
    /// The endpoints to balance over: all, or one locality drawn by weight.
    fn group(&self, rng: &mut impl Rng) -> &[Arc<Endpoint>] {
        let Some(&(total, _)) = self.groups.last() else {
            return &self.hosts;
        };
        if total == 0 {
            return &[];
        }
        let draw = rng.random_range(0..total);
        let i = self.groups.partition_point(|(c, _)| *c <= draw);
        let start = if i == 0 { 0 } else { self.groups[i - 1].1 };
        let end = self.groups.get(i).map_or(self.hosts.len(), |g| g.1);
        &self.hosts[start..end]
    }
}

/// A cluster's endpoints built for a config update, not yet in force
/// ([`Cluster::replace_endpoints`]).
pub struct NewEndpoints(Arc<Eligible>);

impl NewEndpoints {
    pub fn endpoints(&self) -> Arc<[Arc<Endpoint>]> {
        self.0.endpoints.clone()
    }
}

/// How a cluster's connections to its endpoints are made.
fn conn_settings(spec: &pb::Cluster, env: &BuildEnv<'_>) -> ConnSettings {
    let connect_timeout = match spec.connect_timeout_ms {
        0 => upstream::DEFAULT_CONNECT_TIMEOUT,
        ms => Duration::from_millis(ms),
    };
    let cp = spec.connection_pool.as_ref();
    ConnSettings {
        connect_timeout,
        idle_timeout: match cp.and_then(|p| p.idle_timeout_ms) {
            None => Some(upstream::DEFAULT_IDLE_TIMEOUT),
            Some(0) => None,
            Some(ms) => Some(Duration::from_millis(ms)),
        },
        max_requests_per_connection: cp.map_or(0, |p| p.max_requests_per_connection),
        max_duration: cp
            .map(|p| p.max_connection_duration_ms)
            .filter(|ms| *ms > 0)
            .map(Duration::from_millis),
        ..ConnSettings::from_limits(env.limits).with_pod_ip(env.pod_ip)
    }
}

/// What building a cluster's endpoints needs besides their config.
struct EndpointEnv<'a> {
    /// How the endpoints' connections are made (shared by them).
    conn: Arc<ClusterConn>,
    /// The cluster's TLS settings changed: connections made with the old ones are not reused.
    tls_changed: bool,
    /// The cluster's service's namespace, for the endpoints' metadata.
    namespace: &'a str,
    env: &'a BuildEnv<'a>,
}

impl<'a> EndpointEnv<'a> {
    fn new(
        settings: ConnSettings,
        breakers: &Breakers,
        tls_changed: bool,
        namespace: &'a str,
        env: &'a BuildEnv<'a>,
    ) -> Self {
        EndpointEnv {
            conn: Arc::new(ClusterConn {
                settings,
                breakers: breakers.clone(),
            }),
            tls_changed,
            namespace,
            env,
        }
    }
}

/// The endpoints `endpoints` lists, with the run-time state (connections,
/// load, outlier records) of those among `previous` they keep.
fn make_endpoints(
    spec: &pb::Cluster,
    endpoints: Option<&pb::ClusterEndpoints>,
    previous: &[Arc<Endpoint>],
    e: &EndpointEnv<'_>,
) -> Result<Arc<[Arc<Endpoint>]>, String> {
    let tls = crate::tls::outbound::ClusterTls::new(spec, e.env.mesh_tls)?;
    let previous: HashMap<&str, &Arc<Endpoint>> = previous.iter().map(|e| (e.key(), e)).collect();
    let raw = endpoints
        .map(|e| e.endpoints.as_slice())
        .unwrap_or_default();
    let placements = placements(spec, raw, e.env.local);
    let upstream_tls = tls.for_endpoints(spec, raw);
    let mut metas = EndpointMetas::default();
    // Endpoints share their locality's one copy: most have the same few.
    let mut localities: HashMap<&str, Arc<Locality>> = HashMap::new();
    let mut eps = Vec::with_capacity(raw.len());
    for (i, ((ep, placement), upstream_tls)) in
        raw.iter().zip(placements).zip(upstream_tls).enumerate()
    {
        let read = read_endpoint(ep, &mut metas, &mut localities, e.namespace)
            .map_err(|err| format!("endpoints[{i}]: {err}"))?;
        // The state of the endpoint at this address before, if any; the
        // pool, if it has one, takes this build's settings.
        let state = match previous.get(read.authority.as_str()) {
            Some(p) => {
                p.state.configure(&e.conn, upstream_tls, e.tls_changed);
                p.state.clone()
            }
            None => Arc::new(EndpointState::new(&e.conn, upstream_tls)),
        };
        eps.push(Arc::new(Endpoint {
            authority: read.authority,
            healthy: read.healthy,
            weight: read.weight,
            locality: read.locality,
            meta: read.meta,
            placement,
            state,
        }));
    }
    Ok(eps.into())
}

/// What one endpoint of the config says.
struct ReadEndpoint {
    authority: Authority,
    healthy: bool,
    weight: u32,
    locality: Arc<Locality>,
    meta: Arc<PeerMeta>,
}

/// Reads one endpoint's fields (the one place that does).
fn read_endpoint<'a>(
    ep: &'a pb::Endpoint,
    metas: &mut EndpointMetas,
    localities: &mut HashMap<&'a str, Arc<Locality>>,
    namespace: &str,
) -> Result<ReadEndpoint, String> {
    let key = endpoint_key(ep)?;
    let authority: Authority = key
        .parse()
        .map_err(|_| format!("{key:?} is not host:port"))?;
    Ok(ReadEndpoint {
        authority,
        healthy: ep.healthy,
        weight: ep.weight.max(1),
        locality: localities
            .entry(&ep.locality)
            .or_insert_with(|| Arc::new(Locality::parse(&ep.locality)))
            .clone(),
        meta: metas.of(ep, namespace),
    })
}

/// Where each endpoint stands for locality load balancing.
fn placements(spec: &pb::Cluster, raw: &[pb::Endpoint], local: &Local) -> Vec<Placement> {
    let flat = Placement {
        priority: 0,
        weight: None,
    };
    match locality::Policy::from_pb(spec.locality_lb.as_ref()) {
        None => vec![flat; raw.len()],
        Some(policy) => {
            let eps: Vec<(Locality, &BTreeMap<String, String>)> = raw
                .iter()
                .map(|e| (Locality::parse(&e.locality), &e.labels))
                .collect();
            policy.place(local, &eps)
        }
    }
}

fn endpoint_key(ep: &pb::Endpoint) -> Result<String, String> {
    if ep.address.is_empty() {
        return Err("address is empty".into());
    }
    let port = u16::try_from(ep.port)
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| format!("port {} is invalid", ep.port))?;
    Ok(match ep.address.parse::<IpAddr>() {
        Ok(IpAddr::V6(v6)) => format!("[{v6}]:{port}"),
        // An IPv4 address, or a DNS name resolved when connecting (DNS-typed ServiceEntries).
        _ => format!("{}:{port}", ep.address),
    })
}

#[cfg(test)]
mod tests;
