//! Resources Trellis reads but does not act on, reported for what they are
//! rather than silently dropped.
//!
//! TRL0001 (Warning) is for kinds that would change the mesh's behaviour
//! under Istio (EnvoyFilter, WasmPlugin, the Gateway API, ...): the user
//! expects an effect they will not get, so the message says what to use
//! instead. TRL0004 (Info) is for kinds that configure something else
//! (istioctl's installer, Prometheus) or that nobody knows. Plain
//! Kubernetes kinds the mesh does not need (ConfigMap, Secret, ...) are
//! normal in a manifest directory and get no message.
//!
//! TRL0005 (Warning) is for what Trellis accepts, stores and serves back
//! but does not enforce yet (Telemetry metrics providers other than
//! Prometheus; a DestinationRule's HTTP/2 keepalive; VirtualService matches on destination
//! subnets, or on an HTTP request's source): worse than a refusal if
//! unnoticed, so `apply` and `up` print the same text as a warning.

use api::Resource;

use crate::mesh_config::MeshConfig;

use super::messages::{self as m, MessageType};
use super::{Message, context::Context, origin};

pub fn analyze(ctx: &Context<'_>, out: &mut Vec<Message>) {
    for r in ctx.resources {
        if let Some(text) = not_enforced_in(r, Some(ctx.config)) {
            out.push(Message::new(m::NOT_ENFORCED, origin(r), text));
            continue;
        }
        let Resource::Unsupported {
            api_version,
            kind,
            reason,
            name,
            namespace,
            spec,
        } = r
        else {
            continue;
        };
        let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
        let Some((ty, advice)) = classify(group, kind) else {
            continue;
        };
        // The EnvoyFilter patterns Trellis translates (local and global
        // rate limiting) are served; any other is ignored whole, and says
        // why, naming the field.
        let mut reason = reason.clone();
        if (group, kind.as_str()) == ("networking.istio.io", "EnvoyFilter") {
            let ns = namespace.as_deref().unwrap_or("default");
            match crate::rate_limit::recognise(ns, name, spec) {
                Ok(f) => {
                    if let Some(text) = global_limit_inert(ctx, &f) {
                        out.push(Message::new(m::NOT_ENFORCED, origin(r), text));
                    }
                    continue;
                }
                Err(why) => {
                    reason = format!(
                        "{reason}; it is not one of the rate limiting patterns Trellis translates ({why})"
                    )
                }
            }
        }
        let text = match advice {
            Some(a) => format!("{kind} is not supported by Trellis and is ignored: {reason}. {a}"),
            None => format!("{kind} is ignored by Trellis: {reason}."),
        };
        out.push(Message::new(ty, origin(r), text));
    }
}

/// A global rate limit filter that limits nothing: no VIRTUAL_HOST patch
/// gives the routes `rate_limits` actions (Envoy then never calls the
/// service), or its service's cluster cannot be resolved (every call
/// fails, and `failure_mode_deny` decides).
fn global_limit_inert(ctx: &Context<'_>, f: &crate::rate_limit::RateLimitFilter) -> Option<String> {
    use crate::rate_limit::PatchKind;
    let cluster_name = f.patches.iter().find_map(|p| match &p.kind {
        PatchKind::Global { cluster_name, .. } => Some(cluster_name),
        _ => None,
    })?;
    let filters: Vec<_> = ctx.mesh.rate_limit_filters.iter().collect();
    let actions = filters
        .iter()
        .flat_map(|f| &f.patches)
        .any(|p| matches!(&p.kind, PatchKind::Route { actions, .. } if !actions.is_empty()));
    let mut problems = Vec::new();
    if !actions {
        problems.push(
            "no EnvoyFilter gives the routes rate_limits actions (a VIRTUAL_HOST MERGE patch), so no request has a descriptor and none is limited, as in Envoy".to_string(),
        );
    }
    if let Err(e) = crate::rate_limit::service_cluster(&ctx.mesh, &filters, cluster_name) {
        problems.push(e);
    }
    (!problems.is_empty()).then(|| {
        format!(
            "the global rate limit filter is translated but limits nothing: {}",
            problems.join("; ")
        )
    })
}

/// The message type for a kind and, for unsupported ones, what to use instead.
fn classify(group: &str, kind: &str) -> Option<(MessageType, Option<&'static str>)> {
    Some(match (group, kind) {
        ("networking.istio.io", "EnvoyFilter") => {
            (m::UNSUPPORTED_RESOURCE, Some(ENVOY_FILTER_ADVICE))
        }
        ("extensions.istio.io", _) => (
            m::UNSUPPORTED_RESOURCE,
            Some(
                "Use instead: AuthorizationPolicy with action CUSTOM for external authorization, Telemetry for metrics and access logs, VirtualService headers for request and response header changes.",
            ),
        ),
        ("networking.istio.io", "ProxyConfig") => (
            m::UNSUPPORTED_RESOURCE,
            Some(
                "Use instead: meshConfig.defaultConfig in mesh.yaml (or the `istio` ConfigMap) for proxy settings.",
            ),
        ),
        ("gateway.networking.k8s.io" | "gateway.networking.x-k8s.io", _) => (
            m::UNSUPPORTED_RESOURCE,
            Some("Use instead: a networking.istio.io Gateway with VirtualServices bound to it."),
        ),
        ("install.istio.io", _) | ("monitoring.coreos.com", _) => (m::IGNORED_RESOURCE, None),
        (g, _) if g.ends_with(".istio.io") => (m::UNSUPPORTED_RESOURCE, None),
        // Core and well-known Kubernetes groups: ordinary manifest content.
        (
            ""
            | "apps"
            | "batch"
            | "autoscaling"
            | "policy"
            | "networking.k8s.io"
            | "rbac.authorization.k8s.io"
            | "apiextensions.k8s.io"
            | "admissionregistration.k8s.io"
            | "storage.k8s.io"
            | "scheduling.k8s.io"
            | "coordination.k8s.io"
            | "discovery.k8s.io",
            _,
        ) => return None,
        _ => (m::IGNORED_RESOURCE, None),
    })
}

