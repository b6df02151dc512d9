//! `trellis kube-inject -f FILE`: the sidecar added to Kubernetes workloads
//! offline, as `istioctl kube-inject` does — the pod templates of
//! Deployments, StatefulSets, DaemonSets, ReplicaSets, Jobs and CronJobs,
//! and bare Pods, in multi-document YAML (and `List`s); every other
//! document passes through unchanged. The injection is the webhook's
//! ([`control::inject`]); the template is patched in place, so fields this
//! tool does not know survive.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Parser;
use control::inject::{self, Decision, Scope, Workload};
use k8s_openapi::api::core::v1::Pod;
use serde::Deserialize;
use serde_json::Value;

#[derive(Parser, Debug)]
pub struct Args {
    /// The Kubernetes YAML to inject (`-` for standard input).
    #[arg(short = 'f', long = "filename")]
    file: PathBuf,
    /// Where to write the result (default: standard output).
    #[arg(short = 'o', long = "output")]
    output: Option<PathBuf>,
    /// MeshConfig YAML (trustDomain, defaultConfig.proxyMetadata, defaultConfig.concurrency).
    #[arg(long = "meshConfigFile")]
    mesh_config_file: Option<PathBuf>,
    /// The injector's settings in Istio's `values` shape (image, resources, revision).
    #[arg(long = "valuesFile")]
    values_file: Option<PathBuf>,
    /// Add the sidecar as a native sidecar (Kubernetes 1.29 and later);
    /// `false`: as a plain container.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    native_sidecars: bool,
    /// Where the injected sidecars reach the control plane.
    #[arg(long, default_value = "https://istiod.istio-system.svc:15012")]
    discovery_address: String,
}

pub fn run(args: &Args) -> Result<()> {
    let text = if args.file == Path::new("-") {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("reading standard input")?;
        s
    } else {
        std::fs::read_to_string(&args.file)
            .with_context(|| format!("reading {}", args.file.display()))?
    };
    let mut config = match &args.values_file {
        Some(path) => {
            let values: Value = serde_yaml_ng::from_str(
                &std::fs::read_to_string(path)
                    .with_context(|| format!("reading {}", path.display()))?,
            )
            .with_context(|| format!("{}", path.display()))?;
            inject::Config::from_values(&values)
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?
        }
        None => inject::Config::default(),
    };
    if let Some(path) = &args.mesh_config_file {
        config.mesh = serde_yaml_ng::from_str(
            &std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?,
        )
        .with_context(|| format!("{}", path.display()))?;
    }
    config.native_sidecar = args.native_sidecars;
    config.discovery_address = args.discovery_address.clone();
    let source = args.file.display().to_string();
    let (out, warnings) = inject_documents(&source, &text, &config)?;
    for w in warnings {
        eprintln!("warning: {w}");
    }
    match &args.output {
        Some(path) => {
            std::fs::write(path, out).with_context(|| format!("writing {}", path.display()))?
        }
        None => crate::commands::print(&out)?,
    }
    Ok(())
}

/// Every document of `text`, injected where it holds a pod template, as
/// multi-document YAML; and the warnings for what is asked but not done.
pub fn inject_documents(
    source: &str,
    text: &str,
    config: &inject::Config,
) -> Result<(String, Vec<String>)> {
    let mut out = String::new();
    let mut warnings = Vec::new();
    for (index, de) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        let doc = index + 1;
        let mut value = Value::deserialize(de)
            .with_context(|| format!("{source}: document {doc}: not YAML"))?;
        if value.is_null() {
            continue;
        }
        inject_object(&mut value, config, &mut warnings)
            .with_context(|| format!("{source}: document {doc}"))?;
        out.push_str("---\n");
        out.push_str(&serde_yaml_ng::to_string(&value)?);
    }
    Ok((out, warnings))
}

fn inject_object(
    value: &mut Value,
    config: &inject::Config,
    warnings: &mut Vec<String>,
) -> Result<()> {
    let kind = value["kind"].as_str().unwrap_or_default().to_string();
    let name = value["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let workload = Workload {
        name: name.clone(),
        api_version: value["apiVersion"].as_str().unwrap_or_default().into(),
        kind: kind.clone(),
    };
    let namespace = value["metadata"]["namespace"].as_str().map(String::from);
    let what = format!("{kind} {name}");
    let template = match kind.as_str() {
        "List" => {
            for item in value["items"].as_array_mut().into_iter().flatten() {
                inject_object(item, config, warnings)?;
            }
            return Ok(());
        }
        "Pod" => {
            return inject_template(value, namespace, None, config, warnings)
                .with_context(|| what.clone());
        }
        "Deployment"
        | "StatefulSet"
        | "DaemonSet"
        | "ReplicaSet"
        | "Job"
        | "ReplicationController" => value.pointer_mut("/spec/template"),
        "CronJob" => value.pointer_mut("/spec/jobTemplate/spec/template"),
        _ => return Ok(()),
    };
    let Some(template) = template else {
        bail!("{what}: no pod template");
    };
    inject_template(template, namespace, Some(&workload), config, warnings).with_context(|| what)
}

