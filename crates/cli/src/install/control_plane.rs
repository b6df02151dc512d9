//! The control plane's objects (Istio's `pilot` component): trellisd's
//! Deployment under istiod's names (so `kubectl -n istio-system logs
//! deploy/istiod`, the `istio: pilot` selectors of dashboards and
//! ServiceMonitors, and the webhooks' `istiod` Service keep working), its
//! least-privilege RBAC, the `istio` and `istio-sidecar-injector`
//! ConfigMaps, the injection and validation webhooks, a
//! PodDisruptionBudget and an autoscaler.

use serde_json::{Value, json};

use super::manifest::{Context, cpu_metric, field_env, hpa, pdb, restricted_security_context};

pub const NAME: &str = "istiod";
/// trellisd's webhook port behind the `istiod` Service's 443.
pub const WEBHOOK_PORT: u16 = 15017;
pub const INJECTOR_WEBHOOK: &str = "istio-sidecar-injector";

/// The validating webhook configuration's name (Istio's, per namespace).
pub fn validator_name(namespace: &str) -> String {
    format!("istio-validator-{namespace}")
}

pub fn objects(ctx: &Context) -> Vec<Value> {
    let ns = &ctx.namespace;
    let app = json!({"app": "istiod", "istio": "pilot", "istio.io/rev": "default"});
    let labels = ctx.labels("Pilot", app.clone());
    let selector = json!({"app": "istiod", "istio": "pilot"});
    let pilot = &ctx.spec.values.pilot;
    let k8s = &ctx.spec.components.pilot.k8s;
    let mut out = vec![
        json!({
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": NAME, "namespace": ns, "labels": labels},
        }),
        cluster_role(ctx, &labels),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": format!("istiod-clusterrole-{ns}"), "labels": labels},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": format!("istiod-clusterrole-{ns}")},
            "subjects": [{"kind": "ServiceAccount", "name": NAME, "namespace": ns}],
        }),
        role(ctx, &labels),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": NAME, "namespace": ns, "labels": labels},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": NAME},
            "subjects": [{"kind": "ServiceAccount", "name": NAME, "namespace": ns}],
        }),
        mesh_config_map(ctx, &labels),
        injector_config_map(ctx, &labels),
        deployment(ctx, &labels, &selector),
        json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": NAME, "namespace": ns, "labels": labels},
            "spec": {
                "selector": selector,
                "ports": [
                    {"name": "grpc-xds", "port": 15010, "protocol": "TCP"},
                    {"name": "https-dns", "port": 15012, "protocol": "TCP"},
                    {"name": "https-webhook", "port": 443, "targetPort": WEBHOOK_PORT, "protocol": "TCP"},
                    {"name": "http-monitoring", "port": 15014, "protocol": "TCP"},
                ],
            },
        }),
        injection_webhook(ctx),
    ];
    if ctx.spec.values.global.config_validation.unwrap_or(true) {
        out.push(validation_webhook(ctx));
    }
    if ctx.pdb_enabled() {
        out.push(pdb(
            ctx,
            NAME,
            labels.clone(),
            selector.clone(),
            k8s.pod_disruption_budget.as_ref(),
        ));
    }
    let hpa_spec = k8s.hpa_spec.as_ref();
    if pilot.autoscale_enabled.unwrap_or(false) || hpa_spec.is_some() {
        let min = hpa_spec
            .and_then(|h| h.min_replicas)
            .or(pilot.autoscale_min)
            .unwrap_or(1);
        let max = hpa_spec
            .and_then(|h| h.max_replicas)
            .or(pilot.autoscale_max)
            .unwrap_or(5);
        let metrics = match hpa_spec.and_then(|h| h.metrics.clone()) {
            Some(m) => Value::Array(m),
            None => cpu_metric(pilot.cpu.target_average_utilization.unwrap_or(80)),
        };
        out.push(hpa(ctx, NAME, labels, min, max, metrics));
    }
    out
}

