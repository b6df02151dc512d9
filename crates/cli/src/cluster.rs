//! Reaching a Kubernetes cluster as kubectl does: the kubeconfig from
//! `--kubeconfig`, else `KUBECONFIG`, else `~/.kube/config`; the context from
//! `--context`, else the current one; its namespace as the default one.
//! trellisd's debug API is reached through the API server's service proxy,
//! so the user's own credentials and RBAC (`services/proxy`) apply.

use std::path::PathBuf;

use anyhow::{Context as _, Result};
use kube::config::{KubeConfigOptions, Kubeconfig};

/// The control plane's Service, as Istio names it, and its HTTP port
/// (Istio's 15014: monitoring and debug).
pub const CONTROL_PLANE_SERVICE: &str = "istiod";
pub const CONTROL_PLANE_PORT: u16 = 15014;

/// Which cluster the user means.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct Cluster {
    /// The kubeconfig to use (default: KUBECONFIG, else ~/.kube/config, else
    /// the pod's service account).
    #[arg(short = 'c', long, global = true)]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use (default: its current context).
    #[arg(long, global = true)]
    pub context: Option<String>,
    /// The control plane's namespace on the cluster.
    #[arg(
        short = 'i',
        long = "istio-namespace",
        alias = "istioNamespace",
        global = true,
        default_value = "istio-system"
    )]
    pub istio_namespace: String,
}

impl Cluster {
    /// Whether the user named a cluster (then commands talk to it, not to
    /// a mesh `trellis up` runs).
    pub fn named(&self) -> bool {
        self.kubeconfig.is_some() || self.context.is_some()
    }

    /// A client for the cluster, and the context's namespace (`default` if
    /// it names none).
    pub async fn connect(&self) -> Result<(kube::Client, String)> {
        let config = self.config().await?;
        let namespace = config.default_namespace.clone();
        let client = kube::Client::try_from(config).context("Kubernetes client")?;
        Ok((client, namespace))
    }

    /// The client configuration --kubeconfig and --context name.
    pub async fn config(&self) -> Result<kube::Config> {
        let options = KubeConfigOptions {
            context: self.context.clone(),
            ..Default::default()
        };
        let config = match &self.kubeconfig {
            Some(path) => {
                let kubeconfig = Kubeconfig::read_from(path)
                    .with_context(|| format!("kubeconfig {}", path.display()))?;
                kube::Config::from_custom_kubeconfig(kubeconfig, &options)
                    .await
                    .with_context(|| format!("kubeconfig {}", path.display()))?
            }
            None if self.context.is_some() => kube::Config::from_kubeconfig(&options)
                .await
                .context("kubeconfig (KUBECONFIG, else ~/.kube/config)")?,
            None => kube::Config::infer().await.context(
                "no cluster: give --kubeconfig, set KUBECONFIG or write ~/.kube/config, or run in a pod",
            )?,
        };
        Ok(config)
    }

    /// The path, on the API server, that proxies to the control plane's
    /// HTTP API.
    pub fn control_plane_proxy(&self) -> String {
        format!(
            "/api/v1/namespaces/{}/services/http:{CONTROL_PLANE_SERVICE}:{CONTROL_PLANE_PORT}/proxy",
            self.istio_namespace
        )
    }
}
