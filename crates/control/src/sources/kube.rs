//! The Kubernetes source: one reflector (a kube-rs watcher: list, then
//! watch, relisting when the watch expires with 410 Gone, retrying with
//! backoff when the API server is away) per kind the mesh reads — Namespaces,
//! Services, EndpointSlices, Pods, ServiceAccounts, Secrets and every Istio
//! kind — and one on the `istio` ConfigMap in `istio-system`, Istio's
//! MeshConfig. Objects are parsed and validated as the file source's are;
//! an invalid one is left out and reported (logged, and in its `status` by
//! the leader, see [`crate::status`]), and never stops the others.
//!
//! While the API server is unreachable the set keeps what was last seen, so
//! proxies keep their config (static stability); a relist replaces a kind
//! in one step, so nothing is dropped while it is under way.

mod pod;

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use api::{Kind, Resource};
use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DynamicObject};
use kube::core::{ApiResource, GroupVersionKind};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use serde::de::DeserializeOwned;
use tokio::sync::watch;

use self::pod::WatchedPod;
use super::{ResourceSet, Stored};
use crate::store::{Key, share_like};

/// How `trellisd` reaches the API server.
#[derive(Clone, Debug)]
pub enum Connect {
    /// A kubeconfig file (its current context).
    Kubeconfig(PathBuf),
    /// The pod's service account, as a control plane running in the cluster.
    InCluster,
}

#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    #[error("kubeconfig {path}: {source}")]
    Kubeconfig {
        path: PathBuf,
        source: kube::config::KubeconfigError,
    },
    #[error("in-cluster Kubernetes config: {0}")]
    InCluster(#[from] kube::config::InClusterError),
    #[error("Kubernetes client: {0}")]
    Client(#[from] kube::Error),
}

/// Where the mesh config lives, as in Istio.
pub const MESH_CONFIG_NAMESPACE: &str = "istio-system";
pub const MESH_CONFIG_NAME: &str = "istio";
/// The ConfigMap key holding MeshConfig as YAML.
const MESH_CONFIG_KEY: &str = "mesh";

/// The kinds read from the cluster. Deployments are not: pods carry what
/// the registry needs of them (labels, owner, service account).
/// EnvoyFilters are, unmodelled: the mesh translates the rate limiting
/// ones and reports the others as ignored, as from files.
const WATCHED: &[Watched] = &[
    Watched::Kind(Kind::Namespace),
    Watched::Kind(Kind::Service),
    Watched::Kind(Kind::EndpointSlice),
    Watched::Kind(Kind::Pod),
    Watched::Kind(Kind::ServiceAccount),
    Watched::Kind(Kind::Secret),
    Watched::Kind(Kind::VirtualService),
    Watched::Kind(Kind::DestinationRule),
    Watched::Kind(Kind::Gateway),
    Watched::Kind(Kind::ServiceEntry),
    Watched::Kind(Kind::Sidecar),
    Watched::Kind(Kind::WorkloadEntry),
    Watched::Kind(Kind::WorkloadGroup),
    Watched::Kind(Kind::PeerAuthentication),
    Watched::Kind(Kind::RequestAuthentication),
    Watched::Kind(Kind::AuthorizationPolicy),
    Watched::Kind(Kind::Telemetry),
    Watched::EnvoyFilter,
];

/// What one reflector reads: a modelled kind, or Istio's EnvoyFilter
/// (served at networking.istio.io/v1alpha3 only; kept as written).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Watched {
    Kind(Kind),
    EnvoyFilter,
}

impl Watched {
    fn as_str(self) -> &'static str {
        match self {
            Watched::Kind(k) => k.as_str(),
            Watched::EnvoyFilter => "EnvoyFilter",
        }
    }

    fn plural(self) -> &'static str {
        match self {
            Watched::Kind(k) => k.plural(),
            Watched::EnvoyFilter => "envoyfilters",
        }
    }

    fn api_versions(self) -> Vec<String> {
        match self {
            Watched::Kind(k) => k.api_versions(),
            Watched::EnvoyFilter => vec!["networking.istio.io/v1alpha3".to_string()],
        }
    }

    /// Istio objects are also kept as stored, valid or not, for the status
    /// writer; not EnvoyFilters, whose status Trellis does not write.
    fn reported(self) -> bool {
        matches!(self, Watched::Kind(k) if k.is_istio())
    }
}

