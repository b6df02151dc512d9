//! DestinationRules that originate TLS without verifying the server:
//! `mode: SIMPLE` or `MUTUAL` with no `caCertificates` (IST0128 for the
//! rule's policy, IST0129 per port), istioctl's
//! `destinationrule.CaCertificateAnalyzer`. A `credentialName` on a rule
//! with a workloadSelector carries its own CA, as in Istio.

use api::Object;
use api::networking::{ClientTlsMode, ClientTlsSettings, DestinationRule};

use super::context::Context;
use super::messages::{self as m};
use super::names::{full_name, object_namespace};
use super::{Message, object_origin};

pub fn analyze(ctx: &Context<'_>, out: &mut Vec<Message>) {
    for dr in &ctx.mesh.destination_rules {
        let Some(policy) = &dr.spec.traffic_policy else {
            continue;
        };
        let ns = object_namespace(&dr.metadata);
        if let Some(mode) = unverified(dr, policy.tls.as_ref()) {
            out.push(Message::new(
                m::NO_SERVER_CERTIFICATE_VERIFICATION_DESTINATION_LEVEL,
                object_origin(dr),
                m::no_server_certificate_verification_destination_level(
                    &full_name(&dr.metadata),
                    ns,
                    mode,
                    &dr.spec.host,
                ),
            ));
        }
        for p in &policy.port_level_settings {
            let Some(mode) = unverified(dr, p.tls.as_ref()) else {
                continue;
            };
            // Go's text form of the PortSelector message.
            let port = p
                .port
                .as_ref()
                .map(|p| format!("number:{}", p.number))
                .unwrap_or_default();
            out.push(Message::new(
                m::NO_SERVER_CERTIFICATE_VERIFICATION_PORT_LEVEL,
                object_origin(dr),
                m::no_server_certificate_verification_port_level(
                    &full_name(&dr.metadata),
                    ns,
                    mode,
                    &dr.spec.host,
                    &port,
                ),
            ));
        }
    }
}

/// The TLS mode's name when it originates TLS that nothing verifies.
fn unverified(
    dr: &Object<DestinationRule>,
    tls: Option<&ClientTlsSettings>,
) -> Option<&'static str> {
    let tls = tls?;
    let mode = tls
        .mode
        .filter(|m| matches!(m, ClientTlsMode::Simple | ClientTlsMode::Mutual))?;
    let has_ca = tls
        .ca_certificates
        .as_deref()
        .is_some_and(|c| !c.is_empty());
    let own_credential = tls
        .credential_name
        .as_deref()
        .is_some_and(|c| !c.is_empty())
        && dr.spec.workload_selector.is_some();
    (!has_ca && !own_credential).then(|| mode.as_str())
}
