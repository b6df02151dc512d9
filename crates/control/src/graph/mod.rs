//! The mesh's service graph, from the proxies' own Istio metrics: who calls
//! which service, and which workload (version) of it answers, with request
//! rate, error ratio, p99 latency and whether the hop was mutual TLS.
//!
//! Rates come from two scrapes of each proxy (see [`scrape`]): the counter
//! and histogram increases between them over the time between them. As
//! Kiali does, a request is counted once, from the destination's report;
//! the source's report is used where the destination has none for that
//! caller — a destination without a sidecar, a request the source's proxy
//! answered itself (an injected fault, no healthy upstream: its
//! `response_flags` say so) which never reached the destination, or a
//! caller the destination could not tell apart (its report says `unknown`
//! though the caller spoke mTLS: workloads sharing a service account).

pub mod prom;
pub mod prometheus;
pub mod recent;
pub mod scrape;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Instant;

use serde::Serialize;

/// The metric names read from each proxy.
const REQUESTS: &str = "istio_requests_total";
const DURATION_BUCKETS: &str = "istio_request_duration_milliseconds_bucket";
const TCP_OPENED: &str = "istio_tcp_connections_opened_total";
/// Istio's label value for what is not known.
const UNKNOWN: &str = "unknown";

/// Which proxy reported a series.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reporter {
    Source,
    Destination,
}

/// One end of a series: a workload, as its labels name it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Peer {
    pub workload: String,
    pub namespace: String,
    pub app: String,
    pub version: String,
}

impl Peer {
    fn from_labels(labels: &BTreeMap<&str, String>, side: &str) -> Peer {
        let get = |name: &str| {
            labels
                .get(format!("{side}_{name}").as_str())
                .cloned()
                .unwrap_or_default()
        };
        let app = Some(get("app"))
            .filter(|a| !a.is_empty() && a != UNKNOWN)
            .unwrap_or_else(|| get("canonical_service"));
        let version = Some(get("version"))
            .filter(|v| !v.is_empty() && v != UNKNOWN)
            .unwrap_or_else(|| get("canonical_revision"));
        Peer {
            workload: get("workload"),
            namespace: get("workload_namespace"),
            app,
            version,
        }
    }

    fn known(&self) -> bool {
        !self.workload.is_empty() && self.workload != UNKNOWN
    }

    fn node_id(&self) -> String {
        if self.known() {
            format!("workload:{}/{}", self.namespace, self.workload)
        } else {
            UNKNOWN.to_string()
        }
    }
}

/// What a series of the graph's metrics is drawn by: its labels but `le`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SeriesKey {
    pub reporter: Reporter,
    pub source: Peer,
    pub destination: Peer,
    /// `destination_service`: the host the request was for.
    pub service: String,
    pub service_name: String,
    pub service_namespace: String,
    /// `request_protocol`: http, grpc or tcp.
    pub protocol: String,
    /// 0 for TCP connections (and requests that got no response).
    pub response_code: u16,
    /// `response_flags`: `-` when the proxy did not answer for the upstream.
    pub flags: String,
    pub mutual_tls: bool,
}

impl SeriesKey {
    fn from_labels(labels: &BTreeMap<&str, String>) -> Option<SeriesKey> {
        let reporter = match labels.get("reporter")?.as_str() {
            "source" => Reporter::Source,
            "destination" => Reporter::Destination,
            _ => return None,
        };
        let get = |name: &str| labels.get(name).cloned().unwrap_or_default();
        Some(SeriesKey {
            reporter,
            source: Peer::from_labels(labels, "source"),
            destination: Peer::from_labels(labels, "destination"),
            service: get("destination_service"),
            service_name: get("destination_service_name"),
            service_namespace: get("destination_service_namespace"),
            protocol: labels
                .get("request_protocol")
                .cloned()
                .unwrap_or_else(|| "tcp".into()),
            response_code: get("response_code").parse().unwrap_or(0),
            flags: labels
                .get("response_flags")
                .cloned()
                .unwrap_or_else(|| "-".into()),
            mutual_tls: get("connection_security_policy") == "mutual_tls",
        })
    }

    /// A request that failed: 5xx, or no response at all.
    fn is_error(&self) -> bool {
        self.protocol != "tcp" && (self.response_code >= 500 || self.response_code == 0)
    }

    /// Answered by the reporting proxy itself, not by its upstream.
    fn proxy_answered(&self) -> bool {
        self.flags != "-" && !self.flags.is_empty()
    }

    fn service_id(&self) -> String {
        format!("service:{}", self.service)
    }
}

/// A series' values in one scrape.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SeriesValue {
    /// Requests (TCP: connections opened) so far.
    pub count: f64,
    /// The duration histogram's cumulative buckets, `(le, count)` in the
    /// order the proxy wrote them.
    pub buckets: Vec<(f64, f64)>,
}

