//! `trellis node` for the Kubernetes end-to-end tests: whether this machine
//! can run one, and one started against a test's API server.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};

use anyhow::{Context, Result, bail};

use crate::bin;
use crate::kube::Kube;

/// What a node needs that this machine lacks: root, or one of the tools
/// it runs (and the test's own `extra` ones).
fn missing(extra: &[&'static str]) -> Option<&'static str> {
    let root = std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"))
    });
    if !root {
        return Some("root");
    }
    ["ip", "iptables-restore", "setpriv", "nft"]
        .into_iter()
        .chain(extra.iter().copied())
        .find(|tool| {
            !std::env::var_os("PATH")
                .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        })
}

/// Whether to skip a node test: what it needs is missing outside CI (in CI
/// that is an error).
pub fn skipped(extra_tools: &[&'static str]) -> Result<bool> {
    let Some(what) = missing(extra_tools) else {
        return Ok(false);
    };
    if std::env::var_os("CI").is_some() {
        bail!("trellis node needs {what}");
    }
    eprintln!("SKIPPED: trellis node needs {what}");
    Ok(true)
}

/// `trellis node` named `name`, registered with `kube`'s API server, its
/// state and log (`node.log`) in `state`.
pub fn start(kube: &Kube, name: &str, state: &Path) -> Result<Process> {
    Process::start(
        Command::new(bin("trellis"))
            .arg("--kubeconfig")
            .arg(&kube.kubeconfig)
            .args(["node", "--name", name, "--block", &kube.block.to_string()])
            .arg("--state-dir")
            .arg(state.join("node")),
        state.join("node.log"),
    )
}

/// A child process with its log, stopped with SIGTERM (then waited for) on drop.
pub struct Process {
    child: Child,
    log: PathBuf,
    exited: Option<ExitStatus>,
}

impl Process {
    pub fn start(cmd: &mut Command, log: PathBuf) -> Result<Process> {
        let file = std::fs::File::create(&log)?;
        let child = cmd
            .stdout(Stdio::from(file.try_clone()?))
            .stderr(Stdio::from(file))
            .spawn()
            .with_context(|| format!("starting {cmd:?}"))?;
        Ok(Process {
            child,
            log,
            exited: None,
        })
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, and the exit status.
    pub fn stop(&mut self) -> Result<ExitStatus> {
        if let Some(status) = self.exited {
            return Ok(status);
        }
        if let Ok(pid) = i32::try_from(self.child.id()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        let status = self.child.wait()?;
        self.exited = Some(status);
        Ok(status)
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}
