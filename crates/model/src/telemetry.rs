//! Telemetry resources and MeshConfig's telemetry settings → each proxy
//! side's tracing and access-log policy, as istiod computes them.
//!
//! Which Telemetry resources apply to a proxy: the root namespace's without
//! a selector (mesh), its own namespace's without a selector, and those of
//! its namespace (or the root namespace) that select it by labels or
//! `targetRefs` (workload). Istio's inheritance: a more specific level
//! overrides a less specific one field by field (tracing: providers,
//! randomSamplingPercentage, customTags, disableSpanReporting; access logs:
//! the whole list). Each entry applies to the side its `match.mode` names
//! (CLIENT: outbound and gateways, SERVER: inbound; unset: both).
//!
//! Without any Telemetry tracing, MeshConfig decides: `defaultProviders`,
//! then `enableTracing` with `defaultConfig.tracing` (its Zipkin address,
//! Istio's default `zipkin.istio-system:9411`). Without any Telemetry access
//! logging: `defaultProviders.accessLogging`, then `accessLogFile`.

use api::Object;
use api::telemetry::{CustomTag, IstioMetric, TagOperation, Telemetry, WorkloadMode};
use wire::pb;

use crate::compile::ProxyConfig;
use crate::mesh::Mesh;
use crate::mesh_config::{AccessLogEncoding, ExtensionProvider, MeshConfig};
use crate::registry::Workload;

/// Istio's sampling when nothing sets one (PILOT_TRACE_SAMPLING).
const DEFAULT_SAMPLING: f64 = 1.0;
/// Istio's legacy tracing default.
const DEFAULT_ZIPKIN: &str = "zipkin.istio-system:9411";
/// The built-in access log provider.
pub const ENVOY_PROVIDER: &str = "envoy";
/// The built-in metrics provider.
pub const PROMETHEUS_PROVIDER: &str = "prometheus";

/// Whether the metrics provider `name` is a Prometheus one: the built-in
/// `prometheus`, or an `extensionProviders` entry of that kind whatever its
/// name (Istio resolves a Telemetry's provider by name, then acts on its kind).
pub fn is_prometheus(config: &MeshConfig, name: &str) -> bool {
    name == PROMETHEUS_PROVIDER
        || config
            .extension_providers
            .iter()
            .any(|p| p.name == name && p.prometheus.is_some())
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    Server,
    Client,
}

/// Sets `tracing` and `access_logs` on every listener of the proxy.
pub fn apply(mesh: &Mesh, node: &pb::Node, config: &mut ProxyConfig) {
    let workload = mesh.registry.workload(&node.pod_name, &node.namespace);
    let levels = levels(mesh, &node.namespace, workload);
    let server = (
        tracing_policy(mesh, &levels, Side::Server),
        access_logs(mesh, &levels, Side::Server),
        metrics_policy(&mesh.config, &levels, Side::Server),
    );
    let client = (
        tracing_policy(mesh, &levels, Side::Client),
        access_logs(mesh, &levels, Side::Client),
        metrics_policy(&mesh.config, &levels, Side::Client),
    );
    for l in &mut config.listeners {
        let (tracing, logs, metrics) = match pb::Direction::try_from(l.direction) {
            Ok(pb::Direction::Inbound) => &server,
            _ => &client,
        };
        l.tracing.clone_from(tracing);
        l.access_logs.clone_from(logs);
        l.metrics.clone_from(metrics);
    }
}

/// The applicable Telemetry resources, least specific first: mesh,
/// namespace, workload (each in namespace/name order).
fn levels<'a>(mesh: &'a Mesh, ns: &str, w: Option<&Workload>) -> Vec<&'a Telemetry> {
    applicable(mesh, ns, w)
        .into_iter()
        .map(|t| &t.spec)
        .collect()
}

