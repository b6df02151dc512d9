//! The text exposition (Prometheus format 0.0.4) of Istio's standard
//! metrics, written a chunk at a time: a scrape of a proxy with hundreds of
//! destinations is megabytes, which it never holds at once. What it holds
//! is one chunk and the family being written: each series' rendered labels
//! and values (series with equal labels merged, in the order Prometheus
//! reads them), a small fraction of that family's text.

use std::collections::{BTreeMap, btree_map};
use std::fmt::Write;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::{
    BUCKETS, HistogramValues, Map, Metrics, Overrides, Protocol, Reporter, RequestKey,
    RequestSeries, SeriesKey, TcpSeries, escape_label_value, read,
};

/// About how many bytes each chunk holds: the text is cut between series.
pub const CHUNK: usize = 32 * 1024;

/// Istio's standard metrics' families, in the order they are written.
const FAMILIES: [Family; 10] = [
    Family::counter(
        "requests_total",
        "Requests handled by the proxy.",
        Source::Requests(|_, s| Some(s.requests.load(Ordering::Relaxed))),
    ),
    Family::histogram("request_duration_milliseconds", "Request duration.", |s| {
        &s.duration
    }),
    Family::histogram("request_bytes", "Request body sizes.", |s| &s.request_bytes),
    Family::histogram("response_bytes", "Response body sizes.", |s| {
        &s.response_bytes
    }),
    Family::counter(
        "request_messages_total",
        "gRPC messages sent by the client.",
        Source::Requests(|k, s| grpc(k, s.request_messages.load(Ordering::Relaxed))),
    ),
    Family::counter(
        "response_messages_total",
        "gRPC messages sent by the server.",
        Source::Requests(|k, s| grpc(k, s.response_messages.load(Ordering::Relaxed))),
    ),
    Family::counter(
        "tcp_sent_bytes_total",
        "Bytes sent to the downstream on TCP connections.",
        Source::Tcp(|s| s.sent.load(Ordering::Relaxed)),
    ),
    Family::counter(
        "tcp_received_bytes_total",
        "Bytes received from the downstream on TCP connections.",
        Source::Tcp(|s| s.received.load(Ordering::Relaxed)),
    ),
    Family::counter(
        "tcp_connections_opened_total",
        "TCP connections opened.",
        Source::Tcp(|s| s.opened.load(Ordering::Relaxed)),
    ),
    Family::counter(
        "tcp_connections_closed_total",
        "TCP connections closed.",
        Source::Tcp(|s| s.closed.load(Ordering::Relaxed)),
    ),
];

/// gRPC message counts exist for gRPC requests only.
fn grpc(k: &RequestKey, n: u64) -> Option<u64> {
    (k.protocol == Protocol::Grpc).then_some(n)
}

/// One metric (its name without `istio_`) and where its values come from.
struct Family {
    metric: &'static str,
    help: &'static str,
    kind: Kind,
}

enum Kind {
    Counter(Source),
    Histogram(fn(&RequestSeries) -> &super::Histogram),
}

/// A counter's value in each series of one map.
enum Source {
    /// `None`: the series has no such counter.
    Requests(fn(&RequestKey, &RequestSeries) -> Option<u64>),
    Tcp(fn(&TcpSeries) -> u64),
}

impl Family {
    const fn counter(metric: &'static str, help: &'static str, source: Source) -> Family {
        Family {
            metric,
            help,
            kind: Kind::Counter(source),
        }
    }

    const fn histogram(
        metric: &'static str,
        help: &'static str,
        read: fn(&RequestSeries) -> &super::Histogram,
    ) -> Family {
        Family {
            metric,
            help,
            kind: Kind::Histogram(read),
        }
    }
}

/// One series' values as scraped.
#[derive(Clone, Copy)]
enum Values {
    Counter(u64),
    Histogram(HistogramValues),
}

impl Values {
    fn add(&mut self, other: &Values) {
        match (self, other) {
            (Values::Counter(a), Values::Counter(b)) => *a += b,
            (Values::Histogram(a), Values::Histogram(b)) => a.add(b),
            // A family's series are all of its kind.
            _ => {}
        }
    }
}

/// The exposition of every standard metric, with the Telemetry API's
/// overrides of each reporter (`server`: destination, `client`: source)
/// applied: disabled metrics left out, tags removed or set. Series whose
/// labels become equal are merged, as Prometheus would see them from Envoy.
/// Each item is the next chunk of text, of about [`CHUNK`] bytes.
pub struct Exposition {
    metrics: Arc<Metrics>,
    server: Option<Arc<Overrides>>,
    client: Option<Arc<Overrides>>,
    families: std::slice::Iter<'static, Family>,
    /// The family being written and its series not yet written.
    current: Option<(&'static Family, btree_map::IntoIter<String, Values>)>,
}

impl Metrics {
    pub fn exposition(
        self: &Arc<Self>,
        server: Option<Arc<Overrides>>,
        client: Option<Arc<Overrides>>,
    ) -> Exposition {
        Exposition {
            metrics: self.clone(),
            server,
            client,
            families: FAMILIES.iter(),
            current: None,
        }
    }
}

impl Iterator for Exposition {
    type Item = String;

