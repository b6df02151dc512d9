//! `trellis describe pod POD [-n NS]`, as `istioctl x describe pod`: the
//! Services that select the pod, the DestinationRule and subset, the
//! VirtualService routes that reach it and with what share, the effective
//! mTLS mode of each port, the AuthorizationPolicies, RequestAuthentications,
//! Telemetry resources and the Sidecar that apply, and for a gateway pod
//! the Gateways it serves with their servers and bound routes — each with
//! why — and whether its proxy is connected and synced.
//!
//! The mesh is read as the control plane reads it — a cluster's API server
//! (`--kubeconfig`/`--context`, the `istio` ConfigMap's mesh config), or the
//! control plane of a mesh `trellis up` runs (its resources, and the
//! `mesh.yaml` of its directory) — built with `model::Mesh::build`, and
//! described by `model::describe`, which selects with the compiler's own code.

use anyhow::{Context as _, Result, bail};
use model::MeshConfig;
use model::describe::{PodDescription, RouteView};
use serde_json::{Value, json};

use crate::client::Client;
use crate::cluster::Cluster;
use crate::commands::{CONFIG_TYPES, Output, print};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// What to describe: `pod` (as istioctl, the only kind).
    #[arg(value_parser = ["pod", "pods", "po"])]
    pub kind: String,
    /// The pod: `NAME`, or `NAME.NAMESPACE` as istioctl takes it.
    pub pod: String,
    /// The pod's namespace (default: the kubeconfig context's on a
    /// cluster, else `default`).
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
    #[arg(short = 'o', long, value_enum, default_value = "table")]
    pub output: Output,
}

/// Where the mesh is read from.
pub enum Source<'a> {
    Cluster(&'a Cluster),
    /// A mesh's control plane (its HTTP API), and the directory `trellis up`
    /// was started from when it is a recorded mesh (for its `mesh.yaml`).
    ControlPlane(&'a Client),
}

pub async fn run(args: &Args, source: Source<'_>) -> Result<()> {
    let (resources, mesh_config, default_ns, status) = match source {
        Source::Cluster(cluster) => {
            let (client, context_ns) = cluster.connect().await?;
            let listed = control::sources::kube::list(&client)
                .await
                .context("reading the cluster")?;
            for (kind, reason) in &listed.forbidden {
                eprintln!("warning: {} not read: {reason}", kind.plural());
            }
            let mesh_config = crate::analyze::cluster_mesh_config(&client).await?;
            let control_plane = Client::kube(client, &cluster.control_plane_proxy());
            let status = control_plane.get("/debug/syncz").await;
            (listed.resources, mesh_config, context_ns, status)
        }
        Source::ControlPlane(client) => {
            let items = match client.get("/v1/resources").await? {
                Value::Array(items) => items,
                other => bail!("the control plane answered {other} for its resources"),
            };
            let mut resources = Vec::with_capacity(items.len());
            // Secrets come redacted, and nothing described needs them.
            for v in items.into_iter().filter(|v| v["kind"] != "Secret") {
                resources.push(
                    api::parse_value("the control plane", v)
                        .context("reading the control plane's resources")?,
                );
            }
            let mesh_config = local_mesh_config(client.base())?;
            let status = client.get("/debug/syncz").await;
            (resources, mesh_config, "default".to_string(), status)
        }
    };
    let (name, namespace) = match (&args.namespace, args.pod.split_once('.')) {
        (Some(ns), _) => (args.pod.as_str(), ns.clone()),
        (None, Some((name, ns))) => (name, ns.to_string()),
        (None, None) => (args.pod.as_str(), default_ns),
    };
    let mesh = model::Mesh::build(&resources, mesh_config);
    let description = model::describe::pod(&mesh, name, &namespace)?;
    let proxy = proxy_line(&description, status);
    let whole = json!({"pod": description, "proxy": proxy});
    match args.output {
        Output::Json => print(&(serde_json::to_string_pretty(&whole)? + "\n")),
        Output::Yaml => print(&serde_yaml_ng::to_string(&whole)?),
        Output::Table | Output::Wide => print(&text(&description, &proxy)),
    }
}

/// The mesh config of the `trellis up` whose API is `api`: its directory's
/// `mesh.yaml`, else Istio's defaults (as `trellis up` runs without one).
fn local_mesh_config(api: &str) -> Result<MeshConfig> {
    let record = crate::meshes::running()
        .into_iter()
        .find(|m| m.api.trim_end_matches('/') == api.trim_end_matches('/'));
    let file = record
        .map(|m| m.dir.join(crate::files::MESH_CONFIG_FILE))
        .filter(|f| f.is_file());
    match file {
        Some(f) => crate::files::mesh_config(&f),
        None => Ok(MeshConfig::default()),
    }
}

/// The pod's proxy as the control plane's sync status shows it.
fn proxy_line(d: &PodDescription, status: Result<Value>) -> String {
    let status = match status {
        Ok(s) => s,
        Err(e) => return format!("unknown: {e}"),
    };
    let id = format!("{}.{}", d.pod, d.namespace);
    let Some(p) = status
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["id"] == id.as_str())
    else {
        return if d.sidecar_injected {
            "not connected: the control plane has never seen this pod's proxy".into()
        } else {
            "none: the pod has no sidecar".into()
        };
    };
    if p["connected"] != true {
        return "not connected (it was; its stream has ended)".into();
    }
    let mut stale = Vec::new();
    for t in CONFIG_TYPES {
        let s = &p["types"][t];
        if let Some(reason) = s["nack"].as_str() {
            stale.push(format!("{t} rejected: {reason}"));
        } else if s.is_null() {
            stale.push(format!("{t} not sent"));
        } else if s["sent"] != s["acked"] {
            stale.push(format!("{t} sent {} but acked {}", s["sent"], s["acked"]));
        }
    }
    if stale.is_empty() {
        format!(
            "connected and SYNCED: the proxy acked the {} it was sent",
            CONFIG_TYPES.join(", ")
        )
    } else {
        format!("connected, not synced: {}", stale.join("; "))
    }
}

