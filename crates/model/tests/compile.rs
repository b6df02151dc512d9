//! The compiler against small meshes written in YAML, as users write them.

// Test code: a panic is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{cluster_names, sidecar, virtual_host};
use model::{Compiler, Mesh, MeshConfig, compile};
use wire::pb;

const MESH: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: default}
spec:
  selector: {app: reviews}
  ports: [{name: http, port: 9080}]
---
apiVersion: v1
kind: Service
metadata: {name: ratings, namespace: default}
spec:
  selector: {app: ratings}
  ports: [{name: http, port: 9080}]
---
apiVersion: v1
kind: Service
metadata:
  name: secret
  namespace: other
  annotations: {networking.istio.io/exportTo: "."}
spec:
  selector: {app: secret}
  ports: [{name: http-api, port: 8080}]
---
apiVersion: v1
kind: Pod
metadata: {name: reviews-v1-abc, namespace: default, labels: {app: reviews, version: v1}, annotations: {sidecar.istio.io/status: "{}"}}
spec:
  serviceAccountName: bookinfo-reviews
  containers: [{name: reviews, ports: [{containerPort: 9080}]}]
status: {podIP: 127.1.1.1}
---
apiVersion: v1
kind: Pod
metadata: {name: reviews-v2-abc, namespace: default, labels: {app: reviews, version: v2}}
spec:
  containers: [{name: reviews, ports: [{containerPort: 9080}]}]
status: {podIP: 127.1.1.2}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: default}
spec:
  host: reviews
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  http:
  - match: [{headers: {end-user: {exact: jason}}}]
    route: [{destination: {host: reviews, subset: v2}}]
  - route:
    - {destination: {host: reviews, subset: v1}, weight: 80}
    - {destination: {host: reviews, subset: v2}, weight: 20}
"#;

fn mesh(extra: &str) -> Mesh {
    let mut resources = api::parse("mesh.yaml", MESH).expect("fixture parses");
    if !extra.is_empty() {
        resources.extend(api::parse("extra.yaml", extra).expect("extra parses"));
    }
    Mesh::build(&resources, MeshConfig::default())
}

#[test]
fn subsets_become_clusters_with_their_endpoints() {
    let config = compile(&mesh(""), &sidecar("default", "reviews-v1-abc"));
    let names = cluster_names(&config);
    assert!(names.contains(&"outbound|9080||reviews.default.svc.cluster.local"));
    assert!(names.contains(&"outbound|9080|v1|reviews.default.svc.cluster.local"));
    let v2 = config
        .endpoints
        .iter()
        .find(|e| e.cluster == "outbound|9080|v2|reviews.default.svc.cluster.local")
        .expect("v2");
    assert_eq!(v2.endpoints.len(), 1);
    assert_eq!(v2.endpoints[0].address, "127.1.1.2");
    assert!(!v2.endpoints[0].has_sidecar);
    let v1 = config
        .endpoints
        .iter()
        .find(|e| e.cluster == "outbound|9080|v1|reviews.default.svc.cluster.local")
        .expect("v1");
    assert_eq!(
        v1.endpoints[0].identity,
        "spiffe://cluster.local/ns/default/sa/bookinfo-reviews"
    );
    assert!(
        config.dangling_clusters().is_empty(),
        "{:?}",
        config.dangling_clusters()
    );
}

#[test]
fn virtual_service_routes_in_order_with_weights() {
    let config = compile(&mesh(""), &sidecar("default", "x"));
    let vh = virtual_host(&config, "9080", "reviews.default.svc.cluster.local:9080");
    assert!(
        vh.domains.contains(&"reviews".to_string())
            && vh.domains.contains(&"reviews:9080".to_string())
    );
    assert_eq!(vh.routes.len(), 2);
    assert_eq!(
        vh.routes[0].matches[0].headers["end-user"].kind,
        Some(pb::string_match::Kind::Exact("jason".into()))
    );
    let Some(pb::route::Action::Forward(split)) = &vh.routes[1].action else {
        panic!("forward")
    };
    let weights: Vec<u32> = split.clusters.iter().map(|c| c.weight).collect();
    assert_eq!(weights, vec![80, 20]);
    // Istio's default retry policy applies when the route sets none.
    assert_eq!(split.retry.as_ref().map(|r| r.attempts), Some(2));
}

#[test]
fn export_to_dot_hides_a_service_from_other_namespaces() {
    let m = mesh("");
    let from_default = compile(&m, &sidecar("default", "x"));
    assert!(
        !cluster_names(&from_default)
            .iter()
            .any(|c| c.contains("secret.other"))
    );
    let from_other = compile(&m, &sidecar("other", "x"));
    assert!(
        cluster_names(&from_other)
            .iter()
            .any(|c| c.contains("secret.other"))
    );
}

