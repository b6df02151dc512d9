//! Plain TCP: inbound ports the application serves as TCP (or TLS it
//! terminates itself) are forwarded byte for byte (ports of unknown protocol
//! are sniffed first: [`crate::sniff`]).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::net::{TcpSocket, TcpStream};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

pub async fn forward<S>(downstream: S, app: SocketAddr)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    forward_from(downstream, None, app).await;
}

/// As [`forward`], the connection to the application made from `source`
/// (any port) when given.
pub async fn forward_from<S>(mut downstream: S, source: Option<IpAddr>, app: SocketAddr)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut upstream = match tokio::time::timeout(CONNECT_TIMEOUT, connect(source, app)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            return tracing::debug!(%app, error = %e, "cannot connect to the application");
        }
        Err(_) => return tracing::debug!(%app, "connecting to the application timed out"),
    };
    let _ = upstream.set_nodelay(true);
    let _ = tokio::io::copy_bidirectional(&mut downstream, &mut upstream).await;
}

async fn connect(source: Option<IpAddr>, to: SocketAddr) -> std::io::Result<TcpStream> {
    let Some(source) = source else {
        return TcpStream::connect(to).await;
    };
    let socket = match source {
        IpAddr::V4(_) => TcpSocket::new_v4()?,
        IpAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket.bind(SocketAddr::new(source, 0))?;
    socket.connect(to).await
}
