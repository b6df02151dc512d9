use std::time::Duration;

use super::*;

/// Istio's label set for a request from `src` to `dst` (workload names,
/// `app-version`), as a proxy writes it.
fn labels(reporter: &str, src: &str, dst: &str, service: &str, code: u16, flags: &str) -> String {
    let peer = |side: &str, w: &str| {
        if w == "unknown" {
            return format!(
                "{side}_workload=\"unknown\",{side}_workload_namespace=\"unknown\",{side}_app=\"unknown\",{side}_version=\"unknown\",{side}_canonical_service=\"unknown\",{side}_canonical_revision=\"latest\""
            );
        }
        let (app, version) = w.rsplit_once('-').unwrap_or((w, "v1"));
        format!(
            "{side}_workload=\"{w}\",{side}_workload_namespace=\"default\",{side}_principal=\"spiffe://cluster.local/ns/default/sa/{app}\",{side}_app=\"{app}\",{side}_version=\"{version}\",{side}_canonical_service=\"{app}\",{side}_canonical_revision=\"{version}\",{side}_cluster=\"Kubernetes\""
        )
    };
    let security = if reporter == "destination" {
        "mutual_tls"
    } else {
        "unknown"
    };
    format!(
        "reporter=\"{reporter}\",{},{},destination_service=\"{service}.default.svc.cluster.local\",destination_service_name=\"{service}\",destination_service_namespace=\"default\",request_protocol=\"http\",response_code=\"{code}\",grpc_response_status=\"\",response_flags=\"{flags}\",connection_security_policy=\"{security}\"",
        peer("source", src),
        peer("destination", dst)
    )
}

/// A series of `count` requests, `fast` of them under 5 ms and the rest
/// under 100 ms.
fn series(labels: &str, count: u64, fast: u64) -> String {
    let mut out = format!("istio_requests_total{{{labels}}} {count}\n");
    for (le, n) in [
        ("1", 0),
        ("5", fast),
        ("10", fast),
        ("100", count),
        ("1000", count),
        ("+Inf", count),
    ] {
        out.push_str(&format!(
            "istio_request_duration_milliseconds_bucket{{{labels},le=\"{le}\"}} {n}\n"
        ));
    }
    out
}

fn scrape(text: &str, at: Instant) -> Scrape {
    let (scrape, dropped) = Scrape::read(text, at, 1000);
    assert_eq!(dropped, 0);
    scrape
}

fn edge<'a>(g: &'a Graph, source: &str, target: &str) -> &'a Edge {
    g.edges
        .iter()
        .find(|e| e.source == source && e.target == target)
        .unwrap_or_else(|| panic!("no edge {source} -> {target} in {:#?}", g.edges))
}

const REVIEWS: &str = "service:reviews.default.svc.cluster.local";
const RATINGS: &str = "service:ratings.default.svc.cluster.local";

#[test]
fn rates_errors_and_p99_come_from_the_increase_between_two_scrapes() {
    let t0 = Instant::now();
    let t1 = t0 + Duration::from_secs(2);
    let ok = labels(
        "destination",
        "productpage-v1",
        "reviews-v2",
        "reviews",
        200,
        "-",
    );
    let failed = labels(
        "destination",
        "productpage-v1",
        "reviews-v2",
        "reviews",
        503,
        "-",
    );
    // 100 requests before; 20 more OK (10 fast) and 4 failed (all slow) in 2 s.
    let before = series(&ok, 100, 50) + &series(&failed, 0, 0);
    let after = series(&ok, 120, 60) + &series(&failed, 4, 0);
    let (older, newer) = (scrape(&before, t0), scrape(&after, t1));
    let g = build([Window {
        older: Some(&older),
        newer: &newer,
    }]);
    assert_eq!(g.window_seconds, 2.0);
    let e = edge(&g, "workload:default/productpage-v1", REVIEWS);
    assert_eq!(e.rps, 12.0);
    assert!((e.error_ratio - 4.0 / 24.0).abs() < 1e-9, "{e:?}");
    assert_eq!(e.codes["200"], 10.0);
    assert_eq!(e.codes["503"], 2.0);
    assert_eq!(e.total, 124.0);
    assert_eq!(e.mtls, Mtls::MutualTls);
    assert_eq!(e.protocol, "http");
    // 24 requests: 10 in (1, 5], 14 in (10, 100]; rank 23.76 lies in the
    // latter, (23.76 - 10) / 14 of the way from 10 to 100.
    let p99 = e.p99_ms.unwrap();
    let expected = 10.0 + 90.0 * (23.76 - 10.0) / 14.0;
    assert!((p99 - expected).abs() < 1e-9, "{p99} vs {expected}");
    // The version behind the service gets the same requests.
    let v2 = edge(&g, REVIEWS, "workload:default/reviews-v2");
    assert_eq!(v2.rps, 12.0);
    let node = g
        .nodes
        .iter()
        .find(|n| n.id == "workload:default/reviews-v2")
        .unwrap();
    assert_eq!(
        (node.app.as_str(), node.version.as_str()),
        ("reviews", "v2")
    );
    let service = g.nodes.iter().find(|n| n.id == REVIEWS).unwrap();
    assert_eq!(
        (service.kind, service.name.as_str()),
        (NodeKind::Service, "reviews")
    );
}