#[test]
fn sidecar_egress_hosts_limit_what_a_proxy_receives() {
    let m = mesh(
        "apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {name: default, namespace: default}\nspec:\n  egress:\n  - hosts: [\"./ratings.default.svc.cluster.local\", \"istio-system/*\"]\n",
    );
    let config = compile(&m, &sidecar("default", "x"));
    let names = cluster_names(&config);
    assert!(
        names
            .iter()
            .any(|c| c.ends_with("|ratings.default.svc.cluster.local")),
        "{names:?}"
    );
    assert!(
        !names
            .iter()
            .any(|c| c.ends_with("|reviews.default.svc.cluster.local")),
        "{names:?}"
    );
}

#[test]
fn the_compiler_shares_scope_config_and_matches_compile() {
    let m = mesh("");
    let m = std::sync::Arc::new(m);
    let compiler = Compiler::new(m.clone());
    let a = compiler.snapshot(&sidecar("default", "reviews-v1-abc"));
    let b = compiler.snapshot(&sidecar("default", "other"));
    let direct = compile(&m, &sidecar("default", "reviews-v1-abc")).into_snapshot();
    assert!(
        a.same_versions(&direct),
        "cached and direct compilation agree"
    );
    let clusters = wire::types::CLUSTER;
    assert!(
        std::sync::Arc::ptr_eq(&a.types[clusters], &b.types[clusters]),
        "one copy for the namespace"
    );
    assert_ne!(
        a.types[wire::types::LISTENER].version,
        b.types[wire::types::LISTENER].version,
        "listeners are per pod"
    );
    // The same input always gives the same versions: nothing is pushed twice.
    let again = Compiler::new(m.clone()).snapshot(&sidecar("default", "reviews-v1-abc"));
    assert!(a.same_versions(&again));
}

/// An endpoint resource is the same bytes for every scope that sees its
/// service: two namespaces' proxies hold one copy of each, and what each
/// is sent is exactly what compiling it alone gives.
#[test]
fn scopes_share_one_copy_of_a_services_endpoints() {
    let m = std::sync::Arc::new(mesh(""));
    let compiler = Compiler::new(m.clone());
    let (here, there) = (sidecar("default", "a"), sidecar("other", "b"));
    let a = compiler.snapshot(&here);
    let b = compiler.snapshot(&there);
    assert!(!std::sync::Arc::ptr_eq(
        &a.types[wire::types::ENDPOINTS],
        &b.types[wire::types::ENDPOINTS]
    ));
    let named = |s: &wire::snapshot::ProxySnapshot| {
        s.types[wire::types::ENDPOINTS]
            .resources
            .iter()
            .find(|r| r.name == "outbound|9080||reviews.default.svc.cluster.local")
            .cloned()
            .expect("reviews' endpoints")
    };
    assert!(std::sync::Arc::ptr_eq(&named(&a), &named(&b)));
    for (node, got) in [(&here, &a), (&there, &b)] {
        let direct = compile(&m, node).into_snapshot();
        for (t, snapshot) in &direct.types {
            assert_eq!(got.types[t].decode(), snapshot.decode(), "{t}");
            assert_eq!(got.types[t].version, snapshot.version, "{t}");
        }
    }
}

/// A pod's workload in the registry holds the slim pod's label map, not a
/// copy: 10,000 pods kept one map each in the store and another in the
/// registry (a B-tree node of ~540 bytes however few labels).
#[test]
fn a_pods_workload_holds_the_pods_labels() {
    let resources: Vec<_> = api::parse("mesh.yaml", MESH)
        .unwrap()
        .into_iter()
        .map(api::Resource::slim)
        .collect();
    let m = Mesh::build(&resources, MeshConfig::default());
    let pod = resources
        .iter()
        .find_map(|r| match r {
            api::Resource::SlimPod(p) if p.name == "reviews-v1-abc" => Some(p),
            _ => None,
        })
        .unwrap();
    let w = m.registry.workload("reviews-v1-abc", "default").unwrap();
    assert!(std::sync::Arc::ptr_eq(&w.labels, &pod.labels));
    assert_eq!(w.labels.get("version").map(String::as_str), Some("v1"));
}

