//! `trellis`: the command-line tool, and `trellis up`.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use cli::client::{Client, DEFAULT_CONTROL_PLANE};
use cli::commands::{self, Output};

#[derive(Parser)]
#[command(version, about = "Trellis: an Istio-compatible service mesh")]
struct Args {
    /// The control plane's HTTP API.
    #[arg(long, global = true, env = "TRELLIS_CONTROL_PLANE", default_value = DEFAULT_CONTROL_PLANE)]
    control_plane: String,
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
    },
    /// Create or update resources in the running mesh.
    Apply {
        #[arg(short = 'f', long = "filename")]
        file: PathBuf,
    },
    /// Delete resources from the running mesh.
    Delete {
        #[arg(short = 'f', long = "filename")]
        file: PathBuf,
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
    },
    /// Find cross-resource mistakes in files, as `istioctl analyze` does (exit 79 when found).
    Analyze(cli::analyze::AnalyzeArgs),
    /// Check files against Istio's schemas and rules, without a running mesh.
    Validate {
        #[arg(short = 'f', long = "filename")]
        file: PathBuf,
    },
    /// Each proxy's sync state with the control plane.
    ProxyStatus {
        #[arg(short = 'o', long, value_enum, default_value = "table")]
        output: Output,
    },
    /// A proxy's configuration: `trellis proxy-config routes <pod>[.<namespace>]`.
    ProxyConfig {
        a: String,
        b: String,
        #[arg(short = 'o', long, value_enum, default_value = "table")]
        output: Output,
    },
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
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let client = Client::new(&args.control_plane);
    match args.command {
        Command::Up {
            dir,
            block,
            state_dir,
        } => {
            cli::up::run(cli::up::UpOptions {
                dir,
                block,
                state_dir,
            })
            .await
        }
        Command::Apply { file } => commands::apply(&client, &file, false).await,
        Command::Delete { file } => commands::apply(&client, &file, true).await,
        Command::Get {
            kind,
            name,
            namespace,
            all_namespaces,
            output,
        } => {
            let namespace = (!all_namespaces).then_some(namespace.as_str());
            commands::get(&client, &kind, name.as_deref(), namespace, output).await
        }
        Command::Analyze(a) => match cli::analyze::run(&a)? {
            0 => Ok(()),
            code => std::process::exit(code),
        },
        Command::Validate { file } => commands::validate(&file),
        Command::ProxyStatus { output } => commands::proxy_status(&client, output).await,
        Command::ProxyConfig { a, b, output } => {
            commands::proxy_config(&client, &a, &b, output).await
        }
    }
}
