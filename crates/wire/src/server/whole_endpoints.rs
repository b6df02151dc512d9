//! Endpoints whole, for proxies from before the compact form
//! (`CompactEndpoints` in proxy.proto): trellisd can be upgraded before them.
//! Converted once per version and shared by every stream that sends it, so
//! that a thousand older proxies cost one conversion, not a thousand.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use crate::pb::{Resource, resource::Kind};
use crate::snapshot::{EncodedResource, TypeSnapshot};

/// The whole forms made so far, held while some stream holds them.
#[derive(Default)]
pub(super) struct WholeEndpoints {
    /// By the version of the set they were made from.
    sets: Mutex<HashMap<String, Weak<TypeSnapshot>>>,
    /// By name and version of the resource they were made from: a new set
    /// version converts only the resources that changed.
    resources: Mutex<HashMap<(String, String), Weak<EncodedResource>>>,
}

impl WholeEndpoints {
    /// `endpoints` with each resource's endpoints whole. A resource keeps its
    /// name and version (the same content in another form), so partial
    /// responses compare it as before; one that is whole already is shared
    /// as it is; one that does not read back is left out with a log line, as
    /// the proxy would refuse it.
    pub(super) fn of(&self, endpoints: &Arc<TypeSnapshot>) -> Arc<TypeSnapshot> {
        let mut sets = self.sets.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(set) = sets.get(&endpoints.version).and_then(Weak::upgrade) {
            return set;
        }
        let mut known = self.resources.lock().unwrap_or_else(|e| e.into_inner());
        // A new version: forget what nobody holds any more.
        sets.retain(|_, s| s.strong_count() > 0);
        known.retain(|_, r| r.strong_count() > 0);
        let resources = endpoints
            .resources
            .iter()
            .filter_map(|r| {
                let key = (r.name.clone(), r.version.clone());
                if let Some(done) = known.get(&key).and_then(Weak::upgrade) {
                    return Some(done);
                }
                let done = whole(r)?;
                if !r.version.is_empty() {
                    known.insert(key, Arc::downgrade(&done));
                }
                Some(done)
            })
            .collect();
        let set = Arc::new(TypeSnapshot {
            version: endpoints.version.clone(),
            resources,
        });
        sets.insert(endpoints.version.clone(), Arc::downgrade(&set));
        set
    }
}

/// `r` with its endpoints whole (itself if they are).
fn whole(r: &Arc<EncodedResource>) -> Option<Arc<EncodedResource>> {
    let ce = match r.decode() {
        Ok(Resource {
            kind: Some(Kind::Endpoints(ce)),
            ..
        }) => ce,
        _ => {
            tracing::warn!(resource = %r.name, "an endpoints resource that is no endpoints");
            return None;
        }
    };
    if ce.compact.is_none() {
        return Some(r.clone());
    }
    match crate::endpoints::whole(&r.name, ce) {
        Ok(ce) => Some(Arc::new(EncodedResource::new(&Resource {
            name: r.name.clone(),
            version: r.version.clone(),
            kind: Some(Kind::Endpoints(ce)),
        }))),
        Err(e) => {
            tracing::warn!(resource = %r.name, error = %e, "endpoints that do not read back");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb::{ClusterEndpoints, Endpoint};

    fn endpoints(cluster: &str, addresses: &[&str]) -> Vec<Endpoint> {
        addresses
            .iter()
            .map(|a| Endpoint {
                address: a.to_string(),
                port: 8080,
                workload: cluster.into(),
                healthy: true,
                ..Default::default()
            })
            .collect()
    }

    fn resource(cluster: &str, version: &str, compact: bool, addresses: &[&str]) -> Resource {
        let eps = endpoints(cluster, addresses);
        let (endpoints, compact, name) = if compact {
            (Vec::new(), Some(crate::endpoints::compact(eps)), "")
        } else {
            (eps, None, cluster)
        };
        Resource {
            name: cluster.into(),
            version: version.into(),
            kind: Some(Kind::Endpoints(ClusterEndpoints {
                cluster: name.into(),
                endpoints,
                compact,
            })),
        }
    }

    #[test]
    fn compact_endpoints_are_made_whole_once_per_version_for_every_stream() {
        let cache = WholeEndpoints::default();
        let set = |version: &str, b: &str| {
            Arc::new(TypeSnapshot::new(
                version,
                &[
                    resource("a", "1", true, &["10.0.0.1", "10.0.0.2"]),
                    resource("b", b, true, &["fd00::1"]),
                    resource("c", "1", false, &["10.0.0.3"]),
                ],
            ))
        };
        let v1 = set("v1", "1");
        let whole = cache.of(&v1);
        assert_eq!(whole.version, "v1");
        let got: Vec<Resource> = whole.decode().expect("decodes");
        assert_eq!(
            got,
            vec![
                resource("a", "1", false, &["10.0.0.1", "10.0.0.2"]),
                resource("b", "1", false, &["fd00::1"]),
                resource("c", "1", false, &["10.0.0.3"]),
            ]
        );
        // The whole form already: shared as it is.
        assert!(Arc::ptr_eq(&whole.resources[2], &v1.resources[2]));
        // Another stream sending the same version gets the same set.
        assert!(Arc::ptr_eq(&cache.of(&v1), &whole));
        // A new version converts only what changed.
        let v2 = cache.of(&set("v2", "2"));
        assert!(Arc::ptr_eq(&v2.resources[0], &whole.resources[0]));
        assert!(!Arc::ptr_eq(&v2.resources[1], &whole.resources[1]));
        assert_eq!(v2.resources[1].version, "2");
        // Nobody holds v1 any more: it is forgotten at the next version.
        drop((whole, v1));
        cache.of(&set("v3", "3"));
        let sets = cache.sets.lock().expect("lock");
        assert!(!sets.contains_key("v1"));
    }
}
