//! What a VirtualService points at: destination hosts, ports and subsets,
//! and the Gateways it binds to. istioctl's `virtualservice.DestinationHostAnalyzer`,
//! `DestinationRuleAnalyzer` and `GatewayAnalyzer`.

use api::Object;
use api::networking::{Destination, VirtualService};

use super::context::Context;
use super::messages::{self as m};
use super::names::{full_name, hosts_overlap, object_namespace};
use super::{Message, object_origin};
use crate::routes;

pub fn analyze(ctx: &Context<'_>, out: &mut Vec<Message>) {
    for vs in &ctx.mesh.virtual_services {
        destinations(ctx, vs, out);
        gateways(ctx, vs, out);
    }
}

/// A destination and whether it came from a mirror (istioctl words those
/// messages differently).
struct Dest<'a> {
    destination: &'a Destination,
    mirror: bool,
}

/// Route destinations in istioctl's order (tcp, tls, http), then mirrors.
fn all_destinations(vs: &VirtualService) -> Vec<Dest<'_>> {
    let route = |d| Dest {
        destination: d,
        mirror: false,
    };
    let mirror = |d| Dest {
        destination: d,
        mirror: true,
    };
    let mut out: Vec<Dest<'_>> = Vec::new();
    out.extend(
        vs.tcp
            .iter()
            .flat_map(|r| &r.route)
            .map(|d| route(&d.destination)),
    );
    out.extend(
        vs.tls
            .iter()
            .flat_map(|r| &r.route)
            .map(|d| route(&d.destination)),
    );
    out.extend(
        vs.http
            .iter()
            .flat_map(|r| &r.route)
            .map(|d| route(&d.destination)),
    );
    for r in &vs.http {
        out.extend(r.mirror.iter().map(mirror));
        out.extend(r.mirrors.iter().map(|p| mirror(&p.destination)));
    }
    out
}

fn destinations(ctx: &Context<'_>, vs: &Object<VirtualService>, out: &mut Vec<Message>) {
    let ns = object_namespace(&vs.metadata);
    let origin = object_origin(vs);
    for Dest {
        destination: d,
        mirror,
    } in all_destinations(&vs.spec)
    {
        // A delegate or redirect-only route has no destination host to check.
        if d.host.is_empty() {
            continue;
        }
        // istioctl checks hosts and subsets separately: a typo in the host
        // shows up twice, once for each.
        if let Some(subset) = d.subset.as_deref().filter(|s| !s.is_empty()) {
            subset_defined(ctx, d, subset, ns, mirror, &origin, out);
        }
        let Some(target) = ctx.find_host(&d.host, ns) else {
            let reftype = if mirror { "mirror host" } else { "host" };
            out.push(Message::new(
                m::REFERENCED_RESOURCE_NOT_FOUND,
                origin.clone(),
                m::referenced_resource_not_found(reftype, &d.host),
            ));
            continue;
        };
        match &d.port {
            None if target.ports.len() > 1 => out.push(Message::new(
                m::VIRTUAL_SERVICE_DESTINATION_PORT_SELECTOR_REQUIRED,
                origin.clone(),
                m::virtual_service_destination_port_selector_required(&d.host, &target.ports),
            )),
            Some(p) if !target.ports.is_empty() && !target.ports.contains(&p.number) => {
                out.push(Message::new(
                    m::REFERENCED_RESOURCE_NOT_FOUND,
                    origin.clone(),
                    m::referenced_resource_not_found(
                        "host:port",
                        &format!("{}:{}", d.host, p.number),
                    ),
                ))
            }
            _ => {}
        }
    }
}

