//! The CA's material on a cluster, where istiod keeps it, so that every
//! replica signs with one root:
//!
//! 1. the plug-in CA, the `cacerts` Secret in trellisd's namespace
//!    (`ca-cert.pem`, `ca-key.pem`, `root-cert.pem`, optional
//!    `cert-chain.pem`), takes precedence, as in Istio;
//! 2. else the self-signed root in the `istio-ca-secret` Secret
//!    (`ca-cert.pem`, `ca-key.pem`; type `istio.io/ca-root`);
//! 3. else a new self-signed root is made and stored as `istio-ca-secret`.
//!    The Secret is created, never replaced: when replicas start together,
//!    the API server lets exactly one create it and the others load that
//!    one, so the root is shared without waiting for a leader.
//!
//! The chosen material is kept in the CA directory (the key mode 0600), from
//! which [`identity::Ca`] loads it as it does Istio's files.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use std::sync::Weak;

use futures::StreamExt;
use identity::{CA_CERT_FILE, CA_KEY_FILE, CERT_CHAIN_FILE, Ca, ROOT_CERT_FILE};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ObjectMeta, PostParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};

use crate::live_ca::LiveCa;

/// Istio's plug-in CA Secret.
pub const PLUGGED_SECRET: &str = "cacerts";
/// Istio's self-signed CA Secret, and its type.
pub const SELF_SIGNED_SECRET: &str = "istio-ca-secret";
const SELF_SIGNED_TYPE: &str = "istio.io/ca-root";
/// Where a plug-in CA's files go, under the CA directory.
const PLUGGED_DIR: &str = "cacerts";

#[derive(Debug, thiserror::Error)]
pub enum CaSecretError {
    #[error("reading Secret {namespace}/{name}: {source}")]
    Read {
        namespace: String,
        name: &'static str,
        source: kube::Error,
    },
    #[error("creating Secret {namespace}/{SELF_SIGNED_SECRET}: {source}")]
    Create {
        namespace: String,
        source: kube::Error,
    },
    #[error("Secret {namespace}/{name}: {source}")]
    Material {
        namespace: String,
        name: &'static str,
        source: Box<identity::CaError>,
    },
    #[error("Secret {namespace}/{name}: key {key} is missing")]
    MissingKey {
        namespace: String,
        name: &'static str,
        key: &'static str,
    },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// A Secret's data, as files by name.
pub type SecretData = BTreeMap<String, Vec<u8>>;

/// What [`load`] found: the CA, and the `cacerts` data it was made of if
/// it is the plug-in CA ([`follow_plugged`] reloads when that changes).
pub struct Loaded {
    pub ca: Ca,
    pub plugged: Option<SecretData>,
}

/// The CA for `namespace`'s Secrets, its files kept in `dir`.
pub async fn load(
    client: kube::Client,
    namespace: &str,
    trust_domain: &str,
    dir: &Path,
) -> Result<Loaded, CaSecretError> {
    let api: Api<Secret> = Api::namespaced(client, namespace);
    let read = |name: &'static str| {
        let api = api.clone();
        async move {
            api.get_opt(name)
                .await
                .map_err(|source| CaSecretError::Read {
                    namespace: namespace.into(),
                    name,
                    source,
                })
        }
    };
    let material = |name: &'static str| {
        move |source| CaSecretError::Material {
            namespace: namespace.into(),
            name,
            source: Box::new(source),
        }
    };
    if let Some(secret) = read(PLUGGED_SECRET).await? {
        let data = data(&secret);
        return Ok(Loaded {
            ca: plugged(namespace, dir, &data)?,
            plugged: Some(data),
        });
    }
    loop {
        if let Some(secret) = read(SELF_SIGNED_SECRET).await? {
            let data = data(&secret);
            for key in [CA_CERT_FILE, CA_KEY_FILE] {
                if !data.contains_key(key) {
                    return Err(CaSecretError::MissingKey {
                        namespace: namespace.into(),
                        name: SELF_SIGNED_SECRET,
                        key,
                    });
                }
            }
            write_files(dir, &data, &[CA_CERT_FILE, CA_KEY_FILE])?;
            tracing::info!(secret = %format!("{namespace}/{SELF_SIGNED_SECRET}"), "CA: the cluster's self-signed root");
            let ca = Ca::self_signed(trust_domain, dir).map_err(material(SELF_SIGNED_SECRET))?;
            return Ok(Loaded { ca, plugged: None });
        }
        // None yet: make one (or take up the one this directory already
        // holds) and offer it; if another replica was first, load theirs.
        Ca::self_signed(trust_domain, dir).map_err(material(SELF_SIGNED_SECRET))?;
        let file = |name: &str| {
            let path = dir.join(name);
            std::fs::read(&path).map_err(|source| CaSecretError::Io { path, source })
        };
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some(SELF_SIGNED_SECRET.into()),
                namespace: Some(namespace.into()),
                ..Default::default()
            },
            type_: Some(SELF_SIGNED_TYPE.into()),
            data: Some(BTreeMap::from([
                (CA_CERT_FILE.into(), ByteString(file(CA_CERT_FILE)?)),
                (CA_KEY_FILE.into(), ByteString(file(CA_KEY_FILE)?)),
                // Istio's self-signed Secret has these keys, empty.
                (CERT_CHAIN_FILE.into(), ByteString(Vec::new())),
                (ROOT_CERT_FILE.into(), ByteString(Vec::new())),
            ])),
            ..Default::default()
        };
        match api.create(&PostParams::default(), &secret).await {
            Ok(_) => {
                tracing::info!(secret = %format!("{namespace}/{SELF_SIGNED_SECRET}"), "CA: stored the self-signed root for every replica");
                let ca =
                    Ca::self_signed(trust_domain, dir).map_err(material(SELF_SIGNED_SECRET))?;
                return Ok(Loaded { ca, plugged: None });
            }
            Err(kube::Error::Api(s)) if s.is_already_exists() => {
                // Another replica's root won: ours is dropped, never used.
                for name in [CA_CERT_FILE, CA_KEY_FILE] {
                    let _ = std::fs::remove_file(dir.join(name));
                }
            }
            Err(source) => {
                return Err(CaSecretError::Create {
                    namespace: namespace.into(),
                    source,
                });
            }
        }
    }
}

