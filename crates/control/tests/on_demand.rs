//! On-demand discovery over a real discovery stream, with the proxy's own
//! client: a proxy that says `on_demand` is sent its directory and inbound
//! config only; asking for a host brings exactly that host's config (and
//! that of the hosts its routes send to), as a fresh compile gives it; a
//! host its Sidecar does not admit is refused with why; a new stream that
//! carries the hosts asked is served the same config at once. Forgetting a
//! host brings the smaller config a fresh compile gives, without the hosts
//! only its routes sent to; a forget of a host never asked changes nothing.

// Test code: a panic is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{ControlPlane, config_dir, sidecar};
use wire::asks::Asks;
use wire::pb::{HostRefusal, Node, Resource};

const MESH: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: s, namespace: a}
spec:
  clusterIP: 10.96.0.1
  selector: {app: s}
  ports: [{name: http, port: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: u, namespace: a}
spec:
  clusterIP: 10.96.0.2
  selector: {app: u}
  ports: [{name: http, port: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: t, namespace: b}
spec:
  clusterIP: 10.96.0.3
  selector: {app: t}
  ports: [{name: http, port: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: x, namespace: c}
spec:
  clusterIP: 10.96.0.4
  selector: {app: x}
  ports: [{name: http, port: 8080}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: u, namespace: a}
spec:
  hosts: [u]
  http: [{route: [{destination: {host: t.b.svc.cluster.local}}]}]
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: a}
spec:
  egress: [{hosts: ["./*", "b/*"]}]
"#;

fn pod(name: &str, ns: &str, app: &str, ip: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: {ns}, labels: {{app: {app}}}}}\nspec:\n  containers: [{{name: c, image: app, ports: [{{containerPort: 8080}}]}}]\nstatus: {{podIP: {ip}}}\n"
    )
}

const U: &str = "u.a.svc.cluster.local";
const T: &str = "t.b.svc.cluster.local";
const S: &str = "s.a.svc.cluster.local";
const X: &str = "x.c.svc.cluster.local";

/// Per type, the resources by name.
type Held = BTreeMap<String, BTreeMap<String, Resource>>;

/// An on-demand proxy as the real client drives it: what it holds, the
/// first cluster set it was sent, the refusals it was told of.
#[derive(Clone, Default)]
struct Proxy {
    held: Arc<Mutex<Held>>,
    first_clusters: Arc<Mutex<Option<BTreeSet<String>>>>,
    refused: Arc<Mutex<Vec<HostRefusal>>>,
    asks: Arc<Asks>,
}

impl Proxy {
    fn names(&self, type_url: &str) -> BTreeSet<String> {
        self.held
            .lock()
            .unwrap()
            .get(type_url)
            .map(|s| s.keys().cloned().collect())
            .unwrap_or_default()
    }

    fn has_all_types(&self) -> bool {
        let held = self.held.lock().unwrap();
        wire::types::SERVED.iter().all(|t| held.contains_key(*t))
    }
}

impl wire::client::ConfigHandler for Proxy {
    fn apply(&self, type_url: &str, _: &str, resources: Vec<Resource>) -> Result<(), String> {
        self.apply_partial(type_url, "", resources, Vec::new())
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
        let mut held = self.held.lock().map_err(|e| e.to_string())?;
        let set = held.entry(type_url.to_string()).or_default();
        for name in removed {
            set.remove(&name);
        }
        for r in changed {
            set.insert(r.name.clone(), r);
        }
        if type_url == wire::types::CLUSTER {
            let mut first = self.first_clusters.lock().map_err(|e| e.to_string())?;
            first.get_or_insert_with(|| set.keys().cloned().collect());
        }
        Ok(())
    }

    fn asks(&self) -> Option<Arc<Asks>> {
        Some(self.asks.clone())
    }

    fn refused(&self, refused: Vec<HostRefusal>) {
        self.refused.lock().unwrap().extend(refused);
    }
}

