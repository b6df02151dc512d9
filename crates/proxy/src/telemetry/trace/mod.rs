//! Tracing, as Envoy's tracers do it in an Istio mesh: each request through
//! the proxy is a span — a SERVER span on the inbound side, a CLIENT span on
//! the outbound side and at gateways — continuing the trace the request
//! came with (W3C or B3 headers, [`context`]) or starting one. The sampling
//! decision is the parent's when it made one; else `x-client-trace-id` (or
//! `x-envoy-force-trace`) forces it; else the policy's percentage decides.
//!
//! An unsampled request costs a header lookup and a random number: no span
//! is made and nothing is allocated. A sampled one's span is finished with
//! the request's record and handed to its collector's exporter
//! ([`export`]), which batches and sends off the request path.

pub mod context;
pub mod export;

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use http::header::{HeaderName, HeaderValue};
use wire::pb;

use context::Incoming;

const X_ENVOY_FORCE_TRACE: HeaderName = HeaderName::from_static("x-envoy-force-trace");

/// Istio's max_path_tag_length default.
const DEFAULT_MAX_PATH: usize = 256;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpanKind {
    Server,
    Client,
}

/// One side's compiled tracing settings (`pb::TracingPolicy`).
#[derive(Debug, PartialEq)]
pub struct Policy {
    /// Out of 1,000,000 requests.
    per_million: u32,
    pub collector: Option<pb::TraceCollector>,
    tags: Vec<(Arc<str>, Tag)>,
    max_path: usize,
}

#[derive(Debug, PartialEq)]
enum Tag {
    /// A literal, or an environment variable read when the config arrived.
    Value(Arc<str>),
    Header(HeaderName, Arc<str>),
}

impl Policy {
    pub fn compile(p: &pb::TracingPolicy) -> Result<Self, String> {
        if !(0.0..=100.0).contains(&p.sampling_percent) {
            return Err(format!(
                "tracing: sampling_percent {} is not within 0..=100",
                p.sampling_percent
            ));
        }
        let mut tags = Vec::with_capacity(p.custom_tags.len());
        for t in &p.custom_tags {
            let tag = match &t.value {
                Some(pb::trace_tag::Value::Literal(v)) => Tag::Value(v.as_str().into()),
                Some(pb::trace_tag::Value::Environment(name)) => Tag::Value(
                    std::env::var(name)
                        .unwrap_or_else(|_| t.default_value.clone())
                        .into(),
                ),
                Some(pb::trace_tag::Value::Header(h)) => Tag::Header(
                    HeaderName::from_bytes(h.as_bytes()).map_err(|_| {
                        format!(
                            "tracing: custom tag {:?}: invalid header name {h:?}",
                            t.name
                        )
                    })?,
                    t.default_value.as_str().into(),
                ),
                None => return Err(format!("tracing: custom tag {:?} has no value", t.name)),
            };
            tags.push((t.name.as_str().into(), tag));
        }
        if let Some(c) = &p.collector {
            if c.address.is_empty() {
                return Err(format!("tracing: collector {:?} has no address", c.name));
            }
            pb::TraceProtocol::try_from(c.protocol)
                .map_err(|_| format!("tracing: unknown protocol {}", c.protocol))?;
        }
        Ok(Policy {
            per_million: (p.sampling_percent * 10_000.0).round() as u32,
            collector: p.collector.clone(),
            tags,
            max_path: match p.max_path_tag_length {
                0 => DEFAULT_MAX_PATH,
                n => n as usize,
            },
        })
    }

    fn roll(&self) -> bool {
        self.per_million > 0 && rand::random_range(0..1_000_000) < self.per_million
    }
}

/// A sampled request's span, until its record is finished.
pub struct Span {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub parent: Option<[u8; 8]>,
    pub kind: SpanKind,
    pub start: SystemTime,
    pub trace_state: Option<HeaderValue>,
    pub url: String,
    /// The request's authority and port (80 when it names none), for the
    /// span's name.
    pub authority: String,
    pub port: u16,
    pub policy: Arc<Policy>,
    /// Custom tags, with header values read from the request.
    pub tags: Vec<(Arc<str>, Arc<str>)>,
}

