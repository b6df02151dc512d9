//! Carrying compiled config over to the next mesh: an endpoint change
//! rebuilds only the endpoints of the scopes that see the service, and the
//! result is exactly what compiling from scratch gives.

// Test code: a panic is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use model::incremental::{Affected, Touched};
#[path = "../common/mod.rs"]
mod common;
mod registry_patch;

use common::sidecar;
use model::{Compiler, Mesh};

const BASE: &str = r#"
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
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: s, namespace: a}
spec:
  host: s
  subsets: [{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}]
"#;

fn pod(name: &str, ns: &str, app: &str, ip: &str) -> String {
    format!(
        "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: {ns}, labels: {{app: {app}, version: v1}}}}\nspec:\n  containers: [{{name: c, ports: [{{containerPort: 8080}}]}}]\nstatus: {{podIP: {ip}}}\n"
    )
}

fn mesh(yaml: &str) -> Arc<Mesh> {
    Arc::new(common::mesh(yaml))
}

#[test]
fn an_endpoint_change_affects_only_the_scopes_that_see_the_service() {
    let before = format!(
        "{BASE}{}{}{}",
        pod("s-1", "a", "s", "10.0.0.1"),
        pod("a-client", "a", "x", "10.0.0.9"),
        pod("t-1", "b", "t", "10.0.1.1")
    );
    let after = format!("{before}{}", pod("s-2", "a", "s", "10.0.0.2"));
    let nodes = [
        sidecar("a", "a-client"),
        sidecar("a", "s-1"),
        sidecar("b", "t-1"),
    ];
    let old = Compiler::new(mesh(&before));
    let old_snaps: Vec<_> = nodes.iter().map(|n| old.snapshot(n)).collect();

    let (new, affected) = old.update(mesh(&after));
    assert!(
        matches!(affected, Affected::Endpoints { .. }),
        "{affected:?}"
    );
    let Affected::Endpoints { hosts, .. } = &affected else {
        unreachable!()
    };
    assert_eq!(
        hosts.iter().collect::<Vec<_>>(),
        vec!["s.a.svc.cluster.local"]
    );
    let fresh = Compiler::new(mesh(&after));
    for (n, old_snap) in nodes.iter().zip(&old_snaps) {
        let updated = new.snapshot(n);
        assert!(
            updated.same_versions(&fresh.snapshot(n)),
            "{}: carried-over config equals a fresh compile",
            n.id
        );
        let sees_s = n.namespace == "a";
        assert_eq!(affected.proxy(&new, n), sees_s, "{}", n.id);
        let endpoints = wire::types::ENDPOINTS;
        assert_eq!(
            updated.types[endpoints].version != old_snap.types[endpoints].version,
            sees_s,
            "{}",
            n.id
        );
        // Clusters and routes are the very same objects, not rebuilt copies.
        for t in [wire::types::CLUSTER, wire::types::ROUTE_CONFIG] {
            assert!(
                Arc::ptr_eq(&updated.types[t], &old_snap.types[t]),
                "{} {t}",
                n.id
            );
        }
    }
    // Only the endpoints of s changed: the default cluster and subset v1 (the new pod is v1).
    let a_new = new.snapshot(&nodes[0]);
    let changed: Vec<&str> = {
        let a_old = &old_snaps[0];
        a_new.types[wire::types::ENDPOINTS]
            .resources
            .iter()
            .zip(&a_old.types[wire::types::ENDPOINTS].resources)
            .filter(|(n, o)| n.version != o.version)
            .map(|(n, _)| n.name.as_str())
            .collect()
    };
    assert_eq!(
        changed,
        vec![
            "outbound|8080||s.a.svc.cluster.local",
            "outbound|8080|v1|s.a.svc.cluster.local"
        ]
    );

    // The new pod's own proxy is affected (its listeners are new), whatever its scope.
    assert!(affected.proxy(&new, &sidecar("a", "s-2")));
}

