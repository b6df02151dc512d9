//! The CLI verbs that talk to a running control plane, and `validate`.

use std::path::Path;

use anyhow::{Context, Result, bail};
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
        match client
            .post(&format!("/v1/{verb}?source={}", encode(&name)), text)
            .await
        {
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
            let n = resources
                .iter()
                .filter(|r| !matches!(r, api::Resource::Unsupported { .. }))
                .count();
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

pub async fn get(
    client: &Client,
    kind: &str,
    name: Option<&str>,
    namespace: Option<&str>,
    output: Output,
) -> Result<()> {
    let Some(k) = api::Kind::parse(kind) else {
        bail!("unknown resource kind {kind:?}")
    };
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
    if let Some(n) = name
        && items.is_empty()
    {
        bail!("{k} {n:?} not found");
    }
    let list = json!({ "apiVersion": "v1", "kind": "List", "items": items });
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&list)?),
        Output::Yaml => print!("{}", serde_yaml_ng::to_string(&list)?),
        Output::Table | Output::Wide if k == api::Kind::Pod => {
            print_pods(&items, output == Output::Wide)
        }
        Output::Table | Output::Wide => {
            println!("{:<20} {:<40}", "NAMESPACE", "NAME");
            for i in &items {
                println!(
                    "{:<20} {:<40}",
                    str_at(i, "/metadata/namespace"),
                    str_at(i, "/metadata/name")
                );
            }
        }
    }
    Ok(())
}

fn str_at<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

