//! The install's manifests against a cluster: `install` (server-side
//! apply, then wait for the Deployments), `uninstall` (delete by the
//! install label), `verify-install` (every object there, every Deployment
//! available) and `check` (as `linkerd check`, before and after install).

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use kube::ResourceExt as _;
use kube::api::{
    Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams, PropagationPolicy,
};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::Value;

use super::control_plane::{INJECTOR_WEBHOOK, NAME as ISTIOD, validator_name};
use super::{INSTALL_LABEL, Manifest};

/// The field manager of `trellis install`'s server-side applies.
const FIELD_MANAGER: &str = "trellis-install";
/// The oldest Kubernetes the manifests are meant for (autoscaling/v2,
/// policy/v1, native sidecars), as Istio's support window starts.
const MIN_KUBERNETES: (u32, u32) = (1, 28);

/// A kind the manifests contain: how to reach it, and where it goes in
/// the deletion order (webhooks first, so nothing calls a control plane
/// that is going away; CRDs and the namespace last).
struct KindInfo {
    api_version: &'static str,
    kind: &'static str,
    plural: &'static str,
    namespaced: bool,
}

// Positions in KINDS of the kinds `check` reads.
const MUTATING: usize = 0;
const VALIDATING: usize = 1;
const DEPLOYMENT: usize = 4;
const CRD: usize = 12;

const KINDS: &[KindInfo] = &[
    KindInfo {
        api_version: "admissionregistration.k8s.io/v1",
        kind: "MutatingWebhookConfiguration",
        plural: "mutatingwebhookconfigurations",
        namespaced: false,
    },
    KindInfo {
        api_version: "admissionregistration.k8s.io/v1",
        kind: "ValidatingWebhookConfiguration",
        plural: "validatingwebhookconfigurations",
        namespaced: false,
    },
    KindInfo {
        api_version: "autoscaling/v2",
        kind: "HorizontalPodAutoscaler",
        plural: "horizontalpodautoscalers",
        namespaced: true,
    },
    KindInfo {
        api_version: "policy/v1",
        kind: "PodDisruptionBudget",
        plural: "poddisruptionbudgets",
        namespaced: true,
    },
    KindInfo {
        api_version: "apps/v1",
        kind: "Deployment",
        plural: "deployments",
        namespaced: true,
    },
    KindInfo {
        api_version: "v1",
        kind: "Service",
        plural: "services",
        namespaced: true,
    },
    KindInfo {
        api_version: "v1",
        kind: "ConfigMap",
        plural: "configmaps",
        namespaced: true,
    },
    KindInfo {
        api_version: "rbac.authorization.k8s.io/v1",
        kind: "RoleBinding",
        plural: "rolebindings",
        namespaced: true,
    },
    KindInfo {
        api_version: "rbac.authorization.k8s.io/v1",
        kind: "Role",
        plural: "roles",
        namespaced: true,
    },
    KindInfo {
        api_version: "rbac.authorization.k8s.io/v1",
        kind: "ClusterRoleBinding",
        plural: "clusterrolebindings",
        namespaced: false,
    },
    KindInfo {
        api_version: "rbac.authorization.k8s.io/v1",
        kind: "ClusterRole",
        plural: "clusterroles",
        namespaced: false,
    },
    KindInfo {
        api_version: "v1",
        kind: "ServiceAccount",
        plural: "serviceaccounts",
        namespaced: true,
    },
    KindInfo {
        api_version: "apiextensions.k8s.io/v1",
        kind: "CustomResourceDefinition",
        plural: "customresourcedefinitions",
        namespaced: false,
    },
    KindInfo {
        api_version: "v1",
        kind: "Namespace",
        plural: "namespaces",
        namespaced: false,
    },
];

/// Kinds whose removal deletes what users stored (every VirtualService...,
/// everything in the namespace): only with `--purge`, and only if the
/// install created them.
fn kept_without_purge(kind: &str) -> bool {
    matches!(kind, "CustomResourceDefinition" | "Namespace")
}

fn kind_info(api_version: &str, kind: &str) -> Result<&'static KindInfo> {
    KINDS
        .iter()
        .find(|k| k.api_version == api_version && k.kind == kind)
        .with_context(|| format!("{api_version} {kind} is not a kind the install knows"))
}

