//! Shared by the control test binaries: a control plane on loopback ports
//! started from a config dir, and a discovery client for a sidecar.

// Each test binary compiles its own copy and uses only some of these.
#![allow(dead_code)]

use std::path::Path;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use wire::pb::{Node, ProxyKind};

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("port")
}

/// Polls `f` until it holds; fails the test after 10 s.
pub async fn wait_for<F: Fn() -> bool>(what: &str, f: F) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A config dir with `yaml` applied to its store, as `trellis apply` leaves it.
pub fn config_dir(yaml: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut store = control::store::Store::open(dir.path()).expect("store");
    for r in api::parse("mesh.yaml", yaml).expect("parse") {
        store.apply(r).expect("apply");
    }
    dir
}

/// The node a sidecar in pod `pod` of namespace `ns` presents.
pub fn sidecar(ns: &str, pod: &str) -> Node {
    Node {
        id: format!("{pod}.{ns}"),
        pod_name: pod.into(),
        namespace: ns.into(),
        kind: ProxyKind::Sidecar as i32,
        ..Default::default()
    }
}

/// A control plane without CA, serving discovery on `xds` and its API on `http`.
pub struct ControlPlane {
    pub xds: u16,
    pub http: u16,
    stop: oneshot::Sender<()>,
    server: JoinHandle<Result<(), control::Error>>,
}

impl ControlPlane {
    pub fn start(config_dir: &Path, debounce: Duration) -> ControlPlane {
        let (xds, http) = (free_port(), free_port());
        let options = control::Options {
            config_dir: config_dir.to_path_buf(),
            xds_addr: ([127, 0, 0, 1], xds).into(),
            // No CA: not served.
            xds_tls_addr: ([127, 0, 0, 1], free_port()).into(),
            xds_sans: Vec::new(),
            http_addr: ([127, 0, 0, 1], http).into(),
            mesh_config: model::MeshConfig::default(),
            debounce,
            ca_dir: None,
            token_secret: None,
            api_token_file: None,
            pod_status_file: None,
            dashboard: Default::default(),
            kubernetes: None,
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(control::run(options, async {
            let _ = stopped.await;
        }));
        ControlPlane {
            xds,
            http,
            stop,
            server,
        }
    }

    /// Connects `node` with `handler` as its proxy, in the background.
    pub fn connect<H: wire::client::ConfigHandler>(&self, node: Node, handler: H) {
        let address =
            wire::address::XdsAddress::parse(&format!("http://127.0.0.1:{}", self.xds), None)
                .expect("address");
        tokio::spawn(wire::client::run(address, node, None, handler));
    }

    /// Asks the control plane to stop; whether it did within 10 s.
    pub async fn stop(self) -> bool {
        let _ = self.stop.send(());
        tokio::time::timeout(Duration::from_secs(10), self.server)
            .await
            .is_ok()
    }
}
