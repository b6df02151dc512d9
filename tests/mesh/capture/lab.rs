//! The test's own little cluster: network namespaces for a hub (bridge,
//! control plane) and the pods, joined by veth pairs; the commands run in
//! them, and their cleanup.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use e2e::bin;

pub const HUB_IP: &str = "10.77.0.1";
pub const PROXY_UID: &str = "1337";
/// The hub's IPv6 address on the bridge.
const HUB_IP6: &str = "fd77::1/64";

/// A pod's IPv6 address: `fd77::<last byte of its IPv4 address>`.
pub fn ip6(ip: &str) -> String {
    format!("fd77::{}", ip.rsplit('.').next().unwrap_or("0"))
}

/// One test's namespaces and processes, removed on drop.
pub struct Lab {
    prefix: String,
    children: Vec<Child>,
    namespaces: Vec<String>,
    pub dir: tempfile::TempDir,
}

pub fn run(cmd: &mut Command) -> Result<Output> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    Ok(out)
}

pub fn check(cmd: &mut Command) -> Result<String> {
    let out = run(cmd)?;
    ensure!(
        out.status.success(),
        "{cmd:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

impl Lab {
    pub fn ns(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// `ip netns exec <ns> <args>`.
    pub fn exec(&self, ns: &str, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns(ns)]).args(args);
        c
    }

    pub fn new(block: u8) -> Result<Lab> {
        let lab = Lab {
            // Trellis-owned prefix: a crashed run's leftovers are recognisable.
            prefix: format!("trl{block}-"),
            children: Vec::new(),
            namespaces: Vec::new(),
            dir: tempfile::tempdir()?,
        };
        // Readable by the proxy's user.
        std::fs::set_permissions(
            lab.dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )?;
        Ok(lab)
    }

    pub fn add_namespace(&mut self, name: &str) -> Result<()> {
        let ns = self.ns(name);
        // A leftover of a crashed run of this block.
        let _ = run(Command::new("ip").args(["netns", "del", &ns]));
        check(Command::new("ip").args(["netns", "add", &ns]))?;
        self.namespaces.push(ns);
        check(&mut self.exec(name, &["ip", "link", "set", "lo", "up"]))?;
        Ok(())
    }

    /// The hub: a bridge at HUB_IP.
    pub fn hub(&mut self) -> Result<()> {
        self.add_namespace("hub")?;
        check(&mut self.exec("hub", &["ip", "link", "add", "br0", "type", "bridge"]))?;
        check(&mut self.exec(
            "hub",
            &["ip", "addr", "add", &format!("{HUB_IP}/24"), "dev", "br0"],
        ))?;
        check(&mut self.exec(
            "hub",
            &["ip", "-6", "addr", "add", HUB_IP6, "dev", "br0", "nodad"],
        ))?;
        check(&mut self.exec("hub", &["ip", "link", "set", "br0", "up"]))?;
        Ok(())
    }

    /// A pod namespace joined to the hub's bridge, at `ip` and at the IPv6
    /// address [`ip6`] gives it (dual-stack, as a cluster may be).
    pub fn pod(&mut self, name: &str, ip: &str) -> Result<()> {
        self.add_namespace(name)?;
        let host_end = format!("v{name}");
        let pod_ns = self.ns(name);
        check(&mut self.exec(
            "hub",
            &[
                "ip", "link", "add", &host_end, "type", "veth", "peer", "name", "eth0", "netns",
                &pod_ns,
            ],
        ))?;
        check(&mut self.exec(
            "hub",
            &["ip", "link", "set", &host_end, "master", "br0", "up"],
        ))?;
        check(&mut self.exec(
            name,
            &["ip", "addr", "add", &format!("{ip}/24"), "dev", "eth0"],
        ))?;
        // No duplicate address detection: the address is usable at once.
        check(&mut self.exec(
            name,
            &[
                "ip",
                "-6",
                "addr",
                "add",
                &format!("{}/64", ip6(ip)),
                "dev",
                "eth0",
                "nodad",
            ],
        ))?;
        check(&mut self.exec(name, &["ip", "link", "set", "eth0", "up"]))?;
        // As in a cluster: everything off-pod goes out eth0 (and so through
        // the NAT rules capture writes, which a packet with no route never reaches).
        check(&mut self.exec(name, &["ip", "route", "add", "default", "via", HUB_IP]))?;
        Ok(())
    }

    pub fn spawn(&mut self, ns: &str, args: &[&str], log: &str) -> Result<()> {
        let log_file = std::fs::File::create(self.dir.path().join(log))?;
        let child = self
            .exec(ns, args)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .spawn()
            .with_context(|| format!("starting {args:?} in {ns}"))?;
        self.children.push(child);
        Ok(())
    }

    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default()
    }

    /// Runs `curl` in `ns`; returns (exit status, body).
    pub fn curl(&self, ns: &str, url: &str) -> Result<(i32, String)> {
        let out = run(&mut self.exec(
            ns,
            &[
                "curl",
                "-sS",
                // No globbing: an IPv6 address's brackets are literal.
                "-g",
                "--max-time",
                "5",
                "-o",
                "-",
                "-w",
                "\n%{http_code}",
                url,
            ],
        ))?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        Ok((out.status.code().unwrap_or(-1), text))
    }
}

impl Lab {
    /// Sends `payload` over a raw TCP connection from `ns` and returns what
    /// comes back before the other end closes (bounded by a timeout).
    pub fn raw_tcp(&self, ns: &str, ip: &str, port: u16, payload: &str) -> Result<String> {
        let script = format!(
            "exec 3<>/dev/tcp/{ip}/{port} || exit 9; printf '{payload}' >&3; timeout 3 cat <&3"
        );
        let out = run(&mut self.exec(ns, &["bash", "-c", &script]))?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for ns in &self.namespaces {
            // Pod namespaces first would not matter: deleting one removes its veth end.
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

/// Copies the binaries where the proxy's user may run them (target/ may be
/// private to root).
pub fn install_bins(dir: &Path) -> Result<PathBuf> {
    let bins = dir.join("bin");
    std::fs::create_dir_all(&bins)?;
    for name in [
        "trellis-proxy",
        "trellisd",
        "trellis-sample",
        "trellis",
        "bench-data-plane",
    ] {
        std::fs::copy(bin(name), bins.join(name))?;
    }
    Ok(bins)
}

pub fn prerequisites() -> Option<&'static str> {
    if !std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"))
    }) {
        return Some("not root");
    }
    for tool in [
        "ip",
        "iptables-restore",
        "curl",
        "setpriv",
        "tcpdump",
        "getent",
    ] {
        let found = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
            .unwrap_or(false);
        if !found {
            return Some(tool);
        }
    }
    None
}

/// Waits until `f` holds, polling; bounded by `within`.
pub fn wait_for(within: Duration, what: &str, mut f: impl FnMut() -> Result<bool>) -> Result<()> {
    let deadline = Instant::now() + within;
    loop {
        if f()? {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{what}: not after {within:?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
