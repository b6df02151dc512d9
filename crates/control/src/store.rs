//! The durable config store of the one-machine mode: one YAML file per
//! resource under `<dir>/<Kind>/<namespace>/<name>.yaml`, each written
//! atomically (temporary file, fsync, rename), so a crash or restart keeps
//! every accepted change and never half of one. In memory a Pod is kept in
//! its slim form ([`api::SlimPod`], what the mesh reads of it): a mesh has
//! thousands, and the whole object is in its file ([`Store::whole`]).

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
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

impl Store {
    /// Opens (creating it if needed) and loads every stored resource.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        fs::create_dir_all(dir).map_err(|source| StoreError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let mut resources = BTreeMap::new();
        for path in yaml_files(dir)? {
            let text = fs::read_to_string(&path).map_err(|source| StoreError::Io {
                path: path.clone(),
                source,
            })?;
            for r in api::parse(&path.display().to_string(), &text).map_err(Box::new)? {
                resources.insert(Key::of(&r), r.slim());
            }
        }
        Ok(Store {
            dir: dir.to_path_buf(),
            resources,
        })
    }

    pub fn resources(&self) -> impl Iterator<Item = &Resource> {
        self.resources.values()
    }

    /// The resource as kept in memory: a Pod in its slim form.
    pub fn get(&self, key: &Key) -> Option<&Resource> {
        self.resources.get(key)
    }

    /// The resource as stored: a Pod whole, read from its file (a pod
    /// loaded from a file of many, which `apply` never writes, is read from
    /// there only at the next open: it is given in its slim form).
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
        write_atomic(&path, r.to_yaml().as_bytes())?;
        self.resources.insert(key, r.slim());
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
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(StoreError::Io { path, source }),
        };
        let found = api::parse(&path.display().to_string(), &text)
            .map_err(Box::new)?
            .into_iter()
            .find(|r| Key::of(r) == *key);
        Ok(found)
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

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
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
    tmp.as_file().sync_all().map_err(io)?;
    tmp.persist(path).map_err(|e| io(e.error))?;
    // The rename is durable only once the directory is synced too.
    fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
    Ok(())
}

#[cfg(test)]
mod tests {
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
}
