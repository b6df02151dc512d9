//! A pod's volumes as directories on the host, as a kubelet makes them:
//! emptyDir, configMap, secret, downwardAPI, hostPath, and projected
//! (service-account tokens from the TokenRequest API with the audience
//! and lifetime the pod asks for, ConfigMaps, Secrets, pod fields). The
//! containers see them at their mount paths ([`crate::local::netns::in_pod_mounted`]).
//! Tokens are requested again at 80 % of their lifetime, as a kubelet
//! does ([`refresh_tokens`]); ConfigMap and Secret changes are not followed.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::{
    ConfigMap, DownwardAPIVolumeFile, KeyToPath, Pod, Secret, ServiceAccount, Volume,
};
use kube::Api;
use kube::api::PostParams;
use serde_json::json;

/// The kubelet's default file mode for volume contents (0644).
const DEFAULT_MODE: u32 = 0o644;

/// A volume that cannot be made (yet): the pod waits, and its status says why.
type VolumeError = anyhow::Error;

fn err(volume: &str, message: impl std::fmt::Display) -> VolumeError {
    anyhow::anyhow!("volume {volume}: {message}")
}

/// Makes every volume of `pod` under `dir`; returns each volume's directory.
pub async fn materialise(
    client: &kube::Client,
    pod: &Pod,
    dir: &Path,
) -> Result<BTreeMap<String, PathBuf>, VolumeError> {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let mut out = BTreeMap::new();
    for v in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
        let path = match &v.host_path {
            Some(host) => PathBuf::from(&host.path),
            None => {
                let path = dir.join(&v.name);
                make_dir(&v.name, &path, 0o755)?;
                fill(client, pod, namespace, v, &path).await?;
                path
            }
        };
        out.insert(v.name.clone(), path);
    }
    Ok(out)
}

fn make_dir(volume: &str, path: &Path, mode: u32) -> Result<(), VolumeError> {
    std::fs::create_dir_all(path)
        .and_then(|()| std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)))
        .map_err(|e| err(volume, format!("{}: {e}", path.display())))
}

fn write(volume: &str, dir: &Path, rel: &str, data: &[u8], mode: u32) -> Result<(), VolumeError> {
    if rel.split('/').any(|part| part == ".." || part.is_empty()) {
        return Err(err(
            volume,
            format!("path {rel:?} is not inside the volume"),
        ));
    }
    let file = dir.join(rel);
    if let Some(parent) = file.parent() {
        make_dir(volume, parent, 0o755)?;
    }
    std::fs::write(&file, data)
        .and_then(|()| std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode)))
        .map_err(|e| err(volume, format!("{}: {e}", file.display())))
}

async fn fill(
    client: &kube::Client,
    pod: &Pod,
    namespace: &str,
    v: &Volume,
    path: &Path,
) -> Result<(), VolumeError> {
    let name = v.name.as_str();
    if let Some(e) = &v.empty_dir {
        if e.medium.as_deref().is_some_and(|m| !m.is_empty()) {
            tracing::warn!(
                volume = name,
                "emptyDir medium is not honoured: a plain directory"
            );
        }
        // Any container's user may write it, as in a kubelet's emptyDir.
        return make_dir(name, path, 0o777);
    }
    if let Some(c) = &v.config_map {
        let target = Keys {
            volume: name,
            items: c.items.as_deref(),
            mode: mode_of(c.default_mode),
            dir: path,
        };
        return config_map(client, namespace, &c.name, c.optional, &target).await;
    }
    if let Some(s) = &v.secret {
        let target = Keys {
            volume: name,
            items: s.items.as_deref(),
            mode: mode_of(s.default_mode),
            dir: path,
        };
        let secret_name = s.secret_name.as_deref().unwrap_or_default();
        return secret(client, namespace, secret_name, s.optional, &target).await;
    }
    if let Some(d) = &v.downward_api {
        let mode = mode_of(d.default_mode);
        for item in d.items.iter().flatten() {
            downward(pod, name, item, mode, path)?;
        }
        return Ok(());
    }
    if let Some(p) = &v.projected {
        let mode = mode_of(p.default_mode);
        for source in p.sources.iter().flatten() {
            if let Some(t) = &source.service_account_token {
                let token = token(
                    client,
                    pod,
                    namespace,
                    name,
                    t.audience.as_deref(),
                    t.expiration_seconds,
                )
                .await?;
                write(name, path, &t.path, token.as_bytes(), mode)?;
            } else if let Some(c) = &source.config_map {
                let target = Keys {
                    volume: name,
                    items: c.items.as_deref(),
                    mode,
                    dir: path,
                };
                config_map(client, namespace, &c.name, c.optional, &target).await?;
            } else if let Some(s) = &source.secret {
                let target = Keys {
                    volume: name,
                    items: s.items.as_deref(),
                    mode,
                    dir: path,
                };
                secret(client, namespace, &s.name, s.optional, &target).await?;
            } else if let Some(d) = &source.downward_api {
                for item in d.items.iter().flatten() {
                    downward(pod, name, item, mode, path)?;
                }
            } else {
                return Err(err(
                    name,
                    "a projected source other than serviceAccountToken, configMap, secret or downwardAPI is not supported by trellis node",
                ));
            }
        }
        return Ok(());
    }
    Err(err(
        name,
        "only emptyDir, configMap, secret, downwardAPI, projected and hostPath volumes are supported by trellis node",
    ))
}

