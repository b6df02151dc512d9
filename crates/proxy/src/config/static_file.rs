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
    let mut de = serde_json::Deserializer::from_str(&text);
    let file: StaticFile = serde_path_to_error::deserialize(&mut de)
        .map_err(|e| bad(format!("at {}: {}", e.path(), e.inner())))?;
    drop(text);
    let mut by_type: [Vec<pb::Resource>; 4] = Default::default();
    for (i, r) in file.resources.into_iter().enumerate() {
        let slot = match &r.kind {
            Some(Kind::Cluster(_)) => 0,
            Some(Kind::Endpoints(_)) => 1,
            Some(Kind::Listener(_)) => 2,
            Some(Kind::RouteConfig(_)) => 3,
            None => return Err(bad(format!("resources[{i}] ({:?}) has no kind", r.name))),
        };
        by_type[slot].push(r);
    }
    // In the control plane's order, so that references resolve as they would over xDS.
    let by_type = wire::types::ALL.iter().copied().zip(by_type).collect();
    store.apply_all("static", by_type).map_err(bad)
}
