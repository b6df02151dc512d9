//! ServiceEntry and WorkloadEntry in the registry, with Istio's semantics
//! (`networking/v1alpha3/service_entry.proto`, `workload_entry.proto`, and
//! istiod's `serviceentry` controller):
//!
//! - every host of a ServiceEntry is a service of its own, in the entry's
//!   namespace, named as written (hosts are not expanded like short names);
//! - its endpoints are the entries written inline, or — with a
//!   `workloadSelector` — the pods and WorkloadEntries of its namespace the
//!   selector picks; `DNS`/`DNS_ROUND_ROBIN` without endpoints send to the host
//!   itself; `NONE` has no endpoints and passes traffic to where the client
//!   sent it;
//! - an endpoint's port is its `ports` entry for the service port's name,
//!   else the port's `targetPort`, else the port number;
//! - an entry has a mesh identity (and is spoken to with mesh mTLS) when it
//!   says `security.istio.io/tlsMode: istio` or names a service account.
//!
//! A ServiceEntry whose host is already a Kubernetes Service only decorates it
//! in Istio; here the Kubernetes Service is kept as it is. Of two
//! ServiceEntries with the same host, the first in namespace/name order wins.

use std::sync::Arc;

use api::Object;
use api::networking::{Location, Resolution as SeResolution, ServiceEntry, WorkloadEntry};
use wire::pb::Protocol;

use crate::protocol;
use crate::registry::{
    ContainerPort, Registry, Resolution, Service, ServicePort, TargetPort, Workload, WorkloadKind,
};

const TLS_MODE_LABEL: &str = "security.istio.io/tlsMode";
const LOCALITY_LABEL: &str = "istio-locality";

impl Registry {
    /// Adds a WorkloadEntry as a workload that services in its namespace may select.
    pub fn add_workload_entry(&mut self, we: &Object<WorkloadEntry>) {
        if let Some(w) = workload_entry(we) {
            self.by_name = Default::default();
            self.workloads.push(Arc::new(w));
        }
    }

    /// Adds one service per host of `se`; call after every Service, pod and
    /// WorkloadEntry has been added, and before [`Registry::index`].
    pub fn add_service_entry(&mut self, se: &Object<ServiceEntry>) {
        let namespace = se
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let spec = &se.spec;
        let resolution = match spec.resolution.unwrap_or(SeResolution::None) {
            SeResolution::Static => Resolution::ClientSide,
            SeResolution::Dns | SeResolution::DnsRoundRobin => Resolution::Dns,
            // DYNAMIC_DNS resolves the name the client asked for: what a
            // passthrough does, since the proxy resolves names when it connects.
            SeResolution::None | SeResolution::DynamicDns => Resolution::Passthrough,
        };
        let ports: Vec<ServicePort> = spec
            .ports
            .iter()
            .map(|p| ServicePort {
                name: Some(p.name.clone()).filter(|n| !n.is_empty()),
                port: p.number,
                target_port: TargetPort::Number(
                    p.target_port.filter(|t| *t != 0).unwrap_or(p.number),
                ),
                protocol: p
                    .protocol
                    .as_deref()
                    .and_then(protocol::parse)
                    .unwrap_or(Protocol::Unspecified),
            })
            .collect();
        // Written endpoints are shared by every host of the entry.
        let mut inline = Vec::new();
        if resolution != Resolution::Passthrough && spec.workload_selector.is_none() {
            for (i, ep) in spec.endpoints.iter().enumerate() {
                let name = format!("{}-{i}", se.metadata.name);
                if let Some(mut w) = entry_workload(ep, WorkloadKind::Inline, &name, &namespace) {
                    // Istio names no workload for inline endpoints.
                    w.workload = String::new();
                    inline.push(w);
                }
            }
        }
        let inline: Arc<[Workload]> = inline.into();
        let mut claimed = Vec::new();
        for host in &spec.hosts {
            if self.services.contains_key(host) {
                self.contested.insert(host.clone());
                continue;
            }
            claimed.push(host.clone());
            if resolution == Resolution::Dns
                && spec.endpoints.is_empty()
                && spec.workload_selector.is_none()
            {
                // DNS without endpoints: the host itself is the endpoint.
                self.inline.insert(
                    host.clone(),
                    Arc::new([Workload {
                        kind: WorkloadKind::Inline,
                        name: host.clone(),
                        workload: String::new(),
                        namespace: namespace.clone(),
                        labels: Default::default(),
                        ip: host.clone(),
                        service_account: String::new(),
                        ports: Vec::new(),
                        has_sidecar: false,
                        gateway: false,
                        locality: String::new(),
                        weight: 0,
                    }]),
                );
            } else if !inline.is_empty() {
                self.inline.insert(host.clone(), inline.clone());
            }
            let service = Service {
                name: host.clone(),
                namespace: namespace.clone(),
                hostname: host.clone(),
                ports: ports.clone(),
                selector: spec
                    .workload_selector
                    .as_ref()
                    .map(|s| s.labels.clone())
                    .unwrap_or_default(),
                cluster_ip: None,
                export_to: spec.export_to.clone(),
                // CIDRs select by destination IP, which only capture knows;
                // as route names, only single addresses mean anything.
                addresses: spec
                    .addresses
                    .iter()
                    .filter(|a| !a.contains('/'))
                    .cloned()
                    .collect(),
                mesh_external: spec.location.unwrap_or(Location::MeshExternal)
                    == Location::MeshExternal,
                resolution,
            };
            self.services.insert(host.clone(), service);
        }
        self.entries
            .insert((namespace, se.metadata.name.clone()), claimed);
    }

