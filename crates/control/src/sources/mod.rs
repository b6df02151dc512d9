//! Where the mesh's resources come from besides the store `trellis apply`
//! writes to: a live source ([`kube`]) keeps a [`ResourceSet`] current, and
//! the control plane builds the mesh from that set without knowing which
//! source fills it.

pub mod kube;

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};

use api::Resource;
use model::MeshConfig;
use tokio::sync::{Notify, watch};

use crate::store::{Key, share_with_neighbours};

/// The resources (and the MeshConfig, if the source carries one) a live
/// source last saw. Each kind is replaced as a whole when the source relists
/// it, so a reader never sees a kind half-listed, and a source that loses
/// its connection keeps what it had (static stability).
pub struct ResourceSet {
    resources: Mutex<BTreeMap<Key, Resource>>,
    mesh_config: Mutex<Option<MeshConfig>>,
    /// Every Istio object the source stores, valid or not, as stored.
    stored: Mutex<BTreeMap<Key, Stored>>,
    changed: Notify,
    /// The objects changed since the control plane last took them (see
    /// [`ResourceSet::take_touched`]).
    touched: Mutex<Touched>,
    /// Bumped on every change of any of the above, for any number of
    /// watchers (the status writer) besides the one control plane.
    revision: watch::Sender<u64>,
}

impl Default for ResourceSet {
    fn default() -> Self {
        ResourceSet {
            resources: Default::default(),
            mesh_config: Default::default(),
            stored: Default::default(),
            changed: Notify::new(),
            // The first push reads everything.
            touched: Mutex::new(Touched {
                objects: Default::default(),
                anything: true,
            }),
            revision: watch::Sender::new(0),
        }
    }
}

/// An Istio object as the source stores it, whether or not it is part of
/// the mesh: what is needed to report on it in its `status`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Stored {
    /// Where it is read and written (`networking.istio.io/v1`).
    pub api_version: String,
    pub resource_version: Option<String>,
    pub generation: Option<i64>,
    /// Its `status` as stored, if any.
    pub status: Option<serde_json::Value>,
    /// Why it is left out of the mesh (it does not parse or validate);
    /// empty when it is served.
    pub invalid: Vec<String>,
}

