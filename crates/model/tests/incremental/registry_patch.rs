//! The registry patched object by object: Pods, Kubernetes Services,
//! EndpointSlices and WorkloadEntries changed one at a time, each step
//! equal to a fresh compile.

use super::*;

/// A Kubernetes mesh for pod, Service and EndpointSlice churn: Services
/// selecting pods in two namespaces, a selector-less Service backed by a
/// hand-written slice whose endpoint names a pod, a pod without a sidecar,
/// a ServiceEntry selecting WorkloadEntries, subsets on s.
const K8S_BASE: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: s, namespace: a}
spec:
  selector: {app: s}
  ports: [{name: http, port: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: u, namespace: a}
spec:
  selector: {app: u}
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
- addresses: [10.0.0.3]
  targetRef: {kind: Pod, name: s-3, namespace: a}
- addresses: [10.0.9.9]
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

fn service(name: &str, ns: &str, selector: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  selector: {{app: {selector}}}\n  ports: [{{name: http, port: 8080}}]\n"
    )
}

fn slice(name: &str, service: &str, endpoints: &[(&str, Option<&str>)]) -> String {
    let mut s = format!(
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: {name}, namespace: a, labels: {{kubernetes.io/service-name: {service}}}}}\naddressType: IPv4\nports: [{{name: http, port: 8080}}]\nendpoints:\n"
    );
    for (ip, pod) in endpoints {
        s.push_str(&format!("- addresses: [{ip}]\n"));
        if let Some(pod) = pod {
            s.push_str(&format!(
                "  targetRef: {{kind: Pod, name: {pod}, namespace: a}}\n"
            ));
        }
    }
    s
}

fn workload_entry(name: &str, ip: &str, app: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {{name: {name}, namespace: b}}\nspec: {{address: {ip}, labels: {{app: {app}}}, serviceAccount: vm}}\n"
    )
}

