//! Sends finished spans to a collector, batched, from a task of their own:
//! a request only queues its span (and never waits); when the queue is full
//! the span is dropped and counted. Three protocols, as Istio's
//! extensionProviders offer them: OTLP over gRPC, OTLP over HTTP/protobuf
//! (the `opentelemetry-proto` messages) and Zipkin v2 JSON.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1 as otlp;
use tokio::sync::mpsc;
use wire::pb;

use super::context::hex;
use super::{SpanData, SpanKind};

/// Spans waiting for their batch; beyond this they are dropped.
const QUEUE: usize = 4096;
/// The most spans in one export request.
const BATCH: usize = 512;
/// How long a span may wait for its batch to fill.
const FLUSH_EVERY: Duration = Duration::from_secs(1);
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

pub struct Exporter {
    tx: mpsc::Sender<SpanData>,
    dropped: AtomicU64,
}

impl Exporter {
    /// Starts the exporter's task on the current Tokio runtime; `None`
    /// outside one (a request finished while the runtime shuts down).
    pub fn spawn(collector: &pb::TraceCollector, service_name: Arc<str>) -> Option<Arc<Self>> {
        let runtime = tokio::runtime::Handle::try_current().ok()?;
        let (tx, rx) = mpsc::channel(QUEUE);
        let sink = Sink::new(collector, service_name);
        runtime.spawn(run(rx, sink));
        Some(Arc::new(Exporter {
            tx,
            dropped: AtomicU64::new(0),
        }))
    }

    pub fn send(&self, span: SpanData) {
        if self.tx.try_send(span).is_err() {
            let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if n.is_power_of_two() {
                tracing::warn!(dropped = n, "trace exporter cannot keep up; spans dropped");
            }
        }
    }

    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

async fn run(mut rx: mpsc::Receiver<SpanData>, mut sink: Sink) {
    let mut batch = Vec::with_capacity(BATCH);
    let mut tick = tokio::time::interval(FLUSH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            span = rx.recv() => match span {
                Some(span) => {
                    batch.push(span);
                    if batch.len() >= BATCH {
                        sink.export(std::mem::take(&mut batch)).await;
                    }
                }
                None => {
                    if !batch.is_empty() {
                        sink.export(batch).await;
                    }
                    return;
                }
            },
            _ = tick.tick() => if !batch.is_empty() {
                sink.export(std::mem::take(&mut batch)).await;
            }
        }
    }
}

/// OTLP/HTTP or Zipkin: a POST of each batch.
struct HttpSink {
    client: Client<HttpConnector, Full<Bytes>>,
    uri: http::Uri,
    headers: http::HeaderMap,
    zipkin: bool,
}

/// Where one collector's batches go.
struct Sink {
    name: String,
    address: String,
    protocol: Protocol,
    service_name: Arc<str>,
    timeout: Duration,
    failures: u64,
}

enum Protocol {
    Grpc(TraceServiceClient<tonic::transport::Channel>),
    Http(Box<HttpSink>),
    /// The collector's address is not usable; spans are dropped (logged once).
    Broken,
}

impl Sink {
    fn new(c: &pb::TraceCollector, service_name: Arc<str>) -> Self {
        let timeout = match c.timeout_ms {
            0 => DEFAULT_TIMEOUT,
            ms => Duration::from_millis(ms),
        };
        let kind = pb::TraceProtocol::try_from(c.protocol).unwrap_or(pb::TraceProtocol::Zipkin);
        let protocol = match kind {
            pb::TraceProtocol::OtlpGrpc => {
                match tonic::transport::Endpoint::from_shared(format!("http://{}", c.address)) {
                    Ok(e) => Protocol::Grpc(TraceServiceClient::new(
                        e.timeout(timeout).connect_timeout(timeout).connect_lazy(),
                    )),
                    Err(e) => {
                        tracing::warn!(collector = %c.name, address = %c.address, error = %e, "trace collector address is invalid; spans are dropped");
                        Protocol::Broken
                    }
                }
            }
            pb::TraceProtocol::OtlpHttp | pb::TraceProtocol::Zipkin => {
                let zipkin = kind == pb::TraceProtocol::Zipkin;
                let path = match (c.path.as_str(), zipkin) {
                    ("", true) => "/api/v2/spans",
                    ("", false) => "/v1/traces",
                    (p, _) => p,
                };
                let mut headers = http::HeaderMap::new();
                for (k, v) in &c.headers {
                    if let (Ok(k), Ok(v)) = (
                        http::header::HeaderName::from_bytes(k.as_bytes()),
                        http::HeaderValue::from_str(v),
                    ) {
                        headers.insert(k, v);
                    }
                }
                match format!("http://{}{path}", c.address).parse::<http::Uri>() {
                    Ok(uri) => {
                        let mut connector = HttpConnector::new();
                        connector.set_connect_timeout(Some(timeout));
                        Protocol::Http(Box::new(HttpSink {
                            client: Client::builder(TokioExecutor::new()).build(connector),
                            uri,
                            headers,
                            zipkin,
                        }))
                    }
                    Err(e) => {
                        tracing::warn!(collector = %c.name, address = %c.address, error = %e, "trace collector address is invalid; spans are dropped");
                        Protocol::Broken
                    }
                }
            }
        };
        Sink {
            name: c.name.clone(),
            address: c.address.clone(),
            protocol,
            service_name,
            timeout,
            failures: 0,
        }
    }

