//! Sending a request upstream: endpoint choice, tries, retries with
//! backoff, per-try and overall timeouts, and the local replies Envoy gives
//! when no upstream answers.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderMap, Method, Request, Response, StatusCode, Uri, Version};
use hyper::body::Incoming;

use super::body::{ReqBody, RespBody};
use super::headers::strip_hop_by_hop;
use super::local_reply;
use super::retry::{Failure, RetryPolicy};
use crate::lb::pool::Pool;
use crate::lb::{Balancer, Cluster, Endpoint, UpstreamProtocol};
use crate::telemetry::{Flags, Record};

/// The request line and headers, ready to go upstream.
pub struct Head {
    pub method: Method,
    pub path: PathAndQuery,
    pub headers: HeaderMap,
    /// What the client spoke, for clusters that follow it.
    pub downstream: Version,
}

/// Where a request goes.
pub enum Dest<'a> {
    Cluster {
        cluster: &'a Cluster,
        /// Where a passthrough cluster sends (the authority the client asked for).
        original: Option<&'a Authority>,
    },
    /// One fixed address: the local application, or a passthrough destination.
    Fixed {
        authority: Authority,
        pool: &'a Pool,
        protocol: UpstreamProtocol,
    },
}

/// A request body, once or replayable.
pub enum SendBody {
    Replay(Bytes),
    Once(ReqBody),
}

#[derive(Default)]
pub struct Policy<'a> {
    pub timeout: Option<Duration>,
    pub retry: Option<&'a RetryPolicy>,
}

/// Sends the request and returns the response to give the client: the
/// upstream's, or a local reply that says what went wrong.
pub async fn send(
    dest: Dest<'_>,
    head: Head,
    body: SendBody,
    policy: Policy<'_>,
    record: &mut Record,
) -> Response<RespBody> {
    let started = Instant::now();
    let tries = tries(&dest, head, body, &policy, record);
    let response = match policy.timeout {
        Some(t) => match tokio::time::timeout(t, tries).await {
            Ok(r) => r,
            Err(_) => {
                record.flags.set(Flags::UT);
                local_reply(StatusCode::GATEWAY_TIMEOUT, "upstream request timeout")
            }
        },
        None => tries.await,
    };
    record.upstream_time = Some(started.elapsed());
    response
}

async fn tries(
    dest: &Dest<'_>,
    head: Head,
    body: SendBody,
    policy: &Policy<'_>,
    record: &mut Record,
) -> Response<RespBody> {
    let (replay, mut once) = match body {
        SendBody::Replay(b) => (Some(b), None),
        SendBody::Once(b) => (None, Some(b)),
    };
    // A body that cannot be replayed allows one try only.
    let retry = policy.retry.filter(|_| replay.is_some());
    let max_tries = 1 + retry.map_or(0, |r| r.attempts);
    let per_try = policy.retry.and_then(|r| r.per_try_timeout);
    let mut head = Some(head);
    let mut previous: Option<Arc<Endpoint>> = None;
    for n in 1..=max_tries {
        if n > 1
            && let Some(r) = retry
        {
            tokio::time::sleep(r.backoff(n - 1)).await;
        }
        let last = n == max_tries;
        let (authority, endpoint, pool, protocol) = match dest {
            Dest::Cluster { cluster, original } => {
                let endpoint = match cluster.balancer {
                    Balancer::Passthrough => None,
                    _ => match cluster.pick(previous.as_deref()) {
                        Some(e) => Some(e.clone()),
                        None => return no_healthy_upstream(record),
                    },
                };
                let authority = match (&endpoint, original) {
                    (Some(e), _) => e.authority.clone(),
                    (None, Some(a)) => (*a).clone(),
                    (None, None) => return no_healthy_upstream(record),
                };
                (authority, endpoint, &*cluster.pool, cluster.protocol)
            }
            Dest::Fixed {
                authority,
                pool,
                protocol,
            } => (authority.clone(), None, *pool, *protocol),
        };
        record.upstream_host = Some(match &endpoint {
            Some(e) => e.key.clone(),
            None => authority.as_str().into(),
        });
        if let Some(e) = &endpoint {
            record.destination = Some(e.meta.clone());
        }
        let guard = endpoint.as_ref().map(|e| e.start());
        // The head is copied while another try may follow and moved on the last.
        let Some(h) = (if last {
            head.take()
        } else {
            head.as_ref().map(clone_head)
        }) else {
            break;
        };
        let body = match (&replay, once.take()) {
            (Some(b), _) => ReqBody::bytes(b.clone()),
            (None, Some(b)) => b,
            (None, None) => ReqBody::Empty,
        };
        let http2 = match protocol {
            UpstreamProtocol::Http2 => true,
            UpstreamProtocol::Http1 => false,
            UpstreamProtocol::Downstream => h.downstream == Version::HTTP_2,
        };
        let Some(req) = build(h, authority, body, http2) else {
            return local_reply(StatusCode::BAD_REQUEST, "invalid request path");
        };
        let client = if http2 { &pool.http2 } else { &pool.http1 };
        let outcome = match per_try {
            Some(t) => match tokio::time::timeout(t, client.request(req)).await {
                Ok(r) => r.map_err(classify),
                Err(_) => Err(Failure::PerTryTimeout),
            },
            None => client.request(req).await.map_err(classify),
        };
        match outcome {
            Ok(resp) => {
                let retriable =
                    retry.is_some_and(|r| r.retries_response(resp.status(), resp.headers()));
                if retriable && !last {
                    previous = endpoint;
                    continue;
                }
                if retriable && n > 1 {
                    record.flags.set(Flags::URX);
                }
                record.active = guard;
                return upstream_response(resp);
            }
            Err(failure) => {
                let retriable = retry.is_some_and(|r| r.retries_failure(failure));
                if retriable && !last {
                    previous = endpoint;
                    continue;
                }
                if retriable && n > 1 {
                    record.flags.set(Flags::URX);
                }
                return failure_reply(failure, record);
            }
        }
    }
    no_healthy_upstream(record)
}

