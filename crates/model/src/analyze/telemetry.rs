//! Telemetry resources that compete for the same workload, istioctl's
//! `telemetry.DefaultSelectorAnalyzer` and `SelectorAnalyzer`: more than
//! one without a selector in a namespace (IST0160), or several selecting
//! one pod (IST0159). Which one applies is then undefined. And providers
//! the mesh config does not define, or of a kind that cannot do what the
//! Telemetry asks (TRL0006): the proxies would report nothing there.
//!
//! An access-logging entry that names no provider while the mesh sets no
//! default one (IST0157, istioctl's `telemetry.ProviderAnalyzer`) is
//! ignored by Istio.

use std::collections::BTreeMap;

use api::Object;
use api::Resource;
use api::telemetry::Telemetry;

use super::context::Context;
use super::messages::{self as m};
use super::names::{labels_match, object_namespace};
use super::{Message, object_origin};

pub fn analyze(ctx: &Context<'_>, out: &mut Vec<Message>) {
    let mut telemetries: Vec<&Object<Telemetry>> = ctx
        .resources
        .iter()
        .filter_map(|r| match r {
            Resource::Telemetry(t) => Some(&**t),
            _ => None,
        })
        .collect();
    telemetries.sort_by_key(|t| {
        (
            object_namespace(&t.metadata).to_string(),
            t.metadata.name.clone(),
        )
    });

    let no_default_log_provider = ctx.config.default_providers.access_logging.is_empty();
    for t in telemetries.iter().filter(|_| no_default_log_provider) {
        let empty = t
            .spec
            .access_logging
            .iter()
            .any(|l| l.disabled != Some(true) && l.providers.is_empty());
        if empty {
            out.push(Message::new(
                m::INVALID_TELEMETRY_PROVIDER,
                object_origin(t),
                m::invalid_telemetry_provider(&t.metadata.name, object_namespace(&t.metadata)),
            ));
        }
    }

    let mut without_selector: BTreeMap<&str, Vec<&Object<Telemetry>>> = BTreeMap::new();
    for t in telemetries.iter().filter(|t| t.spec.selector.is_none()) {
        without_selector
            .entry(object_namespace(&t.metadata))
            .or_default()
            .push(t);
    }
    for (ns, list) in without_selector.into_iter().filter(|(_, l)| l.len() > 1) {
        let names: Vec<String> = list.iter().map(|t| t.metadata.name.clone()).collect();
        for t in list {
            out.push(Message::new(
                m::MULTIPLE_TELEMETRIES_WITHOUT_WORKLOAD_SELECTORS,
                object_origin(t),
                m::multiple_telemetries_without_workload_selectors(&names, ns),
            ));
        }
    }

    for t in &telemetries {
        unknown_providers(ctx, t, out);
    }

    for w in ctx.workloads.iter().filter(|w| w.from_input) {
        let selecting: Vec<&&Object<Telemetry>> = telemetries
            .iter()
            .filter(|t| object_namespace(&t.metadata) == w.namespace)
            .filter(|t| selector(t).is_some_and(|sel| labels_match(sel, &w.labels)))
            .collect();
        if selecting.len() < 2 {
            continue;
        }
        let names: Vec<String> = selecting.iter().map(|t| t.metadata.name.clone()).collect();
        for t in selecting {
            out.push(Message::new(
                m::CONFLICTING_TELEMETRY_WORKLOAD_SELECTORS,
                object_origin(t),
                m::conflicting_telemetry_workload_selectors(&names, &w.namespace, &w.name),
            ));
        }
    }
}

/// The labels a Telemetry selects by; `None` when it has no selector or
/// an empty one (istioctl ignores those for IST0159).
fn selector(t: &Object<Telemetry>) -> Option<&BTreeMap<String, String>> {
    t.spec
        .selector
        .as_ref()
        .map(|s| &s.match_labels)
        .filter(|l| !l.is_empty())
}

/// Each provider a Telemetry names must be an extensionProviders entry of
/// a kind that serves its section, or a built-in (`envoy` for access logs,
/// `prometheus` for metrics).
fn unknown_providers(ctx: &Context<'_>, t: &Object<Telemetry>, out: &mut Vec<Message>) {
    let providers = &ctx.config.extension_providers;
    let mut check = |section: &str,
                     i: usize,
                     names: &[api::telemetry::ProviderRef],
                     kinds: &[&str],
                     builtin: &str| {
        for (j, p) in names.iter().enumerate() {
            let path = format!("spec.{section}[{i}].providers[{j}].name");
            let text = match providers.iter().find(|e| e.name == p.name) {
                _ if p.name == builtin => continue,
                Some(e) if kinds.contains(&e.kind()) => continue,
                Some(e) => format!(
                    "{path}: provider {:?} is a {} provider; {section} needs one of: {}",
                    p.name,
                    e.kind(),
                    kinds.join(", ")
                ),
                None => format!(
                    "{path}: provider {:?} is not defined in meshConfig.extensionProviders",
                    p.name
                ),
            };
            out.push(Message::new(
                m::UNKNOWN_TELEMETRY_PROVIDER,
                object_origin(t),
                text,
            ));
        }
    };
    for (i, tr) in t.spec.tracing.iter().enumerate() {
        check(
            "tracing",
            i,
            &tr.providers,
            &["opentelemetry", "zipkin"],
            "",
        );
    }
    for (i, a) in t.spec.access_logging.iter().enumerate() {
        check(
            "accessLogging",
            i,
            &a.providers,
            &["envoyFileAccessLog"],
            crate::telemetry::ENVOY_PROVIDER,
        );
    }
    for (i, mt) in t.spec.metrics.iter().enumerate() {
        check(
            "metrics",
            i,
            &mt.providers,
            &["prometheus"],
            crate::telemetry::PROMETHEUS_PROVIDER,
        );
    }
}
