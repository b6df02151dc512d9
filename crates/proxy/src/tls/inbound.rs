//! What an inbound port accepts, by PeerAuthentication mode:
//! - STRICT: mesh mTLS with a client certificate from the mesh roots; a
//!   plaintext connection is closed, with a log line naming the peer;
//! - PERMISSIVE: mesh mTLS if the client's TLS ClientHello offers a mesh
//!   ALPN id (`istio`, `istio-h2`...: what Istio's sidecars and Trellis's
//!   offer), plaintext otherwise, on the same port. TLS without a mesh ALPN
//!   id is the application's own (a client that does its own TLS with a
//!   server that terminates it): passed through untouched, as Istio does;
//! - DISABLE: plaintext only.
//!
//! After a mesh handshake the peer's identity goes with every request on the
//! connection: as the connection's [`MeshPeer`] (for authorization and
//! telemetry) and as `x-forwarded-client-cert` to the application, which is
//! always stripped from what the caller sent (Envoy's SANITIZE_SET).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderValue;
use http::header::HeaderName;
use identity::{PeerIdentity, SpiffeId};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use super::MeshTls;
use crate::snapshot::mtls::MtlsMode;
use crate::snapshot::{ListenerSpec, Serve};
use crate::telemetry::meta::{PeerMeta, Peers};

pub const X_FORWARDED_CLIENT_CERT: HeaderName = HeaderName::from_static("x-forwarded-client-cert");

/// The first byte of every TLS connection: a handshake record.
const TLS_HANDSHAKE: u8 = 0x16;
/// How long a handshake may take before the connection is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long to wait for a client's first byte on a port that may carry a
/// server-first protocol: silence then means plaintext (as tcp's sniffing).
const SNIFF_TIMEOUT: Duration = Duration::from_millis(200);

/// The ALPN ids by which mesh clients mark their mTLS (Istio's list; a
/// Trellis sidecar offers `istio` besides its HTTP version).
const MESH_ALPNS: [&[u8]; 5] = [
    b"istio",
    b"istio-peer-exchange",
    b"istio-http/1.0",
    b"istio-http/1.1",
    b"istio-h2",
];
/// More than any ClientHello needs (one full TLS record and its header).
const MAX_CLIENT_HELLO: usize = 16 * 1024 + 5;

/// The verified peer of a mesh mTLS connection, attached to each of its requests.
#[derive(Clone, Debug)]
pub struct MeshPeer {
    pub identity: Arc<PeerIdentity>,
    /// The peer as telemetry labels it: namespace and principal from its id.
    pub meta: Arc<PeerMeta>,
    /// What the application is told of the peer (`x-forwarded-client-cert`);
    /// `None` when this proxy has no identity to name itself by.
    xfcc: Option<HeaderValue>,
}

impl MeshPeer {
    /// Made once per connection, for all of its requests. The peer's
    /// workload is looked up in the pushed workload data (`peers`) by its
    /// address and certificate.
    pub fn new(
        identity: Arc<PeerIdentity>,
        own: Option<&SpiffeId>,
        address: SocketAddr,
        peers: Option<&Peers>,
    ) -> Self {
        let id = identity.id();
        let meta = match peers {
            Some(p) => p.find(address.ip(), id),
            None => PeerMeta::from_identity(id).interned(),
        };
        let xfcc = own.and_then(|own| HeaderValue::from_str(&identity.xfcc(own)).ok());
        MeshPeer {
            identity,
            meta,
            xfcc,
        }
    }
}

/// A connection the port accepted.
pub enum Accepted {
    Plain(TcpStream),
    Mtls {
        stream: Box<TlsStream<TcpStream>>,
        /// `None`: a TLS client without a certificate (PERMISSIVE only).
        peer: Option<Arc<PeerIdentity>>,
        /// The client negotiated HTTP by ALPN (mesh clients always do for HTTP).
        http: bool,
    },
}

