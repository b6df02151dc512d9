//! The authority on every hop, as Envoy keeps it: the one the client asked
//! for (or the route's rewrite) goes upstream as `:authority` on HTTP/2 and
//! as `Host` on HTTP/1.1, never both and never the endpoint's address; an
//! HTTP/2 request whose Host disagrees with its `:authority` is refused.

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use wire::pb::{self, resource::Kind};

use crate::support::*;

/// A cluster speaking `protocol` to the echo upstream.
fn cluster_speaking(
    name: &str,
    protocol: pb::Protocol,
    app: std::net::SocketAddr,
) -> Vec<pb::Resource> {
    let mut c = cluster(name, &[(app, "v1")]);
    if let Some(Kind::Cluster(spec)) = &mut c[0].kind {
        spec.protocol = protocol as i32;
    }
    c
}

#[tokio::test]
async fn upstream_authority_is_the_clients_once_per_protocol() {
    let ip = test_ip();
    let app = upstream(ip, "app", Behave::default()).await;
    let mut resources = cluster_speaking("h1", pb::Protocol::Http, app);
    resources.extend(cluster_speaking("h2", pb::Protocol::Http2, app));
    resources.push(route_config(
        "9080",
        &["reviews:9080"],
        vec![
            route(
                "h2-rewrite",
                vec![prefix("/h2/rewrite")],
                fwd(pb::RouteAction {
                    authority_rewrite: "ratings.internal".into(),
                    ..forward(&[("h2", 100)])
                }),
            ),
            route("h2", vec![prefix("/h2")], fwd(forward(&[("h2", 100)]))),
            route("h1", vec![], fwd(forward(&[("h1", 100)]))),
        ],
    ));
    let proxy = Proxy::start(ip, resources).await;

    // An HTTP/2 client: only `:authority`.
    let stream = TcpStream::connect(proxy.outbound).await.expect("connect");
    let (mut h2, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("h2 handshake");
    tokio::spawn(conn);
    for (path, host, authority) in [
        ("/h2", None, Some("reviews:9080")),
        ("/h2/rewrite", None, Some("ratings.internal")),
        ("/h1", Some("reviews:9080"), None),
    ] {
        let req = Request::get(format!("http://reviews:9080{path}"))
            .body(Full::<Bytes>::default())
            .expect("request");
        let resp = h2.send_request(req).await.expect("response");
        assert_eq!(resp.status(), StatusCode::OK, "{path}");
        let seen = |name: &str| resp.headers().get(name).and_then(|v| v.to_str().ok());
        assert_eq!(
            (seen("x-seen-host"), seen("x-seen-authority")),
            (host, authority),
            "{path}"
        );
    }

    // The same Host as `:authority` is allowed (and sent once); another is refused.
    for (host, status) in [
        ("reviews:9080", StatusCode::OK),
        ("REVIEWS:9080", StatusCode::OK),
        ("evil:9080", StatusCode::BAD_REQUEST),
    ] {
        let req = Request::get("http://reviews:9080/h2")
            .header("host", host)
            .body(Full::<Bytes>::default())
            .expect("request");
        let resp = h2.send_request(req).await.expect("response");
        assert_eq!(resp.status(), status, "host {host}");
        if status == StatusCode::OK {
            let seen = |name: &str| resp.headers().get(name).and_then(|v| v.to_str().ok());
            assert_eq!(seen("x-seen-host"), None);
            assert_eq!(seen("x-seen-authority"), Some("reviews:9080"));
        }
        let _ = resp.into_body().collect().await;
    }

    // The client's scheme goes on: `:scheme` on HTTP/2, `x-forwarded-proto`
    // on HTTP/1.1 (as Envoy propagates an HTTP/2 client's `:scheme`).
    for (path, scheme, proto) in [("/h2", Some("https"), "https"), ("/h1", None, "https")] {
        let req = Request::get(format!("https://reviews:9080{path}"))
            .body(Full::<Bytes>::default())
            .expect("request");
        let resp = h2.send_request(req).await.expect("response");
        let seen = |name: &str| resp.headers().get(name).and_then(|v| v.to_str().ok());
        assert_eq!(seen("x-seen-scheme"), scheme, "{path}");
        assert_eq!(seen("echo-x-forwarded-proto"), Some(proto), "{path}");
        let _ = resp.into_body().collect().await;
    }

    // HTTP/1.1 absolute-form: the target's authority wins over Host
    // (RFC 9112 §3.2.2), for routing and upstream alike.
    let mut s = TcpStream::connect(proxy.outbound).await.expect("connect");
    s.write_all(
        b"GET http://reviews:9080/h2 HTTP/1.1\r\nhost: other:1\r\nconnection: close\r\n\r\n",
    )
    .await
    .expect("write");
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.expect("read");
    let text = String::from_utf8_lossy(&buf).to_ascii_lowercase();
    assert!(text.starts_with("http/1.1 200"), "{text}");
    assert!(
        text.contains("x-seen-authority: reviews:9080\r\n"),
        "{text}"
    );
    assert!(!text.contains("x-seen-host"), "{text}");

    // Two Host headers: refused.
    let mut s = TcpStream::connect(proxy.outbound).await.expect("connect");
    s.write_all(
        b"GET /h1 HTTP/1.1\r\nhost: reviews:9080\r\nhost: evil:9080\r\nconnection: close\r\n\r\n",
    )
    .await
    .expect("write");
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.expect("read");
    assert!(String::from_utf8_lossy(&buf).starts_with("HTTP/1.1 400"));
    proxy.stop().await;
}
