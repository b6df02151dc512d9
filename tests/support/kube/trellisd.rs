//! trellisd as it runs in the cluster, started by a test against its
//! [`Kube`]: one replica or several (leader election), optionally serving
//! the admission webhooks, which the API server reaches through the
//! webhook configurations here.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use wire::address::XdsAddress;

use super::{Kube, lease_holder, root_cert_in};
use crate::{bin, eventually};

/// A trellisd reading the cluster, with a CA (its own `--ca-dir` unless
/// the flags name one); stopped on drop.
pub struct Trellisd {
    pub child: Child,
    /// The plaintext discovery listener (config only, no tokens).
    pub plaintext: XdsAddress,
    /// Its TLS listener's `https://` URL.
    tls_url: String,
    /// Its admission webhooks' `https://` base URL, when it serves them.
    pub webhook: Option<String>,
    state: tempfile::TempDir,
}

impl Trellisd {
    pub fn start(kube: &Kube) -> Result<Trellisd> {
        Trellisd::replica(kube, 0, &[])
    }

    /// Serving the admission webhooks too (injection and validation), on
    /// the block's first address, port 15017 ([`Trellisd::webhook`]).
    pub fn with_webhooks(kube: &Kube) -> Result<Trellisd> {
        let addr = format!("127.{}.0.1:15017", kube.block);
        Trellisd::replica(kube, 0, &["--webhook-addr", &addr])
    }

    /// Replica `n` of several (its own ports), with extra flags.
    pub fn replica(kube: &Kube, n: u16, args: &[&str]) -> Result<Trellisd> {
        let state = tempfile::tempdir()?;
        let ip = format!("127.{}.0.1", kube.block);
        let (xds, tls, http) = (15010 + 10 * n, 15012 + 10 * n, 15014 + 10 * n);
        let log = File::create(state.path().join("trellisd.log"))?;
        let mut command = Command::new(bin("trellisd"));
        // `--http-addr` or `--ca-dir` in `args` replace this replica's own.
        if !args.contains(&"--http-addr") {
            command.args(["--http-addr", &format!("{ip}:{http}")]);
        }
        if !args.contains(&"--ca-dir") {
            command.arg("--ca-dir").arg(state.path().join("ca"));
        }
        let child = command
            .arg("--config-dir")
            .arg(state.path().join("config"))
            .args(["--xds-addr", &format!("{ip}:{xds}")])
            .args(["--xds-tls-addr", &format!("{ip}:{tls}")])
            .args(["--debounce-ms", "50"])
            .arg("--kubeconfig")
            .arg(&kube.kubeconfig)
            .args(args)
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .spawn()
            .context("starting trellisd")?;
        let webhook = args
            .iter()
            .position(|a| *a == "--webhook-addr")
            .and_then(|i| args.get(i + 1))
            .map(|addr| format!("https://{addr}"));
        Ok(Trellisd {
            child,
            plaintext: XdsAddress::parse(&format!("http://{ip}:{xds}"), None)?,
            tls_url: format!("https://{ip}:{tls}"),
            webhook,
            state,
        })
    }

    /// Discovery and the CA over TLS, verified with the mesh root as a pod
    /// has it: the `istio-ca-root-cert` ConfigMap in the test's namespace
    /// (written by the leader), once it is there.
    pub async fn xds(&self, kube: &Kube) -> Result<XdsAddress> {
        let root = eventually(Duration::from_secs(60), || async {
            let root = root_cert_in(kube, &kube.namespace)?;
            ensure!(root.contains("BEGIN CERTIFICATE"), "no root published yet");
            Ok(root)
        })
        .await
        .with_context(|| self.log())?;
        let path = self.state.path().join("root-cert.pem");
        std::fs::write(&path, root)?;
        self.xds_verified_by(&path)
    }

