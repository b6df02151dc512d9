//! Kubernetes object metadata, reduced to what a mesh needs.
//!
//! We keep our own small type instead of k8s-openapi's `ObjectMeta` so that
//! Istio resources have plain (non-`Option`) label maps and so that fields a
//! cluster adds on read (`uid`, `resourceVersion`, `managedFields`, ...) are
//! accepted and carried through a round-trip without being modelled.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectMeta {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Everything else Kubernetes may put in metadata (uid, resourceVersion,
    /// generation, creationTimestamp, ownerReferences, ...). Kept verbatim
    /// so that a resource read from a cluster and written back is unchanged.
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

impl ObjectMeta {
    /// Metadata with just a name and namespace, for tests and generated objects.
    pub fn named(name: impl Into<String>, namespace: Option<&str>) -> Self {
        ObjectMeta {
            name: name.into(),
            namespace: namespace.map(str::to_string),
            ..Default::default()
        }
    }
}
