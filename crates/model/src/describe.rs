//! What of the mesh's config applies to one pod, and why — `trellis
//! describe pod`, as `istioctl x describe pod`. Every answer comes from the
//! selection the compiler itself uses (the Services whose endpoints the
//! pod is, [`Mesh::destination_rule`], the sidecars' VirtualService of a
//! host, the compiled routes' clusters, [`mtls::inbound_mode_from`],
//! [`authz::applicable`], the Sidecar of a proxy, the Gateways that select
//! a gateway pod, the RequestAuthentication and Telemetry resources the
//! proxy is compiled with), so what is described is what the pod's proxy
//! and its clients are sent.
//!
//! The view is a client's in the pod's own namespace: which DestinationRule
//! and VirtualService apply depends on who calls (Istio looks them up from
//! the client's namespace), and that is the one `istioctl` shows too.

use std::collections::BTreeMap;

use api::Object;
use api::networking::{ClientTlsMode, DestinationRule, TrafficPolicy};
use serde::{Deserialize, Serialize};
use wire::pb;

use crate::mesh::Mesh;
use crate::mtls::{self, ModeLevel};
use crate::registry::{Service, Workload, WorkloadKind};
use crate::scope::Scope;
use crate::{authz, compile, protocol, routes};

mod gateways;
mod request_policies;

pub use gateways::{BoundView, GatewayView, ServerView};
pub use request_policies::{RequestAuthenticationView, TelemetryView};

/// One pod, as the mesh sees it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodDescription {
    pub pod: String,
    pub namespace: String,
    /// Its Deployment (Istio's canonical workload name).
    pub workload: String,
    pub labels: BTreeMap<String, String>,
    pub ip: String,
    pub service_account: String,
    /// Whether it carries Istio's injection status annotation.
    pub sidecar_injected: bool,
    /// Its container ports.
    pub ports: Vec<u32>,
    pub services: Vec<ServiceView>,
    /// The inbound mTLS mode of each port it serves (port 0: the workload's
    /// own mode, for captured ports without a listener).
    pub mtls: Vec<PortMtls>,
    pub authorization_policies: Vec<PolicyView>,
    /// The Sidecar resource that scopes its proxy, if any.
    pub sidecar: Option<Applied>,
    /// For a gateway pod: the Gateways whose selector picks it.
    #[serde(default)]
    pub gateways: Vec<GatewayView>,
    #[serde(default)]
    pub request_authentications: Vec<RequestAuthenticationView>,
    /// Least specific first: mesh, namespace, workload.
    #[serde(default)]
    pub telemetries: Vec<TelemetryView>,
}

