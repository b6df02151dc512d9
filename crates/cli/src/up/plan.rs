//! What `trellis up` will run: from the manifests, the pods with their
//! addresses, sidecars and programs — the scheduler and injector of a
//! one-machine cluster.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};

use crate::local::programs::program_for;
use api::Resource;
use control::inject::{DISCOVERY_ANNOTATION, Discovery};
use identity::{SECRET_TTL, secret_ttl};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Container, Namespace, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::json;

pub const INGRESS_NAMESPACE: &str = "istio-system";
pub const INGRESS_NAME: &str = "istio-ingressgateway";
pub const EGRESS_NAME: &str = "istio-egressgateway";
/// Istio's per-pod override of MeshConfig's `defaultConfig` (a ProxyConfig, YAML or JSON).
pub const PROXY_CONFIG_ANNOTATION: &str = "proxy.istio.io/config";

/// The loopback addresses of one mesh: `127.<block>.0.1` for the control
/// plane, `127.<block>.(1+2k).n` for pod IPs and `127.<block>.(2+2k).n` for the
/// address each pod's application binds, which only its sidecar forwards to.
/// With `pods` (namespace mode), pod IPs come from that range instead, and
/// each application binds its own namespace's 127.0.0.1.
#[derive(Clone, Copy, Debug)]
pub struct Addresses {
    pub block: u8,
    pub pods: Option<crate::local::netns::PodCidr>,
}

impl Addresses {
    pub fn control_plane(&self) -> Ipv4Addr {
        Ipv4Addr::new(127, self.block, 0, 1)
    }

    fn pod(&self, index: usize) -> Result<(Ipv4Addr, Ipv4Addr)> {
        if let Some(cidr) = self.pods {
            return Ok((cidr.pod(index)?, Ipv4Addr::LOCALHOST));
        }
        let row = u8::try_from(index / 250)
            .ok()
            .filter(|r| *r < 127)
            .with_context(|| {
                format!(
                    "127.{}.0.0/16 has no address for pod {}",
                    self.block,
                    index + 1
                )
            })?;
        let col = (index % 250) as u8 + 1;
        Ok((
            Ipv4Addr::new(127, self.block, 1 + 2 * row, col),
            Ipv4Addr::new(127, self.block, 2 + 2 * row, col),
        ))
    }
}

#[derive(Clone, Debug)]
pub struct PodPlan {
    pub name: String,
    /// The Deployment it belongs to.
    pub workload: String,
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
    pub service_account: String,
    pub pod_ip: Ipv4Addr,
    pub app_ip: Ipv4Addr,
    pub gateway: bool,
    pub sidecar: bool,
    /// The proxy's `proxyMetadata`: MeshConfig's `defaultConfig`, then the pod's
    /// `proxy.istio.io/config`, key by key (Istio's merge); the proxy's environment.
    pub proxy_env: Vec<(String, String)>,
    /// `trellis-proxy iptables` flags from the pod's `traffic.sidecar.istio.io/*` annotations.
    pub capture_args: Vec<String>,
    /// The application's own metrics (port, path) from the template's
    /// `prometheus.io/*` annotations, merged into the proxy's on 15020.
    pub app_metrics: Option<(u16, String)>,
    pub containers: Vec<ContainerPlan>,
}

#[derive(Clone, Debug)]
pub struct ContainerPlan {
    pub name: String,
    pub program: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
}

impl PodPlan {
    pub fn id(&self) -> String {
        format!("{}.{}", self.name, self.namespace)
    }

    /// Where its proxy serves Prometheus (15020, 15090), as Istio binds
    /// them: on the pod's address in namespace mode; in loopback mode on
    /// the application's address (the pod address's ports are the
    /// application's). `None`: no proxy.
    pub fn metrics_ip(&self) -> Option<Ipv4Addr> {
        (self.sidecar || self.gateway).then(|| {
            if self.app_ip == Ipv4Addr::LOCALHOST {
                self.pod_ip
            } else {
                self.app_ip
            }
        })
    }

