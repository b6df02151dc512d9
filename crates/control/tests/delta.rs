//! Pushing only what changed, to only the proxies it affects, over a real
//! discovery stream: an endpoint change of a service reaches the proxies
//! whose scope sees it as the changed endpoint resources alone, and no other
//! proxy is sent anything.

// Test code: a panic is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{ControlPlane, config_dir, sidecar, wait_for};
use wire::pb::Resource;

const MESH: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: s, namespace: a}
spec:
  selector: {app: s}
  ports: [{name: http, port: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: t, namespace: b}
spec:
  selector: {app: t}
  ports: [{name: http, port: 8080}]
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: a}
spec:
  egress: [{hosts: ["./*"]}]
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: b}
spec:
  egress: [{hosts: ["./*"]}]
"#;

fn pod(name: &str, ns: &str, app: &str, ip: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: {ns}, labels: {{app: {app}}}}}\nspec:\n  containers: [{{name: c, image: app, ports: [{{containerPort: 8080}}]}}]\nstatus: {{podIP: {ip}}}\n"
    )
}

/// One response as the proxy saw it.
#[derive(Clone, Debug)]
struct Got {
    type_url: String,
    partial: bool,
    names: Vec<String>,
    removed: Vec<String>,
}

/// A proxy that takes partial updates and remembers every response.
#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<Got>>>);

impl Recorder {
    fn endpoints(&self) -> Vec<Got> {
        self.0
            .lock()
            .expect("lock")
            .iter()
            .filter(|g| g.type_url == wire::types::ENDPOINTS)
            .cloned()
            .collect()
    }
}

impl wire::client::ConfigHandler for Recorder {
    fn apply(
        &self,
        type_url: &str,
        _version: &str,
        resources: Vec<Resource>,
    ) -> Result<(), String> {
        let names = resources.into_iter().map(|r| r.name).collect();
        self.0.lock().map_err(|e| e.to_string())?.push(Got {
            type_url: type_url.into(),
            partial: false,
            names,
            removed: vec![],
        });
        Ok(())
    }

    fn accepts_partial(&self) -> bool {
        true
    }

