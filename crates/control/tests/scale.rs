//! The push at scale, for correctness only: 200 services, 200 proxies on
//! real discovery streams (the proxy's own client, taking partial
//! responses), then a burst of endpoint, label, VirtualService and
//! DestinationRule changes applied through the API without waiting between
//! them. Whatever the push coalesced, sent in pieces or as partial updates,
//! every proxy must end up with exactly the config a fresh compile of the
//! final mesh gives it. No time is asserted; waiting is bounded.

// Test code: a panic is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{ControlPlane, config_dir, sidecar};
use wire::pb::{Node, Resource};

const SERVICES: usize = 200;
const NAMESPACES: usize = 4;
const PODS_PER_SERVICE: usize = 2;
const PROXIES: usize = 200;

/// What one proxy holds: per type, its resources by name.
type Held = BTreeMap<String, BTreeMap<String, Resource>>;

/// A proxy's config as the real client hands it over: whole sets and partial updates.
#[derive(Clone, Default)]
struct Mirror(Arc<Mutex<Held>>);

impl wire::client::ConfigHandler for Mirror {
    fn apply(&self, type_url: &str, _: &str, resources: Vec<Resource>) -> Result<(), String> {
        let set = resources.into_iter().map(|r| (r.name.clone(), r)).collect();
        self.0
            .lock()
            .map_err(|e| e.to_string())?
            .insert(type_url.to_string(), set);
        Ok(())
    }

    fn accepts_partial(&self) -> bool {
        true
    }

    fn apply_partial(
        &self,
        type_url: &str,
        _: &str,
        changed: Vec<Resource>,
        removed: Vec<String>,
    ) -> Result<(), String> {
        let mut held = self.0.lock().map_err(|e| e.to_string())?;
        let set = held.entry(type_url.to_string()).or_default();
        for name in removed {
            set.remove(&name);
        }
        for r in changed {
            set.insert(r.name.clone(), r);
        }
        Ok(())
    }
}

fn pod(s: usize, p: usize, version: &str) -> String {
    let ns = s % NAMESPACES;
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: svc{s}-{p}, namespace: ns{ns}, labels: {{app: svc{s}, version: {version}}}}}\nspec:\n  containers: [{{name: app, image: app, ports: [{{containerPort: 8080}}]}}]\nstatus: {{podIP: 10.{}.{}.{}}}\n---\n",
        s / 200,
        s % 200,
        p + 1
    )
}

fn virtual_service(s: usize, timeout_s: usize) -> String {
    let ns = s % NAMESPACES;
    format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: svc{s}, namespace: ns{ns}}}\nspec:\n  hosts: [svc{s}]\n  http: [{{timeout: {timeout_s}s, route: [{{destination: {{host: svc{s}, subset: v1}}}}]}}]\n---\n"
    )
}

fn destination_rule(s: usize) -> String {
    let ns = s % NAMESPACES;
    format!(
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: svc{s}, namespace: ns{ns}}}\nspec:\n  host: svc{s}\n  subsets: [{{name: v1, labels: {{version: v1}}}}, {{name: v2, labels: {{version: v2}}}}]\n---\n"
    )
}

/// 200 services with two pods each, some with routes and subsets, and a
/// Sidecar that narrows namespace ns1's proxies to their own namespace.
fn mesh() -> String {
    let mut y = String::new();
    for s in 0..SERVICES {
        let ns = s % NAMESPACES;
        write!(
            y,
            "apiVersion: v1\nkind: Service\nmetadata: {{name: svc{s}, namespace: ns{ns}}}\nspec:\n  selector: {{app: svc{s}}}\n  ports: [{{name: http, port: 8080}}]\n---\n"
        )
        .unwrap();
        for p in 0..PODS_PER_SERVICE {
            y.push_str(&pod(s, p, "v1"));
        }
        if s % 10 == 0 {
            y.push_str(&virtual_service(s, 5));
            y.push_str(&destination_rule(s));
        }
    }
    y.push_str("apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {name: default, namespace: ns1}\nspec:\n  egress: [{hosts: [\"./*\"]}]\n");
    y
}

/// The proxy of service `s`'s pod `p`.
fn node(s: usize, p: usize) -> Node {
    sidecar(&format!("ns{}", s % NAMESPACES), &format!("svc{s}-{p}"))
}

