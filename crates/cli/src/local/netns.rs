//! Network namespaces for `trellis up` as root: each pod in its own network
//! namespace, joined by a veth pair to a bridge on the host, with its traffic
//! captured by `trellis-proxy iptables` — the layout of a Kubernetes node.
//!
//! The bridge lives in a hub namespace of its own, so that traffic between
//! pods never crosses the host's firewall (whose policy for bridged or
//! forwarded packets is unknown); the host joins the bridge through one veth
//! pair, whose host end carries the host's address on the pod network.
//!
//! Everything made here is named with a prefix only Trellis uses, from the
//! mesh's block: namespaces `trellis-<block>-<pod>.<namespace>` and
//! `trellis-<block>-hub`, the host's link `trellis<block>`. Teardown, and
//! the cleanup of what a crashed run left, remove exactly those names and
//! nothing else. No rule is written outside the namespaces made here.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::str::FromStr;

use anyhow::{Context, Result, bail};

/// The proxy's user and group, which the capture rules exclude (Istio's 1337).
pub const PROXY_UID: u32 = 1337;
/// The applications' user and group: anyone but the proxy, so that their
/// traffic is captured and they cannot read the proxy's files.
pub const APP_UID: u32 = 1338;

/// The pods' IPv4 range: the host's end of the bridge takes the first
/// address, pods the following ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PodCidr {
    network: Ipv4Addr,
    prefix: u8,
}

impl PodCidr {
    /// `10.<block>.0.0/16`.
    pub fn for_block(block: u8) -> PodCidr {
        PodCidr {
            network: Ipv4Addr::new(10, block, 0, 0),
            prefix: 16,
        }
    }

    fn nth(&self, n: u32) -> Option<Ipv4Addr> {
        let size = 1u64 << (32 - self.prefix);
        // The last address is the broadcast address.
        (u64::from(n) < size - 1).then(|| Ipv4Addr::from(u32::from(self.network) + n))
    }

    /// The host's address on the pod network: the control plane's xDS
    /// listens here, and every pod's default route goes through it.
    pub fn gateway(&self) -> Ipv4Addr {
        self.nth(1).unwrap_or(self.network)
    }

    /// The address of the `index`th pod.
    pub fn pod(&self, index: usize) -> Result<Ipv4Addr> {
        u32::try_from(index)
            .ok()
            .and_then(|i| i.checked_add(2))
            .and_then(|n| self.nth(n))
            .with_context(|| format!("--pod-cidr {self} has no address for pod {}", index + 1))
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }
}

impl std::fmt::Display for PodCidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

impl FromStr for PodCidr {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<PodCidr> {
        let (ip, prefix) = s
            .split_once('/')
            .with_context(|| format!("{s:?}: not an IPv4 CIDR like 10.20.0.0/16"))?;
        let ip: Ipv4Addr = ip
            .parse()
            .with_context(|| format!("{s:?}: {ip:?} is not an IPv4 address"))?;
        let prefix: u8 = prefix
            .parse()
            .ok()
            .filter(|p| (8..=28).contains(p))
            .with_context(|| format!("{s:?}: the prefix length must be 8 to 28"))?;
        let mask = u32::MAX << (32 - prefix);
        if u32::from(ip) & !mask != 0 {
            bail!(
                "{s:?}: host bits set; the network is {}/{prefix}",
                Ipv4Addr::from(u32::from(ip) & mask)
            );
        }
        Ok(PodCidr {
            network: ip,
            prefix,
        })
    }
}

/// The names Trellis owns for one block.
#[derive(Clone, Copy, Debug)]
pub struct Names {
    pub block: u8,
}

impl Names {
    pub fn namespace_prefix(&self) -> String {
        format!("trellis-{}-", self.block)
    }

    pub fn namespace(&self, pod: &str) -> String {
        format!("{}{pod}", self.namespace_prefix())
    }

    /// The hub namespace, holding the bridge. Pod namespaces have a `.` in
    /// their names (`<pod>.<namespace>`), so no pod's can be this.
    pub fn hub(&self) -> String {
        self.namespace("hub")
    }

    /// The host's end of the link to the hub's bridge.
    pub fn bridge(&self) -> String {
        format!("trellis{}", self.block)
    }

    /// The hub's end of the `index`th pod's veth pair (at most 15 bytes, the kernel's limit).
    fn veth(&self, index: usize) -> String {
        format!("trellis{}-{index}", self.block)
    }

