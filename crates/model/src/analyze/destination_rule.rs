//! DestinationRules: a host nothing serves (IST0174), a subset no pod
//! carries (IST0173), and two rules for one host (TRL0002).
//!
//! Istio merges DestinationRules for one host in one namespace (subsets
//! appended, the oldest traffic policy kept). Trellis's compiler uses one
//! rule per host, so the others' subsets and policies are lost: that is an
//! Error here, where istioctl has no check at all.

use std::collections::BTreeMap;

use api::Object;
use api::networking::DestinationRule;

use super::context::Context;
use super::messages::{self as m};
use super::names::{full_name, labels_match, object_namespace};
use super::{Message, object_origin};

pub fn analyze(ctx: &Context<'_>, out: &mut Vec<Message>) {
    for dr in &ctx.mesh.destination_rules {
        hosts_and_subsets(ctx, dr, out);
    }
    conflicts(ctx, out);
}

fn hosts_and_subsets(ctx: &Context<'_>, dr: &Object<DestinationRule>, out: &mut Vec<Message>) {
    let ns = object_namespace(&dr.metadata);
    // A wildcard rule (`*.local`, `*.example.com`) is a policy for whatever
    // matches, now or later; it names no one host that could be missing.
    if dr.spec.host.is_empty() || dr.spec.host.contains('*') {
        return;
    }
    let Some(target) = ctx.find_host(&dr.spec.host, ns) else {
        out.push(Message::new(
            m::UNKNOWN_DESTINATION_RULE_HOST,
            object_origin(dr),
            m::unknown_destination_rule_host(&dr.spec.host),
        ));
        return;
    };
    // Whether a subset selects no pod needs every pod: only when the input
    // has workloads, and only for hosts whose endpoints are pods picked by
    // labels (a Service without selector has hand-made endpoints).
    let Some((svc_ns, selector)) = target
        .selector
        .filter(|(_, s)| ctx.has_input_workloads && !s.is_empty())
    else {
        return;
    };
    for subset in &dr.spec.subsets {
        let mut wanted = selector.clone();
        wanted.extend(subset.labels.clone());
        let selects_any = ctx
            .workloads
            .iter()
            .any(|w| w.namespace == svc_ns && labels_match(&wanted, &w.labels));
        if !selects_any {
            out.push(Message::new(
                m::DESTINATION_RULE_SUBSET_NOT_SELECT_PODS,
                object_origin(dr),
                m::destination_rule_subset_not_select_pods(&subset.name),
            ));
        }
    }
}

fn conflicts(ctx: &Context<'_>, out: &mut Vec<Message>) {
    // (namespace, fqdn) → rules; rules with a workloadSelector apply only to
    // the workloads they select and are left out, as Istio does.
    let mut by_host: BTreeMap<(String, String), Vec<&Object<DestinationRule>>> = BTreeMap::new();
    for dr in ctx
        .mesh
        .destination_rules
        .iter()
        .filter(|d| d.spec.workload_selector.is_none())
    {
        let ns = object_namespace(&dr.metadata);
        by_host
            .entry((ns.to_string(), ctx.fqdn(&dr.spec.host, ns)))
            .or_default()
            .push(dr);
    }
    for ((_, host), list) in by_host.into_iter().filter(|(_, l)| l.len() > 1) {
        let names = list
            .iter()
            .map(|d| full_name(&d.metadata))
            .collect::<Vec<_>>()
            .join(",");
        for dr in list {
            out.push(Message::new(
                m::CONFLICTING_DESTINATION_RULES,
                object_origin(dr),
                m::conflicting_destination_rules(&names, &host),
            ));
        }
    }
}
