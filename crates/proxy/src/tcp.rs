//! Plain TCP: inbound ports the application serves as TCP (or TLS it
//! terminates itself) are forwarded byte for byte (ports of unknown protocol
//! are sniffed first: [`crate::sniff`]); captured outbound TCP to a service
//! follows its VirtualService `tcp` route ([`TcpRoute`]); a gateway's TCP and
//! TLS servers route whole connections by their `tcp` and `tls` routes
//! ([`L4Routes`]), TLS by the ClientHello's SNI without terminating it.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use wire::pb;

use crate::lb::Cluster;
use crate::telemetry::Telemetry;
use crate::telemetry::access_log::{AccessLogs, Entry};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Forwards a connection byte for byte to the application at `app`,
/// connecting from `source` (any port) when given.
pub async fn forward_from<S>(mut downstream: S, source: Option<IpAddr>, app: SocketAddr)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut upstream = match tokio::time::timeout(CONNECT_TIMEOUT, connect(source, app)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            return tracing::debug!(%app, error = %e, "cannot connect to the application");
        }
        Err(_) => return tracing::debug!(%app, "connecting to the application timed out"),
    };
    let _ = upstream.set_nodelay(true);
    let _ = tokio::io::copy_bidirectional(&mut downstream, &mut upstream).await;
}

async fn connect(source: Option<IpAddr>, to: SocketAddr) -> std::io::Result<TcpStream> {
    match source {
        None => TcpStream::connect(to).await,
        Some(source) => connect_from(source, to).await,
    }
}

/// A connection to `to` from `source` (any port).
pub(crate) async fn connect_from(source: IpAddr, to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = match source {
        IpAddr::V4(_) => TcpSocket::new_v4()?,
        IpAddr::V6(_) => TcpSocket::new_v6()?,
    };
    if let Err(e) = socket.bind(SocketAddr::new(source, 0)) {
        // IPv6 needs ::6 on the pod's loopback, as Istio's init container adds it.
        tracing::warn!(%source, error = %e, "cannot use the inbound passthrough source address");
        return Err(e);
    }
    socket.connect(to).await
}

/// A VirtualService `tcp` route on a service port, as a sidecar applies it
/// to captured connections: one of its clusters, by weight, per connection.
pub struct TcpRoute {
    /// Clusters with a weight above zero, and the running total of the
    /// weights up to each (for one draw over the sum).
    clusters: Vec<(Arc<Cluster>, u64)>,
}

impl TcpRoute {
    /// The route's clusters the proxy has; destinations it does not have
    /// (a subset no DestinationRule defines) are left out, as Envoy leaves
    /// out an unknown cluster: their share goes to the others.
    pub fn new(
        route: &[wire::pb::WeightedCluster],
        clusters: &HashMap<String, Arc<Cluster>>,
    ) -> TcpRoute {
        let mut total = 0u64;
        let clusters = route
            .iter()
            .filter(|w| w.weight > 0)
            .filter_map(|w| {
                let cluster = clusters.get(&w.cluster);
                if cluster.is_none() {
                    tracing::warn!(cluster = %w.cluster, "TCP route to a cluster this proxy does not have; left out");
                }
                cluster.map(|c| {
                    total += u64::from(w.weight);
                    (Arc::clone(c), total)
                })
            })
            .collect();
        TcpRoute { clusters }
    }

    /// Every cluster the route may pick.
    pub fn clusters(&self) -> impl Iterator<Item = &Arc<Cluster>> {
        self.clusters.iter().map(|(c, _)| c)
    }

    /// The cluster for a new connection; `None`: the route has none.
    pub fn pick(&self) -> Option<&Arc<Cluster>> {
        let total = self.clusters.last()?.1;
        let draw = rand::random_range(0..total);
        self.clusters
            .iter()
            .find(|(_, upto)| draw < *upto)
            .map(|(c, _)| c)
    }
}

/// A gateway TCP or TLS server's routes (`pb::Listener::l4_routes`), or a
/// service TLS port's (`pb::Cluster::tls_routes`): the first whose SNI
/// names match takes a connection.
pub struct L4Routes {
    routes: Vec<L4Route>,
    /// Read the ClientHello's SNI before routing (a TLS server).
    pub tls: bool,
    /// Istio's AUTO_PASSTHROUGH: an SNI that names a cluster reaches it.
    auto_passthrough: bool,
}

