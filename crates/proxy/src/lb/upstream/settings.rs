//! How a cluster's connections to an endpoint are made and kept: timeouts,
//! reuse limits, buffers and the source address.

use std::net::IpAddr;
use std::time::Duration;

use tokio::time::Instant;

/// Envoy's default connect timeout when a cluster sets none.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Envoy's default idle timeout for upstream connections.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);

/// Per-connection settings of a cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnSettings {
    pub connect_timeout: Duration,
    /// `None`: idle connections are kept until the upstream closes them.
    pub idle_timeout: Option<Duration>,
    /// 0: unlimited.
    pub max_requests_per_connection: u32,
    pub max_duration: Option<Duration>,
    /// Idle connections kept (HTTP/1; an HTTP/2 endpoint has one): those
    /// beyond this many that stay unused for `excess_idle_after` are closed,
    /// so that a burst of concurrent requests does not leave as many
    /// connections open — while steady concurrency above it keeps its
    /// connections (closing them on return made every request of a busy
    /// closed loop pay a new mTLS handshake).
    pub max_idle: u32,
    pub excess_idle_after: Duration,
    /// What one HTTP/2 connection's responses may make the proxy buffer
    /// (its receive window; a stream may use a quarter).
    pub buffer_bytes: u32,
    /// The proxy's own pod address when it is a loopback one (`trellis up`
    /// without network namespaces, where every pod shares the host's `lo`
    /// and the kernel would give every connection the source 127.0.0.1).
    /// Mesh connections to loopback endpoints come from it, as they would
    /// from the pod's network namespace: the server side of Istio's
    /// metadata exchange tells its callers apart by source address
    /// (checked against their certificates). Per proxy, so that several
    /// proxies in one process each dial from their own.
    pub loopback_source: Option<IpAddr>,
}

/// Envoy's defaults, for a cluster that sets nothing (and the local application).
impl Default for ConnSettings {
    fn default() -> Self {
        ConnSettings {
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            idle_timeout: Some(DEFAULT_IDLE_TIMEOUT),
            max_requests_per_connection: 0,
            max_duration: None,
            max_idle: crate::limits::DEFAULT_MAX_IDLE_PER_ENDPOINT,
            excess_idle_after: crate::limits::DEFAULT_EXCESS_IDLE_AFTER,
            buffer_bytes: crate::limits::DEFAULT_CONNECTION_BUFFER_BYTES,
            loopback_source: None,
        }
    }
}

impl ConnSettings {
    /// Envoy's defaults with the proxy's own limits.
    pub fn from_limits(limits: &crate::limits::Limits) -> Self {
        ConnSettings {
            max_idle: limits.max_idle_per_endpoint,
            excess_idle_after: limits.excess_idle_after,
            buffer_bytes: limits.connection_buffer_bytes,
            ..ConnSettings::default()
        }
    }

    /// These settings for a proxy whose pod has the address `pod_ip`: a
    /// loopback one becomes the source of its mesh connections to loopback
    /// endpoints (elsewhere the kernel already picks the pod's address).
    pub fn with_pod_ip(self, pod_ip: Option<IpAddr>) -> Self {
        ConnSettings {
            loopback_source: pod_ip.filter(|ip| ip.is_loopback() && !ip.is_unspecified()),
            ..self
        }
    }

    /// Whether a connection of this age may take another request.
    pub(super) fn fresh(&self, created: Instant, served: u32, now: Instant) -> bool {
        (self.max_requests_per_connection == 0 || served < self.max_requests_per_connection)
            && self.max_duration.is_none_or(|d| now < created + d)
    }

    /// When a driver should next look at its connection (an HTTP/1 one
    /// may be an excess idle one by then).
    pub(super) fn check_after(&self, http2: bool) -> Option<Duration> {
        let excess = (!http2).then_some(self.excess_idle_after);
        [self.idle_timeout, self.max_duration, excess]
            .into_iter()
            .flatten()
            .min()
    }
}
