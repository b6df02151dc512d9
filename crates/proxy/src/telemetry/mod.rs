//! What the proxy tells about each request: Istio's standard metrics, its
//! span when it is traced, and its access log lines. A request's `Record`
//! travels with its response body and is written when the body ends, so
//! that sizes and durations are whole.

pub mod access_log;
pub mod grpc;
pub mod health;
pub mod meta;
pub mod metrics;
pub mod recent;
pub mod stream;
pub mod trace;

use std::fmt;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::header::HeaderValue;
use http::uri::Authority;
use http::{Method, Version};
use http_body::{Body, Frame, SizeHint};

use crate::req_body::BoxError;
use crate::resp_body::RespBody;
use access_log::AccessLogs;
use meta::{PeerMeta, ServiceMeta};
use metrics::{ByPtr, Metrics, Peers, Protocol, RequestKey, RequestSample, Security};

/// Envoy's response flags, printed with Envoy's short names.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Flags(u16);

impl Flags {
    /// No healthy upstream.
    pub const UH: u16 = 1;
    /// Upstream request timeout.
    pub const UT: u16 = 1 << 1;
    /// Upstream connection failure.
    pub const UF: u16 = 1 << 2;
    /// Upstream connection termination (reset after connecting).
    pub const UC: u16 = 1 << 3;
    /// Upstream overflow (circuit breaking).
    pub const UO: u16 = 1 << 4;
    /// No route.
    pub const NR: u16 = 1 << 5;
    /// Delay injected.
    pub const DI: u16 = 1 << 6;
    /// Fault (abort) injected.
    pub const FI: u16 = 1 << 7;
    /// Downstream disconnected before the response was complete.
    pub const DC: u16 = 1 << 8;
    /// Upstream retry limit exceeded.
    pub const URX: u16 = 1 << 9;
    /// No cluster: the route names a cluster the proxy does not have.
    pub const NC: u16 = 1 << 10;
    /// Downstream protocol error (e.g. a request over the header limits).
    pub const DPE: u16 = 1 << 11;
    /// Rate limited by the local rate limit (Envoy's local_ratelimit).
    pub const RL: u16 = 1 << 12;
    /// Denied by the external authorization service (Envoy's ext_authz).
    pub const UAEX: u16 = 1 << 13;
    /// The rate limit service failed and the request was refused (failure_mode_deny).
    pub const RLSE: u16 = 1 << 14;

    const NAMES: [(u16, &'static str); 15] = [
        (Self::UH, "UH"),
        (Self::UT, "UT"),
        (Self::UF, "UF"),
        (Self::UC, "UC"),
        (Self::UO, "UO"),
        (Self::NR, "NR"),
        (Self::DI, "DI"),
        (Self::FI, "FI"),
        (Self::DC, "DC"),
        (Self::URX, "URX"),
        (Self::NC, "NC"),
        (Self::DPE, "DPE"),
        (Self::RL, "RL"),
        (Self::UAEX, "UAEX"),
        (Self::RLSE, "RLSE"),
    ];

    pub fn set(&mut self, flag: u16) {
        self.0 |= flag;
    }

    pub fn has(&self, flag: u16) -> bool {
        self.0 & flag != 0
    }

    /// As printed; without allocating for none or one flag (nearly every
    /// request).
    pub fn short(&self) -> std::borrow::Cow<'static, str> {
        if self.0 == 0 {
            return "-".into();
        }
        match Self::NAMES.iter().find(|(bit, _)| *bit == self.0) {
            Some((_, name)) => (*name).into(),
            None => self.to_string().into(),
        }
    }
}

impl fmt::Display for Flags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 == 0 {
            return f.write_str("-");
        }
        let mut first = true;
        for (bit, name) in Self::NAMES {
            if self.0 & bit != 0 {
                if !first {
                    f.write_str(",")?;
                }
                f.write_str(name)?;
                first = false;
            }
        }
        Ok(())
    }
}

/// Which side of the request this proxy is, in Istio's terms.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reporter {
    /// Outbound sidecar traffic and gateways.
    Source,
    /// Inbound sidecar traffic.
    Destination,
}

