//! Captured inbound connections (15006): each is served by the inbound
//! listener of the port it was sent to — the same PeerAuthentication,
//! authorization and protocol handling as a bound port — or, for a port no
//! Service names, passed through to the application (Istio's
//! InboundPassthroughCluster) under the workload's PeerAuthentication and
//! TCP authorization policies.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::net::TcpStream;

use crate::http::{ListenerRt, Shared};
use crate::policy::authz::{Attrs, Decision};
use crate::snapshot::{Direction, ListenerSpec, Serve};
use crate::tls::inbound::{self, Accepted};

/// Istio's name for where passed-through inbound connections go.
const INBOUND_PASSTHROUGH_CLUSTER: &str = "InboundPassthroughCluster";

/// The source of the proxy's passed-through connections (Istio's): the
/// capture rules leave connections from it alone, where one from the pod's
/// own address would be captured back into 15006.
const SOURCE_V4: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 6));
const SOURCE_V6: IpAddr = IpAddr::V6(Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 6));

/// Where the proxy's connections to the application come from, for a
/// destination of `ip`'s family.
pub(crate) fn passthrough_source(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => SOURCE_V4,
        IpAddr::V6(_) => SOURCE_V6,
    }
}

/// The inbound listeners by port, as the last config made them.
#[derive(Default)]
pub struct VirtualInbound {
    by_port: ArcSwap<HashMap<u16, Arc<ArcSwap<ListenerRt>>>>,
}

impl VirtualInbound {
    pub(crate) fn publish(&self, listeners: impl Iterator<Item = Arc<ArcSwap<ListenerRt>>>) {
        let map = listeners
            .filter(|rt| &*rt.load().spec.name != super::VIRTUAL_INBOUND)
            .map(|rt| {
                let port = rt.load().spec.bind.port();
                (port, rt)
            })
            .collect();
        self.by_port.store(Arc::new(map));
    }

    /// The listener for the port this connection was sent to; `None`: no
    /// listener (passthrough) or no original destination.
    pub(crate) fn for_connection(&self, stream: &TcpStream) -> Option<Arc<ArcSwap<ListenerRt>>> {
        let dst = original_dst(stream)?;
        self.by_port.load().get(&dst.port()).cloned()
    }
}

fn original_dst(stream: &TcpStream) -> Option<SocketAddr> {
    let local = stream.local_addr().ok()?;
    super::original_dst(stream, local)
}

/// A port the mesh has no listener for: once PeerAuthentication and the
/// TCP authorization policies let the connection in, its bytes (decrypted,
/// if it came over mesh mTLS) go to the address the client connected to, as
/// Istio does: an application listening only on the pod's 127.0.0.1 is not
/// reachable from outside the pod. A connection made to 15006 itself is
/// closed.
pub(crate) async fn passthrough(stream: TcpStream, peer: SocketAddr, shared: Arc<Shared>) {
    let Some(dst) = original_dst(&stream) else {
        tracing::debug!(%peer, "a connection to the inbound capture port that was not redirected; closed");
        return;
    };
    let Some(snapshot) = shared.store.current() else {
        return;
    };
    let policy = &snapshot.inbound_passthrough;
    let spec = ListenerSpec {
        name: INBOUND_PASSTHROUGH_CLUSTER.into(),
        bind: dst,
        direction: Direction::Inbound,
        // Sniffed: a mesh client's mTLS is told from plaintext by its first byte.
        serve: Serve::Sniff,
        app_http2: false,
        app_port: dst.port(),
        route_config: "".into(),
        mtls: policy.mtls_for(dst.port()),
        gateway_tls: None,
        https_redirect: false,
        path_normalization: snapshot.path_normalization,
        num_trusted_proxies: 0,
    };
    let mesh = shared.store.mesh_tls().map(Arc::as_ref);
    let source = passthrough_source(dst.ip());
    match inbound::accept(stream, peer, &spec, mesh).await {
        Some(Accepted::Plain(stream)) if allowed(&snapshot, peer, dst, None, None).await => {
            tracing::debug!(%peer, original_dst = %dst, cluster = INBOUND_PASSTHROUGH_CLUSTER, "inbound passthrough");
            crate::tcp::forward_from(stream, Some(source), dst).await;
        }
        Some(Accepted::Mtls {
            stream,
            peer: identity,
            ..
        }) => {
            let principal = identity.as_ref().map(|i| i.id().to_string());
            let sni: Option<String> = stream.get_ref().1.server_name().map(String::from);
            if allowed(&snapshot, peer, dst, principal.as_deref(), sni.as_deref()).await {
                tracing::debug!(%peer, original_dst = %dst, principal = principal.as_deref().unwrap_or("-"), cluster = INBOUND_PASSTHROUGH_CLUSTER, "inbound passthrough over mTLS");
                crate::tcp::forward_from(stream, Some(source), dst).await;
            }
        }
        // Refused: accept or the policy logged why.
        Some(Accepted::Plain(_)) | None => {}
    }
}

/// The workload's TCP authorization policies, with the original
/// destination as the connection's destination.
async fn allowed(
    snapshot: &crate::snapshot::Snapshot,
    peer: SocketAddr,
    dst: SocketAddr,
    principal: Option<&str>,
    sni: Option<&str>,
) -> bool {
    let engine = &snapshot.inbound_passthrough.authz.tcp;
    if engine.is_empty() {
        return true;
    }
    let attrs = Attrs::tcp(peer, dst, principal, sni);
    match engine.decide_connection(peer, &attrs, Some(snapshot)).await {
        Decision::Allow => true,
        Decision::Deny(details) => {
            tracing::info!(listener = INBOUND_PASSTHROUGH_CLUSTER, %peer, original_dst = %dst, principal = principal.unwrap_or("-"), %details, "connection denied by authorization policy; closed");
            false
        }
    }
}