    fn is_ours_link(&self, link: &str) -> bool {
        link == self.bridge() || link.starts_with(&format!("{}-", self.bridge()))
    }
}

fn run(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("running {cmd:?} (is iproute2 installed?)"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn ip(args: &[&str]) -> Result<String> {
    run(Command::new("ip").args(args))
}

/// Removes every namespace and link of `names` — what a crashed run left.
/// Returns what it removed.
pub fn clean(names: Names) -> Vec<String> {
    let mut removed = Vec::new();
    let prefix = names.namespace_prefix();
    for line in ip(&["netns", "list"]).unwrap_or_default().lines() {
        // `name (id: 3)`
        let Some(ns) = line.split_whitespace().next() else {
            continue;
        };
        if ns.starts_with(&prefix) && ip(&["netns", "del", ns]).is_ok() {
            let _ = std::fs::remove_dir_all(Path::new("/etc/netns").join(ns));
            removed.push(ns.to_string());
        }
    }
    for line in ip(&["-o", "link", "show"]).unwrap_or_default().lines() {
        // `12: trellis20-1@if2: <…>`
        let Some(link) = line.split(": ").nth(1) else {
            continue;
        };
        let link = link.split('@').next().unwrap_or(link);
        if names.is_ours_link(link) && ip(&["link", "del", link]).is_ok() {
            removed.push(link.to_string());
        }
    }
    removed
}

/// The bridge and the pods' namespaces of one mesh, removed on drop.
pub struct PodNetwork {
    names: Names,
    cidr: PodCidr,
}

impl PodNetwork {
    /// Cleans a crashed run's leftovers of this block, then makes the bridge
    /// with the host's address on the pod network.
    pub fn create(names: Names, cidr: PodCidr) -> Result<PodNetwork> {
        let left = clean(names);
        if !left.is_empty() {
            eprintln!("removed what an earlier run left: {}", left.join(", "));
        }
        // A range the host already routes (a LAN, a VPN, another mesh's
        // --pod-cidr) would be shadowed or shadow it.
        let routed = ip(&["-o", "route", "show", "root", &cidr.to_string()])?;
        if let Some(route) = routed.lines().next() {
            bail!(
                "the pod range {cidr} overlaps a route of this host ({}); pick another with --pod-cidr, or --no-netns",
                route.trim()
            );
        }
        let hub = names.hub();
        ip(&["netns", "add", &hub])?;
        // From here on, dropping `net` removes what was made.
        let net = PodNetwork { names, cidr };
        let in_hub = |args: &[&str]| {
            let mut a = vec!["netns", "exec", hub.as_str(), "ip"];
            a.extend(args);
            ip(&a)
        };
        in_hub(&["link", "add", "br0", "type", "bridge"])?;
        in_hub(&["link", "set", "br0", "up"])?;
        let host_end = names.bridge();
        ip(&[
            "link", "add", &host_end, "type", "veth", "peer", "name", "uplink", "netns", &hub,
        ])?;
        in_hub(&["link", "set", "uplink", "master", "br0", "up"])?;
        ip(&[
            "addr",
            "add",
            &format!("{}/{}", cidr.gateway(), cidr.prefix()),
            "dev",
            &host_end,
        ])?;
        ip(&["link", "set", &host_end, "up"])?;
        Ok(net)
    }

    /// Makes the `index`th pod's namespace, at `pod_ip`, joined to the
    /// bridge, with a resolv.conf naming its sidecar's DNS. Returns its name.
    pub fn add_pod(
        &self,
        index: usize,
        pod: &str,
        namespace: &str,
        pod_ip: Ipv4Addr,
    ) -> Result<String> {
        let ns = self.names.namespace(pod);
        let veth = self.names.veth(index);
        let exec = |args: &[&str]| {
            let mut a = vec!["netns", "exec", ns.as_str()];
            a.extend(args);
            ip(&a)
        };
        ip(&["netns", "add", &ns])?;
        exec(&["ip", "link", "set", "lo", "up"])?;
        let hub = self.names.hub();
        ip(&[
            "netns", "exec", &hub, "ip", "link", "add", &veth, "type", "veth", "peer", "name",
            "eth0", "netns", &ns,
        ])?;
        ip(&[
            "netns", "exec", &hub, "ip", "link", "set", &veth, "master", "br0", "up",
        ])?;
        exec(&[
            "ip",
            "addr",
            "add",
            &format!("{pod_ip}/{}", self.cidr.prefix()),
            "dev",
            "eth0",
        ])?;
        exec(&["ip", "link", "set", "eth0", "up"])?;
        // As in a cluster: everything off-pod goes out eth0, through the
        // NAT rules capture writes (a packet with no route never reaches them).
        exec(&[
            "ip",
            "route",
            "add",
            "default",
            "via",
            &self.cidr.gateway().to_string(),
        ])?;
        // `ip netns exec` mounts this over /etc/resolv.conf. The capture
        // rules send every DNS query (UDP and TCP 53) to the sidecar's 15053.
        let etc = Path::new("/etc/netns").join(&ns);
        std::fs::create_dir_all(&etc).with_context(|| format!("creating {}", etc.display()))?;
        std::fs::write(
            etc.join("resolv.conf"),
            format!(
                "nameserver 127.0.0.1\nsearch {namespace}.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5\n"
            ),
        )
        .with_context(|| format!("writing {}/resolv.conf", etc.display()))?;
        Ok(ns)
    }

    /// Writes the capture rules in `ns`. Fails closed: the caller starts
    /// nothing of the pod if this fails, and the error says which rule.
    pub fn capture(&self, ns: &str, pod_id: &str, proxy: &Path, flags: &[String]) -> Result<()> {
        let out = Command::new("ip")
            .args(["netns", "exec", ns])
            .arg(proxy)
            .arg("iptables")
            .args(flags)
            .env_remove("RUST_BACKTRACE")
            .output()
            .with_context(|| format!("pod {pod_id}: running trellis-proxy iptables"))?;
        if !out.status.success() {
            bail!(
                "pod {pod_id}: the capture rules could not be written in network namespace {ns}, so the pod was not started: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }
}

impl PodNetwork {
    /// Removes a pod's namespace (its veth pair goes with it) and its
    /// files under /etc/netns.
    pub fn remove_pod(&self, pod: &str) -> Result<()> {
        let ns = self.names.namespace(pod);
        ip(&["netns", "del", &ns])?;
        let _ = std::fs::remove_dir_all(Path::new("/etc/netns").join(&ns));
        Ok(())
    }

    /// Writes the pod's /etc/hosts (which `ip netns exec` mounts over the
    /// host's): localhost, the pod's own name, and `extra` lines.
    pub fn write_hosts(
        &self,
        pod: &str,
        hostname: &str,
        pod_ip: Ipv4Addr,
        extra: &[String],
    ) -> Result<()> {
        let file = Path::new("/etc/netns")
            .join(self.names.namespace(pod))
            .join("hosts");
        let mut text = format!(
            "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n{pod_ip}\t{hostname}\n"
        );
        for line in extra {
            text.push_str(line);
            text.push('\n');
        }
        std::fs::write(&file, text).with_context(|| format!("writing {}", file.display()))
    }

    /// Sets a namespaced sysctl (`net.*`) in the pod's namespace.
    pub fn sysctl(&self, pod: &str, name: &str, value: &str) -> Result<()> {
        if !name.starts_with("net.") || name.contains("..") || name.contains('/') {
            bail!("sysctl {name}: only the network namespace's net.* sysctls can be set");
        }
        let ns = self.names.namespace(pod);
        run(Command::new("ip")
            .args(["netns", "exec", &ns, "sysctl", "-q", "-w"])
            .arg(format!("{name}={value}")))?;
        Ok(())
    }

    pub fn cidr(&self) -> PodCidr {
        self.cidr
    }
}

impl Drop for PodNetwork {
    fn drop(&mut self) {
        clean(self.names);
    }
}

/// The command line running `program args` in network namespace `ns` as
/// user and group `uid`, killed if `trellis up` dies.
pub fn in_pod(ns: &str, uid: u32, program: &Path, args: &[String]) -> (PathBuf, Vec<String>) {
    let uid = uid.to_string();
    let mut all: Vec<String> = [
        "netns",
        "exec",
        ns,
        "setpriv",
        "--reuid",
        &uid,
        "--regid",
        &uid,
        "--clear-groups",
        // A change of user clears the parent-death signal `up` set; set it again.
        "--pdeathsig",
        "KILL",
        "--",
    ]
    .map(String::from)
    .to_vec();
    all.push(program.display().to_string());
    all.extend(args.iter().cloned());
    (PathBuf::from("ip"), all)
}

/// As [`in_pod`], with `mounts` (host directory, path in the pod) bound
/// over the pod's view of the file system first, as a kubelet mounts
/// volumes: `ip netns exec` runs the command in a mount namespace of its
/// own (slave to the host's), so the binds are seen by the pod's process
/// alone. A missing mount point is made as an empty directory on the host.
pub fn in_pod_mounted(
    ns: &str,
    uid: u32,
    mounts: &[(PathBuf, String)],
    program: &Path,
    args: &[String],
) -> (PathBuf, Vec<String>) {
    let (ip, inner) = in_pod(ns, uid, program, args);
    if mounts.is_empty() {
        return (ip, inner);
    }
    // Paths travel as arguments, never inside the script.
    let script = r#"while [ "$1" != -- ]; do mkdir -p "$2" && mount --bind "$1" "$2" || exit 1; shift 2; done; shift; exec "$@""#;
    let mut all: Vec<String> = ["netns", "exec", ns, "sh", "-c", script, "sh"]
        .map(String::from)
        .to_vec();
    for (source, target) in mounts {
        all.push(source.display().to_string());
        all.push(target.clone());
    }
    all.push("--".into());
    // `inner` is `netns exec NS setpriv …`: keep from `setpriv` on.
    all.extend(inner.into_iter().skip(3));
    (ip, all)
}

/// Whether this process may make namespaces: root, with `ip` and `setpriv`.
pub fn missing_for_netns() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("not root".into());
    }
    for tool in ["ip", "setpriv", "iptables-restore"] {
        let found = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
            .unwrap_or(false);
        if !found {
            return Some(format!("{tool} not found"));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_cidr_addresses_and_errors() {
        let c = PodCidr::for_block(20);
        assert_eq!(c.gateway(), Ipv4Addr::new(10, 20, 0, 1));
        assert_eq!(c.pod(0).unwrap(), Ipv4Addr::new(10, 20, 0, 2));
        assert_eq!(c.pod(300).unwrap(), Ipv4Addr::new(10, 20, 1, 46));
        let small: PodCidr = "192.168.7.0/28".parse().unwrap();
        assert_eq!(small.pod(12).unwrap(), Ipv4Addr::new(192, 168, 7, 14));
        assert!(small.pod(13).is_err(), "the broadcast address is no pod's");
        assert!("10.1.2.3/16".parse::<PodCidr>().is_err());
        assert!("10.1.0.0".parse::<PodCidr>().is_err());
        assert!("10.1.0.0/30".parse::<PodCidr>().is_err());
    }

    #[test]
    fn mounts_are_arguments_never_script() {
        let mounts = [(
            PathBuf::from("/state/v/tok en"),
            "/var/run/$(x);rm".to_string(),
        )];
        let (ip, args) = in_pod_mounted("ns1", 1337, &mounts, Path::new("/bin/app"), &["a".into()]);
        assert_eq!(ip, PathBuf::from("ip"));
        assert_eq!(&args[..4], ["netns", "exec", "ns1", "sh"]);
        let script = &args[5];
        assert!(
            !script.contains("tok en") && !script.contains("rm"),
            "{script}"
        );
        assert_eq!(
            &args[6..10],
            ["sh", "/state/v/tok en", "/var/run/$(x);rm", "--"]
        );
        assert_eq!(args[10], "setpriv");
        assert_eq!(&args[args.len() - 2..], ["/bin/app", "a"]);
        let (_, plain) = in_pod_mounted("ns1", 1337, &[], Path::new("/bin/app"), &[]);
        assert_eq!(&plain[..4], ["netns", "exec", "ns1", "setpriv"]);
    }

    #[test]
    fn only_our_names_are_ours() {
        let n = Names { block: 2 };
        assert!(n.is_ours_link("trellis2"));
        assert!(n.is_ours_link("trellis2-14"));
        assert!(!n.is_ours_link("trellis20"));
        assert!(!n.is_ours_link("trellis20-1"));
        assert!(!n.is_ours_link("eth0"));
        assert_eq!(n.namespace("web-abc"), "trellis-2-web-abc");
        assert!(n.veth(9999).len() <= 15 && Names { block: 250 }.veth(9999).len() <= 15);
    }
}