/// The Telemetry resources of [`levels`], as resources (`trellis describe`).
pub(crate) fn applicable<'a>(
    mesh: &'a Mesh,
    ns: &str,
    w: Option<&Workload>,
) -> Vec<&'a Object<Telemetry>> {
    let root = mesh.config.root_namespace.as_str();
    let ns_of = |t: &Object<Telemetry>| {
        t.metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into())
    };
    let selects = |t: &Object<Telemetry>| {
        t.spec.selector.is_some() || t.spec.target_ref.is_some() || !t.spec.target_refs.is_empty()
    };
    let mut out = Vec::new();
    out.extend(
        mesh.telemetries
            .iter()
            .filter(|t| ns_of(t) == root && !selects(t)),
    );
    if ns != root {
        out.extend(
            mesh.telemetries
                .iter()
                .filter(|t| ns_of(t) == ns && !selects(t)),
        );
    }
    if let Some(w) = w {
        out.extend(
            mesh.telemetries
                .iter()
                .filter(|t| selects(t))
                .filter(|t| ns_of(t) == ns)
                .filter(|t| {
                    crate::authz::attaches_to(
                        &ns_of(t),
                        t.spec.selector.as_ref(),
                        t.spec.target_ref.iter().chain(&t.spec.target_refs),
                        w,
                    )
                }),
        );
    }
    out
}

fn mode_matches(mode: Option<WorkloadMode>, side: Side) -> bool {
    match mode.unwrap_or(WorkloadMode::ClientAndServer) {
        WorkloadMode::ClientAndServer => true,
        WorkloadMode::Client => side == Side::Client,
        WorkloadMode::Server => side == Side::Server,
    }
}

