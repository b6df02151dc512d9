//! Sidecar injection, as Istio's injector does it, as a pure function: a
//! Pod (with its namespace's labels, the mesh config and the pod's own
//! annotations) in, the Pod with its sidecar out. The webhook
//! ([`crate::webhook`]) and `trellis kube-inject` both call it.
//!
//! What a pod gets: an `istio-init` init container running
//! `trellis-proxy iptables` with the capture flags its
//! `traffic.sidecar.istio.io/*` annotations ask for; an `istio-proxy`
//! container running `trellis-proxy` — a native sidecar (an init container
//! with `restartPolicy: Always`) where the cluster has them, else a plain
//! container; the projected service-account token (audience `istio-ca`) the
//! proxy proves its identity with; its HTTP and TCP probes pointed through
//! the sidecar's status port; Prometheus annotations pointing at the
//! sidecar, which merges the application's metrics; and Istio's labels and
//! `sidecar.istio.io/status` annotation, by which an injected pod is never
//! injected again.

mod init;
mod patch;
mod policy;
mod probes;
mod sidecar;

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ContainerPort, Pod, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use serde::Deserialize;
use serde_json::json;

pub use patch::patch;
pub use policy::{Decision, INJECT, NAMESPACE_INJECTION, Policy, REVISION, Scope, decide};

/// The sidecar container's name, which `kubectl logs POD -c istio-proxy` and dashboards use.
pub const PROXY_CONTAINER: &str = "istio-proxy";
/// The init container writing the capture rules.
pub const INIT_CONTAINER: &str = "istio-init";
/// What was injected (JSON); its presence means "injected already".
pub const STATUS_ANNOTATION: &str = "sidecar.istio.io/status";
/// Where the proxy reads its service-account token (Istio's path).
pub const TOKEN_PATH: &str = "/var/run/secrets/tokens/istio-token";
/// The audience of that token, which the CA's TokenReview asks for.
pub const TOKEN_AUDIENCE: &str = "istio-ca";
/// The proxy's user and group: its own traffic is not captured.
pub const PROXY_UID: i64 = 1337;
/// Istio's status port: probes and merged metrics.
pub const STATUS_PORT: u16 = 15020;
/// Istio's health port: the sidecar's own readiness.
pub const HEALTH_PORT: u16 = 15021;

/// Where injected sidecars reach the discovery and certificate service
/// unless configured otherwise: the istiod Service in istio-system.
pub const DEFAULT_DISCOVERY_ADDRESS: &str = "https://istiod.istio-system.svc:15012";

/// How this control plane injects (Istio: the injector's `values` and `config`).
#[derive(Clone, Debug)]
pub struct Config {
    /// The `trellis-proxy` image, for both containers.
    pub image: String,
    pub image_pull_policy: Option<String>,
    /// Where the sidecar finds the discovery and certificate service.
    pub discovery_address: String,
    /// This control plane's revision (`istio.io/rev`); Istio's is `default`.
    pub revision: String,
    pub policy: Policy,
    /// Istio's `values.global.proxy.resources`.
    pub resources: ResourceRequirements,
    /// Istio's `values.global.proxy_init.resources`.
    pub init_resources: ResourceRequirements,
    /// Whether the cluster has native sidecars (Kubernetes 1.29 and later);
    /// a pod may override it with `sidecar.istio.io/nativeSidecar`.
    pub native_sidecar: bool,
    /// Trust domain and `defaultConfig` (proxyMetadata, concurrency).
    pub mesh: model::MeshConfig,
    /// Istio's `meshConfig.enablePrometheusMerge` (default on).
    pub prometheus_merge: bool,
    /// The discovery of a pod that does not choose one: its Namespace's
    /// [`DISCOVERY_ANNOTATION`], which the webhook reads for each pod.
    pub namespace_discovery: Discovery,
}

fn quantities(pairs: &[(&str, &str)]) -> BTreeMap<String, Quantity> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), Quantity(v.to_string())))
        .collect()
}

/// Istio's defaults for the sidecar: requests 100m/128Mi, limits 2000m/1024Mi.
pub fn default_resources() -> ResourceRequirements {
    ResourceRequirements {
        requests: Some(quantities(&[("cpu", "100m"), ("memory", "128Mi")])),
        limits: Some(quantities(&[("cpu", "2000m"), ("memory", "1024Mi")])),
        ..Default::default()
    }
}