pub struct Telemetry {
    /// Shared with the scrapes under way, which read it a chunk at a time.
    pub metrics: Arc<Metrics>,
    /// Access logs as the config says; `false`: none whatever it says
    /// (`trellis-proxy --no-access-log`).
    pub access_log: bool,
    /// This proxy's own workload.
    pub local: Arc<PeerMeta>,
    pub unknown_peer: Arc<PeerMeta>,
    unknown_service: Arc<ServiceMeta>,
    /// Downstream HTTP connections open now.
    pub connections: AtomicU64,
    pub tracer: trace::Tracer,
    /// Recent errors and slowest requests, while someone looks.
    pub recent: recent::Recent,
}

impl Telemetry {
    /// `principal`: this proxy's SPIFFE id; empty without a mesh identity.
    pub fn new(node: &wire::pb::Node, principal: &str, access_log: bool) -> Self {
        let local = PeerMeta::from_node(node, principal);
        Telemetry {
            tracer: trace::Tracer::new(
                &format!("{}.{}", local.canonical_service, local.namespace),
                &node.id,
            ),
            metrics: Arc::default(),
            access_log,
            local: Arc::new(local),
            unknown_peer: Arc::new(PeerMeta::unknown()),
            unknown_service: Arc::new(ServiceMeta::from_host("")),
            connections: AtomicU64::new(0),
            recent: recent::Recent::default(),
        }
    }

    /// An inbound TCP connection, metered with Istio's TCP metrics as the
    /// destination reporter. `peer`: the verified mesh peer, if mTLS.
    pub fn meter_inbound_tcp<S>(
        &self,
        stream: S,
        peer: Option<Arc<PeerMeta>>,
        service: Option<Arc<ServiceMeta>>,
    ) -> stream::Metered<S> {
        let key = metrics::TcpKey {
            peers: self.tcp_peers(Reporter::Destination, peer, service),
            flags: Flags::default(),
        };
        stream::Metered::new(stream, self.metrics.tcp_opened(&key))
    }

    /// An outbound TCP connection to a service's endpoint, metered with
    /// Istio's TCP metrics as the source reporter.
    pub fn meter_outbound_tcp<S>(
        &self,
        stream: S,
        destination: Arc<PeerMeta>,
        service: Arc<ServiceMeta>,
    ) -> stream::Metered<S> {
        let key = metrics::TcpKey {
            peers: self.tcp_peers(Reporter::Source, Some(destination), Some(service)),
            flags: Flags::default(),
        };
        stream::Metered::new(stream, self.metrics.tcp_opened(&key))
    }

    /// An outbound TCP connection to no service of the mesh, metered as the
    /// source reporter with `cluster` (PassthroughCluster, BlackHoleCluster)
    /// as its destination service, as Istio labels it.
    pub fn meter_unrouted_tcp<S>(&self, stream: S, cluster: &str) -> stream::Metered<S> {
        let service = ServiceMeta::interned(cluster);
        let key = metrics::TcpKey {
            peers: self.tcp_peers(Reporter::Source, None, Some(service)),
            flags: Flags::default(),
        };
        stream::Metered::new(stream, self.metrics.tcp_opened(&key))
    }

    /// The labels of a TCP connection this proxy serves.
    pub fn tcp_peers(
        &self,
        reporter: Reporter,
        peer: Option<Arc<PeerMeta>>,
        service: Option<Arc<ServiceMeta>>,
    ) -> Peers {
        let secured = peer.is_some();
        let peer = peer.unwrap_or_else(|| self.unknown_peer.clone());
        let (source, destination) = match reporter {
            Reporter::Source => (self.local.clone(), peer),
            Reporter::Destination => (peer, self.local.clone()),
        };
        Peers {
            reporter,
            source: ByPtr(source),
            destination: ByPtr(destination),
            service: ByPtr(service.unwrap_or_else(|| self.unknown_service.clone())),
            security: match (reporter, secured) {
                (Reporter::Destination, true) => Security::MutualTls,
                (Reporter::Destination, false) => Security::None,
                (Reporter::Source, _) => Security::Unknown,
            },
        }
    }
}

