//! What a proxy has accepted of one resource type, kept encoded.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use wire::pb;

use super::shared_map::SharedMap;

/// The accepted resources of one type, kept protobuf-encoded. Requests use
/// the compiled snapshot; the resources themselves are read only by the next
/// compile, partial updates and the config dump. Decoded, a 1,000-service
/// config is hundreds of thousands of small allocations (several MiB for
/// the life of the proxy); encoded it is one buffer per resource.
///
/// A resource whose bytes did not change is the same `Arc<Encoded>` in the
/// next version of its type: that is how a compile knows, without decoding,
/// what it can reuse. The next version after a partial update shares the
/// resources by name with this one but for the part the update touched
/// (`SharedMap`), so that the update, and the compile that finds what it
/// changed ([`TypeState::changed_since`]), cost what it changed.
#[derive(Default)]
pub struct TypeState {
    pub version: String,
    by_name: SharedMap<Arc<str>, Accepted>,
    /// The order number the next resource new to the type gets.
    next: u64,
}

/// A resource and its place in the order the type's resources were accepted
/// in (a full update's order; a partial update's new resources after).
#[derive(Clone)]
struct Accepted {
    order: u64,
    encoded: Arc<Encoded>,
}

/// One resource, protobuf-encoded.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Encoded {
    pub(super) name: Arc<str>,
    bytes: Box<[u8]>,
}

impl Encoded {
    /// `r` encoded: `known` (the resource accepted under its name until
    /// now) if that one has the same bytes.
    fn new(r: &pb::Resource, known: Option<&Accepted>) -> Arc<Self> {
        let bytes = prost::Message::encode_to_vec(r);
        match known {
            Some(k) if *k.encoded.bytes == *bytes => Arc::clone(&k.encoded),
            _ => Arc::new(Encoded {
                name: r.name.as_str().into(),
                bytes: bytes.into_boxed_slice(),
            }),
        }
    }

    pub(super) fn decode(&self) -> Result<pb::Resource, String> {
        <pb::Resource as prost::Message>::decode(&self.bytes[..])
            .map_err(|err| format!("stored resource {:?} does not decode: {err}", self.name))
    }
}

impl TypeState {
    pub fn new(version: &str, resources: &[pb::Resource]) -> Result<Self, String> {
        TypeState::replacing(None, version, resources)
    }

    /// `resources` as the full set of the type, sharing with `old` (the
    /// type's set until now) the resources that did not change.
    pub fn replacing(
        old: Option<&TypeState>,
        version: &str,
        resources: &[pb::Resource],
    ) -> Result<Self, String> {
        let mut by_name = SharedMap::default();
        for (order, r) in (0..).zip(resources) {
            let known = old.and_then(|o| o.by_name.get(r.name.as_str()));
            let encoded = Encoded::new(r, known);
            if by_name
                .insert(encoded.name.clone(), Accepted { order, encoded })
                .is_some()
            {
                return Err(format!("resource {:?} is listed twice", r.name));
            }
        }
        Ok(TypeState {
            version: version.to_string(),
            next: by_name.len() as u64,
            by_name,
        })
    }

    /// The resources in the order they were accepted in.
    pub(super) fn in_order(&self) -> Vec<&Arc<Encoded>> {
        let mut all: Vec<&Accepted> = self.by_name.iter().map(|(_, a)| a).collect();
        all.sort_unstable_by_key(|a| a.order);
        all.into_iter().map(|a| &a.encoded).collect()
    }

    pub(super) fn len(&self) -> usize {
        self.by_name.len()
    }

    /// The resources whose bytes are not `before`'s, with their bytes here
    /// (`None`: gone). Only what the two versions do not share is looked at.
    pub(super) fn changed_since<'a>(
        &'a self,
        before: &'a TypeState,
    ) -> impl Iterator<Item = (&'a Arc<str>, Option<&'a Arc<Encoded>>)> + 'a {
        self.by_name
            .changed_since(&before.by_name, |a, b| Arc::ptr_eq(&a.encoded, &b.encoded))
            .map(|(name, now)| (name, now.map(|a| &a.encoded)))
    }

    /// How many shards of its resources by name the two versions share.
    #[cfg(test)]
    pub(super) fn shared_shards(&self, other: &TypeState) -> usize {
        self.by_name.shared_shards(&other.by_name)
    }

    /// The resources, decoded into their whole forms, in the order they were accepted.
    pub fn resources(&self) -> Result<Vec<pb::Resource>, String> {
        self.in_order()
            .into_iter()
            .map(|e| wire::whole_form(e.decode()?).map_err(|err| format!("{}: {err}", e.name)))
            .collect()
    }

    /// The resources' names, in the order they were accepted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.in_order().into_iter().map(|e| &*e.name)
    }

    /// These resources with `changed` put in place of the resources of the
    /// same name (or added at the end) and `removed` dropped. What the
    /// change does not touch is shared with `self`.
    pub fn merge(&self, version: &str, changed: &[pb::Resource], removed: &[String]) -> Self {
        let mut by_name = self.by_name.clone();
        let mut next = self.next;
        let removed: HashSet<&str> = removed.iter().map(String::as_str).collect();
        for name in &removed {
            by_name.remove(*name);
        }
        // The last of resources of the same name; new ones after the
        // others, by name.
        let changed: BTreeMap<&str, &pb::Resource> =
            changed.iter().map(|r| (r.name.as_str(), r)).collect();
        for (name, r) in changed {
            let known = by_name.get(name);
            let order = known.map_or_else(
                || {
                    next += 1;
                    next - 1
                },
                |k| k.order,
            );
            let encoded = Encoded::new(r, known);
            by_name.insert(encoded.name.clone(), Accepted { order, encoded });
        }
        TypeState {
            version: version.to_string(),
            by_name,
            next,
        }
    }
}

impl std::fmt::Debug for TypeState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TypeState")
            .field("version", &self.version)
            .field("resources", &self.names().collect::<Vec<_>>())
            .finish()
    }
}

impl serde::Serialize for TypeState {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{Error, SerializeStruct};
        let resources = self.resources().map_err(S::Error::custom)?;
        let mut st = s.serialize_struct("TypeState", 2)?;
        st.serialize_field("version", &self.version)?;
        st.serialize_field("resources", &resources)?;
        st.end()
    }
}
