//! ServiceEntry and WorkloadEntry in the registry and the compiled config,
//! as Istio resolves them (service_entry.proto, workload_entry.proto).

// Test code: a panic is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{cluster_names, mesh, sidecar, virtual_host};
use model::{ProxyConfig, compile};
use wire::pb;

fn cluster<'a>(c: &'a ProxyConfig, name: &str) -> &'a pb::Cluster {
    c.clusters
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| {
            panic!(
                "no cluster {name}: {:?}",
                c.clusters.iter().map(|c| &c.name).collect::<Vec<_>>()
            )
        })
}

fn endpoints<'a>(c: &'a ProxyConfig, name: &str) -> Vec<&'a pb::Endpoint> {
    c.endpoints
        .iter()
        .find(|e| e.cluster == name)
        .map(|e| e.endpoints.iter().collect())
        .unwrap_or_default()
}

fn addresses(eps: &[&pb::Endpoint]) -> Vec<String> {
    eps.iter()
        .map(|e| format!("{}:{}", e.address, e.port))
        .collect()
}

const EXTERNAL: &str = r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: external, namespace: default}
spec:
  hosts: [api.example.com, api2.example.com]
  addresses: [240.0.0.1]
  location: MESH_EXTERNAL
  resolution: STATIC
  ports:
  - {number: 80, name: http, protocol: HTTP, targetPort: 8080}
  - {number: 443, name: tls, protocol: TLS}
  endpoints:
  - {address: 10.0.0.1}
  - {address: 10.0.0.2, ports: {http: 9090}, locality: us/east/a, weight: 3}
"#;

#[test]
fn static_entry_is_a_service_per_host_with_its_endpoints() {
    let m = mesh(EXTERNAL);
    let c = compile(&m, &sidecar("default", "x"));
    for host in ["api.example.com", "api2.example.com"] {
        let http = format!("outbound|80||{host}");
        assert_eq!(cluster(&c, &http).protocol, pb::Protocol::Http as i32);
        assert_eq!(
            cluster(&c, &format!("outbound|443||{host}")).protocol,
            pb::Protocol::Tls as i32
        );
        let eps = endpoints(&c, &http);
        // The endpoint's own port for the port name wins over targetPort.
        assert_eq!(addresses(&eps), vec!["10.0.0.1:8080", "10.0.0.2:9090"]);
        assert!(
            eps.iter().all(|e| !e.has_sidecar && e.identity.is_empty()),
            "external endpoints have no mesh identity"
        );
        assert_eq!((eps[1].locality.as_str(), eps[1].weight), ("us/east/a", 3));
        assert_eq!(eps[0].weight, 1);
        // No targetPort: the port number.
        assert_eq!(
            addresses(&endpoints(&c, &format!("outbound|443||{host}"))),
            vec!["10.0.0.1:443", "10.0.0.2:443"]
        );
    }
    let vh = virtual_host(&c, "80", "api.example.com:80");
    for d in [
        "api.example.com",
        "api.example.com:80",
        "240.0.0.1",
        "240.0.0.1:80",
    ] {
        assert!(
            vh.domains.contains(&d.to_string()),
            "{d} in {:?}",
            vh.domains
        );
    }
    // Hosts are taken as written, never expanded like short names.
    assert!(
        !vh.domains.iter().any(|d| d.contains("svc.cluster.local")),
        "{:?}",
        vh.domains
    );
}