struct L4Route {
    /// Lowercase; "*.example.com" wildcards, "*" any; empty: any connection.
    sni_hosts: Vec<String>,
    clusters: TcpRoute,
    origin: Arc<str>,
}

impl L4Routes {
    /// `auto_passthrough` counts only with `tls`.
    pub fn new(
        routes: &[pb::L4Route],
        tls: bool,
        auto_passthrough: bool,
        clusters: &HashMap<String, Arc<Cluster>>,
    ) -> Result<Self, String> {
        let routes = routes
            .iter()
            .enumerate()
            .map(|(i, r)| {
                if !tls && !r.sni_hosts.is_empty() {
                    return Err(format!(
                        "l4_routes[{i}]: SNI hosts on a TCP listener (only TLS has SNI)"
                    ));
                }
                Ok(L4Route {
                    sni_hosts: r.sni_hosts.iter().map(|h| h.to_ascii_lowercase()).collect(),
                    clusters: TcpRoute::new(&r.clusters, clusters),
                    origin: r.origin.as_str().into(),
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(L4Routes {
            routes,
            tls,
            auto_passthrough: tls && auto_passthrough,
        })
    }

    /// The cluster for a connection with this SNI, and the route's origin.
    /// `None`: no route matches (or the matching route has no cluster).
    pub fn pick(
        &self,
        sni: Option<&str>,
        clusters: &HashMap<String, Arc<Cluster>>,
    ) -> Option<(Arc<Cluster>, Arc<str>)> {
        let sni = sni.map(str::to_ascii_lowercase);
        let matched = self.routes.iter().find(|r| {
            r.sni_hosts.is_empty()
                || sni
                    .as_deref()
                    .is_some_and(|sni| r.sni_hosts.iter().any(|h| sni_matches(h, sni)))
        });
        if let Some(r) = matched {
            return r.clusters.pick().map(|c| (c.clone(), r.origin.clone()));
        }
        let name = auto_passthrough_cluster(sni.as_deref()?).filter(|_| self.auto_passthrough)?;
        let cluster = clusters.get(&name)?;
        Some((cluster.clone(), "AUTO_PASSTHROUGH".into()))
    }
}

/// A VirtualService `sniHosts` entry against a ClientHello's server name
/// (both lowercase): exact, "*" for any, or "*.example.com" for any name
/// under example.com.
fn sni_matches(host: &str, sni: &str) -> bool {
    match host.strip_prefix('*') {
        Some("") => true,
        Some(suffix) => {
            suffix.starts_with('.') && sni.len() > suffix.len() && sni.ends_with(suffix)
        }
        None => host == sni,
    }
}

/// The cluster an AUTO_PASSTHROUGH SNI names: Istio's
/// "outbound_.<port>_.<subset>_.<host>" is cluster "outbound|<port>|<subset>|<host>".
fn auto_passthrough_cluster(sni: &str) -> Option<String> {
    let rest = sni.strip_prefix("outbound_.")?;
    let (port, rest) = rest.split_once("_.")?;
    let (subset, host) = rest.split_once("_.")?;
    port.parse::<u16>().ok()?;
    (!host.is_empty()).then(|| format!("outbound|{port}|{subset}|{host}"))
}

/// How many bytes of a ClientHello are read, at most, to find its SNI.
const MAX_CLIENT_HELLO: usize = 16 * 1024;
/// A client that has not sent its ClientHello by then is dropped.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// Reads a TLS ClientHello without answering it: its server name, and the
/// bytes read, which the upstream must receive first (the gateway never
/// terminates this TLS). rustls parses the hello.
pub async fn read_client_hello<S: AsyncRead + Unpin>(
    stream: &mut S,
) -> Result<(Option<String>, Vec<u8>), String> {
    let read = async {
        let mut acceptor = rustls::server::Acceptor::default();
        let mut seen = Vec::with_capacity(1024);
        let mut chunk = [0u8; 2048];
        loop {
            let n = stream
                .read(&mut chunk)
                .await
                .map_err(|e| format!("reading the ClientHello: {e}"))?;
            if n == 0 {
                return Err("closed before a complete ClientHello".to_string());
            }
            seen.extend_from_slice(&chunk[..n]);
            let mut fresh = &chunk[..n];
            while !fresh.is_empty() {
                let used = acceptor
                    .read_tls(&mut fresh)
                    .map_err(|e| format!("not a TLS ClientHello: {e}"))?;
                if used == 0 {
                    break;
                }
            }
            match acceptor.accept() {
                Ok(Some(hello)) => {
                    let sni = hello.client_hello().server_name().map(str::to_owned);
                    return Ok((sni, seen));
                }
                Ok(None) if seen.len() < MAX_CLIENT_HELLO => continue,
                Ok(None) => return Err("ClientHello too large".to_string()),
                Err((e, _)) => return Err(format!("not a TLS ClientHello: {e}")),
            }
        }
    };
    tokio::time::timeout(HELLO_TIMEOUT, read)
        .await
        .unwrap_or_else(|_| Err("no ClientHello in time".to_string()))
}

/// What a proxied TCP connection was, for its access log line.
pub struct TcpConn<'a> {
    pub peer: SocketAddr,
    /// The ClientHello's server name, if one was read.
    pub sni: Option<&'a str>,
    /// The route that chose the cluster ("VirtualService/ns/name").
    pub route: Option<&'a str>,
    /// Bytes the client sent that were read before forwarding began (a
    /// ClientHello): the upstream receives them first.
    pub prefix: &'a [u8],
    /// The client side's access logs, if it has any.
    pub logs: Option<std::sync::Arc<AccessLogs>>,
}

/// A connection to a service port (captured, or a CONNECT tunnel to one):
/// a TLS one by its ClientHello's SNI when the port has VirtualService
/// `tls` routes (no route matches: the service's own cluster), else by the
/// port's `tcp` route, else to the service's cluster. `snapshot` is dropped
/// once the cluster is chosen: a long connection must not keep a config alive.
pub async fn to_service<S>(
    mut stream: S,
    vip: &crate::snapshot::Vip,
    snapshot: Arc<crate::snapshot::Snapshot>,
    peer: SocketAddr,
    logs: Option<Arc<AccessLogs>>,
    telemetry: &Telemetry,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let Some(routes) = &vip.tls_routes else {
        drop(snapshot);
        let cluster = match &vip.tcp_route {
            None => &vip.cluster,
            Some(route) => match route.pick() {
                Some(cluster) => cluster,
                None => {
                    return tracing::info!(%peer, cluster = %vip.cluster.name, flags = "NR", "the service's TCP route has no cluster; connection closed");
                }
            },
        };
        let conn = TcpConn {
            peer,
            sni: None,
            route: None,
            prefix: &[],
            logs,
        };
        return to_cluster(stream, cluster, conn, telemetry).await;
    };
    let (sni, hello) = match read_client_hello(&mut stream).await {
        Ok(read) => read,
        Err(why) => {
            return tracing::debug!(%peer, cluster = %vip.cluster.name, "TLS connection closed: {why}");
        }
    };
    let picked = routes.pick(sni.as_deref(), &snapshot.clusters);
    drop(snapshot);
    let (cluster, route) = match &picked {
        Some((cluster, origin)) => (cluster, Some(&**origin)),
        None => (&vip.cluster, None),
    };
    let conn = TcpConn {
        peer,
        sni: sni.as_deref(),
        route,
        prefix: &hello,
        logs,
    };
    to_cluster(stream, cluster, conn, telemetry).await;
}

/// A TCP connection to a service: one of its endpoints, over mesh mTLS
/// where the endpoint has a sidecar, metered (Istio's TCP metrics, as the
/// source reporter) and logged when it closes. `stream` is any byte stream
/// (an accepted connection, an upgraded CONNECT).
pub async fn to_cluster<S>(stream: S, cluster: &Cluster, conn: TcpConn<'_>, telemetry: &Telemetry)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let start = (SystemTime::now(), Instant::now());
    let log = |flags: &str, upstream: Option<&str>, received: u64, sent: u64| {
        if let Some(logs) = &conn.logs {
            logs.write(&Entry {
                upstream_host: upstream,
                upstream_cluster: Some(&cluster.name),
                requested_server_name: conn.sni,
                route_name: conn.route,
                ..Entry::tcp(start, flags, (received, sent), conn.peer)
            });
        }
    };
    let Some(endpoint) = cluster.pick(None, None) else {
        tracing::info!(cluster = %cluster.name, peer = %conn.peer, flags = "UH", "no healthy endpoint; connection closed");
        return log("UH", None, conn.prefix.len() as u64, 0);
    };
    let _active = endpoint.start();
    let authority = &endpoint.authority;
    let Ok(mut upstream) = endpoint.pool().connect_tcp().await else {
        tracing::info!(cluster = %cluster.name, upstream = %authority, flags = "UF", "upstream connect failed; connection closed");
        return log("UF", Some(authority.as_str()), conn.prefix.len() as u64, 0);
    };
    tracing::debug!(cluster = %cluster.name, upstream = %authority, "TCP connection");
    let mut stream =
        telemetry.meter_outbound_tcp(stream, endpoint.meta.clone(), cluster.service.clone());
    stream.count_received(conn.prefix.len() as u64);
    if !conn.prefix.is_empty() && upstream.write_all(conn.prefix).await.is_err() {
        return log("UF", Some(authority.as_str()), conn.prefix.len() as u64, 0);
    }
    let (received, sent) = tokio::io::copy_bidirectional(&mut stream, &mut upstream)
        .await
        .unwrap_or_default();
    log(
        "-",
        Some(authority.as_str()),
        received + conn.prefix.len() as u64,
        sent,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sni_hosts_match_exactly_or_by_wildcard() {
        assert!(sni_matches("a.example.com", "a.example.com"));
        assert!(!sni_matches("a.example.com", "b.example.com"));
        assert!(sni_matches("*.example.com", "a.example.com"));
        assert!(sni_matches("*.example.com", "x.a.example.com"));
        assert!(!sni_matches("*.example.com", "example.com"));
        assert!(!sni_matches("*.example.com", "aexample.com"));
        assert!(sni_matches("*", "anything"));
    }

    #[test]
    fn auto_passthrough_sni_names_a_cluster() {
        assert_eq!(
            auto_passthrough_cluster("outbound_.9080_.v1_.reviews.default.svc.cluster.local")
                .as_deref(),
            Some("outbound|9080|v1|reviews.default.svc.cluster.local")
        );
        assert_eq!(
            auto_passthrough_cluster("outbound_.443_._.api.example.com").as_deref(),
            Some("outbound|443||api.example.com")
        );
        assert_eq!(auto_passthrough_cluster("outbound_.x_._.h"), None);
        assert_eq!(auto_passthrough_cluster("reviews.default"), None);
    }

    #[tokio::test]
    async fn the_client_hello_is_read_whole_and_its_sni_found() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let client = tokio::spawn(async move {
            let roots = rustls::RootCertStore::empty();
            let config = rustls::ClientConfig::builder_with_provider(identity::crypto_provider())
                .with_safe_default_protocol_versions()
                .expect("versions")
                .with_root_certificates(roots)
                .with_no_client_auth();
            let tcp = TcpStream::connect(addr).await.expect("connect");
            let name =
                rustls::pki_types::ServerName::try_from("Backend.Example.com").expect("name");
            // The handshake cannot finish: nobody answers it.
            let _ = tokio_rustls::TlsConnector::from(Arc::new(config))
                .connect(name, tcp)
                .await;
        });
        let (mut stream, _) = listener.accept().await.expect("accept");
        let (sni, bytes) = read_client_hello(&mut stream).await.expect("hello");
        assert!(
            sni.as_deref()
                .is_some_and(|s| s.eq_ignore_ascii_case("backend.example.com")),
            "{sni:?}"
        );
        assert_eq!(bytes[0], 0x16, "the record as the client sent it");
        drop(stream);
        let _ = client.await;

        // Not TLS: refused, not forwarded.
        let plain = tokio::spawn(async move {
            let mut tcp = TcpStream::connect(addr).await.expect("connect");
            let _ = tcp.write_all(b"GET / HTTP/1.1\r\n\r\n").await;
            tcp
        });
        let (mut stream, _) = listener.accept().await.expect("accept");
        assert!(read_client_hello(&mut stream).await.is_err());
        drop(plain.await);
    }
}
