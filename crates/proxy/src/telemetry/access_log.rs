//! Access logs as Istio configures Envoy's file access log: one line per
//! request in Istio's default TEXT format or its JSON format, or in a
//! format of Envoy command operators (`meshConfig.accessLogFormat`, an
//! `envoyFileAccessLog` provider's `logFormat`), to `/dev/stdout` (what
//! `kubectl logs -c istio-proxy` shows) or a file, for the requests a
//! Telemetry `filter.expression` lets through.
//!
//! A line is rendered on the request path straight into its destination's
//! pending batch (no allocation per line or per operator; the start time's
//! date and second are formatted once a second), and one thread per
//! destination writes the batch out, so that a slow stdout never blocks a
//! request; when it falls far behind, lines are dropped and counted.

use std::cell::Cell;
use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak, mpsc};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use expr::{Attr, Expr, Value};
use http::HeaderMap;
use http::header::{HeaderName, HeaderValue};
use wire::pb;

/// Istio's default TEXT format (`EnvoyTextLogFormat`).
pub const ISTIO_TEXT_FORMAT: &str = "[%START_TIME%] \"%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%\" %RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %CONNECTION_TERMINATION_DETAILS% \"%UPSTREAM_TRANSPORT_FAILURE_REASON%\" %BYTES_RECEIVED% %BYTES_SENT% %DURATION% %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% \"%REQ(X-FORWARDED-FOR)%\" \"%REQ(USER-AGENT)%\" \"%REQ(X-REQUEST-ID)%\" \"%REQ(:AUTHORITY)%\" \"%UPSTREAM_HOST%\" %UPSTREAM_CLUSTER_RAW% %UPSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS% %REQUESTED_SERVER_NAME% %ROUTE_NAME%\n";

/// Istio's default JSON format (`EnvoyJSONLogFormatIstio`), in its order.
pub const ISTIO_JSON_FORMAT: &[(&str, &str)] = &[
    ("start_time", "%START_TIME%"),
    ("route_name", "%ROUTE_NAME%"),
    ("method", "%REQ(:METHOD)%"),
    ("path", "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%"),
    ("protocol", "%PROTOCOL%"),
    ("response_code", "%RESPONSE_CODE%"),
    ("response_flags", "%RESPONSE_FLAGS%"),
    ("response_code_details", "%RESPONSE_CODE_DETAILS%"),
    (
        "connection_termination_details",
        "%CONNECTION_TERMINATION_DETAILS%",
    ),
    ("bytes_received", "%BYTES_RECEIVED%"),
    ("bytes_sent", "%BYTES_SENT%"),
    ("duration", "%DURATION%"),
    (
        "upstream_service_time",
        "%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)%",
    ),
    ("x_forwarded_for", "%REQ(X-FORWARDED-FOR)%"),
    ("user_agent", "%REQ(USER-AGENT)%"),
    ("request_id", "%REQ(X-REQUEST-ID)%"),
    ("authority", "%REQ(:AUTHORITY)%"),
    ("upstream_host", "%UPSTREAM_HOST%"),
    ("upstream_cluster", "%UPSTREAM_CLUSTER_RAW%"),
    ("upstream_local_address", "%UPSTREAM_LOCAL_ADDRESS%"),
    ("downstream_local_address", "%DOWNSTREAM_LOCAL_ADDRESS%"),
    ("downstream_remote_address", "%DOWNSTREAM_REMOTE_ADDRESS%"),
    ("requested_server_name", "%REQUESTED_SERVER_NAME%"),
    (
        "upstream_transport_failure_reason",
        "%UPSTREAM_TRANSPORT_FAILURE_REASON%",
    ),
];

/// What a line is made of: everything the proxy knows about one request
/// (or TCP connection) when it ends.
pub struct Entry<'a> {
    pub start_time: SystemTime,
    pub method: &'a str,
    pub path: &'a str,
    pub authority: &'a str,
    /// "HTTP/1.1", "HTTP/2"; TCP: none.
    pub protocol: Option<&'a str>,
    pub response_code: u16,
    pub grpc_status: Option<u16>,
    pub response_flags: &'a str,
    pub response_code_details: Option<&'a str>,
    pub bytes_received: u64,
    pub bytes_sent: u64,
    pub duration_ms: u64,
    pub upstream_service_time: Option<u64>,
    /// The request's headers that the logs read (see [`AccessLogs::keep_request`]).
    pub request_headers: Option<&'a Kept>,
    pub response_headers: Option<&'a Kept>,
    pub upstream_host: Option<&'a str>,
    pub upstream_cluster: Option<&'a str>,
    pub downstream_local: Option<SocketAddr>,
    pub downstream_remote: SocketAddr,
    pub requested_server_name: Option<&'a str>,
    pub route_name: Option<&'a str>,
    /// The verified mTLS peer's SPIFFE id.
    pub source_principal: Option<&'a str>,
}

impl<'a> Entry<'a> {
    /// A TCP connection's line: no HTTP fields; the caller adds what it
    /// knows of the upstream. `start` is when it began (wall clock, monotonic).
    pub fn tcp(
        start: (SystemTime, std::time::Instant),
        response_flags: &'a str,
        (bytes_received, bytes_sent): (u64, u64),
        downstream_remote: SocketAddr,
    ) -> Self {
        Entry {
            start_time: start.0,
            method: "",
            path: "",
            authority: "",
            protocol: None,
            response_code: 0,
            grpc_status: None,
            response_flags,
            response_code_details: None,
            bytes_received,
            bytes_sent,
            duration_ms: start.1.elapsed().as_millis() as u64,
            upstream_service_time: None,
            request_headers: None,
            response_headers: None,
            upstream_host: None,
            upstream_cluster: None,
            downstream_local: None,
            downstream_remote,
            requested_server_name: None,
            route_name: None,
            source_principal: None,
        }
    }

    fn header(&self, name: &str) -> Option<&str> {
        match name {
            ":method" => Some(self.method).filter(|m| !m.is_empty()),
            ":path" | "x-envoy-original-path" => Some(self.path).filter(|p| !p.is_empty()),
            ":authority" | "host" => Some(self.authority).filter(|a| !a.is_empty()),
            _ => self
                .request_headers
                .and_then(|h| h.get(name))
                .and_then(|v| v.to_str().ok()),
        }
    }

