//! Authorization through a running proxy: compiled AuthorizationPolicies on
//! inbound HTTP (403 `RBAC: access denied`, as Envoy) and TCP (the
//! connection is closed before the application sees it), and a policy that
//! changes with the config.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use http::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use wire::pb::{self, resource::Kind};
use wire::snapshot::{ProxySnapshot, TypeSnapshot};

use crate::support::*;

fn m(field: pb::AuthzField, values: &[&str]) -> pb::AuthzMatch {
    pb::AuthzMatch {
        field: field as i32,
        values: values.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

fn policy(name: &str, action: pb::AuthzAction, rules: Vec<pb::AuthzRule>) -> pb::AuthzPolicy {
    pb::AuthzPolicy {
        name: format!("ns[foo]-policy[{name}]"),
        action: action as i32,
        rules,
        dry_run: false,
        ext_authz: None,
    }
}

fn to(index: u32, all: Vec<pb::AuthzMatch>) -> pb::AuthzRule {
    pb::AuthzRule {
        index,
        to: vec![pb::AuthzClause { all }],
        ..Default::default()
    }
}

fn inbound(
    port: u16,
    app: u16,
    protocol: pb::Protocol,
    http: Vec<pb::AuthzPolicy>,
    tcp: Vec<pb::AuthzPolicy>,
) -> pb::Resource {
    resource(
        &format!("inbound|{port}"),
        Kind::Listener(pb::Listener {
            name: format!("inbound|{port}"),
            port: u32::from(port),
            direction: pb::Direction::Inbound as i32,
            protocol: protocol as i32,
            app_port: u32::from(app),
            authz_http: http,
            authz_tcp: tcp,
            ..Default::default()
        }),
    )
}

/// A TCP echo that counts the connections it accepted.
async fn tcp_echo(ip: IpAddr) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind((ip, 0)).await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = [0u8; 64];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    (addr, accepted)
}

/// Sends `hello` and reads what comes back: `Some(echo)` or `None` when the
/// proxy closed the connection.
async fn tcp_round_trip(addr: SocketAddr) -> Option<String> {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let _ = s.write_all(b"hello").await;
    let mut buf = [0u8; 5];
    match tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut buf)).await {
        Ok(Ok(_)) => Some(String::from_utf8_lossy(&buf).into_owned()),
        Ok(Err(_)) => None,
        Err(_) => panic!("neither an echo nor a close from {addr}"),
    }
}

