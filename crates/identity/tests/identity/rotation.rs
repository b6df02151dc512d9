//! Certificate rotation: the renewal loop's schedule (paused time) and real
//! rotations under a long-running client (real time, a few seconds).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use identity::{
    Ca, CaError, CertChain, CertError, CertManager, ClientAuth, KeyAndCsr, RotationConfig,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::common::*;

/// A `fetch` for `CertManager::run` that signs in-process with `ca`.
fn fetch_from(
    ca: Arc<Ca>,
    id: identity::SpiffeId,
    ttl: Duration,
) -> impl FnMut(String) -> std::future::Ready<Result<CertChain, CaError>> {
    move |csr| std::future::ready(ca.sign(&csr, &id, Some(ttl)))
}

#[tokio::test(start_paused = true)]
async fn run_retries_with_backoff_then_renews_at_half_life() {
    let t = new_ca();
    let sleep = id("default", "sleep");
    let mgr = Arc::new(CertManager::new(sleep.clone()));
    assert!(mgr.current().is_none());
    assert!(!*mgr.ready().borrow());

    // The CA is "down" for the first three requests.
    let (tx, mut attempts) = mpsc::unbounded_channel();
    let mut n = 0;
    let ca = t.ca.clone();
    let fetch = move |csr: String| {
        n += 1;
        let _ = tx.send(Instant::now());
        let result = if n <= 3 {
            Err(format!("CA unavailable (attempt {n})"))
        } else {
            ca.sign(&csr, &sleep, None).map_err(|e| e.to_string())
        };
        std::future::ready(result)
    };
    let start = Instant::now();
    let runner = tokio::spawn({
        let mgr = mgr.clone();
        async move { mgr.run(fetch).await }
    });

    let mut at = Vec::new();
    for _ in 0..5 {
        at.push(attempts.recv().await.expect("attempt") - start);
    }
    runner.abort();

    let secs: Vec<f64> = at.iter().map(Duration::as_secs_f64).collect();
    // Immediately, then backoff 0.5 s, 1 s, 2 s (±10% jitter each)...
    assert!(secs[0] < 0.01, "{secs:?}");
    for (i, want) in [(1, 0.5), (2, 1.0), (3, 2.0)] {
        let gap = secs[i] - secs[i - 1];
        assert!(
            (want * 0.9..=want * 1.1).contains(&gap),
            "retry {i}: {gap} s, {secs:?}"
        );
    }
    // ... then the 24 h certificate is renewed at half-life ±1% of the lifetime.
    let gap_h = (secs[4] - secs[3]) / 3600.0;
    assert!((11.75..=12.25).contains(&gap_h), "renewed after {gap_h} h");
    assert!(*mgr.ready().borrow(), "ready after the first certificate");
}

#[tokio::test]
async fn install_checks_what_the_ca_returned() {
    let t = new_ca();
    let sleep = id("default", "sleep");
    let mgr = CertManager::new(sleep.clone());

    // A chain issued for a different key.
    let mine = KeyAndCsr::generate(&sleep).expect("key");
    let theirs = KeyAndCsr::generate(&sleep).expect("key");
    let chain = t.ca.sign(theirs.csr_pem(), &sleep, None).expect("signed");
    assert!(matches!(
        mgr.install(mine, &chain),
        Err(CertError::KeyMismatch { .. })
    ));

    // A key/chain for another identity.
    let other = id("default", "other");
    let key = KeyAndCsr::generate(&other).expect("key");
    let chain = t.ca.sign(key.csr_pem(), &other, None).expect("signed");
    let err = mgr.install(key, &chain).expect_err("other identity");
    assert!(matches!(err, CertError::WrongIdentity { .. }), "{err}");

    // An already expired chain.
    let key = KeyAndCsr::generate(&sleep).expect("key");
    let past = SystemTime::now() - Duration::from_secs(7200);
    let chain =
        t.ca.sign_at(key.csr_pem(), &sleep, Some(Duration::from_secs(3600)), past)
            .expect("signed");
    assert!(matches!(
        mgr.install(key, &chain),
        Err(CertError::Expired { .. })
    ));
    assert!(mgr.current().is_none(), "nothing installed");

    // A good one: current() shows id, serial, validity and chain — never the key.
    let key = KeyAndCsr::generate(&sleep).expect("key");
    let chain = t.ca.sign(key.csr_pem(), &sleep, None).expect("signed");
    mgr.install(key, &chain).expect("installed");
    let info = mgr.current().expect("current");
    assert_eq!(info.spiffe_id, sleep);
    assert_eq!(info.chain_pem, chain.to_pem());
    assert!(info.not_before < info.not_after);
    let json = serde_json::to_string(&*info).expect("serializes");
    assert!(
        json.contains("\"spiffe_id\":\"spiffe://cluster.local/ns/default/sa/sleep\""),
        "{json}"
    );
    assert!(!json.contains("PRIVATE KEY") && !format!("{mgr:?}").contains("PRIVATE"));
    assert!(format!("{mgr:?}").contains(&info.serial));
}

