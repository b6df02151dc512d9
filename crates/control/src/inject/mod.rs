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

mod policy;
mod probes;

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapVolumeSource, Container, ContainerPort, DownwardAPIVolumeFile,
    DownwardAPIVolumeSource, EnvVar, EnvVarSource, HTTPGetAction, ObjectFieldSelector, Pod, Probe,
    ProjectedVolumeSource, ResourceRequirements, SecurityContext, ServiceAccountTokenProjection,
    Volume, VolumeMount, VolumeProjection,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::Deserialize;
use serde_json::json;

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

const TOKEN_VOLUME: &str = "istio-token";
const CA_VOLUME: &str = "istiod-ca-cert";
const PODINFO_VOLUME: &str = "istio-podinfo";

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
            discovery_address: "https://istiod.istio-system.svc:15012".into(),
            revision: "default".into(),
            policy: Policy::Enabled,
            resources: default_resources(),
            init_resources: default_init_resources(),
            native_sidecar: true,
            mesh: model::MeshConfig::default(),
            prometheus_merge: true,
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
    let resources = resources(&annotations, config)?;
    let workers = workers(concurrency, &resources);
    let capture = capture_args(&annotations, status_port, &metadata)?;
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

    let mut env = vec![
        field_env("POD_NAME", "metadata.name"),
        field_env("POD_NAMESPACE", "metadata.namespace"),
        field_env("INSTANCE_IP", "status.podIP"),
        field_env("SERVICE_ACCOUNT", "spec.serviceAccountName"),
        field_env("HOST_IP", "status.hostIP"),
        value_env(
            "ISTIO_META_POD_PORTS",
            serde_json::to_string(&pod_ports).unwrap_or_else(|_| "[]".into()),
        ),
        value_env("ISTIO_META_APP_CONTAINERS", app_containers.join(",")),
        value_env("ISTIO_META_CLUSTER_ID", "Kubernetes".into()),
        value_env("ISTIO_META_INTERCEPTION_MODE", "REDIRECT".into()),
        value_env("ISTIO_META_MESH_ID", config.mesh.trust_domain.clone()),
        value_env("TRUST_DOMAIN", config.mesh.trust_domain.clone()),
    ];
    if !workload.name.is_empty() {
        env.push(value_env("ISTIO_META_WORKLOAD_NAME", workload.name.clone()));
        if !workload.api_version.is_empty() {
            env.push(value_env(
                "ISTIO_META_OWNER",
                format!(
                    "kubernetes://apis/{}/namespaces/{}/{}s/{}",
                    workload.api_version,
                    pod.metadata.namespace.as_deref().unwrap_or("default"),
                    workload.kind.to_ascii_lowercase(),
                    workload.name
                ),
            ));
        }
    }
    if !probers.is_empty() {
        env.push(value_env(
            "ISTIO_KUBE_APP_PROBERS",
            json!(probers).to_string(),
        ));
    }
    if let Some(p) = prometheus_env {
        env.push(value_env("ISTIO_PROMETHEUS_ANNOTATIONS", p));
    }
    for (k, v) in &metadata {
        env.push(value_env(k, v.clone()));
    }

    let mut args = vec![
        "--xds".to_string(),
        config.discovery_address.clone(),
        "--token-file".into(),
        TOKEN_PATH.into(),
        "--trust-domain".into(),
        config.mesh.trust_domain.clone(),
        "--capture".into(),
        // The pod's own network namespace: no other pod reaches its loopback.
        "--admin-auth".into(),
        "loopback".into(),
        "--health".into(),
        format!("0.0.0.0:{HEALTH_PORT}"),
        "--workers".into(),
        workers.to_string(),
    ];
    if status_port != 0 {
        args.extend(["--status".into(), format!("0.0.0.0:{status_port}")]);
    }
    if !workload.name.is_empty() {
        args.extend(["--workload-name".into(), workload.name.clone()]);
    }
    for (k, v) in &labels {
        args.extend(["--label".into(), format!("{k}={v}")]);
    }

    let ready_probe = |period: i32, failures: i32| Probe {
        http_get: Some(HTTPGetAction {
            path: Some("/healthz/ready".into()),
            port: IntOrString::Int(i32::from(HEALTH_PORT)),
            ..Default::default()
        }),
        initial_delay_seconds: Some(0),
        period_seconds: Some(period),
        timeout_seconds: Some(3),
        failure_threshold: Some(failures),
        ..Default::default()
    };
    let int_ann = |key: &str, default: i32| -> Result<i32, InjectError> {
        match ann(key) {
            Some(v) => v
                .parse()
                .map_err(|_| bad(key, format!("{v:?} is not a whole number"))),
            None => Ok(default),
        }
    };
    let readiness = Probe {
        initial_delay_seconds: Some(int_ann(
            "readiness.status.sidecar.istio.io/initialDelaySeconds",
            0,
        )?),
        ..ready_probe(
            int_ann("readiness.status.sidecar.istio.io/periodSeconds", 15)?,
            int_ann("readiness.status.sidecar.istio.io/failureThreshold", 4)?,
        )
    };
    let mut proxy = Container {
        name: PROXY_CONTAINER.into(),
        image: Some(
            ann("sidecar.istio.io/proxyImage")
                .unwrap_or(&config.image)
                .to_string(),
        ),
        image_pull_policy: config.image_pull_policy.clone(),
        command: Some(vec!["trellis-proxy".into()]),
        args: Some(args),
        env: Some(env),
        ports: Some(vec![ContainerPort {
            name: Some("http-envoy-prom".into()),
            container_port: i32::from(if status_port != 0 {
                status_port
            } else {
                HEALTH_PORT
            }),
            protocol: Some("TCP".into()),
            ..Default::default()
        }]),
        readiness_probe: Some(readiness),
        // Native sidecars: the application starts once the proxy is ready.
        startup_probe: native.then(|| ready_probe(1, 600)),
        resources: Some(resources),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                ..Default::default()
            }),
            privileged: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_group: Some(PROXY_UID),
            run_as_non_root: Some(true),
            run_as_user: Some(PROXY_UID),
            ..Default::default()
        }),
        volume_mounts: Some(vec![
            mount(TOKEN_VOLUME, "/var/run/secrets/tokens"),
            mount(CA_VOLUME, "/var/run/secrets/istio"),
            mount(PODINFO_VOLUME, "/etc/istio/pod"),
        ]),
        ..Default::default()
    };
    if status_port == 0 {
        proxy.ports = None;
    }
    let init = Container {
        name: INIT_CONTAINER.into(),
        image: proxy.image.clone(),
        image_pull_policy: config.image_pull_policy.clone(),
        command: Some(vec!["trellis-proxy".into()]),
        args: Some(capture),
        resources: Some(config.init_resources.clone()),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            capabilities: Some(Capabilities {
                add: Some(vec!["NET_ADMIN".into(), "NET_RAW".into()]),
                drop: Some(vec!["ALL".into()]),
            }),
            privileged: Some(false),
            read_only_root_filesystem: Some(false),
            run_as_group: Some(0),
            run_as_non_root: Some(false),
            run_as_user: Some(0),
            ..Default::default()
        }),
        ..Default::default()
    };

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

    let volumes = spec.volumes.get_or_insert_with(Vec::new);
    volumes.push(Volume {
        name: TOKEN_VOLUME.into(),
        projected: Some(ProjectedVolumeSource {
            sources: Some(vec![VolumeProjection {
                service_account_token: Some(ServiceAccountTokenProjection {
                    audience: Some(TOKEN_AUDIENCE.into()),
                    expiration_seconds: Some(43200),
                    path: "istio-token".into(),
                }),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    });
    volumes.push(Volume {
        name: CA_VOLUME.into(),
        config_map: Some(ConfigMapVolumeSource {
            name: crate::root_cert::CONFIGMAP_NAME.into(),
            ..Default::default()
        }),
        ..Default::default()
    });
    volumes.push(Volume {
        name: PODINFO_VOLUME.into(),
        downward_api: Some(DownwardAPIVolumeSource {
            items: Some(vec![
                downward("labels", "metadata.labels"),
                downward("annotations", "metadata.annotations"),
            ]),
            ..Default::default()
        }),
        ..Default::default()
    });

    // Istio's marks: the status (never inject twice), the revision, which
    // container `kubectl logs` and `exec` default to, and the labels
    // telemetry and mTLS auto-detection read.
    let status = json!({
        "initContainers": [INIT_CONTAINER],
        "containers": [PROXY_CONTAINER],
        "volumes": [TOKEN_VOLUME, CA_VOLUME, PODINFO_VOLUME],
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

/// The change from `before` to `after` (the injected pod) as a JSON Patch
/// for the pod as the API server sent it. Both sides are read through the
/// same types, so the patch holds only the sidecar; the injected init
/// containers are inserted by index rather than diffed against the pod's
/// own (which would merge fields these types do not know into them).
pub fn patch(before: &Pod, after: &Pod) -> Result<json_patch::Patch, serde_json::Error> {
    let mut b = serde_json::to_value(before)?;
    let mut a = serde_json::to_value(after)?;
    let take = |v: &mut serde_json::Value| -> Option<Vec<serde_json::Value>> {
        v.get_mut("spec")?
            .as_object_mut()?
            .remove("initContainers")?
            .as_array()
            .cloned()
    };
    let own = take(&mut b);
    let all = take(&mut a).unwrap_or_default();
    let own_len = own.as_ref().map_or(0, Vec::len);
    let added = all.len().saturating_sub(own_len);
    if all[added..] != own.clone().unwrap_or_default()[..] {
        // Not a prepend: the whole pod diffed.
        return Ok(json_patch::diff(
            &serde_json::to_value(before)?,
            &serde_json::to_value(after)?,
        ));
    }
    let mut ops: Vec<serde_json::Value> = Vec::new();
    match own {
        None if added > 0 => ops.push(json!({
            "op": "add", "path": "/spec/initContainers", "value": all[..added],
        })),
        None => {}
        Some(_) => {
            for (i, c) in all[..added].iter().enumerate() {
                ops.push(
                    json!({"op": "add", "path": format!("/spec/initContainers/{i}"), "value": c}),
                );
            }
        }
    }
    let mut patch: json_patch::Patch = serde_json::from_value(serde_json::Value::Array(ops))?;
    patch.0.extend(json_patch::diff(&b, &a).0);
    Ok(patch)
}

fn field_env(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn value_env(name: &str, value: String) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value),
        ..Default::default()
    }
}

fn mount(name: &str, path: &str) -> VolumeMount {
    VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        ..Default::default()
    }
}

fn downward(path: &str, field: &str) -> DownwardAPIVolumeFile {
    DownwardAPIVolumeFile {
        path: path.into(),
        field_ref: Some(ObjectFieldSelector {
            field_path: field.into(),
            ..Default::default()
        }),
        ..Default::default()
    }
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

/// The sidecar's resources: Istio takes them from the four annotations when
/// any is set (and only from them), else from the injector's values.
fn resources(
    annotations: &BTreeMap<String, String>,
    config: &Config,
) -> Result<ResourceRequirements, InjectError> {
    let keys = [
        ("sidecar.istio.io/proxyCPU", true, "cpu"),
        ("sidecar.istio.io/proxyMemory", true, "memory"),
        ("sidecar.istio.io/proxyCPULimit", false, "cpu"),
        ("sidecar.istio.io/proxyMemoryLimit", false, "memory"),
    ];
    if !keys.iter().any(|(k, _, _)| annotations.contains_key(*k)) {
        return Ok(config.resources.clone());
    }
    let mut requests = BTreeMap::new();
    let mut limits = BTreeMap::new();
    for (key, request, resource) in keys {
        let Some(value) = annotations.get(key) else {
            continue;
        };
        if !is_quantity(value) {
            return Err(bad(
                key,
                format!("{value:?} is not a Kubernetes quantity (e.g. 100m, 128Mi)"),
            ));
        }
        let into = if request { &mut requests } else { &mut limits };
        into.insert(resource.to_string(), Quantity(value.clone()));
    }
    Ok(ResourceRequirements {
        requests: (!requests.is_empty()).then_some(requests),
        limits: (!limits.is_empty()).then_some(limits),
        ..Default::default()
    })
}

/// Kubernetes' quantity syntax: a decimal number, then an exponent or a
/// binary or decimal suffix.
fn is_quantity(s: &str) -> bool {
    let s = s.strip_prefix(['+', '-']).unwrap_or(s);
    let digits = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, suffix) = s.split_at(digits);
    let number_ok = !number.is_empty() && number != "." && number.matches('.').count() <= 1;
    let suffix_ok = matches!(
        suffix,
        "" | "m" | "k" | "M" | "G" | "T" | "P" | "E" | "Ki" | "Mi" | "Gi" | "Ti" | "Pi" | "Ei"
    ) || suffix
        .strip_prefix(['e', 'E'])
        .map(|e| e.strip_prefix(['+', '-']).unwrap_or(e))
        .is_some_and(|e| !e.is_empty() && e.chars().all(|c| c.is_ascii_digit()));
    number_ok && suffix_ok
}

/// Worker threads: the configured concurrency; 0 or unset with a CPU
/// limit, that limit rounded up (Istio sizes the proxy by its CPU); else 2.
fn workers(concurrency: Option<u32>, resources: &ResourceRequirements) -> u32 {
    let by_limit = || {
        resources
            .limits
            .as_ref()
            .and_then(|l| l.get("cpu"))
            .and_then(|q| cpu_cores(&q.0))
            .map(|c| (c.ceil() as u32).max(1))
    };
    match concurrency {
        Some(0) => by_limit().unwrap_or(2),
        Some(n) => n,
        None => by_limit().unwrap_or(2).min(2),
    }
}

fn cpu_cores(q: &str) -> Option<f64> {
    match q.strip_suffix('m') {
        Some(milli) => milli.parse::<f64>().ok().map(|m| m / 1000.0),
        None => q.parse().ok(),
    }
}

/// The `trellis-proxy iptables` arguments from the pod's
/// `traffic.sidecar.istio.io/*` annotations, each checked here so that a
/// typo is refused with the pod rather than failing its init container.
fn capture_args(
    annotations: &BTreeMap<String, String>,
    status_port: u16,
    metadata: &BTreeMap<String, String>,
) -> Result<Vec<String>, InjectError> {
    let get = |k: &str, default: &str| {
        annotations
            .get(&format!("traffic.sidecar.istio.io/{k}"))
            .map(|v| v.trim().to_string())
            .unwrap_or_else(|| default.to_string())
    };
    let key = |k: &str| format!("traffic.sidecar.istio.io/{k}");
    let include_out = get("includeOutboundIPRanges", "*");
    if include_out != "*" {
        check_cidrs(&key("includeOutboundIPRanges"), &include_out)?;
    }
    let exclude_out = get("excludeOutboundIPRanges", "");
    check_cidrs(&key("excludeOutboundIPRanges"), &exclude_out)?;
    let include_in = get("includeInboundPorts", "*");
    if include_in != "*" {
        check_ports(&key("includeInboundPorts"), &include_in)?;
    }
    let mut exclude_in = get("excludeInboundPorts", "");
    check_ports(&key("excludeInboundPorts"), &exclude_in)?;
    // The status port is the kubelet's, never captured (15020 and 15021 never are).
    if status_port != 0 && status_port != STATUS_PORT {
        exclude_in = [exclude_in, status_port.to_string()]
            .into_iter()
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join(",");
    }
    let exclude_out_ports = get("excludeOutboundPorts", "");
    check_ports(&key("excludeOutboundPorts"), &exclude_out_ports)?;
    let mut args = vec![
        "iptables".to_string(),
        format!("--includeOutboundIPRanges={include_out}"),
        format!("--excludeOutboundIPRanges={exclude_out}"),
        format!("--includeInboundPorts={include_in}"),
        format!("--excludeInboundPorts={exclude_in}"),
        format!("--excludeOutboundPorts={exclude_out_ports}"),
        format!("--proxy-uid={PROXY_UID}"),
        format!("--proxy-gid={PROXY_UID}"),
    ];
    // DNS is captured only when the proxy answers it (Istio's ISTIO_META_DNS_CAPTURE).
    if metadata.get("ISTIO_META_DNS_CAPTURE").map(String::as_str) != Some("true") {
        args.push("--no-dns".into());
    }
    Ok(args)
}

fn items(value: &str) -> impl Iterator<Item = &str> {
    value.split(',').map(str::trim).filter(|s| !s.is_empty())
}

fn check_cidrs(annotation: &str, value: &str) -> Result<(), InjectError> {
    for item in items(value) {
        let (ip, len) = item.split_once('/').unwrap_or((item, ""));
        let ok = match ip.parse::<std::net::IpAddr>() {
            Ok(addr) => {
                let max = if addr.is_ipv4() { 32 } else { 128 };
                len.is_empty() || len.parse::<u8>().is_ok_and(|l| l <= max)
            }
            Err(_) => false,
        };
        if !ok {
            return Err(bad(
                annotation,
                format!("{item:?} is not an IP range (CIDR, e.g. 10.0.0.0/8)"),
            ));
        }
    }
    Ok(())
}

fn check_ports(annotation: &str, value: &str) -> Result<(), InjectError> {
    for item in items(value) {
        if item.parse::<u16>().map_or(true, |p| p == 0) {
            return Err(bad(
                annotation,
                format!("{item:?} is not a port number (1-65535)"),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