/// Everything known about one request, filled in as it is handled.
pub struct Record {
    telemetry: Arc<Telemetry>,
    reporter: Reporter,
    start: Instant,
    start_time: SystemTime,
    method: Method,
    version: Version,
    grpc: bool,
    /// Kept only when there is an access log to write it to.
    path: Option<http::uri::PathAndQuery>,
    authority: String,
    user_agent: Option<HeaderValue>,
    request_id: HeaderValue,
    peer: SocketAddr,
    pub received: Arc<AtomicU64>,
    /// gRPC requests: the messages of the request body (counted as it streams).
    pub request_messages: Option<Arc<AtomicU64>>,
    pub status: u16,
    /// gRPC: the `grpc-status` of the response (headers or trailers).
    pub grpc_status: Option<u16>,
    pub flags: Flags,
    pub upstream_host: Option<Authority>,
    pub upstream_cluster: Option<Arc<str>>,
    pub upstream_time: Option<Duration>,
    pub route_name: Option<Arc<str>>,
    /// Why the proxy answered itself, as Envoy's `%RESPONSE_CODE_DETAILS%`
    /// (set where the reason matters to operators, e.g. authorization denials).
    pub response_code_details: Option<Arc<str>>,
    pub destination: Option<Arc<PeerMeta>>,
    /// Inbound over mesh mTLS: the verified peer (from its certificate).
    pub source: Option<Arc<PeerMeta>>,
    pub service: Option<Arc<ServiceMeta>>,
    /// Keeps the request counted as active on its endpoint until it ends.
    pub active: Option<crate::lb::ActiveGuard>,
    /// A sampled request's span.
    span: Option<Box<trace::Span>>,
    /// The access logs of this side of the proxy, if any.
    logs: Option<Arc<AccessLogs>>,
    /// Kept only when there is an access log: the headers it reads
    /// (its `%REQ(...)%` and `%RESP(...)%` operators, its filters).
    request_headers: access_log::Kept,
    response_headers: access_log::Kept,
    /// The listener's address (Envoy's `%DOWNSTREAM_LOCAL_ADDRESS%`).
    pub downstream_local: Option<SocketAddr>,
    /// The TLS server name the client asked for.
    pub requested_server_name: Option<Arc<str>>,
}

impl Record {
    pub fn start<B>(
        telemetry: &Arc<Telemetry>,
        reporter: Reporter,
        req: &http::Request<B>,
        request_id: HeaderValue,
        peer: SocketAddr,
        source: Option<Arc<PeerMeta>>,
    ) -> Self {
        let grpc = req
            .headers()
            .get(http::header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
        Record {
            telemetry: telemetry.clone(),
            reporter,
            start: Instant::now(),
            start_time: SystemTime::now(),
            method: req.method().clone(),
            version: req.version(),
            grpc,
            path: None,
            authority: String::new(),
            user_agent: None,
            request_id,
            peer,
            received: Arc::default(),
            request_messages: grpc.then(Arc::default),
            status: 0,
            grpc_status: None,
            flags: Flags::default(),
            upstream_host: None,
            upstream_cluster: None,
            upstream_time: None,
            route_name: None,
            response_code_details: None,
            destination: None,
            source,
            service: None,
            active: None,
            span: None,
            request_headers: access_log::Kept::default(),
            logs: None,
            response_headers: access_log::Kept::default(),
            downstream_local: None,
            requested_server_name: None,
        }
    }

    /// The request's span and access logs, if it has them; what they
    /// read later is kept now (nothing, for a request with neither).
    pub fn observe<B>(
        &mut self,
        req: &http::Request<B>,
        authority: &str,
        span: Option<Box<trace::Span>>,
        logs: Option<Arc<AccessLogs>>,
    ) {
        if let Some(logs) = &logs {
            // A reference to the request's own buffer, not a copy.
            self.path = req.uri().path_and_query().cloned();
            self.authority = authority.to_string();
            self.request_headers = logs.keep_request(req.headers());
        }
        if logs.is_some() || span.is_some() {
            self.user_agent = req.headers().get(http::header::USER_AGENT).cloned();
        }
        self.span = span;
        self.logs = logs;
    }

    /// Whether the request is logged.
    pub fn logged(&self) -> bool {
        self.logs.is_some()
    }

    /// Keeps what the access logs read of the response's headers.
    pub fn see_response_headers(&mut self, headers: &http::HeaderMap) {
        if let Some(logs) = &self.logs {
            self.response_headers = logs.keep_response(headers);
        }
    }

    /// Reads `grpc-status` from response headers or trailers.
    pub fn see_grpc_status(&mut self, headers: &http::HeaderMap) {
        if self.grpc
            && let Some(code) = headers
                .get("grpc-status")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())
        {
            self.grpc_status = Some(code);
        }
    }

