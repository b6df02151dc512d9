//! Trace context in request headers: W3C `traceparent`/`tracestate`, B3's
//! single `b3` header and its multi-header form (`x-b3-*`), read as
//! Envoy's tracers read them and written so that both kinds of application
//! (those forwarding W3C headers and those forwarding B3, as Bookinfo's do)
//! pass the trace on.

use http::HeaderMap;
use http::header::{HeaderName, HeaderValue};

pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
pub const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");
pub const B3: HeaderName = HeaderName::from_static("b3");
pub const X_B3_TRACEID: HeaderName = HeaderName::from_static("x-b3-traceid");
pub const X_B3_SPANID: HeaderName = HeaderName::from_static("x-b3-spanid");
pub const X_B3_PARENTSPANID: HeaderName = HeaderName::from_static("x-b3-parentspanid");
pub const X_B3_SAMPLED: HeaderName = HeaderName::from_static("x-b3-sampled");
pub const X_B3_FLAGS: HeaderName = HeaderName::from_static("x-b3-flags");
pub const X_CLIENT_TRACE_ID: HeaderName = HeaderName::from_static("x-client-trace-id");

/// The trace a request belongs to, as the previous hop left it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Parent {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    /// `None`: the parent left the decision to this hop.
    pub sampled: Option<bool>,
}

/// What the headers say about the request's trace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Incoming {
    /// Nothing: this hop starts the trace.
    None,
    /// A sampling decision without ids (`b3: 0`, `x-b3-sampled` alone).
    Decision(bool),
    Context(Parent),
}

impl Incoming {
    pub fn sampled(&self) -> Option<bool> {
        match self {
            Incoming::None => None,
            Incoming::Decision(d) => Some(*d),
            Incoming::Context(p) => p.sampled,
        }
    }
}

/// Reads the trace context: `traceparent` first (the OpenTelemetry
/// tracer's), then `b3`, then the `x-b3-*` headers. A malformed header is
/// ignored, as Envoy does (the request then starts a new trace).
pub fn extract(headers: &HeaderMap) -> Incoming {
    if let Some(p) = headers
        .get(&TRACEPARENT)
        .and_then(|v| traceparent(v.as_bytes()))
    {
        return Incoming::Context(p);
    }
    if let Some(i) = headers.get(&B3).and_then(|v| b3_single(v.as_bytes())) {
        return i;
    }
    let sampled = headers
        .get(&X_B3_SAMPLED)
        .and_then(|v| sampling(v.as_bytes()))
        .or_else(|| {
            headers
                .get(&X_B3_FLAGS)
                .filter(|v| v.as_bytes() == b"1")
                .map(|_| true)
        });
    let ids = headers
        .get(&X_B3_TRACEID)
        .and_then(|v| trace_id(v.as_bytes()))
        .zip(
            headers
                .get(&X_B3_SPANID)
                .and_then(|v| span_id(v.as_bytes())),
        );
    match (ids, sampled) {
        (Some((trace_id, span_id)), sampled) => Incoming::Context(Parent {
            trace_id,
            span_id,
            sampled,
        }),
        (None, Some(d)) => Incoming::Decision(d),
        (None, None) => Incoming::None,
    }
}

/// `00-<trace id>-<span id>-<flags>`; later versions may append fields.
fn traceparent(v: &[u8]) -> Option<Parent> {
    if v.len() < 55 || v[2] != b'-' || v[35] != b'-' || v[52] != b'-' {
        return None;
    }
    let version = hex_array::<1>(&v[0..2])?;
    if version[0] == 0xff || (version[0] == 0 && v.len() != 55) {
        return None;
    }
    if v.len() > 55 && v[55] != b'-' {
        return None;
    }
    let trace_id = hex_array::<16>(&v[3..35]).filter(|t| *t != [0; 16])?;
    let span_id = hex_array::<8>(&v[36..52]).filter(|s| *s != [0; 8])?;
    let flags = hex_array::<1>(&v[53..55])?;
    Some(Parent {
        trace_id,
        span_id,
        sampled: Some(flags[0] & 1 == 1),
    })
}

/// `{trace id}-{span id}[-{sampling}[-{parent span id}]]`, or the sampling
/// state alone.
fn b3_single(v: &[u8]) -> Option<Incoming> {
    let mut parts = v.split(|b| *b == b'-');
    let first = parts.next()?;
    let Some(second) = parts.next() else {
        return sampling(first).map(Incoming::Decision);
    };
    let trace_id = trace_id(first)?;
    let span_id = span_id(second)?;
    let sampled = match parts.next() {
        Some(s) => Some(sampling(s)?),
        None => None,
    };
    Some(Incoming::Context(Parent {
        trace_id,
        span_id,
        sampled,
    }))
}

/// B3's sampling states: `1`/`true`, `0`/`false`, and `d` (debug: sampled).
fn sampling(v: &[u8]) -> Option<bool> {
    match v {
        b"1" | b"d" | b"true" => Some(true),
        b"0" | b"false" => Some(false),
        _ => None,
    }
}

/// 32 hex digits, or 16 (a 64-bit B3 trace id, kept as the low half).
fn trace_id(v: &[u8]) -> Option<[u8; 16]> {
    let id = match v.len() {
        32 => hex_array::<16>(v)?,
        16 => {
            let low = hex_array::<8>(v)?;
            let mut id = [0; 16];
            id[8..].copy_from_slice(&low);
            id
        }
        _ => return None,
    };
    (id != [0; 16]).then_some(id)
}

fn span_id(v: &[u8]) -> Option<[u8; 8]> {
    if v.len() != 16 {
        return None;
    }
    hex_array::<8>(v).filter(|s| *s != [0; 8])
}

