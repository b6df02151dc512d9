//! Plain TCP: inbound ports the application serves as TCP (or TLS it
//! terminates itself) are forwarded byte for byte (ports of unknown protocol
//! are sniffed first: [`crate::sniff`]).

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpStream;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

pub async fn forward<S>(mut downstream: S, app: SocketAddr)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut upstream = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(app)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return tracing::debug!(%app, error = %e, "cannot connect to the application"),
        Err(_) => return tracing::debug!(%app, "connecting to the application timed out"),
    };
    let _ = upstream.set_nodelay(true);
    let _ = tokio::io::copy_bidirectional(&mut downstream, &mut upstream).await;
}
