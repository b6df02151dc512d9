//! Support for the end-to-end tests: run the real binaries, find them, and
//! talk to a running mesh.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use nix::fcntl::{Flock, FlockArg};
use serde_json::Value;

pub mod kube;
pub mod node;

/// The directory holding the workspace's binaries (target/debug), found from the test binary's path.
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let deps = exe.parent().expect("deps dir");
    deps.parent().expect("target dir").to_path_buf()
}

pub fn bin(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(
        p.is_file(),
        "{} is missing: run `cargo build --workspace --bins` first (scripts/test.sh does)",
        p.display()
    );
    p
}

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// The source of the istio.io/istio Go module at the pin scripts/istioctl.sh
/// builds from (Istio's dashboards and analyzer test inputs are read from
/// it), fetched into Go's module cache if it is not there.
pub fn istio_module_dir() -> Result<PathBuf> {
    let out = std::process::Command::new(repo_root().join("scripts/istioctl.sh"))
        .arg("--module-dir")
        .output()
        .context("scripts/istioctl.sh --module-dir")?;
    let dir = String::from_utf8_lossy(&out.stdout).trim().to_string();
    anyhow::ensure!(
        out.status.success() && !dir.is_empty(),
        "scripts/istioctl.sh --module-dir: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(PathBuf::from(dir))
}

/// A loopback block (127.N.0.0/16) no other test process is using: each test
/// holds an exclusive lock on a file for its block, released when it exits.
pub fn reserve_block() -> Result<(u8, Flock<File>)> {
    let dir = std::env::temp_dir().join("trellis-e2e-blocks");
    std::fs::create_dir_all(&dir)?;
    for block in 20..=250u8 {
        let file = File::create(dir.join(format!("{block}.lock")))?;
        if let Ok(lock) = Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            return Ok((block, lock));
        }
    }
    bail!("no free loopback block")
}

/// A running `trellis up`, stopped (SIGTERM, then waited for) on drop.
pub struct Mesh {
    child: Child,
    pub block: u8,
    pub api: String,
    /// The ingress gateway's URL; empty when the mesh has none.
    pub gateway: String,
    pub state: StateDir,
    /// Where the CLI keeps its mesh registry and contexts (XDG_STATE_HOME and
    /// XDG_CONFIG_HOME), private to the test.
    pub home: PathBuf,
    /// Pods in network namespaces (`Launch::netns`).
    pub netns: bool,
    _owned: Vec<tempfile::TempDir>,
    _lock: Option<Flock<File>>,
}

/// A mesh's state directory (`--state-dir`).
pub struct StateDir(PathBuf);

impl StateDir {
    pub fn path(&self) -> &Path {
        &self.0
    }
}

/// How to start a [`Mesh`] beyond the defaults of [`Mesh::up`].
#[derive(Default)]
pub struct Launch {
    /// A block the caller reserved (and keeps locked); default: a fresh one.
    pub block: Option<u8>,
    /// The state directory; default: a new temporary one.
    pub state: Option<PathBuf>,
    /// The CLI's registry/context home; default: a new temporary one.
    pub home: Option<PathBuf>,
    /// More `trellis up` arguments (`--fresh`).
    pub args: Vec<String>,
    /// Pods in network namespaces (`up` as root); default: loopback mode
    /// (`--no-netns`), which every test can use whoever runs it.
    pub netns: bool,
    /// More environment for `trellis up` (and so its trellisd).
    pub env: Vec<(String, String)>,
}

impl Mesh {
    pub fn up(dir: &Path) -> Result<Mesh> {
        Mesh::launch(dir, Launch::default())
    }