impl std::fmt::Display for Watched {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// As istiod: service account tokens and Helm's release records are never
/// gateway credentials or CA material.
const SECRET_FIELDS: &str = "type!=kubernetes.io/service-account-token,type!=helm.sh/release.v1";

/// Objects per list request. A page is decoded whole before its first
/// object is read: kube-rs's 500 held ~15 MB of injected pods at once.
const LIST_PAGE_SIZE: u32 = 100;

/// How long to wait before looking again for an Istio kind whose CRD is
/// not installed.
const CRD_RECHECK: Duration = Duration::from_secs(10);

pub async fn client(connect: &Connect) -> Result<kube::Client, KubeError> {
    let config = match connect {
        Connect::Kubeconfig(path) => {
            let kubeconfig = kube::config::Kubeconfig::read_from(path).map_err(|source| {
                KubeError::Kubeconfig {
                    path: path.clone(),
                    source,
                }
            })?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
                .await
                .map_err(|source| KubeError::Kubeconfig {
                    path: path.clone(),
                    source,
                })?
        }
        Connect::InCluster => kube::Config::incluster()?,
    };
    Ok(kube::Client::try_from(config)?)
}

/// Starts the reflectors feeding a new [`ResourceSet`] and returns it once
/// every kind has been listed once (a kind whose CRD is not installed counts
/// as listed, empty), so that no proxy is ever served a half-read cluster.
pub async fn start(connect: &Connect) -> Result<Arc<ResourceSet>, KubeError> {
    let client = client(connect).await?;
    let set = Arc::new(ResourceSet::default());
    let (synced_tx, mut synced_rx) = watch::channel(BTreeMap::<&'static str, bool>::new());
    let synced_tx = Arc::new(synced_tx);
    synced_tx.send_modify(|s| {
        s.insert("MeshConfig", false);
        for kind in WATCHED {
            s.insert(kind.as_str(), false);
        }
    });
    for &kind in WATCHED {
        let (client, set, synced) = (client.clone(), set.clone(), synced_tx.clone());
        tokio::spawn(async move {
            reflect(client, kind, &set, &|| {
                synced.send_if_modified(|s| s.insert(kind.as_str(), true) != Some(true));
            })
            .await
        });
    }
    {
        let (client, set, synced) = (client.clone(), set.clone(), synced_tx.clone());
        tokio::spawn(async move {
            reflect_mesh_config(client, &set, &|| {
                synced.send_if_modified(|s| s.insert("MeshConfig", true) != Some(true));
            })
            .await
        });
    }
    loop {
        let pending: Vec<&str> = synced_rx
            .borrow_and_update()
            .iter()
            .filter(|(_, done)| !**done)
            .map(|(k, _)| *k)
            .collect();
        if pending.is_empty() {
            break;
        }
        match tokio::time::timeout(Duration::from_secs(10), synced_rx.changed()).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => break,
            Err(_) => tracing::info!(?pending, "waiting for the first list of these kinds"),
        }
    }
    tracing::info!(
        resources = set.resources().len(),
        "Kubernetes source synced"
    );
    Ok(set)
}

/// Keeps `kind`'s objects in `set` current, forever.
async fn reflect(
    client: kube::Client,
    kind: Watched,
    set: &ResourceSet,
    synced: &(dyn Fn() + Sync),
) {
    let mut said = false;
    let resource = loop {
        match api_resource(&client, kind).await {
            Ok(Some(r)) => break r,
            Ok(None) => {
                // Nothing of this kind can exist yet; look again later, the
                // CRD may be installed after the control plane. Said once:
                // a cluster may well not have EnvoyFilter's CRD.
                synced();
                if !std::mem::replace(&mut said, true) {
                    tracing::warn!(
                        kind = kind.as_str(),
                        versions = ?kind.api_versions(),
                        "the API server serves none of this kind's versions (CRD not installed?); not read until it does"
                    );
                }
                tokio::time::sleep(CRD_RECHECK).await;
            }
            Err(error) => {
                tracing::warn!(kind = kind.as_str(), %error, "API discovery failed; retrying");
                tokio::time::sleep(CRD_RECHECK).await;
            }
        }
    };
    let mut config = watcher::Config::default().page_size(LIST_PAGE_SIZE);
    if kind == Watched::Kind(Kind::Secret) {
        config = config.fields(SECRET_FIELDS);
    }
    if kind == Watched::Kind(Kind::Pod) {
        let api: Api<WatchedPod> = Api::all(client);
        follow(api, config, kind, &resource, set, synced).await
    } else {
        let api: Api<DynamicObject> = Api::all_with(client, &resource);
        follow(api, config, kind, &resource, set, synced).await
    }
}

/// An object as a list or watch of its kind decodes it.
trait Watchable: kube::Resource + Clone + DeserializeOwned + Debug + Send + 'static {
    /// Its `status` as stored, for the status writer.
    fn status(&self) -> Option<&serde_json::Value>;

