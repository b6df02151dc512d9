//! Reading YAML files and directories the way `kubectl -f` does.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// The mesh-wide settings file of a `trellis up` directory.
pub const MESH_CONFIG_FILE: &str = "mesh.yaml";

/// Reads MeshConfig (Istio's names and defaults) from `path`.
pub fn mesh_config(path: &Path) -> Result<model::MeshConfig> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_yaml_ng::from_str(&text).with_context(|| format!("{}: not a MeshConfig", path.display()))
}

/// The YAML and JSON files at `path`: the file itself, or those in the
/// directory, sorted; with `recursive`, those in its subfolders too (as
/// `kubectl apply -R` and `istioctl validate -f` read them). Hidden entries
/// and `mesh.yaml` are skipped.
pub fn manifest_files(path: &Path, recursive: bool) -> Result<Vec<PathBuf>> {
    if !path.is_dir() {
        anyhow::ensure!(
            path.exists(),
            "{}: no such file or directory",
            path.display()
        );
        return Ok(vec![path.to_path_buf()]);
    }
    let mut out = Vec::new();
    let mut dirs = vec![path.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in
            std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))?
        {
            let p = entry?.path();
            let hidden = p
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'));
            if hidden {
                continue;
            }
            if p.is_dir() {
                if recursive {
                    dirs.push(p);
                }
                continue;
            }
            // mesh.yaml holds MeshConfig, not resources (DESIGN.md §6).
            let mesh_config = p.file_name().is_some_and(|n| n == MESH_CONFIG_FILE);
            if !mesh_config
                && p.is_file()
                && p.extension()
                    .is_some_and(|e| e == "yaml" || e == "yml" || e == "json")
            {
                out.push(p);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// What [`load_valid`] read.
pub struct Loaded {
    pub files: usize,
    pub resources: Vec<api::Resource>,
}

/// Parses and validates every file; returns all resources, or every problem
/// found, each naming the file, the document and the field.
pub fn load_valid(path: &Path, recursive: bool) -> Result<Loaded, Vec<String>> {
    let files = manifest_files(path, recursive).map_err(|e| vec![format!("{e:#}")])?;
    let count = files.len();
    let mut resources = Vec::new();
    let mut problems = Vec::new();
    for file in files {
        let name = file.display().to_string();
        let text = match std::fs::read_to_string(&file) {
            Ok(t) => t,
            Err(e) => {
                problems.push(format!("{name}: {e}"));
                continue;
            }
        };
        match api::parse(&name, &text) {
            Ok(rs) => {
                for (i, r) in rs.iter().enumerate() {
                    for e in api::validate(r) {
                        problems.push(format!(
                            "{name}: document {} ({} {}): {}: {}",
                            i + 1,
                            r.kind_name(),
                            r.name(),
                            e.path,
                            e.message
                        ));
                    }
                }
                resources.extend(rs);
            }
            Err(e) => problems.push(e.to_string()),
        }
    }
    if problems.is_empty() {
        Ok(Loaded {
            files: count,
            resources,
        })
    } else {
        Err(problems)
    }
}
