//! Opening a connection to an endpoint: TCP from the right local address,
//! bounded by the cluster's connect timeout, then TLS when the cluster
//! originates it. Kept apart from the pool, which only decides when to open
//! one.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use http::uri::Authority;
use tokio::net::TcpStream;

use crate::failure::Failure;

/// The local address a connection to `authority` is made from: the pool's
/// own (`source`, Envoy's `upstream_bind_config`) when it has one. Else, a
/// connection that will be secured (mesh mTLS, whose server looks its
/// caller up by address) to a loopback endpoint comes from the pod's
/// loopback address (`loopback_source`, see [`super::ConnSettings`]) when
/// the families agree; anything else from where the kernel chooses (the
/// sidecar's plaintext hop to its own application keeps coming from
/// 127.0.0.1, as from a pod's `lo`).
pub(super) fn source_for(
    authority: &Authority,
    source: Option<IpAddr>,
    loopback_source: Option<IpAddr>,
    secured: bool,
) -> Option<IpAddr> {
    source.or_else(|| {
        let from = loopback_source.filter(|_| secured)?;
        let to = authority.as_str().parse::<SocketAddr>().ok()?;
        (to.ip().is_loopback() && to.is_ipv4() == from.is_ipv4()).then_some(from)
    })
}

/// A TCP connection to `authority` ("ip:port", or "name:port" resolved now)
/// from `source` (any port) when given, within `timeout`.
pub(super) async fn tcp(
    authority: &Authority,
    source: Option<IpAddr>,
    timeout: Duration,
) -> Result<TcpStream, Failure> {
    let connect = async {
        match source {
            None => TcpStream::connect(authority.as_str()).await,
            Some(source) => {
                let to: SocketAddr = authority.as_str().parse().map_err(|_| {
                    std::io::Error::new(
                        std::io::ErrorKind::InvalidInput,
                        "a connection from a source address goes to an address, not a name",
                    )
                })?;
                crate::tcp::connect_from(source, to).await
            }
        }
    };
    match tokio::time::timeout(timeout, connect).await {
        Ok(Ok(stream)) => {
            let _ = stream.set_nodelay(true);
            Ok(stream)
        }
        Ok(Err(e)) => {
            tracing::debug!(%authority, ?source, error = %e, "upstream connect failed");
            Err(Failure::Connect)
        }
        Err(_) => {
            tracing::debug!(%authority, ?timeout, "upstream connect timed out");
            Err(Failure::Connect)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pods_loopback_address_only_for_secured_loopback_connections() {
        let pod: IpAddr = "127.0.0.9".parse().unwrap();
        let own: IpAddr = "127.0.0.6".parse().unwrap();
        let loopback: Authority = "127.0.0.20:8080".parse().unwrap();
        let remote: Authority = "10.0.0.20:8080".parse().unwrap();
        let name: Authority = "api.example.com:443".parse().unwrap();
        assert_eq!(source_for(&loopback, None, Some(pod), true), Some(pod));
        assert_eq!(source_for(&loopback, None, Some(pod), false), None);
        assert_eq!(source_for(&remote, None, Some(pod), true), None);
        assert_eq!(source_for(&name, None, Some(pod), true), None);
        assert_eq!(source_for(&loopback, None, None, true), None);
        let v6: Authority = "[::1]:8080".parse().unwrap();
        assert_eq!(source_for(&v6, None, Some(pod), true), None);
        // The pool's own source wins.
        assert_eq!(source_for(&loopback, Some(own), Some(pod), true), Some(own));
        assert_eq!(source_for(&remote, Some(own), None, false), Some(own));
    }
}
