//! The resources Trellis reads: Istio kinds wrapped in [`Object`], the
//! Kubernetes kinds a mesh needs, and a placeholder for everything else.

mod kind;
mod object;
mod parse;
mod slim_pod;

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Pod, Secret, Service, ServiceAccount};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde::{Serialize, Serializer};

pub use kind::{Kind, UnknownKind};
pub use object::Object;
pub use parse::{ParseError, parse, parse_each, parse_value};
pub use slim_pod::{READ_ANNOTATIONS, SlimContainer, SlimPod};

use crate::{networking, security, telemetry};

/// One parsed document.
// Every variant over ~240 bytes inline is boxed (Pods and Deployments are
// 2 KB and more; a Sidecar or WorkloadGroup ~500-600 bytes): a mesh has
// thousands of pods, each kept as a `SlimPod` of ~136 bytes, and every
// resource is the size of the largest variant. At 608 bytes the store's
// map of 10,000 pods took 7.3 MiB; at 240, 3.4 MiB (heaptrack, at the peak).
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Resource {
    VirtualService(Box<Object<networking::VirtualService>>),
    DestinationRule(Box<Object<networking::DestinationRule>>),
    Gateway(Object<networking::Gateway>),
    ServiceEntry(Box<Object<networking::ServiceEntry>>),
    Sidecar(Box<Object<networking::Sidecar>>),
    WorkloadEntry(Box<Object<networking::WorkloadEntry>>),
    WorkloadGroup(Box<Object<networking::WorkloadGroup>>),
    PeerAuthentication(Object<security::PeerAuthentication>),
    RequestAuthentication(Box<Object<security::RequestAuthentication>>),
    AuthorizationPolicy(Box<Object<security::AuthorizationPolicy>>),
    Telemetry(Box<Object<telemetry::Telemetry>>),
    Namespace(Box<Namespace>),
    ServiceAccount(Box<ServiceAccount>),
    /// Gateway certificates (`credentialName`): kubernetes.io/tls or generic.
    Secret(Box<Secret>),
    Service(Box<Service>),
    Deployment(Box<Deployment>),
    /// A Pod as written.
    Pod(Box<Pod>),
    /// A Pod reduced to what the mesh reads of it ([`Resource::slim`]): how
    /// the control plane keeps pods in memory. Its kind is `Pod`.
    SlimPod(SlimPod),
    EndpointSlice(Box<EndpointSlice>),
    /// Recognised but not supported by Trellis (IstioOperator, EnvoyFilter, ServiceMonitor, ...): kept so tools can report them for what they are.
    Unsupported {
        api_version: String,
        kind: String,
        name: String,
        namespace: Option<String>,
        reason: String,
        /// The `spec` as written (null when absent): kinds Trellis does not
        /// serve are still checked by the rules Istio applies to them.
        spec: serde_json::Value,
    },
}

/// Applies `$body` to the metadata-bearing part of every variant: `$istio`
/// is bound to `&Object<_>` for Istio kinds, `$k8s` to the k8s-openapi
/// object for Kubernetes kinds. Keeps the accessors below from listing
/// eighteen arms each.
macro_rules! each {
    ($self:expr, $istio:ident => $ibody:expr, $k8s:ident => $kbody:expr, $slim:ident => $sbody:expr, $u:pat => $ubody:expr) => {
        match $self {
            Resource::VirtualService($istio) => $ibody,
            Resource::DestinationRule($istio) => $ibody,
            Resource::Gateway($istio) => $ibody,
            Resource::ServiceEntry($istio) => $ibody,
            Resource::Sidecar($istio) => $ibody,
            Resource::WorkloadEntry($istio) => $ibody,
            Resource::WorkloadGroup($istio) => $ibody,
            Resource::PeerAuthentication($istio) => $ibody,
            Resource::RequestAuthentication($istio) => $ibody,
            Resource::AuthorizationPolicy($istio) => $ibody,
            Resource::Telemetry($istio) => $ibody,
            Resource::Namespace($k8s) => $kbody,
            Resource::ServiceAccount($k8s) => $kbody,
            Resource::Secret($k8s) => $kbody,
            Resource::Service($k8s) => $kbody,
            Resource::Deployment($k8s) => $kbody,
            Resource::Pod($k8s) => $kbody,
            Resource::EndpointSlice($k8s) => $kbody,
            Resource::SlimPod($slim) => $sbody,
            $u => $ubody,
        }
    };
}

static NO_LABELS: BTreeMap<String, String> = BTreeMap::new();

impl Resource {
    pub fn kind(&self) -> Kind {
        match self {
            Resource::VirtualService(_) => Kind::VirtualService,
            Resource::DestinationRule(_) => Kind::DestinationRule,
            Resource::Gateway(_) => Kind::Gateway,
            Resource::ServiceEntry(_) => Kind::ServiceEntry,
            Resource::Sidecar(_) => Kind::Sidecar,
            Resource::WorkloadEntry(_) => Kind::WorkloadEntry,
            Resource::WorkloadGroup(_) => Kind::WorkloadGroup,
            Resource::PeerAuthentication(_) => Kind::PeerAuthentication,
            Resource::RequestAuthentication(_) => Kind::RequestAuthentication,
            Resource::AuthorizationPolicy(_) => Kind::AuthorizationPolicy,
            Resource::Telemetry(_) => Kind::Telemetry,
            Resource::Namespace(_) => Kind::Namespace,
            Resource::ServiceAccount(_) => Kind::ServiceAccount,
            Resource::Secret(_) => Kind::Secret,
            Resource::Service(_) => Kind::Service,
            Resource::Deployment(_) => Kind::Deployment,
            Resource::Pod(_) | Resource::SlimPod(_) => Kind::Pod,
            Resource::EndpointSlice(_) => Kind::EndpointSlice,
            Resource::Unsupported { .. } => Kind::Unsupported,
        }
    }