/// The subset must be defined by the DestinationRule that applies to the
/// host for clients in the VirtualService's namespace: the one Trellis
/// compiles clusters from (a subset defined in a shadowed rule gets no
/// cluster, and the route answers 503).
fn subset_defined(
    ctx: &Context<'_>,
    d: &Destination,
    subset: &str,
    ns: &str,
    mirror: bool,
    origin: &str,
    out: &mut Vec<Message>,
) {
    let fqdn = ctx.fqdn(&d.host, ns);
    let defined = ctx
        .mesh
        .destination_rule(&fqdn, ns)
        .is_some_and(|dr| dr.spec.subsets.iter().any(|s| s.name == subset));
    if !defined {
        let reftype = if mirror {
            "mirror+subset in destinationrule"
        } else {
            "host+subset in destinationrule"
        };
        out.push(Message::new(
            m::REFERENCED_RESOURCE_NOT_FOUND,
            origin.to_string(),
            m::referenced_resource_not_found(reftype, &format!("{}+{subset}", d.host)),
        ));
    }
}

fn gateways(ctx: &Context<'_>, vs: &Object<VirtualService>, out: &mut Vec<Message>) {
    let ns = object_namespace(&vs.metadata);
    for name in &vs.spec.gateways {
        if name == "mesh" {
            continue;
        }
        if is_internal_gateway(name) {
            out.push(Message::new(
                m::REFERENCED_INTERNAL_GATEWAY,
                object_origin(vs),
                m::referenced_internal_gateway(&full_name(&vs.metadata), name),
            ));
            continue;
        }
        let wanted = routes::gateway_ref(name, ns);
        let Some(gw) = ctx
            .mesh
            .gateways
            .iter()
            .find(|g| full_name(&g.metadata) == wanted)
        else {
            out.push(Message::new(
                m::REFERENCED_RESOURCE_NOT_FOUND,
                object_origin(vs),
                m::referenced_resource_not_found("gateway", name),
            ));
            // As istioctl: a Gateway that does not exist admits no host either.
            out.push(Message::new(
                m::VIRTUAL_SERVICE_HOST_NOT_FOUND_IN_GATEWAY,
                object_origin(vs),
                m::virtual_service_host_not_found_in_gateway(
                    &vs.spec.hosts,
                    &full_name(&vs.metadata),
                    &wanted,
                ),
            ));
            continue;
        };
        let gw_ns = object_namespace(&gw.metadata);
        let server_hosts: Vec<String> = gw
            .spec
            .servers
            .iter()
            .flat_map(|s| &s.hosts)
            .filter_map(|h| host_for_namespace(h, gw_ns, ns))
            .collect();
        let found = server_hosts
            .iter()
            .any(|gh| vs.spec.hosts.iter().any(|vh| hosts_overlap(gh, vh)));
        if !found {
            out.push(Message::new(
                m::VIRTUAL_SERVICE_HOST_NOT_FOUND_IN_GATEWAY,
                object_origin(vs),
                m::virtual_service_host_not_found_in_gateway(
                    &vs.spec.hosts,
                    &full_name(&vs.metadata),
                    &wanted,
                ),
            ));
        }
    }
}

/// A Gateway that Istio generates from a Kubernetes Gateway
/// (`[namespace/]NAME~istio-autogenerated-k8s-gateway~...`, IST0165): not
/// to be referenced, its name is Istio's internal detail and changes.
fn is_internal_gateway(name: &str) -> bool {
    let name = name.split_once('/').map_or(name, |(_, n)| n);
    name.contains("~istio-autogenerated-k8s-gateway~")
}

/// A Gateway server host as a VirtualService in `vs_ns` sees it: hosts are
/// `[namespace/]host`, where the namespace (`*` any, `.` the Gateway's own)
/// limits which VirtualServices may bind; `None` when `vs_ns` may not.
fn host_for_namespace(server_host: &str, gw_ns: &str, vs_ns: &str) -> Option<String> {
    let Some((host_ns, host)) = server_host.split_once('/') else {
        return Some(server_host.to_string());
    };
    let allowed = match host_ns {
        "*" => true,
        "." => gw_ns == vs_ns,
        other => other == vs_ns,
    };
    allowed.then(|| host.to_string())
}
