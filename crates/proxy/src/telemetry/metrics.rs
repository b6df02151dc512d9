//! Istio's standard metrics, served in the Prometheus text format with
//! Istio's names, types, buckets and labels.
//!
//! Recording is cheap: a series is keyed by pointers to the shared,
//! pre-resolved metadata of both workloads and of the service (built when
//! config arrives) plus a few small numbers, so a request hashes a handful of
//! words — never its label strings — and then bumps atomics. Two keys may
//! carry equal labels (metadata rebuilt by a config update): they are merged
//! when scraped, so Prometheus sees each label set once.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use super::meta::{PeerMeta, ServiceMeta};
use super::{Flags, Reporter};

mod exposition;
mod overrides;
pub use exposition::Exposition;
pub use overrides::Overrides;

/// Envoy's default histogram buckets, which Istio's standard histograms use
/// (`istio_request_duration_milliseconds`, `istio_request_bytes`,
/// `istio_response_bytes`).
pub const BUCKETS: [f64; 19] = [
    0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0,
    60000.0, 300000.0, 600000.0, 1800000.0, 3600000.0,
];

/// An `Arc` compared and hashed by address: metadata is shared, so the
/// pointer says which it is without reading its strings.
#[derive(Clone, Debug)]
pub struct ByPtr<T>(pub Arc<T>);

impl<T> PartialEq for ByPtr<T> {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}
impl<T> Eq for ByPtr<T> {}
impl<T> Hash for ByPtr<T> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        std::ptr::hash(Arc::as_ptr(&self.0), state)
    }
}

/// Istio's `request_protocol`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Protocol {
    Http,
    Grpc,
    Tcp,
}

impl Protocol {
    fn as_str(self) -> &'static str {
        match self {
            Protocol::Http => "http",
            Protocol::Grpc => "grpc",
            Protocol::Tcp => "tcp",
        }
    }
}

/// Istio's `connection_security_policy`: only the server side knows how the
/// connection was secured; the client reports "unknown".
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Security {
    MutualTls,
    None,
    Unknown,
}

impl Security {
    fn as_str(self) -> &'static str {
        match self {
            Security::MutualTls => "mutual_tls",
            Security::None => "none",
            Security::Unknown => "unknown",
        }
    }
}

/// Who talked to whom: the labels every standard metric has.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Peers {
    pub reporter: Reporter,
    pub source: ByPtr<PeerMeta>,
    pub destination: ByPtr<PeerMeta>,
    pub service: ByPtr<ServiceMeta>,
    pub security: Security,
}

/// An HTTP or gRPC request's series.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RequestKey {
    pub peers: Peers,
    pub protocol: Protocol,
    pub response_code: u16,
    /// The gRPC status; `None` for plain HTTP (Istio's label is then empty).
    pub grpc_status: Option<u16>,
    pub flags: Flags,
}

/// A TCP connection's series.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TcpKey {
    pub peers: Peers,
    pub flags: Flags,
}

/// A histogram with [`BUCKETS`], counted per bucket (made cumulative when
/// scraped).
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    /// f64 bits.
    sum: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, v: f64) {
        let i = BUCKETS.partition_point(|b| *b < v);
        if let Some(b) = self.buckets.get(i) {
            b.fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        let _ = self
            .sum
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |s| {
                Some((f64::from_bits(s) + v).to_bits())
            });
    }

    fn read(&self) -> HistogramValues {
        HistogramValues {
            buckets: std::array::from_fn(|i| self.buckets[i].load(Ordering::Relaxed)),
            count: self.count.load(Ordering::Relaxed),
            sum: f64::from_bits(self.sum.load(Ordering::Relaxed)),
        }
    }
}

#[derive(Clone, Copy, Default)]
struct HistogramValues {
    buckets: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl HistogramValues {
    fn add(&mut self, o: &HistogramValues) {
        for (a, b) in self.buckets.iter_mut().zip(o.buckets) {
            *a += b;
        }
        self.count += o.count;
        self.sum += o.sum;
    }
}

/// What one request adds to its series.
#[derive(Clone, Copy, Debug, Default)]
pub struct RequestSample {
    pub duration_ms: f64,
    pub request_bytes: u64,
    pub response_bytes: u64,
    /// gRPC messages, counted for gRPC requests only.
    pub request_messages: u64,
    pub response_messages: u64,
}

#[derive(Debug, Default)]
struct RequestSeries {
    requests: AtomicU64,
    duration: Histogram,
    request_bytes: Histogram,
    response_bytes: Histogram,
    request_messages: AtomicU64,
    response_messages: AtomicU64,
}

/// A TCP series' counters; a connection holds its series and counts its
/// bytes into it as they pass.
#[derive(Debug, Default)]
pub struct TcpSeries {
    pub sent: AtomicU64,
    pub received: AtomicU64,
    opened: AtomicU64,
    closed: AtomicU64,
}

type Map<K, V> = RwLock<HashMap<K, Arc<V>, foldhash::fast::RandomState>>;

fn read<K, V>(
    map: &Map<K, V>,
) -> std::sync::RwLockReadGuard<'_, HashMap<K, Arc<V>, foldhash::fast::RandomState>> {
    map.read().unwrap_or_else(|e| e.into_inner())
}

/// One destination service's client-side use (see [`Metrics::outbound_use`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServiceUse {
    /// Requests finished and connections opened, ever.
    pub calls: u64,
    /// Connections open now.
    pub open: u64,
}

#[derive(Default)]
pub struct Metrics {
    requests: Map<RequestKey, RequestSeries>,
    tcp: Map<TcpKey, TcpSeries>,
}

