//! The `istio-proxy` container: `trellis-proxy` with the pod's identity
//! and settings in its arguments and environment, Istio's readiness probe
//! and security context, sized by the mesh's or the pod's resources; and
//! the volumes it reads (the projected token, the mesh's root, pod info).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapVolumeSource, Container, ContainerPort, DownwardAPIVolumeFile,
    DownwardAPIVolumeSource, EnvVar, EnvVarSource, HTTPGetAction, ObjectFieldSelector, Probe,
    ProjectedVolumeSource, ResourceRequirements, SecurityContext, ServiceAccountTokenProjection,
    Volume, VolumeMount, VolumeProjection,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::json;

use super::{
    Config, HEALTH_PORT, InjectError, PROXY_CONTAINER, PROXY_UID, TOKEN_AUDIENCE, TOKEN_PATH,
    Workload, bad,
};

pub(super) const TOKEN_VOLUME: &str = "istio-token";
pub(super) const CA_VOLUME: &str = "istiod-ca-cert";
pub(super) const PODINFO_VOLUME: &str = "istio-podinfo";

/// What the proxy learns from its environment, as Istio's injector sets it.
pub(super) struct EnvInputs<'a> {
    pub namespace: &'a str,
    pub pod_ports: &'a [ContainerPort],
    pub app_containers: &'a [String],
    pub workload: &'a Workload,
    pub probers: &'a BTreeMap<String, serde_json::Value>,
    pub prometheus: Option<String>,
    pub metadata: &'a BTreeMap<String, String>,
}

pub(super) fn env(config: &Config, i: EnvInputs<'_>) -> Vec<EnvVar> {
    let mut env = vec![
        field_env("POD_NAME", "metadata.name"),
        field_env("POD_NAMESPACE", "metadata.namespace"),
        field_env("INSTANCE_IP", "status.podIP"),
        field_env("SERVICE_ACCOUNT", "spec.serviceAccountName"),
        field_env("HOST_IP", "status.hostIP"),
        value_env(
            "ISTIO_META_POD_PORTS",
            serde_json::to_string(i.pod_ports).unwrap_or_else(|_| "[]".into()),
        ),
        value_env("ISTIO_META_APP_CONTAINERS", i.app_containers.join(",")),
        value_env("ISTIO_META_CLUSTER_ID", "Kubernetes".into()),
        value_env("ISTIO_META_INTERCEPTION_MODE", "REDIRECT".into()),
        value_env("ISTIO_META_MESH_ID", config.mesh.trust_domain.clone()),
        value_env("TRUST_DOMAIN", config.mesh.trust_domain.clone()),
    ];
    let workload = i.workload;
    if !workload.name.is_empty() {
        env.push(value_env("ISTIO_META_WORKLOAD_NAME", workload.name.clone()));
        if !workload.api_version.is_empty() {
            env.push(value_env(
                "ISTIO_META_OWNER",
                format!(
                    "kubernetes://apis/{}/namespaces/{}/{}s/{}",
                    workload.api_version,
                    i.namespace,
                    workload.kind.to_ascii_lowercase(),
                    workload.name
                ),
            ));
        }
    }
    if !i.probers.is_empty() {
        env.push(value_env(
            "ISTIO_KUBE_APP_PROBERS",
            json!(i.probers).to_string(),
        ));
    }
    if let Some(p) = i.prometheus {
        env.push(value_env("ISTIO_PROMETHEUS_ANNOTATIONS", p));
    }
    for (k, v) in i.metadata {
        env.push(value_env(k, v.clone()));
    }
    env
}

pub(super) fn args(
    config: &Config,
    workers: u32,
    status_port: u16,
    workload: &Workload,
    labels: &BTreeMap<String, String>,
) -> Vec<String> {
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
    for (k, v) in labels {
        args.extend(["--label".into(), format!("{k}={v}")]);
    }
    args
}

/// The container, given its arguments and environment; `ann` reads the
/// pod's annotations (the proxy image and readiness overrides).
pub(super) fn container<'a>(
    config: &Config,
    ann: &dyn Fn(&str) -> Option<&'a str>,
    args: Vec<String>,
    env: Vec<EnvVar>,
    status_port: u16,
    native: bool,
    resources: ResourceRequirements,
) -> Result<Container, InjectError> {
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
    Ok(proxy)
}

/// The volumes the sidecar mounts: the projected service-account token
/// (audience `istio-ca`), the mesh's root certificate, and pod info.
pub(super) fn volumes() -> [Volume; 3] {
    [
        Volume {
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
        },
        Volume {
            name: CA_VOLUME.into(),
            config_map: Some(ConfigMapVolumeSource {
                name: crate::root_cert::CONFIGMAP_NAME.into(),
                ..Default::default()
            }),
            ..Default::default()
        },
        Volume {
            name: PODINFO_VOLUME.into(),
            downward_api: Some(DownwardAPIVolumeSource {
                items: Some(vec![
                    downward("labels", "metadata.labels"),
                    downward("annotations", "metadata.annotations"),
                ]),
                ..Default::default()
            }),
            ..Default::default()
        },
    ]
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

/// The sidecar's resources: Istio takes them from the four annotations when
/// any is set (and only from them), else from the injector's values.
pub(super) fn resources(
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
pub(super) fn is_quantity(s: &str) -> bool {
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
pub(super) fn workers(concurrency: Option<u32>, resources: &ResourceRequirements) -> u32 {
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
