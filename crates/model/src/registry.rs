//! The service registry: services with their ports and protocols, and the
//! workloads that back them — Kubernetes Services and pods as Kubernetes
//! would resolve them, ServiceEntries and WorkloadEntries as Istio does
//! (see [`crate::service_entry`]).

use std::collections::BTreeMap;
use std::sync::Arc;

use api::SlimPod;
use k8s_openapi::api::core::v1::Service as K8sService;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use wire::pb::Protocol;

use crate::host;
use crate::mesh_config::MeshConfig;
use crate::protocol;

#[derive(Clone, Debug, PartialEq)]
pub struct Service {
    pub name: String,
    pub namespace: String,
    /// `<name>.<namespace>.svc.<domain>`
    pub hostname: String,
    pub ports: Vec<ServicePort>,
    pub selector: BTreeMap<String, String>,
    pub cluster_ip: Option<String>,
    /// From the `networking.istio.io/exportTo` annotation, or a
    /// ServiceEntry's `exportTo`; empty = everywhere.
    pub export_to: Vec<String>,
    /// A ServiceEntry's `addresses` (VIPs): more names its virtual hosts answer to.
    pub addresses: Vec<String>,
    /// A ServiceEntry with `location: MESH_EXTERNAL` (the default for them).
    pub mesh_external: bool,
    pub resolution: Resolution,
}

/// How a proxy finds where to send a service's traffic.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Resolution {
    /// Endpoints with IP addresses, balanced by the proxy (Kubernetes
    /// Services, ServiceEntry `STATIC`).
    #[default]
    ClientSide,
    /// Endpoint addresses may be host names the proxy resolves when it
    /// connects (ServiceEntry `DNS`, `DNS_ROUND_ROBIN`).
    Dns,
    /// No endpoints: traffic goes where the client sent it (ServiceEntry `NONE`).
    Passthrough,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ServicePort {
    pub name: Option<String>,
    pub port: u32,
    pub target_port: TargetPort,
    pub protocol: Protocol,
}

#[derive(Clone, Debug, PartialEq)]
pub enum TargetPort {
    Number(u32),
    Name(String),
}

