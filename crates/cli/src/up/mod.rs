//! `trellis up DIR`: a whole mesh on one machine. Reads the manifests, plans
//! pods on loopback addresses, starts the control plane, a sidecar in front of
//! every pod, the pods' programs and an ingress gateway (and an egress
//! gateway when a Gateway selects one), keeps them all
//! running, and stops them on Ctrl-C. As root, each pod runs in its own
//! network namespace with its traffic captured ([`netns`]); otherwise pods
//! share the loopback interface and apps call out through `HTTP_PROXY`.

pub mod bootstrap;
pub mod plan;
pub mod prometheus;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::files;
use crate::local::programs::find_program;
use crate::local::{lock, netns, supervise};
use crate::meshes::{self, MeshRecord};
use plan::{Addresses, PodPlan};
use supervise::{Spec, StatusBoard, Supervisor};

/// Plaintext discovery (config only; on the control plane's loopback address).
pub const XDS_PORT: u16 = wire::address::PLAINTEXT_PORT;
/// Discovery and the CA over TLS, where the proxies send their tokens.
pub const XDS_TLS_PORT: u16 = wire::address::TLS_PORT;
pub const HTTP_API_PORT: u16 = 15014;
pub const ADMIN_PORT: u16 = 15000;
pub const OUTBOUND_PORT: u16 = 15001;
/// Istio's health port: `GET /healthz/ready` on the pod's address.
pub const HEALTH_PORT: u16 = 15021;
/// Istio's merged Prometheus port (the proxy's metrics and the application's).
pub const MERGED_METRICS_PORT: u16 = 15020;
/// Istio's (Envoy's) Prometheus port for the proxy's own metrics.
pub const STATS_PORT: u16 = 15090;

pub struct UpOptions {
    pub dir: PathBuf,
    pub block: u8,
    pub state_dir: Option<PathBuf>,
    /// Drop what was applied in earlier runs and start from DIR alone.
    pub fresh: bool,
    /// Loopback mode even as root.
    pub no_netns: bool,
    /// The pods' range in namespace mode (default `10.<block>.0.0/16`).
    pub pod_cidr: Option<netns::PodCidr>,
}

/// How pods are networked.
enum Mode {
    /// Pods share the host's loopback; the reason namespace mode is not used.
    Loopback(String),
    /// Each pod in its own network namespace, on this range.
    Namespaces(netns::PodCidr),
}

impl Mode {
    fn banner(&self, block: u8) -> String {
        match self {
            Mode::Namespaces(cidr) => format!(
                "network mode: namespaces — each pod in network namespace trellis-{block}-<pod>.<namespace> on {cidr} (the host is {} on link trellis{block}), its traffic captured by its sidecar",
                cidr.gateway()
            ),
            Mode::Loopback(why) => format!(
                "network mode: loopback 127.{block}.0.0/16 ({why}) — pods are NOT isolated: any local process can call an app past its sidecar or use another pod's outbound port; as root without --no-netns, each pod gets its own network namespace"
            ),
        }
    }
}

/// The API token's file in the state directory (mode 0600).
pub const API_TOKEN_FILE: &str = "api-token";

/// The mesh config of a directory without `mesh.yaml`: Istio's demo
/// profile's, which is what a one-machine mesh is for — every proxy's
/// access log on its stdout (the pod's istio-proxy log).
const DEFAULT_MESH_CONFIG: &str =
    "# trellis up's default (Istio's demo profile)\naccessLogFile: /dev/stdout\n";

