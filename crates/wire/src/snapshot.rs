//! What the control plane compiles for one proxy: its resources by type, each
//! type with a content version. Plain data, so that the compiler (`model`)
//! can build it without linking the gRPC stack that streams it.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use prost::Message;

use crate::pb::Resource;

/// One resource as the discovery stream sends it: encoded once, when it is
/// compiled, and shared by the snapshots and streams of every proxy that
/// has it, so that a thousand proxies cost one encoding and one copy.
#[derive(Debug, PartialEq, Eq)]
pub struct EncodedResource {
    pub name: String,
    /// Changes whenever the content does (or is empty: never known unchanged).
    pub version: String,
    /// The encoded [`Resource`], name and version included.
    pub bytes: Bytes,
}

impl EncodedResource {
    pub fn new(resource: &Resource) -> Self {
        EncodedResource {
            name: resource.name.clone(),
            version: resource.version.clone(),
            bytes: resource.encode_to_vec().into(),
        }
    }

    /// The resource itself (for dumps and tests; the stream sends the bytes).
    pub fn decode(&self) -> Result<Resource, prost::DecodeError> {
        Resource::decode(self.bytes.clone())
    }

    /// Whether `other` is known to have the same content as this one.
    pub fn same(&self, other: &EncodedResource) -> bool {
        std::ptr::eq(self, other) || (!self.version.is_empty() && self.version == other.version)
    }
}

/// All resources of one type for one proxy, with a version that changes
/// whenever their content does. Each resource's own version must change with
/// its content too (or be empty): partial responses send only the resources
/// whose version changed.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TypeSnapshot {
    pub version: String,
    pub resources: Vec<Arc<EncodedResource>>,
}

impl TypeSnapshot {
    /// A set of resources, each encoded here (the compiler shares encodings
    /// between proxies instead; this is for sets built by hand).
    pub fn new(version: impl Into<String>, resources: &[Resource]) -> Self {
        TypeSnapshot {
            version: version.into(),
            resources: resources
                .iter()
                .map(|r| Arc::new(EncodedResource::new(r)))
                .collect(),
        }
    }

    /// The resources decoded (for dumps and tests).
    pub fn decode(&self) -> Result<Vec<Resource>, prost::DecodeError> {
        self.resources.iter().map(|r| r.decode()).collect()
    }
}

/// Everything one proxy should have, by type URL. Types are shared between
/// proxies that see the same config, hence the `Arc`s.
#[derive(Clone, Debug, Default)]
pub struct ProxySnapshot {
    pub types: BTreeMap<String, Arc<TypeSnapshot>>,
}

impl ProxySnapshot {
    /// Versions identify content, so equal versions mean nothing to send.
    pub fn same_versions(&self, other: &ProxySnapshot) -> bool {
        self.types.len() == other.types.len()
            && self
                .types
                .iter()
                .zip(&other.types)
                .all(|((ta, a), (tb, b))| ta == tb && a.version == b.version)
    }
}
