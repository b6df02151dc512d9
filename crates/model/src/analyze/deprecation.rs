//! IST0002 Deprecated, istioctl's `deprecation.FieldAnalyzer`: fields Istio
//! still reads but means to drop (`fault.delay.percent`, replaced by
//! `percentage`), or reads and ignores (a Sidecar's
//! `outboundTrafficPolicy.egressProxy`).

use api::Resource;

use super::context::Context;
use super::messages::{self as m};
use super::{Message, object_origin};

pub fn analyze(ctx: &Context<'_>, out: &mut Vec<Message>) {
    for r in ctx.resources {
        match r {
            Resource::VirtualService(vs) => {
                let percent = vs.spec.http.iter().any(|route| {
                    route
                        .fault
                        .as_ref()
                        .and_then(|f| f.delay.as_ref())
                        .and_then(|d| d.percent)
                        .is_some_and(|p| p > 0)
                });
                if percent {
                    out.push(Message::new(
                        m::DEPRECATED,
                        object_origin(vs),
                        m::deprecated(
                            "HTTPRoute.fault.delay.percent is deprecated; use HTTPRoute.fault.delay.percentage",
                        ),
                    ));
                }
            }
            Resource::Sidecar(sc) => {
                let egress_proxy = sc
                    .spec
                    .outbound_traffic_policy
                    .as_ref()
                    .is_some_and(|p| p.egress_proxy.is_some());
                if egress_proxy {
                    out.push(Message::new(
                        m::DEPRECATED,
                        object_origin(sc),
                        m::deprecated("OutboundTrafficPolicy.EgressProxy ignored"),
                    ));
                }
            }
            _ => {}
        }
    }
}
