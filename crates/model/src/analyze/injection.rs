//! Sidecar injection: namespaces left out of the mesh (IST0102) and pods
//! that should have a proxy but run without one (IST0103).
//!
//! Istio injects only where a namespace asks (`istio-injection=enabled`);
//! `trellis up` injects everywhere unless a namespace opts out with
//! `istio-injection=disabled`. So on Trellis a namespace is "not injected"
//! exactly when it carries that label, and it is reported only when it
//! holds workloads, which will then run without sidecars (no mTLS, no
//! policy, no telemetry for them).

use std::collections::BTreeSet;

use api::Resource;

use super::context::Context;
use super::ingress::INGRESS_NAMESPACE;
use super::messages::{self as m};
use super::names::{is_system_namespace, namespace_of};
use super::workload::{pod_has_proxy, pod_opts_out};
use super::{Message, origin};

pub fn analyze(ctx: &Context<'_>, out: &mut Vec<Message>) {
    namespaces(ctx, out);
    pods(ctx, out);
}

fn namespaces(ctx: &Context<'_>, out: &mut Vec<Message>) {
    let with_workloads: BTreeSet<&str> = ctx
        .workloads
        .iter()
        .filter(|w| w.from_input)
        .map(|w| w.namespace.as_str())
        .collect();
    for r in ctx
        .resources
        .iter()
        .filter(|r| r.kind() == api::Kind::Namespace)
    {
        let name = r.name();
        // Istio's and Kubernetes' own namespaces run no sidecars by design.
        let exempt = name == ctx.config.root_namespace
            || name == INGRESS_NAMESPACE
            || is_system_namespace(name);
        if !exempt && !ctx.namespace_injected(name) && with_workloads.contains(name) {
            out.push(Message::new(
                m::NAMESPACE_NOT_INJECTED,
                origin(r),
                m::namespace_not_injected(name),
            ));
        }
    }
}

/// A Pod in the input (say, from a cluster) in an injected namespace, not
/// opted out and not on the host network, must carry a proxy.
fn pods(ctx: &Context<'_>, out: &mut Vec<Message>) {
    for r in ctx.resources {
        let Resource::Pod(p) = r else { continue };
        let ns = namespace_of(r);
        let spec = p.spec.clone().unwrap_or_default();
        let labels = p.metadata.labels.clone().unwrap_or_default();
        let annotations = p.metadata.annotations.clone().unwrap_or_default();
        if !ctx.namespace_injected(ns)
            || pod_opts_out(&labels, &annotations)
            || spec.host_network == Some(true)
            || pod_has_proxy(r, &spec)
        {
            continue;
        }
        out.push(Message::new(
            m::POD_MISSING_PROXY,
            origin(r),
            m::pod_missing_proxy(&format!("{ns}/{}", r.name())),
        ));
    }
}
