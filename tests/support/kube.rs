//! A real Kubernetes control plane for a test: etcd, kube-apiserver and
//! kube-controller-manager as built by `scripts/kube-tools.sh`, on a
//! loopback block of the test's own (so nothing collides with other tests),
//! with a CA, serving certificate and service-account signing key made for
//! this run, an admin token, RBAC authorization, and Istio's published CRDs
//! installed. Each test gets its own namespace and an admin kubeconfig whose
//! context defaults to it. Everything is stopped when the value is dropped.
//!
//! On it, [`Trellisd`] runs the control plane as a replica does in the
//! cluster, and [`Proxy`] is a sidecar's discovery stream: it proves who it
//! is with a projected service-account token (TokenRequest API) and
//! verifies trellisd over TLS with the root the leader publishes in the
//! `istio-ca-root-cert` ConfigMap, as an injected proxy does.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::Write;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use nix::fcntl::Flock;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};

use wire::address::XdsAddress;
use wire::certs::{BearerToken, TokenSource};
use wire::pb::{Node, Resource};

use crate::{eventually, repo_root, reserve_block};

mod trellisd;

pub use trellisd::{Trellisd, webhook_configurations};

pub struct Kube {
    /// The loopback block 127.N.0.0/16 this test owns; the API server
    /// listens on 127.N.0.1, and the test may use other ports of it.
    pub block: u8,
    /// The test's namespace, the kubeconfig's default.
    pub namespace: String,
    /// An admin kubeconfig (token in group system:masters).
    pub kubeconfig: PathBuf,
    dir: tempfile::TempDir,
    tools: PathBuf,
    etcd: Child,
    apiserver: Option<Child>,
    controller_manager: Child,
    _lock: Flock<File>,
}

const ADMIN_TOKEN: &str = "trellis-test-admin-token";
const APISERVER_PORT: u16 = 6443;
/// The `kubernetes` Service's address: the first of `--service-cluster-ip-range`.
const KUBERNETES_SERVICE_IP: &str = "10.96.0.1";

/// The tools' directory, if `scripts/kube-tools.sh` has built them.
fn tools() -> Result<Option<PathBuf>> {
    let out = Command::new(repo_root().join("scripts/kube-tools.sh"))
        .arg("--where")
        .output()
        .context("scripts/kube-tools.sh --where")?;
    ensure!(out.status.success(), "scripts/kube-tools.sh --where failed");
    let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    let complete = [
        "etcd",
        "kube-apiserver",
        "kube-controller-manager",
        "kubectl",
        "istio-crds.yaml",
    ]
    .iter()
    .all(|f| dir.join(f).is_file());
    Ok(complete.then_some(dir))
}

