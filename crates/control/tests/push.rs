//! The control plane's push over a real discovery stream: versions, ACKs,
//! NACKs with their reason in proxy-status, and debounced changes.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use wire::pb::{Node, ProxyKind, Resource};

const MESH: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: reviews, namespace: default}\nspec:\n  selector: {app: reviews}\n  ports: [{name: http, port: 9080}]\n";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("port")
}

/// Accepts everything but listeners, which it rejects; remembers what it got.
#[derive(Clone, Default)]
struct Picky(Arc<Mutex<Vec<(String, usize)>>>);

impl wire::client::ConfigHandler for Picky {
    fn apply(
        &self,
        type_url: &str,
        _version: &str,
        resources: Vec<Resource>,
    ) -> Result<(), String> {
        self.0
            .lock()
            .map_err(|e| e.to_string())?
            .push((type_url.to_string(), resources.len()));
        if type_url == wire::types::LISTENER {
            return Err("listener inbound|9080: cannot bind".into());
        }
        Ok(())
    }
}

async fn wait_for<F: Fn() -> bool>(what: &str, f: F) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_changes_and_reports_acks_and_nacks() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut store = control::store::Store::open(dir.path()).expect("store");
    for r in api::parse("mesh.yaml", MESH).expect("parse") {
        store.apply(r).expect("apply");
    }
    drop(store);
    let (xds, http) = (free_port(), free_port());
    let options = control::Options {
        config_dir: dir.path().to_path_buf(),
        xds_addr: ([127, 0, 0, 1], xds).into(),
        http_addr: ([127, 0, 0, 1], http).into(),
        mesh_config: model::MeshConfig::default(),
        debounce: Duration::from_millis(50),
        ca_dir: None,
        token_secret: None,
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(control::run(options, async {
        let _ = stopped.await;
    }));
    let node = Node {
        id: "p.default".into(),
        pod_name: "p".into(),
        namespace: "default".into(),
        kind: ProxyKind::Sidecar as i32,
        ..Default::default()
    };
    let picky = Picky::default();
    tokio::spawn(wire::client::run(
        format!("http://127.0.0.1:{xds}"),
        node,
        None,
        picky.clone(),
    ));
    let got = |t: &str| {
        picky
            .0
            .lock()
            .map(|v| v.iter().filter(|(u, _)| u == t).count())
            .unwrap_or(0)
    };
    wait_for("all four types", || {
        wire::types::ALL.iter().all(|t| got(t) > 0)
    })
    .await;

    let api = format!("http://127.0.0.1:{http}");
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");
    let status = || async {
        client
            .get(format!("{api}/debug/syncz"))
            .send()
            .await
            .expect("syncz")
            .json::<serde_json::Value>()
            .await
            .expect("json")
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let s = status().await;
        let p = &s[0];
        if p["types"]["listeners"]["nack"] == "listener inbound|9080: cannot bind"
            && p["types"]["clusters"]["acked"] == p["types"]["clusters"]["sent"]
        {
            break;
        }
        assert!(Instant::now() < deadline, "NACK not reported: {s}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Three changes inside the debounce window make one push of clusters.
    let before = got(wire::types::CLUSTER);
    for name in ["ratings", "details", "productpage"] {
        let body = MESH.replace("reviews", name);
        let resp = client
            .post(format!("{api}/v1/apply"))
            .body(body)
            .send()
            .await
            .expect("apply");
        assert!(resp.status().is_success());
    }
    wait_for("the push", || got(wire::types::CLUSTER) > before).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        got(wire::types::CLUSTER),
        before + 1,
        "coalesced into one push"
    );
    let last = picky
        .0
        .lock()
        .expect("lock")
        .iter()
        .rev()
        .find(|(u, _)| u == wire::types::CLUSTER)
        .map(|(_, n)| *n);
    assert_eq!(last, Some(4), "four services, one cluster each");

    // An unchanged apply pushes nothing.
    let resp = client
        .post(format!("{api}/v1/apply"))
        .body(MESH)
        .send()
        .await
        .expect("apply");
    assert!(resp.status().is_success());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(got(wire::types::CLUSTER), before + 1);

    let _ = stop.send(());
    let stopped = tokio::time::timeout(Duration::from_secs(10), server).await;
    assert!(
        stopped.is_ok(),
        "the control plane stops while proxies are still connected"
    );
}