/// A running instance of a workload: one pod, one WorkloadEntry, or one
/// endpoint written inline in a ServiceEntry.
#[derive(Clone, Debug, PartialEq)]
pub struct Workload {
    pub kind: WorkloadKind,
    pub name: String,
    /// The owning workload (Deployment) name, Istio's `destination_workload`.
    pub workload: String,
    pub namespace: String,
    /// A pod's are its slim pod's (shared with the pods of its ReplicaSet).
    pub labels: Arc<BTreeMap<String, String>>,
    /// An IP address; for entries of DNS-resolved ServiceEntries also a host
    /// name, which the proxy resolves when it connects.
    pub ip: String,
    /// Empty for entries without one: they have no mesh identity.
    pub service_account: String,
    /// Pods: container ports. Entries: their `ports` map, service port name → port.
    pub ports: Vec<ContainerPort>,
    /// Injected pods carry Istio's `sidecar.istio.io/status` annotation;
    /// entries say so with `security.istio.io/tlsMode` or a service account.
    pub has_sidecar: bool,
    /// The pod is a gateway proxy (Istio's gateway injection template,
    /// [`GATEWAY_TEMPLATE_ANNOTATION`]): the only proxies that get gateway
    /// listeners, and with them the private keys of their Gateways' Secrets.
    pub gateway: bool,
    /// `region/zone/subzone`; empty when unknown.
    pub locality: String,
    /// Load balancing weight; 0 means the default (1).
    pub weight: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum WorkloadKind {
    Pod,
    /// A WorkloadEntry resource: selected by labels like a pod.
    WorkloadEntry,
    /// An endpoint of one ServiceEntry (its `endpoints`, or its host for `DNS`
    /// without endpoints): never selected by labels.
    Inline,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ContainerPort {
    pub name: Option<String>,
    pub port: u32,
}

impl Workload {
    /// The SPIFFE id, or empty when the workload has no service account.
    pub fn spiffe_id(&self, trust_domain: &str) -> String {
        if self.service_account.is_empty() {
            return String::new();
        }
        format!(
            "spiffe://{trust_domain}/ns/{}/sa/{}",
            self.namespace, self.service_account
        )
    }

    /// The port this workload receives `port` of a service on: a pod's
    /// container port the targetPort names; an entry's port mapped to the
    /// service port's name, else the targetPort (Istio's order).
    pub fn target_port(&self, port: &ServicePort) -> Option<u32> {
        let named = |name: &str| {
            self.ports
                .iter()
                .find(|p| p.name.as_deref() == Some(name))
                .map(|p| p.port)
        };
        if self.kind != WorkloadKind::Pod
            && let Some(p) = port.name.as_deref().and_then(named)
        {
            return Some(p);
        }
        match &port.target_port {
            TargetPort::Number(n) => Some(*n),
            TargetPort::Name(name) => named(name),
        }
    }
}

impl Service {
    pub fn port(&self, number: u32) -> Option<&ServicePort> {
        self.ports.iter().find(|p| p.port == number)
    }

    /// Whether this service's selector picks `w`: pods and WorkloadEntries
    /// in its namespace (Istio: a Kubernetes Service selects WorkloadEntries too).
    pub fn selects(&self, w: &Workload) -> bool {
        w.kind != WorkloadKind::Inline
            && w.namespace == self.namespace
            && !self.selector.is_empty()
            && self
                .selector
                .iter()
                .all(|(k, v)| w.labels.get(k) == Some(v))
    }
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Registry {
    /// By hostname, sorted so compiled output is deterministic.
    pub services: BTreeMap<String, Service>,
    /// Pods and WorkloadEntries, in the order they were read. Shared with
    /// the registry they were carried over from (see [`crate::registry_patch`]).
    pub workloads: Vec<Arc<Workload>>,
    /// Which workloads each service selects (indexes into `workloads`), built
    /// once by [`Registry::index`]: compiling endpoints for every service
    /// must not scan every workload for each of them.
    pub(crate) selected: std::collections::HashMap<String, Vec<usize>>,
    /// A ServiceEntry's own endpoints, by hostname: kept apart from
    /// `workloads` (and shared by the hosts of one entry), so that a changed
    /// entry replaces its own and nothing else (see
    /// [`Registry::with_service_entries`]).
    pub(crate) inline: std::collections::HashMap<String, Arc<[Workload]>>,
    /// The hosts each ServiceEntry (namespace, name) made services of.
    pub(crate) entries: std::collections::HashMap<(String, String), Vec<String>>,
    /// Hosts more than one object claims (a ServiceEntry's host that a
    /// Kubernetes Service or an earlier entry has, and that one's): which
    /// wins depends on every claimant, so a change to one is read whole.
    pub(crate) contested: std::collections::HashSet<String>,
    /// The endpoints of Kubernetes Services that have EndpointSlices, by
    /// hostname: they replace the selector's picks (see
    /// [`crate::endpoint_slice`]).
    pub(crate) sliced: std::collections::HashMap<String, crate::endpoint_slice::Sliced>,
    /// Some EndpointSlice's endpoint names a pod in another namespace than
    /// its own, whose labels and identity it then carries: a change to a
    /// pod can change the backends of a service in another namespace.
    pub(crate) slices_cross_namespaces: bool,
    /// `workloads` by namespace and name, for [`Registry::workload`].
    pub(crate) by_name: ByName,
}

/// The indexes of a registry's workloads sorted by (namespace, name, index),
/// made at the first look-up: every proxy's compile looks its own workload
/// up, and a scan of 11,000 pods each time was most of a small compile.
/// Not carried by a clone (a clone's workloads may change), and not compared.
#[derive(Default)]
pub(crate) struct ByName(std::sync::OnceLock<Vec<u32>>);

impl Clone for ByName {
    fn clone(&self) -> Self {
        ByName::default()
    }
}

impl PartialEq for ByName {
    fn eq(&self, _: &ByName) -> bool {
        true
    }
}

impl std::fmt::Debug for ByName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ByName")
    }
}

impl Registry {
    pub fn add_k8s_service(&mut self, svc: &K8sService, mesh: &MeshConfig) {
        let Some(name) = svc.metadata.name.clone() else {
            return;
        };
        let namespace = svc
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let spec = svc.spec.clone().unwrap_or_default();
        let ports = spec
            .ports
            .unwrap_or_default()
            .into_iter()
            .map(|p| ServicePort {
                protocol: protocol::from_port(p.name.as_deref(), p.app_protocol.as_deref()),
                name: p.name,
                port: p.port as u32,
                target_port: match p.target_port {
                    Some(IntOrString::Int(n)) => TargetPort::Number(n as u32),
                    Some(IntOrString::String(s)) => TargetPort::Name(s),
                    None => TargetPort::Number(p.port as u32),
                },
            })
            .collect();
        let hostname = host::fqdn(&name, &namespace, &mesh.domain_suffix);
        let service = Service {
            name,
            namespace,
            hostname: hostname.clone(),
            ports,
            selector: spec.selector.unwrap_or_default(),
            cluster_ip: spec.cluster_ip.filter(|ip| ip != "None"),
            export_to: svc
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get("networking.istio.io/exportTo"))
                .map(|v| {
                    v.split(',')
                        .map(|s| s.trim().to_string())
                        .filter(|s| !s.is_empty())
                        .collect()
                })
                .unwrap_or_default(),
            addresses: Vec::new(),
            mesh_external: false,
            resolution: Resolution::ClientSide,
        };
        self.services.insert(hostname, service);
    }

