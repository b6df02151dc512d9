//! Fixtures shared by the model test binaries: a mesh from YAML, the node a
//! sidecar proxy presents, and lookups into a compiled config.

// Each test binary compiles its own copy and uses only some of these.
#![allow(dead_code)]

use model::{Mesh, MeshConfig, ProxyConfig};
use wire::pb::{self, ProxyKind};

/// A mesh built from one YAML document stream with the default MeshConfig.
pub fn mesh(yaml: &str) -> Mesh {
    let resources = api::parse("mesh.yaml", yaml).expect("fixture parses");
    Mesh::build(&resources, MeshConfig::default())
}

/// The node a sidecar in pod `pod` of namespace `ns` presents.
pub fn sidecar(ns: &str, pod: &str) -> pb::Node {
    pb::Node {
        id: format!("{pod}.{ns}"),
        pod_name: pod.into(),
        namespace: ns.into(),
        kind: ProxyKind::Sidecar as i32,
        ..Default::default()
    }
}

pub fn cluster_names(c: &ProxyConfig) -> Vec<&str> {
    c.clusters.iter().map(|c| c.name.as_str()).collect()
}

/// The virtual host `vhost` in the route config named `route`.
pub fn virtual_host<'a>(c: &'a ProxyConfig, route: &str, vhost: &str) -> &'a pb::VirtualHost {
    let rc = c
        .routes
        .iter()
        .find(|r| r.name == route)
        .unwrap_or_else(|| panic!("no route config {route}"));
    rc.virtual_hosts
        .iter()
        .find(|v| v.name == vhost)
        .unwrap_or_else(|| panic!("no virtual host {vhost} in route config {route}"))
}
