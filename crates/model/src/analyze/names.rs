//! How the analyzers name and match things: namespaces, full names, label
//! selectors, exportTo and host patterns, each as Istio reads them.

use std::collections::BTreeMap;

use api::Resource;

use crate::host;

/// Kubernetes' own namespaces, which Istio's analyzers leave alone.
const SYSTEM_NAMESPACES: [&str; 4] = [
    "kube-system",
    "kube-public",
    "kube-node-lease",
    "local-path-storage",
];

pub fn is_system_namespace(ns: &str) -> bool {
    SYSTEM_NAMESPACES.contains(&ns)
}

/// The namespace a resource lives in; files that name none mean `default`,
/// as `kubectl apply` would.
pub fn namespace_of(r: &Resource) -> &str {
    r.namespace().unwrap_or("default")
}

pub fn object_namespace(m: &api::meta::ObjectMeta) -> &str {
    m.namespace.as_deref().unwrap_or("default")
}

/// `namespace/name`, istioctl's "full name" used inside message texts.
pub fn full_name(m: &api::meta::ObjectMeta) -> String {
    format!("{}/{}", object_namespace(m), m.name)
}

/// Sort key: namespace, then name.
pub fn key(m: &api::meta::ObjectMeta) -> (String, String) {
    (object_namespace(m).to_string(), m.name.clone())
}

/// A label selector as Kubernetes prints it: `app=a,version=v1`, keys sorted.
pub fn selector_string(selector: &BTreeMap<String, String>) -> String {
    selector
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Equality-based selection: every selector label present with its value.
pub fn labels_match(
    selector: &BTreeMap<String, String>,
    labels: &BTreeMap<String, String>,
) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// Whether a resource with `export_to`, living in `owner_ns`, is visible in
/// `ns` (empty means everywhere, Istio's default).
pub fn exported_to(export_to: &[String], owner_ns: &str, ns: &str) -> bool {
    export_to.is_empty()
        || export_to
            .iter()
            .any(|e| e == "*" || e == ns || (e == "." && owner_ns == ns))
}

/// Istio's namespace patterns in authorization rules: `*`, `prefix*`,
/// `*suffix`, or an exact name.
pub fn namespace_matches(pattern: &str, ns: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    if let Some(suffix) = pattern.strip_prefix('*') {
        return ns.ends_with(suffix);
    }
    if let Some(prefix) = pattern.strip_suffix('*') {
        return ns.starts_with(prefix);
    }
    pattern.eq_ignore_ascii_case(ns)
}

/// Whether two host patterns can match a common name (Istio's `Matches`:
/// either one covers the other).
pub fn hosts_overlap(a: &str, b: &str) -> bool {
    host::matches(a, b) || host::matches(b, a)
}
