//! A map whose copies share what they did not change. Under endpoint churn
//! each update of a 1,000-resource config changes one or two entries of
//! the maps a compile keeps (the accepted resources by name, the endpoints
//! by cluster); copying such a map whole, or building it again, was most of
//! an update's cost. This one is split into shards, each behind an `Arc`: a
//! copy shares every shard, a change copies the one shard it touches, and
//! two versions of a map are compared shard by shard, skipping the shared.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};
use std::sync::Arc;

/// 64 shards: a 1,000-entry map copies ~16 entries per change, and a copy
/// costs 64 reference counts.
pub(super) const SHARDS: usize = 64;

/// The shard of `key`: the same in every map (a fixed hash), so that two
/// versions of a map hold a key in the same shard.
fn shard_of<Q: Hash + ?Sized>(key: &Q) -> usize {
    let hash = foldhash::fast::FixedState::with_seed(0).hash_one(key);
    (hash % SHARDS as u64) as usize
}

#[derive(Clone)]
pub(crate) struct SharedMap<K, V> {
    shards: Box<[Arc<HashMap<K, V>>]>,
    len: usize,
}

impl<K, V> Default for SharedMap<K, V> {
    fn default() -> Self {
        SharedMap {
            shards: (0..SHARDS).map(|_| Arc::new(HashMap::new())).collect(),
            len: 0,
        }
    }
}

impl<K: Hash + Eq + Clone, V: Clone> SharedMap<K, V> {
    pub(crate) fn get<Q>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.shards[shard_of(key)].get(key)
    }

    /// Inserts, copying the key's shard first if another map shares it.
    pub(crate) fn insert(&mut self, key: K, value: V) -> Option<V> {
        let shard = Arc::make_mut(&mut self.shards[shard_of(&key)]);
        let old = shard.insert(key, value);
        if old.is_none() {
            self.len += 1;
        }
        old
    }

    /// Removes, copying the key's shard first if another map shares it.
    pub(crate) fn remove<Q>(&mut self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let shard = &mut self.shards[shard_of(key)];
        if !shard.contains_key(key) {
            return None;
        }
        let old = Arc::make_mut(shard).remove(key);
        self.len -= usize::from(old.is_some());
        old
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.shards.iter().flat_map(|s| s.iter())
    }

    /// The keys whose values here and in `before` are not `same`, or that
    /// only one of the two has, with their value here (`None`: gone). Only
    /// the shards the two do not share are looked at.
    pub(crate) fn changed_since<'a>(
        &'a self,
        before: &'a SharedMap<K, V>,
        same: impl Fn(&V, &V) -> bool + 'a,
    ) -> impl Iterator<Item = (&'a K, Option<&'a V>)> + 'a {
        let same = Arc::new(same);
        self.shards
            .iter()
            .zip(before.shards.iter())
            .filter(|(now, then)| !Arc::ptr_eq(now, then))
            .flat_map(move |(now, then)| {
                let same = same.clone();
                let changed = now
                    .iter()
                    .filter(move |(k, v)| !then.get(*k).is_some_and(|old| same(v, old)));
                let gone = then.keys().filter(|k| !now.contains_key(*k));
                changed
                    .map(|(k, v)| (k, Some(v)))
                    .chain(gone.map(|k| (k, None)))
            })
    }

    /// Whether the two share the shard that holds `key` (for tests: what an
    /// update did not touch is shared).
    #[cfg(test)]
    pub(crate) fn shares_shard_of<Q>(&self, other: &SharedMap<K, V>, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let i = shard_of(key);
        Arc::ptr_eq(&self.shards[i], &other.shards[i])
    }

    /// How many shards the two share.
    #[cfg(test)]
    pub(crate) fn shared_shards(&self, other: &SharedMap<K, V>) -> usize {
        self.shards
            .iter()
            .zip(other.shards.iter())
            .filter(|(a, b)| Arc::ptr_eq(a, b))
            .count()
    }
}

impl<K: Hash + Eq + Clone, V: Clone> FromIterator<(K, V)> for SharedMap<K, V> {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let mut map = SharedMap::default();
        for (k, v) in iter {
            map.insert(k, v);
        }
        map
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(n: u32) -> SharedMap<u32, Arc<u32>> {
        (0..n).map(|i| (i, Arc::new(i))).collect()
    }

    fn changes(
        now: &SharedMap<u32, Arc<u32>>,
        before: &SharedMap<u32, Arc<u32>>,
    ) -> Vec<(u32, Option<u32>)> {
        let mut out: Vec<_> = now
            .changed_since(before, Arc::ptr_eq)
            .map(|(k, v)| (*k, v.map(|v| **v)))
            .collect();
        out.sort();
        out
    }

    #[test]
    fn a_change_copies_one_shard_and_shares_the_rest() {
        let before = map(1000);
        let mut now = before.clone();
        assert_eq!(now.shared_shards(&before), SHARDS);
        now.insert(7, Arc::new(70));
        assert_eq!(now.shared_shards(&before), SHARDS - 1);
        assert!(!now.shares_shard_of(&before, &7));
        assert_eq!(
            before.get(&7).map(|v| **v),
            Some(7),
            "the original is unchanged"
        );
        assert_eq!(now.get(&7).map(|v| **v), Some(70));
        assert_eq!((now.len(), before.len()), (1000, 1000));
    }

    #[test]
    fn changes_are_what_differs_added_or_gone() {
        let before = map(1000);
        let mut now = before.clone();
        now.insert(7, Arc::new(70));
        now.insert(5000, Arc::new(5000));
        assert_eq!(now.remove(&9).map(|v| *v), Some(9));
        assert_eq!(now.remove(&9), None);
        // The same value in a copied shard is no change.
        now.insert(8, before.get(&8).cloned().expect("8"));
        assert_eq!(now.len(), 1000);
        assert_eq!(
            changes(&now, &before),
            [(7, Some(70)), (9, None), (5000, Some(5000))]
        );
        assert!(changes(&before, &before.clone()).is_empty());
        // Maps built apart hold each key in the same shard.
        let apart: SharedMap<u32, Arc<u32>> = before.iter().map(|(k, v)| (*k, v.clone())).collect();
        assert!(changes(&apart, &before).is_empty());
        assert_eq!(changes(&map(1000), &before).len(), 1000);
    }
}