    pub fn launch(dir: &Path, launch: Launch) -> Result<Mesh> {
        let mut owned = Vec::new();
        let (block, lock) = match launch.block {
            Some(b) => (b, None),
            None => {
                let (b, l) = reserve_block()?;
                (b, Some(l))
            }
        };
        let mut temp = || -> Result<PathBuf> {
            let t = tempfile::tempdir()?;
            let p = t.path().to_path_buf();
            owned.push(t);
            Ok(p)
        };
        let state = match launch.state {
            Some(s) => s,
            None => temp()?,
        };
        let home = match launch.home {
            Some(h) => h,
            None => temp()?,
        };
        let mut child = Command::new(bin("trellis"))
            .args([
                "up",
                &dir.display().to_string(),
                "--block",
                &block.to_string(),
                "--state-dir",
            ])
            .arg(&state)
            .args(&launch.args)
            .args((!launch.netns).then_some("--no-netns"))
            .envs(cli_env(&home))
            .envs(launch.env)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let stdout = child.stdout.take().context("stdout")?;
        let mut gateway = None;
        let mut up = false;
        for line in BufReader::new(stdout).lines() {
            let line = line?;
            println!("trellis up: {line}");
            if let Some(rest) = line.trim().strip_prefix("ingress gateway") {
                gateway = Some(rest.trim().trim_end_matches('/').to_string());
            }
            if line.contains("Press Ctrl-C") {
                up = true;
                break;
            }
        }
        if !up {
            let status = child.wait()?;
            bail!("trellis up ended ({status}) before the mesh was up");
        }
        let api = format!("http://127.{block}.0.1:15014");
        Ok(Mesh {
            child,
            block,
            api,
            gateway: gateway.unwrap_or_default(),
            state: StateDir(state),
            home,
            netns: launch.netns,
            _owned: owned,
            _lock: lock,
        })
    }

    /// Runs the `trellis` CLI against this mesh.
    pub fn trellis(&self, args: &[&str]) -> Output {
        Command::new(bin("trellis"))
            .args(args)
            .args(["--control-plane", &self.api])
            .envs(cli_env(&self.home))
            .output()
            .expect("run trellis")
    }

    /// The control plane API's bearer token.
    pub fn token(&self) -> Result<String> {
        Ok(
            std::fs::read_to_string(self.state.path().join("api-token"))?
                .trim()
                .to_string(),
        )
    }

    pub fn pods(&self) -> Result<Vec<Value>> {
        let out = self.trellis(&["get", "pods", "-A", "-o", "json"]);
        if !out.status.success() {
            bail!("trellis get pods: {}", String::from_utf8_lossy(&out.stderr));
        }
        let list: Value = serde_json::from_slice(&out.stdout)?;
        Ok(list["items"].as_array().cloned().unwrap_or_default())
    }

    /// The (first) pod whose `app` label is `app`.
    pub fn pod_of(&self, app: &str) -> Result<Value> {
        self.pods()?
            .into_iter()
            .find(|p| p["metadata"]["labels"]["app"] == app)
            .with_context(|| format!("no pod of {app}"))
    }

    /// `pod`'s application on `port`, as the tests reach it (see [`App`]).
    pub fn app(&self, pod: &Value, port: u16) -> Result<App> {
        let name = pod["metadata"]["name"].as_str().context("pod name")?;
        let namespace = pod["metadata"]["namespace"].as_str().unwrap_or("default");
        if self.netns {
            return Ok(App {
                base: format!("http://127.0.0.1:{port}"),
                netns: Some(format!("trellis-{}-{name}.{namespace}", self.block)),
            });
        }
        // `up` gives a pod with a sidecar its app address next to the admin
        // port; a pod without one binds its pod IP.
        let ip = match pod["metadata"]["annotations"]["proxy.trellis.io/admin"].as_str() {
            Some(admin) => admin
                .rsplit_once(':')
                .map(|(ip, _)| ip.to_string())
                .context("admin address")?,
            None => pod["status"]["podIP"]
                .as_str()
                .context("pod IP")?
                .to_string(),
        };
        Ok(App {
            base: format!("http://{ip}:{port}"),
            netns: None,
        })
    }

    /// The control plane's discovery and CA over TLS, as the mesh's proxies
    /// reach it (loopback mode), verified with the mesh root `up` wrote.
    pub fn xds(&self) -> Result<wire::address::XdsAddress> {
        Ok(wire::address::XdsAddress::parse(
            &format!("https://127.{}.0.1:{}", self.block, wire::address::TLS_PORT),
            Some(&self.state.path().join("root-cert.pem")),
        )?)
    }

    pub fn logs(&self) -> PathBuf {
        self.state.path().join("logs")
    }

