//! Transparent capture, end to end, in network namespaces the test makes:
//! a hub namespace with a bridge and the control plane, and a namespace per
//! pod joined to it by a veth pair. Meshed pods get `trellis-proxy
//! iptables` and a sidecar running as UID 1337 with `--capture
//! --dns-capture`; their applications know nothing of the mesh (no
//! HTTP_PROXY): an unmodified `curl` calls `http://b:8080`, an unmodified
//! tonic client `grpc-b:50051`, a shell's raw TCP `lines:9000`.
//!
//! Nothing outside these namespaces is changed; they are deleted on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use e2e::{bin, reserve_block};

const HUB_IP: &str = "10.77.0.1";
const PROXY_UID: &str = "1337";

/// One test's namespaces and processes, removed on drop.
struct Lab {
    prefix: String,
    children: Vec<Child>,
    namespaces: Vec<String>,
    dir: tempfile::TempDir,
}

fn run(cmd: &mut Command) -> Result<Output> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    Ok(out)
}

fn check(cmd: &mut Command) -> Result<String> {
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
    fn ns(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// `ip netns exec <ns> <args>`.
    fn exec(&self, ns: &str, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns(ns)]).args(args);
        c
    }

    fn new(block: u8) -> Result<Lab> {
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

    fn add_namespace(&mut self, name: &str) -> Result<()> {
        let ns = self.ns(name);
        // A leftover of a crashed run of this block.
        let _ = run(Command::new("ip").args(["netns", "del", &ns]));
        check(Command::new("ip").args(["netns", "add", &ns]))?;
        self.namespaces.push(ns);
        check(&mut self.exec(name, &["ip", "link", "set", "lo", "up"]))?;
        Ok(())
    }

    /// The hub: a bridge at HUB_IP.
    fn hub(&mut self) -> Result<()> {
        self.add_namespace("hub")?;
        check(&mut self.exec("hub", &["ip", "link", "add", "br0", "type", "bridge"]))?;
        check(&mut self.exec(
            "hub",
            &["ip", "addr", "add", &format!("{HUB_IP}/24"), "dev", "br0"],
        ))?;
        check(&mut self.exec("hub", &["ip", "link", "set", "br0", "up"]))?;
        Ok(())
    }

    /// A pod namespace joined to the hub's bridge, at `ip`.
    fn pod(&mut self, name: &str, ip: &str) -> Result<()> {
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
        check(&mut self.exec(name, &["ip", "link", "set", "eth0", "up"]))?;
        // As in a cluster: everything off-pod goes out eth0 (and so through
        // the NAT rules capture writes, which a packet with no route never reaches).
        check(&mut self.exec(name, &["ip", "route", "add", "default", "via", HUB_IP]))?;
        Ok(())
    }

    fn spawn(&mut self, ns: &str, args: &[&str], log: &str) -> Result<()> {
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

    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default()
    }

    /// Runs `curl` in `ns`; returns (exit status, body).
    fn curl(&self, ns: &str, url: &str) -> Result<(i32, String)> {
        let out = run(&mut self.exec(
            ns,
            &[
                "curl",
                "-sS",
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
    fn raw_tcp(&self, ns: &str, ip: &str, port: u16, payload: &str) -> Result<String> {
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
fn install_bins(dir: &Path) -> Result<PathBuf> {
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

const MESH_YAML: &str = "
apiVersion: v1
kind: ServiceAccount
metadata: {name: a, namespace: default}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: b, namespace: default}
---
apiVersion: v1
kind: Service
metadata: {name: b, namespace: default}
spec:
  selector: {app: b}
  ports: [{name: http, port: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: grpc-b, namespace: default}
spec:
  selector: {app: b}
  ports: [{name: grpc, port: 50051}]
---
apiVersion: v1
kind: Service
metadata: {name: lines, namespace: default}
spec:
  selector: {app: b}
  ports: [{name: tcp-lines, port: 9000}]
---
apiVersion: v1
kind: Service
metadata: {name: lines-alt, namespace: default}
spec:
  selector: {app: b}
  ports: [{name: tcp-lines, port: 9001}]
---
apiVersion: v1
kind: Pod
metadata:
  name: a
  namespace: default
  labels: {app: a}
  annotations: {trellis.io/workload: a, sidecar.istio.io/status: '{}'}
spec:
  serviceAccountName: a
  containers: [{name: app, image: curl}]
status: {phase: Running, podIP: 10.77.0.2, podIPs: [{ip: 10.77.0.2}]}
---
apiVersion: v1
kind: Pod
metadata:
  name: b
  namespace: default
  labels: {app: b}
  annotations: {trellis.io/workload: b, sidecar.istio.io/status: '{}'}
spec:
  serviceAccountName: b
  containers: [{name: app, image: trellis-sample, ports: [{containerPort: 8080}]}]
status: {phase: Running, podIP: 10.77.0.3, podIPs: [{ip: 10.77.0.3}]}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: istio-system}
spec:
  mtls: {mode: STRICT}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: b-ports, namespace: default}
spec:
  selector: {matchLabels: {app: b}}
  portLevelMtls:
    7072: {mode: PERMISSIVE}
    7073: {mode: PERMISSIVE}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: external-api, namespace: default}
spec:
  hosts: [api.external.test]
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: DNS
";

const REGISTRY_ONLY: &str = "
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: default}
spec:
  outboundTrafficPolicy: {mode: REGISTRY_ONLY}
";

/// Half of the connections to `lines` go to `lines-alt` instead.
const TCP_ROUTE: &str = "
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: lines, namespace: default}
spec:
  hosts: [lines]
  tcp:
  - match: [{port: 9000}]
    route:
    - destination: {host: lines, port: {number: 9000}}
      weight: 50
    - destination: {host: lines-alt, port: {number: 9001}}
      weight: 50
";

/// A raw TCP line-echo server that knows nothing of the mesh, on `port` in
/// the network namespace `netns` (a thread of this test moved into it):
/// each line comes back as "<port>: <line>"; the line `quit` closes.
fn line_echo(netns: &str, port: u16) -> Result<()> {
    use std::io::{BufRead, Write};
    let path = format!("/var/run/netns/{netns}");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let bound = (|| -> Result<std::net::TcpListener> {
            let ns = std::fs::File::open(&path)?;
            nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET)?;
            Ok(std::net::TcpListener::bind(("0.0.0.0", port))?)
        })();
        let listener = match bound {
            Ok(l) => {
                let _ = tx.send(Ok(()));
                l
            }
            Err(e) => {
                let _ = tx.send(Err(e));
                return;
            }
        };
        for conn in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut out = conn.try_clone()?;
                for line in std::io::BufReader::new(conn).lines() {
                    let line = line?;
                    if line == "quit" {
                        break;
                    }
                    writeln!(out, "{port}: {line}")?;
                }
                std::io::Result::Ok(())
            });
        }
    });
    rx.recv()?
}