fn text(d: &PodDescription, proxy: &str) -> String {
    let mut out = String::new();
    let mut line = |s: String| {
        out.push_str(&s);
        out.push('\n');
    };
    let labels: Vec<String> = d.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let ports: Vec<String> = d.ports.iter().map(u32::to_string).collect();
    line(format!("Pod: {}", d.pod));
    line(format!("   Namespace: {}", d.namespace));
    line(format!("   Workload: {}", d.workload));
    line(format!("   IP: {}", d.ip));
    line(format!("   Service account: {}", d.service_account));
    line(format!("   Labels: {}", labels.join(",")));
    line(format!("   Pod Ports: {}", ports.join(", ")));
    line(format!(
        "   Sidecar: {}",
        if d.sidecar_injected {
            "injected"
        } else {
            "none (not injected: the mesh's config does not act on its inbound traffic)"
        }
    ));
    line(format!("   Proxy: {proxy}"));
    if d.services.is_empty() {
        line("--------------------".into());
        line("No Service selects this pod".into());
    }
    for s in &d.services {
        line("--------------------".into());
        line(format!("Service: {}", s.hostname));
        line(format!("   why: {}", s.why));
        for p in &s.ports {
            let name = p.name.as_deref().unwrap_or("-");
            let target = match p.target_port {
                Some(t) => format!("targets pod port {t}"),
                None => "targets no port of this pod".into(),
            };
            line(format!(
                "   Port: {name} {}/{} {target}",
                p.port, p.protocol
            ));
        }
        match &s.destination_rule {
            None => line("DestinationRule: none (defaults; auto mTLS)".into()),
            Some(r) => {
                line(format!("DestinationRule: {}", r.rule.name));
                line(format!("   why: {}", r.rule.why));
                if !r.matching_subsets.is_empty() || !r.other_subsets.is_empty() {
                    line(format!(
                        "   Matching subsets: {}",
                        or_none(&r.matching_subsets.join(","))
                    ));
                    if !r.other_subsets.is_empty() {
                        line(format!(
                            "      (Non-matching subsets {})",
                            r.other_subsets.join(",")
                        ));
                    }
                }
                line(format!("   Policies: {}", or_none(&r.policies.join(", "))));
                for (port, mode) in &r.tls {
                    line(format!("   Traffic Policy TLS Mode (port {port}): {mode}"));
                }
            }
        }
        match &s.virtual_service {
            None => {
                line("VirtualService: none (every request to the service, all its pods)".into())
            }
            Some(v) => {
                line(format!("VirtualService: {}", v.virtual_service.name));
                line(format!("   why: {}", v.virtual_service.why));
                let short = s.hostname.split('.').next().unwrap_or(&s.hostname);
                for r in &v.routes {
                    route_lines(&mut line, r, short);
                }
            }
        }
    }
    line("--------------------".into());
    line("Effective PeerAuthentication:".into());
    for m in &d.mtls {
        let what = if m.port == 0 {
            "Workload mTLS mode".to_string()
        } else {
            format!("Port {}", m.port)
        };
        line(format!("   {what}: {} ({})", m.mode, m.why));
    }
    if d.authorization_policies.is_empty() {
        line("AuthorizationPolicies: none (every request is allowed)".into());
    } else {
        line("AuthorizationPolicies:".into());
        for p in &d.authorization_policies {
            let rules = match p.rules {
                1 => "1 rule".to_string(),
                n => format!("{n} rules"),
            };
            let dry = if p.dry_run {
                ", dry-run: not enforced"
            } else {
                ""
            };
            line(format!(
                "   {} {}: {rules}{dry} ({})",
                p.action, p.policy.name, p.policy.why
            ));
        }
    }
    if d.request_authentications.is_empty() {
        line("RequestAuthentications: none (no JWT is validated)".into());
    } else {
        line("RequestAuthentications:".into());
        for p in &d.request_authentications {
            line(format!(
                "   {}: issuers {} ({})",
                p.policy.name,
                or_none(&p.issuers.join(", ")),
                p.policy.why
            ));
        }
    }
    if d.telemetries.is_empty() {
        line("Telemetry: none (mesh config's defaults)".into());
    } else {
        line("Telemetry (least specific first; a more specific level overrides):".into());
        for t in &d.telemetries {
            line(format!(
                "   {} [{}]: {} ({})",
                t.telemetry.name,
                t.level,
                or_none(&t.sets.join("; ")),
                t.telemetry.why
            ));
        }
    }
    match &d.sidecar {
        None if !d.gateways.is_empty() => {}
        None => line("Sidecar resource: none (the proxy sees every exported service)".into()),
        Some(s) => line(format!("Sidecar resource: {} ({})", s.name, s.why)),
    }
    for g in &d.gateways {
        line("--------------------".into());
        line(format!("Gateway: {}", g.gateway.name));
        line(format!("   why: {}", g.gateway.why));
        for s in &g.servers {
            let tls = s
                .tls
                .as_deref()
                .map(|t| format!(", TLS {t}"))
                .unwrap_or_default();
            line(format!(
                "   Server {} {}/{} (pod port {}), hosts {}{tls}",
                or_none(&s.name),
                s.port,
                s.protocol,
                s.listen_port,
                s.hosts.join(",")
            ));
            if s.virtual_services.is_empty() {
                line("      VirtualService: none bound (the server answers 404)".into());
            }
            for v in &s.virtual_services {
                line(format!(
                    "      VirtualService: {} ({})",
                    v.virtual_service.name, v.virtual_service.why
                ));
                for r in &v.routes {
                    let matches = if r.matches.is_empty() {
                        "any request".to_string()
                    } else {
                        r.matches.join(" | ")
                    };
                    let to: Vec<String> = r
                        .destinations
                        .iter()
                        .map(|d| {
                            let subset = if d.subset.is_empty() {
                                String::new()
                            } else {
                                format!(" subset {}", d.subset)
                            };
                            format!(
                                "{}:{}{subset} {}%",
                                d.host,
                                d.port,
                                (d.percent * 10.0).round() / 10.0
                            )
                        })
                        .collect();
                    line(format!(
                        "         Route {} ({matches}) → {}",
                        r.name,
                        or_none(&to.join(", "))
                    ));
                }
            }
        }
    }
    out
}

fn route_lines(line: &mut impl FnMut(String), r: &RouteView, service: &str) {
    let matches = if r.matches.is_empty() {
        "any request".to_string()
    } else {
        r.matches.join(" | ")
    };
    let share = |p: f64| format!("{}%", (p * 10.0).round() / 10.0);
    line(format!(
        "   Route {} (port {}, {matches}): {} to this pod",
        r.name,
        r.port,
        share(r.percent_to_pod)
    ));
    for d in &r.destinations {
        let subset = if d.subset.is_empty() {
            String::new()
        } else {
            format!(" subset {}", d.subset)
        };
        let mut text = format!("      {} {}{subset}: {}", d.host, d.port, share(d.percent));
        if d.to_pod && !d.subset.is_empty() {
            text.push_str(&format!(
                " — this pod is in subset {}, which gets {} of {service}",
                d.subset,
                share(d.percent)
            ));
        } else if d.to_pod {
            text.push_str(" — this pod is one of its endpoints");
        }
        line(text);
    }
}

fn or_none(s: &str) -> &str {
    if s.is_empty() { "none" } else { s }
}
