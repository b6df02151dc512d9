//! Sending a request upstream: endpoint choice, tries, retries with
//! backoff (bounded by the cluster's retry budget), per-try and overall
//! timeouts, outlier reporting, and the local replies Envoy gives when no
//! upstream answers.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderMap, Method, Request, Response, StatusCode, Uri, Version};

use super::headers::strip_hop_by_hop;
use super::local_reply;
use crate::failure::Failure;
use crate::lb::breaker::{Breakers, Permit, Resource};
use crate::lb::outlier::Outcome;
use crate::lb::upstream::{ConnSettings, EndpointPool, Lease, SendError};
use crate::lb::{Cluster, Endpoint, UpstreamProtocol};
use crate::req_body::ReqBody;
use crate::resp_body::{RespBody, UpstreamBody};
use crate::snapshot::routes::retry::RetryPolicy;
use crate::telemetry::{Flags, Record};

/// The request line and headers, ready to go upstream.
pub struct Head {
    pub method: Method,
    pub path: PathAndQuery,
    pub headers: HeaderMap,
    /// What the client spoke, for clusters that follow it.
    pub downstream: Version,
    /// A WebSocket upgrade: the client's connection, spliced to the
    /// upstream's when it switches protocols.
    pub upgrade: Option<hyper::upgrade::OnUpgrade>,
}

/// Where a request goes.
pub enum Dest<'a> {
    Cluster {
        cluster: &'a Cluster,
        /// Where a passthrough cluster sends (the authority the client asked for).
        original: Option<&'a Authority>,
        /// The request's hash, for consistent hashing.
        hash: Option<u64>,
    },
    /// The local application (inbound).
    Local {
        app: &'a LocalApp,
        protocol: UpstreamProtocol,
    },
    /// A passthrough destination: one address, no endpoint of a cluster.
    Fixed {
        pool: Arc<EndpointPool>,
        protocol: UpstreamProtocol,
    },
}

/// The local application as an upstream: one endpoint with its own pool of
/// connections (kept across config updates while the address stays).
pub struct LocalApp {
    pub authority: Authority,
    /// Where the application listens.
    pub addr: SocketAddr,
    /// The address the proxy connects from (see [`LocalApp::new`]).
    pub source: Option<IpAddr>,
    pool: Arc<EndpointPool>,
}

impl LocalApp {
    /// The application at `addr`, reached from `source` when given: under
    /// capture the proxy calls the pod's own address from 127.0.0.6 (or
    /// ::6), which the capture rules leave alone (Istio's inbound clusters
    /// bind the same source).
    pub fn new(addr: SocketAddr, source: Option<IpAddr>, settings: ConnSettings) -> Option<Self> {
        let authority: Authority = addr.to_string().parse().ok()?;
        Some(LocalApp {
            pool: EndpointPool::from_source(
                authority.clone(),
                source,
                settings,
                Breakers::default(),
            ),
            authority,
            addr,
            source,
        })
    }
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

/// Envoy's reply when a circuit breaker refuses a request.
pub const OVERFLOW: &str =
    "upstream connect error or disconnect/reset before headers. reset reason: overflow";

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
    // The endpoint of the try in flight, for outlier detection when the
    // route's timeout cuts it short.
    let mut in_flight: Option<Arc<Endpoint>> = None;
    let response = match policy.timeout {
        Some(t) => {
            let r =
                tokio::time::timeout(t, tries(&dest, head, body, &policy, record, &mut in_flight))
                    .await;
            match r {
                Ok(r) => r,
                Err(_) => {
                    if let (Dest::Cluster { cluster, .. }, Some(e)) = (&dest, &in_flight) {
                        cluster.report(e, Outcome::Timeout);
                    }
                    record.flags.set(Flags::UT);
                    local_reply(StatusCode::GATEWAY_TIMEOUT, "upstream request timeout")
                }
            }
        }
        None => tries(&dest, head, body, &policy, record, &mut in_flight).await,
    };
    record.upstream_time = Some(started.elapsed());
    response
}