    /// The Pod object the control plane learns endpoints from, as the kubelet would report it.
    pub fn to_resource(&self, containers: &[Container]) -> Result<Resource> {
        let mut annotations = serde_json::Map::new();
        annotations.insert(
            model::registry::WORKLOAD_ANNOTATION.into(),
            json!(self.workload),
        );
        if self.sidecar {
            annotations.insert(
                "sidecar.istio.io/status".into(),
                json!("{\"containers\":[\"istio-proxy\"]}"),
            );
        }
        if self.gateway {
            // What makes the control plane treat its proxy as a gateway.
            annotations.insert(
                model::registry::GATEWAY_TEMPLATE_ANNOTATION.into(),
                json!("gateway"),
            );
        }
        // In namespace mode the admin port is inside the pod, which the
        // host cannot reach: no address is better than the host's 127.0.0.1.
        if (self.sidecar || self.gateway) && self.app_ip != Ipv4Addr::LOCALHOST {
            // Where the proxy's admin port is, for people and tests (Envoy's 15000).
            annotations.insert(
                "proxy.trellis.io/admin".into(),
                json!(format!("{}:{}", self.app_ip, super::ADMIN_PORT)),
            );
        }
        if let Some(ip) = self.metrics_ip() {
            // As Istio's injector rewrites them: Prometheus scrapes the
            // merged endpoint, which carries the application's metrics too.
            annotations.insert("prometheus.io/scrape".into(), json!("true"));
            annotations.insert(
                "prometheus.io/port".into(),
                json!(super::MERGED_METRICS_PORT.to_string()),
            );
            annotations.insert("prometheus.io/path".into(), json!("/stats/prometheus"));
            annotations.insert(
                "proxy.trellis.io/metrics".into(),
                json!(format!(
                    "{ip}:{} {ip}:{}",
                    super::MERGED_METRICS_PORT,
                    super::STATS_PORT
                )),
            );
        }
        let containers: Vec<_> = containers
            .iter()
            .map(|c| json!({"name": c.name, "image": c.image, "ports": c.ports}))
            .collect();
        let pod = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": self.name, "namespace": self.namespace, "labels": self.labels, "annotations": annotations},
            "spec": {"serviceAccountName": self.service_account, "containers": containers},
            "status": {"phase": "Running", "podIP": self.pod_ip.to_string(), "podIPs": [{"ip": self.pod_ip.to_string()}]}
        });
        let text = serde_json::to_string(&pod)?;
        Ok(api::parse("<trellis up>", &text)?.remove(0))
    }
}

pub struct Plan {
    /// The user's resources plus what `up` adds (istio-system, the ingress gateway's Service, the Pods).
    pub resources: Vec<Resource>,
    pub pods: Vec<PodPlan>,
}

/// A Kubernetes-looking pod name: `<deployment>-<template hash>-<suffix>`, stable across runs.
fn pod_name(deployment: &str, index: usize) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut h: u64 = 0xcbf29ce484222325;
    for b in deployment.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x100000001b3);
    }
    let mut word = |n: usize| -> String {
        (0..n)
            .map(|_| {
                h = h
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ALPHABET[(h >> 33) as usize % ALPHABET.len()] as char
            })
            .collect()
    };
    let template = word(9);
    for _ in 0..index {
        word(5);
    }
    format!("{deployment}-{template}-{}", word(5))
}

fn resolve_env(c: &Container, pod: &PodPlan) -> Vec<(String, String)> {
    c.env
        .iter()
        .flatten()
        .filter_map(|e| {
            let value = match (&e.value, &e.value_from) {
                (Some(v), _) => v.clone(),
                (None, Some(from)) => {
                    match from.field_ref.as_ref().map(|f| f.field_path.as_str()) {
                        Some("metadata.name") => pod.name.clone(),
                        Some("metadata.namespace") => pod.namespace.clone(),
                        Some("status.podIP") => pod.pod_ip.to_string(),
                        Some("spec.serviceAccountName") => pod.service_account.clone(),
                        _ => return None,
                    }
                }
                (None, None) => String::new(),
            };
            Some((e.name.clone(), value))
        })
        .collect()
}

