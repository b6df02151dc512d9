//! CORS: preflights answered by the proxy, responses to allowed origins
//! decorated, everything else untouched.

use std::sync::atomic::Ordering;

use http::StatusCode;
use wire::pb::{self, string_match};

use crate::support::*;

#[tokio::test]
async fn cors_preflight_is_answered_and_responses_are_decorated() {
    let ip = test_ip();
    let behave = Behave::default();
    let up = upstream(ip, "v1", behave.clone()).await;
    let mut resources = cluster("v1", &[(up, "v1")]);
    let mut r = route("cors", vec![], fwd(forward(&[("v1", 100)])));
    r.cors = Some(pb::CorsPolicy {
        allow_origins: vec![pb::StringMatch {
            kind: Some(string_match::Kind::Regex(
                r"https://.*\.example\.com".into(),
            )),
        }],
        allow_methods: vec!["GET".into(), "PUT".into()],
        allow_headers: vec!["x-token".into()],
        expose_headers: vec!["x-upstream".into()],
        max_age_s: Some(3600),
        allow_credentials: true,
        ignore_unmatched_preflights: false,
    });
    resources.push(route_config("9080", &["reviews:9080"], vec![r]));
    let proxy = Proxy::start(ip, resources).await;

    let mut c = Client::connect(proxy.outbound).await.expect("connect");
    let preflight = |origin: &'static str| {
        http::Request::options("/items")
            .header("host", "reviews:9080")
            .header("origin", origin)
            .header("access-control-request-method", "PUT")
            .body(http_body_util::Full::default())
            .expect("request")
    };
    let r = c
        .send(preflight("https://app.example.com"))
        .await
        .expect("response");
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        r.header("access-control-allow-origin"),
        "https://app.example.com"
    );
    assert_eq!(r.header("access-control-allow-methods"), "GET,PUT");
    assert_eq!(r.header("access-control-allow-headers"), "x-token");
    assert_eq!(r.header("access-control-max-age"), "3600");
    assert_eq!(r.header("access-control-allow-credentials"), "true");
    assert_eq!(
        behave.hits.load(Ordering::SeqCst),
        0,
        "the proxy answered it"
    );

    let r = c
        .get(
            "reviews:9080",
            "/items",
            &[("origin", "https://app.example.com")],
        )
        .await;
    assert_eq!((r.status, r.body.as_str()), (StatusCode::OK, "v1"));
    assert_eq!(
        r.header("access-control-allow-origin"),
        "https://app.example.com"
    );
    assert_eq!(r.header("access-control-expose-headers"), "x-upstream");

    // An origin not allowed: no CORS headers, and its preflight goes upstream
    // (Istio's default unmatchedPreflights: FORWARD).
    let r = c
        .get("reviews:9080", "/items", &[("origin", "https://evil.test")])
        .await;
    assert_eq!(r.header("access-control-allow-origin"), "");
    let r = c
        .send(preflight("https://evil.test"))
        .await
        .expect("response");
    assert_eq!(r.header("access-control-allow-origin"), "");
    assert_eq!(r.header("x-upstream"), "v1", "forwarded");
    proxy.stop().await;
}