/// What `node` should hold: a fresh compile of the mesh in `dir`'s store.
fn expected(mesh: &model::Mesh, node: &Node) -> Held {
    let snapshot = model::compile(mesh, node).into_snapshot();
    snapshot
        .types
        .iter()
        .map(|(t, set)| {
            let resources = set.decode().expect("decodes");
            (
                t.clone(),
                resources.into_iter().map(|r| (r.name.clone(), r)).collect(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_proxy_converges_to_a_fresh_compile_after_a_burst_of_changes() {
    let dir = config_dir(&mesh());
    let cp = ControlPlane::start(dir.path(), Duration::from_millis(20));
    let nodes: Vec<Node> = (0..PROXIES)
        .map(|i| node(i % SERVICES, i / SERVICES))
        .collect();
    let mirrors: Vec<Mirror> = nodes
        .iter()
        .map(|n| {
            let m = Mirror::default();
            cp.connect(n.clone(), m.clone());
            m
        })
        .collect();
    let has_all = |m: &Mirror| m.0.lock().unwrap().len() == wire::types::ALL.len();
    let deadline = Instant::now() + Duration::from_secs(120);
    while !mirrors.iter().all(has_all) {
        assert!(
            Instant::now() < deadline,
            "not every proxy got all four types"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The burst: no change waits for the one before to be pushed.
    let mut changes = Vec::new();
    for c in 0..20 {
        // New pods of twenty services (endpoints added)...
        changes.push(pod(c * 7 % SERVICES, PODS_PER_SERVICE + c, "v1"));
    }
    for s in [0, 10, 20, 33] {
        // ...pods relabelled into another subset (endpoints of v1 and v2 clusters)...
        changes.push(pod(s, 0, "v2"));
    }
    for (i, s) in [0, 10, 41].into_iter().enumerate() {
        // ...routes changed and added, and a new DestinationRule...
        changes.push(virtual_service(s, 10 + i));
    }
    changes.push(destination_rule(41));
    for c in 20..30 {
        // ...and more endpoints after them.
        changes.push(pod(c * 13 % SERVICES, PODS_PER_SERVICE + c, "v1"));
    }
    let api = format!("http://127.0.0.1:{}", cp.http);
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client");
    for body in &changes {
        let resp = client
            .post(format!("{api}/v1/apply"))
            .header("content-type", "application/yaml")
            .body(body.clone())
            .send()
            .await
            .expect("apply");
        assert!(resp.status().is_success(), "{}", resp.text().await.unwrap());
    }
    // Pods removed (endpoints gone) in the same burst.
    for s in [3, 4] {
        let resp = client
            .post(format!("{api}/v1/delete"))
            .header("content-type", "application/yaml")
            .body(pod(s, 1, "v1"))
            .send()
            .await
            .expect("delete");
        assert!(resp.status().is_success(), "{}", resp.text().await.unwrap());
    }

    let store = control::store::Store::open(dir.path()).expect("store");
    let last = model::Mesh::build(store.resources(), model::MeshConfig::default());
    let wanted: Vec<Held> = nodes.iter().map(|n| expected(&last, n)).collect();
    // The burst changed every proxy's config: converging means it was pushed.
    let initial = model::Mesh::build(
        &api::parse("mesh.yaml", &mesh()).expect("parse"),
        model::MeshConfig::default(),
    );
    for (n, w) in nodes.iter().zip(&wanted) {
        assert!(
            expected(&initial, n) != *w,
            "{}: the burst changed nothing",
            n.id
        );
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let behind: Vec<&str> = mirrors
            .iter()
            .zip(&wanted)
            .zip(&nodes)
            .filter(|((m, w), _)| *m.0.lock().unwrap() != **w)
            .map(|(_, n)| n.id.as_str())
            .collect();
        if behind.is_empty() {
            break;
        }
        if Instant::now() > deadline {
            let i = nodes.iter().position(|n| n.id == behind[0]).unwrap();
            let held = mirrors[i].0.lock().unwrap().clone();
            for (t, set) in &wanted[i] {
                let got = held.get(t).cloned().unwrap_or_default();
                let differ: Vec<&String> = set
                    .keys()
                    .chain(got.keys())
                    .filter(|k| set.get(*k) != got.get(*k))
                    .collect();
                eprintln!("{}: {t}: differs in {differ:?}", behind[0]);
            }
            let status: serde_json::Value = client
                .get(format!("{api}/debug/syncz"))
                .send()
                .await
                .expect("syncz")
                .json()
                .await
                .expect("json");
            let entry = status
                .as_array()
                .and_then(|a| a.iter().find(|p| p["id"] == behind[0]))
                .cloned();
            let want_version = model::compile(&last, &nodes[i])
                .into_snapshot()
                .types
                .get(wire::types::ENDPOINTS)
                .map(|t| t.version.clone());
            eprintln!("status: {entry:?}\nwanted endpoints version: {want_version:?}");
            panic!(
                "{} of {PROXIES} proxies did not converge to a fresh compile, e.g. {}",
                behind.len(),
                behind[0]
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(cp.stop().await, "the control plane stops");
}
