//! External authorization: what an AuthorizationPolicy CUSTOM rule selects
//! is checked with its extension provider, as Envoy's ext_authz filter
//! checks it for Istio — over gRPC (`envoy.service.auth.v3.Authorization/
//! Check`) or over HTTP (the request's method and path, after `pathPrefix`,
//! with Host, Content-Length and the headers the provider includes).
//!
//! - Allowed (gRPC status OK / HTTP 200): the request goes on to the DENY
//!   and ALLOW policies, with the authorizer's headers (gRPC: its
//!   `ok_response`; HTTP: those `headersToUpstreamOnAllow` names) set on it
//!   and `headersToDownstreamOnAllow` added to the response.
//! - Denied: the client gets the authorizer's status (403 when it gives
//!   none), body and headers (HTTP: those `headersToDownstreamOnDeny`
//!   names, all but Host when it names none).
//! - No answer (unreachable, timeout, a gRPC error, an HTTP 5xx): allowed
//!   when `failOpen`, else `statusOnError` (403) with no body.
//!
//! With `includeRequestBodyInCheck` the check carries the start of the
//! request body (gRPC: `body`, or `raw_body` when `packAsBytes`; HTTP: the
//! check's own body): up to `maxRequestBytes` of it, the request refused
//! with 413 when it is longer, unless `allowPartialMessage` — then the
//! first `maxRequestBytes` go, and `x-envoy-auth-partial-body` tells the
//! authorizer (gRPC). The upstream gets the whole body, as sent.
//!
//! Denials and errors are flagged UAEX with Envoy's response code details
//! (`ext_authz_denied`, `ext_authz_error`) and counted by result.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::uri::PathAndQuery;
use http::{HeaderMap, Method, Request, Response, StatusCode, Version};
use hyper::body::Incoming;
use wire::envoy::config::core::v3 as core;
use wire::envoy::service::auth::v3 as auth;
use wire::pb;

use super::call::{self, CallError};
use crate::resp_body::RespBody;
use crate::snapshot::Snapshot;

const CHECK: &str = "/envoy.service.auth.v3.Authorization/Check";

/// One provider, compiled.
#[derive(Debug, PartialEq)]
pub struct ExtAuthz {
    provider: Arc<str>,
    cluster: String,
    authority: String,
    grpc: bool,
    timeout: Duration,
    fail_open: bool,
    status_on_error: StatusCode,
    path_prefix: String,
    include: Vec<Pattern>,
    additional: Vec<(HeaderName, HeaderValue)>,
    to_upstream: Vec<Pattern>,
    to_downstream_on_deny: Vec<Pattern>,
    to_downstream_on_allow: Vec<Pattern>,
    body: Option<BodySettings>,
}

/// `includeRequestBodyInCheck`, as Envoy's `with_request_body`.
#[derive(Debug, PartialEq)]
struct BodySettings {
    max: usize,
    partial: bool,
    as_bytes: bool,
}

/// The request body a check carries.
pub struct CheckBody {
    bytes: Bytes,
    /// Only the start of the body.
    partial: bool,
}

/// Why the request body could not be had for the check.
pub enum BodyRefused {
    /// Longer than `maxRequestBytes`, and partial messages not allowed:
    /// Envoy's 413.
    TooLarge,
    /// The client's body failed (reset, malformed).
    Failed(hyper::Error),
}

/// Envoy's header telling the authorizer whether the body is cut short.
const PARTIAL_BODY: &str = "x-envoy-auth-partial-body";

/// What is known of the request being checked.
pub struct CheckRequest<'a> {
    pub source: SocketAddr,
    /// The verified peer's SPIFFE id (mesh mTLS).
    pub principal: Option<&'a str>,
    pub destination: SocketAddr,
    pub method: &'a Method,
    /// Path and query, as the request is routed (normalised).
    pub path: &'a str,
    pub host: &'a str,
    pub headers: &'a HeaderMap,
    pub version: Version,
    pub body: Option<&'a CheckBody>,
}

