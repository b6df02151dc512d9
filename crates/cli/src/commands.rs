//! The CLI verbs that talk to a running control plane, and `validate`.

use std::path::Path;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::client::{Client, encode};
use crate::files;

/// Writes to stdout; an error (a closed pipe: `trellis get pods | head -1`)
/// ends the command, and `main` exits quietly on a broken pipe.
macro_rules! outln {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($t)*)?;
    }};
}

/// Writes `text` to stdout as it is.
pub fn print(text: &str) -> Result<()> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()?;
    Ok(())
}

/// Whether `e` is stdout closing under us, which is not worth a message.
pub fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// A table whose columns are as wide as their widest cell, as kubectl's.
fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let line = |cells: Vec<&str>, out: &mut String| {
        let mut l = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                l.push_str(cell);
            } else {
                l.push_str(&format!("{cell:<w$}   "));
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(headers.to_vec(), &mut out);
    for row in rows {
        line(row.iter().map(String::as_str).collect(), &mut out);
    }
    out
}

/// A proxy config type, as istioctl names them (singular or plural).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigType {
    Clusters,
    Endpoints,
    Listeners,
    Routes,
    Secrets,
    All,
}

impl ConfigType {
    pub const NAMES: &str = "cluster(s), endpoint(s), listener(s), route(s), secret(s), all";

    pub fn parse(s: &str) -> Option<ConfigType> {
        Some(match s.to_ascii_lowercase().as_str() {
            "cluster" | "clusters" => ConfigType::Clusters,
            "endpoint" | "endpoints" => ConfigType::Endpoints,
            "listener" | "listeners" => ConfigType::Listeners,
            "route" | "routes" => ConfigType::Routes,
            "secret" | "secrets" => ConfigType::Secrets,
            "all" => ConfigType::All,
            _ => return None,
        })
    }

