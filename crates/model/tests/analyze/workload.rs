//! Injection, Sidecar selection and Service port names (analyze/injection.rs, sidecar.rs, service.rs).

use super::Case;

pub(crate) fn cases() -> Vec<Case> {
    vec![
        Case {
            code: "IST0102",
            resource: "Namespace legacy",
            text: "The namespace is not enabled for Istio injection. Run 'kubectl label namespace legacy istio-injection=enabled'",
            triggers: namespace_with_workload("istio-injection: disabled"),
            clean: namespace_with_workload("team: batch"),
        },
        Case {
            code: "IST0103",
            resource: "Pod reviews-v1-abc.default",
            text: "The pod default/reviews-v1-abc is missing the Istio proxy.",
            triggers: pod(""),
            clean: pod(r#"sidecar.istio.io/status: "{}""#),
        },
        Case {
            code: "IST0110",
            resource: "Sidecar narrow-b.default",
            text: r#"The Sidecars [narrow-a narrow-b] in namespace "default" select the same workload pod "reviews-v1""#,
            triggers: sidecar("narrow-a", "workloadSelector: {labels: {app: reviews}}")
                + "---"
                + &sidecar("narrow-b", "workloadSelector: {labels: {version: v1}}"),
            clean: sidecar("narrow-a", "workloadSelector: {labels: {version: v2}}")
                + "---"
                + &sidecar("narrow-b", "workloadSelector: {labels: {version: v1}}"),
        },
        Case {
            code: "IST0111",
            resource: "Sidecar wide-a.default",
            text: r#"The Sidecars [wide-a wide-b] in namespace "default" have no workload selector"#,
            triggers: sidecar("wide-a", "") + "---" + &sidecar("wide-b", ""),
            clean: sidecar("wide-a", "")
                + "---"
                + &sidecar("wide-b", "workloadSelector: {labels: {app: reviews}}"),
        },
        Case {
            code: "IST0118",
            resource: "Service web.default",
            text: "Port name web (port: 80, targetPort: 8080) doesn't follow the naming convention of Istio port.",
            triggers: service_port("web", "ClusterIP"),
            clean: service_port("http-web", "ClusterIP"),
        },
        Case {
            code: "IST0150",
            resource: "Service web.default",
            text: "Port name for ExternalName service is invalid.",
            triggers: service_port("tcp", "ExternalName"),
            clean: service_port("https", "ExternalName"),
        },
    ]
}

fn namespace_with_workload(labels: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: Namespace
metadata: {{name: legacy, labels: {{{labels}}}}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: batch, namespace: legacy}}
spec:
  selector: {{matchLabels: {{app: batch}}}}
  template:
    metadata: {{labels: {{app: batch}}}}
    spec:
      containers: [{{name: batch, image: batch}}]
"#
    )
}

fn pod(annotations: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: reviews-v1-abc, labels: {{app: reviews, version: v1}}, annotations: {{{annotations}}}}}
spec:
  containers: [{{name: reviews, image: reviews}}]
"#
    )
}

fn service_port(name: &str, service_type: &str) -> String {
    let external = if service_type == "ExternalName" {
        "externalName: web.example.com"
    } else {
        ""
    };
    format!(
        r#"
apiVersion: v1
kind: Service
metadata: {{name: web}}
spec:
  type: {service_type}
  {external}
  ports: [{{name: "{name}", port: 80, targetPort: 8080}}]
"#
    )
}

fn sidecar(name: &str, selector: &str) -> String {
    format!(
        r#"
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {{name: {name}}}
spec:
  {selector}
  egress: [{{hosts: ["./*"]}}]
"#
    )
}