fn get_or_insert<K: Hash + Eq + Clone, V: Default>(map: &Map<K, V>, key: &K) -> Arc<V> {
    if let Some(s) = map.read().unwrap_or_else(|e| e.into_inner()).get(key) {
        return s.clone();
    }
    map.write()
        .unwrap_or_else(|e| e.into_inner())
        .entry(key.clone())
        .or_default()
        .clone()
}

impl Metrics {
    pub fn record_request(&self, key: &RequestKey, sample: &RequestSample) {
        let observe = |s: &RequestSeries| {
            s.requests.fetch_add(1, Ordering::Relaxed);
            s.duration.observe(sample.duration_ms);
            s.request_bytes.observe(sample.request_bytes as f64);
            s.response_bytes.observe(sample.response_bytes as f64);
            if key.protocol == Protocol::Grpc {
                s.request_messages
                    .fetch_add(sample.request_messages, Ordering::Relaxed);
                s.response_messages
                    .fetch_add(sample.response_messages, Ordering::Relaxed);
            }
        };
        if let Some(s) = self
            .requests
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
        {
            return observe(s);
        }
        observe(&get_or_insert(&self.requests, key));
    }

    /// A TCP connection opened: counts it and returns the series its bytes
    /// and its close go to.
    pub fn tcp_opened(&self, key: &TcpKey) -> Arc<TcpSeries> {
        let s = get_or_insert(&self.tcp, key);
        s.opened.fetch_add(1, Ordering::Relaxed);
        s
    }

    pub fn tcp_closed(series: &TcpSeries) {
        series.closed.fetch_add(1, Ordering::Relaxed);
    }

    /// What the client side has done with each destination service (by
    /// host) so far, read off the counters the requests bump anyway: the
    /// usage on-demand discovery's sweep looks at (crate::on_demand::sweep),
    /// at no cost to a request.
    pub fn outbound_use(&self) -> HashMap<Arc<str>, ServiceUse> {
        let mut by_host: HashMap<Arc<str>, ServiceUse> = HashMap::new();
        let client = |p: &Peers| p.reporter == Reporter::Source;
        for (k, s) in read(&self.requests)
            .iter()
            .filter(|(k, _)| client(&k.peers))
        {
            let u = by_host.entry(k.peers.service.0.host.clone()).or_default();
            u.calls += s.requests.load(Ordering::Relaxed);
        }
        for (k, s) in read(&self.tcp).iter().filter(|(k, _)| client(&k.peers)) {
            let u = by_host.entry(k.peers.service.0.host.clone()).or_default();
            let (opened, closed) = (
                s.opened.load(Ordering::Relaxed),
                s.closed.load(Ordering::Relaxed),
            );
            u.calls += opened;
            u.open += opened.saturating_sub(closed);
        }
        by_host
    }
}

/// A series' key, which knows its standard labels.
trait SeriesKey {
    fn peers(&self) -> &Peers;
    /// Calls `f` with each standard label, in Istio's order.
    fn labels(&self, f: &mut dyn FnMut(&'static str, &str));
}

impl SeriesKey for RequestKey {
    fn peers(&self) -> &Peers {
        &self.peers
    }

    fn labels(&self, f: &mut dyn FnMut(&'static str, &str)) {
        peer_labels(&self.peers, self.protocol, f);
        f("response_code", &self.response_code.to_string());
        f(
            "grpc_response_status",
            &self.grpc_status.map(|g| g.to_string()).unwrap_or_default(),
        );
        f("response_flags", &self.flags.to_string());
    }
}

impl SeriesKey for TcpKey {
    fn peers(&self) -> &Peers {
        &self.peers
    }

    fn labels(&self, f: &mut dyn FnMut(&'static str, &str)) {
        peer_labels(&self.peers, Protocol::Tcp, f);
        f("response_flags", &self.flags.to_string());
    }
}

/// The labels of [`Peers`], in Istio's order.
fn peer_labels(p: &Peers, protocol: Protocol, f: &mut dyn FnMut(&'static str, &str)) {
    f(
        "reporter",
        match p.reporter {
            Reporter::Source => "source",
            Reporter::Destination => "destination",
        },
    );
    for (names, m) in [
        (PEER_LABELS[0], &p.source.0),
        (PEER_LABELS[1], &p.destination.0),
    ] {
        for (name, value) in names.into_iter().zip([
            &m.workload,
            &m.namespace,
            &m.principal,
            &m.app,
            &m.version,
            &m.canonical_service,
            &m.canonical_revision,
            &m.cluster,
        ]) {
            f(name, value);
        }
    }
    let s = &p.service.0;
    f("destination_service", &s.host);
    f("destination_service_name", &s.name);
    f("destination_service_namespace", &s.namespace);
    f("request_protocol", protocol.as_str());
    f("connection_security_policy", p.security.as_str());
}

/// The source's and the destination's workload labels.
const PEER_LABELS: [[&str; 8]; 2] = [
    [
        "source_workload",
        "source_workload_namespace",
        "source_principal",
        "source_app",
        "source_version",
        "source_canonical_service",
        "source_canonical_revision",
        "source_cluster",
    ],
    [
        "destination_workload",
        "destination_workload_namespace",
        "destination_principal",
        "destination_app",
        "destination_version",
        "destination_canonical_service",
        "destination_canonical_revision",
        "destination_cluster",
    ],
];

/// Writes a label's value as the text format wants it (backslash, quote
/// and newline escaped). a label's value as the text format wants it (backslash, quote
/// and newline escaped).
pub(crate) fn escape_label_value(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests;
