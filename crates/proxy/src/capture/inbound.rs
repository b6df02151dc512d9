//! Captured inbound connections (15006): each is served by the inbound
//! listener of the port it was sent to — the same PeerAuthentication,
//! authorization and protocol handling as a bound port — or, for a port no
//! Service names, passed through to the application (Istio's
//! InboundPassthroughCluster).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::net::TcpStream;

use crate::http::ListenerRt;

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

/// A port the mesh has no listener for: the bytes go to the application's
/// port as they are. A connection made to 15006 itself is closed.
pub(crate) async fn passthrough(stream: TcpStream, app_ip: IpAddr) {
    let Some(dst) = original_dst(&stream) else {
        tracing::debug!("a connection to the inbound capture port that was not redirected; closed");
        return;
    };
    tracing::debug!(original_dst = %dst, cluster = "InboundPassthroughCluster", "inbound passthrough");
    crate::tcp::forward(stream, SocketAddr::new(app_ip, dst.port())).await;
}
