//! What is wrong with an Istio object, written into its `status`, as
//! istiod's status writer (with analysis enabled) does: the analyzers'
//! findings as `status.validationMessages` (Istio's `AnalysisMessageBase`:
//! `type.code`/`type.name`, `level`, `documentationUrl`), and, for an object
//! the API server stored but Trellis cannot use (it fails validation: no
//! webhook yet, or the webhook was down), `IST0106 SchemaValidationError`
//! and a `Reconciled` condition that is `False` with the errors as its
//! message — the object is left out of the mesh, everything else is served.
//!
//! Written only by the leader (see [`crate::leader`]), through the status
//! subresource, as a merge patch of exactly these fields (other writers'
//! fields and conditions stay), so that what one leader wrote the next one
//! corrects or removes. Only objects whose status differs from what it
//! should be are written; a failed write is retried, and never holds
//! anything else up.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use api::Kind;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::{ApiResource, GroupVersionKind};
use model::MeshConfig;
use model::analyze::{self, Level, messages};
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::sources::{ResourceSet, Stored};
use crate::store::Key;

/// Istio's condition on config objects: whether it reached the proxies.
const RECONCILED: &str = "Reconciled";
/// How long changes are collected before statuses are worked out again.
const DEBOUNCE: Duration = Duration::from_millis(200);
/// How soon a failed write is tried again.
const RETRY: Duration = Duration::from_secs(5);

/// Keeps the statuses of `set`'s Istio objects current whenever `leader`
/// says this replica leads; stops writing as soon as it no longer does.
/// `mesh_config` is the mesh config the analyzers use. Runs forever.
pub async fn write_while_leader(
    client: kube::Client,
    set: Arc<ResourceSet>,
    mesh_config: impl Fn() -> MeshConfig + Send + Sync + 'static,
    mut leader: watch::Receiver<bool>,
) {
    let mesh_config = Arc::new(mesh_config);
    loop {
        if leader.wait_for(|l| *l).await.is_err() {
            return;
        }
        tracing::info!("writing the status of Istio objects (leader)");
        tokio::select! {
            () = write(&client, &set, mesh_config.clone()) => {}
            _ = leader.wait_for(|l| !*l) => {}
        }
    }
}

/// Writes statuses as they change, until cancelled.
async fn write(
    client: &kube::Client,
    set: &Arc<ResourceSet>,
    mesh_config: Arc<impl Fn() -> MeshConfig + Send + Sync + 'static>,
) {
    let mut changes = set.subscribe();
    // What was written, over which resourceVersion: not written again until
    // the object changes (the watch brings the write back a little later).
    let mut written: HashMap<Key, (Option<String>, Value)> = HashMap::new();
    loop {
        changes.borrow_and_update();
        let (set2, config) = (set.clone(), mesh_config.clone());
        // The analyzers are CPU work; keep them off the async workers.
        let Ok(wanted) =
            tokio::task::spawn_blocking(move || statuses(&set2, &config(), now())).await
        else {
            return;
        };
        let mut failed = false;
        for (key, (stored, status)) in wanted {
            if written
                .get(&key)
                .is_some_and(|(rv, was)| *rv == stored.resource_version && same(Some(was), &status))
            {
                continue;
            }
            match apply(client, &key, &stored, &status).await {
                Ok(()) => {
                    written.insert(key, (stored.resource_version, status));
                }
                Err(error) => {
                    failed = true;
                    tracing::warn!(object = %name_of(&key), %error, "could not write the object's status; retrying");
                }
            }
        }
        {
            let stored = set.stored();
            written.retain(|k, _| stored.contains_key(k));
        }
        let next = changes.changed();
        if failed {
            let _ = tokio::time::timeout(RETRY, next).await;
        } else if next.await.is_err() {
            return;
        }
        tokio::time::sleep(DEBOUNCE).await;
    }
}

fn now() -> Value {
    serde_json::to_value(Time(Timestamp::now())).unwrap_or(Value::Null)
}

fn name_of(key: &Key) -> String {
    format!("{}/{}/{}", key.kind, key.namespace, key.name)
}