    fn attr(&self, a: &Attr) -> Value {
        let s = |v: Option<&str>| v.map_or(Value::Absent, |v| Value::Str(v.to_string()));
        match a {
            Attr::ResponseCode => Value::Int(i64::from(self.response_code)),
            Attr::ResponseGrpcStatus => self
                .grpc_status
                .map_or(Value::Absent, |g| Value::Int(i64::from(g))),
            Attr::ResponseFlags => Value::Str(self.response_flags.to_string()),
            Attr::ResponseDuration => Value::Int(self.duration_ms as i64),
            Attr::RequestMethod => s(self.header(":method")),
            Attr::RequestPath => s(self.header(":path")),
            Attr::RequestUrlPath => s(self
                .header(":path")
                .map(|p| p.split('?').next().unwrap_or(p))),
            Attr::RequestHost => s(self.header(":authority")),
            Attr::RequestProtocol => s(self.protocol),
            Attr::RequestId => s(self.header("x-request-id")),
            Attr::RequestUserAgent => s(self.header("user-agent")),
            Attr::RequestScheme => s(self.header("x-forwarded-proto")),
            Attr::RequestHeader(h) => s(self.header(h)),
            Attr::ResponseHeader(h) => s(self
                .response_headers
                .and_then(|r| r.get(h.as_str()))
                .and_then(|v| v.to_str().ok())),
            Attr::SourcePrincipal => s(self.source_principal),
            Attr::ConnectionMtls => Value::Bool(self.source_principal.is_some()),
            Attr::UpstreamCluster => s(self.upstream_cluster),
        }
    }
}

/// The headers a request's lines read, copied from the request (or its
/// response) when it is handled: the few the formats and filters name,
/// never the whole map. The first value of each.
#[derive(Debug, Default)]
pub struct Kept(Vec<(HeaderName, HeaderValue)>);

impl Kept {
    fn copy(names: &[HeaderName], headers: &HeaderMap) -> Kept {
        Kept(
            names
                .iter()
                .filter_map(|n| Some((n.clone(), headers.get(n)?.clone())))
                .collect(),
        )
    }

    fn get(&self, name: &str) -> Option<&HeaderValue> {
        self.0
            .iter()
            .find_map(|(n, v)| (n.as_str() == name).then_some(v))
    }
}

/// One side's access logs (`pb::AccessLogPolicy` list), compiled.
pub struct AccessLogs {
    sinks: Vec<Sink>,
    /// The request and response headers the sinks read.
    request_headers: Vec<HeaderName>,
    response_headers: Vec<HeaderName>,
}

struct Sink {
    writer: Arc<Writer>,
    format: Format,
    filter: Option<Expr>,
}

impl AccessLogs {
    /// A log whose format, filter or file is unusable is left out (and
    /// said so): it never stops the rest of the config from applying.
    pub fn compile(policies: &[pb::AccessLogPolicy]) -> Option<Arc<Self>> {
        let sinks: Vec<Sink> = policies
            .iter()
            .filter_map(|p| match Sink::compile(p) {
                Ok(sink) => Some(sink),
                Err(error) => {
                    tracing::warn!(log = %p.name, path = %p.path, %error, "access log not written");
                    None
                }
            })
            .collect();
        if sinks.is_empty() {
            return None;
        }
        let (mut request_headers, mut response_headers) = (Vec::new(), Vec::new());
        for sink in &sinks {
            sink.format
                .headers_read(&mut request_headers, &mut response_headers);
            for attr in sink.filter.iter().flat_map(Expr::attributes) {
                let (names, name) = match attr {
                    Attr::RequestId => (&mut request_headers, "x-request-id"),
                    Attr::RequestUserAgent => (&mut request_headers, "user-agent"),
                    Attr::RequestScheme => (&mut request_headers, "x-forwarded-proto"),
                    Attr::RequestHeader(h) => (&mut request_headers, h.as_str()),
                    Attr::ResponseHeader(h) => (&mut response_headers, h.as_str()),
                    _ => continue,
                };
                read_header(names, name);
            }
        }
        Some(Arc::new(AccessLogs {
            sinks,
            request_headers,
            response_headers,
        }))
    }

    /// The request headers the lines will read.
    pub fn keep_request(&self, headers: &HeaderMap) -> Kept {
        Kept::copy(&self.request_headers, headers)
    }

    /// The response headers the lines will read.
    pub fn keep_response(&self, headers: &HeaderMap) -> Kept {
        Kept::copy(&self.response_headers, headers)
    }

    pub fn write(&self, e: &Entry<'_>) {
        for sink in &self.sinks {
            if sink
                .filter
                .as_ref()
                .is_some_and(|f| !f.matches(&|a| e.attr(a)))
            {
                continue;
            }
            sink.writer.append(|out| sink.format.render(e, out));
        }
    }
}

/// Adds a header a line reads to `names`: those [`Entry::header`] answers
/// from the entry's own fields, and pseudo-headers (which no header map
/// holds), are not copied.
fn read_header(names: &mut Vec<HeaderName>, name: &str) {
    if matches!(name, "x-envoy-original-path" | "host") || name.starts_with(':') {
        return;
    }
    if let Ok(n) = HeaderName::from_bytes(name.as_bytes())
        && !names.contains(&n)
    {
        names.push(n);
    }
}

impl Sink {
    fn compile(p: &pb::AccessLogPolicy) -> Result<Sink, String> {
        let json = pb::AccessLogEncoding::try_from(p.encoding)
            .map_err(|_| format!("unknown encoding {}", p.encoding))?
            == pb::AccessLogEncoding::Json;
        let format = Format::compile(&p.format, json)?;
        let filter = match p.filter.trim() {
            "" => None,
            f => Some(Expr::parse(f).map_err(|e| format!("filter: {e}"))?),
        };
        let writer = Writer::for_path(&p.path).map_err(|e| e.to_string())?;
        Ok(Sink {
            writer,
            format,
            filter,
        })
    }
}

enum Format {
    Text(Vec<Piece>),
    /// Keys and their formats; values are typed as Envoy's JSON formatter
    /// types them (numbers for numeric operators alone, null for unset).
    Json(Vec<(String, Vec<Piece>)>),
}

enum Piece {
    Lit(String),
    Op(Operator, Option<usize>),
}

