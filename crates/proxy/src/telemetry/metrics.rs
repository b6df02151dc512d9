//! Istio's standard metrics, in the Prometheus/OpenMetrics text format.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, RwLock};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use super::Flags;

/// Istio's default buckets for `istio_request_duration_milliseconds`.
const DURATION_BUCKETS: [f64; 19] = [
    0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0,
    60000.0, 300000.0, 1800000.0, 3600000.0, 7200000.0,
];

/// Istio's standard labels. Strings are shared `Arc<str>`: building a label
/// set per request copies pointers only.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Labels {
    pub reporter: &'static str,
    pub source_workload: Arc<str>,
    pub source_workload_namespace: Arc<str>,
    pub source_principal: Arc<str>,
    pub source_app: Arc<str>,
    pub source_version: Arc<str>,
    pub destination_workload: Arc<str>,
    pub destination_workload_namespace: Arc<str>,
    pub destination_principal: Arc<str>,
    pub destination_app: Arc<str>,
    pub destination_version: Arc<str>,
    pub destination_service: Arc<str>,
    pub destination_service_name: Arc<str>,
    pub destination_service_namespace: Arc<str>,
    pub request_protocol: &'static str,
    pub response_code: u16,
    pub response_flags: Flags,
    pub connection_security_policy: &'static str,
}

/// One label set's two metrics, found with one lookup per request.
#[derive(Debug)]
struct Series {
    requests: Counter,
    duration: Histogram,
}

/// Every label set seen. A request finds its series with one lookup in a
/// map with a fast hasher: prometheus-client's `Family` would take two
/// (one per metric), each hashing the 18 labels with SipHash.
#[derive(Debug, Default)]
struct AllSeries(RwLock<HashMap<Labels, Series, foldhash::fast::RandomState>>);

impl Collector for AllSeries {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        type Metric = fn(&Series) -> &dyn EncodeMetric;
        let families: [(&str, &str, MetricType, Metric); 2] = [
            (
                "istio_requests",
                "Requests handled by the proxy",
                MetricType::Counter,
                |s| &s.requests,
            ),
            (
                "istio_request_duration_milliseconds",
                "Request duration",
                MetricType::Histogram,
                |s| &s.duration,
            ),
        ];
        let all = self.0.read().unwrap_or_else(|e| e.into_inner());
        for (name, help, kind, metric) in families {
            let mut family = encoder.encode_descriptor(name, help, None, kind)?;
            for (labels, series) in all.iter() {
                metric(series).encode(family.encode_family(labels)?)?;
            }
        }
        Ok(())
    }
}

pub struct Metrics {
    registry: Registry,
    series: Arc<AllSeries>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let series = Arc::new(AllSeries::default());
        registry.register_collector(Box::new(series.clone()));
        crate::policy::jwt::register_metrics(&mut registry);
        Metrics { registry, series }
    }
}

impl Metrics {
    pub fn record(&self, labels: &Labels, duration_ms: f64) {
        let observe = |s: &Series| {
            s.requests.inc();
            s.duration.observe(duration_ms);
        };
        {
            let all = self.series.0.read().unwrap_or_else(|e| e.into_inner());
            if let Some(s) = all.get(labels) {
                return observe(s);
            }
        }
        let mut all = self.series.0.write().unwrap_or_else(|e| e.into_inner());
        observe(all.entry(labels.clone()).or_insert_with(|| Series {
            requests: Counter::default(),
            duration: Histogram::new(DURATION_BUCKETS),
        }));
    }

    /// The text exposition for `/stats/prometheus`.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(code: u16) -> Labels {
        let s: Arc<str> = "x".into();
        Labels {
            reporter: "source",
            source_workload: s.clone(),
            source_workload_namespace: s.clone(),
            source_principal: s.clone(),
            source_app: s.clone(),
            source_version: s.clone(),
            destination_workload: s.clone(),
            destination_workload_namespace: s.clone(),
            destination_principal: s.clone(),
            destination_app: s.clone(),
            destination_version: s.clone(),
            destination_service: s.clone(),
            destination_service_name: s.clone(),
            destination_service_namespace: s,
            request_protocol: "http",
            response_code: code,
            response_flags: Flags::default(),
            connection_security_policy: "unknown",
        }
    }

    #[test]
    fn both_metrics_per_label_set_in_prometheus_text() {
        let m = Metrics::default();
        m.record(&labels(200), 0.7);
        m.record(&labels(200), 7.0);
        m.record(&labels(503), 30.0);
        let text = m.encode();
        let line = |prefix: &str, code: u16| {
            text.lines()
                .find(|l| l.starts_with(prefix) && l.contains(&format!("response_code=\"{code}\"")))
                .unwrap_or_else(|| panic!("no {prefix} for {code} in\n{text}"))
                .rsplit(' ')
                .next()
                .map(str::to_string)
        };
        assert!(text.contains("# TYPE istio_requests counter"), "{text}");
        assert!(text.contains("# TYPE istio_request_duration_milliseconds histogram"));
        assert_eq!(line("istio_requests_total{", 200).as_deref(), Some("2"));
        assert_eq!(line("istio_requests_total{", 503).as_deref(), Some("1"));
        assert_eq!(
            line("istio_request_duration_milliseconds_count{", 200).as_deref(),
            Some("2")
        );
        assert_eq!(
            line("istio_request_duration_milliseconds_sum{", 503).as_deref(),
            Some("30.0")
        );
        // 0.7 ms falls in the 1 ms bucket, 7 ms in the 10 ms one.
        let bucket = |le: &str| {
            text.lines()
                .find(|l| {
                    l.starts_with("istio_request_duration_milliseconds_bucket{")
                        && l.contains("response_code=\"200\"")
                        && l.contains(&format!("le=\"{le}\""))
                })
                .and_then(|l| l.rsplit(' ').next())
                .map(str::to_string)
        };
        assert_eq!(bucket("0.5").as_deref(), Some("0"));
        assert_eq!(bucket("1.0").as_deref(), Some("1"));
        assert_eq!(bucket("10.0").as_deref(), Some("2"));
    }
}