#[test]
fn dns_without_endpoints_sends_to_the_host_and_none_passes_through() {
    let m = mesh(
        r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: dns, namespace: default}
spec:
  hosts: [db.example.com]
  resolution: DNS
  ports: [{number: 5432, name: tcp, protocol: TCP, targetPort: 6432}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: local, namespace: default}
spec:
  hosts: [echo.local.test]
  resolution: DNS
  ports: [{number: 80, name: http, protocol: HTTP}]
  endpoints: [{address: localhost, ports: {http: 18080}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: anything, namespace: default}
spec:
  hosts: [any.example.com]
  resolution: NONE
  ports: [{number: 80, name: http, protocol: HTTP}]
"#,
    );
    let c = compile(&m, &sidecar("default", "x"));
    assert_eq!(
        addresses(&endpoints(&c, "outbound|5432||db.example.com")),
        vec!["db.example.com:6432"]
    );
    // A host name endpoint: the proxy resolves it when it connects.
    assert_eq!(
        addresses(&endpoints(&c, "outbound|80||echo.local.test")),
        vec!["localhost:18080"]
    );
    assert_eq!(
        cluster(&c, "outbound|80||any.example.com").lb,
        pb::LoadBalancer::Passthrough as i32
    );
    assert!(endpoints(&c, "outbound|80||any.example.com").is_empty());
}

const INTERNAL: &str = r#"
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: vm-1, namespace: vms}
spec:
  address: 10.1.0.1
  labels: {app: legacy, version: v1}
  serviceAccount: legacy-sa
  ports: {http: 8081}
  locality: eu/west/b
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: vm-2, namespace: vms}
spec:
  address: 10.1.0.2
  labels: {app: legacy, version: v2, security.istio.io/tlsMode: disabled}
  serviceAccount: legacy-sa
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: vm-elsewhere, namespace: other}
spec:
  address: 10.9.0.1
  labels: {app: legacy}
---
apiVersion: v1
kind: Pod
metadata: {name: legacy-pod, namespace: vms, labels: {app: legacy, version: v1}, annotations: {sidecar.istio.io/status: "{}"}}
spec:
  serviceAccountName: pod-sa
  containers: [{name: app, ports: [{containerPort: 8000}]}]
status: {podIP: 127.1.2.3}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: legacy, namespace: vms}
spec:
  hosts: [legacy.vms.internal]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 80, name: http, protocol: HTTP, targetPort: 8000}]
  workloadSelector: {labels: {app: legacy}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: legacy, namespace: vms}
spec:
  host: legacy.vms.internal
  subsets: [{name: v1, labels: {version: v1}}]
"#;

#[test]
fn workload_selector_picks_pods_and_workload_entries_of_its_namespace() {
    let m = mesh(INTERNAL);
    let c = compile(&m, &sidecar("default", "x"));
    let all = endpoints(&c, "outbound|80||legacy.vms.internal");
    // vm-1 maps the port name; vm-2 and the pod take the targetPort; the
    // entry in another namespace is not selected.
    let mut got = addresses(&all);
    got.sort();
    assert_eq!(
        got,
        vec!["10.1.0.1:8081", "10.1.0.2:8000", "127.1.2.3:8000"]
    );
    let vm1 = all.iter().find(|e| e.address == "10.1.0.1").expect("vm-1");
    assert!(vm1.has_sidecar, "a service account means a mesh workload");
    assert_eq!(vm1.identity, "spiffe://cluster.local/ns/vms/sa/legacy-sa");
    assert_eq!(vm1.locality, "eu/west/b");
    assert_eq!(vm1.workload, "vm-1");
    let vm2 = all.iter().find(|e| e.address == "10.1.0.2").expect("vm-2");
    assert!(
        !vm2.has_sidecar,
        "tlsMode label overrides the service account"
    );
    let v1 = addresses(&endpoints(&c, "outbound|80|v1|legacy.vms.internal"));
    assert_eq!(v1.len(), 2, "subsets select entries by label too: {v1:?}");
}

