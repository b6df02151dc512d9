//! Clusters at run time: their endpoints, load balancing and load counters.
//! A `Cluster` is immutable and rebuilt with each config; what must survive a
//! config update (pools, per-endpoint load, the round-robin cursor) is carried
//! over from the previous one.

pub mod pool;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use http::uri::Authority;
use rand::Rng;
use wire::pb;

use crate::telemetry::meta::{PeerMeta, ServiceMeta};
use pool::{Pool, Pools};

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

/// Requests in flight and in total to one endpoint.
#[derive(Debug, Default)]
pub struct Load {
    pub active: AtomicU64,
    pub total: AtomicU64,
}

/// Counts a request as active on an endpoint until dropped.
#[derive(Debug)]
pub struct ActiveGuard(Arc<Load>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

#[derive(Debug)]
pub struct Endpoint {
    /// "address:port", as operators and the access log know it.
    pub key: Arc<str>,
    pub authority: Authority,
    pub healthy: bool,
    pub load: Arc<Load>,
    pub meta: Arc<PeerMeta>,
}

impl Endpoint {
    pub fn start(&self) -> ActiveGuard {
        self.load.active.fetch_add(1, Ordering::Relaxed);
        self.load.total.fetch_add(1, Ordering::Relaxed);
        ActiveGuard(self.load.clone())
    }
}

pub struct Cluster {
    pub name: Arc<str>,
    pub service: Arc<ServiceMeta>,
    pub balancer: Balancer,
    pub protocol: UpstreamProtocol,
    pub pool: Arc<Pool>,
    pub endpoints: Vec<Arc<Endpoint>>,
    healthy: Vec<Arc<Endpoint>>,
    cursor: Arc<AtomicUsize>,
}

impl Cluster {
    pub fn build(
        spec: &pb::Cluster,
        endpoints: Option<&pb::ClusterEndpoints>,
        prev: Option<&Cluster>,
        pools: &Pools,
    ) -> Result<Self, String> {
        let service = Arc::new(ServiceMeta::from_host(&spec.service));
        let balancer = match pb::LoadBalancer::try_from(spec.lb) {
            Ok(pb::LoadBalancer::LeastRequest) => Balancer::LeastRequest,
            Ok(pb::LoadBalancer::RoundRobin) => Balancer::RoundRobin,
            Ok(pb::LoadBalancer::Random) => Balancer::Random,
            Ok(pb::LoadBalancer::Passthrough) => Balancer::Passthrough,
            Err(_) => return Err(format!("lb: unknown load balancer {}", spec.lb)),
        };
        let connect_timeout = match spec.connect_timeout_ms {
            0 => pool::DEFAULT_CONNECT_TIMEOUT,
            ms => Duration::from_millis(ms),
        };
        let previous: HashMap<&str, &Arc<Load>> = prev
            .map(|p| p.endpoints.iter().map(|e| (&*e.key, &e.load)).collect())
            .unwrap_or_default();
        let mut eps = Vec::new();
        for (i, ep) in endpoints
            .map(|e| e.endpoints.as_slice())
            .unwrap_or_default()
            .iter()
            .enumerate()
        {
            let key = endpoint_key(ep).map_err(|e| format!("endpoints[{i}]: {e}"))?;
            let authority: Authority = key
                .parse()
                .map_err(|_| format!("endpoints[{i}]: {key:?} is not host:port"))?;
            let load = previous
                .get(key.as_str())
                .map_or_else(Default::default, |l| Arc::clone(l));
            eps.push(Arc::new(Endpoint {
                key: key.into(),
                authority,
                healthy: ep.healthy,
                load,
                meta: Arc::new(PeerMeta::from_endpoint(ep, &service.namespace)),
            }));
        }
        Ok(Cluster {
            name: spec.name.as_str().into(),
            service,
            balancer,
            protocol: UpstreamProtocol::from_pb(spec.protocol),
            pool: pools.get(connect_timeout),
            healthy: eps.iter().filter(|e| e.healthy).cloned().collect(),
            endpoints: eps,
            cursor: prev.map_or_else(Default::default, |p| p.cursor.clone()),
        })
    }

    /// Picks a healthy endpoint, avoiding `avoid` (the host a retry just
    /// failed on, like Istio's default `previous_hosts` retry predicate) when
    /// there is another choice. `None`: no healthy endpoint.
    pub fn pick(&self, avoid: Option<&Endpoint>) -> Option<&Arc<Endpoint>> {
        let n = self.healthy.len();
        if n <= 1 {
            return self.healthy.first();
        }
        let mut rng = rand::rng();
        let choose = |rng: &mut rand::rngs::ThreadRng| match self.balancer {
            Balancer::RoundRobin => self.cursor.fetch_add(1, Ordering::Relaxed) % n,
            Balancer::Random | Balancer::Passthrough => rng.random_range(0..n),
            Balancer::LeastRequest => {
                // Power of two choices: two distinct random endpoints, the less loaded wins.
                let a = rng.random_range(0..n);
                let b = (a + rng.random_range(1..n)) % n;
                let load = |i: usize| self.healthy[i].load.active.load(Ordering::Relaxed);
                if load(b) < load(a) { b } else { a }
            }
        };
        let mut i = choose(&mut rng);
        // A retry goes to another endpoint (Envoy's previous-hosts predicate,
        // on by default in Istio): step past the one that failed, which is
        // deterministic where re-drawing would only make it likely.
        if avoid.is_some_and(|a| std::ptr::eq(&*self.healthy[i], a)) {
            i = (i + 1) % n;
        }
        self.healthy.get(i)
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
mod tests {
    use super::*;

    fn cluster(lb: pb::LoadBalancer, n: usize, healthy: bool) -> Cluster {
        let spec = pb::Cluster {
            name: "c".into(),
            service: "s.ns.svc.cluster.local".into(),
            lb: lb as i32,
            ..Default::default()
        };
        let eps = pb::ClusterEndpoints {
            cluster: "c".into(),
            endpoints: (0..n)
                .map(|i| pb::Endpoint {
                    address: format!("127.0.0.{}", i + 1),
                    port: 80,
                    healthy,
                    ..Default::default()
                })
                .collect(),
        };
        Cluster::build(&spec, Some(&eps), None, &Pools::default()).expect("valid")
    }

    #[test]
    fn round_robin_cycles() {
        let c = cluster(pb::LoadBalancer::RoundRobin, 3, true);
        let picks: Vec<_> = (0..6)
            .map(|_| c.pick(None).map(|e| e.key.to_string()))
            .collect();
        assert_eq!(picks[0], picks[3]);
        assert_ne!(picks[0], picks[1]);
        assert_ne!(picks[1], picks[2]);
    }

    #[test]
    fn least_request_prefers_idle() {
        let c = cluster(pb::LoadBalancer::LeastRequest, 2, true);
        // Keep endpoint 0 busy: with two endpoints P2C always compares both.
        let _busy: Vec<_> = (0..5).map(|_| c.endpoints[0].start()).collect();
        for _ in 0..50 {
            assert_eq!(
                c.pick(None).map(|e| e.key.clone()),
                Some(c.endpoints[1].key.clone())
            );
        }
    }

    #[test]
    fn only_healthy_endpoints() {
        assert!(
            cluster(pb::LoadBalancer::Random, 3, false)
                .pick(None)
                .is_none()
        );
    }

    #[test]
    fn retries_avoid_the_previous_host() {
        let c = cluster(pb::LoadBalancer::Random, 2, true);
        let first = c.endpoints[0].clone();
        for _ in 0..50 {
            assert_ne!(
                c.pick(Some(&first)).map(|e| e.key.clone()),
                Some(first.key.clone())
            );
        }
    }

    #[test]
    fn load_survives_a_rebuild() {
        let c = cluster(pb::LoadBalancer::LeastRequest, 2, true);
        let _g = c.endpoints[0].start();
        let spec = pb::Cluster {
            name: "c".into(),
            ..Default::default()
        };
        let eps = pb::ClusterEndpoints {
            cluster: "c".into(),
            endpoints: vec![pb::Endpoint {
                address: "127.0.0.1".into(),
                port: 80,
                healthy: true,
                ..Default::default()
            }],
        };
        let c2 = Cluster::build(&spec, Some(&eps), Some(&c), &Pools::default()).expect("valid");
        assert_eq!(c2.endpoints[0].load.active.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn ipv6_and_bad_endpoints() {
        let spec = pb::Cluster {
            name: "c".into(),
            ..Default::default()
        };
        let mut eps = pb::ClusterEndpoints {
            cluster: "c".into(),
            endpoints: vec![pb::Endpoint {
                address: "::1".into(),
                port: 80,
                healthy: true,
                ..Default::default()
            }],
        };
        let c = Cluster::build(&spec, Some(&eps), None, &Pools::default()).expect("valid");
        assert_eq!(&*c.endpoints[0].key, "[::1]:80");
        eps.endpoints[0].port = 0;
        assert!(Cluster::build(&spec, Some(&eps), None, &Pools::default()).is_err());
    }
}