/// The policy for destinations the mesh does not know travels on the
/// sidecar's "virtualOutbound" listener: the mesh's, unless the workload's
/// Sidecar says otherwise (and a Sidecar without egress still sees every host).
#[test]
fn outbound_traffic_policy_reaches_the_virtual_outbound_listener() {
    let registry_only = |m: &Mesh, ns: &str| {
        let config = compile(m, &sidecar(ns, "x"));
        let l = config
            .listeners
            .iter()
            .find(|l| l.name == "virtualOutbound")
            .expect("virtualOutbound");
        assert_eq!(
            (l.port, l.direction),
            (15001, pb::Direction::Outbound as i32)
        );
        l.registry_only
    };
    assert!(
        !registry_only(&mesh(""), "default"),
        "ALLOW_ANY is Istio's default"
    );
    let m = mesh(
        "apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {name: default, namespace: default}\nspec:\n  outboundTrafficPolicy: {mode: REGISTRY_ONLY}\n",
    );
    assert!(registry_only(&m, "default"));
    assert!(
        !registry_only(&m, "other"),
        "another namespace's Sidecar does not apply"
    );
    let names = cluster_names(&compile(&m, &sidecar("default", "x")))
        .into_iter()
        .map(str::to_string)
        .collect::<Vec<_>>();
    assert!(
        names
            .iter()
            .any(|c| c.ends_with("|reviews.default.svc.cluster.local")),
        "{names:?}"
    );
    let mut config = MeshConfig::default();
    config.outbound_traffic_policy.mode = "REGISTRY_ONLY".into();
    let resources = api::parse("mesh.yaml", MESH).expect("fixture parses");
    assert!(registry_only(&Mesh::build(&resources, config), "default"));
}

/// A ServiceEntry's single addresses are the cluster's VIPs (CIDRs are not).
#[test]
fn service_entry_addresses_become_cluster_vips() {
    let m = mesh(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: db, namespace: default}\nspec:\n  hosts: [db.example.com]\n  addresses: [192.0.2.7, 198.51.100.0/24]\n  ports: [{number: 5432, name: tcp, protocol: TCP}]\n  resolution: STATIC\n  endpoints: [{address: 192.0.2.70}]\n",
    );
    let config = compile(&m, &sidecar("default", "x"));
    let db = config
        .clusters
        .iter()
        .find(|c| c.service == "db.example.com")
        .expect("db cluster");
    assert_eq!(db.addresses, ["192.0.2.7"]);
}

/// Captured inbound connections to ports no listener serves are passed
/// through under the workload's PeerAuthentication: its mode on the
/// sidecar's "virtualInbound" listener, with portLevelMtls entries for such
/// ports (entries for ports that have a listener stay on that listener).
#[test]
fn passthrough_mtls_reaches_the_virtual_inbound_listener() {
    let virtual_inbound = |m: &Mesh| {
        compile(m, &sidecar("default", "reviews-v1-abc"))
            .listeners
            .into_iter()
            .find(|l| l.name == "virtualInbound")
            .expect("virtualInbound")
    };
    let l = virtual_inbound(&mesh(""));
    assert_eq!(
        (l.port, l.direction, l.mtls_mode),
        (
            15006,
            pb::Direction::Inbound as i32,
            pb::MtlsMode::Permissive as i32
        ),
        "PERMISSIVE is Istio's default"
    );
    let m = mesh(
        "apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: istio-system}
spec: {mtls: {mode: STRICT}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: reviews, namespace: default}
spec:
  selector: {matchLabels: {app: reviews}}
  portLevelMtls:
    7000: {mode: PERMISSIVE}
    7001: {mode: STRICT}
    9080: {mode: DISABLE}
",
    );
    let l = virtual_inbound(&m);
    assert_eq!(
        l.mtls_mode,
        pb::MtlsMode::Strict as i32,
        "the mesh's STRICT"
    );
    assert_eq!(
        l.port_mtls_modes,
        [(7000, pb::MtlsMode::Permissive as i32)].into(),
        "only entries that differ, and none for a port with a listener"
    );
    let no_workload = compile(&m, &sidecar("default", "nobody"));
    assert!(
        no_workload
            .listeners
            .iter()
            .all(|l| l.name != "virtualInbound"),
        "a proxy the registry does not know gets none (the proxy's default: PERMISSIVE)"
    );
}

