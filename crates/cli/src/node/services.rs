//! What a node gives its pods of the cluster's Services, in place of
//! kube-proxy and cluster DNS: a Service's ClusterIP and port lead to its
//! ready endpoints (from the EndpointSlices), names resolve to ClusterIPs,
//! and every container gets the `kubernetes` Service's address in
//! `KUBERNETES_SERVICE_HOST`/`PORT`, as a kubelet sets them — so a pod with
//! no sidecar (the control plane, a gateway) reaches Services, and a
//! program in the cluster finds the API server with its service account.
//!
//! The rules live in each pod's own network namespace, not on the host as
//! kube-proxy's do: pods reach each other over the hub's bridge without
//! crossing the host (see `local::netns`), so a DNAT on the host would see
//! only the request, not the reply, and nothing is written outside the
//! namespaces the node made. They are an nftables table whose NAT chain
//! comes after the `nat` table's (priority 100): a connection the capture
//! rules redirect to the sidecar keeps its ClusterIP as its original
//! destination — the sidecar routes by Service, as with kube-proxy — and
//! the sidecar's own connection to that ClusterIP (not captured) is the one
//! translated here. A Service port with no ready endpoint refuses
//! connections (TCP reset), as kube-proxy's rules do.
//!
//! Names come from the pod's `/etc/hosts`, rewritten in place when Services
//! change: `<svc>.<ns>.svc.cluster.local`, `<svc>.<ns>.svc`, `<svc>.<ns>`,
//! and `<svc>` for the pod's own namespace (the search list's short
//! names). No DNS server is needed for the ClusterIP Services the mesh
//! uses; headless Services' pod records and SRV records are not served.
//!
//! The `kubernetes` Service has no endpoint when the API server advertises
//! an address on the host's loopback (as a test cluster's does: the API
//! server refuses to publish a loopback endpoint). Then the node gives its
//! pods the API server it talks to itself, relayed from the node's own
//! address on the pod network — as a kubelet's node reaches its API server
//! whatever the Service says.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;

use anyhow::{Context, Result};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use kube::runtime::reflector::{self, reflector};
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The nftables table written in every pod's namespace.
const TABLE: &str = "trellis-services";