    /// The object as the file source would read it, or why it does not
    /// parse or validate.
    fn convert(self, kind: Watched, resource: &ApiResource) -> Result<Resource, Vec<String>>;
}

impl Watchable for DynamicObject {
    fn status(&self) -> Option<&serde_json::Value> {
        self.data.get("status")
    }

    fn convert(self, kind: Watched, resource: &ApiResource) -> Result<Resource, Vec<String>> {
        convert(kind, resource, self)
    }
}

/// Follows one kind's list and watch events into `set`, forever.
async fn follow<K: Watchable>(
    api: Api<K>,
    config: watcher::Config,
    kind: Watched,
    resource: &ApiResource,
    set: &ResourceSet,
    synced: &(dyn Fn() + Sync),
) {
    let mut events = watcher::watcher(api, config).default_backoff().boxed();
    let mut listed = Vec::new();
    let mut listed_stored = Vec::new();
    // Istio objects are also kept as stored, valid or not, for their status.
    let report = kind.reported();
    while let Some(event) = events.next().await {
        match event {
            Ok(Event::Init) => {
                listed.clear();
                listed_stored.clear();
            }
            Ok(Event::InitApply(obj)) => {
                let key = key_of(kind, obj.meta());
                let stored = report.then(|| stored(resource, &obj));
                match convert_logged(kind, resource, obj) {
                    // A list comes in name order, a ReplicaSet's pods together:
                    // shared as they come, a list of 5,000 pods peaks 9 MiB lower.
                    Ok(mut r) => {
                        share_like(&mut r, listed.last());
                        listed.push(r)
                    }
                    Err(invalid) => {
                        if let Some(mut s) = stored {
                            s.invalid = invalid;
                            listed_stored.push((key, s));
                        }
                        continue;
                    }
                }
                listed_stored.extend(stored.map(|s| (key, s)));
            }
            Ok(Event::InitDone) => {
                let n = listed.len();
                set.replace_kind(kind.as_str(), std::mem::take(&mut listed));
                if report {
                    set.restore_kind(kind.as_str(), std::mem::take(&mut listed_stored));
                }
                tracing::debug!(kind = kind.as_str(), objects = n, "listed");
                synced();
            }
            Ok(Event::Apply(obj)) => {
                let key = key_of(kind, obj.meta());
                let mut stored = report.then(|| stored(resource, &obj));
                match convert_logged(kind, resource, obj) {
                    Ok(r) => set.apply(r),
                    // No longer valid: what the cluster holds is not what we
                    // served, so it is served no more (as istiod drops it).
                    Err(invalid) => {
                        set.remove(&key);
                        if let Some(s) = &mut stored {
                            s.invalid = invalid;
                        }
                    }
                }
                if let Some(s) = stored {
                    set.store(key, s);
                }
            }
            Ok(Event::Delete(obj)) => {
                let key = key_of(kind, obj.meta());
                set.remove(&key);
                set.unstore(&key);
            }
            Err(error) => tracing::warn!(
                kind = kind.as_str(),
                %error,
                "watch failed; serving what was last seen while retrying"
            ),
        }
    }
}

/// What the status writer needs of a stored Istio object.
fn stored(resource: &ApiResource, obj: &impl Watchable) -> Stored {
    Stored {
        api_version: resource.api_version.clone(),
        resource_version: obj.meta().resource_version.clone(),
        generation: obj.meta().generation,
        status: obj.status().cloned(),
        invalid: Vec::new(),
    }
}

/// The `istio` ConfigMap's MeshConfig, kept current in `set`.
async fn reflect_mesh_config(client: kube::Client, set: &ResourceSet, synced: &(dyn Fn() + Sync)) {
    let api: Api<ConfigMap> = Api::namespaced(client, MESH_CONFIG_NAMESPACE);
    let config = watcher::Config::default().fields(&format!("metadata.name={MESH_CONFIG_NAME}"));
    let mut events = watcher::watcher(api, config).default_backoff().boxed();
    let mut listed = None;
    while let Some(event) = events.next().await {
        match event {
            Ok(Event::Init) => listed = None,
            Ok(Event::InitApply(cm)) => listed = Some(cm),
            Ok(Event::InitDone) => {
                match listed.take() {
                    Some(cm) => apply_mesh_config(set, &cm),
                    None => set.set_mesh_config(None),
                }
                synced();
            }
            Ok(Event::Apply(cm)) => apply_mesh_config(set, &cm),
            Ok(Event::Delete(_)) => set.set_mesh_config(None),
            Err(error) => tracing::warn!(
                %error,
                "watch of the mesh config failed; keeping the last one while retrying"
            ),
        }
    }
}

