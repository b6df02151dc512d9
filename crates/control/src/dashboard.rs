//! The dashboard on the monitoring port: a live service graph in the
//! browser (`/dashboard/`), and the JSON it draws from.
//!
//! - `GET /dashboard/api/graph`: workloads and services, the edges between
//!   them with request rate, error ratio, p99 and mTLS (see [`crate::graph`]),
//!   and each proxy's sync status with the control plane.
//! - `GET /dashboard/api/service/{namespace}/{name}`: one service: its
//!   versions, the VirtualServices and DestinationRules that apply, its
//!   callers, its failed requests by code and response flags, and its
//!   recent errors and slowest requests with their trace ids (linked to
//!   the tracing UI when one is configured: [`TracingUi`]).
//!
//! The page and its script are in the binary (`dashboard/`), nothing is
//! fetched from elsewhere. The views are read-only and, like `/metrics`,
//! need no token (a browser cannot send one); they are guarded against
//! other web pages: the Host must name this listener (DNS rebinding) and a
//! cross-origin request is refused, as the API's routes are (see
//! [`crate::http_api`]). Proxies are scraped only while someone looks.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Weak};

use axum::Router;
use axum::extract::{Path, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Json, Redirect, Response};
use axum::routing::get;
use serde::Serialize;
use serde_json::json;

use crate::graph::scrape::{Scraper, Target};
use crate::graph::{Graph, Node, NodeKind};
use crate::state::{ControlPlane, ProxyStatus};

/// The proxy's own Prometheus port (Istio's, Envoy's).
pub const STATS_PORT: u16 = 15090;
/// Where `trellis up` writes a proxy's metrics addresses (`<ip>:15020 <ip>:15090`).
const METRICS_ANNOTATION: &str = "proxy.trellis.io/metrics";

const INDEX: &str = include_str!("dashboard/index.html");
const SCRIPT: &str = include_str!("dashboard/app.js");
const STYLE: &str = include_str!("dashboard/style.css");

#[derive(Clone)]
struct Dashboard {
    cp: Weak<ControlPlane>,
    scraper: Arc<Scraper>,
    tracing_ui: Option<TracingUi>,
}

/// How the dashboard is set up (`trellisd --tracing-url`, `--prometheus`).
#[derive(Clone, Debug, Default)]
pub struct Settings {
    /// Where trace ids link to; `None`: they are shown as text.
    pub tracing_ui: Option<TracingUi>,
    /// Where the graph's metrics are read; `None`: from the proxies.
    pub prometheus: Option<crate::graph::prometheus::Prometheus>,
}

/// Where a trace is shown: Jaeger's UI (`<base>/trace/<id>`), or any URL
/// with `{trace_id}` in it (Zipkin's `.../zipkin/traces/{trace_id}`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TracingUi(String);

impl TracingUi {
    const PLACEHOLDER: &str = "{trace_id}";

    /// Only http(s) URLs: the page makes links of them.
    pub fn parse(url: &str) -> Result<TracingUi, String> {
        let parsed = reqwest::Url::parse(&url.replace(Self::PLACEHOLDER, "0"))
            .map_err(|e| format!("tracing UI URL {url:?}: {e}"))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(format!(
                "tracing UI URL {url:?}: only http and https URLs are linked"
            ));
        }
        Ok(TracingUi(url.to_string()))
    }

    /// The page of trace `id` (32 hex digits, as the proxies report it).
    pub fn link(&self, id: &str) -> Option<String> {
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        Some(if self.0.contains(Self::PLACEHOLDER) {
            self.0.replace(Self::PLACEHOLDER, id)
        } else {
            format!("{}/trace/{id}", self.0.trim_end_matches('/'))
        })
    }
}