    /// Discovery and the CA over TLS, verified with the root in `root_cert`.
    pub fn xds_verified_by(&self, root_cert: &Path) -> Result<XdsAddress> {
        Ok(XdsAddress::parse(&self.tls_url, Some(root_cert))?)
    }

    /// Waits until it holds the leader's Lease.
    pub async fn until_leads(&self, kube: &Kube) -> Result<()> {
        let id = format!("_{}", self.child.id());
        eventually(Duration::from_secs(60), || async {
            let holder = lease_holder(kube)?;
            ensure!(
                holder.ends_with(&id),
                "replica {id} does not lead, {holder:?} does"
            );
            Ok(())
        })
        .await
        .with_context(|| self.log())
    }

    /// Stops it as a pod is stopped (SIGTERM), and waits until it has exited.
    pub fn terminate(&mut self) -> Result<()> {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()?;
        ensure!(status.success(), "kill -TERM {}", self.child.id());
        let status = self.child.wait()?;
        ensure!(
            status.success(),
            "trellisd exited with {status}: {}",
            self.log()
        );
        Ok(())
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.state.path().join("trellisd.log")).unwrap_or_default()
    }

    /// Its CA's root certificate (its own `--ca-dir`).
    pub fn ca_cert(&self) -> PathBuf {
        self.state.path().join("ca/ca-cert.pem")
    }

    /// Kills it (as a crash would) and waits until it is gone.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits until its log shows `what` (every one of `texts`).
    pub async fn until_logged(&self, what: &str, texts: &[&str]) -> Result<()> {
        eventually(Duration::from_secs(60), || async {
            let log = self.log();
            ensure!(
                texts.iter().all(|t| log.contains(t)),
                "{what}: not in the log yet: {log}"
            );
            Ok(())
        })
        .await
    }
}

impl Drop for Trellisd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The webhook configurations as Istio's chart makes them (names,
/// selectors, failure policies), pointing at `url` instead of the istiod
/// Service: the test's API server and trellisd run on loopback.
pub fn webhook_configurations(url: &str) -> String {
    format!(
        r#"
apiVersion: admissionregistration.k8s.io/v1
kind: MutatingWebhookConfiguration
metadata:
  name: istio-sidecar-injector
webhooks:
- name: namespace.sidecar-injector.istio.io
  clientConfig: {{url: "{url}/inject"}}
  rules: [{{operations: [CREATE], apiGroups: [""], apiVersions: [v1], resources: [pods]}}]
  failurePolicy: Fail
  sideEffects: None
  admissionReviewVersions: [v1]
  namespaceSelector:
    matchExpressions: [{{key: istio-injection, operator: In, values: [enabled]}}]
  objectSelector:
    matchExpressions: [{{key: sidecar.istio.io/inject, operator: NotIn, values: ["false"]}}]
- name: object.sidecar-injector.istio.io
  clientConfig: {{url: "{url}/inject"}}
  rules: [{{operations: [CREATE], apiGroups: [""], apiVersions: [v1], resources: [pods]}}]
  failurePolicy: Fail
  sideEffects: None
  admissionReviewVersions: [v1]
  namespaceSelector:
    matchExpressions:
    - {{key: istio-injection, operator: DoesNotExist}}
    - {{key: istio.io/rev, operator: DoesNotExist}}
  objectSelector:
    matchExpressions:
    - {{key: sidecar.istio.io/inject, operator: In, values: ["true"]}}
    - {{key: istio.io/rev, operator: DoesNotExist}}
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingWebhookConfiguration
metadata:
  name: istio-validator-istio-system
webhooks:
- name: rev.validation.istio.io
  clientConfig: {{url: "{url}/validate"}}
  rules:
  - operations: [CREATE, UPDATE]
    apiGroups: [security.istio.io, networking.istio.io, telemetry.istio.io, extensions.istio.io]
    apiVersions: ["*"]
    resources: ["*"]
  failurePolicy: Ignore
  sideEffects: None
  admissionReviewVersions: [v1]
"#
    )
}
