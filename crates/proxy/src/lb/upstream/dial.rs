//! Opening a connection to an endpoint: TCP (from the pool's source address
//! when it has one), bounded by the cluster's connect timeout, then TLS when
//! the cluster originates it. Kept apart from the pool, which only decides
//! when to open one.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use http::uri::Authority;
use hyper_util::rt::TokioIo;

use crate::failure::Failure;
use crate::tls::io::UpstreamIo;
use crate::tls::outbound::Upstream;

/// A connection to `authority`, ready for HTTP/1.1 or (`http2`) HTTP/2.
pub(super) async fn connect(
    authority: &Authority,
    source: Option<IpAddr>,
    timeout: Duration,
    tls: Option<&Upstream>,
    http2: bool,
) -> Result<TokioIo<UpstreamIo>, Failure> {
    let tcp = async {
        match source {
            None => crate::tcp::connect_upstream(authority.as_str(), tls.is_some()).await,
            Some(source) => {
                let to: SocketAddr = authority.as_str().parse().map_err(|_| {
                    std::io::Error::new(
                        std::io::ErrorKind::InvalidInput,
                        "a pool with a source address connects to an address, not a name",
                    )
                })?;
                crate::tcp::connect_from(source, to).await
            }
        }
    };
    match tokio::time::timeout(timeout, tcp).await {
        Ok(Ok(stream)) => {
            let _ = stream.set_nodelay(true);
            crate::tls::outbound::secure(stream, authority, tls, http2)
                .await
                .map(TokioIo::new)
        }
        Ok(Err(e)) => {
            tracing::debug!(%authority, error = %e, "upstream connect failed");
            Err(Failure::Connect)
        }
        Err(_) => {
            tracing::debug!(%authority, ?timeout, "upstream connect timed out");
            Err(Failure::Connect)
        }
    }
}
