//! `trellis install` on a real API server: each seed IstioOperator installs
//! what it says (the API server accepts every object), `uninstall --purge`
//! leaves nothing behind (every listable kind compared before and after),
//! objects that were there before are left alone, `check --pre` and `check`
//! report as `linkerd check` does, `verify-install` names what is not
//! ready; the manifests pass `kubectl apply --dry-run=server`; settings not
//! understood are warned about by path; and the Helm chart renders what
//! `trellis manifest generate` prints.
//!
//! The cluster has no nodes: Deployments never become available, which is
//! what `check` and `verify-install` must then say.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use anyhow::{Context, Result, ensure};
use e2e::kube::Kube;
use e2e::{bin, repo_root};
use serde_json::Value;

mod crds;

const SEEDS: &[&str] = &[
    "002-00-IstioOperator-istio-control-plane.yaml",
    "002-13-IstioOperator-x.yaml",
    "002-15-IstioOperator-x.yaml",
    "002-16-IstioOperator-x.yaml",
];

fn seed(name: &str) -> PathBuf {
    repo_root().join("tests/fixtures/install").join(name)
}

fn trellis(args: &[&str]) -> Output {
    Command::new(bin("trellis"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running trellis: {e}"))
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `trellis <args> --kubeconfig <kube's>`, which must succeed.
fn trellis_ok(kube: &Kube, args: &[&str]) -> Result<String> {
    let out = trellis(&with_kubeconfig(kube, args));
    ensure!(
        out.status.success(),
        "trellis {}:\n{}",
        args.join(" "),
        text(&out)
    );
    Ok(text(&out))
}

fn with_kubeconfig<'a>(kube: &'a Kube, args: &[&'a str]) -> Vec<&'a str> {
    let mut v = args.to_vec();
    v.push("--kubeconfig");
    v.push(kube.kubeconfig.to_str().unwrap());
    v
}

/// Every object of every listable kind but events, as `kind ns/name`.
fn snapshot(kube: &Kube) -> Result<BTreeSet<String>> {
    let kinds = kube.kubectl_ok(&["api-resources", "--verbs=list", "-o", "name"])?;
    let mut out = BTreeSet::new();
    for kind in kinds.lines().filter(|k| !k.starts_with("events")) {
        let list = kube.kubectl_ok(&[
            "get",
            kind,
            "-A",
            "--no-headers",
            "--ignore-not-found",
            "-o",
            "custom-columns=NS:.metadata.namespace,NAME:.metadata.name",
        ])?;
        for line in list.lines() {
            let mut cols = line.split_whitespace();
            if let (Some(ns), Some(name)) = (cols.next(), cols.next()) {
                out.insert(format!("{kind} {ns}/{name}"));
            }
        }
    }
    Ok(out)
}

fn kubectl_stdin(kube: &Kube, args: &[&str], input: &str) -> Result<Output> {
    let tools = Path::new(&kube_tools()?).join("kubectl");
    let mut child = Command::new(tools)
        .arg(format!("--kubeconfig={}", kube.kubeconfig.display()))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    child
        .stdin
        .take()
        .context("kubectl's stdin")?
        .write_all(input.as_bytes())?;
    Ok(child.wait_with_output()?)
}

fn kube_tools() -> Result<String> {
    let out = Command::new(repo_root().join("scripts/kube-tools.sh"))
        .arg("--where")
        .output()?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn json(kube: &Kube, args: &[&str]) -> Result<Value> {
    let mut a = args.to_vec();
    a.extend(["-o", "json"]);
    Ok(serde_json::from_str(&kube.kubectl_ok(&a)?)?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn install_each_seed_then_uninstall_leaves_nothing() -> Result<()> {
    let Some(kube) = Kube::start("install-seeds")? else {
        return Ok(());
    };

    // The manifests are accepted by the API server as they are: on the
    // fixture's cluster (Istio's CRDs and istio-system already there).
    for profile in ["default", "demo"] {
        let out = trellis(&["manifest", "generate", "--profile", profile]);
        ensure!(out.status.success(), "{}", text(&out));
        let manifest = String::from_utf8_lossy(&out.stdout).into_owned();
        let out = kubectl_stdin(&kube, &["apply", "--dry-run=server", "-f", "-"], &manifest)?;
        ensure!(out.status.success(), "dry run of {profile}: {}", text(&out));
        ensure!(
            String::from_utf8_lossy(&out.stdout)
                .contains("deployment.apps/istiod created (server dry run)"),
            "{}",
            text(&out)
        );
    }

    // Objects that were there before install are not its to take: the
    // fixture's istio-system and Istio's own CRDs survive install and
    // uninstall --purge.
    trellis_ok(&kube, &["install", "--profile", "minimal", "--no-wait"])?;
    let vs_crd = json(
        &kube,
        &["get", "crd", "virtualservices.networking.istio.io"],
    )?;
    ensure!(
        vs_crd["metadata"]["labels"]
            .get("trellis.io/install")
            .is_none(),
        "the existing CRD was taken over: {}",
        vs_crd["metadata"]["labels"]
    );
    trellis_ok(&kube, &["uninstall", "--purge"])?;
    kube.kubectl_ok(&["get", "crd", "virtualservices.networking.istio.io"])?;
    kube.kubectl_ok(&["get", "namespace", "istio-system"])?;
    let left = kube.kubectl_ok(&[
        "get",
        "deploy,svc,cm,sa",
        "-n",
        "istio-system",
        "-l",
        "trellis.io/install",
        "-o",
        "name",
    ])?;
    ensure!(left.trim().is_empty(), "left behind: {left}");

    // From here a bare cluster: no Istio CRDs, no istio-system.
    kube.kubectl_ok(&["delete", "crd", "-l", "chart=istio", "--wait"])?;
    kube.kubectl_ok(&[
        "delete",
        "namespace",
        "istio-system",
        "--wait",
        "--timeout=120s",
    ])?;

    let pre = trellis(&with_kubeconfig(&kube, &["check", "--pre"]));
    let pre_text = text(&pre);
    ensure!(pre.status.success(), "check --pre:\n{pre_text}");
    for line in [
        "kubernetes-api\n--------------\n√ can initialize the client\n√ can query the Kubernetes API",
        "√ is running the minimum Kubernetes API version",
        "√ control plane namespace istio-system does not already exist",
        "√ can create customresourcedefinitions",
        "√ can create mutatingwebhookconfigurations",
        "√ can create deployments",
        "Status check results are √",
    ] {
        ensure!(
            pre_text.contains(line),
            "check --pre lacks {line:?}:\n{pre_text}"
        );
    }
    // A user who may not create cluster-wide objects is told before install.
    kube.kubectl_ok(&["create", "serviceaccount", "not-an-admin"])?;
    let token = kube.kubectl_ok(&["create", "token", "not-an-admin"])?;
    let kubeconfig = std::fs::read_to_string(&kube.kubeconfig)?
        .replace("trellis-test-admin-token", token.trim());
    let limited = tempfile::NamedTempFile::new()?;
    std::fs::write(limited.path(), kubeconfig)?;
    let out = trellis(&[
        "check",
        "--pre",
        "--kubeconfig",
        limited.path().to_str().unwrap(),
    ]);
    let report = text(&out);
    ensure!(!out.status.success(), "{report}");
    ensure!(
        report.contains("× can create customresourcedefinitions\n    this user may not create customresourcedefinitions (RBAC)"),
        "{report}"
    );
    ensure!(report.contains("Status check results are ×"), "{report}");
    kube.kubectl_ok(&["delete", "serviceaccount", "not-an-admin"])?;

    // Before install, `check` fails and says why.
    let before = trellis(&with_kubeconfig(&kube, &["check"]));
    ensure!(!before.status.success(), "{}", text(&before));
    ensure!(
        text(&before).contains("× 'istio-system' namespace exists"),
        "{}",
        text(&before)
    );

    let baseline = snapshot(&kube)?;
    let started = std::time::Instant::now();
    for (i, name) in SEEDS.iter().enumerate() {
        eprintln!("[{:?}] installing {name}", started.elapsed());
        let file = seed(name).display().to_string();
        let out = trellis_ok(&kube, &["install", "-f", &file, "--no-wait", "-y"])?;
        ensure!(out.contains("✔ Installation complete"), "{out}");
        ensure!(
            !out.contains("warning:"),
            "a seed's setting was not understood:\n{out}"
        );
        check_seed(&kube, name)?;

        // No nodes: nothing becomes available, and both tools say so.
        let verify = trellis(&with_kubeconfig(&kube, &["verify-install", "-f", &file]));
        let verify_text = text(&verify);
        ensure!(!verify.status.success(), "{verify_text}");
        ensure!(verify_text.contains("✔ CustomResourceDefinition virtualservices.networking.istio.io checked successfully"), "{verify_text}");
        ensure!(
            verify_text.contains("✘ Deployment istiod.istio-system: 0/"),
            "{verify_text}"
        );

        if i == 0 {
            check_after_install(&kube)?;
            // Installing again changes nothing and fails nothing.
            trellis_ok(&kube, &["install", "-f", &file, "--no-wait"])?;
        }

        eprintln!("[{:?}] uninstalling {name}", started.elapsed());
        let out = trellis_ok(&kube, &["uninstall", "--purge"])?;
        ensure!(out.contains("✔ Uninstall complete"), "{out}");
        eprintln!("[{:?}] uninstalled {name}", started.elapsed());
        let after = snapshot(&kube)?;
        let left: Vec<_> = after.difference(&baseline).collect();
        ensure!(
            left.is_empty(),
            "after uninstall of {name}, left behind: {left:?}"
        );
        let gone: Vec<_> = baseline.difference(&after).collect();
        ensure!(
            gone.is_empty(),
            "uninstall of {name} removed what was there before: {gone:?}"
        );
    }

    // A re-install with fewer components removes what is no longer wanted;
    // without --purge the CRDs and the namespace stay.
    trellis_ok(&kube, &["install", "--profile", "demo", "--no-wait"])?;
    kube.kubectl_ok(&["get", "deploy", "istio-egressgateway", "-n", "istio-system"])?;
    let out = trellis_ok(&kube, &["install", "--profile", "default", "--no-wait"])?;
    ensure!(
        out.contains("Deployment istio-egressgateway removed"),
        "{out}"
    );
    let egress = kube.kubectl_ok(&["get", "deploy", "-n", "istio-system", "-o", "name"])?;
    ensure!(!egress.contains("egressgateway"), "{egress}");
    let out = trellis_ok(&kube, &["uninstall"])?;
    ensure!(
        out.contains("kept (they hold your Istio resources; --purge deletes them)"),
        "{out}"
    );
    kube.kubectl_ok(&["get", "crd", "virtualservices.networking.istio.io"])?;
    let left = kube.kubectl_ok(&[
        "get",
        "deploy,svc,cm,sa,mutatingwebhookconfigurations,clusterroles",
        "-A",
        "-l",
        "trellis.io/install",
        "-o",
        "name",
    ])?;
    ensure!(left.trim().is_empty(), "left behind: {left}");
    Ok(())
}

/// What each seed asked for is what the cluster has.
fn check_seed(kube: &Kube, name: &str) -> Result<()> {
    let istiod = json(kube, &["get", "deploy", "istiod", "-n", "istio-system"])?;
    let container = &istiod["spec"]["template"]["spec"]["containers"][0];
    let mesh: Value = {
        let cm = json(kube, &["get", "configmap", "istio", "-n", "istio-system"])?;
        serde_yaml_ng::from_str(cm["data"]["mesh"].as_str().unwrap_or_default())?
    };
    let injector_values: Value = {
        let cm = json(
            kube,
            &[
                "get",
                "configmap",
                "istio-sidecar-injector",
                "-n",
                "istio-system",
            ],
        )?;
        serde_json::from_str(cm["data"]["values"].as_str().unwrap_or_default())?
    };
    match name {
        "002-00-IstioOperator-istio-control-plane.yaml" => {
            // demo: both gateways, no autoscaling, access logs, the seed's proxy resources.
            kube.kubectl_ok(&[
                "get",
                "deploy",
                "istio-egressgateway",
                "istio-ingressgateway",
                "-n",
                "istio-system",
            ])?;
            let svc = json(
                kube,
                &["get", "svc", "istio-ingressgateway", "-n", "istio-system"],
            )?;
            ensure!(
                svc["spec"]["selector"]["istio"] == "ingressgateway",
                "{svc}"
            );
            ensure!(
                svc["spec"]["ports"].as_array().map(Vec::len) == Some(5),
                "{}",
                svc["spec"]["ports"]
            );
            let egress = json(
                kube,
                &["get", "svc", "istio-egressgateway", "-n", "istio-system"],
            )?;
            ensure!(
                egress["spec"]["selector"]["istio"] == "egressgateway",
                "{egress}"
            );
            let hpas = kube.kubectl_ok(&["get", "hpa", "-n", "istio-system", "-o", "name"])?;
            ensure!(hpas.trim().is_empty(), "demo autoscales nothing: {hpas}");
            ensure!(mesh["accessLogFile"] == "/dev/stdout", "{mesh}");
            ensure!(
                injector_values["global"]["proxy"]["resources"]["limits"]["memory"] == "256Mi",
                "{injector_values}"
            );
            let labels = &istiod["metadata"]["labels"];
            ensure!(
                labels["trellis.io/install"] == "istio-control-plane",
                "{labels}"
            );
        }
        "002-13-IstioOperator-x.yaml" => {
            // The API server writes quantities in canonical form (2048Mi: 2Gi, 1000m: 1).
            let memory = &container["resources"]["requests"]["memory"];
            ensure!(
                *memory == "2048Mi" || *memory == "2Gi",
                "{}",
                container["resources"]
            );
            let cpu = &container["resources"]["limits"]["cpu"];
            ensure!(*cpu == "1" || *cpu == "1000m", "{}", container["resources"]);
            // default profile: the ingress gateway and no egress gateway.
            kube.kubectl_ok(&[
                "get",
                "deploy",
                "istio-ingressgateway",
                "-n",
                "istio-system",
            ])?;
            let egress =
                kube.kubectl(&["get", "deploy", "istio-egressgateway", "-n", "istio-system"]);
            ensure!(
                !egress.status.success(),
                "the default profile has no egress gateway"
            );
        }
        "002-15-IstioOperator-x.yaml" => {
            ensure!(mesh["defaultConfig"]["concurrency"] == 2, "{mesh}");
            ensure!(
                mesh["defaultConfig"]["proxyMetadata"]["ISTIO_META_HTTP10"] == "1",
                "{mesh}"
            );
        }
        "002-16-IstioOperator-x.yaml" => {
            let hpa = json(kube, &["get", "hpa", "istiod", "-n", "istio-system"])?;
            let target = &hpa["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"];
            ensure!(*target == 80, "{hpa}");
            ensure!(
                injector_values["global"]["proxy"]["resources"]["requests"]["cpu"] == "100m",
                "{injector_values}"
            );
        }
        other => anyhow::bail!("no expectations for {other}"),
    }
    Ok(())
}

/// `check` after install: everything is there, the control plane cannot
/// be ready (no nodes), the webhooks have no caBundle until trellisd's
/// leader sets one, and the injection webhook fails closed.
fn check_after_install(kube: &Kube) -> Result<()> {
    let out = trellis(&with_kubeconfig(kube, &["check"]));
    let report = text(&out);
    ensure!(!out.status.success(), "{report}");
    for line in [
        "√ 'istio-system' namespace exists",
        "√ Istio CRDs are installed",
        "× control plane pods are ready",
        "√ injection webhook istio-sidecar-injector exists",
        "× injection webhook's caBundle is set",
        "√ injection webhook fails closed (failurePolicy: Fail)",
        "√ validation webhook istio-validator-istio-system exists",
        "× validation webhook's caBundle is set",
        "Status check results are ×",
    ] {
        ensure!(report.contains(line), "check lacks {line:?}:\n{report}");
    }
    // What trellisd's leader does: a caBundle on every webhook.
    let bundle = "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCg==";
    let mwc = json(
        kube,
        &[
            "get",
            "mutatingwebhookconfiguration",
            "istio-sidecar-injector",
        ],
    )?;
    let patch: Vec<Value> = (0..mwc["webhooks"].as_array().map(Vec::len).unwrap_or(0))
        .map(|i| serde_json::json!({"op": "add", "path": format!("/webhooks/{i}/clientConfig/caBundle"), "value": bundle}))
        .collect();
    kube.kubectl_ok(&[
        "patch",
        "mutatingwebhookconfiguration",
        "istio-sidecar-injector",
        "--type=json",
        "-p",
        &serde_json::to_string(&patch)?,
    ])?;
    // And a failurePolicy someone relaxed is reported.
    kube.kubectl_ok(&[
        "patch",
        "mutatingwebhookconfiguration",
        "istio-sidecar-injector",
        "--type=json",
        "-p",
        r#"[{"op": "replace", "path": "/webhooks/2/failurePolicy", "value": "Ignore"}]"#,
    ])?;
    let report = text(&trellis(&with_kubeconfig(kube, &["check"])));
    ensure!(
        report.contains("√ injection webhook's caBundle is set"),
        "{report}"
    );
    ensure!(
        report.contains("‼ injection webhook fails closed (failurePolicy: Fail)\n    namespace.sidecar-injector.istio.io ignore failures"),
        "{report}"
    );
    Ok(())
}

#[test]
fn settings_not_understood_are_reported() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("op.yaml");
    std::fs::write(
        &file,
        "apiVersion: install.istio.io/v1alpha1\nkind: IstioOperator\nspec:\n  profile: demo\n  components:\n    cni: {enabled: true}\n    pilot:\n      k8s:\n        strategy: {type: Recreate}\n  values:\n    kiali: {enabled: true}\n  meshConfig:\n    enableTracing: true\n",
    )?;
    let out = trellis(&[
        "manifest",
        "generate",
        "-f",
        file.to_str().unwrap(),
        "--set",
        "values.global.logAsJson=true",
    ]);
    ensure!(out.status.success(), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for w in [
        "warning: spec.components.cni: not an install setting Trellis understands; ignored",
        "warning: spec.components.pilot.k8s.strategy: not an install setting Trellis understands; ignored",
        "warning: spec.values.kiali: not an install setting Trellis understands; ignored",
        "warning: spec.values.global.logAsJson: not an install setting Trellis understands; ignored",
        "warning: spec.meshConfig.enableTracing: written to the istio ConfigMap, but Trellis does not act on it",
    ] {
        ensure!(stderr.contains(w), "{w:?} not in:\n{stderr}");
    }
    // The manifests still come out (warnings go to stderr only).
    ensure!(String::from_utf8_lossy(&out.stdout).contains("kind: Deployment"));

    // A profile istioctl does not have (as `--set profile=production` in a seed text).
    let out = trellis(&["manifest", "generate", "--set", "profile=production"]);
    ensure!(!out.status.success());
    ensure!(
        text(&out).contains(
            "unknown profile \"production\": the profiles are default, demo, minimal, empty"
        ),
        "{}",
        text(&out)
    );
    // A wrong type names the field.
    std::fs::write(
        &file,
        "apiVersion: install.istio.io/v1alpha1\nkind: IstioOperator\nspec:\n  components:\n    pilot:\n      k8s:\n        replicaCount: two\n",
    )?;
    let out = trellis(&["manifest", "generate", "-f", file.to_str().unwrap()]);
    ensure!(!out.status.success());
    ensure!(
        text(&out).contains("spec.components.pilot.k8s.replicaCount"),
        "{}",
        text(&out)
    );
    Ok(())
}

/// Objects keyed by kind, namespace and name; the ConfigMaps' embedded
/// YAML and JSON parsed, so that formatting does not count.
fn objects(yaml: &str) -> Result<BTreeMap<(String, String, String), Value>> {
    let mut out = BTreeMap::new();
    for doc in serde_yaml_ng::Deserializer::from_str(yaml) {
        let mut v: Value = serde::Deserialize::deserialize(doc)?;
        if v.is_null() {
            continue;
        }
        if v["kind"] == "ConfigMap" {
            if let Some(mesh) = v["data"]["mesh"].as_str() {
                v["data"]["mesh"] = serde_yaml_ng::from_str(mesh)?;
            }
            if let Some(values) = v["data"]["values"].as_str() {
                v["data"]["values"] = serde_json::from_str(values)?;
            }
        }
        let s = |p: &str| {
            v.pointer(p)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        out.insert(
            (s("/kind"), s("/metadata/namespace"), s("/metadata/name")),
            v,
        );
    }
    Ok(out)
}

#[test]
fn helm_chart_renders_what_manifest_generate_prints() -> Result<()> {
    let helm = Path::new(&kube_tools()?).join("helm");
    if !helm.is_file() {
        ensure!(
            std::env::var_os("CI").is_none(),
            "helm is not built: run scripts/kube-tools.sh"
        );
        eprintln!("SKIPPED: helm is not built (scripts/kube-tools.sh builds it)");
        return Ok(());
    }
    let chart = repo_root().join("manifests/charts/trellis");
    let dir = tempfile::tempdir()?;
    // (seed, --set for both): the default profile, and seeds that keep to
    // settings Helm merges as istioctl does (maps, not gateway lists).
    let cases: &[(Option<&str>, &[&str])] = &[
        (None, &[]),
        (
            None,
            &[
                "values.global.hub=registry.example/mesh",
                "values.pilot.autoscaleEnabled=false",
                "meshConfig.accessLogFile=/dev/stdout",
            ],
        ),
        // Helm replaces a list set by index: the name is given again.
        (
            Some("002-13-IstioOperator-x.yaml"),
            &[
                "components.egressGateways[0].name=istio-egressgateway",
                "components.egressGateways[0].enabled=true",
            ],
        ),
        (Some("002-15-IstioOperator-x.yaml"), &[]),
        (
            Some("002-16-IstioOperator-x.yaml"),
            &["values.global.tag=9.9.9"],
        ),
    ];
    for (seed_name, sets) in cases {
        let mut ours = vec!["manifest".to_string(), "generate".to_string()];
        let mut theirs = vec!["template".to_string(), chart.display().to_string()];
        if let Some(name) = seed_name {
            ours.extend(["-f".into(), seed(name).display().to_string()]);
            // Helm takes the IstioOperator's spec as values.
            let op: Value = serde_yaml_ng::from_str(&std::fs::read_to_string(seed(name))?)?;
            let values = dir.path().join(name);
            std::fs::write(&values, serde_yaml_ng::to_string(&op["spec"])?)?;
            theirs.extend(["-f".into(), values.display().to_string()]);
        }
        for s in *sets {
            ours.extend(["--set".into(), s.to_string()]);
            theirs.extend(["--set".into(), s.to_string()]);
        }
        let ours_out = Command::new(bin("trellis")).args(&ours).output()?;
        ensure!(ours_out.status.success(), "{}", text(&ours_out));
        let theirs_out = Command::new(&helm).args(&theirs).output()?;
        ensure!(
            theirs_out.status.success(),
            "helm {}: {}",
            theirs.join(" "),
            text(&theirs_out)
        );
        let a = objects(&String::from_utf8_lossy(&ours_out.stdout))?;
        let b = objects(&String::from_utf8_lossy(&theirs_out.stdout))?;
        let only_ours: Vec<_> = a.keys().filter(|k| !b.contains_key(*k)).collect();
        let only_helm: Vec<_> = b.keys().filter(|k| !a.contains_key(*k)).collect();
        ensure!(
            only_ours.is_empty() && only_helm.is_empty(),
            "{seed_name:?} {sets:?}: only in trellis: {only_ours:?}; only in helm: {only_helm:?}"
        );
        for (key, ours) in &a {
            ensure!(
                Some(ours) == b.get(key),
                "{seed_name:?} {sets:?}: {key:?} differs:\ntrellis: {ours}\nhelm:    {}",
                b[key]
            );
        }
        ensure!(a.len() > 20, "{} objects", a.len());
    }
    Ok(())
}
