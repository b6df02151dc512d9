//! The install against the cluster: `verify-install` (every object
//! there, every Deployment available) and `check` (as `linkerd check`,
//! before and after install).

use std::fmt::Write as _;

use anyhow::Result;
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use kube::api::{Api, PostParams};
use serde_json::Value;

use super::Manifest;
use super::control_plane::{INJECTOR_WEBHOOK, NAME as ISTIOD, validator_name};
use super::kinds::{
    CRD, DEPLOYMENT, KINDS, MUTATING, VALIDATING, api, api_for, availability, describe, str_at,
};

/// The oldest Kubernetes the manifests are meant for (autoscaling/v2,
/// policy/v1, native sidecars), as Istio's support window starts.
const MIN_KUBERNETES: (u32, u32) = (1, 28);

/// Every object of `manifest` exists, every Deployment is available, as
/// `istioctl verify-install`. Returns the report and whether all passed.
pub async fn verify(client: &kube::Client, manifest: &Manifest) -> Result<(String, bool)> {
    let mut out = String::new();
    let mut failed = 0;
    for object in &manifest.objects {
        let (api, name) = api_for(client, object)?;
        let what = describe(object);
        match api.get_opt(&name).await? {
            None => {
                failed += 1;
                writeln!(out, "✘ {what}: not found")?;
            }
            Some(found) if object["kind"] == "Deployment" => {
                let (available, wanted) = availability(&found);
                if available >= wanted.max(1) {
                    writeln!(out, "✔ {what} checked successfully")?;
                } else {
                    failed += 1;
                    writeln!(out, "✘ {what}: {available}/{wanted} replicas available")?;
                }
            }
            Some(_) => writeln!(out, "✔ {what} checked successfully")?,
        }
    }
    if failed == 0 {
        writeln!(
            out,
            "✔ Trellis is installed and verified successfully ({} objects)",
            manifest.objects.len()
        )?;
    } else {
        writeln!(
            out,
            "✘ {failed} of {} objects failed verification",
            manifest.objects.len()
        )?;
    }
    Ok((out, failed == 0))
}

/// One line of `check`'s report.
enum Outcome {
    Pass,
    Fail(String),
    Warn(String),
}

struct Report {
    text: String,
    failed: bool,
    section: Option<&'static str>,
}

impl Report {
    fn line(&mut self, section: &'static str, what: &str, outcome: Outcome) {
        if self.section != Some(section) {
            if self.section.is_some() {
                self.text.push('\n');
            }
            let _ = writeln!(self.text, "{section}\n{}", "-".repeat(section.len()));
            self.section = Some(section);
        }
        match outcome {
            Outcome::Pass => {
                let _ = writeln!(self.text, "√ {what}");
            }
            Outcome::Warn(why) => {
                let _ = writeln!(self.text, "‼ {what}\n    {why}");
            }
            Outcome::Fail(why) => {
                self.failed = true;
                let _ = writeln!(self.text, "× {what}\n    {why}");
            }
        }
    }
}

/// `trellis check [--pre]`, as `linkerd check`: the cluster can be reached
/// and is recent enough; before install (`pre`) that this user may create
/// what the install creates; after, that the CRDs, the control plane and
/// the webhooks are there and ready. Returns the report and whether every
/// check passed.
pub async fn check(cluster: &crate::cluster::Cluster, pre: bool) -> (String, bool) {
    let namespace = cluster.istio_namespace.as_str();
    let mut r = Report {
        text: String::new(),
        failed: false,
        section: None,
    };
    let client = match cluster.connect().await.map(|(client, _)| client) {
        Ok(c) => {
            r.line("kubernetes-api", "can initialize the client", Outcome::Pass);
            c
        }
        Err(e) => {
            r.line(
                "kubernetes-api",
                "can initialize the client",
                Outcome::Fail(format!("{e:#}")),
            );
            return finish(r);
        }
    };
    let version = match client.apiserver_version().await {
        Ok(v) => {
            r.line(
                "kubernetes-api",
                "can query the Kubernetes API",
                Outcome::Pass,
            );
            v
        }
        Err(e) => {
            r.line(
                "kubernetes-api",
                "can query the Kubernetes API",
                Outcome::Fail(e.to_string()),
            );
            return finish(r);
        }
    };
    let major: u32 = version.major.trim_end_matches('+').parse().unwrap_or(0);
    let minor: u32 = version.minor.trim_end_matches('+').parse().unwrap_or(0);
    let what = format!(
        "is running the minimum Kubernetes API version ({}.{})",
        MIN_KUBERNETES.0, MIN_KUBERNETES.1
    );
    if (major, minor) >= MIN_KUBERNETES {
        r.line("kubernetes-version", &what, Outcome::Pass);
    } else {
        r.line(
            "kubernetes-version",
            &what,
            Outcome::Fail(format!("the API server is {}", version.git_version)),
        );
    }
    if pre {
        pre_checks(&client, namespace, &mut r).await;
    } else {
        post_checks(&client, namespace, &mut r).await;
    }
    finish(r)
}

