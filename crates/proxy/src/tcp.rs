//! Plain TCP: inbound ports the application serves as TCP (or TLS it
//! terminates itself) are forwarded byte for byte (ports of unknown protocol
//! are sniffed first: [`crate::sniff`]); captured outbound TCP to a service
//! follows its VirtualService `tcp` route ([`TcpRoute`]).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpSocket, TcpStream};

use crate::lb::Cluster;

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