#[test]
fn one_scrape_shows_the_edges_without_rates_and_a_restart_counts_from_zero() {
    let t0 = Instant::now();
    let ok = labels(
        "destination",
        "productpage-v1",
        "details-v1",
        "details",
        200,
        "-",
    );
    let first = scrape(&series(&ok, 50, 50), t0);
    let g = build([Window {
        older: None,
        newer: &first,
    }]);
    let e = edge(
        &g,
        "workload:default/productpage-v1",
        "service:details.default.svc.cluster.local",
    );
    assert_eq!((e.rps, e.total, e.p99_ms), (0.0, 50.0, None));
    assert_eq!(g.window_seconds, 0.0);
    // The proxy restarted: 6 requests since, in 3 s.
    let restarted = scrape(&series(&ok, 6, 6), t0 + Duration::from_secs(3));
    let g = build([Window {
        older: Some(&first),
        newer: &restarted,
    }]);
    let e = edge(
        &g,
        "workload:default/productpage-v1",
        "service:details.default.svc.cluster.local",
    );
    assert_eq!(e.rps, 2.0);
    assert!(e.p99_ms.unwrap() <= 5.0);
}

#[test]
fn requests_are_counted_once_and_faults_the_source_injected_are_errors() {
    let t0 = Instant::now();
    let t1 = t0 + Duration::from_secs(1);
    // reviews-v2 calls ratings: both sidecars report the 10 OK requests; 5
    // more were aborted by reviews' sidecar (a VirtualService fault), which
    // only the source reports, with no destination workload.
    let src_ok = labels("source", "reviews-v2", "ratings-v1", "ratings", 200, "-");
    let dst_ok = labels(
        "destination",
        "reviews-v2",
        "ratings-v1",
        "ratings",
        200,
        "-",
    );
    let aborted = labels("source", "reviews-v2", "unknown", "ratings", 500, "FI");
    let reviews_proxy = (
        scrape(&(series(&src_ok, 0, 0) + &series(&aborted, 0, 0)), t0),
        scrape(&(series(&src_ok, 10, 10) + &series(&aborted, 5, 5)), t1),
    );
    let ratings_proxy = (
        scrape(&series(&dst_ok, 0, 0), t0),
        scrape(&series(&dst_ok, 10, 10), t1),
    );
    // productpage calls an unmeshed service: only its own report exists.
    let external = labels("source", "productpage-v1", "unknown", "legacy", 200, "-");
    let productpage_proxy = (
        scrape(&series(&external, 0, 0), t0),
        scrape(&series(&external, 3, 3), t1),
    );
    let g = build(
        [&reviews_proxy, &ratings_proxy, &productpage_proxy].map(|(o, n)| Window {
            older: Some(o),
            newer: n,
        }),
    );
    let e = edge(&g, "workload:default/reviews-v2", RATINGS);
    assert_eq!(e.rps, 15.0, "{e:?}");
    assert!((e.error_ratio - 5.0 / 15.0).abs() < 1e-9);
    assert_eq!(e.codes["500"], 5.0);
    // The aborted requests never reached ratings-v1.
    let v1 = edge(&g, RATINGS, "workload:default/ratings-v1");
    assert_eq!((v1.rps, v1.error_ratio), (10.0, 0.0));
    let legacy = edge(
        &g,
        "workload:default/productpage-v1",
        "service:legacy.default.svc.cluster.local",
    );
    assert_eq!((legacy.rps, legacy.mtls), (3.0, Mtls::Unknown));
    assert!(
        !g.nodes.iter().any(|n| n.kind == NodeKind::Unknown),
        "an unknown destination is no node: {:?}",
        g.nodes
    );
}

