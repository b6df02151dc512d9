//! Validation of parsed resources against Istio's (and Kubernetes') rules.
//!
//! Parsing already guarantees the shape (types, known fields, enum names);
//! this layer checks the values and the relations between fields, and
//! reports every problem at once, each with its field path.

mod common;
mod destination_rule;
mod gateway;
mod kubernetes;
mod security;
mod service_entry;
mod telemetry;
mod unserved;
mod virtual_service;

use crate::Resource;
use common::Errors;

/// One problem with one field.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FieldError {
    /// e.g. `spec.http[0].route[1].weight`.
    pub path: String,
    pub message: String,
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

impl std::error::Error for FieldError {}

/// Every rule violation in `r` (empty when valid). Istio kinds Trellis does
/// not serve (EnvoyFilter, WasmPlugin, ProxyConfig) are checked by Istio's
/// rules too, so that `validate` does not pass what istioctl rejects; the
/// caller reports them as unsupported either way.
pub fn validate(r: &Resource) -> Vec<FieldError> {
    let mut errs = Errors::default();
    let e = &mut errs;
    match r {
        Resource::VirtualService(o) => {
            common::metadata(e, &o.metadata);
            virtual_service::virtual_service(e, &o.spec);
        }
        Resource::DestinationRule(o) => {
            common::metadata(e, &o.metadata);
            destination_rule::destination_rule(e, &o.spec);
        }
        Resource::Gateway(o) => {
            common::metadata(e, &o.metadata);
            gateway::gateway(e, &o.spec);
        }
        Resource::ServiceEntry(o) => {
            common::metadata(e, &o.metadata);
            service_entry::service_entry(e, &o.spec);
        }
        Resource::Sidecar(o) => {
            common::metadata(e, &o.metadata);
            service_entry::sidecar(e, &o.spec);
        }
        Resource::WorkloadEntry(o) => {
            common::metadata(e, &o.metadata);
            service_entry::workload_entry(e, &o.spec);
        }
        Resource::WorkloadGroup(o) => {
            common::metadata(e, &o.metadata);
            service_entry::workload_group(e, &o.spec);
        }
        Resource::PeerAuthentication(o) => {
            common::metadata(e, &o.metadata);
            security::peer_authentication(e, &o.spec);
        }
        Resource::RequestAuthentication(o) => {
            common::metadata(e, &o.metadata);
            security::request_authentication(e, &o.spec, o.metadata.namespace.as_deref());
        }
        Resource::AuthorizationPolicy(o) => {
            common::metadata(e, &o.metadata);
            security::authorization_policy(e, &o.spec, o.metadata.namespace.as_deref());
        }
        Resource::Telemetry(o) => {
            common::metadata(e, &o.metadata);
            telemetry::telemetry(e, &o.spec);
        }
        Resource::Namespace(ns) => kubernetes::metadata(e, &ns.metadata, kubernetes::label_name),
        Resource::ServiceAccount(sa) => kubernetes::metadata(e, &sa.metadata, common::name),
        Resource::Secret(s) => kubernetes::metadata(e, &s.metadata, common::name),
        Resource::Service(svc) => {
            kubernetes::metadata(e, &svc.metadata, kubernetes::service_name);
            kubernetes::service(e, svc);
        }
        Resource::Deployment(d) => {
            kubernetes::metadata(e, &d.metadata, common::name);
            kubernetes::deployment(e, d);
        }
        Resource::Pod(pod) => {
            kubernetes::metadata(e, &pod.metadata, common::name);
            match &pod.spec {
                Some(ps) => kubernetes::pod_spec(e, "spec", ps),
                None => e.add("spec", "spec is required"),
            }
        }
        Resource::EndpointSlice(es) => {
            kubernetes::metadata(e, &es.metadata, common::name);
            kubernetes::endpoint_slice(e, es);
        }
        Resource::Unsupported {
            api_version,
            kind,
            spec,
            ..
        } => {
            let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
            unserved::unserved(e, group, kind, spec);
        }
    }
    errs.0
}
