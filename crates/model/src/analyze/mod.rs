//! `trellis analyze`: cross-resource checks, the mistakes that each resource
//! alone cannot show (a route to a subset nobody defines, a Gateway nothing
//! runs, two VirtualServices fighting over a host).
//!
//! Wherever istioctl has the same check, the message carries istioctl's code,
//! name, level and text (`IST0101 ReferencedResourceNotFound`, ...), so that
//! runbooks and CI filters written for `istioctl analyze` keep working.
//! Checks istioctl lacks, or that only matter because Trellis differs from
//! Istio, use Trellis's own `TRL` codes (see [`messages`]):
//!
//! | code | name | level | when |
//! |---|---|---|---|
//! | TRL0001 | UnsupportedResource | Warning | an Istio (or Gateway API) kind Trellis ignores, e.g. EnvoyFilter; says what to use instead |
//! | TRL0002 | ConflictingDestinationRules | Error | two DestinationRules without workloadSelector for one host in one namespace |
//! | TRL0003 | ConflictingGatewayVirtualServiceHosts | Warning | VirtualServices share a host on a gateway and one has a catch-all route |
//! | TRL0004 | IgnoredResource | Info | a kind that does not configure the mesh (IstioOperator, ServiceMonitor, unknown kinds) |
//! | TRL0005 | NotEnforced | Warning | what Trellis accepts but does not enforce yet (Telemetry metrics providers other than Prometheus; a DestinationRule's HTTP/2 keepalive; VirtualService matches on destination subnets, or on an HTTP request's source) |
//! | TRL0006 | UnknownTelemetryProvider | Error | a Telemetry names a provider meshConfig.extensionProviders does not define (or of the wrong kind) |
//! | TRL0007 | UnusableAuthorizationProvider | Error | an AuthorizationPolicy CUSTOM names an extension provider that is missing, not an ext_authz one, or whose service is not in the mesh: what it selects is denied |
//!
//! The input is what `trellis up` (or a cluster) would hold: a Deployment
//! stands for the pods its template creates, and the built-in ingress
//! gateway (`istio: ingressgateway` in `istio-system`) exists without being
//! written down. Pure and deterministic: same input, same messages, same order.

mod annotations;
mod authorization;
mod context;
mod deprecation;
mod destination_rule;
mod envoy_filter;
mod gateway;
mod gateway_certificate;
mod ingress;
mod injection;
pub mod messages;
mod mtls;
mod names;
mod schema;
pub use schema::schema_validation_error;
mod service;
mod service_entry;
mod sidecar;
mod telemetry;
mod unsupported;
mod upstream_tls;
pub use unsupported::{not_enforced, not_enforced_in};
pub use upstream_tls::unreadable_files;
mod virtual_service;
mod virtual_service_hosts;
mod workload;

use std::fmt;

use api::Resource;
use serde::Serialize;

use crate::mesh_config::MeshConfig;
use context::Context;
use messages::MessageType;

/// How bad a finding is; ordered so that `Info < Warning < Error`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Level {
    Info,
    Warning,
    Error,
}

impl Level {
    pub fn as_str(&self) -> &'static str {
        match self {
            Level::Info => "Info",
            Level::Warning => "Warning",
            Level::Error => "Error",
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One finding, about one resource.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Message {
    /// `IST0101`, or `TRL0001` for Trellis's own checks.
    pub code: &'static str,
    /// `ReferencedResourceNotFound`.
    pub name: &'static str,
    pub level: Level,
    /// The resource the finding is about, as istioctl prints it:
    /// `VirtualService reviews.default` (`Namespace bookinfo` for cluster-scoped kinds).
    pub resource: String,
    pub message: String,
}

impl Message {
    fn new(ty: MessageType, resource: String, message: String) -> Message {
        Message {
            code: ty.code,
            name: ty.name,
            level: ty.level,
            resource,
            message,
        }
    }
}

impl fmt::Display for Message {
    /// istioctl's log line: `Error [IST0101] (VirtualService reviews.default) Referenced ...`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} [{}] ({}) {}",
            self.level, self.code, self.resource, self.message
        )
    }
}

/// Runs every analyzer over `resources` (all namespaces together) and
/// returns the findings sorted by resource, then code, then text, without
/// duplicates (istioctl reports a repeated finding once too).
pub fn analyze(resources: &[Resource], mesh: &MeshConfig) -> Vec<Message> {
    let ctx = Context::new(resources, mesh);
    let mut out = Vec::new();
    schema::analyze(&ctx, &mut out);
    virtual_service::analyze(&ctx, &mut out);
    virtual_service_hosts::analyze(&ctx, &mut out);
    destination_rule::analyze(&ctx, &mut out);
    gateway::analyze(&ctx, &mut out);
    gateway_certificate::analyze(&ctx, &mut out);
    envoy_filter::analyze(&ctx, &mut out);
    service::analyze(&ctx, &mut out);
    mtls::analyze(&ctx, &mut out);
    authorization::analyze(&ctx, &mut out);
    injection::analyze(&ctx, &mut out);
    sidecar::analyze(&ctx, &mut out);
    telemetry::analyze(&ctx, &mut out);
    upstream_tls::analyze(&ctx, &mut out);
    service_entry::analyze(&ctx, &mut out);
    unsupported::analyze(&ctx, &mut out);
    deprecation::analyze(&ctx, &mut out);
    annotations::analyze(&ctx, &mut out);
    suppressed_by_annotation(resources, &mut out);
    out.sort_by(|a, b| (&a.resource, a.code, &a.message).cmp(&(&b.resource, b.code, &b.message)));
    out.dedup();
    out
}

/// The annotation with which a resource silences codes about itself:
/// `galley.istio.io/analyze-suppress: "IST0102,IST0103"`, or `*` for all.
pub const SUPPRESS_ANNOTATION: &str = "galley.istio.io/analyze-suppress";

/// Drops messages that their resource's suppress annotation silences.
fn suppressed_by_annotation(resources: &[Resource], out: &mut Vec<Message>) {
    let silenced: std::collections::HashMap<String, &str> = resources
        .iter()
        .filter_map(|r| {
            let codes = r.annotations().get(SUPPRESS_ANNOTATION)?;
            Some((origin(r), codes.as_str()))
        })
        .collect();
    if silenced.is_empty() {
        return;
    }
    out.retain(|m| {
        silenced
            .get(&m.resource)
            .is_none_or(|codes| !codes.split(',').any(|c| c == "*" || c == m.code))
    });
}

/// How istioctl names a resource in its messages: `Kind name.namespace`, or
/// `Kind name` for cluster-scoped kinds. Resources without a namespace are
/// in `default`, as `kubectl apply` would put them.
pub fn origin(r: &Resource) -> String {
    match r {
        Resource::Namespace(_) => format!("Namespace {}", r.name()),
        _ => reference(r.kind_name(), r.name(), names::namespace_of(r)),
    }
}

fn reference(kind: &str, name: &str, namespace: &str) -> String {
    format!("{kind} {name}.{namespace}")
}

/// `origin` for an Istio object, from its metadata.
fn object_origin<S>(o: &api::Object<S>) -> String {
    reference(
        &o.kind,
        &o.metadata.name,
        names::object_namespace(&o.metadata),
    )
}