/// Decides whether the request is traced and, if it is, makes its span and
/// writes the span's context into the headers the next hop gets.
pub fn start<B>(
    policy: &Arc<Policy>,
    kind: SpanKind,
    req: &mut http::Request<B>,
    authority: &str,
) -> Option<Box<Span>> {
    let headers = req.headers();
    let incoming = context::extract(headers);
    let decided = incoming.sampled();
    let sampled = decided.unwrap_or_else(|| {
        headers.contains_key(&context::X_CLIENT_TRACE_ID)
            || headers.contains_key(&X_ENVOY_FORCE_TRACE)
            || policy.roll()
    });
    if !sampled {
        if decided.is_none() {
            context::inject_not_sampled(req.headers_mut());
        }
        return None;
    }
    let (trace_id, parent) = match incoming {
        Incoming::Context(p) => (p.trace_id, Some(p.span_id)),
        _ => (random_id::<16>(), None),
    };
    let span_id = random_id::<8>();
    let scheme = headers
        .get(crate::http::headers::X_FORWARDED_PROTO)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("http");
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let mut url = format!("{scheme}://{authority}{path}");
    if url.len() > policy.max_path {
        let mut end = policy.max_path;
        while !url.is_char_boundary(end) {
            end -= 1;
        }
        url.truncate(end);
    }
    let headers = req.headers_mut();
    context::inject(headers, &trace_id, &span_id, parent.as_ref());
    let tags = policy
        .tags
        .iter()
        .map(|(name, tag)| {
            let value = match tag {
                Tag::Value(v) => v.clone(),
                Tag::Header(h, default) => headers
                    .get(h)
                    .and_then(|v| v.to_str().ok())
                    .map_or_else(|| default.clone(), Arc::from),
            };
            (name.clone(), value)
        })
        .collect();
    Some(Box::new(Span {
        trace_id,
        span_id,
        parent,
        kind,
        start: SystemTime::now(),
        trace_state: headers.get(&context::TRACESTATE).cloned(),
        url,
        authority: authority.to_string(),
        port: authority
            .rsplit_once(':')
            .and_then(|(_, p)| p.parse().ok())
            .unwrap_or(80),
        policy: policy.clone(),
        tags,
    }))
}

fn random_id<const N: usize>() -> [u8; N] {
    loop {
        let id: [u8; N] = rand::random();
        if id != [0; N] {
            return id;
        }
    }
}

/// A finished span, as exporters encode it.
#[derive(Clone, Debug)]
pub struct SpanData {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub parent: Option<[u8; 8]>,
    pub kind: SpanKind,
    pub name: String,
    pub start: SystemTime,
    pub end: SystemTime,
    pub trace_state: String,
    /// Envoy's span tags, then the custom tags.
    pub attributes: Vec<(Cow<'static, str>, String)>,
    /// A 5xx response (or none): the span's status is an error.
    pub error: bool,
}

/// The exporters of this proxy, one per collector, shared by every config
/// that names it (a new config keeps the batches and connections).
pub struct Tracer {
    /// Istio's span service name: "<canonical service>.<namespace>".
    pub service_name: Arc<str>,
    pub node_id: Arc<str>,
    exporters: Mutex<HashMap<String, Arc<export::Exporter>>>,
}

impl Tracer {
    pub fn new(service_name: &str, node_id: &str) -> Self {
        Tracer {
            service_name: service_name.into(),
            node_id: node_id.into(),
            exporters: Mutex::default(),
        }
    }

