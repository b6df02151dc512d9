//! IST0138 GatewayDuplicateCertificate, istioctl's
//! `gateway.CertificateAnalyzer`: two Gateways serving one certificate to
//! the same workloads. A client that reuses an HTTP/2 connection for the
//! second host (its certificate covers both) reaches the server of the
//! first, which has no route for it: 404.

use api::Object;
use api::networking::{Gateway, ServerTlsSettings};

use super::context::Context;
use super::messages::{self as m};
use super::names::full_name;
use super::{Message, object_origin};

pub fn analyze(ctx: &Context<'_>, out: &mut Vec<Message>) {
    let gateways = &ctx.mesh.gateways;
    for gw in gateways {
        for other in gateways {
            let same = gw.metadata.name == other.metadata.name
                && gw.metadata.namespace == other.metadata.namespace;
            if same || !selects_subset(gw, other) {
                continue;
            }
            let shared = gw.spec.servers.iter().any(|a| {
                other.spec.servers.iter().any(|b| match (&a.tls, &b.tls) {
                    (Some(x), Some(y)) => same_certificate(x, y),
                    _ => false,
                })
            });
            if shared {
                out.push(Message::new(
                    m::GATEWAY_DUPLICATE_CERTIFICATE,
                    object_origin(gw),
                    m::gateway_duplicate_certificate(&[
                        full_name(&gw.metadata),
                        full_name(&other.metadata),
                    ]),
                ));
            }
        }
    }
}

/// Whether `other` runs on the workloads `gw` selects, as Istio's analyzer
/// decides it: every label of `gw`'s selector is in `other`'s with the same
/// value (an empty selector: any Gateway).
fn selects_subset(gw: &Object<Gateway>, other: &Object<Gateway>) -> bool {
    gw.spec
        .selector
        .iter()
        .all(|(k, v)| other.spec.selector.get(k) == Some(v))
}

/// The same credential, or the same certificate and key files.
fn same_certificate(a: &ServerTlsSettings, b: &ServerTlsSettings) -> bool {
    fn set(s: &Option<String>) -> Option<&str> {
        s.as_deref().filter(|v| !v.is_empty())
    }
    match (set(&a.credential_name), set(&b.credential_name)) {
        (Some(x), Some(y)) => x == y,
        (None, None) => {
            let cert = set(&a.server_certificate).zip(set(&b.server_certificate));
            let key = set(&a.private_key).zip(set(&b.private_key));
            matches!((cert, key), (Some((c1, c2)), Some((k1, k2))) if c1 == c2 && k1 == k2)
        }
        _ => false,
    }
}