pub async fn run(opts: UpOptions) -> Result<()> {
    // First of all: a block another mesh holds is refused before anything is touched.
    let mut lock = lock::lock_block(opts.block)?;
    let resources = match files::load_valid(&opts.dir, false) {
        Ok(loaded) => loaded.resources,
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
        serde_yaml_ng::from_str(DEFAULT_MESH_CONFIG)?
    };
    let mode = if opts.no_netns {
        Mode::Loopback("--no-netns".into())
    } else if let Some(why) = netns::missing_for_netns() {
        Mode::Loopback(why)
    } else {
        Mode::Namespaces(
            opts.pod_cidr
                .unwrap_or_else(|| netns::PodCidr::for_block(opts.block)),
        )
    };
    if let (Mode::Loopback(_), Some(cidr)) = (&mode, opts.pod_cidr) {
        eprintln!(
            "WARNING: --pod-cidr {cidr} is for namespace mode; it is not used in loopback mode"
        );
    }
    let addrs = Addresses {
        block: opts.block,
        pods: match &mode {
            Mode::Namespaces(cidr) => Some(*cidr),
            Mode::Loopback(_) => None,
        },
    };
    let plan = plan::plan(resources, addrs, &mesh_config)?;
    let state = opts
        .state_dir
        .clone()
        .unwrap_or_else(|| plan::state_dir(addrs));
    lock.lock_state(&state)?;
    let dir = opts.dir.canonicalize().unwrap_or_else(|_| opts.dir.clone());
    lock.describe(&format!(
        "pid {}, mesh dir {}, state dir {}",
        std::process::id(),
        dir.display(),
        state.display()
    ));
    let logs = state.join("logs");
    for r in &plan.resources {
        if let Some(text) = model::analyze::not_enforced_in(r, Some(&mesh_config)) {
            eprintln!("WARNING: {} {}: {text}", r.kind_name(), r.name());
        }
    }
    let kept = seed_store(&state, &plan.resources, opts.fresh)?;
    if kept > 0 {
        eprintln!(
            "kept {kept} applied change(s) from the last run in {}; --fresh starts from {}",
            state.display(),
            opts.dir.display()
        );
    }
    std::fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))?;
    let identity = bootstrap::prepare(&opts.dir, &state, &mesh_config.trust_domain)?;
    let token_file = state.join(API_TOKEN_FILE);
    control::api_token::ApiToken::create(&token_file)
        .with_context(|| format!("creating the API token {}", token_file.display()))?;
    let status_file = state.join("processes.json");
    // The last run's processes are not this run's.
    let _ = std::fs::remove_file(&status_file);

    let trellisd =
        find_program("trellisd").context("trellisd not found next to trellis or on PATH")?;
    let proxy = find_program("trellis-proxy")
        .context("trellis-proxy not found next to trellis or on PATH")?;
    let cp_ip = addrs.control_plane();
    let api_url = format!("http://{cp_ip}:{HTTP_API_PORT}");
    // In namespace mode the proxies reach xDS on the host's end of the bridge;
    // the API and plaintext discovery stay on loopback, for the host only.
    // Proxies connect over TLS, verifying trellisd's certificate (issued for
    // this address) with the mesh root.
    let xds_ip = match &mode {
        Mode::Namespaces(cidr) => std::net::IpAddr::from(cidr.gateway()),
        Mode::Loopback(_) => cp_ip.into(),
    };
    let xds_url = format!("https://{xds_ip}:{XDS_TLS_PORT}");

    // The namespaces and their capture rules, all before anything starts:
    // a pod whose rules cannot be written stops `up` with nothing running.
    // Dropped (namespaces, veths and bridge removed) when `run` returns.
    let mut network = None;
    let mut pod_namespaces = vec![None; plan.pods.len()];
    if let Mode::Namespaces(cidr) = &mode {
        let net = network.insert(netns::PodNetwork::create(
            netns::Names { block: opts.block },
            *cidr,
        )?);
        for (i, pod) in plan.pods.iter().enumerate() {
            let ns = net.add_pod(i, &pod.id(), &pod.namespace, pod.pod_ip)?;
            if pod.sidecar {
                net.capture(
                    &ns,
                    &format!("{}/{}", pod.namespace, pod.name),
                    &proxy,
                    &pod.capture_args,
                )?;
            }
            pod_namespaces[i] = Some(ns);
        }
    }

    let board = StatusBoard::new(&status_file);
    let mut control = Supervisor::with_status(board.clone());
    let mut args = vec![
        "--config-dir".into(),
        state.join("config").display().to_string(),
        "--xds-addr".into(),
        format!("{cp_ip}:{XDS_PORT}"),
        "--xds-tls-addr".into(),
        format!("{xds_ip}:{XDS_TLS_PORT}"),
        "--http-addr".into(),
        format!("{cp_ip}:{HTTP_API_PORT}"),
        "--api-token-file".into(),
        token_file.display().to_string(),
        "--pod-status-file".into(),
        status_file.display().to_string(),
    ];
    let mesh_config_arg = if mesh_config_file.is_file() {
        mesh_config_file.clone()
    } else {
        let default = state.join(files::MESH_CONFIG_FILE);
        std::fs::write(&default, DEFAULT_MESH_CONFIG)?;
        default
    };
    args.extend([
        "--mesh-config".into(),
        mesh_config_arg.display().to_string(),
    ]);
    args.extend(identity.trellisd_args());
    control.spawn(Spec {
        name: "trellisd".into(),
        program: trellisd,
        args,
        env: Vec::new(),
        clear_env: false,
        log: logs.join("trellisd.log"),
    });
    if let Err(e) = wait_ready(&format!("{api_url}/healthz"), Duration::from_secs(20)).await {
        control.stop().await;
        return Err(e.context(format!(
            "the control plane did not start; see {}",
            logs.join("trellisd.log").display()
        )));
    }

    let record = MeshRecord {
        name: meshes::mesh_name(opts.block),
        block: opts.block,
        dir,
        state_dir: state.clone(),
        api: api_url.clone(),
        pid: std::process::id(),
        token_file,
    };
    // Removed when dropped: on a clean exit, and on an error return below.
    let _registration = match record.register() {
        Ok(r) => Some(r),
        Err(e) => {
            tracing::warn!(error = %format!("{e:#}"), "the CLI will not find this mesh by itself; pass --control-plane");
            None
        }
    };

    let mut workloads = Supervisor::with_status(board);
    for (pod, ns) in plan.pods.iter().zip(&pod_namespaces) {
        start_pod(
            &mut workloads,
            pod,
            ns.as_deref(),
            &proxy,
            &xds_url,
            &identity,
            &logs,
        )?;
    }
    let gateway = plan::gateway_http_addr(&plan.pods, &plan.resources);
    for gw in plan.pods.iter().filter(|p| p.gateway) {
        let ready = format!("http://{}:{HEALTH_PORT}/healthz/ready", gw.pod_ip);
        if let Err(e) = wait_ready(&ready, Duration::from_secs(30)).await {
            tracing::warn!(error = %e, gateway = %gw.workload, "the gateway is not ready yet");
        }
    }
    let file_sd = match prometheus::write_file_sd(&state, &plan.pods, &api_url) {
        Ok(dir) => Some(dir),
        Err(e) => {
            tracing::warn!(error = %format!("{e:#}"), "cannot write Prometheus's service discovery files");
            None
        }
    };
    print_summary(
        &plan.pods,
        &mode.banner(opts.block),
        &api_url,
        &xds_url,
        gateway,
        &state,
        file_sd.as_deref(),
    );

    crate::local::shutdown_signal().await;
    eprintln!("stopping the mesh…");
    workloads.stop().await;
    control.stop().await;
    drop(network);
    eprintln!("stopped");
    Ok(())
}