/// The dashboard's routes, guarded as the module says. `listen` is the
/// listener's address; `any_host`: the Host is not checked (on
/// Kubernetes, where the API server's service proxy passes on its own).
pub fn router(
    cp: &Arc<ControlPlane>,
    listen: SocketAddr,
    any_host: bool,
    settings: Settings,
) -> Router {
    let weak = Arc::downgrade(cp);
    let scraper = Scraper::start(
        {
            let cp = weak.clone();
            move || cp.upgrade().map(|cp| targets(&cp)).unwrap_or_default()
        },
        settings.prometheus,
    );
    let state = Dashboard {
        cp: weak,
        scraper,
        tracing_ui: settings.tracing_ui,
    };
    Router::new()
        .route(
            "/dashboard",
            get(|| async { Redirect::permanent("/dashboard/") }),
        )
        .route(
            "/dashboard/",
            get(|| asset(INDEX, "text/html; charset=utf-8")),
        )
        .route(
            "/dashboard/app.js",
            get(|| asset(SCRIPT, "text/javascript; charset=utf-8")),
        )
        .route(
            "/dashboard/style.css",
            get(|| asset(STYLE, "text/css; charset=utf-8")),
        )
        .route("/dashboard/api/graph", get(graph))
        .route("/dashboard/api/service/{namespace}/{name}", get(service))
        .with_state(state)
        .route_layer(middleware::from_fn(move |req: Request, next: Next| {
            guard(listen, any_host, req, next)
        }))
}

async fn asset(body: &'static str, content_type: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
            // The page loads only its own script and style, and talks only to this listener.
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
            ),
        ],
        body,
    )
        .into_response()
}

async fn guard(listen: SocketAddr, any_host: bool, req: Request, next: Next) -> Response {
    let headers = req.headers();
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    if !any_host && !crate::http_api::is_own_authority(host, listen) {
        return refuse(format!(
            "Host {host:?} is not this control plane ({listen}): refused (DNS rebinding protection)"
        ));
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("");
        let own = origin
            .strip_prefix("http://")
            .is_some_and(|a| any_host || crate::http_api::is_own_authority(a, listen));
        if !own {
            return refuse(format!("cross-origin request from {origin:?} refused"));
        }
    }
    next.run(req).await
}

fn refuse(message: String) -> Response {
    (StatusCode::FORBIDDEN, Json(json!({ "error": message }))).into_response()
}

fn gone() -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(json!({ "error": "the control plane is shutting down" })),
    )
        .into_response()
}

/// Where each connected proxy serves its own metrics: the address `trellis
/// up` annotated its pod with, else the pod's IP on 15090 (as Istio's
/// Prometheus config scrapes `envoy-stats`).
fn targets(cp: &ControlPlane) -> Vec<Target> {
    let annotated: BTreeMap<(String, String), String> = cp
        .store()
        .resources()
        .filter_map(|r| {
            if r.kind() != api::Kind::Pod {
                return None;
            }
            // Kept in a stored pod's slim form (see `api::READ_ANNOTATIONS`).
            let addrs = r.annotations().get(METRICS_ANNOTATION)?;
            let stats = addrs
                .split_whitespace()
                .find(|a| a.ends_with(&format!(":{STATS_PORT}")))?;
            Some((
                (
                    r.namespace().unwrap_or("default").to_string(),
                    r.name().to_string(),
                ),
                stats.to_string(),
            ))
        })
        .collect();
    cp.proxy_status()
        .into_iter()
        .filter(|p| p.connected)
        .filter_map(|p| {
            let addr = match annotated.get(&(p.namespace.clone(), p.pod.clone())) {
                Some(a) => a.clone(),
                None => {
                    let ip = cp.node(&p.id)?.pod_ip;
                    let ip: std::net::IpAddr = ip.parse().ok()?;
                    SocketAddr::new(ip, STATS_PORT).to_string()
                }
            };
            Some(Target {
                url: format!("http://{addr}/stats/prometheus"),
                proxy: p.id,
            })
        })
        .collect()
}

/// A proxy as the dashboard shows it.
#[derive(Serialize)]
struct ProxyView {
    id: String,
    pod: String,
    namespace: String,
    /// The workload (Deployment) it runs in: the graph node it belongs to.
    workload: String,
    kind: String,
    connected: bool,
    /// `SYNCED`, `STALE` (sent, not acknowledged yet), `NACKED` or
    /// `NOT SENT`, as `istioctl proxy-status` says.
    sync: &'static str,
    nack: Option<String>,
    /// Why its metrics could not be read, if they could not.
    scrape_error: Option<String>,
}

fn sync_of(p: &ProxyStatus) -> (&'static str, Option<String>) {
    if let Some(nack) = p.types.values().find_map(|t| t.nack.clone()) {
        return ("NACKED", Some(nack));
    }
    if p.types.is_empty() {
        return ("NOT SENT", None);
    }
    if p.types.values().all(|t| t.sent == t.acked) {
        ("SYNCED", None)
    } else {
        ("STALE", None)
    }
}

