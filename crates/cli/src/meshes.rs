//! Which mesh a command means. `trellis up` records each running mesh in a
//! small per-user registry (`$XDG_STATE_HOME/trellis/meshes/<block>.json`,
//! else `~/.local/state/...`), removed when it stops; a record whose process
//! is gone is ignored. A kubeconfig-like context file
//! (`$XDG_CONFIG_HOME/trellis/config.yaml`, else `~/.config/...`) names the
//! current mesh, set with `trellis context use NAME`.
//!
//! The mesh a command talks to, first found of: `--control-plane`,
//! `TRELLIS_CONTROL_PLANE`, the current context, the single running mesh. With several running
//! and none chosen it is an error listing them: never a silent default that
//! reaches someone else's mesh.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};
use serde::{Deserialize, Serialize};

/// A running `trellis up`, as it records itself.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MeshRecord {
    /// `block-<N>`: what `trellis context use` takes.
    pub name: String,
    pub block: u8,
    /// The manifest directory it was started from.
    pub dir: PathBuf,
    pub state_dir: PathBuf,
    /// The control plane's HTTP API.
    pub api: String,
    pub pid: u32,
    /// The API's bearer token (mode 0600).
    pub token_file: PathBuf,
}

pub fn mesh_name(block: u8) -> String {
    format!("block-{block}")
}

impl MeshRecord {
    /// Whether its `trellis up` still runs: the pid exists and (where /proc
    /// tells) is a `trellis`, not a process that reused the pid after a crash.
    fn alive(&self) -> bool {
        let pid = nix::unistd::Pid::from_raw(self.pid as i32);
        // EPERM: alive, but another user's (a record in our registry: unlikely).
        if matches!(
            nix::sys::signal::kill(pid, None),
            Err(nix::errno::Errno::ESRCH)
        ) {
            return false;
        }
        match std::fs::read_to_string(format!("/proc/{}/comm", self.pid)) {
            Ok(comm) => comm.trim() == "trellis",
            Err(_) => true,
        }
    }

    /// Writes the record, replacing an earlier one for the same block.
    pub fn register(&self) -> Result<Registration> {
        let dir = registry_dir().context("no HOME or XDG_STATE_HOME: cannot record the mesh")?;
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let path = dir.join(format!("{}.json", self.block));
        let tmp = dir.join(format!(".{}.json.{}", self.block, std::process::id()));
        std::fs::write(&tmp, serde_json::to_vec_pretty(self)?)
            .with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))?;
        Ok(Registration { path })
    }
}

/// A mesh's record; removed when dropped (a clean exit).
pub struct Registration {
    path: PathBuf,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn home_relative(xdg: &str, fallback: &str) -> Option<PathBuf> {
    match std::env::var_os(xdg).filter(|v| !v.is_empty()) {
        Some(p) => Some(PathBuf::from(p)),
        None => std::env::var_os("HOME")
            .filter(|v| !v.is_empty())
            .map(|h| PathBuf::from(h).join(fallback)),
    }
}

fn registry_dir() -> Option<PathBuf> {
    home_relative("XDG_STATE_HOME", ".local/state").map(|d| d.join("trellis/meshes"))
}

fn context_file() -> Option<PathBuf> {
    home_relative("XDG_CONFIG_HOME", ".config").map(|d| d.join("trellis/config.yaml"))
}

/// The meshes running now, by block.
pub fn running() -> Vec<MeshRecord> {
    let Some(dir) = registry_dir() else {
        return Vec::new();
    };
    let mut out: Vec<MeshRecord> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
        .filter_map(|e| std::fs::read(e.path()).ok())
        .filter_map(|b| serde_json::from_slice::<MeshRecord>(&b).ok())
        .filter(MeshRecord::alive)
        .collect();
    out.sort_by_key(|m| m.block);
    out
}

/// The context file: named control planes and the current one.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct ContextFile {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_context: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub contexts: Vec<NamedContext>,
}

/// A control plane `trellis up` does not know: another machine's, or one run by hand.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct NamedContext {
    pub name: String,
    pub control_plane: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
}

