//! The exposition as the proxy wrote it before it was streamed (one
//! `String` for every series), kept as the oracle the streamed one must
//! equal byte for byte.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::Ordering;

use super::super::{
    BUCKETS, HistogramValues, Metrics, Overrides, Peers, Protocol, Reporter, escape_label_value,
};

/// The exposition with the Telemetry API's overrides of each reporter
/// (`server`: destination, `client`: source) applied: disabled metrics
/// left out, tags removed or set. Series whose labels become equal are
/// merged, as Prometheus would see them from Envoy.
pub fn encode_with(
    m: &Metrics,
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
    let mut histograms: BTreeMap<&'static str, BTreeMap<String, HistogramValues>> = BTreeMap::new();
    let labelled = |metric: &str, base: &[(String, String)], ov: Option<&Overrides>| match ov {
        None => Some(render(base)),
        Some(o) if !o.enabled(metric) => None,
        Some(o) => Some(render(&o.apply(metric, base))),
    };
    for (k, s) in m.requests.read().unwrap_or_else(|e| e.into_inner()).iter() {
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
    for (k, s) in m.tcp.read().unwrap_or_else(|e| e.into_inner()).iter() {
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

/// A label set as the text format writes it: `a="x",b="y"`, escaped.
pub fn render(labels: &[(String, String)]) -> String {
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
