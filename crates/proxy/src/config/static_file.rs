//! Static config: the same resources the control plane would send, read
//! from a JSON file (`{"resources": [Resource, ...]}`, the serde form of the
//! proxy API), so that a proxy can run with no control plane at all.

use std::path::Path;

use serde::Deserialize;
use wire::pb;
use wire::pb::resource::Kind;

use super::ConfigStore;
use crate::error::Error;

#[derive(Deserialize)]
struct StaticFile {
    resources: Vec<pb::Resource>,
}

pub fn load(path: &Path, store: &ConfigStore) -> Result<(), Error> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::StaticRead {
        path: path.into(),
        source,
    })?;
    let bad = |reason: String| Error::StaticConfig {
        path: path.into(),
        reason,
    };
    // serde_json's errors name the line and column (serde_path_to_error
    // would name the field path too, but adds ~200 KiB of code to every
    // sidecar's resident pages).
    let file: StaticFile = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
    drop(text);
    let mut by_type: [Vec<pb::Resource>; 4] = Default::default();
    for (i, r) in file.resources.into_iter().enumerate() {
        let slot = match &r.kind {
            Some(Kind::Cluster(_)) => 0,
            Some(Kind::Endpoints(_)) => 1,
            Some(Kind::Listener(_)) => 2,
            Some(Kind::RouteConfig(_)) => 3,
            Some(Kind::DirectoryHost(_)) => {
                return Err(bad(format!(
                    "resources[{i}] ({:?}) is a directory entry: on-demand discovery needs a control plane, a static config holds every host",
                    r.name
                )));
            }
            None => return Err(bad(format!("resources[{i}] ({:?}) has no kind", r.name))),
        };
        by_type[slot].push(r);
    }
    // In the control plane's order, so that references resolve as they would over xDS.
    // In the control plane's order, so that references resolve as they would over xDS.
    for (type_url, resources) in wire::types::ALL.iter().zip(by_type) {
        store.apply(type_url, "static", resources).map_err(bad)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_text(text: &str) -> (Result<(), Error>, ConfigStore) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("proxy.json");
        std::fs::write(&path, text).expect("write");
        let store = ConfigStore::new(&pb::Node::default());
        (load(&path, &store), store)
    }

    #[test]
    fn bad_files_are_refused_naming_the_file_and_the_place() {
        let (r, store) =
            load_text("{\"resources\": [\n  {\"name\": \"x\", \"kind\": {\"cluster\": 3}}\n]}");
        let err = r.expect_err("a cluster is no number").to_string();
        assert!(
            err.contains("proxy.json") && err.contains("line 2"),
            "{err}"
        );
        assert!(store.current().is_none());

        // Well-formed, but a route without an action does not compile.
        let route = r#"{"resources": [{"name": "80", "kind": {"route_config": {"name": "80",
            "virtual_hosts": [{"name": "vh", "domains": ["*"], "routes": [{"name": "r"}]}]}}}]}"#;
        let (r, store) = load_text(route);
        let err = r.expect_err("no action").to_string();
        assert!(
            err.contains("proxy.json") && err.contains("no action"),
            "{err}"
        );
        assert!(store.current().is_none());
    }
}
