//! `trellis analyze [DIR|FILE ...]`: runs the cross-resource checks of
//! `model::analyze` over files, with istioctl analyze's flags, output
//! formats and exit codes, so scripts written for one work with the other.

use std::collections::{BTreeSet, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};
use model::MeshConfig;
use model::analyze::{self, Level, Message, messages};
use serde::Serialize;

use crate::files;

/// istioctl's exit code when analyzers find issues at or above the failure threshold.
pub const EXIT_ISSUES_FOUND: i32 = 79;

/// The mesh settings file `trellis up` reads from a manifest directory; it is
/// not a Kubernetes object, so it is not analyzed as one.
const MESH_CONFIG_FILE: &str = "mesh.yaml";

#[derive(clap::Args, Debug)]
pub struct AnalyzeArgs {
    /// Files or directories to analyze (the YAML/JSON files directly in a
    /// directory, as `kubectl -f DIR`). Default: the current directory.
    pub paths: Vec<PathBuf>,
    /// A file or directory to analyze; may be repeated.
    #[arg(short = 'f', long = "filename")]
    pub filenames: Vec<PathBuf>,
    /// Output format: log lines, or a JSON/YAML list shaped like istioctl's.
    #[arg(short = 'o', long, value_enum, default_value = "log")]
    pub output: Format,
    /// Exit with 79 when a message at or above this level is found.
    #[arg(long, value_enum, ignore_case = true, default_value = "Error")]
    pub failure_threshold: Threshold,
    /// Print only messages at or above this level.
    #[arg(long, value_enum, ignore_case = true, default_value = "Info")]
    pub output_threshold: Threshold,
    /// MeshConfig YAML (rootNamespace, trustDomain, ...); default: `mesh.yaml`
    /// in the analyzed directory, else Istio's defaults.
    #[arg(long = "meshConfigFile", alias = "mesh-config-file")]
    pub mesh_config_file: Option<PathBuf>,
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

/// Runs the verb; returns the process exit code (0, or 79 when issues at or
/// above the failure threshold were found). Files that do not parse or
/// validate are an error (exit 1), reported as `trellis validate` does.
pub fn run(args: &AnalyzeArgs) -> Result<i32> {
    let mut paths: Vec<PathBuf> = args.paths.iter().chain(&args.filenames).cloned().collect();
    if paths.is_empty() {
        paths.push(PathBuf::from("."));
    }
    let mesh = mesh_config(args, &paths)?;
    let (resources, sources) = load(&paths)?;

    let messages = analyze::analyze(&resources, &mesh);
    let shown: Vec<&Message> = messages
        .iter()
        .filter(|m| m.level >= args.output_threshold.level())
        .collect();
    let target = target(&resources);

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
                eprintln!("\u{2714} No validation issues found when analyzing {target}.");
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
    Ok(0)
}

/// Reads and validates every file; the resources, and for each resource's
/// origin (`VirtualService reviews.default`) the file it came from.
fn load(paths: &[PathBuf]) -> Result<(Vec<api::Resource>, HashMap<String, String>)> {
    let mut resources = Vec::new();
    let mut sources = HashMap::new();
    let mut problems = Vec::new();
    for path in paths {
        for file in files::manifest_files(path, false)? {
            if path.is_dir() && is_mesh_config(&file) {
                continue;
            }
            // One file at a time, so each resource can name its file.
            match files::load_valid(&file, false) {
                Ok(loaded) => {
                    for r in loaded.resources {
                        sources
                            .entry(analyze::origin(&r))
                            .or_insert_with(|| file.display().to_string());
                        resources.push(r);
                    }
                }
                Err(p) => problems.extend(p),
            }
        }
    }
    if !problems.is_empty() {
        for p in &problems {
            eprintln!("error: {p}");
        }
        bail!("{} problem(s) found", problems.len());
    }
    Ok((resources, sources))
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
