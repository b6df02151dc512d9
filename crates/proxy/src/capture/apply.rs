//! Writing the rules: which iptables the host uses, and one
//! `iptables-restore` batch per address family.

use std::io::Write;
use std::process::{Command, Stdio};

use super::iptables::Family;

/// The kernel interface the host's iptables uses. Both can be installed;
/// rules written through the other one would be invisible to (or fight
/// with) what the host already has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Legacy,
    Nft,
}

impl Backend {
    fn tool(self, family: Family, verb: &str) -> String {
        let base = match family {
            Family::V4 => "iptables",
            Family::V6 => "ip6tables",
        };
        let kind = match self {
            Backend::Legacy => "legacy",
            Backend::Nft => "nft",
        };
        format!("{base}-{kind}-{verb}")
    }

    pub fn name(self) -> &'static str {
        match self {
            Backend::Legacy => "iptables-legacy",
            Backend::Nft => "iptables-nft (nf_tables)",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("neither iptables-legacy nor iptables-nft is installed (install the iptables package)")]
    NoIptables,
    #[error("cannot run {tool}: {source}")]
    Spawn {
        tool: String,
        source: std::io::Error,
    },
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        command: String,
        status: std::process::ExitStatus,
        stderr: String,
    },
    #[error("{tool} refused the rules ({status}): {stderr}\nthe batch was:\n{batch}")]
    Refused {
        tool: String,
        status: std::process::ExitStatus,
        stderr: String,
        batch: String,
    },
}

/// What the host uses, as Istio decides it: the backend that already holds
/// rules in this network namespace; nf_tables when both or neither do (the
/// default of current distributions), else whichever is installed.
pub fn detect_backend() -> Result<Backend, ApplyError> {
    let rules_in = |b: Backend| -> Option<usize> {
        let out = Command::new(b.tool(Family::V4, "save")).output().ok()?;
        out.status.success().then(|| {
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter(|l| l.starts_with("-A "))
                .count()
        })
    };
    match (rules_in(Backend::Legacy), rules_in(Backend::Nft)) {
        (Some(legacy), Some(0)) if legacy > 0 => Ok(Backend::Legacy),
        (_, Some(_)) => Ok(Backend::Nft),
        (Some(_), None) => Ok(Backend::Legacy),
        (None, None) => Err(ApplyError::NoIptables),
    }
}

/// `iptables-save -t nat` for `family`; empty when the table is not there yet.
pub fn current_table(backend: Backend, family: Family) -> Result<String, ApplyError> {
    let tool = backend.tool(family, "save");
    let out = Command::new(&tool)
        .args(["-t", "nat"])
        .output()
        .map_err(|source| ApplyError::Spawn {
            tool: tool.clone(),
            source,
        })?;
    // A family whose nat table was never used prints nothing (or fails to
    // find it, with nf_tables): both mean nothing of ours is there.
    Ok(if out.status.success() {
        String::from_utf8_lossy(&out.stdout).into_owned()
    } else {
        String::new()
    })
}

/// Feeds `batch` to `iptables-restore --noflush`: all of it or nothing.
pub fn apply(backend: Backend, family: Family, batch: &str) -> Result<(), ApplyError> {
    let tool = backend.tool(family, "restore");
    let mut child = Command::new(&tool)
        .arg("--noflush")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| ApplyError::Spawn {
            tool: tool.clone(),
            source,
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(batch.as_bytes())
            .map_err(|source| ApplyError::Spawn {
                tool: tool.clone(),
                source,
            })?;
    }
    let out = child
        .wait_with_output()
        .map_err(|source| ApplyError::Spawn {
            tool: tool.clone(),
            source,
        })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(ApplyError::Refused {
            tool,
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            batch: batch.to_string(),
        })
    }
}

/// The `ip` command that puts the IPv6 inbound passthrough source (`::6`)
/// on the pod's loopback, as Istio's init container does: the proxy's
/// connections to the application over IPv6 come from it, and the capture
/// rules leave them alone. (127.0.0.6 needs nothing: loopback has all of 127/8.)
/// `replace`: running it again changes nothing.
pub const ADD_PASSTHROUGH_SOURCE_V6: [&str; 8] = [
    "ip", "-6", "addr", "replace", "::6/128", "dev", "lo", "nodad",
];
/// What `--cleanup` runs to take it away again.
pub const DEL_PASSTHROUGH_SOURCE_V6: [&str; 7] =
    ["ip", "-6", "addr", "del", "::6/128", "dev", "lo"];

/// Runs one of the commands above.
pub fn run_ip(command: &[&str]) -> Result<(), ApplyError> {
    let text = command.join(" ");
    let Some((program, args)) = command.split_first() else {
        return Ok(());
    };
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|source| ApplyError::Spawn {
            tool: text.clone(),
            source,
        })?;
    if out.status.success() {
        return Ok(());
    }
    Err(ApplyError::Command {
        command: text,
        status: out.status,
        stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
    })
}
