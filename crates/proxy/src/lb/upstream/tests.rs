use std::net::SocketAddr;
use std::sync::atomic::AtomicUsize;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use super::*;
use crate::lb::breaker::{Limits, Usage};

/// A server that counts connections and answers each request once `gate`
/// lets it (`None`: at once).
struct Server {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    gate: Option<Arc<Semaphore>>,
}

async fn server(http2: bool, gated: bool) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    let connections = Arc::new(AtomicUsize::new(0));
    let gate = gated.then(|| Arc::new(Semaphore::new(0)));
    let (count, g) = (connections.clone(), gate.clone());
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            let g = g.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |_req: Request<Incoming>| {
                    let g = g.clone();
                    async move {
                        if let Some(g) = g
                            && let Ok(p) = g.acquire().await
                        {
                            p.forget();
                        }
                        Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from(
                            "ok",
                        ))))
                    }
                });
                let io = TokioIo::new(stream);
                if http2 {
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(io, svc)
                        .await;
                } else {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(io, svc)
                        .await;
                }
            });
        }
    });
    Server {
        addr,
        connections,
        gate,
    }
}

fn pool(addr: SocketAddr, limits: Limits, settings: ConnSettings) -> Arc<EndpointPool> {
    EndpointPool::new(
        addr.to_string().parse().expect("authority"),
        settings,
        Breakers::new(limits, Arc::new(Usage::default())),
    )
}

fn settings() -> ConnSettings {
    ConnSettings {
        connect_timeout: Duration::from_secs(1),
        idle_timeout: Some(DEFAULT_IDLE_TIMEOUT),
        max_requests_per_connection: 0,
        max_duration: None,
        max_idle: u32::MAX,
        ..ConnSettings::default()
    }
}

fn get(addr: SocketAddr, http2: bool) -> Request<ReqBody> {
    let uri = if http2 {
        format!("http://{addr}/")
    } else {
        "/".to_string()
    };
    Request::get(uri)
        .header("host", addr.to_string())
        .body(ReqBody::Empty)
        .expect("request")
}

/// Sends one request and reads its response to the end, as the proxy does.
async fn roundtrip(p: &Arc<EndpointPool>, addr: SocketAddr, http2: bool) -> Result<(), SendError> {
    let (resp, lease) = p.send(get(addr, http2), http2).await?;
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    assert_eq!(&body[..], b"ok");
    lease.finish(true);
    Ok(())
}

#[tokio::test]
async fn sequential_http1_requests_reuse_one_connection() {
    let s = server(false, false).await;
    let p = pool(s.addr, Limits::default(), settings());
    for _ in 0..5 {
        roundtrip(&p, s.addr, false).await.expect("response");
    }
    assert_eq!(s.connections.load(Ordering::SeqCst), 1);
    assert_eq!(p.open_connections(), 1);
}

#[tokio::test]
async fn one_connection_one_pending_and_the_rest_overflow() {
    let s = server(false, true).await;
    let limits = Limits {
        connections: 1,
        pending: 1,
        ..Limits::default()
    };
    let p = pool(s.addr, limits, settings());
    let first = tokio::spawn({
        let p = p.clone();
        async move { roundtrip(&p, s.addr, false).await }
    });
    // Let the first request take the only connection.
    while s.connections.load(Ordering::SeqCst) == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
    let second = tokio::spawn({
        let p = p.clone();
        async move { roundtrip(&p, s.addr, false).await }
    });
    tokio::time::sleep(Duration::from_millis(20)).await;
    // The connection is busy and the one pending place is taken.
    assert_eq!(roundtrip(&p, s.addr, false).await, Err(SendError::Overflow));
    let gate = s.gate.as_ref().expect("gated");
    gate.add_permits(2);
    assert_eq!(first.await.expect("task"), Ok(()));
    assert_eq!(
        second.await.expect("task"),
        Ok(()),
        "served after the first"
    );
    assert_eq!(
        s.connections.load(Ordering::SeqCst),
        1,
        "never two connections"
    );
}

#[tokio::test]
async fn max_requests_overflow_once_attached() {
    let s = server(true, true).await;
    let limits = Limits {
        requests: 1,
        ..Limits::default()
    };
    let p = pool(s.addr, limits, settings());
    let first = tokio::spawn({
        let p = p.clone();
        async move { roundtrip(&p, s.addr, true).await }
    });
    while p.breakers().in_use(Resource::Requests) == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(roundtrip(&p, s.addr, true).await, Err(SendError::Overflow));
    // One for the first request, one for the next: the refused one never arrived.
    s.gate.as_ref().expect("gated").add_permits(2);
    assert_eq!(first.await.expect("task"), Ok(()));
    roundtrip(&p, s.addr, true).await.expect("room again");
}