/// The capture annotations Istio's init container honours, which
/// `trellis-proxy iptables` takes as flags of the same names.
const CAPTURE_ANNOTATIONS: [&str; 5] = [
    "includeOutboundIPRanges",
    "excludeOutboundIPRanges",
    "includeInboundPorts",
    "excludeInboundPorts",
    "excludeOutboundPorts",
];

fn capture_args(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> Vec<String> {
    let empty = BTreeMap::new();
    let annotations = meta.annotations.as_ref().unwrap_or(&empty);
    CAPTURE_ANNOTATIONS
        .iter()
        .filter_map(|name| {
            let value = annotations.get(&format!("traffic.sidecar.istio.io/{name}"));
            Some([format!("--{name}"), value?.clone()])
        })
        .flatten()
        .collect()
}

/// The application's metrics endpoint, from `prometheus.io/scrape: "true"`
/// with `prometheus.io/port` (and `prometheus.io/path`, "/metrics" if not
/// given), as Istio's metrics merging reads them.
fn app_metrics(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> Option<(u16, String)> {
    let a = meta.annotations.as_ref()?;
    if a.get("prometheus.io/scrape").map(String::as_str) != Some("true") {
        return None;
    }
    let port = a.get("prometheus.io/port")?.parse().ok()?;
    let path = a
        .get("prometheus.io/path")
        .cloned()
        .unwrap_or_else(|| "/metrics".into());
    Some((port, path))
}

/// Istio injects a sidecar unless the pod or its namespace opts out.
fn wants_sidecar(d: &Deployment, namespaces: &BTreeMap<String, Namespace>, ns: &str) -> bool {
    let template = d.spec.as_ref().and_then(|s| s.template.metadata.as_ref());
    let pod_opt_out = template
        .and_then(|m| m.annotations.as_ref())
        .and_then(|a| a.get("sidecar.istio.io/inject"))
        .or_else(|| {
            template
                .and_then(|m| m.labels.as_ref())
                .and_then(|l| l.get("sidecar.istio.io/inject"))
        })
        .is_some_and(|v| v == "false");
    let ns_opt_out = namespaces
        .get(ns)
        .and_then(|n| n.metadata.labels.as_ref())
        .and_then(|l| l.get("istio-injection"))
        .is_some_and(|v| v == "disabled");
    !pod_opt_out && !ns_opt_out
}

/// The template's `trellis.dev/discovery`, else its namespace's, as the
/// injector reads them (it turns `on-demand` into `--discovery on-demand`).
fn discovery(
    template: &ObjectMeta,
    namespaces: &BTreeMap<String, Namespace>,
    ns: &str,
    name: &str,
) -> Result<Discovery> {
    let own = Discovery::chosen(template.annotations.as_ref()).map_err(|e| {
        anyhow::anyhow!("Deployment {ns}/{name}: annotation {DISCOVERY_ANNOTATION}: {e}")
    })?;
    if let Some(own) = own {
        return Ok(own);
    }
    let of_namespace = namespaces
        .get(ns)
        .and_then(|n| n.metadata.annotations.as_ref());
    let chosen = Discovery::chosen(of_namespace)
        .map_err(|e| anyhow::anyhow!("Namespace {ns}: annotation {DISCOVERY_ANNOTATION}: {e}"))?;
    Ok(chosen.unwrap_or_default())
}

/// The pod's proxyMetadata: the mesh's, overridden key by key by the
/// template's `proxy.istio.io/config` annotation; a bad `SECRET_TTL` is an error naming where it came from.
fn proxy_metadata(
    mesh: &model::MeshConfig,
    d: Option<(&Deployment, &str, &str)>,
) -> Result<Vec<(String, String)>> {
    let mut metadata = mesh.default_config.proxy_metadata.clone();
    let mut from_pod = false;
    let annotation = d.and_then(|(d, ns, name)| {
        let value = d
            .spec
            .as_ref()?
            .template
            .metadata
            .as_ref()?
            .annotations
            .as_ref()?
            .get(PROXY_CONFIG_ANNOTATION)?;
        Some((value, ns, name))
    });
    if let Some((text, ns, name)) = annotation {
        let pod: model::mesh_config::ProxyConfig = serde_yaml_ng::from_str(text)
            .with_context(|| format!("Deployment {ns}/{name}: annotation {PROXY_CONFIG_ANNOTATION}: not a ProxyConfig"))?;
        from_pod = pod.proxy_metadata.contains_key(SECRET_TTL);
        metadata.extend(pod.proxy_metadata);
    }
    if let Some(value) = metadata.get(SECRET_TTL)
        && let Err(e) = secret_ttl(value)
    {
        match annotation {
            Some((_, ns, name)) if from_pod => {
                bail!(
                    "Deployment {ns}/{name}: annotation {PROXY_CONFIG_ANNOTATION}: proxyMetadata.{SECRET_TTL}: {e}"
                )
            }
            _ => bail!("mesh.yaml: defaultConfig.proxyMetadata.{SECRET_TTL}: {e}"),
        }
    }
    Ok(metadata.into_iter().collect())
}

pub fn plan(
    mut resources: Vec<Resource>,
    addrs: Addresses,
    mesh: &model::MeshConfig,
) -> Result<Plan> {
    let namespaces: BTreeMap<String, Namespace> = resources
        .iter()
        .filter_map(|r| match r {
            Resource::Namespace(n) => Some((r.name().to_string(), (**n).clone())),
            _ => None,
        })
        .collect();
    let mut pods = Vec::new();
    let mut pod_resources = Vec::new();
    for r in &resources {
        let Resource::Deployment(d) = r else { continue };
        let ns = r.namespace().unwrap_or("default").to_string();
        let spec = d.spec.clone().unwrap_or_default();
        let template_meta = spec.template.metadata.clone().unwrap_or_default();
        let pod_spec = spec.template.spec.clone().unwrap_or_default();
        let sidecar = wants_sidecar(d, &namespaces, &ns);
        let mut proxy_env = proxy_metadata(mesh, Some((d, &ns, r.name())))?;
        if discovery(&template_meta, &namespaces, &ns, r.name())? == Discovery::OnDemand {
            proxy_env.push(("TRELLIS_DISCOVERY".into(), "on-demand".into()));
        }
        for i in 0..spec.replicas.unwrap_or(1).max(0) as usize {
            let (pod_ip, app_ip) = addrs.pod(pods.len())?;
            let mut pod = PodPlan {
                name: pod_name(r.name(), i),
                workload: r.name().to_string(),
                namespace: ns.clone(),
                labels: template_meta.labels.clone().unwrap_or_default(),
                service_account: pod_spec
                    .service_account_name
                    .clone()
                    .unwrap_or_else(|| "default".into()),
                pod_ip,
                app_ip,
                gateway: false,
                sidecar,
                proxy_env: proxy_env.clone(),
                capture_args: capture_args(&template_meta),
                app_metrics: app_metrics(&template_meta),
                containers: Vec::new(),
            };
            for c in &pod_spec.containers {
                let (program, args) = program_for(c)
                    .map_err(|e| anyhow::anyhow!("Deployment {ns}/{}: {e}", r.name()))?;
                let env = resolve_env(c, &pod);
                pod.containers.push(ContainerPlan {
                    name: c.name.clone(),
                    program,
                    args,
                    env,
                });
            }
            pod_resources.push(pod.to_resource(&pod_spec.containers)?);
            pods.push(pod);
        }
    }
    add_gateway(
        GatewayKind::Ingress,
        &mut resources,
        &mut pods,
        &mut pod_resources,
        addrs,
        proxy_metadata(mesh, None)?,
    )?;
    if selects_egress_gateway(&resources) {
        add_gateway(
            GatewayKind::Egress,
            &mut resources,
            &mut pods,
            &mut pod_resources,
            addrs,
            proxy_metadata(mesh, None)?,
        )?;
    }
    resources.extend(pod_resources);
    Ok(Plan { resources, pods })
}

/// The gateways `up` installs in istio-system, as Istio's profiles do.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum GatewayKind {
    /// `istio-ingressgateway`, always (Istio's default profile).
    Ingress,
    /// `istio-egressgateway` (Istio's demo profile), when a Gateway in the
    /// mesh's directory selects `istio: egressgateway`.
    Egress,
}

impl GatewayKind {
    pub fn name(self) -> &'static str {
        match self {
            GatewayKind::Ingress => INGRESS_NAME,
            GatewayKind::Egress => EGRESS_NAME,
        }
    }

    /// Its `istio` label, what Gateways select.
    fn istio_label(self) -> &'static str {
        match self {
            GatewayKind::Ingress => "ingressgateway",
            GatewayKind::Egress => "egressgateway",
        }
    }
}

