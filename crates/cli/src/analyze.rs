//! `trellis analyze [DIR|FILE ...]`: runs the cross-resource checks of
//! `model::analyze` over files, with istioctl analyze's flags, output
//! formats and exit codes, so scripts written for one work with the other.
//! With `-k` it analyzes the live cluster (as kubectl: `--kubeconfig`,
//! `--context`, `-n`, `-A`), files given too applied over it; objects the
//! cluster stores that do not validate are reported as istioctl does,
//! `IST0106 SchemaValidationError`.

use std::collections::{BTreeSet, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};
use model::MeshConfig;
use model::analyze::{self, Level, Message, messages};
use serde::Serialize;

use crate::cluster::Cluster;
use crate::files;

/// istioctl's exit code when analyzers find issues at or above the failure threshold.
pub const EXIT_ISSUES_FOUND: i32 = 79;
/// istioctl's exit code (sysexits' EX_DATAERR) when some input could not be
/// parsed and nothing worse was found.
pub const EXIT_PARSE_ERRORS: i32 = 65;

/// The mesh settings file `trellis up` reads from a manifest directory; it is
/// not a Kubernetes object, so it is not analyzed as one.
const MESH_CONFIG_FILE: &str = "mesh.yaml";

#[derive(clap::Args, Debug)]
pub struct AnalyzeArgs {
    /// Files or directories to analyze (directories with their subfolders,
    /// as istioctl reads them). Default: the current directory.
    pub paths: Vec<PathBuf>,
    /// A file or directory to analyze; may be repeated.
    #[arg(short = 'f', long = "filename")]
    pub filenames: Vec<PathBuf>,
    /// Output format: log lines, or a JSON/YAML list shaped like istioctl's.
    #[arg(short = 'o', long, value_enum, default_value = "log")]
    pub output: Format,
    /// Exit with 79 when a message at or above this level is found (log
    /// output only, as istioctl: with `-o json|yaml` the exit code is 0).
    #[arg(long, value_enum, ignore_case = true, default_value = "Error")]
    pub failure_threshold: Threshold,
    /// Print only messages at or above this level.
    #[arg(long, value_enum, ignore_case = true, default_value = "Info")]
    pub output_threshold: Threshold,
    /// Suppress a message code on a resource: `CODE=Kind name.namespace`,
    /// with `*` matching any text (`IST0102=Namespace *`). May be repeated.
    #[arg(short = 'S', long)]
    pub suppress: Vec<String>,
    /// Do not fail (exit 65) on documents that cannot be parsed.
    #[arg(long)]
    pub ignore_unknown: bool,
    /// MeshConfig YAML (rootNamespace, trustDomain, ...); default: `mesh.yaml`
    /// in the analyzed directory, else Istio's defaults.
    #[arg(long = "meshConfigFile", alias = "mesh-config-file")]
    pub mesh_config_file: Option<PathBuf>,
    /// Analyze the live cluster (--kubeconfig, --context), with the files
    /// given applied over it; its mesh config is the `istio` ConfigMap.
    #[arg(short = 'k', long = "use-kube")]
    pub use_kube: bool,
    /// With -k: report on this namespace (default: the context's).
    #[arg(short = 'n', long, requires = "use_kube")]
    pub namespace: Option<String>,
    /// With -k: report on every namespace.
    #[arg(short = 'A', long, requires = "use_kube", conflicts_with = "namespace")]
    pub all_namespaces: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Log,
    Json,
    Yaml,
}

/// A level as istioctl's flags spell it (`Error`, `Warning`, `Info`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Threshold {
    #[value(name = "Info")]
    Info,
    #[value(name = "Warning")]
    Warning,
    #[value(name = "Error")]
    Error,
}

impl Threshold {
    fn level(self) -> Level {
        match self {
            Threshold::Info => Level::Info,
            Threshold::Warning => Level::Warning,
            Threshold::Error => Level::Error,
        }
    }
}

/// One message in istioctl's JSON/YAML shape.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Entry<'a> {
    code: &'a str,
    documentation_url: String,
    level: &'a str,
    message: &'a str,
    origin: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    reference: Option<&'a str>,
}

/// `--suppress CODE=RESOURCE`: the code, and a pattern for the resource
/// name in which `*` matches any text.
struct Suppression {
    code: String,
    resource: String,
}

