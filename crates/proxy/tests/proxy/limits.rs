//! Limits on what one client can make the proxy hold: header size and
//! count (431), idle upstream connections kept after a burst, and idle
//! downstream connections closed.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use crate::support::*;

/// `reviews:9080` routed to one upstream; `/direct` answered by the proxy
/// (the upstream, a hyper server, has header limits of its own).
fn reviews(upstream: SocketAddr) -> Vec<wire::pb::Resource> {
    let mut resources = cluster("v1", &[(upstream, "v1")]);
    let direct = wire::pb::route::Action::DirectResponse(wire::pb::DirectResponse {
        status: 200,
        body: b"direct".to_vec(),
    });
    resources.push(route_config(
        "9080",
        &["reviews:9080"],
        vec![
            route("direct", vec![prefix("/direct")], direct),
            route("all", vec![prefix("/")], fwd(forward(&[("v1", 100)]))),
        ],
    ));
    resources
}

async fn proxy_with(ip: IpAddr, limits: proxy::limits::Limits) -> (Proxy, SocketAddr) {
    let up = upstream(ip, "v1", Behave::default()).await;
    let config = proxy::Config {
        limits,
        ..Proxy::config(ip)
    };
    (Proxy::start_with(config, reviews(up)).await, up)
}

/// Sends raw bytes on a new connection; returns the status line's code.
async fn raw_status(addr: SocketAddr, request: &[u8]) -> u16 {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    // The proxy may answer (and close) before it has read everything.
    let _ = s.write_all(request).await;
    let mut buf = vec![0u8; 4096];
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !got.windows(2).any(|w| w == b"\r\n") {
        assert!(Instant::now() < deadline, "no status line");
        match tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => got.extend_from_slice(&buf[..n]),
            other => panic!("no response: {other:?}"),
        }
    }
    let line = String::from_utf8_lossy(&got);
    line.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("not a status line: {line}"))
}

fn head_with(path: &str, headers: &[(String, String)]) -> Vec<u8> {
    let mut r = format!("GET {path} HTTP/1.1\r\nhost: reviews:9080\r\n");
    for (k, v) in headers {
        r.push_str(&format!("{k}: {v}\r\n"));
    }
    r.push_str("\r\n");
    r.into_bytes()
}

#[tokio::test]
async fn a_100_kb_header_is_answered_431() {
    let ip = test_ip();
    let (proxy, _) = proxy_with(ip, Default::default()).await;
    // Just under the limit passes; a 100 KB header does not.
    let fits = head_with("/direct", &[("x-big".into(), "a".repeat(50 * 1024))]);
    assert_eq!(raw_status(proxy.outbound, &fits).await, 200);
    let big = head_with("/direct", &[("x-big".into(), "a".repeat(100 * 1000))]);
    assert_eq!(raw_status(proxy.outbound, &big).await, 431);

    // HTTP/2: h2 answers 431 (and resets the stream).
    let mut h2 = h2_client(proxy.outbound).await;
    let resp = h2_get(
        &mut h2,
        "/direct",
        &[("x-big".into(), "a".repeat(100 * 1000))],
    )
    .await;
    assert_eq!(resp, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    proxy.stop().await;
}

#[tokio::test]
async fn more_than_100_headers_are_answered_431() {
    let ip = test_ip();
    let (proxy, _) = proxy_with(ip, Default::default()).await;
    let headers = |n: usize| -> Vec<(String, String)> {
        (0..n).map(|i| (format!("x-h{i}"), "v".into())).collect()
    };
    // Host is one of the 100.
    assert_eq!(
        raw_status(proxy.outbound, &head_with("/direct", &headers(99))).await,
        200
    );
    assert_eq!(
        raw_status(proxy.outbound, &head_with("/direct", &headers(101))).await,
        431
    );

    // HTTP/2 has no Host header (:authority), so 100 of its own.
    let mut h2 = h2_client(proxy.outbound).await;
    assert_eq!(
        h2_get(&mut h2, "/direct", &headers(100)).await,
        StatusCode::OK
    );
    assert_eq!(
        h2_get(&mut h2, "/direct", &headers(101)).await,
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
    );
    proxy.stop().await;
}

type H2 = hyper::client::conn::http2::SendRequest<Full<Bytes>>;

async fn h2_client(addr: SocketAddr) -> H2 {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (tx, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .max_header_list_size(1 << 20)
        .handshake(TokioIo::new(stream))
        .await
        .expect("h2 handshake");
    tokio::spawn(conn);
    tx
}

/// An HTTP/2 GET's status.
async fn h2_get(tx: &mut H2, path: &str, headers: &[(String, String)]) -> StatusCode {
    let mut b = Request::get(format!("http://reviews:9080{path}"));
    for (k, v) in headers {
        b = b.header(k.as_str(), v.as_str());
    }
    let req = b.body(Full::default()).expect("request");
    tx.ready().await.expect("connection ready");
    match tx.send_request(req).await {
        Ok(resp) => resp.status(),
        Err(e) => panic!("no response: {e}"),
    }
}

/// An upstream that counts its open connections and holds each response
/// until the test lets it go.
struct Counting {
    addr: SocketAddr,
    open: Arc<AtomicUsize>,
    accepted: Arc<AtomicUsize>,
    gate: Arc<Semaphore>,
}

async fn counting_upstream(ip: IpAddr) -> Counting {
    let listener = TcpListener::bind((ip, 0)).await.expect("bind");
    let addr = listener.local_addr().expect("address");
    let open = Arc::new(AtomicUsize::new(0));
    let accepted = Arc::new(AtomicUsize::new(0));
    let gate = Arc::new(Semaphore::new(0));
    let (o, a, g) = (open.clone(), accepted.clone(), gate.clone());
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            o.fetch_add(1, Ordering::SeqCst);
            a.fetch_add(1, Ordering::SeqCst);
            let (o, g) = (o.clone(), g.clone());
            tokio::spawn(async move {
                let svc = service_fn(move |_req: Request<Incoming>| {
                    let g = g.clone();
                    async move {
                        if let Ok(p) = g.acquire().await {
                            p.forget();
                        }
                        Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from(
                            "ok",
                        ))))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
                o.fetch_sub(1, Ordering::SeqCst);
            });
        }
    });
    Counting {
        addr,
        open,
        accepted,
        gate,
    }
}