fn classify(err: hyper_util::client::legacy::Error) -> Failure {
    tracing::debug!(error = ?err, "upstream request failed");
    if err.is_connect() {
        return Failure::Connect;
    }
    let mut source = std::error::Error::source(&err);
    while let Some(e) = source {
        if let Some(h2) = e.downcast_ref::<h2::Error>() {
            if h2.reason() == Some(h2::Reason::REFUSED_STREAM) {
                return Failure::Refused;
            }
            break;
        }
        source = e.source();
    }
    Failure::Reset
}

fn clone_head(h: &Head) -> Head {
    Head {
        method: h.method.clone(),
        path: h.path.clone(),
        headers: h.headers.clone(),
        downstream: h.downstream,
    }
}

fn build(h: Head, authority: Authority, body: ReqBody, http2: bool) -> Option<Request<ReqBody>> {
    let uri = Uri::builder()
        .scheme(Scheme::HTTP)
        .authority(authority)
        .path_and_query(h.path)
        .build()
        .ok()?;
    let mut req = Request::new(body);
    *req.method_mut() = h.method;
    *req.uri_mut() = uri;
    *req.version_mut() = if http2 {
        Version::HTTP_2
    } else {
        Version::HTTP_11
    };
    *req.headers_mut() = h.headers;
    Some(req)
}

fn upstream_response(resp: Response<Incoming>) -> Response<RespBody> {
    let (mut parts, body) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    Response::from_parts(parts, RespBody::Upstream(body))
}

fn no_healthy_upstream(record: &mut Record) -> Response<RespBody> {
    record.flags.set(Flags::UH);
    local_reply(StatusCode::SERVICE_UNAVAILABLE, "no healthy upstream")
}

/// Envoy's local replies for an upstream that gave no response.
fn failure_reply(failure: Failure, record: &mut Record) -> Response<RespBody> {
    let (flag, status, body) = match failure {
        Failure::Connect => (
            Flags::UF,
            StatusCode::SERVICE_UNAVAILABLE,
            "upstream connect error or disconnect/reset before headers. reset reason: connection failure",
        ),
        Failure::Refused => (
            Flags::UC,
            StatusCode::SERVICE_UNAVAILABLE,
            "upstream connect error or disconnect/reset before headers. reset reason: remote refused stream reset",
        ),
        Failure::Reset => (
            Flags::UC,
            StatusCode::SERVICE_UNAVAILABLE,
            "upstream connect error or disconnect/reset before headers. reset reason: connection termination",
        ),
        Failure::PerTryTimeout => (
            Flags::UT,
            StatusCode::GATEWAY_TIMEOUT,
            "upstream request timeout",
        ),
    };
    record.flags.set(flag);
    local_reply(status, body)
}