    fn apply_partial(
        &self,
        type_url: &str,
        _version: &str,
        changed: Vec<Resource>,
        removed: Vec<String>,
    ) -> Result<(), String> {
        let names = changed.into_iter().map(|r| r.name).collect();
        self.0.lock().map_err(|e| e.to_string())?.push(Got {
            type_url: type_url.into(),
            partial: true,
            names,
            removed,
        });
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_change_reaches_only_the_proxies_that_see_the_service() {
    let initial = format!(
        "{MESH}---\n{}---\n{}",
        pod("s-1", "a", "s", "10.0.0.1"),
        pod("t-1", "b", "t", "10.0.1.1")
    );
    let dir = config_dir(&initial);
    let cp = ControlPlane::start(dir.path(), Duration::from_millis(20));
    let (in_a, in_b) = (Recorder::default(), Recorder::default());
    for (node, rec) in [(sidecar("a", "s-1"), &in_a), (sidecar("b", "t-1"), &in_b)] {
        cp.connect(node, rec.clone());
    }
    for rec in [&in_a, &in_b] {
        wait_for("all four types", || {
            let got = rec.0.lock().expect("lock");
            wire::types::ALL
                .iter()
                .all(|t| got.iter().any(|g| g.type_url == *t))
        })
        .await;
    }
    let first = in_a.endpoints();
    assert_eq!(first.len(), 1);
    assert!(!first[0].partial, "the first response is the whole set");

    let api = format!("http://127.0.0.1:{}", cp.http);
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");
    let apply = |body: String| {
        let client = client.clone();
        let api = api.clone();
        async move {
            let resp = client
                .post(format!("{api}/v1/apply"))
                .header("content-type", "application/yaml")
                .body(body)
                .send()
                .await
                .expect("apply");
            assert!(
                resp.status().is_success(),
                "{}",
                resp.text().await.unwrap_or_default()
            );
        }
    };
    // A second endpoint for s, in namespace a.
    apply(pod("s-2", "a", "s", "10.0.0.2")).await;
    wait_for("a's endpoint update", || in_a.endpoints().len() == 2).await;
    let update = &in_a.endpoints()[1];
    assert!(update.partial, "{update:?}");
    assert_eq!(
        update.names,
        vec!["outbound|8080||s.a.svc.cluster.local"],
        "only the changed resource"
    );
    assert!(update.removed.is_empty());

    // Then one for t, which only b sees. Changes are pushed in order, so once b
    // has this one, it would already have had one for s if it had been sent any.
    apply(pod("t-2", "b", "t", "10.0.1.2")).await;
    wait_for("b's endpoint update", || in_b.endpoints().len() >= 2).await;
    let b = in_b.endpoints();
    assert_eq!(b.len(), 2, "b got nothing for s: {b:?}");
    assert_eq!(b[1].names, vec!["outbound|8080||t.b.svc.cluster.local"]);
    // And a nothing for t: after a further change to s, a has had exactly one more.
    apply(pod("s-3", "a", "s", "10.0.0.3")).await;
    wait_for("a's second update", || in_a.endpoints().len() >= 3).await;
    assert_eq!(
        in_a.endpoints().len(),
        3,
        "a got nothing for t: {:?}",
        in_a.endpoints()
    );
    // Neither proxy was sent clusters, routes or listeners again.
    for rec in [&in_a, &in_b] {
        let got = rec.0.lock().expect("lock");
        for t in [
            wire::types::CLUSTER,
            wire::types::ROUTE_CONFIG,
            wire::types::LISTENER,
        ] {
            assert_eq!(got.iter().filter(|g| g.type_url == t).count(), 1, "{t}");
        }
    }

    assert!(cp.stop().await, "the control plane stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_virtual_service_change_sends_its_virtual_host_to_the_proxies_that_see_it() {
    let initial = format!(
        "{MESH}---\n{}---\n{}",
        pod("s-1", "a", "s", "10.0.0.1"),
        pod("t-1", "b", "t", "10.0.1.1")
    );
    let dir = config_dir(&initial);
    let cp = ControlPlane::start(dir.path(), Duration::from_millis(20));
    let (in_a, in_b) = (Recorder::default(), Recorder::default());
    for (node, rec) in [(sidecar("a", "s-1"), &in_a), (sidecar("b", "t-1"), &in_b)] {
        cp.connect(node, rec.clone());
    }
    let routes = |rec: &Recorder| -> Vec<Got> {
        let got = rec.0.lock().expect("lock");
        got.iter()
            .filter(|g| g.type_url == wire::types::ROUTE_CONFIG)
            .cloned()
            .collect()
    };
    for rec in [&in_a, &in_b] {
        wait_for("all four types", || {
            let got = rec.0.lock().expect("lock");
            wire::types::ALL
                .iter()
                .all(|t| got.iter().any(|g| g.type_url == *t))
        })
        .await;
    }
    // The route config of port 8080, in one piece per virtual host.
    assert_eq!(
        routes(&in_a)[0].names,
        vec!["8080/s.a.svc.cluster.local:8080"]
    );
    let vs = |timeout: &str| {
        format!(
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: s, namespace: a}}\nspec:\n  hosts: [s]\n  http: [{{timeout: {timeout}, route: [{{destination: {{host: s}}}}]}}]\n"
        )
    };
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");
    for timeout in ["1s", "2s"] {
        let resp = client
            .post(format!("http://127.0.0.1:{}/v1/apply", cp.http))
            .header("content-type", "application/yaml")
            .body(vs(timeout))
            .send()
            .await
            .expect("apply");
        assert!(resp.status().is_success());
    }
    wait_for("a's route updates", || routes(&in_a).len() >= 2).await;
    // The two applies may be pushed apart or together: each push is the one piece.
    for update in routes(&in_a).iter().skip(1) {
        assert!(update.partial, "{update:?}");
        assert_eq!(update.names, vec!["8080/s.a.svc.cluster.local:8080"]);
        assert!(update.removed.is_empty());
    }
    // b does not see s: after a change b sees, it has had no route update before it.
    let resp = client
        .post(format!("http://127.0.0.1:{}/v1/apply", cp.http))
        .header("content-type", "application/yaml")
        .body(
            vs("3s")
                .replace("name: s, namespace: a", "name: t, namespace: b")
                .replace("host: s", "host: t")
                .replace("[s]", "[t]"),
        )
        .send()
        .await
        .expect("apply");
    assert!(resp.status().is_success());
    wait_for("b's route update", || routes(&in_b).len() >= 2).await;
    let b = routes(&in_b);
    assert_eq!(b.len(), 2, "b got nothing for s: {b:?}");
    assert_eq!(b[1].names, vec!["8080/t.b.svc.cluster.local:8080"]);
    // Nobody was sent clusters, endpoints or listeners again.
    for rec in [&in_a, &in_b] {
        let got = rec.0.lock().expect("lock");
        for t in [
            wire::types::CLUSTER,
            wire::types::ENDPOINTS,
            wire::types::LISTENER,
        ] {
            assert_eq!(got.iter().filter(|g| g.type_url == t).count(), 1, "{t}");
        }
    }
    assert!(cp.stop().await, "the control plane stops");
}

/// A proxy from before route configs were sent in pieces: it does not join them.
#[derive(Clone, Default)]
struct OldProxy(Recorder);

impl wire::client::ConfigHandler for OldProxy {
    fn apply(&self, type_url: &str, version: &str, resources: Vec<Resource>) -> Result<(), String> {
        self.0.apply(type_url, version, resources)
    }

