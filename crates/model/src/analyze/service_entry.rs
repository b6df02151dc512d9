//! ServiceEntries whose TCP ports cannot be told apart without an address
//! (IST0134), istioctl's `serviceentry.ProtocolAddressesAnalyzer`: a TCP
//! (or unspecified) port with no `addresses` can only be matched by port,
//! so every such entry on that port collides — unless DNS capture
//! allocates addresses (`ISTIO_META_DNS_CAPTURE` together with
//! `ISTIO_META_DNS_AUTO_ALLOCATE` in the mesh's proxy metadata).
//!
//! ServiceEntries that give one host and port different protocols
//! (IST0177), istioctl's `serviceentry.ConflictingServiceEntryProtocolAnalyzer`:
//! which protocol the proxy uses is then undefined.

use std::collections::{BTreeMap, BTreeSet};

use api::Object;
use api::networking::ServiceEntry;

use super::context::Context;
use super::messages::{self as m};
use super::names::{full_name, object_namespace};
use super::{Message, object_origin};

pub fn analyze(ctx: &Context<'_>, out: &mut Vec<Message>) {
    conflicting_protocols(ctx, out);
    if addresses_allocated(ctx) {
        return;
    }
    for se in &ctx.service_entries {
        if !se.spec.addresses.is_empty() {
            continue;
        }
        let tcp = se.spec.ports.iter().any(|p| {
            p.protocol
                .as_deref()
                .is_none_or(|proto| proto.is_empty() || proto.eq_ignore_ascii_case("TCP"))
        });
        if tcp {
            out.push(Message::new(
                m::SERVICE_ENTRY_ADDRESSES_REQUIRED,
                object_origin(se),
                m::service_entry_addresses_required(),
            ));
        }
    }
}

fn addresses_allocated(ctx: &Context<'_>) -> bool {
    let metadata = &ctx.config.default_config.proxy_metadata;
    let on = |k: &str| metadata.get(k).is_some_and(|v| v == "true");
    on("ISTIO_META_DNS_CAPTURE")
        && (on("ISTIO_META_DNS_AUTO_ALLOCATE") || on("PILOT_ENABLE_IP_AUTOALLOCATE"))
}

fn conflicting_protocols(ctx: &Context<'_>, out: &mut Vec<Message>) {
    // (scope, host as written, port) → (protocol, entry); the scope is `*`
    // or a namespace the entry is exported to.
    type Key<'k> = (String, &'k str, u32);
    let mut index: BTreeMap<Key<'_>, Vec<(String, &Object<ServiceEntry>)>> = BTreeMap::new();
    for se in &ctx.service_entries {
        let ns = object_namespace(&se.metadata);
        let export = &se.spec.export_to;
        let scopes: BTreeSet<String> = if export.is_empty() || export.iter().any(|e| e == "*") {
            ["*".to_string()].into()
        } else {
            export
                .iter()
                .map(|e| if e == "." { ns.to_string() } else { e.clone() })
                .collect()
        };
        for scope in scopes {
            for h in &se.spec.hosts {
                for p in &se.spec.ports {
                    let proto = p.protocol.clone().unwrap_or_default().to_ascii_uppercase();
                    index
                        .entry((scope.clone(), h.as_str(), p.number))
                        .or_default()
                        .push((proto, *se));
                }
            }
        }
    }
    let mut reported = BTreeSet::new();
    for ((scope, host, port), entries) in &index {
        let mut entries = entries.clone();
        if scope != "*"
            && let Some(everywhere) = index.get(&("*".to_string(), *host, *port))
        {
            entries.extend(everywhere.iter().cloned());
        }
        let protocols: BTreeSet<&str> = entries.iter().map(|(p, _)| p.as_str()).collect();
        if protocols.len() < 2 {
            continue;
        }
        let names: BTreeSet<String> = entries
            .iter()
            .map(|(_, se)| full_name(&se.metadata))
            .collect();
        let names: Vec<String> = names.into_iter().collect();
        let protocols: Vec<&str> = protocols.into_iter().collect();
        for (_, se) in &entries {
            if !reported.insert(full_name(&se.metadata)) {
                continue;
            }
            out.push(Message::new(
                m::CONFLICTING_SERVICE_ENTRY_PROTOCOL,
                object_origin(se),
                m::conflicting_service_entry_protocol(
                    &names.join(", "),
                    host,
                    *port,
                    &protocols.join(", "),
                ),
            ));
        }
    }
}