/// Pods, WorkloadEntries, Services and EndpointSlices changing one step at
/// a time, as they do on Kubernetes: the registry is patched object by
/// object where it can be (the untouched workloads are the very same), read
/// whole where it cannot, and after every step it equals a whole read and
/// every proxy holds exactly a fresh compile.
#[test]
fn pod_service_and_slice_churn_patches_the_registry_and_equals_a_fresh_compile() {
    let pods = format!(
        "{}{}{}{}{}",
        pod("s-1", "a", "s", "10.0.0.1"),
        pod("s-2", "a", "s", "10.0.0.2"),
        pod("s-3", "a", "x", "10.0.0.3"),
        pod("a-client", "a", "x", "10.0.0.9"),
        pod("t-1", "b", "t", "10.0.1.1"),
    );
    let mut objects = Objects::new(&format!("{K8S_BASE}{pods}"));
    let nodes = [
        sidecar("a", "a-client"),
        sidecar("a", "s-1"),
        sidecar("a", "s-2"),
        sidecar("a", "s-3"),
        sidecar("a", "s-4"),
        sidecar("b", "t-1"),
    ];
    let no_sidecar = pod("plain", "a", "s", "10.0.0.7").replace(
        "labels:",
        "annotations: {sidecar.istio.io/inject: \"false\"}, labels:",
    );
    let with_sidecar = |p: String| {
        p.replace(
            "labels:",
            "annotations: {sidecar.istio.io/status: \"{}\"}, labels:",
        )
    };
    let crossing = "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: far, namespace: a, labels: {kubernetes.io/service-name: sliced}}\naddressType: IPv4\nports: [{name: http, port: 8080}]\nendpoints:\n- addresses: [10.0.1.1]\n  targetRef: {kind: Pod, name: t-1, namespace: b}\n";
    let claimed = "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: claim, namespace: a}\nspec:\n  hosts: [w.a.svc.cluster.local]\n  location: MESH_INTERNAL\n  resolution: STATIC\n  ports: [{number: 8080, name: http, protocol: HTTP}]\n  endpoints: [{address: 10.0.6.1}]\n";
    // (what, the change, deleted objects, whether the registry is patched)
    let steps: Vec<(&str, String, Vec<Named>, bool)> = vec![
        (
            "a pod joins s",
            with_sidecar(pod("s-4", "a", "s", "10.0.0.4")),
            vec![],
            true,
        ),
        (
            "a pod's IP changes",
            with_sidecar(pod("s-4", "a", "s", "10.0.0.5")),
            vec![],
            true,
        ),
        (
            "a pod leaves s for u",
            pod("s-2", "a", "u", "10.0.0.2"),
            vec![],
            true,
        ),
        (
            "a pod moves to subset v2",
            pod("s-1", "a", "s", "10.0.0.1").replace("version: v1", "version: v2"),
            vec![],
            true,
        ),
        (
            "a pod without a sidecar joins s",
            no_sidecar.clone(),
            vec![],
            true,
        ),
        (
            "a pod has no IP yet",
            pod("s-5", "a", "s", "x").replace("status: {podIP: x}\n", ""),
            vec![],
            true,
        ),
        (
            "the pod gets its IP",
            pod("s-5", "a", "s", "10.0.0.8"),
            vec![],
            true,
        ),
        (
            "a pod a slice names changes its labels (it lends them)",
            pod("s-3", "a", "x", "10.0.0.3").replace("version: v1", "version: v2"),
            vec![],
            true,
        ),
        (
            "a slice gains an endpoint",
            slice(
                "sliced-1",
                "sliced",
                &[
                    ("10.0.0.3", Some("s-3")),
                    ("10.0.9.9", None),
                    ("10.0.0.9", Some("a-client")),
                ],
            ),
            vec![],
            true,
        ),
        (
            "a second slice for the same Service",
            slice("sliced-2", "sliced", &[("10.0.8.1", None)]),
            vec![],
            true,
        ),
        (
            "a slice moves to another Service (s: its slices replace the selector)",
            slice("sliced-2", "s", &[("10.0.8.1", None)]),
            vec![],
            true,
        ),
        (
            "the slice of s is deleted: the selector picks again",
            String::new(),
            vec![(api::Kind::EndpointSlice, "a", "sliced-2")],
            true,
        ),
        (
            "a Service's selector changes",
            service("u", "a", "x"),
            vec![],
            true,
        ),
        (
            "a Service is deleted while its pods remain",
            String::new(),
            vec![(api::Kind::Service, "a", "u")],
            true,
        ),
        (
            "the Service comes back",
            service("u", "a", "u"),
            vec![],
            true,
        ),
        (
            "a slice for a Service that does not exist yet",
            slice("v-1", "v", &[("10.0.7.1", None)]),
            vec![],
            true,
        ),
        (
            "the Service of that slice appears",
            service("v", "a", "nothing"),
            vec![],
            true,
        ),
        (
            "a pod and the slice naming it change together",
            format!(
                "{}---\n{}",
                pod("s-3", "a", "x", "10.0.0.33"),
                slice("sliced-1", "sliced", &[("10.0.0.33", Some("s-3"))])
            ),
            vec![],
            true,
        ),
        (
            "a WorkloadEntry joins the ServiceEntry's selection",
            workload_entry("vm-2", "10.0.3.2", "vm"),
            vec![],
            true,
        ),
        (
            "a WorkloadEntry leaves it",
            workload_entry("vm-1", "10.0.3.1", "other"),
            vec![],
            true,
        ),
        (
            "a pod leaves",
            String::new(),
            vec![(api::Kind::Pod, "a", "s-4")],
            true,
        ),
        (
            "a pod and a WorkloadEntry leave, a Service in b appears",
            service("t2", "b", "t"),
            vec![
                (api::Kind::Pod, "a", "plain"),
                (api::Kind::WorkloadEntry, "b", "vm-2"),
            ],
            true,
        ),
        (
            "a ServiceEntry claims a host (patched as entries are)",
            claimed.into(),
            vec![],
            true,
        ),
        (
            "a Service of the claimed host is read whole",
            service("w", "a", "s"),
            vec![],
            false,
        ),
        (
            "a slice naming a pod in another namespace is read whole",
            crossing.into(),
            vec![],
            false,
        ),
        (
            "and so is every change while it is there",
            pod("s-6", "a", "s", "10.0.0.10"),
            vec![],
            false,
        ),
        (
            "it leaves",
            String::new(),
            vec![(api::Kind::EndpointSlice, "a", "far")],
            false,
        ),
        (
            "a pod joins s again",
            pod("s-7", "a", "s", "10.0.0.11"),
            vec![],
            true,
        ),
    ];

    let build = |o: &Objects| Arc::new(Mesh::build(o.0.values(), Default::default()));
    let mut compiler = Compiler::new(build(&objects));
    let mut held: Vec<_> = nodes.iter().map(|n| compiler.snapshot(n)).collect();
    for (what, yaml, deleted, patched) in steps {
        let before = compiler.mesh().clone();
        let touched = objects.change(&yaml, &deleted);
        let mesh = Arc::new(before.rebuild(objects.0.values(), Default::default(), &touched));
        let whole = build(&objects);
        assert!(
            mesh.registry.same_content(&whole.registry),
            "{what}: the registry equals a whole read"
        );
        let shared = mesh
            .registry
            .workloads
            .iter()
            .any(|w| before.registry.workloads.iter().any(|o| Arc::ptr_eq(w, o)));
        assert_eq!(shared, patched, "{what}: the registry is patched");
        let (next, affected) = compiler.update_touched(mesh, &touched);
        let fresh = Compiler::new(whole);
        for (n, snap) in nodes.iter().zip(held.iter_mut()) {
            let expected = fresh.snapshot(n);
            let reached = affected.proxy(&next, n);
            assert!(
                reached || snap.same_versions(&expected),
                "{what}: {} holds a stale config but was not reached",
                n.id
            );
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

/// A Kubernetes Service added, changed or deleted reaches the proxies that
/// see it (their listeners and clusters name it) and its backends (their
/// inbound listeners do), compiled whole, and no other: here b's proxy,
/// which its Sidecar limits to b, is left alone by a's Services. Each step
/// is checked against a fresh compile.
#[test]
fn a_service_change_recompiles_only_the_proxies_that_see_it_or_back_it() {
    let pods = format!(
        "{}{}{}{}",
        pod("s-1", "a", "s", "10.0.0.1"),
        pod("u-1", "a", "u", "10.0.0.2"),
        pod("a-client", "a", "x", "10.0.0.9"),
        pod("t-1", "b", "t", "10.0.1.1"),
    );
    let mut objects = Objects::new(&format!("{K8S_BASE}{pods}"));
    let nodes = [
        sidecar("a", "a-client"),
        sidecar("a", "s-1"),
        sidecar("a", "u-1"),
        sidecar("b", "t-1"),
    ];
    let in_a = ["a-client.a", "s-1.a", "u-1.a"];
    let everyone = ["a-client.a", "s-1.a", "u-1.a", "t-1.b"];
    let two_ports = service("u", "a", "u").replace(
        "ports: [{name: http, port: 8080}]",
        "ports: [{name: http, port: 8080}, {name: grpc, port: 9090}]",
    );
    // (what, the change, deleted objects, the proxies reached)
    let steps: Vec<(&str, String, Vec<Named>, &[&str])> = vec![
        ("a Service gains a port", two_ports, vec![], &in_a),
        (
            "its selector changes: another pod backs it",
            service("u", "a", "s"),
            vec![],
            &in_a,
        ),
        (
            "a Service is deleted",
            String::new(),
            vec![(api::Kind::Service, "a", "u")],
            &in_a,
        ),
        ("a Service is added", service("u", "a", "u"), vec![], &in_a),
        (
            "a Service in b, which a sees too",
            service("t", "b", "x"),
            vec![],
            &everyone,
        ),
    ];
    let build = |o: &Objects| Arc::new(Mesh::build(o.0.values(), Default::default()));
    let mut compiler = Compiler::new(build(&objects));
    let mut held: Vec<_> = nodes.iter().map(|n| compiler.snapshot(n)).collect();
    for (what, yaml, deleted, expected) in steps {
        let before = compiler.mesh().clone();
        let touched = objects.change(&yaml, &deleted);
        let mesh = Arc::new(before.rebuild(objects.0.values(), Default::default(), &touched));
        let (next, affected) = compiler.update_touched(mesh, &touched);
        let fresh = Compiler::new(build(&objects));
        let mut reached = Vec::new();
        for (n, snap) in nodes.iter().zip(held.iter_mut()) {
            if affected.proxy(&next, n) {
                reached.push(n.id.as_str());
                *snap = affected.snapshot(&next, n, snap);
            }
            assert!(
                snap.same_versions(&fresh.snapshot(n)),
                "{what}: {} holds a fresh compile",
                n.id
            );
        }
        assert_eq!(reached, expected, "{what}: the proxies reached");
        compiler = next;
    }
}