fn mode_of(mode: Option<i32>) -> u32 {
    mode.and_then(|m| u32::try_from(m).ok())
        .map_or(DEFAULT_MODE, |m| m & 0o777)
}

/// The keys to write: `items` (key → path) if given, else every key as its own file.
fn selected<'a>(
    keys: impl Iterator<Item = &'a String>,
    items: Option<&[KeyToPath]>,
) -> Vec<(String, String, Option<u32>)> {
    match items {
        Some(items) => items
            .iter()
            .map(|i| {
                (
                    i.key.clone(),
                    i.path.clone(),
                    i.mode.and_then(|m| u32::try_from(m).ok()),
                )
            })
            .collect(),
        None => keys.map(|k| (k.clone(), k.clone(), None)).collect(),
    }
}

/// Where and how an object's keys are written: the volume (for errors),
/// the keys it asks for (`items`, else every key), the files' mode, the directory.
struct Keys<'a> {
    volume: &'a str,
    items: Option<&'a [KeyToPath]>,
    mode: u32,
    dir: &'a Path,
}

impl Keys<'_> {
    /// Writes the selected keys of `data`, the contents of `object`
    /// (`ConfigMap ns/name`, for errors).
    fn write(&self, object: &str, data: &BTreeMap<String, Vec<u8>>) -> Result<(), VolumeError> {
        for (key, rel, item_mode) in selected(data.keys(), self.items) {
            let Some(bytes) = data.get(&key) else {
                return Err(err(self.volume, format!("{object} has no key {key:?}")));
            };
            write(
                self.volume,
                self.dir,
                &rel,
                bytes,
                item_mode.unwrap_or(self.mode),
            )?;
        }
        Ok(())
    }
}

/// The object `name` of `api`; `None` when it is missing and `optional`.
async fn fetch<K>(
    api: Api<K>,
    object: &str,
    name: &str,
    optional: Option<bool>,
    volume: &str,
) -> Result<Option<K>, VolumeError>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.get_opt(name).await {
        Ok(Some(o)) => Ok(Some(o)),
        Ok(None) if optional == Some(true) => Ok(None),
        Ok(None) => Err(err(volume, format!("{object} not found"))),
        Err(e) => Err(err(volume, format!("{object}: {e}"))),
    }
}

async fn config_map(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    optional: Option<bool>,
    keys: &Keys<'_>,
) -> Result<(), VolumeError> {
    let object = format!("ConfigMap {namespace}/{name}");
    let api = Api::<ConfigMap>::namespaced(client.clone(), namespace);
    let Some(cm) = fetch(api, &object, name, optional, keys.volume).await? else {
        return Ok(());
    };
    let mut data: BTreeMap<String, Vec<u8>> = cm
        .binary_data
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.0))
        .collect();
    // A key in both is the API server's to refuse; `data` wins here.
    data.extend(
        cm.data
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.into_bytes())),
    );
    keys.write(&object, &data)
}

async fn secret(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    optional: Option<bool>,
    keys: &Keys<'_>,
) -> Result<(), VolumeError> {
    let object = format!("Secret {namespace}/{name}");
    let api = Api::<Secret>::namespaced(client.clone(), namespace);
    let Some(secret) = fetch(api, &object, name, optional, keys.volume).await? else {
        return Ok(());
    };
    let data = secret
        .data
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.0))
        .collect();
    keys.write(&object, &data)
}

/// A pod field as the kubelet writes it: labels and annotations one
/// `key="value"` a line, sorted.
fn downward(
    pod: &Pod,
    volume: &str,
    item: &DownwardAPIVolumeFile,
    mode: u32,
    path: &Path,
) -> Result<(), VolumeError> {
    let Some(field) = item.field_ref.as_ref().map(|f| f.field_path.as_str()) else {
        return Err(err(
            volume,
            format!(
                "{}: only fieldRef items are supported by trellis node",
                item.path
            ),
        ));
    };
    let Some(value) = field_value(pod, field) else {
        return Err(err(
            volume,
            format!(
                "{}: field {field} is not supported by trellis node",
                item.path
            ),
        ));
    };
    let mode = item
        .mode
        .and_then(|m| u32::try_from(m).ok())
        .unwrap_or(mode);
    write(volume, path, &item.path, value.as_bytes(), mode)
}

