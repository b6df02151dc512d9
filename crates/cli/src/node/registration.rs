//! The Node object and its heartbeat, as a kubelet keeps them: the Node
//! registered with a Ready condition, its capacity and addresses, and a
//! Lease in `kube-node-lease` renewed every 10 s, by which the node
//! lifecycle controller knows the node is alive (it taints and evicts a
//! node whose Lease goes stale for 40 s).

use std::net::Ipv4Addr;
use std::time::Duration;

use anyhow::{Context, Result};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::{Value, json};

/// The namespace of the nodes' Leases.
const LEASE_NAMESPACE: &str = "kube-node-lease";
const LEASE_SECONDS: i32 = 40;
const RENEW_EVERY: Duration = Duration::from_secs(10);
/// How often the Node's status (its Ready heartbeat) is rewritten; the
/// Lease says "alive" in between, as with a kubelet.
const STATUS_EVERY: Duration = Duration::from_secs(60);
/// The kubelet's default pod capacity.
const MAX_PODS: u32 = 110;

/// What the agent says about its node.
#[derive(Clone, Debug)]
pub struct NodeInfo {
    pub name: String,
    /// The node's address: the host's end of the pod network.
    pub ip: Ipv4Addr,
    pub pod_cidr: String,
}

impl NodeInfo {
    /// The labels a kubelet puts on its Node (and which `nodeSelector`s use).
    pub fn labels(&self) -> Value {
        json!({
            "kubernetes.io/hostname": self.name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": arch(),
            "beta.kubernetes.io/os": "linux",
            "beta.kubernetes.io/arch": arch(),
        })
    }

    fn status(&self) -> Value {
        let now = super::now();
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let memory = memory_kib().map_or_else(|| "1Gi".to_string(), |k| format!("{k}Ki"));
        let capacity =
            json!({"cpu": cpus.to_string(), "memory": memory, "pods": MAX_PODS.to_string()});
        let condition = |kind: &str, status: &str, reason: &str, message: &str| {
            json!({"type": kind, "status": status, "reason": reason, "message": message,
                   "lastHeartbeatTime": now, "lastTransitionTime": now})
        };
        json!({
            "capacity": capacity,
            "allocatable": capacity,
            "conditions": [
                condition("MemoryPressure", "False", "KubeletHasSufficientMemory", "trellis node does not measure memory pressure"),
                condition("DiskPressure", "False", "KubeletHasNoDiskPressure", "trellis node does not measure disk pressure"),
                condition("PIDPressure", "False", "KubeletHasSufficientPID", "trellis node does not measure PID pressure"),
                condition("Ready", "True", "KubeletReady", "trellis node is running pods as local processes"),
            ],
            // No Hostname address: the API server would prefer it to reach
            // the kubelet API, and the node's name need not resolve.
            "addresses": [{"type": "InternalIP", "address": self.ip.to_string()}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": super::kubelet_api::PORT}},
            "nodeInfo": {
                "architecture": arch(),
                "bootID": read_trimmed("/proc/sys/kernel/random/boot_id"),
                "containerRuntimeVersion": format!("trellis://{}", env!("CARGO_PKG_VERSION")),
                "kernelVersion": read_trimmed("/proc/sys/kernel/osrelease"),
                "kubeProxyVersion": "",
                "kubeletVersion": format!("v0.0.0-trellis.{}", env!("CARGO_PKG_VERSION")),
                "machineID": read_trimmed("/etc/machine-id"),
                "operatingSystem": "linux",
                "osImage": "trellis node",
                "systemUUID": "",
            },
        })
    }
}

fn arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

fn read_trimmed(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

fn memory_kib() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Creates the Node (or takes over one of the same name, as a restarted
/// kubelet does) and writes its status.
pub async fn register(client: &kube::Client, node: &NodeInfo) -> Result<()> {
    let nodes: Api<Node> = Api::all(client.clone());
    let object: Node = serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": node.name, "labels": node.labels()},
        "spec": {"podCIDR": node.pod_cidr, "podCIDRs": [node.pod_cidr]},
    }))?;
    match nodes.create(&PostParams::default(), &object).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {
            nodes
                .patch(
                    &node.name,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"metadata": {"labels": node.labels()}})),
                )
                .await
                .with_context(|| format!("updating Node {}", node.name))?;
        }
        Err(e) => return Err(e).with_context(|| format!("registering Node {}", node.name)),
    }
    write_status(&nodes, node).await
}

async fn write_status(nodes: &Api<Node>, node: &NodeInfo) -> Result<()> {
    nodes
        .patch_status(
            &node.name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": node.status()})),
        )
        .await
        .with_context(|| format!("writing Node {}'s status", node.name))?;
    Ok(())
}

/// Renews the node's Lease every 10 s and its status every minute, until
/// the task is dropped. Failures are logged and retried: the API server
/// may be away for a while, as it may for a kubelet.
pub async fn heartbeat(client: kube::Client, node: NodeInfo) {
    let nodes: Api<Node> = Api::all(client.clone());
    let leases: Api<Lease> = Api::namespaced(client, LEASE_NAMESPACE);
    let mut last_status = tokio::time::Instant::now();
    loop {
        if let Err(e) = renew(&nodes, &leases, &node).await {
            tracing::warn!(node = %node.name, error = %format!("{e:#}"), "cannot renew the node's Lease");
        }
        if last_status.elapsed() >= STATUS_EVERY {
            match write_status(&nodes, &node).await {
                Ok(()) => last_status = tokio::time::Instant::now(),
                Err(e) => {
                    tracing::warn!(node = %node.name, error = %format!("{e:#}"), "cannot write the node's status")
                }
            }
        }
        tokio::time::sleep(RENEW_EVERY).await;
    }
}

async fn renew(nodes: &Api<Node>, leases: &Api<Lease>, node: &NodeInfo) -> Result<()> {
    let now = super::now_micros();
    let spec = json!({"holderIdentity": node.name, "leaseDurationSeconds": LEASE_SECONDS, "renewTime": now});
    match leases
        .patch(
            &node.name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": spec})),
        )
        .await
    {
        Ok(_) => return Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => {}
        Err(e) => return Err(e.into()),
    }
    // First beat: the Lease, owned by the Node so that it goes with it.
    let uid = nodes
        .get(&node.name)
        .await?
        .metadata
        .uid
        .unwrap_or_default();
    let lease: Lease = serde_json::from_value(json!({
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {
            "name": node.name,
            "namespace": LEASE_NAMESPACE,
            "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": node.name, "uid": uid}],
        },
        "spec": spec,
    }))?;
    leases.create(&PostParams::default(), &lease).await?;
    Ok(())
}
