//! One normalised path for the whole request: a gateway with a DENY
//! `/admin*` policy and routes by prefix, fed the forms that bypassed
//! authorization or routing when only authorization normalised. For each,
//! what the route chose, what authorization decided and the path the
//! application received must agree.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use wire::pb::{self, resource::Kind};

use crate::support::*;

fn deny_admin() -> pb::AuthzPolicy {
    pb::AuthzPolicy {
        name: "ns[default]-policy[deny-admin]".into(),
        action: pb::AuthzAction::Deny as i32,
        rules: vec![pb::AuthzRule {
            index: 0,
            to: vec![pb::AuthzClause {
                all: vec![pb::AuthzMatch {
                    field: pb::AuthzField::Path as i32,
                    values: vec!["/admin*".into()],
                    ..Default::default()
                }],
            }],
            ..Default::default()
        }],
        dry_run: false,
        ext_authz: None,
    }
}

fn gateway(port: u16, mode: pb::PathNormalization) -> pb::Resource {
    resource(
        &format!("gateway|{port}"),
        Kind::Listener(pb::Listener {
            name: format!("gateway|{port}"),
            port: u32::from(port),
            direction: pb::Direction::Gateway as i32,
            protocol: pb::Protocol::Http as i32,
            route_config: "http.80".into(),
            authz_http: vec![deny_admin()],
            path_normalization: mode as i32,
            ..Default::default()
        }),
    )
}

/// What came back for one raw request line.
#[derive(Debug, PartialEq)]
struct Seen {
    status: u16,
    /// Which application answered ("" for a reply of the proxy's own).
    upstream: String,
    /// The path and query that application received.
    path: String,
}

/// Sends `target` byte for byte (no client library tidies it up).
async fn raw_get(addr: SocketAddr, target: &str) -> Seen {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let req =
        format!("GET {target} HTTP/1.1\r\nhost: bookinfo.example.com\r\nconnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.expect("write");
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf))
        .await
        .expect("response in time")
        .expect("read");
    let text = String::from_utf8_lossy(&buf);
    let head = text.split("\r\n\r\n").next().unwrap_or("");
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let header = |name: &str| {
        head.split("\r\n")
            .filter_map(|l| l.split_once(':'))
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_default()
    };
    Seen {
        status,
        upstream: header("x-upstream"),
        path: header("x-seen-path"),
    }
}

fn seen(status: u16, upstream: &str, path: &str) -> Seen {
    Seen {
        status,
        upstream: upstream.into(),
        path: path.into(),
    }
}

#[tokio::test]
async fn routing_authorization_and_the_app_see_one_normalised_path() {
    let ip = test_ip();
    let hits = Arc::new(AtomicUsize::new(0));
    let behave = Behave {
        hits: hits.clone(),
        ..Default::default()
    };
    let app = upstream(ip, "app", behave.clone()).await;
    let statics = upstream(ip, "static", behave).await;
    let (base, strict, none) = (free_port(ip), free_port(ip), free_port(ip));
    let mut resources = cluster("app", &[(app, "v1")]);
    resources.extend(cluster("static", &[(statics, "v1")]));
    resources.push(gateway(base, pb::PathNormalization::Default));
    resources.push(gateway(
        strict,
        pb::PathNormalization::DecodeAndMergeSlashes,
    ));
    resources.push(gateway(none, pb::PathNormalization::None));
    resources.push(route_config(
        "http.80",
        &["bookinfo.example.com"],
        vec![
            route(
                "static",
                vec![prefix("/static/")],
                fwd(forward(&[("static", 100)])),
            ),
            route("app", vec![prefix("/")], fwd(forward(&[("app", 100)]))),
        ],
    ));
    let mut config = Proxy::config(ip);
    config.node.kind = pb::ProxyKind::Gateway as i32;
    let proxy = Proxy::start_with(config, resources).await;

    // Istio's default, BASE.
    let base = SocketAddr::new(ip, base);
    #[rustfmt::skip]
    let table = [
        ("/admin/../productpage", seen(200, "app", "/productpage")),
        ("/static/../foo", seen(200, "app", "/foo")),
        ("/foo/../static/x", seen(200, "static", "/static/x")),
        ("/static/./x", seen(200, "static", "/static/x")),
        ("/admin", seen(403, "", "")),
        ("/productpage/../admin/users", seen(403, "", "")),
        ("/%2e%2e/admin", seen(403, "", "")),
        ("/public/%2E%2E/admin", seen(403, "", "")),
        ("/%61dmin", seen(403, "", "")),
        ("/../../admin", seen(403, "", "")),
        ("/public/..%2Fadmin", seen(200, "app", "/public/..%2Fadmin")),
        ("/admin%2Fx", seen(403, "", "")),
        ("//admin", seen(200, "app", "//admin")),
        ("/a;x/../static/y", seen(200, "static", "/static/y")),
        ("/admin;x", seen(403, "", "")),
        ("/p%3a%3A%7e", seen(200, "app", "/p%3a%3A~")),
        ("/p/../q?next=/../admin&x=%2e%2e", seen(200, "app", "/q?next=/../admin&x=%2e%2e")),
        ("/a%00b", seen(400, "", "")),
        ("/a%zz", seen(200, "app", "/a%zz")),
    ];
    for (target, want) in &table {
        assert_eq!(&raw_get(base, target).await, want, "BASE {target}");
    }
    let refused = table.iter().filter(|(_, w)| w.status != 200).count();
    assert_eq!(
        hits.load(Ordering::SeqCst),
        table.len() - refused,
        "a refused request reached an application"
    );

    // DECODE_AND_MERGE_SLASHES closes the escaped-slash and double-slash forms.
    let strict = SocketAddr::new(ip, strict);
    for (target, want) in [
        ("//admin", seen(403, "", "")),
        ("/public/..%2Fadmin", seen(403, "", "")),
        ("/public/..%5cadmin", seen(403, "", "")),
        ("/static//z/../w", seen(200, "static", "/static/w")),
        ("/x//y/../static", seen(200, "app", "/x/static")),
        ("/a%2fb?q=%2f", seen(200, "app", "/a/b?q=%2f")),
    ] {
        assert_eq!(
            raw_get(strict, target).await,
            want,
            "DECODE_AND_MERGE_SLASHES {target}"
        );
    }

    // NONE: what authorization checks and the app gets is what was sent.
    let none = SocketAddr::new(ip, none);
    for (target, want) in [
        ("/static/../foo", seen(200, "static", "/static/../foo")),
        ("/public/../admin", seen(200, "app", "/public/../admin")),
        ("/admin/x", seen(403, "", "")),
        ("/a%00b", seen(400, "", "")),
    ] {
        assert_eq!(raw_get(none, target).await, want, "NONE {target}");
    }
    proxy.stop().await;
}
