//! Checks on the Kubernetes kinds Trellis runs from (the subset of the API
//! server's validation that matters for `trellis up`).

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Container, PodSpec, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::common::{self, Errors, at, idx};

pub(crate) fn metadata(
    errs: &mut Errors,
    m: &ObjectMeta,
    name_check: fn(&str) -> Result<(), String>,
) {
    match m.name.as_deref() {
        None | Some("") if m.generate_name.is_some() => {}
        None | Some("") => errs.add("metadata.name", "name is required"),
        Some(n) => errs.check("metadata.name", name_check(n)),
    }
    if let Some(ns) = &m.namespace {
        errs.check("metadata.namespace", common::namespace(ns));
    }
    if let Some(labels) = &m.labels {
        common::labels(errs, "metadata.labels", labels);
    }
}

/// Namespace names are DNS labels.
pub(crate) fn label_name(n: &str) -> Result<(), String> {
    common::namespace(n).map_err(|e| e.replace("namespace", "name"))
}

/// Service names are DNS-1035 labels: they also become DNS names and env
/// variable prefixes, so they must start with a letter.
pub(crate) fn service_name(n: &str) -> Result<(), String> {
    if common::is_dns1123_label(n) && n.as_bytes()[0].is_ascii_lowercase() {
        Ok(())
    } else {
        Err(format!(
            "invalid Service name `{n}`: must be at most 63 lowercase letters, digits and '-', starting with a letter"
        ))
    }
}

pub(crate) fn service(errs: &mut Errors, svc: &Service) {
    let Some(spec) = &svc.spec else { return };
    let ports = spec.ports.as_deref().unwrap_or_default();
    let is_external_name = spec.type_.as_deref() == Some("ExternalName");
    if ports.is_empty() && !is_external_name && spec.cluster_ip.as_deref() != Some("None") {
        errs.add("spec.ports", "at least one port is required");
    }
    let mut names = BTreeSet::new();
    let mut numbers = BTreeSet::new();
    for (i, port) in ports.iter().enumerate() {
        let p = idx("spec", "ports", i);
        let number = u32::try_from(port.port).unwrap_or(0);
        errs.check(at(&p, "port"), common::port(number));
        let protocol = port.protocol.as_deref().unwrap_or("TCP");
        if !["TCP", "UDP", "SCTP"].contains(&protocol) {
            errs.add(
                at(&p, "protocol"),
                format!("protocol `{protocol}` must be TCP, UDP or SCTP"),
            );
        }
        if !numbers.insert((number, protocol)) {
            errs.add(
                at(&p, "port"),
                format!("duplicate port {number}/{protocol}"),
            );
        }
        match port.name.as_deref() {
            Some(name) if !name.is_empty() => {
                if !common::is_dns1123_label(name) {
                    errs.add(
                        at(&p, "name"),
                        format!("invalid port name `{name}`: must be a DNS label"),
                    );
                }
                if !names.insert(name) {
                    errs.add(at(&p, "name"), format!("duplicate port name `{name}`"));
                }
            }
            _ if ports.len() > 1 => errs.add(
                at(&p, "name"),
                "port name is required when a Service has more than one port",
            ),
            _ => {}
        }
        if let Some(tp) = &port.target_port {
            errs.check(at(&p, "targetPort"), int_or_name_port(tp));
        }
    }
    if let Some(t) = &spec.type_
        && !["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"].contains(&t.as_str())
    {
        errs.add("spec.type", format!("unknown Service type `{t}`"));
    }
}

/// Istio's protocol selection for a Service's ports, as `istioctl validate`
/// checks it (outside the control plane's namespace, `istio-system`): a
/// port that is not UDP names its protocol by `appProtocol`, or else by its
/// name's prefix (`http`, `grpc-web`, `tcp-db`...); an unknown or missing
/// one is treated as opaque TCP, so HTTP routing and metrics silently do
/// not apply to it.
pub(crate) fn service_port_protocols(errs: &mut Errors, svc: &Service) {
    if svc.metadata.namespace.as_deref() == Some("istio-system") {
        return;
    }
    let Some(spec) = &svc.spec else { return };
    for (i, port) in spec.ports.iter().flatten().enumerate() {
        let p = idx("spec", "ports", i);
        if port
            .protocol
            .as_deref()
            .is_some_and(|p| p.eq_ignore_ascii_case("UDP"))
        {
            continue;
        }
        if let Some(app) = &port.app_protocol {
            if !istio_protocol(app) {
                errs.add(
                    at(&p, "appProtocol"),
                    format!(
                        "appProtocol `{app}` is not a protocol Istio selects by (see https://istio.io/latest/docs/ops/configuration/traffic-management/protocol-selection/)"
                    ),
                );
            }
            continue;
        }
        match port.name.as_deref() {
            None => errs.add(
                at(&p, "name"),
                "unnamed port: Istio selects the protocol by the port name or appProtocol (see https://istio.io/latest/docs/ops/deployment/application-requirements/)",
            ),
            Some(name) if !istio_protocol(name.split('-').next().unwrap_or_default()) => errs.add(
                at(&p, "name"),
                format!(
                    "port name `{name}` does not follow the Istio naming convention `<protocol>[-<suffix>]` (see https://istio.io/latest/docs/ops/deployment/application-requirements/)"
                ),
            ),
            Some(_) => {}
        }
    }
}

