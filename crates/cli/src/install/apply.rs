//! `trellis install`: the manifests applied to a cluster (server-side
//! apply), what an earlier install made and this one no longer has
//! removed, then a wait for the Deployments.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use kube::ResourceExt as _;
use kube::api::{DynamicObject, Patch, PatchParams};

use super::kinds::{
    CRD, KINDS, api, api_for, availability, delete, describe, kept_without_purge, labelled, str_at,
};
use super::{INSTALL_LABEL, Manifest};

/// The field manager of `trellis install`'s server-side applies.
const FIELD_MANAGER: &str = "trellis-install";

pub struct InstallOptions {
    /// Wait this long for every Deployment to be available; None: don't wait.
    pub readiness_timeout: Option<Duration>,
}

/// Applies `manifest` (server-side apply, this tool as the field manager),
/// removes what an earlier install by the same owner made and this one no
/// longer has, and waits for the Deployments. Prints one line per step.
pub async fn install(
    client: &kube::Client,
    manifest: &Manifest,
    options: &InstallOptions,
) -> Result<()> {
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let mut crds = Vec::new();
    for object in &manifest.objects {
        let (api, name) = api_for(client, object)?;
        let kind = str_at(object, "/kind");
        if kept_without_purge(kind) {
            // A namespace or CRD that was there before is not ours to take:
            // uninstall --purge would delete it, with what it holds.
            let existing = api.get_opt(&name).await?;
            if existing.is_some_and(|e| e.labels().get(INSTALL_LABEL).is_none()) {
                println!(
                    "- {} exists (not installed by trellis); left as it is",
                    describe(object)
                );
                continue;
            }
        }
        let patch: DynamicObject = serde_json::from_value(object.clone())
            .with_context(|| format!("{}: not a Kubernetes object", describe(object)))?;
        api.patch(&name, &params, &Patch::Apply(&patch))
            .await
            .with_context(|| format!("applying {}", describe(object)))?;
        println!("✔ {} applied", describe(object));
        if kind == "CustomResourceDefinition" {
            crds.push(name);
        }
    }
    if !crds.is_empty() {
        wait_established(client, &crds, Duration::from_secs(60)).await?;
        println!("✔ {} CRDs established", crds.len());
    }
    prune(client, manifest).await?;
    if let Some(timeout) = options.readiness_timeout {
        wait_available(client, manifest, timeout).await?;
    }
    println!(
        "✔ Installation complete (profile {}, owner {})",
        manifest.profile, manifest.owner
    );
    Ok(())
}

async fn wait_established(client: &kube::Client, names: &[String], within: Duration) -> Result<()> {
    let api = api(client, &KINDS[CRD], None);
    let deadline = Instant::now() + within;
    for name in names {
        loop {
            let crd = api.get(name).await?;
            let established = crd.data["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["type"] == "Established" && c["status"] == "True");
            if established {
                break;
            }
            if Instant::now() > deadline {
                bail!("CRD {name} not established after {within:?}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    Ok(())
}

/// Deletes what an earlier install made that this manifest no longer has
/// (a gateway turned off, an HPA no longer wanted): a cluster has one
/// install, the last one applied, whichever IstioOperator named it.
async fn prune(client: &kube::Client, manifest: &Manifest) -> Result<()> {
    let wanted: BTreeSet<(String, String, String)> = manifest
        .objects
        .iter()
        .map(|o| {
            (
                str_at(o, "/kind").to_string(),
                str_at(o, "/metadata/namespace").to_string(),
                str_at(o, "/metadata/name").to_string(),
            )
        })
        .collect();
    let mut removed = Vec::new();
    for (info, object) in labelled(client).await? {
        if kept_without_purge(info.kind) {
            continue;
        }
        let key = (
            info.kind.to_string(),
            object.metadata.namespace.clone().unwrap_or_default(),
            object.metadata.name.clone().unwrap_or_default(),
        );
        if !wanted.contains(&key) {
            delete(client, info, &object).await?;
            removed.push((info, object));
        }
    }
    // Gone before install goes on: a Deployment with its Pods.
    let deadline = Instant::now() + Duration::from_secs(120);
    for (info, object) in removed {
        let name = object.metadata.name.clone().unwrap_or_default();
        let api = api(client, info, object.metadata.namespace.as_deref());
        while api.get_opt(&name).await?.is_some() {
            if Instant::now() > deadline {
                bail!(
                    "{} {name} is still there 120 s after its deletion",
                    info.kind
                );
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        println!("✔ {} {name} removed (no longer in the install)", info.kind);
    }
    Ok(())
}

async fn wait_available(
    client: &kube::Client,
    manifest: &Manifest,
    within: Duration,
) -> Result<()> {
    let deadline = Instant::now() + within;
    for object in manifest
        .objects
        .iter()
        .filter(|o| o["kind"] == "Deployment")
    {
        let (api, name) = api_for(client, object)?;
        loop {
            let d = api.get(&name).await?;
            let (available, wanted) = availability(&d);
            if available >= wanted.max(1) {
                println!("✔ {} available ({available}/{wanted})", describe(object));
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "{} is not available after {within:?} ({available}/{wanted} replicas); `kubectl -n {} describe deployment {name}` says why",
                    describe(object),
                    str_at(object, "/metadata/namespace")
                );
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
    Ok(())
}
