//! The install settings as istioctl builds them: a profile (an IstioOperator
//! overlaid on `default`), then the user's IstioOperator files, then
//! `--set path=value` overrides, each layer merged into the one below.
//!
//! Maps merge key by key; the gateway lists merge by `name` (so that
//! `ingressGateways: [{name: istio-ingressgateway, enabled: true}]` over the
//! demo profile keeps demo's ports); every other list is replaced.

use anyhow::{Context, Result, bail};
use serde_json::{Map, Value};

/// The profiles, in istioctl's names, as IstioOperator YAML.
pub const PROFILES: &[(&str, &str)] = &[
    (
        "default",
        include_str!("../../../../manifests/profiles/default.yaml"),
    ),
    (
        "demo",
        include_str!("../../../../manifests/profiles/demo.yaml"),
    ),
    (
        "minimal",
        include_str!("../../../../manifests/profiles/minimal.yaml"),
    ),
    (
        "empty",
        include_str!("../../../../manifests/profiles/empty.yaml"),
    ),
];

/// The profile names, for messages.
pub fn profile_names() -> String {
    PROFILES
        .iter()
        .map(|(n, _)| *n)
        .collect::<Vec<_>>()
        .join(", ")
}

/// An IstioOperator document as the user gave it: its `spec`, and its name
/// (the install's owner label).
#[derive(Clone, Debug, Default)]
pub struct Operator {
    pub name: Option<String>,
    pub spec: Value,
}

/// Parses an IstioOperator file (one document). `source` names it in errors.
pub fn parse_operator(text: &str, source: &str) -> Result<Operator> {
    let doc: Value =
        serde_yaml_ng::from_str(text).with_context(|| format!("{source}: not valid YAML"))?;
    let Value::Object(mut doc) = doc else {
        bail!("{source}: expected an IstioOperator resource (a YAML mapping)");
    };
    match doc.get("kind").and_then(Value::as_str) {
        Some("IstioOperator") => {}
        Some(other) => bail!("{source}: kind is {other}, expected IstioOperator"),
        None => bail!("{source}: no `kind`; expected kind: IstioOperator"),
    }
    match doc.get("apiVersion").and_then(Value::as_str) {
        Some("install.istio.io/v1alpha1") => {}
        other => bail!(
            "{source}: apiVersion {}, expected install.istio.io/v1alpha1",
            other.unwrap_or("(none)")
        ),
    }
    let name = doc
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .map(str::to_string);
    let spec = doc.remove("spec").unwrap_or(Value::Object(Map::new()));
    if !spec.is_object() {
        bail!("{source}: spec must be a mapping");
    }
    Ok(Operator { name, spec })
}

/// The spec of profile `name` over `default`.
pub fn profile(name: &str) -> Result<Value> {
    let find = |n: &str| -> Result<Value> {
        let (_, text) = PROFILES.iter().find(|(p, _)| *p == n).with_context(|| {
            format!(
                "unknown profile {n:?}: the profiles are {}",
                profile_names()
            )
        })?;
        Ok(parse_operator(text, &format!("profile {n}"))?.spec)
    };
    let mut spec = find("default")?;
    if name != "default" {
        merge(&mut spec, find(name)?);
    }
    Ok(spec)
}

/// Merges `overlay` into `base`.
pub fn merge(base: &mut Value, overlay: Value) {
    merge_at(base, overlay, "");
}

fn merge_at(base: &mut Value, overlay: Value, key: &str) {
    match (base, overlay) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(existing) if !v.is_null() => merge_at(existing, v, &k),
                    _ => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (Value::Array(b), Value::Array(o))
            if key == "ingressGateways" || key == "egressGateways" =>
        {
            for item in o {
                let name = item.get("name").cloned();
                match b
                    .iter_mut()
                    .find(|x| name.is_some() && x.get("name") == name.as_ref())
                {
                    Some(existing) => merge_at(existing, item, ""),
                    None => b.push(item),
                }
            }
        }
        (b, o) => *b = o,
    }
}