/// Applies the port's mode to a new connection. `None`: refused and closed
/// (the reason is logged here).
pub async fn accept(
    stream: TcpStream,
    peer: SocketAddr,
    spec: &ListenerSpec,
    mesh: Option<&MeshTls>,
) -> Option<Accepted> {
    let refuse = |reason: &str| {
        tracing::warn!(listener = %spec.name, %peer, mode = ?spec.mtls, reason, "inbound connection refused");
        None
    };
    match (spec.mtls, mesh) {
        (MtlsMode::Disable, _) => Some(Accepted::Plain(stream)),
        // Without a certificate there is no mesh TLS to offer.
        (MtlsMode::Permissive, None) => Some(Accepted::Plain(stream)),
        (MtlsMode::Strict, None) => {
            refuse("mTLS is STRICT but this proxy has no workload certificate")
        }
        (MtlsMode::Permissive, Some(mesh)) => {
            let wait = match spec.serve {
                Serve::Http => HANDSHAKE_TIMEOUT,
                _ => SNIFF_TIMEOUT,
            };
            match first_byte(&stream, wait).await {
                Some(TLS_HANDSHAKE) if offers_mesh_alpn(&stream).await => {
                    handshake(stream, peer, spec, mesh, false).await
                }
                Some(TLS_HANDSHAKE) => {
                    tracing::debug!(listener = %spec.name, %peer, "TLS without a mesh ALPN id: the application's own; passed through");
                    Some(Accepted::Plain(stream))
                }
                _ => Some(Accepted::Plain(stream)),
            }
        }
        (MtlsMode::Strict, Some(mesh)) => match first_byte(&stream, HANDSHAKE_TIMEOUT).await {
            Some(TLS_HANDSHAKE) => handshake(stream, peer, spec, mesh, true).await,
            Some(_) => {
                refuse("plaintext on a port whose PeerAuthentication is STRICT: mTLS is required")
            }
            None => refuse("no TLS handshake: the client sent nothing or closed the connection"),
        },
    }
}

/// The first byte the client sent, without consuming it; `None` if it sent
/// nothing within `wait` or closed the connection.
async fn first_byte(stream: &TcpStream, wait: Duration) -> Option<u8> {
    let mut buf = [0u8; 1];
    match tokio::time::timeout(wait, stream.peek(&mut buf)).await {
        Ok(Ok(1)) => Some(buf[0]),
        _ => None,
    }
}