/// Whether a Gateway asks for an egress gateway (`selector: {istio: egressgateway}`).
fn selects_egress_gateway(resources: &[Resource]) -> bool {
    resources.iter().any(|r| match r {
        Resource::Gateway(g) => g
            .spec
            .selector
            .get("istio")
            .is_some_and(|v| v == GatewayKind::Egress.istio_label()),
        _ => false,
    })
}

/// Istio's gateways in istio-system, labelled `istio: ingressgateway` or
/// `istio: egressgateway`, whose Services map port 80 to 8080 and 443 to
/// 8443; so do `up`'s (unless the directory has its own Service).
fn add_gateway(
    kind: GatewayKind,
    resources: &mut Vec<Resource>,
    pods: &mut Vec<PodPlan>,
    pod_resources: &mut Vec<Resource>,
    addrs: Addresses,
    proxy_env: Vec<(String, String)>,
) -> Result<()> {
    let name = kind.name();
    let istio = kind.istio_label();
    let has = |kind: api::Kind, ns: Option<&str>, name: &str| {
        resources
            .iter()
            .any(|r| r.kind() == kind && r.name() == name && (ns.is_none() || r.namespace() == ns))
    };
    let mut generated = Vec::new();
    if !has(api::Kind::Namespace, None, INGRESS_NAMESPACE) {
        generated.push(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": INGRESS_NAMESPACE}}));
    }
    if !has(api::Kind::Service, Some(INGRESS_NAMESPACE), name) {
        generated.push(json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": INGRESS_NAMESPACE, "labels": {"app": name, "istio": istio}},
            "spec": {"selector": {"app": name, "istio": istio}, "ports": [
                {"name": "status-port", "port": 15021, "targetPort": 15021},
                {"name": "http2", "port": 80, "targetPort": 8080},
                {"name": "https", "port": 443, "targetPort": 8443}
            ]}
        }));
    }
    for g in generated {
        resources.extend(api::parse("<trellis up>", &g.to_string())?);
    }
    let (pod_ip, app_ip) = addrs.pod(pods.len())?;
    let labels: BTreeMap<String, String> = [("app", name), ("istio", istio)]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let pod = PodPlan {
        name: pod_name(name, 0),
        workload: name.into(),
        namespace: INGRESS_NAMESPACE.into(),
        labels,
        service_account: format!("{name}-service-account"),
        pod_ip,
        app_ip,
        gateway: true,
        sidecar: false,
        proxy_env,
        capture_args: Vec::new(),
        app_metrics: None,
        containers: Vec::new(),
    };
    let ports: Vec<k8s_openapi::api::core::v1::ContainerPort> = [8080, 8443, 15021]
        .into_iter()
        .map(|p| k8s_openapi::api::core::v1::ContainerPort {
            container_port: p,
            ..Default::default()
        })
        .collect();
    let container = Container {
        name: "istio-proxy".into(),
        image: Some("trellis-proxy".into()),
        ports: Some(ports),
        ..Default::default()
    };
    pod_resources.push(pod.to_resource(&[container])?);
    pods.push(pod);
    Ok(())
}