/// The plug-in CA of the `cacerts` Secret's `data`, its files written
/// under `dir`.
fn plugged(namespace: &str, dir: &Path, data: &SecretData) -> Result<Ca, CaSecretError> {
    for key in [CA_CERT_FILE, CA_KEY_FILE, ROOT_CERT_FILE] {
        if !data.contains_key(key) {
            return Err(CaSecretError::MissingKey {
                namespace: namespace.into(),
                name: PLUGGED_SECRET,
                key,
            });
        }
    }
    let plugged = dir.join(PLUGGED_DIR);
    write_files(
        &plugged,
        data,
        &[CA_CERT_FILE, CA_KEY_FILE, ROOT_CERT_FILE, CERT_CHAIN_FILE],
    )?;
    tracing::info!(secret = %format!("{namespace}/{PLUGGED_SECRET}"), "CA: plug-in certificates from the cluster");
    Ca::from_cacerts(&plugged).map_err(|source| CaSecretError::Material {
        namespace: namespace.into(),
        name: PLUGGED_SECRET,
        source: Box::new(source),
    })
}

/// Reloads `live` whenever the `cacerts` Secret in `namespace` is created
/// or changed from `loaded` (what `live` was made of), until `live` is dropped (istiod's plug-in CA reload). A
/// Secret that does not make a CA is reported and the running CA kept; a
/// deleted one changes nothing (workloads keep trusting its roots).
pub async fn follow_plugged(
    client: kube::Client,
    namespace: String,
    dir: PathBuf,
    live: Weak<LiveCa>,
    mut loaded: Option<SecretData>,
) {
    let api: Api<Secret> = Api::namespaced(client, &namespace);
    let config = watcher::Config::default().fields(&format!("metadata.name={PLUGGED_SECRET}"));
    let mut events = watcher::watcher(api, config).default_backoff().boxed();
    while let Some(event) = events.next().await {
        let secret = match event {
            Ok(Event::InitApply(secret) | Event::Apply(secret)) => secret,
            Ok(_) => continue,
            Err(error) => {
                tracing::warn!(%error, "watch of the {PLUGGED_SECRET} Secret failed; retrying");
                continue;
            }
        };
        let Some(live) = live.upgrade() else { return };
        let data = data(&secret);
        if loaded.as_ref() == Some(&data) {
            continue;
        }
        match plugged(&namespace, &dir, &data).and_then(|ca| {
            live.replace(ca).map_err(|source| CaSecretError::Material {
                namespace: namespace.clone(),
                name: PLUGGED_SECRET,
                source: Box::new(source),
            })
        }) {
            Ok(()) => loaded = Some(data),
            Err(error) => {
                tracing::warn!(%error, "the {PLUGGED_SECRET} Secret changed but does not make a CA; still signing with the previous one");
            }
        }
    }
}

fn data(secret: &Secret) -> SecretData {
    secret
        .data
        .iter()
        .flatten()
        .filter(|(_, v)| !v.0.is_empty())
        .map(|(k, v)| (k.clone(), v.0.clone()))
        .collect()
}

/// Writes `keys` of `data` into `dir` as files (replacing each whole, the
/// key files mode 0600); a key `data` lacks leaves no file behind.
fn write_files(
    dir: &Path,
    data: &BTreeMap<String, Vec<u8>>,
    keys: &[&str],
) -> Result<(), CaSecretError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| CaSecretError::Io { path, source }
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io(dir))?;
    for key in keys {
        let path = dir.join(key);
        let Some(bytes) = data.get(*key) else {
            match std::fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(&path)(e)),
                _ => continue,
            }
        };
        let tmp = dir.join(format!(".{key}.{}", std::process::id()));
        let mode = if *key == CA_KEY_FILE { 0o600 } else { 0o644 };
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)
            .map_err(io(&tmp))?;
        file.write_all(bytes).map_err(io(&tmp))?;
        file.sync_all().map_err(io(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(io(&path))?;
    }
    Ok(())
}