/// Fills the config store from DIR, keeping what was applied since: as a
/// cluster keeps its objects, `up` on an existing state directory does not
/// undo `trellis apply`/`delete`. DIR's resources as of the last `up` are
/// kept in `<state>/dir-config` to tell the two apart: a resource the user
/// changed (or deleted) through the API since keeps its applied form, one
/// only DIR changed takes DIR's, one new in DIR is added, and one DIR no
/// longer has is removed unless it was changed through the API. With
/// `fresh`, everything applied is dropped. Returns how many applied changes
/// were kept over DIR's version.
fn seed_store(state: &Path, resources: &[api::Resource], fresh: bool) -> Result<usize> {
    use control::store::{Key, Store};
    use std::collections::BTreeMap;
    let config = state.join("config");
    let baseline_dir = state.join("dir-config");
    if fresh {
        for d in [&config, &baseline_dir] {
            if d.exists() {
                std::fs::remove_dir_all(d).with_context(|| format!("clearing {}", d.display()))?;
            }
        }
    }
    let mut store = Store::open(&config)?;
    let baseline = Store::open(&baseline_dir)?;
    let wanted: BTreeMap<Key, &api::Resource> = resources
        .iter()
        .filter(|r| {
            !matches!(r, api::Resource::Unsupported { .. }) || model::rate_limit::is_translated(r)
        })
        .map(|r| (Key::of(r), r))
        .collect();
    let mut kept = 0;
    for (key, r) in &wanted {
        let from_dir = r.to_json();
        // Compared whole: the stores keep pods slim in memory.
        let applied = store.whole(key)?.map(|r| r.to_json());
        let last_dir = baseline.whole(key)?.map(|r| r.to_json());
        match (applied, last_dir) {
            (None, None) => {
                store.apply((*r).clone())?;
            }
            // Deleted through the API since the last `up`: stays deleted.
            (None, Some(_)) => kept += 1,
            (Some(a), _) if a == from_dir => {}
            (Some(a), Some(b)) if a == b => {
                store.apply((*r).clone())?;
            }
            (Some(_), _) => kept += 1,
        }
    }
    let stale: Vec<Key> = baseline
        .resources()
        .map(Key::of)
        .filter(|key| !wanted.contains_key(key))
        .collect();
    for key in stale {
        let old = baseline.whole(&key)?.map(|r| r.to_json());
        if old.is_some() && store.whole(&key)?.map(|r| r.to_json()) == old {
            store.delete(&key)?;
        }
    }
    // DIR as of this `up`, for the next one.
    drop(baseline);
    if baseline_dir.exists() {
        std::fs::remove_dir_all(&baseline_dir)
            .with_context(|| format!("clearing {}", baseline_dir.display()))?;
    }
    let mut baseline = Store::open(&baseline_dir)?;
    for r in wanted.values() {
        baseline.apply((*r).clone())?;
    }
    Ok(kept)
}

