//! ServiceEntries whose TCP ports cannot be told apart without an address
//! (IST0134), istioctl's `serviceentry.ProtocolAddressesAnalyzer`: a TCP
//! (or unspecified) port with no `addresses` can only be matched by port,
//! so every such entry on that port collides — unless DNS capture
//! allocates addresses (`ISTIO_META_DNS_CAPTURE` together with
//! `ISTIO_META_DNS_AUTO_ALLOCATE` in the mesh's proxy metadata).

use super::context::Context;
use super::messages::{self as m};
use super::{Message, object_origin};

pub fn analyze(ctx: &Context<'_>, out: &mut Vec<Message>) {
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
