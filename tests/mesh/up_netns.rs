//! `trellis up` as root: each pod in its own network namespace, its traffic
//! captured. An unmodified `curl` in pod a (no proxy variable) reaches b by
//! its short name through both sidecars; STRICT refuses the host's plaintext
//! call to b's pod IP; Ctrl-C leaves no namespace, veth or bridge behind.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use e2e::{Launch, Mesh, echo_workload};

const STRICT: &str = "
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: istio-system}
spec:
  mtls: {mode: STRICT}
";

fn missing() -> Option<&'static str> {
    let root = std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"))
    });
    if !root {
        return Some("root");
    }
    ["ip", "iptables-restore", "setpriv", "curl"]
        .into_iter()
        .find(|tool| {
            !std::env::var_os("PATH")
                .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        })
}

/// `curl` with no proxy variable; returns (exit code, body and status).
fn curl(netns: Option<&str>, url: &str) -> Result<(i32, String)> {
    let mut cmd = match netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, "curl"]);
            c
        }
        None => Command::new("curl"),
    };
    for var in [
        "HTTP_PROXY",
        "http_proxy",
        "HTTPS_PROXY",
        "https_proxy",
        "ALL_PROXY",
        "all_proxy",
    ] {
        cmd.env_remove(var);
    }
    let out = cmd
        .args([
            "-sS",
            "--max-time",
            "5",
            "-o",
            "-",
            "-w",
            "\n%{http_code}",
            url,
        ])
        .output()
        .context("running curl")?;
    Ok((
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    ))
}

/// What Trellis made for `block` and still exists.
fn leftovers(block: u8) -> Result<Vec<String>> {
    let text = |args: &[&str]| -> Result<String> {
        Ok(String::from_utf8_lossy(&Command::new("ip").args(args).output()?.stdout).into_owned())
    };
    let ns_prefix = format!("trellis-{block}-");
    let bridge = format!("trellis{block}");
    let mut found: Vec<String> = text(&["netns", "list"])?
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(&ns_prefix))
        .map(String::from)
        .collect();
    found.extend(
        text(&["-o", "link", "show"])?
            .lines()
            .filter_map(|l| l.split(": ").nth(1))
            .map(|l| l.split('@').next().unwrap_or(l))
            .filter(|l| *l == bridge || l.starts_with(&format!("{bridge}-")))
            .map(String::from),
    );
    Ok(found)
}