fn prerequisites() -> Option<&'static str> {
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

/// A workload certificate for `spiffe_id` issued by the mesh CA in
/// `ca_dir`, as a mesh client outside these pods would hold: (cert, key) PEM.
fn mesh_client_cert(ca_dir: &Path, spiffe_id: &str) -> Result<(String, String)> {
    use rcgen::{
        CertificateParams, DistinguishedName, ExtendedKeyUsagePurpose, Issuer, KeyPair, SanType,
    };
    let ca_cert = std::fs::read_to_string(ca_dir.join("ca-cert.pem"))?;
    let ca_key = KeyPair::from_pem(&std::fs::read_to_string(ca_dir.join("ca-key.pem"))?)?;
    let issuer = Issuer::from_ca_cert_pem(&ca_cert, ca_key)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.subject_alt_names = vec![SanType::URI(spiffe_id.try_into()?)];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let cert = params.signed_by(&key, &issuer)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// Waits until `f` holds, polling; bounded by `within`.
fn wait_for(within: Duration, what: &str, mut f: impl FnMut() -> Result<bool>) -> Result<()> {
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

#[test]
fn capture_in_network_namespaces() -> Result<()> {
    if let Some(missing) = prerequisites() {
        // scripts/test.sh installs these, and CI runs as root.
        eprintln!(
            "skipped: capture needs root and ip, iptables, curl, setpriv, tcpdump, getent ({missing})"
        );
        return Ok(());
    }
    let (block, _lock) = reserve_block()?;
    let mut lab = Lab::new(block)?;
    let bins = install_bins(lab.dir.path())?;
    let b = |name: &str| bins.join(name).display().to_string();

    lab.hub()?;
    lab.pod("a", "10.77.0.2")?;
    lab.pod("b", "10.77.0.3")?;
    lab.pod("c", "10.77.0.4")?; // outside the mesh: no sidecar, no capture

    // The control plane, in the hub, with the pods in its store.
    let state = lab.dir.path().join("state");
    let store_dir = state.join("config");
    std::fs::create_dir_all(&state)?;
    {
        let mut store = control::store::Store::open(&store_dir)?;
        for r in api::parse("capture.yaml", MESH_YAML)? {
            store.apply(r)?;
        }
    }
    let secret_path = state.join("token-secret");
    let secret = control::bootstrap_token::TokenSecret::create(&secret_path)?;
    let ca_dir = state.join("ca");
    // The CA made before trellisd starts, so the proxies have the mesh root
    // to verify trellisd with (TLS on HUB_IP:15012, where the tokens go),
    // where the proxies' user can read it.
    let ca = identity::Ca::self_signed("cluster.local", &ca_dir)?;
    let root_cert = lab.dir.path().join("root-cert.pem");
    std::fs::write(&root_cert, ca.roots().concat())?;
    drop(ca);
    let xds = format!("{HUB_IP}:15010");
    let api_addr = format!("{HUB_IP}:15014");
    lab.spawn(
        "hub",
        &[
            &b("trellisd"),
            "--config-dir",
            &store_dir.display().to_string(),
            "--xds-addr",
            &xds,
            "--http-addr",
            &api_addr,
            "--ca-dir",
            &ca_dir.display().to_string(),
            "--token-secret",
            &secret_path.display().to_string(),
        ],
        "trellisd.log",
    )?;

    // Pod b: an echo server that knows nothing of the mesh, on 8080 (a
    // Service port) and 9090 (excluded from capture).
    // Pod a's outbound port 7075 is excluded from capture.
    for (pod, ip, excluded) in [
        ("a", "10.77.0.2", ["--excludeOutboundPorts", "7075"]),
        ("b", "10.77.0.3", ["--excludeInboundPorts", "9090"]),
    ] {
        let mut rules = vec![b("trellis-proxy"), "iptables".into()];
        rules.extend(excluded.map(String::from));
        let rules: Vec<&str> = rules.iter().map(String::as_str).collect();
        check(&mut lab.exec(pod, &rules))?;
        let token = secret.token("default", pod);
        let url = format!("https://{HUB_IP}:15012");
        lab.spawn(
            pod,
            &[
                "setpriv",
                "--reuid",
                PROXY_UID,
                "--regid",
                PROXY_UID,
                "--clear-groups",
                "env",
                &format!("TRELLIS_BOOTSTRAP_TOKEN={token}"),
                &b("trellis-proxy"),
                "--pod-name",
                pod,
                "--workload-name",
                pod,
                "--namespace",
                "default",
                "--service-account",
                pod,
                "--label",
                &format!("app={pod}"),
                "--pod-ip",
                ip,
                "--app-ip",
                "127.0.0.1",
                "--xds",
                &url,
                "--xds-root-cert",
                &root_cert.display().to_string(),
                "--admin",
                "127.0.0.1:15000",
                "--capture",
                "--dns-capture",
            ],
            &format!("proxy-{pod}.log"),
        )?;
    }
    lab.spawn(
        "b",
        &[
            "env",
            "TRELLIS_BIND_ADDR=0.0.0.0",
            &b("trellis-sample"),
            "echo",
            "--service",
            "b",
            "--port",
            "8080",
            "--port",
            "9090",
            // Ports no Service names: passed through by b's sidecar.
            "--port",
            "7071",
            "--port",
            "7073",
        ],
        "app-b.log",
    )?;
    // And one that listens only on the pod's own loopback.
    lab.spawn(
        "b",
        &[
            "env",
            "TRELLIS_BIND_ADDR=127.0.0.1",
            &b("trellis-sample"),
            "echo",
            "--service",
            "b-local",
            "--port",
            "7072",
        ],
        "app-b-local.log",
    )?;
    // A server outside the mesh, in pod c.
    lab.spawn(
        "c",
        &[
            "env",
            "TRELLIS_BIND_ADDR=0.0.0.0",
            &b("trellis-sample"),
            "echo",
            "--service",
            "outside",
            "--port",
            "7070",
            "--port",
            "7075",
        ],
        "app-c.log",
    )?;
    // b's gRPC server and raw TCP servers.
    lab.spawn(
        "b",
        &[&b("bench-data-plane"), "--serve-upstream", "0.0.0.0:50051"],
        "app-b-grpc.log",
    )?;
    line_echo(&lab.ns("b"), 9000)?;
    line_echo(&lab.ns("b"), 9001)?;
    for pod in ["a", "b"] {
        wait_for(
            Duration::from_secs(30),
            &format!("sidecar of {pod} ready"),
            || {
                let out = run(&mut lab.exec(
                    pod,
                    &[
                        "curl",
                        "-s",
                        "-o",
                        "/dev/null",
                        "-w",
                        "%{http_code}",
                        "http://127.0.0.1:15000/ready",
                    ],
                ))?;
                Ok(String::from_utf8_lossy(&out.stdout) == "200")
            },
        )
        .with_context(|| lab.log(&format!("proxy-{pod}.log")))?;
    }

    // 1. An unmodified curl in pod a reaches b by its short name, through
    //    both sidecars, with mTLS between the namespaces.
    let pcap_path = lab.dir.path().join("wire.pcap");
    let mut capture = lab
        .exec(
            "hub",
            &[
                "tcpdump",
                "-i",
                "vb",
                // Each packet as it comes (not in blocks), so none is pending at the stop.
                "--immediate-mode",
                "-U",
                "-w",
                &pcap_path.display().to_string(),
                "tcp",
            ],
        )
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    // tcpdump says "listening on vb" once it captures.
    let mut tcpdump_err = std::io::BufReader::new(capture.stderr.take().context("stderr")?);
    let mut line = String::new();
    std::io::BufRead::read_line(&mut tcpdump_err, &mut line)?;
    ensure!(line.contains("listening"), "tcpdump: {line}");
    let mut got = (0, String::new());
    wait_for(Duration::from_secs(15), "a calls http://b:8080", || {
        got = lab.curl("a", "http://b:8080/hello")?;
        Ok(got.1.ends_with("\n200"))
    })
    .with_context(|| format!("last: {got:?}\n{}", lab.log("proxy-a.log")))?;
    let reply = got.1.clone();
    ensure!(
        reply.contains("/hello"),
        "the echo shows the request: {reply}"
    );
    // b's sidecar saw a-s identity: the request came over mesh mTLS.
    ensure!(
        reply.contains("spiffe://cluster.local/ns/default/sa/a"),
        "b's app is told the caller's identity (X-Forwarded-Client-Cert): {reply}"
    );
    let (_, body) = lab.curl("a", "http://b.default.svc.cluster.local:8080/fqdn")?;
    ensure!(
        body.ends_with("\n200"),
        "the FQDN resolves and routes: {body}"
    );
    // Routed by the port the connection was sent to, not the Host header's.
    let out = check(&mut lab.exec(
        "a",
        &[
            "curl",
            "-sS",
            "--max-time",
            "5",
            "-H",
            "Host: b",
            "-w",
            "\n%{http_code}",
            "http://b:8080/hostnoport",
        ],
    ))?;
    ensure!(
        out.ends_with("\n200") && out.contains("/hostnoport"),
        "Host without port: {out}"
    );
    std::thread::sleep(Duration::from_millis(300));
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(capture.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    );
    let _ = capture.wait();
    let mut summary = String::new();
    std::io::Read::read_to_string(&mut tcpdump_err, &mut summary)?;
    let pcap = std::fs::read(&pcap_path)?;
    ensure!(
        pcap.len() > 200,
        "the packet capture saw the traffic ({} bytes): {summary}",
        pcap.len()
    );
    let wire = String::from_utf8_lossy(&pcap);
    for plain in ["GET /hello", "HTTP/1.1", "/fqdn", "user-agent"] {
        ensure!(
            !wire.contains(plain),
            "plaintext {plain:?} between the namespaces"
        );
    }

    // 1b. An unmodified gRPC client (tonic) in pod a calls grpc-b:50051 by
    //     its short name: resolved by a's DNS proxy, captured, and counted
    //     by both sidecars.
    let job = serde_json::json!({
        "kind": "grpc", "addr": "grpc-b:50051", "authority": "grpc-b:50051", "secs": 0.5,
        "concurrency": 1, "connections": 1, "request_bytes": 100, "tls": null
    });
    let result = lab.dir.path().join("grpc-result.json");
    let out = run(&mut lab.exec(
        "a",
        &[
            &b("bench-data-plane"),
            "--client-job",
            &job.to_string(),
            "--client-out",
            &result.display().to_string(),
        ],
    ))?;
    ensure!(
        out.status.success(),
        "the gRPC client: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&result)?)?;
    ensure!(
        r["requests"].as_u64().unwrap_or(0) > 0 && r["errors"] == 0,
        "gRPC calls from pod a to grpc-b: {r}"
    );
    // a's sidecar saw the calls to grpc-b; b's got them over mTLS from a.
    let counted = |pod: &str, labels: &[(&str, &str)]| -> Result<()> {
        let stats = check(&mut lab.exec(
            pod,
            &["curl", "-s", "http://127.0.0.1:15000/stats/prometheus"],
        ))?;
        ensure!(
            e2e::counter_sum(&stats, "istio_requests_total", labels) >= 1.0,
            "{pod}'s sidecar counted the gRPC calls ({labels:?}): {stats:.3000}"
        );
        Ok(())
    };
    counted(
        "a",
        &[
            ("reporter", "source"),
            ("destination_service_name", "grpc-b"),
            ("request_protocol", "grpc"),
        ],
    )?;
    counted(
        "b",
        &[
            ("reporter", "destination"),
            ("request_protocol", "grpc"),
            ("source_principal", "spiffe://cluster.local/ns/default/sa/a"),
            ("connection_security_policy", "mutual_tls"),
        ],
    )?;

    // 1c. Raw TCP by short name: b's line-echo servers are reachable only
    //     through b's sidecar (captured, STRICT), so an answer means both
    //     sidecars carried it over mTLS. A VirtualService `tcp` route then
    //     sends half the connections to lines-alt.
    let lines = |lab: &Lab| lab.raw_tcp("a", "lines", 9000, "hello\\nquit\\n");
    let mut reply = String::new();
    wait_for(Duration::from_secs(15), "a reaches lines:9000", || {
        reply = lines(&lab)?;
        Ok(!reply.is_empty())
    })
    .with_context(|| {
        format!(
            "{}\n---\n{}",
            lab.log("proxy-a.log"),
            lab.log("proxy-b.log")
        )
    })?;
    ensure!(
        reply == "9000: hello\n",
        "no route yet: lines itself: {reply:?}"
    );
    let route = lab.dir.path().join("tcp-route.yaml");
    std::fs::write(&route, TCP_ROUTE)?;
    check(&mut lab.exec(
        "hub",
        &[
            &b("trellis"),
            "apply",
            "-f",
            &route.display().to_string(),
            "--control-plane",
            &format!("http://{api_addr}"),
        ],
    ))?;
    wait_for(
        Duration::from_secs(15),
        "the TCP route sends to lines-alt",
        || Ok(lines(&lab)? == "9001: hello\n"),
    )?;
    let mut seen = std::collections::BTreeMap::new();
    for _ in 0..40 {
        *seen.entry(lines(&lab)?).or_insert(0) += 1;
    }
    ensure!(
        seen.len() == 2 && seen.contains_key("9000: hello\n") && seen.contains_key("9001: hello\n"),
        "50/50 over both destinations: {seen:?}"
    );

    // 2. STRICT: a plaintext client outside the mesh (pod c) is refused by
    //    b's captured inbound port, though b's app knows nothing of mTLS.
    let (status, body) = lab.curl("c", "http://10.77.0.3:8080/direct")?;
    ensure!(
        status != 0 && !body.contains("/direct"),
        "STRICT refuses plaintext from another namespace: {status} {body}"
    );
    // 3. An excluded inbound port bypasses the sidecar.
    let (status, body) = lab.curl("c", "http://10.77.0.3:9090/excluded")?;
    ensure!(
        status == 0 && body.contains("/excluded"),
        "port 9090 is not captured: {status} {body}"
    );

    // 3b. Inbound passthrough (ports no Service names) is still inbound:
    //     PeerAuthentication applies (STRICT refuses plaintext; a
    //     portLevelMtls entry overrides it), a mesh client's mTLS is
    //     accepted, and the bytes go to the pod's address, not its
    //     127.0.0.1, so an app bound only to loopback stays private.
    let (status, body) = lab.curl("c", "http://10.77.0.3:7071/plain")?;
    ensure!(
        status != 0 && !body.contains("/plain"),
        "STRICT refuses plaintext on a port no Service names: {status} {body}"
    );
    ensure!(
        lab.log("proxy-b.log")
            .lines()
            .any(|l| l.contains("inbound connection refused")
                && l.contains("InboundPassthroughCluster")
                && l.contains("mode=Strict")),
        "the passthrough refusal is logged: {}",
        lab.log("proxy-b.log")
    );
    let (status, body) = lab.curl("c", "http://10.77.0.3:7073/permissive")?;
    ensure!(
        status == 0 && body.contains("/permissive") && body.ends_with("\n200"),
        "portLevelMtls PERMISSIVE lets plaintext through to the app: {status} {body}"
    );
    let (status, body) = lab.curl("c", "http://10.77.0.3:7072/loopback")?;
    ensure!(
        status != 0 && !body.contains("/loopback"),
        "an app on the pod's 127.0.0.1 is not reachable from outside: {status} {body}"
    );
    let (cert, key) = mesh_client_cert(&ca_dir, "spiffe://cluster.local/ns/default/sa/c")?;
    let (cert_path, key_path) = (
        lab.dir.path().join("c.pem"),
        lab.dir.path().join("c-key.pem"),
    );
    std::fs::write(&cert_path, cert)?;
    std::fs::write(&key_path, key)?;
    let mtls = |url: &str| {
        run(&mut lab.exec(
            "c",
            &[
                "curl",
                "-sS",
                "--max-time",
                "5",
                // The server's certificate names a SPIFFE id, not an address;
                // what is tested is that b's sidecar accepts this client.
                "-k",
                "--no-alpn",
                "--cert",
                &cert_path.display().to_string(),
                "--key",
                &key_path.display().to_string(),
                "-w",
                "\n%{http_code}",
                url,
            ],
        ))
    };
    let out = mtls("https://10.77.0.3:7071/mtls")?;
    let body = String::from_utf8_lossy(&out.stdout);
    ensure!(
        body.contains("/mtls") && body.ends_with("\n200"),
        "a mesh client's mTLS is terminated and passed through: {body} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = mtls("https://10.77.0.3:7072/loopback-mtls")?;
    ensure!(
        !String::from_utf8_lossy(&out.stdout).contains("/loopback-mtls"),
        "not even a mesh client reaches an app on the pod's 127.0.0.1"
    );

    // 4. DNS: a ServiceEntry host gets an auto-allocated VIP; an outside
    //    name is forwarded to the host's resolvers (unreachable from these
    //    namespaces: the query fails, with a log line naming it).
    let hosts = check(&mut lab.exec("a", &["getent", "hosts", "api.external.test"]))?;
    ensure!(
        hosts.starts_with("240.240."),
        "ServiceEntry host answered by the DNS proxy: {hosts}"
    );
    let b_addr = check(&mut lab.exec("a", &["getent", "ahostsv4", "b"]))?;
    ensure!(
        b_addr.starts_with("240.240."),
        "service b answered by the DNS proxy: {b_addr}"
    );
    let outside = run(&mut lab.exec("a", &["getent", "hosts", "outside.example.org"]))?;
    ensure!(!outside.status.success(), "an outside name is not made up");
    wait_for(
        Duration::from_secs(15),
        "the DNS forward's failure is logged",
        || Ok(lab.log("proxy-a.log").contains("outside.example.org")),
    )?;

    // 5. ALLOW_ANY (the default): a destination the mesh does not know is
    //    passed through; REGISTRY_ONLY refuses it, with a log line.
    let (status, body) = lab.curl("a", "http://10.77.0.4:7070/any")?;
    ensure!(
        status == 0 && body.contains("/any") && body.ends_with("\n200"),
        "ALLOW_ANY passes: {status} {body}"
    );
    // Raw TCP (not HTTP) passes through too: the server's own answer comes back.
    let reply = lab.raw_tcp("a", "10.77.0.4", 7070, "hello\\r\\n\\r\\n")?;
    ensure!(
        reply.starts_with("HTTP/1.1 400"),
        "raw TCP passes through under ALLOW_ANY: {reply:?}"
    );
    let sidecar = lab.dir.path().join("registry-only.yaml");
    std::fs::write(&sidecar, REGISTRY_ONLY)?;
    check(&mut lab.exec(
        "hub",
        &[
            &b("trellis"),
            "apply",
            "-f",
            &sidecar.display().to_string(),
            "--control-plane",
            &format!("http://{api_addr}"),
        ],
    ))?;
    wait_for(
        Duration::from_secs(15),
        "REGISTRY_ONLY blocks the unknown destination",
        || {
            let (_, body) = lab.curl("a", "http://10.77.0.4:7070/blocked")?;
            Ok(body.ends_with("\n502"))
        },
    )?;
    ensure!(
        lab.log("proxy-a.log").contains("BlackHoleCluster"),
        "the refusal is logged: {}",
        lab.log("proxy-a.log")
    );
    let stats = check(&mut lab.exec(
        "a",
        &["curl", "-s", "http://127.0.0.1:15000/stats/prometheus"],
    ))?;
    ensure!(
        e2e::counter_sum(
            &stats,
            "istio_requests_total",
            &[
                ("destination_service_name", "BlackHoleCluster"),
                ("response_code", "502")
            ]
        ) >= 1.0,
        "the refusal is counted as BlackHoleCluster: {stats}"
    );
    // Raw TCP to it is closed; the mesh service still works.
    let reply = lab.raw_tcp("a", "10.77.0.4", 7070, "hello\\r\\n\\r\\n")?;
    ensure!(
        reply.is_empty(),
        "TCP to an unknown destination is closed under REGISTRY_ONLY: {reply:?}"
    );
    ensure!(
        lab.log("proxy-a.log")
            .contains("TCP destination not in the mesh registry"),
        "the TCP refusal is logged"
    );
    let (_, body) = lab.curl("a", "http://b:8080/still")?;
    ensure!(
        body.ends_with("\n200"),
        "mesh services still reachable: {body}"
    );

    // 6. An excluded outbound port bypasses the sidecar: REGISTRY_ONLY,
    //    which refuses 7070 on the same host, does not see 7075.
    let (status, body) = lab.curl("a", "http://10.77.0.4:7075/excluded-out")?;
    ensure!(
        status == 0 && body.contains("/excluded-out") && body.ends_with("\n200"),
        "port 7075 is not captured outbound: {status} {body}"
    );
    Ok(())
}

/// `trellis-proxy iptables` in a fresh namespace: applying twice gives the
/// same table, --cleanup leaves nothing of ours.
#[test]
fn iptables_rules_are_idempotent_and_removable() -> Result<()> {
    if let Some(missing) = prerequisites() {
        eprintln!("skipped: needs root and iptables ({missing})");
        return Ok(());
    }
    let (block, _lock) = reserve_block()?;
    let mut lab = Lab::new(block)?;
    lab.add_namespace("rules")?;
    let proxy = bin("trellis-proxy").display().to_string();
    let save = |lab: &Lab| -> Result<String> {
        let out = check(&mut lab.exec("rules", &["iptables-save", "-t", "nat"]))?;
        Ok(out
            .lines()
            .filter(|l| !l.starts_with('#'))
            .collect::<Vec<_>>()
            .join("\n"))
    };
    check(&mut lab.exec(
        "rules",
        &[&proxy, "iptables", "--excludeOutboundPorts", "5432"],
    ))?;
    let first = save(&lab)?;
    check(&mut lab.exec(
        "rules",
        &[&proxy, "iptables", "--excludeOutboundPorts", "5432"],
    ))?;
    ensure!(save(&lab)? == first, "re-running changes nothing");
    ensure!(
        first.contains("-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15001"),
        "{first}"
    );
    ensure!(
        first
            .lines()
            .filter(|l| *l == "-A OUTPUT -p tcp -j ISTIO_OUTPUT")
            .count()
            == 1,
        "one jump to ISTIO_OUTPUT: {first}"
    );
    let v6 = check(&mut lab.exec("rules", &["ip6tables-save", "-t", "nat"]))?;
    ensure!(
        v6.contains("-A ISTIO_OUTPUT -d ::1/128 -j RETURN"),
        "IPv6 rules: {v6}"
    );
    let dry = check(&mut lab.exec("rules", &[&proxy, "iptables", "--dry-run", "--cleanup"]));
    ensure!(dry.is_err(), "--dry-run and --cleanup conflict");
    check(&mut lab.exec("rules", &[&proxy, "iptables", "--cleanup"]))?;
    let after = save(&lab)?;
    ensure!(
        !after.contains("ISTIO"),
        "cleanup removes every chain and jump: {after}"
    );
    let bad = run(&mut lab.exec(
        "rules",
        &[
            &proxy,
            "iptables",
            "--excludeOutboundIPRanges",
            "10.0.0.0/33",
        ],
    ))?;
    ensure!(
        !bad.status.success()
            && String::from_utf8_lossy(&bad.stderr).contains("excludeOutboundIPRanges"),
        "a bad range is named: {}",
        String::from_utf8_lossy(&bad.stderr)
    );
    Ok(())
}