#[test]
fn a_kubernetes_service_selects_workload_entries_in_its_namespace() {
    let m = mesh(
        r#"
apiVersion: v1
kind: Service
metadata: {name: legacy, namespace: vms}
spec:
  selector: {app: legacy}
  ports: [{name: http, port: 80, targetPort: 8000}]
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: vm-1, namespace: vms}
spec: {address: 10.1.0.1, labels: {app: legacy}, ports: {http: 8081}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: vm-2, namespace: vms}
spec: {address: 10.1.0.2, labels: {app: legacy}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: vm-3, namespace: default}
spec: {address: 10.1.0.3, labels: {app: legacy}}
"#,
    );
    let c = compile(&m, &sidecar("default", "x"));
    let mut got = addresses(&endpoints(&c, "outbound|80||legacy.vms.svc.cluster.local"));
    got.sort();
    assert_eq!(got, vec!["10.1.0.1:8081", "10.1.0.2:8000"]);
}

#[test]
fn export_to_virtual_services_and_kubernetes_precedence_apply_to_entries() {
    let m = mesh(
        r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: private, namespace: team}
spec:
  hosts: [private.example.com]
  exportTo: ["."]
  resolution: STATIC
  ports: [{number: 80, name: http, protocol: HTTP}]
  endpoints: [{address: 10.0.0.9}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: public, namespace: team}
spec:
  hosts: [public.example.com, reviews.default.svc.cluster.local]
  resolution: STATIC
  ports: [{number: 80, name: http, protocol: HTTP}]
  endpoints: [{address: 10.0.0.10}]
---
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: default}
spec:
  selector: {app: reviews}
  ports: [{name: http, port: 9080}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: public, namespace: default}
spec:
  hosts: [public.example.com]
  http:
  - match: [{headers: {x-fault: {exact: "1"}}}]
    fault: {abort: {httpStatus: 418, percentage: {value: 100}}}
    route: [{destination: {host: public.example.com}}]
  - timeout: 2s
    route: [{destination: {host: public.example.com}}]
"#,
    );
    let from_default = compile(&m, &sidecar("default", "x"));
    let names = cluster_names(&from_default);
    assert!(
        !names.iter().any(|n| n.contains("private.example.com")),
        "{names:?}"
    );
    let from_team = compile(&m, &sidecar("team", "x"));
    assert!(
        from_team
            .clusters
            .iter()
            .any(|c| c.name == "outbound|80||private.example.com")
    );

    let vh = virtual_host(&from_default, "80", "public.example.com:80");
    assert_eq!(
        vh.routes[0].fault.as_ref().map(|f| f.abort_http_status),
        Some(418)
    );
    let route = &vh.routes[1];
    let Some(pb::route::Action::Forward(fwd)) = &route.action else {
        panic!("forward")
    };
    assert_eq!(fwd.timeout_ms, 2000);
    assert_eq!(fwd.clusters[0].cluster, "outbound|80||public.example.com");
    assert!(from_default.dangling_clusters().is_empty());

    // The Kubernetes Service keeps its host: its port, not the entry's.
    assert!(names.contains(&"outbound|9080||reviews.default.svc.cluster.local"));
    assert!(!names.contains(&"outbound|80||reviews.default.svc.cluster.local"));
}

/// An inline endpoint's workload in the registry holds the entry's label
/// map, not a copy: 10,000 endpoints held one map each in the store and
/// another in the registry.
#[test]
fn an_endpoints_workload_holds_the_entrys_labels() {
    let text = "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: svc, namespace: ns}\nspec:\n  hosts: [svc.example]\n  location: MESH_INTERNAL\n  resolution: STATIC\n  ports: [{name: http, number: 80}]\n  endpoints:\n  - {address: 10.0.0.1, labels: {app: svc, version: v1}}\n  - {address: 10.0.0.2, labels: {app: svc, version: v1}}\n";
    let resources = api::parse("mesh.yaml", text).unwrap();
    let m = model::Mesh::build(&resources, model::MeshConfig::default());
    let api::Resource::ServiceEntry(se) = &resources[0] else {
        panic!("a ServiceEntry");
    };
    let backends: Vec<_> = m.registry.backends("svc.example").collect();
    assert_eq!(backends.len(), 2);
    for w in backends {
        assert!(std::sync::Arc::ptr_eq(
            &w.labels,
            &se.spec.endpoints[0].labels
        ));
    }
}
