//! The pods of the capture tests and what runs in them: the control
//! plane in the hub; pods a and b meshed (capture rules, a sidecar as UID
//! 1337), pod c outside the mesh; the applications, which know nothing of
//! the mesh.

use std::fs::File;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use e2e::reserve_block;
use nix::fcntl::Flock;

use super::lab::{HUB_IP, Lab, PROXY_UID, check, install_bins, run, wait_for};
use super::tcp::line_echo;

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
kind: Service
metadata: {name: b-podip, namespace: default}
spec:
  selector: {app: b}
  ports: [{name: http, port: 8082}]
---
apiVersion: v1
kind: Service
metadata: {name: b-loopback, namespace: default}
spec:
  selector: {app: b}
  ports: [{name: http, port: 8083}]
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
    7074: {mode: PERMISSIVE}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: external-api, namespace: default}
spec:
  hosts: [api.external.test]
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: DNS
";

/// The running mesh of the capture test.
pub struct Running {
    pub lab: Lab,
    bins: PathBuf,
    /// The mesh CA's files (to issue a mesh client's certificate).
    pub ca_dir: PathBuf,
    /// The control plane's HTTP API, in the hub.
    api_addr: String,
    _lock: Flock<File>,
}

impl Running {
    /// The path of one of the copied binaries.
    pub fn bin(&self, name: &str) -> String {
        self.bins.join(name).display().to_string()
    }

    /// `trellis apply -f` of `yaml` (written as `file`), from the hub.
    pub fn apply(&self, file: &str, yaml: &str) -> Result<()> {
        let path = self.lab.dir.path().join(file);
        std::fs::write(&path, yaml)?;
        check(&mut self.lab.exec(
            "hub",
            &[
                &self.bin("trellis"),
                "apply",
                "-f",
                &path.display().to_string(),
                "--control-plane",
                &format!("http://{}", self.api_addr),
            ],
        ))?;
        Ok(())
    }
}

/// Makes the namespaces, starts the control plane, the sidecars and the
/// applications, and waits for both sidecars to be ready.
pub fn start() -> Result<Running> {
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
            // Every address, IPv4 and IPv6.
            "TRELLIS_BIND_ADDR=::",
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
            // A Service port (b-loopback).
            "--port",
            "8083",
        ],
        "app-b-local.log",
    )?;
    // And one that listens only on the pod's address, on a Service port
    // (b-podip): what Istio's sidecars (1.10 and later) call.
    lab.spawn(
        "b",
        &[
            "env",
            "TRELLIS_BIND_ADDR=10.77.0.3",
            &b("trellis-sample"),
            "echo",
            "--service",
            "b-podip",
            "--port",
            "8082",
        ],
        "app-b-podip.log",
    )?;
    // A TLS server of b's own, on a PERMISSIVE port no Service names.
    super::inbound::tls_app(&lab.ns("b"), 7074)?;
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
    Ok(Running {
        lab,
        bins,
        ca_dir,
        api_addr,
        _lock,
    })
}