fn finish(mut r: Report) -> (String, bool) {
    let _ = writeln!(
        r.text,
        "\nStatus check results are {}",
        if r.failed { "×" } else { "√" }
    );
    (r.text, !r.failed)
}

async fn can(
    client: &kube::Client,
    verb: &str,
    group: &str,
    resource: &str,
    namespace: Option<&str>,
) -> Result<bool> {
    let review = SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                verb: Some(verb.into()),
                group: Some(group.into()),
                resource: Some(resource.into()),
                namespace: namespace.map(str::to_string),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let answer = Api::<SelfSubjectAccessReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await?;
    Ok(answer.status.is_some_and(|s| s.allowed))
}

async fn pre_checks(client: &kube::Client, namespace: &str, r: &mut Report) {
    const SECTION: &str = "pre-kubernetes-setup";
    let ns_api = Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone());
    match ns_api.get_opt(namespace).await {
        Ok(None) => r.line(
            SECTION,
            &format!("control plane namespace {namespace} does not already exist"),
            Outcome::Pass,
        ),
        Ok(Some(_)) => r.line(
            SECTION,
            &format!("control plane namespace {namespace} does not already exist"),
            Outcome::Warn(format!(
                "{namespace} exists: the install uses it as it is, and uninstall --purge keeps it"
            )),
        ),
        Err(e) => r.line(SECTION, "can read namespaces", Outcome::Fail(e.to_string())),
    }
    for info in KINDS {
        let group = info
            .api_version
            .rsplit_once('/')
            .map(|(g, _)| g)
            .unwrap_or("");
        let ns = info.namespaced.then_some(namespace);
        let what = format!("can create {}", info.plural);
        match can(client, "create", group, info.plural, ns).await {
            Ok(true) => r.line(SECTION, &what, Outcome::Pass),
            Ok(false) => r.line(
                SECTION,
                &what,
                Outcome::Fail(format!(
                    "this user may not create {}{} (RBAC)",
                    info.plural,
                    ns.map(|n| format!(" in {n}")).unwrap_or_default()
                )),
            ),
            Err(e) => r.line(
                SECTION,
                &what,
                Outcome::Fail(format!("access review failed: {e}")),
            ),
        }
    }
}

