//! Captured outbound connections (15001): routed by where the application
//! sent them. A service's VIP and port pick its cluster; the port's
//! protocol (its name or appProtocol) says HTTP or TCP, else the first
//! bytes do. HTTP is served by the same request path as the explicit proxy
//! (routes by port and Host); a destination the mesh does not know is
//! reached directly (ALLOW_ANY, PassthroughCluster) or refused
//! (REGISTRY_ONLY, BlackHoleCluster).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use hyper_util::rt::TokioExecutor;
use hyper_util::server::conn::auto;
use tokio::net::TcpStream;
use wire::pb;

use crate::http::{ListenerRt, Shared};
use crate::lb::Cluster;
use crate::listeners::{Downstream, Drain, serve_http};
use crate::sniff;
use crate::tls::io::MaybeTls;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

pub(crate) async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    rt: &Arc<ArcSwap<ListenerRt>>,
    shared: &Arc<Shared>,
    builder: &auto::Builder<TokioExecutor>,
    drain: Drain,
) {
    let Some(dst) = stream
        .local_addr()
        .ok()
        .and_then(|local| super::original_dst(&stream, local))
    else {
        // Not redirected: someone connected to 15001 itself. Serving it
        // would let it pick any destination as this workload.
        tracing::debug!(%peer, "a connection to the outbound capture port that was not redirected; closed");
        return;
    };
    let Some(snapshot) = shared.store.current() else {
        return;
    };
    let vip = snapshot.vips.get(&dst).cloned();
    let declared = vip.as_ref().map(|v| v.protocol);
    let http = match declared {
        Some(pb::Protocol::Http | pb::Protocol::Http2 | pb::Protocol::Grpc) => true,
        Some(pb::Protocol::Tcp | pb::Protocol::Tls | pb::Protocol::Https) => false,
        _ => sniff::detect(&stream).await.is_http(),
    };
    if http {
        let mut client = Downstream::plain(peer);
        client.original_dst = Some(dst);
        serve_http(MaybeTls::Plain(stream), client, rt, shared, builder, drain);
        return;
    }
    match vip {
        Some(vip) => match &vip.tcp_route {
            None => to_cluster(stream, &vip.cluster, dst, &shared.telemetry).await,
            Some(route) => match route.pick() {
                Some(cluster) => to_cluster(stream, cluster, dst, &shared.telemetry).await,
                None => {
                    tracing::info!(%peer, original_dst = %dst, cluster = %vip.cluster.name, flags = "NR", "the service's TCP route has no cluster; connection closed");
                }
            },
        },
        None if snapshot.registry_only => {
            tracing::info!(%peer, original_dst = %dst, cluster = super::BLACKHOLE_CLUSTER, "TCP destination not in the mesh registry: connection closed (outboundTrafficPolicy REGISTRY_ONLY)");
        }
        None => passthrough(stream, dst).await,
    }
}

/// A TCP connection to a service: one of its endpoints, over mesh mTLS
/// where the endpoint has a sidecar.
async fn to_cluster(
    stream: TcpStream,
    cluster: &Cluster,
    dst: SocketAddr,
    telemetry: &crate::telemetry::Telemetry,
) {
    let Some(endpoint) = cluster.pick(None, None) else {
        tracing::info!(cluster = %cluster.name, original_dst = %dst, flags = "UH", "no healthy endpoint; connection closed");
        return;
    };
    let _active = endpoint.start();
    let authority = &endpoint.authority;
    let upstream = match tokio::time::timeout(
        CONNECT_TIMEOUT,
        TcpStream::connect(authority.as_str()),
    )
    .await
    {
        Ok(Ok(s)) => s,
        _ => {
            tracing::info!(cluster = %cluster.name, upstream = %authority, flags = "UF", "upstream connect failed; connection closed");
            return;
        }
    };
    let _ = upstream.set_nodelay(true);
    let tls = endpoint.pool.tls();
    let Ok(mut upstream) =
        crate::tls::outbound::secure_tcp(upstream, authority, tls.as_deref()).await
    else {
        return;
    };
    tracing::debug!(cluster = %cluster.name, upstream = %authority, "TCP connection");
    let mut stream =
        telemetry.meter_outbound_tcp(stream, endpoint.meta.clone(), cluster.service.clone());
    let _ = tokio::io::copy_bidirectional(&mut stream, &mut upstream).await;
}

/// ALLOW_ANY: the destination itself, as the application asked.
async fn passthrough(mut stream: TcpStream, dst: SocketAddr) {
    let Ok(Ok(mut upstream)) = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(dst)).await
    else {
        tracing::info!(original_dst = %dst, cluster = super::PASSTHROUGH_CLUSTER, flags = "UF", "upstream connect failed; connection closed");
        return;
    };
    tracing::debug!(original_dst = %dst, cluster = super::PASSTHROUGH_CLUSTER, "TCP passthrough");
    let _ = upstream.set_nodelay(true);
    let _ = tokio::io::copy_bidirectional(&mut stream, &mut upstream).await;
}