/// Starts a pod's proxy and programs; with `ns` (namespace mode), inside
/// that network namespace, the proxy as [`netns::PROXY_UID`] with capture and
/// the programs as [`netns::APP_UID`] with no `HTTP_PROXY`.
fn start_pod(
    sup: &mut Supervisor,
    pod: &PodPlan,
    ns: Option<&str>,
    proxy: &Path,
    xds_url: &str,
    identity: &bootstrap::MeshIdentity,
    logs: &Path,
) -> Result<()> {
    if pod.sidecar || pod.gateway {
        let token_file = match ns {
            None => logs.join(admin_token_file(pod)),
            // The proxy's user writes it: a folder of its own, private to it.
            Some(_) => {
                let dir = logs.join(format!("{}.{}.istio-proxy", pod.namespace, pod.name));
                std::fs::create_dir_all(&dir)
                    .and_then(|()| {
                        std::os::unix::fs::chown(
                            &dir,
                            Some(netns::PROXY_UID),
                            Some(netns::PROXY_UID),
                        )
                    })
                    .and_then(|()| {
                        std::fs::set_permissions(
                            &dir,
                            std::os::unix::fs::PermissionsExt::from_mode(0o700),
                        )
                    })
                    .with_context(|| format!("preparing {}", dir.display()))?;
                dir.join("admin-token")
            }
        };
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
            "--xds-root-cert".into(),
            identity.root_cert().display().to_string(),
            "--admin".into(),
            format!("{}:{ADMIN_PORT}", pod.app_ip),
            // The proxy makes its admin token and writes it here, 0600.
            "--admin-token-file".into(),
            token_file.display().to_string(),
            "--health".into(),
            format!("{}:{HEALTH_PORT}", pod.pod_ip),
        ];
        if let Some(ip) = pod.metrics_ip() {
            args.extend(["--metrics-ip".into(), ip.to_string()]);
        }
        if let Some((port, path)) = &pod.app_metrics {
            args.extend([
                "--app-metrics-port".into(),
                port.to_string(),
                "--app-metrics-path".into(),
                path.clone(),
            ]);
        }
        if ns.is_some() && pod.sidecar {
            // The rules written in its namespace send it every connection.
            args.extend(["--capture".into(), "--dns-capture".into()]);
        } else if !pod.gateway {
            args.extend([
                "--outbound".into(),
                format!("{}:{OUTBOUND_PORT}", pod.app_ip),
            ]);
        }
        for (k, v) in &pod.labels {
            args.extend(["--label".into(), format!("{k}={v}")]);
        }
        args.extend(["--trust-domain".into(), identity.trust_domain.clone()]);
        let (program, args) = match ns {
            Some(ns) => netns::in_pod(ns, netns::PROXY_UID, proxy, &args),
            None => (proxy.to_path_buf(), args),
        };
        sup.spawn(Spec {
            name: format!("{}/{}/istio-proxy", pod.namespace, pod.name),
            program,
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
            clear_env: false,
            log: logs.join(format!("{}.{}.istio-proxy.log", pod.namespace, pod.name)),
        });
    }
    for c in &pod.containers {
        let mut env = vec![
            ("POD_NAME".to_string(), pod.name.clone()),
            ("POD_NAMESPACE".into(), pod.namespace.clone()),
            ("INSTANCE_IP".into(), pod.pod_ip.to_string()),
            ("SERVICE_ACCOUNT".into(), pod.service_account.clone()),
            // Applications bind this address. In loopback mode a sidecar's
            // application has an address of its own, which only its sidecar
            // forwards to. In a pod's network namespace, every address, as
            // in a cluster: the sidecar calls the pod's address (Istio's
            // behaviour since 1.10), and capture guards it.
            (
                "TRELLIS_BIND_ADDR".into(),
                match (ns, pod.sidecar) {
                    (Some(_), _) => "0.0.0.0".to_string(),
                    (None, true) => pod.app_ip.to_string(),
                    (None, false) => pod.pod_ip.to_string(),
                },
            ),
        ];
        if pod.sidecar && ns.is_none() {
            let outbound = format!("http://{}:{OUTBOUND_PORT}", pod.app_ip);
            env.push(("HTTP_PROXY".into(), outbound.clone()));
            env.push(("http_proxy".into(), outbound));
        }
        env.extend(c.env.iter().cloned());
        let (program, args) = match ns {
            Some(ns) => netns::in_pod(ns, netns::APP_UID, &c.program, &c.args),
            None => (c.program.clone(), c.args.clone()),
        };
        sup.spawn(Spec {
            name: format!("{}/{}/{}", pod.namespace, pod.name, c.name),
            program,
            args,
            env,
            clear_env: false,
            log: logs.join(format!("{}.{}.{}.log", pod.namespace, pod.name, c.name)),
        });
    }
    Ok(())
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
    banner: &str,
    api_url: &str,
    xds_url: &str,
    gateway: Option<std::net::SocketAddr>,
    state: &Path,
    file_sd: Option<&Path>,
) {
    use std::fmt::Write as _;
    let namespaces: std::collections::BTreeSet<&str> =
        pods.iter().map(|p| p.namespace.as_str()).collect();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Trellis mesh is up: {} pods in {} namespaces",
        pods.len(),
        namespaces.len()
    );
    let _ = writeln!(out, "{banner}");
    let _ = writeln!(out, "  control plane    {api_url} (API)   {xds_url} (xDS)");
    let _ = writeln!(
        out,
        "  dashboard        {api_url}/dashboard/ (live service graph; `trellis dashboard` opens it)"
    );
    let _ = writeln!(out, "  metrics          {api_url}/metrics (control plane)");
    let scraped: Vec<_> = pods.iter().filter_map(PodPlan::metrics_ip).collect();
    if let Some(first) = scraped.first() {
        let _ = writeln!(
            out,
            "                   http://<pod>:{MERGED_METRICS_PORT}/stats/prometheus (merged), :{STATS_PORT} (proxy), e.g. http://{first}:{MERGED_METRICS_PORT}/stats/prometheus; trellis get pods -o wide lists them"
        );
    }
    if let Some(dir) = file_sd {
        let _ = writeln!(
            out,
            "  prometheus       prometheus --config.file={}",
            dir.join(prometheus::CONFIG_FILE).display()
        );
    }
    if let Some(gw) = gateway {
        let _ = writeln!(out, "  ingress gateway  http://{gw}/");
        let _ = writeln!(out, "  try              http://{gw}/productpage");
    }
    if let Some(egress) = pods
        .iter()
        .find(|p| p.gateway && p.workload == plan::EGRESS_NAME)
    {
        // Only sidecars' traffic is meant for it; its address is for looking.
        let _ = writeln!(
            out,
            "  egress gateway   {} (istio-egressgateway.istio-system)",
            egress.pod_ip
        );
    }
    let _ = writeln!(out, "  state            {}", state.display());
    let _ = writeln!(out, "  logs             {}", state.join("logs").display());
    let _ = writeln!(
        out,
        "  API token        {} (the CLI finds it)",
        state.join(API_TOKEN_FILE).display()
    );
    let _ = writeln!(out, "  pods             trellis get pods");
    let _ = writeln!(out, "Press Ctrl-C to stop.");
    // A closed stdout must not stop the mesh.
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    let _ = stdout
        .write_all(out.as_bytes())
        .and_then(|()| stdout.flush());
}