async fn post_checks(client: &kube::Client, namespace: &str, r: &mut Report) {
    let ns_api = Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone());
    match ns_api.get_opt(namespace).await {
        Ok(Some(_)) => r.line(
            "trellis-existence",
            &format!("'{namespace}' namespace exists"),
            Outcome::Pass,
        ),
        Ok(None) => r.line(
            "trellis-existence",
            &format!("'{namespace}' namespace exists"),
            Outcome::Fail("run `trellis install`".into()),
        ),
        Err(e) => r.line(
            "trellis-existence",
            "can read namespaces",
            Outcome::Fail(e.to_string()),
        ),
    }

    // CRDs: every Istio kind Trellis serves, established.
    let crd_api = api(client, &KINDS[CRD], None);
    let mut missing = Vec::new();
    for kind in api::Kind::ALL.iter().filter(|k| k.is_istio()) {
        let name = format!("{}.{}", kind.plural(), kind.api_group());
        match crd_api.get_opt(&name).await {
            Ok(Some(crd)) => {
                let established = crd.data["status"]["conditions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|c| c["type"] == "Established" && c["status"] == "True");
                if !established {
                    missing.push(format!("{name} (not established)"));
                }
            }
            Ok(None) => missing.push(name),
            Err(e) => missing.push(format!("{name} ({e})")),
        }
    }
    if missing.is_empty() {
        r.line(
            "trellis-existence",
            "Istio CRDs are installed",
            Outcome::Pass,
        );
    } else {
        r.line(
            "trellis-existence",
            "Istio CRDs are installed",
            Outcome::Fail(format!("missing: {}", missing.join(", "))),
        );
    }

    // The control plane.
    let deployments = api(client, &KINDS[DEPLOYMENT], Some(namespace));
    match deployments.get_opt(ISTIOD).await {
        Ok(Some(d)) => {
            let (available, wanted) = availability(&d);
            let what = "control plane pods are ready";
            if available >= wanted.max(1) {
                r.line("trellis-control-plane", what, Outcome::Pass);
            } else {
                r.line(
                    "trellis-control-plane",
                    what,
                    Outcome::Fail(format!(
                        "deployment {ISTIOD}: {available}/{wanted} replicas available; `kubectl -n {namespace} describe deployment {ISTIOD}`"
                    )),
                );
            }
        }
        Ok(None) => r.line(
            "trellis-control-plane",
            "control plane Deployment exists",
            Outcome::Fail(format!("no deployment {ISTIOD} in {namespace}")),
        ),
        Err(e) => r.line(
            "trellis-control-plane",
            "can read deployments",
            Outcome::Fail(e.to_string()),
        ),
    }

    // The webhooks.
    const SECTION: &str = "trellis-webhooks";
    let mutating = api(client, &KINDS[MUTATING], None);
    match mutating.get_opt(INJECTOR_WEBHOOK).await {
        Ok(Some(config)) => {
            r.line(
                SECTION,
                &format!("injection webhook {INJECTOR_WEBHOOK} exists"),
                Outcome::Pass,
            );
            let hooks = config.data["webhooks"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            ca_bundle_line(r, SECTION, "injection", &hooks);
            let open: Vec<&str> = hooks
                .iter()
                .filter(|h| h["failurePolicy"] != "Fail")
                .map(|h| h["name"].as_str().unwrap_or("?"))
                .collect();
            let what = "injection webhook fails closed (failurePolicy: Fail)";
            if open.is_empty() {
                r.line(SECTION, what, Outcome::Pass);
            } else {
                r.line(
                    SECTION,
                    what,
                    Outcome::Warn(format!(
                        "{} ignore failures: while the webhook is down, pods in injection-enabled namespaces start without a sidecar",
                        open.join(", ")
                    )),
                );
            }
        }
        Ok(None) => r.line(
            SECTION,
            &format!("injection webhook {INJECTOR_WEBHOOK} exists"),
            Outcome::Fail("not found: sidecars are not injected".into()),
        ),
        Err(e) => r.line(
            SECTION,
            "can read mutatingwebhookconfigurations",
            Outcome::Fail(e.to_string()),
        ),
    }
    let validating = api(client, &KINDS[VALIDATING], None);
    let validator = validator_name(namespace);
    match validating.get_opt(&validator).await {
        Ok(Some(config)) => {
            r.line(
                SECTION,
                &format!("validation webhook {validator} exists"),
                Outcome::Pass,
            );
            let hooks = config.data["webhooks"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            ca_bundle_line(r, SECTION, "validation", &hooks);
        }
        Ok(None) => r.line(
            SECTION,
            &format!("validation webhook {validator} exists"),
            Outcome::Warn(
                "not found: invalid Istio resources are not refused by the API server".into(),
            ),
        ),
        Err(e) => r.line(
            SECTION,
            "can read validatingwebhookconfigurations",
            Outcome::Fail(e.to_string()),
        ),
    }
}

fn ca_bundle_line(r: &mut Report, section: &'static str, which: &str, hooks: &[Value]) {
    let unset: Vec<&str> = hooks
        .iter()
        .filter(|h| str_at(h, "/clientConfig/caBundle").is_empty())
        .map(|h| h["name"].as_str().unwrap_or("?"))
        .collect();
    let what = format!("{which} webhook's caBundle is set");
    if unset.is_empty() && !hooks.is_empty() {
        r.line(section, &what, Outcome::Pass);
    } else {
        r.line(
            section,
            &what,
            Outcome::Fail(format!(
                "no caBundle on {}: trellisd's leader sets it once it runs; the API server cannot call the webhook until then",
                if hooks.is_empty() { "any webhook".to_string() } else { unset.join(", ") }
            )),
        );
    }
}
