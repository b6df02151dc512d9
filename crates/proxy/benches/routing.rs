//! Route matching with hundreds of virtual hosts and routes: the virtual
//! host lookup by authority, then the first matching route, as every
//! outbound and gateway request does them.
//!
//! `cargo bench -p proxy --bench routing`

// Test code: a panic is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use http::HeaderMap;
use proxy::snapshot::matcher::RequestView;
use proxy::snapshot::routes::RouteTable;
use wire::pb;
use wire::pb::string_match::Kind;

const ROUTES_PER_HOST: usize = 20;

fn sm(kind: Kind) -> Option<pb::StringMatch> {
    Some(pb::StringMatch { kind: Some(kind) })
}

/// A route config shaped like a big mesh's: `hosts` services, each with the
/// domains Istio lists and `ROUTES_PER_HOST` routes of every matcher kind,
/// the catch-all last.
fn table(hosts: usize) -> RouteTable {
    let virtual_hosts = (0..hosts)
        .map(|i| {
            let host = format!("svc-{i}.ns-{}.svc.cluster.local", i % 10);
            let mut routes: Vec<pb::Route> = (0..ROUTES_PER_HOST - 1)
                .map(|j| {
                    let m = match j % 4 {
                        0 => pb::RouteMatch {
                            path: sm(Kind::Prefix(format!("/api/v{j}/"))),
                            ..Default::default()
                        },
                        1 => pb::RouteMatch {
                            path: sm(Kind::Exact(format!("/exact/{j}"))),
                            ..Default::default()
                        },
                        2 => pb::RouteMatch {
                            headers: [(
                                "end-user".to_string(),
                                pb::StringMatch {
                                    kind: Some(Kind::Exact(format!("user-{j}"))),
                                },
                            )]
                            .into(),
                            ..Default::default()
                        },
                        _ => pb::RouteMatch {
                            path: sm(Kind::Regex(format!("/re/{j}/[a-z]+/[0-9]+"))),
                            ..Default::default()
                        },
                    };
                    route(format!("r{j}"), vec![m])
                })
                .collect();
            routes.push(route("default".into(), vec![]));
            pb::VirtualHost {
                name: format!("{host}:9080"),
                domains: vec![
                    host.clone(),
                    format!("{host}:9080"),
                    format!("svc-{i}"),
                    format!("svc-{i}:9080"),
                    format!("svc-{i}.ns-{}", i % 10),
                    format!("svc-{i}.ns-{}:9080", i % 10),
                ],
                routes,
            }
        })
        .collect();
    RouteTable::compile(
        &pb::RouteConfig {
            name: "9080".into(),
            virtual_hosts,
        },
        &HashMap::new(),
    )
    .expect("valid route config")
}

fn route(name: String, matches: Vec<pb::RouteMatch>) -> pb::Route {
    pb::Route {
        name,
        matches,
        action: Some(pb::route::Action::DirectResponse(pb::DirectResponse {
            status: 200,
            body: Vec::new(),
        })),
        ..Default::default()
    }
}

fn view<'a>(authority: &'a str, path: &'a str, headers: &'a HeaderMap) -> RequestView<'a> {
    RequestView {
        method: "GET",
        path,
        query: None,
        authority,
        scheme: "http",
        port: 9080,
        headers,
    }
}

fn routing(c: &mut Criterion) {
    let mut group = c.benchmark_group("route");
    let mut headers = HeaderMap::new();
    headers.insert("end-user", "nobody".parse().expect("value"));
    for hosts in [10usize, 100, 500] {
        let t = table(hosts);
        let authority = format!("svc-{}:9080", hosts / 2);
        group.bench_with_input(
            BenchmarkId::new("virtual_host", hosts),
            &authority,
            |b, a| b.iter(|| black_box(t.virtual_host(black_box(a))).is_some()),
        );
        // The worst case: every route is tried and the catch-all wins.
        group.bench_with_input(
            BenchmarkId::new("lookup_and_select_last", hosts),
            &authority,
            |b, a| {
                b.iter(|| {
                    let vh = t.virtual_host(black_box(a)).expect("virtual host");
                    vh.select(&view(a, black_box("/nothing/here"), &headers))
                        .is_some()
                })
            },
        );
        group.bench_with_input(
            BenchmarkId::new("lookup_and_select_prefix", hosts),
            &authority,
            |b, a| {
                b.iter(|| {
                    let vh = t.virtual_host(black_box(a)).expect("virtual host");
                    vh.select(&view(a, black_box("/api/v8/items"), &headers))
                        .is_some()
                })
            },
        );
    }
    group.finish();
}

criterion_group!(benches, routing);
criterion_main!(benches);