    pub fn add_pod(&mut self, pod: &SlimPod) {
        self.by_name = ByName::default();
        if let Some(w) = pod_workload(pod) {
            self.workloads.push(Arc::new(w));
        }
    }

    /// Builds the service → workloads index; call after the last add.
    pub fn index(&mut self) {
        let mut by_ns: std::collections::HashMap<&str, Vec<usize>> =
            std::collections::HashMap::new();
        for (i, w) in self.workloads.iter().enumerate() {
            by_ns.entry(w.namespace.as_str()).or_default().push(i);
        }
        let selected = self
            .services
            .values()
            // A Service with slices is backed by them alone.
            .filter(|svc| !self.sliced.contains_key(&svc.hostname))
            .map(|svc| (svc.hostname.clone(), self.select(svc, &by_ns)))
            .collect();
        self.selected = selected;
    }

    /// The workloads `svc`'s selector picks, of those `by_ns` lists by namespace.
    pub(crate) fn select(
        &self,
        svc: &Service,
        by_ns: &std::collections::HashMap<&str, Vec<usize>>,
    ) -> Vec<usize> {
        // Without a selector a service picks nothing (see `selects`):
        // a thousand ServiceEntries need not scan their namespace each.
        by_ns
            .get(svc.namespace.as_str())
            .filter(|_| !svc.selector.is_empty())
            .map(|ws| {
                ws.iter()
                    .copied()
                    .filter(|&i| svc.selects(&self.workloads[i]))
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn service(&self, hostname: &str) -> Option<&Service> {
        self.services.get(hostname)
    }

    /// The workload a proxy speaks for: the first of that name and namespace.
    pub fn workload(&self, name: &str, namespace: &str) -> Option<&Workload> {
        fn key(w: &Workload) -> (&str, &str) {
            (w.namespace.as_str(), w.name.as_str())
        }
        let sorted = self.by_name.0.get_or_init(|| {
            let mut sorted: Vec<u32> = (0..self.workloads.len() as u32).collect();
            // Stable: the first of a name stays first.
            sorted.sort_by(|&a, &b| {
                key(&self.workloads[a as usize]).cmp(&key(&self.workloads[b as usize]))
            });
            sorted
        });
        let first =
            sorted.partition_point(|&i| key(&self.workloads[i as usize]) < (namespace, name));
        let w = &**self.workloads.get(*sorted.get(first)? as usize)?;
        (key(w) == (namespace, name)).then_some(w)
    }

    /// Every workload behind `hostname`, whatever its ports: what an endpoint
    /// change of that service is compared by.
    pub fn backends<'a>(&'a self, hostname: &str) -> impl Iterator<Item = &'a Workload> + 'a {
        self.selected
            .get(hostname)
            .into_iter()
            .flatten()
            .map(move |&i| &*self.workloads[i])
            .chain(
                self.inline
                    .get(hostname)
                    .into_iter()
                    .flat_map(|ws| ws.iter()),
            )
            .chain(
                self.sliced
                    .get(hostname)
                    .into_iter()
                    .flat_map(|s| s.workloads.iter()),
            )
    }

    /// Whether the registries have the same services, workloads and
    /// backends, however they were built (read whole, or patched: see
    /// [`Registry::with_service_entries`]).
    pub fn same_content(&self, other: &Registry) -> bool {
        self.services == other.services
            && self.workloads == other.workloads
            && self
                .services
                .keys()
                .all(|h| self.backends(h).eq(other.backends(h)))
    }

    /// Every workload: those services select, ServiceEntries' own and
    /// EndpointSlices'.
    pub fn all_workloads(&self) -> impl Iterator<Item = &Workload> + '_ {
        let mut seen = std::collections::HashSet::new();
        let inline = self
            .inline
            .values()
            // The hosts of one entry share its endpoints.
            .filter(move |ws| seen.insert(ws.as_ptr()))
            .flat_map(|ws| ws.iter());
        let sliced = self.sliced.values().flat_map(|s| s.workloads.iter());
        self.workloads
            .iter()
            .map(|w| &**w)
            .chain(inline)
            .chain(sliced)
    }

    /// Endpoints of `svc`'s `port` restricted to pods carrying `subset` labels,
    /// with the container port the service's targetPort resolves to on each pod.
    pub fn endpoints<'a>(
        &'a self,
        svc: &'a Service,
        port: &'a ServicePort,
        subset: &'a BTreeMap<String, String>,
    ) -> impl Iterator<Item = (&'a Workload, u32)> + 'a {
        self.backends(&svc.hostname)
            .filter(move |w| subset.iter().all(|(k, v)| w.labels.get(k) == Some(v)))
            .filter_map(move |w| Some((w, w.target_port(port)?)))
    }

    /// The services whose selector picks this workload.
    pub fn services_of<'a>(&'a self, w: &'a Workload) -> impl Iterator<Item = &'a Service> + 'a {
        self.services.values().filter(move |s| s.selects(w))
    }
}

