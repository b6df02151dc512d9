//! The streamed exposition equals, byte for byte, the whole text the proxy
//! wrote before (kept in [`super::old`]), for a registry of many series.

use super::*;

/// 200 destination services seen from both sides: HTTP with a few codes,
/// gRPC, TCP, label values that need escaping, and series whose labels are
/// equal (metadata rebuilt by a config update) to merge.
fn registry() -> Arc<Metrics> {
    let m = Arc::new(Metrics::default());
    let source = Arc::new(PeerMeta::from_labels(
        &Labels::from([("app".to_string(), "productpage".to_string())]),
        "productpage-v1",
        "default",
        "spiffe://cluster.local/ns/default/sa/bookinfo-productpage",
    ));
    for i in 0..200u32 {
        let labels = Labels::from([
            ("app".to_string(), format!("svc-{i}")),
            ("version".to_string(), format!("v{}", i % 3)),
        ]);
        let namespace = format!("ns-{}", i % 7);
        let dest = PeerMeta::from_labels(
            &labels,
            &format!("svc-{i}-v{}", i % 3),
            &namespace,
            &format!("spiffe://cluster.local/ns/{namespace}/sa/svc-{i}"),
        );
        let host = if i == 13 {
            "odd\"host\\with\nescapes".to_string()
        } else {
            format!("svc-{i}.{namespace}.svc.cluster.local")
        };
        let service = ByPtr(Arc::new(ServiceMeta::from_host(&host)));
        let peers = |reporter, dest: &PeerMeta, security| Peers {
            reporter,
            source: ByPtr(source.clone()),
            destination: ByPtr(Arc::new(dest.clone())),
            service: service.clone(),
            security,
        };
        let client = peers(Reporter::Source, &dest, Security::Unknown);
        let sample = |n: u32| RequestSample {
            duration_ms: f64::from(n % 50) * 1.7,
            request_bytes: u64::from(n * 31),
            response_bytes: u64::from(n * 977),
            request_messages: 2,
            response_messages: 3,
        };
        for n in 0..(i % 5 + 1) {
            m.record_request(&key(&client, 200), &sample(i + n));
        }
        if i % 3 == 0 {
            m.record_request(&key(&client, 503), &sample(i));
            // The same labels under new metadata: merged when scraped.
            let rebuilt = peers(Reporter::Source, &dest, Security::Unknown);
            m.record_request(&key(&rebuilt, 503), &sample(i + 1));
        }
        if i % 5 == 0 {
            let server = peers(Reporter::Destination, &dest, Security::MutualTls);
            for status in [0, 14] {
                let k = RequestKey {
                    protocol: Protocol::Grpc,
                    grpc_status: Some(status),
                    ..key(&server, 200)
                };
                m.record_request(&k, &sample(i + u32::from(status)));
            }
        }
        if i % 4 == 0 {
            let t = m.tcp_opened(&TcpKey {
                peers: client.clone(),
                flags: Flags::default(),
            });
            t.sent.fetch_add(u64::from(i) * 100, Ordering::Relaxed);
            t.received.fetch_add(u64::from(i) * 10, Ordering::Relaxed);
            if i % 8 == 0 {
                Metrics::tcp_closed(&t);
            }
        }
    }
    m
}

fn overrides(disabled: &[&str], tags: &[(&str, &str, Option<&str>)]) -> Arc<Overrides> {
    let policy = wire::pb::MetricsPolicy {
        disabled: disabled.iter().map(|d| d.to_string()).collect(),
        tag_overrides: tags
            .iter()
            .map(|(metric, tag, value)| wire::pb::MetricTagOverride {
                metric: metric.to_string(),
                tag: tag.to_string(),
                remove: value.is_none(),
                value: value.unwrap_or_default().to_string(),
            })
            .collect(),
    };
    Arc::new(Overrides::compile(&policy).expect("valid"))
}

fn old(m: &Metrics, server: Option<&Arc<Overrides>>, client: Option<&Arc<Overrides>>) -> String {
    let mut out = String::new();
    super::old::encode_with(
        m,
        &mut out,
        server.map(Arc::as_ref),
        client.map(Arc::as_ref),
    );
    out
}

#[test]
fn streamed_in_chunks_equal_to_the_whole_text() {
    let m = registry();
    let whole = old(&m, None, None);
    let chunks: Vec<String> = m.exposition(None, None).collect();
    assert!(chunks.len() > 20, "{} chunks", chunks.len());
    assert!(
        chunks.iter().all(|c| c.len() <= 2 * exposition::CHUNK),
        "a chunk of {} bytes",
        chunks.iter().map(String::len).max().unwrap_or(0)
    );
    let streamed = chunks.concat();
    assert!(streamed == whole, "{}", first_difference(&streamed, &whole));
}

#[test]
fn streamed_with_overrides_equal_to_the_whole_text() {
    let m = registry();
    let server = overrides(
        &["request_bytes", "tcp_sent_bytes_total"],
        &[("", "source_principal", None)],
    );
    let client = overrides(
        &["response_messages_total"],
        &[
            ("requests_total", "response_code", None),
            ("requests_total", "failed", Some("response.code >= 500")),
            ("request_duration_milliseconds", "destination_version", None),
        ],
    );
    for (s, c) in [
        (Some(&server), None),
        (None, Some(&client)),
        (Some(&server), Some(&client)),
    ] {
        let streamed = exposed(&m, s, c);
        let whole = old(&m, s, c);
        assert!(streamed == whole, "{}", first_difference(&streamed, &whole));
    }
}

/// Where two long texts part, without printing megabytes.
fn first_difference(a: &str, b: &str) -> String {
    let (la, lb): (Vec<&str>, Vec<&str>) = (a.lines().collect(), b.lines().collect());
    match la.iter().zip(&lb).position(|(x, y)| x != y) {
        Some(i) => format!("line {i}:\n  streamed {}\n  whole    {}", la[i], lb[i]),
        None => format!("{} lines streamed, {} whole", la.len(), lb.len()),
    }
}
