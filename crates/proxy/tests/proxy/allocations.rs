//! The routing decision allocates nothing per request (nor does recording
//! its metrics): virtual host lookup,
//! route matching (regexes included, once warm) and endpoint choice, with
//! round robin, least request, consistent hashing and outlier detection.
//!
//! A counting allocator wraps the system one for this test binary; it counts
//! per thread, so tests running beside this one do not disturb it.

use std::collections::HashMap;

use http::HeaderMap;
use proxy::lb::locality::Local;
use proxy::lb::{BuildEnv, Cluster};
use proxy::limits::Limits;
use proxy::snapshot::matcher::RequestView;
use proxy::snapshot::routes::RouteTable;
use sys::CountingAlloc;
use wire::pb::{self, string_match::Kind};

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

fn allocations_in(f: impl FnOnce()) -> u64 {
    CountingAlloc::allocations_in(f)
}

fn sm(kind: Kind) -> Option<pb::StringMatch> {
    Some(pb::StringMatch { kind: Some(kind) })
}

fn table() -> RouteTable {
    let routes: Vec<pb::Route> = vec![
        pb::RouteMatch {
            path: sm(Kind::Regex("/re/[a-z]+/[0-9]+".into())),
            ..Default::default()
        },
        pb::RouteMatch {
            headers: [(
                "end-user".to_string(),
                pb::StringMatch {
                    kind: Some(Kind::Exact("jason".into())),
                },
            )]
            .into(),
            ..Default::default()
        },
        pb::RouteMatch {
            query_params: [(
                "v".to_string(),
                pb::StringMatch {
                    kind: Some(Kind::Prefix("2".into())),
                },
            )]
            .into(),
            ..Default::default()
        },
        pb::RouteMatch::default(),
    ]
    .into_iter()
    .enumerate()
    .map(|(i, m)| pb::Route {
        name: format!("r{i}"),
        matches: vec![m],
        action: Some(pb::route::Action::DirectResponse(pb::DirectResponse {
            status: 200,
            body: Vec::new(),
        })),
        ..Default::default()
    })
    .collect();
    let virtual_hosts = (0..50)
        .map(|i| pb::VirtualHost {
            name: format!("svc-{i}"),
            domains: vec![
                format!("svc-{i}"),
                format!("svc-{i}:9080"),
                format!("*.svc-{i}.example"),
            ],
            routes: if i == 7 { routes.clone() } else { Vec::new() },
        })
        .collect();
    RouteTable::compile(
        &pb::RouteConfig {
            name: "9080".into(),
            virtual_hosts,
        },
        &HashMap::new(),
    )
    .expect("valid")
}

fn cluster(spec: pb::Cluster) -> Cluster {
    let eps = pb::ClusterEndpoints {
        cluster: spec.name.clone(),
        compact: None,
        endpoints: (1..=4)
            .map(|i| pb::Endpoint {
                address: format!("127.0.0.{i}"),
                port: 80,
                healthy: true,
                ..Default::default()
            })
            .collect(),
    };
    let limits = Limits::default();
    let local = Local::default();
    Cluster::build(
        &spec,
        Some(&eps),
        None,
        &BuildEnv {
            limits: &limits,
            local: &local,
            mesh_tls: None,
            pod_ip: None,
        },
    )
    .expect("valid")
}

#[test]
fn route_matching_allocates_nothing() {
    let t = table();
    let mut h = HeaderMap::new();
    h.insert("end-user", "jason".parse().expect("value"));
    let cases = [
        ("svc-7:9080", "/re/abc/42", None, "r0"),
        ("svc-7", "/x", None, "r1"),
        ("a.svc-7.example", "/x", Some("v=21"), "r1"),
    ];
    let empty = HeaderMap::new();
    let run = || {
        for (authority, path, query, _) in cases {
            for headers in [&h, &empty] {
                let vh = t.virtual_host(authority).expect("virtual host");
                let view = RequestView {
                    method: "GET",
                    path,
                    query,
                    authority,
                    scheme: "http",
                    port: 9080,
                    headers,
                };
                assert!(vh.select(&view).is_some());
            }
        }
    };
    run(); // Warm the regex caches.
    assert_eq!(allocations_in(|| (0..100).for_each(|_| run())), 0);
    // And it matched what it should.
    let vh = t.virtual_host("svc-7").expect("virtual host");
    for (authority, path, query, want) in cases {
        let view = RequestView {
            method: "GET",
            path,
            query,
            authority,
            scheme: "http",
            port: 9080,
            headers: &h,
        };
        let got = vh.select(&view).map(|(r, _)| r.name.to_string());
        assert_eq!(got.as_deref(), Some(want), "{path}");
    }
}

