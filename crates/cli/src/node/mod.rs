//! `trellis node --kubeconfig K`: a node agent for one-machine clusters
//! and tests. It registers a Node (Ready, with capacity and addresses, its
//! Lease renewed as a kubelet's), binds the cluster's unscheduled pods to
//! itself through the `pods/binding` subresource — a one-node scheduler,
//! so a test cluster needs no kube-scheduler — and runs the pods bound to
//! it as local processes, each in its own network namespace on the node's
//! pod range ([`pod`]). Deleting a pod stops it and removes its namespace;
//! the agent's exit stops every pod and removes everything it made on the
//! host. Pods reach the cluster's Services by ClusterIP and name, and the
//! API server through the `kubernetes` Service ([`services`], in place of
//! kube-proxy and cluster DNS), so the control plane itself can run here
//! as pods (`trellis install`). Of the kubelet's API container logs
//! ([`kubelet_api`], for `kubectl logs`), exec and port forwarding
//! ([`streaming`]) are served; `attach` is not. A container's output is also in
//! the state directory's `logs/<namespace>.<pod>.<container>.log`.

mod kubelet_api;
mod pod;
mod probe;
mod registration;
mod services;
mod streaming;
mod volumes;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use futures::TryStreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::{DeleteParams, PostParams, Preconditions};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::local::lock;
use crate::local::netns::{self, Names, PodCidr, PodNetwork};
use pod::Slot;
use registration::NodeInfo;

pub struct NodeOptions {
    /// The API server this node talks to (its kubeconfig's), which pods
    /// reach through the `kubernetes` Service when it has no endpoint.
    pub api_server: http::Uri,
    /// The Node's name; the host's name if not given.
    pub name: Option<String>,
    /// Names the namespaces and links made (as `trellis up --block`).
    pub block: u8,
    /// The pods' range (default `10.<block>.0.0/16`).
    pub pod_cidr: Option<PodCidr>,
    /// Pods' volumes and logs (default: a temporary directory named after the block).
    pub state_dir: Option<PathBuf>,
}

/// Now, as the API server writes times (RFC 3339, seconds).
fn now() -> String {
    k8s_openapi::jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// `t`, as the API server writes times.
fn rfc3339(t: std::time::SystemTime) -> String {
    k8s_openapi::jiff::Timestamp::try_from(t)
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|_| now())
}

/// Now, as a MicroTime (a Lease's renewTime).
fn now_micros() -> String {
    k8s_openapi::jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string()
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_ascii_lowercase())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

pub async fn run(client: kube::Client, opts: NodeOptions) -> Result<()> {
    if let Some(why) = netns::missing_for_netns() {
        bail!(
            "trellis node runs each pod in a network namespace, which needs root, ip, setpriv and iptables-restore: {why}"
        );
    }
    if crate::local::programs::find_program("nft").is_none() {
        bail!(
            "trellis node gives pods the cluster's Services with nftables rules in their network namespaces: nft is not on PATH"
        );
    }
    let mut lock = lock::lock_block(opts.block)?;
    let cidr = opts
        .pod_cidr
        .unwrap_or_else(|| PodCidr::for_block(opts.block));
    let name = opts.name.unwrap_or_else(hostname);
    let dir = opts
        .state_dir
        .unwrap_or_else(|| std::env::temp_dir().join(format!("trellis-node-{}", opts.block)));
    lock.lock_state(&dir)?;
    lock.describe(&format!(
        "pid {}, trellis node {name}, state dir {}",
        std::process::id(),
        dir.display()
    ));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let network = PodNetwork::create(Names { block: opts.block }, cidr)?;
    let info = NodeInfo {
        name: name.clone(),
        ip: cidr.gateway(),
        pod_cidr: cidr.to_string(),
    };
    registration::register(&client, &info).await?;
    let heartbeat = tokio::spawn(registration::heartbeat(client.clone(), info.clone()));
    let kubelet_api = tokio::spawn(kubelet_api::serve(info.ip, dir.join("logs")).await?);
    let api_server = resolve(&opts.api_server).await;
    let (services_tx, services) = watch::channel(None);
    let services_task = tokio::spawn({
        let (client, node_ip) = (client.clone(), info.ip);
        async move {
            if let Err(e) = services::follow(client, node_ip, api_server, services_tx).await {
                tracing::error!(error = %format!("{e:#}"), "pods can no longer follow the cluster's Services");
            }
        }
    });
    eprintln!(
        "node {name} registered: pods on {cidr} (the node is {} on link {}), state in {}",
        info.ip,
        Names { block: opts.block }.bridge(),
        dir.display()
    );
    let mut agent = Agent {
        node: Arc::new(pod::Node {
            client,
            name,
            ip: info.ip,
            network,
            dir,
            services,
        }),
        labels: info.labels(),
        pods: BTreeMap::new(),
    };
    let outcome = tokio::select! {
        r = agent.watch() => r,
        _ = crate::local::shutdown_signal() => Ok(()),
    };
    eprintln!("stopping the node's pods…");
    heartbeat.abort();
    kubelet_api.abort();
    agent.stop_all().await;
    services_task.abort();
    // The last reference to the network: its namespaces and links go.
    drop(agent);
    eprintln!("stopped");
    outcome
}

