//! One endpoint of one cluster, and what it keeps at run time.
//!
//! A proxy with a large mesh's config lists tens of thousands of endpoints
//! and calls few of them, so what only a call needs is made at the first
//! call: the connection pool (with its settings, limits and TLS state) is
//! made when a request first goes to the endpoint, the outlier record when
//! the first result is reported. The rest of the run-time state — requests
//! in flight, the slots for those two — is one small allocation ([`EndpointState`]) that every later build of the
//! same endpoint in the same cluster shares, so nothing is lost when a
//! config update rebuilds the endpoint while requests use the old one.
//! As in Envoy, the state is per cluster: a subset cluster listing the same
//! address has its own pool, counters and outlier record.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use http::uri::Authority;

use super::breaker::Breakers;
use super::locality::{Locality, Placement};
use super::outlier::HostState;
use super::upstream::{ConnSettings, EndpointPool};
use crate::telemetry::meta::PeerMeta;
use crate::tls::outbound::Upstream;

/// Requests in flight and in total to one endpoint.
#[derive(Debug, Default)]
pub struct Load {
    pub active: AtomicU64,
    pub total: AtomicU64,
}

/// Counts a request as active on an endpoint until dropped.
pub struct ActiveGuard(Arc<EndpointState>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.load.active.fetch_sub(1, Ordering::Relaxed);
    }
}

pub struct Endpoint {
    /// "address:port", as operators and the access log know it (the one
    /// copy of the address: see [`Endpoint::key`]).
    pub authority: Authority,
    pub healthy: bool,
    pub weight: u32,
    pub locality: Arc<Locality>,
    pub meta: Arc<PeerMeta>,
    pub(super) placement: Placement,
    pub(super) state: Arc<EndpointState>,
}

impl Endpoint {
    /// "address:port", as operators and the access log know it.
    pub fn key(&self) -> &str {
        self.authority.as_str()
    }

    pub fn start(&self) -> ActiveGuard {
        self.state.load.active.fetch_add(1, Ordering::Relaxed);
        self.state.load.total.fetch_add(1, Ordering::Relaxed);
        ActiveGuard(self.state.clone())
    }

    /// Requests in flight and in total.
    pub fn load(&self) -> &Load {
        &self.state.load
    }

    /// The endpoint's outlier record, once a result has been reported for
    /// it (never while its cluster has no outlier detection).
    pub fn outlier(&self) -> Option<&HostState> {
        self.state.outlier.get().map(|o| &**o)
    }

    /// The endpoint's outlier record, made on the first result reported.
    pub(super) fn outlier_record(&self) -> &HostState {
        self.state.outlier.get_or_init(Box::default)
    }

    /// Times outlier detection ejected the endpoint.
    pub fn ejections(&self) -> u64 {
        self.outlier().map_or(0, HostState::ejections)
    }

    /// The endpoint's connection pool, made on the first call with the
    /// settings of the latest build of the endpoint.
    pub fn pool(&self) -> &Arc<EndpointPool> {
        self.state.pool(&self.authority)
    }

    /// Connections open to the endpoint now (none before its first call).
    pub fn open_connections(&self) -> u32 {
        self.state.pool.get().map_or(0, |p| p.open_connections())
    }
}

/// How a cluster's connections to its endpoints are made: one per build of
/// the cluster, shared by its endpoints.
pub(super) struct ClusterConn {
    pub settings: ConnSettings,
    pub breakers: Breakers,
}

/// The run-time state of one endpoint of one cluster, shared by every build
/// of that endpoint (see the module's doc).
pub(super) struct EndpointState {
    load: Load,
    outlier: OnceLock<Box<HostState>>,
    pool: OnceLock<Arc<EndpointPool>>,
    /// What the pool is made with, or reconfigured with once it exists: the
    /// latest build's. Making the pool and configuring it both hold this
    /// lock, so a pool made while a build is under way gets the build's
    /// settings either way.
    config: Mutex<PoolConfig>,
}

#[derive(Clone)]
struct PoolConfig {
    conn: Arc<ClusterConn>,
    tls: Option<Arc<Upstream>>,
}

impl EndpointState {
    pub(super) fn new(conn: &Arc<ClusterConn>, tls: Option<Arc<Upstream>>) -> Self {
        EndpointState {
            load: Load::default(),
            outlier: OnceLock::new(),
            pool: OnceLock::new(),
            config: Mutex::new(PoolConfig {
                conn: conn.clone(),
                tls,
            }),
        }
    }

    /// Sets what the pool is made with (or, if it exists, reconfigures it).
    /// `tls_changed`: the cluster's TLS setting changed, so the pool's open
    /// connections take no new request.
    pub(super) fn configure(
        &self,
        conn: &Arc<ClusterConn>,
        tls: Option<Arc<Upstream>>,
        tls_changed: bool,
    ) {
        let mut config = self.config.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(pool) = self.pool.get() {
            pool.configure(conn.settings, conn.breakers.clone());
            pool.set_tls(tls.clone(), tls_changed);
        }
        *config = PoolConfig {
            conn: conn.clone(),
            tls,
        };
    }

    fn pool(&self, authority: &Authority) -> &Arc<EndpointPool> {
        if let Some(pool) = self.pool.get() {
            return pool;
        }
        let config = self.config.lock().unwrap_or_else(|e| e.into_inner());
        self.pool.get_or_init(|| {
            let pool = EndpointPool::new(
                authority.clone(),
                config.conn.settings,
                config.conn.breakers.clone(),
            );
            pool.set_tls(config.tls.clone(), false);
            pool
        })
    }

    /// Whether the pool has been made (for tests).
    #[cfg(test)]
    pub(super) fn has_pool(&self) -> bool {
        self.pool.get().is_some()
    }
}