/// Writes `status` (ours: `validationMessages`, `observedGeneration` and
/// the `Reconciled` condition; absent ones are removed) with a merge patch
/// of the status subresource, leaving other writers' fields and conditions
/// as they are.
async fn apply(
    client: &kube::Client,
    key: &Key,
    stored: &Stored,
    status: &Value,
) -> Result<(), kube::Error> {
    let (group, version) = stored
        .api_version
        .split_once('/')
        .unwrap_or(("", &stored.api_version));
    let plural = Kind::parse(&key.kind).map_or("", |k| k.plural());
    let resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(group, version, &key.kind),
        plural,
    );
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &key.namespace, &resource);
    let patch = merge_patch(stored.status.as_ref(), status);
    let params = PatchParams::default();
    match api
        .patch_status(&key.name, &params, &Patch::Merge(&patch))
        .await
    {
        Ok(_) => {
            tracing::info!(object = %name_of(key), %status, "status written");
            Ok(())
        }
        // Deleted meanwhile: nothing to report on.
        Err(kube::Error::Api(s)) if s.is_not_found() => Ok(()),
        Err(e) => Err(e),
    }
}

/// The merge patch turning `stored`'s fields of ours into `wanted`'s.
fn merge_patch(stored: Option<&Value>, wanted: &Value) -> Value {
    let field = |f: &str| wanted.get(f).cloned().unwrap_or(Value::Null);
    // A merge patch replaces a list whole: keep the others' conditions.
    let mut conditions: Vec<Value> = stored
        .and_then(|s| s.get("conditions"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|c| c["type"] != RECONCILED)
        .cloned()
        .collect();
    conditions.extend(
        wanted["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .cloned(),
    );
    json!({"status": {
        "validationMessages": field("validationMessages"),
        "observedGeneration": field("observedGeneration"),
        "conditions": if conditions.is_empty() { Value::Null } else { Value::Array(conditions) },
    }})
}

/// One finding about an object.
struct Finding {
    ty: messages::MessageType,
    text: String,
}

/// The Istio objects whose status is not what it should be, with the
/// status to apply (`now` stamps a condition that changes).
fn statuses(set: &ResourceSet, mesh: &MeshConfig, now: Value) -> BTreeMap<Key, (Stored, Value)> {
    let resources: Vec<api::Resource> = set.resources().values().cloned().collect();
    let stored = set.stored().clone();
    // The analyzers name objects as `Kind name.namespace`.
    let by_origin: HashMap<String, Key> = resources
        .iter()
        .filter(|r| stored.contains_key(&Key::of(r)))
        .map(|r| (analyze::origin(r), Key::of(r)))
        .collect();
    let mut findings: BTreeMap<Key, Vec<Finding>> = BTreeMap::new();
    for m in analyze::analyze(&resources, mesh) {
        if let Some(key) = by_origin.get(&m.resource) {
            findings.entry(key.clone()).or_default().push(Finding {
                ty: messages::MessageType {
                    code: m.code,
                    name: m.name,
                    level: m.level,
                },
                text: m.message,
            });
        }
    }
    let mut out = BTreeMap::new();
    for (key, object) in stored {
        let found = findings.remove(&key).unwrap_or_default();
        let wanted = status(&object, &found, &now);
        if !same(object.status.as_ref(), &wanted) {
            out.insert(key, (object, wanted));
        }
    }
    out
}

/// The status `object` should have, given the analyzers' findings about it.
fn status(object: &Stored, found: &[Finding], now: &Value) -> Value {
    let invalid = (!object.invalid.is_empty()).then(|| Finding {
        ty: messages::SCHEMA_VALIDATION_ERROR,
        text: object.invalid.join("; "),
    });
    let all: Vec<&Finding> = invalid.iter().chain(found).collect();
    if all.is_empty() {
        return json!({});
    }
    let mut status = json!({
        "validationMessages": all.iter().map(|f| json!({
            "type": {"name": f.ty.name, "code": f.ty.code},
            "level": level(f.ty.level),
            "documentationUrl": messages::documentation_url(f.ty.code),
        })).collect::<Vec<_>>(),
    });
    if let Some(generation) = object.generation {
        status["observedGeneration"] = generation.into();
    }
    if let Some(invalid) = &invalid {
        let message = format!("Schema validation error: {}", invalid.text);
        // A condition that says the same keeps the time it last changed.
        let since = condition(object.status.as_ref())
            .filter(|c| c["status"] == "False")
            .and_then(|c| c.get("lastTransitionTime").cloned())
            .unwrap_or_else(|| now.clone());
        status["conditions"] = json!([{
            "type": RECONCILED,
            "status": "False",
            "reason": "ValidationFailed",
            "message": message,
            "lastTransitionTime": since,
        }]);
    }
    status
}

/// Istio's JSON name of a level (`AnalysisMessageBase.Level`).
fn level(level: Level) -> &'static str {
    match level {
        Level::Error => "ERROR",
        Level::Warning => "WARNING",
        Level::Info => "INFO",
    }
}

/// Our condition in a status, if there.
fn condition(status: Option<&Value>) -> Option<&Value> {
    status?
        .get("conditions")?
        .as_array()?
        .iter()
        .find(|c| c["type"] == RECONCILED)
}

/// Whether the stored status already says what `wanted` does, in the
/// fields this writer sets.
fn same(stored: Option<&Value>, wanted: &Value) -> bool {
    let field = |v: Option<&Value>, f: &str| v.and_then(|s| s.get(f)).cloned();
    let condition_text = |v: Option<&Value>| {
        condition(v).map(|c| {
            (
                c["status"].clone(),
                c["reason"].clone(),
                c["message"].clone(),
            )
        })
    };
    ["validationMessages", "observedGeneration"]
        .iter()
        .all(|f| field(stored, f) == field(Some(wanted), f))
        && condition_text(stored) == condition_text(Some(wanted))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vs(text: &str) -> api::Resource {
        api::parse("t.yaml", text).unwrap().remove(0)
    }

    fn stored(invalid: &[&str], status: Option<Value>) -> Stored {
        Stored {
            api_version: "networking.istio.io/v1".into(),
            resource_version: Some("7".into()),
            generation: Some(2),
            status,
            invalid: invalid.iter().map(ToString::to_string).collect(),
        }
    }

    fn key(name: &str) -> Key {
        Key {
            kind: "VirtualService".into(),
            namespace: "ns1".into(),
            name: name.into(),
        }
    }

    #[test]
    fn invalid_objects_and_analysis_findings_get_istios_status_shape() {
        let set = ResourceSet::default();
        let served = vs(
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: to-nowhere, namespace: ns1}\nspec:\n  hosts: [reviews]\n  http:\n  - route:\n    - destination: {host: reviews, subset: v9}\n",
        );
        set.apply(served);
        set.store(key("to-nowhere"), stored(&[], None));
        set.store(
            key("broken"),
            stored(&["spec.http[0].route[0].weight: must be 0..100"], None),
        );
        set.store(key("fine"), stored(&[], None));
        let t = json!("2026-01-01T00:00:00Z");
        let out = statuses(&set, &MeshConfig::default(), t.clone());
        // Nothing to say about `fine`, and it says nothing: not written.
        assert_eq!(
            out.keys().map(|k| k.name.as_str()).collect::<Vec<_>>(),
            ["broken", "to-nowhere"]
        );
        let broken = &out[&key("broken")].1;
        assert_eq!(
            broken["validationMessages"],
            json!([{"type": {"name": "SchemaValidationError", "code": "IST0106"}, "level": "ERROR",
                    "documentationUrl": "https://istio.io/latest/docs/reference/config/analysis/ist0106/"}])
        );
        assert_eq!(broken["observedGeneration"], 2);
        assert_eq!(broken["conditions"][0]["type"], "Reconciled");
        assert_eq!(broken["conditions"][0]["status"], "False");
        assert_eq!(broken["conditions"][0]["lastTransitionTime"], t);
        assert!(
            broken["conditions"][0]["message"]
                .as_str()
                .unwrap()
                .contains("weight")
        );
        let nowhere = &out[&key("to-nowhere")].1;
        assert_eq!(nowhere["validationMessages"][0]["type"]["code"], "IST0101");
        assert!(nowhere.get("conditions").is_none());

        // Once stored as wanted (times aside), nothing is written again.
        let later = json!("2026-02-02T00:00:00Z");
        set.store(
            key("broken"),
            stored(
                &["spec.http[0].route[0].weight: must be 0..100"],
                Some(broken.clone()),
            ),
        );
        set.store(key("to-nowhere"), stored(&[], Some(nowhere.clone())));
        assert!(statuses(&set, &MeshConfig::default(), later).is_empty());

        // Fixed: what this writer set is removed, another writer's condition stays.
        let mut theirs = broken.clone();
        theirs["conditions"]
            .as_array_mut()
            .unwrap()
            .push(json!({"type": "Theirs", "status": "True"}));
        set.store(key("broken"), stored(&[], Some(theirs.clone())));
        let out = statuses(&set, &MeshConfig::default(), t);
        assert_eq!(out[&key("broken")].1, json!({}));
        assert_eq!(
            merge_patch(Some(&theirs), &json!({})),
            json!({"status": {"validationMessages": null, "observedGeneration": null,
                              "conditions": [{"type": "Theirs", "status": "True"}]}})
        );
    }
}
