//! The whole mesh at one moment: the registry and the Istio config, read from
//! resources once and shared by every proxy's compilation.

use api::networking::{DestinationRule, Gateway, Sidecar, VirtualService};
use api::security::{AuthorizationPolicy, PeerAuthentication, RequestAuthentication};
use api::telemetry::Telemetry;
use api::{Object, Resource};

use std::sync::Arc;

use crate::host;
use crate::incremental::Touched;
use crate::mesh_config::MeshConfig;
use crate::registry::Registry;

#[derive(Clone, Debug, Default)]
pub struct Mesh {
    pub config: MeshConfig,
    /// Shared between versions of the mesh that differ only in Istio config
    /// (see [`Mesh::rebuild`]): reading it is most of a build's work.
    pub registry: Arc<Registry>,
    pub virtual_services: Vec<Object<VirtualService>>,
    pub destination_rules: Vec<Object<DestinationRule>>,
    pub gateways: Vec<Object<Gateway>>,
    pub sidecars: Vec<Object<Sidecar>>,
    pub peer_authentications: Vec<Object<PeerAuthentication>>,
    pub authorization_policies: Vec<Object<AuthorizationPolicy>>,
    pub request_authentications: Vec<Object<RequestAuthentication>>,
    pub telemetries: Vec<Object<Telemetry>>,
    /// Secrets by (namespace, name): gateway servers' `credentialName`.
    pub secrets: std::collections::BTreeMap<(String, String), k8s_openapi::api::core::v1::Secret>,
    /// EnvoyFilters recognised as rate limits (local and global), by
    /// namespace and name (others are ignored whole; `analyze` reports them).
    pub rate_limit_filters: Vec<crate::rate_limit::RateLimitFilter>,
}

impl Mesh {
    /// Reads every resource the compiler understands; other kinds are left to
    /// the parts of the control plane that use them.
    pub fn build<'a>(
        resources: impl IntoIterator<Item = &'a Resource>,
        config: MeshConfig,
    ) -> Mesh {
        Self::read(resources, config, Carried::No)
    }

    /// The next version of this mesh, from all of `resources`, after a
    /// change that touched only the objects in `touched`: when none of them
    /// is of a kind the registry is read from (a VirtualService changed, say)
    /// and the MeshConfig is the same, the registry is carried over instead of
    /// read again; when some are, only they are read again (where that can
    /// be done object by object).
    pub fn rebuild<'a>(
        &self,
        resources: impl IntoIterator<Item = &'a Resource>,
        config: MeshConfig,
        touched: &Touched,
    ) -> Mesh {
        let registry = if config != self.config || touched.is_empty() {
            Carried::No
        } else if !touched.registry() {
            Carried::Whole(self.registry.clone())
        } else {
            // The registry is read from its own kinds alone: what else
            // changed with them does not matter to it.
            Carried::Patched(&self.registry, touched)
        };
        Self::read(resources, config, registry)
    }

    /// Reads the mesh from `resources`, the registry as `registry` says.
    fn read<'a>(
        resources: impl IntoIterator<Item = &'a Resource>,
        config: MeshConfig,
        registry: Carried<'_>,
    ) -> Mesh {
        let carried = matches!(registry, Carried::Whole(_));
        let mut mesh = Mesh {
            config,
            ..Default::default()
        };
        let mut registry_objects = Vec::new();
        for r in resources {
            match r {
                // Carried whole, the registry's own objects are not looked at.
                _ if !carried && crate::incremental::is_registry_kind(r.kind()) => {
                    registry_objects.push(r)
                }
                Resource::VirtualService(vs) => mesh.virtual_services.push((**vs).clone()),
                Resource::DestinationRule(dr) => mesh.destination_rules.push((**dr).clone()),
                Resource::Gateway(gw) => mesh.gateways.push(gw.clone()),
                Resource::Sidecar(sc) => mesh.sidecars.push((**sc).clone()),
                Resource::PeerAuthentication(pa) => mesh.peer_authentications.push(pa.clone()),
                Resource::AuthorizationPolicy(ap) => {
                    mesh.authorization_policies.push((**ap).clone())
                }
                Resource::RequestAuthentication(ra) => {
                    mesh.request_authentications.push((**ra).clone())
                }
                Resource::Telemetry(t) => mesh.telemetries.push((**t).clone()),
                Resource::Unsupported {
                    kind,
                    api_version,
                    name,
                    namespace,
                    spec,
                    ..
                } if kind == "EnvoyFilter" && api_version.starts_with("networking.istio.io/") => {
                    let ns = namespace.as_deref().unwrap_or("default");
                    match crate::rate_limit::recognise(ns, name, spec) {
                        Ok(f) => mesh.rate_limit_filters.push(f),
                        Err(why) => {
                            tracing::debug!(envoy_filter = %format!("{ns}/{name}"), "EnvoyFilter ignored: {why}")
                        }
                    }
                }
                Resource::Secret(s) => {
                    let ns = s
                        .metadata
                        .namespace
                        .clone()
                        .unwrap_or_else(|| "default".into());
                    mesh.secrets
                        .insert((ns, r.name().to_string()), (**s).clone());
                }
                _ => {}
            }
        }
        mesh.registry = match registry {
            Carried::Whole(registry) => registry,
            Carried::Patched(old, touched) => {
                match patch(old, &registry_objects, touched, &mesh.config) {
                    Some(patched) => Arc::new(patched),
                    None => Arc::new(read_registry(&registry_objects, &mesh.config)),
                }
            }
            Carried::No => Arc::new(read_registry(&registry_objects, &mesh.config)),
        };
        // Istio resolves conflicts by creation time; files carry none, so the
        // order is namespace/name, which is at least stable.
        mesh.virtual_services.sort_by_key(|o| key(&o.metadata));
        mesh.destination_rules.sort_by_key(|o| key(&o.metadata));
        mesh.gateways.sort_by_key(|o| key(&o.metadata));
        mesh.sidecars.sort_by_key(|o| key(&o.metadata));
        mesh.peer_authentications.sort_by_key(|o| key(&o.metadata));
        mesh.authorization_policies
            .sort_by_key(|o| key(&o.metadata));
        mesh.request_authentications
            .sort_by_key(|o| key(&o.metadata));
        mesh.telemetries.sort_by_key(|o| key(&o.metadata));
        mesh.rate_limit_filters
            .sort_by(|a, b| a.origin.cmp(&b.origin));
        mesh
    }

    pub fn fqdn(&self, host: &str, namespace: &str) -> String {
        host::fqdn(host, namespace, &self.config.domain_suffix)
    }

    /// The DestinationRule that applies to `hostname` for a client in
    /// `client_ns`: one in the client's namespace first, then the service's,
    /// then the root namespace — Istio's lookup order. The most specific host wins.
    pub fn destination_rule(
        &self,
        hostname: &str,
        client_ns: &str,
    ) -> Option<&Object<DestinationRule>> {
        let service_ns = self
            .registry
            .service(hostname)
            .map(|s| s.namespace.as_str());
        let search = [
            Some(client_ns),
            service_ns,
            Some(self.config.root_namespace.as_str()),
        ];
        for ns in search.into_iter().flatten() {
            let best = self
                .destination_rules
                .iter()
                .filter(|dr| dr.metadata.namespace.as_deref().unwrap_or("default") == ns)
                .filter(|dr| exported_to(&dr.spec.export_to, ns, client_ns))
                .filter(|dr| {
                    let pattern = self.fqdn(&dr.spec.host, ns);
                    host::matches(&pattern, hostname)
                })
                .max_by_key(|dr| host::specificity(&self.fqdn(&dr.spec.host, ns)));
            if best.is_some() {
                return best;
            }
        }
        None
    }
}