/// What trellisd reads and writes cluster-wide, and nothing more: it
/// watches the registry's kinds and every Istio kind, writes Istio
/// resources' status, the root-certificate ConfigMap in each namespace,
/// reviews workloads' tokens, and patches the caBundle of its own two
/// webhook configurations (by name).
fn cluster_role(ctx: &Context, labels: &Value) -> Value {
    let read = json!(["get", "list", "watch"]);
    let istio_groups = json!([
        "networking.istio.io",
        "security.istio.io",
        "telemetry.istio.io"
    ]);
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": format!("istiod-clusterrole-{}", ctx.namespace), "labels": labels},
        "rules": [
            // The registry: services, endpoints, pods, their identities;
            // secrets for gateways' credentialName (as istiod).
            {"apiGroups": [""], "resources": ["namespaces", "services", "pods", "serviceaccounts", "secrets"], "verbs": read},
            {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": read},
            // Mesh config, and the `istio-ca-root-cert` ConfigMap the leader keeps in every namespace.
            {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list", "watch", "create", "update", "patch"]},
            {"apiGroups": istio_groups, "resources": ["*"], "verbs": read},
            {"apiGroups": istio_groups, "resources": ["*/status"], "verbs": ["get", "update", "patch"]},
            // Workloads prove their identity with service-account tokens.
            {"apiGroups": ["authentication.k8s.io"], "resources": ["tokenreviews"], "verbs": ["create"]},
            {"apiGroups": ["authorization.k8s.io"], "resources": ["subjectaccessreviews"], "verbs": ["create"]},
            // The webhooks' caBundle (and the validator's failurePolicy once it serves).
            {"apiGroups": ["admissionregistration.k8s.io"], "resources": ["mutatingwebhookconfigurations"], "verbs": read},
            {"apiGroups": ["admissionregistration.k8s.io"], "resources": ["mutatingwebhookconfigurations"], "resourceNames": [INJECTOR_WEBHOOK], "verbs": ["update", "patch"]},
            {"apiGroups": ["admissionregistration.k8s.io"], "resources": ["validatingwebhookconfigurations"], "verbs": read},
            {"apiGroups": ["admissionregistration.k8s.io"], "resources": ["validatingwebhookconfigurations"], "resourceNames": [validator_name(&ctx.namespace)], "verbs": ["update", "patch"]},
        ],
    })
}

/// In the control plane's namespace only: the leader's Lease and the CA's
/// Secret (`istio-ca-secret`, or the plug-in `cacerts`).
fn role(ctx: &Context, labels: &Value) -> Value {
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": NAME, "namespace": ctx.namespace, "labels": labels},
        "rules": [
            {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"]},
            {"apiGroups": [""], "resources": ["secrets"], "verbs": ["create", "update", "patch", "delete"]},
        ],
    })
}

/// The `istio` ConfigMap: MeshConfig under `mesh`, as Istio keeps it.
fn mesh_config_map(ctx: &Context, labels: &Value) -> Value {
    let mesh = ctx
        .spec
        .mesh_config
        .clone()
        .map(Value::Object)
        .unwrap_or(json!({}));
    json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "istio", "namespace": ctx.namespace, "labels": labels},
        "data": {
            "mesh": serde_yaml_ng::to_string(&mesh).unwrap_or_default(),
            "meshNetworks": "networks: {}\n",
        },
    })
}

/// `istio-sidecar-injector`: the injection policy under `config`, and the
/// install's `values` as JSON (the sidecar's image, resources, ...), as
/// Istio's injector reads them.
fn injector_config_map(ctx: &Context, labels: &Value) -> Value {
    let config = "policy: enabled\nalwaysInjectSelector: []\nneverInjectSelector: []\ninjectedAnnotations: {}\ndefaultTemplates: [sidecar]\n";
    json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": INJECTOR_WEBHOOK, "namespace": ctx.namespace, "labels": labels},
        "data": {
            "config": config,
            "values": serde_json::to_string(&ctx.raw_values).unwrap_or_default(),
        },
    })
}