    /// The key of the type in a config dump.
    fn key(self) -> &'static str {
        match self {
            ConfigType::Clusters => "clusters",
            ConfigType::Endpoints => "endpoints",
            ConfigType::Listeners => "listeners",
            ConfigType::Routes => "routes",
            ConfigType::Secrets => "secrets",
            ConfigType::All => "all",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Table,
    Wide,
    Json,
    Yaml,
}

/// `trellis apply -f`: every file is sent as one request, validated by the
/// control plane, and stored only if all of its documents are valid.
pub async fn apply(client: &Client, path: &Path, recursive: bool, delete: bool) -> Result<()> {
    let verb = if delete { "delete" } else { "apply" };
    let mut failed = false;
    for file in files::manifest_files(path, recursive)? {
        let text = std::fs::read_to_string(&file)?;
        let name = file.display().to_string();
        if !delete && let Ok(resources) = api::parse(&name, &text) {
            for r in &resources {
                if let Some(warning) = model::analyze::not_enforced(r) {
                    eprintln!("WARNING: {} {}: {warning}", r.kind_name(), r.name());
                }
            }
        }
        match client
            .post(&format!("/v1/{verb}?source={}", encode(&name)), text)
            .await
        {
            Ok(Value::Array(outcomes)) => {
                for o in outcomes {
                    let key = &o["key"];
                    outln!(
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

/// `trellis validate -f`: local, no control plane needed, and the verdicts
/// of `istioctl validate -f` (CI pipelines swap one for the other): Istio's
/// rules on Istio kinds; on Kubernetes kinds only what istioctl checks
/// (Service port names), read as the API server reads them; a document that
/// is not a Kubernetes object is skipped with a note. `trellis apply` and
/// `trellis up` keep the API server's checks on the objects they run.
/// A directory is read with its subfolders, as `istioctl validate -f DIR` does.
pub fn validate(path: &Path) -> Result<()> {
    let files = files::manifest_files(path, true)?;
    let mut problems = Vec::new();
    let (mut count, mut valid) = (0, 0);
    for file in &files {
        let name = file.display().to_string();
        let text = match std::fs::read_to_string(file) {
            Ok(t) => t,
            Err(e) => {
                problems.push(format!("{name}: {e}"));
                continue;
            }
        };
        let (resources, errors) = api::parse_each(&name, &text);
        for e in errors {
            let not_an_object = (e.path == "apiVersion" || e.path == "kind")
                && e.message.starts_with("missing field");
            if not_an_object {
                outln!(
                    "note: document {} of {name} is not a Kubernetes object ({}); skipped",
                    e.document,
                    e.message
                );
            } else {
                problems.push(e.to_string());
            }
        }
        for r in &resources {
            count += 1;
            let errors = api::validate::validate_as_istioctl(r);
            for e in &errors {
                problems.push(format!(
                    "{name}: {} {}: {}: {}",
                    r.kind_name(),
                    r.name(),
                    e.path,
                    e.message
                ));
            }
            if let api::Resource::Unsupported { kind, reason, .. } = r
                && !model::rate_limit::is_translated(r)
            {
                outln!("note: {kind} {}: {reason}", r.name());
            } else if errors.is_empty() {
                valid += 1;
            }
            for warning in api::validate::warnings(r) {
                outln!("warning: {} {}: {warning}", r.kind_name(), r.name());
            }
            if let Some(warning) = model::analyze::not_enforced(r) {
                outln!("warning: {} {}: {warning}", r.kind_name(), r.name());
            }
        }
    }
    if !problems.is_empty() {
        for p in &problems {
            eprintln!("error: {p}");
        }
        bail!("{} problem(s) found", problems.len())
    }
    outln!(
        "read {} file(s) with {count} resource(s) in {}: {valid} valid",
        files.len(),
        path.display()
    );
    Ok(())
}

/// What `trellis get` asks for.
pub struct GetArgs<'a> {
    pub kind: &'a str,
    pub name: Option<&'a str>,
    /// `None`: every namespace.
    pub namespace: Option<&'a str>,
    pub output: Output,
    pub show_secret_data: bool,
}

/// `get` against the running mesh: from its control plane.
pub async fn get(client: &Client, args: &GetArgs<'_>) -> Result<()> {
    let k = parse_kind(args.kind)?;
    let mut query = format!("/v1/resources?kind={}", encode(&k.to_string()));
    if let Some(n) = args.name {
        query.push_str(&format!("&name={}", encode(n)));
    }
    if let Some(ns) = args.namespace {
        query.push_str(&format!("&namespace={}", encode(ns)));
    }
    if args.show_secret_data {
        query.push_str("&showSecretData=true");
    }
    let items = match client.get(&query).await? {
        Value::Array(items) => items,
        _ => Vec::new(),
    };
    show(k, args.name, items, args.output)
}

/// `get` against a cluster: read from its API server as kubectl reads
/// (the user's credentials and RBAC), shown as `get` shows the mesh's.
pub async fn get_from_cluster(cluster: &crate::cluster::Cluster, args: &GetArgs<'_>) -> Result<()> {
    use kube::api::{Api, DynamicObject, ListParams};
    use kube::core::{ApiResource, GroupVersionKind};

    let k = parse_kind(args.kind)?;
    let (client, _) = cluster.connect().await?;
    let api_version = k.default_api_version();
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    let resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(group, version, k.as_str()),
        k.plural(),
    );
    let api: Api<DynamicObject> = match args.namespace {
        Some(ns) if k != api::Kind::Namespace => Api::namespaced_with(client, ns, &resource),
        _ => Api::all_with(client, &resource),
    };
    let objects = match args.name {
        Some(n) => api
            .get_opt(n)
            .await
            .with_context(|| format!("reading {k} {n:?}"))?
            .into_iter()
            .collect(),
        None => {
            api.list(&ListParams::default())
                .await
                .with_context(|| format!("listing {}", k.plural()))?
                .items
        }
    };
    let mut items = Vec::new();
    for object in objects {
        let mut item = serde_json::to_value(object)?;
        // A list's items carry no type; kubectl prints them with it.
        item["apiVersion"] = json!(api_version);
        item["kind"] = json!(k.as_str());
        if let Some(metadata) = item["metadata"].as_object_mut() {
            metadata.remove("managedFields");
        }
        if k == api::Kind::Secret && !args.show_secret_data {
            control::http_api::redact_secret(&mut item);
        }
        items.push(item);
    }
    show(k, args.name, items, args.output)
}

fn parse_kind(kind: &str) -> Result<api::Kind> {
    match api::Kind::parse(kind) {
        Some(k) => Ok(k),
        None => bail!("unknown resource kind {kind:?}"),
    }
}

/// Prints what `get` found, as a table (`pods`: kubectl's columns), JSON
/// or YAML (a `List`).
fn show(k: api::Kind, name: Option<&str>, items: Vec<Value>, output: Output) -> Result<()> {
    if let Some(n) = name
        && items.is_empty()
    {
        bail!("{k} {n:?} not found");
    }
    let list = json!({ "apiVersion": "v1", "kind": "List", "items": items });
    match output {
        Output::Json => outln!("{}", serde_json::to_string_pretty(&list)?),
        Output::Yaml => print(&serde_yaml_ng::to_string(&list)?)?,
        Output::Table | Output::Wide if k == api::Kind::Pod => {
            print(&pods_table(&items, output == Output::Wide))?
        }
        Output::Table | Output::Wide => {
            let rows: Vec<Vec<String>> = items
                .iter()
                .map(|i| {
                    vec![
                        str_at(i, "/metadata/namespace").to_string(),
                        str_at(i, "/metadata/name").to_string(),
                    ]
                })
                .collect();
            print(&table(&["NAMESPACE", "NAME"], &rows))?
        }
    }
    Ok(())
}

fn str_at<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

/// `get pods`: READY and RESTARTS from the containers' statuses the control
/// plane serves (the supervisor's view, the sidecar included).
fn pods_table(items: &[Value], wide: bool) -> String {
    let mut headers = vec!["NAMESPACE", "NAME", "READY", "STATUS", "RESTARTS", "IP"];
    if wide {
        headers.extend(["PORTS", "METRICS", "LABELS"]);
    }
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|p| {
            let containers = p
                .pointer("/spec/containers")
                .and_then(Value::as_array)
                .map_or(0, Vec::len);
            let sidecar = p
                .pointer("/metadata/annotations/sidecar.istio.io~1status")
                .is_some();
            let n = containers + usize::from(sidecar);
            let statuses = p
                .pointer("/status/containerStatuses")
                .and_then(Value::as_array);
            let (ready, restarts, status) = match statuses {
                Some(st) => {
                    let ready = st.iter().filter(|c| c["ready"] == true).count();
                    let restarts: u64 = st.iter().filter_map(|c| c["restartCount"].as_u64()).sum();
                    let waiting = st
                        .iter()
                        .filter_map(|c| c.pointer("/state/waiting/reason")?.as_str())
                        .next();
                    let status = waiting.unwrap_or(str_at(p, "/status/phase")).to_string();
                    (ready, restarts.to_string(), status)
                }
                None => (n, "-".to_string(), str_at(p, "/status/phase").to_string()),
            };
            let mut row = vec![
                str_at(p, "/metadata/namespace").to_string(),
                str_at(p, "/metadata/name").to_string(),
                format!("{ready}/{n}"),
                status,
                restarts,
                str_at(p, "/status/podIP").to_string(),
            ];
            if wide {
                let ports: Vec<String> = p
                    .pointer("/spec/containers")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .flat_map(|c| c["ports"].as_array().cloned().unwrap_or_default())
                    .filter_map(|port| port["containerPort"].as_i64().map(|n| n.to_string()))
                    .collect();
                // The proxy's Prometheus endpoints (15020 merged, 15090 its own).
                let metrics = p
                    .pointer("/metadata/annotations/proxy.trellis.io~1metrics")
                    .and_then(Value::as_str)
                    .map_or_else(|| "-".to_string(), |m| m.replace(' ', ","));
                let labels: Vec<String> = p
                    .pointer("/metadata/labels")
                    .and_then(Value::as_object)
                    .into_iter()
                    .flatten()
                    .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                    .collect();
                row.push(ports.join(","));
                row.push(metrics);
                row.push(labels.join(","));
            }
            row
        })
        .collect();
    table(&headers, &rows)
}

/// `trellis proxy-status`, shaped like istioctl's.
pub async fn proxy_status(client: &Client, output: Output) -> Result<()> {
    let status = client.get("/debug/syncz").await?;
    if matches!(output, Output::Json | Output::Yaml) {
        outln!("{}", serde_json::to_string_pretty(&status)?);
        return Ok(());
    }
    let mut rows = Vec::new();
    let mut rejected = Vec::new();
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
        let id = p["id"].as_str().unwrap_or_default();
        rows.push(vec![
            id.to_string(),
            p["kind"].as_str().unwrap_or_default().to_string(),
            sync("clusters"),
            sync("endpoints"),
            sync("listeners"),
            sync("routes"),
        ]);
        for t in CONFIG_TYPES {
            if let Some(reason) = p
                .pointer(&format!("/types/{t}/nack"))
                .and_then(Value::as_str)
            {
                rejected.push(format!("{id}: {t} rejected: {reason}\n"));
            }
        }
    }
    print(&table(
        &[
            "NAME",
            "TYPE",
            "CLUSTERS",
            "ENDPOINTS",
            "LISTENERS",
            "ROUTES",
        ],
        &rows,
    ))?;
    print(&rejected.concat())
}

pub const CONFIG_TYPES: [&str; 4] = ["clusters", "endpoints", "listeners", "routes"];

/// `trellis proxy-config <type> <pod[.namespace]>` (istioctl's order) or
/// `<pod> <type>`; the type singular or plural, as istioctl takes it.
pub async fn proxy_config(client: &Client, a: &str, b: &str, output: Output) -> Result<()> {
    let (kind, pod) = match (ConfigType::parse(a), ConfigType::parse(b)) {
        (Some(k), _) => (k, b),
        (None, Some(k)) => (k, a),
        (None, None) => bail!(
            "unknown config type {a:?}: one of {} (then the pod)",
            ConfigType::NAMES
        ),
    };
    if kind == ConfigType::Secrets {
        return proxy_secrets(client, pod, output).await;
    }
    let (name, ns) = pod.split_once('.').unwrap_or((pod, "default"));
    // A pod's admin port on a cluster is not reachable from here.
    let admin = if client.is_kube() {
        None
    } else {
        proxy_admin(client, name, ns).await?
    };
    let dump = match admin {
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
    let selected = if kind == ConfigType::All {
        dump
    } else {
        dump[kind.key()].clone()
    };
    match output {
        Output::Yaml => print(&serde_yaml_ng::to_string(&selected)?)?,
        Output::Json => outln!("{}", serde_json::to_string_pretty(&selected)?),
        Output::Table | Output::Wide if kind == ConfigType::All => {
            for t in CONFIG_TYPES {
                outln!("{}:", t.to_uppercase());
                print(&config_table(t, &selected[t]))?;
                outln!();
            }
        }
        Output::Table | Output::Wide => print(&config_table(kind.key(), &selected))?,
    }
    Ok(())
}

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
        Output::Yaml => print(&serde_yaml_ng::to_string(&dump)?)?,
        Output::Json => outln!("{}", serde_json::to_string_pretty(&dump)?),
        Output::Table | Output::Wide => {
            let Some(cert) = dump.get("workload").filter(|c| !c.is_null()) else {
                outln!("{name}.{ns} has no workload certificate (no mesh mTLS)");
                return Ok(());
            };
            let roots = str_at(&dump, "/roots_pem")
                .matches("BEGIN CERTIFICATE")
                .count();
            let rows = vec![
                vec![
                    "default".to_string(),
                    str_at(cert, "/spiffe_id").to_string(),
                    str_at(cert, "/serial").to_string(),
                    str_at(cert, "/not_before").to_string(),
                    str_at(cert, "/not_after").to_string(),
                ],
                vec![
                    "ROOTCA".to_string(),
                    format!("{roots} trusted root certificate(s)"),
                    String::new(),
                    String::new(),
                    String::new(),
                ],
            ];
            print(&table(
                &[
                    "RESOURCE",
                    "SPIFFE ID",
                    "SERIAL NUMBER",
                    "NOT BEFORE",
                    "NOT AFTER",
                ],
                &rows,
            ))?;
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

fn config_table(kind: &str, v: &Value) -> String {
    let items = v.as_array().cloned().unwrap_or_default();
    match kind {
        "clusters" => {
            let rows: Vec<Vec<String>> = items
                .iter()
                .map(|c| {
                    vec![
                        str_at(c, "/name").to_string(),
                        c["port"].to_string(),
                        str_at(c, "/subset").to_string(),
                    ]
                })
                .collect();
            table(&["NAME", "PORT", "SUBSET"], &rows)
        }
        "endpoints" => {
            let mut rows = Vec::new();
            for c in &items {
                for e in c["endpoints"].as_array().into_iter().flatten() {
                    let status = if e["healthy"].as_bool().unwrap_or(false) {
                        "HEALTHY"
                    } else {
                        "UNHEALTHY"
                    };
                    rows.push(vec![
                        format!("{}:{}", str_at(e, "/address"), e["port"]),
                        status.to_string(),
                        str_at(c, "/cluster").to_string(),
                    ]);
                }
            }
            table(&["ENDPOINT", "STATUS", "CLUSTER"], &rows)
        }
        "listeners" => {
            let rows: Vec<Vec<String>> = items
                .iter()
                .map(|l| {
                    vec![
                        str_at(l, "/address").to_string(),
                        l["port"].to_string(),
                        str_at(l, "/name").to_string(),
                    ]
                })
                .collect();
            table(&["ADDRESS", "PORT", "NAME"], &rows)
        }
        _ => {
            let mut rows = Vec::new();
            for rc in &items {
                for vh in rc["virtual_hosts"].as_array().into_iter().flatten() {
                    let routes: Vec<&str> = vh["routes"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|r| str_at(r, "/name"))
                        .collect();
                    rows.push(vec![
                        str_at(rc, "/name").to_string(),
                        str_at(vh, "/name").to_string(),
                        routes.join(","),
                    ]);
                }
            }
            table(&["NAME", "VIRTUAL HOST", "ROUTES"], &rows)
        }
    }
}
