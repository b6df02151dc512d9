//! Patching the registry object by object after a change of pods,
//! WorkloadEntries, Kubernetes Services or EndpointSlices — on Kubernetes,
//! how endpoint churn arrives (pods come and go, their slices follow) —
//! instead of reading every service and workload of the mesh again.
//!
//! What one object's change can change, and so what is read again:
//! - a pod or WorkloadEntry: its own workload; the picks of the services
//!   whose selector matched it before or matches it now; the endpoints of
//!   the Services whose slices name it (it lends them labels and identity);
//! - a Service: itself; its picks, or its slices' endpoints (slices of a
//!   Service that did not exist were ignored);
//! - an EndpointSlice: the endpoints of the Service it named before and of
//!   the one it names now.
//!
//! Everything else is carried over: untouched workloads are the very same
//! `Arc`s, in the order a whole read gives them (compiled endpoints follow
//! it), and the other services' picks are those they had. A change whose
//! consequences reach further — a Service's host a ServiceEntry claims too,
//! a slice naming a pod in another namespace — is read whole.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use api::{Kind, Resource};
use k8s_openapi::api::discovery::v1::EndpointSlice;

use crate::endpoint_slice;
use crate::incremental::Touched;
use crate::mesh_config::MeshConfig;
use crate::registry::{Registry, Workload, WorkloadKind};

impl Registry {
    /// This registry with the pods, WorkloadEntries, Services and
    /// EndpointSlices `touched` read again from `objects` — every object the
    /// registry is read from, in the order a whole read takes them (see
    /// [`crate::Mesh::rebuild`]). `None` when the change is one to read whole.
    pub(crate) fn with_objects(
        &self,
        objects: &[&Resource],
        touched: &Touched,
        config: &MeshConfig,
    ) -> Option<Registry> {
        if self.slices_cross_namespaces {
            return None;
        }
        let told = Told::new(
            touched
                .of_kind(Kind::Pod)
                .map(|(ns, name)| (WorkloadKind::Pod, ns, name))
                .chain(
                    touched
                        .of_kind(Kind::WorkloadEntry)
                        .map(|(ns, name)| (WorkloadKind::WorkloadEntry, ns, name)),
                )
                .collect(),
        );
        let PatchedWorkloads {
            workloads,
            remap,
            fresh,
        } = self.workloads_patched(objects, &told)?;
        let mut next = Registry {
            services: self.services.clone(),
            workloads,
            // Below: carried over, and picked again where needed.
            selected: HashMap::new(),
            inline: self.inline.clone(),
            entries: self.entries.clone(),
            contested: self.contested.clone(),
            sliced: self.sliced.clone(),
            slices_cross_namespaces: false,
            by_name: Default::default(),
        };

        // Services whose picks are computed again, and whose slices are read again.
        let mut reselect: HashSet<String> = HashSet::new();
        let mut reslice: HashSet<String> = HashSet::new();
        for (ns, name) in touched.of_kind(Kind::Service) {
            let host = crate::host::fqdn(name, ns, &config.domain_suffix);
            // Which object keeps a host several claim is decided among all.
            let claimed = self.entries.values().any(|hosts| hosts.contains(&host));
            if claimed || self.contested.contains(&host) {
                return None;
            }
            next.services.remove(&host);
            // The last of its name wins, as in a whole read.
            let now = objects.iter().rev().find_map(|r| match r {
                Resource::Service(s)
                    if s.metadata.name.as_deref() == Some(name)
                        && s.metadata.namespace.as_deref().unwrap_or("default") == ns =>
                {
                    Some(s)
                }
                _ => None,
            });
            if let Some(svc) = now {
                next.add_k8s_service(svc, config);
            }
            reselect.insert(host.clone());
            reslice.insert(host);
        }

        let slices: Vec<(&str, &str)> = touched.of_kind(Kind::EndpointSlice).collect();
        let pods: Vec<(&str, &str)> = touched.of_kind(Kind::Pod).collect();
        for (host, sliced) in &self.sliced {
            let ns = self.services.get(host).map(|s| s.namespace.as_str());
            let named = |(ns_, name): &(&str, &str)| {
                Some(*ns_) == ns && sliced.slices.iter().any(|s| s == name)
            };
            let lends =
                |(ns_, name): &(&str, &str)| sliced.pods.iter().any(|(n, p)| n == ns_ && p == name);
            if slices.iter().any(named) || pods.iter().any(lends) {
                reslice.insert(host.clone());
            }
        }
        // The Services the touched slices name now.
        for r in objects {
            if let Resource::EndpointSlice(es) = r
                && slices.contains(&(r.namespace().unwrap_or("default"), r.name()))
                && let Some(host) = endpoint_slice::service_of(es, &config.domain_suffix)
            {
                reslice.insert(host);
            }
        }
        next.reslice(objects, &reslice, config)?;
        reselect.extend(reslice);

        // The services whose selector matched a touched workload, or does now.
        let before = self.workloads.iter().filter(|w| told.has(w));
        let after = fresh.iter().map(|&i| &next.workloads[i]);
        let moved: Vec<&Workload> = before.chain(after).map(|w| &**w).collect();
        for svc in next.services.values() {
            if moved.iter().any(|w| svc.selects(w)) {
                reselect.insert(svc.hostname.clone());
            }
        }
        // The others pick what they picked, where it is now.
        next.selected = self.selected.clone();
        for picked in next.selected.values_mut() {
            picked.retain_mut(|i| match remap[*i] {
                Some(now) => {
                    *i = now;
                    true
                }
                None => false,
            });
        }
        for host in &reselect {
            next.selected.remove(host);
        }
        let mut namespaces: Vec<&str> = reselect
            .iter()
            .filter_map(|h| next.services.get(h))
            .map(|s| s.namespace.as_str())
            .collect();
        namespaces.sort_unstable();
        namespaces.dedup();
        let mut by_ns: HashMap<&str, Vec<usize>> = HashMap::new();
        for (i, w) in next.workloads.iter().enumerate() {
            if namespaces.binary_search(&w.namespace.as_str()).is_ok() {
                by_ns.entry(w.namespace.as_str()).or_default().push(i);
            }
        }
        let picks: Vec<(String, Vec<usize>)> = reselect
            .iter()
            .filter_map(|h| next.services.get(h))
            .filter(|svc| !next.sliced.contains_key(&svc.hostname))
            .map(|svc| (svc.hostname.clone(), next.select(svc, &by_ns)))
            .collect();
        next.selected.extend(picks);
        Some(next)
    }