    fn finish(&mut self, bytes_sent: u64, response_messages: u64) {
        let duration = self.start.elapsed();
        let t = &self.telemetry;
        let protocol = match self.version {
            Version::HTTP_2 => "HTTP/2",
            Version::HTTP_10 => "HTTP/1.0",
            _ => "HTTP/1.1",
        };
        let (source, destination) = match self.reporter {
            Reporter::Source => (
                &t.local,
                self.destination.as_ref().unwrap_or(&t.unknown_peer),
            ),
            Reporter::Destination => (self.source.as_ref().unwrap_or(&t.unknown_peer), &t.local),
        };
        let service = self.service.as_ref().unwrap_or(&t.unknown_service);
        let key = RequestKey {
            peers: Peers {
                reporter: self.reporter,
                source: ByPtr(source.clone()),
                destination: ByPtr(destination.clone()),
                service: ByPtr(service.clone()),
                // As Istio: only the server side knows how the connection was secured.
                security: match (self.reporter, &self.source) {
                    (Reporter::Destination, Some(_)) => Security::MutualTls,
                    (Reporter::Destination, None) => Security::None,
                    (Reporter::Source, _) => Security::Unknown,
                },
            },
            protocol: if self.grpc {
                Protocol::Grpc
            } else {
                Protocol::Http
            },
            response_code: self.status,
            grpc_status: if self.grpc { self.grpc_status } else { None },
            flags: self.flags,
        };
        let bytes_received = self.received.load(Ordering::Relaxed);
        let end = self.start + duration;
        if t.recent.wants(
            end,
            duration,
            recent::is_error(self.status, key.grpc_status),
        ) {
            t.recent.keep(recent::Notable {
                end,
                end_time: SystemTime::now(),
                reporter: self.reporter,
                source: source.clone(),
                destination: destination.clone(),
                service: service.clone(),
                route: self.route_name.clone(),
                method: self.method.clone(),
                code: self.status,
                grpc_status: key.grpc_status,
                flags: self.flags,
                duration,
                trace_id: self.span.as_ref().map(|s| s.trace_id),
                request_id: self.request_id.clone(),
            });
        }
        if let Some(span) = self.span.take() {
            self.report_span(*span, protocol, bytes_received, bytes_sent);
        }
        t.metrics.record_request(
            &key,
            &RequestSample {
                duration_ms: duration.as_secs_f64() * 1000.0,
                request_bytes: bytes_received,
                response_bytes: bytes_sent,
                request_messages: self
                    .request_messages
                    .as_ref()
                    .map_or(0, |m| m.load(Ordering::Relaxed)),
                response_messages,
            },
        );
        if let Some(logs) = &self.logs {
            let flags = self.flags.short();
            logs.write(&access_log::Entry {
                start_time: self.start_time,
                method: self.method.as_str(),
                path: self.path.as_ref().map_or("/", |p| p.as_str()),
                authority: &self.authority,
                protocol: Some(protocol),
                response_code: self.status,
                grpc_status: self.grpc_status,
                response_flags: &flags,
                response_code_details: self.response_code_details.as_deref(),
                bytes_received,
                bytes_sent,
                duration_ms: duration.as_millis() as u64,
                upstream_service_time: self.upstream_time.map(|d| d.as_millis() as u64),
                request_headers: Some(&self.request_headers),
                response_headers: Some(&self.response_headers),
                upstream_host: self.upstream_host.as_ref().map(Authority::as_str),
                upstream_cluster: self.upstream_cluster.as_deref(),
                downstream_local: self.downstream_local,
                downstream_remote: self.peer,
                requested_server_name: self.requested_server_name.as_deref(),
                route_name: self.route_name.as_deref(),
                source_principal: self.source.as_ref().map(|p| &*p.principal),
            });
        }
    }
}

