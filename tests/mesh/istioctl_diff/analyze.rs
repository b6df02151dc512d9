//! `trellis analyze` against `istioctl analyze --use-kube=false`: the same
//! codes on the same resources, over generated folders.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Output;

use anyhow::{Context, Result, ensure};
use e2e::bin;
use serde_json::Value;

use super::generator::{folders, seed_folders};
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
    (
        "IST0101 Referenced credentialName",
        "gateway.SecretAnalyzer: live cluster only",
    ),
    ("IST0102", "injection.Analyzer: live cluster only"),
    ("IST0107", "annotations.K8sAnalyzer: live cluster only"),
    ("IST0108", "annotations.K8sAnalyzer: live cluster only"),
    ("IST0103", "injection.Analyzer: live cluster only"),
    ("IST0110", "sidecar.SelectorAnalyzer: live cluster only"),
    ("IST0111", "sidecar.SelectorAnalyzer: live cluster only"),
    (
        "IST0112",
        "virtualservice.DestinationHostAnalyzer: live cluster only",
    ),
    ("IST0118", "service.PortNameAnalyzer: live cluster only"),
    ("IST0135", "annotations.K8sAnalyzer: live cluster only"),
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

pub(super) fn excluded(code: &str, message: &str) -> bool {
    let line = format!("{code} {message}");
    ANALYZE_EXCLUDED.iter().any(|(c, _)| line.starts_with(c))
}

/// `Kind namespace/name` (newer istioctl) as `Kind name.namespace`.
pub(super) fn dotted(origin: &str) -> String {
    match origin.split_once(' ').and_then(|(kind, full)| {
        let (ns, name) = full.split_once('/')?;
        Some(format!("{kind} {name}.{ns}"))
    }) {
        Some(o) => o,
        None => origin.to_string(),
    }
}

/// (code, resource) of each message, with how many messages there are for
/// it (different texts: a second unreachable rule, a second warning).
fn findings(out: &Output) -> Result<BTreeMap<(String, String), usize>> {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let start = stdout.find('[').unwrap_or(0);
    let v: Value = serde_json::from_str(stdout[start..].trim())
        .with_context(|| format!("not a JSON list: {}", text(out)))?;
    let mut found = BTreeMap::new();
    for m in v.as_array().into_iter().flatten() {
        let (Some(code), Some(origin)) = (m["code"].as_str(), m["origin"].as_str()) else {
            continue;
        };
        let message = m["message"].as_str().unwrap_or_default();
        if !excluded(code, message) {
            *found.entry((code.to_string(), dotted(origin))).or_insert(0) += 1;
        }
    }
    Ok(found)
}

/// The findings on which the two tools differ over one folder (`all` is
/// its one file), as a report; empty when they agree.
fn compare_folder(istioctl: &Path, label: &str, all: &str, counted: bool) -> Result<String> {
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("all.yaml"), all)?;
    let path = dir.path().display().to_string();
    let ours = findings(&run(&bin("trellis"), &["analyze", &path, "-o", "json"])?)?;
    let theirs = findings(&run(
        istioctl,
        &["analyze", "--use-kube=false", "-o", "json", &path],
    )?)?;
    // Generated folders compare which (code, resource) pairs appear; seed
    // folders also how many messages each has.
    let pairs = |f: &BTreeMap<(String, String), usize>| -> BTreeSet<(String, String)> {
        f.keys().cloned().collect()
    };
    let same = if counted {
        ours == theirs
    } else {
        pairs(&ours) == pairs(&theirs)
    };
    if same {
        return Ok(String::new());
    }
    // What one side reports that the other does not (or not as often).
    let only = |a: &BTreeMap<(String, String), usize>, b: &BTreeMap<(String, String), usize>| {
        let mut out = Vec::new();
        for ((code, origin), n) in a {
            let other = b.get(&(code.clone(), origin.clone())).copied();
            let differs = match other {
                None => true,
                Some(m) => counted && m != *n,
            };
            if differs {
                out.push(format!("{code} {origin} ×{n}"));
            }
        }
        out
    };
    Ok(format!(
        "--- {label}: only trellis {:?}; only istioctl {:?}\n{all}\n",
        only(&ours, &theirs),
        only(&theirs, &ours)
    ))
}

#[test]
fn analyze_agrees_with_istioctl_on_seed_folders() -> Result<()> {
    let Some(istioctl) = istioctl("analyze_agrees_with_istioctl_on_seed_folders")? else {
        return Ok(());
    };
    let mut report = String::new();
    for (i, all) in seed_folders().iter().enumerate() {
        report.push_str(&compare_folder(
            &istioctl,
            &format!("seed folder {i}"),
            all,
            true,
        )?);
    }
    ensure!(report.is_empty(), "analyze findings differ:\n{report}");
    Ok(())
}

#[test]
fn analyze_agrees_with_istioctl_on_generated_folders() -> Result<()> {
    let Some(istioctl) = istioctl("analyze_agrees_with_istioctl_on_generated_folders")? else {
        return Ok(());
    };
    let mut report = String::new();
    for (i, all) in folders((cases() / 5).max(4))?.iter().enumerate() {
        report.push_str(&compare_folder(
            &istioctl,
            &format!("folder {i}"),
            all,
            false,
        )?);
    }
    ensure!(report.is_empty(), "analyze findings differ:\n{report}");
    Ok(())
}
