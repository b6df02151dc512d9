//! Traffic capture, as in a Kubernetes pod: the iptables rules that send
//! the pod's traffic to its sidecar ([`iptables`], written by `trellis-proxy
//! iptables`), and the listeners that serve what they capture: outbound
//! connections on 15001 routed by their original destination
//! ([`outbound`]), inbound ones on 15006 handed to the inbound listener of
//! their original port ([`inbound`]).

mod apply;
pub mod inbound;
pub mod iptables;
mod original_dst;
pub mod outbound;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use tokio::net::TcpListener;

use crate::path::Normalization;
use crate::snapshot::mtls::MtlsMode;
use crate::snapshot::{Direction, ListenerSpec, Serve};

pub use apply::{
    ADD_PASSTHROUGH_SOURCE_V6, ApplyError, Backend, DEL_PASSTHROUGH_SOURCE_V6, apply,
    current_table, detect_backend, run_ip,
};
pub use iptables::{
    ALWAYS_EXCLUDED_INBOUND, CHAINS, Family, ParseError, Ports, Ranges, Settings, parse_ports,
    parse_ranges, rules,
};
use original_dst::original_dst;

/// The listener names of captured traffic (Istio's).
pub const VIRTUAL_OUTBOUND: &str = "virtualOutbound";
pub const VIRTUAL_INBOUND: &str = "virtualInbound";

/// Istio's names for where traffic the mesh does not route goes.
pub const BLACKHOLE_CLUSTER: &str = "BlackHoleCluster";
pub const PASSTHROUGH_CLUSTER: &str = "PassthroughCluster";

/// Where the proxy serves captured traffic (Istio's ports).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CapturePorts {
    pub outbound: u16,
    pub inbound: u16,
}

impl Default for CapturePorts {
    fn default() -> Self {
        CapturePorts {
            outbound: 15001,
            inbound: 15006,
        }
    }
}

/// The listeners of captured traffic, on every address of the pod: IPv4,
/// and IPv6 where the kernel has it (the rules capture both).
///
/// Captured HTTP is normalised as the mesh says (`path_normalization`), as
/// every other listener's.
pub(crate) fn listener_specs(
    ports: &CapturePorts,
    path_normalization: Normalization,
) -> Vec<ListenerSpec> {
    let mut ips = vec![IpAddr::V4(Ipv4Addr::UNSPECIFIED)];
    if std::path::Path::new("/proc/net/if_inet6").exists() {
        ips.push(IpAddr::V6(Ipv6Addr::UNSPECIFIED));
    }
    let mut specs = Vec::new();
    for ip in ips {
        for (name, port, direction) in [
            (VIRTUAL_OUTBOUND, ports.outbound, Direction::Outbound),
            (VIRTUAL_INBOUND, ports.inbound, Direction::Inbound),
        ] {
            specs.push(ListenerSpec {
                name: name.into(),
                bind: SocketAddr::new(ip, port),
                direction,
                serve: Serve::Tcp,
                app_http2: false,
                app_port: 0,
                route_config: "".into(),
                mtls: MtlsMode::Disable,
                gateway_tls: None,
                https_redirect: false,
                path_normalization,
                num_trusted_proxies: 0,
            });
        }
    }
    specs
}

/// Binds a listener; an IPv6 wildcard only for IPv6, so that the IPv4
/// wildcard on the same port can be bound beside it (each family's
/// original destination is read its own way).
pub(crate) async fn bind(spec: &ListenerSpec) -> std::io::Result<TcpListener> {
    let addr = spec.bind;
    if !(addr.is_ipv6() && addr.ip().is_unspecified()) {
        return TcpListener::bind(addr).await;
    }
    let socket = socket2::Socket::new(
        socket2::Domain::IPV6,
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    socket.set_only_v6(true)?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    TcpListener::from_std(socket.into())
}
