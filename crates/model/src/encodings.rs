//! Compiled resources encoded once and shared: between the scopes that
//! compile to the same resource (the endpoints of a service look the same
//! from every namespace) and between versions of the mesh (a change leaves
//! most resources as they were). A thousand proxies in ten namespaces then
//! hold one copy of each resource, not ten, and a recompile does not double
//! the control plane's memory while both generations are alive.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};

use prost::Message;
use wire::pb::{self, resource::Kind};
use wire::snapshot::{EncodedResource, TypeSnapshot};

/// Encoded resources by name and version (the digest of their content).
#[derive(Default)]
pub struct Encodings {
    by_version: Mutex<HashMap<(String, String), Arc<EncodedResource>>>,
}

impl Encodings {
    /// Versions every resource by its encoding, and the set by its members'
    /// versions; a resource encoded before with the same content is reused.
    /// Resources are encoded in their compact forms: the names their
    /// resource's name gives left out (`wire::names`).
    pub fn type_snapshot(&self, resources: Vec<(String, Kind)>) -> TypeSnapshot {
        let mut encoded = Vec::with_capacity(resources.len());
        self.encode(resources, &mut encoded);
        set_version(encoded)
    }

    /// Encodes `resources` onto `out`, each versioned by its encoding and
    /// shared as [`Encodings::type_snapshot`] does; [`set_version`] makes a
    /// set of them. A set built a few resources at a time holds only those
    /// few in their unencoded form.
    pub fn encode(&self, resources: Vec<(String, Kind)>, out: &mut Vec<Arc<EncodedResource>>) {
        let mut known = self.by_version.lock().unwrap_or_else(|e| e.into_inner());
        for (name, mut kind) in resources {
            wire::names::leave_out(&name, &mut kind);
            let mut r = pb::Resource {
                name,
                version: String::new(),
                kind: Some(kind),
            };
            r.version = digest(&r.encode_to_vec());
            let key = (r.name, r.version);
            if let Some(shared) = known.get(&key) {
                out.push(shared.clone());
                continue;
            }
            (r.name, r.version) = key;
            let shared = Arc::new(EncodedResource::new(&r));
            known.insert((r.name, r.version), shared.clone());
            out.push(shared);
        }
    }

    /// Forgets the resources no snapshot holds any more.
    pub fn prune(&self) {
        self.by_version
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|_, r| Arc::strong_count(r) > 1);
    }

    pub fn len(&self) -> usize {
        self.by_version
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Versions a set of versioned resources by its members' versions.
pub fn set_version(resources: Vec<Arc<EncodedResource>>) -> TypeSnapshot {
    let mut h = std::hash::DefaultHasher::new();
    for r in &resources {
        r.version.hash(&mut h);
    }
    TypeSnapshot {
        version: version_text(h.finish()),
        resources,
    }
}

fn digest(bytes: &[u8]) -> String {
    // SipHash with fixed keys: stable across restarts of the control plane, so
    // a proxy that reconnects with an unchanged config is not sent it again.
    let mut h = std::hash::DefaultHasher::new();
    bytes.hash(&mut h);
    version_text(h.finish())
}

/// A 64-bit version as text in 11 characters (base64url) rather than 16
/// (hex): every resource and response carries one, and an endpoint change
/// is sent in a few hundred bytes.
fn version_text(v: u64) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_be_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(name: &str, port: u32) -> (String, Kind) {
        (
            name.to_string(),
            Kind::Cluster(pb::Cluster {
                name: name.into(),
                port,
                ..Default::default()
            }),
        )
    }

    #[test]
    fn equal_resources_share_one_encoding_until_nobody_holds_it() {
        let encodings = Encodings::default();
        let a = encodings.type_snapshot(vec![cluster("a", 1), cluster("b", 1)]);
        let b = encodings.type_snapshot(vec![cluster("a", 1), cluster("b", 2)]);
        assert!(Arc::ptr_eq(&a.resources[0], &b.resources[0]));
        assert!(!Arc::ptr_eq(&a.resources[1], &b.resources[1]));
        assert_ne!(a.resources[1].version, b.resources[1].version);
        assert_ne!(a.version, b.version);
        assert_eq!(encodings.len(), 3);
        drop(a);
        encodings.prune();
        assert_eq!(encodings.len(), 2, "b@1 is held by nobody");
        assert_eq!(
            b.resources[1].decode().expect("decodes").name,
            "b",
            "the bytes are the resource"
        );
    }
}