/// The ingress gateway's HTTP address: its pod IP and the target port of Service port 80.
pub fn gateway_http_addr(pods: &[PodPlan], resources: &[Resource]) -> Option<std::net::SocketAddr> {
    let gw = pods
        .iter()
        .find(|p| p.gateway && p.workload == INGRESS_NAME)?;
    let port = resources
        .iter()
        .filter_map(|r| match r {
            Resource::Service(s)
                if r.name() == INGRESS_NAME && r.namespace() == Some(INGRESS_NAMESPACE) =>
            {
                Some((**s).clone())
            }
            _ => None,
        })
        .flat_map(|s: Service| s.spec.and_then(|s| s.ports).unwrap_or_default())
        .find(|p| p.port == 80)
        .and_then(|p| match p.target_port {
            Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(n)) => {
                Some(n as u16)
            }
            _ => None,
        })
        .unwrap_or(80);
    Some(std::net::SocketAddr::new(gw.pod_ip.into(), port))
}

pub fn state_dir(addrs: Addresses) -> PathBuf {
    std::env::temp_dir().join(format!("trellis-127.{}", addrs.block))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_names_are_stable_and_distinct() {
        assert_eq!(pod_name("reviews-v1", 0), pod_name("reviews-v1", 0));
        assert_ne!(pod_name("reviews-v1", 0), pod_name("reviews-v1", 1));
        assert!(pod_name("reviews-v1", 0).starts_with("reviews-v1-"));
        assert_eq!(
            pod_name("reviews-v1", 0).len(),
            "reviews-v1".len() + 1 + 9 + 1 + 5
        );
    }

    fn deployment(annotation: Option<&str>) -> Deployment {
        let annotations = annotation.map_or(String::new(), |a| {
            format!(", annotations: {{proxy.istio.io/config: {a:?}}}")
        });
        let yaml = format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: web}}\nspec:\n  selector: {{matchLabels: {{app: web}}}}\n  template:\n    metadata: {{labels: {{app: web}}{annotations}}}\n    spec: {{containers: [{{name: web, image: web}}]}}\n"
        );
        match api::parse("web.yaml", &yaml).expect("parses").remove(0) {
            Resource::Deployment(d) => *d,
            other => panic!("not a Deployment: {other:?}"),
        }
    }

    fn mesh(metadata: &[(&str, &str)]) -> model::MeshConfig {
        let mut m = model::MeshConfig::default();
        m.default_config.proxy_metadata = metadata
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        m
    }

    #[test]
    fn proxy_metadata_is_the_meshs_overridden_key_by_key_by_the_pods() {
        let m = mesh(&[("SECRET_TTL", "4s"), ("OTHER", "mesh")]);
        let d = deployment(Some("proxyMetadata: {SECRET_TTL: 90s}"));
        let env = proxy_metadata(&m, Some((&d, "default", "web"))).expect("valid");
        assert_eq!(
            env,
            vec![
                ("OTHER".into(), "mesh".into()),
                ("SECRET_TTL".into(), "90s".into())
            ]
        );
        let plain = deployment(None);
        let env = proxy_metadata(&m, Some((&plain, "default", "web"))).expect("valid");
        assert_eq!(
            env,
            vec![
                ("OTHER".into(), "mesh".into()),
                ("SECRET_TTL".into(), "4s".into())
            ]
        );
        assert!(
            proxy_metadata(&model::MeshConfig::default(), None)
                .expect("valid")
                .is_empty()
        );
    }

    #[test]
    fn a_bad_secret_ttl_names_where_it_was_set() {
        let d = deployment(Some("proxyMetadata: {SECRET_TTL: 4 seconds}"));
        let err = proxy_metadata(&mesh(&[]), Some((&d, "prod", "web")))
            .expect_err("bad")
            .to_string();
        assert!(
            err.starts_with(
                "Deployment prod/web: annotation proxy.istio.io/config: proxyMetadata.SECRET_TTL:"
            ),
            "{err}"
        );
        let err = proxy_metadata(&mesh(&[("SECRET_TTL", "500ms")]), None)
            .expect_err("too short")
            .to_string();
        assert!(
            err.contains("mesh.yaml: defaultConfig.proxyMetadata.SECRET_TTL")
                && err.contains("shortest"),
            "{err}"
        );
        let d = deployment(Some("proxyMetadata: [not, a, map]"));
        let err = format!(
            "{:#}",
            proxy_metadata(&mesh(&[]), Some((&d, "prod", "web"))).expect_err("not a ProxyConfig")
        );
        assert!(
            err.contains(
                "Deployment prod/web: annotation proxy.istio.io/config: not a ProxyConfig"
            ),
            "{err}"
        );
    }

    #[test]
    fn discovery_is_the_pods_own_else_its_namespaces() {
        let parsed = |yaml: &str| api::parse("x.yaml", yaml).expect("parses");
        let namespace = |value: &str| {
            parsed(&format!(
                "apiVersion: v1\nkind: Namespace\nmetadata: {{name: shop, annotations: {{trellis.dev/discovery: {value}}}}}\n"
            ))
        };
        let web = |own: &str| {
            parsed(&format!(
                "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: web, namespace: shop}}\nspec:\n  selector: {{matchLabels: {{app: web}}}}\n  template:\n    metadata: {{labels: {{app: web}}{own}}}\n    spec: {{containers: [{{name: web, image: web, command: [/bin/true]}}]}}\n"
            ))
        };
        let addrs = Addresses {
            block: 10,
            pods: None,
        };
        let discovery_of = |resources: Vec<Resource>| {
            let plan = plan(resources, addrs, &model::MeshConfig::default())?;
            let pod = plan.pods.iter().find(|p| p.workload == "web").expect("web");
            anyhow::Ok(
                pod.proxy_env
                    .iter()
                    .find(|(k, _)| k == "TRELLIS_DISCOVERY")
                    .map(|(_, v)| v.clone()),
            )
        };
        let with = |ns: &str, own: &str| {
            let mut r = namespace(ns);
            r.extend(web(own));
            discovery_of(r)
        };
        assert_eq!(with("on-demand", "").unwrap().as_deref(), Some("on-demand"));
        let own_whole = ", annotations: {trellis.dev/discovery: whole}";
        assert_eq!(
            with("on-demand", own_whole).unwrap(),
            None,
            "the pod's own wins"
        );
        assert_eq!(discovery_of(web("")).unwrap(), None);
        let err = format!("{:#}", with("lazy", "").expect_err("a bad value"));
        assert!(
            err.contains("Namespace shop: annotation trellis.dev/discovery: \"lazy\""),
            "{err}"
        );
    }

    #[test]
    fn addresses_do_not_collide() {
        let a = Addresses {
            block: 10,
            pods: None,
        };
        let (p0, a0) = a.pod(0).unwrap();
        let (p250, a250) = a.pod(250).unwrap();
        assert_eq!(p0, Ipv4Addr::new(127, 10, 1, 1));
        assert_eq!(a0, Ipv4Addr::new(127, 10, 2, 1));
        assert_eq!(p250, Ipv4Addr::new(127, 10, 3, 1));
        assert_eq!(a250, Ipv4Addr::new(127, 10, 4, 1));
    }

    #[test]
    fn an_egress_gateway_only_when_a_gateway_selects_one() {
        let addrs = Addresses {
            block: 10,
            pods: None,
        };
        let mesh = model::MeshConfig::default();
        let without = plan(Vec::new(), addrs, &mesh).unwrap();
        assert!(without.pods.iter().all(|p| p.workload != EGRESS_NAME));
        let gateway = api::parse(
            "gw.yaml",
            "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: istio-egressgateway}\nspec:\n  selector: {istio: egressgateway}\n  servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ['*']}]\n",
        )
        .unwrap();
        let with = plan(gateway, addrs, &mesh).unwrap();
        let egress = with
            .pods
            .iter()
            .find(|p| p.workload == EGRESS_NAME)
            .expect("an egress gateway");
        assert!(egress.gateway && !egress.sidecar);
        assert_eq!(egress.labels["istio"], "egressgateway");
        assert!(
            with.resources
                .iter()
                .any(|r| r.kind() == api::Kind::Service && r.name() == EGRESS_NAME)
        );
        // The ingress address stays the ingress gateway's.
        let ingress = with
            .pods
            .iter()
            .find(|p| p.workload == INGRESS_NAME)
            .expect("ingress");
        assert_eq!(
            gateway_http_addr(&with.pods, &with.resources).map(|a| a.ip()),
            Some(std::net::IpAddr::from(ingress.pod_ip))
        );
    }
}