async fn roundtrip(
    tls: &mut tokio_rustls::client::TlsStream<TcpStream>,
    i: u32,
) -> std::io::Result<()> {
    let msg = i.to_be_bytes();
    tls.write_all(&msg).await?;
    let mut buf = [0u8; 4];
    tls.read_exact(&mut buf).await?;
    assert_eq!(buf, msg);
    Ok(())
}

/// Serial (hex) of the leaf a peer presented.
fn peer_serial(certs: Option<&[rustls_pki_types::CertificateDer<'static>]>) -> String {
    let leaf = certs
        .and_then(|c| c.first())
        .expect("peer certificate")
        .clone();
    CertChain::from_der(vec![leaf])
        .expect("chain")
        .info()
        .expect("info")
        .serial
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_keeps_a_long_running_client_working() {
    const TTL: Duration = Duration::from_secs(2);
    const RUN_FOR: Duration = Duration::from_millis(4500);
    let t = new_ca();
    let roots = t.ca.trust_bundle();
    let (httpbin, sleep) = (id("default", "httpbin"), id("default", "sleep"));
    let config = RotationConfig {
        initial_backoff: Duration::from_millis(50),
        ..RotationConfig::default()
    };
    let server_mgr = Arc::new(CertManager::with_config(httpbin.clone(), config.clone()));
    let client_mgr = Arc::new(CertManager::with_config(sleep.clone(), config));
    let loops = [
        tokio::spawn({
            let m = server_mgr.clone();
            let fetch = fetch_from(t.ca.clone(), httpbin.clone(), TTL);
            async move { m.run(fetch).await }
        }),
        tokio::spawn({
            let m = client_mgr.clone();
            let fetch = fetch_from(t.ca.clone(), sleep.clone(), TTL);
            async move { m.run(fetch).await }
        }),
    ];
    tokio::time::timeout(STEP, async {
        server_mgr.wait_ready().await;
        client_mgr.wait_ready().await;
    })
    .await
    .expect("first certificates");

    // Echo server; records the client serial of every handshake.
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let acceptor = TlsAcceptor::from(server(server_mgr.clone(), &roots, ClientAuth::Required));
    let client_serials = Arc::new(Mutex::new(HashSet::new()));
    let server_task = tokio::spawn({
        let client_serials = client_serials.clone();
        async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let acceptor = acceptor.clone();
                let client_serials = client_serials.clone();
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let serial = peer_serial(tls.get_ref().1.peer_certificates());
                    client_serials.lock().expect("lock").insert(serial);
                    let mut buf = [0u8; 4];
                    while tls.read_exact(&mut buf).await.is_ok() {
                        if tls.write_all(&buf).await.is_err() {
                            break;
                        }
                    }
                });
            }
        }
    });

    let connector = TlsConnector::from(client(client_mgr.clone(), &roots, [httpbin.clone()]));
    let sni =
        rustls_pki_types::ServerName::try_from("httpbin.default.svc.cluster.local").expect("sni");
    let connect = || async {
        let tcp = TcpStream::connect(addr).await.expect("connect");
        tokio::time::timeout(STEP, connector.connect(sni.clone(), tcp))
            .await
            .expect("handshake in time")
    };
    // One connection held open across every rotation...
    let mut long_lived = connect().await.expect("long-lived handshake");
    let first_serial = peer_serial(long_lived.get_ref().1.peer_certificates());
    let mut server_serials = HashSet::new();
    let deadline = Instant::now() + RUN_FOR;
    let mut i = 0;
    while Instant::now() < deadline {
        i += 1;
        tokio::time::timeout(STEP, roundtrip(&mut long_lived, i))
            .await
            .expect("in time")
            .unwrap_or_else(|e| panic!("long-lived connection failed at request {i}: {e}"));
        // ... and a new connection per request, which must see the newest certificate.
        let mut fresh = connect()
            .await
            .unwrap_or_else(|e| panic!("new handshake {i} failed: {e}"));
        server_serials.insert(peer_serial(fresh.get_ref().1.peer_certificates()));
        tokio::time::timeout(STEP, roundtrip(&mut fresh, i))
            .await
            .expect("in time")
            .unwrap_or_else(|e| panic!("request {i} on a new connection failed: {e}"));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The long-lived connection still works with certificates long since replaced.
    roundtrip(&mut long_lived, 0)
        .await
        .expect("long-lived connection survives");
    assert!(
        server_serials.len() >= 3,
        "server rotated only {} times",
        server_serials.len()
    );
    // The old connection keeps the certificates it was established with.
    assert_eq!(
        peer_serial(long_lived.get_ref().1.peer_certificates()),
        first_serial
    );
    let client_rotations = client_serials.lock().expect("lock").len();
    assert!(
        client_rotations >= 3,
        "client rotated only {client_rotations} times"
    );
    assert!(i >= 20, "only {i} requests");

    server_task.abort();
    for l in loops {
        l.abort();
    }
}
