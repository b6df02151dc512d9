//! Istio YAML, parsed and validated as `trellis validate`, `apply` and the
//! control plane do: whatever the bytes, an error or a value, never a panic;
//! and a resource that validates survives the model (the mesh is built and a
//! proxy's config compiled from it).

use crate::corpus::{self, Edit};

fn check(text: &str) {
    let Ok(resources) = api::parse("fuzz.yaml", text) else {
        return;
    };
    let valid: Vec<api::Resource> = resources
        .into_iter()
        .filter(|r| api::validate(r).is_empty())
        .collect();
    let mesh = model::Mesh::build(&valid, model::MeshConfig::default());
    let node = wire::pb::Node {
        id: "productpage-v1.default".into(),
        pod_name: "productpage-v1".into(),
        namespace: "default".into(),
        kind: wire::pb::ProxyKind::Sidecar as i32,
        ..Default::default()
    };
    let _ = model::compile(&mesh, &node);
}

#[test]
fn istio_yaml() {
    let files = corpus::yaml_files();
    assert!(!files.is_empty(), "no YAML corpus found");
    bolero::check!()
        .with_type::<(u16, Vec<Edit>)>()
        .with_iterations(corpus::TEST_ITERATIONS)
        .for_each(|(which, edits)| {
            let mut data = files[*which as usize % files.len()].clone().into_bytes();
            corpus::apply(edits, &mut data);
            check(&String::from_utf8_lossy(&data));
        });
}

#[test]
fn istio_yaml_raw_bytes() {
    bolero::check!()
        .with_iterations(corpus::TEST_ITERATIONS)
        .for_each(|bytes: &[u8]| check(&String::from_utf8_lossy(bytes)));
}