/// Whether the client's ClientHello (peeked, not consumed: the bytes stay
/// for whoever serves the connection) offers a mesh ALPN id. A ClientHello
/// that does not come whole within the handshake timeout, or does not
/// parse, is no mesh client's.
async fn offers_mesh_alpn(stream: &TcpStream) -> bool {
    let deadline = tokio::time::Instant::now() + HANDSHAKE_TIMEOUT;
    let mut buf = vec![0u8; MAX_CLIENT_HELLO];
    loop {
        let n = match tokio::time::timeout_at(deadline, stream.peek(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => n,
            _ => return false,
        };
        match client_hello_alpn(&buf[..n]) {
            Ok(Some(offered)) => return offered.iter().any(|p| MESH_ALPNS.contains(&p.as_slice())),
            Ok(None) if n < buf.len() => {}
            _ => return false,
        }
        // peek returns at once while bytes are buffered: wait for more.
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// The ALPN ids a ClientHello offers, parsed by rustls; `Ok(None)`: the
/// bytes are not a whole ClientHello yet.
fn client_hello_alpn(mut bytes: &[u8]) -> Result<Option<Vec<Vec<u8>>>, ()> {
    let mut acceptor = rustls::server::Acceptor::default();
    while !bytes.is_empty() {
        acceptor.read_tls(&mut bytes).map_err(|_| ())?;
    }
    match acceptor.accept() {
        Ok(Some(accepted)) => Ok(Some(
            accepted
                .client_hello()
                .alpn()
                .map(|ids| ids.map(<[u8]>::to_vec).collect())
                .unwrap_or_default(),
        )),
        Ok(None) => Ok(None),
        Err(_) => Err(()),
    }
}

async fn handshake(
    stream: TcpStream,
    peer: SocketAddr,
    spec: &ListenerSpec,
    mesh: &MeshTls,
    strict: bool,
) -> Option<Accepted> {
    let acceptor = TlsAcceptor::from(mesh.server_config(strict));
    let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            let reason = identity::handshake_failure_reason(&e);
            // The verifier's own line names the peer's certificate; this one
            // names the connection, so an operator can tell who was refused and why.
            tracing::warn!(listener = %spec.name, %peer, mode = ?spec.mtls, reason, "inbound mTLS handshake refused; connection closed");
            return None;
        }
        Err(_) => {
            tracing::warn!(listener = %spec.name, %peer, mode = ?spec.mtls, "inbound mTLS handshake timed out; connection closed");
            return None;
        }
    };
    let (_, conn) = stream.get_ref();
    let identity = match identity::peer_identity(conn) {
        Ok(id) => Some(Arc::new(id)),
        // The verifier already refused any certificate that is not a mesh one;
        // what is left is PERMISSIVE's "no certificate at all".
        Err(_) => None,
    };
    let http = matches!(
        conn.alpn_protocol(),
        Some(p) if p == identity::ALPN_H2 || p == identity::ALPN_HTTP11
    );
    tracing::debug!(listener = %spec.name, %peer, peer_identity = ?identity.as_ref().map(|i| i.id().to_string()), "inbound mTLS connection");
    Some(Accepted::Mtls {
        stream: Box::new(stream),
        peer: identity,
        http,
    })
}

/// Sets what the application learns of the peer: the caller's own
/// `x-forwarded-client-cert` is dropped; a verified peer's is set.
pub fn decorate(headers: &mut http::HeaderMap, peer: Option<&MeshPeer>) {
    headers.remove(X_FORWARDED_CLIENT_CERT);
    if let Some(xfcc) = peer.and_then(|p| p.xfcc.clone()) {
        headers.insert(X_FORWARDED_CLIENT_CERT, xfcc);
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    use super::*;
    use crate::snapshot::Direction;
    use crate::tls::testing::TestCa;

    #[derive(Debug, PartialEq)]
    enum Outcome {
        Refused,
        Plain,
        Mtls(Option<String>),
    }

    enum Client {
        Plaintext,
        Mesh(Arc<MeshTls>),
        /// TLS of the client's own: a valid mesh certificate even, but no
        /// mesh ALPN id (h2, http/1.1 as a browser or curl offers).
        AppTls(Arc<MeshTls>),
    }

    async fn accept_one(mode: MtlsMode, server: Option<Arc<MeshTls>>, client: Client) -> Outcome {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let spec = ListenerSpec {
            name: "inbound|8080".into(),
            bind: addr,
            direction: Direction::Inbound,
            serve: Serve::Http,
            app_http2: false,
            app_port: 8080,
            route_config: "".into(),
            mtls: mode,
            gateway_tls: None,
            https_redirect: false,
            path_normalization: Default::default(),
            num_trusted_proxies: 0,
        };
        let client = tokio::spawn(async move {
            let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
            let app_tls = matches!(client, Client::AppTls(_));
            match client {
                Client::Plaintext => {
                    let _ = tcp.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").await;
                    // Keep the connection open until the server decided.
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
                Client::Mesh(mesh) | Client::AppTls(mesh) => {
                    let server_id =
                        SpiffeId::new("cluster.local", "default", "server").expect("id");
                    let mut config = mesh.client_config(&server_id, false).expect("config");
                    if app_tls {
                        let mut own = (*config).clone();
                        own.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
                        config = Arc::new(own);
                    }
                    let name = rustls_pki_types::ServerName::try_from("server.mesh").expect("name");
                    let _ = tokio_rustls::TlsConnector::from(config)
                        .connect(name, tcp)
                        .await;
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
            }
        });
        let (stream, peer) = listener.accept().await.expect("accept");
        let outcome = match accept(stream, peer, &spec, server.as_deref()).await {
            None => Outcome::Refused,
            Some(Accepted::Plain(_)) => Outcome::Plain,
            Some(Accepted::Mtls { peer, http, .. }) => {
                assert!(http, "the mesh client named HTTP/1.1 by ALPN");
                Outcome::Mtls(peer.map(|p| p.id().to_string()))
            }
        };
        let _ = client.await;
        outcome
    }

    #[tokio::test]
    async fn each_mode_accepts_what_it_should() {
        let ca = TestCa::new();
        let server = ca.mesh_tls("server");
        let client = || Client::Mesh(ca.mesh_tls("client"));
        let client_id = Some("spiffe://cluster.local/ns/default/sa/client".to_string());
        use MtlsMode::*;
        let cases = [
            (
                "STRICT refuses plaintext",
                Strict,
                Some(&server),
                Client::Plaintext,
                Outcome::Refused,
            ),
            (
                "STRICT takes mesh mTLS",
                Strict,
                Some(&server),
                client(),
                Outcome::Mtls(client_id.clone()),
            ),
            (
                "PERMISSIVE takes plaintext",
                Permissive,
                Some(&server),
                Client::Plaintext,
                Outcome::Plain,
            ),
            (
                "PERMISSIVE takes mesh mTLS",
                Permissive,
                Some(&server),
                client(),
                Outcome::Mtls(client_id.clone()),
            ),
            (
                "PERMISSIVE passes TLS without a mesh ALPN id through",
                Permissive,
                Some(&server),
                Client::AppTls(ca.mesh_tls("client")),
                Outcome::Plain,
            ),
            (
                "STRICT takes any TLS (and checks the certificate)",
                Strict,
                Some(&server),
                Client::AppTls(ca.mesh_tls("client")),
                Outcome::Mtls(client_id.clone()),
            ),
            (
                "DISABLE does not terminate TLS",
                Disable,
                Some(&server),
                client(),
                Outcome::Plain,
            ),
            (
                "STRICT without a certificate refuses all",
                Strict,
                None,
                client(),
                Outcome::Refused,
            ),
            (
                "PERMISSIVE without a certificate is plaintext",
                Permissive,
                None,
                Client::Plaintext,
                Outcome::Plain,
            ),
        ];
        for (name, mode, server, client, want) in cases {
            assert_eq!(
                accept_one(mode, server.cloned(), client).await,
                want,
                "{name}"
            );
        }
    }

    /// The ALPN ids come from rustls's parse of the peeked bytes: a whole
    /// ClientHello gives them, a part of one asks for more, garbage is no
    /// ClientHello.
    #[test]
    fn client_hello_alpn_is_read_from_the_first_bytes() {
        let hello = |alpn: &[&[u8]]| -> Vec<u8> {
            let mut config =
                rustls::ClientConfig::builder_with_provider(identity::crypto_provider())
                    .with_safe_default_protocol_versions()
                    .unwrap()
                    .with_root_certificates(rustls::RootCertStore::empty())
                    .with_no_client_auth();
            config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
            let name = rustls_pki_types::ServerName::try_from("app.test").unwrap();
            let mut conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
            let mut out = Vec::new();
            conn.write_tls(&mut out).unwrap();
            out
        };
        let mesh = hello(&[b"h2", b"istio"]);
        assert_eq!(
            client_hello_alpn(&mesh),
            Ok(Some(vec![b"h2".to_vec(), b"istio".to_vec()]))
        );
        assert_eq!(client_hello_alpn(&mesh[..mesh.len() / 2]), Ok(None));
        assert_eq!(client_hello_alpn(&hello(&[])), Ok(Some(Vec::new())));
        assert!(client_hello_alpn(b"\x16\x03\x01\x00\x05hello").is_err());
    }

    /// A caller's own header never reaches the application as if the mesh had
    /// set it (the e2e test checks the header the mesh sets for a real peer).
    #[test]
    fn a_callers_xfcc_is_dropped() {
        let mut headers = http::HeaderMap::new();
        headers.insert(
            X_FORWARDED_CLIENT_CERT,
            HeaderValue::from_static("URI=spiffe://forged"),
        );
        decorate(&mut headers, None);
        assert!(headers.get(X_FORWARDED_CLIENT_CERT).is_none());
    }
}