async fn tries(
    dest: &Dest<'_>,
    mut head: Head,
    body: SendBody,
    policy: &Policy<'_>,
    record: &mut Record,
    in_flight: &mut Option<Arc<Endpoint>>,
) -> Response<RespBody> {
    let (replay, mut once) = match body {
        SendBody::Replay(b) => (Some(b), None),
        SendBody::Once(b) => (None, Some(b)),
    };
    // A body that cannot be replayed allows one try only.
    let retry = policy.retry.filter(|_| replay.is_some());
    let max_tries = 1 + retry.map_or(0, |r| r.attempts);
    let per_try = policy.retry.and_then(|r| r.per_try_timeout);
    let mut upgrade = head.upgrade.take();
    let mut head = Some(head);
    let mut previous: Option<Arc<Endpoint>> = None;
    // Held while a retry is in flight: Envoy's max_retries counts those.
    let mut retrying: Option<Permit> = None;
    for n in 1..=max_tries {
        if n > 1
            && let Some(r) = retry
        {
            tokio::time::sleep(r.backoff(n - 1)).await;
        }
        let last = n == max_tries;
        // Every destination is reached the same way: through a pool of
        // connections to one address, with the circuit breakers it has.
        let (endpoint, pool, protocol) = match dest {
            Dest::Cluster {
                cluster,
                original,
                hash,
            } => match (&cluster.passthrough, original) {
                (Some(p), Some(a)) => (None, p.pool(a), cluster.protocol),
                (Some(_), None) => return no_healthy_upstream(record),
                (None, _) => match cluster.pick(*hash, previous.as_deref()) {
                    Some(e) => {
                        let pool = e.pool().clone();
                        (Some(e), pool, cluster.protocol)
                    }
                    None => return no_healthy_upstream(record),
                },
            },
            Dest::Local { app, protocol } => (None, app.pool.clone(), *protocol),
            Dest::Fixed { pool, protocol } => (None, pool.clone(), *protocol),
        };
        record.upstream_host = Some(match (&endpoint, dest) {
            (Some(e), _) => e.authority.clone(),
            (None, _) => pool.authority().clone(),
        });
        if let Some(e) = &endpoint {
            record.destination = Some(e.meta.clone());
        }
        in_flight.clone_from(&endpoint);
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
        // An upgrade is an HTTP/1.1 mechanism, whatever the cluster speaks.
        let http2 = upgrade.is_none()
            && match protocol {
                UpstreamProtocol::Http2 => true,
                UpstreamProtocol::Http1 => false,
                UpstreamProtocol::Downstream => h.downstream == Version::HTTP_2,
            };
        let attempt = attempt(&pool, h, body, http2);
        let outcome = match per_try {
            Some(t) => tokio::time::timeout(t, attempt)
                .await
                .unwrap_or(Err(SendError::Failure(Failure::PerTryTimeout))),
            None => attempt.await,
        };
        // The retry (if this was one) has its answer.
        drop(retrying.take());
        if let (Dest::Cluster { cluster, .. }, Some(e)) = (dest, &endpoint) {
            match &outcome {
                Ok((resp, _)) => cluster.report(e, Outcome::Status(resp.status().as_u16())),
                Err(SendError::Failure(f)) => cluster.report(e, outcome_of(*f)),
                // Refused before it left: says nothing about the endpoint.
                Err(SendError::Overflow) => {}
            }
        }
        match outcome {
            Ok((mut resp, lease)) => {
                if let Some(down) = upgrade.take()
                    && super::upgrade::splice(down, &mut resp)
                {
                    record.active = guard;
                    return switched(resp, lease);
                }
                let retriable =
                    retry.is_some_and(|r| r.retries_response(resp.status(), resp.headers()));
                if let Some(permit) = next_try(retriable, n, last, dest, record) {
                    retrying = permit;
                    previous = endpoint;
                    continue;
                }
                record.active = guard;
                return upstream_response(resp, lease);
            }
            Err(SendError::Overflow) => return overflow(record),
            Err(SendError::Failure(failure)) => {
                let retriable = retry.is_some_and(|r| r.retries_failure(failure));
                if let Some(permit) = next_try(retriable, n, last, dest, record) {
                    retrying = permit;
                    previous = endpoint;
                    continue;
                }
                return failure_reply(failure, record);
            }
        }
    }
    no_healthy_upstream(record)
}

/// One try, on a connection of the destination's pool (which applies its
/// circuit breakers).
async fn attempt(
    pool: &Arc<EndpointPool>,
    h: Head,
    body: ReqBody,
    http2: bool,
) -> Result<(Response<hyper::body::Incoming>, Option<Lease>), SendError> {
    let Some(req) = build(h, pool.authority().clone(), body, http2) else {
        return Err(SendError::Failure(Failure::Reset));
    };
    pool.send(req, http2)
        .await
        .map(|(resp, lease)| (resp, Some(lease)))
}

/// After an answer a retry policy covers: the permit for another try
/// (`Some`), or `None` when this answer goes to the client — the last try
/// (flagged URX when retries were spent) or no retry budget left (UO).
fn next_try(
    retriable: bool,
    n: u32,
    last: bool,
    dest: &Dest<'_>,
    record: &mut Record,
) -> Option<Option<Permit>> {
    if !retriable {
        return None;
    }
    if last {
        if n > 1 {
            record.flags.set(Flags::URX);
        }
        return None;
    }
    match retry_budget(dest) {
        Ok(permit) => Some(permit),
        Err(()) => {
            record.flags.set(Flags::UO);
            None
        }
    }
}

