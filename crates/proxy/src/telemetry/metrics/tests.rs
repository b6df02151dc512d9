//! The standard metrics' names, labels and values, and their exposition
//! written in chunks equal to the whole text the proxy wrote before.

use super::*;
use std::collections::BTreeMap as Labels;

mod golden;
mod old;

/// The exposition, whole.
fn exposed(
    m: &Arc<Metrics>,
    server: Option<&Arc<Overrides>>,
    client: Option<&Arc<Overrides>>,
) -> String {
    m.exposition(server.cloned(), client.cloned()).collect()
}

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
    let m = Arc::new(Metrics::default());
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
    let text = exposed(&m, None, None);
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
    let m = Arc::new(Metrics::default());
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
    let text = exposed(&m, None, None);
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
    let m = Arc::new(Metrics::default());
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
    let o = Arc::new(o);
    // The overrides are the client side's: this series' reporter.
    let text = exposed(&m, None, Some(&o));
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
    assert!(text.contains("istio_response_bytes_count{") && text.contains("response_code=\"503\""));
    // The server side's overrides do not touch the source reporter.
    let text = exposed(&m, Some(&o), None);
    assert!(text.contains("istio_request_bytes"));
}
