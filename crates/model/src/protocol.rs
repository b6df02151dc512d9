//! Protocol selection as Istio does it: `appProtocol` first, then the port
//! name's prefix (`http-web`, `grpc`, `tcp-db`), else unknown (sniffed).

use wire::pb::Protocol;

pub fn from_port(name: Option<&str>, app_protocol: Option<&str>) -> Protocol {
    if let Some(p) = app_protocol.and_then(parse) {
        return p;
    }
    let name = name.unwrap_or_default();
    let prefix = name.split('-').next().unwrap_or_default();
    parse(prefix).unwrap_or(Protocol::Unspecified)
}

/// Istio's protocol names, case-insensitive (also Kubernetes' `kubernetes.io/h2c`).
pub fn parse(s: &str) -> Option<Protocol> {
    Some(match s.to_ascii_lowercase().as_str() {
        "http" | "http-web" => Protocol::Http,
        "http2" | "h2c" | "kubernetes.io/h2c" => Protocol::Http2,
        "grpc" | "grpc-web" => Protocol::Grpc,
        "https" => Protocol::Https,
        "tls" => Protocol::Tls,
        "tcp" | "mongo" | "mysql" | "redis" | "kubernetes.io/ws" | "kubernetes.io/wss" => {
            Protocol::Tcp
        }
        _ => return None,
    })
}

pub fn is_http(p: Protocol) -> bool {
    matches!(
        p,
        Protocol::Http | Protocol::Http2 | Protocol::Grpc | Protocol::Unspecified
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selection_follows_istio() {
        let cases = [
            (Some("http"), None, Protocol::Http),
            (Some("http-web"), None, Protocol::Http),
            (Some("grpc-api"), None, Protocol::Grpc),
            (Some("tcp-db"), None, Protocol::Tcp),
            (Some("web"), None, Protocol::Unspecified),
            (None, None, Protocol::Unspecified),
            (Some("tcp"), Some("http2"), Protocol::Http2),
            (Some("x"), Some("kubernetes.io/h2c"), Protocol::Http2),
            (Some("HTTP"), None, Protocol::Http),
        ];
        for (name, app, want) in cases {
            assert_eq!(from_port(name, app), want, "{name:?} {app:?}");
        }
    }
}