#[derive(Clone)]
enum Operator {
    StartTime,
    /// `REQ(A?B)`: header A, else B.
    Req(Vec<String>),
    Resp(String),
    Protocol,
    ResponseCode,
    ResponseFlags,
    ResponseCodeDetails,
    ConnectionTerminationDetails,
    UpstreamTransportFailureReason,
    BytesReceived,
    BytesSent,
    Duration,
    UpstreamHost,
    UpstreamCluster,
    UpstreamLocalAddress,
    DownstreamLocalAddress,
    DownstreamRemoteAddress,
    DownstreamRemoteAddressWithoutPort,
    RequestedServerName,
    RouteName,
    GrpcStatus,
    DownstreamPeerUriSan,
    /// `ENVIRONMENT(X)`, read when the config arrived.
    Fixed(String),
}

impl Format {
    fn compile(format: &str, json: bool) -> Result<Format, String> {
        if !json {
            let text = if format.is_empty() {
                ISTIO_TEXT_FORMAT
            } else {
                format
            };
            let mut pieces = pieces(text)?;
            // Envoy adds no newline; Istio's formats end with one, and a
            // custom one without gets it (Istio appends it too).
            if !text.ends_with('\n') {
                pieces.push(Piece::Lit("\n".into()));
            }
            return Ok(Format::Text(pieces));
        }
        let fields: Vec<(String, String)> = if format.is_empty() {
            ISTIO_JSON_FORMAT
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        } else {
            let map: serde_json::Map<String, serde_json::Value> = serde_json::from_str(format)
                .map_err(|e| format!("the JSON format is not a JSON object: {e}"))?;
            map.into_iter()
                .map(|(k, v)| match v {
                    serde_json::Value::String(s) => Ok((k, s)),
                    other => Ok((k, other.to_string())),
                })
                .collect::<Result<_, String>>()?
        };
        fields
            .into_iter()
            .map(|(k, v)| Ok((k, pieces(&v)?)))
            .collect::<Result<_, String>>()
            .map(Format::Json)
    }

    /// The headers the format's `%REQ(...)%` and `%RESP(...)%` operators read.
    fn headers_read(&self, request: &mut Vec<HeaderName>, response: &mut Vec<HeaderName>) {
        let pieces: Vec<&Piece> = match self {
            Format::Text(pieces) => pieces.iter().collect(),
            Format::Json(fields) => fields.iter().flat_map(|(_, p)| p).collect(),
        };
        for p in pieces {
            match p {
                Piece::Op(Operator::Req(names), _) => {
                    for n in names {
                        read_header(request, n);
                    }
                }
                // Not a header of the response: the entry's own field.
                Piece::Op(Operator::Resp(n), _) if n == "x-envoy-upstream-service-time" => {}
                Piece::Op(Operator::Resp(n), _) => read_header(response, n),
                _ => {}
            }
        }
    }

    fn render(&self, e: &Entry<'_>, out: &mut Vec<u8>) {
        match self {
            Format::Text(pieces) => render_text(pieces, e, out),
            Format::Json(fields) => {
                let mut map = serde_json::Map::with_capacity(fields.len());
                let mut v = Vec::new();
                for (k, pieces) in fields {
                    v.clear();
                    let value = match pieces.as_slice() {
                        [Piece::Op(op, max)] => {
                            write_value(op, e, &mut v);
                            let v = String::from_utf8_lossy(&v);
                            if v.is_empty() {
                                serde_json::Value::Null
                            } else if numeric(op) {
                                v.parse::<u64>()
                                    .map_or_else(|_| v.as_ref().into(), serde_json::Value::from)
                            } else {
                                truncate(&v, *max).into()
                            }
                        }
                        _ => {
                            render_text(pieces, e, &mut v);
                            String::from_utf8_lossy(&v).into()
                        }
                    };
                    map.insert(k.clone(), value);
                }
                if serde_json::to_writer(&mut *out, &map).is_ok() {
                    out.push(b'\n');
                }
            }
        }
    }
}

/// Literals and operators one after the other; an unset (or empty) value
/// is `-`, as Envoy prints it.
fn render_text(pieces: &[Piece], e: &Entry<'_>, out: &mut Vec<u8>) {
    for p in pieces {
        match p {
            Piece::Lit(l) => out.extend_from_slice(l.as_bytes()),
            Piece::Op(op, max) => {
                let at = out.len();
                write_value(op, e, out);
                if out.len() == at {
                    out.push(b'-');
                }
                // The `-` too (`%REQ(X):0%` is empty), as it always was.
                if let Some(max) = *max {
                    truncate_written(out, at, max);
                }
            }
        }
    }
}

/// Cuts what was written from `at` to at most `max` bytes, on a character
/// boundary (what was written is UTF-8).
fn truncate_written(out: &mut Vec<u8>, at: usize, max: usize) {
    if out.len() - at > max {
        let mut end = at + max;
        // A UTF-8 continuation byte is not a character boundary.
        while end > at && out[end] & 0xc0 == 0x80 {
            end -= 1;
        }
        out.truncate(end);
    }
}

fn truncate(s: &str, max: Option<usize>) -> &str {
    match max {
        Some(n) if s.len() > n => {
            let mut end = n;
            while !s.is_char_boundary(end) {
                end -= 1;
            }
            &s[..end]
        }
        _ => s,
    }
}

fn numeric(op: &Operator) -> bool {
    matches!(
        op,
        Operator::ResponseCode
            | Operator::BytesReceived
            | Operator::BytesSent
            | Operator::Duration
            | Operator::GrpcStatus
    )
}