/// Istio's defaults for the init container: requests 10m/10Mi, limits 2000m/1024Mi.
pub fn default_init_resources() -> ResourceRequirements {
    ResourceRequirements {
        requests: Some(quantities(&[("cpu", "10m"), ("memory", "10Mi")])),
        limits: Some(quantities(&[("cpu", "2000m"), ("memory", "1024Mi")])),
        ..Default::default()
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            image: "trellis/trellis-proxy:latest".into(),
            image_pull_policy: None,
            discovery_address: DEFAULT_DISCOVERY_ADDRESS.into(),
            revision: "default".into(),
            policy: Policy::Enabled,
            resources: default_resources(),
            init_resources: default_init_resources(),
            native_sidecar: true,
            mesh: model::MeshConfig::default(),
            prometheus_merge: true,
            namespace_discovery: Discovery::Whole,
        }
    }
}

impl Config {
    /// The injector's settings from Istio's `values` (the
    /// istio-sidecar-injector ConfigMap's `values` key): the image
    /// (`global.proxy.image`, a full reference or a name under
    /// `global.hub` at `global.tag`), `global.imagePullPolicy`,
    /// `global.proxy.resources`, `global.proxy_init.resources`,
    /// `global.proxy.autoInject` (the policy) and `revision`. What is not
    /// given keeps Istio's default.
    pub fn from_values(values: &serde_json::Value) -> Result<Config, String> {
        let mut config = Config::default();
        let global = &values["global"];
        let text = |v: &serde_json::Value| v.as_str().filter(|s| !s.is_empty()).map(String::from);
        if let Some(image) = text(&global["proxy"]["image"]) {
            config.image = if image.contains('/') {
                image
            } else {
                let hub = text(&global["hub"]).ok_or("global.proxy.image without global.hub")?;
                let tag = text(&global["tag"]).unwrap_or_else(|| "latest".into());
                format!("{hub}/{image}:{tag}")
            };
        }
        config.image_pull_policy = text(&global["imagePullPolicy"]);
        let resources = |path: &str, v: &serde_json::Value| {
            serde_json::from_value::<ResourceRequirements>(v.clone())
                .map_err(|e| format!("{path}: {e}"))
        };
        if !global["proxy"]["resources"].is_null() {
            config.resources = resources("global.proxy.resources", &global["proxy"]["resources"])?;
        }
        if !global["proxy_init"]["resources"].is_null() {
            config.init_resources = resources(
                "global.proxy_init.resources",
                &global["proxy_init"]["resources"],
            )?;
        }
        match text(&global["proxy"]["autoInject"]).as_deref() {
            None | Some("enabled") => {}
            Some("disabled") => config.policy = Policy::Disabled,
            Some(other) => {
                return Err(format!(
                    "global.proxy.autoInject: {other:?} is neither enabled nor disabled"
                ));
            }
        }
        if let Some(rev) = text(&values["revision"]) {
            config.revision = rev;
        }
        Ok(config)
    }
}

/// The workload a pod belongs to (Istio's DeploymentMeta), when the caller
/// knows it (kube-inject injects the Deployment's template); otherwise it
/// is read from the pod's owner references.
#[derive(Clone, Debug, Default)]
pub struct Workload {
    pub name: String,
    /// `apps/v1`, `batch/v1`, …
    pub api_version: String,
    pub kind: String,
}

/// A pod annotation the injector cannot use: the pod is refused (the
/// webhook) or the file is (kube-inject), naming the annotation.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("annotation {annotation}: {message}")]
pub struct InjectError {
    pub annotation: String,
    pub message: String,
}

fn bad(annotation: &str, message: impl Into<String>) -> InjectError {
    InjectError {
        annotation: annotation.into(),
        message: message.into(),
    }
}

/// The injected pod, and what was asked for but is not done (returned to
/// the user as admission warnings, printed by kube-inject).
#[derive(Debug)]
pub struct Injected {
    pub pod: Pod,
    pub warnings: Vec<String>,
}

/// The part of Istio's ProxyConfig (`proxy.istio.io/config`) the sidecar uses.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct ProxyConfigOverride {
    concurrency: Option<u32>,
    #[serde(default)]
    proxy_metadata: BTreeMap<String, String>,
    hold_application_until_proxy_starts: Option<bool>,
    #[serde(flatten)]
    other: BTreeMap<String, serde_json::Value>,
}

/// Which outbound hosts a pod's proxy is sent: `on-demand` (those it
/// calls, see `model::on_demand`) or `whole` (the default); on the pod, or
/// on its Namespace for the pods that do not say.
pub const DISCOVERY_ANNOTATION: &str = "trellis.dev/discovery";

/// What [`DISCOVERY_ANNOTATION`] chooses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Discovery {
    #[default]
    Whole,
    OnDemand,
}

