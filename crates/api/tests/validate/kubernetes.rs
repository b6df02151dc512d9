//! Validation of the Kubernetes objects Trellis reads.

use super::run;

#[test]
fn kubernetes() {
    let svc = |spec: &str| {
        format!("apiVersion: v1\nkind: Service\nmetadata: {{name: reviews}}\nspec:\n{spec}")
    };
    let deploy = |labels: &str| {
        format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: d}}\nspec:\n  selector: {{matchLabels: {{app: a}}}}\n  template:\n    metadata: {{labels: {labels}}}\n    spec:\n      containers: [{{name: c, image: app, ports: [{{containerPort: 8080}}]}}]\n"
        )
    };
    run(vec![
        ("service", svc("  selector: {app: a}\n  ports: [{name: http, port: 80, targetPort: 8080}, {name: grpc, port: 90, targetPort: grpc-port}]\n"), None),
        ("service bad port", svc("  ports: [{port: 0}]\n"), Some(("spec.ports[0].port", "1..65535"))),
        ("service unnamed ports", svc("  ports: [{port: 80}, {port: 81}]\n"), Some(("spec.ports[0].name", "required when a Service has more than one port"))),
        ("service dup names", svc("  ports: [{port: 80, name: http}, {port: 81, name: http}]\n"), Some(("spec.ports[1].name", "duplicate port name"))),
        ("service bad target", svc("  ports: [{port: 80, targetPort: 70000}]\n"), Some(("spec.ports[0].targetPort", "1..65535"))),
        ("service name", svc("  ports: [{port: 80}]\n").replace("name: reviews", "name: 1reviews"), Some(("metadata.name", "starting with a letter"))),
        ("deployment", deploy("{app: a, version: v1}"), None),
        ("selector mismatch", deploy("{app: b}"), Some(("spec.template.metadata.labels", "selector `app: a` does not match"))),
        ("no containers", deploy("{app: a}").replace("[{name: c, image: app, ports: [{containerPort: 8080}]}]", "[]"), Some(("spec.template.spec.containers", "at least one container"))),
        ("no image", deploy("{app: a}").replace(", image: app", ""), Some(("spec.template.spec.containers[0].image", "image is required"))),
        ("namespace", "apiVersion: v1\nkind: Namespace\nmetadata: {name: Bad_NS}\n".to_string(), Some(("metadata.name", "invalid name"))),
        ("pod", "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: c, image: i}]}\n".to_string(), None),
        ("endpoint slice", "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: e}\naddressType: IPv4\nendpoints: [{addresses: [10.0.0.1]}]\nports: [{port: 80}]\n".to_string(), None),
        ("endpoint slice bad ip", "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: e}\naddressType: IPv4\nendpoints: [{addresses: ['::1']}]\n".to_string(), Some(("endpoints[0].addresses[0]", "not a valid IPv4 address"))),
    ]);
}
