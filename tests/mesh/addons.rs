//! The cluster add-ons (scripts/addons.sh: manifests/addons plus Istio's
//! Grafana dashboards) are accepted by a real API server and wired as
//! `istioctl dashboard` and Prometheus's pod discovery expect.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result, ensure};
use e2e::repo_root;
use serde::Deserialize;
use serde_json::Value;

use crate::dashboards::dashboards_dir;

/// Every add-on manifest, as scripts/addons.sh writes them, is accepted by a
/// real API server (`kubectl apply --dry-run=server`: admission and schema
/// checks, nothing stored); Grafana's ConfigMaps hold Istio's dashboards
/// unchanged; Prometheus's scrape config keeps the proxies' and trellisd's
/// pods by their prometheus.io annotations.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn addons_apply_to_a_cluster() -> Result<()> {
    let Some(kube) = e2e::kube::Kube::start("addons")? else {
        return Ok(());
    };
    let dir = tempfile::tempdir()?;
    let out = Command::new(repo_root().join("scripts/addons.sh"))
        .arg(dir.path())
        .output()
        .context("scripts/addons.sh")?;
    ensure!(
        out.status.success(),
        "scripts/addons.sh: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The monitors need the Prometheus Operator's CRDs: from its Go module
    // (scripts/addons.sh pins it; the test command fetches it beforehand).
    let operator = Command::new(repo_root().join("scripts/addons.sh"))
        .arg("--operator-crds")
        .output();
    let crds = match operator {
        Ok(o) if o.status.success() => Some(PathBuf::from(String::from_utf8(o.stdout)?.trim())),
        _ => None,
    };
    let server_side_monitors = match &crds {
        Some(crds) => {
            for kind in ["podmonitors", "servicemonitors"] {
                kube.create_crds(&crds.join(format!("monitoring.coreos.com_{kind}.yaml")))?;
            }
            true
        }
        None => {
            eprintln!(
                "monitors.yaml checked client-side only: `scripts/addons.sh --operator-crds` found no Prometheus Operator CRDs"
            );
            false
        }
    };

    let mut files: Vec<PathBuf> = std::fs::read_dir(dir.path())?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    files.sort();
    let names: Vec<String> = files
        .iter()
        .filter_map(|f| f.file_name()?.to_str().map(str::to_string))
        .collect();
    assert_eq!(
        names,
        [
            "grafana-dashboards.yaml",
            "grafana.yaml",
            "jaeger.yaml",
            "monitors.yaml",
            "prometheus.yaml"
        ]
    );
    for file in &files {
        let dry_run = if file.ends_with("monitors.yaml") && !server_side_monitors {
            "--dry-run=client"
        } else {
            "--dry-run=server"
        };
        let applied = kube.kubectl_ok(&["apply", dry_run, "-f", &file.display().to_string()])?;
        ensure!(
            applied
                .lines()
                .all(|l| l.contains("(server dry run)") || dry_run.ends_with("client")),
            "{}: {applied}",
            file.display()
        );
        eprintln!("{}", applied.trim());
    }

    // Grafana's folders hold Istio's dashboards, unchanged.
    let docs = |file: &str| -> Result<Vec<Value>> {
        let text = std::fs::read_to_string(dir.path().join(file))?;
        let mut docs = Vec::new();
        for doc in serde_yaml_ng::Deserializer::from_str(&text) {
            let v = Value::deserialize(doc)?;
            if !v.is_null() {
                docs.push(v);
            }
        }
        Ok(docs)
    };
    let istio = dashboards_dir()?;
    let mut seen = 0;
    let lists = docs("grafana-dashboards.yaml")?;
    let configmaps = lists
        .iter()
        .flat_map(|l| l["items"].as_array().cloned().unwrap_or_default());
    for cm in configmaps {
        assert_eq!(cm["kind"], "ConfigMap", "{}", cm["metadata"]);
        for (key, text) in cm["data"].as_object().context("data")? {
            let ours: Value = serde_json::from_str(text.as_str().unwrap_or_default())?;
            let source = match key.as_str() {
                "pilot-dashboard.json" => "pilot-dashboard.gen.json",
                "ztunnel-dashboard.json" => "ztunnel-dashboard.gen.json",
                "istio-mesh-dashboard.json" => "istio-mesh-dashboard.gen.json",
                other => other,
            };
            let theirs: Value = serde_json::from_slice(&std::fs::read(istio.join(source))?)?;
            assert!(ours == theirs, "{key} differs from Istio's {source}");
            seen += 1;
        }
    }
    assert_eq!(seen, 7, "Istio's seven dashboards");
    // Grafana mounts the ConfigMaps the script generates.
    let grafana = docs("grafana.yaml")?;
    let deployment = grafana
        .iter()
        .find(|d| d["kind"] == "Deployment")
        .context("no Grafana Deployment")?;
    let volumes = deployment["spec"]["template"]["spec"]["volumes"].to_string();
    for cm in [
        "istio-grafana-dashboards",
        "istio-services-grafana-dashboards",
    ] {
        assert!(volumes.contains(cm), "{cm} not mounted: {volumes}");
    }
    // `istioctl dashboard` (and `trellis dashboard`) find each add-on's pod
    // by these labels in istio-system and port-forward to these ports.
    for (file, label, value, port) in [
        (
            "prometheus.yaml",
            "app.kubernetes.io/name",
            "prometheus",
            9090,
        ),
        ("grafana.yaml", "app.kubernetes.io/name", "grafana", 3000),
        ("jaeger.yaml", "app", "jaeger", 16686),
    ] {
        let docs = docs(file)?;
        let pod = docs
            .iter()
            .find(|d| d["kind"] == "Deployment")
            .map(|d| &d["spec"]["template"])
            .with_context(|| format!("no Deployment in {file}"))?;
        assert_eq!(pod["metadata"]["labels"][label], value, "{file}");
        assert!(
            pod["spec"]["containers"][0]["ports"]
                .as_array()
                .is_some_and(|ports| ports.iter().any(|p| p["containerPort"] == port)),
            "{file}: no container port {port}"
        );
        assert!(
            docs.iter()
                .all(|d| d["metadata"]["namespace"] == "istio-system"
                    || d["metadata"]["namespace"].is_null()
                        && d["kind"].as_str().is_some_and(|k| k.starts_with("Cluster"))),
            "{file}: everything in istio-system"
        );
    }
    // Prometheus's pod job keeps pods by their prometheus.io annotations:
    // the sidecars' 15020 and trellisd's 15014, as the injector and the
    // installer annotate them.
    let prometheus = docs("prometheus.yaml")?;
    let config = prometheus
        .iter()
        .find(|d| d["kind"] == "ConfigMap")
        .and_then(|d| d["data"]["prometheus.yml"].as_str())
        .context("no prometheus.yml")?;
    let config: Value = serde_yaml_ng::from_str(config)?;
    let pods = config["scrape_configs"]
        .as_array()
        .and_then(|jobs| jobs.iter().find(|j| j["job_name"] == "kubernetes-pods"))
        .context("no kubernetes-pods job")?
        .to_string();
    for label in [
        "__meta_kubernetes_pod_annotation_prometheus_io_scrape",
        "__meta_kubernetes_pod_annotation_prometheus_io_port",
        "__meta_kubernetes_pod_annotation_prometheus_io_path",
    ] {
        assert!(pods.contains(label), "{label} not used: {pods}");
    }
    Ok(())
}
