//! A scrape of the proxy's metrics holds a small part of its text at a time:
//! an on-demand proxy with 200 destinations writes megabytes of Istio's
//! standard series, which it streams in chunks instead of building whole.
//!
//! The counting allocator of this test binary ([`super::allocations`])
//! counts per thread; the exposition runs on the test's.

use std::collections::BTreeMap;
use std::sync::Arc;

use proxy::telemetry::Reporter;
use proxy::telemetry::meta::{PeerMeta, ServiceMeta};
use proxy::telemetry::metrics::{
    ByPtr, Metrics, Peers, Protocol, RequestKey, RequestSample, Security,
};
use sys::CountingAlloc;

/// A client that called each of `services` once, with Istio's labels.
fn registry(services: usize) -> Arc<Metrics> {
    let m = Arc::new(Metrics::default());
    let source = Arc::new(PeerMeta::from_labels(
        &BTreeMap::from([("app".to_string(), "load".to_string())]),
        "load-v1",
        "bench",
        "spiffe://cluster.local/ns/bench/sa/load",
    ));
    for i in 0..services {
        let name = format!("svc-{i}");
        let dest = PeerMeta::from_labels(
            &BTreeMap::from([
                ("app".to_string(), name.clone()),
                ("version".to_string(), "v1".to_string()),
            ]),
            &format!("{name}-v1"),
            "bench",
            &format!("spiffe://cluster.local/ns/bench/sa/{name}"),
        );
        let key = client_key(
            source.clone(),
            Arc::new(dest),
            &format!("{name}.bench.svc.cluster.local"),
        );
        let sample = RequestSample {
            duration_ms: 3.0,
            response_bytes: 512,
            ..Default::default()
        };
        m.record_request(&key, &sample);
    }
    m
}

/// A client's HTTP series: `source` called `host` on `destination`, 200.
pub fn client_key(source: Arc<PeerMeta>, destination: Arc<PeerMeta>, host: &str) -> RequestKey {
    RequestKey {
        peers: Peers {
            reporter: Reporter::Source,
            source: ByPtr(source),
            destination: ByPtr(destination),
            service: ByPtr(Arc::new(ServiceMeta::from_host(host))),
            security: Security::Unknown,
        },
        protocol: Protocol::Http,
        response_code: 200,
        grpc_status: None,
        flags: Default::default(),
    }
}

#[test]
fn a_scrape_of_200_destinations_holds_a_small_part_of_its_text() {
    let m = registry(200);
    let mut size = 0;
    let peak = CountingAlloc::peak_in(|| {
        for chunk in m.exposition(None, None) {
            size += chunk.len();
        }
    });
    assert!(size > 5_000_000, "the text is {size} bytes");
    // One chunk (of about 32 KiB) and one family's label sets at a time.
    assert!(
        peak.largest <= 128 * 1024,
        "largest allocation {} bytes of a {size}-byte text",
        peak.largest
    );
    assert!(
        peak.bytes <= size / 20,
        "held {} bytes at once of a {size}-byte text",
        peak.bytes
    );
}
