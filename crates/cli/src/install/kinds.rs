//! The kinds of object the install makes, and how this tool reaches,
//! lists and deletes them on a cluster: what `apply`, `uninstall` and
//! `check` share.

use anyhow::{Context as _, Result};
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, PropagationPolicy};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::Value;

use super::INSTALL_LABEL;

/// A kind the manifests contain: how to reach it, and where it goes in
/// the deletion order (webhooks first, so nothing calls a control plane
/// that is going away; CRDs and the namespace last).
pub(super) struct KindInfo {
    pub(super) api_version: &'static str,
    pub(super) kind: &'static str,
    pub(super) plural: &'static str,
    pub(super) namespaced: bool,
}

// Positions in KINDS of the kinds `check` reads.
pub(super) const MUTATING: usize = 0;
pub(super) const VALIDATING: usize = 1;
pub(super) const DEPLOYMENT: usize = 4;
pub(super) const CRD: usize = 12;

pub(super) const KINDS: &[KindInfo] = &[
    KindInfo {
        api_version: "admissionregistration.k8s.io/v1",
        kind: "MutatingWebhookConfiguration",
        plural: "mutatingwebhookconfigurations",
        namespaced: false,
    },
    KindInfo {
        api_version: "admissionregistration.k8s.io/v1",
        kind: "ValidatingWebhookConfiguration",
        plural: "validatingwebhookconfigurations",
        namespaced: false,
    },
    KindInfo {
        api_version: "autoscaling/v2",
        kind: "HorizontalPodAutoscaler",
        plural: "horizontalpodautoscalers",
        namespaced: true,
    },
    KindInfo {
        api_version: "policy/v1",
        kind: "PodDisruptionBudget",
        plural: "poddisruptionbudgets",
        namespaced: true,
    },
    KindInfo {
        api_version: "apps/v1",
        kind: "Deployment",
        plural: "deployments",
        namespaced: true,
    },
    KindInfo {
        api_version: "v1",
        kind: "Service",
        plural: "services",
        namespaced: true,
    },
    KindInfo {
        api_version: "v1",
        kind: "ConfigMap",
        plural: "configmaps",
        namespaced: true,
    },
    KindInfo {
        api_version: "rbac.authorization.k8s.io/v1",
        kind: "RoleBinding",
        plural: "rolebindings",
        namespaced: true,
    },
    KindInfo {
        api_version: "rbac.authorization.k8s.io/v1",
        kind: "Role",
        plural: "roles",
        namespaced: true,
    },
    KindInfo {
        api_version: "rbac.authorization.k8s.io/v1",
        kind: "ClusterRoleBinding",
        plural: "clusterrolebindings",
        namespaced: false,
    },
    KindInfo {
        api_version: "rbac.authorization.k8s.io/v1",
        kind: "ClusterRole",
        plural: "clusterroles",
        namespaced: false,
    },
    KindInfo {
        api_version: "v1",
        kind: "ServiceAccount",
        plural: "serviceaccounts",
        namespaced: true,
    },
    KindInfo {
        api_version: "apiextensions.k8s.io/v1",
        kind: "CustomResourceDefinition",
        plural: "customresourcedefinitions",
        namespaced: false,
    },
    KindInfo {
        api_version: "v1",
        kind: "Namespace",
        plural: "namespaces",
        namespaced: false,
    },
];

/// Kinds whose removal deletes what users stored (every VirtualService...,
/// everything in the namespace): only with `--purge`, and only if the
/// install created them.
pub(super) fn kept_without_purge(kind: &str) -> bool {
    matches!(kind, "CustomResourceDefinition" | "Namespace")
}

pub(super) fn kind_info(api_version: &str, kind: &str) -> Result<&'static KindInfo> {
    KINDS
        .iter()
        .find(|k| k.api_version == api_version && k.kind == kind)
        .with_context(|| format!("{api_version} {kind} is not a kind the install knows"))
}