    /// This registry with the ServiceEntries `changed` (namespace, name)
    /// read again from `now` (those of them that still exist): what a
    /// change of ServiceEntries alone costs instead of reading the whole
    /// registry. `None` when the change is not one of entries with their
    /// own endpoints, alone with their hosts (a `workloadSelector` picks
    /// workloads, a host another object claims too is decided among all
    /// claimants): then the registry is read whole.
    pub fn with_service_entries(
        &self,
        changed: &[(&str, &str)],
        now: &[&Object<ServiceEntry>],
    ) -> Option<Registry> {
        let own_endpoints = |se: &Object<ServiceEntry>| se.spec.workload_selector.is_none();
        if !now.iter().all(|se| own_endpoints(se)) {
            return None;
        }
        let mut next = self.clone();
        for &(ns, name) in changed {
            let old = next.entries.remove(&(ns.to_string(), name.to_string()));
            for host in old.iter().flatten() {
                let svc = next.services.remove(host)?;
                if !svc.selector.is_empty() || next.contested.contains(host) {
                    return None;
                }
                next.inline.remove(host);
                next.selected.remove(host);
            }
        }
        for se in now {
            if se.spec.hosts.iter().any(|h| next.services.contains_key(h)) {
                return None;
            }
            next.add_service_entry(se);
            for host in &se.spec.hosts {
                // No selector: they select nothing (see `index`).
                next.selected.insert(host.clone(), Vec::new());
            }
        }
        Some(next)
    }
}

/// A WorkloadEntry resource as a workload (see [`entry_workload`]).
pub(crate) fn workload_entry(we: &Object<WorkloadEntry>) -> Option<Workload> {
    let namespace = we.metadata.namespace.as_deref().unwrap_or("default");
    entry_workload(
        &we.spec,
        WorkloadKind::WorkloadEntry,
        &we.metadata.name,
        namespace,
    )
}

/// A WorkloadEntry (or an inline endpoint) as a workload. `None` for what a
/// proxy cannot connect to: Unix sockets, and addresses behind a network
/// gateway (no address), which Trellis does not route through yet.
fn entry_workload(
    we: &WorkloadEntry,
    kind: WorkloadKind,
    name: &str,
    namespace: &str,
) -> Option<Workload> {
    if we.address.is_empty() || we.address.starts_with("unix://") {
        return None;
    }
    let service_account = we.service_account.clone().unwrap_or_default();
    let has_sidecar = match we.labels.get(TLS_MODE_LABEL) {
        Some(mode) => mode == "istio",
        None => !service_account.is_empty(),
    };
    let locality = we
        .locality
        .clone()
        .filter(|l| !l.is_empty())
        .or_else(|| we.labels.get(LOCALITY_LABEL).map(|l| l.replace('.', "/")))
        .unwrap_or_default();
    Some(Workload {
        kind,
        name: name.to_string(),
        workload: name.to_string(),
        namespace: namespace.to_string(),
        labels: we.labels.clone(),
        ip: we.address.clone(),
        service_account,
        ports: we
            .ports
            .iter()
            .map(|(n, p)| ContainerPort {
                name: Some(n.clone()),
                port: *p,
            })
            .collect(),
        has_sidecar,
        gateway: false,
        locality,
        weight: we.weight.unwrap_or(0),
    })
}
