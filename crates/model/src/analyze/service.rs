//! Service port names. Istio (and Trellis) pick a port's protocol from its
//! `appProtocol` or its name's prefix (`http`, `http-web`, `grpc-api`, ...);
//! any other name leaves the protocol to detection, which istioctl reports
//! as IST0118 (Info). istioctl's `service.PortNameAnalyzer`.

use api::Resource;
use k8s_openapi::api::core::v1::ServicePort;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::context::Context;
use super::messages::{self as m};
use super::names::{is_system_namespace, namespace_of};
use super::{Message, origin};

/// Istio's protocol names (`protocol.Parse`), matched case-insensitively.
const ISTIO_PROTOCOLS: [&str; 12] = [
    "tcp",
    "udp",
    "grpc",
    "grpc-web",
    "http",
    "http_proxy",
    "http2",
    "https",
    "tls",
    "mongo",
    "redis",
    "mysql",
];

pub fn analyze(ctx: &Context<'_>, out: &mut Vec<Message>) {
    for r in ctx.resources {
        let Resource::Service(svc) = r else { continue };
        if is_system_namespace(namespace_of(r)) || is_control_plane(r) {
            continue;
        }
        let spec = svc.spec.clone().unwrap_or_default();
        let external_name = spec.type_.as_deref() == Some("ExternalName");
        for port in spec.ports.iter().flatten() {
            let name = port.name.as_deref().unwrap_or_default();
            if external_name && (name == "tcp" || !has_known_protocol(port)) {
                out.push(Message::new(
                    m::EXTERNAL_NAME_SERVICE_TYPE_INVALID_PORT_NAME,
                    origin(r),
                    m::external_name_service_type_invalid_port_name(),
                ));
            } else if !has_known_protocol(port) {
                out.push(Message::new(
                    m::PORT_NAME_IS_NOT_UNDER_NAMING_CONVENTION,
                    origin(r),
                    m::port_name_is_not_under_naming_convention(
                        name,
                        port.port,
                        &target_port(port),
                    ),
                ));
            }
        }
    }
}

/// Istio's control plane Service names its ports its own way.
fn is_control_plane(r: &Resource) -> bool {
    let labels = r.labels();
    labels.get("app").is_some_and(|v| v == "istiod")
        || labels.get("istio").is_some_and(|v| v == "pilot")
}

/// Istio's `ConvertProtocol`: a UDP port is UDP; then `appProtocol`; then the
/// port name up to its first `-`.
fn has_known_protocol(port: &ServicePort) -> bool {
    if port.protocol.as_deref() == Some("UDP") {
        return true;
    }
    if let Some(app) = port.app_protocol.as_deref() {
        let app = app.to_ascii_lowercase();
        if is_istio_protocol(&app)
            || matches!(
                app.as_str(),
                "kubernetes.io/h2c" | "kubernetes.io/ws" | "kubernetes.io/wss"
            )
        {
            return true;
        }
    }
    let name = port.name.as_deref().unwrap_or_default();
    let prefix = name.split('-').next().unwrap_or_default();
    is_istio_protocol(prefix)
}

fn is_istio_protocol(s: &str) -> bool {
    ISTIO_PROTOCOLS.iter().any(|p| p.eq_ignore_ascii_case(s))
}

/// The targetPort as the API server reports it: the port itself when unset.
fn target_port(port: &ServicePort) -> String {
    match &port.target_port {
        Some(IntOrString::Int(n)) => n.to_string(),
        Some(IntOrString::String(s)) => s.clone(),
        None => port.port.to_string(),
    }
}
