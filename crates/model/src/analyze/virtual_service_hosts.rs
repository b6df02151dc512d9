//! VirtualServices that claim the same host.
//!
//! For sidecars (the `mesh` gateway) only one VirtualService per host is
//! used and which one is undefined: istioctl's IST0109. On a named Gateway
//! the routes of all of them are merged, in creation order in Istio and in
//! name order in Trellis; that is only a problem when one of them has a
//! route that matches everything, which then hides the routes merged after
//! it. istioctl does not check that case (istio/istio#37500); TRL0003 does.

use std::collections::BTreeMap;

use api::Object;
use api::networking::{HttpMatchRequest, HttpRoute, StringMatch, VirtualService};

use super::context::Context;
use super::messages::{self as m};
use super::names::{full_name, hosts_overlap, object_namespace};
use super::{Message, object_origin};
use crate::routes;

pub fn analyze(ctx: &Context<'_>, out: &mut Vec<Message>) {
    mesh_gateway(ctx, out);
    named_gateways(ctx, out);
}

fn mesh_gateway(ctx: &Context<'_>, out: &mut Vec<Message>) {
    // (scope, fqdn) → VirtualServices, as istioctl keys them: a host only
    // conflicts with the same host exported to the same namespaces, or with
    // a host it overlaps (`*.example.com` and `a.example.com`) exported to
    // every namespace.
    let mut by_host: BTreeMap<(String, String), Vec<&Object<VirtualService>>> = BTreeMap::new();
    for vs in &ctx.mesh.virtual_services {
        let bound_to_mesh =
            vs.spec.gateways.is_empty() || vs.spec.gateways.iter().any(|g| g == "mesh");
        if !bound_to_mesh {
            continue;
        }
        let ns = object_namespace(&vs.metadata);
        for scope in export_scopes(&vs.spec.export_to, ns) {
            for h in &vs.spec.hosts {
                let list = by_host.entry((scope.clone(), ctx.fqdn(h, ns))).or_default();
                // A VirtualService listing one host twice does not conflict with itself.
                if !list.iter().any(|v| std::ptr::eq(*v, vs)) {
                    list.push(vs);
                }
            }
        }
    }
    // Each VirtualService is reported once, for the first host it conflicts on.
    let mut reported = std::collections::BTreeSet::new();
    for ((scope, fqdn), list) in &by_host {
        let mut list = list.clone();
        if scope != "*" {
            for ((other_scope, other), more) in &by_host {
                if other_scope == "*" && hosts_overlap(fqdn, other) {
                    list.extend(more.iter().copied());
                }
            }
        }
        if list.len() < 2 {
            continue;
        }
        let names = list
            .iter()
            .map(|v| full_name(&v.metadata))
            .collect::<Vec<_>>()
            .join(",");
        let host = format!("{scope}/{fqdn}");
        for vs in list {
            if !reported.insert(full_name(&vs.metadata)) {
                continue;
            }
            out.push(Message::new(
                m::CONFLICTING_MESH_GATEWAY_VIRTUAL_SERVICE_HOSTS,
                object_origin(vs),
                m::conflicting_mesh_gateway_virtual_service_hosts(&names, &host),
            ));
        }
    }
}

/// The namespaces a VirtualService's hosts are visible in: `*` for all
/// (no exportTo, or `*`), else each listed one (`.` being its own).
fn export_scopes(export_to: &[String], ns: &str) -> Vec<String> {
    if export_to.is_empty() || export_to.iter().any(|e| e == "*") {
        return vec!["*".into()];
    }
    let mut scopes: Vec<String> = export_to
        .iter()
        .map(|e| if e == "." { ns.to_string() } else { e.clone() })
        .collect();
    scopes.sort();
    scopes.dedup();
    scopes
}

fn named_gateways(ctx: &Context<'_>, out: &mut Vec<Message>) {
    // (gateway, fqdn) → VirtualServices bound to it for that host.
    let mut by_host: BTreeMap<(String, String), Vec<&Object<VirtualService>>> = BTreeMap::new();
    for vs in &ctx.mesh.virtual_services {
        let ns = object_namespace(&vs.metadata);
        let mut gateways: Vec<String> = vs
            .spec
            .gateways
            .iter()
            .filter(|g| *g != "mesh")
            .map(|g| routes::gateway_ref(g, ns))
            .collect();
        gateways.sort();
        gateways.dedup();
        for gw in gateways {
            let mut hosts: Vec<String> = vs.spec.hosts.iter().map(|h| ctx.fqdn(h, ns)).collect();
            hosts.sort();
            hosts.dedup();
            for h in hosts {
                by_host.entry((gw.clone(), h)).or_default().push(vs);
            }
        }
    }
    for ((gateway, host), list) in by_host.into_iter().filter(|(_, l)| l.len() > 1) {
        let Some(catch_all) = list
            .iter()
            .find(|vs| has_catch_all(&vs.spec.http, &gateway, object_namespace(&vs.metadata)))
        else {
            continue;
        };
        let names = list
            .iter()
            .map(|v| full_name(&v.metadata))
            .collect::<Vec<_>>()
            .join(",");
        for vs in &list {
            out.push(Message::new(
                m::CONFLICTING_GATEWAY_VIRTUAL_SERVICE_HOSTS,
                object_origin(vs),
                m::conflicting_gateway_virtual_service_hosts(
                    &names,
                    &gateway,
                    &host,
                    &full_name(&catch_all.metadata),
                ),
            ));
        }
    }
}

/// Whether some HTTP route matches every request that reaches `gateway`:
/// no match at all, or a match with no condition but `prefix: /`.
fn has_catch_all(routes: &[HttpRoute], gateway: &str, vs_ns: &str) -> bool {
    routes.iter().any(|r| {
        r.r#match.is_empty()
            || r.r#match
                .iter()
                .any(|mr| matches_everything(mr, gateway, vs_ns))
    })
}

fn matches_everything(mr: &HttpMatchRequest, gateway: &str, vs_ns: &str) -> bool {
    let uri_any = match &mr.uri {
        None => true,
        Some(StringMatch::Prefix(p)) => p.is_empty() || p == "/",
        Some(StringMatch::Regex(r)) => r == ".*" || r == "/.*",
        Some(StringMatch::Exact(_)) => false,
    };
    let gateway_any = mr.gateways.is_empty()
        || mr
            .gateways
            .iter()
            .any(|g| routes::gateway_ref(g, vs_ns) == gateway);
    let bare = HttpMatchRequest {
        name: mr.name.clone(),
        uri: mr.uri.clone(),
        gateways: mr.gateways.clone(),
        ignore_uri_case: mr.ignore_uri_case,
        stat_prefix: mr.stat_prefix.clone(),
        ..Default::default()
    };
    uri_any && gateway_any && *mr == bare
}
