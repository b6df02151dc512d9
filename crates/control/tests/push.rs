//! The control plane's push over a real discovery stream: versions, ACKs,
//! NACKs with their reason in proxy-status, and debounced changes.

// Test code: a panic is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{ControlPlane, config_dir, sidecar, wait_for};
use wire::pb::Resource;

const MESH: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: reviews, namespace: default}\nspec:\n  selector: {app: reviews}\n  ports: [{name: http, port: 9080}]\n";

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_changes_and_reports_acks_and_nacks() {
    let dir = config_dir(MESH);
    let cp = ControlPlane::start(dir.path(), Duration::from_millis(50));
    let picky = Picky::default();
    cp.connect(sidecar("default", "p"), picky.clone());
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

    let api = format!("http://127.0.0.1:{}", cp.http);
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

    // Three changes in quick succession: the first is pushed at once, the
    // ones that follow within the debounce window after it together.
    let before = got(wire::types::CLUSTER);
    for name in ["ratings", "details", "productpage"] {
        let body = MESH.replace("reviews", name);
        let resp = client
            .post(format!("{api}/v1/apply"))
            .header("content-type", "application/yaml")
            .body(body)
            .send()
            .await
            .expect("apply");
        assert!(resp.status().is_success());
    }
    wait_for("the push", || got(wire::types::CLUSTER) > before).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let pushes = got(wire::types::CLUSTER) - before;
    assert!(
        (1..=2).contains(&pushes),
        "the last two coalesced into one push, not {pushes}"
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
        .header("content-type", "application/yaml")
        .body(MESH)
        .send()
        .await
        .expect("apply");
    assert!(resp.status().is_success());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(got(wire::types::CLUSTER), before + pushes);

    assert!(
        cp.stop().await,
        "the control plane stops while proxies are still connected"
    );
}