    async fn export(&mut self, spans: Vec<SpanData>) {
        let count = spans.len();
        let result = match &mut self.protocol {
            Protocol::Broken => return,
            Protocol::Grpc(client) => client
                .export(otlp_request(&self.service_name, spans))
                .await
                .map(|_| ())
                .map_err(|s| s.to_string()),
            Protocol::Http(h) => {
                let HttpSink {
                    client,
                    uri,
                    headers,
                    zipkin,
                } = &**h;
                let (body, content_type) = if *zipkin {
                    (zipkin_json(&self.service_name, &spans), "application/json")
                } else {
                    (
                        prost::Message::encode_to_vec(&otlp_request(&self.service_name, spans)),
                        "application/x-protobuf",
                    )
                };
                let mut req = http::Request::new(Full::new(Bytes::from(body)));
                *req.method_mut() = http::Method::POST;
                *req.uri_mut() = uri.clone();
                *req.headers_mut() = headers.clone();
                req.headers_mut().insert(
                    http::header::CONTENT_TYPE,
                    http::HeaderValue::from_static(content_type),
                );
                match tokio::time::timeout(self.timeout, client.request(req)).await {
                    Err(_) => Err("timed out".to_string()),
                    Ok(Err(e)) => Err(e.to_string()),
                    Ok(Ok(resp)) if resp.status().is_success() => Ok(()),
                    Ok(Ok(resp)) => Err(format!("status {}", resp.status())),
                }
            }
        };
        match result {
            Ok(()) => {
                if self.failures > 0 {
                    tracing::info!(collector = %self.name, "trace collector reachable again");
                }
                self.failures = 0;
            }
            Err(error) => {
                self.failures += 1;
                // The first failure and then ever more rarely: a missing
                // collector must not flood the proxy's log.
                if self.failures.is_power_of_two() {
                    tracing::warn!(collector = %self.name, address = %self.address, spans = count, failures = self.failures, %error, "cannot export spans");
                }
            }
        }
    }
}

fn unix_nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

fn string_kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.to_string())),
        }),
        ..Default::default()
    }
}

