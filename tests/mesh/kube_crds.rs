//! The seeds' Istio resources applied with kubectl to a real API server:
//! against Istio's own CRDs, and against the CRDs `trellis install`
//! creates, which must accept what Istio's accept and refuse what they
//! refuse.

use std::process::Command;

use anyhow::{Context, Result, ensure};
use e2e::bin;
use e2e::kube::Kube;
use serde::Deserialize as _;

/// The seed files of a kind Istio has a CRD for (IstioOperator and
/// ServiceMonitor are no CRDs a mesh installs: an operator's input and a
/// Prometheus Operator kind); `None` where the seeds are not there.
fn crd_seed_files() -> Result<Option<Vec<std::path::PathBuf>>> {
    let seeds = e2e::repo_root().join("../shared/seeds/yaml");
    let Ok(entries) = std::fs::read_dir(&seeds) else {
        eprintln!("SKIPPED: no seeds at {}", seeds.display());
        return Ok(None);
    };
    let mut files: Vec<_> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            name.ends_with(".yaml")
                && !name.contains("-IstioOperator-")
                && !name.contains("-ServiceMonitor-")
        })
        .collect();
    files.sort();
    ensure!(files.len() >= 15, "the seeds are there: {files:?}");
    Ok(Some(files))
}

/// `kubectl apply <flags> -f` of each seed file, which must succeed, in
/// the namespaces they name (created first, as a user does).
fn apply_seeds(kube: &Kube, files: &[std::path::PathBuf], flags: &[&str]) -> Result<()> {
    let mut namespaces = std::collections::BTreeSet::new();
    for file in files {
        for line in std::fs::read_to_string(file)?.lines() {
            if let Some(ns) = line.trim().strip_prefix("namespace:") {
                namespaces.insert(ns.trim().trim_matches('"').to_string());
            }
        }
    }
    let existing = kube.kubectl_ok(&["get", "namespaces", "-o", "name"])?;
    for ns in namespaces {
        if !existing.contains(&format!("namespace/{ns}\n")) {
            kube.kubectl_ok(&["create", "namespace", &ns])?;
        }
    }
    for file in files {
        let file = file.display().to_string();
        let mut args = vec!["apply"];
        args.extend(flags);
        args.extend(["-f", &file]);
        let out = kube.kubectl(&args);
        ensure!(
            out.status.success(),
            "kubectl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Every seed file of a kind Istio has a CRD for applies unchanged to an
/// API server with Istio's published CRDs, as on an Istio cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seeds_apply_with_kubectl_against_istios_crds() -> Result<()> {
    let Some(files) = crd_seed_files()? else {
        return Ok(());
    };
    let Some(kube) = Kube::start("seeds-apply")? else {
        return Ok(());
    };
    apply_seeds(&kube, &files, &[])
}

/// With Trellis's CRDs in place of Istio's (`trellis manifest generate`'s,
/// schemas generated from the api types, and EnvoyFilter's), the API
/// server behaves as with Istio's: every seed passes `kubectl apply
/// --dry-run=server` (the EnvoyFilter's Envoy configuration kept as
/// given), and a misspelled field is refused by kubectl's strict field
/// validation with the same message, naming the field (open schemas took
/// it silently).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_crds_take_the_seeds_and_refuse_a_misspelled_field_as_istios_do() -> Result<()> {
    let Some(files) = crd_seed_files()? else {
        return Ok(());
    };
    let Some(kube) = Kube::start("our-crds")? else {
        return Ok(());
    };
    let dir = tempfile::tempdir()?;
    let misspelled = dir.path().join("misspelled.yaml");
    std::fs::write(
        &misspelled,
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: reviews\n\
         spec:\n  hosts: [reviews]\n  http:\n  - timout: 5s\n    route:\n    - destination:\n        host: reviews\n",
    )?;
    let misspelled = misspelled.display().to_string();
    // An EnvoyFilter with `applyto`: refused; unknown fields inside a
    // patch's value (Envoy's config) are kept, as Istio's schema keeps them.
    let filter = dir.path().join("misspelled-filter.yaml");
    std::fs::write(
        &filter,
        "apiVersion: networking.istio.io/v1alpha3\nkind: EnvoyFilter\nmetadata:\n  name: limit\n\
         spec:\n  configPatches:\n  - applyto: HTTP_FILTER\n    patch:\n      operation: INSERT_FIRST\n\
         \x20     value: {name: envoy.filters.http.local_ratelimit, anything: {goes: here}}\n",
    )?;
    let filter = filter.display().to_string();
    let refusal = |kube: &Kube| -> Result<String> {
        let mut refusals = String::new();
        for (file, field) in [
            (&misspelled, "spec.http[0].timout"),
            (&filter, "spec.configPatches[0].applyto"),
        ] {
            let out = kube.kubectl(&["apply", "--dry-run=server", "-f", file]);
            let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
            ensure!(
                !out.status.success(),
                "{field}: the misspelled field was accepted"
            );
            ensure!(
                stderr.contains(&format!("unknown field \"{field}\"")),
                "{stderr}"
            );
            ensure!(
                !stderr.contains("anything"),
                "the patch value's field: {stderr}"
            );
            refusals.push_str(&stderr);
        }
        Ok(refusals)
    };
    let on_istios = refusal(&kube)?;

    // Istio's CRDs of the kinds Trellis serves out, ours in.
    let out = Command::new(bin("trellis"))
        .args(["manifest", "generate"])
        .output()?;
    ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut crds = String::new();
    let mut names = Vec::new();
    for doc in serde_yaml_ng::Deserializer::from_str(&String::from_utf8_lossy(&out.stdout)) {
        let object = serde_json::Value::deserialize(doc)?;
        if object["kind"] == "CustomResourceDefinition" {
            names.push(
                object["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            );
            crds.push_str(&format!("---\n{}", serde_yaml_ng::to_string(&object)?));
        }
    }
    ensure!(
        names.len() == 12
            && names
                .iter()
                .any(|n| n == "envoyfilters.networking.istio.io"),
        "{names:?}"
    );
    let ours = dir.path().join("crds.yaml");
    std::fs::write(&ours, crds)?;
    // Bounded: under load the CRD finalizer once kept an unbounded wait 300 s.
    let mut delete = vec!["delete", "crd", "--wait", "--timeout=90s"];
    delete.extend(names.iter().map(String::as_str));
    kube.kubectl_ok(&delete).context(
        "deleting Istio's CRDs did not finish in 90 s (their finalizer, which empties \
         the kinds' objects, did not run: is the API server starved?)",
    )?;
    kube.create_crds(&ours)?;
    let open = kube.kubectl_ok(&[
        "get",
        "crd",
        "virtualservices.networking.istio.io",
        "-o",
        "jsonpath={.spec.versions[0].schema.openAPIV3Schema.properties.spec.properties.http.type}",
    ])?;
    ensure!(
        open.trim() == "array",
        "our CRD is not the one installed: {open}"
    );

    ensure!(
        refusal(&kube)? == on_istios,
        "the refusal differs from Istio's CRDs' ({on_istios})"
    );
    apply_seeds(&kube, &files, &["--dry-run=server"])
}