#[tokio::test]
async fn http2_requests_share_a_connection() {
    let s = server(true, true).await;
    let p = pool(s.addr, Limits::default(), settings());
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let p = p.clone();
            tokio::spawn(async move { roundtrip(&p, s.addr, true).await })
        })
        .collect();
    while p.breakers().in_use(Resource::Requests) < 4 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    s.gate.as_ref().expect("gated").add_permits(4);
    for t in tasks {
        assert_eq!(t.await.expect("task"), Ok(()));
    }
    assert_eq!(s.connections.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn max_requests_per_connection_opens_new_connections() {
    for http2 in [false, true] {
        let s = server(http2, false).await;
        let p = pool(
            s.addr,
            Limits::default(),
            ConnSettings {
                max_requests_per_connection: 1,
                ..settings()
            },
        );
        for _ in 0..3 {
            roundtrip(&p, s.addr, http2).await.expect("response");
        }
        assert_eq!(s.connections.load(Ordering::SeqCst), 3, "http2={http2}");
    }
}

#[tokio::test]
async fn a_burst_leaves_at_most_max_idle_connections_open() {
    let s = server(false, true).await;
    let p = pool(
        s.addr,
        Limits::default(),
        ConnSettings {
            max_idle: 2,
            excess_idle_after: Duration::from_millis(50),
            ..settings()
        },
    );
    // Ten requests at once: one HTTP/1 connection each.
    let burst: Vec<_> = (0..10)
        .map(|_| {
            let p = p.clone();
            tokio::spawn(async move { roundtrip(&p, s.addr, false).await })
        })
        .collect();
    while s.connections.load(Ordering::SeqCst) < 10 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    s.gate.as_ref().expect("gated").add_permits(10);
    for r in burst {
        assert_eq!(r.await.expect("task"), Ok(()));
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while p.open_connections() > 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "{} connections kept after the burst",
            p.open_connections()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The two kept serve the next requests.
    s.gate.as_ref().expect("gated").add_permits(1);
    roundtrip(&p, s.addr, false).await.expect("response");
    assert_eq!(s.connections.load(Ordering::SeqCst), 10);
}

#[tokio::test]
async fn steady_concurrency_above_max_idle_reuses_its_connections() {
    let s = server(false, true).await;
    let p = pool(
        s.addr,
        Limits::default(),
        ConnSettings {
            max_idle: 2,
            ..settings()
        },
    );
    for round in 1..=3 {
        let burst: Vec<_> = (0..10)
            .map(|_| {
                let p = p.clone();
                tokio::spawn(async move { roundtrip(&p, s.addr, false).await })
            })
            .collect();
        while p.open_connections() < 10 || s.connections.load(Ordering::SeqCst) < 10 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        s.gate.as_ref().expect("gated").add_permits(10);
        for r in burst {
            assert_eq!(r.await.expect("task"), Ok(()));
        }
        // Before, each round after the first closed eight of its ten
        // connections on return and opened eight new ones.
        assert_eq!(s.connections.load(Ordering::SeqCst), 10, "round {round}");
    }
}

#[tokio::test]
async fn idle_connections_are_closed_after_the_idle_timeout() {
    let s = server(false, false).await;
    let p = pool(
        s.addr,
        Limits::default(),
        ConnSettings {
            idle_timeout: Some(Duration::from_millis(50)),
            ..settings()
        },
    );
    roundtrip(&p, s.addr, false).await.expect("response");
    assert_eq!(p.open_connections(), 1);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while p.open_connections() > 0 {
        assert!(std::time::Instant::now() < deadline, "idle connection kept");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(p.breakers().in_use(Resource::Connections), 0);
    roundtrip(&p, s.addr, false)
        .await
        .expect("a new connection");
}

#[tokio::test]
async fn a_failed_connect_fails_the_waiting_requests() {
    // Nothing listens there: bind, learn the port, close.
    let addr = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind")
        .local_addr()
        .expect("address");
    let p = pool(addr, Limits::default(), settings());
    for http2 in [false, true] {
        assert_eq!(
            roundtrip(&p, addr, http2).await,
            Err(SendError::Failure(Failure::Connect))
        );
    }
    assert_eq!(p.open_connections(), 0);
    assert_eq!(p.breakers().in_use(Resource::Pending), 0);
}

/// A changed TLS setting (another CA, client certificate or mode) must not
/// leave requests on connections secured by the old one; an unchanged one
/// keeps them.
#[tokio::test]
async fn a_changed_tls_setting_retires_open_connections() {
    for http2 in [false, true] {
        let s = server(http2, false).await;
        let p = pool(s.addr, Limits::default(), settings());
        roundtrip(&p, s.addr, http2).await.expect("response");
        p.set_tls(None, false);
        roundtrip(&p, s.addr, http2).await.expect("response");
        assert_eq!(s.connections.load(Ordering::SeqCst), 1, "http2: {http2}");
        p.set_tls(None, true);
        roundtrip(&p, s.addr, http2).await.expect("response");
        assert_eq!(
            s.connections.load(Ordering::SeqCst),
            2,
            "a new connection after the change (http2: {http2})"
        );
    }
}
