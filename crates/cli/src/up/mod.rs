//! `trellis up DIR`: a whole mesh on one machine. Reads the manifests, plans
//! pods on loopback addresses, starts the control plane, a sidecar in front of
//! every pod, the pods' programs and an ingress gateway, keeps them all
//! running, and stops them on Ctrl-C.

pub mod bootstrap;
pub mod plan;
pub mod supervise;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::files;
use plan::{Addresses, PodPlan};
use supervise::{Spec, Supervisor};

pub const XDS_PORT: u16 = 15010;
pub const HTTP_API_PORT: u16 = 15014;
pub const ADMIN_PORT: u16 = 15000;
pub const OUTBOUND_PORT: u16 = 15001;
/// Istio's health port: `GET /healthz/ready` on the pod's address.
pub const HEALTH_PORT: u16 = 15021;

pub struct UpOptions {
    pub dir: PathBuf,
    pub block: u8,
    pub state_dir: Option<PathBuf>,
}

pub async fn run(opts: UpOptions) -> Result<()> {
    let resources = match files::load_valid(&opts.dir) {
        Ok(r) => r,
        Err(problems) => {
            for p in &problems {
                eprintln!("error: {p}");
            }
            bail!(
                "{} problem(s) in {}; nothing was started",
                problems.len(),
                opts.dir.display()
            );
        }
    };
    let mesh_config_file = opts.dir.join(files::MESH_CONFIG_FILE);
    let mesh_config = if mesh_config_file.is_file() {
        // Checked now, so a bad file stops `up` before anything starts.
        files::mesh_config(&mesh_config_file)?
    } else {
        model::MeshConfig::default()
    };
    let addrs = Addresses { block: opts.block };
    let plan = plan::plan(resources, addrs, &mesh_config)?;
    let state = opts
        .state_dir
        .clone()
        .unwrap_or_else(|| plan::state_dir(addrs));
    let logs = state.join("logs");
    seed_store(&state.join("config"), &plan.resources)?;
    std::fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))?;
    let identity = bootstrap::prepare(&opts.dir, &state, &mesh_config.trust_domain)?;

    let trellisd =
        plan::find_program("trellisd").context("trellisd not found next to trellis or on PATH")?;
    let proxy = plan::find_program("trellis-proxy")
        .context("trellis-proxy not found next to trellis or on PATH")?;
    let cp_ip = addrs.control_plane();
    let api_url = format!("http://{cp_ip}:{HTTP_API_PORT}");
    let xds_url = format!("http://{cp_ip}:{XDS_PORT}");

    let mut control = Supervisor::new();
    let mut args = vec![
        "--config-dir".into(),
        state.join("config").display().to_string(),
        "--xds-addr".into(),
        format!("{cp_ip}:{XDS_PORT}"),
        "--http-addr".into(),
        format!("{cp_ip}:{HTTP_API_PORT}"),
    ];
    if mesh_config_file.is_file() {
        args.extend([
            "--mesh-config".into(),
            mesh_config_file.display().to_string(),
        ]);
    }
    args.extend(identity.trellisd_args());
    control.spawn(Spec {
        name: "trellisd".into(),
        program: trellisd,
        args,
        env: Vec::new(),
        log: logs.join("trellisd.log"),
    });
    if let Err(e) = wait_ready(&format!("{api_url}/healthz"), Duration::from_secs(20)).await {
        control.stop().await;
        return Err(e.context(format!(
            "the control plane did not start; see {}",
            logs.join("trellisd.log").display()
        )));
    }

    let mut workloads = Supervisor::new();
    for pod in &plan.pods {
        start_pod(&mut workloads, pod, &proxy, &xds_url, &identity, &logs);
    }
    let gateway = plan::gateway_http_addr(&plan.pods, &plan.resources);
    let gateway_pod = plan.pods.iter().find(|p| p.gateway);
    if let Some(gw) = gateway_pod {
        let ready = format!("http://{}:{HEALTH_PORT}/healthz/ready", gw.pod_ip);
        if let Err(e) = wait_ready(&ready, Duration::from_secs(30)).await {
            tracing::warn!(error = %e, "the ingress gateway is not ready yet");
        }
    }
    print_summary(&plan.pods, &api_url, &xds_url, gateway, &logs);

    shutdown_signal().await;
    eprintln!("stopping the mesh…");
    workloads.stop().await;
    control.stop().await;
    eprintln!("stopped");
    Ok(())
}

/// Starts `up` from what is in DIR: applied changes of an earlier run are dropped.
fn seed_store(dir: &Path, resources: &[api::Resource]) -> Result<()> {
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("clearing {}", dir.display()))?;
    }
    let mut store = control::store::Store::open(dir)?;
    for r in resources
        .iter()
        .filter(|r| !matches!(r, api::Resource::Unsupported { .. }))
    {
        store.apply(r.clone())?;
    }
    Ok(())
}

