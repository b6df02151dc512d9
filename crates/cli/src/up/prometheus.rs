//! Prometheus's service discovery for a running mesh: `trellis up` writes
//! file_sd target files (the proxies' merged 15020 endpoints, the control
//! plane's 15014) and a config using them into `<state>/prometheus/`, so
//! that `prometheus --config.file=<state>/prometheus/prometheus.yml` scrapes
//! the mesh as Istio's Prometheus add-on scrapes a cluster (job names and
//! target labels as its `kubernetes-pods` and `istiod` jobs).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde_json::json;

use super::MERGED_METRICS_PORT;
use super::plan::PodPlan;

pub const CONFIG_FILE: &str = "prometheus.yml";
pub const PODS_FILE: &str = "pods.json";
pub const CONTROL_PLANE_FILE: &str = "control-plane.json";

/// Writes the files; returns their directory.
pub fn write_file_sd(state: &Path, pods: &[PodPlan], api_url: &str) -> Result<PathBuf> {
    let dir = state.join("prometheus");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let targets: Vec<_> = pods
        .iter()
        .filter_map(|p| {
            let ip = p.metrics_ip()?;
            Some(json!({
                "targets": [format!("{ip}:{MERGED_METRICS_PORT}")],
                "labels": {
                    "__metrics_path__": "/stats/prometheus",
                    "namespace": p.namespace,
                    "pod": p.name,
                    "app": p.labels.get("app").cloned().unwrap_or_default(),
                },
            }))
        })
        .collect();
    let api = api_url
        .trim_start_matches("http://")
        .trim_start_matches("https://");
    let control = json!([{
        "targets": [api],
        "labels": {"__metrics_path__": "/metrics", "app": "istiod", "namespace": "istio-system"},
    }]);
    let config = format!(
        "# Written by `trellis up`: scrapes this mesh as Istio's Prometheus add-on\n\
         # scrapes a cluster. Targets: {PODS_FILE} and {CONTROL_PLANE_FILE} (file_sd).\n\
         global:\n  scrape_interval: 15s\n\
         scrape_configs:\n\
         - job_name: kubernetes-pods\n  file_sd_configs:\n  - files: ['{pods}']\n\
         - job_name: istiod\n  file_sd_configs:\n  - files: ['{control}']\n",
        pods = dir.join(PODS_FILE).display(),
        control = dir.join(CONTROL_PLANE_FILE).display(),
    );
    write(
        &dir.join(PODS_FILE),
        &serde_json::to_string_pretty(&targets)?,
    )?;
    write(
        &dir.join(CONTROL_PLANE_FILE),
        &serde_json::to_string_pretty(&control)?,
    )?;
    write(&dir.join(CONFIG_FILE), &config)?;
    Ok(dir)
}

/// Whole or not at all: Prometheus re-reads file_sd files when they change
/// and must never see half of one.
fn write(path: &Path, text: &str) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text)
        .and_then(|()| std::fs::rename(&tmp, path))
        .with_context(|| format!("writing {}", path.display()))
}
