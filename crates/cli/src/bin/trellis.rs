//! `trellis`: the command-line tool, and `trellis up`.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use cli::client::Client;
use cli::commands::{self, Output};
use cli::meshes;

#[derive(Parser)]
#[command(version, about = "Trellis: an Istio-compatible service mesh")]
struct Args {
    /// The control plane's HTTP API (default: the current context, else the
    /// single mesh `trellis up` runs; see `trellis context`).
    #[arg(long, global = true)]
    control_plane: Option<String>,
    /// The control plane's API token (default: the one `trellis up` made for that mesh).
    #[arg(long, global = true, hide_env_values = true, env = "TRELLIS_TOKEN")]
    token: Option<String>,
    /// With --kubeconfig or --context: the mesh on that Kubernetes cluster.
    #[command(flatten)]
    cluster: cli::cluster::Cluster,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a whole mesh on this machine from a directory of Kubernetes and Istio YAML.
    Up {
        dir: PathBuf,
        /// Second octet of the loopback block the mesh uses (127.N.0.0/16).
        #[arg(long, default_value_t = 10)]
        block: u8,
        /// Where config and logs go (default: a temporary directory named after the block).
        #[arg(long)]
        state_dir: Option<PathBuf>,
        /// Forget what was applied in earlier runs and start from DIR alone.
        #[arg(long)]
        fresh: bool,
        /// Keep every pod on the loopback interface even as root (no network
        /// namespaces, no capture; apps call out through HTTP_PROXY).
        #[arg(long)]
        no_netns: bool,
        /// The pods' IPv4 range in network namespace mode (default 10.<block>.0.0/16).
        #[arg(long, conflicts_with = "no_netns")]
        pod_cidr: Option<cli::local::netns::PodCidr>,
    },
    /// A node agent for one-machine clusters and tests (root): registers a
    /// Node with the cluster of --kubeconfig, binds unscheduled pods to it
    /// and runs them as local processes, each in its own network namespace.
    Node {
        /// The Node's name (default: this host's name).
        #[arg(long)]
        name: Option<String>,
        /// Names the network namespaces and links made (as `up --block`);
        /// the default pod range is 10.<block>.0.0/16.
        #[arg(long, default_value_t = 20)]
        block: u8,
        /// The pods' IPv4 range; the node takes its first address.
        #[arg(long)]
        pod_cidr: Option<cli::local::netns::PodCidr>,
        /// Where pods' volumes and logs go (default: a temporary directory named after the block).
        #[arg(long)]
        state_dir: Option<PathBuf>,
    },
    /// Create or update resources in the running mesh.
    Apply {
        #[arg(short = 'f', long = "filename")]
        file: PathBuf,
        /// Read the directory's subfolders too.
        #[arg(short = 'R', long)]
        recursive: bool,
    },
    /// Delete resources from the running mesh.
    Delete {
        #[arg(short = 'f', long = "filename")]
        file: PathBuf,
        /// Read the directory's subfolders too.
        #[arg(short = 'R', long)]
        recursive: bool,
    },
    /// List resources of a kind (pods, virtualservices, destinationrules, …).
    Get {
        kind: String,
        name: Option<String>,
        #[arg(short = 'n', long, default_value = "default")]
        namespace: String,
        /// Every namespace.
        #[arg(short = 'A', long)]
        all_namespaces: bool,
        #[arg(short = 'o', long, value_enum, default_value = "table")]
        output: Output,
        /// Show Secrets' values in clear (needs the API token; logged by the control plane).
        #[arg(long)]
        show_secret_data: bool,
    },
    /// Find cross-resource mistakes in files, as `istioctl analyze` does (exit 79 when found).
    Analyze(cli::analyze::AnalyzeArgs),
    /// Check files against Istio's schemas and rules, without a running mesh
    /// (a directory is read with its subfolders, as `istioctl validate -f`).
    Validate {
        #[arg(short = 'f', long = "filename")]
        file: PathBuf,
    },
    /// Add the sidecar to Kubernetes workloads in a file, as `istioctl kube-inject`.
    KubeInject(cli::kube_inject::Args),
    /// What of the mesh's config applies to a pod, and why (as `istioctl x
    /// describe pod`): its Services, DestinationRule and subset, the routes
    /// that reach it, its mTLS mode per port, its AuthorizationPolicies and
    /// Sidecar, and whether its proxy is synced.
    Describe(cli::describe::Args),
    /// The live service graph in a browser (served by the control plane on
    /// its monitoring port); on a cluster also an add-on's UI, forwarded
    /// through the API server: prometheus, grafana, jaeger or kiali.
    Dashboard(cli::dashboard::Args),
    /// Each proxy's sync state with the control plane.
    ProxyStatus {
        #[arg(short = 'o', long, value_enum, default_value = "table")]
        output: Output,
    },
    /// A proxy's configuration, as istioctl's: `trellis proxy-config routes <pod>[.<namespace>]`.
    ///
    /// TYPE is one of cluster(s), endpoint(s), listener(s), route(s),
    /// secret(s) or all, singular or plural as istioctl takes them; TYPE and
    /// POD may come in either order.
    ProxyConfig {
        /// cluster(s), endpoint(s), listener(s), route(s), secret(s) or all.
        #[arg(value_name = "TYPE")]
        kind: String,
        /// The pod: `<name>[.<namespace>]`.
        #[arg(value_name = "POD")]
        pod: String,
        #[arg(short = 'o', long, value_enum, default_value = "table")]
        output: Output,
    },
    /// Kubernetes manifests of an install (`manifest generate`, as istioctl's).
    Manifest {
        #[command(subcommand)]
        action: cli::install::command::ManifestAction,
    },
    /// Install the mesh on the cluster of a kubeconfig (profile, -f IstioOperator, --set).
    Install(cli::install::command::InstallArgs),
    /// Remove what `trellis install` put on the cluster.
    Uninstall(cli::install::command::UninstallArgs),
    /// Compare the cluster with the install's manifests, as `istioctl verify-install`.
    VerifyInstall(cli::install::command::VerifyArgs),
    /// The cluster's health for the mesh, as `linkerd check` (`--pre` before install).
    Check(cli::install::command::CheckArgs),
    /// The meshes this user runs, and which one commands talk to.
    Context {
        #[command(subcommand)]
        action: Option<ContextAction>,
    },
}

