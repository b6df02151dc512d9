//! Traffic mirroring: a fire-and-forget copy of the request to another
//! cluster. The copy's Host gets Envoy's "-shadow" suffix so the receiver can
//! tell it apart; its response is discarded and never delays the original.

use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::uri::Scheme;
use http::{Request, Uri, Version};

use super::body::ReqBody;
use super::forward::Head;
use crate::lb::UpstreamProtocol;
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
    let (method, path, downstream) = (head.method.clone(), head.path.clone(), head.downstream);
    tokio::spawn(async move {
        let Some(endpoint) = cluster.pick(None).cloned() else {
            return;
        };
        let _active = endpoint.start();
        let http2 = match cluster.protocol {
            UpstreamProtocol::Http2 => true,
            UpstreamProtocol::Http1 => false,
            UpstreamProtocol::Downstream => downstream == Version::HTTP_2,
        };
        let Ok(uri) = Uri::builder()
            .scheme(Scheme::HTTP)
            .authority(endpoint.authority.clone())
            .path_and_query(path)
            .build()
        else {
            return;
        };
        let mut req = Request::new(ReqBody::bytes(body));
        *req.method_mut() = method;
        *req.uri_mut() = uri;
        *req.version_mut() = if http2 {
            Version::HTTP_2
        } else {
            Version::HTTP_11
        };
        *req.headers_mut() = headers;
        let client = if http2 {
            &cluster.pool.http2
        } else {
            &cluster.pool.http1
        };
        match tokio::time::timeout(
            timeout.unwrap_or(DEFAULT_MIRROR_TIMEOUT),
            client.request(req),
        )
        .await
        {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::debug!(cluster = %cluster.name, error = %e, "mirrored request failed")
            }
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
