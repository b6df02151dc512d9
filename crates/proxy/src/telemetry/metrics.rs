//! Istio's standard metrics, served in the Prometheus text format with
//! Istio's names, types, buckets and labels.
//!
//! Recording is cheap: a series is keyed by pointers to the shared,
//! pre-resolved metadata of both workloads and of the service (built when
//! config arrives) plus a few small numbers, so a request hashes a handful of
//! words — never its label strings — and then bumps atomics. Two keys may
//! carry equal labels (metadata rebuilt by a config update): they are merged
//! when scraped, so Prometheus sees each label set once.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use super::meta::{PeerMeta, ServiceMeta};
use super::{Flags, Reporter};

mod overrides;
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

    /// The text exposition (Prometheus format 0.0.4) of every standard metric.
    pub fn encode(&self, out: &mut String) {
        self.encode_with(out, None, None);
    }

    /// The exposition with the Telemetry API's overrides of each reporter
    /// (`server`: destination, `client`: source) applied: disabled metrics
    /// left out, tags removed or set. Series whose labels become equal are
    /// merged, as Prometheus would see them from Envoy.
    pub fn encode_with(
        &self,
        out: &mut String,
        server: Option<&Overrides>,
        client: Option<&Overrides>,
    ) {
        let overrides = |r: Reporter| match r {
            Reporter::Destination => server,
            Reporter::Source => client,
        };
        // Per metric: its series by rendered label set.
        let mut counters: BTreeMap<&'static str, BTreeMap<String, u64>> = BTreeMap::new();
        let mut histograms: BTreeMap<&'static str, BTreeMap<String, HistogramValues>> =
            BTreeMap::new();
        let labelled = |metric: &str, base: &[(String, String)], ov: Option<&Overrides>| match ov {
            None => Some(render(base)),
            Some(o) if !o.enabled(metric) => None,
            Some(o) => Some(render(&o.apply(metric, base))),
        };
        for (k, s) in self
            .requests
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            let mut base = peer_labels(&k.peers, k.protocol);
            base.push(("response_code".into(), k.response_code.to_string()));
            base.push((
                "grpc_response_status".into(),
                k.grpc_status.map(|g| g.to_string()).unwrap_or_default(),
            ));
            base.push(("response_flags".into(), k.flags.to_string()));
            let ov = overrides(k.peers.reporter);
            let mut count = |metric: &'static str, v: u64| {
                if let Some(l) = labelled(metric, &base, ov) {
                    *counters.entry(metric).or_default().entry(l).or_default() += v;
                }
            };
            count("requests_total", s.requests.load(Ordering::Relaxed));
            if k.protocol == Protocol::Grpc {
                count(
                    "request_messages_total",
                    s.request_messages.load(Ordering::Relaxed),
                );
                count(
                    "response_messages_total",
                    s.response_messages.load(Ordering::Relaxed),
                );
            }
            for (metric, h) in [
                ("request_duration_milliseconds", &s.duration),
                ("request_bytes", &s.request_bytes),
                ("response_bytes", &s.response_bytes),
            ] {
                if let Some(l) = labelled(metric, &base, ov) {
                    histograms
                        .entry(metric)
                        .or_default()
                        .entry(l)
                        .or_default()
                        .add(&h.read());
                }
            }
        }
        for (k, s) in self.tcp.read().unwrap_or_else(|e| e.into_inner()).iter() {
            let mut base = peer_labels(&k.peers, Protocol::Tcp);
            base.push(("response_flags".into(), k.flags.to_string()));
            let ov = overrides(k.peers.reporter);
            for (metric, v) in [
                ("tcp_sent_bytes_total", &s.sent),
                ("tcp_received_bytes_total", &s.received),
                ("tcp_connections_opened_total", &s.opened),
                ("tcp_connections_closed_total", &s.closed),
            ] {
                if let Some(l) = labelled(metric, &base, ov) {
                    *counters.entry(metric).or_default().entry(l).or_default() +=
                        v.load(Ordering::Relaxed);
                }
            }
        }

        let counter = |out: &mut String, metric: &str, help: &str| {
            let Some(series) = counters.get(metric) else {
                return;
            };
            let name = format!("istio_{metric}");
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for (labels, v) in series {
                let _ = writeln!(out, "{name}{{{labels}}} {v}");
            }
        };
        let histogram = |out: &mut String, metric: &str, help: &str| {
            let Some(series) = histograms.get(metric) else {
                return;
            };
            let name = format!("istio_{metric}");
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
            for (labels, h) in series {
                let mut cumulative = 0;
                for (le, n) in BUCKETS.iter().zip(h.buckets) {
                    cumulative += n;
                    let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{le}\"}} {cumulative}");
                }
                let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {}", h.count);
                let _ = writeln!(out, "{name}_sum{{{labels}}} {}", h.sum);
                let _ = writeln!(out, "{name}_count{{{labels}}} {}", h.count);
            }
        };
        counter(out, "requests_total", "Requests handled by the proxy.");
        histogram(out, "request_duration_milliseconds", "Request duration.");
        histogram(out, "request_bytes", "Request body sizes.");
        histogram(out, "response_bytes", "Response body sizes.");
        counter(
            out,
            "request_messages_total",
            "gRPC messages sent by the client.",
        );
        counter(
            out,
            "response_messages_total",
            "gRPC messages sent by the server.",
        );
        counter(
            out,
            "tcp_sent_bytes_total",
            "Bytes sent to the downstream on TCP connections.",
        );
        counter(
            out,
            "tcp_received_bytes_total",
            "Bytes received from the downstream on TCP connections.",
        );
        counter(
            out,
            "tcp_connections_opened_total",
            "TCP connections opened.",
        );
        counter(
            out,
            "tcp_connections_closed_total",
            "TCP connections closed.",
        );
    }
}