    /// Stops the mesh as Ctrl-C does, and waits for it.
    pub fn stop(mut self) -> Result<std::process::ExitStatus> {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT)?;
        Ok(self.child.wait()?)
    }
}

/// The environment that gives the CLI a private registry and context file in `home`.
pub fn cli_env(home: &Path) -> [(&'static str, PathBuf); 2] {
    [
        ("XDG_STATE_HOME", home.join("state")),
        ("XDG_CONFIG_HOME", home.join("config")),
    ]
}

impl Drop for Mesh {
    fn drop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return; // already stopped (and reaped: its pid may be someone else's now)
        }
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A pod's application as a test calls it directly, past its sidecar's
/// inbound side (its own outbound calls still go through the sidecar): in
/// loopback mode at its own address; in namespace mode from inside its
/// network namespace, on its 127.0.0.1 (`ip netns exec`, curl), since
/// nothing outside the pod reaches it but through its sidecar.
pub struct App {
    base: String,
    netns: Option<String>,
}

impl App {
    /// GET `path` (with its query); the status and body.
    pub async fn get(&self, path: &str) -> Result<(u16, String)> {
        let url = format!("{}{path}", self.base);
        let Some(ns) = &self.netns else {
            let resp = http().get(&url).send().await?;
            return Ok((resp.status().as_u16(), resp.text().await?));
        };
        let out = tokio::process::Command::new("ip")
            .args(["netns", "exec", ns, "curl", "-sS", "--max-time", "20"])
            .args(["-w", "\n%{http_code}", &url])
            .output()
            .await
            .context("running curl in the pod's network namespace")?;
        let text = String::from_utf8_lossy(&out.stdout);
        let Some((body, status)) = text.rsplit_once('\n') else {
            bail!(
                "curl {url} in {ns}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        match status.parse::<u16>() {
            Ok(code) if code != 0 => Ok((code, body.to_string())),
            _ => bail!(
                "curl {url} in {ns}: {}",
                String::from_utf8_lossy(&out.stderr)
            ),
        }
    }
}

/// Why pods cannot run in network namespaces here (`Launch::netns`), if
/// they cannot: namespace mode needs root and iproute2, iptables, setpriv
/// and curl. Tests of it skip then, saying why.
pub fn netns_unavailable() -> Option<&'static str> {
    let root = std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"))
    });
    if !root {
        return Some("not root");
    }
    ["ip", "iptables-restore", "setpriv", "curl"]
        .into_iter()
        .find(|tool| {
            !std::env::var_os("PATH")
                .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        })
}

/// An HTTP client that never uses a proxy from the environment.
pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(20))
        .build()
        .expect("client")
}

/// Retries `f` until it returns Ok or `within` passes; the last error is returned.
pub async fn eventually<T, F, Fut>(within: Duration, mut f: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        match f().await {
            Ok(v) => return Ok(v),
            Err(e) if Instant::now() >= deadline => {
                return Err(e.context(format!("still failing after {within:?}")));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// The sum of a Prometheus counter's samples whose labels include all of `labels`.
pub fn counter_sum(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with('{'))
        .filter(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Processes whose command line has `needle` as one argument.
pub fn pids_with_arg(needle: &str) -> Vec<i32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        if cmdline.split(|b| *b == 0).any(|a| a == needle.as_bytes()) {
            out.push(pid);
        }
    }
    out
}

/// The YAML of an echo workload `name` (ServiceAccount, Service on port
/// 8080 named `http`, Deployment of `trellis-sample echo`) whose pod
/// template carries `annotations` (YAML lines
/// following the template's `labels`, indented for it).
pub fn echo_workload(name: &str, annotations: &str) -> String {
    format!(
        "apiVersion: v1
kind: ServiceAccount
metadata: {{name: {name}}}
---
apiVersion: v1
kind: Service
metadata: {{name: {name}}}
spec:
  selector: {{app: {name}}}
  ports: [{{name: http, port: 8080}}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}}}
spec:
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata:
      labels: {{app: {name}}}{annotations}
    spec:
      serviceAccountName: {name}
      containers:
      - name: echo
        image: trellis-sample
        command: [trellis-sample]
        args: [echo, --service, {name}, --port, \"8080\"]
        ports: [{{containerPort: 8080}}]
"
    )
}
