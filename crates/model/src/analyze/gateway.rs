//! Gateways: the workloads they select, the ports those workloads' Services
//! expose, and Gateways that claim the same host on the same port.
//! istioctl's `gateway.IngressGatewayPortAnalyzer` and `ConflictingGatewayAnalyzer`.

use std::collections::{BTreeMap, BTreeSet};

use api::Object;
use api::networking::Gateway;

use super::context::Context;
use super::messages::{self as m};
use super::names::{full_name, hosts_overlap, labels_match, selector_string};
use super::{Message, object_origin};

pub fn analyze(ctx: &Context<'_>, out: &mut Vec<Message>) {
    for gw in &ctx.mesh.gateways {
        selected_workloads(ctx, gw, out);
    }
    conflicts(ctx, out);
}

fn selected_workloads(ctx: &Context<'_>, gw: &Object<Gateway>, out: &mut Vec<Message>) {
    let selector = &gw.spec.selector;
    let selector_text = selector_string(selector);
    // Istio binds a selector-less Gateway to every gateway proxy; Trellis
    // binds it to none, so it is reported like a selector nothing matches.
    let selected: Vec<_> = if selector.is_empty() {
        Vec::new()
    } else {
        // Gateway selectors reach workloads in every namespace, as in Istio.
        ctx.selected(None, selector).collect()
    };
    if selected.is_empty() {
        out.push(Message::new(
            m::REFERENCED_RESOURCE_NOT_FOUND,
            object_origin(gw),
            m::referenced_resource_not_found("selector", &selector_text),
        ));
        return;
    }
    // Ports of the Services that route to the selected workloads: a server
    // port none of them exposes is unreachable through the gateway Service.
    let service_ports: BTreeSet<u32> = ctx
        .mesh
        .registry
        .services
        .values()
        .filter(|svc| {
            !svc.selector.is_empty()
                && selected
                    .iter()
                    .any(|w| w.namespace == svc.namespace && labels_match(&svc.selector, &w.labels))
        })
        .flat_map(|svc| svc.ports.iter().map(|p| p.port))
        .collect();
    // Istio's SecretAnalyzer: a credentialName is read in the gateway
    // workload's namespace; without the Secret that server is not served.
    let namespaces: BTreeSet<&str> = selected.iter().map(|w| w.namespace.as_str()).collect();
    for server in &gw.spec.servers {
        let Some(name) = server
            .tls
            .as_ref()
            .and_then(|t| t.credential_name.as_deref())
            .filter(|n| !n.is_empty())
        else {
            continue;
        };
        if namespaces.iter().any(|ns| {
            !ctx.mesh
                .secrets
                .contains_key(&(ns.to_string(), name.to_string()))
        }) {
            out.push(Message::new(
                m::REFERENCED_RESOURCE_NOT_FOUND,
                object_origin(gw),
                m::referenced_resource_not_found("credentialName", name),
            ));
        }
    }
    let mut reported = BTreeSet::new();
    for server in &gw.spec.servers {
        let port = server.port.number;
        if !service_ports.contains(&port) && reported.insert(port) {
            out.push(Message::new(
                m::GATEWAY_PORT_NOT_DEFINED_ON_SERVICE,
                object_origin(gw),
                m::gateway_port_not_defined_on_service(port, &selector_text),
            ));
        }
    }
}

/// Two Gateways with the same selector and port whose server hosts overlap
/// both try to own the same listener and host: one of them loses.
fn conflicts(ctx: &Context<'_>, out: &mut Vec<Message>) {
    // (selector, port) → gateway full name → hosts of its servers there.
    let mut by_listener: BTreeMap<(String, u32), BTreeMap<String, Vec<String>>> = BTreeMap::new();
    for gw in &ctx.mesh.gateways {
        let selector = selector_string(&gw.spec.selector);
        for server in &gw.spec.servers {
            by_listener
                .entry((selector.clone(), server.port.number))
                .or_default()
                .entry(full_name(&gw.metadata))
                .or_default()
                .extend(server.hosts.iter().map(|h| bare_host(h).to_string()));
        }
    }
    for gw in &ctx.mesh.gateways {
        let name = full_name(&gw.metadata);
        let selector = selector_string(&gw.spec.selector);
        for server in &gw.spec.servers {
            let Some(others) = by_listener.get(&(selector.clone(), server.port.number)) else {
                continue;
            };
            let conflicting: Vec<&str> = others
                .iter()
                .filter(|(other, _)| **other != name)
                .filter(|(_, hosts)| {
                    server
                        .hosts
                        .iter()
                        .any(|h| hosts.iter().any(|o| hosts_overlap(bare_host(h), o)))
                })
                .map(|(other, _)| other.as_str())
                .collect();
            if !conflicting.is_empty() {
                out.push(Message::new(
                    m::CONFLICTING_GATEWAYS,
                    object_origin(gw),
                    m::conflicting_gateways(
                        &conflicting.join(","),
                        &selector,
                        server.port.number,
                        &server.hosts.join(","),
                    ),
                ));
            }
        }
    }
}

/// A server host without its `namespace/` part: the namespace limits which
/// VirtualServices may bind, not which requests the listener accepts.
fn bare_host(h: &str) -> &str {
    h.split_once('/').map_or(h, |(_, host)| host)
}
