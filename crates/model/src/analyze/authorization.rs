//! AuthorizationPolicies: sources that can never match (a namespace or a
//! service account that does not exist) and policies that apply to no
//! workload. istioctl's `auth.AuthorizationPoliciesAnalyzer`, extended to
//! principals and service accounts, which istioctl does not check.
//!
//! A source that can never match is worse than a typo: in an ALLOW policy it
//! silently denies the caller it meant to allow, in a DENY policy it lets
//! through the caller it meant to block.

use std::collections::BTreeMap;

use api::Object;
use api::Resource;
use api::security::{AuthorizationPolicy, Source};

use super::context::Context;
use super::messages::{self as m};
use super::names::{object_namespace, selector_string};
use super::{Message, object_origin};

pub fn analyze(ctx: &Context<'_>, out: &mut Vec<Message>) {
    for r in ctx.resources {
        let Resource::AuthorizationPolicy(ap) = r else {
            continue;
        };
        let origin = object_origin(ap);
        let ap_ns = object_namespace(&ap.metadata);
        for source in ap
            .spec
            .rules
            .iter()
            .flat_map(|rule| &rule.from)
            .map(|f| &f.source)
        {
            namespaces(ctx, source, &origin, out);
            identities(ctx, source, ap_ns, &origin, out);
        }
        matching_workloads(ctx, ap, &origin, out);
        custom_provider(ctx, ap, &origin, out);
    }
}

/// A CUSTOM policy whose extension provider cannot be used denies what it
/// selects (as istiod makes its rules DENY rules): say why.
fn custom_provider(
    ctx: &Context<'_>,
    ap: &Object<AuthorizationPolicy>,
    origin: &str,
    out: &mut Vec<Message>,
) {
    if ap.spec.action != Some(api::security::Action::Custom) {
        return;
    }
    let Some(name) = ap.spec.provider.as_ref().map(|p| p.name.as_str()) else {
        return;
    };
    if let Err(e) = crate::ext_authz::resolve(&ctx.mesh, name) {
        out.push(Message::new(
            m::UNUSABLE_AUTHORIZATION_PROVIDER,
            origin.to_string(),
            format!("{e}: the requests this CUSTOM policy selects are denied"),
        ));
    }
}

fn namespaces(ctx: &Context<'_>, source: &Source, origin: &str, out: &mut Vec<Message>) {
    for ns in source.namespaces.iter().chain(&source.not_namespaces) {
        if !ctx.namespace_exists(ns) {
            out.push(Message::new(
                m::REFERENCED_RESOURCE_NOT_FOUND,
                origin.to_string(),
                m::referenced_resource_not_found("namespace", ns),
            ));
        }
    }
}

/// Principals (`<trust domain>/ns/<ns>/sa/<sa>`) and service accounts
/// (`<ns>/<sa>`, or `<sa>` in the policy's namespace) naming an identity no
/// workload can have. Patterns with `*` are left alone.
fn identities(
    ctx: &Context<'_>,
    source: &Source,
    ap_ns: &str,
    origin: &str,
    out: &mut Vec<Message>,
) {
    let principals = source.principals.iter().chain(&source.not_principals);
    for p in principals.filter(|p| !p.contains('*')) {
        if let Some((ns, sa)) = parse_principal(p)
            && !identity_can_exist(ctx, ns, sa)
        {
            out.push(Message::new(
                m::REFERENCED_RESOURCE_NOT_FOUND,
                origin.to_string(),
                m::referenced_resource_not_found("service account", p),
            ));
        }
    }
    let accounts = source
        .service_accounts
        .iter()
        .chain(&source.not_service_accounts);
    for a in accounts.filter(|a| !a.contains('*')) {
        let (ns, sa) = a.split_once('/').unwrap_or((ap_ns, a));
        if !identity_can_exist(ctx, ns, sa) {
            out.push(Message::new(
                m::REFERENCED_RESOURCE_NOT_FOUND,
                origin.to_string(),
                m::referenced_resource_not_found("service account", a),
            ));
        }
    }
}

/// `cluster.local/ns/bookinfo/sa/reviews` → `("bookinfo", "reviews")`.
fn parse_principal(p: &str) -> Option<(&str, &str)> {
    let (_, rest) = p.split_once("/ns/")?;
    let (ns, sa) = rest.split_once("/sa/")?;
    (!ns.is_empty() && !sa.is_empty() && !sa.contains('/')).then_some((ns, sa))
}

/// The namespace must exist; the account too, where the input describes
/// the namespace's workloads (every namespace has `default`).
fn identity_can_exist(ctx: &Context<'_>, ns: &str, sa: &str) -> bool {
    if !ctx.namespaces.contains(ns) {
        return false;
    }
    sa == "default"
        || !ctx.namespaces_with_identities.contains(ns)
        || ctx
            .service_accounts
            .contains(&(ns.to_string(), sa.to_string()))
}

/// IST0127: the policy applies to no workload with a sidecar. Needs the
/// full list of workloads, so config-only input is not judged.
fn matching_workloads(
    ctx: &Context<'_>,
    ap: &Object<AuthorizationPolicy>,
    origin: &str,
    out: &mut Vec<Message>,
) {
    // Policies attached with targetRef apply to gateways and services, not
    // to workloads by label.
    if !ctx.has_input_workloads || ap.spec.target_ref.is_some() || !ap.spec.target_refs.is_empty() {
        return;
    }
    let ns = object_namespace(&ap.metadata);
    let empty = BTreeMap::new();
    let selector = ap
        .spec
        .selector
        .as_ref()
        .map_or(&empty, |s| &s.match_labels);
    let mesh_wide = ns == ctx.config.root_namespace;
    if mesh_wide && selector.is_empty() {
        return;
    }
    let scope = (!mesh_wide).then_some(ns);
    if !ctx.selected(scope, selector).any(|w| w.in_mesh) {
        out.push(Message::new(
            m::NO_MATCHING_WORKLOADS_FOUND,
            origin.to_string(),
            m::no_matching_workloads_found(&selector_string(selector)),
        ));
    }
}