impl Kube {
    /// Starts a control plane for the test `test` (its namespace is named
    /// after it). `Ok(None)` when the tools are not built, outside CI only:
    /// scripts/test.sh builds them, so in CI their absence is a failure.
    pub fn start(test: &str) -> Result<Option<Kube>> {
        let Some(tools) = tools()? else {
            if std::env::var_os("CI").is_some() {
                bail!("the Kubernetes tools are not built: run scripts/kube-tools.sh");
            }
            eprintln!(
                "SKIPPED {test}: the Kubernetes tools are not built (run scripts/kube-tools.sh, as scripts/test.sh does)"
            );
            return Ok(None);
        };
        let (block, lock) = reserve_block()?;
        let dir = tempfile::Builder::new().prefix("trellis-kube-").tempdir()?;
        let ip = format!("127.{block}.0.1");
        pki(dir.path(), &ip)?;
        std::fs::write(
            dir.path().join("tokens.csv"),
            format!("{ADMIN_TOKEN},admin,admin,system:masters\n"),
        )?;
        let namespace = test.replace('_', "-");
        let kubeconfig = dir.path().join("kubeconfig");
        write_kubeconfig(&kubeconfig, dir.path(), &ip, &namespace)?;

        let logs = dir.path().to_path_buf();
        // A process's stdout and stderr, both to `<name>.log`.
        let log = move |name: &str| -> Result<(Stdio, Stdio)> {
            let file = File::create(logs.join(format!("{name}.log")))?;
            Ok((Stdio::from(file.try_clone()?), Stdio::from(file)))
        };
        let (out, err) = log("etcd")?;
        let etcd = Command::new(tools.join("etcd"))
            .args(["--name", "test", "--data-dir"])
            .arg(dir.path().join("etcd"))
            .args([
                &format!("--listen-client-urls=http://{ip}:2379"),
                &format!("--advertise-client-urls=http://{ip}:2379"),
                &format!("--listen-peer-urls=http://{ip}:2380"),
                &format!("--initial-advertise-peer-urls=http://{ip}:2380"),
                &format!("--initial-cluster=test=http://{ip}:2380"),
                // A test cluster's data need not survive a power cut.
                "--unsafe-no-fsync",
            ])
            .stdout(out)
            .stderr(err)
            .spawn()
            .context("starting etcd")?;
        // Dropped on an early return: stops what was started so far.
        let mut kube = Kube {
            block,
            namespace,
            kubeconfig,
            tools,
            etcd,
            apiserver: None,
            // Replaced below once the API server is up.
            controller_manager: Command::new("true").spawn()?,
            dir,
            _lock: lock,
        };
        wait_for_port(&format!("{ip}:2379"), Duration::from_secs(30)).context("etcd")?;
        kube.start_apiserver()?;
        let (out, err) = log("kube-controller-manager")?;
        kube.controller_manager = Command::new(kube.tools.join("kube-controller-manager"))
            .arg(format!("--kubeconfig={}", kube.kubeconfig.display()))
            .arg(format!("--bind-address={ip}"))
            .arg("--secure-port=10257")
            .arg(format!(
                "--service-account-private-key-file={}",
                kube.file("sa.key").display()
            ))
            .arg(format!("--root-ca-file={}", kube.file("ca.crt").display()))
            .args([
                "--leader-elect=false",
                "--use-service-account-credentials=false",
            ])
            .stdout(out)
            .stderr(err)
            .spawn()
            .context("starting kube-controller-manager")?;
        // Istio's CRDs, as published in istio.io/api.
        kube.create_crds(&kube.tools.join("istio-crds.yaml"))?;
        kube.kubectl_ok(&["create", "namespace", &kube.namespace.clone()])?;
        kube.kubectl_ok(&["create", "namespace", "istio-system"])?;
        Ok(Some(kube))
    }

    /// Creates the CRDs in `file` (created, not applied: Istio's schemas
    /// are too large for kubectl's last-applied annotation) and waits until
    /// every CRD is established.
    pub fn create_crds(&self, file: &Path) -> Result<()> {
        self.kubectl_ok(&["create", "-f", &file.display().to_string()])?;
        self.kubectl_ok(&[
            "wait",
            "--for=condition=Established",
            "crd",
            "--all",
            "--timeout=60s",
        ])?;
        Ok(())
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The API server's log, for messages on failure.
    pub fn log(&self, name: &str) -> PathBuf {
        self.file(&format!("{name}.log"))
    }

    /// (Re)starts the API server on the same address and storage, and waits
    /// until it is ready.
    pub fn start_apiserver(&mut self) -> Result<()> {
        ensure!(self.apiserver.is_none(), "the API server is running");
        let ip = format!("127.{}.0.1", self.block);
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.log("kube-apiserver"))?;
        let f = |name: &str| self.file(name).display().to_string();
        let child = Command::new(self.tools.join("kube-apiserver"))
            .arg(format!("--etcd-servers=http://{ip}:2379"))
            .arg(format!("--bind-address={ip}"))
            .arg(format!("--advertise-address={ip}"))
            .arg(format!("--secure-port={APISERVER_PORT}"))
            .arg(format!("--tls-cert-file={}", f("apiserver.crt")))
            .arg(format!("--tls-private-key-file={}", f("apiserver.key")))
            .arg(format!("--client-ca-file={}", f("ca.crt")))
            .arg(format!("--token-auth-file={}", f("tokens.csv")))
            .arg("--authorization-mode=RBAC")
            .arg(format!("--service-account-key-file={}", f("sa.pub")))
            .arg(format!(
                "--service-account-signing-key-file={}",
                f("sa.key")
            ))
            .arg("--service-account-issuer=https://kubernetes.default.svc.cluster.local")
            .arg("--api-audiences=https://kubernetes.default.svc.cluster.local,istio-ca")
            .arg("--service-cluster-ip-range=10.96.0.0/16")
            // No kube-proxy on the host: webhooks and aggregated APIs
            // behind Services are called at their endpoints' addresses
            // (pods on `trellis node`, which the host routes to).
            .arg("--enable-aggregator-routing=true")
            .arg("--allow-privileged=true")
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .spawn()
            .context("starting kube-apiserver")?;
        self.apiserver = Some(child);
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let out = self.kubectl(&["get", "--raw", "/readyz"]);
            if out.status.success() {
                return Ok(());
            }
            if let Some(status) = self
                .apiserver
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                bail!(
                    "kube-apiserver exited ({status}); see {}",
                    self.log("kube-apiserver").display()
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "kube-apiserver not ready after 90 s: {}; see {}",
                    String::from_utf8_lossy(&out.stderr).trim(),
                    self.log("kube-apiserver").display()
                );
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    /// Stops the API server (SIGKILL: as a crash), leaving etcd running.
    pub fn kill_apiserver(&mut self) -> Result<()> {
        let mut child = self
            .apiserver
            .take()
            .context("the API server is not running")?;
        child.kill()?;
        child.wait()?;
        Ok(())
    }

    pub fn kubectl(&self, args: &[&str]) -> Output {
        Command::new(self.tools.join("kubectl"))
            .arg(format!("--kubeconfig={}", self.kubeconfig.display()))
            .arg("--request-timeout=20s")
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("running kubectl: {e}"))
    }