#[tokio::test]
async fn http_and_tcp_are_authorized_by_the_compiled_policies() {
    use pb::AuthzAction::*;
    use pb::AuthzField as F;
    let (pod_ip, app_ip) = (test_ip(), test_ip());
    let app = upstream(app_ip, "app", Behave::default()).await;
    let (echo, echo_accepts) = tcp_echo(app_ip).await;
    let (web, denied_tcp, allowed_tcp) = (free_port(pod_ip), free_port(pod_ip), free_port(pod_ip));
    let http_policies = vec![
        policy(
            "deny-admin",
            Deny,
            vec![to(0, vec![m(F::Path, &["/admin*"])])],
        ),
        policy(
            "deny-post",
            Deny,
            vec![to(0, vec![m(F::Method, &["POST"])])],
        ),
        // Only GET /api/* and /health are allowed; everything else is refused.
        policy(
            "allow-api",
            Allow,
            vec![
                to(0, vec![m(F::Method, &["GET"]), m(F::Path, &["/api/*"])]),
                to(1, vec![m(F::Path, &["/health"])]),
            ],
        ),
    ];
    let resources = vec![
        inbound(web, app.port(), pb::Protocol::Http, http_policies, vec![]),
        // spec: {} on a TCP port: no connection gets through.
        inbound(
            denied_tcp,
            echo.port(),
            pb::Protocol::Tcp,
            vec![],
            vec![policy("deny-all", Allow, vec![])],
        ),
        // A DENY on other ports leaves this one alone.
        inbound(
            allowed_tcp,
            echo.port(),
            pb::Protocol::Tcp,
            vec![],
            vec![policy(
                "deny-9000",
                Deny,
                vec![to(0, vec![m(F::DestinationPort, &["9000"])])],
            )],
        ),
    ];
    let mut config = Proxy::config(pod_ip);
    config.app_ip = app_ip;
    let proxy = Proxy::start_with(config, resources).await;
    let web = SocketAddr::new(pod_ip, web);

    let cases: Vec<(&str, &str, &str, StatusCode)> = vec![
        ("GET", "/api/items?x=1", "allowed by rule 0", StatusCode::OK),
        ("GET", "/health", "allowed by rule 1", StatusCode::OK),
        (
            "GET",
            "/other",
            "no ALLOW rule matches",
            StatusCode::FORBIDDEN,
        ),
        (
            "GET",
            "/admin/users",
            "DENY path prefix",
            StatusCode::FORBIDDEN,
        ),
        (
            "GET",
            "/api/../admin",
            "DENY sees the normalized path",
            StatusCode::FORBIDDEN,
        ),
        ("POST", "/api/items", "DENY method", StatusCode::FORBIDDEN),
    ];
    for (method, path, why, want) in cases {
        let mut c = Client::connect(web).await.expect("connect");
        let req = http::Request::builder()
            .method(method)
            .uri(path)
            .header("host", "httpbin.foo:8000")
            .body(http_body_util::Full::default())
            .expect("request");
        let r = c.send(req).await.expect("response");
        assert_eq!(r.status, want, "{method} {path}: {why}");
        if want == StatusCode::FORBIDDEN {
            assert_eq!(r.body, "RBAC: access denied", "{why}");
            assert_eq!(r.header("x-upstream"), "", "{why}: the app never saw it");
        } else {
            assert_eq!(r.body, "app", "{why}");
        }
    }
    // Denials are counted as the destination's 403s (Envoy sets no response flag for RBAC).
    let stats = admin_get(proxy.admin, "/stats/prometheus")
        .await
        .expect("stats")
        .body;
    let denied: f64 = stats
        .lines()
        .filter(|l| l.starts_with("istio_requests_total{") && l.contains("response_code=\"403\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(denied, 4.0, "{stats}");

    assert_eq!(
        tcp_round_trip(SocketAddr::new(pod_ip, denied_tcp)).await,
        None,
        "deny-all closes TCP"
    );
    assert_eq!(
        echo_accepts.load(Ordering::SeqCst),
        0,
        "the app never saw the denied connection"
    );
    assert_eq!(
        tcp_round_trip(SocketAddr::new(pod_ip, allowed_tcp))
            .await
            .as_deref(),
        Some("hello")
    );
    assert_eq!(echo_accepts.load(Ordering::SeqCst), 1);
    proxy.stop().await;
}

fn snapshot(version: &str, listeners: Vec<pb::Resource>) -> Arc<ProxySnapshot> {
    let types = wire::types::ALL
        .iter()
        .map(|t| {
            let resources: Vec<pb::Resource> = if *t == wire::types::LISTENER {
                // Resources are re-sent only when their version changes.
                listeners
                    .iter()
                    .map(|r| pb::Resource {
                        version: version.into(),
                        ..r.clone()
                    })
                    .collect()
            } else {
                vec![]
            };
            (
                t.to_string(),
                Arc::new(TypeSnapshot::new(version, &resources)),
            )
        })
        .collect::<BTreeMap<_, _>>();
    Arc::new(ProxySnapshot { types })
}

/// A policy pushed with a new config applies to the next request on the
/// same listener, without a rebind; a policy the proxy cannot compile is
/// NACKed and the one in force stays.
#[tokio::test]
async fn policies_change_live_and_bad_ones_are_nacked() {
    let (pod_ip, app_ip) = (test_ip(), test_ip());
    let app = upstream(app_ip, "app", Behave::default()).await;
    let port = free_port(pod_ip);
    let listener = |http: Vec<pb::AuthzPolicy>| {
        vec![inbound(port, app.port(), pb::Protocol::Http, http, vec![])]
    };
    let (cp, xds_addr, server) =
        TestControlPlane::serve(pod_ip, snapshot("1", listener(vec![]))).await;
    let mut config = Proxy::config(pod_ip);
    config.app_ip = app_ip;
    config.xds_address = Some(
        wire::address::XdsAddress::parse(&format!("http://{xds_addr}"), None).expect("address"),
    );
    let proxy = Proxy::spawn(config, None);
    proxy.wait_ready().await;
    let addr = SocketAddr::new(pod_ip, port);
    let mut kept = Client::connect(addr).await.expect("connect");
    assert_eq!(kept.get("a", "/", &[]).await.status, StatusCode::OK);

    cp.tx.send_replace(snapshot(
        "2",
        listener(vec![policy("deny-all", pb::AuthzAction::Allow, vec![])]),
    ));
    let deadline = Instant::now() + Duration::from_secs(5);
    while send(addr, "a", "/", &[]).await.status != StatusCode::FORBIDDEN {
        assert!(Instant::now() < deadline, "the new policy never applied");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Also on a connection opened before the change.
    assert_eq!(kept.get("a", "/", &[]).await.status, StatusCode::FORBIDDEN);

    let bad = policy(
        "bad",
        pb::AuthzAction::Deny,
        vec![pb::AuthzRule {
            from: vec![pb::AuthzClause {
                all: vec![m(pb::AuthzField::SourceIp, &["10.0.0.0/99"])],
            }],
            ..Default::default()
        }],
    );
    cp.tx.send_replace(snapshot("3", listener(vec![bad])));
    let deadline = Instant::now() + Duration::from_secs(5);
    let nack = loop {
        if let Some(n) = cp.nacks.lock().expect("lock").first().cloned() {
            break n;
        }
        assert!(Instant::now() < deadline, "no NACK");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        nack.contains("ns[foo]-policy[bad]") && nack.contains("10.0.0.0/99"),
        "{nack}"
    );
    assert_eq!(
        send(addr, "a", "/", &[]).await.status,
        StatusCode::FORBIDDEN,
        "the old policy stays"
    );
    proxy.stop().await;
    server.abort();
}
