//! The durable config store of the one-machine mode: one YAML file per
//! resource under `<dir>/<Kind>/<namespace>/<name>.yaml`, each written
//! atomically (temporary file, fsync, rename), so a crash or restart keeps
//! every accepted change and never half of one. In memory a Pod is kept in
//! its slim form ([`api::SlimPod`], what the mesh reads of it): a mesh has
//! thousands, and the whole object is in its file ([`Store::whole`]).
//!
//! Other YAML files found in the directory at open (a mesh written there by
//! hand, many resources to a file) are taken in: each of their resources is
//! written to its own file and the file is renamed `<file>.imported`. Left
//! in place, such a file would bring back at the next open what `apply` had
//! changed or `delete` removed since, since those write only the resource's
//! own file.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Write;
use std::ops::Bound::{Excluded, Unbounded};
use std::path::{Path, PathBuf};

use api::{Kind, Resource};
use serde::Serialize;

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Key {
    pub kind: String,
    pub namespace: String,
    pub name: String,
}

impl Key {
    pub fn of(r: &Resource) -> Key {
        Key {
            kind: r.kind_name().to_string(),
            namespace: if is_cluster_scoped(r.kind()) {
                String::new()
            } else {
                r.namespace().unwrap_or("default").to_string()
            },
            name: r.name().to_string(),
        }
    }
}

/// The objects `keys` name, as a push is told of them.
pub fn touched<'a>(keys: impl IntoIterator<Item = &'a Key>) -> model::incremental::Touched {
    let mut touched = model::incremental::Touched::default();
    for k in keys {
        k.touch(&mut touched);
    }
    touched
}

impl Key {
    /// Adds the object this key names to `touched`.
    pub fn touch(&self, touched: &mut model::incremental::Touched) {
        let kind = Kind::parse(&self.kind).unwrap_or(Kind::Unsupported);
        touched.insert(kind, &self.namespace, &self.name);
    }
}

impl std::fmt::Display for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{}/{}", self.kind, self.name)
        } else {
            write!(f, "{}/{}/{}", self.kind, self.namespace, self.name)
        }
    }
}

/// Makes a pod hold the label map, annotations, controller and containers
/// of a like pod among `neighbours` (see [`api::SlimPod::share`]): the pods
/// next to it by name are most often of its ReplicaSet, and 10,000 pods then
/// keep about as many copies of those as they have ReplicaSets.
pub(crate) fn share_like<'a>(r: &mut Resource, neighbours: impl IntoIterator<Item = &'a Resource>) {
    let Resource::SlimPod(pod) = r else { return };
    for n in neighbours {
        if let Resource::SlimPod(like) = n {
            pod.share(like);
        }
    }
}

/// [`share_like`] with the resources next to `key` in `resources`, where
/// `r` is about to be inserted under `key`.
pub(crate) fn share_with_neighbours(
    resources: &BTreeMap<Key, Resource>,
    key: &Key,
    r: &mut Resource,
) {
    let before = resources.range(..key).next_back();
    let after = resources.range((Excluded(key), Unbounded)).next();
    share_like(r, before.into_iter().chain(after).map(|(_, r)| r));
}

fn is_cluster_scoped(kind: Kind) -> bool {
    matches!(kind, Kind::Namespace)
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Parse(#[from] Box<api::ParseError>),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Change {
    Created,
    Configured,
    Unchanged,
    Deleted,
}

pub struct Store {
    dir: PathBuf,
    resources: BTreeMap<Key, Resource>,
}

/// A resource as read at open (a Pod slim), and the file it was read from.
struct Found {
    resource: Resource,
    file: PathBuf,
    written: std::time::SystemTime,
}

/// When a written file is made durable.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Durability {
    /// Before the write returns (file and directory synced).
    Synced,
    /// By the caller's sync of the whole filesystem.
    Deferred,
}

