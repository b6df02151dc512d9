//! WebSocket over HTTP/1.1, as Istio configures Envoy (`upgrade_configs:
//! websocket`): the upgrade request goes upstream with its `Connection:
//! upgrade` and `Upgrade: websocket` (over HTTP/1.1 whatever the cluster
//! speaks), and once the upstream answers 101 the two connections are
//! spliced. Other upgrades are not forwarded: their headers are hop-by-hop.

use http::header::{self, HeaderMap, HeaderValue};
use http::{Response, StatusCode, Version};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

/// A WebSocket upgrade request: takes its downstream connection's upgrade
/// (to splice later). Call before hop-by-hop headers are stripped.
pub fn websocket(parts: &mut http::request::Parts) -> Option<OnUpgrade> {
    let asks = parts.version == Version::HTTP_11
        && has_token(&parts.headers, header::CONNECTION, "upgrade")
        && parts
            .headers
            .get(header::UPGRADE)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"));
    if !asks {
        return None;
    }
    parts.extensions.remove::<OnUpgrade>()
}

/// The headers that ask the upstream to switch, after the hop-by-hop ones
/// went.
pub fn request_headers(headers: &mut HeaderMap) {
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
}

/// The upstream switched: the client's connection is spliced to it, and
/// the 101 the client gets says so (`upstream` are its headers before the
/// hop-by-hop ones went). `false`: not a switch; nothing done.
pub fn splice(down: OnUpgrade, resp: &mut Response<Incoming>) -> bool {
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        return false;
    }
    let up = hyper::upgrade::on(&mut *resp);
    tokio::spawn(async move {
        match tokio::try_join!(down, up) {
            Ok((down, up)) => {
                let _ =
                    tokio::io::copy_bidirectional(&mut TokioIo::new(down), &mut TokioIo::new(up))
                        .await;
            }
            Err(e) => tracing::debug!(error = %e, "websocket upgrade failed"),
        }
    });
    true
}

/// A 101's `Connection` and `Upgrade`, put back after the hop-by-hop
/// headers were stripped from it.
pub fn response_headers(headers: &mut HeaderMap, upgrade: Option<HeaderValue>) {
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(
        header::UPGRADE,
        upgrade.unwrap_or(HeaderValue::from_static("websocket")),
    );
}

fn has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}
