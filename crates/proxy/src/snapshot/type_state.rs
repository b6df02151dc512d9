//! What a proxy has accepted of one resource type, kept encoded.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use wire::pb;

/// The accepted resources of one type, kept protobuf-encoded. Requests use
/// the compiled snapshot; the resources themselves are read only by the next
/// compile, partial updates and the config dump. Decoded, a 1,000-service
/// config is hundreds of thousands of small allocations (several MiB for
/// the life of the proxy); encoded it is one buffer per resource.
///
/// A resource whose bytes did not change is the same `Arc<Encoded>` in the
/// next version of its type: that is how a compile knows, without decoding,
/// what it can reuse.
#[derive(Debug, Default)]
pub struct TypeState {
    pub version: String,
    pub(super) resources: Vec<Arc<Encoded>>,
}

/// One resource, protobuf-encoded.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Encoded {
    pub(super) name: Arc<str>,
    bytes: Box<[u8]>,
}

impl Encoded {
    /// `r` encoded: the resource `known` had under its name if that one
    /// has the same bytes.
    fn new(r: &pb::Resource, known: &HashMap<&str, &Arc<Encoded>>) -> Arc<Self> {
        let bytes = prost::Message::encode_to_vec(r);
        match known.get(r.name.as_str()) {
            Some(k) if *k.bytes == *bytes => Arc::clone(k),
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
    pub fn new(version: &str, resources: &[pb::Resource]) -> Self {
        TypeState::replacing(None, version, resources)
    }

    /// `resources` as the full set of the type, sharing with `old` (the
    /// type's set until now) the resources that did not change.
    pub fn replacing(old: Option<&TypeState>, version: &str, resources: &[pb::Resource]) -> Self {
        let known = old.map(TypeState::by_name).unwrap_or_default();
        TypeState {
            version: version.to_string(),
            resources: resources.iter().map(|r| Encoded::new(r, &known)).collect(),
        }
    }

    fn by_name(&self) -> HashMap<&str, &Arc<Encoded>> {
        self.resources.iter().map(|e| (&*e.name, e)).collect()
    }

    /// The resources, decoded into their whole forms, in the order they were accepted.
    pub fn resources(&self) -> Result<Vec<pb::Resource>, String> {
        self.resources
            .iter()
            .map(|e| wire::whole_form(e.decode()?).map_err(|err| format!("{}: {err}", e.name)))
            .collect()
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.resources.iter().map(|e| &*e.name)
    }

    /// These resources with `changed` put in place of the resources of the
    /// same name (or added at the end) and `removed` dropped.
    pub fn merge(&self, version: &str, changed: &[pb::Resource], removed: &[String]) -> Self {
        let mut changed: BTreeMap<&str, &pb::Resource> =
            changed.iter().map(|r| (r.name.as_str(), r)).collect();
        let removed: HashSet<&str> = removed.iter().map(String::as_str).collect();
        let known = self.by_name();
        let mut resources: Vec<Arc<Encoded>> = self
            .resources
            .iter()
            .filter(|e| !removed.contains(&*e.name))
            .map(|e| match changed.remove(&*e.name) {
                Some(r) => Encoded::new(r, &known),
                None => Arc::clone(e),
            })
            .collect();
        resources.extend(changed.into_values().map(|r| Encoded::new(r, &known)));
        TypeState {
            version: version.to_string(),
            resources,
        }
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