#[test]
fn unchanged_meshes_affect_nothing_and_other_config_changes_affect_everything() {
    let yaml = format!("{BASE}{}", pod("s-1", "a", "s", "10.0.0.1"));
    let old = Compiler::new(mesh(&yaml));
    let _ = old.snapshot(&sidecar("a", "s-1"));
    let (_, affected) = old.update(mesh(&yaml));
    assert!(affected.is_nothing(), "{affected:?}");
    let changed = format!(
        "{yaml}---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: s, namespace: a}}\nspec:\n  hosts: [s]\n  http: [{{timeout: 1s, route: [{{destination: {{host: s}}}}]}}]\n"
    );
    let (_, affected) = old.update(mesh(&changed));
    assert!(
        matches!(&affected, Affected::Routes { hosts, .. } if hosts.len() == 1 && hosts.contains("s.a.svc.cluster.local")),
        "a VirtualService changes the routes of the services it covers: {affected:?}"
    );
    let changed = format!(
        "{yaml}---\napiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {{name: default, namespace: a}}\nspec: {{mtls: {{mode: STRICT}}}}\n"
    );
    let (_, affected) = old.update(mesh(&changed));
    assert!(matches!(affected, Affected::All), "{affected:?}");
}

/// An object named by kind, namespace and name.
type Named<'a> = (api::Kind, &'a str, &'a str);

/// The objects of a mesh by kind, namespace and name, changed one step at a time.
struct Objects(std::collections::BTreeMap<(api::Kind, String, String), api::Resource>);

impl Objects {
    fn key(r: &api::Resource) -> (api::Kind, String, String) {
        (
            r.kind(),
            r.namespace().unwrap_or("default").to_string(),
            r.name().to_string(),
        )
    }

    fn new(yaml: &str) -> Objects {
        let parsed = api::parse("mesh.yaml", yaml).expect("fixture parses");
        Objects(parsed.into_iter().map(|r| (Self::key(&r), r)).collect())
    }

    /// Applies `yaml` and deletes `deleted` (kind, namespace, name): what
    /// the change touched.
    fn change(&mut self, yaml: &str, deleted: &[Named]) -> Touched {
        let mut touched = Touched::default();
        for r in api::parse("change.yaml", yaml).expect("change parses") {
            let key = Self::key(&r);
            touched.insert(key.0, &key.1, &key.2);
            self.0.insert(key, r);
        }
        for (kind, ns, name) in deleted {
            touched.insert(*kind, ns, name);
            self.0
                .remove(&(*kind, ns.to_string(), name.to_string()))
                .expect("deleted object exists");
        }
        touched
    }
}

/// A mesh where a bug in looking only at the touched objects could hide: a
/// Service in one namespace whose EndpointSlice lends the labels of a pod
/// in another, a ServiceEntry selecting a WorkloadEntry, one with inline
/// endpoints, subsets, a Sidecar per namespace.
const TOUCHED_BASE: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: s, namespace: a}
spec:
  selector: {app: s}
  ports: [{name: http, port: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: sliced, namespace: a}
spec:
  ports: [{name: http, port: 8080}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: sliced-1, namespace: a, labels: {kubernetes.io/service-name: sliced}}
addressType: IPv4
ports: [{name: http, port: 8080}]
endpoints:
- addresses: [10.0.2.1]
  targetRef: {kind: Pod, name: c-1, namespace: c}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: sliced, namespace: a}
spec:
  host: sliced
  subsets: [{name: v2, labels: {version: v2}}]
---
apiVersion: v1
kind: Service
metadata: {name: t, namespace: b}
spec:
  selector: {app: t}
  ports: [{name: http, port: 8080}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: vm, namespace: b}
spec:
  hosts: [vm.b.internal]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 80, name: http, protocol: HTTP}]
  workloadSelector: {labels: {app: vm}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: vm-1, namespace: b}