/// One proxy's metrics at one moment.
#[derive(Clone, Debug)]
pub struct Scrape {
    pub at: Instant,
    pub series: HashMap<SeriesKey, SeriesValue>,
}

impl Scrape {
    /// Reads a proxy's Prometheus text; at most `max_series` series are
    /// kept (the rest are dropped, and the count returned says how many).
    pub fn read(text: &str, at: Instant, max_series: usize) -> (Scrape, usize) {
        let mut series: HashMap<SeriesKey, SeriesValue> = HashMap::new();
        let mut dropped = 0;
        let wanted = |n: &str| n == REQUESTS || n == DURATION_BUCKETS || n == TCP_OPENED;
        for s in prom::samples(text, wanted) {
            let Some(key) = SeriesKey::from_labels(&s.labels) else {
                continue;
            };
            let full = series.len() >= max_series;
            let value = match series.get_mut(&key) {
                Some(v) => v,
                None if full => {
                    dropped += 1;
                    continue;
                }
                None => series.entry(key).or_default(),
            };
            if s.name == DURATION_BUCKETS {
                let le = s.labels.get("le").map_or(f64::INFINITY, |le| {
                    if le == "+Inf" {
                        f64::INFINITY
                    } else {
                        le.parse().unwrap_or(f64::INFINITY)
                    }
                });
                value.buckets.push((le, s.value));
            } else {
                value.count += s.value;
            }
        }
        (Scrape { at, series }, dropped)
    }
}

/// How a hop was secured, over the requests the destination reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mtls {
    /// Every request was mutual TLS.
    MutualTls,
    /// Some were, some were plaintext (PERMISSIVE with both kinds of client).
    Partial,
    None,
    /// Not known: only the caller reported (the destination has no
    /// sidecar, or the caller's proxy answered itself).
    Unknown,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeKind {
    Workload,
    Service,
    /// Callers the destination could not identify (no sidecar, no mTLS).
    Unknown,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Node {
    pub id: String,
    pub kind: NodeKind,
    pub namespace: String,
    /// The workload (Deployment) or the service's short name.
    pub name: String,
    pub app: String,
    pub version: String,
    /// Services: the host (`reviews.default.svc.cluster.local`).
    pub host: String,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Edge {
    pub source: String,
    pub target: String,
    pub protocol: String,
    /// Requests (TCP: connections) per second over the window.
    pub rps: f64,
    /// The share of those that failed (5xx or no response), 0 to 1.
    pub error_ratio: f64,
    /// The 99th percentile of the request duration over the window, as
    /// PromQL's `histogram_quantile` computes it; `None` without requests.
    pub p99_ms: Option<f64>,
    pub mtls: Mtls,
    /// Requests per second by response code (`"200"`, `"503"`; `"0"` for none).
    pub codes: BTreeMap<String, f64>,
    /// Requests counted since the proxies started (the window's end).
    pub total: f64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Graph {
    pub nodes: Vec<Node>,
    pub edges: Vec<Edge>,
    /// The longest time between the two scrapes rates were taken over; 0
    /// until a second scrape.
    pub window_seconds: f64,
}

/// A proxy's two scrapes rates are taken between (`older` is `None` until
/// there is a second).
pub struct Window<'a> {
    pub older: Option<&'a Scrape>,
    pub newer: &'a Scrape,
}

/// One series' contribution over a window.
struct Increase<'a> {
    key: &'a SeriesKey,
    total: f64,
    /// Per second; 0 without an older scrape.
    rate: f64,
    /// The histogram buckets' increases.
    buckets: Vec<(f64, f64)>,
}

fn increases<'a>(w: &Window<'a>) -> impl Iterator<Item = Increase<'a>> + 'a {
    let older = w.older;
    let seconds = older.map_or(0.0, |o| w.newer.at.duration_since(o.at).as_secs_f64());
    w.newer.series.iter().map(move |(key, now)| {
        let before = older.and_then(|o| o.series.get(key));
        // A counter lower than before: the proxy restarted, and counts again from 0.
        let reset = before.is_some_and(|b| now.count < b.count);
        let delta = |now: f64, before: Option<f64>| match before {
            Some(b) if !reset => (now - b).max(0.0),
            _ => now,
        };
        let (rate, buckets) = if seconds > 0.0 {
            let count = delta(now.count, before.map(|b| b.count));
            let buckets = now
                .buckets
                .iter()
                .map(|&(le, n)| {
                    let b = before.and_then(|b| b.buckets.iter().find(|(l, _)| *l == le));
                    (le, delta(n, b.map(|(_, n)| *n)))
                })
                .collect();
            (count / seconds, buckets)
        } else {
            (0.0, Vec::new())
        };
        Increase {
            key,
            total: now.count,
            rate,
            buckets,
        }
    })
}

