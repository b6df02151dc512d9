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
use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use expr::{Attr, Expr, Value};
use http::HeaderMap;
use http::header::{HeaderName, HeaderValue};
use wire::pb;

mod writer;
use writer::Writer;
pub use writer::flush;

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
mod tests;