/// Writes the operator's value for the entry; nothing when it is unset
/// (`-` in text, null in JSON) or empty. Borrows what the entry holds and
/// writes numbers and addresses in place: nothing is allocated.
fn write_value(op: &Operator, e: &Entry<'_>, out: &mut Vec<u8>) {
    let mut str = |v: Option<&str>| {
        if let Some(v) = v {
            out.extend_from_slice(v.as_bytes());
        }
    };
    match op {
        Operator::StartTime => write_time(e.start_time, out),
        Operator::Req(names) => str(names.iter().find_map(|n| e.header(n))),
        Operator::Resp(name) if name == "x-envoy-upstream-service-time" => {
            if let Some(t) = e.upstream_service_time {
                write_u64(out, t);
            }
        }
        Operator::Resp(name) => str(e
            .response_headers
            .and_then(|h| h.get(name))
            .and_then(|v| v.to_str().ok())),
        Operator::Protocol => str(e.protocol),
        Operator::ResponseCode => write_u64(out, e.response_code.into()),
        Operator::ResponseFlags => str(Some(e.response_flags)),
        Operator::ResponseCodeDetails => str(e.response_code_details.or_else(|| {
            // Envoy's detail for a response the upstream sent.
            (e.upstream_host.is_some() && e.protocol.is_some()).then_some("via_upstream")
        })),
        Operator::ConnectionTerminationDetails
        | Operator::UpstreamTransportFailureReason
        | Operator::UpstreamLocalAddress => {}
        Operator::BytesReceived => write_u64(out, e.bytes_received),
        Operator::BytesSent => write_u64(out, e.bytes_sent),
        Operator::Duration => write_u64(out, e.duration_ms),
        Operator::UpstreamHost => str(e.upstream_host),
        Operator::UpstreamCluster => str(e.upstream_cluster),
        Operator::DownstreamLocalAddress => {
            if let Some(a) = e.downstream_local {
                write_addr(out, a);
            }
        }
        Operator::DownstreamRemoteAddress => write_addr(out, e.downstream_remote),
        Operator::DownstreamRemoteAddressWithoutPort => write_ip(out, e.downstream_remote.ip()),
        Operator::RequestedServerName => str(e.requested_server_name),
        Operator::RouteName => str(e.route_name),
        Operator::GrpcStatus => {
            if let Some(g) = e.grpc_status {
                write_u64(out, g.into());
            }
        }
        Operator::DownstreamPeerUriSan => str(e.source_principal),
        Operator::Fixed(v) => str(Some(v)),
    }
}

/// `n` in decimal, as `{n}` prints it, without the formatting machinery
/// (a line has up to seven numbers).
fn write_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

/// As `{addr}` prints it: "10.0.0.1:80", "[::1]:80".
fn write_addr(out: &mut Vec<u8>, addr: SocketAddr) {
    match addr {
        SocketAddr::V4(a) => {
            write_ip(out, (*a.ip()).into());
            out.push(b':');
            write_u64(out, a.port().into());
        }
        // Rare in a mesh; Display writes it without allocating too.
        SocketAddr::V6(a) => {
            let _ = write!(out, "{a}");
        }
    }
}

/// As `{ip}` prints it.
fn write_ip(out: &mut Vec<u8>, ip: std::net::IpAddr) {
    match ip {
        std::net::IpAddr::V4(ip) => {
            for (i, octet) in ip.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                write_u64(out, octet.into());
            }
        }
        std::net::IpAddr::V6(ip) => {
            let _ = write!(out, "{ip}");
        }
    }
}

/// Splits a format into literals and `%OPERATOR%`s (`%%` is a literal `%`).
fn pieces(format: &str) -> Result<Vec<Piece>, String> {
    let mut out = Vec::new();
    let mut lit = String::new();
    let mut rest = format;
    while let Some(i) = rest.find('%') {
        lit.push_str(&rest[..i]);
        rest = &rest[i + 1..];
        if let Some(r) = rest.strip_prefix('%') {
            lit.push('%');
            rest = r;
            continue;
        }
        let end = rest
            .find('%')
            .ok_or_else(|| format!("unterminated command operator in {format:?}"))?;
        let (op, max) = operator(&rest[..end])?;
        if !lit.is_empty() {
            out.push(Piece::Lit(std::mem::take(&mut lit)));
        }
        out.push(Piece::Op(op, max));
        rest = &rest[end + 1..];
    }
    lit.push_str(rest);
    if !lit.is_empty() {
        out.push(Piece::Lit(lit));
    }
    Ok(out)
}

/// One command operator: `NAME`, `NAME(ARG)` or `NAME(ARG):MAX`.
fn operator(text: &str) -> Result<(Operator, Option<usize>), String> {
    let (head, max) = match text.rsplit_once("):") {
        Some((h, m)) => (
            format!("{h})"),
            Some(
                m.parse::<usize>()
                    .map_err(|_| format!("%{text}%: bad length {m:?}"))?,
            ),
        ),
        None => (text.to_string(), None),
    };
    let (name, arg) = match head.split_once('(') {
        Some((n, a)) => (
            n,
            Some(
                a.strip_suffix(')')
                    .ok_or_else(|| format!("%{text}%: missing )"))?,
            ),
        ),
        None => (head.as_str(), None),
    };
    let header = |a: &str| -> Result<String, String> {
        let h = a.to_ascii_lowercase();
        if !h.starts_with(':') && HeaderName::from_bytes(h.as_bytes()).is_err() {
            return Err(format!("%{text}%: {a:?} is not a header name"));
        }
        Ok(h)
    };
    let op = match (name, arg) {
        ("START_TIME", _) => Operator::StartTime,
        ("REQ", Some(a)) => Operator::Req(a.split('?').map(header).collect::<Result<_, _>>()?),
        ("RESP", Some(a)) => Operator::Resp(header(a)?),
        ("ENVIRONMENT", Some(a)) => Operator::Fixed(std::env::var(a).unwrap_or_default()),
        ("PROTOCOL", None) => Operator::Protocol,
        ("RESPONSE_CODE", None) => Operator::ResponseCode,
        ("RESPONSE_FLAGS", None) => Operator::ResponseFlags,
        ("RESPONSE_CODE_DETAILS", None) => Operator::ResponseCodeDetails,
        ("CONNECTION_TERMINATION_DETAILS", None) => Operator::ConnectionTerminationDetails,
        ("UPSTREAM_TRANSPORT_FAILURE_REASON", None) => Operator::UpstreamTransportFailureReason,
        ("BYTES_RECEIVED", None) => Operator::BytesReceived,
        ("BYTES_SENT", None) => Operator::BytesSent,
        ("DURATION", None) => Operator::Duration,
        ("UPSTREAM_HOST", None) => Operator::UpstreamHost,
        ("UPSTREAM_CLUSTER", None) | ("UPSTREAM_CLUSTER_RAW", None) => Operator::UpstreamCluster,
        ("UPSTREAM_LOCAL_ADDRESS", None) => Operator::UpstreamLocalAddress,
        ("DOWNSTREAM_LOCAL_ADDRESS", None) => Operator::DownstreamLocalAddress,
        ("DOWNSTREAM_REMOTE_ADDRESS", None) | ("DOWNSTREAM_PEER_ADDRESS", None) => {
            Operator::DownstreamRemoteAddress
        }
        ("DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT", None) => {
            Operator::DownstreamRemoteAddressWithoutPort
        }
        ("REQUESTED_SERVER_NAME", None) => Operator::RequestedServerName,
        ("ROUTE_NAME", None) => Operator::RouteName,
        ("GRPC_STATUS_NUMBER", None) => Operator::GrpcStatus,
        ("DOWNSTREAM_PEER_URI_SAN", None) => Operator::DownstreamPeerUriSan,
        ("HOSTNAME", None) => Operator::Fixed(
            std::env::var("HOSTNAME")
                .ok()
                .or_else(|| {
                    std::fs::read_to_string("/etc/hostname")
                        .ok()
                        .map(|h| h.trim().to_string())
                })
                .unwrap_or_default(),
        ),
        _ => return Err(format!("unsupported command operator %{text}%")),
    };
    Ok((op, max))
}

