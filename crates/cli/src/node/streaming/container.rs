//! A running container of this node, as exec and port-forward reach it:
//! its process — the one `trellis node` started, whose output goes to the
//! container's log (`<namespace>.<pod>.<container>.log`) and which leads
//! its own process group — and from it the container's network and mount
//! namespaces, user and environment, as a container runtime's exec joins
//! those of the container's first process.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

/// The default PATH of a container whose environment sets none (containerd's).
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

#[derive(Debug)]
pub struct Process {
    pub pid: u32,
    pub uid: u32,
    pub gid: u32,
    pub env: Vec<(OsString, OsString)>,
}

impl Process {
    /// `/proc/<pid>/ns/net`: the pod's network namespace.
    pub fn netns(&self) -> PathBuf {
        PathBuf::from(format!("/proc/{}/ns/net", self.pid))
    }
}

/// The process of `container` in `namespace/pod`; `None` if it is not running here.
pub fn find(logs: &Path, namespace: &str, pod: &str, container: &str) -> Option<Process> {
    let log = logs.join(format!("{namespace}.{pod}.{container}.log"));
    let log = std::fs::canonicalize(log).ok()?;
    let mut leaders: Vec<u32> = std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| std::fs::read_link(format!("/proc/{pid}/fd/1")).is_ok_and(|p| p == log))
        .filter(|pid| process_group(*pid) == Some(*pid))
        .collect();
    leaders.sort_unstable();
    let pid = *leaders.first()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let id = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|rest| rest.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u32>().ok())
    };
    let environ = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    Some(Process {
        pid,
        uid: id("Uid:")?,
        gid: id("Gid:")?,
        env: parse_environ(&environ),
    })
}

/// Any running container of `namespace/pod` (its containers share the network).
pub fn any(logs: &Path, namespace: &str, pod: &str) -> Option<Process> {
    let prefix = format!("{namespace}.{pod}.");
    std::fs::read_dir(logs)
        .ok()?
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            name.strip_prefix(&prefix)?
                .strip_suffix(".log")
                .map(str::to_string)
        })
        // A pod named `<pod>.<x>` shares the prefix: its containers' HOSTNAME tells.
        .filter_map(|container| find(logs, namespace, pod, &container))
        .find(|p| {
            p.env
                .iter()
                .find(|(k, _)| k == "HOSTNAME")
                .is_none_or(|(_, v)| v == pod)
        })
}

fn process_group(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `pid (comm) state ppid pgrp …`: comm may hold spaces and parentheses.
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(2)?.parse().ok()
}

fn parse_environ(raw: &[u8]) -> Vec<(OsString, OsString)> {
    let mut env: Vec<(OsString, OsString)> = raw
        .split(|b| *b == 0)
        .filter_map(|kv| {
            let at = kv.iter().position(|b| *b == b'=')?;
            Some((
                OsString::from_vec(kv[..at].to_vec()),
                OsString::from_vec(kv[at + 1..].to_vec()),
            ))
        })
        .collect();
    if !env.iter().any(|(k, _)| k == "PATH") {
        env.push(("PATH".into(), DEFAULT_PATH.into()));
    }
    env
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_with_a_default_path() {
        let env = parse_environ(b"HOSTNAME=p\0A=b=c\0\0");
        assert_eq!(
            env,
            vec![
                ("HOSTNAME".into(), "p".into()),
                ("A".into(), "b=c".into()),
                ("PATH".into(), DEFAULT_PATH.into())
            ]
        );
        let env = parse_environ(b"PATH=/x\0");
        assert_eq!(env, vec![("PATH".into(), "/x".into())]);
    }

    #[test]
    fn finds_the_process_writing_a_containers_log() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("ns.web.app.log");
        let file = std::fs::File::create(&log).unwrap();
        let mut child = std::process::Command::new("sleep");
        child
            .arg("30")
            .stdout(file)
            .env_clear()
            .env("HOSTNAME", "web");
        std::os::unix::process::CommandExt::process_group(&mut child, 0);
        let mut child = child.spawn().unwrap();
        let found = find(dir.path(), "ns", "web", "app");
        let any_of_pod = any(dir.path(), "ns", "web");
        let other = any(dir.path(), "ns", "we");
        let _ = child.kill();
        let _ = child.wait();
        let found = found.expect("the container's process");
        assert_eq!(found.pid, child.id());
        assert!(found.env.contains(&("HOSTNAME".into(), "web".into())));
        assert_eq!(any_of_pod.map(|p| p.pid), Some(child.id()));
        assert!(other.is_none());
        assert!(find(dir.path(), "ns", "web", "sidecar").is_none());
    }
}