fn deployment(ctx: &Context, labels: &Value, selector: &Value) -> Value {
    let pilot = &ctx.spec.values.pilot;
    let k8s = &ctx.spec.components.pilot.k8s;
    let mut env = vec![
        field_env("POD_NAME", "metadata.name"),
        field_env("POD_NAMESPACE", "metadata.namespace"),
    ];
    env.extend(
        pilot
            .env
            .iter()
            .map(|(k, v)| json!({"name": k, "value": v})),
    );
    env.extend(k8s.env.clone().unwrap_or_default());
    let resources = k8s
        .resources
        .clone()
        .or_else(|| pilot.resources.clone())
        .unwrap_or(json!({}));
    let mut pod_labels = labels.clone();
    pod_labels["sidecar.istio.io/inject"] = json!("false");
    let mut annotations = json!({
        "prometheus.io/port": "15014",
        "prometheus.io/scrape": "true",
        "sidecar.istio.io/inject": "false",
    });
    for (k, v) in &k8s.pod_annotations {
        annotations[k] = json!(v);
    }
    let mut spec = json!({
        "strategy": {"rollingUpdate": {"maxSurge": "100%", "maxUnavailable": "25%"}},
        "selector": {"matchLabels": selector},
        "template": {
            "metadata": {"labels": pod_labels, "annotations": annotations},
            "spec": {
                "serviceAccountName": NAME,
                "containers": [{
                    "name": "discovery",
                    "image": ctx.image(pilot.image.as_deref().unwrap_or("trellisd")),
                    "imagePullPolicy": ctx.pull_policy,
                    "args": [
                        "--in-cluster",
                        "--config-dir=/var/lib/trellis",
                        // The CA's material, loaded from (or first written
                        // to) the istio-ca-secret / cacerts Secrets.
                        "--ca-dir=/var/lib/trellis/ca",
                        "--xds-addr=0.0.0.0:15010",
                        "--xds-tls-addr=0.0.0.0:15012",
                        "--http-addr=0.0.0.0:15014",
                    ],
                    "ports": [
                        {"name": "grpc-xds", "containerPort": 15010, "protocol": "TCP"},
                        {"name": "https-dns", "containerPort": 15012, "protocol": "TCP"},
                        {"name": "http-monitoring", "containerPort": 15014, "protocol": "TCP"},
                        {"name": "https-webhooks", "containerPort": WEBHOOK_PORT, "protocol": "TCP"},
                    ],
                    "readinessProbe": {
                        "httpGet": {"path": "/healthz", "port": 15014},
                        "initialDelaySeconds": 1,
                        "periodSeconds": 3,
                        "timeoutSeconds": 5,
                    },
                    "env": env,
                    "resources": resources,
                    "securityContext": restricted_security_context(),
                    "volumeMounts": [{"name": "config", "mountPath": "/var/lib/trellis"}],
                }],
                "volumes": [{"name": "config", "emptyDir": {}}],
            },
        },
    });
    if !k8s.node_selector.is_empty() {
        spec["template"]["spec"]["nodeSelector"] = json!(k8s.node_selector);
    }
    // With an autoscaler the HPA owns the count, unless k8s.replicaCount says.
    let autoscaled = pilot.autoscale_enabled.unwrap_or(false) || k8s.hpa_spec.is_some();
    match (k8s.replica_count, autoscaled) {
        (Some(n), _) => spec["replicas"] = json!(n),
        (None, false) => spec["replicas"] = json!(pilot.replica_count.unwrap_or(1)),
        (None, true) => {}
    }
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": NAME, "namespace": ctx.namespace, "labels": labels},
        "spec": spec,
    })
}

