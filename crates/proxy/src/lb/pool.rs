//! Upstream connection pools. hyper's pooled client keys its idle
//! connections by scheme and authority, i.e. per endpoint, so one client
//! serves every cluster that shares a connect timeout: an endpoint reachable
//! through two subsets shares its keep-alive connections.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::limits::Limits;
use crate::req_body::ReqBody;

pub type UpstreamClient = Client<HttpConnector, ReqBody>;

/// Envoy's default connect timeout when a cluster sets none.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// An HTTP/1.1 and a prior-knowledge HTTP/2 client with the same connect timeout.
pub struct Pool {
    pub http1: UpstreamClient,
    pub http2: UpstreamClient,
}

impl Pool {
    /// Keeps at most `max_idle` idle connections per destination.
    pub fn new(connect_timeout: Duration, max_idle: u32) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(connect_timeout));
        connector.set_nodelay(true);
        connector.set_keepalive(Some(Duration::from_secs(60)));
        let builder = |http2: bool| {
            let mut b = Client::builder(TokioExecutor::new());
            b.pool_timer(TokioTimer::new())
                .timer(TokioTimer::new())
                .pool_idle_timeout(Duration::from_secs(60))
                .pool_max_idle_per_host(max_idle as usize)
                .http2_only(http2);
            b.build(connector.clone())
        };
        Pool {
            http1: builder(false),
            http2: builder(true),
        }
    }
}

/// The pools by connect timeout, and the process-wide limits every
/// cluster's connections follow. Kept across config updates so that a
/// config change does not drop warm connections. Only config updates touch
/// the map; requests hold their cluster's `Arc<Pool>`.
#[derive(Default)]
pub struct Pools {
    by_timeout: Mutex<HashMap<Duration, Arc<Pool>>>,
    limits: Mutex<Limits>,
}

impl Pools {
    pub fn get(&self, connect_timeout: Duration) -> Arc<Pool> {
        let max_idle = self.limits().max_idle_per_endpoint;
        // A poisoned lock only means another config update panicked; the map is still usable.
        let mut map = self.by_timeout.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(connect_timeout)
            .or_insert_with(|| Arc::new(Pool::new(connect_timeout, max_idle)))
            .clone()
    }

    /// Set once at start, before any config.
    pub fn set_limits(&self, limits: Limits) {
        *self.limits.lock().unwrap_or_else(|e| e.into_inner()) = limits;
    }

    pub fn limits(&self) -> Limits {
        *self.limits.lock().unwrap_or_else(|e| e.into_inner())
    }
}
