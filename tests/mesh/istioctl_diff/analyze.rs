//! `trellis analyze` against `istioctl analyze --use-kube=false`: the same
//! codes on the same resources, over generated folders.

use std::collections::BTreeSet;
use std::process::Output;

use anyhow::{Context, Result, ensure};
use e2e::bin;
use serde_json::Value;

use super::generator::folders;
use super::{cases, istioctl, run, text};

/// Findings left out of the comparison, with why (docs/reference/analysis.md
/// lists them): Trellis's own codes, and the checks that istioctl runs only
/// against a live cluster — with `--use-kube=false` it skips every analyzer
/// that needs Pods, Services or Namespaces, while Trellis reads those from
/// the files, as `trellis up` deploys them.
const ANALYZE_EXCLUDED: &[(&str, &str)] = &[
    ("TRL", "Trellis's own codes"),
    (
        "IST0101 Referenced host",
        "virtualservice.DestinationHostAnalyzer: live cluster only",
    ),
    (
        "IST0101 Referenced selector",
        "telemetry/sidecar SelectorAnalyzer: live cluster only",
    ),
    ("IST0102", "injection.Analyzer: live cluster only"),
    ("IST0103", "injection.Analyzer: live cluster only"),
    ("IST0110", "sidecar.SelectorAnalyzer: live cluster only"),
    ("IST0111", "sidecar.SelectorAnalyzer: live cluster only"),
    (
        "IST0112",
        "virtualservice.DestinationHostAnalyzer: live cluster only",
    ),
    ("IST0118", "service.PortNameAnalyzer: live cluster only"),
    (
        "IST0127",
        "auth.AuthorizationPoliciesAnalyzer: live cluster only",
    ),
    (
        "IST0145",
        "gateway.ConflictingGatewayAnalyzer: live cluster only",
    ),
    ("IST0159", "telemetry.SelectorAnalyzer: live cluster only"),
    (
        "IST0162",
        "gateway.IngressGatewayPortAnalyzer: live cluster only",
    ),
    (
        "IST0173",
        "destinationrule.SubsetSelectPodAnalyzer: live cluster only",
    ),
    (
        "IST0174",
        "destinationrule.SubsetSelectPodAnalyzer: live cluster only",
    ),
];

fn excluded(code: &str, message: &str) -> bool {
    let line = format!("{code} {message}");
    ANALYZE_EXCLUDED.iter().any(|(c, _)| line.starts_with(c))
}

/// `Kind namespace/name` (newer istioctl) as `Kind name.namespace`.
fn dotted(origin: &str) -> String {
    match origin.split_once(' ').and_then(|(kind, full)| {
        let (ns, name) = full.split_once('/')?;
        Some(format!("{kind} {name}.{ns}"))
    }) {
        Some(o) => o,
        None => origin.to_string(),
    }
}

fn findings(out: &Output) -> Result<BTreeSet<(String, String)>> {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let start = stdout.find('[').unwrap_or(0);
    let v: Value = serde_json::from_str(stdout[start..].trim())
        .with_context(|| format!("not a JSON list: {}", text(out)))?;
    Ok(v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| {
            let code = m["code"].as_str()?.to_string();
            let origin = dotted(m["origin"].as_str()?);
            let message = m["message"].as_str().unwrap_or_default();
            (!excluded(&code, message)).then_some((code, origin))
        })
        .collect())
}

#[test]
fn analyze_agrees_with_istioctl_on_generated_folders() -> Result<()> {
    let Some(istioctl) = istioctl("analyze_agrees_with_istioctl_on_generated_folders")? else {
        return Ok(());
    };
    let mut report = String::new();
    for (i, all) in folders((cases() / 5).max(4))?.iter().enumerate() {
        let dir = tempfile::tempdir()?;
        std::fs::write(dir.path().join("all.yaml"), all)?;
        let path = dir.path().display().to_string();
        let path = dir.path().display().to_string();
        let ours = findings(&run(&bin("trellis"), &["analyze", &path, "-o", "json"])?)?;
        let theirs = findings(&run(
            &istioctl,
            &["analyze", "--use-kube=false", "-o", "json", &path],
        )?)?;
        if ours != theirs {
            report.push_str(&format!(
                "--- folder {i}: only trellis {:?}; only istioctl {:?}\n{all}\n",
                ours.difference(&theirs).collect::<Vec<_>>(),
                theirs.difference(&ours).collect::<Vec<_>>()
            ));
        }
    }
    ensure!(report.is_empty(), "analyze findings differ:\n{report}");
    Ok(())
}