#[cfg(test)]
mod tests {
    use super::*;
    use control::store::{Key, Store};

    fn vs(name: &str, host: &str) -> api::Resource {
        let text = format!(
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: {name}}}\nspec:\n  hosts: [{host}]\n  http:\n  - route: [{{destination: {{host: {host}}}}}]\n"
        );
        api::parse("t.yaml", &text).unwrap().remove(0)
    }

    fn hosts(state: &Path) -> Vec<(String, String)> {
        let store = Store::open(&state.join("config")).unwrap();
        store
            .resources()
            .map(|r| {
                let json = r.to_json();
                (
                    r.name().to_string(),
                    json["spec"]["hosts"][0].as_str().unwrap_or("").to_string(),
                )
            })
            .collect()
    }

    #[test]
    fn up_again_keeps_applied_changes_follows_dir_elsewhere_and_fresh_forgets() {
        let state = tempfile::tempdir().unwrap();
        let state = state.path();
        assert_eq!(
            seed_store(state, &[vs("a", "a1"), vs("b", "b1")], false).unwrap(),
            0
        );

        // Through the API: `a` changed, `c` added.
        let mut store = Store::open(&state.join("config")).unwrap();
        store.apply(vs("a", "applied")).unwrap();
        store.apply(vs("c", "c1")).unwrap();
        drop(store);

        // DIR now changes `a` and `b`, and adds `d`.
        let dir = [vs("a", "a2"), vs("b", "b2"), vs("d", "d1")];
        assert_eq!(
            seed_store(state, &dir, false).unwrap(),
            1,
            "a's applied change kept"
        );
        assert_eq!(
            hosts(state),
            [("a", "applied"), ("b", "b2"), ("c", "c1"), ("d", "d1")]
                .map(|(n, h)| (n.to_string(), h.to_string()))
        );

        // DIR drops `b` (unchanged through the API since): it goes; `a` stays applied.
        let mut store = Store::open(&state.join("config")).unwrap();
        store.delete(&Key::of(&vs("d", "d1"))).unwrap();
        drop(store);
        assert_eq!(
            seed_store(state, &[vs("a", "a2"), vs("d", "d1")], false).unwrap(),
            2
        );
        assert_eq!(
            hosts(state),
            [("a", "applied"), ("c", "c1")].map(|(n, h)| (n.to_string(), h.to_string())),
            "d, deleted through the API, stays deleted"
        );

        assert_eq!(seed_store(state, &[vs("a", "a2")], true).unwrap(), 0);
        assert_eq!(hosts(state), [("a".to_string(), "a2".to_string())]);
    }
}