/// How long the writer gathers lines before writing them: short enough for
/// `kubectl logs -f` to look live, long enough for one write to carry many
/// lines under load.
const BATCH_WINDOW: Duration = Duration::from_millis(20);

/// How far the lines not yet written may grow before new lines are
/// dropped (a stdout nobody reads, a full disk).
const MAX_PENDING: usize = 8 << 20;

/// What the writer keeps of its batch buffer's capacity between batches.
const KEEP_CAPACITY: usize = 64 << 10;

/// What wakes the writer thread.
enum Wake {
    /// Lines are pending (sent when the first line of a batch is added).
    Lines,
    /// Write out every line added before this, then answer.
    Flush(mpsc::Sender<()>),
}

/// Every live writer, by destination.
static WRITERS: OnceLock<Mutex<HashMap<String, Weak<Writer>>>> = OnceLock::new();

fn writers() -> MutexGuard<'static, HashMap<String, Weak<Writer>>> {
    lock(WRITERS.get_or_init(Mutex::default))
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Writes out every line logged so far, waiting at most `within`: the
/// writers batch, and a process that exits without this loses the last
/// batch.
pub fn flush(within: Duration) {
    let live: Vec<Arc<Writer>> = writers().values().filter_map(Weak::upgrade).collect();
    let deadline = std::time::Instant::now() + within;
    for writer in live {
        let (done_tx, done_rx) = mpsc::channel();
        if writer.wake.try_send(Wake::Flush(done_tx)).is_ok() {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let _ = done_rx.recv_timeout(left);
        }
    }
}

/// One writer thread per destination, shared by every config (and every
/// proxy in the process) that logs there. The request path renders lines
/// into `pending` and wakes the thread for the first line of a batch only;
/// the thread takes the whole batch at once and writes it.
struct Writer {
    pending: Arc<Mutex<Vec<u8>>>,
    wake: mpsc::SyncSender<Wake>,
    dropped: AtomicU64,
}

impl Writer {
    fn for_path(path: &str) -> std::io::Result<Arc<Writer>> {
        let mut all = writers();
        if let Some(w) = all.get(path).and_then(Weak::upgrade) {
            return Ok(w);
        }
        let mut out: Box<dyn Write + Send> = match path {
            "" | "/dev/stdout" => Box::new(std::io::stdout()),
            "/dev/stderr" => Box::new(std::io::stderr()),
            p => Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)?,
            ),
        };
        let pending = Arc::new(Mutex::new(Vec::new()));
        let (wake, rx) = mpsc::sync_channel::<Wake>(64);
        let batch_source = pending.clone();
        // The thread ends when the last `Writer` (the only sender) is gone,
        // after writing what was pending.
        std::thread::Builder::new()
            .name("trellis-access-log".into())
            .spawn(move || {
                let mut batch = Vec::new();
                let mut flushed = Vec::new();
                while let Ok(first) = rx.recv() {
                    if let Wake::Lines = first {
                        // Gather what comes in the next moment and write it
                        // in one go: while this thread sleeps, the request
                        // path neither wakes it nor pays a write per line
                        // (waking it per line cost ~30 µs a request at 20 k/s;
                        // Envoy flushes once a second).
                        std::thread::sleep(BATCH_WINDOW);
                    }
                    for wake in std::iter::once(first).chain(rx.try_iter()) {
                        if let Wake::Flush(done) = wake {
                            flushed.push(done);
                        }
                    }
                    std::mem::swap(&mut batch, &mut *lock(&batch_source));
                    if !batch.is_empty() {
                        let _ = out.write_all(&batch);
                        let _ = out.flush();
                    }
                    batch.clear();
                    batch.shrink_to(KEEP_CAPACITY);
                    for done in flushed.drain(..) {
                        let _ = done.send(());
                    }
                }
            })?;
        let w = Arc::new(Writer {
            pending,
            wake,
            dropped: AtomicU64::new(0),
        });
        all.insert(path.to_string(), Arc::downgrade(&w));
        Ok(w)
    }

    /// Adds a line, rendered by `render` at the end of the pending batch.
    fn append(&self, render: impl FnOnce(&mut Vec<u8>)) {
        let first = {
            let mut pending = lock(&self.pending);
            if pending.len() >= MAX_PENDING {
                drop(pending);
                let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                if n.is_power_of_two() {
                    tracing::warn!(dropped = n, "access log cannot keep up; lines dropped");
                }
                return;
            }
            let first = pending.is_empty();
            render(&mut pending);
            first
        };
        if first {
            // Full: wakes are queued already.
            let _ = self.wake.try_send(Wake::Lines);
        }
    }
}

thread_local! {
    /// The second a line's start time was last in on this thread, and its
    /// text up to the milliseconds ("2024-05-01T12:00:00"): formatted once
    /// a second, as Envoy caches its formatted time.
    static SECOND: Cell<(u64, [u8; 19])> = const { Cell::new((u64::MAX, [0; 19])) };
}

/// RFC 3339 UTC with milliseconds ("2024-05-01T12:00:00.123Z"), as Envoy
/// prints `%START_TIME%`.
fn write_time(t: SystemTime, out: &mut Vec<u8>) {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let second = SECOND.with(|cached| {
        let (at, text) = cached.get();
        if at == secs {
            return Some(text);
        }
        let text: [u8; 19] = format_second(secs).into_bytes().try_into().ok()?;
        cached.set((secs, text));
        Some(text)
    });
    match second {
        Some(text) => out.extend_from_slice(&text),
        // Past the year 9999: not the cache's width.
        None => out.extend_from_slice(format_second(secs).as_bytes()),
    }
    let ms = d.subsec_millis();
    out.extend_from_slice(&[
        b'.',
        b'0' + (ms / 100) as u8,
        b'0' + (ms / 10 % 10) as u8,
        b'0' + (ms % 10) as u8,
        b'Z',
    ]);
}

