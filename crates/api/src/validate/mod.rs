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
mod unreachable;
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
        // Made only from a Pod that validated.
        Resource::SlimPod(_) => {}
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

/// The rules `istioctl validate` applies, for `trellis validate`, whose
/// verdicts CI pipelines compare with (or swap for) istioctl's: Istio's
/// rules on Istio kinds, as [`validate`]; on Kubernetes kinds only Istio's
/// requirement that Service ports declare their protocol. [`validate`] adds
/// the API server's rules on the objects Trellis runs (a Pod needs images),
/// which `trellis apply` and `trellis up` need and istioctl does not check.
pub fn validate_as_istioctl(r: &Resource) -> Vec<FieldError> {
    match r {
        Resource::Service(svc) => {
            let mut errs = Errors::default();
            kubernetes::service_port_protocols(&mut errs, svc);
            errs.0
        }
        Resource::Namespace(_)
        | Resource::ServiceAccount(_)
        | Resource::Secret(_)
        | Resource::Deployment(_)
        | Resource::Pod(_)
        | Resource::SlimPod(_)
        | Resource::EndpointSlice(_) => Vec::new(),
        _ => validate(r),
    }
}

/// Something Istio's validation accepts but warns about (`istioctl
/// validate` prints it; `istioctl analyze` reports it as IST0133
/// SchemaWarning, or as the more precise code below).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Warning {
    /// In Istio's words.
    Schema(String),
    /// IST0130: a route rule no request reaches; the rule is `#index` or
    /// its quoted name.
    UnreachableRule { rule: String, reason: String },
    /// IST0131: a match an earlier rule's match already takes.
    IneffectiveMatch {
        rule: String,
        matched: String,
        duplicate: String,
    },
}

impl std::fmt::Display for Warning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Warning::Schema(text) => f.write_str(text),
            Warning::UnreachableRule { rule, reason } => {
                write!(f, "virtualService rule {rule} not used ({reason})")
            }
            Warning::IneffectiveMatch {
                rule,
                matched,
                duplicate,
            } => write!(
                f,
                "virtualService rule {rule} match {matched} is not used (duplicate/overlapping match in rule {duplicate})"
            ),
        }
    }
}

/// Every warning Istio's validation gives for `r`.
pub fn warnings(r: &Resource) -> Vec<Warning> {
    let schema =
        |texts: Vec<String>| -> Vec<Warning> { texts.into_iter().map(Warning::Schema).collect() };
    match r {
        Resource::VirtualService(o) => unreachable::unreachable_rules(&o.spec),
        Resource::ServiceEntry(o) => schema(service_entry::warnings(&o.metadata, &o.spec)),
        Resource::Unsupported {
            api_version,
            kind,
            spec,
            ..
        } => {
            let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
            schema(unserved::warnings(group, kind, spec))
        }
        _ => Vec::new(),
    }
}