pub(super) fn resource(info: &KindInfo) -> ApiResource {
    let (group, version) = info
        .api_version
        .split_once('/')
        .unwrap_or(("", info.api_version));
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(group, version, info.kind),
        info.plural,
    )
}

pub(super) fn api(
    client: &kube::Client,
    info: &KindInfo,
    namespace: Option<&str>,
) -> Api<DynamicObject> {
    let ar = resource(info);
    match (info.namespaced, namespace) {
        (true, Some(ns)) => Api::namespaced_with(client.clone(), ns, &ar),
        _ => Api::all_with(client.clone(), &ar),
    }
}

pub(super) fn str_at<'a>(v: &'a Value, ptr: &str) -> &'a str {
    v.pointer(ptr).and_then(Value::as_str).unwrap_or_default()
}

/// `Kind name[.namespace]`, for messages.
pub(super) fn describe(object: &Value) -> String {
    let ns = str_at(object, "/metadata/namespace");
    let name = str_at(object, "/metadata/name");
    let kind = str_at(object, "/kind");
    if ns.is_empty() {
        format!("{kind} {name}")
    } else {
        format!("{kind} {name}.{ns}")
    }
}

pub(super) fn api_for(
    client: &kube::Client,
    object: &Value,
) -> Result<(Api<DynamicObject>, String)> {
    let info = kind_info(str_at(object, "/apiVersion"), str_at(object, "/kind"))?;
    let ns = str_at(object, "/metadata/namespace");
    Ok((
        api(client, info, (!ns.is_empty()).then_some(ns)),
        str_at(object, "/metadata/name").to_string(),
    ))
}

/// Objects carrying the install label, of every kind the install makes,
/// in deletion order.
pub(super) async fn labelled(
    client: &kube::Client,
) -> Result<Vec<(&'static KindInfo, DynamicObject)>> {
    let selector = INSTALL_LABEL;
    let mut out = Vec::new();
    for info in KINDS {
        let list = api(client, info, None)
            .list(&ListParams::default().labels(selector))
            .await
            .with_context(|| format!("listing {}", info.plural))?;
        out.extend(list.items.into_iter().map(|o| (info, o)));
    }
    Ok(out)
}

pub(super) async fn delete(
    client: &kube::Client,
    info: &KindInfo,
    object: &DynamicObject,
) -> Result<()> {
    let name = object.metadata.name.clone().unwrap_or_default();
    let api = api(client, info, object.metadata.namespace.as_deref());
    // Foreground: a Deployment is gone only with its ReplicaSets and Pods.
    // Nothing else the install makes owns dependents.
    let params = DeleteParams {
        propagation_policy: Some(if info.kind == "Deployment" {
            PropagationPolicy::Foreground
        } else {
            PropagationPolicy::Background
        }),
        ..Default::default()
    };
    match api.delete(&name, &params).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e).with_context(|| format!("deleting {} {name}", info.kind)),
    }
}

/// A Deployment's readiness: (available, wanted).
pub(super) fn availability(deployment: &DynamicObject) -> (i64, i64) {
    let wanted = deployment.data["spec"]["replicas"].as_i64().unwrap_or(1);
    let available = deployment.data["status"]["availableReplicas"]
        .as_i64()
        .unwrap_or(0);
    (available, wanted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_generated_kind_is_known() {
        let m = super::super::manifest::generate_from(&[], &[], Some("demo")).unwrap();
        for o in &m.objects {
            kind_info(str_at(o, "/apiVersion"), str_at(o, "/kind")).unwrap();
        }
        assert_eq!(KINDS[CRD].kind, "CustomResourceDefinition");
        assert_eq!(KINDS[MUTATING].kind, "MutatingWebhookConfiguration");
        assert_eq!(KINDS[VALIDATING].kind, "ValidatingWebhookConfiguration");
        assert_eq!(KINDS[DEPLOYMENT].kind, "Deployment");
    }
}
