//! The agreement figures docs/reference/analysis.md gives, measured on a
//! body neither tool was written against here: Istio's own analyzer test
//! inputs (`pkg/config/analysis/analyzers/testdata/*.yaml` of the pinned
//! istio.io/istio module, which scripts/istioctl.sh puts in the Go module
//! cache). Ignored by default (it is a measurement, not a check); run
//!
//! ```text
//! cargo nextest run -p e2e --run-ignored only --no-capture measure_agreement
//! ```
//!
//! - validate: the share of files on which `trellis validate -f FILE` and
//!   `istioctl validate -f FILE` give the same verdict (a disagreement that a
//!   listed deliberate difference explains is counted apart);
//! - analyze: the share of istioctl's messages (`istioctl analyze
//!   --use-kube=false -A`) that Trellis gives too, by code and resource, and
//!   by exact text. Both tools read the same copy of each file, in which an
//!   object without a namespace is put in `default` (as `kubectl apply`
//!   would; istioctl's `-A` would otherwise leave it in none).

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, Result};
use e2e::bin;
use serde::Deserialize;
use serde_json::Value;

use super::analyze::{dotted, excluded};
use super::validate::known_validate_difference;
use super::{istioctl, run, text};

/// Kinds without a namespace, which the copy leaves as they are.
const CLUSTER_SCOPED: &[&str] = &[
    "Namespace",
    "MutatingWebhookConfiguration",
    "ValidatingWebhookConfiguration",
    "CustomResourceDefinition",
    "ClusterRole",
    "ClusterRoleBinding",
    "Node",
    "GatewayClass",
];

/// The analyzers' test inputs in the istio.io/istio module scripts/istioctl.sh
/// builds from.
fn istio_test_inputs() -> Result<PathBuf> {
    Ok(e2e::istio_module_dir()?.join("pkg/config/analysis/analyzers/testdata"))
}

/// The file's documents with a namespace on every namespaced object; the
/// text unchanged when it does not parse (both tools then see the same
/// broken text).
fn with_namespaces(text: &str) -> String {
    let mut docs = Vec::new();
    for doc in serde_yaml_ng::Deserializer::from_str(text) {
        let Ok(mut v) = Value::deserialize(doc) else {
            return text.to_string();
        };
        let namespaced = v["kind"]
            .as_str()
            .is_some_and(|k| !CLUSTER_SCOPED.contains(&k));
        if namespaced && v["metadata"]["namespace"].is_null() {
            if !v["metadata"].is_object() {
                v["metadata"] = serde_json::json!({});
            }
            v["metadata"]["namespace"] = "default".into();
        }
        match serde_yaml_ng::to_string(&v) {
            Ok(s) => docs.push(s),
            Err(_) => return text.to_string(),
        }
    }
    docs.join("---\n")
}

/// (code, resource) → messages, from `-o json` output.
fn messages(out: &std::process::Output) -> Result<BTreeMap<(String, String), Vec<String>>> {
    let stdout = String::from_utf8_lossy(&out.stdout);
    // The list starts a line; log lines before it may hold brackets too.
    let start = if stdout.starts_with('[') {
        Some(0)
    } else {
        stdout.find("\n[").map(|i| i + 1)
    };
    let Some(start) = start else {
        return Ok(BTreeMap::new());
    };
    let v: Value = serde_json::from_str(stdout[start..].trim())
        .with_context(|| format!("not a JSON list: {}", text(out)))?;
    let mut found: BTreeMap<_, Vec<String>> = BTreeMap::new();
    for m in v.as_array().into_iter().flatten() {
        let (Some(code), Some(origin)) = (m["code"].as_str(), m["origin"].as_str()) else {
            continue;
        };
        let message = m["message"].as_str().unwrap_or_default().to_string();
        found
            .entry((code.to_string(), dotted(origin)))
            .or_default()
            .push(message);
    }
    Ok(found)
}

#[test]
#[ignore = "a measurement on Istio's test inputs; run it on demand"]
fn measure_agreement_on_istio_test_inputs() -> Result<()> {
    let Some(istioctl) = istioctl("measure_agreement_on_istio_test_inputs")? else {
        return Ok(());
    };
    let inputs = istio_test_inputs()?;
    let mut files: Vec<PathBuf> = std::fs::read_dir(&inputs)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    let trellis = bin("trellis");
    let work = tempfile::tempdir()?;

    let (mut same, mut by_design) = (0, 0);
    let (mut theirs_total, mut matched, mut exact, mut extra) = (0, 0, 0, 0);
    let mut missing_by_code: BTreeMap<String, usize> = BTreeMap::new();
    for file in &files {
        let name = file.file_name().unwrap_or_default().to_string_lossy();
        let original = std::fs::read_to_string(file)?;

        let ours = run(&trellis, &["validate", "-f", &file.display().to_string()])?;
        let theirs = run(&istioctl, &["validate", "-f", &file.display().to_string()])?;
        let (o, t) = (!ours.status.success(), !theirs.status.success());
        if o == t {
            same += 1;
        } else if let Some(why) = known_validate_difference(&original) {
            by_design += 1;
            eprintln!("validate {name}: differs by design ({why})");
        } else {
            let verdict = |rejects: bool| if rejects { "rejects" } else { "accepts" };
            eprintln!(
                "validate {name}: trellis {} it, istioctl {} it\n  trellis: {}\n  istioctl: {}",
                verdict(o),
                verdict(t),
                text(&ours).trim().replace('\n', "\n    "),
                text(&theirs).trim().replace('\n', "\n    ")
            );
        }

        let copy = work.path().join(&*name);
        std::fs::write(&copy, with_namespaces(&original))?;
        let copy = copy.display().to_string();
        let ours = messages(&run(&trellis, &["analyze", &copy, "-o", "json"])?)?;
        let theirs = messages(&run(
            &istioctl,
            &["analyze", "--use-kube=false", "-A", "-o", "json", &copy],
        )?)?;
        for (key, texts) in &theirs {
            let mine = ours.get(key).map(Vec::as_slice).unwrap_or_default();
            theirs_total += texts.len();
            matched += texts.len().min(mine.len());
            exact += texts.iter().filter(|t| mine.contains(t)).count();
            if mine.len() < texts.len() {
                *missing_by_code.entry(key.0.clone()).or_default() += texts.len() - mine.len();
                eprintln!("analyze {name}: missing {} {}: {}", key.0, key.1, texts[0]);
            }
        }
        for (key, texts) in &ours {
            let theirs_n = theirs.get(key).map_or(0, Vec::len);
            if texts.len() > theirs_n && !excluded(&key.0, &texts[0]) {
                extra += texts.len() - theirs_n;
                eprintln!(
                    "analyze {name}: only trellis {} {}: {}",
                    key.0, key.1, texts[0]
                );
            }
        }
    }
    let pct = |a: usize, b: usize| 100.0 * a as f64 / b.max(1) as f64;
    let n = files.len();
    println!(
        "validate: {same}/{n} files agree ({:.1} %); with the listed deliberate differences {}/{n} ({:.1} %)",
        pct(same, n),
        same + by_design,
        pct(same + by_design, n)
    );
    println!(
        "analyze: {matched}/{theirs_total} of istioctl's messages by code and resource ({:.1} %), {exact} with the same text ({:.1} %); {extra} messages only from trellis outside the excluded codes",
        pct(matched, theirs_total),
        pct(exact, theirs_total)
    );
    println!("analyze: missing by code {missing_by_code:?}");
    Ok(())
}