fn tracing_policy(mesh: &Mesh, levels: &[&Telemetry], side: Side) -> Option<pb::TracingPolicy> {
    let cfg = &mesh.config;
    let legacy = &cfg.default_config.tracing;
    let mut provider: Option<String> = cfg.default_providers.tracing.first().cloned();
    let mut sampling = legacy.sampling.unwrap_or(DEFAULT_SAMPLING);
    let mut tags = legacy.custom_tags.clone();
    let mut no_reporting = false;
    let mut configured = false;
    for t in levels {
        for tr in t
            .tracing
            .iter()
            .filter(|tr| mode_matches(tr.r#match.as_ref().and_then(|m| m.mode), side))
        {
            configured = true;
            if let Some(p) = tr.providers.first() {
                provider = Some(p.name.clone());
            }
            if let Some(pct) = tr.random_sampling_percentage {
                sampling = pct;
            }
            if !tr.custom_tags.is_empty() {
                tags = tr.custom_tags.clone();
            }
            if let Some(d) = tr.disable_span_reporting {
                no_reporting = d;
            }
        }
    }
    let collector = match &provider {
        Some(name) => match cfg.extension_providers.iter().find(|p| &p.name == name) {
            Some(p) => trace_collector(mesh, p),
            None => {
                tracing::warn!(provider = %name, "tracing provider is not in meshConfig.extensionProviders; spans are not reported");
                None
            }
        },
        // The legacy path: tracing is on only with enableTracing.
        None if !configured && !cfg.enable_tracing => return None,
        None => {
            let address = legacy
                .zipkin
                .as_ref()
                .map_or(DEFAULT_ZIPKIN, |z| z.address.as_str());
            legacy_zipkin(mesh, address)
        }
    };
    Some(pb::TracingPolicy {
        sampling_percent: sampling.clamp(0.0, 100.0),
        collector: if no_reporting { None } else { collector },
        custom_tags: tags
            .iter()
            .filter_map(|(name, tag)| trace_tag(name, tag))
            .collect(),
        max_path_tag_length: legacy.max_path_tag_length.unwrap_or(0),
    })
}

fn trace_tag(name: &str, tag: &CustomTag) -> Option<pb::TraceTag> {
    use pb::trace_tag::Value;
    let (value, default) = if let Some(l) = &tag.literal {
        (Value::Literal(l.value.clone()), None)
    } else if let Some(e) = &tag.environment {
        (Value::Environment(e.name.clone()), e.default_value.clone())
    } else if let Some(h) = &tag.header {
        (
            Value::Header(h.name.to_ascii_lowercase()),
            h.default_value.clone(),
        )
    } else {
        return None;
    };
    Some(pb::TraceTag {
        name: name.to_string(),
        value: Some(value),
        default_value: default.unwrap_or_default(),
    })
}

/// A tracing extension provider as the proxy's collector.
fn trace_collector(mesh: &Mesh, p: &ExtensionProvider) -> Option<pb::TraceCollector> {
    if let Some(o) = &p.opentelemetry {
        let (protocol, path, timeout, headers) = match &o.http {
            Some(h) => (
                pb::TraceProtocol::OtlpHttp,
                if h.path.is_empty() {
                    "/v1/traces".to_string()
                } else {
                    h.path.clone()
                },
                h.timeout.as_ref(),
                h.headers
                    .iter()
                    .map(|h| (h.name.clone(), h.value.clone()))
                    .collect(),
            ),
            None => (
                pb::TraceProtocol::OtlpGrpc,
                String::new(),
                o.grpc.as_ref().and_then(|g| g.timeout.as_ref()),
                Default::default(),
            ),
        };
        return Some(pb::TraceCollector {
            name: p.name.clone(),
            protocol: protocol as i32,
            address: address(mesh, &o.service, o.port),
            path,
            headers,
            timeout_ms: timeout.map_or(0, |t| t.as_std().as_millis() as u64),
        });
    }
    if let Some(z) = &p.zipkin {
        return Some(pb::TraceCollector {
            name: p.name.clone(),
            protocol: pb::TraceProtocol::Zipkin as i32,
            address: address(mesh, &z.service, z.port),
            path: z.path.clone(),
            ..Default::default()
        });
    }
    tracing::warn!(provider = %p.name, kind = p.kind(), "extension provider is not a tracing provider Trellis supports (opentelemetry, zipkin); spans are not reported");
    None
}

/// `defaultConfig.tracing.zipkin.address`: reported only when the address
/// is a mesh service with an endpoint or an IP address — Istio's default
/// names a Zipkin most meshes do not run, and a proxy should not keep
/// failing to reach it.
fn legacy_zipkin(mesh: &Mesh, address: &str) -> Option<pb::TraceCollector> {
    let (host, port) = address.rsplit_once(':')?;
    let port: u32 = port.parse().ok()?;
    let resolved = self::address(mesh, host, port);
    let is_ip = host
        .trim_matches(['[', ']'])
        .parse::<std::net::IpAddr>()
        .is_ok();
    (is_ip || resolved != format!("{host}:{port}")).then(|| pb::TraceCollector {
        name: "zipkin".into(),
        protocol: pb::TraceProtocol::Zipkin as i32,
        address: resolved,
        ..Default::default()
    })
}

/// A provider's `service` and `port` as the proxy reaches them: a mesh
/// service's first endpoint (proxies resolve no mesh names themselves),
/// else the host as written (an address, or a name DNS resolves).
fn address(mesh: &Mesh, host: &str, port: u32) -> String {
    let root = mesh.config.root_namespace.as_str();
    let fqdn = mesh.fqdn(host, root);
    let endpoint = mesh.registry.service(&fqdn).and_then(|svc| {
        let sp = svc.ports.iter().find(|p| p.port == port)?;
        let empty = Default::default();
        mesh.registry
            .endpoints(svc, sp, &empty)
            .next()
            .map(|(w, target)| format!("{}:{target}", w.ip))
    });
    endpoint.unwrap_or_else(|| format!("{host}:{port}"))
}

fn access_logs(mesh: &Mesh, levels: &[&Telemetry], side: Side) -> Vec<pb::AccessLogPolicy> {
    let cfg = &mesh.config;
    // The most specific level with access logging for this side decides.
    let decided = levels.iter().rev().find_map(|t| {
        let entries: Vec<_> = t
            .access_logging
            .iter()
            .filter(|a| mode_matches(a.r#match.as_ref().and_then(|m| m.mode), side))
            .collect();
        (!entries.is_empty()).then_some(entries)
    });
    let Some(entries) = decided else {
        if !cfg.default_providers.access_logging.is_empty() {
            return cfg
                .default_providers
                .access_logging
                .iter()
                .filter_map(|name| access_log(cfg, name, ""))
                .collect();
        }
        if cfg.access_log_file.is_empty() {
            return Vec::new();
        }
        return access_log(cfg, ENVOY_PROVIDER, "").into_iter().collect();
    };
    let mut out: Vec<pb::AccessLogPolicy> = Vec::new();
    for a in entries {
        let names: Vec<String> = if a.providers.is_empty() {
            if cfg.default_providers.access_logging.is_empty() {
                vec![ENVOY_PROVIDER.to_string()]
            } else {
                cfg.default_providers.access_logging.clone()
            }
        } else {
            a.providers.iter().map(|p| p.name.clone()).collect()
        };
        let filter = a.filter.as_ref().map_or("", |f| f.expression.as_str());
        for name in names {
            out.retain(|p| p.name != name);
            if a.disabled != Some(true)
                && let Some(p) = access_log(cfg, &name, filter)
            {
                out.push(p);
            }
        }
    }
    out
}

/// The access log of provider `name`: the built-in `envoy` (MeshConfig's
/// file, encoding and format; `/dev/stdout` when no file is set) or an
/// `envoyFileAccessLog` extension provider.
fn access_log(cfg: &MeshConfig, name: &str, filter: &str) -> Option<pb::AccessLogPolicy> {
    let encoding = |e: AccessLogEncoding| {
        let pb = match e {
            AccessLogEncoding::Text => pb::AccessLogEncoding::Text,
            AccessLogEncoding::Json => pb::AccessLogEncoding::Json,
        };
        pb as i32
    };
    if let Some(p) = cfg.extension_providers.iter().find(|p| p.name == name) {
        let Some(f) = &p.envoy_file_access_log else {
            tracing::warn!(provider = %name, kind = p.kind(), "extension provider is not an access log provider Trellis supports (envoyFileAccessLog); nothing is logged for it");
            return None;
        };
        let (enc, format) = match &f.log_format {
            Some(lf) => match (&lf.text, &lf.labels) {
                (_, Some(labels)) => (
                    AccessLogEncoding::Json,
                    serde_json::to_string(labels).unwrap_or_default(),
                ),
                (Some(text), None) => (AccessLogEncoding::Text, text.clone()),
                (None, None) => (AccessLogEncoding::Text, String::new()),
            },
            None => (AccessLogEncoding::Text, String::new()),
        };
        return Some(pb::AccessLogPolicy {
            name: name.to_string(),
            path: if f.path.is_empty() {
                "/dev/stdout".into()
            } else {
                f.path.clone()
            },
            encoding: encoding(enc),
            format,
            filter: filter.to_string(),
        });
    }
    if name == ENVOY_PROVIDER {
        return Some(pb::AccessLogPolicy {
            name: name.to_string(),
            path: if cfg.access_log_file.is_empty() {
                "/dev/stdout".into()
            } else {
                cfg.access_log_file.clone()
            },
            encoding: encoding(cfg.access_log_encoding),
            format: cfg.access_log_format.clone(),
            filter: filter.to_string(),
        });
    }
    tracing::warn!(provider = %name, "access log provider is not in meshConfig.extensionProviders; nothing is logged for it");
    None
}

/// Istio's standard metric names (without `istio_`), as the proxy reports them.
pub fn metric_names(m: IstioMetric) -> &'static [&'static str] {
    match m {
        IstioMetric::AllMetrics => &[
            "requests_total",
            "request_duration_milliseconds",
            "request_bytes",
            "response_bytes",
            "tcp_connections_opened_total",
            "tcp_connections_closed_total",
            "tcp_sent_bytes_total",
            "tcp_received_bytes_total",
            "request_messages_total",
            "response_messages_total",
        ],
        IstioMetric::RequestCount => &["requests_total"],
        IstioMetric::RequestDuration => &["request_duration_milliseconds"],
        IstioMetric::RequestSize => &["request_bytes"],
        IstioMetric::ResponseSize => &["response_bytes"],
        IstioMetric::TcpOpenedConnections => &["tcp_connections_opened_total"],
        IstioMetric::TcpClosedConnections => &["tcp_connections_closed_total"],
        IstioMetric::TcpSentBytes => &["tcp_sent_bytes_total"],
        IstioMetric::TcpReceivedBytes => &["tcp_received_bytes_total"],
        IstioMetric::GrpcRequestMessages => &["request_messages_total"],
        IstioMetric::GrpcResponseMessages => &["response_messages_total"],
    }
}

/// The Telemetry API's metrics overrides for the Prometheus provider, mesh
/// first, each level's overrides applied over the one before (Istio's
/// inheritance: a later `disabled` or tag override of the same metric and
/// tag wins). `None`: no overrides, the standard metrics as they are.
fn metrics_policy(
    config: &MeshConfig,
    levels: &[&Telemetry],
    side: Side,
) -> Option<pb::MetricsPolicy> {
    use std::collections::{BTreeMap, BTreeSet};
    let mut disabled: BTreeSet<&'static str> = BTreeSet::new();
    let mut tags: BTreeMap<(&'static str, String), (bool, String)> = BTreeMap::new();
    let mut any = false;
    for t in levels {
        for m in t.metrics.iter().filter(|m| {
            m.providers.is_empty() || m.providers.iter().any(|p| is_prometheus(config, &p.name))
        }) {
            for o in &m.overrides {
                let mode = o.r#match.as_ref().and_then(|s| s.mode);
                if !mode_matches(mode, side) {
                    continue;
                }
                // A custom metric is not one Trellis reports: nothing to change.
                if o.r#match
                    .as_ref()
                    .is_some_and(|s| s.custom_metric.is_some())
                {
                    continue;
                }
                let names = metric_names(
                    o.r#match
                        .as_ref()
                        .and_then(|s| s.metric)
                        .unwrap_or(IstioMetric::AllMetrics),
                );
                any = true;
                for name in names {
                    match o.disabled {
                        Some(true) => {
                            disabled.insert(*name);
                        }
                        Some(false) => {
                            disabled.remove(*name);
                        }
                        None => {}
                    }
                    for (tag, to) in &o.tag_overrides {
                        let remove = to.operation == Some(TagOperation::Remove);
                        tags.insert(
                            (*name, tag.clone()),
                            (remove, to.value.clone().unwrap_or_default()),
                        );
                    }
                }
            }
        }
    }
    any.then(|| pb::MetricsPolicy {
        disabled: disabled.into_iter().map(str::to_string).collect(),
        tag_overrides: tags
            .into_iter()
            .map(|((metric, tag), (remove, value))| pb::MetricTagOverride {
                metric: metric.to_string(),
                tag,
                remove,
                value,
            })
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mesh_config::{OpenTelemetryProvider, ZipkinProvider};

    /// The client side (virtualOutbound) of a sidecar in `default`.
    fn client(config: MeshConfig, yaml: &str) -> pb::Listener {
        let resources = api::parse("t.yaml", yaml).expect("parses");
        let mesh = Mesh::build(&resources, config);
        let node = pb::Node {
            id: "a-1.default".into(),
            pod_name: "a-1".into(),
            namespace: "default".into(),
            ..Default::default()
        };
        let out = crate::compile(&mesh, &node);
        out.listeners
            .into_iter()
            .find(|l| l.name == "virtualOutbound")
            .expect("virtualOutbound")
    }

    fn providers() -> MeshConfig {
        MeshConfig {
            extension_providers: vec![
                ExtensionProvider {
                    name: "otel".into(),
                    opentelemetry: Some(OpenTelemetryProvider {
                        service: "10.0.0.9".into(),
                        port: 4317,
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                ExtensionProvider {
                    name: "zipkin".into(),
                    zipkin: Some(ZipkinProvider {
                        service: "zipkin.example".into(),
                        port: 9411,
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            ],
            ..MeshConfig::default()
        }
    }

    const MESH_DEFAULT: &str = "apiVersion: telemetry.istio.io/v1alpha1
kind: Telemetry
metadata: {name: mesh-default, namespace: istio-system}
spec:
  tracing:
  - randomSamplingPercentage: 100.0
    customTags:
      my-tag:
        literal:
          value: \"123\"
";

    #[test]
    fn legacy_tracing_defaults() {
        let l = client(MeshConfig::default(), "");
        let t = l.tracing.expect("enableTracing is on by default");
        assert_eq!(t.sampling_percent, 1.0);
        // Istio's default Zipkin address names no service this mesh has.
        assert!(t.collector.is_none());
        let off = MeshConfig {
            enable_tracing: false,
            ..MeshConfig::default()
        };
        assert!(client(off, "").tracing.is_none());
        assert!(l.access_logs.is_empty(), "access logs are off by default");
    }

    #[test]
    fn telemetry_tracing_overrides_mesh_then_namespace() {
        let mut cfg = providers();
        cfg.default_providers.tracing = vec!["otel".into()];
        let t = client(cfg.clone(), MESH_DEFAULT).tracing.expect("traced");
        assert_eq!(t.sampling_percent, 100.0);
        assert_eq!(t.custom_tags[0].name, "my-tag");
        let c = t.collector.expect("otel");
        assert_eq!(c.address, "10.0.0.9:4317");
        assert_eq!(c.protocol, pb::TraceProtocol::OtlpGrpc as i32);
        // The namespace's Telemetry picks another provider and keeps the mesh's sampling.
        let ns = format!(
            "{MESH_DEFAULT}---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {{name: ns, namespace: default}}
spec:
  tracing: [{{providers: [{{name: zipkin}}]}}]
"
        );
        let t = client(cfg.clone(), &ns).tracing.expect("traced");
        assert_eq!(t.sampling_percent, 100.0);
        let c = t.collector.expect("zipkin");
        assert_eq!(
            (c.protocol, c.address.as_str()),
            (pb::TraceProtocol::Zipkin as i32, "zipkin.example:9411")
        );
        // A server-only entry leaves the client side as the mesh has it.
        let server_only = "apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: ns, namespace: default}
spec:
  tracing: [{match: {mode: SERVER}, randomSamplingPercentage: 5}]
";
        let t = client(cfg, server_only).tracing.expect("traced");
        assert_eq!(t.sampling_percent, 1.0);
    }

    #[test]
    fn access_logs_from_mesh_config_and_telemetry() {
        let mesh_file = MeshConfig {
            access_log_file: "/dev/stdout".into(),
            access_log_encoding: AccessLogEncoding::Json,
            ..MeshConfig::default()
        };
        let logs = client(mesh_file.clone(), "").access_logs;
        assert_eq!(logs.len(), 1);
        assert_eq!(logs[0].encoding, pb::AccessLogEncoding::Json as i32);
        let off = "apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: mesh, namespace: istio-system}
spec:
  accessLogging: [{disabled: true}]
";
        assert!(client(mesh_file.clone(), off).access_logs.is_empty());
        let filtered = "apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: mesh, namespace: istio-system}
spec:
  accessLogging: [{providers: [{name: envoy}], filter: {expression: 'response.code >= 400'}}]
";
        let logs = client(MeshConfig::default(), filtered).access_logs;
        assert_eq!(logs.len(), 1, "Telemetry turns the built-in log on");
        assert_eq!(logs[0].path, "/dev/stdout");
        assert_eq!(logs[0].filter, "response.code >= 400");
    }

    #[test]
    fn metrics_overrides_inherit() {
        let yaml = "apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: mesh, namespace: istio-system}
spec:
  metrics:
  - providers: [{name: prometheus}]
    overrides:
    - match: {metric: REQUEST_COUNT, mode: CLIENT}
      tagOverrides: {response_code: {value: response.code}}
    - match: {metric: ALL_METRICS}
      disabled: true
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: ns, namespace: default}
spec:
  metrics:
  - overrides:
    - match: {metric: REQUEST_DURATION}
      disabled: false
";
        let m = client(MeshConfig::default(), yaml)
            .metrics
            .expect("overrides");
        assert!(
            !m.disabled
                .contains(&"request_duration_milliseconds".to_string())
        );
        assert!(m.disabled.contains(&"requests_total".to_string()));
        assert_eq!(m.tag_overrides.len(), 1);
        assert_eq!(m.tag_overrides[0].value, "response.code");
    }

    /// A Prometheus provider of any name is Prometheus (Istio resolves the
    /// name, then acts on the kind); a name that is no Prometheus provider
    /// leaves the metrics as they are.
    #[test]
    fn prometheus_providers_of_any_name() {
        let telemetry = |provider: &str| {
            format!(
                "apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {{name: mesh, namespace: istio-system}}
spec:
  metrics:
  - providers: [{{name: {provider}}}]
    overrides:
    - match: {{metric: REQUEST_COUNT}}
      disabled: true
"
            )
        };
        let mut cfg = providers();
        cfg.extension_providers.push(ExtensionProvider {
            name: "cluster-prometheus".into(),
            prometheus: Some(serde_json::json!({})),
            ..Default::default()
        });
        let m = client(cfg.clone(), &telemetry("cluster-prometheus"))
            .metrics
            .expect("overrides");
        assert_eq!(m.disabled, ["requests_total"]);
        // A tracing provider's name is not a metrics provider.
        assert!(client(cfg.clone(), &telemetry("zipkin")).metrics.is_none());
        let resources = api::parse("t.yaml", &telemetry("cluster-prometheus")).expect("parses");
        assert_eq!(
            crate::analyze::not_enforced_in(&resources[0], Some(&cfg)),
            None
        );
        let resources = api::parse("t.yaml", &telemetry("zipkin")).expect("parses");
        assert!(crate::analyze::not_enforced_in(&resources[0], Some(&cfg)).is_some());
    }
}