/// An edge being summed up.
#[derive(Default)]
struct Sum {
    protocol: String,
    rps: f64,
    errors: f64,
    total: f64,
    buckets: Vec<(f64, f64)>,
    codes: BTreeMap<String, f64>,
    /// Requests the destination saw, and how many of them over mTLS: in the
    /// window, and since the start (used when the window has none).
    seen: [f64; 2],
    seen_mtls: [f64; 2],
}

impl Sum {
    /// `mtls`: whether the destination saw the request over mutual TLS, if known.
    fn add(&mut self, i: &Increase, mtls: Option<bool>) {
        if self.protocol.is_empty() || self.protocol == "tcp" {
            self.protocol = i.key.protocol.clone();
        }
        self.rps += i.rate;
        self.total += i.total;
        if i.key.is_error() {
            self.errors += i.rate;
        }
        if i.rate > 0.0 {
            *self
                .codes
                .entry(i.key.response_code.to_string())
                .or_default() += i.rate;
        }
        for &(le, n) in &i.buckets {
            match self.buckets.iter_mut().find(|(l, _)| *l == le) {
                Some((_, sum)) => *sum += n,
                None => self.buckets.push((le, n)),
            }
        }
        if let Some(mtls) = mtls {
            let mtls = f64::from(u8::from(mtls));
            self.seen[0] += i.rate;
            self.seen[1] += i.total;
            self.seen_mtls[0] += i.rate * mtls;
            self.seen_mtls[1] += i.total * mtls;
        }
    }

    fn edge(mut self, source: String, target: String) -> Edge {
        self.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        let which = usize::from(self.seen[0] <= 0.0);
        let (seen, mtls) = (self.seen[which], self.seen_mtls[which]);
        Edge {
            source,
            target,
            protocol: self.protocol,
            rps: self.rps,
            error_ratio: if self.rps > 0.0 {
                self.errors / self.rps
            } else {
                0.0
            },
            p99_ms: quantile(0.99, &self.buckets),
            mtls: match (seen, mtls) {
                (r, _) if r <= 0.0 => Mtls::Unknown,
                (r, m) if m >= r => Mtls::MutualTls,
                (_, m) if m <= 0.0 => Mtls::None,
                _ => Mtls::Partial,
            },
            codes: self.codes,
            total: self.total,
        }
    }
}

/// The `q` quantile of a histogram's cumulative `(le, count)` buckets
/// (sorted by `le`, the last `+Inf`), interpolated linearly within the
/// bucket it falls in, as PromQL's `histogram_quantile`: the highest
/// finite bound when it falls in `+Inf`; `None` without observations.
pub fn quantile(q: f64, buckets: &[(f64, f64)]) -> Option<f64> {
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let mut lower = (0.0, 0.0);
    for &(le, count) in buckets {
        if count >= rank {
            if le.is_infinite() {
                return Some(lower.0);
            }
            if count <= lower.1 {
                return Some(le);
            }
            return Some(lower.0 + (le - lower.0) * (rank - lower.1) / (count - lower.1));
        }
        lower = (le, count);
    }
    Some(lower.0)
}