/// Istio's `exportTo`: empty or `*` is everywhere, `.` is the resource's own namespace.
pub fn exported_to(export_to: &[String], resource_ns: &str, client_ns: &str) -> bool {
    export_to.is_empty()
        || export_to
            .iter()
            .any(|e| e == "*" || e == client_ns || (e == "." && resource_ns == client_ns))
}

/// How much of the previous mesh's registry a rebuild carries over.
enum Carried<'a> {
    /// None: it is read from the resources.
    No,
    /// All of it: no object it is read from changed.
    Whole(Arc<Registry>),
    /// All but the registry objects touched, read again (when it can be,
    /// see [`Registry::with_service_entries`] and [`Registry::with_objects`]).
    Patched(&'a Registry, &'a Touched),
}

/// `old` with the registry objects `touched` read again from `objects`
/// (every object of the kinds it is read from, in their order); `None`
/// when the change is one to read whole.
fn patch(
    old: &Registry,
    objects: &[&Resource],
    touched: &Touched,
    config: &MeshConfig,
) -> Option<Registry> {
    use api::Kind;
    if !touched.registry_only(&[Kind::ServiceEntry]) {
        // ServiceEntries and the other kinds are patched apart: a change of
        // both is read whole.
        return touched
            .registry_only(&[
                Kind::Pod,
                Kind::WorkloadEntry,
                Kind::Service,
                Kind::EndpointSlice,
            ])
            .then(|| old.with_objects(objects, touched, config))
            .flatten();
    }
    let changed: Vec<(&str, &str)> = touched.of_kind(Kind::ServiceEntry).collect();
    let now: Vec<_> = objects
        .iter()
        .filter_map(|r| match r {
            Resource::ServiceEntry(se) => Some(&**se),
            _ => None,
        })
        .filter(|se| {
            let ns = se.metadata.namespace.as_deref().unwrap_or("default");
            changed.contains(&(ns, se.metadata.name.as_str()))
        })
        .collect();
    old.with_service_entries(&changed, &now)
}

/// The registry of `objects` (those of the kinds it is read from), in their order.
fn read_registry(objects: &[&Resource], config: &MeshConfig) -> Registry {
    let mut reg = Registry::default();
    let mut service_entries = Vec::new();
    let mut endpoint_slices = Vec::new();
    // Pods as the registry reads them, borrowed where they are slim already.
    let slim: Vec<_> = objects
        .iter()
        .filter_map(|r| crate::registry::pod_of(r))
        .collect();
    let mut pods = std::collections::HashMap::new();
    let mut slim_pods = slim.iter();
    for r in objects {
        match r {
            Resource::EndpointSlice(es) => endpoint_slices.push(&**es),
            Resource::WorkloadEntry(we) => reg.add_workload_entry(we),
            Resource::ServiceEntry(se) => service_entries.push(&**se),
            Resource::Service(s) => reg.add_k8s_service(s, config),
            Resource::Pod(_) | Resource::SlimPod(_) => {
                let Some(p) = slim_pods.next() else { continue };
                reg.add_pod(p);
                if let Some(ns) = &p.namespace {
                    pods.insert((ns.as_str(), p.name.as_str()), &**p);
                }
            }
            _ => {}
        }
    }
    // After every Service and workload: Kubernetes Services keep
    // their hosts, and a ServiceEntry's selector sees every workload.
    reg.add_endpoint_slices(&endpoint_slices, &pods, &config.domain_suffix);
    service_entries.sort_by_key(|o| key(&o.metadata));
    for se in service_entries {
        reg.add_service_entry(se);
    }
    reg.index();
    reg
}

fn key(m: &api::meta::ObjectMeta) -> (String, String) {
    (m.namespace.clone().unwrap_or_default(), m.name.clone())
}