#[derive(Serialize)]
struct GraphView {
    #[serde(flatten)]
    graph: Graph,
    proxies: Vec<ProxyView>,
    /// Where the metrics come from: `proxies`, or the Prometheus's URL.
    metrics_source: String,
    /// Why the Prometheus could not be read, if it could not.
    metrics_error: Option<String>,
}

async fn graph(State(d): State<Dashboard>) -> Response {
    let Some(cp) = d.cp.upgrade() else {
        return gone();
    };
    d.scraper.viewed();
    let mut graph = d.scraper.graph();
    let errors: BTreeMap<String, String> = d.scraper.errors().into_iter().collect();
    let mesh = cp.mesh();
    let proxies: Vec<ProxyView> = cp
        .proxy_status()
        .into_iter()
        .map(|p| {
            let node = cp.node(&p.id);
            let workload = node
                .as_ref()
                .map(|n| n.workload_name.clone())
                .filter(|w| !w.is_empty())
                .unwrap_or_else(|| p.pod.clone());
            // A workload with a proxy but no traffic yet is on the graph, idle.
            let id = format!("workload:{}/{workload}", p.namespace);
            if p.connected && !graph.nodes.iter().any(|n| n.id == id) {
                let labels = mesh
                    .registry
                    .workload(&p.pod, &p.namespace)
                    .map(|w| w.labels.clone())
                    .unwrap_or_default();
                let label = |names: [&str; 2]| {
                    names
                        .iter()
                        .find_map(|n| labels.get(*n).cloned())
                        .unwrap_or_default()
                };
                graph.nodes.push(Node {
                    id,
                    kind: NodeKind::Workload,
                    namespace: p.namespace.clone(),
                    name: workload.clone(),
                    app: label(["service.istio.io/canonical-name", "app"]),
                    version: label(["service.istio.io/canonical-revision", "version"]),
                    host: String::new(),
                });
            }
            let (sync, nack) = sync_of(&p);
            ProxyView {
                scrape_error: errors.get(&p.id).cloned(),
                id: p.id,
                pod: p.pod,
                namespace: p.namespace,
                workload,
                kind: p.kind,
                connected: p.connected,
                sync,
                nack,
            }
        })
        .collect();
    Json(GraphView {
        graph,
        proxies,
        metrics_source: d
            .scraper
            .prometheus()
            .map_or_else(|| "proxies".to_string(), str::to_string),
        metrics_error: errors.get("prometheus").cloned(),
    })
    .into_response()
}