    /// The `kind:` as written; for unsupported resources, their own kind
    /// (e.g. `EnvoyFilter`), not "Unsupported".
    pub fn kind_name(&self) -> &str {
        match self {
            Resource::Unsupported { kind, .. } => kind,
            other => other.kind().as_str(),
        }
    }

    /// The `apiVersion:` as written (k8s kinds always carry their only version).
    pub fn api_version(&self) -> &str {
        each!(self,
            o => &o.api_version,
            _k => self.kind().default_api_version(),
            _s => self.kind().default_api_version(),
            Resource::Unsupported { api_version, .. } => api_version)
    }

    pub fn name(&self) -> &str {
        each!(self,
            o => &o.metadata.name,
            k => k.metadata.name.as_deref().unwrap_or_default(),
            s => &s.name,
            Resource::Unsupported { name, .. } => name)
    }

    pub fn namespace(&self) -> Option<&str> {
        each!(self,
            o => o.metadata.namespace.as_deref(),
            k => k.metadata.namespace.as_deref(),
            s => s.namespace.as_deref(),
            Resource::Unsupported { namespace, .. } => namespace.as_deref())
    }

    /// Sets the namespace (used to default it to the source's namespace).
    /// Namespaces themselves are cluster-scoped and are left alone.
    pub fn set_namespace(&mut self, ns: &str) {
        if matches!(self, Resource::Namespace(_)) {
            return;
        }
        let ns = Some(ns.to_string());
        each!(self,
            o => o.metadata.namespace = ns,
            k => k.metadata.namespace = ns,
            s => s.namespace = ns,
            Resource::Unsupported { namespace, .. } => *namespace = ns)
    }

    pub fn labels(&self) -> &BTreeMap<String, String> {
        each!(self,
            o => &o.metadata.labels,
            k => k.metadata.labels.as_ref().unwrap_or(&NO_LABELS),
            s => &*s.labels,
            Resource::Unsupported { .. } => &NO_LABELS)
    }

    pub fn annotations(&self) -> &BTreeMap<String, String> {
        each!(self,
            o => &o.metadata.annotations,
            k => k.metadata.annotations.as_ref().unwrap_or(&NO_LABELS),
            s => &*s.annotations,
            Resource::Unsupported { .. } => &NO_LABELS)
    }

    /// `Kind/namespace/name` (namespace omitted when unset), for messages.
    pub fn display_name(&self) -> String {
        match self.namespace() {
            Some(ns) => format!("{}/{}/{}", self.kind_name(), ns, self.name()),
            None => format!("{}/{}", self.kind_name(), self.name()),
        }
    }

    /// The resource as YAML, in the form `parse` reads back to an equal value.
    pub fn to_yaml(&self) -> String {
        serde_yaml_ng::to_string(self).unwrap_or_else(|e| format!("# cannot render as YAML: {e}\n"))
    }

    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }

    /// The form the control plane keeps in memory: a Pod reduced to what
    /// the mesh reads of it ([`SlimPod`]), any other resource as it is.
    pub fn slim(self) -> Resource {
        match self {
            Resource::Pod(p) => Resource::SlimPod(SlimPod::of(&p)),
            other => other,
        }
    }
}

impl Serialize for Resource {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Resource::VirtualService(o) => o.serialize(s),
            Resource::DestinationRule(o) => o.serialize(s),
            Resource::Gateway(o) => o.serialize(s),
            Resource::ServiceEntry(o) => o.serialize(s),
            Resource::Sidecar(o) => o.serialize(s),
            Resource::WorkloadEntry(o) => o.serialize(s),
            Resource::WorkloadGroup(o) => o.serialize(s),
            Resource::PeerAuthentication(o) => o.serialize(s),
            Resource::RequestAuthentication(o) => o.serialize(s),
            Resource::AuthorizationPolicy(o) => o.serialize(s),
            Resource::Telemetry(o) => o.serialize(s),
            Resource::Namespace(o) => o.serialize(s),
            Resource::ServiceAccount(o) => o.serialize(s),
            Resource::Secret(o) => o.serialize(s),
            Resource::Service(o) => o.serialize(s),
            Resource::Deployment(o) => o.serialize(s),
            Resource::Pod(o) => o.serialize(s),
            Resource::SlimPod(o) => o.to_pod().serialize(s),
            Resource::EndpointSlice(o) => o.serialize(s),
            // The envelope and the spec as written: the body was never
            // modelled (an EnvoyFilter Trellis translates is stored so).
            Resource::Unsupported {
                api_version,
                kind,
                name,
                namespace,
                spec,
                ..
            } => {
                #[derive(Serialize)]
                #[serde(rename_all = "camelCase")]
                struct Envelope<'a> {
                    api_version: &'a str,
                    kind: &'a str,
                    metadata: Meta<'a>,
                    #[serde(skip_serializing_if = "serde_json::Value::is_null")]
                    spec: &'a serde_json::Value,
                }
                #[derive(Serialize)]
                struct Meta<'a> {
                    #[serde(skip_serializing_if = "str::is_empty")]
                    name: &'a str,
                    #[serde(skip_serializing_if = "Option::is_none")]
                    namespace: Option<&'a str>,
                }
                Envelope {
                    api_version,
                    kind,
                    metadata: Meta {
                        name,
                        namespace: namespace.as_deref(),
                    },
                    spec,
                }
                .serialize(s)
            }
        }
    }
}