/// What is known of a TCP connection being checked (Envoy's network
/// ext_authz: the peers, no request).
pub struct ConnectionCheck<'a> {
    pub source: SocketAddr,
    /// The verified peer's SPIFFE id (mesh mTLS).
    pub principal: Option<&'a str>,
    pub destination: SocketAddr,
    pub sni: Option<&'a str>,
}

/// The check's outcome.
pub enum Verdict {
    Allow(Allowed),
    /// The reply to give the client, and Envoy's response code details.
    Deny(Response<RespBody>, &'static str),
}

/// What an allowing authorizer asks to change.
#[derive(Default)]
pub struct Allowed {
    /// Set on the request (or appended, when `true`).
    pub upstream: Vec<(HeaderName, HeaderValue, bool)>,
    pub remove: Vec<HeaderName>,
    /// Added to the response.
    pub downstream: Vec<(HeaderName, HeaderValue)>,
}

impl Allowed {
    pub fn apply_to_request(&self, headers: &mut HeaderMap) {
        for name in &self.remove {
            // Host may not be removed (Envoy ignores it too).
            if name != header::HOST {
                headers.remove(name);
            }
        }
        for (name, value, append) in &self.upstream {
            if *append {
                headers.append(name.clone(), value.clone());
            } else {
                headers.insert(name.clone(), value.clone());
            }
        }
    }

    pub fn apply_to_response(&self, headers: &mut HeaderMap) {
        for (name, value) in &self.downstream {
            headers.insert(name.clone(), value.clone());
        }
    }
}

impl ExtAuthz {
    pub fn compile(p: &pb::ExtAuthz) -> Result<Self, String> {
        let at = |what: &str| format!("ext_authz {:?}: {what}", p.provider);
        let patterns = |v: &[String]| v.iter().map(|s| Pattern::new(s)).collect::<Vec<_>>();
        let status_on_error = match p.status_on_error {
            0 => StatusCode::FORBIDDEN,
            s => u16::try_from(s)
                .ok()
                .and_then(|s| StatusCode::from_u16(s).ok())
                .ok_or_else(|| at(&format!("status_on_error {s} is not an HTTP status")))?,
        };
        let mut additional = Vec::new();
        for (k, v) in &p.additional_headers {
            let name =
                HeaderName::try_from(k.as_str()).map_err(|_| at(&format!("header name {k:?}")))?;
            let value = HeaderValue::try_from(v.as_str())
                .map_err(|_| at(&format!("header value of {k:?}")))?;
            additional.push((name, value));
        }
        Ok(ExtAuthz {
            provider: p.provider.as_str().into(),
            cluster: p.cluster.clone(),
            authority: p.authority.clone(),
            grpc: p.grpc,
            timeout: Duration::from_millis(if p.timeout_ms == 0 {
                600_000
            } else {
                p.timeout_ms
            }),
            fail_open: p.fail_open,
            status_on_error,
            path_prefix: p.path_prefix.clone(),
            include: patterns(&p.include_request_headers),
            additional,
            to_upstream: patterns(&p.headers_to_upstream_on_allow),
            to_downstream_on_deny: patterns(&p.headers_to_downstream_on_deny),
            to_downstream_on_allow: patterns(&p.headers_to_downstream_on_allow),
            // Envoy buffers nothing with a zero maxRequestBytes.
            body: (p.max_request_bytes > 0).then_some(BodySettings {
                max: p.max_request_bytes as usize,
                partial: p.allow_partial_message,
                as_bytes: p.pack_as_bytes,
            }),
        })
    }

    /// The request body for the check, when the provider includes it: read
    /// (and kept in the request for the upstream) up to `maxRequestBytes`.
    pub async fn request_body(
        &self,
        req: &mut Request<Incoming>,
    ) -> Result<Option<CheckBody>, BodyRefused> {
        use http_body::Body;
        let Some(b) = &self.body else {
            return Ok(None);
        };
        // A body that says it is too long is refused before it is read.
        if !b.partial && req.body().size_hint().lower() > b.max as u64 {
            return Err(BodyRefused::TooLarge);
        }
        // Partial: the first `max` bytes do; else one byte more tells.
        let want = if b.partial { b.max } else { b.max + 1 };
        let peek = crate::req_body::peek(req, want)
            .await
            .map_err(BodyRefused::Failed)?;
        if peek.bytes.len() > b.max && !b.partial {
            return Err(BodyRefused::TooLarge);
        }
        let partial = !peek.complete || peek.bytes.len() > b.max;
        let mut bytes = peek.bytes;
        bytes.truncate(b.max);
        Ok(Some(CheckBody { bytes, partial }))
    }

