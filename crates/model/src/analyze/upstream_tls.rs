//! DestinationRules that originate TLS without verifying the server:
//! `mode: SIMPLE` or `MUTUAL` with no `caCertificates` (IST0128 for the
//! rule's policy, IST0129 per port), istioctl's
//! `destinationrule.CaCertificateAnalyzer`. A `credentialName` on a rule
//! with a workloadSelector carries its own CA, as in Istio.
//!
//! And, where the files are on this machine (a `trellis up` mesh), the
//! `caCertificates`, `clientCertificate` and `privateKey` files a rule
//! names that cannot be read (IST0101): the proxy then fails that cluster.

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

/// IST0101 for each TLS file the DestinationRules in `resources` name that
/// `read` cannot open (`read` does the I/O: this crate does none).
pub fn unreadable_files(
    resources: &[api::Resource],
    mesh: &crate::MeshConfig,
    read: impl Fn(&str) -> Result<(), String>,
) -> Vec<Message> {
    let ctx = Context::new(resources, mesh);
    let mut out = Vec::new();
    for dr in &ctx.mesh.destination_rules {
        let policies = dr.spec.traffic_policy.iter().chain(
            dr.spec
                .subsets
                .iter()
                .filter_map(|s| s.traffic_policy.as_ref()),
        );
        let settings = policies.flat_map(|p| {
            p.tls.iter().chain(
                p.port_level_settings
                    .iter()
                    .filter_map(|pl| pl.tls.as_ref()),
            )
        });
        for tls in settings {
            for (field, path) in [
                ("caCertificates", &tls.ca_certificates),
                ("clientCertificate", &tls.client_certificate),
                ("privateKey", &tls.private_key),
            ] {
                let Some(path) = path.as_deref().filter(|p| !p.is_empty()) else {
                    continue;
                };
                if let Err(why) = read(path) {
                    out.push(Message::new(
                        m::REFERENCED_RESOURCE_NOT_FOUND,
                        object_origin(dr),
                        format!("{} ({why})", m::referenced_resource_not_found(field, path)),
                    ));
                }
            }
        }
    }
    out.sort_by(|a, b| (&a.resource, &a.message).cmp(&(&b.resource, &b.message)));
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unreadable_tls_files_are_named() {
        let yaml = "apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: api, namespace: shop}
spec:
  host: api.example.com
  trafficPolicy:
    portLevelSettings:
    - port: {number: 443}
      tls: {mode: SIMPLE, caCertificates: /gone/ca.pem}
  subsets:
  - name: v1
    trafficPolicy:
      tls: {mode: MUTUAL, caCertificates: /ok/ca.pem, clientCertificate: /ok/c.pem, privateKey: /gone/key.pem}
";
        let resources = api::parse("t.yaml", yaml).expect("parses");
        let out = unreadable_files(&resources, &crate::MeshConfig::default(), |p| {
            if p.starts_with("/gone/") {
                Err("No such file or directory".into())
            } else {
                Ok(())
            }
        });
        let texts: Vec<String> = out.iter().map(ToString::to_string).collect();
        assert_eq!(
            texts,
            [
                "Error [IST0101] (DestinationRule api.shop) Referenced caCertificates not found: \"/gone/ca.pem\" (No such file or directory)",
                "Error [IST0101] (DestinationRule api.shop) Referenced privateKey not found: \"/gone/key.pem\" (No such file or directory)",
            ]
        );
    }
}