/// Istio's four injection webhooks, as its chart writes them for the
/// default revision: by namespace label (`istio-injection=enabled`, or
/// `istio.io/rev=default`) unless the pod says `sidecar.istio.io/inject:
/// "false"`, and by pod label (`sidecar.istio.io/inject: "true"`, or
/// `istio.io/rev=default`) in namespaces with neither label. `Fail`: a pod
/// meant to be meshed is never created without its sidecar. No caBundle:
/// trellisd's leader patches it in (and a re-install does not take it away).
fn injection_webhook(ctx: &Context) -> Value {
    let reinvocation = ctx
        .spec
        .values
        .sidecar_injector_webhook
        .reinvocation_policy
        .clone()
        .unwrap_or_else(|| "Never".to_string());
    let exists = |key: &str| json!({"key": key, "operator": "DoesNotExist"});
    let is_in = |key: &str, v: &str| json!({"key": key, "operator": "In", "values": [v]});
    let not_false =
        json!({"key": "sidecar.istio.io/inject", "operator": "NotIn", "values": ["false"]});
    let hook = |name: &str, namespace: Value, object: Value| {
        json!({
            "name": name,
            "clientConfig": {"service": {"name": NAME, "namespace": ctx.namespace, "path": "/inject", "port": 443}},
            "sideEffects": "None",
            "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"]}],
            "failurePolicy": "Fail",
            "reinvocationPolicy": reinvocation,
            "admissionReviewVersions": ["v1"],
            "namespaceSelector": {"matchExpressions": namespace},
            "objectSelector": {"matchExpressions": object},
        })
    };
    json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {
            "name": INJECTOR_WEBHOOK,
            "labels": ctx.labels("Pilot", json!({"app": "sidecar-injector", "istio.io/rev": "default"})),
        },
        "webhooks": [
            hook(
                "rev.namespace.sidecar-injector.istio.io",
                json!([is_in("istio.io/rev", "default"), exists("istio-injection")]),
                json!([not_false]),
            ),
            hook(
                "rev.object.sidecar-injector.istio.io",
                json!([exists("istio.io/rev"), exists("istio-injection")]),
                json!([not_false, is_in("istio.io/rev", "default")]),
            ),
            hook(
                "namespace.sidecar-injector.istio.io",
                json!([is_in("istio-injection", "enabled")]),
                json!([not_false]),
            ),
            hook(
                "object.sidecar-injector.istio.io",
                json!([exists("istio-injection"), exists("istio.io/rev")]),
                json!([is_in("sidecar.istio.io/inject", "true"), exists("istio.io/rev")]),
            ),
        ],
    })
}

/// Validation of every Istio group's objects on create and update. Two
/// webhooks, as Istio's `istio-validator-<ns>` and `istiod-default-validator`
/// together: objects of the default revision, and objects with no revision
/// label. `Ignore` until trellisd serves (as istiod, which switches it to
/// `Fail` once its endpoint is ready), so the install itself never waits
/// on a webhook that cannot answer yet.
fn validation_webhook(ctx: &Context) -> Value {
    let hook = |name: &str, object: Value| {
        json!({
            "name": name,
            "clientConfig": {"service": {"name": NAME, "namespace": ctx.namespace, "path": "/validate", "port": 443}},
            "rules": [{
                "operations": ["CREATE", "UPDATE"],
                "apiGroups": ["security.istio.io", "networking.istio.io", "telemetry.istio.io", "extensions.istio.io"],
                "apiVersions": ["*"],
                "resources": ["*"],
            }],
            "failurePolicy": "Ignore",
            "sideEffects": "None",
            "admissionReviewVersions": ["v1"],
            "objectSelector": {"matchExpressions": [object]},
        })
    };
    json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {
            "name": validator_name(&ctx.namespace),
            "labels": ctx.labels("Pilot", json!({"app": "istiod", "istio": "istiod", "istio.io/rev": "default"})),
        },
        "webhooks": [
            hook(
                "rev.validation.istio.io",
                json!({"key": "istio.io/rev", "operator": "In", "values": ["default"]}),
            ),
            hook(
                "validation.istio.io",
                json!({"key": "istio.io/rev", "operator": "DoesNotExist"}),
            ),
        ],
    })
}