    pub fn provider(&self) -> &str {
        &self.provider
    }

    /// Asks the authorizer about `r`.
    pub async fn check(&self, snapshot: &Snapshot, r: &CheckRequest<'_>) -> Verdict {
        let answer = if self.grpc {
            self.check_grpc(snapshot, r).await
        } else {
            self.check_http(snapshot, r).await
        };
        match answer {
            Ok(Verdict::Allow(a)) => {
                super::stats::ext_authz(&self.provider, "ok");
                Verdict::Allow(a)
            }
            Ok(deny) => {
                super::stats::ext_authz(&self.provider, "denied");
                deny
            }
            Err(e) if self.fail_open => {
                tracing::warn!(provider = %self.provider, error = %e, "external authorizer failed; request allowed (failOpen)");
                super::stats::ext_authz(&self.provider, "failure_mode_allowed");
                Verdict::Allow(Allowed::default())
            }
            Err(e) => {
                tracing::warn!(provider = %self.provider, error = %e, status = self.status_on_error.as_u16(), "external authorizer failed; request refused");
                super::stats::ext_authz(&self.provider, "error");
                let mut resp = Response::new(RespBody::text(Bytes::new()));
                *resp.status_mut() = self.status_on_error;
                Verdict::Deny(resp, "ext_authz_error")
            }
        }
    }

    /// Whether the provider can check TCP connections (gRPC only, as Envoy's
    /// network ext_authz filter speaks only gRPC).
    pub fn checks_connections(&self) -> bool {
        self.grpc
    }

    /// Asks the authorizer about a TCP connection, once at its start.
    /// `Err`: refused (Envoy's response code details), the connection is
    /// to be closed. Failures follow `failOpen` as for requests.
    pub async fn check_connection(
        &self,
        snapshot: &Snapshot,
        c: &ConnectionCheck<'_>,
    ) -> Result<(), &'static str> {
        let request = auth::CheckRequest {
            attributes: Some(auth::AttributeContext {
                source: Some(peer(c.source, c.principal)),
                destination: Some(peer(c.destination, None)),
                tls_session: c.sni.map(|sni| auth::attribute_context::TlsSession {
                    sni: sni.to_string(),
                }),
                ..Default::default()
            }),
        };
        let answer: Result<auth::CheckResponse, _> = call::grpc(
            snapshot,
            &self.cluster,
            &self.authority,
            CHECK,
            &request,
            self.timeout,
        )
        .await;
        match answer {
            Ok(resp) if resp.status.as_ref().is_none_or(|s| s.code == 0) => {
                super::stats::ext_authz(&self.provider, "ok");
                Ok(())
            }
            Ok(_) => {
                super::stats::ext_authz(&self.provider, "denied");
                Err("ext_authz_denied")
            }
            Err(e) if self.fail_open => {
                tracing::warn!(provider = %self.provider, error = %e, "external authorizer failed; connection allowed (failOpen)");
                super::stats::ext_authz(&self.provider, "failure_mode_allowed");
                Ok(())
            }
            Err(e) => {
                tracing::warn!(provider = %self.provider, error = %e, "external authorizer failed; connection refused");
                super::stats::ext_authz(&self.provider, "error");
                Err("ext_authz_error")
            }
        }
    }

