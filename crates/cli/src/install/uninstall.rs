//! `trellis uninstall`: every object an install made deleted by the
//! install label, webhooks first, CRDs and the namespace only on request.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use kube::api::{Api, DynamicObject, ListParams};
use kube::core::{ApiResource, GroupVersionKind};

use super::kinds::{KindInfo, delete, kept_without_purge, labelled, str_at};

/// Deletes every object an install made (any owner), webhooks first;
/// CRDs and the namespace only with `purge` (they hold users' config).
/// Waits until they are gone.
pub async fn uninstall(client: &kube::Client, purge: bool, within: Duration) -> Result<()> {
    let objects = labelled(client).await?;
    if objects.is_empty() {
        println!("nothing installed by trellis was found");
        return Ok(());
    }
    let deadline = Instant::now() + within;
    let mut kept = Vec::new();
    // The namespace last, once everything else (the CRDs above all) is
    // gone: the namespace controller stalls and backs off for minutes when
    // kinds vanish while it empties a namespace.
    for namespaces in [false, true] {
        let phase = |info: &KindInfo| (info.kind == "Namespace") == namespaces;
        for (info, object) in objects.iter().filter(|(i, _)| phase(i)) {
            let name = object.metadata.name.clone().unwrap_or_default();
            let shown = match &object.metadata.namespace {
                Some(ns) => format!("{} {name}.{ns}", info.kind),
                None => format!("{} {name}", info.kind),
            };
            if kept_without_purge(info.kind) && !purge {
                kept.push(shown);
                continue;
            }
            if info.kind == "CustomResourceDefinition" {
                wait_listable(client, object, deadline).await?;
            }
            delete(client, info, object).await?;
            println!("✔ {shown} deleted");
        }
        loop {
            let left: Vec<_> = labelled(client)
                .await?
                .into_iter()
                .filter(|(info, _)| phase(info) && (purge || !kept_without_purge(info.kind)))
                .collect();
            if left.is_empty() {
                break;
            }
            if Instant::now() > deadline {
                let names: Vec<String> = left.iter().map(|(i, o)| describe_stuck(i, o)).collect();
                bail!("still there after {within:?}: {}", names.join(", "));
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
    if !kept.is_empty() {
        println!(
            "kept (they hold your Istio resources; --purge deletes them): {}",
            kept.join(", ")
        );
    }
    println!("✔ Uninstall complete");
    Ok(())
}

/// Waits until the API server lists a CRD's objects: a CRD deleted while
/// its storage is still initializing (just created) keeps its cleanup
/// finalizer for minutes, the API server's finalizer backing off.
async fn wait_listable(
    client: &kube::Client,
    crd: &DynamicObject,
    deadline: Instant,
) -> Result<()> {
    let spec = &crd.data["spec"];
    let group = str_at(spec, "/group");
    let Some(version) = spec["versions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|v| v["served"] == true)
        .and_then(|v| v["name"].as_str())
    else {
        return Ok(());
    };
    let gvk = GroupVersionKind::gvk(group, version, str_at(spec, "/names/kind"));
    let ar = ApiResource::from_gvk_with_plural(&gvk, str_at(spec, "/names/plural"));
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
    loop {
        match api.list(&ListParams::default().limit(1)).await {
            Ok(_) => return Ok(()),
            Err(e) if Instant::now() > deadline => {
                bail!(
                    "{}: cannot list its objects: {e}",
                    crd.metadata.name.clone().unwrap_or_default()
                )
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(300)).await,
        }
    }
}

/// `Kind name (finalizers: ...; conditions: ...)`: what holds an object
/// that does not go away.
fn describe_stuck(info: &KindInfo, object: &DynamicObject) -> String {
    let name = object.metadata.name.clone().unwrap_or_default();
    let finalizers = object.metadata.finalizers.clone().unwrap_or_default();
    let conditions: Vec<String> = object.data["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            format!(
                "{}={} {}",
                str_at(c, "/type"),
                str_at(c, "/status"),
                str_at(c, "/message")
            )
        })
        .collect();
    format!(
        "{} {name} (finalizers: {}; conditions: {})",
        info.kind,
        finalizers.join(", "),
        conditions.join("; ")
    )
}
