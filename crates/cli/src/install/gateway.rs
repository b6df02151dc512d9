//! An ingress or egress gateway: trellis-proxy in gateway mode, with the
//! labels Gateways select (`istio: ingressgateway` / `istio:
//! egressgateway`), its Service, and when asked a PodDisruptionBudget and
//! an autoscaler.

use api::operator::GatewayComponent;
use serde_json::{Value, json};

use super::manifest::{Context, cpu_metric, field_env, hpa, pdb, restricted_security_context};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    Ingress,
    Egress,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Ingress => "ingress",
            Direction::Egress => "egress",
        }
    }

    fn component(self) -> &'static str {
        match self {
            Direction::Ingress => "IngressGateways",
            Direction::Egress => "EgressGateways",
        }
    }
}

/// Istio's default ports: 80 and 443 reach unprivileged 8080 and 8443 in
/// the pod; the ingress gateway's health port is exposed too.
fn default_ports(direction: Direction) -> Value {
    let mut ports = vec![
        json!({"name": "http2", "port": 80, "targetPort": 8080, "protocol": "TCP"}),
        json!({"name": "https", "port": 443, "targetPort": 8443, "protocol": "TCP"}),
    ];
    if direction == Direction::Ingress {
        ports.insert(
            0,
            json!({"name": "status-port", "port": 15021, "targetPort": 15021, "protocol": "TCP"}),
        );
    }
    Value::Array(ports)
}