#[test]
fn up_as_root_puts_pods_in_namespaces_with_capture() -> Result<()> {
    if let Some(tool) = missing() {
        eprintln!(
            "skipped: namespace mode needs {tool} (scripts/test.sh installs the tools; CI runs as root)"
        );
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("a.yaml"), echo_workload("a", ""))?;
    std::fs::write(dir.path().join("b.yaml"), echo_workload("b", ""))?;
    std::fs::write(dir.path().join("strict.yaml"), STRICT)?;
    let mesh = Mesh::launch(
        dir.path(),
        Launch {
            netns: true,
            ..Launch::default()
        },
    )?;
    let block = mesh.block;
    let pods = mesh.pods()?;
    let find = |app: &str| -> Result<(String, String)> {
        let pod = pods
            .iter()
            .find(|p| p["metadata"]["labels"]["app"] == app)
            .with_context(|| format!("pod of {app}"))?;
        Ok((
            format!(
                "trellis-{block}-{}.default",
                pod["metadata"]["name"].as_str().unwrap_or_default()
            ),
            pod["status"]["podIP"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        ))
    };
    let (ns_a, _) = find("a")?;
    let (_, ip_b) = find("b")?;
    ensure!(
        ip_b.starts_with(&format!("10.{block}.")),
        "b's pod IP is on the pod network: {ip_b}"
    );

    // 1. By short name, through both sidecars, with a's identity at b.
    let deadline = Instant::now() + Duration::from_secs(30);
    let reply = loop {
        let got = curl(Some(&ns_a), "http://b:8080/hello")?;
        if got.1.ends_with("\n200") {
            break got.1;
        }
        if Instant::now() > deadline {
            bail!(
                "curl http://b:8080 from pod a: {got:?}; logs in {}",
                mesh.logs().display()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    ensure!(
        reply.contains("spiffe://cluster.local/ns/default/sa/a"),
        "b saw a's SPIFFE id (through both sidecars): {reply}"
    );

    // b's programs: the proxy as 1337 (which capture excludes), the app as
    // another user, with no proxy variable.
    let instance = format!("INSTANCE_IP={ip_b}");
    let mut seen = Vec::new();
    for pid in e2e::pids_with_arg("b") {
        let proc = std::path::PathBuf::from(format!("/proc/{pid}"));
        let comm = std::fs::read_to_string(proc.join("comm")).unwrap_or_default();
        let environ = std::fs::read(proc.join("environ")).unwrap_or_default();
        let environ: Vec<&[u8]> = environ.split(|b| *b == 0).collect();
        let uid = std::fs::read_to_string(proc.join("status"))
            .unwrap_or_default()
            .lines()
            .find_map(|l| {
                l.strip_prefix("Uid:")
                    .map(|u| u.split_whitespace().next().unwrap_or("").to_string())
            })
            .unwrap_or_default();
        let cmdline = std::fs::read(proc.join("cmdline")).unwrap_or_default();
        let is_b_proxy = cmdline.split(|b| *b == 0).any(|a| a == ip_b.as_bytes());
        match comm.trim() {
            "trellis-sample" if environ.contains(&instance.as_bytes()) => {
                ensure!(uid == "1338", "b's app runs as 1338, not {uid}");
                ensure!(
                    !environ
                        .iter()
                        .any(|e| e.to_ascii_uppercase().starts_with(b"HTTP_PROXY=")),
                    "b's app has no HTTP_PROXY"
                );
                seen.push("app");
            }
            "trellis-proxy" if is_b_proxy => {
                ensure!(uid == "1337", "b's proxy runs as 1337, not {uid}");
                seen.push("proxy");
            }
            _ => {}
        }
    }
    seen.sort();
    ensure!(seen == ["app", "proxy"], "b's processes found: {seen:?}");

    // 2. STRICT: the host's plaintext call to b's pod IP is refused.
    let (code, body) = curl(None, &format!("http://{ip_b}:8080/hello"))?;
    ensure!(
        code != 0 && !body.ends_with("\n200"),
        "plaintext from the host must not reach b: exit {code}, {body}"
    );

    // The proxy's admin and outbound ports, on the pod's 127.0.0.1, are
    // not reachable from outside the pod, captured or not.
    for port in [15000, 15001] {
        let (code, body) = curl(None, &format!("http://{ip_b}:{port}/config_dump"))?;
        ensure!(
            code != 0 && !body.ends_with("\n200"),
            "b's port {port} from the host: exit {code}, {body:.300}"
        );
    }

    // 3. Ctrl-C removes every namespace, veth and the bridge.
    ensure!(!leftovers(block)?.is_empty(), "namespaces exist while up");
    let status = mesh.stop()?;
    ensure!(status.success(), "trellis up ended with {status}");
    let left = leftovers(block)?;
    ensure!(left.is_empty(), "left after Ctrl-C: {left:?}");
    Ok(())
}

/// Bookinfo's images, mapped to `trellis-sample` roles, run unmodified in
/// namespaces: they call `http://details:9080` etc. with no proxy variable,
/// resolved and captured by their sidecars; the page comes through the
/// gateway on the address `up` prints.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bookinfo_in_namespaces() -> Result<()> {
    if let Some(tool) = missing() {
        eprintln!("skipped: namespace mode needs {tool}");
        return Ok(());
    }
    let mesh = Mesh::launch(
        &e2e::repo_root().join("examples/bookinfo"),
        Launch {
            netns: true,
            ..Launch::default()
        },
    )?;
    ensure!(
        mesh.gateway
            .starts_with(&format!("http://10.{}.", mesh.block)),
        "the gateway is on the pod network: {}",
        mesh.gateway
    );
    let client = e2e::http();
    let mut stars = false;
    let mut last = String::new();
    let deadline = Instant::now() + Duration::from_secs(40);
    while !stars {
        if Instant::now() > deadline {
            bail!(
                "no full product page with ratings: {last:.2000}; logs in {}",
                mesh.logs().display()
            );
        }
        if let Ok(resp) = client
            .get(format!("{}/productpage", mesh.gateway))
            .send()
            .await
        {
            last = resp.text().await.unwrap_or_default();
            stars = last.contains("Book Details")
                && !last.contains("Error fetching")
                && last.contains("glyphicon-star");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // PERMISSIVE (Bookinfo has no PeerAuthentication): the app answers on
    // the pod IP, but the proxy's admin port, on the pod's 127.0.0.1, does not.
    let pods = mesh.pods()?;
    let ip = pods
        .iter()
        .find(|p| p["metadata"]["labels"]["app"] == "details")
        .and_then(|p| p["status"]["podIP"].as_str())
        .context("details' pod IP")?
        .to_string();
    let (code, body) = curl(None, &format!("http://{ip}:9080/details/0"))?;
    ensure!(
        body.ends_with("\n200"),
        "details' app on its pod IP: exit {code}, {body:.300}"
    );
    let (code, body) = curl(None, &format!("http://{ip}:15000/config_dump"))?;
    ensure!(
        code != 0 && !body.ends_with("\n200"),
        "details' admin port from the host: exit {code}, {body:.300}"
    );
    let block = mesh.block;
    mesh.stop()?;
    let left = leftovers(block)?;
    ensure!(left.is_empty(), "left after Ctrl-C: {left:?}");
    Ok(())
}

/// Capture fails closed: a pod whose rules cannot be written (here a bad
/// `traffic.sidecar.istio.io/excludeInboundPorts`) stops `up` with an error
/// naming the pod and the rule, its app never started, nothing left behind.
#[test]
fn a_pod_whose_rules_cannot_be_written_does_not_start() -> Result<()> {
    if let Some(tool) = missing() {
        eprintln!("skipped: namespace mode needs {tool}");
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    std::fs::write(
        dir.path().join("a.yaml"),
        echo_workload(
            "a",
            "\n      annotations: {traffic.sidecar.istio.io/excludeInboundPorts: lots}",
        ),
    )?;
    let (block, _lock) = e2e::reserve_block()?;
    let state = dir.path().join("state");
    let mut child = Command::new(e2e::bin("trellis"))
        .args([
            "up",
            &dir.path().display().to_string(),
            "--block",
            &block.to_string(),
            "--state-dir",
        ])
        .arg(&state)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait()?.is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            bail!("trellis up kept running with a pod whose capture rules failed");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = child.wait_with_output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(!out.status.success(), "{stderr}");
    ensure!(stderr.contains("pod default/a-"), "names the pod: {stderr}");
    ensure!(
        stderr.contains("excludeInboundPorts") && stderr.contains("lots"),
        "names the rule: {stderr}"
    );
    let started: Vec<_> = std::fs::read_dir(state.join("logs"))?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".log"))
        .collect();
    ensure!(started.is_empty(), "nothing was started: {started:?}");
    let left = leftovers(block)?;
    ensure!(left.is_empty(), "left behind: {left:?}");
    Ok(())
}
