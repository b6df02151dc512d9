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
