//! Our CRDs' schemas against Istio's published ones: every field path and
//! type both ways, with the differences we mean listed and explained.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use anyhow::{Context, Result, ensure};
use serde_json::Value;

use super::{kube_tools, objects, text, trellis};

/// Why the fields below are missing from our schemas: Trellis's types do
/// not have them, so `trellis validate` and trellisd refuse a resource
/// that sets them (`unknown field`); the API server refuses it up front
/// rather than storing what the mesh would then ignore.
const NOT_IN_TRELLIS: &str =
    "not in Trellis's types: refused at apply time, not stored and ignored";

/// Where our CRDs' schemas knowingly differ from Istio's: (CRD, field
/// name, why). A difference at a path through a field of that name (in
/// any version) is allowed.
const SCHEMA_DIFFERENCES: &[(&str, &str, &str)] = &[
    // Istio 1.29-1.31 additions to DestinationRule.
    (
        "destinationrules.networking.istio.io",
        "zoneAwareLbSetting",
        NOT_IN_TRELLIS,
    ),
    (
        "destinationrules.networking.istio.io",
        "outlierDetectionHttpErrorCodes",
        NOT_IN_TRELLIS,
    ),
    (
        "destinationrules.networking.istio.io",
        "budgetInterval",
        NOT_IN_TRELLIS,
    ),
    (
        "authorizationpolicies.security.istio.io",
        "trustDomains",
        NOT_IN_TRELLIS,
    ),
    (
        "authorizationpolicies.security.istio.io",
        "notTrustDomains",
        NOT_IN_TRELLIS,
    ),
    (
        "gateways.networking.istio.io",
        "insecureSkipVerify",
        NOT_IN_TRELLIS,
    ),
    (
        "sidecars.networking.istio.io",
        "insecureSkipVerify",
        NOT_IN_TRELLIS,
    ),
    (
        "virtualservices.networking.istio.io",
        "prefixRewrite",
        NOT_IN_TRELLIS,
    ),
    // Proto field names Istio's schemas also list beside the JSON names
    // (`mirrorPercent`, `jwksUri`), which are the ones Trellis reads.
    (
        "virtualservices.networking.istio.io",
        "mirror_percent",
        NOT_IN_TRELLIS,
    ),
    (
        "requestauthentications.security.istio.io",
        "jwks_uri",
        NOT_IN_TRELLIS,
    ),
];

/// Whether `path` (as `api::schema::field_types` writes it) goes through
/// a field named `field`.
fn through(path: &str, field: &str) -> bool {
    path.split('.')
        .any(|part| part.trim_end_matches("[]") == field)
}

/// Our CRDs say what Istio's published ones (istio.io/api, in the kube
/// tools' directory) say of each kind we serve: group, names, short names,
/// categories, scope, served versions and the storage one, the status
/// subresource, the printer columns, and in each version's schema every
/// field path with its type (both ways), but for SCHEMA_DIFFERENCES.
#[test]
fn crds_agree_with_istios_published_ones() -> Result<()> {
    let published = Path::new(&kube_tools()?).join("istio-crds.yaml");
    if !published.is_file() {
        ensure!(
            std::env::var_os("CI").is_none(),
            "{} is missing: run scripts/kube-tools.sh",
            published.display()
        );
        eprintln!(
            "SKIPPED: {} is missing (scripts/kube-tools.sh fetches it)",
            published.display()
        );
        return Ok(());
    }
    let istio = objects(&std::fs::read_to_string(&published)?)?;
    let out = trellis(&["manifest", "generate"]);
    ensure!(out.status.success(), "{}", text(&out));
    let ours = objects(&String::from_utf8_lossy(&out.stdout))?;
    let mut compared = 0;
    let mut mismatches = Vec::new();
    let mut used = BTreeSet::new();
    for ((kind, _, name), crd) in ours
        .iter()
        .filter(|((k, _, _), _)| k == "CustomResourceDefinition")
    {
        let theirs = istio
            .get(&(kind.clone(), String::new(), name.clone()))
            .with_context(|| format!("Istio publishes no CRD {name}"))?;
        let (a, b) = (&crd["spec"], &theirs["spec"]);
        ensure!(
            a["group"] == b["group"] && a["scope"] == b["scope"],
            "{name}: group or scope"
        );
        ensure!(
            a["names"] == b["names"],
            "{name}: names {} vs Istio's {}",
            a["names"],
            b["names"]
        );
        let summary = |spec: &Value| -> BTreeMap<String, Value> {
            spec["versions"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|v| {
                    let columns: Vec<Value> = v["additionalPrinterColumns"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|c| serde_json::json!([c["name"], c["jsonPath"], c["type"]]))
                        .collect();
                    (
                        v["name"].as_str().unwrap_or_default().to_string(),
                        serde_json::json!({
                            "served": v["served"],
                            "storage": v["storage"],
                            "subresources": v["subresources"],
                            "columns": columns,
                        }),
                    )
                })
                .collect()
        };
        ensure!(
            summary(a) == summary(b),
            "{name}: versions {:?} vs Istio's {:?}",
            summary(a),
            summary(b)
        );
        for version in a["versions"].as_array().into_iter().flatten() {
            let theirs = b["versions"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|v| v["name"] == version["name"])
                .unwrap_or(&Value::Null);
            let fields = |v: &Value| -> BTreeMap<String, String> {
                api::schema::field_types(&v["schema"]["openAPIV3Schema"])
                    .into_iter()
                    .collect()
            };
            let (ours, istios) = (fields(version), fields(theirs));
            let paths: BTreeSet<&String> = ours.keys().chain(istios.keys()).collect();
            for path in paths {
                let (x, y) = (ours.get(path), istios.get(path));
                if x == y {
                    continue;
                }
                match SCHEMA_DIFFERENCES
                    .iter()
                    .find(|(crd, field, _)| *crd == name.as_str() && through(path, field))
                {
                    Some((crd, p, _)) => {
                        used.insert((*crd, *p));
                    }
                    None => mismatches.push(format!(
                        "{name} {}: {path}: ours {x:?}, Istio's {y:?}",
                        version["name"].as_str().unwrap_or_default()
                    )),
                }
            }
        }
        compared += 1;
    }
    ensure!(compared == 12, "{compared} CRDs compared");
    ensure!(
        mismatches.is_empty(),
        "{} schema differences:\n{}",
        mismatches.len(),
        mismatches.join("\n")
    );
    // Every allowed difference still is one.
    for (crd, path, _) in SCHEMA_DIFFERENCES {
        ensure!(
            used.contains(&(*crd, *path)),
            "SCHEMA_DIFFERENCES: {crd} {path} is no longer a difference: remove it"
        );
    }
    Ok(())
}
