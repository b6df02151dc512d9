//! The CLI verbs that talk to a running control plane, and `validate`.

use std::path::Path;

use anyhow::{Result, bail};
use serde_json::{Value, json};

use crate::client::{Client, encode};
use crate::files;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Table,
    Wide,
    Json,
    Yaml,
}

/// `trellis apply -f`: every file is sent as one request, validated by the
/// control plane, and stored only if all of its documents are valid.
pub async fn apply(client: &Client, path: &Path, delete: bool) -> Result<()> {
    let verb = if delete { "delete" } else { "apply" };
    let mut failed = false;
    for file in files::manifest_files(path)? {
        let text = std::fs::read_to_string(&file)?;
        let name = file.display().to_string();
        match client.post(&format!("/v1/{verb}?source={}", encode(&name)), text).await {
            Ok(Value::Array(outcomes)) => {
                for o in outcomes {
                    let key = &o["key"];
                    println!(
                        "{}/{} {}",
                        key["kind"].as_str().unwrap_or_default().to_lowercase(),
                        key["name"].as_str().unwrap_or_default(),
                        o["result"].as_str().unwrap_or_default()
                    );
                }
            }
            Ok(_) => {}
            Err(e) => {
                eprintln!("error: {e:#}");
                failed = true;
            }
        }
    }
    if failed {
        bail!("{verb} failed; nothing from the failed files was changed");
    }
    Ok(())
}

/// `trellis validate -f`: local, no control plane needed.
pub fn validate(path: &Path) -> Result<()> {
    match files::load_valid(path) {
        Ok(resources) => {
            for r in &resources {
                if let api::Resource::Unsupported { kind, reason, .. } = r {
                    println!("note: {kind} {}: {reason}", r.name());
                }
            }
            let n = resources.iter().filter(|r| !matches!(r, api::Resource::Unsupported { .. })).count();
            println!("{n} resource(s) valid in {}", path.display());
            Ok(())
        }
        Err(problems) => {
            for p in &problems {
                eprintln!("error: {p}");
            }
            bail!("{} problem(s) found", problems.len())
        }
    }
}

pub async fn get(client: &Client, kind: &str, name: Option<&str>, namespace: Option<&str>, output: Output) -> Result<()> {
    let Some(k) = api::Kind::parse(kind) else { bail!("unknown resource kind {kind:?}") };
    let mut query = format!("/v1/resources?kind={}", encode(&k.to_string()));
    if let Some(n) = name {
        query.push_str(&format!("&name={}", encode(n)));
    }
    if let Some(ns) = namespace {
        query.push_str(&format!("&namespace={}", encode(ns)));
    }
    let items = match client.get(&query).await? {
        Value::Array(items) => items,
        _ => Vec::new(),
    };
    if let Some(n) = name {
        if items.is_empty() {
            bail!("{k} {n:?} not found");
        }
    }
    let list = json!({ "apiVersion": "v1", "kind": "List", "items": items });
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&list)?),
        Output::Yaml => print!("{}", serde_yaml_ng::to_string(&list)?),
        Output::Table | Output::Wide if k == api::Kind::Pod => print_pods(&items, output == Output::Wide),
        Output::Table | Output::Wide => {
            println!("{:<20} {:<40}", "NAMESPACE", "NAME");
            for i in &items {
                println!("{:<20} {:<40}", str_at(i, "/metadata/namespace"), str_at(i, "/metadata/name"));
            }
        }
    }
    Ok(())
}

fn str_at<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

fn print_pods(items: &[Value], wide: bool) {
    println!("{:<16} {:<40} {:<6} {:<8} {:<15} {}", "NAMESPACE", "NAME", "READY", "STATUS", "IP", if wide { "PORTS  LABELS" } else { "" });
    for p in items {
        let containers = p.pointer("/spec/containers").and_then(Value::as_array).map_or(0, Vec::len);
        let sidecar = p.pointer("/metadata/annotations/sidecar.istio.io~1status").is_some();
        let n = containers + usize::from(sidecar);
        let mut line = format!(
            "{:<16} {:<40} {:<6} {:<8} {:<15}",
            str_at(p, "/metadata/namespace"),
            str_at(p, "/metadata/name"),
            format!("{n}/{n}"),
            str_at(p, "/status/phase"),
            str_at(p, "/status/podIP"),
        );
        if wide {
            let ports: Vec<String> = p
                .pointer("/spec/containers")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .flat_map(|c| c["ports"].as_array().cloned().unwrap_or_default())
                .filter_map(|port| port["containerPort"].as_i64().map(|n| n.to_string()))
                .collect();
            let labels: Vec<String> = p
                .pointer("/metadata/labels")
                .and_then(Value::as_object)
                .into_iter()
                .flatten()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                .collect();
            line.push_str(&format!(" {}  {}", ports.join(","), labels.join(",")));
        }
        println!("{}", line.trim_end());
    }
}