fn print_pods(items: &[Value], wide: bool) {
    println!(
        "{:<16} {:<40} {:<6} {:<8} {:<15} {}",
        "NAMESPACE",
        "NAME",
        "READY",
        "STATUS",
        "IP",
        if wide { "PORTS  LABELS" } else { "" }
    );
    for p in items {
        let containers = p
            .pointer("/spec/containers")
            .and_then(Value::as_array)
            .map_or(0, Vec::len);
        let sidecar = p
            .pointer("/metadata/annotations/sidecar.istio.io~1status")
            .is_some();
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
    println!(
        "{:<48} {:<9} {:<10} {:<10} {:<10} {:<10}",
        "NAME", "TYPE", "CLUSTERS", "ENDPOINTS", "LISTENERS", "ROUTES"
    );
    for p in status.as_array().into_iter().flatten() {
        let sync = |t: &str| -> String {
            let Some(s) = p.pointer(&format!("/types/{t}")) else {
                return "NOT SENT".into();
            };
            if !p["connected"].as_bool().unwrap_or(false) {
                return "OFFLINE".into();
            }
            if s["nack"].is_string() {
                return "NACK".into();
            }
            if s["sent"] == s["acked"] {
                "SYNCED".into()
            } else {
                "STALE".into()
            }
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
            if let Some(reason) = p
                .pointer(&format!("/types/{t}/nack"))
                .and_then(Value::as_str)
            {
                println!("  {t} rejected: {reason}");
            }
        }
    }
    Ok(())
}

pub const CONFIG_TYPES: [&str; 4] = ["clusters", "endpoints", "listeners", "routes"];

/// `trellis proxy-config <type> <pod[.namespace]>` (istioctl's order) or `<pod> <type>`.
pub async fn proxy_config(client: &Client, a: &str, b: &str, output: Output) -> Result<()> {
    if let Some(pod) = SECRETS.iter().find_map(|s| {
        if a == *s {
            Some(b)
        } else if b == *s {
            Some(a)
        } else {
            None
        }
    }) {
        return proxy_secrets(client, pod, output).await;
    }
    let (kind, pod) = if CONFIG_TYPES.contains(&a) || a == "all" {
        (a, b)
    } else {
        (b, a)
    };
    if !(CONFIG_TYPES.contains(&kind) || kind == "all") {
        bail!(
            "unknown config type {kind:?}: one of clusters, endpoints, listeners, routes, secrets, all"
        );
    }
    let (name, ns) = pod.split_once('.').unwrap_or((pod, "default"));
    let dump = match proxy_admin(client, name, ns).await? {
        Some(admin) => from_proxy(&admin).await?,
        // A proxy whose admin port is unknown: what the control plane would push to it.
        None => {
            client
                .get(&format!(
                    "/debug/config_dump?proxy={}",
                    encode(&format!("{name}.{ns}"))
                ))
                .await?
        }
    };
    let selected = if kind == "all" {
        dump
    } else {
        dump[kind].clone()
    };
    match output {
        Output::Yaml => print!("{}", serde_yaml_ng::to_string(&selected)?),
        Output::Json => println!("{}", serde_json::to_string_pretty(&selected)?),
        Output::Table | Output::Wide => print_config_table(kind, &selected),
    }
    Ok(())
}

/// istioctl's `proxy-config secret`, and the plural the other types use.
const SECRETS: [&str; 2] = ["secrets", "secret"];

/// `trellis proxy-config secrets <pod>`: the proxy's workload certificate and
/// mesh roots, from its admin port (`/certs`). Keys never leave the proxy.
async fn proxy_secrets(client: &Client, pod: &str, output: Output) -> Result<()> {
    let (name, ns) = pod.split_once('.').unwrap_or((pod, "default"));
    let Some(admin) = proxy_admin(client, name, ns).await? else {
        bail!(
            "pod {name}.{ns} has no proxy admin address: its secrets are only known to its proxy"
        );
    };
    let http = reqwest::Client::builder().no_proxy().build()?;
    let dump: Value = http
        .get(format!("http://{admin}/certs"))
        .send()
        .await
        .with_context(|| format!("cannot reach the proxy's admin port at {admin}"))?
        .json()
        .await?;
    match output {
        Output::Yaml => print!("{}", serde_yaml_ng::to_string(&dump)?),
        Output::Json => println!("{}", serde_json::to_string_pretty(&dump)?),
        Output::Table | Output::Wide => {
            let Some(cert) = dump.get("workload").filter(|c| !c.is_null()) else {
                println!("{name}.{ns} has no workload certificate (no mesh mTLS)");
                return Ok(());
            };
            println!(
                "{:<10} {:<60} {:<34} {:<22} {:<22}",
                "RESOURCE", "SPIFFE ID", "SERIAL NUMBER", "NOT BEFORE", "NOT AFTER"
            );
            println!(
                "{:<10} {:<60} {:<34} {:<22} {:<22}",
                "default",
                str_at(cert, "/spiffe_id"),
                str_at(cert, "/serial"),
                str_at(cert, "/not_before"),
                str_at(cert, "/not_after")
            );
            let roots = str_at(&dump, "/roots_pem")
                .matches("BEGIN CERTIFICATE")
                .count();
            println!("{:<10} {roots} trusted root certificate(s)", "ROOTCA");
        }
    }
    Ok(())
}

/// The admin address `trellis up` records on each pod it gives a proxy.
async fn proxy_admin(client: &Client, name: &str, ns: &str) -> Result<Option<String>> {
    let pods = client
        .get(&format!(
            "/v1/resources?kind=Pod&name={}&namespace={}",
            encode(name),
            encode(ns)
        ))
        .await?;
    let Some(pod) = pods.as_array().and_then(|p| p.first()) else {
        bail!("pod {name}.{ns} not found")
    };
    Ok(pod
        .pointer("/metadata/annotations/proxy.trellis.io~1admin")
        .and_then(Value::as_str)
        .map(String::from))
}

/// What the proxy itself has applied, from its admin port, by type.
async fn from_proxy(admin: &str) -> Result<Value> {
    let http = reqwest::Client::builder().no_proxy().build()?;
    let dump: Value = http
        .get(format!("http://{admin}/config_dump"))
        .send()
        .await
        .with_context(|| format!("cannot reach the proxy's admin port at {admin}"))?
        .json()
        .await?;
    let mut out = serde_json::Map::new();
    for t in CONFIG_TYPES {
        let resources = dump
            .pointer(&format!("/configs/{t}/resources"))
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        // Each resource is `{name, version, kind: {<type>: {...}}}`: keep the inner message.
        let inner: Vec<Value> = resources
            .into_iter()
            .filter_map(|r| {
                r.get("kind")
                    .and_then(Value::as_object)
                    .and_then(|k| k.values().next().cloned())
            })
            .collect();
        out.insert(t.to_string(), Value::Array(inner));
    }
    Ok(Value::Object(out))
}

fn print_config_table(kind: &str, v: &Value) {
    let items = v.as_array().cloned().unwrap_or_default();
    match kind {
        "clusters" => {
            println!("{:<60} {:<6} {:<8}", "NAME", "PORT", "SUBSET");
            for c in items {
                println!(
                    "{:<60} {:<6} {:<8}",
                    str_at(&c, "/name"),
                    c["port"],
                    str_at(&c, "/subset")
                );
            }
        }
        "endpoints" => {
            println!("{:<24} {:<10} CLUSTER", "ENDPOINT", "STATUS");
            for c in items {
                for e in c["endpoints"].as_array().into_iter().flatten() {
                    let status = if e["healthy"].as_bool().unwrap_or(false) {
                        "HEALTHY"
                    } else {
                        "UNHEALTHY"
                    };
                    println!(
                        "{:<24} {:<10} {}",
                        format!("{}:{}", str_at(e, "/address"), e["port"]),
                        status,
                        str_at(&c, "/cluster")
                    );
                }
            }
        }
        "listeners" => {
            println!("{:<22} {:<6} {:<10}", "ADDRESS", "PORT", "NAME");
            for l in items {
                println!(
                    "{:<22} {:<6} {:<10}",
                    str_at(&l, "/address"),
                    l["port"],
                    str_at(&l, "/name")
                );
            }
        }
        _ => {
            println!("{:<10} {:<50} {:<30}", "NAME", "VIRTUAL HOST", "ROUTES");
            for rc in items {
                for vh in rc["virtual_hosts"].as_array().into_iter().flatten() {
                    let routes: Vec<&str> = vh["routes"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|r| str_at(r, "/name"))
                        .collect();
                    println!(
                        "{:<10} {:<50} {}",
                        str_at(&rc, "/name"),
                        str_at(vh, "/name"),
                        routes.join(",")
                    );
                }
            }
        }
    }
}
