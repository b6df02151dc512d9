//! Protocol detection on ports whose protocol the config does not name
//! (Istio's sniffing: captured ports and PERMISSIVE inbound ports): the client's first bytes tell HTTP/1.x, HTTP/2
//! with prior knowledge, a TLS ClientHello, or else plain TCP. A port's name
//! or `appProtocol` (the cluster's protocol) is used instead when there is one.

use std::time::Duration;

use tokio::net::TcpStream;

/// What a connection speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Detected {
    Http1,
    /// The HTTP/2 connection preface (prior knowledge, h2c).
    Http2,
    /// A TLS handshake: the bytes are passed through, not terminated.
    Tls,
    Tcp,
}

impl Detected {
    pub fn is_http(self) -> bool {
        matches!(self, Detected::Http1 | Detected::Http2)
    }
}

/// How long a client may stay silent before it is taken for a server-first
/// protocol (MySQL, SMTP), which is TCP. Istio's `protocolDetectionTimeout`
/// defaults to none (0s): a server-first protocol on an unnamed port then
/// waits for ever; a short timeout makes it work as TCP instead.
pub const DETECTION_TIMEOUT: Duration = Duration::from_millis(100);

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const METHODS: [&[u8]; 9] = [
    b"GET ",
    b"POST ",
    b"PUT ",
    b"HEAD ",
    b"DELETE ",
    b"OPTIONS ",
    b"PATCH ",
    b"CONNECT ",
    b"TRACE ",
];

/// Classifies a connection's first bytes; `None` while they could still be
/// the start of more than one protocol.
pub fn classify(data: &[u8]) -> Option<Detected> {
    if data.is_empty() {
        return None;
    }
    if data.starts_with(H2_PREFACE) {
        return Some(Detected::Http2);
    }
    if METHODS.iter().any(|m| data.starts_with(m)) {
        return Some(Detected::Http1);
    }
    // A TLS record: handshake (22), version 3.x, then a ClientHello (1).
    if data[0] == 0x16 {
        return match data {
            [0x16]
            | [0x16, 0x03]
            | [0x16, 0x03, _]
            | [0x16, 0x03, _, _]
            | [0x16, 0x03, _, _, _] => None,
            [0x16, 0x03, minor, _, _, 0x01, ..] if *minor <= 0x04 => Some(Detected::Tls),
            _ => Some(Detected::Tcp),
        };
    }
    let maybe_more = H2_PREFACE.starts_with(data) || METHODS.iter().any(|m| m.starts_with(data));
    if maybe_more {
        None
    } else {
        Some(Detected::Tcp)
    }
}

/// Peeks at the connection until its first bytes decide (the bytes stay
/// for whoever serves it), or the client goes quiet: then TCP.
pub async fn detect(stream: &TcpStream) -> Detected {
    let deadline = tokio::time::Instant::now() + DETECTION_TIMEOUT;
    let mut buf = [0u8; 24];
    loop {
        let n = match tokio::time::timeout_at(deadline, stream.peek(&mut buf)).await {
            Ok(Ok(n)) => n,
            _ => return Detected::Tcp,
        };
        if n == 0 {
            return Detected::Tcp;
        }
        if let Some(d) = classify(&buf[..n]) {
            return d;
        }
        if n == buf.len() || tokio::time::Instant::now() >= deadline {
            return Detected::Tcp;
        }
        // peek returns at once while bytes are buffered: wait for more.
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::{Detected, classify};

    #[test]
    fn first_bytes_table() {
        let cases: &[(&[u8], Option<Detected>)] = &[
            (b"GET / HTTP/1.1\r\n", Some(Detected::Http1)),
            (b"POST /x HTTP/1.0\r\n", Some(Detected::Http1)),
            (
                b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00",
                Some(Detected::Http2),
            ),
            (b"PRI * HTTP/2", None),
            (b"GE", None),
            (b"P", None),
            (b"GETX", Some(Detected::Tcp)),
            (
                b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
                Some(Detected::Tls),
            ),
            (b"\x16\x03\x01", None),
            (b"\x16\x03\x01\x00\x10\x02", Some(Detected::Tcp)), // a ServerHello is no client
            (b"\x16\x09", Some(Detected::Tcp)),
            (b"hello\n", Some(Detected::Tcp)),
            (b"\x00\x00\x00\x0c", Some(Detected::Tcp)),
            (b"", None),
        ];
        for (bytes, want) in cases {
            assert_eq!(
                classify(bytes),
                *want,
                "{:?}",
                String::from_utf8_lossy(bytes)
            );
        }
    }
}
