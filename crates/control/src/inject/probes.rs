//! Application probes through the sidecar, as Istio rewrites them: with
//! mTLS STRICT the kubelet's plaintext probe of the application's port would
//! be refused by the sidecar, so the probe is pointed at the sidecar's
//! status port (`/app-health/<container>/livez|readyz|startupz`), and the
//! sidecar probes the application itself from inside the pod. The original
//! probes travel to the sidecar in `ISTIO_KUBE_APP_PROBERS`, keyed by the
//! new path, with named ports resolved to numbers: `httpGet` (with its
//! scheme: the sidecar makes the HTTPS request, the kubelet's becomes plain
//! HTTP), `tcpSocket`, and `grpc` (port and service), as Istio's
//! `ISTIO_KUBE_APP_PROBERS` has them.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, HTTPGetAction, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::{Value, json};

/// Rewrites the HTTP(S), TCP and gRPC probes (liveness, readiness and
/// startup) of `containers` to the status port;
/// returns the probers for the sidecar, and a warning for each probe left
/// as it was.
pub fn rewrite(
    containers: &mut [Container],
    status_port: u16,
    warnings: &mut Vec<String>,
) -> BTreeMap<String, Value> {
    let mut probers = BTreeMap::new();
    for c in containers.iter_mut() {
        let ports = c.ports.clone().unwrap_or_default();
        let named = |p: &IntOrString| -> Option<i32> {
            match p {
                IntOrString::Int(n) => Some(*n),
                IntOrString::String(s) => s.parse().ok().or_else(|| {
                    ports
                        .iter()
                        .find(|cp| cp.name.as_deref() == Some(s))
                        .map(|cp| cp.container_port)
                }),
            }
        };
        for (kind, probe) in [
            ("livez", &mut c.liveness_probe),
            ("readyz", &mut c.readiness_probe),
            ("startupz", &mut c.startup_probe),
        ] {
            let Some(probe) = probe.as_mut() else {
                continue;
            };
            let path = format!("/app-health/{}/{kind}", c.name);
            let timeout = probe.timeout_seconds.unwrap_or(1);
            let original = if let Some(get) = &probe.http_get {
                let scheme = get.scheme.as_deref().unwrap_or("HTTP").to_ascii_uppercase();
                if scheme != "HTTP" && scheme != "HTTPS" {
                    warnings.push(format!(
                        "container {}: the {kind} probe's scheme {scheme} is neither HTTP nor HTTPS; it is not rewritten through the sidecar",
                        c.name
                    ));
                    continue;
                }
                let Some(port) = named(&get.port) else {
                    warnings.push(unresolved(&c.name, kind, &get.port));
                    continue;
                };
                // The sidecar makes the HTTPS request; the kubelet asks it in plain HTTP.
                let mut action = json!({"path": get.path.as_deref().unwrap_or("/"), "port": port, "scheme": scheme});
                if let Some(host) = &get.host {
                    action["host"] = json!(host);
                }
                if let Some(headers) = &get.http_headers {
                    action["httpHeaders"] = json!(
                        headers
                            .iter()
                            .map(|h| json!({"name": h.name, "value": h.value}))
                            .collect::<Vec<_>>()
                    );
                }
                json!({"httpGet": action, "timeoutSeconds": timeout})
            } else if let Some(tcp) = &probe.tcp_socket {
                let Some(port) = named(&tcp.port) else {
                    warnings.push(unresolved(&c.name, kind, &tcp.port));
                    continue;
                };
                json!({"tcpSocket": {"port": port}, "timeoutSeconds": timeout})
            } else if let Some(grpc) = &probe.grpc {
                // Istio's `grpc` prober: the standard health service over h2c.
                json!({"grpc": {"port": grpc.port, "service": grpc.service}, "timeoutSeconds": timeout})
            } else {
                // exec probes run inside the container: nothing to rewrite.
                continue;
            };
            probers.insert(path.clone(), original);
            *probe = Probe {
                http_get: Some(HTTPGetAction {
                    path: Some(path),
                    port: IntOrString::Int(i32::from(status_port)),
                    scheme: Some("HTTP".into()),
                    ..Default::default()
                }),
                tcp_socket: None,
                grpc: None,
                exec: None,
                ..probe.clone()
            };
        }
    }
    probers
}

fn unresolved(container: &str, kind: &str, port: &IntOrString) -> String {
    let port = match port {
        IntOrString::Int(n) => n.to_string(),
        IntOrString::String(s) => s.clone(),
    };
    format!(
        "container {container}: the {kind} probe's port {port:?} is not one of its ports; the probe is not rewritten through the sidecar"
    )
}