/// The API server's address, if `uri` names one (a name is looked up).
async fn resolve(uri: &http::Uri) -> Option<std::net::SocketAddr> {
    let host = uri.host()?.trim_start_matches('[').trim_end_matches(']');
    let port = uri.port_u16().unwrap_or(443);
    match tokio::net::lookup_host((host, port)).await {
        Ok(mut addrs) => addrs.find(std::net::SocketAddr::is_ipv4),
        Err(e) => {
            tracing::warn!(api_server = %uri, error = %e, "cannot resolve the API server; pods cannot reach it through the kubernetes Service");
            None
        }
    }
}

/// A pod this node runs.
struct Running {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
    slot: Slot,
    id: String,
}

struct Agent {
    node: Arc<pod::Node>,
    labels: serde_json::Value,
    /// By pod uid.
    pods: BTreeMap<String, Running>,
}

impl Agent {
    async fn watch(&mut self) -> Result<()> {
        let api: Api<Pod> = Api::all(self.node.client.clone());
        let stream = watcher(api, watcher::Config::default()).default_backoff();
        futures::pin_mut!(stream);
        // The pods listed since the watch (re)started: those not listed are gone.
        let mut listed: Option<BTreeSet<String>> = None;
        while let Some(event) = stream.try_next().await.context("watching pods")? {
            match event {
                watcher::Event::Init => listed = Some(BTreeSet::new()),
                watcher::Event::InitApply(pod) => {
                    if let (Some(l), Some(uid)) = (listed.as_mut(), pod.metadata.uid.clone()) {
                        l.insert(uid);
                    }
                    self.on_pod(pod).await;
                }
                watcher::Event::InitDone => {
                    let listed = listed.take().unwrap_or_default();
                    let gone: Vec<String> = self
                        .pods
                        .keys()
                        .filter(|uid| !listed.contains(*uid))
                        .cloned()
                        .collect();
                    for uid in gone {
                        self.stop(&uid).await;
                    }
                }
                watcher::Event::Apply(pod) => self.on_pod(pod).await,
                watcher::Event::Delete(pod) => {
                    if let Some(uid) = &pod.metadata.uid {
                        self.stop(uid).await;
                    }
                }
            }
        }
        Ok(())
    }

    async fn on_pod(&mut self, pod: Pod) {
        let Some(uid) = pod.metadata.uid.clone() else {
            return;
        };
        let spec = pod.spec.clone().unwrap_or_default();
        let deleting = pod.metadata.deletion_timestamp.is_some();
        match spec.node_name.as_deref() {
            None | Some("") if !deleting => self.maybe_bind(&pod).await,
            Some(n) if n == self.node.name => {
                if deleting {
                    self.stop(&uid).await;
                    self.finish_deletion(&pod).await;
                    return;
                }
                let done = pod
                    .status
                    .as_ref()
                    .and_then(|s| s.phase.as_deref())
                    .is_some_and(|p| p == "Succeeded" || p == "Failed");
                if !done && !self.pods.contains_key(&uid) {
                    self.start(pod, uid);
                }
            }
            _ => {}
        }
    }

