//! Sidecar resources that compete for the same workload: a namespace may
//! have one without a workloadSelector (IST0111), and a workload one that
//! selects it (IST0110). With more, which one applies is undefined.
//! istioctl's `sidecar.DefaultSelectorAnalyzer` and `SelectorAnalyzer`.

use std::collections::BTreeMap;

use api::Object;
use api::Resource;
use api::networking::Sidecar;

use super::context::Context;
use super::messages::{self as m};
use super::names::{labels_match, object_namespace};
use super::{Message, object_origin};

pub fn analyze(ctx: &Context<'_>, out: &mut Vec<Message>) {
    let mut sidecars: Vec<&Object<Sidecar>> = ctx
        .resources
        .iter()
        .filter_map(|r| match r {
            Resource::Sidecar(s) => Some(&**s),
            _ => None,
        })
        .collect();
    sidecars.sort_by_key(|s| {
        (
            object_namespace(&s.metadata).to_string(),
            s.metadata.name.clone(),
        )
    });

    let mut without_selector: BTreeMap<&str, Vec<&Object<Sidecar>>> = BTreeMap::new();
    for s in &sidecars {
        if selector(s).is_none() {
            without_selector
                .entry(object_namespace(&s.metadata))
                .or_default()
                .push(s);
        }
    }
    for (ns, list) in without_selector.into_iter().filter(|(_, l)| l.len() > 1) {
        let names: Vec<String> = list.iter().map(|s| s.metadata.name.clone()).collect();
        for s in list {
            out.push(Message::new(
                m::MULTIPLE_SIDECARS_WITHOUT_WORKLOAD_SELECTORS,
                object_origin(s),
                m::multiple_sidecars_without_workload_selectors(&names, ns),
            ));
        }
    }

    for w in &ctx.workloads {
        let selecting: Vec<&&Object<Sidecar>> = sidecars
            .iter()
            .filter(|s| object_namespace(&s.metadata) == w.namespace)
            .filter(|s| selector(s).is_some_and(|sel| labels_match(sel, &w.labels)))
            .collect();
        if selecting.len() < 2 {
            continue;
        }
        let names: Vec<String> = selecting.iter().map(|s| s.metadata.name.clone()).collect();
        for s in selecting {
            out.push(Message::new(
                m::CONFLICTING_SIDECAR_WORKLOAD_SELECTORS,
                object_origin(s),
                m::conflicting_sidecar_workload_selectors(&names, &w.namespace, &w.name),
            ));
        }
    }
}

/// The labels a Sidecar selects by; `None` (namespace-wide) when it has no
/// workloadSelector or an empty one.
fn selector(s: &Object<Sidecar>) -> Option<&BTreeMap<String, String>> {
    s.spec
        .workload_selector
        .as_ref()
        .map(|w| &w.labels)
        .filter(|l| !l.is_empty())
}
