//! The mesh's root certificate in every namespace, as istiod's namespace
//! controller publishes it: a ConfigMap `istio-ca-root-cert` with the key
//! `root-cert.pem`, which workloads mount to trust the mesh. Written by the
//! leader only; created in a namespace when it appears, put back when
//! someone deletes or changes it, and rewritten when the CA's roots change.

use std::collections::BTreeMap;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Api, ObjectMeta, Patch, PatchParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use tokio::sync::watch;

pub const CONFIGMAP_NAME: &str = "istio-ca-root-cert";
pub const CONFIGMAP_KEY: &str = "root-cert.pem";
/// The field manager of our server-side applies.
const FIELD_MANAGER: &str = "trellisd";
/// Namespaces istiod leaves alone (its injection's ignored namespaces).
const IGNORED_NAMESPACES: &[&str] = &[
    "kube-system",
    "kube-public",
    "kube-node-lease",
    "local-path-storage",
];

/// Publishes `roots` (PEM) whenever `leader` says this replica leads, and
/// stops writing as soon as it no longer does; a new bundle (the CA
/// reloaded) is written everywhere at once. Runs forever.
pub async fn publish_while_leader(
    client: kube::Client,
    mut roots: watch::Receiver<String>,
    mut leader: watch::Receiver<bool>,
) {
    loop {
        if leader.wait_for(|l| *l).await.is_err() {
            return;
        }
        let bundle = roots.borrow_and_update().clone();
        tokio::select! {
            () = publish(client.clone(), &bundle) => {}
            _ = leader.wait_for(|l| !*l) => {}
            // Start over with the new bundle: every ConfigMap differs now.
            Ok(()) = roots.changed() => {}
        }
    }
}

/// Keeps the ConfigMap in every namespace, until cancelled.
async fn publish(client: kube::Client, roots: &str) {
    let namespaces = watcher::watcher(Api::<Namespace>::all(client.clone()), Default::default())
        .default_backoff()
        .boxed();
    let configmaps = watcher::watcher(
        Api::<ConfigMap>::all(client.clone()),
        watcher::Config::default().fields(&format!("metadata.name={CONFIGMAP_NAME}")),
    )
    .default_backoff()
    .boxed();
    enum Seen {
        Namespace(Event<Namespace>),
        ConfigMap(Event<ConfigMap>),
    }
    let mut events = futures::stream::select(
        namespaces.map(|e| e.map(Seen::Namespace)),
        configmaps.map(|e| e.map(Seen::ConfigMap)),
    );
    while let Some(event) = events.next().await {
        let namespace = match event {
            Ok(Seen::Namespace(Event::InitApply(ns) | Event::Apply(ns))) => {
                let terminating = ns
                    .status
                    .as_ref()
                    .and_then(|s| s.phase.as_deref())
                    .is_some_and(|p| p == "Terminating");
                ns.metadata.name.filter(|_| !terminating)
            }
            // Changed or deleted by someone else: put it back as it was.
            Ok(Seen::ConfigMap(Event::InitApply(cm) | Event::Apply(cm)))
                if cm
                    .data
                    .as_ref()
                    .and_then(|d| d.get(CONFIGMAP_KEY))
                    .map(String::as_str)
                    != Some(roots) =>
            {
                cm.metadata.namespace
            }
            Ok(Seen::ConfigMap(Event::Delete(cm))) => cm.metadata.namespace,
            Ok(_) => None,
            Err(error) => {
                tracing::warn!(%error, "watch for the root certificate ConfigMaps failed; retrying");
                None
            }
        };
        if let Some(namespace) = namespace.filter(|n| !IGNORED_NAMESPACES.contains(&n.as_str())) {
            write(&client, &namespace, roots).await;
        }
    }
}

async fn write(client: &kube::Client, namespace: &str, roots: &str) {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let cm = ConfigMap {
        metadata: ObjectMeta {
            name: Some(CONFIGMAP_NAME.into()),
            namespace: Some(namespace.into()),
            labels: Some(BTreeMap::from([("istio.io/config".into(), "true".into())])),
            ..Default::default()
        },
        data: Some(BTreeMap::from([(CONFIGMAP_KEY.into(), roots.into())])),
        ..Default::default()
    };
    let params = PatchParams::apply(FIELD_MANAGER).force();
    match api.patch(CONFIGMAP_NAME, &params, &Patch::Apply(&cm)).await {
        Ok(_) => tracing::info!(%namespace, "root certificate ConfigMap {CONFIGMAP_NAME} written"),
        // The namespace is gone already.
        Err(kube::Error::Api(s)) if s.is_not_found() => {
            tracing::debug!(%namespace, error = %s, "root certificate ConfigMap not written");
        }
        Err(error) => {
            tracing::warn!(%namespace, %error, "could not write the root certificate ConfigMap");
        }
    }
}