/// A VirtualService `tcp` route travels on the service's own cluster of the
/// TCP port it matches, its destinations weighted; a match on the source's
/// labels or subnet applies to the proxies it names only, as Istio filters
/// them per proxy, and proxies alike share the compiled config.
#[test]
fn tcp_routes_reach_the_service_cluster() {
    let m = mesh(
        "apiVersion: v1
kind: Service
metadata: {name: db, namespace: default}
spec:
  selector: {app: db}
  ports: [{name: tcp, port: 5432}, {name: tcp-admin, port: 5433}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: db, namespace: default}
spec:
  hosts: [db]
  tcp:
  - match: [{port: 5432, sourceLabels: {app: x}}]
    route: [{destination: {host: reviews}}]
  - match: [{port: 5432, sourceSubnet: 10.9.0.0/16}]
    route: [{destination: {host: ratings}}]
  - match: [{port: 5432}]
    route:
    - {destination: {host: db, subset: v1}, weight: 80}
    - {destination: {host: db, port: {number: 5433}}, weight: 20}
",
    );
    let node = |labels: &[(&str, &str)], ip: &str| {
        let mut n = sidecar("default", "x");
        n.labels = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        n.pod_ip = ip.into();
        n
    };
    let route = |config: &model::ProxyConfig, port: u32| {
        config
            .clusters
            .iter()
            .find(|c| c.name == format!("outbound|{port}||db.default.svc.cluster.local"))
            .expect("cluster")
            .tcp_route
            .iter()
            .map(|w| (w.cluster.clone(), w.weight))
            .collect::<Vec<_>>()
    };
    let other = compile(&m, &node(&[("app", "y")], "10.1.0.5"));
    assert_eq!(
        route(&other, 5432),
        [
            (
                "outbound|5432|v1|db.default.svc.cluster.local".to_string(),
                80
            ),
            (
                "outbound|5433||db.default.svc.cluster.local".to_string(),
                20
            )
        ],
        "neither the labels nor the subnet of this proxy: the catch-all"
    );
    assert!(route(&other, 5433).is_empty(), "no route matches port 5433");
    assert_eq!(
        route(
            &compile(&m, &node(&[("app", "x"), ("version", "v1")], "10.1.0.5")),
            5432
        ),
        [(
            "outbound|9080||reviews.default.svc.cluster.local".to_string(),
            100
        )],
        "app=x: the sourceLabels route"
    );
    assert_eq!(
        route(&compile(&m, &node(&[("app", "y")], "10.9.3.4")), 5432),
        [(
            "outbound|9080||ratings.default.svc.cluster.local".to_string(),
            100
        )],
        "a pod in 10.9.0.0/16: the sourceSubnet route"
    );
    assert!(
        other
            .clusters
            .iter()
            .filter(|c| c.service.starts_with("reviews."))
            .all(|c| c.tcp_route.is_empty()),
        "HTTP ports carry none"
    );
    // The shared config of a scope is per match outcome, not per proxy.
    let key = |labels: &[(&str, &str)], ip: &str| {
        model::scope::Scope::for_node(&m, &node(labels, ip)).key
    };
    assert_ne!(
        key(&[("app", "x")], "10.1.0.5"),
        key(&[("app", "y")], "10.1.0.5")
    );
    assert_ne!(
        key(&[("app", "y")], "10.9.0.5"),
        key(&[("app", "y")], "10.1.0.5")
    );
    assert_eq!(
        key(&[("app", "y")], "10.1.0.5"),
        key(&[("app", "z")], "10.1.0.6")
    );
}

/// Auto mTLS goes by Istio's `security.istio.io/tlsMode: istio` label,
/// which sidecar injection sets and the gateway template does not: a
/// gateway pod's endpoints count as having no sidecar even though it was
/// injected, so a sidecar's TLS reaches an egress gateway's PASSTHROUGH
/// server unwrapped (Istio's HTTPS egress-gateway task).
#[test]
fn auto_mtls_does_not_wrap_what_goes_to_a_gateway() {
    let mesh = common::mesh(
        r#"
apiVersion: v1
kind: Service
metadata: {name: istio-egressgateway, namespace: istio-system}
spec:
  selector: {istio: egressgateway}
  ports: [{name: tls, port: 443, targetPort: 8443}]
---
apiVersion: v1
kind: Pod
metadata:
  name: istio-egressgateway-abc
  namespace: istio-system
  labels: {istio: egressgateway}
  annotations: {sidecar.istio.io/status: "{}", inject.istio.io/templates: gateway}
spec:
  containers: [{name: istio-proxy, ports: [{containerPort: 8443}]}]
status: {podIP: 127.1.2.1}
---
apiVersion: v1
kind: Pod
metadata: {name: client-abc, namespace: default, labels: {app: client}, annotations: {sidecar.istio.io/status: "{}"}}
spec:
  containers: [{name: client}]
status: {podIP: 127.1.2.2}
"#,
    );
    let config = compile(&mesh, &sidecar("default", "client-abc"));
    let gateway = config
        .endpoints
        .iter()
        .find(|e| e.cluster == "outbound|443||istio-egressgateway.istio-system.svc.cluster.local")
        .expect("the egress gateway's cluster");
    assert_eq!(gateway.endpoints.len(), 1);
    assert!(!gateway.endpoints[0].has_sidecar);
}