/// "2024-05-01T12:00:00" for seconds since the epoch.
fn format_second(secs: u64) -> String {
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, day) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
    )
}

/// Days since 1970-01-01 → (year, month, day), Howard Hinnant's algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flush_writes_out_the_batch_being_gathered() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("access.log");
        let writer = Writer::for_path(path.to_str().expect("utf-8")).expect("writer");
        writer.append(|out| out.extend_from_slice(b"first\n"));
        writer.append(|out| out.extend_from_slice(b"second\n"));
        // Well inside the batch window: only the flush can have written them.
        flush(Duration::from_secs(5));
        assert_eq!(
            std::fs::read_to_string(&path).expect("log"),
            "first\nsecond\n"
        );
        // The next batch is written too (the writer is woken again).
        writer.append(|out| out.extend_from_slice(b"third\n"));
        flush(Duration::from_secs(5));
        assert_eq!(
            std::fs::read_to_string(&path).expect("log"),
            "first\nsecond\nthird\n"
        );
    }

    #[test]
    fn a_writer_far_behind_drops_lines_and_counts_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("access.log");
        let writer = Writer::for_path(path.to_str().expect("utf-8")).expect("writer");
        // As if the thread could not write: the batch is at its limit.
        lock(&writer.pending).resize(MAX_PENDING, b'x');
        writer.append(|out| out.extend_from_slice(b"lost\n"));
        assert_eq!(writer.dropped.load(Ordering::Relaxed), 1);
        assert_eq!(lock(&writer.pending).len(), MAX_PENDING);
        lock(&writer.pending).clear();
        writer.append(|out| out.extend_from_slice(b"kept\n"));
        flush(Duration::from_secs(5));
        assert_eq!(std::fs::read_to_string(&path).expect("log"), "kept\n");
    }

    /// The cached second is right across second, minute, day, month and
    /// year boundaries, and when time goes back, whatever came before on
    /// the thread.
    #[test]
    fn cached_start_time_crosses_boundaries() {
        let ms = |ms: u64| UNIX_EPOCH + Duration::from_millis(ms);
        let mut times = vec![
            UNIX_EPOCH,
            ms(1_709_210_096_789), // leap year, Feb 29
            ms(1_709_251_199_999), // 2024-02-29T23:59:59.999
            ms(1_709_251_200_000), // 2024-03-01T00:00:00.000
            ms(1_704_067_199_999), // 2023-12-31T23:59:59.999
            ms(1_704_067_200_000), // 2024-01-01T00:00:00.000
            ms(1_704_067_200_001),
            ms(1_704_067_259_999), // a minute's last millisecond
            ms(1_704_067_260_000),
            ms(1_704_067_199_999),   // back in time
            ms(253_402_300_799_999), // 9999-12-31T23:59:59.999
            ms(253_402_300_800_000), // year 10000: longer than the cache
            ms(1_704_067_200_000),
            UNIX_EPOCH - Duration::from_secs(1), // before the epoch: as the epoch
        ];
        // Every millisecond around a second's end, one after the other.
        times.extend((1_606_339_578_990..1_606_339_579_011).map(ms));
        for t in times {
            let mut out = Vec::new();
            write_time(t, &mut out);
            assert_eq!(
                String::from_utf8_lossy(&out),
                before::format_time(t),
                "{t:?}"
            );
        }
        let mut out = Vec::new();
        write_time(ms(1_709_210_096_789), &mut out);
        assert_eq!(out, b"2024-02-29T12:34:56.789Z");
    }

    fn kept(names: &[&str], h: &HeaderMap) -> Kept {
        let names: Vec<HeaderName> = names
            .iter()
            .map(|n| HeaderName::from_bytes(n.as_bytes()).expect("name"))
            .collect();
        Kept::copy(&names, h)
    }

    fn entry<'a>(headers: &'a Kept) -> Entry<'a> {
        Entry {
            start_time: UNIX_EPOCH + Duration::from_millis(1_606_339_578_409),
            method: "GET",
            path: "/status/418",
            authority: "httpbin:8000",
            protocol: Some("HTTP/1.1"),
            response_code: 418,
            grpc_status: None,
            response_flags: "-",
            response_code_details: None,
            bytes_received: 0,
            bytes_sent: 135,
            duration_ms: 4,
            upstream_service_time: Some(4),
            request_headers: Some(headers),
            response_headers: None,
            upstream_host: Some("10.44.1.27:80"),
            upstream_cluster: Some("outbound|8000||httpbin.foo.svc.cluster.local"),
            downstream_local: Some("10.0.45.184:8000".parse().expect("addr")),
            downstream_remote: "10.44.1.23:37652".parse().expect("addr"),
            requested_server_name: None,
            route_name: Some("default"),
            source_principal: None,
        }
    }

    #[test]
    fn istio_default_text_line() {
        let mut h = HeaderMap::new();
        h.insert("user-agent", "curl/7.73.0-DEV".parse().expect("v"));
        h.insert(
            "x-request-id",
            "84961386-6d84-929d-98bd-c5aee93b5c88".parse().expect("v"),
        );
        h.insert("x-not-logged", "secret".parse().expect("v"));
        let logs = AccessLogs::compile(&[pb::AccessLogPolicy {
            path: "/dev/stdout".into(),
            ..Default::default()
        }])
        .expect("default");
        let kept = logs.keep_request(&h);
        // Only what Istio's format reads is copied.
        assert_eq!(kept.0.len(), 2, "{kept:?}");
        assert!(logs.keep_response(&h).0.is_empty());
        let mut out = Vec::new();
        logs.sinks[0].format.render(&entry(&kept), &mut out);
        // Istio's documented example line for curl → httpbin (but its
        // upstream local address, which this proxy does not report).
        assert_eq!(
            String::from_utf8_lossy(&out),
            "[2020-11-25T21:26:18.409Z] \"GET /status/418 HTTP/1.1\" 418 - via_upstream - \"-\" 0 135 4 4 \"-\" \"curl/7.73.0-DEV\" \"84961386-6d84-929d-98bd-c5aee93b5c88\" \"httpbin:8000\" \"10.44.1.27:80\" outbound|8000||httpbin.foo.svc.cluster.local - 10.0.45.184:8000 10.44.1.23:37652 - default\n"
        );
    }

    #[test]
    fn headers_kept_are_those_formats_and_filters_read() {
        let logs = AccessLogs::compile(&[
            pb::AccessLogPolicy {
                path: "/dev/stdout".into(),
                format: "%REQ(:AUTHORITY)% %REQ(X-A?X-B)% %REQ(HOST)% %RESP(X-C):3% %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)%".into(),
                filter: "request.headers['x-d'] == 'y' || response.headers['x-e'] == 'z' || request.id == 'r'".into(),
                ..Default::default()
            },
            pb::AccessLogPolicy {
                path: "/dev/stdout".into(),
                format: r#"{"a": "%REQ(X-A)%", "f": "%RESP(X-F)%"}"#.into(),
                encoding: pb::AccessLogEncoding::Json as i32,
                ..Default::default()
            },
        ])
        .expect("logs");
        fn names(v: &[HeaderName]) -> Vec<&str> {
            v.iter().map(HeaderName::as_str).collect()
        }
        assert_eq!(
            names(&logs.request_headers),
            ["x-a", "x-b", "x-d", "x-request-id"]
        );
        assert_eq!(names(&logs.response_headers), ["x-c", "x-e", "x-f"]);
    }

    #[test]
    fn json_and_custom_formats() {
        let h = Kept::default();
        let f = Format::compile("", true).expect("default");
        let mut out = Vec::new();
        f.render(&entry(&h), &mut out);
        let v: serde_json::Value = serde_json::from_slice(&out).expect("json");
        assert_eq!(v["response_code"], 418);
        assert_eq!(v["path"], "/status/418");
        assert_eq!(v["user_agent"], serde_json::Value::Null);
        let f = Format::compile(
            r#"{"code": "%RESPONSE_CODE%", "line": "%REQ(:METHOD)% %REQ(:PATH):4%"}"#,
            true,
        )
        .expect("custom");
        let mut out = Vec::new();
        f.render(&entry(&h), &mut out);
        let v: serde_json::Value = serde_json::from_slice(&out).expect("json");
        assert_eq!(v, serde_json::json!({"code": 418, "line": "GET /sta"}));
        let f = Format::compile("%RESPONSE_CODE% 100%%", false).expect("text");
        let mut out = Vec::new();
        f.render(&entry(&h), &mut out);
        assert_eq!(out, b"418 100%\n");
        for bad in ["%NOPE%", "%REQ(:PATH", "%START_TIME", "%REQ(bad header)%"] {
            assert!(Format::compile(bad, false).is_err(), "{bad}");
        }
        assert!(Format::compile("not json", true).is_err());
    }

    #[test]
    fn lengths_cut_on_character_boundaries() {
        let v = "ñandú-路由";
        for max in 0..=v.len() + 1 {
            let mut out = b"prefix ".to_vec();
            out.extend_from_slice(v.as_bytes());
            truncate_written(&mut out, 7, max);
            assert_eq!(&out[7..], truncate(v, Some(max)).as_bytes(), "{max}");
        }
    }

    /// Every operator, with and without a length, in text and JSON, for
    /// entries with every field set, none set, empty and multi-byte
    /// values: the line is byte for byte what the render before borrowing
    /// (a String per operator) wrote.
    #[test]
    fn every_operator_renders_as_before() {
        const OPS: &[&str] = &[
            "START_TIME",
            "REQ(:METHOD)",
            "REQ(X-ENVOY-ORIGINAL-PATH?:PATH)",
            "REQ(:AUTHORITY)",
            "REQ(HOST)",
            "REQ(X-MISSING?USER-AGENT)",
            "REQ(X-REQUEST-ID)",
            "REQ(X-FORWARDED-FOR)",
            "REQ(:SCHEME)",
            "RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)",
            "RESP(CONTENT-TYPE)",
            "PROTOCOL",
            "RESPONSE_CODE",
            "RESPONSE_FLAGS",
            "RESPONSE_CODE_DETAILS",
            "CONNECTION_TERMINATION_DETAILS",
            "UPSTREAM_TRANSPORT_FAILURE_REASON",
            "BYTES_RECEIVED",
            "BYTES_SENT",
            "DURATION",
            "UPSTREAM_HOST",
            "UPSTREAM_CLUSTER",
            "UPSTREAM_CLUSTER_RAW",
            "UPSTREAM_LOCAL_ADDRESS",
            "DOWNSTREAM_LOCAL_ADDRESS",
            "DOWNSTREAM_REMOTE_ADDRESS",
            "DOWNSTREAM_PEER_ADDRESS",
            "DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT",
            "REQUESTED_SERVER_NAME",
            "ROUTE_NAME",
            "GRPC_STATUS_NUMBER",
            "DOWNSTREAM_PEER_URI_SAN",
            "ENVIRONMENT(TRELLIS_SURELY_UNSET_VARIABLE)",
            "HOSTNAME",
        ];
        let mut text = String::from("%% literal ");
        let mut json = serde_json::Map::new();
        for (i, op) in OPS.iter().enumerate() {
            for max in ["", ":0", ":1", ":3", ":9", ":200"] {
                if !max.is_empty() && !op.contains('(') {
                    continue; // lengths go with NAME(ARG) only
                }
                text.push_str(&format!("%{op}{max}%|"));
                json.insert(format!("{i}{max}"), format!("%{op}{max}%").into());
                json.insert(format!("{i}{max}-mixed"), format!("<%{op}{max}%>").into());
            }
            if !op.contains('(') {
                text.push_str(&format!("%{op}%|"));
            }
        }
        let formats = [
            Format::compile("", false).expect("istio text"),
            Format::compile(&text, false).expect("all operators"),
            Format::compile("", true).expect("istio json"),
            Format::compile(&serde_json::Value::Object(json).to_string(), true)
                .expect("all operators, json"),
        ];
        let mut request = HeaderMap::new();
        request.insert("user-agent", "curl/8.0 (x86_64)".parse().expect("v"));
        request.insert("x-request-id", "a-b-c".parse().expect("v"));
        request.insert("x-forwarded-for", "".parse().expect("v"));
        let mut response = HeaderMap::new();
        response.insert("content-type", "application/json".parse().expect("v"));
        let names = ["user-agent", "x-request-id", "x-forwarded-for", "x-missing"];
        let request = kept(&names, &request);
        let response = kept(&["content-type"], &response);
        let empty = Kept::default();
        let full = Entry {
            grpc_status: Some(14),
            response_code_details: Some("rbac_access_denied_matched_policy[none]"),
            response_headers: Some(&response),
            requested_server_name: Some("outbound_.9080_._.reviews.default.svc.cluster.local"),
            route_name: Some("ruta-ñandú-路由"),
            source_principal: Some("spiffe://cluster.local/ns/default/sa/productpage"),
            response_flags: "UF,URX",
            bytes_received: u64::MAX,
            duration_ms: 0,
            downstream_remote: "[2001:db8::1]:443".parse().expect("addr"),
            downstream_local: Some("[::1]:15006".parse().expect("addr")),
            ..entry(&request)
        };
        let none = Entry {
            protocol: None,
            upstream_service_time: None,
            request_headers: None,
            upstream_host: None,
            upstream_cluster: None,
            downstream_local: None,
            route_name: None,
            method: "",
            path: "",
            authority: "",
            ..entry(&empty)
        };
        let empties = Entry {
            route_name: Some(""),
            upstream_host: Some(""),
            response_code_details: Some(""),
            response_flags: "",
            ..entry(&request)
        };
        let tcp = Entry::tcp(
            (
                UNIX_EPOCH + Duration::from_millis(999),
                std::time::Instant::now(),
            ),
            "UH",
            (17, 0),
            "127.0.0.1:5000".parse().expect("addr"),
        );
        let v4 = Entry {
            downstream_remote: "255.0.10.199:65535".parse().expect("addr"),
            downstream_local: Some("0.0.0.0:0".parse().expect("addr")),
            response_code: 0,
            bytes_sent: 1_000_000_007,
            ..entry(&request)
        };
        let entries = [entry(&request), full, none, empties, tcp, v4];
        for (fi, f) in formats.iter().enumerate() {
            for (ei, e) in entries.iter().enumerate() {
                let mut now = Vec::new();
                f.render(e, &mut now);
                let old = before::render(f, e);
                assert_eq!(
                    String::from_utf8_lossy(&now),
                    String::from_utf8_lossy(&old),
                    "format {fi}, entry {ei}"
                );
            }
        }
    }

    /// The render as it was before it wrote in place: a String per operator.
    mod before {
        use super::super::*;

        pub fn format_time(t: SystemTime) -> String {
            let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
            let secs = d.as_secs();
            let (days, rem) = (secs / 86_400, secs % 86_400);
            let (y, m, day) = civil_from_days(days as i64);
            format!(
                "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
                rem / 3600,
                rem % 3600 / 60,
                rem % 60,
                d.subsec_millis()
            )
        }

        pub fn render(f: &Format, e: &Entry<'_>) -> Vec<u8> {
            let mut out = Vec::new();
            match f {
                Format::Text(pieces) => {
                    let mut s = String::with_capacity(256);
                    for p in pieces {
                        match p {
                            Piece::Lit(l) => s.push_str(l),
                            Piece::Op(op, max) => {
                                let v = value(op, e).unwrap_or_else(|| "-".into());
                                s.push_str(truncate(&v, *max));
                            }
                        }
                    }
                    out.extend_from_slice(s.as_bytes());
                }
                Format::Json(fields) => {
                    let mut map = serde_json::Map::with_capacity(fields.len());
                    for (k, pieces) in fields {
                        let v = match pieces.as_slice() {
                            [Piece::Op(op, max)] => match value(op, e) {
                                None => serde_json::Value::Null,
                                Some(v) if numeric(op) => v
                                    .parse::<u64>()
                                    .map_or_else(|_| v.clone().into(), serde_json::Value::from),
                                Some(v) => truncate(&v, *max).into(),
                            },
                            _ => {
                                let mut s = String::new();
                                for p in pieces {
                                    match p {
                                        Piece::Lit(l) => s.push_str(l),
                                        Piece::Op(op, max) => s.push_str(truncate(
                                            &value(op, e).unwrap_or_else(|| "-".into()),
                                            *max,
                                        )),
                                    }
                                }
                                s.into()
                            }
                        };
                        map.insert(k.clone(), v);
                    }
                    if serde_json::to_writer(&mut out, &map).is_ok() {
                        out.push(b'\n');
                    }
                }
            }
            out
        }

        fn value(op: &Operator, e: &Entry<'_>) -> Option<String> {
            let addr = |a: Option<SocketAddr>| a.map(|a| a.to_string());
            let v = match op {
                Operator::StartTime => Some(format_time(e.start_time)),
                Operator::Req(names) => names.iter().find_map(|n| e.header(n)).map(str::to_string),
                Operator::Resp(name) if name == "x-envoy-upstream-service-time" => {
                    e.upstream_service_time.map(|t| t.to_string())
                }
                Operator::Resp(name) => e
                    .response_headers
                    .and_then(|h| h.get(name.as_str()))
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string),
                Operator::Protocol => e.protocol.map(str::to_string),
                Operator::ResponseCode => Some(e.response_code.to_string()),
                Operator::ResponseFlags => Some(e.response_flags.to_string()),
                Operator::ResponseCodeDetails => {
                    e.response_code_details.map(str::to_string).or_else(|| {
                        (e.upstream_host.is_some() && e.protocol.is_some())
                            .then(|| "via_upstream".into())
                    })
                }
                Operator::ConnectionTerminationDetails
                | Operator::UpstreamTransportFailureReason => None,
                Operator::BytesReceived => Some(e.bytes_received.to_string()),
                Operator::BytesSent => Some(e.bytes_sent.to_string()),
                Operator::Duration => Some(e.duration_ms.to_string()),
                Operator::UpstreamHost => e.upstream_host.map(str::to_string),
                Operator::UpstreamCluster => e.upstream_cluster.map(str::to_string),
                Operator::UpstreamLocalAddress => None,
                Operator::DownstreamLocalAddress => addr(e.downstream_local),
                Operator::DownstreamRemoteAddress => Some(e.downstream_remote.to_string()),
                Operator::DownstreamRemoteAddressWithoutPort => {
                    Some(e.downstream_remote.ip().to_string())
                }
                Operator::RequestedServerName => e.requested_server_name.map(str::to_string),
                Operator::RouteName => e.route_name.map(str::to_string),
                Operator::GrpcStatus => e.grpc_status.map(|g| g.to_string()),
                Operator::DownstreamPeerUriSan => e.source_principal.map(str::to_string),
                Operator::Fixed(v) => Some(v.clone()),
            };
            v.filter(|v| !v.is_empty())
        }
    }
}
