//! Bounds on what one peer can make the proxy hold: header sizes, HTTP/2
//! streams and buffers per downstream connection, how long idle
//! connections live, and how many idle upstream connections are kept.
//! Envoy's defaults where Envoy has one; process-wide (flags of
//! `trellis-proxy`), since Istio's API has no knob for them. Upstream idle
//! timeouts and requests per connection are per cluster (DestinationRule
//! `connectionPool`), not here.

use std::time::Duration;

/// Envoy's `max_request_headers_kb` default: 60 KiB.
pub const DEFAULT_MAX_REQUEST_HEADERS_BYTES: usize = 60 * 1024;
/// Envoy's `max_headers_count` default.
pub const DEFAULT_MAX_HEADERS: usize = 100;
/// HTTP/2 streams one downstream connection may have open at once. Envoy's
/// default is 2^31-1, i.e. none, so that one client can make the proxy hold
/// as many requests (and upstream connections) as it likes. Bounded here,
/// but not near RFC 9113's minimum of 100 (what linkerd2-proxy and nginx
/// use at the edge): between sidecars, a client proxy multiplexes every
/// request its workload makes to a peer onto one HTTP/2 connection, so 100
/// would cap a whole workload's concurrency to that peer (measured: half the
/// soak's throughput). 1,000 streams hold at most the connection's 1 MiB of
/// windows ([`DEFAULT_CONNECTION_BUFFER_BYTES`]) plus a few KiB each.
pub const DEFAULT_MAX_CONCURRENT_STREAMS: u32 = 1000;
/// Envoy's `per_connection_buffer_limit_bytes` default: 1 MiB. Bounds what
/// one downstream connection can make the proxy buffer (HTTP/1 read
/// buffer, HTTP/2 receive windows).
pub const DEFAULT_CONNECTION_BUFFER_BYTES: u32 = 1024 * 1024;
/// Envoy's HTTP connection manager `idle_timeout` default (Istio keeps it).
pub const DEFAULT_DOWNSTREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);
/// Idle connections kept per upstream endpoint. Envoy keeps every one it
/// opened until its idle timeout (1 h): a burst of N concurrent HTTP/1
/// requests leaves N connections (and their buffers) behind for an hour.
/// Beyond this many idle ones, a connection left unused for
/// `DEFAULT_EXCESS_IDLE_AFTER` is closed.
pub const DEFAULT_MAX_IDLE_PER_ENDPOINT: u32 = 16;
/// How long an idle connection beyond `DEFAULT_MAX_IDLE_PER_ENDPOINT` is kept:
/// long enough that steady concurrency reuses it, short enough that a burst
/// hands its connections back within seconds.
pub const DEFAULT_EXCESS_IDLE_AFTER: Duration = Duration::from_secs(5);

/// hyper's HTTP/1 read buffer cannot be smaller.
const HYPER_MIN_BUF: usize = 8192;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// The request line and headers together (HTTP/1), the header list as
    /// HTTP/2 counts it (names, values, 32 bytes each); beyond: 431.
    pub max_request_headers_bytes: usize,
    /// Request headers; beyond: 431.
    pub max_headers: usize,
    pub max_concurrent_streams: u32,
    pub connection_buffer_bytes: u32,
    /// A downstream connection with no request in flight for this long is
    /// closed (HTTP/2: GOAWAY). `None`: never.
    pub downstream_idle_timeout: Option<Duration>,
    pub max_idle_per_endpoint: u32,
    /// How long idle upstream connections beyond `max_idle_per_endpoint` stay.
    pub excess_idle_after: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_request_headers_bytes: DEFAULT_MAX_REQUEST_HEADERS_BYTES,
            max_headers: DEFAULT_MAX_HEADERS,
            max_concurrent_streams: DEFAULT_MAX_CONCURRENT_STREAMS,
            connection_buffer_bytes: DEFAULT_CONNECTION_BUFFER_BYTES,
            downstream_idle_timeout: Some(DEFAULT_DOWNSTREAM_IDLE_TIMEOUT),
            max_idle_per_endpoint: DEFAULT_MAX_IDLE_PER_ENDPOINT,
            excess_idle_after: DEFAULT_EXCESS_IDLE_AFTER,
        }
    }
}

impl Limits {
    /// hyper's HTTP/1 read buffer: it answers 431 when the head does not
    /// fit. At least hyper's minimum, and never below the header limit.
    pub fn http1_buffer_bytes(&self) -> usize {
        self.max_request_headers_bytes.max(HYPER_MIN_BUF)
    }
}