impl Store {
    /// Opens (creating it if needed) and loads every stored resource,
    /// taking in the files that are not one resource's own (see the module
    /// doc). A resource found in two files is taken from the one written
    /// last, as the newer intent; the other copy is named in a warning.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        fs::create_dir_all(dir).map_err(|source| StoreError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let mut store = Store {
            dir: dir.to_path_buf(),
            resources: BTreeMap::new(),
        };
        let mut found: BTreeMap<Key, Found> = BTreeMap::new();
        let mut foreign = BTreeSet::new();
        for path in yaml_files(dir)? {
            let written = fs::metadata(&path)
                .and_then(|m| m.modified())
                .map_err(|source| StoreError::Io {
                    path: path.clone(),
                    source,
                })?;
            let resources = read_file(&path)?;
            if !(resources.len() == 1 && store.path(&Key::of(&resources[0])) == path) {
                foreign.insert(path.clone());
            }
            for resource in resources {
                let copy = Found {
                    resource: resource.slim(),
                    file: path.clone(),
                    written,
                };
                store.keep_newer(&mut found, copy);
            }
        }
        store.take_in(&found, &foreign)?;
        let mut kept: Vec<(Key, Resource)> = found
            .into_iter()
            .map(|(key, copy)| (key, copy.resource))
            .collect();
        for i in 1..kept.len() {
            let (before, here) = kept.split_at_mut(i);
            share_like(&mut here[0].1, [&before[i - 1].1]);
        }
        store.resources = kept.into_iter().collect();
        Ok(store)
    }

    /// Adds `copy` to `found`, or keeps the newer of it and the copy
    /// already there: the one in the file written last, and on a tie the
    /// one in the resource's own file.
    fn keep_newer(&self, found: &mut BTreeMap<Key, Found>, copy: Found) {
        let key = Key::of(&copy.resource);
        let own = self.path(&key);
        let Some(old) = found.get(&key) else {
            found.insert(key, copy);
            return;
        };
        let newer = (copy.written, copy.file == own) > (old.written, old.file == own);
        let (kept, dropped) = if newer { (&copy, old) } else { (old, &copy) };
        if kept.resource.to_json() != dropped.resource.to_json() {
            tracing::warn!(
                resource = %key,
                kept = %kept.file.display(),
                dropped = %dropped.file.display(),
                "a resource is stored in two files, differently: the copy in the file written last is kept"
            );
        }
        if newer {
            found.insert(key, copy);
        }
    }

    /// Writes every resource kept from a foreign file (one not its own)
    /// into its own file, then renames the foreign files `<file>.imported`.
    /// After a crash midway the next open finds the same copies newest and
    /// keeps the same ones.
    fn take_in(
        &self,
        found: &BTreeMap<Key, Found>,
        foreign: &BTreeSet<PathBuf>,
    ) -> Result<(), StoreError> {
        if foreign.is_empty() {
            return Ok(());
        }
        // Read again, one file at a time: a Pod is kept slim, and written whole.
        let mut replacing = Vec::new();
        for file in foreign {
            for r in read_file(file)? {
                let key = Key::of(&r);
                if found.get(&key).is_none_or(|kept| kept.file != *file) {
                    continue;
                }
                let own = self.path(&key);
                if foreign.contains(&own) {
                    replacing.push(r);
                } else {
                    // No sync each (a mesh written by hand has thousands):
                    // one of the filesystem below, before any original is
                    // touched.
                    write_file(&own, r.to_yaml().as_bytes(), Durability::Deferred)?;
                }
            }
        }
        let io = |source| StoreError::Io {
            path: self.dir.clone(),
            source,
        };
        let dir = fs::File::open(&self.dir).map_err(io)?;
        nix::unistd::syncfs(&dir).map_err(|e| io(e.into()))?;
        // A foreign file at a resource's own path (it held more, or another
        // resource) is replaced by that resource alone, the others safe.
        let mut replaced = BTreeSet::new();
        for r in replacing {
            let own = self.path(&Key::of(&r));
            write_file(&own, r.to_yaml().as_bytes(), Durability::Synced)?;
            replaced.insert(own);
        }
        for file in foreign.difference(&replaced) {
            let mut imported = file.clone().into_os_string();
            imported.push(".imported");
            fs::rename(file, &imported).map_err(|source| StoreError::Io {
                path: file.clone(),
                source,
            })?;
            tracing::info!(file = %file.display(), "taken into the store, one file per resource; the original is kept as .imported");
        }
        nix::unistd::syncfs(&dir).map_err(|e| io(e.into()))?;
        Ok(())
    }

    pub fn resources(&self) -> impl Iterator<Item = &Resource> {
        self.resources.values()
    }

    /// The resource as kept in memory: a Pod in its slim form.
    pub fn get(&self, key: &Key) -> Option<&Resource> {
        self.resources.get(key)
    }

    /// The resource as stored: a Pod whole, read from its file.
    pub fn whole(&self, key: &Key) -> Result<Option<Resource>, StoreError> {
        match self.resources.get(key) {
            Some(slim @ Resource::SlimPod(_)) => {
                Ok(Some(self.read(key)?.unwrap_or_else(|| slim.clone())))
            }
            other => Ok(other.cloned()),
        }
    }

    /// Stores one resource. The caller has validated it.
    pub fn apply(&mut self, r: Resource) -> Result<Change, StoreError> {
        let key = Key::of(&r);
        let change = match self.resources.get(&key) {
            Some(old) if self.unchanged(&key, old, &r) => return Ok(Change::Unchanged),
            Some(_) => Change::Configured,
            None => Change::Created,
        };
        let path = self.path(&key);
        write_file(&path, r.to_yaml().as_bytes(), Durability::Synced)?;
        let mut r = r.slim();
        share_with_neighbours(&self.resources, &key, &mut r);
        self.resources.insert(key, r);
        Ok(change)
    }

    /// Whether `r` is what is stored as `old`, compared whole.
    fn unchanged(&self, key: &Key, old: &Resource, r: &Resource) -> bool {
        match old {
            Resource::SlimPod(_) => {
                matches!(self.read(key), Ok(Some(old)) if old.to_json() == r.to_json())
            }
            _ => old.to_json() == r.to_json(),
        }
    }

    /// The resource `key` names, from its own file; `None` when that file
    /// does not hold it.
    fn read(&self, key: &Key) -> Result<Option<Resource>, StoreError> {
        let path = self.path(key);
        match read_file(&path) {
            Ok(resources) => Ok(resources.into_iter().find(|r| Key::of(r) == *key)),
            Err(StoreError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    pub fn delete(&mut self, key: &Key) -> Result<Option<Resource>, StoreError> {
        let Some(old) = self.resources.remove(key) else {
            return Ok(None);
        };
        let path = self.path(key);
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                self.resources.insert(key.clone(), old);
                return Err(StoreError::Io { path, source });
            }
        }
        Ok(Some(old))
    }

    fn path(&self, key: &Key) -> PathBuf {
        let ns = if key.namespace.is_empty() {
            "_cluster"
        } else {
            &key.namespace
        };
        self.dir
            .join(&key.kind)
            .join(ns)
            .join(format!("{}.yaml", key.name))
    }
}

