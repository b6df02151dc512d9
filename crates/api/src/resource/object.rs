//! `Object<S>`: the Kubernetes envelope (apiVersion, kind, metadata) around
//! an Istio spec.

use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};

use crate::meta::ObjectMeta;

/// An Istio resource as written in YAML. `status` (written by a cluster) is
/// accepted and dropped: Trellis never reads it, and keeping it would make
/// round-trips of user files noisy. Any other top-level field is an error,
/// because it is almost always a mis-indented `spec` field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[serde(
    from = "ObjectRepr<S>",
    bound(deserialize = "S: Deserialize<'de> + Default")
)]
pub struct Object<S> {
    pub api_version: String,
    pub kind: String,
    pub metadata: ObjectMeta,
    pub spec: S,
}

impl<S> Object<S> {
    pub fn new(
        api_version: impl Into<String>,
        kind: impl Into<String>,
        metadata: ObjectMeta,
        spec: S,
    ) -> Self {
        Object {
            api_version: api_version.into(),
            kind: kind.into(),
            metadata,
            spec,
        }
    }

    pub fn name(&self) -> &str {
        &self.metadata.name
    }

    pub fn namespace(&self) -> Option<&str> {
        self.metadata.namespace.as_deref()
    }
}

/// The on-the-wire shape, with the `status` field we accept but ignore.
#[derive(Deserialize)]
#[serde(
    rename_all = "camelCase",
    deny_unknown_fields,
    bound(deserialize = "S: Deserialize<'de> + Default")
)]
struct ObjectRepr<S> {
    api_version: String,
    kind: String,
    // `metadata:`/`spec:` with nothing after them are null in YAML; Istio
    // reads that as empty, so do we.
    #[serde(default, deserialize_with = "crate::de::null_as_default")]
    metadata: ObjectMeta,
    #[serde(default, deserialize_with = "crate::de::null_as_default")]
    spec: S,
    #[serde(default)]
    #[allow(dead_code)]
    status: Option<IgnoredAny>,
}

impl<S> From<ObjectRepr<S>> for Object<S> {
    fn from(r: ObjectRepr<S>) -> Self {
        Object {
            api_version: r.api_version,
            kind: r.kind,
            metadata: r.metadata,
            spec: r.spec,
        }
    }
}