impl Suppression {
    fn parse(s: &str) -> Result<Suppression> {
        let parts: Vec<&str> = s.split('=').collect();
        let [code, resource] = parts[..] else {
            bail!("{s} is not a valid suppression value. See trellis analyze --help");
        };
        if !messages::ALL.iter().any(|t| t.code == code) {
            eprintln!(
                "Warning: Supplied message code '{code}' is an unknown message code and will not have any effect."
            );
        }
        Ok(Suppression {
            code: code.to_string(),
            resource: resource.to_string(),
        })
    }

    /// Whether this silences `m`. The resource is matched as Trellis names
    /// it (`Kind name.namespace`, as released istioctl versions do) and as
    /// newer istioctl versions name it (`Kind namespace/name`).
    fn silences(&self, m: &Message) -> bool {
        if self.code != m.code {
            return false;
        }
        let slashed = m.resource.split_once(' ').and_then(|(kind, full)| {
            let (name, ns) = full.rsplit_once('.')?;
            Some(format!("{kind} {ns}/{name}"))
        });
        glob(&self.resource, &m.resource) || slashed.is_some_and(|r| glob(&self.resource, &r))
    }
}

/// Whether `text` matches `pattern`, where `*` stands for any run of characters.
fn glob(pattern: &str, text: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    let tail: Vec<&str> = parts.collect();
    let Some((last, middle)) = tail.split_last() else {
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// Runs the verb; returns the process exit code as istioctl's: 0; 79 when
/// issues at or above the failure threshold were found; 65 when some
/// document could not be parsed and nothing reached the threshold. A
/// resource that breaks Istio's rules is a message (IST0106) and the rest
/// is still analyzed.
pub async fn run(args: &AnalyzeArgs, cluster: &Cluster) -> Result<i32> {
    let mut paths: Vec<PathBuf> = args.paths.iter().chain(&args.filenames).cloned().collect();
    if paths.is_empty() && !args.use_kube {
        paths.push(PathBuf::from("."));
    }
    let suppressions = args
        .suppress
        .iter()
        .map(|s| Suppression::parse(s))
        .collect::<Result<Vec<_>>>()?;
    let input = load(&paths)?;
    let (mut messages, target) = if args.use_kube {
        let live = live(args, cluster, input.resources).await?;
        (live.messages, live.target)
    } else {
        let mesh = mesh_config(args, &paths)?;
        let target = target(&input.resources);
        let mut messages = analyze::analyze(&input.resources, &mesh);
        // Files are read by the proxies on this machine (`trellis up`): a
        // DestinationRule's TLS file they cannot read fails its cluster.
        messages.extend(analyze::unreadable_files(&input.resources, &mesh, |path| {
            std::fs::File::open(path)
                .map(drop)
                .map_err(|e| e.to_string())
        }));
        (messages, target)
    };
    messages.extend(input.undecodable);
    messages.retain(|m| !suppressions.iter().any(|s| s.silences(m)));
    messages
        .sort_by(|a, b| (&a.resource, a.code, &a.message).cmp(&(&b.resource, b.code, &b.message)));
    messages.dedup();
    let shown: Vec<&Message> = messages
        .iter()
        .filter(|m| m.level >= args.output_threshold.level())
        .collect();
    let sources = &input.sources;

    let mut stdout = std::io::stdout().lock();
    match args.output {
        Format::Log => {
            for m in &shown {
                let reference = sources
                    .get(&m.resource)
                    .map(|f| format!(" {f}"))
                    .unwrap_or_default();
                writeln!(
                    stdout,
                    "{} [{}] ({}{reference}) {}",
                    m.level, m.code, m.resource, m.message
                )?;
            }
            if shown.is_empty() {
                if input.parse_errors == 0 {
                    eprintln!("\u{2714} No validation issues found when analyzing {target}.");
                } else {
                    let files = if input.parse_errors == 1 {
                        "file"
                    } else {
                        "files"
                    };
                    eprintln!(
                        "No validation issues found when analyzing {target} (but {} {files} could not be parsed).",
                        input.parse_errors
                    );
                }
            }
        }
        Format::Json | Format::Yaml => {
            let entries: Vec<Entry<'_>> = shown
                .iter()
                .map(|m| Entry {
                    code: m.code,
                    documentation_url: messages::documentation_url(m.code),
                    level: m.level.as_str(),
                    message: &m.message,
                    origin: &m.resource,
                    reference: sources.get(&m.resource).map(String::as_str),
                })
                .collect();
            if args.output == Format::Json {
                writeln!(stdout, "{}", serde_json::to_string_pretty(&entries)?)?;
            } else {
                write!(stdout, "{}", serde_yaml_ng::to_string(&entries)?)?;
            }
            // istioctl decides its exit code from the log output only.
            stdout.flush()?;
            return Ok(0);
        }
    }
    stdout.flush()?;

    if messages
        .iter()
        .any(|m| m.level >= args.failure_threshold.level())
    {
        eprintln!("Error: Analyzers found issues when analyzing {target}.");
        eprintln!(
            "See https://istio.io/latest/docs/reference/config/analysis for more information about causes and resolutions."
        );
        return Ok(EXIT_ISSUES_FOUND);
    }
    if input.parse_errors > 0 && !args.ignore_unknown {
        eprintln!("Error: Some files couldn't be parsed.");
        return Ok(EXIT_PARSE_ERRORS);
    }
    Ok(0)
}

/// What [`load`] read.
struct Input {
    resources: Vec<api::Resource>,
    /// For each resource's origin (`VirtualService reviews.default`), the
    /// file it came from.
    sources: HashMap<String, String>,
    /// IST0106 for Istio resources whose fields could not be decoded (a
    /// misspelt field, a string where a number belongs).
    undecodable: Vec<Message>,
    /// Files with a document that is not a Kubernetes object at all.
    parse_errors: usize,
}

/// Reads every file document by document: a document that cannot be read
/// is reported (on stderr, or as IST0106 when it is an Istio resource) and
/// the rest is analyzed.
fn load(paths: &[PathBuf]) -> Result<Input> {
    let mut input = Input {
        resources: Vec::new(),
        sources: HashMap::new(),
        undecodable: Vec::new(),
        parse_errors: 0,
    };
    let mut seen: HashMap<String, usize> = HashMap::new();
    for path in paths {
        for file in files::manifest_files(path, true)? {
            if path.is_dir() && is_mesh_config(&file) {
                continue;
            }
            let name = file.display().to_string();
            let text = std::fs::read_to_string(&file).with_context(|| format!("reading {name}"))?;
            let (resources, errors) = api::parse_each(&name, &text);
            for r in resources {
                // One object per kind, name and namespace, as in a cluster:
                // a later file's version replaces an earlier one (istioctl
                // reads alternatives of one resource the same way), so
                // alternatives are not reported as conflicting.
                let origin = analyze::origin(&r);
                match seen.get(&origin) {
                    Some(&i) => input.resources[i] = r,
                    None => {
                        seen.insert(origin.clone(), input.resources.len());
                        input.resources.push(r);
                    }
                }
                input.sources.insert(origin, name.clone());
            }
            let mut file_failed = false;
            for e in errors {
                match istio_origin(&e) {
                    Some(origin) => {
                        let detail = if e.path.is_empty() {
                            e.message.clone()
                        } else {
                            format!("{}: {}", e.path, e.message)
                        };
                        input
                            .sources
                            .entry(origin.clone())
                            .or_insert_with(|| name.clone());
                        input
                            .undecodable
                            .push(analyze::schema_validation_error(origin, &detail));
                    }
                    None => {
                        eprintln!("Error(s) adding files: {e}");
                        file_failed = true;
                    }
                }
            }
            input.parse_errors += usize::from(file_failed);
        }
    }
    Ok(input)
}

/// `Kind name.namespace` for a document of an Istio kind that failed to decode.
fn istio_origin(e: &api::ParseError) -> Option<String> {
    let kind = api::Kind::parse(e.kind.as_deref()?)?;
    let name = e.name.as_deref().filter(|n| !n.is_empty())?;
    kind.is_istio().then(|| {
        format!(
            "{} {name}.{}",
            kind.as_str(),
            e.namespace.as_deref().unwrap_or("default")
        )
    })
}

fn is_mesh_config(file: &Path) -> bool {
    file.file_name().is_some_and(|n| n == MESH_CONFIG_FILE)
}

/// `--meshConfigFile`, else `mesh.yaml` in the (first) analyzed directory,
/// else Istio's defaults.
fn mesh_config(args: &AnalyzeArgs, paths: &[PathBuf]) -> Result<MeshConfig> {
    let file = args.mesh_config_file.clone().or_else(|| {
        paths
            .iter()
            .filter(|p| p.is_dir())
            .map(|d| d.join(MESH_CONFIG_FILE))
            .find(|f| f.is_file())
    });
    let Some(file) = file else {
        return Ok(MeshConfig::default());
    };
    let text =
        std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
    serde_yaml_ng::from_str(&text).with_context(|| format!("{}: not a MeshConfig", file.display()))
}

/// What istioctl names in its summary: the one namespace analyzed, or all.
fn target(resources: &[api::Resource]) -> String {
    let namespaces: BTreeSet<&str> = resources
        .iter()
        .filter(|r| r.kind() != api::Kind::Namespace)
        .map(|r| r.namespace().unwrap_or("default"))
        .collect();
    match namespaces.len() {
        0 => "namespace: default".to_string(),
        1 => format!(
            "namespace: {}",
            namespaces.into_iter().next().unwrap_or("default")
        ),
        _ => "all namespaces".to_string(),
    }
}

/// What `-k` found on the cluster.
struct Live {
    messages: Vec<Message>,
    /// What istioctl names in its summary.
    target: String,
}

/// Analyzes the cluster's resources with `files` applied over them, and
/// reports on the namespace asked for.
async fn live(args: &AnalyzeArgs, cluster: &Cluster, files: Vec<api::Resource>) -> Result<Live> {
    let (client, context_namespace) = cluster.connect().await?;
    let listed = control::sources::kube::list(&client)
        .await
        .context("reading the cluster")?;
    for (kind, reason) in &listed.forbidden {
        eprintln!("warning: {} not analyzed: {reason}", kind.plural());
    }
    let mesh = match &args.mesh_config_file {
        Some(_) => mesh_config(args, &[])?,
        None => cluster_mesh_config(&client).await?,
    };
    // A file's resource replaces the cluster's of the same kind and name.
    let key = |r: &api::Resource| {
        (
            r.kind_name().to_string(),
            r.namespace().map(String::from),
            r.name().to_string(),
        )
    };
    let replaced: BTreeSet<_> = files.iter().map(key).collect();
    let mut resources: Vec<api::Resource> = listed
        .resources
        .into_iter()
        .filter(|r| !replaced.contains(&key(r)))
        .collect();
    resources.extend(files);
    let mut messages = analyze::analyze(&resources, &mesh);
    for (key, errors) in listed.invalid {
        let resource = if key.namespace.is_empty() {
            format!("{} {}", key.kind, key.name)
        } else {
            format!("{} {}.{}", key.kind, key.name, key.namespace)
        };
        messages.push(analyze::schema_validation_error(
            resource,
            &errors.join("; "),
        ));
    }
    messages
        .sort_by(|a, b| (&a.resource, a.code, &a.message).cmp(&(&b.resource, b.code, &b.message)));
    let namespace = args.namespace.clone().unwrap_or(context_namespace);
    if args.all_namespaces {
        return Ok(Live {
            messages,
            target: "all namespaces".into(),
        });
    }
    messages.retain(|m| in_namespace(&m.resource, &namespace));
    Ok(Live {
        messages,
        target: format!("namespace: {namespace}"),
    })
}

/// Whether the message's resource (`Kind name.namespace`, `Namespace name`)
/// is in `namespace`.
fn in_namespace(resource: &str, namespace: &str) -> bool {
    match resource.split_once(' ') {
        Some(("Namespace", name)) => name == namespace,
        Some((_, name)) => name.rsplit_once('.').is_some_and(|(_, ns)| ns == namespace),
        None => false,
    }
}

/// The `istio` ConfigMap's MeshConfig, Istio's defaults without one.
pub async fn cluster_mesh_config(client: &kube::Client) -> Result<MeshConfig> {
    use control::sources::kube::{MESH_CONFIG_NAME, MESH_CONFIG_NAMESPACE};
    let api: kube::Api<k8s_openapi::api::core::v1::ConfigMap> =
        kube::Api::namespaced(client.clone(), MESH_CONFIG_NAMESPACE);
    let Some(cm) = api
        .get_opt(MESH_CONFIG_NAME)
        .await
        .context("reading the mesh config ConfigMap")?
    else {
        return Ok(MeshConfig::default());
    };
    let text = cm
        .data
        .as_ref()
        .and_then(|d| d.get("mesh"))
        .map(String::as_str)
        .unwrap_or_default();
    control::sources::kube::mesh_config(text).with_context(|| {
        format!(
            "ConfigMap {MESH_CONFIG_NAMESPACE}/{MESH_CONFIG_NAME}: key mesh is not a MeshConfig"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::in_namespace;

    #[test]
    fn messages_belong_to_the_namespace_of_their_resource() {
        assert!(in_namespace("VirtualService reviews.prod", "prod"));
        assert!(in_namespace("VirtualService my.dotted.name.prod", "prod"));
        assert!(!in_namespace("VirtualService reviews.prod", "default"));
        assert!(in_namespace("Namespace prod", "prod"));
        assert!(!in_namespace("Namespace default", "prod"));
    }
}