/// Protocol names Istio parses (case-insensitive); any other is unsupported.
fn istio_protocol(p: &str) -> bool {
    const KNOWN: &[&str] = &[
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
    KNOWN.iter().any(|k| k.eq_ignore_ascii_case(p))
}

/// A port given by number or by (container) port name.
fn int_or_name_port(v: &IntOrString) -> Result<(), String> {
    match v {
        IntOrString::Int(n) => common::port(u32::try_from(*n).unwrap_or(0)),
        IntOrString::String(s) => {
            let ok = !s.is_empty()
                && s.len() <= 15
                && s.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && s.bytes().any(|b| b.is_ascii_lowercase());
            if ok {
                Ok(())
            } else {
                Err(format!(
                    "invalid port `{s}`: must be a number or a port name (at most 15 lowercase letters, digits, '-')"
                ))
            }
        }
    }
}

pub(crate) fn deployment(errs: &mut Errors, d: &Deployment) {
    let Some(spec) = &d.spec else {
        errs.add("spec", "spec is required");
        return;
    };
    if let Some(r) = spec.replicas
        && r < 0
    {
        errs.add(
            "spec.replicas",
            format!("replicas {r} must not be negative"),
        );
    }
    let selector = spec.selector.match_labels.clone().unwrap_or_default();
    let has_expressions = spec
        .selector
        .match_expressions
        .as_ref()
        .is_some_and(|e| !e.is_empty());
    if selector.is_empty() && !has_expressions {
        errs.add("spec.selector", "a selector is required (matchLabels)");
    }
    common::labels(errs, "spec.selector.matchLabels", &selector);
    let template_labels: BTreeMap<String, String> = spec
        .template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    // The Deployment would never see its own pods otherwise.
    for (k, v) in &selector {
        if template_labels.get(k) != Some(v) {
            errs.add(
                "spec.template.metadata.labels",
                format!("selector `{k}: {v}` does not match the template's labels"),
            );
        }
    }
    match &spec.template.spec {
        Some(ps) => pod_spec(errs, "spec.template.spec", ps),
        None => errs.add("spec.template.spec", "pod template spec is required"),
    }
}

pub(crate) fn pod_spec(errs: &mut Errors, p: &str, ps: &PodSpec) {
    if ps.containers.is_empty() {
        errs.add(at(p, "containers"), "at least one container is required");
    }
    let mut names = BTreeSet::new();
    let init = ps.init_containers.as_deref().unwrap_or_default();
    let all = ps
        .containers
        .iter()
        .enumerate()
        .map(|(i, c)| (idx(p, "containers", i), c))
        .chain(
            init.iter()
                .enumerate()
                .map(|(i, c)| (idx(p, "initContainers", i), c)),
        );
    for (cp, c) in all {
        if !names.insert(c.name.as_str()) {
            errs.add(
                at(&cp, "name"),
                format!("duplicate container name `{}`", c.name),
            );
        }
        container(errs, &cp, c);
    }
}

fn container(errs: &mut Errors, p: &str, c: &Container) {
    if c.name.is_empty() {
        errs.add(at(p, "name"), "container name is required");
    } else if !common::is_dns1123_label(&c.name) {
        errs.add(
            at(p, "name"),
            format!("invalid container name `{}`: must be a DNS label", c.name),
        );
    }
    if c.image.as_deref().is_none_or(str::is_empty) {
        errs.add(at(p, "image"), "image is required");
    }
    let mut port_names = BTreeSet::new();
    for (i, port) in c.ports.as_deref().unwrap_or_default().iter().enumerate() {
        let pp = idx(p, "ports", i);
        errs.check(
            at(&pp, "containerPort"),
            common::port(u32::try_from(port.container_port).unwrap_or(0)),
        );
        if let Some(name) = &port.name
            && !port_names.insert(name.as_str())
        {
            errs.add(at(&pp, "name"), format!("duplicate port name `{name}`"));
        }
    }
}

pub(crate) fn endpoint_slice(errs: &mut Errors, es: &EndpointSlice) {
    if !["IPv4", "IPv6", "FQDN"].contains(&es.address_type.as_str()) {
        errs.add(
            "addressType",
            format!(
                "addressType `{}` must be IPv4, IPv6 or FQDN",
                es.address_type
            ),
        );
    }
    for (i, ep) in es.endpoints.iter().enumerate() {
        let p = idx("", "endpoints", i);
        let p = p.trim_start_matches('.');
        if ep.addresses.is_empty() {
            errs.add(at(p, "addresses"), "at least one address is required");
        }
        for (j, a) in ep.addresses.iter().enumerate() {
            let ok = match es.address_type.as_str() {
                "IPv4" => a.parse::<std::net::Ipv4Addr>().is_ok(),
                "IPv6" => a.parse::<std::net::Ipv6Addr>().is_ok(),
                _ => common::fqdn(a).is_ok(),
            };
            if !ok {
                errs.add(
                    idx(p, "addresses", j),
                    format!("`{a}` is not a valid {} address", es.address_type),
                );
            }
        }
    }
    for (i, port) in es.ports.as_deref().unwrap_or_default().iter().enumerate() {
        if let Some(n) = port.port {
            errs.check(
                format!("ports[{i}].port"),
                common::port(u32::try_from(n).unwrap_or(0)),
            );
        }
    }
}