    /// The workloads of `objects`: those `told` read again, the others
    /// carried over, in the order of `objects`. `None` when an object
    /// changed that was not told (the order does not line up).
    fn workloads_patched(&self, objects: &[&Resource], told: &Told) -> Option<PatchedWorkloads> {
        let mut workloads = Vec::with_capacity(self.workloads.len() + told.0.len());
        let mut remap = vec![None; self.workloads.len()];
        let mut fresh = Vec::new();
        let mut old = self
            .workloads
            .iter()
            .enumerate()
            .filter(|(_, w)| !told.has(w))
            .peekable();
        for r in objects {
            let kind = match r {
                Resource::Pod(_) | Resource::SlimPod(_) => WorkloadKind::Pod,
                Resource::WorkloadEntry(_) => WorkloadKind::WorkloadEntry,
                _ => continue,
            };
            let (ns, name) = (r.namespace().unwrap_or("default"), r.name());
            if told.0.binary_search(&(kind, ns, name)).is_ok() {
                let w = match r {
                    Resource::WorkloadEntry(we) => crate::service_entry::workload_entry(we),
                    _ => crate::registry::pod_of(r).and_then(|p| crate::registry::pod_workload(&p)),
                };
                if let Some(w) = w {
                    fresh.push(workloads.len());
                    workloads.push(Arc::new(w));
                }
                continue;
            }
            // An untouched object made the workload it made before, if any.
            if let Some((i, w)) =
                old.next_if(|(_, w)| w.kind == kind && w.namespace == ns && w.name == name)
            {
                remap[i] = Some(workloads.len());
                workloads.push(w.clone());
            }
        }
        old.next().is_none().then_some(PatchedWorkloads {
            workloads,
            remap,
            fresh,
        })
    }

    /// Reads the slices of the Services `hosts` again from `objects`; `None`
    /// (read whole) when a host is a ServiceEntry's, or a slice names a pod
    /// in another namespace.
    fn reslice(
        &mut self,
        objects: &[&Resource],
        hosts: &HashSet<String>,
        config: &MeshConfig,
    ) -> Option<()> {
        if hosts.is_empty() {
            return Some(());
        }
        let mut slices: HashMap<&str, Vec<&EndpointSlice>> = HashMap::new();
        for r in objects {
            if let Resource::EndpointSlice(es) = r
                && let Some(host) = endpoint_slice::service_of(es, &config.domain_suffix)
                && let Some(host) = hosts.get(&host)
            {
                slices.entry(host.as_str()).or_default().push(es);
            }
        }
        let wanted: HashSet<(&str, &str)> = slices
            .values()
            .flatten()
            .flat_map(|s| endpoint_slice::pods_named(s))
            .collect();
        let mut slim = HashMap::new();
        if !wanted.is_empty() {
            for r in objects {
                let key = (r.namespace().unwrap_or("default"), r.name());
                if r.kind() == Kind::Pod
                    && let Some(&key) = wanted.get(&key)
                    && let Some(p) = crate::registry::pod_of(r)
                {
                    slim.insert(key, p);
                }
            }
        }
        let pods: HashMap<(&str, &str), &api::SlimPod> =
            slim.iter().map(|(&key, p)| (key, &**p)).collect();
        for host in hosts {
            self.sliced.remove(host);
            // Slices back Kubernetes Services only (a whole read reads them
            // before any ServiceEntry).
            if self.entries.values().any(|hs| hs.contains(host)) {
                return None;
            }
            let Some(slices) = slices.get(host.as_str()) else {
                continue;
            };
            if !self.services.contains_key(host) {
                continue;
            }
            let (sliced, cross_namespaces) =
                endpoint_slice::read_slices(slices, |ns, name| pods.get(&(ns, name)).copied());
            if cross_namespaces {
                return None;
            }
            self.sliced.insert(host.clone(), sliced);
        }
        Some(())
    }
}

/// A patched registry's workloads, and where the old registry's went.
struct PatchedWorkloads {
    workloads: Vec<Arc<Workload>>,
    /// By index in the old registry: the index of the same workload in
    /// `workloads`, `None` for those read again or gone.
    remap: Vec<Option<usize>>,
    /// The indexes of the workloads read again.
    fresh: Vec<usize>,
}

/// The pods and WorkloadEntries touched, by kind, namespace and name,
/// sorted: looked up once per workload of the mesh, and usually one or two.
struct Told<'a>(Vec<(WorkloadKind, &'a str, &'a str)>);

impl<'a> Told<'a> {
    fn new(mut objects: Vec<(WorkloadKind, &'a str, &'a str)>) -> Self {
        objects.sort_unstable();
        Told(objects)
    }

    fn has(&self, w: &Workload) -> bool {
        self.0
            .binary_search(&(w.kind, w.namespace.as_str(), w.name.as_str()))
            .is_ok()
    }
}
