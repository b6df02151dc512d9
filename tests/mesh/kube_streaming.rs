//! `kubectl exec` and `kubectl port-forward` against pods run by `trellis
//! node`, through a real API server: kubectl speaks WebSocket to it, and
//! it reaches the node's kubelet API with SPDY/3.1 (the protocol at our
//! Kubernetes pin). exec returns the command's output, stderr and exit
//! code, runs as the container's user with its environment in the pod's
//! network namespace, and takes stdin; a command whose kubectl goes away
//! is killed; port-forward carries HTTP to a pod's port, by pod and by
//! Service; bad requests get kubectl errors that say what is wrong.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use e2e::kube::Kube;
use e2e::{eventually, repo_root};

const NODE: &str = "trellis-streaming-node";

/// A child stopped with SIGTERM and waited for on drop.
struct Stopped(Child);

impl Drop for Stopped {
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.0.id()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        let _ = self.0.wait();
    }
}

fn kubectl_path() -> Result<PathBuf> {
    let out = Command::new(repo_root().join("scripts/kube-tools.sh"))
        .arg("--where")
        .output()?;
    Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()).join("kubectl"))
}

const PODS: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: web, labels: {app: web}}
spec:
  initContainers:
  - {name: setup, image: sh, command: [sh, -c, "true"]}
  containers:
  - name: details
    image: examples-bookinfo-details-v1
    ports: [{containerPort: 9080}]
    readinessProbe: {httpGet: {path: /health, port: 9080}, periodSeconds: 1}
  - name: sleep
    image: sh
    command: [sh, -c, "while true; do sleep 1; done"]
    env: [{name: GREETING, value: "hello from the pod"}]
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: 9080}]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_exec_and_port_forward_reach_pods_on_trellis_node() -> Result<()> {
    if e2e::node::skipped(&["nsenter", "curl"])? {
        return Ok(());
    }
    let Some(kube) = Kube::start("node-streaming")? else {
        return Ok(());
    };
    let state = tempfile::tempdir()?;
    let node = e2e::node::start(&kube, NODE, state.path())?;
    let node_log = || node.log();
    // The namespace's `default` service account comes soon after it.
    eventually(Duration::from_secs(30), || async { kube.apply(PODS) }).await?;
    eventually(Duration::from_secs(120), || async {
        let ready = kube.kubectl_ok(&[
            "get",
            "pod",
            "web",
            "-o",
            "jsonpath={.status.containerStatuses[*].ready}",
        ])?;
        ensure!(ready == "true true", "not ready: {ready}");
        Ok(())
    })
    .await
    .with_context(node_log)?;

    // Output, stderr and the exit code come back apart.
    let out = kube.kubectl(&[
        "exec",
        "web",
        "-c",
        "sleep",
        "--",
        "sh",
        "-c",
        "echo out; echo err >&2; exit 3",
    ]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "out\n", "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("err"),
        "{out:?}"
    );
    assert_eq!(out.status.code(), Some(3), "{out:?}\n{}", node_log());

    // The container's user (an unprivileged one, as trellis node runs
    // applications), its environment, and the pod's network: the details
    // container listens on the pod's localhost.
    let out = kube.kubectl_ok(&[
        "exec",
        "web",
        "-c",
        "sleep",
        "--",
        "sh",
        "-c",
        "id -u; echo \"$GREETING\"; echo \"$HOSTNAME\"; curl -sS http://127.0.0.1:9080/details/0",
    ])?;
    let lines: Vec<&str> = out.lines().collect();
    ensure!(lines.len() == 4, "{out}");
    assert_ne!(lines[0], "0", "exec ran as root: {out}");
    assert_eq!(lines[1], "hello from the pod");
    assert_eq!(lines[2], "web");
    assert!(lines[3].contains(r#""id":0"#), "{out}");

    // Standard input, with -i.
    let mut cat = Command::new(kubectl_path()?)
        .arg(format!("--kubeconfig={}", kube.kubeconfig.display()))
        .args([
            "exec",
            "-i",
            "web",
            "-c",
            "sleep",
            "--",
            "sh",
            "-c",
            "tr a-z A-Z",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    cat.stdin
        .take()
        .context("stdin")?
        .write_all(b"through the pipe\n")?;
    let out = cat.wait_with_output()?;
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "THROUGH THE PIPE\n",
        "{out:?}"
    );
    assert!(out.status.success(), "{out:?}");

    // Unknown container: the API server says so. A command that does not exist: 127.
    let out = kube.kubectl(&["exec", "web", "-c", "nope", "--", "true"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("nope"), "{err}");
    // A container of the pod that is not running (an init container that
    // finished): the node says so, and kubectl shows it.
    let out = kube.kubectl(&["exec", "web", "-c", "setup", "--", "true"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(r#"container "setup" of pod node-streaming/web is not running on this node"#),
        "{err}"
    );
    let out = kube.kubectl(&["exec", "web", "-c", "sleep", "--", "no-such-program"]);
    assert_eq!(out.status.code(), Some(127), "{out:?}");

    // A client that goes away takes its command with it.
    let sleeping = || {
        std::fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| {
                std::fs::read(e.path().join("cmdline")).is_ok_and(|c| c == b"sleep\x00299\x00")
            })
    };
    let sleeper = Command::new(kubectl_path()?)
        .arg(format!("--kubeconfig={}", kube.kubeconfig.display()))
        .args(["exec", "web", "-c", "sleep", "--", "sleep", "299"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let sleeper = Stopped(sleeper);
    eventually(Duration::from_secs(30), || async {
        ensure!(sleeping(), "sleep 299 not started yet");
        Ok(())
    })
    .await?;
    drop(sleeper);
    eventually(Duration::from_secs(30), || async {
        ensure!(
            !sleeping(),
            "sleep 299 still runs after its kubectl exec ended"
        );
        Ok(())
    })
    .await?;

    // port-forward, to the pod and to the Service (its port 80 is the pod's 9080).
    for target in ["pod/web", "svc/web"] {
        let remote = if target == "svc/web" { ":80" } else { ":9080" };
        let mut forward = Command::new(kubectl_path()?)
            .arg(format!("--kubeconfig={}", kube.kubeconfig.display()))
            .args(["port-forward", target, remote])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let stdout = forward.stdout.take().context("stdout")?;
        let mut stderr = forward.stderr.take().context("stderr")?;
        let forward = Stopped(forward);
        // "Forwarding from 127.0.0.1:PORT -> 9080"
        // Kept open: kubectl writes a line per connection, and a closed pipe would kill it.
        let mut stdout = BufReader::new(stdout);
        let mut line = String::new();
        stdout.read_line(&mut line)?;
        let port: u16 = line
            .split("127.0.0.1:")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .and_then(|p| p.parse().ok())
            .with_context(|| format!("kubectl port-forward said {line:?}"))?;
        assert!(line.contains("-> 9080"), "{line}");
        let client = reqwest::Client::new();
        for _ in 0..3 {
            let got = async {
                client
                    .get(format!("http://127.0.0.1:{port}/details/1"))
                    .send()
                    .await?
                    .error_for_status()?
                    .text()
                    .await
            }
            .await;
            let body = match got {
                Ok(body) => body,
                Err(e) => {
                    drop(forward);
                    let mut err = String::new();
                    std::io::Read::read_to_string(&mut stderr, &mut err)?;
                    let apiserver =
                        std::fs::read_to_string(kube.log("kube-apiserver")).unwrap_or_default();
                    let apiserver: Vec<&str> = apiserver
                        .lines()
                        .filter(|l| {
                            l.contains("ortforward")
                                || l.contains("unnel")
                                || l.contains("pgrade")
                                || l.contains("kubelet")
                        })
                        .collect();
                    bail!(
                        "through kubectl port-forward {target}: {e:#}\nkubectl: {err}\nnode: {}\napiserver: {}",
                        node_log(),
                        apiserver.join("\n")
                    );
                }
            };
            assert!(body.contains(r#""id":1"#), "{body}");
        }
        drop(forward);
    }

    // A port nothing listens on: kubectl reports the node's error.
    let mut forward = Command::new(kubectl_path()?)
        .arg(format!("--kubeconfig={}", kube.kubeconfig.display()))
        .args(["port-forward", "pod/web", ":9999"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let stdout = forward.stdout.take().context("stdout")?;
    let stderr = forward.stderr.take().context("stderr")?;
    let forward = Stopped(forward);
    let mut stdout = BufReader::new(stdout);
    let mut line = String::new();
    stdout.read_line(&mut line)?;
    let port: u16 = line
        .split("127.0.0.1:")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|p| p.parse().ok())
        .with_context(|| format!("kubectl port-forward said {line:?}"))?;
    let got = reqwest::get(format!("http://127.0.0.1:{port}/")).await;
    assert!(got.is_err(), "{got:?}");
    drop(forward);
    let mut err = String::new();
    std::io::Read::read_to_string(&mut BufReader::new(stderr), &mut err)?;
    assert!(
        err.contains("error forwarding port 9999") && err.contains("connection refused"),
        "{err}"
    );
    Ok(())
}
