//! What a request or connection is judged on.

use std::net::{IpAddr, SocketAddr};

use http::HeaderMap;
use http::header::HeaderName;

use crate::policy::jwt::Verified;

/// What a request or connection is judged on.
#[derive(Clone, Copy, Debug)]
pub struct Attrs<'a> {
    /// The connection's peer (`source.ip`, `ipBlocks`).
    pub source: IpAddr,
    /// The original client (`remote.ip`, `remoteIpBlocks`): x-forwarded-for's
    /// last address on HTTP (a sidecar does not use the remote address), else the peer.
    pub remote: IpAddr,
    /// The address and port the connection came to.
    pub destination: SocketAddr,
    /// The verified mTLS peer's SPIFFE id ("spiffe://td/ns/n/sa/s"); `None` in plaintext.
    pub principal: Option<&'a str>,
    pub sni: Option<&'a str>,
    pub http: Option<HttpAttrs<'a>>,
}

#[derive(Clone, Copy, Debug)]
pub struct HttpAttrs<'a> {
    pub method: &'a str,
    /// Without the query, normalised once for the whole request
    /// (`crate::path`): routing and the upstream see the same.
    pub path: &'a str,
    pub host: &'a str,
    pub headers: &'a HeaderMap,
    /// The request's validated JWT (`request.auth.*`); `None` without one.
    pub auth: Option<&'a Verified>,
}

impl<'a> Attrs<'a> {
    /// A TCP connection.
    pub fn tcp(
        peer: SocketAddr,
        destination: SocketAddr,
        principal: Option<&'a str>,
        sni: Option<&'a str>,
    ) -> Self {
        Attrs {
            source: peer.ip(),
            remote: peer.ip(),
            destination,
            principal,
            sni,
            http: None,
        }
    }
}

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// The client a gateway with `trusted` proxies in front of it believes in
/// (Envoy's `xff_num_trusted_hops` with `use_remote_address`): the
/// `trusted`-th x-forwarded-for entry from the right; the peer when
/// `trusted` is 0 or the header has fewer entries (or an unparsable one there).
pub fn trusted_client_ip(headers: &HeaderMap, peer: IpAddr, trusted: u32) -> IpAddr {
    if trusted == 0 {
        return peer;
    }
    let entries: Vec<&str> = headers
        .get_all(X_FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    entries
        .len()
        .checked_sub(trusted as usize)
        .and_then(|i| entries[i].parse().ok())
        .unwrap_or(peer)
}

/// The remote address an Envoy sidecar sees for an HTTP request: the last
/// x-forwarded-for entry (use_remote_address is off), else the peer.
pub fn remote_ip(headers: &HeaderMap, peer: IpAddr) -> IpAddr {
    headers
        .get_all(X_FORWARDED_FOR)
        .iter()
        .next_back()
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.rsplit(',').next())
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(peer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trusted_proxies_pick_the_client_from_the_right_of_x_forwarded_for() {
        let peer: IpAddr = "192.0.2.5".parse().expect("ip");
        let mut headers = HeaderMap::new();
        headers.append(
            X_FORWARDED_FOR,
            "203.0.113.128, 203.0.113.10".parse().expect("value"),
        );
        headers.append(X_FORWARDED_FOR, "203.0.113.1".parse().expect("value"));
        let ip = |n| trusted_client_ip(&headers, peer, n).to_string();
        // None trusted: the peer, whatever the header says.
        assert_eq!(ip(0), "192.0.2.5");
        // Envoy's example: one trusted proxy in front, the last entry is the client.
        assert_eq!(ip(1), "203.0.113.1");
        assert_eq!(ip(3), "203.0.113.128");
        // Fewer entries than trusted proxies: the peer.
        assert_eq!(ip(4), "192.0.2.5");
        assert_eq!(trusted_client_ip(&HeaderMap::new(), peer, 1), peer);
    }
}