    fn next(&mut self) -> Option<String> {
        let mut out = String::with_capacity(CHUNK);
        loop {
            if let Some((family, series)) = &mut self.current {
                let Some((labels, values)) = series.next() else {
                    self.current = None;
                    continue;
                };
                let start = out.len();
                write_series(&mut out, family.metric, &labels, &values);
                // Stop before the next series would outgrow the chunk.
                if 2 * out.len() - start > CHUNK {
                    break;
                }
                continue;
            }
            let Some(family) = self.families.next() else {
                break;
            };
            let series = self.series(family);
            if series.is_empty() {
                continue;
            }
            let kind = match family.kind {
                Kind::Counter(_) => "counter",
                Kind::Histogram(_) => "histogram",
            };
            let (name, help) = (family.metric, family.help);
            let _ = writeln!(
                out,
                "# HELP istio_{name} {help}\n# TYPE istio_{name} {kind}"
            );
            self.current = Some((family, series.into_iter()));
        }
        (!out.is_empty()).then_some(out)
    }
}

impl Exposition {
    /// The family's series by rendered label set, read now.
    fn series(&self, family: &Family) -> BTreeMap<String, Values> {
        let mut series = BTreeMap::new();
        let metrics = &self.metrics;
        match &family.kind {
            Kind::Counter(Source::Requests(value)) => {
                self.add(&mut series, family.metric, &metrics.requests, |k, s| {
                    value(k, s).map(Values::Counter)
                })
            }
            Kind::Counter(Source::Tcp(value)) => {
                self.add(&mut series, family.metric, &metrics.tcp, |_, s| {
                    Some(Values::Counter(value(s)))
                })
            }
            Kind::Histogram(histogram) => {
                self.add(&mut series, family.metric, &metrics.requests, |_, s| {
                    Some(Values::Histogram(histogram(s).read()))
                })
            }
        }
        series
    }

    fn add<K: SeriesKey, V>(
        &self,
        series: &mut BTreeMap<String, Values>,
        metric: &str,
        map: &Map<K, V>,
        value: impl Fn(&K, &V) -> Option<Values>,
    ) {
        for (k, s) in read(map).iter() {
            let Some(v) = value(k, s) else { continue };
            let Some(labels) = self.labels(metric, k) else {
                continue;
            };
            match series.entry(labels) {
                btree_map::Entry::Vacant(e) => {
                    e.insert(v);
                }
                btree_map::Entry::Occupied(mut e) => e.get_mut().add(&v),
            }
        }
    }

    /// The series' label set as the text format writes it (`a="x",b="y"`),
    /// or `None` if its reporter's overrides disable the metric.
    fn labels(&self, metric: &str, key: &impl SeriesKey) -> Option<String> {
        let overrides = match key.peers().reporter {
            Reporter::Destination => self.server.as_deref(),
            Reporter::Source => self.client.as_deref(),
        };
        let mut out = String::with_capacity(768);
        let mut write = |name: &str, value: &str| {
            if !out.is_empty() {
                out.push(',');
            }
            out.push_str(name);
            out.push_str("=\"");
            escape_label_value(&mut out, value);
            out.push('"');
        };
        match overrides {
            None => key.labels(&mut write),
            Some(o) if !o.enabled(metric) => return None,
            Some(o) => {
                let mut base = Vec::with_capacity(32);
                key.labels(&mut |name, value| base.push((name.to_string(), value.to_string())));
                for (name, value) in o.apply(metric, &base) {
                    write(&name, &value);
                }
            }
        }
        out.shrink_to_fit();
        Some(out)
    }
}

fn write_series(out: &mut String, metric: &str, labels: &str, values: &Values) {
    match values {
        Values::Counter(v) => {
            let _ = writeln!(out, "istio_{metric}{{{labels}}} {v}");
        }
        Values::Histogram(h) => {
            let mut cumulative = 0;
            for (le, n) in BUCKETS.iter().zip(h.buckets) {
                cumulative += n;
                let _ = writeln!(
                    out,
                    "istio_{metric}_bucket{{{labels},le=\"{le}\"}} {cumulative}"
                );
            }
            let _ = writeln!(
                out,
                "istio_{metric}_bucket{{{labels},le=\"+Inf\"}} {}",
                h.count
            );
            let _ = writeln!(out, "istio_{metric}_sum{{{labels}}} {}", h.sum);
            let _ = writeln!(out, "istio_{metric}_count{{{labels}}} {}", h.count);
        }
    }
}
