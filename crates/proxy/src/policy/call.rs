//! Calls the proxy makes on a request's behalf to a policy service — the
//! external authorizer, the rate limit service — through its own cluster
//! of that service (`outbound|<port>||<host>`), as Envoy's ext_authz and
//! ratelimit filters use a cluster: the cluster's endpoints, load balancer
//! and connection pools, and so mTLS when the service is in the mesh. The
//! gRPC ones are unary calls framed here (a 5-byte prefix and a protobuf
//! message); their messages are `wire::envoy`'s.

use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::header::{self, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderMap, Method, Request, StatusCode, Uri, Version};
use http_body_util::BodyExt;

use crate::req_body::ReqBody;
use crate::snapshot::Snapshot;

/// The most of a policy service's answer the proxy reads.
const MAX_ANSWER: usize = 64 * 1024;

/// Why a call got no answer: the service is then "unavailable" to the
/// filter (Envoy's error status), logged with this.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("no cluster {0} in the proxy's config")]
    NoCluster(String),
    #[error("no healthy endpoint in cluster {0}")]
    NoEndpoint(String),
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("request failed: {0}")]
    Send(String),
    #[error("answer over {MAX_ANSWER} bytes or cut short")]
    Body,
    #[error("gRPC status {code}: {message}")]
    Grpc { code: u32, message: String },
    #[error("malformed gRPC answer: {0}")]
    Decode(String),
}

/// An answer, read whole.
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub trailers: Option<HeaderMap>,
}

/// One request to `cluster` (the snapshot's), answered within `timeout`.
pub async fn send(
    snapshot: &Snapshot,
    cluster: &str,
    authority: &str,
    head: (Method, PathAndQuery, HeaderMap),
    body: Bytes,
    grpc: bool,
    timeout: Duration,
) -> Result<Answer, CallError> {
    let c = snapshot
        .clusters
        .get(cluster)
        .ok_or_else(|| CallError::NoCluster(cluster.to_string()))?;
    let endpoint = c
        .pick(None, None)
        .ok_or_else(|| CallError::NoEndpoint(cluster.to_string()))?;
    let http2 = grpc || c.protocol == crate::lb::UpstreamProtocol::Http2;
    let (method, path, mut headers) = head;
    let authority: Authority = authority
        .parse()
        .map_err(|_| CallError::Send(format!("invalid authority {authority:?}")))?;
    let mut req = Request::new(ReqBody::bytes(body));
    *req.method_mut() = method;
    if http2 {
        *req.uri_mut() = Uri::builder()
            .scheme(Scheme::HTTP)
            .authority(authority)
            .path_and_query(path)
            .build()
            .map_err(|e| CallError::Send(e.to_string()))?;
        *req.version_mut() = Version::HTTP_2;
    } else {
        if let Ok(v) = HeaderValue::from_str(authority.as_str()) {
            headers.insert(header::HOST, v);
        }
        *req.uri_mut() = Uri::from(path);
        *req.version_mut() = Version::HTTP_11;
    }
    *req.headers_mut() = headers;
    let _active = endpoint.start();
    let exchange = async {
        let (resp, lease) = endpoint
            .pool()
            .send(req, http2)
            .await
            .map_err(|e| CallError::Send(format!("{e:?}")))?;
        let (parts, body) = resp.into_parts();
        let collected = http_body_util::Limited::new(body, MAX_ANSWER)
            .collect()
            .await
            .map_err(|_| CallError::Body);
        lease.finish(collected.is_ok());
        let collected = collected?;
        let trailers = collected.trailers().cloned();
        Ok(Answer {
            status: parts.status,
            headers: parts.headers,
            body: collected.to_bytes(),
            trailers,
        })
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .unwrap_or(Err(CallError::Timeout(timeout)))
}

/// A unary gRPC call: `path` is "/<package>.<Service>/<Method>".
pub async fn grpc<Req: prost::Message, Resp: prost::Message + Default>(
    snapshot: &Snapshot,
    cluster: &str,
    authority: &str,
    path: &'static str,
    message: &Req,
    timeout: Duration,
) -> Result<Resp, CallError> {
    let mut framed = BytesMut::with_capacity(5 + message.encoded_len());
    framed.put_u8(0);
    framed.put_u32(message.encoded_len() as u32);
    message
        .encode(&mut framed)
        .map_err(|e| CallError::Send(e.to_string()))?;
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    headers.insert(header::TE, HeaderValue::from_static("trailers"));
    if let Ok(t) = HeaderValue::from_str(&format!("{}m", timeout.as_millis())) {
        headers.insert("grpc-timeout", t);
    }
    let answer = send(
        snapshot,
        cluster,
        authority,
        (Method::POST, PathAndQuery::from_static(path), headers),
        framed.freeze(),
        true,
        timeout,
    )
    .await?;
    if answer.status != StatusCode::OK {
        return Err(CallError::Decode(format!("HTTP status {}", answer.status)));
    }
    // grpc-status in the trailers, or in the headers of a trailers-only answer.
    let status = |h: &HeaderMap| {
        h.get("grpc-status")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u32>().ok())
    };
    let code = answer
        .trailers
        .as_ref()
        .and_then(status)
        .or_else(|| status(&answer.headers))
        .ok_or_else(|| CallError::Decode("no grpc-status".into()))?;
    if code != 0 {
        let message = answer
            .trailers
            .as_ref()
            .unwrap_or(&answer.headers)
            .get("grpc-message")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        return Err(CallError::Grpc { code, message });
    }
    let mut body = answer.body;
    if body.len() < 5 || body[0] != 0 {
        return Err(CallError::Decode("no uncompressed message".into()));
    }
    body.advance(1);
    let len = body.get_u32() as usize;
    if body.len() < len {
        return Err(CallError::Decode("message cut short".into()));
    }
    Resp::decode(body.slice(..len)).map_err(|e| CallError::Decode(e.to_string()))
}