fn start_pod(
    sup: &mut Supervisor,
    pod: &PodPlan,
    proxy: &Path,
    xds_url: &str,
    identity: &bootstrap::MeshIdentity,
    logs: &Path,
) {
    if pod.sidecar || pod.gateway {
        let mut args = vec![
            "--kind".to_string(),
            if pod.gateway { "gateway" } else { "sidecar" }.into(),
            "--pod-name".into(),
            pod.name.clone(),
            "--namespace".into(),
            pod.namespace.clone(),
            "--pod-ip".into(),
            pod.pod_ip.to_string(),
            "--app-ip".into(),
            pod.app_ip.to_string(),
            "--service-account".into(),
            pod.service_account.clone(),
            "--workload-name".into(),
            pod.workload.clone(),
            "--xds".into(),
            xds_url.to_string(),
            "--admin".into(),
            format!("{}:{ADMIN_PORT}", pod.app_ip),
            // The proxy makes its admin token and writes it here, 0600.
            "--admin-token-file".into(),
            logs.join(admin_token_file(pod)).display().to_string(),
            "--health".into(),
            format!("{}:{HEALTH_PORT}", pod.pod_ip),
        ];
        if !pod.gateway {
            args.extend([
                "--outbound".into(),
                format!("{}:{OUTBOUND_PORT}", pod.app_ip),
            ]);
        }
        for (k, v) in &pod.labels {
            args.extend(["--label".into(), format!("{k}={v}")]);
        }
        args.extend(["--trust-domain".into(), identity.trust_domain.clone()]);
        sup.spawn(Spec {
            name: format!("{}/{}/istio-proxy", pod.namespace, pod.name),
            program: proxy.to_path_buf(),
            args,
            // In the environment, not the command line, which `ps` shows everyone.
            // proxyMetadata (e.g. SECRET_TTL) is the proxy's environment, as in Istio.
            // The token last, so that proxyMetadata cannot replace it.
            env: pod
                .proxy_env
                .iter()
                .cloned()
                .chain([identity.proxy_env(&pod.namespace, &pod.service_account)])
                .collect(),
            log: logs.join(format!("{}.{}.istio-proxy.log", pod.namespace, pod.name)),
        });
    }
    for c in &pod.containers {
        let mut env = vec![
            ("POD_NAME".to_string(), pod.name.clone()),
            ("POD_NAMESPACE".into(), pod.namespace.clone()),
            ("INSTANCE_IP".into(), pod.pod_ip.to_string()),
            ("SERVICE_ACCOUNT".into(), pod.service_account.clone()),
            // Applications bind this address; only their sidecar forwards to it.
            (
                "TRELLIS_BIND_ADDR".into(),
                if pod.sidecar { pod.app_ip } else { pod.pod_ip }.to_string(),
            ),
        ];
        if pod.sidecar {
            let outbound = format!("http://{}:{OUTBOUND_PORT}", pod.app_ip);
            env.push(("HTTP_PROXY".into(), outbound.clone()));
            env.push(("http_proxy".into(), outbound));
        }
        env.extend(c.env.iter().cloned());
        sup.spawn(Spec {
            name: format!("{}/{}/{}", pod.namespace, pod.name, c.name),
            program: c.program.clone(),
            args: c.args.clone(),
            env,
            log: logs.join(format!("{}.{}.{}.log", pod.namespace, pod.name, c.name)),
        });
    }
}

/// The file (in the logs folder) holding a pod proxy's admin token, which
/// `POST /quitquitquit` and the admin port's other changes need.
pub fn admin_token_file(pod: &PodPlan) -> String {
    format!("{}.{}.istio-proxy.admin-token", pod.namespace, pod.name)
}

async fn wait_ready(url: &str, within: Duration) -> Result<()> {
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(2))
        .build()?;
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match client.get(url).send().await {
            Ok(r) if r.status().is_success() => return Ok(()),
            _ if tokio::time::Instant::now() >= deadline => {
                bail!("{url} not ready after {within:?}")
            }
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

fn print_summary(
    pods: &[PodPlan],
    api_url: &str,
    xds_url: &str,
    gateway: Option<std::net::SocketAddr>,
    logs: &Path,
) {
    let namespaces: std::collections::BTreeSet<&str> =
        pods.iter().map(|p| p.namespace.as_str()).collect();
    println!(
        "Trellis mesh is up: {} pods in {} namespaces",
        pods.len(),
        namespaces.len()
    );
    println!("  control plane    {api_url} (API)   {xds_url} (xDS)");
    if let Some(gw) = gateway {
        println!("  ingress gateway  http://{gw}/");
        println!("  try              http://{gw}/productpage");
    }
    println!("  logs             {}", logs.display());
    println!("  pods             trellis get pods --control-plane {api_url}");
    println!("Press Ctrl-C to stop.");
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).ok();
    let term = async {
        match term.as_mut() {
            Some(s) => {
                s.recv().await;
            }
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}
