//! `trellis validate` against `istioctl validate`: the same verdict on
//! every document.

use std::collections::BTreeSet;
use std::path::Path;

use anyhow::{Result, ensure};
use e2e::bin;

use super::generator::{generated, seeds};
use super::{cases, istioctl, run, text};

/// Which documents (by name) each tool rejects, from one run over a
/// directory holding each document in its own file `NAME.yaml`.
fn rejected(
    istioctl: &Path,
    docs: &[(String, String)],
) -> Result<(BTreeSet<String>, BTreeSet<String>, String, String)> {
    let dir = tempfile::tempdir()?;
    for (name, text) in docs {
        std::fs::write(dir.path().join(format!("{name}.yaml")), text)?;
    }
    let path = dir.path().display().to_string();
    let ours = run(&bin("trellis"), &["validate", "-f", &path])?;
    let theirs = run(istioctl, &["validate", "-f", &path])?;
    let (ours_text, theirs_text) = (text(&ours), text(&theirs));
    let pick = |out: &str, marks: &dyn Fn(&str) -> Vec<String>| -> BTreeSet<String> {
        docs.iter()
            .filter(|(n, _)| marks(n).iter().any(|m| out.contains(m.as_str())))
            .map(|(n, _)| n.clone())
            .collect()
    };
    // trellis names the file (`…/NAME.yaml: document 1 …`); istioctl, after
    // its `Error:` line (warnings come before it), the resource
    // (`Kind/namespace/NAME:`) or the file it could not decode.
    let ours_set = pick(&ours_text, &|n| vec![format!("/{n}.yaml:")]);
    let errors = theirs_text
        .find("Error: ")
        .map_or("", |i| &theirs_text[i..]);
    let theirs_set = pick(errors, &|n| vec![format!("/{n}:"), format!("/{n}.yaml")]);
    Ok((ours_set, theirs_set, ours_text, theirs_text))
}

fn compare_validate(istioctl: &Path, docs: &[(String, String)]) -> Result<()> {
    let (ours, theirs, ours_text, theirs_text) = rejected(istioctl, docs)?;
    let mut report = String::new();
    let mut agree = 0;
    for (name, doc) in docs {
        let (o, t) = (ours.contains(name), theirs.contains(name));
        if o == t {
            agree += 1;
            continue;
        }
        if let Some(why) = known_validate_difference(doc) {
            eprintln!("{name}: known difference ({why})");
            agree += 1;
            continue;
        }
        let verdict = |rejects: bool| if rejects { "rejects" } else { "accepts" };
        report.push_str(&format!(
            "--- {name}: trellis {} it, istioctl {} it\n{doc}\n",
            verdict(o),
            verdict(t)
        ));
    }
    eprintln!("validate: {agree}/{} documents agree", docs.len());
    ensure!(
        report.is_empty(),
        "verdicts differ (TRELLIS_DIFF_SEED={:?}):\n{report}\n=== trellis:\n{ours_text}\n=== istioctl:\n{theirs_text}",
        std::env::var("TRELLIS_DIFF_SEED").unwrap_or_else(|_| "19".into())
    );
    Ok(())
}

/// Differences docs/reference/analysis.md lists ("Where Trellis differs
/// from istioctl"), found by a piece of the document's text: deliberate
/// ones, and the gaps not closed yet.
const KNOWN_DIFFERENCES: &[(&str, &str)] = &[(
    "principals: ['spiffe://",
    "deliberate: a principal with its spiffe:// scheme never matches in Istio; Trellis rejects it",
)];

pub(super) fn known_validate_difference(doc: &str) -> Option<&'static str> {
    KNOWN_DIFFERENCES
        .iter()
        .find(|(needle, _)| doc.contains(needle))
        .map(|(_, why)| *why)
}

#[test]
fn validate_agrees_with_istioctl_on_seeds() -> Result<()> {
    let Some(istioctl) = istioctl("validate_agrees_with_istioctl_on_seeds")? else {
        return Ok(());
    };
    compare_validate(&istioctl, &seeds())
}

#[test]
fn validate_agrees_with_istioctl_on_generated_resources() -> Result<()> {
    let Some(istioctl) = istioctl("validate_agrees_with_istioctl_on_generated_resources")? else {
        return Ok(());
    };
    compare_validate(&istioctl, &generated(cases())?)
}
