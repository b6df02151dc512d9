//! The proxy's decoding of pushed config: a control plane (or anyone who got
//! onto the stream) can send any bytes as a resource. The proxy decodes
//! them as the discovery client does and applies them: an error (a NACK) or
//! a new snapshot, never a panic.

use prost::Message;
use wire::pb;

use crate::corpus::{self, Edit};

/// Encoded resources by type URL.
type EncodedConfig = Vec<(String, Vec<Vec<u8>>)>;

/// Bookinfo's real compiled config for productpage's sidecar, per type, each
/// resource encoded as it travels on the stream.
fn real_config() -> (pb::Node, EncodedConfig) {
    let mut resources = Vec::new();
    for f in corpus::yaml_files() {
        if let Ok(rs) = api::parse("corpus.yaml", &f) {
            resources.extend(rs.into_iter().filter(|r| api::validate(r).is_empty()));
        }
    }
    let mesh = model::Mesh::build(&resources, model::MeshConfig::default());
    let node = pb::Node {
        id: "productpage-v1.default".into(),
        pod_name: "productpage-v1".into(),
        namespace: "default".into(),
        pod_ip: "127.0.0.1".into(),
        kind: pb::ProxyKind::Sidecar as i32,
        ..Default::default()
    };
    let snapshot = model::compile(&mesh, &node).into_snapshot();
    let types = snapshot
        .types
        .iter()
        .map(|(type_url, t)| {
            let encoded = t
                .resources
                .iter()
                .map(|r| r.bytes.to_vec())
                .collect::<Vec<_>>();
            (type_url.clone(), encoded)
        })
        .collect();
    (node, types)
}

#[test]
fn pushed_config() {
    let (node, types) = real_config();
    assert!(
        types.iter().any(|(_, rs)| !rs.is_empty()),
        "an empty corpus config"
    );
    bolero::check!()
        .with_type::<(u8, u16, Vec<Edit>)>()
        .with_iterations(corpus::TEST_ITERATIONS)
        .for_each(|(which_type, which_resource, edits)| {
            let store = proxy::config::ConfigStore::new(&node);
            let victim = *which_type as usize % types.len();
            for (i, (type_url, encoded)) in types.iter().enumerate() {
                let mut decoded = Vec::new();
                for (j, bytes) in encoded.iter().enumerate() {
                    let mut bytes = bytes.clone();
                    if i == victim && j == *which_resource as usize % encoded.len().max(1) {
                        corpus::apply(edits, &mut bytes);
                    }
                    if let Ok(r) = pb::Resource::decode(bytes.as_slice()) {
                        decoded.push(r);
                    }
                }
                let _ = store.apply(type_url, "fuzz", decoded);
            }
        });
}