    async fn check_grpc(
        &self,
        snapshot: &Snapshot,
        r: &CheckRequest<'_>,
    ) -> Result<Verdict, CallError> {
        let request = auth::CheckRequest {
            attributes: Some(attributes(
                r,
                self.body.as_ref().is_some_and(|b| b.as_bytes),
            )),
        };
        let resp: auth::CheckResponse = call::grpc(
            snapshot,
            &self.cluster,
            &self.authority,
            CHECK,
            &request,
            self.timeout,
        )
        .await?;
        let code = resp.status.as_ref().map_or(0, |s| s.code);
        use auth::check_response::HttpResponse;
        if code == 0 {
            let mut allowed = Allowed::default();
            if let Some(HttpResponse::OkResponse(ok)) = &resp.http_response {
                for o in &ok.headers {
                    if let Some((name, value)) = header_of(o.header.as_ref()) {
                        allowed.upstream.push((
                            name,
                            value,
                            o.append.as_ref().is_some_and(|a| a.value),
                        ));
                    }
                }
                allowed.remove = ok
                    .headers_to_remove
                    .iter()
                    .filter_map(|h| HeaderName::try_from(h.as_str()).ok())
                    .collect();
                allowed.downstream = ok
                    .response_headers_to_add
                    .iter()
                    .filter_map(|o| header_of(o.header.as_ref()))
                    .collect();
            }
            return Ok(Verdict::Allow(allowed));
        }
        let (status, headers, body) = match resp.http_response {
            Some(HttpResponse::DeniedResponse(d)) => (
                d.status.map_or(0, |s| s.code),
                d.headers
                    .iter()
                    .filter_map(|o| header_of(o.header.as_ref()))
                    .collect(),
                d.body,
            ),
            _ => (0, Vec::new(), String::new()),
        };
        let status = u16::try_from(status)
            .ok()
            .and_then(|s| StatusCode::from_u16(s).ok())
            .filter(|s| s.as_u16() >= 100)
            .unwrap_or(StatusCode::FORBIDDEN);
        let mut resp = Response::new(RespBody::text(body));
        *resp.status_mut() = status;
        for (name, value) in headers {
            resp.headers_mut().insert(name, value);
        }
        Ok(Verdict::Deny(resp, "ext_authz_denied"))
    }

    async fn check_http(
        &self,
        snapshot: &Snapshot,
        r: &CheckRequest<'_>,
    ) -> Result<Verdict, CallError> {
        let mut headers = HeaderMap::new();
        for (name, value) in r.headers {
            // Host and the path travel on the check's own request line.
            if name != header::HOST && self.include.iter().any(|p| p.matches(name.as_str())) {
                headers.append(name.clone(), value.clone());
            }
        }
        // The check's body is the request's, when included (else empty).
        let body = r.body.map_or_else(Bytes::new, |b| b.bytes.clone());
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
        for (name, value) in &self.additional {
            headers.insert(name.clone(), value.clone());
        }
        let path = format!("{}{}", self.path_prefix, r.path);
        let path = PathAndQuery::try_from(path)
            .map_err(|_| CallError::Send("invalid check path".into()))?;
        // The check's :authority is the request's, as Envoy's HTTP client sends it.
        let answer = call::send(
            snapshot,
            &self.cluster,
            r.host,
            (r.method.clone(), path, headers),
            body,
            false,
            self.timeout,
        )
        .await?;
        if answer.status.is_server_error() {
            return Err(CallError::Send(format!(
                "authorizer answered {}",
                answer.status
            )));
        }
        let pick = |patterns: &[Pattern], all_but_host: bool| {
            answer
                .headers
                .iter()
                .filter(|(name, _)| {
                    if patterns.is_empty() {
                        all_but_host && *name != header::HOST
                    } else {
                        patterns.iter().any(|p| p.matches(name.as_str()))
                    }
                })
                .filter(|(name, _)| !framing(name))
                .map(|(n, v)| (n.clone(), v.clone()))
                .collect::<Vec<_>>()
        };
        if answer.status == StatusCode::OK {
            let remove = answer
                .headers
                .get("x-envoy-auth-headers-to-remove")
                .and_then(|v| v.to_str().ok())
                .map(|v| {
                    v.split(',')
                        .filter_map(|h| HeaderName::try_from(h.trim()).ok())
                        .collect()
                })
                .unwrap_or_default();
            return Ok(Verdict::Allow(Allowed {
                upstream: pick(&self.to_upstream, false)
                    .into_iter()
                    .map(|(n, v)| (n, v, false))
                    .collect(),
                remove,
                downstream: pick(&self.to_downstream_on_allow, false),
            }));
        }
        let mut resp = Response::new(RespBody::text(answer.body.clone()));
        *resp.status_mut() = answer.status;
        for (name, value) in pick(&self.to_downstream_on_deny, true) {
            resp.headers_mut().append(name, value);
        }
        Ok(Verdict::Deny(resp, "ext_authz_denied"))
    }
}