/// The cluster's Services as the node's pods see them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServiceTable {
    services: Vec<ClusterService>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct ClusterService {
    namespace: String,
    name: String,
    cluster_ip: Ipv4Addr,
    ports: Vec<ServicePort>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct ServicePort {
    name: String,
    /// `tcp` or `udp` (nftables' names).
    protocol: &'static str,
    port: u16,
    /// Ready endpoints, as the pods reach them.
    endpoints: Vec<SocketAddrV4>,
}

impl ServiceTable {
    /// The table of `services` (ClusterIP, IPv4) and their ready endpoints
    /// in `slices`; the `kubernetes` Service's port with no endpoint gets
    /// `api_relay`, the node's relay to its API server, if it has one.
    pub fn build(
        services: &[Arc<Service>],
        slices: &[Arc<EndpointSlice>],
        api_relay: Option<SocketAddrV4>,
    ) -> Self {
        let mut out = Vec::new();
        for svc in services {
            let (Some(namespace), Some(name)) = (&svc.metadata.namespace, &svc.metadata.name)
            else {
                continue;
            };
            let Some(spec) = &svc.spec else { continue };
            let Some(cluster_ip) = spec
                .cluster_ip
                .as_deref()
                .and_then(|ip| ip.parse::<Ipv4Addr>().ok())
            else {
                // Headless, ExternalName, or IPv6 only.
                continue;
            };
            let own: Vec<&EndpointSlice> = slices
                .iter()
                .map(|s| s.as_ref())
                .filter(|s| {
                    s.metadata.namespace.as_ref() == Some(namespace)
                        && s.address_type == "IPv4"
                        && s.metadata
                            .labels
                            .as_ref()
                            .and_then(|l| l.get("kubernetes.io/service-name"))
                            == Some(name)
                })
                .collect();
            let mut ports = Vec::new();
            for p in spec.ports.iter().flatten() {
                let protocol = match p.protocol.as_deref().unwrap_or("TCP") {
                    "TCP" => "tcp",
                    "UDP" => "udp",
                    _ => continue,
                };
                let Ok(port) = u16::try_from(p.port) else {
                    continue;
                };
                let pname = p.name.clone().unwrap_or_default();
                let mut endpoints = BTreeSet::new();
                for slice in &own {
                    let Some(target) = slice.ports.iter().flatten().find(|sp| {
                        sp.name.clone().unwrap_or_default() == pname
                            && sp.protocol.as_deref().unwrap_or("TCP")
                                == p.protocol.as_deref().unwrap_or("TCP")
                    }) else {
                        continue;
                    };
                    let Some(target_port) = target.port.and_then(|p| u16::try_from(p).ok()) else {
                        continue;
                    };
                    for e in &slice.endpoints {
                        if e.conditions.as_ref().and_then(|c| c.ready) == Some(false) {
                            continue;
                        }
                        for a in &e.addresses {
                            let Ok(ip) = a.parse::<Ipv4Addr>() else {
                                continue;
                            };
                            endpoints.insert(SocketAddrV4::new(ip, target_port));
                        }
                    }
                }
                if endpoints.is_empty()
                    && namespace == "default"
                    && name == "kubernetes"
                    && pname == "https"
                {
                    endpoints.extend(api_relay);
                }
                ports.push(ServicePort {
                    name: pname,
                    protocol,
                    port,
                    endpoints: endpoints.into_iter().collect(),
                });
            }
            out.push(ClusterService {
                namespace: namespace.clone(),
                name: name.clone(),
                cluster_ip,
                ports,
            });
        }
        out.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        ServiceTable { services: out }
    }

    /// The nftables script that makes a pod's namespace hold exactly this
    /// table's rules (atomically: `nft -f` applies all of it or nothing).
    pub fn nft_script(&self) -> String {
        let mut out =
            format!("table ip {TABLE} {{}}\ndelete table ip {TABLE}\ntable ip {TABLE} {{\n");
        let mut refused = String::new();
        out.push_str("  chain services {\n    type nat hook output priority 100; policy accept;\n");
        for svc in &self.services {
            for p in &svc.ports {
                let matched = format!(
                    "ip daddr {} {} dport {}",
                    svc.cluster_ip, p.protocol, p.port
                );
                match p.endpoints.as_slice() {
                    [] => {
                        let reject = if p.protocol == "tcp" {
                            "reject with tcp reset"
                        } else {
                            "reject"
                        };
                        let _ = writeln!(refused, "    {matched} {reject}");
                    }
                    [one] => {
                        let _ = writeln!(out, "    {matched} dnat to {one}");
                    }
                    many => {
                        let map: Vec<String> = many
                            .iter()
                            .enumerate()
                            .map(|(i, e)| format!("{i} : {} . {}", e.ip(), e.port()))
                            .collect();
                        let _ = writeln!(
                            out,
                            "    {matched} dnat to numgen random mod {} map {{ {} }}",
                            many.len(),
                            map.join(", ")
                        );
                    }
                }
            }
        }
        out.push_str("  }\n");
        out.push_str(
            "  chain no-endpoints {\n    type filter hook output priority 0; policy accept;\n",
        );
        out.push_str(&refused);
        out.push_str("  }\n}\n");
        out
    }

    /// `/etc/hosts` lines naming every Service's ClusterIP, as cluster DNS
    /// would answer a pod in `namespace`.
    pub fn hosts_lines(&self, namespace: &str) -> Vec<String> {
        self.services
            .iter()
            .map(|s| {
                let (name, ns) = (&s.name, &s.namespace);
                let short = if ns == namespace {
                    format!(" {name}")
                } else {
                    String::new()
                };
                format!(
                    "{}\t{name}.{ns}.svc.cluster.local {name}.{ns}.svc {name}.{ns}{short}",
                    s.cluster_ip
                )
            })
            .collect()
    }

    /// The variables a kubelet gives every container for the `kubernetes`
    /// Service (the API server), if it exists.
    pub fn kubernetes_env(&self) -> Vec<(String, String)> {
        let Some(svc) = self
            .services
            .iter()
            .find(|s| s.namespace == "default" && s.name == "kubernetes")
        else {
            return Vec::new();
        };
        let Some(https) = svc
            .ports
            .iter()
            .find(|p| p.name == "https")
            .or(svc.ports.first())
        else {
            return Vec::new();
        };
        let (ip, port) = (svc.cluster_ip, https.port);
        let url = format!("tcp://{ip}:{port}");
        vec![
            ("KUBERNETES_SERVICE_HOST".into(), ip.to_string()),
            ("KUBERNETES_SERVICE_PORT".into(), port.to_string()),
            ("KUBERNETES_SERVICE_PORT_HTTPS".into(), port.to_string()),
            ("KUBERNETES_PORT".into(), url.clone()),
            (format!("KUBERNETES_PORT_{port}_TCP"), url),
            (format!("KUBERNETES_PORT_{port}_TCP_PROTO"), "tcp".into()),
            (format!("KUBERNETES_PORT_{port}_TCP_PORT"), port.to_string()),
            (format!("KUBERNETES_PORT_{port}_TCP_ADDR"), ip.to_string()),
        ]
    }
}

/// Writes `table`'s rules in network namespace `ns`.
pub async fn apply(ns: &str, table: &ServiceTable) -> Result<()> {
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new("ip")
        .args(["netns", "exec", ns, "nft", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("running nft (is nftables installed?)")?;
    let script = table.nft_script();
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(script.as_bytes()).await?;
    }
    let out = child.wait_with_output().await?;
    anyhow::ensure!(
        out.status.success(),
        "nft in {ns}: {}\n{script}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

/// Follows the cluster's Services and EndpointSlices, publishing the table
/// on `tx` from its first complete listing on, until dropped. `api_server`:
/// the API server the node talks to, relayed from `node_ip` for the
/// `kubernetes` Service when it has no endpoint.
pub async fn follow(
    client: kube::Client,
    node_ip: Ipv4Addr,
    api_server: Option<SocketAddr>,
    tx: watch::Sender<Option<Arc<ServiceTable>>>,
) -> Result<()> {
    let mut api_relay = None;
    let mut _relay_task = None;
    if let Some(to) = api_server {
        let from = SocketAddrV4::new(node_ip, to.port());
        let listener = tokio::net::TcpListener::bind(from).await.with_context(|| {
            format!("listening on {from} (the relay to the API server at {to}, for the pods)")
        })?;
        api_relay = Some(from);
        _relay_task = Some(AbortOnDrop(tokio::spawn(relay(listener, to))));
    }
    let (services, svc_writer) = reflector::store::<Service>();
    let (slices, eps_writer) = reflector::store::<EndpointSlice>();
    // Each stream's items say which listing (0: Services, 1: slices) is complete.
    let svc = reflector(
        svc_writer,
        watcher(
            Api::<Service>::all(client.clone()),
            watcher::Config::default(),
        )
        .default_backoff(),
    )
    .map_ok(|e| (0, matches!(e, watcher::Event::InitDone)));
    let eps = reflector(
        eps_writer,
        watcher(
            Api::<EndpointSlice>::all(client),
            watcher::Config::default(),
        )
        .default_backoff(),
    )
    .map_ok(|e| (1, matches!(e, watcher::Event::InitDone)));
    let events = futures::stream::select(svc, eps);
    futures::pin_mut!(events);
    let mut listed = [false, false];
    while let Some(event) = events.next().await {
        match event {
            Ok((which, done)) => listed[which] |= done,
            Err(e) => {
                tracing::warn!(error = %e, "watching Services and EndpointSlices");
                continue;
            }
        }
        if listed != [true, true] {
            continue;
        }
        let table = ServiceTable::build(&services.state(), &slices.state(), api_relay);
        tx.send_if_modified(|current| {
            let changed = current.as_deref() != Some(&table);
            if changed {
                *current = Some(Arc::new(table));
            }
            changed
        });
    }
    Ok(())
}

struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Carries each connection accepted on `listener` to `to`.
async fn relay(listener: tokio::net::TcpListener, to: SocketAddr) {
    loop {
        let Ok((mut inbound, _)) = listener.accept().await else {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            continue;
        };
        tokio::spawn(async move {
            match tokio::net::TcpStream::connect(to).await {
                Ok(mut outbound) => {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
                Err(e) => tracing::warn!(%to, error = %e, "relay: cannot connect"),
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn service(ns: &str, name: &str, ip: &str, ports: serde_json::Value) -> Arc<Service> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"namespace": ns, "name": name},
                "spec": {"clusterIP": ip, "ports": ports},
            }))
            .expect("service"),
        )
    }

    fn slice(
        ns: &str,
        svc: &str,
        ports: serde_json::Value,
        eps: serde_json::Value,
    ) -> Arc<EndpointSlice> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"namespace": ns, "name": format!("{svc}-x"), "labels": {"kubernetes.io/service-name": svc}},
                "addressType": "IPv4",
                "ports": ports,
                "endpoints": eps,
            }))
            .expect("slice"),
        )
    }

    #[test]
    fn ready_endpoints_by_port_name_api_server_relayed_and_none_refused() {
        let services = vec![
            service(
                "default",
                "reviews",
                "10.96.0.20",
                json!([{"name": "http", "port": 9080}]),
            ),
            service(
                "default",
                "kubernetes",
                "10.96.0.1",
                json!([{"name": "https", "port": 443}]),
            ),
            service(
                "istio-system",
                "istiod",
                "10.96.0.30",
                json!([
                    {"name": "grpc-xds", "port": 15010}, {"name": "https-webhook", "port": 443, "targetPort": 15017},
                ]),
            ),
            service("default", "headless", "None", json!([{"port": 80}])),
        ];
        let slices = vec![
            slice(
                "default",
                "reviews",
                json!([{"name": "http", "port": 9080, "protocol": "TCP"}]),
                json!([
                    {"addresses": ["10.1.0.2"], "conditions": {"ready": true}},
                    {"addresses": ["10.1.0.3"], "conditions": {"ready": false}},
                    {"addresses": ["10.1.0.4"]},
                ]),
            ),
            slice(
                "istio-system",
                "istiod",
                json!([{"name": "https-webhook", "port": 15017, "protocol": "TCP"}]),
                json!([
                    {"addresses": ["10.1.0.9"], "conditions": {"ready": true}},
                ]),
            ),
        ];
        // The API server published no endpoint (it advertises a loopback address).
        let relay = SocketAddrV4::new(Ipv4Addr::new(10, 9, 0, 1), 6443);
        let table = ServiceTable::build(&services, &slices, Some(relay));
        let script = table.nft_script();
        assert!(
            script.contains("ip daddr 10.96.0.1 tcp dport 443 dnat to 10.9.0.1:6443"),
            "{script}"
        );
        assert!(script.contains(
            "ip daddr 10.96.0.20 tcp dport 9080 dnat to numgen random mod 2 map { 0 : 10.1.0.2 . 9080, 1 : 10.1.0.4 . 9080 }"
        ), "{script}");
        assert!(
            script.contains("ip daddr 10.96.0.30 tcp dport 443 dnat to 10.1.0.9:15017"),
            "{script}"
        );
        // A port with no ready endpoint (grpc-xds) is refused, not left to time out.
        assert!(
            script.contains("ip daddr 10.96.0.30 tcp dport 15010 reject with tcp reset"),
            "{script}"
        );
        assert!(!script.contains("headless"));

        let hosts = table.hosts_lines("default");
        assert!(hosts.contains(&"10.96.0.20\treviews.default.svc.cluster.local reviews.default.svc reviews.default reviews".to_string()), "{hosts:?}");
        assert!(hosts.contains(&"10.96.0.30\tistiod.istio-system.svc.cluster.local istiod.istio-system.svc istiod.istio-system".to_string()), "{hosts:?}");
        let env = table.kubernetes_env();
        assert!(
            env.contains(&("KUBERNETES_SERVICE_HOST".into(), "10.96.0.1".into())),
            "{env:?}"
        );
        assert!(
            env.contains(&("KUBERNETES_SERVICE_PORT".into(), "443".into())),
            "{env:?}"
        );
    }
}