fn yaml_files(dir: &Path) -> Result<Vec<PathBuf>, StoreError> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries = fs::read_dir(&d).map_err(|source| StoreError::Io {
            path: d.clone(),
            source,
        })?;
        for entry in entries {
            let path = entry
                .map_err(|source| StoreError::Io {
                    path: d.clone(),
                    source,
                })?
                .path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "yaml") {
                out.push(path);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// The resources a stored file holds, whole.
fn read_file(path: &Path) -> Result<Vec<Resource>, StoreError> {
    let text = fs::read_to_string(path).map_err(|source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(api::parse(&path.display().to_string(), &text).map_err(Box::new)?)
}

/// Writes `path` atomically: a temporary file beside it, renamed over it.
fn write_file(path: &Path, bytes: &[u8], durability: Durability) -> Result<(), StoreError> {
    let io = |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(io)?;
    // NamedTempFile creates the file 0600, and the rename keeps that: stored
    // Secrets hold private keys.
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(io)?;
    tmp.write_all(bytes).map_err(io)?;
    if durability == Durability::Synced {
        tmp.as_file().sync_all().map_err(io)?;
    }
    tmp.persist(path).map_err(|e| io(e.error))?;
    if durability == Durability::Synced {
        // The rename is durable only once the directory is synced too.
        fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    const VS: &str = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: reviews\n  namespace: default\nspec:\n  hosts: [reviews]\n  http:\n  - route:\n    - destination:\n        host: reviews\n        subset: v1\n";

    #[test]
    fn apply_survives_reopen_and_reports_changes() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path()).unwrap();
        let r = api::parse("t.yaml", VS).unwrap().remove(0);
        assert_eq!(store.apply(r.clone()).unwrap(), Change::Created);
        assert_eq!(store.apply(r.clone()).unwrap(), Change::Unchanged);
        let reopened = Store::open(dir.path()).unwrap();
        assert_eq!(reopened.resources().count(), 1);
        let key = Key::of(&r);
        assert_eq!(reopened.get(&key).map(|r| r.to_json()), Some(r.to_json()));
        let mut store = reopened;
        assert!(store.delete(&key).unwrap().is_some());
        assert!(
            Store::open(dir.path())
                .unwrap()
                .resources()
                .next()
                .is_none()
        );
    }

    const POD: &str = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: reviews-1\n  namespace: default\n  labels: {app: reviews}\nspec:\n  containers:\n  - name: reviews\n    image: reviews:v1\n    ports: [{containerPort: 9080}]\nstatus: {podIP: 10.0.0.5}\n";

    /// A pod is kept slim in memory, and whole in its file: read whole,
    /// compared whole (an image change is a change the mesh does not read).
    #[test]
    fn pods_are_kept_slim_and_read_whole() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path()).unwrap();
        let pod = api::parse("p.yaml", POD).unwrap().remove(0);
        let key = Key::of(&pod);
        assert_eq!(store.apply(pod.clone()).unwrap(), Change::Created);
        assert!(matches!(store.get(&key), Some(Resource::SlimPod(_))));
        assert_eq!(store.whole(&key).unwrap(), Some(pod.clone()));
        assert_eq!(store.apply(pod.clone()).unwrap(), Change::Unchanged);
        let newer = api::parse("p.yaml", &POD.replace("reviews:v1", "reviews:v2"))
            .unwrap()
            .remove(0);
        assert_eq!(store.apply(newer.clone()).unwrap(), Change::Configured);
        let reopened = Store::open(dir.path()).unwrap();
        assert_eq!(reopened.get(&key), Some(&newer.clone().slim()));
        assert_eq!(reopened.whole(&key).unwrap(), Some(newer));
    }

    #[test]
    fn no_temporary_files_are_left_behind() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path()).unwrap();
        store
            .apply(api::parse("t.yaml", VS).unwrap().remove(0))
            .unwrap();
        let files = yaml_files(dir.path()).unwrap();
        assert_eq!(files.len(), 1);
        let all: Vec<_> = fs::read_dir(files[0].parent().unwrap()).unwrap().collect();
        assert_eq!(all.len(), 1, "only the resource file remains");
    }

    /// Secrets (gateway keys) are stored like everything else, so every
    /// stored file is readable by its owner only.
    #[test]
    fn stored_files_are_private_to_the_owner() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path()).unwrap();
        store
            .apply(api::parse("t.yaml", VS).unwrap().remove(0))
            .unwrap();
        let file = &yaml_files(dir.path()).unwrap()[0];
        let mode = fs::metadata(file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", file.display());
    }

    fn vs(name: &str, subset: &str) -> String {
        VS.replace("name: reviews", &format!("name: {name}"))
            .replace("subset: v1", &format!("subset: {subset}"))
    }

    /// A file of many resources put in the directory by hand: after the
    /// open takes it in, `apply` and `delete` hold across a restart (they
    /// write only each resource's own file, so the file left in place
    /// brought back the old and the deleted).
    #[test]
    fn a_file_of_many_is_taken_in_so_that_apply_and_delete_hold() {
        let dir = tempfile::tempdir().unwrap();
        let many = dir.path().join("mesh.yaml");
        fs::write(
            &many,
            format!("{}---\n{}---\n{POD}", vs("a", "v1"), vs("b", "v1")),
        )
        .unwrap();
        let mut store = Store::open(dir.path()).unwrap();
        assert_eq!(store.resources().count(), 3);
        assert!(!many.exists());
        assert!(dir.path().join("mesh.yaml.imported").exists());
        let pod = api::parse("p.yaml", POD).unwrap().remove(0);
        assert_eq!(
            store.whole(&Key::of(&pod)).unwrap(),
            Some(pod),
            "read whole from its own file"
        );

        let a = api::parse("a.yaml", &vs("a", "v2")).unwrap().remove(0);
        assert_eq!(store.apply(a.clone()).unwrap(), Change::Configured);
        let b = api::parse("b.yaml", &vs("b", "v1")).unwrap().remove(0);
        assert!(store.delete(&Key::of(&b)).unwrap().is_some());

        let reopened = Store::open(dir.path()).unwrap();
        assert_eq!(
            reopened.get(&Key::of(&a)).map(|r| r.to_json()),
            Some(a.to_json())
        );
        assert!(
            reopened.get(&Key::of(&b)).is_none(),
            "deleted stays deleted"
        );
        assert_eq!(reopened.resources().count(), 2);
    }

    /// Two files holding one resource (a store written before files were
    /// taken in, or a file dropped in beside a stored resource): the copy
    /// in the file written last is kept, whichever file that is.
    #[test]
    fn of_two_copies_the_one_written_last_is_kept() {
        use std::time::{Duration, SystemTime};
        for (own_is_newer, kept) in [(true, "v1"), (false, "v2")] {
            let dir = tempfile::tempdir().unwrap();
            let mut store = Store::open(dir.path()).unwrap();
            let r = api::parse("t.yaml", &vs("a", "v1")).unwrap().remove(0);
            store.apply(r.clone()).unwrap();
            let other = dir.path().join("dropped-in.yaml");
            fs::write(&other, vs("a", "v2")).unwrap();
            let (older, newer) = if own_is_newer {
                (other.clone(), store.path(&Key::of(&r)))
            } else {
                (store.path(&Key::of(&r)), other.clone())
            };
            let now = SystemTime::now();
            let touch = |p: &Path, t| {
                fs::File::options()
                    .write(true)
                    .open(p)
                    .unwrap()
                    .set_modified(t)
                    .unwrap()
            };
            touch(&older, now - Duration::from_secs(60));
            touch(&newer, now);
            let reopened = Store::open(dir.path()).unwrap();
            let expected = api::parse("t.yaml", &vs("a", kept)).unwrap().remove(0);
            assert_eq!(
                reopened.get(&Key::of(&r)).map(|r| r.to_json()),
                Some(expected.to_json())
            );
            assert!(!other.exists());
            // And again: the taken-in store opens to the same.
            let again = Store::open(dir.path()).unwrap();
            assert_eq!(
                again.get(&Key::of(&r)).map(|r| r.to_json()),
                Some(expected.to_json())
            );
        }
    }

    /// A resource's own file that holds another resource too: it is
    /// rewritten to hold its own alone, the other moved to its own file.
    #[test]
    fn an_own_file_holding_more_keeps_its_own_alone() {
        let dir = tempfile::tempdir().unwrap();
        let a = api::parse("a.yaml", &vs("a", "v1")).unwrap().remove(0);
        let b = api::parse("b.yaml", &vs("b", "v1")).unwrap().remove(0);
        let store = Store::open(dir.path()).unwrap();
        let own = store.path(&Key::of(&a));
        fs::create_dir_all(own.parent().unwrap()).unwrap();
        fs::write(&own, format!("{}---\n{}", vs("a", "v1"), vs("b", "v1"))).unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.resources().count(), 2);
        assert_eq!(read_file(&own).unwrap(), vec![a]);
        assert_eq!(read_file(&store.path(&Key::of(&b))).unwrap(), vec![b]);
        assert_eq!(
            yaml_files(dir.path()).unwrap().len(),
            2,
            "nothing imported aside"
        );
    }

    /// A pod of ReplicaSet `reviews-<version>`, labelled with its version.
    pub(crate) fn rs_pod(name: &str, version: &str) -> Resource {
        let yaml = format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: default\n  labels: {{app: reviews, version: {version}}}\n  annotations: {{sidecar.istio.io/status: '{{}}'}}\n  ownerReferences: [{{apiVersion: apps/v1, kind: ReplicaSet, name: reviews-{version}, uid: u-{version}, controller: true}}]\nspec:\n  containers: [{{name: reviews, image: reviews, ports: [{{containerPort: 9080}}]}}]\nstatus: {{podIP: 10.0.0.5}}\n"
        );
        api::parse("p.yaml", &yaml).unwrap().remove(0)
    }

    fn slim<'a>(store: &'a Store, r: &Resource) -> &'a api::SlimPod {
        match store.get(&Key::of(r)) {
            Some(Resource::SlimPod(p)) => p,
            other => panic!("{other:?}"),
        }
    }

    /// Whether two pods hold one copy of what a ReplicaSet's pods have alike.
    pub(crate) fn shared(a: &api::SlimPod, b: &api::SlimPod) -> bool {
        use std::sync::Arc;
        Arc::ptr_eq(&a.labels, &b.labels)
            && Arc::ptr_eq(&a.annotations, &b.annotations)
            && Arc::ptr_eq(&a.containers, &b.containers)
            && matches!((&a.controller, &b.controller), (Some(x), Some(y)) if Arc::ptr_eq(x, y))
    }

    /// The pods of a ReplicaSet hold one copy of their labels, annotations,
    /// controller and containers, whether taken in at open or applied; a
    /// pod of another keeps its own, and every pod reads as written.
    #[test]
    fn like_pods_hold_one_copy_of_what_they_have_alike() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (rs_pod("reviews-v1-a", "v1"), rs_pod("reviews-v1-b", "v1"));
        fs::write(
            dir.path().join("pods.yaml"),
            format!("{}---\n{}", a.to_yaml(), b.to_yaml()),
        )
        .unwrap();
        let mut store = Store::open(dir.path()).unwrap();
        assert!(
            shared(slim(&store, &a), slim(&store, &b)),
            "taken in at open"
        );
        let (c, other) = (rs_pod("reviews-v1-c", "v1"), rs_pod("reviews-v2-a", "v2"));
        store.apply(c.clone()).unwrap();
        store.apply(other.clone()).unwrap();
        assert!(shared(slim(&store, &b), slim(&store, &c)), "applied");
        let (v1, v2) = (slim(&store, &c), slim(&store, &other));
        assert!(!std::sync::Arc::ptr_eq(&v1.labels, &v2.labels));
        assert!(std::sync::Arc::ptr_eq(&v1.containers, &v2.containers));
        for r in [&a, &b, &c, &other] {
            assert_eq!(store.get(&Key::of(r)), Some(&r.clone().slim()));
        }
        let reopened = Store::open(dir.path()).unwrap();
        assert!(shared(slim(&reopened, &a), slim(&reopened, &c)), "reopened");
    }
}