fn resource(info: &KindInfo) -> ApiResource {
    let (group, version) = info
        .api_version
        .split_once('/')
        .unwrap_or(("", info.api_version));
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(group, version, info.kind),
        info.plural,
    )
}

fn api(client: &kube::Client, info: &KindInfo, namespace: Option<&str>) -> Api<DynamicObject> {
    let ar = resource(info);
    match (info.namespaced, namespace) {
        (true, Some(ns)) => Api::namespaced_with(client.clone(), ns, &ar),
        _ => Api::all_with(client.clone(), &ar),
    }
}

fn str_at<'a>(v: &'a Value, ptr: &str) -> &'a str {
    v.pointer(ptr).and_then(Value::as_str).unwrap_or_default()
}

/// `Kind name[.namespace]`, for messages.
fn describe(object: &Value) -> String {
    let ns = str_at(object, "/metadata/namespace");
    let name = str_at(object, "/metadata/name");
    let kind = str_at(object, "/kind");
    if ns.is_empty() {
        format!("{kind} {name}")
    } else {
        format!("{kind} {name}.{ns}")
    }
}

fn api_for(client: &kube::Client, object: &Value) -> Result<(Api<DynamicObject>, String)> {
    let info = kind_info(str_at(object, "/apiVersion"), str_at(object, "/kind"))?;
    let ns = str_at(object, "/metadata/namespace");
    Ok((
        api(client, info, (!ns.is_empty()).then_some(ns)),
        str_at(object, "/metadata/name").to_string(),
    ))
}

pub struct InstallOptions {
    /// Wait this long for every Deployment to be available; None: don't wait.
    pub readiness_timeout: Option<Duration>,
}

/// Applies `manifest` (server-side apply, this tool as the field manager),
/// removes what an earlier install by the same owner made and this one no
/// longer has, and waits for the Deployments. Prints one line per step.
pub async fn install(
    client: &kube::Client,
    manifest: &Manifest,
    options: &InstallOptions,
) -> Result<()> {
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let mut crds = Vec::new();
    for object in &manifest.objects {
        let (api, name) = api_for(client, object)?;
        let kind = str_at(object, "/kind");
        if kept_without_purge(kind) {
            // A namespace or CRD that was there before is not ours to take:
            // uninstall --purge would delete it, with what it holds.
            let existing = api.get_opt(&name).await?;
            if existing.is_some_and(|e| e.labels().get(INSTALL_LABEL).is_none()) {
                println!(
                    "- {} exists (not installed by trellis); left as it is",
                    describe(object)
                );
                continue;
            }
        }
        let patch: DynamicObject = serde_json::from_value(object.clone())
            .with_context(|| format!("{}: not a Kubernetes object", describe(object)))?;
        api.patch(&name, &params, &Patch::Apply(&patch))
            .await
            .with_context(|| format!("applying {}", describe(object)))?;
        println!("✔ {} applied", describe(object));
        if kind == "CustomResourceDefinition" {
            crds.push(name);
        }
    }
    if !crds.is_empty() {
        wait_established(client, &crds, Duration::from_secs(60)).await?;
        println!("✔ {} CRDs established", crds.len());
    }
    prune(client, manifest).await?;
    if let Some(timeout) = options.readiness_timeout {
        wait_available(client, manifest, timeout).await?;
    }
    println!(
        "✔ Installation complete (profile {}, owner {})",
        manifest.profile, manifest.owner
    );
    Ok(())
}