/// Applies one `--set path=value` (istioctl's syntax: `values.global.hub=x`,
/// `meshConfig.accessLogFile=/dev/stdout`, `profile=demo`,
/// `components.ingressGateways[0].enabled=false`,
/// `components.ingressGateways[name:istio-ingressgateway].enabled=false`;
/// a leading `spec.` is allowed; `\.` is a dot inside a key).
pub fn set(spec: &mut Value, assignment: &str) -> Result<()> {
    let (path, raw) = assignment
        .split_once('=')
        .with_context(|| format!("--set {assignment}: expected path=value"))?;
    let path = path.strip_prefix("spec.").unwrap_or(path);
    if path.is_empty() {
        bail!("--set {assignment}: empty path");
    }
    let segments = split_path(path);
    let mut at = spec;
    for (i, seg) in segments.iter().enumerate() {
        let last = i + 1 == segments.len();
        let (key, selector) = match seg.split_once('[') {
            Some((k, rest)) => {
                let sel = rest
                    .strip_suffix(']')
                    .with_context(|| format!("--set {assignment}: unclosed [ in {seg:?}"))?;
                (k.to_string(), Some(sel.to_string()))
            }
            None => (seg.clone(), None),
        };
        if !at.is_object() {
            if at.is_null() {
                *at = Value::Object(Map::new());
            } else {
                bail!("--set {assignment}: {key:?} is under a value that is not a mapping");
            }
        }
        let Value::Object(map) = at else {
            bail!("--set {assignment}: {key:?} is under a value that is not a mapping");
        };
        match selector {
            None if last => {
                map.insert(key, parse_scalar(raw));
                return Ok(());
            }
            None => {
                at = map.entry(key).or_insert(Value::Object(Map::new()));
            }
            Some(sel) => {
                let list = map.entry(key.clone()).or_insert(Value::Array(Vec::new()));
                let Value::Array(items) = list else {
                    bail!("--set {assignment}: {key} is not a list");
                };
                let index = match sel.split_once(':') {
                    Some((k, v)) => match items
                        .iter()
                        .position(|x| x.get(k).and_then(Value::as_str) == Some(v))
                    {
                        Some(i) => i,
                        None => {
                            let mut m = Map::new();
                            m.insert(k.to_string(), Value::String(v.to_string()));
                            items.push(Value::Object(m));
                            items.len() - 1
                        }
                    },
                    None => {
                        let i: usize = sel.parse().with_context(|| {
                            format!("--set {assignment}: [{sel}] is neither an index nor key:value")
                        })?;
                        if i > items.len() {
                            bail!(
                                "--set {assignment}: index {i} is past the end of {key} ({} items)",
                                items.len()
                            );
                        }
                        if i == items.len() {
                            items.push(Value::Object(Map::new()));
                        }
                        i
                    }
                };
                if last {
                    items[index] = parse_scalar(raw);
                    return Ok(());
                }
                at = &mut items[index];
            }
        }
    }
    Ok(())
}

/// `a.b\.c.d` → `[a, b.c, d]`.
fn split_path(path: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut chars = path.chars().peekable();
    let mut in_brackets = false;
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&'.') => {
                chars.next();
                if let Some(last) = out.last_mut() {
                    last.push('.');
                }
            }
            '.' if !in_brackets => out.push(String::new()),
            c => {
                if c == '[' {
                    in_brackets = true;
                } else if c == ']' {
                    in_brackets = false;
                }
                if let Some(last) = out.last_mut() {
                    last.push(c);
                }
            }
        }
    }
    out
}