/// An invalid mesh config is reported and the last valid one kept, as istiod does.
fn apply_mesh_config(set: &ResourceSet, cm: &ConfigMap) {
    let text = cm
        .data
        .as_ref()
        .and_then(|d| d.get(MESH_CONFIG_KEY))
        .map(String::as_str)
        .unwrap_or_default();
    match mesh_config(text) {
        Ok(config) => set.set_mesh_config(Some(config)),
        Err(error) => tracing::error!(
            configmap = %format!("{MESH_CONFIG_NAMESPACE}/{MESH_CONFIG_NAME}"),
            key = MESH_CONFIG_KEY,
            %error,
            "invalid mesh config; keeping the previous one"
        ),
    }
}

/// MeshConfig from the ConfigMap's `mesh` key (empty: every default).
pub fn mesh_config(text: &str) -> Result<model::MeshConfig, serde_yaml_ng::Error> {
    if text.trim().is_empty() {
        return Ok(model::MeshConfig::default());
    }
    serde_yaml_ng::from_str(text)
}

/// Where `kind` is served: its fixed place for Kubernetes kinds; for Istio
/// kinds the newest of their versions the API server serves (a CRD serves
/// every version from one stored object, so watching one sees objects
/// written at any of them), or `None` when none is.
async fn api_resource(
    client: &kube::Client,
    kind: Watched,
) -> Result<Option<ApiResource>, kube::Error> {
    if let Watched::Kind(kind) = kind
        && !kind.is_istio()
    {
        let (group, version) = match kind.default_api_version().split_once('/') {
            Some((g, v)) => (g, v),
            None => ("", kind.default_api_version()),
        };
        let gvk = GroupVersionKind::gvk(group, version, kind.as_str());
        return Ok(Some(ApiResource::from_gvk_with_plural(&gvk, kind.plural())));
    }
    for api_version in kind.api_versions() {
        let served = match client.list_api_group_resources(&api_version).await {
            Ok(list) => list.resources.iter().any(|r| r.name == kind.plural()),
            Err(kube::Error::Api(status)) if status.is_not_found() => false,
            Err(e) => return Err(e),
        };
        if served {
            let (group, version) = api_version.split_once('/').unwrap_or(("", &api_version));
            let gvk = GroupVersionKind::gvk(group, version, kind.as_str());
            return Ok(Some(ApiResource::from_gvk_with_plural(&gvk, kind.plural())));
        }
    }
    Ok(None)
}

fn key_of(kind: Watched, metadata: &ObjectMeta) -> Key {
    Key {
        kind: kind.as_str().to_string(),
        namespace: if kind == Watched::Kind(Kind::Namespace) {
            String::new()
        } else {
            metadata.namespace.clone().unwrap_or_default()
        },
        name: metadata.name.clone().unwrap_or_default(),
    }
}

/// The object as the file source would read it, or why it does not parse
/// or validate.
fn convert(
    kind: Watched,
    resource: &ApiResource,
    mut obj: DynamicObject,
) -> Result<Resource, Vec<String>> {
    // Bulky, and nothing the mesh reads.
    obj.metadata.managed_fields = None;
    // Changed by every write, status included: a status write must not
    // look like a change of the mesh.
    obj.metadata.resource_version = None;
    let name = match &obj.metadata.namespace {
        Some(ns) => format!("{kind}/{ns}/{}", obj.metadata.name.as_deref().unwrap_or("")),
        None => format!("{kind}/{}", obj.metadata.name.as_deref().unwrap_or("")),
    };
    // The object's fields besides its metadata are a JSON tree already:
    // moved, not copied (`serde_json::to_value(&obj)` made a second tree).
    let mut fields = match obj.data {
        serde_json::Value::Object(fields) => fields,
        _ => serde_json::Map::new(),
    };
    let metadata = serde_json::to_value(&obj.metadata).map_err(|error| vec![error.to_string()])?;
    fields.insert("metadata".into(), metadata);
    // Items of a list carry no apiVersion/kind of their own.
    fields.insert("apiVersion".into(), resource.api_version.clone().into());
    fields.insert("kind".into(), resource.kind.clone().into());
    let r = api::parse_value(&name, serde_json::Value::Object(fields))
        .map_err(|error| vec![error.to_string()])?;
    let errors = api::validate(&r);
    if !errors.is_empty() {
        return Err(errors.iter().map(ToString::to_string).collect());
    }
    // Kept in memory as the mesh reads it: a Pod in its slim form.
    Ok(r.slim())
}