async fn service(
    State(d): State<Dashboard>,
    Path((namespace, name)): Path<(String, String)>,
) -> Response {
    let Some(cp) = d.cp.upgrade() else {
        return gone();
    };
    d.scraper.viewed();
    let mesh = cp.mesh();
    let host = mesh.fqdn(&name, &namespace);
    let service = mesh
        .registry
        .services
        .values()
        .find(|s| s.name == name && s.namespace == namespace)
        .or_else(|| mesh.registry.service(&host));
    let graph = d.scraper.graph();
    let node_id = format!("service:{host}");
    let in_graph = graph.nodes.iter().any(|n| n.id == node_id);
    let Some(service) = service else {
        if !in_graph {
            return (
                StatusCode::NOT_FOUND,
                Json(json!({ "error": format!("no service {namespace}/{name} in the mesh") })),
            )
                .into_response();
        }
        return Json(json!({ "host": host, "name": name, "namespace": namespace })).into_response();
    };
    let host = service.hostname.clone();
    let node_id = format!("service:{host}");
    let applies = |hosts: &[String], ns: &str| {
        hosts
            .iter()
            .any(|h| model::host::matches(&mesh.fqdn(h, ns), &host))
    };
    // A VirtualService for every host (`*`) bound to gateways only is the
    // gateways' business, not this service's.
    let virtual_services: Vec<_> = mesh
        .virtual_services
        .iter()
        .filter(|vs| {
            let ns = vs.metadata.namespace.as_deref().unwrap_or("default");
            let in_mesh =
                vs.spec.gateways.is_empty() || vs.spec.gateways.iter().any(|g| g == "mesh");
            let named: Vec<String> = vs
                .spec
                .hosts
                .iter()
                .filter(|h| in_mesh || h.as_str() != "*")
                .cloned()
                .collect();
            applies(&named, ns)
        })
        .map(|vs| {
            json!({
                "namespace": vs.metadata.namespace.as_deref().unwrap_or("default"),
                "name": vs.metadata.name,
                "spec": vs.spec,
            })
        })
        .collect();
    let destination_rules: Vec<_> = mesh
        .destination_rules
        .iter()
        .filter(|dr| {
            applies(
                std::slice::from_ref(&dr.spec.host),
                dr.metadata.namespace.as_deref().unwrap_or("default"),
            )
        })
        .map(|dr| {
            json!({
                "namespace": dr.metadata.namespace.as_deref().unwrap_or("default"),
                "name": dr.metadata.name,
                "spec": dr.spec,
            })
        })
        .collect();
    // Its versions: the workloads behind it, with what they answered.
    let mut versions: BTreeMap<String, serde_json::Value> = BTreeMap::new();
    for w in mesh.registry.backends(&host) {
        let id = format!("workload:{}/{}", w.namespace, w.workload);
        let entry = versions.entry(id.clone()).or_insert_with(|| {
            let edge = graph
                .edges
                .iter()
                .find(|e| e.source == node_id && e.target == id);
            json!({
                "node": id,
                "workload": w.workload,
                "version": w.labels.get("version").cloned().unwrap_or_default(),
                "labels": *w.labels,
                "pods": [],
                "rps": edge.map_or(0.0, |e| e.rps),
                "error_ratio": edge.map_or(0.0, |e| e.error_ratio),
                "p99_ms": edge.and_then(|e| e.p99_ms),
            })
        });
        if let Some(pods) = entry["pods"].as_array_mut() {
            pods.push(json!(w.name));
        }
    }
    let callers: Vec<_> = graph.edges.iter().filter(|e| e.target == node_id).collect();
    let recent = d.scraper.recent(&host);
    let with_links = |list: Vec<crate::graph::recent::Notable>| -> Vec<serde_json::Value> {
        list.into_iter()
            .map(|n| {
                let trace_url = n
                    .trace_id
                    .as_deref()
                    .and_then(|id| d.tracing_ui.as_ref()?.link(id));
                let mut v = json!(n);
                v["trace_url"] = json!(trace_url);
                v
            })
            .collect()
    };
    let ports: Vec<_> = service
        .ports
        .iter()
        .map(|p| json!({"name": p.name, "port": p.port, "protocol": format!("{:?}", p.protocol)}))
        .collect();
    Json(json!({
        "host": host,
        "name": service.name,
        "namespace": service.namespace,
        "ports": ports,
        "versions": versions.into_values().collect::<Vec<_>>(),
        "virtual_services": virtual_services,
        "destination_rules": destination_rules,
        "callers": callers,
        "failures": d.scraper.failures(&host),
        "window_seconds": graph.window_seconds,
        "recent_errors": with_links(recent.errors),
        "slowest": with_links(recent.slowest),
        "slowest_window_seconds": 60,
    }))
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::TracingUi;

    #[test]
    fn trace_links_go_to_jaeger_or_the_given_pattern() {
        let jaeger = TracingUi::parse("http://localhost:16686/").expect("jaeger");
        let id = "0af7651916cd43dd8448eb211c80319c";
        assert_eq!(
            jaeger.link(id).as_deref(),
            Some("http://localhost:16686/trace/0af7651916cd43dd8448eb211c80319c")
        );
        let zipkin =
            TracingUi::parse("https://zipkin.example/zipkin/traces/{trace_id}").expect("zipkin");
        assert_eq!(
            zipkin.link(id).as_deref(),
            Some("https://zipkin.example/zipkin/traces/0af7651916cd43dd8448eb211c80319c")
        );
        // Only hex ids make links; only http(s) URLs are accepted, with why.
        assert_eq!(jaeger.link("\"><script>"), None);
        let e = TracingUi::parse("javascript:alert(1)").expect_err("scheme");
        assert!(e.contains("only http and https"), "{e}");
        let e = TracingUi::parse("localhost:16686").expect_err("no scheme");
        assert!(e.contains("tracing UI URL \"localhost:16686\""), "{e}");
    }
}
