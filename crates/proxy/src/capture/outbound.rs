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
use crate::listeners::{Downstream, Drain, serve_http};
use crate::sniff;
use crate::telemetry::access_log::{AccessLogs, Entry};
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
    let Some(mut snapshot) = shared.store.current() else {
        return;
    };
    let mut vip = snapshot.vips.get(&dst).cloned();
    // A VIP of the on-demand directory whose config this proxy lacks: its
    // port's protocol is known already (see crate::on_demand).
    let on_demand = match (&vip, shared.store.on_demand()) {
        (None, Some(o)) => o
            .directory()
            .at(dst)
            .map(|(_, protocol)| (o.clone(), protocol)),
        _ => None,
    };
    let declared = vip
        .as_ref()
        .map(|v| v.protocol)
        .or(on_demand.as_ref().map(|(_, p)| *p));
    let http = match declared {
        Some(pb::Protocol::Http | pb::Protocol::Http2 | pb::Protocol::Grpc) => true,
        Some(pb::Protocol::Tcp | pb::Protocol::Tls | pb::Protocol::Https) => false,
        _ => sniff::detect(&stream).await.is_http(),
    };
    if http {
        // Its requests wait for the host's routes where they are routed.
        let mut client = Downstream::plain(peer);
        client.original_dst = Some(dst);
        serve_http(MaybeTls::Plain(stream), client, rt, shared, builder, drain);
        return;
    }
    if let Some((on_demand, _)) = on_demand {
        match on_demand.for_connection(&shared.store, snapshot, dst).await {
            Ok(s) => snapshot = s,
            Err(e) => {
                // Envoy's tcp_proxy with no cluster: the connection is closed.
                tracing::info!(%peer, original_dst = %dst, error = %e, flags = "NC", "connection to a host discovered on demand closed");
                return;
            }
        }
        vip = snapshot.vips.get(&dst).cloned();
    }
    let logs = crate::listeners::client_logs(shared, &snapshot);
    match vip {
        Some(vip) => {
            crate::tcp::to_service(stream, &vip, snapshot, peer, logs, &shared.telemetry).await;
        }
        None if snapshot.registry_only => {
            tracing::info!(%peer, original_dst = %dst, cluster = super::BLACKHOLE_CLUSTER, "TCP destination not in the mesh registry: connection closed (outboundTrafficPolicy REGISTRY_ONLY)");
            let start = (std::time::SystemTime::now(), std::time::Instant::now());
            // Counted (opened and closed at once) and logged as Envoy's
            // tcp_proxy to a cluster with no hosts: flag UH.
            drop(
                shared
                    .telemetry
                    .meter_unrouted_tcp(stream, super::BLACKHOLE_CLUSTER),
            );
            if let Some(logs) = logs {
                logs.write(&Entry {
                    upstream_cluster: Some(super::BLACKHOLE_CLUSTER),
                    ..Entry::tcp(start, "UH", (0, 0), peer)
                });
            }
        }
        None => passthrough(stream, peer, dst, logs, &shared.telemetry).await,
    }
}

/// ALLOW_ANY: the destination itself, as the application asked; metered
/// and logged as Istio's PassthroughCluster.
async fn passthrough(
    stream: TcpStream,
    peer: SocketAddr,
    dst: SocketAddr,
    logs: Option<Arc<AccessLogs>>,
    telemetry: &crate::telemetry::Telemetry,
) {
    let start = (std::time::SystemTime::now(), std::time::Instant::now());
    let upstream_host = dst.to_string();
    let log = |flags: &str, received: u64, sent: u64| {
        if let Some(logs) = &logs {
            logs.write(&Entry {
                upstream_host: Some(&upstream_host),
                upstream_cluster: Some(super::PASSTHROUGH_CLUSTER),
                ..Entry::tcp(start, flags, (received, sent), peer)
            });
        }
    };
    let mut stream = telemetry.meter_unrouted_tcp(stream, super::PASSTHROUGH_CLUSTER);
    let Ok(Ok(mut upstream)) = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(dst)).await
    else {
        tracing::info!(original_dst = %dst, cluster = super::PASSTHROUGH_CLUSTER, flags = "UF", "upstream connect failed; connection closed");
        return log("UF", 0, 0);
    };
    tracing::debug!(original_dst = %dst, cluster = super::PASSTHROUGH_CLUSTER, "TCP passthrough");
    let _ = upstream.set_nodelay(true);
    let (received, sent) = tokio::io::copy_bidirectional(&mut stream, &mut upstream)
        .await
        .unwrap_or_default();
    log("-", received, sent);
}