/// The value of a pod field a downward API reference names (`metadata.name`,
/// `metadata.labels['app']`, …); `None` for a field not known here.
pub fn field_value(pod: &Pod, field: &str) -> Option<String> {
    let meta = &pod.metadata;
    let map_lines = |m: &Option<BTreeMap<String, String>>| {
        m.iter()
            .flatten()
            .map(|(k, v)| format!("{k}={}", json!(v)))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let key_of = |prefix: &str| {
        field
            .strip_prefix(prefix)?
            .strip_suffix("']")
            .map(str::to_string)
    };
    Some(match field {
        "metadata.name" => meta.name.clone().unwrap_or_default(),
        "metadata.namespace" => meta.namespace.clone().unwrap_or_default(),
        "metadata.uid" => meta.uid.clone().unwrap_or_default(),
        "metadata.labels" => map_lines(&meta.labels),
        "metadata.annotations" => map_lines(&meta.annotations),
        "spec.nodeName" => pod.spec.as_ref()?.node_name.clone().unwrap_or_default(),
        "spec.serviceAccountName" => pod
            .spec
            .as_ref()?
            .service_account_name
            .clone()
            .unwrap_or_else(|| "default".into()),
        "status.podIP" => pod.status.as_ref()?.pod_ip.clone().unwrap_or_default(),
        "status.hostIP" => pod.status.as_ref()?.host_ip.clone().unwrap_or_default(),
        _ => {
            if let Some(k) = key_of("metadata.labels['") {
                meta.labels.as_ref()?.get(&k).cloned().unwrap_or_default()
            } else if let Some(k) = key_of("metadata.annotations['") {
                meta.annotations
                    .as_ref()?
                    .get(&k)
                    .cloned()
                    .unwrap_or_default()
            } else {
                return None;
            }
        }
    })
}

/// A service-account token for the pod from the TokenRequest API, bound
/// to the pod (it stops being valid when the pod is deleted).
async fn token(
    client: &kube::Client,
    pod: &Pod,
    namespace: &str,
    volume: &str,
    audience: Option<&str>,
    expiration: Option<i64>,
) -> Result<String, VolumeError> {
    let sa = pod
        .spec
        .as_ref()
        .and_then(|s| s.service_account_name.clone())
        .unwrap_or_else(|| "default".into());
    let request: TokenRequest = serde_json::from_value(json!({
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenRequest",
        "spec": {
            "audiences": audience.into_iter().collect::<Vec<_>>(),
            "expirationSeconds": expiration.unwrap_or(3600),
            "boundObjectRef": {
                "apiVersion": "v1",
                "kind": "Pod",
                "name": pod.metadata.name,
                "uid": pod.metadata.uid,
            },
        },
    }))
    .map_err(|e| err(volume, e.to_string()))?;
    let api: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
    let answer: TokenRequest = api
        .create_subresource("token", &sa, &PostParams::default(), &request)
        .await
        .map_err(|e| {
            err(
                volume,
                format!("token for ServiceAccount {namespace}/{sa}: {e}"),
            )
        })?;
    answer.status.map(|s| s.token).ok_or_else(|| {
        err(
            volume,
            format!("the TokenRequest for ServiceAccount {namespace}/{sa} returned no token"),
        )
    })
}

/// The shortest lifetime asked for by the pod's projected tokens, if it has any.
pub fn token_lifetime(pod: &Pod) -> Option<std::time::Duration> {
    pod.spec
        .iter()
        .flat_map(|s| s.volumes.iter().flatten())
        .filter_map(|v| v.projected.as_ref())
        .flat_map(|p| p.sources.iter().flatten())
        .filter_map(|s| s.service_account_token.as_ref())
        .map(|t| t.expiration_seconds.unwrap_or(3600).max(600))
        .min()
        .map(|s| std::time::Duration::from_secs(s.unsigned_abs()))
}

/// Requests every projected token of the pod again and replaces its file
/// under `dir` (by rename: a container reads the old token or the new one).
pub async fn refresh_tokens(
    client: &kube::Client,
    pod: &Pod,
    dir: &Path,
) -> Result<(), VolumeError> {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    for v in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
        let Some(p) = &v.projected else { continue };
        let mode = mode_of(p.default_mode);
        for t in p
            .sources
            .iter()
            .flatten()
            .filter_map(|s| s.service_account_token.as_ref())
        {
            let token = token(
                client,
                pod,
                namespace,
                &v.name,
                t.audience.as_deref(),
                t.expiration_seconds,
            )
            .await?;
            let staged = format!(".{}.new", t.path.replace('/', "_"));
            let volume = dir.join(&v.name);
            write(&v.name, &volume, &staged, token.as_bytes(), mode)?;
            std::fs::rename(volume.join(&staged), volume.join(&t.path))
                .map_err(|e| err(&v.name, format!("{}: {e}", t.path)))?;
        }
    }
    Ok(())
}