#[test]
fn plaintext_and_mixed_hops_are_told_apart() {
    let t0 = Instant::now();
    let mtls = labels(
        "destination",
        "productpage-v1",
        "details-v1",
        "details",
        200,
        "-",
    );
    let plain = mtls.replace("mutual_tls", "none");
    let both = scrape(&(series(&mtls, 5, 5) + &series(&plain, 5, 5)), t0);
    let only_plain = scrape(&series(&plain, 5, 5), t0);
    for (s, expected) in [(&both, Mtls::Partial), (&only_plain, Mtls::None)] {
        let g = build([Window {
            older: None,
            newer: s,
        }]);
        let e = edge(
            &g,
            "workload:default/productpage-v1",
            "service:details.default.svc.cluster.local",
        );
        assert_eq!(e.mtls, expected);
    }
}

#[test]
fn the_quantile_is_promqls() {
    let b = [(1.0, 0.0), (5.0, 10.0), (10.0, 10.0), (f64::INFINITY, 20.0)];
    // Half the observations are above the last finite bound.
    assert_eq!(quantile(0.99, &b), Some(10.0));
    assert_eq!(quantile(0.25, &b), Some(1.0 + 4.0 * 5.0 / 10.0));
    assert_eq!(quantile(0.5, &b), Some(5.0));
    assert_eq!(quantile(0.99, &[(1.0, 0.0), (f64::INFINITY, 0.0)]), None);
    assert_eq!(quantile(0.99, &[]), None);
}

#[test]
fn series_beyond_the_bound_are_dropped() {
    let a = labels("destination", "a-v1", "b-v1", "b", 200, "-");
    let b = labels("destination", "a-v1", "b-v1", "b", 500, "-");
    let text = series(&a, 1, 1) + &series(&b, 1, 1);
    let (s, dropped) = Scrape::read(&text, Instant::now(), 1);
    assert_eq!(s.series.len(), 1);
    // The second series' count and its six buckets.
    assert_eq!(dropped, 7);
}

#[test]
fn callers_the_destination_could_not_identify_are_counted_from_their_own_reports() {
    let t0 = Instant::now();
    let t1 = t0 + Duration::from_secs(1);
    // reviews-v2 and reviews-v3 share a service account: ratings' sidecar
    // reports their 10 + 5 requests (over mTLS) from `unknown`.
    let v2 = labels("source", "reviews-v2", "ratings-v1", "ratings", 200, "-");
    let v3 = labels("source", "reviews-v3", "ratings-v1", "ratings", 200, "-");
    let unidentified = labels("destination", "unknown", "ratings-v1", "ratings", 200, "-");
    let callers = (
        scrape(&(series(&v2, 0, 0) + &series(&v3, 0, 0)), t0),
        scrape(&(series(&v2, 10, 10) + &series(&v3, 5, 5)), t1),
    );
    let ratings = (
        scrape(&series(&unidentified, 0, 0), t0),
        scrape(&series(&unidentified, 15, 15), t1),
    );
    let g = build([&callers, &ratings].map(|(o, n)| Window {
        older: Some(o),
        newer: n,
    }));
    let e2 = edge(&g, "workload:default/reviews-v2", RATINGS);
    let e3 = edge(&g, "workload:default/reviews-v3", RATINGS);
    assert_eq!((e2.rps, e3.rps), (10.0, 5.0));
    // What ratings saw of them: mTLS.
    assert_eq!((e2.mtls, e3.mtls), (Mtls::MutualTls, Mtls::MutualTls));
    assert!(
        !g.edges.iter().any(|e| e.source == "unknown"),
        "{:#?}",
        g.edges
    );
    assert_eq!(edge(&g, RATINGS, "workload:default/ratings-v1").rps, 15.0);
}
