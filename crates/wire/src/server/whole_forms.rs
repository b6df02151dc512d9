//! Resources in their whole forms, for proxies from before the compact ones
//! (`DiscoveryRequest.compact_resources`): trellisd can be upgraded before
//! them. Converted once per version and shared by every stream that sends
//! it, so that a thousand older proxies cost one conversion, not a thousand.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use crate::snapshot::{EncodedResource, TypeSnapshot};

/// The whole forms made so far, held while some stream holds them.
#[derive(Default)]
pub(super) struct WholeForms {
    /// By the type and version of the set they were made from.
    sets: Mutex<HashMap<(String, String), Weak<TypeSnapshot>>>,
    /// By name and version of the resource they were made from: a new set
    /// version converts only the resources that changed.
    resources: Mutex<HashMap<(String, String), Weak<EncodedResource>>>,
}

impl WholeForms {
    /// `set` (of `type_url`) with each resource in its whole form. A
    /// resource keeps its name and version (the same content in another
    /// form), so partial responses compare it as before; one that is whole
    /// already is shared as it is; one that does not read back is left out
    /// with a log line, as the proxy would refuse it.
    pub(super) fn of(&self, type_url: &str, set: &Arc<TypeSnapshot>) -> Arc<TypeSnapshot> {
        let key = (type_url.to_string(), set.version.clone());
        let mut sets = self.sets.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(whole) = sets.get(&key).and_then(Weak::upgrade) {
            return whole;
        }
        let mut known = self.resources.lock().unwrap_or_else(|e| e.into_inner());
        // A new version: forget what nobody holds any more.
        sets.retain(|_, s| s.strong_count() > 0);
        known.retain(|_, r| r.strong_count() > 0);
        let resources = set
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
        let whole = Arc::new(TypeSnapshot {
            version: set.version.clone(),
            resources,
        });
        sets.insert(key, Arc::downgrade(&whole));
        whole
    }
}

/// `r` in its whole form (itself if it is).
fn whole(r: &Arc<EncodedResource>) -> Option<Arc<EncodedResource>> {
    let decoded = match r.decode() {
        Ok(decoded) => decoded,
        Err(e) => {
            tracing::warn!(resource = %r.name, error = %e, "a resource that does not decode");
            return None;
        }
    };
    match crate::whole_form(decoded.clone()) {
        Ok(whole) if whole == decoded => Some(r.clone()),
        Ok(whole) => Some(Arc::new(EncodedResource::new(&whole))),
        Err(e) => {
            tracing::warn!(resource = %r.name, error = %e, "a resource that does not read back");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb::resource::Kind;
    use crate::pb::{Cluster, ClusterEndpoints, Endpoint, Resource, RouteConfig, VirtualHost};

    /// A resource as the compiler sends it (compact) or as an older proxy
    /// reads it (whole).
    fn resource(name: &str, version: &str, compact: bool, kind: Kind) -> Resource {
        let mut kind = kind;
        if compact {
            if let Kind::Endpoints(e) = &mut kind {
                e.compact = Some(crate::endpoints::compact(std::mem::take(&mut e.endpoints)));
            }
            crate::names::leave_out(name, &mut kind);
        }
        Resource {
            name: name.into(),
            version: version.into(),
            kind: Some(kind),
        }
    }

    fn endpoints(cluster: &str, addresses: &[&str]) -> Kind {
        Kind::Endpoints(ClusterEndpoints {
            cluster: cluster.into(),
            endpoints: addresses
                .iter()
                .map(|a| Endpoint {
                    address: a.to_string(),
                    port: 8080,
                    healthy: true,
                    ..Default::default()
                })
                .collect(),
            compact: None,
        })
    }

    #[test]
    fn compact_endpoints_are_made_whole_once_per_version_for_every_stream() {
        let cache = WholeForms::default();
        let set = |version: &str, b: &str, compact: bool| {
            Arc::new(TypeSnapshot::new(
                version,
                &[
                    resource("a", "1", compact, endpoints("a", &["10.0.0.1", "10.0.0.2"])),
                    resource("b", b, compact, endpoints("b", &["fd00::1"])),
                    resource("c", "1", false, endpoints("c", &["10.0.0.3"])),
                ],
            ))
        };
        let v1 = set("v1", "1", true);
        let whole = cache.of(crate::types::ENDPOINTS, &v1);
        assert_eq!(whole.version, "v1");
        assert_eq!(whole.decode(), set("v1", "1", false).decode());
        // The whole form already: shared as it is.
        assert!(Arc::ptr_eq(&whole.resources[2], &v1.resources[2]));
        // Another stream sending the same version gets the same set.
        assert!(Arc::ptr_eq(&cache.of(crate::types::ENDPOINTS, &v1), &whole));
        // A new version converts only what changed.
        let v2 = cache.of(crate::types::ENDPOINTS, &set("v2", "2", true));
        assert!(Arc::ptr_eq(&v2.resources[0], &whole.resources[0]));
        assert!(!Arc::ptr_eq(&v2.resources[1], &whole.resources[1]));
        assert_eq!(v2.resources[1].version, "2");
        // Nobody holds v1 any more: it is forgotten at the next version.
        drop((whole, v1));
        cache.of(crate::types::ENDPOINTS, &set("v3", "3", true));
        let sets = cache.sets.lock().expect("lock");
        assert!(!sets.contains_key(&(crate::types::ENDPOINTS.to_string(), "v1".to_string())));
    }

    #[test]
    fn names_left_to_the_resource_are_put_back() {
        let cache = WholeForms::default();
        let cluster = Kind::Cluster(Cluster {
            name: "outbound|80||a".into(),
            port: 80,
            ..Default::default()
        });
        let piece = Kind::RouteConfig(RouteConfig {
            name: "80".into(),
            virtual_hosts: vec![VirtualHost {
                name: "a:80".into(),
                domains: vec!["a".into()],
                ..Default::default()
            }],
        });
        for (type_url, name, kind) in [
            (crate::types::CLUSTER, "outbound|80||a", cluster),
            (crate::types::ROUTE_CONFIG, "80/a:80", piece),
        ] {
            let compact = Arc::new(TypeSnapshot::new(
                "v",
                &[resource(name, "1", true, kind.clone())],
            ));
            assert_ne!(
                compact.decode().expect("decodes")[0].kind,
                Some(kind.clone())
            );
            let whole = cache.of(type_url, &compact);
            assert_eq!(
                whole.decode().expect("decodes")[0].kind,
                Some(kind),
                "{type_url}"
            );
        }
    }
}