async fn wait_established(client: &kube::Client, names: &[String], within: Duration) -> Result<()> {
    let api = api(client, &KINDS[CRD], None);
    let deadline = Instant::now() + within;
    for name in names {
        loop {
            let crd = api.get(name).await?;
            let established = crd.data["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["type"] == "Established" && c["status"] == "True");
            if established {
                break;
            }
            if Instant::now() > deadline {
                bail!("CRD {name} not established after {within:?}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    Ok(())
}

/// Objects carrying the install label, of every kind the install makes,
/// in deletion order.
async fn labelled(client: &kube::Client) -> Result<Vec<(&'static KindInfo, DynamicObject)>> {
    let selector = INSTALL_LABEL;
    let mut out = Vec::new();
    for info in KINDS {
        let list = api(client, info, None)
            .list(&ListParams::default().labels(selector))
            .await
            .with_context(|| format!("listing {}", info.plural))?;
        out.extend(list.items.into_iter().map(|o| (info, o)));
    }
    Ok(out)
}

/// Deletes what an earlier install made that this manifest no longer has
/// (a gateway turned off, an HPA no longer wanted): a cluster has one
/// install, the last one applied, whichever IstioOperator named it.
async fn prune(client: &kube::Client, manifest: &Manifest) -> Result<()> {
    let wanted: BTreeSet<(String, String, String)> = manifest
        .objects
        .iter()
        .map(|o| {
            (
                str_at(o, "/kind").to_string(),
                str_at(o, "/metadata/namespace").to_string(),
                str_at(o, "/metadata/name").to_string(),
            )
        })
        .collect();
    let mut removed = Vec::new();
    for (info, object) in labelled(client).await? {
        if kept_without_purge(info.kind) {
            continue;
        }
        let key = (
            info.kind.to_string(),
            object.metadata.namespace.clone().unwrap_or_default(),
            object.metadata.name.clone().unwrap_or_default(),
        );
        if !wanted.contains(&key) {
            delete(client, info, &object).await?;
            removed.push((info, object));
        }
    }
    // Gone before install goes on: a Deployment with its Pods.
    let deadline = Instant::now() + Duration::from_secs(120);
    for (info, object) in removed {
        let name = object.metadata.name.clone().unwrap_or_default();
        let api = api(client, info, object.metadata.namespace.as_deref());
        while api.get_opt(&name).await?.is_some() {
            if Instant::now() > deadline {
                bail!(
                    "{} {name} is still there 120 s after its deletion",
                    info.kind
                );
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        println!("✔ {} {name} removed (no longer in the install)", info.kind);
    }
    Ok(())
}

async fn delete(client: &kube::Client, info: &KindInfo, object: &DynamicObject) -> Result<()> {
    let name = object.metadata.name.clone().unwrap_or_default();
    let api = api(client, info, object.metadata.namespace.as_deref());
    // Foreground: a Deployment is gone only with its ReplicaSets and Pods.
    // Nothing else the install makes owns dependents.
    let params = DeleteParams {
        propagation_policy: Some(if info.kind == "Deployment" {
            PropagationPolicy::Foreground
        } else {
            PropagationPolicy::Background
        }),
        ..Default::default()
    };
    match api.delete(&name, &params).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e).with_context(|| format!("deleting {} {name}", info.kind)),
    }
}

/// Deletes every object an install made (any owner), webhooks first;
/// CRDs and the namespace only with `purge` (they hold users' config).
/// Waits until they are gone.
pub async fn uninstall(client: &kube::Client, purge: bool, within: Duration) -> Result<()> {
    let objects = labelled(client).await?;
    if objects.is_empty() {
        println!("nothing installed by trellis was found");
        return Ok(());
    }
    let deadline = Instant::now() + within;
    let mut kept = Vec::new();
    // The namespace last, once everything else (the CRDs above all) is
    // gone: the namespace controller stalls and backs off for minutes when
    // kinds vanish while it empties a namespace.
    for namespaces in [false, true] {
        let phase = |info: &KindInfo| (info.kind == "Namespace") == namespaces;
        for (info, object) in objects.iter().filter(|(i, _)| phase(i)) {
            let name = object.metadata.name.clone().unwrap_or_default();
            let shown = match &object.metadata.namespace {
                Some(ns) => format!("{} {name}.{ns}", info.kind),
                None => format!("{} {name}", info.kind),
            };
            if kept_without_purge(info.kind) && !purge {
                kept.push(shown);
                continue;
            }
            if info.kind == "CustomResourceDefinition" {
                wait_listable(client, object, deadline).await?;
            }
            delete(client, info, object).await?;
            println!("✔ {shown} deleted");
        }
        loop {
            let left: Vec<_> = labelled(client)
                .await?
                .into_iter()
                .filter(|(info, _)| phase(info) && (purge || !kept_without_purge(info.kind)))
                .collect();
            if left.is_empty() {
                break;
            }
            if Instant::now() > deadline {
                let names: Vec<String> = left.iter().map(|(i, o)| describe_stuck(i, o)).collect();
                bail!("still there after {within:?}: {}", names.join(", "));
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
    if !kept.is_empty() {
        println!(
            "kept (they hold your Istio resources; --purge deletes them): {}",
            kept.join(", ")
        );
    }
    println!("✔ Uninstall complete");
    Ok(())
}

/// Waits until the API server lists a CRD's objects: a CRD deleted while
/// its storage is still initializing (just created) keeps its cleanup
/// finalizer for minutes, the API server's finalizer backing off.
async fn wait_listable(
    client: &kube::Client,
    crd: &DynamicObject,
    deadline: Instant,
) -> Result<()> {
    let spec = &crd.data["spec"];
    let group = str_at(spec, "/group");
    let Some(version) = spec["versions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|v| v["served"] == true)
        .and_then(|v| v["name"].as_str())
    else {
        return Ok(());
    };
    let gvk = GroupVersionKind::gvk(group, version, str_at(spec, "/names/kind"));
    let ar = ApiResource::from_gvk_with_plural(&gvk, str_at(spec, "/names/plural"));
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
    loop {
        match api.list(&ListParams::default().limit(1)).await {
            Ok(_) => return Ok(()),
            Err(e) if Instant::now() > deadline => {
                bail!(
                    "{}: cannot list its objects: {e}",
                    crd.metadata.name.clone().unwrap_or_default()
                )
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(300)).await,
        }
    }
}

/// `Kind name (finalizers: ...; conditions: ...)`: what holds an object
/// that does not go away.
fn describe_stuck(info: &KindInfo, object: &DynamicObject) -> String {
    let name = object.metadata.name.clone().unwrap_or_default();
    let finalizers = object.metadata.finalizers.clone().unwrap_or_default();
    let conditions: Vec<String> = object.data["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            format!(
                "{}={} {}",
                str_at(c, "/type"),
                str_at(c, "/status"),
                str_at(c, "/message")
            )
        })
        .collect();
    format!(
        "{} {name} (finalizers: {}; conditions: {})",
        info.kind,
        finalizers.join(", "),
        conditions.join("; ")
    )
}

/// A Deployment's readiness: (available, wanted).
fn availability(deployment: &DynamicObject) -> (i64, i64) {
    let wanted = deployment.data["spec"]["replicas"].as_i64().unwrap_or(1);
    let available = deployment.data["status"]["availableReplicas"]
        .as_i64()
        .unwrap_or(0);
    (available, wanted)
}

async fn wait_available(
    client: &kube::Client,
    manifest: &Manifest,
    within: Duration,
) -> Result<()> {
    let deadline = Instant::now() + within;
    for object in manifest
        .objects
        .iter()
        .filter(|o| o["kind"] == "Deployment")
    {
        let (api, name) = api_for(client, object)?;
        loop {
            let d = api.get(&name).await?;
            let (available, wanted) = availability(&d);
            if available >= wanted.max(1) {
                println!("✔ {} available ({available}/{wanted})", describe(object));
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "{} is not available after {within:?} ({available}/{wanted} replicas); `kubectl -n {} describe deployment {name}` says why",
                    describe(object),
                    str_at(object, "/metadata/namespace")
                );
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
    Ok(())
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_generated_kind_is_known() {
        let m = super::super::manifest::generate_from(&[], &[], Some("demo")).unwrap();
        for o in &m.objects {
            kind_info(str_at(o, "/apiVersion"), str_at(o, "/kind")).unwrap();
        }
        assert_eq!(KINDS[CRD].kind, "CustomResourceDefinition");
        assert_eq!(KINDS[MUTATING].kind, "MutatingWebhookConfiguration");
        assert_eq!(KINDS[VALIDATING].kind, "ValidatingWebhookConfiguration");
        assert_eq!(KINDS[DEPLOYMENT].kind, "Deployment");
    }
}
