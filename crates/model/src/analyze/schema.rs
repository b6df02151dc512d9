//! IST0106 SchemaValidationError: every rule an Istio resource breaks on
//! its own (and IST0133 SchemaWarning: what Istio accepts with a warning),
//! reported as a message on that resource — as istioctl's schema
//! analyzer does — instead of stopping the analysis. The other analyzers
//! still see the resource, so one typo does not hide every other finding.
//!
//! Kubernetes' own kinds (Pod, Service, Deployment, ...) are not checked:
//! istioctl reads them as the API server stores them and has no opinion on,
//! say, a Pod without an `image`.

use api::validate::Warning;

use super::messages as m;
use super::{Message, context::Context, origin};

pub fn analyze(ctx: &Context<'_>, out: &mut Vec<Message>) {
    // Kinds Trellis does not serve (EnvoyFilter, WasmPlugin, ...) are
    // checked too, as istioctl checks them.
    let checked = |r: &&api::Resource| r.kind().is_istio() || r.kind() == api::Kind::Unsupported;
    for r in ctx.resources.iter().filter(checked) {
        for e in api::validate(r) {
            out.push(schema_validation_error(origin(r), &e.to_string()));
        }
        for w in api::validate::warnings(r) {
            out.push(schema_warning(origin(r), &w));
        }
    }
}

/// IST0106 about `resource` (as [`origin`] names it), for a problem found
/// before analysis, such as a document that could not be decoded.
pub fn schema_validation_error(resource: String, error: &str) -> Message {
    Message::new(
        m::SCHEMA_VALIDATION_ERROR,
        resource,
        m::schema_validation_error(error),
    )
}

/// The message for a warning from Istio's validation: IST0130 and IST0131
/// for unreachable routes, IST0133 SchemaWarning for the rest.
fn schema_warning(resource: String, w: &Warning) -> Message {
    match w {
        Warning::Schema(text) => Message::new(m::SCHEMA_WARNING, resource, m::schema_warning(text)),
        Warning::UnreachableRule { rule, reason } => Message::new(
            m::VIRTUAL_SERVICE_UNREACHABLE_RULE,
            resource,
            m::virtual_service_unreachable_rule(rule, reason),
        ),
        Warning::IneffectiveMatch {
            rule,
            matched,
            duplicate,
        } => Message::new(
            m::VIRTUAL_SERVICE_INEFFECTIVE_MATCH,
            resource,
            m::virtual_service_ineffective_match(rule, matched, duplicate),
        ),
    }
}