    /// Binds an unscheduled pod to this node if its `nodeSelector` fits
    /// (a one-node scheduler: taints, affinity and resources are not weighed).
    async fn maybe_bind(&self, pod: &Pod) {
        let spec = pod.spec.clone().unwrap_or_default();
        let scheduler = spec
            .scheduler_name
            .as_deref()
            .unwrap_or("default-scheduler");
        if scheduler != "default-scheduler" {
            return;
        }
        let (Some(name), Some(namespace)) = (&pod.metadata.name, &pod.metadata.namespace) else {
            return;
        };
        let fits = spec
            .node_selector
            .iter()
            .flatten()
            .all(|(k, v)| self.labels[k].as_str() == Some(v.as_str()));
        if !fits {
            tracing::info!(pod = %format!("{namespace}/{name}"), "nodeSelector does not match this node; left unscheduled");
            return;
        }
        if spec.affinity.is_some() {
            tracing::warn!(pod = %format!("{namespace}/{name}"), "affinity is not evaluated by trellis node's scheduler");
        }
        let api: Api<Pod> = Api::namespaced(self.node.client.clone(), namespace);
        let binding = json!({
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": {"name": name, "namespace": namespace, "uid": pod.metadata.uid},
            "target": {"apiVersion": "v1", "kind": "Node", "name": self.node.name},
        });
        match api
            .create_subresource::<_, serde_json::Value>(
                "binding",
                name,
                &PostParams::default(),
                &binding,
            )
            .await
        {
            Ok(_) => {
                tracing::info!(pod = %format!("{namespace}/{name}"), node = %self.node.name, "bound")
            }
            // Bound meanwhile (by another scheduler, or this one's earlier event).
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => {
                tracing::warn!(pod = %format!("{namespace}/{name}"), error = %e, "cannot bind")
            }
        }
    }

    fn start(&mut self, pod: Pod, uid: String) {
        let used: BTreeSet<usize> = self.pods.values().map(|r| r.slot.index).collect();
        let index = (0..).find(|i| !used.contains(i)).unwrap_or(0);
        let id = format!(
            "{}/{}",
            pod.metadata.namespace.as_deref().unwrap_or("default"),
            pod.metadata.name.as_deref().unwrap_or_default()
        );
        let ip = match self.node.network.cidr().pod(index) {
            Ok(ip) => ip,
            Err(e) => {
                tracing::error!(pod = %id, error = %format!("{e:#}"), "no address left for the pod");
                return;
            }
        };
        let slot = Slot { index, ip };
        let (stop, stopped) = watch::channel(false);
        tracing::info!(pod = %id, %ip, "starting pod");
        let task = tokio::spawn(pod::run(self.node.clone(), pod, slot, stopped));
        self.pods.insert(
            uid,
            Running {
                stop,
                task,
                slot,
                id,
            },
        );
    }

    async fn stop(&mut self, uid: &str) {
        if let Some(running) = self.pods.remove(uid) {
            tracing::info!(pod = %running.id, "stopping pod");
            let _ = running.stop.send(true);
            let _ = running.task.await;
        }
    }

    /// A pod being deleted is removed from the API server once its
    /// processes are gone, as a kubelet does (grace period 0, this uid only).
    async fn finish_deletion(&self, pod: &Pod) {
        let (Some(name), Some(namespace)) = (&pod.metadata.name, &pod.metadata.namespace) else {
            return;
        };
        let api: Api<Pod> = Api::namespaced(self.node.client.clone(), namespace);
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: pod.metadata.uid.clone(),
                resource_version: None,
            }),
            ..Default::default()
        };
        match api.delete(name, &params).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
            Err(e) => {
                tracing::warn!(pod = %format!("{namespace}/{name}"), error = %e, "cannot finish deleting the pod")
            }
        }
    }

    async fn stop_all(&mut self) {
        let uids: Vec<String> = self.pods.keys().cloned().collect();
        for uid in uids {
            self.stop(&uid).await;
        }
    }
}
