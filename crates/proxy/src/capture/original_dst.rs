//! What the kernel knows about a captured connection: where the client
//! meant to connect before iptables' REDIRECT rewrote it (SO_ORIGINAL_DST,
//! IP6T_SO_ORIGINAL_DST). Through `nix`'s safe wrappers: no `unsafe` here.

use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsFd;

use nix::sys::socket::{SockaddrIn, SockaddrIn6, getsockopt, sockopt};

/// The destination the client asked for; `None` if the kernel has no
/// record of a redirect (the connection came to the port directly).
pub(crate) fn original_dst(socket: &impl AsFd, local: SocketAddr) -> Option<SocketAddr> {
    let original = match local.ip() {
        IpAddr::V4(_) => getsockopt(socket, sockopt::OriginalDst)
            .ok()
            .map(|sa| SocketAddr::from(SockaddrIn::from(sa))),
        // An IPv4 connection accepted on a dual-stack socket is still IPv4 to netfilter.
        IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some() => getsockopt(socket, sockopt::OriginalDst)
            .ok()
            .map(|sa| SocketAddr::from(SockaddrIn::from(sa))),
        IpAddr::V6(_) => getsockopt(socket, sockopt::Ip6tOriginalDst)
            .ok()
            .map(|sa| SocketAddr::from(SockaddrIn6::from(sa))),
    }?;
    (original != local).then_some(original)
}
