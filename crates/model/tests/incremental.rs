//! Carrying compiled config over to the next mesh: an endpoint change
//! rebuilds only the endpoints of the scopes that see the service, and the
//! result is exactly what compiling from scratch gives.

// Test code: a panic is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use model::incremental::Affected;
mod common;

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
fn unchanged_meshes_affect_nothing_and_config_changes_affect_everything() {
    let yaml = format!("{BASE}{}", pod("s-1", "a", "s", "10.0.0.1"));
    let old = Compiler::new(mesh(&yaml));
    let _ = old.snapshot(&sidecar("a", "s-1"));
    let (_, affected) = old.update(mesh(&yaml));
    assert!(affected.is_nothing(), "{affected:?}");
    let changed = format!(
        "{yaml}---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: s, namespace: a}}\nspec:\n  hosts: [s]\n  http: [{{timeout: 1s, route: [{{destination: {{host: s}}}}]}}]\n"
    );
    let (_, affected) = old.update(mesh(&changed));
    assert!(matches!(affected, Affected::All));
}