/// What a fresh compile of `mesh` gives `node` asking for `asked`, per
/// type but the directory (which a compile of one proxy does not make).
fn expected(mesh: &model::Mesh, node: &Node, asked: &[&str]) -> Held {
    let node = Node {
        on_demand: true,
        asked_hosts: asked.iter().map(|h| h.to_string()).collect(),
        ..node.clone()
    };
    model::compile(mesh, &node)
        .into_snapshot()
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

/// Whether `proxy` holds exactly `want` in each of its types.
fn holds(proxy: &Proxy, want: &Held) -> bool {
    let held = proxy.held.lock().unwrap();
    want.iter().all(|(t, set)| held.get(t) == Some(set))
}

/// Waits (bounded) until `f` holds; panics with `what` if it never does.
async fn until(what: &str, f: impl Fn() -> bool) {
    for _ in 0..500 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for {what}");
}

/// A control plane serving `yaml`, and the mesh it builds (for fresh compiles).
fn start(yaml: &str) -> (tempfile::TempDir, model::Mesh, ControlPlane) {
    let dir = config_dir(yaml);
    let store = control::store::Store::open(dir.path()).expect("store");
    let mesh = model::Mesh::build(store.resources(), model::MeshConfig::default());
    drop(store);
    let cp = ControlPlane::start(dir.path(), Duration::from_millis(20));
    (dir, mesh, cp)
}

fn cluster(host: &str) -> String {
    format!("outbound|8080||{host}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_on_demand_proxy_gets_the_hosts_it_asks_for_and_no_other() {
    let yaml = format!(
        "{MESH}---\n{}---\n{}---\n{}---\n{}",
        pod("s-1", "a", "s", "10.0.0.1"),
        pod("u-1", "a", "u", "10.0.0.2"),
        pod("t-1", "b", "t", "10.0.1.1"),
        pod("x-1", "c", "x", "10.0.2.1"),
    );
    let (_dir, mesh, cp) = start(&yaml);
    let node = sidecar("a", "s-1");
    let proxy = Proxy::default();
    cp.connect(node.clone(), proxy.clone());
    until("every type, the directory included", || {
        proxy.has_all_types()
    })
    .await;

    // The directory: every host the Sidecar admits, with its VIPs and ports.
    let directory = proxy.names(wire::types::DIRECTORY);
    assert_eq!(directory, BTreeSet::from([S.into(), T.into(), U.into()]));
    let entry = proxy.held.lock().unwrap()[wire::types::DIRECTORY][U].clone();
    let Some(wire::pb::resource::Kind::DirectoryHost(entry)) = entry.kind else {
        panic!("not a directory entry: {entry:?}");
    };
    assert_eq!(entry.addresses, vec!["10.96.0.2".to_string()]);
    assert_eq!(
        entry.ports.iter().map(|p| p.port).collect::<Vec<_>>(),
        vec![8080]
    );
    // Its own inbound config whole, no outbound host: a fresh compile's.
    until("the config of no host asked", || {
        holds(&proxy, &expected(&mesh, &node, &[]))
    })
    .await;
    assert!(proxy.names(wire::types::CLUSTER).is_empty());
    assert!(proxy.names(wire::types::LISTENER).contains("inbound|8080"));

    // Asking for u brings u and t (u's routes send there), nothing else.
    assert!(proxy.asks.ask(U));
    let with_u = expected(&mesh, &node, &[U]);
    until("u's config", || holds(&proxy, &with_u)).await;
    assert_eq!(
        proxy.names(wire::types::CLUSTER),
        BTreeSet::from([cluster(T), cluster(U)])
    );
    assert!(
        !proxy
            .names(wire::types::ROUTE_CONFIG)
            .iter()
            .any(|r| r.contains(S))
    );

    // A host the Sidecar does not admit, and one that is no host of the
    // mesh, are refused with why; the config stays.
    assert!(proxy.asks.ask(X));
    assert!(proxy.asks.ask("nowhere.example.com"));
    until("two refusals", || proxy.refused.lock().unwrap().len() == 2).await;
    let refused: BTreeMap<String, String> = proxy
        .refused
        .lock()
        .unwrap()
        .iter()
        .map(|r| (r.host.clone(), r.reason.clone()))
        .collect();
    assert!(refused[X].contains("Sidecar a/default"), "{}", refused[X]);
    assert!(
        refused["nowhere.example.com"].contains("no service"),
        "{refused:?}"
    );
    assert_eq!(
        proxy.asks.asked(),
        vec![U.to_string()],
        "refused hosts are forgotten"
    );
    assert!(holds(&proxy, &with_u));

    // A new stream carrying what was asked (trellisd restarted, the stream
    // moved): the first config sent already has u, without asking again.
    let again = Proxy::default();
    again.asks.ask(U);
    cp.connect(node.clone(), again.clone());
    until("the config on the new stream", || holds(&again, &with_u)).await;
    assert_eq!(
        again.first_clusters.lock().unwrap().clone(),
        Some(BTreeSet::from([cluster(T), cluster(U)])),
        "the first clusters sent are those of the hosts asked"
    );
    assert!(cp.stop().await, "the control plane stops");
}

/// s's routes send to t too: t stays while u or s is asked for.
const S_TO_T: &str = r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: s, namespace: a}
spec:
  hosts: [s]
  http: [{route: [{destination: {host: t.b.svc.cluster.local}}]}]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forgotten_host_goes_with_the_hosts_only_its_routes_sent_to() {
    let yaml = format!(
        "{MESH}---\n{S_TO_T}---\n{}---\n{}---\n{}",
        pod("s-1", "a", "s", "10.0.0.1"),
        pod("u-1", "a", "u", "10.0.0.2"),
        pod("t-1", "b", "t", "10.0.1.1"),
    );
    let (_dir, mesh, cp) = start(&yaml);
    let node = sidecar("a", "s-1");
    let proxy = Proxy::default();
    proxy.asks.ask(U);
    proxy.asks.ask(S);
    cp.connect(node.clone(), proxy.clone());
    let with_both = expected(&mesh, &node, &[S, U]);
    until("u's and s's config", || holds(&proxy, &with_both)).await;
    assert_eq!(
        proxy.names(wire::types::CLUSTER),
        BTreeSet::from([cluster(S), cluster(T), cluster(U)])
    );

    // u forgotten: t stays, s's routes still send there.
    proxy.asks.forget_idle(&[U.to_string()]);
    let with_s = expected(&mesh, &node, &[S]);
    until("s's config without u", || holds(&proxy, &with_s)).await;
    assert_eq!(
        proxy.names(wire::types::CLUSTER),
        BTreeSet::from([cluster(S), cluster(T)])
    );
    assert!(
        !proxy
            .names(wire::types::ROUTE_CONFIG)
            .iter()
            .any(|r| r.contains(U)),
        "no route piece of u is left"
    );

    // s forgotten too: t, which only their routes brought, goes with it.
    proxy.asks.forget_idle(&[S.to_string()]);
    let with_none = expected(&mesh, &node, &[]);
    until("the config of no host asked", || holds(&proxy, &with_none)).await;
    assert!(proxy.names(wire::types::CLUSTER).is_empty());
    assert!(
        proxy.refused.lock().unwrap().is_empty(),
        "a forget is not answered"
    );

    // Called again, u is asked for again and its config comes back.
    assert!(proxy.asks.ask(U));
    let with_u = expected(&mesh, &node, &[U]);
    until("u's config again", || holds(&proxy, &with_u)).await;

    // A new stream's node no longer carries what was forgotten.
    proxy.asks.forget_idle(&[U.to_string()]);
    let again = Proxy::default();
    again.asks.ask(S);
    again.asks.forget_idle(&[S.to_string()]);
    cp.connect(node.clone(), again.clone());
    until("the new stream's config", || holds(&again, &with_none)).await;
    assert_eq!(
        again.first_clusters.lock().unwrap().clone(),
        Some(BTreeSet::new())
    );
    assert!(cp.stop().await, "the control plane stops");
}

/// Sends `req` on a raw stream.
async fn send(
    tx: &tokio::sync::mpsc::Sender<wire::pb::DiscoveryRequest>,
    req: wire::pb::DiscoveryRequest,
) {
    tx.send(req).await.expect("stream open");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forget_of_a_host_never_asked_changes_nothing_and_a_name_no_host_is_refused() {
    use tokio_stream::StreamExt;
    use wire::pb::DiscoveryRequest;

    let yaml = format!("{MESH}---\n{}", pod("s-1", "a", "s", "10.0.0.1"));
    let dir = config_dir(&yaml);
    let cp = ControlPlane::start(dir.path(), Duration::from_millis(20));
    let address = wire::address::XdsAddress::parse(&format!("http://127.0.0.1:{}", cp.xds), None)
        .expect("address");
    // The control plane is listening once a connection is taken.
    let mut channel = None;
    for _ in 0..500 {
        match address.connect().await {
            Ok(c) => {
                channel = Some(c);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    let mut client = wire::pb::aggregated_discovery_client::AggregatedDiscoveryClient::new(
        channel.expect("the control plane listens"),
    );
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    let node = Node {
        on_demand: true,
        ..sidecar("a", "s-1")
    };
    send(
        &tx,
        DiscoveryRequest {
            node: Some(node),
            type_url: wire::types::CLUSTER.into(),
            ..Default::default()
        },
    )
    .await;
    let mut responses = client
        .stream(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .expect("stream")
        .into_inner();
    let mut next = async || {
        tokio::time::timeout(Duration::from_secs(10), responses.next())
            .await
            .expect("a response in time")
            .expect("stream open")
            .expect("no error")
    };
    let first = next().await;
    assert!(first.resources.is_empty(), "no host asked: no cluster");
    let ack = |r: &wire::pb::DiscoveryResponse| DiscoveryRequest {
        type_url: r.type_url.clone(),
        version_info: r.version_info.clone(),
        response_nonce: r.nonce.clone(),
        ..Default::default()
    };
    send(&tx, ack(&first)).await;

    // u was never asked for: forgetting it changes nothing. "a b" is no
    // host: refused, with why. Only the refusal is answered.
    send(
        &tx,
        DiscoveryRequest {
            forget_hosts: vec![U.into(), "a b".into()],
            ..Default::default()
        },
    )
    .await;
    let answer = next().await;
    assert_eq!(answer.refused.len(), 1, "{:?}", answer.refused);
    assert_eq!(answer.refused[0].host, "a b");
    assert_eq!(answer.refused[0].reason, "not a host name");
    assert!(answer.type_url.is_empty() && answer.resources.is_empty());

    // The stream goes on: an ask in the same message as a forget of a host
    // not asked brings the host's config.
    send(
        &tx,
        DiscoveryRequest {
            forget_hosts: vec![S.into()],
            ask_hosts: vec![U.into()],
            ..Default::default()
        },
    )
    .await;
    let clusters = next().await;
    assert_eq!(clusters.type_url, wire::types::CLUSTER);
    let names: BTreeSet<String> = clusters.resources.iter().map(|r| r.name.clone()).collect();
    assert_eq!(names, BTreeSet::from([cluster(T), cluster(U)]));
    drop(tx);
    assert!(cp.stop().await, "the control plane stops");
}