    fn accepts_partial(&self) -> bool {
        true
    }

    fn apply_partial(
        &self,
        type_url: &str,
        version: &str,
        changed: Vec<Resource>,
        removed: Vec<String>,
    ) -> Result<(), String> {
        self.0.apply_partial(type_url, version, changed, removed)
    }

    fn joins_route_pieces(&self) -> bool {
        false
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_that_does_not_join_route_pieces_is_sent_whole_route_configs() {
    let initial = format!("{MESH}---\n{}", pod("s-1", "a", "s", "10.0.0.1"));
    let dir = config_dir(&initial);
    let cp = ControlPlane::start(dir.path(), Duration::from_millis(20));
    let old = OldProxy::default();
    cp.connect(sidecar("a", "s-1"), old.clone());
    let routes = || -> Vec<Got> {
        let got = old.0.0.lock().expect("lock");
        got.iter()
            .filter(|g| g.type_url == wire::types::ROUTE_CONFIG)
            .cloned()
            .collect()
    };
    wait_for("the route configs", || !routes().is_empty()).await;
    assert_eq!(routes()[0].names, vec!["8080"], "one resource per config");
    let resp = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client")
        .post(format!("http://127.0.0.1:{}/v1/apply", cp.http))
        .header("content-type", "application/yaml")
        .body(
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: s, namespace: a}\nspec:\n  hosts: [s]\n  http: [{timeout: 2s, route: [{destination: {host: s}}]}]\n",
        )
        .send()
        .await
        .expect("apply");
    assert!(resp.status().is_success());
    wait_for("the route update", || routes().len() >= 2).await;
    // The changed config, whole, under the config's own name.
    assert_eq!(routes()[1].names, vec!["8080"], "{:?}", routes());
    assert!(cp.stop().await, "the control plane stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_set_is_sent_in_pieces_and_applied_whole() {
    // Well over one message's worth of clusters and endpoints.
    let mut yaml = String::new();
    for i in 0..400 {
        yaml.push_str(&format!("---\napiVersion: v1\nkind: Service\nmetadata: {{name: s{i}, namespace: a}}\nspec:\n  selector: {{app: s{i}}}\n  ports: [{{name: http, port: 8080}}]\n---\n{}", pod(&format!("s{i}-1"), "a", &format!("s{i}"), &format!("10.0.{}.{}", i / 200, i % 200 + 1))));
    }
    let dir = config_dir(&yaml);
    let cp = ControlPlane::start(dir.path(), Duration::from_millis(20));
    let rec = Recorder::default();
    cp.connect(sidecar("a", "s0-1"), rec.clone());
    wait_for("all four types", || {
        let got = rec.0.lock().expect("lock");
        wire::types::ALL
            .iter()
            .all(|t| got.iter().any(|g| g.type_url == *t))
    })
    .await;
    let got = rec.0.lock().expect("lock").clone();
    let clusters: Vec<&Got> = got
        .iter()
        .filter(|g| g.type_url == wire::types::CLUSTER)
        .collect();
    assert_eq!(clusters.len(), 1, "one application of the whole set");
    assert!(!clusters[0].partial);
    assert_eq!(clusters[0].names.len(), 400);
    let endpoints = rec.endpoints();
    assert_eq!((endpoints.len(), endpoints[0].names.len()), (1, 400));
    let _ = cp.stop().await;
}

/// One response: its type, whether partial, and its resources.
type Response = (String, bool, Vec<Resource>);

/// The responses a proxy was sent.
#[derive(Clone)]
struct Seen {
    compact: bool,
    got: Arc<Mutex<Vec<Response>>>,
}

impl Seen {
    fn new(compact: bool) -> Self {
        Seen {
            compact,
            got: Arc::default(),
        }
    }

    fn responses(&self, type_url: &str) -> Vec<(bool, Vec<Resource>)> {
        let got = self.got.lock().expect("lock");
        got.iter()
            .filter(|(t, _, _)| t == type_url)
            .map(|(_, partial, r)| (*partial, r.clone()))
            .collect()
    }
}

impl wire::client::ConfigHandler for Seen {
    fn apply(&self, type_url: &str, _: &str, resources: Vec<Resource>) -> Result<(), String> {
        let mut got = self.got.lock().expect("lock");
        got.push((type_url.to_string(), false, resources));
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
        _: Vec<String>,
    ) -> Result<(), String> {
        let mut got = self.got.lock().expect("lock");
        got.push((type_url.to_string(), true, changed));
        Ok(())
    }

    fn compact_resources(&self) -> bool {
        self.compact
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_that_does_not_read_the_compact_forms_is_sent_the_whole_ones() {
    use wire::pb::resource::Kind;
    let initial = format!(
        "{MESH}---\n{}---\n{}",
        pod("s-1", "a", "s", "10.0.0.1"),
        pod("s-2", "a", "s", "10.0.0.2")
    );
    let dir = config_dir(&initial);
    let cp = ControlPlane::start(dir.path(), Duration::from_millis(20));
    let (old, new) = (Seen::new(false), Seen::new(true));
    cp.connect(sidecar("a", "s-1"), old.clone());
    cp.connect(sidecar("a", "s-2"), new.clone());
    for p in [&old, &new] {
        wait_for("every type", || {
            wire::types::ALL.iter().all(|t| !p.responses(t).is_empty())
        })
        .await;
    }
    // Both proxies see the same clusters, endpoints and routes (their
    // listeners differ: each has its own inbound ones).
    for t in [
        wire::types::CLUSTER,
        wire::types::ENDPOINTS,
        wire::types::ROUTE_CONFIG,
    ] {
        let (whole, compact) = (&old.responses(t)[0].1, &new.responses(t)[0].1);
        assert!(!whole.is_empty(), "{t}");
        // The same resources, in the other form.
        let made_whole: Vec<Resource> = compact
            .iter()
            .map(|r| wire::whole_form(r.clone()).expect("reads back"))
            .collect();
        assert_eq!(&made_whole, whole, "{t}");
        assert_ne!(compact, whole, "{t}: the compact form differs");
    }
    let s_endpoints = |p: &Seen, n: usize| -> Resource {
        p.responses(wire::types::ENDPOINTS)[n]
            .1
            .iter()
            .find(|r| r.name == "outbound|8080||s.a.svc.cluster.local")
            .cloned()
            .expect("s's endpoints")
    };
    let addresses = |r: &Resource| -> Vec<String> {
        match &r.kind {
            Some(Kind::Endpoints(e)) => {
                assert!(e.compact.is_none(), "{e:?}");
                assert_eq!(e.cluster, r.name);
                e.endpoints.iter().map(|e| e.address.clone()).collect()
            }
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(addresses(&s_endpoints(&old, 0)), ["10.0.0.1", "10.0.0.2"]);
    let resp = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client")
        .post(format!("http://127.0.0.1:{}/v1/apply", cp.http))
        .header("content-type", "application/yaml")
        .body(pod("s-3", "a", "s", "10.0.0.3"))
        .send()
        .await
        .expect("apply");
    assert!(resp.status().is_success());
    for p in [&old, &new] {
        wait_for("the endpoint update", || {
            p.responses(wire::types::ENDPOINTS).len() >= 2
        })
        .await;
        let update = &p.responses(wire::types::ENDPOINTS)[1];
        assert!(update.0, "partial");
        assert_eq!(update.1.len(), 1, "only s's endpoints");
    }
    let whole = s_endpoints(&old, 1);
    assert_eq!(addresses(&whole), ["10.0.0.1", "10.0.0.2", "10.0.0.3"]);
    assert_eq!(wire::whole_form(s_endpoints(&new, 1)), Ok(whole));
    assert!(cp.stop().await, "the control plane stops");
}