#[tokio::test]
async fn idle_upstream_connections_are_bounded_after_a_burst() {
    let ip = test_ip();
    let up = counting_upstream(ip).await;
    let config = proxy::Config {
        limits: proxy::limits::Limits {
            max_idle_per_endpoint: 3,
            excess_idle_after: Duration::from_millis(100),
            ..Default::default()
        },
        ..Proxy::config(ip)
    };
    let proxy = Proxy::start_with(config, reviews(up.addr)).await;
    // Twenty requests at once, each on a client connection of its own: the
    // proxy opens an HTTP/1.1 connection upstream for each.
    let burst: Vec<_> = (0..20)
        .map(|_| {
            let outbound = proxy.outbound;
            tokio::spawn(async move { send(outbound, "reviews:9080", "/", &[]).await.status })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    while up.accepted.load(Ordering::SeqCst) < 20 {
        assert!(
            Instant::now() < deadline,
            "the burst did not reach the upstream"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    up.gate.add_permits(20);
    for r in burst {
        assert_eq!(r.await.expect("task"), StatusCode::OK);
    }
    // The idle ones beyond the bound are closed; the upstream sees them go.
    let deadline = Instant::now() + Duration::from_secs(5);
    while up.open.load(Ordering::SeqCst) > 3 {
        assert!(
            Instant::now() < deadline,
            "{} upstream connections still open after the burst",
            up.open.load(Ordering::SeqCst)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Those kept serve the next request.
    up.gate.add_permits(1);
    assert_eq!(
        proxy.get("reviews:9080", "/", &[]).await.status,
        StatusCode::OK
    );
    assert_eq!(up.accepted.load(Ordering::SeqCst), 20);
    proxy.stop().await;
}

#[tokio::test]
async fn an_idle_downstream_connection_is_closed_after_the_idle_timeout() {
    let ip = test_ip();
    let (proxy, _) = proxy_with(
        ip,
        proxy::limits::Limits {
            downstream_idle_timeout: Some(Duration::from_millis(300)),
            ..Default::default()
        },
    )
    .await;
    let mut s = TcpStream::connect(proxy.outbound).await.expect("connect");
    s.write_all(&head_with("/", &[])).await.expect("request");
    let mut buf = vec![0u8; 4096];
    let n = s.read(&mut buf).await.expect("response");
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    // Keep-alive: the connection stays open after the response, until the
    // idle timeout closes it (well before hyper's own 30 s header timeout).
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "idle connection still open after 5 s");

    // HTTP/2: GOAWAY, then closed.
    let stream = TcpStream::connect(proxy.outbound).await.expect("connect");
    let (mut tx, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .handshake(TokioIo::new(stream))
        .await
        .expect("h2 handshake");
    let conn = tokio::spawn(conn);
    assert_eq!(h2_get(&mut tx, "/", &[]).await, StatusCode::OK);
    let ended = tokio::time::timeout(Duration::from_secs(5), conn).await;
    assert!(ended.is_ok(), "idle HTTP/2 connection still open after 5 s");
    proxy.stop().await;
}