#[derive(Subcommand)]
enum ContextAction {
    /// Talk to NAME from now on: a running mesh (`block-N`, or `N`) or a saved context.
    Use { name: String },
    /// Save a context for a control plane `trellis up` did not start here.
    Set {
        name: String,
        #[arg(long = "server")]
        server: String,
        #[arg(long)]
        token_file: Option<PathBuf>,
    },
    /// No current context: commands use the single running mesh.
    Unset,
}

fn main() -> std::process::ExitCode {
    cli::logging::init("info");
    let args = Args::parse();
    // One thread: `up` relies on its children being forked by the main thread
    // (see sys::terminate_with_parent), and the other verbs are single requests.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        // `trellis get pods | head -1`: the reader has what it wanted.
        Err(e) if commands::is_broken_pipe(&e) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// The client for the mesh the user means: on the cluster named by
/// --kubeconfig/--context, through its API server; else see `cli::meshes`.
async fn client(args: &Args) -> anyhow::Result<Client> {
    if args.cluster.named() && args.control_plane.is_none() {
        let (kube, _) = args.cluster.connect().await?;
        return Ok(Client::kube(kube, &args.cluster.control_plane_proxy()));
    }
    let target = meshes::resolve(&choice(args))?;
    if target.several {
        eprintln!("using the mesh at {} ({})", target.api, target.why);
    }
    Ok(Client::new(&target.api, target.token))
}

/// Which local mesh the user means (see `cli::meshes`).
fn choice(args: &Args) -> meshes::Choice {
    let control_plane = match &args.control_plane {
        Some(c) => Some((c.clone(), "--control-plane")),
        None => std::env::var("TRELLIS_CONTROL_PLANE")
            .ok()
            .filter(|v| !v.is_empty())
            .map(|c| (c, "TRELLIS_CONTROL_PLANE")),
    };
    meshes::Choice {
        control_plane,
        token: args.token.clone(),
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    match &args.command {
        Command::Up {
            dir,
            block,
            state_dir,
            fresh,
            no_netns,
            pod_cidr,
        } => {
            cli::up::run(cli::up::UpOptions {
                dir: dir.clone(),
                block: *block,
                state_dir: state_dir.clone(),
                fresh: *fresh,
                no_netns: *no_netns,
                pod_cidr: *pod_cidr,
            })
            .await
        }
        Command::Node {
            name,
            block,
            pod_cidr,
            state_dir,
        } => {
            let config = args.cluster.config().await?;
            let api_server = config.cluster_url.clone();
            let client = kube::Client::try_from(config)?;
            cli::node::run(
                client,
                cli::node::NodeOptions {
                    api_server,
                    name: name.clone(),
                    block: *block,
                    pod_cidr: *pod_cidr,
                    state_dir: state_dir.clone(),
                },
            )
            .await
        }
        Command::Apply { file, recursive } => {
            commands::apply(&client(&args).await?, file, *recursive, false).await
        }
        Command::Delete { file, recursive } => {
            commands::apply(&client(&args).await?, file, *recursive, true).await
        }
        Command::Get {
            kind,
            name,
            namespace,
            all_namespaces,
            output,
            show_secret_data,
        } => {
            let get = commands::GetArgs {
                kind,
                name: name.as_deref(),
                namespace: (!all_namespaces).then_some(namespace.as_str()),
                output: *output,
                show_secret_data: *show_secret_data,
            };
            // On a cluster, read from its API server as kubectl does.
            if args.cluster.named() && args.control_plane.is_none() {
                commands::get_from_cluster(&args.cluster, &get).await
            } else {
                commands::get(&client(&args).await?, &get).await
            }
        }
        Command::Analyze(a) => match cli::analyze::run(a, &args.cluster).await? {
            0 => Ok(()),
            code => std::process::exit(code),
        },
        Command::Validate { file } => commands::validate(file),
        Command::KubeInject(a) => cli::kube_inject::run(a),
        Command::Describe(a) => {
            if args.cluster.named() && args.control_plane.is_none() {
                cli::describe::run(a, cli::describe::Source::Cluster(&args.cluster)).await
            } else {
                let client = client(&args).await?;
                cli::describe::run(a, cli::describe::Source::ControlPlane(&client)).await
            }
        }
        Command::Dashboard(a) => {
            if args.cluster.named() && args.control_plane.is_none() {
                let (kube, _) = args.cluster.connect().await?;
                cli::dashboard::cluster(a, kube, &args.cluster.istio_namespace).await
            } else {
                let target = meshes::resolve(&choice(&args))?;
                if target.several {
                    eprintln!("using the mesh at {} ({})", target.api, target.why);
                }
                cli::dashboard::local(a, &target.api)
            }
        }
        Command::ProxyStatus { output } => {
            commands::proxy_status(&client(&args).await?, *output).await
        }
        Command::ProxyConfig { kind, pod, output } => {
            commands::proxy_config(&client(&args).await?, kind, pod, *output).await
        }
        Command::Manifest { action } => cli::install::command::manifest(action),
        Command::Install(a) => cli::install::command::install(a, &args.cluster).await,
        Command::Uninstall(a) => cli::install::command::uninstall(a, &args.cluster).await,
        Command::VerifyInstall(a) => cli::install::command::verify_install(a, &args.cluster).await,
        Command::Check(a) => cli::install::command::check(a, &args.cluster).await,
        Command::Context { action } => {
            let text = match action {
                None => meshes::show()?,
                Some(ContextAction::Use { name }) => meshes::use_context(name)? + "\n",
                Some(ContextAction::Set {
                    name,
                    server,
                    token_file,
                }) => meshes::set_context(name, server, token_file.clone())? + "\n",
                Some(ContextAction::Unset) => meshes::unset_context()? + "\n",
            };
            commands::print(&text)
        }
    }
}