/// One OTLP request: the proxy's service as the resource, its spans.
pub fn otlp_request(service_name: &str, spans: Vec<SpanData>) -> ExportTraceServiceRequest {
    let spans = spans
        .into_iter()
        .map(|s| otlp::Span {
            trace_id: s.trace_id.to_vec(),
            span_id: s.span_id.to_vec(),
            parent_span_id: s.parent.map(|p| p.to_vec()).unwrap_or_default(),
            trace_state: s.trace_state,
            name: s.name,
            kind: match s.kind {
                SpanKind::Server => otlp::span::SpanKind::Server,
                SpanKind::Client => otlp::span::SpanKind::Client,
            } as i32,
            start_time_unix_nano: unix_nanos(s.start),
            end_time_unix_nano: unix_nanos(s.end),
            attributes: s.attributes.iter().map(|(k, v)| string_kv(k, v)).collect(),
            status: Some(otlp::Status {
                code: if s.error {
                    otlp::status::StatusCode::Error
                } else {
                    otlp::status::StatusCode::Unset
                } as i32,
                ..Default::default()
            }),
            ..Default::default()
        })
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![otlp::ResourceSpans {
            resource: Some(Resource {
                attributes: vec![string_kv("service.name", service_name)],
                ..Default::default()
            }),
            scope_spans: vec![otlp::ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "trellis-proxy".into(),
                    version: env!("CARGO_PKG_VERSION").into(),
                    ..Default::default()
                }),
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// Zipkin's v2 span list (`POST /api/v2/spans`).
pub fn zipkin_json(service_name: &str, spans: &[SpanData]) -> Vec<u8> {
    let list: Vec<serde_json::Value> = spans
        .iter()
        .map(|s| {
            let start_us = unix_nanos(s.start) / 1000;
            let duration_us = (unix_nanos(s.end) / 1000).saturating_sub(start_us).max(1);
            let mut tags: serde_json::Map<String, serde_json::Value> = s
                .attributes
                .iter()
                .map(|(k, v)| (k.to_string(), serde_json::Value::from(v.as_str())))
                .collect();
            if s.error {
                tags.insert("error".into(), "true".into());
            }
            let mut span = serde_json::json!({
                "traceId": hex(&s.trace_id),
                "id": hex(&s.span_id),
                "name": s.name,
                "kind": match s.kind { SpanKind::Server => "SERVER", SpanKind::Client => "CLIENT" },
                "timestamp": start_us,
                "duration": duration_us,
                "localEndpoint": {"serviceName": service_name},
                "tags": tags,
            });
            if let (Some(p), Some(obj)) = (s.parent, span.as_object_mut()) {
                obj.insert("parentId".into(), hex(&p).into());
            }
            span
        })
        .collect();
    serde_json::to_vec(&list).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span() -> SpanData {
        SpanData {
            trace_id: [1; 16],
            span_id: [2; 8],
            parent: Some([3; 8]),
            kind: SpanKind::Server,
            name: "reviews.default.svc.cluster.local:9080/*".into(),
            start: UNIX_EPOCH + Duration::from_millis(1_000),
            end: UNIX_EPOCH + Duration::from_millis(1_005),
            trace_state: String::new(),
            attributes: vec![("http.status_code".into(), "503".into())],
            error: true,
        }
    }

    #[test]
    fn otlp_and_zipkin_shapes() {
        let req = otlp_request("reviews.default", vec![span()]);
        let rs = &req.resource_spans[0];
        let s = &rs.scope_spans[0].spans[0];
        assert_eq!(s.parent_span_id, vec![3; 8]);
        assert_eq!(s.kind, otlp::span::SpanKind::Server as i32);
        assert_eq!(s.end_time_unix_nano - s.start_time_unix_nano, 5_000_000);
        assert_eq!(
            s.status.as_ref().map(|st| st.code),
            Some(otlp::status::StatusCode::Error as i32)
        );
        let z: serde_json::Value =
            serde_json::from_slice(&zipkin_json("reviews.default", &[span()])).expect("json");
        assert_eq!(z[0]["parentId"], "0303030303030303");
        assert_eq!(z[0]["duration"], 5000);
        assert_eq!(z[0]["localEndpoint"]["serviceName"], "reviews.default");
        assert_eq!(z[0]["tags"]["error"], "true");
    }

    /// Both HTTP exporters POST their batch to a real HTTP server.
    #[tokio::test]
    async fn http_exporters_post_batches() {
        use http_body_util::BodyExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (tx, mut rx) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let tx = tx.clone();
                tokio::spawn(hyper::server::conn::http1::Builder::new().serve_connection(
                    hyper_util::rt::TokioIo::new(stream),
                    hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let tx = tx.clone();
                        async move {
                            let path = req.uri().path().to_string();
                            let ct = req.headers()[http::header::CONTENT_TYPE].clone();
                            let body = req.into_body().collect().await?.to_bytes();
                            let _ = tx.send((path, ct, body)).await;
                            Ok::<_, hyper::Error>(http::Response::new(Full::new(Bytes::new())))
                        }
                    }),
                ));
            }
        });
        for protocol in [pb::TraceProtocol::Zipkin, pb::TraceProtocol::OtlpHttp] {
            let mut sink = Sink::new(
                &pb::TraceCollector {
                    name: "test".into(),
                    protocol: protocol as i32,
                    address: addr.to_string(),
                    ..Default::default()
                },
                "reviews.default".into(),
            );
            sink.export(vec![span()]).await;
            assert_eq!(sink.failures, 0);
            let (path, ct, body) = rx.recv().await.expect("a request");
            if protocol == pb::TraceProtocol::Zipkin {
                assert_eq!(
                    (path.as_str(), ct.as_bytes()),
                    ("/api/v2/spans", &b"application/json"[..])
                );
                let z: serde_json::Value = serde_json::from_slice(&body).expect("json");
                assert_eq!(z[0]["localEndpoint"]["serviceName"], "reviews.default");
            } else {
                assert_eq!(
                    (path.as_str(), ct.as_bytes()),
                    ("/v1/traces", &b"application/x-protobuf"[..])
                );
                let req: ExportTraceServiceRequest =
                    prost::Message::decode(body).expect("protobuf");
                assert_eq!(
                    req.resource_spans[0].scope_spans[0].spans[0].span_id,
                    vec![2; 8]
                );
            }
        }
    }
}
