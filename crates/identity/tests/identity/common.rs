//! Helpers shared by the integration tests: a CA in a temp dir, workloads with
//! certificates, and one real TLS exchange over loopback TCP.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use identity::{
    Ca, CertManager, ClientAuth, KeyAndCsr, PeerIdentity, SpiffeId, TrustBundle, client_config,
    handshake_failure_reason, peer_identity, server_config,
};
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::{ClientConfig, ServerConfig};
use rustls_pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

pub const TD: &str = "cluster.local";
/// Every network step of a test is bounded by this.
pub const STEP: Duration = Duration::from_secs(10);

pub fn id(ns: &str, sa: &str) -> SpiffeId {
    SpiffeId::new(TD, ns, sa).expect("valid test id")
}

pub struct TestCa {
    pub ca: Arc<Ca>,
    // Kept so the directory lives as long as the CA.
    _dir: tempfile::TempDir,
}

pub fn new_ca() -> TestCa {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::self_signed(TD, dir.path()).expect("self-signed CA");
    TestCa {
        ca: Arc::new(ca),
        _dir: dir,
    }
}

/// A ready certificate manager for `id`, its certificate issued by `ca` now.
pub fn workload(ca: &Ca, id: &SpiffeId) -> Arc<CertManager> {
    let mgr = CertManager::new(id.clone());
    let key = KeyAndCsr::generate(id).expect("key");
    let chain = ca.sign(key.csr_pem(), id, None).expect("signed");
    mgr.install(key, &chain).expect("installed");
    Arc::new(mgr)
}

/// A certificate for `id` issued as if the CA's clock read `at`; usable as a
/// resolver even when expired (the CertManager would refuse to install it).
pub fn certified_at(
    ca: &Ca,
    id: &SpiffeId,
    at: SystemTime,
    ttl: Duration,
) -> Arc<SingleCertAndKey> {
    let key = KeyAndCsr::generate(id).expect("key");
    let chain = ca
        .sign_at(key.csr_pem(), id, Some(ttl), at)
        .expect("signed");
    let certified: Arc<CertifiedKey> = key.into_certified_key(&chain).expect("certified");
    Arc::new(SingleCertAndKey::from(certified))
}

pub fn server(
    certs: Arc<dyn rustls::server::ResolvesServerCert>,
    roots: &TrustBundle,
    auth: ClientAuth,
) -> Arc<ServerConfig> {
    Arc::new(server_config(certs, roots, auth).expect("server config"))
}

pub fn client(
    certs: Arc<dyn rustls::client::ResolvesClientCert>,
    roots: &TrustBundle,
    expected: impl IntoIterator<Item = SpiffeId>,
) -> Arc<ClientConfig> {
    let expected = expected.into_iter().collect();
    Arc::new(client_config(certs, roots, expected).expect("client config"))
}

/// What each side saw of one connection.
pub struct Outcome {
    /// The client's identity as the server saw it (`None`: no client certificate).
    pub server: Result<Option<PeerIdentity>, String>,
    /// The server's identity as the client saw it.
    pub client: Result<PeerIdentity, String>,
    /// ALPN protocol agreed, as the client saw it.
    pub alpn: Option<Vec<u8>>,
}

impl Outcome {
    pub fn ok(self) -> (Option<PeerIdentity>, PeerIdentity) {
        match (self.server, self.client) {
            (Ok(s), Ok(c)) => (s, c),
            (s, c) => panic!("handshake failed: server side {s:?}, client side {c:?}"),
        }
    }
}

/// One connection over loopback: handshake, then a 4-byte echo so that a server
/// rejecting the client's certificate (after a TLS 1.3 client already finished) is
/// seen by the client too.
pub async fn exchange(server: Arc<ServerConfig>, client: Arc<ClientConfig>) -> Outcome {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let acceptor = TlsAcceptor::from(server);
    let server_side = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.map_err(|e| e.to_string())?;
        let mut tls = acceptor
            .accept(tcp)
            .await
            .map_err(|e| handshake_failure_reason(&e))?;
        let peer = peer_identity(tls.get_ref().1).ok();
        let mut buf = [0u8; 4];
        tls.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
        tls.write_all(&buf).await.map_err(|e| e.to_string())?;
        tls.flush().await.map_err(|e| e.to_string())?;
        Ok::<_, String>(peer)
    });
    let client_side = async {
        let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        // The SNI names the destination route, as Istio's outbound SNI does; it is
        // not what the server's identity is checked against.
        let sni = ServerName::try_from("outbound_.8080_._.httpbin.default.svc.cluster.local")
            .expect("sni");
        let mut tls = TlsConnector::from(client)
            .connect(sni, tcp)
            .await
            .map_err(|e| handshake_failure_reason(&e))?;
        let peer = peer_identity(tls.get_ref().1).map_err(|e| e.to_string())?;
        let alpn = tls.get_ref().1.alpn_protocol().map(|p| p.to_vec());
        tls.write_all(b"ping")
            .await
            .map_err(|e| handshake_failure_reason(&e))?;
        let mut buf = [0u8; 4];
        tls.read_exact(&mut buf)
            .await
            .map_err(|e| handshake_failure_reason(&e))?;
        assert_eq!(&buf, b"ping");
        Ok::<_, String>((peer, alpn))
    };
    let client_result = tokio::time::timeout(STEP, client_side)
        .await
        .unwrap_or_else(|_| Err("client timed out".into()));
    let server_result = match tokio::time::timeout(STEP, server_side).await {
        Ok(Ok(r)) => r,
        Ok(Err(join)) => Err(format!("server task failed: {join}")),
        Err(_) => Err("server timed out".into()),
    };
    let (client, alpn) = match client_result {
        Ok((peer, alpn)) => (Ok(peer), alpn),
        Err(e) => (Err(e), None),
    };
    Outcome {
        server: server_result,
        client,
        alpn,
    }
}