impl Discovery {
    /// The choice `annotations` (a pod's or a Namespace's) make, if any.
    pub fn chosen(
        annotations: Option<&BTreeMap<String, String>>,
    ) -> Result<Option<Discovery>, String> {
        match annotations
            .and_then(|a| a.get(DISCOVERY_ANNOTATION))
            .map(String::as_str)
        {
            None => Ok(None),
            Some("whole") => Ok(Some(Discovery::Whole)),
            Some("on-demand") => Ok(Some(Discovery::OnDemand)),
            Some(other) => Err(format!("{other:?} is neither \"on-demand\" nor \"whole\"")),
        }
    }
}

/// Adds the sidecar to `pod` (whose injection was decided by [`decide`]).
pub fn inject(
    pod: &Pod,
    config: &Config,
    workload: Option<&Workload>,
) -> Result<Injected, InjectError> {
    let mut pod = pod.clone();
    let mut warnings = Vec::new();
    let annotations = pod.metadata.annotations.clone().unwrap_or_default();
    let labels = pod.metadata.labels.clone().unwrap_or_default();
    let ann = |k: &str| annotations.get(k).map(String::as_str);

    // proxy.istio.io/config over meshConfig.defaultConfig.
    let own: ProxyConfigOverride = match ann("proxy.istio.io/config") {
        Some(text) => serde_yaml_ng::from_str(text)
            .map_err(|e| bad("proxy.istio.io/config", format!("not a ProxyConfig: {e}")))?,
        None => ProxyConfigOverride::default(),
    };
    for field in own.other.keys() {
        warnings.push(format!(
            "proxy.istio.io/config: {field} is not applied by the Trellis sidecar"
        ));
    }
    let mut metadata = config.mesh.default_config.proxy_metadata.clone();
    metadata.extend(own.proxy_metadata.clone());
    let concurrency = own.concurrency.or(config.mesh.default_config.concurrency);
    let hold = own.hold_application_until_proxy_starts.unwrap_or(false);

    let status_port = match ann("status.sidecar.istio.io/port") {
        Some(p) => p.parse::<u16>().map_err(|_| {
            bad(
                "status.sidecar.istio.io/port",
                format!("{p:?} is not a port number (0 turns the status port off)"),
            )
        })?,
        None => STATUS_PORT,
    };
    let resources = sidecar::resources(&annotations, config)?;
    let workers = sidecar::workers(concurrency, &resources);
    let capture = init::capture_args(&annotations, status_port, &metadata)?;
    if let Some(mode) = ann("sidecar.istio.io/interceptionMode")
        && mode != "REDIRECT"
    {
        warnings.push(format!(
            "sidecar.istio.io/interceptionMode {mode}: the Trellis sidecar captures with REDIRECT only"
        ));
    }
    let native = match ann("sidecar.istio.io/nativeSidecar") {
        Some("true") => true,
        Some("false") => false,
        Some(other) => {
            return Err(bad(
                "sidecar.istio.io/nativeSidecar",
                format!("{other:?} is neither \"true\" nor \"false\""),
            ));
        }
        None => config.native_sidecar,
    };

    let workload = workload.cloned().unwrap_or_else(|| workload_of(&pod));
    let namespace = pod
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let spec = pod.spec.get_or_insert_with(Default::default);
    let app_containers: Vec<String> = spec.containers.iter().map(|c| c.name.clone()).collect();
    let pod_ports: Vec<ContainerPort> = spec
        .containers
        .iter()
        .flat_map(|c| c.ports.clone().unwrap_or_default())
        .collect();

    let rewrite = status_port != 0
        && ann("sidecar.istio.io/rewriteAppHTTPProbers").is_none_or(|v| v != "false");
    let probers = if rewrite {
        probes::rewrite(&mut spec.containers, status_port, &mut warnings)
    } else {
        BTreeMap::new()
    };

    // Prometheus scrapes the sidecar, which adds the application's metrics.
    let mut new_annotations = annotations.clone();
    let mut prometheus_env = None;
    if config.prometheus_merge && ann("prometheus.io/scrape") != Some("false") && status_port != 0 {
        let original: BTreeMap<&str, &str> = ["scrape", "path", "port"]
            .into_iter()
            .filter_map(|k| ann(&format!("prometheus.io/{k}")).map(|v| (k, v)))
            .collect();
        if !original.is_empty() {
            prometheus_env = Some(json!(original).to_string());
        }
        new_annotations.insert("prometheus.io/scrape".into(), "true".into());
        new_annotations.insert("prometheus.io/port".into(), status_port.to_string());
        new_annotations.insert("prometheus.io/path".into(), "/stats/prometheus".into());
    }

    let env = sidecar::env(
        config,
        sidecar::EnvInputs {
            namespace: &namespace,
            pod_ports: &pod_ports,
            app_containers: &app_containers,
            workload: &workload,
            probers: &probers,
            prometheus: prometheus_env,
            metadata: &metadata,
        },
    );
    let mut args = sidecar::args(config, workers, status_port, &workload, &labels);
    // Trellis's own: which outbound hosts the control plane sends the proxy.
    // The pod's own choice wins over its namespace's.
    let discovery = Discovery::chosen(Some(&annotations))
        .map_err(|m| bad(DISCOVERY_ANNOTATION, m))?
        .unwrap_or(config.namespace_discovery);
    if discovery == Discovery::OnDemand {
        args.extend(["--discovery".into(), "on-demand".into()]);
    }
    let mut proxy = sidecar::container(config, &ann, args, env, status_port, native, resources)?;
    let init = init::container(config, proxy.image.clone(), capture);

    let mut init_containers = vec![init];
    if native {
        proxy.restart_policy = Some("Always".into());
        init_containers.push(proxy);
    } else if hold {
        // Istio's holdApplicationUntilProxyStarts: first among the containers.
        spec.containers.insert(0, proxy);
    } else {
        spec.containers.push(proxy);
    }
    if hold && !native {
        warnings.push(
            "holdApplicationUntilProxyStarts: without native sidecars the proxy is started first but the application does not wait for it to be ready".into(),
        );
    }
    init_containers.extend(spec.init_containers.take().unwrap_or_default());
    spec.init_containers = Some(init_containers);
    spec.volumes
        .get_or_insert_with(Vec::new)
        .extend(sidecar::volumes());

    // Istio's marks: the status (never inject twice), the revision, which
    // container `kubectl logs` and `exec` default to, and the labels
    // telemetry and mTLS auto-detection read.
    let status = json!({
        "initContainers": [INIT_CONTAINER],
        "containers": [PROXY_CONTAINER],
        "volumes": [sidecar::TOKEN_VOLUME, sidecar::CA_VOLUME, sidecar::PODINFO_VOLUME],
        "imagePullSecrets": null,
        "revision": config.revision,
    });
    new_annotations.insert(STATUS_ANNOTATION.into(), status.to_string());
    new_annotations.insert(REVISION.into(), config.revision.clone());
    if let Some(first) = app_containers.first() {
        for k in [
            "kubectl.kubernetes.io/default-container",
            "kubectl.kubernetes.io/default-logs-container",
        ] {
            new_annotations
                .entry(k.into())
                .or_insert_with(|| first.clone());
        }
    }
    pod.metadata.annotations = Some(new_annotations);
    let mut new_labels = labels.clone();
    new_labels.insert("security.istio.io/tlsMode".into(), "istio".into());
    let canonical_name = [
        "service.istio.io/canonical-name",
        "app.kubernetes.io/name",
        "app",
    ]
    .iter()
    .find_map(|k| labels.get(*k).cloned())
    .unwrap_or_else(|| workload.name.clone());
    if !canonical_name.is_empty() {
        new_labels
            .entry("service.istio.io/canonical-name".into())
            .or_insert(canonical_name);
    }
    let canonical_revision = [
        "service.istio.io/canonical-revision",
        "app.kubernetes.io/version",
        "version",
    ]
    .iter()
    .find_map(|k| labels.get(*k).cloned())
    .unwrap_or_else(|| "latest".into());
    new_labels
        .entry("service.istio.io/canonical-revision".into())
        .or_insert(canonical_revision);
    pod.metadata.labels = Some(new_labels);
    Ok(Injected { pod, warnings })
}
/// The workload from the pod's controller: a ReplicaSet's Deployment (its
/// name less the pod-template-hash), a Job's CronJob, or the controller
/// itself; the pod's (generate)name without one.
fn workload_of(pod: &Pod) -> Workload {
    let meta = &pod.metadata;
    let owner = meta
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true));
    let hash = meta
        .labels
        .as_ref()
        .and_then(|l| l.get("pod-template-hash"));
    match owner {
        Some(o) if o.kind == "ReplicaSet" => {
            match hash.and_then(|h| o.name.strip_suffix(&format!("-{h}"))) {
                Some(deployment) => Workload {
                    name: deployment.into(),
                    api_version: "apps/v1".into(),
                    kind: "Deployment".into(),
                },
                None => Workload {
                    name: o.name.clone(),
                    api_version: o.api_version.clone(),
                    kind: o.kind.clone(),
                },
            }
        }
        Some(o) => Workload {
            name: o.name.clone(),
            api_version: o.api_version.clone(),
            kind: o.kind.clone(),
        },
        None => Workload {
            name: meta
                .name
                .clone()
                .or_else(|| {
                    meta.generate_name
                        .as_ref()
                        .map(|g| g.trim_end_matches('-').to_string())
                })
                .unwrap_or_default(),
            ..Default::default()
        },
    }
}
#[cfg(test)]
mod tests;