pub fn objects(ctx: &Context, direction: Direction, gw: &GatewayComponent) -> Vec<Value> {
    let name = gw.name.as_str();
    let ns = gw
        .namespace
        .clone()
        .unwrap_or_else(|| ctx.namespace.clone());
    let values = ctx.spec.values.gateways.get(name);
    let k8s = &gw.k8s;
    // The `istio` label Gateways select: ingressgateway for
    // istio-ingressgateway, else the name without its `istio-` prefix.
    let mut selector = json!({
        "app": name,
        "istio": name.strip_prefix("istio-").unwrap_or(name),
    });
    for (k, v) in &gw.label {
        selector[k] = json!(v);
    }
    let labels = ctx.labels(direction.component(), selector.clone());
    let sa = format!("{name}-service-account");
    let resources = k8s
        .resources
        .clone()
        .or_else(|| values.and_then(|v| v.resources.clone()))
        .or_else(|| ctx.spec.values.global.proxy.resources.clone())
        .unwrap_or(json!({}));
    let ports = k8s
        .service
        .as_ref()
        .and_then(|s| s.ports.clone())
        .map(Value::Array)
        .unwrap_or_else(|| default_ports(direction));
    let service_type = k8s
        .service
        .as_ref()
        .and_then(|s| s.type_.clone())
        .or_else(|| values.and_then(|v| v.type_.clone()))
        .unwrap_or_else(|| match direction {
            Direction::Ingress => "LoadBalancer".into(),
            Direction::Egress => "ClusterIP".into(),
        });
    let container_ports: Vec<Value> = ports
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| {
            let port = p.get("targetPort").or_else(|| p.get("port"))?;
            Some(json!({"containerPort": port, "protocol": "TCP"}))
        })
        .collect();

    let mut args: Vec<Value> = [
        "--kind",
        "gateway",
        "--workload-name",
        name,
        "--xds",
        &format!("https://istiod.{}.svc:15012", ctx.namespace),
        "--health",
        "$(INSTANCE_IP):15021",
        // The projected token the CA reviews (mounted below).
        "--token-file",
        "/var/run/secrets/tokens/istio-token",
        // In its own pod, the proxy's loopback is its own.
        "--admin-auth",
        "loopback",
    ]
    .iter()
    .map(|s| json!(s))
    .collect();
    for (k, v) in selector.as_object().into_iter().flatten() {
        args.push(json!("--label"));
        args.push(json!(format!("{k}={}", v.as_str().unwrap_or_default())));
    }
    let mut env = vec![
        field_env("POD_NAME", "metadata.name"),
        field_env("POD_NAMESPACE", "metadata.namespace"),
        field_env("INSTANCE_IP", "status.podIP"),
        field_env("SERVICE_ACCOUNT", "spec.serviceAccountName"),
    ];
    env.extend(k8s.env.clone().unwrap_or_default());
    let mut pod_labels = labels.clone();
    pod_labels["sidecar.istio.io/inject"] = json!("false");
    // Istio's gateway template: what makes the control plane serve this
    // pod's proxy as a gateway (a pod with neither it nor a sidecar is refused).
    let mut annotations = json!({
        "sidecar.istio.io/inject": "false",
        model::registry::GATEWAY_TEMPLATE_ANNOTATION: "gateway",
    });
    for (k, v) in &k8s.pod_annotations {
        annotations[k] = json!(v);
    }
    let autoscale =
        values.and_then(|v| v.autoscale_enabled).unwrap_or(false) || k8s.hpa_spec.is_some();
    let mut spec = json!({
        "selector": {"matchLabels": selector},
        "template": {
            "metadata": {"labels": pod_labels, "annotations": annotations},
            "spec": {
                "serviceAccountName": sa,
                "securityContext": {"sysctls": [{"name": "net.ipv4.ip_unprivileged_port_start", "value": "0"}]},
                "containers": [{
                    "name": "istio-proxy",
                    "image": ctx.image(ctx.spec.values.global.proxy.image.as_deref().unwrap_or("trellis-proxy")),
                    "imagePullPolicy": ctx.pull_policy,
                    "args": args,
                    "ports": container_ports,
                    "readinessProbe": {
                        "httpGet": {"path": "/healthz/ready", "port": 15021},
                        "periodSeconds": 2,
                        "failureThreshold": 30,
                    },
                    "env": env,
                    "resources": resources,
                    "securityContext": restricted_security_context(),
                    "volumeMounts": [
                        {"name": "istio-token", "mountPath": "/var/run/secrets/tokens", "readOnly": true},
                        {"name": "istiod-ca-cert", "mountPath": "/var/run/secrets/istio", "readOnly": true},
                    ],
                }],
                "volumes": [
                    // The token the CA reviews (audience istio-ca), and the
                    // mesh root the leader keeps in every namespace.
                    {"name": "istio-token", "projected": {"sources": [{"serviceAccountToken": {"audience": "istio-ca", "expirationSeconds": 43200, "path": "istio-token"}}]}},
                    {"name": "istiod-ca-cert", "configMap": {"name": "istio-ca-root-cert"}},
                ],
            },
        },
    });
    if !k8s.node_selector.is_empty() {
        spec["template"]["spec"]["nodeSelector"] = json!(k8s.node_selector);
    }
    match (k8s.replica_count, autoscale) {
        (Some(n), _) => spec["replicas"] = json!(n),
        (None, false) => spec["replicas"] = json!(1),
        (None, true) => {}
    }
    let mut service_meta = json!({"name": name, "namespace": ns, "labels": labels});
    if !k8s.service_annotations.is_empty() {
        service_meta["annotations"] = json!(k8s.service_annotations);
    }
    let mut out = vec![
        json!({
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": sa, "namespace": ns, "labels": labels},
        }),
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name, "namespace": ns, "labels": labels},
            "spec": spec,
        }),
        json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": service_meta,
            "spec": {"type": service_type, "selector": selector, "ports": ports},
        }),
    ];
    // The helpers write into ctx.namespace; a gateway may live elsewhere.
    let mut with_ns = |mut o: Value| {
        o["metadata"]["namespace"] = json!(ns);
        out.push(o);
    };
    if ctx.pdb_enabled() {
        with_ns(pdb(
            ctx,
            name,
            labels.clone(),
            selector.clone(),
            k8s.pod_disruption_budget.as_ref(),
        ));
    }
    if autoscale {
        let hpa_spec = k8s.hpa_spec.as_ref();
        let min = hpa_spec
            .and_then(|h| h.min_replicas)
            .or(values.and_then(|v| v.autoscale_min))
            .unwrap_or(1);
        let max = hpa_spec
            .and_then(|h| h.max_replicas)
            .or(values.and_then(|v| v.autoscale_max))
            .unwrap_or(5);
        let metrics = match hpa_spec.and_then(|h| h.metrics.clone()) {
            Some(m) => Value::Array(m),
            None => cpu_metric(
                values
                    .and_then(|v| v.cpu.target_average_utilization)
                    .unwrap_or(80),
            ),
        };
        with_ns(hpa(ctx, name, labels, min, max, metrics));
    }
    out
}