/// Room for one more retry in flight; `Err` when the cluster's max_retries
/// is reached (Envoy then returns what it has, flagged UO).
fn retry_budget(dest: &Dest<'_>) -> Result<Option<Permit>, ()> {
    match dest {
        Dest::Cluster { cluster, .. } => cluster
            .breakers
            .try_acquire(Resource::Retries)
            .map(Some)
            .ok_or(()),
        Dest::Local { .. } | Dest::Fixed { .. } => Ok(None),
    }
}

/// How outlier detection counts a try that got no response (Envoy maps
/// connection failures and resets to 503, timeouts to 504).
fn outcome_of(f: Failure) -> Outcome {
    match f {
        Failure::Connect => Outcome::ConnectFailure,
        Failure::PerTryTimeout => Outcome::Timeout,
        Failure::Refused | Failure::Reset => Outcome::Reset,
    }
}

fn clone_head(h: &Head) -> Head {
    Head {
        method: h.method.clone(),
        path: h.path.clone(),
        headers: h.headers.clone(),
        downstream: h.downstream,
        upgrade: None,
    }
}

/// The upstream request, with Envoy's authority semantics: the authority
/// is the one the client asked for (or the route's rewrite), which the
/// request carries in its Host header at this point, sent as `Host` on
/// HTTP/1.1 and as `:authority` on HTTP/2 — never both, and never the
/// endpoint's address, which only says where the connection goes.
pub(super) fn build(
    mut h: Head,
    endpoint: Authority,
    body: ReqBody,
    http2: bool,
) -> Option<Request<ReqBody>> {
    let uri = if http2 {
        let authority = h
            .headers
            .remove(header::HOST)
            .and_then(|v| Authority::try_from(v.as_bytes()).ok())
            .unwrap_or(endpoint);
        absolute(scheme_of(&h.headers), authority, h.path)?
    } else {
        Uri::from(h.path)
    };
    if !http2 {
        join_cookies(&mut h.headers);
    }
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

/// The upstream `:scheme`, as Envoy derives it for a request: the one the
/// client used, which `x-forwarded-proto` carries by now (the edge sets it
/// from the connection; an HTTP/2 client's `:scheme` went into it).
fn scheme_of(headers: &HeaderMap) -> Scheme {
    match headers.get(super::headers::X_FORWARDED_PROTO) {
        Some(v) if v.as_bytes().eq_ignore_ascii_case(b"https") => Scheme::HTTPS,
        _ => Scheme::HTTP,
    }
}

fn absolute(scheme: Scheme, authority: Authority, path: PathAndQuery) -> Option<Uri> {
    Uri::builder()
        .scheme(scheme)
        .authority(authority)
        .path_and_query(path)
        .build()
        .ok()
}

/// HTTP/2 clients may split the Cookie header into one field per cookie
/// (RFC 9113 §8.2.3); HTTP/1.1 allows one Cookie line, joined with "; ".
fn join_cookies(headers: &mut HeaderMap) {
    let mut all = headers.get_all(header::COOKIE).iter();
    if all.next().is_none() || all.next().is_none() {
        return;
    }
    let joined: Vec<&[u8]> = headers
        .get_all(header::COOKIE)
        .iter()
        .map(|v| v.as_bytes())
        .collect();
    if let Ok(v) = http::HeaderValue::from_bytes(&joined.join(&b"; "[..])) {
        headers.insert(header::COOKIE, v);
    }
}

fn upstream_response(
    resp: Response<hyper::body::Incoming>,
    lease: Option<Lease>,
) -> Response<RespBody> {
    let (mut parts, body) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    Response::from_parts(parts, RespBody::Upstream(UpstreamBody::new(body, lease)))
}

/// The upstream's 101: the client switches too.
fn switched(resp: Response<hyper::body::Incoming>, lease: Option<Lease>) -> Response<RespBody> {
    let upgrade = resp.headers().get(header::UPGRADE).cloned();
    let mut resp = upstream_response(resp, lease);
    super::upgrade::response_headers(resp.headers_mut(), upgrade);
    resp
}

fn no_healthy_upstream(record: &mut Record) -> Response<RespBody> {
    record.flags.set(Flags::UH);
    local_reply(StatusCode::SERVICE_UNAVAILABLE, "no healthy upstream")
}

/// A circuit breaker refused the request (Envoy: 503, UO).
fn overflow(record: &mut Record) -> Response<RespBody> {
    record.flags.set(Flags::UO);
    local_reply(StatusCode::SERVICE_UNAVAILABLE, OVERFLOW)
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
