//! Traffic mirroring: a fire-and-forget copy of the request to another
//! cluster. The copy's Host gets Envoy's "-shadow" suffix so the receiver can
//! tell it apart; its response is discarded and never delays the original.

use std::time::Duration;

use bytes::Bytes;
use http::Version;
use http::header::{self, HeaderValue};
use http_body_util::BodyExt;

use super::forward::{Head, build};
use crate::lb::UpstreamProtocol;
use crate::req_body::ReqBody;
use crate::snapshot::routes::Mirror;

/// How long a mirrored request may take when its route sets no timeout, so
/// that a stuck mirror target cannot pile up tasks.
const DEFAULT_MIRROR_TIMEOUT: Duration = Duration::from_secs(15);

pub fn spawn(mirror: &Mirror, head: &Head, body: Bytes, timeout: Option<Duration>) {
    let Some(cluster) = mirror.cluster.clone() else {
        return;
    };
    let mut headers = head.headers.clone();
    if let Some(host) = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(shadow_host)
        && let Ok(v) = HeaderValue::from_str(&host)
    {
        headers.insert(header::HOST, v);
    }
    let copy = Head {
        method: head.method.clone(),
        path: head.path.clone(),
        headers,
        downstream: head.downstream,
        upgrade: None,
    };
    tokio::spawn(async move {
        let Some(endpoint) = cluster.pick(None, None) else {
            return;
        };
        let _active = endpoint.start();
        let http2 = match cluster.protocol {
            UpstreamProtocol::Http2 => true,
            UpstreamProtocol::Http1 => false,
            UpstreamProtocol::Downstream => copy.downstream == Version::HTTP_2,
        };
        let Some(req) = build(
            copy,
            endpoint.authority.clone(),
            ReqBody::bytes(body),
            http2,
        ) else {
            return;
        };
        // Through the mirror cluster's own pool and circuit breakers, as Envoy's shadows go.
        let exchange = async {
            let (resp, lease) = endpoint.pool().send(req, http2).await.ok()?;
            // Read to the end, so that the connection can serve again.
            let complete = resp.into_body().collect().await.is_ok();
            lease.finish(complete);
            Some(())
        };
        match tokio::time::timeout(timeout.unwrap_or(DEFAULT_MIRROR_TIMEOUT), exchange).await {
            Ok(Some(())) => {}
            Ok(None) => tracing::debug!(cluster = %cluster.name, "mirrored request failed"),
            Err(_) => tracing::debug!(cluster = %cluster.name, "mirrored request timed out"),
        }
    });
}

/// "reviews:9080" → "reviews-shadow:9080", "reviews" → "reviews-shadow".
fn shadow_host(host: &str) -> String {
    let bare = crate::snapshot::domains::strip_port(host);
    format!("{bare}-shadow{}", &host[bare.len()..])
}

#[cfg(test)]
mod tests {
    #[test]
    fn shadow_host() {
        assert_eq!(super::shadow_host("reviews:9080"), "reviews-shadow:9080");
        assert_eq!(super::shadow_host("reviews"), "reviews-shadow");
    }
}