#[test]
fn endpoint_choice_allocates_nothing() {
    let specs = [
        pb::Cluster {
            name: "rr".into(),
            lb: pb::LoadBalancer::RoundRobin as i32,
            ..Default::default()
        },
        pb::Cluster {
            name: "least".into(),
            outlier_detection: Some(pb::OutlierDetection::default()),
            ..Default::default()
        },
        pb::Cluster {
            name: "hash".into(),
            consistent_hash: Some(pb::ConsistentHash {
                key: Some(pb::consistent_hash::Key::Header("x-user".into())),
                algorithm: pb::HashAlgorithm::Maglev as i32,
                table_size: 0,
            }),
            ..Default::default()
        },
    ];
    for spec in specs {
        let name = spec.name.clone();
        let c = cluster(spec);
        let first = c.pick(Some(7), None).expect("endpoint");
        let n = allocations_in(|| {
            for i in 0..1000u64 {
                let e = c.pick(Some(i), Some(&first)).expect("endpoint");
                drop(e.start());
            }
        });
        assert_eq!(n, 0, "{name}");
    }
}

/// Recording a request's standard metrics allocates nothing once its series
/// exists: the key is pointers to shared metadata and a few numbers, the
/// series atomics.
#[test]
fn recording_metrics_allocates_nothing() {
    use std::sync::Arc;

    use proxy::telemetry::meta::PeerMeta;
    use proxy::telemetry::metrics::{Metrics, RequestSample};

    let metrics = Metrics::default();
    let peer = Arc::new(PeerMeta::unknown());
    let key = super::scrape::client_key(peer.clone(), peer, "reviews.default.svc.cluster.local");
    let sample = RequestSample {
        duration_ms: 3.0,
        request_bytes: 10,
        response_bytes: 700,
        ..Default::default()
    };
    metrics.record_request(&key, &sample);
    let n = allocations_in(|| {
        for _ in 0..100 {
            metrics.record_request(&key, &sample);
        }
    });
    assert_eq!(n, 0);
}

/// Tracing costs an unsampled request no allocation: reading its context,
/// the sampling roll, and (for a root) the static `x-b3-sampled: 0` header
/// (into a header map with room, as a parsed request's has).
#[test]
fn unsampled_requests_allocate_nothing_for_tracing() {
    use proxy::telemetry::trace::{self, Policy, SpanKind};
    use std::sync::Arc;
    let policy = Arc::new(
        Policy::compile(&pb::TracingPolicy {
            sampling_percent: 1.0,
            ..Default::default()
        })
        .expect("valid"),
    );
    let request = |headers: &[(&'static str, &'static str)]| {
        let mut req = http::Request::builder()
            .uri("/productpage")
            .body(())
            .expect("request");
        req.headers_mut().reserve(16);
        for (k, v) in headers {
            req.headers_mut()
                .insert(*k, http::HeaderValue::from_static(v));
        }
        req
    };
    // Warm the thread's random generator.
    let _ = trace::start(&policy, SpanKind::Client, &mut request(&[]), "a");
    for headers in [
        &[(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
        )][..],
        &[("x-b3-sampled", "0")][..],
        &[("b3", "0")][..],
    ] {
        let mut req = request(headers);
        let n = allocations_in(|| {
            assert!(trace::start(&policy, SpanKind::Server, &mut req, "a").is_none());
        });
        assert_eq!(n, 0, "{headers:?}");
    }
    // Roots: 1 % are sampled; the others allocate nothing.
    let mut unsampled = 0;
    for _ in 0..200 {
        let mut req = request(&[]);
        let mut span = None;
        let n = allocations_in(|| span = trace::start(&policy, SpanKind::Client, &mut req, "a"));
        if span.is_none() {
            assert_eq!(n, 0);
            assert_eq!(req.headers()["x-b3-sampled"], "0");
            unsampled += 1;
        }
    }
    assert!(unsampled > 150, "{unsampled} of 200 unsampled at 1 %");
}