/// What changed in a [`ResourceSet`] since it was last asked.
#[derive(Default)]
struct Touched {
    objects: model::incremental::Touched,
    /// Something changed that names no object (the MeshConfig).
    anything: bool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The data under these locks stays consistent at every step; a panic
    // elsewhere while holding one leaves it usable.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl ResourceSet {
    /// The current resources, locked while the guard lives.
    pub fn resources(&self) -> MutexGuard<'_, BTreeMap<Key, Resource>> {
        lock(&self.resources)
    }

    /// The MeshConfig the source carries (Kubernetes: the `istio` ConfigMap),
    /// `None` when it carries none (then the control plane's own is used).
    pub fn mesh_config(&self) -> Option<MeshConfig> {
        lock(&self.mesh_config).clone()
    }

    /// Completes at the next change after it is called (or at once if a
    /// change was signalled since the last call).
    pub async fn changed(&self) {
        self.changed.notified().await;
    }

    /// The Istio objects as stored, locked while the guard lives.
    pub fn stored(&self) -> MutexGuard<'_, BTreeMap<Key, Stored>> {
        lock(&self.stored)
    }

    /// Watches every change (resources, stored objects, mesh config).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.revision.subscribe()
    }

    /// The objects changed since the last call; `None` when something
    /// else changed too (the MeshConfig), so anything may have. Call it
    /// while holding [`ResourceSet::resources`], which they are changed
    /// under, to read exactly the changes taken.
    pub fn take_touched(&self) -> Option<model::incremental::Touched> {
        let touched = std::mem::take(&mut *lock(&self.touched));
        (!touched.anything).then_some(touched.objects)
    }

    fn touch(&self, key: &Key) {
        key.touch(&mut lock(&self.touched).objects);
    }

    fn notify(&self) {
        self.changed.notify_one();
        self.revision.send_modify(|r| *r = r.wrapping_add(1));
    }

    /// Adds or replaces one resource. A pod holds the copies of a like pod
    /// next to it (see [`share_with_neighbours`]): 10,000 pods read from an
    /// API server keep about as many label maps as they have ReplicaSets.
    pub(crate) fn apply(&self, mut r: Resource) {
        let key = Key::of(&r);
        let mut resources = lock(&self.resources);
        if resources.get(&key) == Some(&r) {
            return;
        }
        self.touch(&key);
        share_with_neighbours(&resources, &key, &mut r);
        resources.insert(key, r);
        drop(resources);
        self.notify();
    }

    pub(crate) fn remove(&self, key: &Key) {
        let mut resources = lock(&self.resources);
        if resources.remove(key).is_some() {
            // Under the lock it was removed under (see `take_touched`).
            self.touch(key);
            drop(resources);
            self.notify();
        }
    }

    /// Records one Istio object as stored.
    pub(crate) fn store(&self, key: Key, object: Stored) {
        let mut stored = lock(&self.stored);
        if stored.get(&key) == Some(&object) {
            return;
        }
        stored.insert(key, object);
        drop(stored);
        self.revision.send_modify(|r| *r = r.wrapping_add(1));
    }

    pub(crate) fn unstore(&self, key: &Key) {
        if lock(&self.stored).remove(key).is_some() {
            self.revision.send_modify(|r| *r = r.wrapping_add(1));
        }
    }

    /// Replaces every stored object of `kind` (a relist).
    pub(crate) fn restore_kind(&self, kind: &str, items: Vec<(Key, Stored)>) {
        let mut stored = lock(&self.stored);
        stored.retain(|k, _| k.kind != kind);
        stored.extend(items);
        drop(stored);
        self.revision.send_modify(|r| *r = r.wrapping_add(1));
    }

    /// Replaces every resource of `kind` with `items` in one step (a relist).
    pub(crate) fn replace_kind(&self, kind: &str, items: Vec<Resource>) {
        // Sorted in a vector, not collected into a second map: 5,000 pods'
        // map held 2.4 MiB more at its peak, in nodes freed among the set's.
        // Reversed before the (stable) sort, so that of equal keys the last
        // listed comes first and is the one kept, as a map's would be.
        let mut fresh: Vec<(Key, Resource)> = items.into_iter().map(|r| (Key::of(&r), r)).collect();
        fresh.reverse();
        fresh.sort_by(|(a, _), (b, _)| a.cmp(b));
        fresh.dedup_by(|(a, _), (b, _)| a == b);
        let listed = |k: &Key| fresh.binary_search_by(|(f, _)| f.cmp(k)).is_ok();
        let mut resources = lock(&self.resources);
        let old: Vec<Key> = resources
            .keys()
            .filter(|k| k.kind == kind && !listed(k))
            .cloned()
            .collect();
        let mut changed = !old.is_empty();
        for k in old {
            self.touch(&k);
            resources.remove(&k);
        }
        for (k, mut r) in fresh {
            if resources.get(&k) != Some(&r) {
                self.touch(&k);
                share_with_neighbours(&resources, &k, &mut r);
                resources.insert(k, r);
                changed = true;
            }
        }
        drop(resources);
        if changed {
            self.notify();
        }
    }

    pub(crate) fn set_mesh_config(&self, config: Option<MeshConfig>) {
        let mut current = lock(&self.mesh_config);
        if *current != config {
            *current = config;
            drop(current);
            lock(&self.touched).anything = true;
            self.notify();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use api::Kind;

    fn vs(name: &str, host: &str) -> Resource {
        let text = format!(
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: {name}, namespace: default}}\nspec: {{hosts: [{host}]}}\n"
        );
        api::parse("t.yaml", &text).unwrap().remove(0)
    }

    #[test]
    fn a_relist_replaces_only_its_kind_and_keeps_unchanged_objects() {
        let set = ResourceSet::default();
        set.apply(vs("a", "a"));
        set.apply(vs("b", "b"));
        let ns = api::parse(
            "t.yaml",
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: default}\n",
        )
        .unwrap()
        .remove(0);
        set.apply(ns);
        set.replace_kind(
            Kind::VirtualService.as_str(),
            vec![vs("b", "b2"), vs("c", "c")],
        );
        let names: Vec<String> = set
            .resources()
            .values()
            .map(|r| format!("{}:{}", r.kind_name(), r.name()))
            .collect();
        assert_eq!(
            names,
            ["Namespace:default", "VirtualService:b", "VirtualService:c"]
        );
        let b = set.resources().values().find(|r| r.name() == "b").cloned();
        assert_eq!(b, Some(vs("b", "b2")));
    }

    /// A relist naming an object twice keeps the last, as a map built from
    /// it would.
    #[test]
    fn a_relist_naming_an_object_twice_keeps_the_last() {
        let set = ResourceSet::default();
        set.replace_kind(
            Kind::VirtualService.as_str(),
            vec![vs("b", "b1"), vs("a", "a"), vs("b", "b2"), vs("b", "b3")],
        );
        let listed: Vec<Resource> = set.resources().values().cloned().collect();
        assert_eq!(listed, [vs("a", "a"), vs("b", "b3")]);
    }

    /// Pods a live source reads, one by one or in a relist, hold one copy
    /// of what the pods of their ReplicaSet have alike, as the store's do.
    #[test]
    fn like_pods_from_a_source_hold_one_copy_of_what_they_have_alike() {
        use crate::store::tests::{rs_pod, shared};
        let set = ResourceSet::default();
        let slim = |r: &Resource| match set.resources().get(&Key::of(r)) {
            Some(Resource::SlimPod(p)) => p.clone(),
            other => panic!("{other:?}"),
        };
        let (a, b) = (rs_pod("reviews-v1-a", "v1"), rs_pod("reviews-v1-b", "v1"));
        set.apply(a.clone().slim());
        set.apply(b.clone().slim());
        assert!(shared(&slim(&a), &slim(&b)), "applied");
        let (c, other) = (rs_pod("reviews-v1-c", "v1"), rs_pod("reviews-v2-a", "v2"));
        let relisted = [&a, &b, &c, &other].map(|r| r.clone().slim());
        set.replace_kind(Kind::Pod.as_str(), relisted.to_vec());
        assert!(shared(&slim(&a), &slim(&c)), "relisted");
        assert!(!std::sync::Arc::ptr_eq(
            &slim(&c).labels,
            &slim(&other).labels
        ));
        for r in &relisted {
            assert_eq!(set.resources().get(&Key::of(r)), Some(r));
        }
    }
}