/// A resource that applies, and why.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Applied {
    /// `namespace/name`.
    pub name: String,
    pub why: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceView {
    pub hostname: String,
    pub why: String,
    /// Whether the pod is among the service's endpoints (an EndpointSlice
    /// may list it as not ready, or not at all: then it gets none of the
    /// service's traffic).
    pub endpoint: bool,
    pub ports: Vec<ServicePortView>,
    pub destination_rule: Option<RuleView>,
    pub virtual_service: Option<VirtualServiceView>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServicePortView {
    pub port: u32,
    pub name: Option<String>,
    /// Istio's protocol name (`HTTP`, `TCP`, … `UNKNOWN`: sniffed).
    pub protocol: String,
    /// The pod port it reaches; `None` when its targetPort names no port of the pod.
    pub target_port: Option<u32>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RuleView {
    pub rule: Applied,
    /// The subsets whose labels the pod carries.
    pub matching_subsets: Vec<String>,
    pub other_subsets: Vec<String>,
    /// Which traffic policy settings apply to this pod's subset (or the
    /// rule's top level): `loadBalancer`, `connectionPool`, …
    pub policies: Vec<String>,
    /// The upstream TLS clients use to reach the pod, per service port.
    pub tls: Vec<(u32, String)>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VirtualServiceView {
    pub virtual_service: Applied,
    pub routes: Vec<RouteView>,
}

/// One compiled route of the VirtualService, on one port.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteView {
    pub name: String,
    pub port: u32,
    /// Its matches, each as `uri prefix /api, header end-user exact jason`;
    /// empty: every request (or connection).
    pub matches: Vec<String>,
    pub destinations: Vec<DestinationView>,
    /// The share of this route's traffic the pod is among the backends of, 0–100.
    pub percent_to_pod: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DestinationView {
    pub host: String,
    pub subset: String,
    pub port: u32,
    pub percent: f64,
    /// Whether this destination's endpoints include the pod.
    pub to_pod: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PortMtls {
    pub port: u32,
    /// `STRICT`, `PERMISSIVE` or `DISABLE`.
    pub mode: String,
    /// The level and PeerAuthentication that decided it.
    pub why: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyView {
    pub policy: Applied,
    /// `ALLOW`, `DENY`, `AUDIT` or `CUSTOM`.
    pub action: String,
    pub rules: usize,
    /// `istio.io/dry-run`: evaluated and logged, not enforced.
    pub dry_run: bool,
}

/// Why a pod cannot be described.
#[derive(Debug, thiserror::Error)]
pub enum DescribeError {
    #[error(
        "pod {namespace}/{pod} is not in the mesh's registry (no such pod, or it has no IP yet)"
    )]
    NotFound { pod: String, namespace: String },
}

/// Describes the pod `name` of `namespace`.
pub fn pod(mesh: &Mesh, name: &str, namespace: &str) -> Result<PodDescription, DescribeError> {
    let w = mesh
        .registry
        .workloads
        .iter()
        .find(|w| w.kind == WorkloadKind::Pod && w.name == name && w.namespace == namespace)
        .ok_or_else(|| DescribeError::NotFound {
            pod: name.into(),
            namespace: namespace.into(),
        })?;
    let node = pb::Node {
        id: format!("{name}.{namespace}"),
        pod_name: name.into(),
        namespace: namespace.into(),
        pod_ip: w.ip.clone(),
        labels: (*w.labels).clone().into_iter().collect(),
        service_account: w.service_account.clone(),
        kind: if w.gateway {
            pb::ProxyKind::Gateway
        } else {
            pb::ProxyKind::Sidecar
        } as i32,
        workload_name: w.workload.clone(),
        // What the pod may call, whatever it asked for on demand.
        ..Default::default()
    };
    let scope = Scope::for_node(mesh, &node);
    let services: Vec<ServiceView> = mesh
        .registry
        .services_of(w)
        .map(|svc| service(mesh, &scope, svc, w))
        .collect();
    // The ports its inbound listeners bind, as the compiler picks them.
    let mut served: Vec<u32> = w.ports.iter().map(|p| p.port).collect();
    served.extend(
        services
            .iter()
            .flat_map(|s| &s.ports)
            .filter_map(|p| p.target_port),
    );
    served.sort_unstable();
    served.dedup();
    let mtls = std::iter::once(0)
        .chain(served)
        .map(|port| port_mtls(mesh, w, port))
        .collect();
    Ok(PodDescription {
        pod: name.into(),
        namespace: namespace.into(),
        workload: w.workload.clone(),
        labels: (*w.labels).clone(),
        ip: w.ip.clone(),
        service_account: w.service_account.clone(),
        sidecar_injected: w.has_sidecar,
        ports: w.ports.iter().map(|p| p.port).collect(),
        services,
        mtls,
        authorization_policies: authz::applicable(mesh, w)
            .map(|p| policy(mesh, p, w))
            .collect(),
        gateways: gateways::gateways(mesh, &node, w),
        request_authentications: request_policies::request_authentications(mesh, w),
        telemetries: request_policies::telemetries(mesh, w),
        sidecar: (node.kind() == pb::ProxyKind::Sidecar)
            .then(|| crate::scope::applicable_sidecar(mesh, &node))
            .flatten()
            .map(|s| {
                let ns = namespace_of(&s.metadata);
                let why = match &s.spec.workload_selector {
                    Some(sel) => format!(
                        "its workloadSelector {} matches the pod's labels",
                        labels(&sel.labels)
                    ),
                    None if ns == namespace => {
                        "the namespace's Sidecar without workloadSelector".into()
                    }
                    None => {
                        format!("the mesh-wide Sidecar (root namespace {ns}, no workloadSelector)")
                    }
                };
                Applied {
                    name: format!("{ns}/{}", s.metadata.name),
                    why,
                }
            }),
    })
}

fn service(mesh: &Mesh, scope: &Scope, svc: &Service, w: &Workload) -> ServiceView {
    let ports: Vec<ServicePortView> = svc
        .ports
        .iter()
        .map(|p| ServicePortView {
            port: p.port,
            name: p.name.clone(),
            protocol: protocol_name(p.protocol).into(),
            target_port: mesh
                .registry
                .endpoints(svc, p, &BTreeMap::new())
                .find(|(e, _)| e.name == w.name && e.namespace == w.namespace)
                .map(|(_, port)| port),
        })
        .collect();
    let rule = mesh.destination_rule(&svc.hostname, &w.namespace);
    let subset_of_pod = rule.and_then(|dr| {
        dr.spec
            .subsets
            .iter()
            .find(|s| subset_matches(&s.labels, w))
    });
    let destination_rule = rule.map(|dr| {
        let (matching, other): (Vec<_>, Vec<_>) = dr
            .spec
            .subsets
            .iter()
            .partition(|s| subset_matches(&s.labels, w));
        let subset_policy = subset_of_pod.and_then(|s| s.traffic_policy.as_ref());
        let mut policies = policy_fields(dr.spec.traffic_policy.as_ref());
        for p in policy_fields(subset_policy) {
            if !policies.contains(&p) {
                policies.push(p);
            }
        }
        let tls = svc
            .ports
            .iter()
            .map(|p| {
                let tls = mtls::upstream_tls(
                    mesh,
                    dr.spec.traffic_policy.as_ref(),
                    subset_policy,
                    p.port,
                );
                (p.port, tls_name(tls.as_ref()))
            })
            .collect();
        let ns = namespace_of(&dr.metadata);
        RuleView {
            rule: Applied {
                name: format!("{ns}/{}", dr.metadata.name),
                why: rule_why(mesh, dr, &svc.hostname, &w.namespace),
            },
            matching_subsets: matching.iter().map(|s| s.name.clone()).collect(),
            other_subsets: other.iter().map(|s| s.name.clone()).collect(),
            policies,
            tls,
        }
    });
    let virtual_service = compile::mesh_virtual_service(mesh, &svc.hostname, scope).map(|vs| {
        let ns = namespace_of(&vs.metadata);
        let host = vs
            .spec
            .hosts
            .iter()
            .find(|h| crate::host::matches(&mesh.fqdn(h, ns), &svc.hostname))
            .cloned()
            .unwrap_or_default();
        let mut routes = Vec::new();
        for p in &svc.ports {
            if protocol::is_http(p.protocol) {
                for r in routes::http_routes(mesh, vs, p.port, "mesh") {
                    let clusters = match &r.action {
                        Some(pb::route::Action::Forward(f)) => f.clusters.clone(),
                        _ => Vec::new(),
                    };
                    routes.push(route_view(
                        mesh,
                        &w.namespace,
                        w,
                        r.name.clone(),
                        p.port,
                        r.matches.iter().map(match_text).collect(),
                        &clusters,
                    ));
                }
            } else {
                let clusters = compile::tcp_route(mesh, scope, svc, p.port);
                if !clusters.is_empty() {
                    routes.push(route_view(
                        mesh,
                        &w.namespace,
                        w,
                        "tcp".into(),
                        p.port,
                        Vec::new(),
                        &clusters,
                    ));
                }
            }
        }
        VirtualServiceView {
            virtual_service: Applied {
                name: format!("{ns}/{}", vs.metadata.name),
                why: format!(
                    "its host {host:?} is the most specific covering {} for sidecars (gateways: {})",
                    svc.hostname,
                    if vs.spec.gateways.is_empty() {
                        "none, so mesh".to_string()
                    } else {
                        vs.spec.gateways.join(", ")
                    }
                ),
            },
            routes,
        }
    });
    let endpoint = mesh
        .registry
        .backends(&svc.hostname)
        .any(|b| b.name == w.name && b.namespace == w.namespace);
    let mut why = format!(
        "its selector {} matches the pod's labels",
        labels(&svc.selector)
    );
    if !endpoint {
        why.push_str(
            ", but its EndpointSlices do not list the pod as a ready endpoint: it gets none of the service's traffic",
        );
    }
    ServiceView {
        hostname: svc.hostname.clone(),
        why,
        endpoint,
        ports,
        destination_rule,
        virtual_service,
    }
}

/// One route's destinations, and which of them the pod is behind.
fn route_view(
    mesh: &Mesh,
    client_ns: &str,
    w: &Workload,
    name: String,
    port: u32,
    matches: Vec<String>,
    clusters: &[pb::WeightedCluster],
) -> RouteView {
    let total: u64 = clusters.iter().map(|c| u64::from(c.weight)).sum();
    let destinations: Vec<DestinationView> = clusters
        .iter()
        .filter_map(|c| {
            // outbound|<port>|<subset>|<host>
            let mut parts = c.cluster.splitn(4, '|');
            let (_, port, subset, host) =
                (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
            let port: u32 = port.parse().ok()?;
            let percent = if total == 0 {
                0.0
            } else {
                100.0 * f64::from(c.weight) / total as f64
            };
            Some(DestinationView {
                to_pod: reaches(mesh, client_ns, w, host, subset, port),
                host: host.into(),
                subset: subset.into(),
                port,
                percent,
            })
        })
        .collect();
    let percent_to_pod = destinations
        .iter()
        .filter(|d| d.to_pod)
        .map(|d| d.percent)
        // Not `sum`: an empty f64 sum is -0.
        .fold(0.0, |a, b| a + b);
    RouteView {
        name,
        port,
        matches,
        destinations,
        percent_to_pod,
    }
}

/// Whether the cluster of `host`, `subset`, `port` has the pod among its
/// endpoints: the service's, restricted to the subset's labels as the
/// compiler restricts them.
fn reaches(
    mesh: &Mesh,
    client_ns: &str,
    w: &Workload,
    host: &str,
    subset: &str,
    port: u32,
) -> bool {
    let Some(svc) = mesh.registry.service(host) else {
        return false;
    };
    let Some(sp) = svc.port(port) else {
        return false;
    };
    let labels = if subset.is_empty() {
        BTreeMap::new()
    } else {
        let Some(s) = mesh
            .destination_rule(host, client_ns)
            .and_then(|dr| dr.spec.subsets.iter().find(|s| s.name == subset))
        else {
            // A subset no rule defines has no endpoints at all.
            return false;
        };
        s.labels.clone()
    };
    mesh.registry
        .endpoints(svc, sp, &labels)
        .any(|(e, _)| e.name == w.name && e.namespace == w.namespace)
}

fn port_mtls(mesh: &Mesh, w: &Workload, port: u32) -> PortMtls {
    let (mode, from) = mtls::inbound_mode_from(mesh, w, port);
    let mode = match mode {
        pb::MtlsMode::Strict => "STRICT",
        pb::MtlsMode::Permissive => "PERMISSIVE",
        pb::MtlsMode::Disable => "DISABLE",
    };
    let why = match from {
        None => "no PeerAuthentication sets a mode: Istio's default".into(),
        Some((level, pa)) => {
            let name = format!("{}/{}", namespace_of(&pa.metadata), pa.metadata.name);
            match level {
                ModeLevel::Port => format!("PeerAuthentication {name}: portLevelMtls {port}"),
                ModeLevel::Workload => {
                    format!("PeerAuthentication {name}: its selector matches the pod (workload)")
                }
                ModeLevel::Namespace => {
                    format!("PeerAuthentication {name}: the namespace's, no selector")
                }
                ModeLevel::Mesh => {
                    format!("PeerAuthentication {name}: mesh-wide (root namespace)")
                }
            }
        }
    };
    PortMtls {
        port,
        mode: mode.into(),
        why,
    }
}

fn policy(mesh: &Mesh, p: &Object<api::security::AuthorizationPolicy>, w: &Workload) -> PolicyView {
    let ns = namespace_of(&p.metadata);
    let refs: Vec<String> = p
        .spec
        .target_ref
        .iter()
        .chain(&p.spec.target_refs)
        .map(|r| format!("{} {}", r.kind, r.name))
        .collect();
    let why = attachment_why(mesh, ns, p.spec.selector.as_ref(), &refs, w);
    let dry_run = authz::compile_policy(p, false, &[]).dry_run;
    PolicyView {
        policy: Applied {
            name: format!("{ns}/{}", p.metadata.name),
            why,
        },
        action: p
            .spec
            .action
            .unwrap_or(api::security::Action::Allow)
            .as_str()
            .into(),
        rules: p.spec.rules.len(),
        dry_run,
    }
}

/// Why a policy of namespace `ns` (AuthorizationPolicy,
/// RequestAuthentication, Telemetry) attaches to the pod: its targetRefs
/// (`Kind name`), its selector, or its namespace.
fn attachment_why(
    mesh: &Mesh,
    ns: &str,
    selector: Option<&api::selector::WorkloadSelector>,
    refs: &[String],
    w: &Workload,
) -> String {
    let root = ns == mesh.config.root_namespace;
    match (selector, refs.is_empty()) {
        (_, false) => format!(
            "its targetRef {} is the pod's Gateway (label gateway.networking.k8s.io/gateway-name)",
            refs.join(", ")
        ),
        (Some(sel), true) if !sel.match_labels.is_empty() => format!(
            "its selector {} matches the pod's labels{}",
            labels(&sel.match_labels),
            if root {
                " (root namespace: in every namespace)"
            } else {
                ""
            }
        ),
        _ if root => "mesh-wide: root namespace, no selector".into(),
        _ => format!("no selector: every workload of namespace {}", w.namespace),
    }
}

fn rule_why(mesh: &Mesh, dr: &Object<DestinationRule>, hostname: &str, client_ns: &str) -> String {
    let ns = namespace_of(&dr.metadata);
    let looked_up = if ns == client_ns {
        "the client's (pod's) namespace"
    } else if mesh
        .registry
        .service(hostname)
        .is_some_and(|s| s.namespace == ns)
    {
        "the service's namespace"
    } else {
        "the root namespace"
    };
    format!(
        "its host {:?} covers {hostname}; found in {looked_up}, the most specific there",
        dr.spec.host
    )
}

fn subset_matches(subset: &BTreeMap<String, String>, w: &Workload) -> bool {
    subset.iter().all(|(k, v)| w.labels.get(k) == Some(v))
}

fn policy_fields(p: Option<&TrafficPolicy>) -> Vec<String> {
    let Some(p) = p else { return Vec::new() };
    [
        (p.load_balancer.is_some(), "loadBalancer"),
        (p.connection_pool.is_some(), "connectionPool"),
        (p.outlier_detection.is_some(), "outlierDetection"),
        (p.tls.is_some(), "tls"),
        (!p.port_level_settings.is_empty(), "portLevelSettings"),
        (p.tunnel.is_some(), "tunnel"),
    ]
    .into_iter()
    .filter(|(set, _)| *set)
    .map(|(_, name)| name.to_string())
    .collect()
}

fn tls_name(tls: Option<&pb::UpstreamTls>) -> String {
    let Some(tls) = tls else {
        return "auto mTLS (ISTIO_MUTUAL to endpoints with a sidecar, else plaintext)".into();
    };
    let mode = match tls.mode() {
        pb::UpstreamTlsMode::Auto => return tls_name(None),
        pb::UpstreamTlsMode::Disable => ClientTlsMode::Disable,
        pb::UpstreamTlsMode::IstioMutual => ClientTlsMode::IstioMutual,
        pb::UpstreamTlsMode::Simple => ClientTlsMode::Simple,
        pb::UpstreamTlsMode::Mutual => ClientTlsMode::Mutual,
    };
    mode.as_str().into()
}

fn protocol_name(p: pb::Protocol) -> &'static str {
    match p {
        pb::Protocol::Unspecified => "UNKNOWN",
        pb::Protocol::Http => "HTTP",
        pb::Protocol::Http2 => "HTTP2",
        pb::Protocol::Grpc => "GRPC",
        pb::Protocol::Tcp => "TCP",
        pb::Protocol::Tls => "TLS",
        pb::Protocol::Https => "HTTPS",
    }
}

/// A compiled match as one line: `uri prefix /api, header end-user exact jason`.
fn match_text(m: &pb::RouteMatch) -> String {
    fn s(m: &pb::StringMatch) -> String {
        match &m.kind {
            Some(pb::string_match::Kind::Exact(v)) => format!("exact {v}"),
            Some(pb::string_match::Kind::Prefix(v)) => format!("prefix {v}"),
            Some(pb::string_match::Kind::Regex(v)) => format!("regex {v}"),
            Some(pb::string_match::Kind::Present(_)) | None => "present".into(),
        }
    }
    let mut parts = Vec::new();
    if let Some(p) = &m.path {
        parts.push(format!("uri {}", s(p)));
    }
    if let Some(p) = &m.method {
        parts.push(format!("method {}", s(p)));
    }
    if let Some(p) = &m.authority {
        parts.push(format!("authority {}", s(p)));
    }
    if let Some(p) = &m.scheme {
        parts.push(format!("scheme {}", s(p)));
    }
    let sorted = |h: &BTreeMap<String, pb::StringMatch>| {
        h.iter()
            .map(|(k, m)| format!("{k} {}", s(m)))
            .collect::<Vec<_>>()
    };
    parts.extend(
        sorted(&m.headers)
            .into_iter()
            .map(|h| format!("header {h}")),
    );
    parts.extend(
        sorted(&m.query_params)
            .into_iter()
            .map(|q| format!("query {q}")),
    );
    parts.extend(
        sorted(&m.without_headers)
            .into_iter()
            .map(|h| format!("without header {h}")),
    );
    parts.extend(
        m.without_headers_present
            .iter()
            .map(|h| format!("without header {h}")),
    );
    if m.port != 0 {
        parts.push(format!("port {}", m.port));
    }
    if parts.is_empty() {
        "any request".into()
    } else {
        parts.join(", ")
    }
}

fn labels(l: &BTreeMap<String, String>) -> String {
    let pairs: Vec<String> = l.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("{{{}}}", pairs.join(","))
}

fn namespace_of(m: &api::meta::ObjectMeta) -> &str {
    m.namespace.as_deref().unwrap_or("default")
}

#[cfg(test)]
mod tests;