/// EnvoyFilters are written for one of a few purposes; each has a Trellis
/// resource (or, for rate limiting, no equivalent yet).
const ENVOY_FILTER_ADVICE: &str = "Use instead: Telemetry for access logs, metrics and tracing; \
AuthorizationPolicy with action CUSTOM for external authorization; VirtualService features \
(headers, retries, timeouts, fault injection, mirroring, corsPolicy) for request handling; \
DestinationRule connectionPool and outlierDetection for circuit breaking. For rate limiting, \
Istio's documented EnvoyFilter patterns are translated: envoy.filters.http.local_ratelimit with \
a token_bucket, and envoy.filters.http.ratelimit calling a rate limit service with the \
route's rate_limits actions.";

/// What `r` asks for that Trellis accepts but does not enforce, said plainly;
/// `None` when everything in it takes effect. Telemetry's tracing, access
/// logging and metrics overrides are enforced, and so in effect is a metrics
/// `reportingInterval` (Istio's periodic report of long-lived TCP
/// connections: Trellis's TCP counters move as bytes pass, so every scrape
/// is current); metrics providers other than Prometheus are not.
/// Without the mesh config only the built-in `prometheus` provider is
/// known to be one (see [`not_enforced_in`]).
pub fn not_enforced(r: &Resource) -> Option<String> {
    not_enforced_in(r, None)
}

/// [`not_enforced`], with the mesh config whose `extensionProviders` say
/// which providers are Prometheus ones, whatever their names.
pub fn not_enforced_in(r: &Resource, config: Option<&MeshConfig>) -> Option<String> {
    let prometheus = |name: &str| match config {
        Some(config) => crate::telemetry::is_prometheus(config, name),
        None => name == crate::telemetry::PROMETHEUS_PROVIDER,
    };
    match r {
        Resource::Telemetry(t) => {
            let ignored: Vec<&str> = t
                .spec
                .metrics
                .iter()
                .filter(|m| m.providers.iter().any(|p| !prometheus(&p.name)))
                .map(|_| "metrics providers other than prometheus")
                .collect();
            if ignored.is_empty() {
                return None;
            }
            let mut ignored = ignored;
            ignored.dedup();
            Some(format!(
                "Telemetry {} not enforced yet: every proxy serves Istio's standard metrics \
                 to Prometheus whatever these say (tracing, accessLogging and metrics overrides do apply).",
                ignored.join(", ")
            ))
        }
        Resource::DestinationRule(dr) => {
            let spec = &dr.spec;
            let policies = spec.traffic_policy.iter().chain(
                spec.subsets
                    .iter()
                    .filter_map(|s| s.traffic_policy.as_ref()),
            );
            let pools = policies.flat_map(|p| {
                p.connection_pool.iter().chain(
                    p.port_level_settings
                        .iter()
                        .filter_map(|l| l.connection_pool.as_ref()),
                )
            });
            let keepalive = pools
                .filter_map(|pool| pool.http.as_ref())
                .any(|http| http.http2_keep_alive.is_some());
            keepalive.then(|| {
                "connectionPool.http.http2KeepAlive has no effect: trellis-proxy sends no HTTP/2 \
                 keepalive PINGs to upstreams yet; idle connections are closed by idleTimeout only."
                    .to_string()
            })
        }
        Resource::VirtualService(vs) => virtual_service_not_enforced(&vs.spec),
        _ => None,
    }
}

/// The match fields of a VirtualService that Trellis does not enforce:
/// `tcp` matches on destination subnets never apply (sidecars match `tcp`
/// routes on port, gateways, source namespace, labels and subnet); `http`
/// matches on the source's labels or namespace apply whatever the source.
fn virtual_service_not_enforced(vs: &api::networking::VirtualService) -> Option<String> {
    let mut never = Vec::new();
    for (i, route) in vs.tcp.iter().enumerate() {
        for (j, m) in route.r#match.iter().enumerate() {
            if !m.destination_subnets.is_empty() {
                never.push(format!("tcp[{i}].match[{j}].destinationSubnets"));
            }
        }
    }
    let mut always = Vec::new();
    for (i, route) in vs.http.iter().enumerate() {
        for (j, m) in route.r#match.iter().enumerate() {
            if !m.source_labels.is_empty() {
                always.push(format!("http[{i}].match[{j}].sourceLabels"));
            }
            if m.source_namespace.is_some() {
                always.push(format!("http[{i}].match[{j}].sourceNamespace"));
            }
        }
    }
    let mut parts = Vec::new();
    if !never.is_empty() {
        parts.push(format!(
            "{} not enforced: Trellis does not match TCP routes on destination subnets, so these matches never apply",
            never.join(", ")
        ));
    }
    if !always.is_empty() {
        parts.push(format!(
            "{} not enforced: Trellis does not match HTTP routes on their source, so these matches apply to requests from every workload",
            always.join(", ")
        ));
    }
    (!parts.is_empty()).then(|| parts.join("; ") + ".")
}