/// istioctl's reading of a `--set` value: true/false, integers, else a string.
fn parse_scalar(raw: &str) -> Value {
    match raw {
        "true" => Value::Bool(true),
        "false" => Value::Bool(false),
        _ => match raw.parse::<i64>() {
            // "007" and "+1" stay strings, as a tag or a version would.
            Ok(n) if !(raw.starts_with('+') || raw.starts_with('0') && raw.len() > 1) => {
                Value::from(n)
            }
            _ => Value::String(raw.to_string()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn demo_is_an_overlay_on_default() {
        let demo = profile("demo").unwrap();
        // Deep merge: demo's requests over default's limits.
        assert_eq!(
            demo["values"]["global"]["proxy"]["resources"],
            json!({"requests": {"cpu": "10m", "memory": "40Mi"}, "limits": {"cpu": "2000m", "memory": "1024Mi"}})
        );
        assert_eq!(
            demo["components"]["egressGateways"][0]["enabled"],
            json!(true)
        );
        assert_eq!(demo["meshConfig"]["accessLogFile"], json!("/dev/stdout"));
        assert_eq!(demo["values"]["pilot"]["autoscaleEnabled"], json!(false));
        // Untouched defaults stay.
        assert_eq!(demo["values"]["pilot"]["autoscaleMax"], json!(5));
        let minimal = profile("minimal").unwrap();
        assert_eq!(
            minimal["components"]["ingressGateways"][0]["enabled"],
            json!(false)
        );
        assert_eq!(minimal["components"]["pilot"]["enabled"], json!(true));
        let empty = profile("empty").unwrap();
        assert_eq!(empty["components"]["pilot"]["enabled"], json!(false));
        assert_eq!(empty["components"]["base"]["enabled"], json!(false));
    }

    /// The Helm chart's values are the default profile's spec (and the owner).
    #[test]
    fn chart_values_are_the_default_profile() {
        let text = include_str!("../../../../manifests/charts/trellis/values.yaml");
        let mut values: Value = serde_yaml_ng::from_str(text).unwrap();
        assert_eq!(values["ownerName"], json!("installed-state"));
        values.as_object_mut().unwrap().remove("ownerName");
        assert_eq!(values, profile("default").unwrap());
    }

    #[test]
    fn unknown_profile_names_the_known_ones() {
        let err = profile("production").unwrap_err().to_string();
        assert!(err.contains("\"production\""), "{err}");
        assert!(err.contains("default, demo, minimal, empty"), "{err}");
    }

    #[test]
    fn gateway_lists_merge_by_name() {
        let mut spec = profile("demo").unwrap();
        merge(
            &mut spec,
            json!({"components": {"ingressGateways": [
                {"name": "istio-ingressgateway", "enabled": true},
                {"name": "internal-gateway", "enabled": true}
            ]}}),
        );
        let gws = spec["components"]["ingressGateways"].as_array().unwrap();
        assert_eq!(gws.len(), 2);
        // demo's ports are kept for the gateway the user only enabled.
        assert_eq!(
            gws[0]["k8s"]["service"]["ports"].as_array().unwrap().len(),
            5
        );
        assert_eq!(gws[1]["name"], json!("internal-gateway"));
    }

    #[test]
    fn set_paths_as_istioctl() {
        let mut spec = profile("default").unwrap();
        set(&mut spec, "meshConfig.accessLogFile=/dev/stdout").unwrap();
        set(&mut spec, "spec.values.global.hub=registry.example/trellis").unwrap();
        set(&mut spec, "values.pilot.replicaCount=3").unwrap();
        set(&mut spec, "meshConfig.enableAutoMtls=true").unwrap();
        set(&mut spec, "components.egressGateways[0].enabled=true").unwrap();
        set(
            &mut spec,
            "components.ingressGateways[name:istio-ingressgateway].k8s.replicaCount=2",
        )
        .unwrap();
        set(
            &mut spec,
            "components.ingressGateways[name:other].enabled=true",
        )
        .unwrap();
        set(&mut spec, r"values.pilot.env.A\.B=x").unwrap();
        set(&mut spec, "values.global.tag=007").unwrap();
        assert_eq!(spec["meshConfig"]["accessLogFile"], json!("/dev/stdout"));
        assert_eq!(spec["meshConfig"]["enableAutoMtls"], json!(true));
        assert_eq!(
            spec["values"]["global"]["hub"],
            json!("registry.example/trellis")
        );
        assert_eq!(spec["values"]["pilot"]["replicaCount"], json!(3));
        assert_eq!(spec["values"]["global"]["tag"], json!("007"));
        assert_eq!(
            spec["components"]["egressGateways"][0]["enabled"],
            json!(true)
        );
        assert_eq!(
            spec["components"]["ingressGateways"][0]["k8s"]["replicaCount"],
            json!(2)
        );
        assert_eq!(
            spec["components"]["ingressGateways"][1]["name"],
            json!("other")
        );
        assert_eq!(spec["values"]["pilot"]["env"]["A.B"], json!("x"));
        // Errors name the assignment.
        let err = set(&mut spec, "values.global.hub.x=1")
            .unwrap_err()
            .to_string();
        assert!(err.contains("values.global.hub.x=1"), "{err}");
        assert!(set(&mut spec, "novalue").is_err());
        assert!(set(&mut spec, "components.ingressGateways[9].enabled=true").is_err());
    }

    #[test]
    fn operator_files_must_be_istio_operators() {
        let op = parse_operator(
            "apiVersion: install.istio.io/v1alpha1\nkind: IstioOperator\nmetadata: {name: x}\nspec: {profile: demo}\n",
            "f.yaml",
        )
        .unwrap();
        assert_eq!(op.name.as_deref(), Some("x"));
        assert_eq!(op.spec["profile"], json!("demo"));
        let err = parse_operator("apiVersion: v1\nkind: ConfigMap\n", "f.yaml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("f.yaml") && err.contains("ConfigMap"), "{err}");
    }
}
