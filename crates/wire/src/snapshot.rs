//! What the control plane compiles for one proxy: its resources by type, each
//! type with a content version. Plain data, so that the compiler (`model`)
//! can build it without linking the gRPC stack that streams it.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::pb::Resource;

/// All resources of one type for one proxy, with a version that changes
/// whenever their content does. Each resource's own version must change with
/// its content too (or be empty): partial responses send only the resources
/// whose version changed.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TypeSnapshot {
    pub version: String,
    pub resources: Vec<Resource>,
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
