//! Plain TCP: inbound ports the application serves as TCP (or TLS it
//! terminates itself) are forwarded byte for byte, and ports of unknown
//! protocol are sniffed first, as Istio does for unnamed ports.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::net::TcpStream;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long to wait for a client's first bytes before taking it for a
/// server-first protocol (e.g. MySQL), which is plain TCP.
const DETECTION_TIMEOUT: Duration = Duration::from_millis(200);

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

/// What an HTTP/1 request or the HTTP/2 preface starts with.
const HTTP_STARTS: [&[u8]; 10] = [
    b"GET ",
    b"POST ",
    b"PUT ",
    b"HEAD ",
    b"DELETE ",
    b"OPTIONS ",
    b"PATCH ",
    b"CONNECT ",
    b"TRACE ",
    b"PRI * HTTP/2",
];

/// Whether the connection's first bytes look like HTTP. Peeks only: the
/// bytes stay for whoever serves the connection.
pub async fn looks_like_http(stream: &TcpStream) -> bool {
    let deadline = Instant::now() + DETECTION_TIMEOUT;
    let mut buf = [0u8; 16];
    loop {
        let n = match tokio::time::timeout_at(deadline.into(), stream.peek(&mut buf)).await {
            Ok(Ok(n)) => n,
            _ => return false,
        };
        if n == 0 {
            return false;
        }
        match classify(&buf[..n]) {
            Some(is_http) => return is_http,
            // A prefix of a method: wait for more bytes (peek returns at once
            // while any are buffered, hence the pause).
            None if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(2)).await,
            None => return false,
        }
    }
}

/// `Some(true)`: HTTP; `Some(false)`: not HTTP; `None`: can't tell yet.
fn classify(data: &[u8]) -> Option<bool> {
    if HTTP_STARTS.iter().any(|m| data.starts_with(m)) {
        return Some(true);
    }
    if HTTP_STARTS.iter().any(|m| m.starts_with(data)) {
        None
    } else {
        Some(false)
    }
}

#[cfg(test)]
mod tests {
    use super::classify;

    #[test]
    fn sniffing_table() {
        assert_eq!(classify(b"GET / HTTP/1.1"), Some(true));
        assert_eq!(classify(b"PRI * HTTP/2.0\r\n"), Some(true));
        assert_eq!(classify(b"GE"), None);
        assert_eq!(classify(b"\x16\x03\x01"), Some(false)); // a TLS ClientHello
        assert_eq!(classify(b"GETX"), Some(false));
    }
}