/// A pod as a workload; `None` until it has an IP.
pub(crate) fn pod_workload(pod: &SlimPod) -> Option<Workload> {
    let ip = pod.ip.clone()?;
    let ports = pod
        .ports()
        .map(|(name, port)| ContainerPort {
            name: name.map(str::to_string),
            port: port as u32,
        })
        .collect();
    Some(Workload {
        kind: WorkloadKind::Pod,
        workload: owner_workload(pod).unwrap_or_else(|| pod.name.clone()),
        name: pod.name.clone(),
        namespace: pod.namespace.clone().unwrap_or_else(|| "default".into()),
        labels: pod.labels.clone(),
        ip,
        service_account: pod
            .service_account
            .clone()
            .unwrap_or_else(|| "default".into()),
        ports,
        has_sidecar: pod.annotations.contains_key("sidecar.istio.io/status"),
        gateway: has_gateway_template(Some(&pod.annotations)),
        locality: String::new(),
        weight: 0,
    })
}

/// The Deployment that owns a pod: named by `trellis up`'s annotation, or
/// derived from the owning ReplicaSet (`reviews-v1-7f9c8d` → `reviews-v1`) as Istio does.
pub(crate) fn owner_workload(pod: &SlimPod) -> Option<String> {
    if let Some(w) = pod.annotations.get(WORKLOAD_ANNOTATION) {
        return Some(w.clone());
    }
    let owner = pod.controller.as_ref()?;
    match owner.kind.as_str() {
        "ReplicaSet" => owner.name.rsplit_once('-').map(|(d, _)| d.to_string()),
        _ => Some(owner.name.clone()),
    }
}

/// The pod `r` is, as the registry reads pods: a Pod as written is slimmed
/// here (files, tests), the control plane's are slim already.
pub(crate) fn pod_of(r: &api::Resource) -> Option<std::borrow::Cow<'_, SlimPod>> {
    match r {
        api::Resource::SlimPod(p) => Some(std::borrow::Cow::Borrowed(p)),
        api::Resource::Pod(p) => Some(std::borrow::Cow::Owned(SlimPod::of(p))),
        _ => None,
    }
}

/// Istio's annotation naming the injection templates of a pod; a gateway
/// deployment's pods carry `gateway` (Istio's gateway chart and
/// `trellis up`'s ingress gateway), which makes them gateway proxies.
pub const GATEWAY_TEMPLATE_ANNOTATION: &str = "inject.istio.io/templates";

/// The annotation `trellis up` puts on the pods it plans, naming their Deployment.
pub const WORKLOAD_ANNOTATION: &str = "trellis.io/workload";

/// Whether a pod's annotations name Istio's gateway injection template.
pub(crate) fn has_gateway_template(
    annotations: Option<&std::collections::BTreeMap<String, String>>,
) -> bool {
    annotations
        .and_then(|a| a.get(GATEWAY_TEMPLATE_ANNOTATION))
        .is_some_and(|t| t.split(',').any(|t| t.trim() == "gateway"))
}