fn hex_array<const N: usize>(v: &[u8]) -> Option<[u8; N]> {
    if v.len() != 2 * N {
        return None;
    }
    let mut out = [0; N];
    for (o, pair) in out.iter_mut().zip(v.chunks_exact(2)) {
        *o = (nibble(pair[0])? << 4) | nibble(pair[1])?;
    }
    Some(out)
}

fn nibble(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    s
}

/// Writes a sampled span's context for the next hop: `traceparent`, the
/// `x-b3-*` headers and, when the request came with one, `b3`. `tracestate`
/// is passed on as it came.
pub fn inject(
    headers: &mut HeaderMap,
    trace_id: &[u8; 16],
    span_id: &[u8; 8],
    parent: Option<&[u8; 8]>,
) {
    let (trace, span) = (hex(trace_id), hex(span_id));
    let mut set = |name: HeaderName, value: String| {
        if let Ok(v) = HeaderValue::try_from(value) {
            headers.insert(name, v);
        }
    };
    set(TRACEPARENT, format!("00-{trace}-{span}-01"));
    set(X_B3_TRACEID, trace.clone());
    set(X_B3_SPANID, span.clone());
    match parent {
        Some(p) => set(X_B3_PARENTSPANID, hex(p)),
        None => {
            headers.remove(&X_B3_PARENTSPANID);
        }
    }
    headers.insert(X_B3_SAMPLED, HeaderValue::from_static("1"));
    if headers.contains_key(&B3) {
        let b3 = match parent {
            Some(p) => format!("{trace}-{span}-1-{}", hex(p)),
            None => format!("{trace}-{span}-1"),
        };
        if let Ok(v) = HeaderValue::try_from(b3) {
            headers.insert(B3, v);
        }
    }
}

/// The request starts a trace that is not sampled: the next hops are told
/// so (as Envoy propagates an unsampled decision), without allocating.
pub fn inject_not_sampled(headers: &mut HeaderMap) {
    headers.insert(X_B3_SAMPLED, HeaderValue::from_static("0"));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                HeaderName::from_bytes(k.as_bytes()).expect("name"),
                HeaderValue::from_str(v).expect("value"),
            );
        }
        h
    }

    const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn w3c_traceparent() {
        let Incoming::Context(p) = extract(&headers(&[("traceparent", TP)])) else {
            panic!("context expected");
        };
        assert_eq!(hex(&p.trace_id), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(hex(&p.span_id), "00f067aa0ba902b7");
        assert_eq!(p.sampled, Some(true));
        let off = TP.replace("-01", "-00");
        assert_eq!(
            extract(&headers(&[("traceparent", &off)])).sampled(),
            Some(false)
        );
        for bad in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "zz",
        ] {
            assert_eq!(
                extract(&headers(&[("traceparent", bad)])),
                Incoming::None,
                "{bad}"
            );
        }
        // A later version may add fields.
        let future = format!("01{}-more", &TP[2..]);
        assert!(matches!(
            extract(&headers(&[("traceparent", &future)])),
            Incoming::Context(_)
        ));
    }

    #[test]
    fn b3_single_and_multi() {
        let i = extract(&headers(&[(
            "b3",
            "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90",
        )]));
        let Incoming::Context(p) = i else {
            panic!("context expected")
        };
        assert_eq!(hex(&p.span_id), "e457b5a2e4d86bd1");
        assert_eq!(p.sampled, Some(true));
        assert_eq!(extract(&headers(&[("b3", "0")])), Incoming::Decision(false));
        assert_eq!(extract(&headers(&[("b3", "d")])), Incoming::Decision(true));
        let i = extract(&headers(&[
            ("x-b3-traceid", "463ac35c9f6413ad"),
            ("x-b3-spanid", "a2fb4a1d1a96d312"),
            ("x-b3-sampled", "1"),
        ]));
        let Incoming::Context(p) = i else {
            panic!("context expected")
        };
        assert_eq!(hex(&p.trace_id), "0000000000000000463ac35c9f6413ad");
        assert_eq!(p.sampled, Some(true));
        assert_eq!(
            extract(&headers(&[("x-b3-sampled", "0")])),
            Incoming::Decision(false)
        );
        assert_eq!(
            extract(&headers(&[("x-b3-traceid", "463ac35c9f6413ad")])),
            Incoming::None
        );
        // traceparent wins over B3.
        let i = extract(&headers(&[("traceparent", TP), ("x-b3-sampled", "0")]));
        assert_eq!(i.sampled(), Some(true));
    }

    #[test]
    fn injected_context_reads_back() {
        let mut h = headers(&[("b3", "1"), ("tracestate", "vendor=x")]);
        let (t, s, p) = ([7u8; 16], [9u8; 8], [3u8; 8]);
        inject(&mut h, &t, &s, Some(&p));
        for name in ["traceparent", "x-b3-traceid", "b3"] {
            let mut only = HeaderMap::new();
            only.insert(
                HeaderName::from_bytes(name.as_bytes()).expect("name"),
                h[name].clone(),
            );
            if name == "x-b3-traceid" {
                only.insert(X_B3_SPANID, h["x-b3-spanid"].clone());
                only.insert(X_B3_SAMPLED, h["x-b3-sampled"].clone());
            }
            assert_eq!(
                extract(&only),
                Incoming::Context(Parent {
                    trace_id: t,
                    span_id: s,
                    sampled: Some(true)
                }),
                "{name}"
            );
        }
        assert_eq!(h["x-b3-parentspanid"], "0303030303030303");
        assert_eq!(h["tracestate"], "vendor=x");
    }
}
