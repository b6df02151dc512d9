//! What every analyzer needs to know about the input, indexed once: the mesh
//! as the compiler sees it, the workloads that will run, the namespaces that
//! exist, the service accounts, and where a host name leads.

use std::collections::{BTreeMap, BTreeSet};

use api::networking::ServiceEntry;
use api::{Object, Resource};
use k8s_openapi::api::core::v1::Namespace;

use super::ingress::{self, INGRESS_NAMESPACE};
use super::names::{
    exported_to, is_system_namespace, key, labels_match, namespace_matches, namespace_of,
    object_namespace,
};
use super::workload::{Workload, injection_disabled_label};
use crate::host;
use crate::mesh::Mesh;
use crate::mesh_config::MeshConfig;

/// A host a route may lead to: a Kubernetes Service or a ServiceEntry host.
#[derive(Clone, Debug)]
pub struct HostTarget {
    pub ports: Vec<u32>,
    /// The labels that pick its pods (a Service's selector, a ServiceEntry's
    /// workloadSelector); `None` when its endpoints are not pods.
    pub selector: Option<(String, BTreeMap<String, String>)>,
}

pub struct Context<'a> {
    pub resources: &'a [Resource],
    pub config: &'a MeshConfig,
    /// VirtualServices, DestinationRules and Gateways sorted, and the
    /// registry of Services (the built-in ingress gateway's included).
    pub mesh: Mesh,
    pub workloads: Vec<Workload>,
    /// Whether the input itself holds any Deployment or Pod. Checks that
    /// conclude "nothing selects this" need the full list of workloads and
    /// stay silent for config-only input, where they would flag everything.
    pub has_input_workloads: bool,
    /// Every namespace that exists: declared, or holding a resource (the API
    /// server would refuse a resource in a missing namespace), plus `default`
    /// and the root namespace, which every mesh has.
    pub namespaces: BTreeSet<String>,
    pub namespace_objects: BTreeMap<String, &'a Namespace>,
    pub service_entries: Vec<&'a Object<ServiceEntry>>,
    /// `(namespace, name)` of service accounts known to exist.
    pub service_accounts: BTreeSet<(String, String)>,
    /// Namespaces whose service accounts the input describes fully enough to
    /// say one is missing (it holds a ServiceAccount, Deployment or Pod).
    pub namespaces_with_identities: BTreeSet<String>,
}

impl<'a> Context<'a> {
    pub fn new(resources: &'a [Resource], config: &'a MeshConfig) -> Context<'a> {
        let mut mesh = Mesh::build(resources, config.clone());
        let mut workloads = Vec::new();
        let mut namespaces: BTreeSet<String> =
            ["default", config.root_namespace.as_str(), INGRESS_NAMESPACE]
                .map(String::from)
                .into();
        // Indexed first: a Deployment's injection depends on its namespace's
        // labels, wherever in the input the Namespace is written.
        let namespace_objects: BTreeMap<String, &Namespace> = resources
            .iter()
            .filter_map(|r| match r {
                Resource::Namespace(n) => Some((r.name().to_string(), &**n)),
                _ => None,
            })
            .collect();
        let mut service_entries = Vec::new();
        let mut service_accounts = BTreeSet::new();
        let mut namespaces_with_identities = BTreeSet::new();

        for r in resources {
            if let Resource::Namespace(_) = r {
                namespaces.insert(r.name().to_string());
                continue;
            }
            let ns = namespace_of(r).to_string();
            namespaces.insert(ns.clone());
            match r {
                Resource::ServiceAccount(_) => {
                    service_accounts.insert((ns.clone(), r.name().to_string()));
                    namespaces_with_identities.insert(ns.clone());
                }
                Resource::ServiceEntry(se) => service_entries.push(&**se),
                Resource::Deployment(d) => {
                    let namespace = namespace_objects.get(&ns).copied();
                    workloads.extend(Workload::from_deployment(r, d, namespace));
                    namespaces_with_identities.insert(ns.clone());
                }
                Resource::Pod(p) => {
                    workloads.push(Workload::from_pod(r, p));
                    namespaces_with_identities.insert(ns.clone());
                }
                _ => {}
            }
        }
        for w in &workloads {
            service_accounts.insert((w.namespace.clone(), w.service_account.clone()));
        }
        let has_input_workloads = !workloads.is_empty();
        ingress::add(resources, &mut mesh, &mut workloads, &mut service_accounts);
        service_entries.sort_by_key(|a| key(&a.metadata));

        Context {
            resources,
            config,
            mesh,
            workloads,
            has_input_workloads,
            namespaces,
            namespace_objects,
            service_entries,
            service_accounts,
            namespaces_with_identities,
        }
    }

    pub fn fqdn(&self, host: &str, namespace: &str) -> String {
        host::fqdn(host, namespace, &self.config.domain_suffix)
    }

    /// Where `host`, written in `namespace`, leads: a Service or a
    /// ServiceEntry visible there. `None` means traffic to it goes nowhere
    /// the mesh knows of.
    pub fn find_host(&self, host: &str, namespace: &str) -> Option<HostTarget> {
        let fqdn = self.fqdn(host, namespace);
        if let Some(svc) = self.mesh.registry.service(&fqdn) {
            return Some(HostTarget {
                ports: svc.ports.iter().map(|p| p.port).collect(),
                selector: Some((svc.namespace.clone(), svc.selector.clone())),
            });
        }
        for se in &self.service_entries {
            let se_ns = object_namespace(&se.metadata);
            if !exported_to(&se.spec.export_to, se_ns, namespace) {
                continue;
            }
            let covers = se
                .spec
                .hosts
                .iter()
                .any(|h| host::matches(&self.fqdn(h, se_ns), &fqdn));
            if covers {
                return Some(HostTarget {
                    ports: se.spec.ports.iter().map(|p| p.number).collect(),
                    selector: se
                        .spec
                        .workload_selector
                        .as_ref()
                        .map(|s| (se_ns.to_string(), s.labels.clone())),
                });
            }
        }
        None
    }

    /// The workloads in `namespace` (any namespace when `None`) whose labels
    /// include every one of `selector`'s.
    pub fn selected<'s>(
        &'s self,
        namespace: Option<&'s str>,
        selector: &'s BTreeMap<String, String>,
    ) -> impl Iterator<Item = &'s Workload> + 's {
        self.workloads
            .iter()
            .filter(move |w| namespace.is_none_or(|ns| w.namespace == ns))
            .filter(move |w| labels_match(selector, &w.labels))
    }

    /// Whether the mesh's sidecar injection covers `namespace`: on one machine
    /// `trellis up` injects everywhere unless a namespace opts out with
    /// `istio-injection=disabled`; Istio's own namespaces are never injected.
    pub fn namespace_injected(&self, namespace: &str) -> bool {
        !is_system_namespace(namespace)
            && namespace != INGRESS_NAMESPACE
            && namespace != self.config.root_namespace
            && !self
                .namespace_objects
                .get(namespace)
                .is_some_and(|n| injection_disabled_label(n))
    }

    pub fn namespace_exists(&self, pattern: &str) -> bool {
        self.namespaces
            .iter()
            .any(|ns| namespace_matches(pattern, ns))
    }
}