spec: {address: 10.0.3.1, labels: {app: vm}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ext, namespace: c}
spec:
  hosts: [ext.c.internal]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 80, name: http, protocol: HTTP}]
  endpoints: [{address: 10.0.4.1}]
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: b}
spec:
  egress: [{hosts: ["./*"]}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: s, namespace: a}
spec:
  host: s
  subsets: [{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}]
"#;

/// A VirtualService of the sidecars for s in a, routing to `subset`.
fn vs_s(subset: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: s, namespace: a}}\nspec:\n  hosts: [s]\n  http: [{{route: [{{destination: {{host: s, subset: {subset}}}}}]}}]\n"
    )
}

/// Every change, told by the objects it touched, reaches every proxy whose
/// config it changes, and what each proxy then holds is exactly a fresh
/// compile of the changed mesh. An endpoint change reaches the same
/// proxies as comparing the whole meshes finds.
#[test]
fn a_change_told_by_its_objects_reaches_exactly_the_proxies_it_changes() {
    let pods = format!(
        "{}{}{}{}",
        pod("s-1", "a", "s", "10.0.0.1"),
        pod("a-client", "a", "x", "10.0.0.9"),
        pod("t-1", "b", "t", "10.0.1.1"),
        pod("c-1", "c", "c", "10.0.2.1"),
    );
    let mut objects = Objects::new(&format!("{TOUCHED_BASE}{pods}"));
    let nodes = [
        sidecar("a", "a-client"),
        sidecar("a", "s-1"),
        sidecar("a", "s-2"),
        sidecar("b", "t-1"),
        sidecar("c", "c-1"),
    ];
    let policy = "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: deny, namespace: b}\nspec:\n  action: DENY\n  rules: [{from: [{source: {namespaces: [a]}}]}]\n";
    let steps: Vec<(&str, String, Vec<Named>)> = vec![
        ("a pod joins s", pod("s-2", "a", "s", "10.0.0.2"), vec![]),
        (
            "a pod of s moves to subset v2",
            pod("s-1", "a", "s", "10.0.0.1").replace("version: v1", "version: v2"),
            vec![],
        ),
        (
            "a pod in c lends new labels to a slice of a service in a",
            pod("c-1", "c", "c", "10.0.2.1").replace("version: v1", "version: v2"),
            vec![],
        ),
        (
            "a WorkloadEntry selected by a ServiceEntry moves",
            "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {name: vm-1, namespace: b}\nspec: {address: 10.0.3.2, labels: {app: vm}}\n".into(),
            vec![],
        ),
        (
            "a ServiceEntry's inline endpoint changes",
            TOUCHED_BASE
                .split("---")
                .find(|d| d.contains("name: ext"))
                .unwrap()
                .replace("10.0.4.1", "10.0.4.2"),
            vec![],
        ),
        (
            "a DestinationRule's subsets change",
            "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: s, namespace: a}\nspec:\n  host: s\n  subsets: [{name: v1, labels: {version: v1}}]\n".into(),
            vec![],
        ),
        (
            "a Sidecar widens namespace b's egress",
            "apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {name: default, namespace: b}\nspec:\n  egress: [{hosts: [\"./*\", \"a/*\"]}]\n".into(),
            vec![],
        ),
        ("an AuthorizationPolicy in b", policy.into(), vec![]),
        (
            "a ServiceEntry with two hosts joins",
            "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: two, namespace: c}\nspec:\n  hosts: [one.c.internal, two.c.internal]\n  location: MESH_INTERNAL\n  resolution: STATIC\n  ports: [{number: 80, name: http, protocol: HTTP}]\n  endpoints: [{address: 10.0.5.1, serviceAccount: vm}, {address: 10.0.5.2}]\n".into(),
            vec![],
        ),
        (
            "the ServiceEntry drops a host and an endpoint, and resolves by DNS",
            "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: two, namespace: c}\nspec:\n  hosts: [two.c.internal]\n  location: MESH_INTERNAL\n  resolution: DNS\n  ports: [{number: 80, name: http, protocol: HTTP}]\n".into(),
            vec![],
        ),
        (
            "a ServiceEntry claims the host of a Service (which keeps it)",
            "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: shadow, namespace: a}\nspec:\n  hosts: [s.a.svc.cluster.local, shadow.a.internal]\n  location: MESH_INTERNAL\n  resolution: STATIC\n  ports: [{number: 8080, name: http, protocol: HTTP}]\n  endpoints: [{address: 10.0.6.1}]\n".into(),
            vec![],
        ),
        (
            "the shadowing ServiceEntry leaves",
            String::new(),
            vec![(api::Kind::ServiceEntry, "a", "shadow")],
        ),
        (
            "a ServiceEntry is deleted",
            String::new(),
            vec![(api::Kind::ServiceEntry, "c", "two")],
        ),
        ("a VirtualService routes s to v1", vs_s("v1"), vec![]),
        ("the VirtualService moves s to v2", vs_s("v2"), vec![]),
        (
            "a VirtualService for the ServiceEntry in c, by a wildcard host",
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: ext, namespace: c}\nspec:\n  hosts: [\"*.c.internal\"]\n  http: [{timeout: 3s, route: [{destination: {host: ext.c.internal}}]}]\n".into(),
            vec![],
        ),
        (
            "the VirtualService of s is deleted",
            String::new(),
            vec![(api::Kind::VirtualService, "a", "s")],
        ),
        (
            "a pod leaves",
            String::new(),
            vec![(api::Kind::Pod, "a", "s-2")],
        ),
    ];

    let build = |o: &Objects| Arc::new(Mesh::build(o.0.values(), Default::default()));
    let routes = wire::types::ROUTE_CONFIG;
    let mut compiler = Compiler::new(build(&objects));
    let mut held: Vec<_> = nodes.iter().map(|n| compiler.snapshot(n)).collect();
    for (what, yaml, deleted) in steps {
        let before = compiler.mesh().clone();
        let touched = objects.change(&yaml, &deleted);
        let mesh = Arc::new(before.rebuild(objects.0.values(), Default::default(), &touched));
        let (next, affected) = compiler.update_touched(mesh, &touched);
        let fresh = Compiler::new(build(&objects));
        let (_, compared) = compiler.update(build(&objects));
        let routes_only = touched.only(api::Kind::VirtualService);
        if routes_only {
            assert!(
                matches!(affected, Affected::Routes { .. }),
                "{what}: {affected:?}"
            );
            assert!(
                matches!(compared, Affected::Routes { .. }),
                "{what}: {compared:?}"
            );
        }
        for (n, snap) in nodes.iter().zip(held.iter_mut()) {
            let expected = fresh.snapshot(n);
            let reached = affected.proxy(&next, n);
            if routes_only {
                // Exactly the proxies whose config changes, and to them the
                // changed virtual hosts only: one service, one port.
                assert_eq!(
                    reached,
                    !snap.same_versions(&expected),
                    "{what}: {} is reached if and only if its config changes",
                    n.id
                );
                let pieces = |s: &wire::snapshot::ProxySnapshot| {
                    s.types[routes]
                        .resources
                        .iter()
                        .map(|r| (r.name.clone(), r.version.clone()))
                        .collect::<std::collections::BTreeSet<_>>()
                };
                let changed = pieces(&expected).difference(&pieces(snap)).count();
                assert!(changed <= 1, "{what}: {}: {changed} pieces changed", n.id);
            }
            assert!(
                reached || snap.same_versions(&expected),
                "{what}: {} holds a stale config but was not reached",
                n.id
            );
            if matches!(compared, Affected::Endpoints { .. }) {
                assert_eq!(reached, compared.proxy(&next, n), "{what}: {}", n.id);
            }
            if reached {
                *snap = affected.snapshot(&next, n, snap);
            }
            assert!(
                snap.same_versions(&expected),
                "{what}: {} holds a fresh compile",
                n.id
            );
        }
        compiler = next;
    }
}