    /// kubectl's stdout, or an error with its stderr.
    pub fn kubectl_ok(&self, args: &[&str]) -> Result<String> {
        let out = self.kubectl(args);
        ensure!(
            out.status.success(),
            "kubectl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Sets the address of `pod` in `namespace` in its status (no kubelet
    /// runs here to do it).
    pub fn set_pod_ip(&self, pod: &str, namespace: &str, ip: &str) -> Result<()> {
        self.kubectl_ok(&[
            "patch",
            "pod",
            pod,
            "-n",
            namespace,
            "--subresource=status",
            "--type=merge",
            "-p",
            &format!(r#"{{"status":{{"podIP":"{ip}","podIPs":[{{"ip":"{ip}"}}]}}}}"#),
        ])?;
        Ok(())
    }

    /// `kubectl apply -f -` of `yaml`, in the test's namespace unless the
    /// documents name another.
    pub fn apply(&self, yaml: &str) -> Result<String> {
        let mut child = Command::new(self.tools.join("kubectl"))
            .arg(format!("--kubeconfig={}", self.kubeconfig.display()))
            .args(["apply", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        child
            .stdin
            .take()
            .context("kubectl's stdin")?
            .write_all(yaml.as_bytes())?;
        let out = child.wait_with_output()?;
        ensure!(
            out.status.success(),
            "kubectl apply: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

impl Drop for Kube {
    fn drop(&mut self) {
        let mut children = vec![&mut self.controller_manager, &mut self.etcd];
        children.extend(self.apiserver.as_mut());
        for child in children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn wait_for_port(addr: &str, within: Duration) -> Result<()> {
    let deadline = Instant::now() + within;
    while TcpStream::connect(addr).is_err() {
        if Instant::now() > deadline {
            bail!("nothing listens on {addr} after {within:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// The cluster's CA, the API server's serving certificate for `ip`, and the
/// service-account token signing key (ECDSA P-256, which Kubernetes accepts).
fn pki(dir: &Path, ip: &str) -> Result<()> {
    let ca_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut ca = CertificateParams::default();
    ca.distinguished_name
        .push(DnType::CommonName, "trellis-test-kubernetes-ca");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    std::fs::write(dir.join("ca.crt"), ca.self_signed(&ca_key)?.pem())?;
    let issuer = Issuer::new(ca, ca_key);

    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut serving = CertificateParams::new(vec![
        "localhost".to_string(),
        "kubernetes".to_string(),
        "kubernetes.default.svc".to_string(),
    ])?;
    serving
        .subject_alt_names
        .push(SanType::IpAddress(ip.parse()?));
    // The `kubernetes` Service's ClusterIP (the first of the service range),
    // which programs in pods reach it at (KUBERNETES_SERVICE_HOST).
    serving
        .subject_alt_names
        .push(SanType::IpAddress(KUBERNETES_SERVICE_IP.parse()?));
    serving
        .distinguished_name
        .push(DnType::CommonName, "kube-apiserver");
    std::fs::write(
        dir.join("apiserver.crt"),
        serving.signed_by(&key, &issuer)?.pem(),
    )?;
    std::fs::write(dir.join("apiserver.key"), key.serialize_pem())?;

    let sa = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    std::fs::write(dir.join("sa.key"), sa.serialize_pem())?;
    // The API server reads verification keys only in public-key form.
    std::fs::write(dir.join("sa.pub"), sa.public_key_pem())?;
    Ok(())
}

fn write_kubeconfig(path: &Path, dir: &Path, ip: &str, namespace: &str) -> Result<()> {
    let ca = dir.join("ca.crt");
    std::fs::write(
        path,
        format!(
            "apiVersion: v1
kind: Config
clusters:
- name: test
  cluster:
    server: https://{ip}:{APISERVER_PORT}
    certificate-authority: {ca}
users:
- name: admin
  user:
    token: {ADMIN_TOKEN}
contexts:
- name: test
  context: {{cluster: test, user: admin, namespace: {namespace}}}
current-context: test
",
            ca = ca.display()
        ),
    )?;
    Ok(())
}

/// A proxy's discovery stream (the proxy's own client half, `wire::client`),
/// keeping the last resources of each type it was sent.
#[derive(Clone, Default)]
pub struct Proxy(Arc<Mutex<HashMap<String, Sent>>>);

/// The version and resources of one type.
type Sent = (String, Vec<Resource>);

impl wire::client::ConfigHandler for Proxy {
    fn apply(&self, type_url: &str, version: &str, resources: Vec<Resource>) -> Result<(), String> {
        let mut seen = self.0.lock().map_err(|e| e.to_string())?;
        seen.insert(type_url.to_string(), (version.to_string(), resources));
        Ok(())
    }
}

impl Proxy {
    /// Connects as the sidecar of a pod `pod` made in `namespace` at `ip`,
    /// with the pod's service-account token (audience istio-ca), as an
    /// injected proxy does: trellisd authorizes the stream by TokenReview.
    pub async fn connect(
        kube: &Kube,
        trellisd: &Trellisd,
        pod: &str,
        namespace: &str,
        ip: &str,
    ) -> Result<Proxy> {
        let token = sidecar_pod(kube, pod, namespace, ip).await?;
        let xds = trellisd.xds(kube).await?;
        Ok(Proxy::connect_with(
            xds,
            pod,
            namespace,
            "default",
            TokenSource::Value(token),
        ))
    }

    /// Connects to `xds` as the sidecar of `pod` (made already) running as
    /// `service_account`, with `token`.
    pub fn connect_with(
        xds: XdsAddress,
        pod: &str,
        namespace: &str,
        service_account: &str,
        token: TokenSource,
    ) -> Proxy {
        let proxy = Proxy::default();
        let node = Node {
            id: format!("{pod}.{namespace}"),
            pod_name: pod.into(),
            namespace: namespace.into(),
            service_account: service_account.into(),
            ..Default::default()
        };
        tokio::spawn(wire::client::run(xds, node, Some(token), proxy.clone()));
        proxy
    }

    /// Everything of one type, as text to look for names and values in.
    pub fn dump(&self, type_url: &str) -> String {
        let seen = self.0.lock().unwrap_or_else(|e| e.into_inner());
        // As the proxy reads them: in their whole forms, addresses as text.
        let whole = seen.get(type_url).map(|(_, r)| {
            r.iter()
                .map(|r| wire::whole_form(r.clone()))
                .collect::<Result<Vec<_>, _>>()
        });
        format!("{whole:?}")
    }

    /// The version of each type it holds.
    pub fn versions(&self) -> BTreeMap<String, String> {
        let seen = self.0.lock().unwrap_or_else(|e| e.into_inner());
        seen.iter()
            .map(|(t, (v, _))| (t.clone(), v.clone()))
            .collect()
    }

    /// Waits until the resources of `type_url` satisfy `check`.
    pub async fn until(
        &self,
        type_url: &str,
        what: &str,
        check: impl Fn(&str) -> bool,
    ) -> Result<()> {
        eventually(Duration::from_secs(30), || async {
            let dump = self.dump(type_url);
            ensure!(check(&dump), "{what}: not yet; the proxy has {dump}");
            Ok(())
        })
        .await
    }
}

pub const ROUTES: &str = wire::types::ROUTE_CONFIG;
pub const ENDPOINTS: &str = wire::types::ENDPOINTS;
pub const CLUSTERS: &str = wire::types::CLUSTER;

/// A pod running as `default` with a sidecar (marked as the injector marks
/// it) at `ip`, and a token of its service account for the CA, from the
/// TokenRequest API.
pub async fn sidecar_pod(kube: &Kube, pod: &str, namespace: &str, ip: &str) -> Result<BearerToken> {
    eventually(Duration::from_secs(30), || async {
        // The namespace's `default` service account, which pods need, is
        // made by the controller manager soon after the namespace.
        kube.apply(&format!(
            r#"
apiVersion: v1
kind: Pod
metadata:
  name: {pod}
  namespace: {namespace}
  annotations: {{sidecar.istio.io/status: '{{"containers":["istio-proxy"]}}'}}
spec:
  containers: [{{name: app, image: client}}]
"#
        ))
    })
    .await?;
    kube.set_pod_ip(pod, namespace, ip)?;
    service_account_token(kube, namespace, "default", "istio-ca")
}

/// A projected token of `account` in `namespace` for `audience` (TokenRequest
/// API), with `extra` flags of `kubectl create token` (`--bound-object-kind`...).
pub fn service_account_token_with(
    kube: &Kube,
    namespace: &str,
    account: &str,
    audience: &str,
    extra: &[&str],
) -> Result<BearerToken> {
    let mut args = vec![
        "create",
        "token",
        account,
        "-n",
        namespace,
        "--audience",
        audience,
    ];
    args.extend(extra);
    let token = kube.kubectl_ok(&args)?;
    Ok(BearerToken::new(token.trim().to_string()))
}

/// A projected token of `account` in `namespace` for `audience`.
pub fn service_account_token(
    kube: &Kube,
    namespace: &str,
    account: &str,
    audience: &str,
) -> Result<BearerToken> {
    service_account_token_with(kube, namespace, account, audience, &[])
}

/// The holder of trellisd's Lease, if any.
pub fn lease_holder(kube: &Kube) -> Result<String> {
    kube.kubectl_ok(&[
        "get",
        "lease",
        "trellisd-leader",
        "-n",
        "istio-system",
        "-o",
        "jsonpath={.spec.holderIdentity}",
    ])
}

/// The root certificate ConfigMap's PEM in `namespace`.
pub fn root_cert_in(kube: &Kube, namespace: &str) -> Result<String> {
    kube.kubectl_ok(&[
        "get",
        "configmap",
        "istio-ca-root-cert",
        "-n",
        namespace,
        "-o",
        "jsonpath={.data.root-cert\\.pem}",
    ])
}

/// A Service without a selector and its hand-written EndpointSlice (as for
/// a backend outside the cluster), at `address`.
pub fn reviews(namespace: &str, address: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: Service
metadata: {{name: reviews, namespace: {namespace}}}
spec:
  ports: [{{name: http, port: 9080, targetPort: 9080}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: reviews-1
  namespace: {namespace}
  labels: {{kubernetes.io/service-name: reviews}}
addressType: IPv4
ports: [{{name: http, port: 9080, protocol: TCP}}]
endpoints:
- addresses: [{address}]
  conditions: {{ready: true}}
"#
    )
}

/// A Service `reviews` and a VirtualService `to-nowhere` routing to its
/// subset v9, which no DestinationRule defines: valid, and an analysis
/// finding (IST0101).
pub fn to_a_missing_subset(ns: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: Service
metadata: {{name: reviews, namespace: {ns}}}
spec:
  ports: [{{name: http, port: 9080}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: to-nowhere, namespace: {ns}}}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {{host: reviews, subset: v9}}
"#
    )
}