/// A label set as the text format writes it: `a="x",b="y"`, escaped.
fn render(labels: &[(String, String)]) -> String {
    let mut out = String::with_capacity(labels.len() * 32);
    for (i, (name, value)) in labels.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(name);
        out.push_str("=\"");
        escape_label_value(&mut out, value);
        out.push('"');
    }
    out
}

/// The labels of [`Peers`], in Istio's order.
fn peer_labels(p: &Peers, protocol: Protocol) -> Vec<(String, String)> {
    let reporter = match p.reporter {
        Reporter::Source => "source",
        Reporter::Destination => "destination",
    };
    let mut out = Vec::with_capacity(28);
    out.push(("reporter".to_string(), reporter.to_string()));
    for (side, m) in [("source", &p.source.0), ("destination", &p.destination.0)] {
        for (name, value) in [
            ("workload", &m.workload),
            ("workload_namespace", &m.namespace),
            ("principal", &m.principal),
            ("app", &m.app),
            ("version", &m.version),
            ("canonical_service", &m.canonical_service),
            ("canonical_revision", &m.canonical_revision),
            ("cluster", &m.cluster),
        ] {
            out.push((format!("{side}_{name}"), value.to_string()));
        }
    }
    let s = &p.service.0;
    for (name, value) in [
        ("destination_service", &s.host),
        ("destination_service_name", &s.name),
        ("destination_service_namespace", &s.namespace),
    ] {
        out.push((name.to_string(), value.to_string()));
    }
    out.push(("request_protocol".into(), protocol.as_str().into()));
    out.push((
        "connection_security_policy".into(),
        p.security.as_str().into(),
    ));
    out
}

/// Writes a label's value as the text format wants it (backslash, quote
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
mod tests {
    use super::*;
    use std::collections::BTreeMap as Labels;

    fn peers(reporter: Reporter, dest: &Arc<PeerMeta>) -> Peers {
        let src = PeerMeta::from_labels(
            &Labels::from([("app".to_string(), "productpage".to_string())]),
            "productpage-v1",
            "default",
            "spiffe://cluster.local/ns/default/sa/bookinfo-productpage",
        );
        Peers {
            reporter,
            source: ByPtr(Arc::new(src)),
            destination: ByPtr(dest.clone()),
            service: ByPtr(Arc::new(ServiceMeta::from_host(
                "reviews.default.svc.cluster.local",
            ))),
            security: Security::Unknown,
        }
    }

