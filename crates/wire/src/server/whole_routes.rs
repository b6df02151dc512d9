//! Route configs whole, for proxies from before they were sent in pieces
//! (`RouteConfig` in proxy.proto): trellisd can be upgraded before them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, Weak};

use crate::snapshot::{EncodedResource, TypeSnapshot};

/// The joined route configs of every set of pieces some stream sends now,
/// shared by the streams that send it. The proxies of one scope share their
/// pieces (one `Arc<TypeSnapshot>` per scope and version), so 2,000 older
/// proxies cost one joined set per scope, as 2,000 current ones cost one set
/// of pieces; joined per stream, they held 529 MiB at 2,000 proxies.
#[derive(Default)]
pub(super) struct WholeRoutes {
    /// By the address of the pieces' set. The `Weak` keeps that address
    /// from being reused while the entry exists, and says when the set has
    /// gone (then the entry is dropped at the next join).
    joined: Mutex<HashMap<usize, Joined>>,
}

/// A set of pieces (while it lives) and its route configs joined.
type Joined = (Weak<TypeSnapshot>, Arc<TypeSnapshot>);

impl WholeRoutes {
    /// `routes` joined ([`whole_route_configs`]), the same `Arc` for every
    /// caller while `routes` lives.
    pub(super) fn get(&self, routes: &Arc<TypeSnapshot>) -> Arc<TypeSnapshot> {
        let key = Arc::as_ptr(routes) as usize;
        if let Some((_, joined)) = self.lock().get(&key) {
            return joined.clone();
        }
        // Joined without the lock: a thousand streams of other scopes need
        // not wait for it. Two streams of one scope may both join; the first
        // to store its set wins, and both send that one.
        let joined = whole_route_configs(routes);
        let mut all = self.lock();
        all.retain(|_, (pieces, _)| pieces.strong_count() > 0);
        all.entry(key)
            .or_insert_with(|| (Arc::downgrade(routes), joined))
            .1
            .clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<usize, Joined>> {
        self.joined.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// `routes` with the pieces of each route config joined into one resource
/// named after the config, for a proxy that does not join them itself. A
/// joined config's version is its pieces' (so an unchanged config is not
/// sent again in a partial response); a piece that does not decode is left
/// out with a log line, as the proxy would refuse it.
pub(super) fn whole_route_configs(routes: &Arc<TypeSnapshot>) -> Arc<TypeSnapshot> {
    use crate::pb::resource::Kind;
    // Each config with its pieces' versions.
    let mut configs: Vec<(crate::pb::RouteConfig, Vec<&str>)> = Vec::new();
    let mut at: HashMap<String, usize> = HashMap::new();
    for piece in &routes.resources {
        let rc = match piece.decode() {
            Ok(crate::pb::Resource {
                kind: Some(Kind::RouteConfig(rc)),
                ..
            }) => rc,
            _ => {
                tracing::warn!(resource = %piece.name, "a route resource that is no route config");
                continue;
            }
        };
        match at.get(&rc.name) {
            Some(&i) => {
                let (config, versions) = &mut configs[i];
                config.virtual_hosts.extend(rc.virtual_hosts);
                versions.push(&piece.version);
            }
            None => {
                at.insert(rc.name.clone(), configs.len());
                configs.push((rc, vec![&piece.version]));
            }
        }
    }
    let resources = configs
        .into_iter()
        .map(|(rc, versions)| {
            // The pieces' versions name their content, so a hash of them
            // names the config's; unknown if any piece's is.
            let version = if versions.iter().any(|v| v.is_empty()) {
                String::new()
            } else {
                let mut h = std::hash::DefaultHasher::new();
                std::hash::Hash::hash(&versions, &mut h);
                format!("{:016x}", std::hash::Hasher::finish(&h))
            };
            Arc::new(EncodedResource::new(&crate::pb::Resource {
                name: rc.name.clone(),
                version,
                kind: Some(Kind::RouteConfig(rc)),
            }))
        })
        .collect();
    Arc::new(TypeSnapshot {
        version: routes.version.clone(),
        resources,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn piece(name: &str, config: &str, host: &str, version: &str) -> crate::pb::Resource {
        use crate::pb::{Resource, RouteConfig, VirtualHost, resource::Kind};
        Resource {
            name: name.into(),
            version: version.into(),
            kind: Some(Kind::RouteConfig(RouteConfig {
                name: config.into(),
                virtual_hosts: vec![VirtualHost {
                    name: host.into(),
                    ..Default::default()
                }],
            })),
        }
    }

    #[test]
    fn the_streams_of_one_scope_share_its_joined_configs() {
        let cache = WholeRoutes::default();
        let pieces = |b: &str| {
            Arc::new(TypeSnapshot::new(
                b,
                &[piece("80/a", "80", "a", "1"), piece("80/b", "80", "b", b)],
            ))
        };
        let scope = pieces("1");
        // Two streams of the scope: one joined set, not two.
        let (one, two) = (cache.get(&scope), cache.get(&scope.clone()));
        assert!(Arc::ptr_eq(&one, &two));
        // Another scope with the same content has its own set (keyed by the
        // pieces' set, not its version: the two may diverge).
        let other = pieces("1");
        assert!(!Arc::ptr_eq(&cache.get(&other), &one));
        // A VirtualService change gives the scope a new set of pieces: its
        // streams are sent the joined config of the new one.
        let changed = pieces("2");
        let after = cache.get(&changed);
        assert!(!Arc::ptr_eq(&after, &one));
        assert_eq!(after.version, "2");
        assert!(!after.resources[0].same(&one.resources[0]));
        assert!(Arc::ptr_eq(&after, &cache.get(&changed)));
        // Sets no stream sends any more are dropped.
        drop((scope, other, one, two));
        let _ = cache.get(&pieces("3"));
        assert_eq!(cache.lock().len(), 2);
    }

    #[test]
    fn route_pieces_are_joined_for_a_proxy_that_does_not_join_them() {
        use crate::pb::resource::Kind;
        let set = |versions: [&str; 3]| {
            Arc::new(TypeSnapshot::new(
                "7",
                &[
                    piece("80/a", "80", "a", versions[0]),
                    piece("9080/r", "9080", "r", versions[1]),
                    piece("80/b", "80", "b", versions[2]),
                ],
            ))
        };
        let joined = whole_route_configs(&set(["1", "2", "3"]));
        assert_eq!(joined.version, "7");
        let configs: Vec<(String, Vec<String>)> = joined
            .resources
            .iter()
            .map(|r| match r.decode().expect("decodes").kind {
                Some(Kind::RouteConfig(rc)) => (
                    r.name.clone(),
                    rc.virtual_hosts.into_iter().map(|vh| vh.name).collect(),
                ),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            configs,
            [
                ("80".to_string(), vec!["a".to_string(), "b".to_string()]),
                ("9080".to_string(), vec!["r".to_string()]),
            ]
        );
        // A config's version follows its pieces': the same while they are,
        // another when one changes, unknown when one is.
        let again = whole_route_configs(&set(["1", "2", "3"]));
        assert!(joined.resources[0].same(&again.resources[0]));
        let changed = whole_route_configs(&set(["1", "2", "4"]));
        assert!(!joined.resources[0].same(&changed.resources[0]));
        assert!(joined.resources[1].same(&changed.resources[1]));
        let unknown = whole_route_configs(&set(["", "2", "3"]));
        assert!(unknown.resources[0].version.is_empty());
    }
}