impl ContextFile {
    pub fn load() -> Result<ContextFile> {
        let Some(path) = context_file() else {
            return Ok(ContextFile::default());
        };
        match std::fs::read_to_string(&path) {
            Ok(text) => serde_yaml_ng::from_str(&text)
                .with_context(|| format!("{}: not a trellis context file", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(ContextFile::default()),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    pub fn save(&self) -> Result<PathBuf> {
        let path =
            context_file().context("no HOME or XDG_CONFIG_HOME: nowhere to keep contexts")?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        std::fs::write(&path, serde_yaml_ng::to_string(self)?)
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    }
}

/// The mesh a command talks to, and the token to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub api: String,
    pub token: Option<String>,
    /// How it was chosen, for the one line printed when several meshes exist.
    pub why: String,
    /// Whether more than one mesh is running: then the CLI says which it uses.
    pub several: bool,
}

/// What the user gave on the command line or in the environment.
#[derive(Default)]
pub struct Choice {
    /// `--control-plane` or `TRELLIS_CONTROL_PLANE`, and which of the two.
    pub control_plane: Option<(String, &'static str)>,
    /// `--token` or `TRELLIS_TOKEN`.
    pub token: Option<String>,
}

/// Picks the mesh (see the module's doc) and its token.
pub fn resolve(choice: &Choice) -> Result<Target> {
    pick(choice, &running(), &ContextFile::load()?)
}

/// [`resolve`] over the running `meshes` and the context file.
fn pick(choice: &Choice, meshes: &[MeshRecord], contexts: &ContextFile) -> Result<Target> {
    let several = meshes.len() > 1;
    let token_of = |api: &str, file: Option<&Path>| -> Result<Option<String>> {
        if let Some(t) = &choice.token {
            return Ok(Some(t.clone()));
        }
        let file = file.map(Path::to_path_buf).or_else(|| {
            meshes
                .iter()
                .find(|m| same_api(&m.api, api))
                .map(|m| m.token_file.clone())
        });
        match file {
            Some(f) => std::fs::read_to_string(&f)
                .map(|t| Some(t.trim().to_string()))
                .with_context(|| format!("reading the API token {}", f.display())),
            None => Ok(None),
        }
    };
    if let Some((api, source)) = &choice.control_plane {
        return Ok(Target {
            token: token_of(api, None)?,
            api: api.clone(),
            why: (*source).to_string(),
            several,
        });
    }
    if let Some(current) = &contexts.current_context {
        if let Some(m) = meshes.iter().find(|m| &m.name == current) {
            return Ok(Target {
                api: m.api.clone(),
                token: token_of(&m.api, Some(&m.token_file))?,
                why: format!("context {current}"),
                several,
            });
        }
        if let Some(c) = contexts.contexts.iter().find(|c| &c.name == current) {
            return Ok(Target {
                api: c.control_plane.clone(),
                token: token_of(&c.control_plane, c.token_file.as_deref())?,
                why: format!("context {current}"),
                several,
            });
        }
        bail!(
            "the current context {current:?} is not running; {}",
            choose_hint(meshes)
        );
    }
    match meshes {
        [only] => Ok(Target {
            api: only.api.clone(),
            token: token_of(&only.api, Some(&only.token_file))?,
            why: "the only running mesh".into(),
            several,
        }),
        [] => bail!(
            "no running mesh found: start one with `trellis up DIR`, or give --control-plane URL"
        ),
        _ => bail!(
            "{} meshes are running and none is chosen:\n{}\n{}",
            meshes.len(),
            list(meshes),
            choose_hint(meshes)
        ),
    }
}

/// The running meshes, one per line, as errors and `trellis context` show them.
pub fn list(meshes: &[MeshRecord]) -> String {
    meshes
        .iter()
        .map(|m| {
            format!(
                "  {:<10} {}  dir {}  state {}  pid {}",
                m.name,
                m.api,
                m.dir.display(),
                m.state_dir.display(),
                m.pid
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn choose_hint(meshes: &[MeshRecord]) -> String {
    let example = meshes.first().map_or("block-10".into(), |m| m.name.clone());
    format!(
        "choose one with `trellis context use {example}`, --control-plane URL or TRELLIS_CONTROL_PLANE"
    )
}

/// Whether two API URLs name the same listener (trailing slashes aside).
fn same_api(a: &str, b: &str) -> bool {
    a.trim_end_matches('/') == b.trim_end_matches('/')
}

/// `trellis context`: the running meshes and saved contexts, the current one marked.
pub fn show() -> Result<String> {
    let meshes = running();
    let file = ContextFile::load()?;
    let current = file.current_context.as_deref();
    let mut out = format!(
        "{:<8} {:<14} {:<28} {:<8} {}\n",
        "CURRENT", "NAME", "CONTROL PLANE", "PID", "DIR / STATE DIR"
    );
    for m in &meshes {
        out.push_str(&format!(
            "{:<8} {:<14} {:<28} {:<8} {} / {}\n",
            if current == Some(&m.name) { "*" } else { "" },
            m.name,
            m.api,
            m.pid,
            m.dir.display(),
            m.state_dir.display()
        ));
    }
    for c in &file.contexts {
        out.push_str(&format!(
            "{:<8} {:<14} {:<28} {:<8} {}\n",
            if current == Some(&c.name) { "*" } else { "" },
            c.name,
            c.control_plane,
            "-",
            "(saved context)"
        ));
    }
    Ok(out)
}

/// `trellis context use NAME`: a running mesh (`block-N`, or just `N`) or a saved context.
pub fn use_context(name: &str) -> Result<String> {
    let meshes = running();
    let mut file = ContextFile::load()?;
    let name = if name.parse::<u8>().is_ok() {
        format!("block-{name}")
    } else {
        name.to_string()
    };
    let known =
        meshes.iter().any(|m| m.name == name) || file.contexts.iter().any(|c| c.name == name);
    if !known {
        bail!(
            "no running mesh or saved context named {name:?}; running:\n{}",
            if meshes.is_empty() {
                "  (none)".into()
            } else {
                list(&meshes)
            }
        );
    }
    file.current_context = Some(name.clone());
    let path = file.save()?;
    Ok(format!(
        "current context is now {name} ({})",
        path.display()
    ))
}

/// `trellis context set NAME --control-plane URL [--token-file F]`.
pub fn set_context(name: &str, control_plane: &str, token_file: Option<PathBuf>) -> Result<String> {
    let mut file = ContextFile::load()?;
    file.contexts.retain(|c| c.name != name);
    file.contexts.push(NamedContext {
        name: name.to_string(),
        control_plane: control_plane.to_string(),
        token_file,
    });
    let path = file.save()?;
    Ok(format!("context {name} saved in {}", path.display()))
}

/// `trellis context unset`: back to "the single running mesh".
pub fn unset_context() -> Result<String> {
    let mut file = ContextFile::load()?;
    file.current_context = None;
    let path = file.save()?;
    Ok(format!("no current context ({})", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mesh(block: u8, token_file: &Path) -> MeshRecord {
        MeshRecord {
            name: mesh_name(block),
            block,
            dir: PathBuf::from("/meshes/bookinfo"),
            state_dir: PathBuf::from(format!("/tmp/trellis-127.{block}")),
            api: format!("http://127.{block}.0.1:15014"),
            pid: 1,
            token_file: token_file.to_path_buf(),
        }
    }

    #[test]
    fn flag_then_context_then_the_only_mesh_and_never_a_guess() {
        let dir = tempfile::tempdir().unwrap();
        let (t10, t11) = (dir.path().join("t10"), dir.path().join("t11"));
        std::fs::write(&t10, "token-ten\n").unwrap();
        std::fs::write(&t11, "token-eleven").unwrap();
        let both = [mesh(10, &t10), mesh(11, &t11)];
        let none = ContextFile::default();

        // Two running, nothing chosen: an error naming both.
        let err = pick(&Choice::default(), &both, &none)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("block-10") && err.contains("block-11"),
            "{err}"
        );

        // The flag (or env) wins, with the token of the mesh it names.
        let flag = Choice {
            control_plane: Some(("http://127.11.0.1:15014/".into(), "--control-plane")),
            token: None,
        };
        let t = pick(&flag, &both, &none).unwrap();
        assert_eq!(t.token.as_deref(), Some("token-eleven"));
        assert!(t.several);

        // A context names one; a context naming a stopped mesh is an error, not a fallback.
        let ctx = ContextFile {
            current_context: Some("block-10".into()),
            contexts: Vec::new(),
        };
        let t = pick(&Choice::default(), &both, &ctx).unwrap();
        assert_eq!(
            (t.api.as_str(), t.token.as_deref()),
            ("http://127.10.0.1:15014", Some("token-ten"))
        );
        assert!(pick(&Choice::default(), &both[1..], &ctx).is_err());

        // The only running mesh; none at all is an error.
        let t = pick(&Choice::default(), &both[1..], &none).unwrap();
        assert_eq!(t.api, "http://127.11.0.1:15014");
        assert!(!t.several);
        assert!(pick(&Choice::default(), &[], &none).is_err());

        // An explicit token beats the recorded one.
        let given = Choice {
            token: Some("given".into()),
            ..Choice::default()
        };
        assert_eq!(
            pick(&given, &both[..1], &none).unwrap().token.as_deref(),
            Some("given")
        );
    }
}
