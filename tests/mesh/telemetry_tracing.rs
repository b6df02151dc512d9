//! Tracing end to end: Bookinfo behind the ingress gateway, the seeds'
//! `mesh-default` Telemetry (100 % sampling, a literal custom tag) and an
//! OpenTelemetry extension provider pointing at this test's own OTLP/gRPC
//! receiver (the collector's `TraceService`, on opentelemetry-proto's
//! types). Every proxy reports its span; the test joins them into the chain
//! gateway → productpage → reviews → ratings, and sends B3 contexts of its
//! own through the gateway. Access logs: Istio's default TEXT line on the
//! proxies' stdout (the pod's istio-proxy log), filtered by a Telemetry.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use e2e::{Mesh, eventually, http, repo_root};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;

/// One received span, flattened.
#[derive(Clone, Debug)]
struct Span {
    service: String,
    trace_id: Vec<u8>,
    span_id: Vec<u8>,
    parent: Vec<u8>,
    kind: i32,
    attrs: HashMap<String, String>,
}

#[derive(Clone, Default)]
struct Receiver(Arc<Mutex<Vec<Span>>>);

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        req: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.0.lock().unwrap_or_else(|e| e.into_inner());
        for rs in req.into_inner().resource_spans {
            let attr = |kv: &opentelemetry_proto::tonic::common::v1::KeyValue| {
                let v = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                    Some(any_value::Value::StringValue(s)) => s.clone(),
                    other => format!("{other:?}"),
                };
                (kv.key.clone(), v)
            };
            let resource: HashMap<String, String> = rs
                .resource
                .iter()
                .flat_map(|r| r.attributes.iter().map(attr))
                .collect();
            let service = resource.get("service.name").cloned().unwrap_or_default();
            for s in rs.scope_spans.into_iter().flat_map(|ss| ss.spans) {
                spans.push(Span {
                    service: service.clone(),
                    trace_id: s.trace_id.clone(),
                    span_id: s.span_id.clone(),
                    parent: s.parent_span_id.clone(),
                    kind: s.kind,
                    attrs: s.attributes.iter().map(attr).collect(),
                });
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

impl Receiver {
    fn spans(&self) -> Vec<Span> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    async fn serve() -> Result<(Receiver, SocketAddr)> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let receiver = Receiver::default();
        let service = TraceServiceServer::new(receiver.clone());
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        Ok((receiver, addr))
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Bookinfo, its gateway, the seed Telemetry and a mesh.yaml sending spans
/// to `collector`; plus a Telemetry logging only failed requests at the
/// server side.
fn mesh_dir(collector: SocketAddr) -> Result<tempfile::TempDir> {
    let dir = tempfile::tempdir()?;
    let root = repo_root();
    for f in ["bookinfo.yaml", "bookinfo-gateway.yaml"] {
        std::fs::copy(root.join("examples/bookinfo").join(f), dir.path().join(f))?;
    }
    let seed = root.join("../shared/seeds/yaml/002-08-Telemetry-mesh-default.yaml");
    let telemetry = std::fs::read_to_string(&seed).unwrap_or_else(|_| {
        // The seed's text, for a checkout without the seeds beside it.
        "apiVersion: telemetry.istio.io/v1alpha1\nkind: Telemetry\nmetadata:\n  name: mesh-default\n  namespace: istio-system\nspec:\n  tracing:\n  - randomSamplingPercentage: 100.0\n    customTags:\n      my-tag:\n        literal:\n          value: \"123\"\n".into()
    });
    std::fs::write(dir.path().join("telemetry.yaml"), telemetry)?;
    std::fs::write(
        dir.path().join("logs.yaml"),
        "apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: ratings-errors, namespace: default}
spec:
  selector: {matchLabels: {app: ratings}}
  accessLogging:
  - match: {mode: SERVER}
    providers: [{name: envoy}]
    filter: {expression: 'response.code >= 400'}
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: details-metrics, namespace: default}
spec:
  selector: {matchLabels: {app: details}}
  metrics:
  - providers: [{name: prometheus}]
    overrides:
    - match: {metric: REQUEST_COUNT, mode: SERVER}
      tagOverrides:
        request_protocol: {operation: REMOVE}
        failed: {value: 'response.code >= 500'}
    - match: {metric: REQUEST_SIZE}
      disabled: true
",
    )?;
    std::fs::write(
        dir.path().join("mesh.yaml"),
        format!(
            "accessLogFile: /dev/stdout
extensionProviders:
- name: otel
  opentelemetry: {{service: \"{}\", port: {}}}
defaultProviders:
  tracing: [otel]
",
            collector.ip(),
            collector.port()
        ),
    )?;
    Ok(dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bookinfo_traces_and_access_logs() -> Result<()> {
    let (receiver, collector) = Receiver::serve().await?;
    let dir = mesh_dir(collector)?;
    let mesh = Mesh::up(dir.path())?;
    let client = http();
    let page = |headers: Vec<(&'static str, String)>| {
        let client = client.clone();
        let url = format!("{}/productpage", mesh.gateway);
        async move {
            let mut req = client.get(url);
            for (k, v) in headers {
                req = req.header(k, v);
            }
            let resp = req.send().await?;
            ensure!(resp.status() == 200, "status {}", resp.status());
            Ok(())
        }
    };
    eventually(Duration::from_secs(30), || page(Vec::new())).await?;
    // reviews v2 and v3 call ratings, v1 does not: a few pages reach it.
    for _ in 0..9 {
        page(Vec::new()).await?;
    }

    // The chain, joined from the spans every proxy reported.
    let chain = eventually(Duration::from_secs(30), || {
        let spans = receiver.spans();
        async move { ratings_chain(&spans) }
    })
    .await?;
    let [gw, pp_in, pp_out, rv_in, rv_out, rt_in] = &chain[..] else {
        bail!("chain of {}", chain.len());
    };
    assert!(
        gw.service.starts_with("istio-ingressgateway"),
        "{}",
        gw.service
    );
    assert_eq!(gw.kind, SpanKind::Client as i32);
    assert!(gw.parent.is_empty(), "the gateway starts the trace");
    for (span, service, kind) in [
        (pp_in, "productpage.default", SpanKind::Server),
        (pp_out, "productpage.default", SpanKind::Client),
        (rv_in, "reviews.default", SpanKind::Server),
        (rv_out, "reviews.default", SpanKind::Client),
        (rt_in, "ratings.default", SpanKind::Server),
    ] {
        assert_eq!(span.service, service);
        assert_eq!(span.kind, kind as i32, "{span:?}");
        assert_eq!(span.attrs["http.status_code"], "200", "{span:?}");
        assert_eq!(span.attrs["my-tag"], "123", "the seed's custom tag");
        assert_eq!(span.attrs["component"], "proxy");
    }
    // The server side names its verified peer, the client side its expected one.
    assert_eq!(
        rt_in.attrs["source.principal"],
        "spiffe://cluster.local/ns/default/sa/bookinfo-reviews"
    );
    assert_eq!(
        rv_out.attrs["destination.principal"],
        "spiffe://cluster.local/ns/default/sa/bookinfo-ratings"
    );
    assert_eq!(
        rv_in.attrs["source.principal"],
        "spiffe://cluster.local/ns/default/sa/bookinfo-productpage"
    );
    assert!(
        rt_in.attrs["upstream_cluster"].starts_with("inbound|"),
        "{:?}",
        rt_in.attrs
    );
    assert!(pp_out.attrs["upstream_cluster"].contains("reviews.default.svc.cluster.local"));

    // A client's B3 context (multi headers, then the single header) is
    // continued: the gateway's span is its child, in its trace.
    let parent = "a2fb4a1d1a96d312";
    for (trace, headers) in [
        (
            "463ac35c9f6413ad48485a3953bb6124",
            vec![
                (
                    "x-b3-traceid",
                    "463ac35c9f6413ad48485a3953bb6124".to_string(),
                ),
                ("x-b3-spanid", parent.to_string()),
                ("x-b3-sampled", "1".to_string()),
            ],
        ),
        (
            "80f198ee56343ba864fe8b2a57d3eff7",
            vec![("b3", format!("80f198ee56343ba864fe8b2a57d3eff7-{parent}-1"))],
        ),
    ] {
        page(headers).await?;
        let spans = eventually(Duration::from_secs(30), || {
            let spans = receiver.spans();
            async move {
                let of: Vec<Span> = spans
                    .into_iter()
                    .filter(|s| hex(&s.trace_id) == trace)
                    .collect();
                // gateway, productpage ×2, details ×2, reviews (×2 with ratings)
                ensure!(of.len() >= 5, "{} spans of trace {trace}", of.len());
                // Each proxy exports on its own schedule: wait for the gateway's too.
                ensure!(
                    of.iter()
                        .any(|s| s.service.starts_with("istio-ingressgateway")),
                    "no gateway span yet in trace {trace}"
                );
                Ok(of)
            }
        })
        .await?;
        let gw = spans
            .iter()
            .find(|s| s.service.starts_with("istio-ingressgateway"))
            .context("gateway span")?;
        assert_eq!(hex(&gw.parent), parent, "{trace}");
    }
    // A client's decision not to sample is kept by every hop.
    let before = receiver.spans().len();
    page(vec![
        ("x-b3-traceid", "0af7651916cd43dd8448eb211c80319c".into()),
        ("x-b3-spanid", "b7ad6b7169203331".into()),
        ("x-b3-sampled", "0".into()),
    ])
    .await?;
    page(vec![("x-client-trace-id", "forced".into())]).await?;
    eventually(Duration::from_secs(30), || {
        let spans = receiver.spans();
        async move {
            ensure!(
                spans.len() >= before + 5,
                "the forced trace has not arrived"
            );
            Ok(())
        }
    })
    .await?;
    assert!(
        !receiver
            .spans()
            .iter()
            .any(|s| hex(&s.trace_id) == "0af7651916cd43dd8448eb211c80319c"),
        "an unsampled trace was reported"
    );

    // Metrics overrides: details' server side counts requests without
    // request_protocol and with its own `failed` label, and has no
    // request size histogram; its client side and other workloads are as before.
    let pod = mesh.pod_of("details")?;
    let admin = pod["metadata"]["annotations"]["proxy.trellis.io/admin"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let stats = client
        .get(format!("http://{admin}/stats/prometheus"))
        .send()
        .await?
        .text()
        .await?;
    let served: Vec<&str> = stats
        .lines()
        .filter(|l| {
            l.starts_with("istio_requests_total{") && l.contains("reporter=\"destination\"")
        })
        .collect();
    ensure!(!served.is_empty(), "{stats:.3000}");
    for l in &served {
        assert!(
            l.contains("failed=\"false\"") && !l.contains("request_protocol="),
            "{l}"
        );
    }
    assert!(
        !stats.contains("istio_request_bytes"),
        "REQUEST_SIZE disabled: {stats:.3000}"
    );
    assert!(stats.contains("istio_response_bytes_bucket{"));

    // Access logs: Istio's TEXT line on productpage's sidecar (mesh-wide
    // accessLogFile); ratings' Telemetry logs only its failed requests.
    let log_of = |app: &str| -> Result<String> {
        let pod = mesh.pod_of(app)?;
        let name = pod["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        Ok(
            std::fs::read_to_string(mesh.logs().join(format!("default.{name}.istio-proxy.log")))
                .unwrap_or_default(),
        )
    };
    let pp = eventually(Duration::from_secs(10), || {
        let text = log_of("productpage");
        async move {
            let text = text?;
            ensure!(
                text.contains("\"GET /productpage HTTP/1.1\" 200 - via_upstream"),
                "{text:.2000}"
            );
            Ok(text)
        }
    })
    .await?;
    assert!(
        pp.lines()
            .any(|l| l.contains("outbound|9080||reviews.default.svc.cluster.local")),
        "the client side's line names the cluster: {pp:.3000}"
    );
    // ratings' server side: a failed request is logged, a good one is not
    // (the pages above fetched ratings too).
    let ratings_pod = mesh.pod_of("ratings")?;
    let ip = ratings_pod["status"]["podIP"].as_str().context("pod ip")?;
    for (path, status) in [("/ratings/x", 400), ("/ratings/0", 200)] {
        let resp = client.get(format!("http://{ip}:9080{path}")).send().await?;
        ensure!(resp.status() == status, "{path}: {}", resp.status());
    }
    let ratings = eventually(Duration::from_secs(10), || {
        let text = log_of("ratings");
        async move {
            let text = text?;
            ensure!(
                text.contains("\"GET /ratings/x HTTP/1.1\" 400"),
                "{text:.3000}"
            );
            Ok(text)
        }
    })
    .await?;
    assert!(
        !ratings.contains("\"GET /ratings/0 HTTP/1.1\" 200"),
        "ratings' server side logs only failures: {ratings:.3000}"
    );
    Ok(())
}

/// gateway → productpage (in, out) → reviews (in, out) → ratings (in): the
/// first such chain among the spans, each its predecessor's child.
fn ratings_chain(spans: &[Span]) -> Result<Vec<Span>> {
    let by_id: HashMap<(&[u8], &[u8]), &Span> = spans
        .iter()
        .map(|s| ((s.trace_id.as_slice(), s.span_id.as_slice()), s))
        .collect();
    for rt in spans
        .iter()
        .filter(|s| s.service == "ratings.default" && s.kind == SpanKind::Server as i32)
    {
        let mut chain = vec![rt.clone()];
        let mut at = rt;
        while !at.parent.is_empty() {
            match by_id.get(&(at.trace_id.as_slice(), at.parent.as_slice())) {
                Some(p) => {
                    chain.push((*p).clone());
                    at = p;
                }
                None => break,
            }
        }
        if chain.len() == 6 && at.parent.is_empty() {
            chain.reverse();
            return Ok(chain);
        }
    }
    bail!("no complete chain to ratings among {} spans", spans.len())
}