/// `trellis proxy-status`, shaped like istioctl's.
pub async fn proxy_status(client: &Client, output: Output) -> Result<()> {
    let status = client.get("/debug/syncz").await?;
    if matches!(output, Output::Json | Output::Yaml) {
        println!("{}", serde_json::to_string_pretty(&status)?);
        return Ok(());
    }
    println!("{:<48} {:<9} {:<10} {:<10} {:<10} {:<10}", "NAME", "TYPE", "CLUSTERS", "ENDPOINTS", "LISTENERS", "ROUTES");
    for p in status.as_array().into_iter().flatten() {
        let sync = |t: &str| -> String {
            let Some(s) = p.pointer(&format!("/types/{t}")) else { return "NOT SENT".into() };
            if !p["connected"].as_bool().unwrap_or(false) {
                return "OFFLINE".into();
            }
            if s["nack"].is_string() {
                return "NACK".into();
            }
            if s["sent"] == s["acked"] { "SYNCED".into() } else { "STALE".into() }
        };
        println!(
            "{:<48} {:<9} {:<10} {:<10} {:<10} {:<10}",
            p["id"].as_str().unwrap_or_default(),
            p["kind"].as_str().unwrap_or_default(),
            sync("clusters"),
            sync("endpoints"),
            sync("listeners"),
            sync("routes")
        );
        for t in ["clusters", "endpoints", "listeners", "routes"] {
            if let Some(reason) = p.pointer(&format!("/types/{t}/nack")).and_then(Value::as_str) {
                println!("  {t} rejected: {reason}");
            }
        }
    }
    Ok(())
}

pub const CONFIG_TYPES: [&str; 4] = ["clusters", "endpoints", "listeners", "routes"];

/// `trellis proxy-config <type> <pod[.namespace]>` (istioctl's order) or `<pod> <type>`.
pub async fn proxy_config(client: &Client, a: &str, b: &str, output: Output) -> Result<()> {
    let (kind, pod) = if CONFIG_TYPES.contains(&a) || a == "all" { (a, b) } else { (b, a) };
    if !(CONFIG_TYPES.contains(&kind) || kind == "all") {
        bail!("unknown config type {kind:?}: one of clusters, endpoints, listeners, routes, all");
    }
    let id = if pod.contains('.') { pod.to_string() } else { format!("{pod}.default") };
    let dump = client.get(&format!("/debug/config_dump?proxy={}", encode(&id))).await?;
    let selected = if kind == "all" { dump } else { dump[kind].clone() };
    match output {
        Output::Yaml => print!("{}", serde_yaml_ng::to_string(&selected)?),
        Output::Json => println!("{}", serde_json::to_string_pretty(&selected)?),
        Output::Table | Output::Wide => print_config_table(kind, &selected),
    }
    Ok(())
}

fn print_config_table(kind: &str, v: &Value) {
    let items = v.as_array().cloned().unwrap_or_default();
    match kind {
        "clusters" => {
            println!("{:<60} {:<6} {:<8}", "NAME", "PORT", "SUBSET");
            for c in items {
                println!("{:<60} {:<6} {:<8}", str_at(&c, "/name"), c["port"], str_at(&c, "/subset"));
            }
        }
        "endpoints" => {
            println!("{:<24} {:<10} {}", "ENDPOINT", "STATUS", "CLUSTER");
            for c in items {
                for e in c["endpoints"].as_array().into_iter().flatten() {
                    let status = if e["healthy"].as_bool().unwrap_or(false) { "HEALTHY" } else { "UNHEALTHY" };
                    println!("{:<24} {:<10} {}", format!("{}:{}", str_at(e, "/address"), e["port"]), status, str_at(&c, "/cluster"));
                }
            }
        }
        "listeners" => {
            println!("{:<22} {:<6} {:<10}", "ADDRESS", "PORT", "NAME");
            for l in items {
                println!("{:<22} {:<6} {:<10}", str_at(&l, "/address"), l["port"], str_at(&l, "/name"));
            }
        }
        _ => {
            println!("{:<10} {:<50} {:<30}", "NAME", "VIRTUAL HOST", "ROUTES");
            for rc in items {
                for vh in rc["virtual_hosts"].as_array().into_iter().flatten() {
                    let routes: Vec<&str> = vh["routes"].as_array().into_iter().flatten().map(|r| str_at(r, "/name")).collect();
                    println!("{:<10} {:<50} {}", str_at(&rc, "/name"), str_at(vh, "/name"), routes.join(","));
                }
            }
        }
    }
}