    /// Queues a finished span for its policy's collector (if any).
    pub fn report(&self, policy: &Policy, span: SpanData) {
        let Some(collector) = &policy.collector else {
            return;
        };
        let key = format!(
            "{}|{}|{}|{}|{:?}|{}",
            collector.name,
            collector.protocol,
            collector.address,
            collector.path,
            collector.headers,
            collector.timeout_ms
        );
        let exporter = {
            let mut map = self.exporters.lock().unwrap_or_else(|e| e.into_inner());
            match map.get(&key) {
                Some(e) => e.clone(),
                None => {
                    let Some(e) = export::Exporter::spawn(collector, self.service_name.clone())
                    else {
                        return;
                    };
                    map.insert(key, e.clone());
                    e
                }
            }
        };
        exporter.send(span);
    }

    /// Spans queued but not sent because their exporter fell behind.
    pub fn dropped(&self) -> u64 {
        self.exporters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .map(|e| e.dropped())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderMap;

    fn policy(pct: f64) -> Arc<Policy> {
        Arc::new(
            Policy::compile(&pb::TracingPolicy {
                sampling_percent: pct,
                custom_tags: vec![
                    pb::TraceTag {
                        name: "team".into(),
                        value: Some(pb::trace_tag::Value::Literal("payments".into())),
                        default_value: String::new(),
                    },
                    pb::TraceTag {
                        name: "user".into(),
                        value: Some(pb::trace_tag::Value::Header("x-user".into())),
                        default_value: "nobody".into(),
                    },
                ],
                ..Default::default()
            })
            .expect("valid"),
        )
    }

    /// One hop: the request with `headers` through a proxy side; the
    /// headers become what the next hop gets.
    fn hop(
        p: &Arc<Policy>,
        kind: SpanKind,
        headers: &mut HeaderMap,
        path: &str,
    ) -> Option<Box<Span>> {
        let mut req = http::Request::builder()
            .uri(path)
            .body(())
            .expect("request");
        *req.headers_mut() = std::mem::take(headers);
        let span = start(p, kind, &mut req, "a");
        *headers = std::mem::take(req.headers_mut());
        span
    }

    #[test]
    fn sampling_follows_parent_then_force_then_percentage() {
        let mut h = HeaderMap::new();
        assert!(hop(&policy(0.0), SpanKind::Client, &mut h, "/").is_none());
        assert_eq!(
            h["x-b3-sampled"], "0",
            "an unsampled root tells the next hops"
        );
        // The next hop honours it even at 100 %.
        assert!(hop(&policy(100.0), SpanKind::Server, &mut h, "/").is_none());

        let mut h = HeaderMap::new();
        h.insert(context::X_CLIENT_TRACE_ID, HeaderValue::from_static("abc"));
        let root = hop(&policy(0.0), SpanKind::Client, &mut h, "/x").expect("forced");
        assert!(root.parent.is_none());
        assert_eq!(root.url, "http://a/x");
        assert_eq!(root.tags[1].1.as_ref(), "nobody");
        // The next hop continues the trace as a child, whatever its percentage.
        h.insert("x-user", HeaderValue::from_static("jason"));
        let child = hop(&policy(0.0), SpanKind::Server, &mut h, "/").expect("sampled");
        assert_eq!(child.trace_id, root.trace_id);
        assert_eq!(child.parent, Some(root.span_id));
        assert_ne!(child.span_id, root.span_id);
        assert_eq!(child.tags[1].1.as_ref(), "jason");
        assert_eq!(
            context::extract(&h),
            Incoming::Context(context::Parent {
                trace_id: root.trace_id,
                span_id: child.span_id,
                sampled: Some(true)
            })
        );
        // 100 %: every root is sampled.
        let mut h = HeaderMap::new();
        assert!(hop(&policy(100.0), SpanKind::Client, &mut h, "/").is_some());
    }

    #[test]
    fn bad_policy_is_refused() {
        let bad = pb::TracingPolicy {
            sampling_percent: 101.0,
            ..Default::default()
        };
        assert!(Policy::compile(&bad).is_err());
        let bad = pb::TracingPolicy {
            collector: Some(pb::TraceCollector::default()),
            ..Default::default()
        };
        assert!(Policy::compile(&bad).is_err());
    }
}