/// Injects a pod or pod template (`metadata` + `spec`) in place.
fn inject_template(
    template: &mut Value,
    namespace: Option<String>,
    workload: Option<&Workload>,
    config: &inject::Config,
    warnings: &mut Vec<String>,
) -> Result<()> {
    let mut pod: Pod = serde_json::from_value(serde_json::json!({
        "metadata": template.get("metadata").cloned().unwrap_or(Value::Null),
        "spec": template.get("spec").cloned().unwrap_or(Value::Null),
    }))
    .context("not a pod spec")?;
    if pod.metadata.namespace.is_none() {
        pod.metadata.namespace = namespace;
    }
    match inject::decide(&pod, Scope::Chosen, config.policy, &config.revision) {
        Decision::Skip(why) => {
            warnings.push(format!("not injected: {why}"));
            return Ok(());
        }
        Decision::Inject => {}
    }
    let injected = inject::inject(&pod, config, workload)?;
    warnings.extend(injected.warnings);
    // The change as a patch of the typed pod, applied to the document as written.
    let patch = inject::patch(&pod, &injected.pod)?;
    if template.get("metadata").is_none_or(Value::is_null) {
        template["metadata"] = serde_json::json!({});
    }
    json_patch::patch(template, &patch).context("applying the sidecar")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn injects_templates_and_passes_the_rest() {
        let text = r#"
apiVersion: v1
kind: Service
metadata: {name: reviews}
spec: {ports: [{port: 9080, name: http}], selector: {app: reviews}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: reviews-v1}
spec:
  selector: {matchLabels: {app: reviews}}
  template:
    metadata: {labels: {app: reviews, version: v1}}
    spec:
      futureField: kept
      containers: [{name: reviews, image: reviews:1}]
---
apiVersion: batch/v1
kind: CronJob
metadata: {name: nightly}
spec:
  schedule: "@daily"
  jobTemplate:
    spec:
      template:
        metadata: {annotations: {sidecar.istio.io/inject: "false"}}
        spec: {restartPolicy: Never, containers: [{name: job, image: job:1}]}
---
apiVersion: v1
kind: Pod
metadata: {name: lone}
spec: {containers: [{name: app, image: app:1}]}
"#;
        let (out, warnings) =
            inject_documents("test.yaml", text, &inject::Config::default()).unwrap();
        let docs: Vec<Value> = serde_yaml_ng::Deserializer::from_str(&out)
            .map(|d| Value::deserialize(d).unwrap())
            .collect();
        assert_eq!(docs.len(), 4);
        assert!(docs[0]["spec"].get("template").is_none());
        assert_eq!(docs[0]["spec"]["ports"][0]["port"], 9080);
        let t = &docs[1]["spec"]["template"];
        assert_eq!(t["spec"]["futureField"], "kept");
        assert_eq!(t["spec"]["initContainers"][1]["name"], "istio-proxy");
        assert!(t["metadata"].get("namespace").is_none());
        assert!(t["metadata"]["annotations"]["sidecar.istio.io/status"].is_string());
        let env = t["spec"]["initContainers"][1]["env"].as_array().unwrap();
        assert!(
            env.iter()
                .any(|e| e["name"] == "ISTIO_META_WORKLOAD_NAME" && e["value"] == "reviews-v1")
        );
        assert!(
            docs[2]["spec"]["jobTemplate"]["spec"]["template"]["spec"]
                .get("initContainers")
                .is_none()
        );
        assert_eq!(docs[3]["spec"]["initContainers"][0]["name"], "istio-init");
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        // Injecting the output again changes nothing.
        let (again, _) = inject_documents("out.yaml", &out, &inject::Config::default()).unwrap();
        assert_eq!(again, out);
    }

    #[test]
    fn bad_annotation_names_the_document() {
        let text = "apiVersion: v1\nkind: Pod\nmetadata: {name: p, annotations: {sidecar.istio.io/proxyCPU: lots}}\nspec: {containers: [{name: a, image: a}]}\n";
        let err = inject_documents("pods.yaml", text, &inject::Config::default()).unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("pods.yaml: document 1"), "{msg}");
        assert!(msg.contains("Pod p"), "{msg}");
        assert!(msg.contains("sidecar.istio.io/proxyCPU"), "{msg}");
    }
}