impl Record {
    /// The span's tags, as Envoy's tracers set them in an Istio mesh.
    fn report_span(&self, span: trace::Span, protocol: &str, received: u64, sent: u64) {
        let t = &self.telemetry;
        let local = &t.local;
        let service = self.service.as_deref().map(|s| &*s.host);
        let mut attrs: Vec<(std::borrow::Cow<'static, str>, String)> =
            Vec::with_capacity(24 + span.tags.len());
        let mut tag = |k: &'static str, v: &str| attrs.push((k.into(), v.to_string()));
        tag("node_id", &t.tracer.node_id);
        tag("component", "proxy");
        tag("guid:x-request-id", self.request_id.to_str().unwrap_or("-"));
        tag("http.url", &span.url);
        tag("http.method", self.method.as_str());
        tag("http.protocol", protocol);
        tag("downstream_cluster", "-");
        if let Some(ua) = self.user_agent.as_ref().and_then(|v| v.to_str().ok()) {
            tag("user_agent", ua);
        }
        tag("peer.address", &self.peer.to_string());
        tag("request_size", &received.to_string());
        tag("response_size", &sent.to_string());
        tag("http.status_code", &self.status.to_string());
        tag("response_flags", &self.flags.to_string());
        if let Some(c) = &self.upstream_cluster {
            tag("upstream_cluster", c);
            tag("upstream_cluster.name", c);
        }
        if let Some(h) = &self.upstream_host {
            tag("upstream_address", h.as_str());
        }
        tag("istio.canonical_service", &local.canonical_service);
        tag("istio.canonical_revision", &local.canonical_revision);
        tag("istio.namespace", &local.namespace);
        tag("istio.cluster_id", &local.cluster);
        // The other side's SPIFFE id: the verified client certificate's at
        // the server, the expected server identity at the client.
        match span.kind {
            trace::SpanKind::Server => {
                if let Some(p) = &self.source {
                    tag("source.principal", &p.principal);
                }
            }
            trace::SpanKind::Client => {
                if let Some(p) = &self.destination {
                    tag("destination.principal", &p.principal);
                }
            }
        }
        if let Some(g) = self.grpc_status {
            tag("grpc.status_code", &g.to_string());
        }
        let error = self.status == 0 || self.status >= 500;
        if error {
            tag("error", "true");
        }
        attrs.extend(
            span.tags
                .iter()
                .map(|(k, v)| (k.to_string().into(), v.to_string())),
        );
        // Istio's route decorator: "<service host>:<port>/*".
        let name = match service {
            Some(host) if host != meta::UNKNOWN => format!("{host}:{}/*", span.port),
            _ => format!("{}/*", span.authority),
        };
        let data = trace::SpanData {
            trace_id: span.trace_id,
            span_id: span.span_id,
            parent: span.parent,
            kind: span.kind,
            name,
            start: span.start,
            end: SystemTime::now(),
            trace_state: span
                .trace_state
                .as_ref()
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string(),
            attributes: attrs,
            error,
        };
        t.tracer.report(&span.policy, data);
    }
}

/// The response body, which writes the request's record when it ends or is
/// dropped (then, unfinished, flagged DC: the client went away).
pub struct LoggedBody {
    inner: RespBody,
    record: Option<Box<Record>>,
    sent: u64,
    /// gRPC responses: their messages, counted as they pass.
    messages: Option<grpc::MessageCounter>,
    /// HEAD requests and 204/304 responses have no body to wait for.
    bodiless: bool,
}

impl LoggedBody {
    pub fn new(inner: RespBody, record: Box<Record>) -> Self {
        let bodiless = record.method == Method::HEAD || matches!(record.status, 204 | 304);
        LoggedBody {
            messages: record.grpc.then(grpc::MessageCounter::default),
            inner,
            record: Some(record),
            sent: 0,
            bodiless,
        }
    }

    fn finish(&mut self, disconnected: bool) {
        if let Some(mut record) = self.record.take() {
            if disconnected {
                record.flags.set(Flags::DC);
            }
            record.finish(self.sent, self.messages.as_ref().map_or(0, |m| m.messages));
        }
    }
}

impl Body for LoggedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                let this = &mut *self;
                if let Some(d) = frame.data_ref() {
                    this.sent += d.len() as u64;
                    if let Some(m) = &mut this.messages {
                        m.feed(d);
                    }
                } else if let (Some(trailers), Some(r)) = (frame.trailers_ref(), &mut this.record) {
                    r.see_grpc_status(trailers);
                }
                if self.inner.is_end_stream() {
                    self.finish(false);
                }
            }
            Poll::Ready(None) => self.finish(false),
            // The upstream broke off mid-body: Envoy flags that as an upstream reset.
            Poll::Ready(Some(Err(_))) => {
                if let Some(r) = self.record.as_mut() {
                    r.flags.set(Flags::UC);
                }
                self.finish(false);
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for LoggedBody {
    fn drop(&mut self) {
        let unfinished = !self.bodiless && !self.inner.is_end_stream();
        self.finish(unfinished);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_print_like_envoy() {
        let mut f = Flags::default();
        assert_eq!(f.to_string(), "-");
        assert_eq!(f.short(), "-");
        f.set(Flags::URX);
        assert_eq!(f.short(), "URX");
        f.set(Flags::UF);
        assert_eq!(f.to_string(), "UF,URX");
        assert_eq!(f.short(), "UF,URX");
    }
}