/// Headers of the authorizer's own message framing, never copied.
fn framing(name: &HeaderName) -> bool {
    name == header::CONTENT_LENGTH
        || name == header::TRANSFER_ENCODING
        || name == header::CONNECTION
        || name.as_str() == "keep-alive"
}

fn header_of(h: Option<&core::HeaderValue>) -> Option<(HeaderName, HeaderValue)> {
    let h = h?;
    let value = if h.raw_value.is_empty() {
        HeaderValue::try_from(h.value.as_str()).ok()?
    } else {
        HeaderValue::from_bytes(&h.raw_value).ok()?
    };
    Some((HeaderName::try_from(h.key.as_str()).ok()?, value))
}

/// One end of the connection, as Envoy describes it.
fn peer(addr: SocketAddr, principal: Option<&str>) -> auth::attribute_context::Peer {
    auth::attribute_context::Peer {
        address: Some(core::Address {
            address: Some(core::address::Address::SocketAddress(core::SocketAddress {
                protocol: 0,
                address: addr.ip().to_string(),
                port_specifier: Some(core::socket_address::PortSpecifier::PortValue(u32::from(
                    addr.port(),
                ))),
            })),
        }),
        principal: principal.unwrap_or_default().to_string(),
        ..Default::default()
    }
}

/// The request as Envoy describes it to a gRPC authorizer (the body as
/// `raw_body` when `as_bytes`).
fn attributes(r: &CheckRequest<'_>, as_bytes: bool) -> auth::AttributeContext {
    let mut headers = std::collections::BTreeMap::<String, String>::new();
    for (name, value) in r.headers {
        // A client's own x-envoy-auth-partial-body would mislead (Envoy drops it too).
        if name.as_str() == PARTIAL_BODY {
            continue;
        }
        let value = String::from_utf8_lossy(value.as_bytes());
        headers
            .entry(name.as_str().to_string())
            .and_modify(|v| {
                v.push(',');
                v.push_str(&value);
            })
            .or_insert_with(|| value.into_owned());
    }
    headers.insert(":authority".into(), r.host.to_string());
    headers.insert(":method".into(), r.method.as_str().to_string());
    headers.insert(":path".into(), r.path.to_string());
    let (mut body, mut raw_body) = (String::new(), Vec::new());
    if let Some(b) = r.body {
        headers.insert(PARTIAL_BODY.into(), b.partial.to_string());
        if as_bytes {
            raw_body = b.bytes.to_vec();
        } else {
            body = String::from_utf8_lossy(&b.bytes).into_owned();
        }
    }
    let header = |n: &str| {
        r.headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let scheme = match header(crate::http::headers::X_FORWARDED_PROTO.as_str()) {
        s if s.is_empty() => "http".to_string(),
        s => s,
    };
    auth::AttributeContext {
        source: Some(peer(r.source, r.principal)),
        destination: Some(peer(r.destination, None)),
        request: Some(auth::attribute_context::Request {
            http: Some(auth::attribute_context::HttpRequest {
                id: header("x-request-id"),
                method: r.method.as_str().to_string(),
                path: r.path.to_string(),
                host: r.host.to_string(),
                scheme,
                size: header("content-length").parse().unwrap_or(-1),
                protocol: match r.version {
                    Version::HTTP_2 => "HTTP/2",
                    Version::HTTP_10 => "HTTP/1.0",
                    _ => "HTTP/1.1",
                }
                .to_string(),
                headers,
                body,
                raw_body,
                ..Default::default()
            }),
        }),
        ..Default::default()
    }
}

/// Istio's header patterns: exact, "prefix*" or "*suffix", matched
/// case-insensitively (istiod refuses a lone "*").
#[derive(Debug, PartialEq)]
enum Pattern {
    Exact(String),
    Prefix(String),
    Suffix(String),
}

impl Pattern {
    fn new(s: &str) -> Self {
        let s = s.to_ascii_lowercase();
        if let Some(p) = s.strip_suffix('*') {
            Pattern::Prefix(p.to_string())
        } else if let Some(p) = s.strip_prefix('*') {
            Pattern::Suffix(p.to_string())
        } else {
            Pattern::Exact(s)
        }
    }

    fn matches(&self, name: &str) -> bool {
        match self {
            Pattern::Exact(e) => name == e,
            Pattern::Prefix(p) => name.starts_with(p.as_str()),
            Pattern::Suffix(p) => name.ends_with(p.as_str()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_patterns_as_istio() {
        let cases = [
            ("x-ext-authz", "x-ext-authz", true),
            ("X-Ext-Authz", "x-ext-authz", true),
            ("x-ext-authz", "x-ext-authz-2", false),
            ("x-ext-*", "x-ext-authz", true),
            ("x-ext-*", "x-other", false),
            ("*-result", "x-check-result", true),
            ("*-result", "x-result-2", false),
        ];
        for (pattern, name, want) in cases {
            assert_eq!(
                Pattern::new(pattern).matches(name),
                want,
                "{pattern} {name}"
            );
        }
    }

    #[test]
    fn check_attributes_describe_the_request() {
        let mut headers = HeaderMap::new();
        headers.insert("x-ext-authz", HeaderValue::from_static("allow"));
        headers.append("x-multi", HeaderValue::from_static("a"));
        headers.append("x-multi", HeaderValue::from_static("b"));
        headers.insert("x-request-id", HeaderValue::from_static("rid"));
        let r = CheckRequest {
            source: "127.0.0.9:4444".parse().expect("addr"),
            principal: Some("spiffe://cluster.local/ns/foo/sa/sleep"),
            destination: "127.0.0.10:8080".parse().expect("addr"),
            method: &Method::GET,
            path: "/headers?x=1",
            host: "httpbin:8000",
            headers: &headers,
            version: Version::HTTP_11,
            body: None,
        };
        let a = attributes(&r, false);
        let source = a.source.expect("source");
        assert_eq!(source.principal, "spiffe://cluster.local/ns/foo/sa/sleep");
        let http = a.request.and_then(|r| r.http).expect("http");
        assert_eq!(
            (http.method.as_str(), http.path.as_str(), http.host.as_str()),
            ("GET", "/headers?x=1", "httpbin:8000")
        );
        assert_eq!((http.id.as_str(), http.size), ("rid", -1));
        assert_eq!(http.headers["x-multi"], "a,b");
        assert_eq!(http.headers[":path"], "/headers?x=1");
        assert_eq!(http.protocol, "HTTP/1.1");
    }

    #[test]
    fn allowed_headers_set_append_and_remove() {
        let mut h = HeaderMap::new();
        h.insert("authorization", HeaderValue::from_static("secret"));
        h.insert("x-a", HeaderValue::from_static("1"));
        let allowed = Allowed {
            upstream: vec![
                (
                    HeaderName::from_static("x-a"),
                    HeaderValue::from_static("2"),
                    true,
                ),
                (
                    HeaderName::from_static("x-ext-authz-check-result"),
                    HeaderValue::from_static("allowed"),
                    false,
                ),
            ],
            remove: vec![HeaderName::from_static("authorization"), header::HOST],
            downstream: Vec::new(),
        };
        allowed.apply_to_request(&mut h);
        assert!(h.get("authorization").is_none());
        assert_eq!(h.get_all("x-a").iter().count(), 2);
        assert_eq!(h["x-ext-authz-check-result"], "allowed");
    }
}