    fn key(p: &Peers, code: u16) -> RequestKey {
        RequestKey {
            peers: p.clone(),
            protocol: Protocol::Http,
            response_code: code,
            grpc_status: None,
            flags: Flags::default(),
        }
    }

    fn value(text: &str, prefix: &str, contains: &[&str]) -> Option<String> {
        text.lines()
            .find(|l| l.starts_with(prefix) && contains.iter().all(|c| l.contains(c)))
            .and_then(|l| l.rsplit(' ').next())
            .map(str::to_string)
    }

    #[test]
    fn istio_names_types_buckets_and_labels() {
        let m = Metrics::default();
        let dest = Arc::new(PeerMeta::from_labels(
            &Labels::from([
                ("app".to_string(), "reviews".to_string()),
                ("version".to_string(), "v2".to_string()),
            ]),
            "reviews-v2",
            "default",
            "spiffe://cluster.local/ns/default/sa/bookinfo-reviews",
        ));
        let p = peers(Reporter::Source, &dest);
        let sample = |ms: f64| RequestSample {
            duration_ms: ms,
            request_bytes: 0,
            response_bytes: 700,
            ..Default::default()
        };
        m.record_request(&key(&p, 200), &sample(0.7));
        m.record_request(&key(&p, 200), &sample(7.0));
        m.record_request(&key(&p, 503), &sample(30.0));
        // Same labels from metadata rebuilt by a config update: one series.
        let rebuilt = peers(Reporter::Source, &Arc::new((*dest).clone()));
        m.record_request(&key(&rebuilt, 200), &sample(1.0));
        let mut text = String::new();
        m.encode(&mut text);
        assert!(
            text.contains("# TYPE istio_requests_total counter"),
            "{text}"
        );
        assert!(text.contains("# TYPE istio_request_duration_milliseconds histogram"));
        assert!(text.contains("# TYPE istio_response_bytes histogram"));
        assert!(!text.contains("istio_request_messages_total"), "gRPC only");
        let ok = ["response_code=\"200\""];
        assert_eq!(
            value(&text, "istio_requests_total{", &ok).as_deref(),
            Some("3")
        );
        assert_eq!(
            text.lines()
                .filter(|l| l.starts_with("istio_requests_total{"))
                .count(),
            2,
            "{text}"
        );
        for label in [
            "reporter=\"source\"",
            "source_workload=\"productpage-v1\"",
            "source_canonical_service=\"productpage\"",
            "source_canonical_revision=\"latest\"",
            "source_cluster=\"Kubernetes\"",
            "destination_workload=\"reviews-v2\"",
            "destination_canonical_revision=\"v2\"",
            "destination_principal=\"spiffe://cluster.local/ns/default/sa/bookinfo-reviews\"",
            "destination_service=\"reviews.default.svc.cluster.local\"",
            "destination_service_name=\"reviews\"",
            "destination_service_namespace=\"default\"",
            "request_protocol=\"http\"",
            "grpc_response_status=\"\"",
            "response_flags=\"-\"",
            "connection_security_policy=\"unknown\"",
        ] {
            assert!(
                value(&text, "istio_requests_total{", &[label]).is_some(),
                "{label} in\n{text}"
            );
        }
        // 0.7 ms falls in the 1 ms bucket, 7 ms in the 10 ms one; 600000 is a bucket.
        let bucket = |le: &str| {
            value(
                &text,
                "istio_request_duration_milliseconds_bucket{",
                &["response_code=\"200\"", &format!("le=\"{le}\"")],
            )
        };
        assert_eq!(bucket("0.5").as_deref(), Some("0"));
        assert_eq!(bucket("1").as_deref(), Some("2"));
        assert_eq!(bucket("10").as_deref(), Some("3"));
        assert_eq!(bucket("600000").as_deref(), Some("3"));
        assert_eq!(bucket("+Inf").as_deref(), Some("3"));
        assert_eq!(
            value(
                &text,
                "istio_request_duration_milliseconds_sum{",
                &["response_code=\"503\""]
            )
            .as_deref(),
            Some("30")
        );
        assert_eq!(
            value(&text, "istio_response_bytes_sum{", &ok).as_deref(),
            Some("2100")
        );
    }