/// Which reports count, so that each request counts once (see the module).
struct Counting<'a> {
    /// (caller, service) pairs whose destinations identified the caller.
    identified: HashSet<(String, &'a str)>,
    /// Services whose callers reported calling them themselves.
    called: HashSet<&'a str>,
    /// Services whose destinations saw callers they could not identify,
    /// over mTLS and in plaintext.
    unidentified: [HashSet<&'a str>; 2],
}

impl<'a> Counting<'a> {
    fn new(windows: &[Window<'a>]) -> Counting<'a> {
        let mut c = Counting {
            identified: HashSet::new(),
            called: HashSet::new(),
            unidentified: [HashSet::new(), HashSet::new()],
        };
        for k in windows.iter().flat_map(|w| w.newer.series.keys()) {
            match k.reporter {
                Reporter::Destination if k.source.known() => {
                    c.identified
                        .insert((k.source.node_id(), k.service.as_str()));
                }
                Reporter::Destination => {
                    c.unidentified[usize::from(!k.mutual_tls)].insert(k.service.as_str());
                }
                Reporter::Source if k.source.known() => {
                    c.called.insert(k.service.as_str());
                }
                Reporter::Source => {}
            }
        }
        c
    }

    /// Whether `k` counts; if it does, whether the destination saw it over
    /// mutual TLS, when that is known.
    fn counts(&self, k: &SeriesKey) -> Option<Option<bool>> {
        let service = k.service.as_str();
        match k.reporter {
            // A caller the destination could not identify but that spoke
            // mTLS has a sidecar, which reported the request itself (a
            // destination can tell callers apart only by their identity,
            // and workloads may share one).
            Reporter::Destination => (k.source.known()
                || !(k.mutual_tls && self.called.contains(service)))
            .then_some(Some(k.mutual_tls)),
            Reporter::Source if k.proxy_answered() => Some(None),
            Reporter::Source if self.identified.contains(&(k.source.node_id(), service)) => None,
            Reporter::Source => {
                let [mtls, plain] = &self.unidentified;
                Some(match (mtls.contains(service), plain.contains(service)) {
                    (true, false) => Some(true),
                    (false, true) => Some(false),
                    _ => None,
                })
            }
        }
    }
}

/// The graph of the requests the proxies reported in their windows.
pub fn build<'a>(windows: impl IntoIterator<Item = Window<'a>>) -> Graph {
    let windows: Vec<Window> = windows.into_iter().collect();
    let window_seconds = windows
        .iter()
        .filter_map(|w| Some(w.newer.at.duration_since(w.older?.at).as_secs_f64()))
        .fold(0.0, f64::max);
    let counting = Counting::new(&windows);
    let mut nodes: BTreeMap<String, Node> = BTreeMap::new();
    let mut edges: BTreeMap<(String, String), Sum> = BTreeMap::new();
    for i in windows.iter().flat_map(increases) {
        let k = i.key;
        let Some(mtls) = counting.counts(k) else {
            continue;
        };
        if k.service.is_empty() {
            continue;
        }
        let source = workload_node(&mut nodes, &k.source);
        let service = k.service_id();
        nodes.entry(service.clone()).or_insert_with(|| Node {
            id: service.clone(),
            kind: NodeKind::Service,
            namespace: k.service_namespace.clone(),
            name: if k.service_name.is_empty() || k.service_name == UNKNOWN {
                k.service.clone()
            } else {
                k.service_name.clone()
            },
            app: String::new(),
            version: String::new(),
            host: k.service.clone(),
        });
        edges
            .entry((source, service.clone()))
            .or_default()
            .add(&i, mtls);
        if k.destination.known() {
            let destination = workload_node(&mut nodes, &k.destination);
            edges
                .entry((service, destination))
                .or_default()
                .add(&i, mtls);
        }
    }
    Graph {
        nodes: nodes.into_values().collect(),
        edges: edges
            .into_iter()
            .map(|((s, t), sum)| sum.edge(s, t))
            .collect(),
        window_seconds,
    }
}

/// Failed requests to one service over the window, by caller, response
/// code and response flags (`FI`: a fault the caller's proxy injected,
/// `UF`: no connection to the upstream, ...).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Failures {
    pub source: String,
    /// The workload that answered; `unknown` when the caller's proxy did.
    pub destination: String,
    pub response_code: u16,
    pub response_flags: String,
    pub rps: f64,
    /// Since the proxies started.
    pub total: f64,
}

/// The failed requests for `host`, counted once as [`build`] counts them,
/// the most frequent first.
pub fn failures<'a>(windows: impl IntoIterator<Item = Window<'a>>, host: &str) -> Vec<Failures> {
    let windows: Vec<Window> = windows.into_iter().collect();
    let counting = Counting::new(&windows);
    let mut out: BTreeMap<(String, String, u16, String), (f64, f64)> = BTreeMap::new();
    for i in windows.iter().flat_map(increases) {
        let k = i.key;
        if k.service != host || !k.is_error() || counting.counts(k).is_none() {
            continue;
        }
        let sum = out
            .entry((
                k.source.node_id(),
                k.destination.node_id(),
                k.response_code,
                k.flags.clone(),
            ))
            .or_default();
        sum.0 += i.rate;
        sum.1 += i.total;
    }
    let mut out: Vec<Failures> = out
        .into_iter()
        .map(
            |((source, destination, code, flags), (rps, total))| Failures {
                source,
                destination,
                response_code: code,
                response_flags: flags,
                rps,
                total,
            },
        )
        .collect();
    out.sort_by(|a, b| b.rps.total_cmp(&a.rps).then(b.total.total_cmp(&a.total)));
    out
}

fn workload_node(nodes: &mut BTreeMap<String, Node>, peer: &Peer) -> String {
    let id = peer.node_id();
    nodes.entry(id.clone()).or_insert_with(|| {
        if peer.known() {
            Node {
                id: id.clone(),
                kind: NodeKind::Workload,
                namespace: peer.namespace.clone(),
                name: peer.workload.clone(),
                app: peer.app.clone(),
                version: peer.version.clone(),
                host: String::new(),
            }
        } else {
            Node {
                id: id.clone(),
                kind: NodeKind::Unknown,
                namespace: String::new(),
                name: UNKNOWN.into(),
                app: String::new(),
                version: String::new(),
                host: String::new(),
            }
        }
    });
    id
}

#[cfg(test)]
mod tests;