/// [`convert`], logging why an object is left out.
fn convert_logged(
    kind: Watched,
    resource: &ApiResource,
    obj: impl Watchable,
) -> Result<Resource, Vec<String>> {
    let key = key_of(kind, obj.meta());
    let converted = obj.convert(kind, resource);
    // Never silent: an EnvoyFilter the mesh does not translate is ignored whole.
    if let Ok(Resource::Unsupported {
        namespace,
        name,
        spec,
        ..
    }) = &converted
        && kind == Watched::EnvoyFilter
        && let Err(why) =
            model::rate_limit::recognise(namespace.as_deref().unwrap_or("default"), name, spec)
    {
        tracing::warn!(object = %format!("EnvoyFilter/{}/{name}", key.namespace), "EnvoyFilter ignored: {why}");
    }
    converted.inspect_err(|errors| {
        let object = if key.namespace.is_empty() {
            format!("{}/{}", key.kind, key.name)
        } else {
            format!("{}/{}/{}", key.kind, key.namespace, key.name)
        };
        tracing::warn!(%object, errors = %errors.join("; "), "invalid object left out of the mesh");
    })
}

/// What the mesh reads from a cluster, listed once (for `trellis analyze -k`).
#[derive(Debug, Default)]
pub struct Listed {
    /// Every object that parses and validates.
    pub resources: Vec<Resource>,
    /// Objects stored that do not parse or validate, and why.
    pub invalid: Vec<(Key, Vec<String>)>,
    /// Kinds not listed: the caller may not list them (RBAC), with the reason.
    pub forbidden: Vec<(Kind, String)>,
}

/// Lists every kind the source reads, in every namespace, once.
pub async fn list(client: &kube::Client) -> Result<Listed, KubeError> {
    let mut listed = Listed::default();
    for &kind in WATCHED {
        let Some(resource) = api_resource(client, kind).await? else {
            continue;
        };
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &resource);
        let mut params = kube::api::ListParams::default();
        if kind == Watched::Kind(Kind::Secret) {
            params = params.fields(SECRET_FIELDS);
        }
        let items = match api.list(&params).await {
            Ok(list) => list.items,
            Err(kube::Error::Api(s)) if s.is_forbidden() => {
                match kind {
                    Watched::Kind(kind) => listed.forbidden.push((kind, s.message)),
                    Watched::EnvoyFilter => {
                        tracing::warn!(reason = %s.message, "EnvoyFilters not listed")
                    }
                }
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        for obj in items {
            let key = key_of(kind, &obj.metadata);
            match convert(kind, &resource, obj) {
                Ok(r) => listed.resources.push(r),
                Err(errors) => listed.invalid.push((key, errors)),
            }
        }
    }
    Ok(listed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_list_items_without_type_and_reports_invalid_ones() {
        let resource = ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("networking.istio.io", "v1", "VirtualService"),
            "virtualservices",
        );
        let obj = |spec: serde_json::Value| -> DynamicObject {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": "r", "namespace": "ns1", "resourceVersion": "7",
                             "managedFields": [{"manager": "kubectl"}]},
                "spec": spec,
            }))
            .unwrap()
        };
        let good = convert(
            Watched::Kind(Kind::VirtualService),
            &resource,
            obj(serde_json::json!({"hosts": ["r"], "http": [{"route": [{"destination": {"host": "r"}}]}]})),
        )
        .unwrap();
        assert_eq!(good.display_name(), "VirtualService/ns1/r");
        let metadata = good.to_json()["metadata"].to_string();
        assert!(!metadata.contains("managedFields") && !metadata.contains("resourceVersion"));
        let misspelt = obj(serde_json::json!({"hosts": ["r"], "htp": []}));
        assert!(convert(Watched::Kind(Kind::VirtualService), &resource, misspelt).is_err());
        let invalid = obj(serde_json::json!({"hosts": []}));
        let errors = convert(Watched::Kind(Kind::VirtualService), &resource, invalid).unwrap_err();
        assert!(errors.iter().any(|e| e.starts_with("spec")), "{errors:?}");
    }

    #[test]
    fn mesh_config_from_the_configmap_key() {
        let c = mesh_config("trustDomain: example.org\nrootNamespace: mesh-root\n").unwrap();
        assert_eq!(c.trust_domain, "example.org");
        assert_eq!(c.root_namespace, "mesh-root");
        assert_eq!(mesh_config("").unwrap(), model::MeshConfig::default());
        assert!(mesh_config("trustDomain: [1").is_err());
    }
}