    #[test]
    fn grpc_messages_and_tcp() {
        let m = Metrics::default();
        let dest = Arc::new(PeerMeta::unknown());
        let p = peers(Reporter::Destination, &dest);
        let k = RequestKey {
            protocol: Protocol::Grpc,
            grpc_status: Some(0),
            ..key(&p, 200)
        };
        let sample = RequestSample {
            request_messages: 3,
            response_messages: 4,
            ..Default::default()
        };
        m.record_request(&k, &sample);
        let t = m.tcp_opened(&TcpKey {
            peers: p.clone(),
            flags: Flags::default(),
        });
        t.sent.fetch_add(10, Ordering::Relaxed);
        t.received.fetch_add(20, Ordering::Relaxed);
        Metrics::tcp_closed(&t);
        let mut text = String::new();
        m.encode(&mut text);
        let grpc = ["grpc_response_status=\"0\"", "request_protocol=\"grpc\""];
        assert_eq!(
            value(&text, "istio_request_messages_total{", &grpc).as_deref(),
            Some("3")
        );
        assert_eq!(
            value(&text, "istio_response_messages_total{", &grpc).as_deref(),
            Some("4")
        );
        let tcp = ["request_protocol=\"tcp\""];
        assert_eq!(
            value(&text, "istio_tcp_sent_bytes_total{", &tcp).as_deref(),
            Some("10")
        );
        assert_eq!(
            value(&text, "istio_tcp_received_bytes_total{", &tcp).as_deref(),
            Some("20")
        );
        assert_eq!(
            value(&text, "istio_tcp_connections_opened_total{", &tcp).as_deref(),
            Some("1")
        );
        assert_eq!(
            value(&text, "istio_tcp_connections_closed_total{", &tcp).as_deref(),
            Some("1")
        );
    }

    #[test]
    fn telemetry_overrides_disable_remove_and_upsert() {
        let m = Metrics::default();
        let dest = Arc::new(PeerMeta::from_labels(
            &Labels::from([("app".to_string(), "reviews".to_string())]),
            "reviews-v1",
            "default",
            "",
        ));
        let p = peers(Reporter::Source, &dest);
        m.record_request(&key(&p, 200), &RequestSample::default());
        m.record_request(&key(&p, 503), &RequestSample::default());
        let o = Overrides::compile(&wire::pb::MetricsPolicy {
            disabled: vec!["request_bytes".into()],
            tag_overrides: vec![
                wire::pb::MetricTagOverride {
                    metric: "requests_total".into(),
                    tag: "response_code".into(),
                    remove: true,
                    value: String::new(),
                },
                wire::pb::MetricTagOverride {
                    metric: "requests_total".into(),
                    tag: "failed".into(),
                    remove: false,
                    value: "response.code >= 500".into(),
                },
            ],
        })
        .expect("valid");
        let mut text = String::new();
        // The overrides are the client side's: this series' reporter.
        m.encode_with(&mut text, None, Some(&o));
        assert!(!text.contains("istio_request_bytes"), "disabled: {text}");
        assert!(text.contains("istio_response_bytes"));
        let requests: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("istio_requests_total{"))
            .collect();
        assert_eq!(requests.len(), 2, "{requests:?}");
        assert!(requests.iter().all(|l| !l.contains("response_code=")));
        assert!(requests.iter().any(|l| l.contains("failed=\"true\"} 1")));
        assert!(requests.iter().any(|l| l.contains("failed=\"false\"} 1")));
        // Other metrics keep their labels.
        assert!(
            text.contains("istio_response_bytes_count{") && text.contains("response_code=\"503\"")
        );
        // The server side's overrides do not touch the source reporter.
        let mut text = String::new();
        m.encode_with(&mut text, Some(&o), None);
        assert!(text.contains("istio_request_bytes"));
    }
}
