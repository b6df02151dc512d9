//! The RequestAuthentication and Telemetry resources that apply to a pod,
//! selected as the compiler selects them ([`jwt::applicable`],
//! [`telemetry::applicable`]), each with why and what it sets.

use api::Object;
use api::selector::PolicyTargetReference;
use api::telemetry::{ProviderRef, Telemetry, WorkloadMode};
use serde::{Deserialize, Serialize};

use super::{Applied, attachment_why, namespace_of};
use crate::mesh::Mesh;
use crate::registry::Workload;
use crate::{jwt, telemetry};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RequestAuthenticationView {
    pub policy: Applied,
    /// The issuers whose tokens it validates (a request without a token
    /// passes on to AuthorizationPolicy).
    pub issuers: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TelemetryView {
    pub telemetry: Applied,
    /// `mesh`, `namespace` or `workload`: a more specific level overrides a
    /// less specific one.
    pub level: String,
    /// What it sets: `tracing: …`, `access logging: …`, `metrics: …`.
    pub sets: Vec<String>,
}

fn refs<'a>(
    one: Option<&'a PolicyTargetReference>,
    many: &'a [PolicyTargetReference],
) -> Vec<String> {
    one.into_iter()
        .chain(many)
        .map(|r| format!("{} {}", r.kind, r.name))
        .collect()
}

pub(super) fn request_authentications(mesh: &Mesh, w: &Workload) -> Vec<RequestAuthenticationView> {
    jwt::applicable(mesh, w)
        .map(|p| RequestAuthenticationView {
            policy: Applied {
                name: format!("{}/{}", namespace_of(&p.metadata), p.metadata.name),
                why: attachment_why(
                    mesh,
                    namespace_of(&p.metadata),
                    p.spec.selector.as_ref(),
                    &refs(p.spec.target_ref.as_ref(), &p.spec.target_refs),
                    w,
                ),
            },
            issuers: p.spec.jwt_rules.iter().map(|r| r.issuer.clone()).collect(),
        })
        .collect()
}

pub(super) fn telemetries(mesh: &Mesh, w: &Workload) -> Vec<TelemetryView> {
    telemetry::applicable(mesh, &w.namespace, Some(w))
        .into_iter()
        .map(|t| {
            let ns = namespace_of(&t.metadata);
            let targeted = refs(t.spec.target_ref.as_ref(), &t.spec.target_refs);
            let level = if t.spec.selector.is_some() || !targeted.is_empty() {
                "workload"
            } else if ns == mesh.config.root_namespace {
                "mesh"
            } else {
                "namespace"
            };
            TelemetryView {
                telemetry: Applied {
                    name: format!("{ns}/{}", t.metadata.name),
                    why: attachment_why(mesh, ns, t.spec.selector.as_ref(), &targeted, w),
                },
                level: level.into(),
                sets: sets(t),
            }
        })
        .collect()
}

fn sets(t: &Object<Telemetry>) -> Vec<String> {
    let providers = |p: &[ProviderRef]| {
        if p.is_empty() {
            "the default providers".to_string()
        } else {
            let names: Vec<&str> = p.iter().map(|p| p.name.as_str()).collect();
            format!("providers {}", names.join(","))
        }
    };
    let side = |mode: Option<WorkloadMode>| match mode {
        None | Some(WorkloadMode::ClientAndServer) => String::new(),
        Some(m) => format!(" ({} side)", m.as_str()),
    };
    let mut out = Vec::new();
    for tr in &t.spec.tracing {
        let mut s = format!("tracing: {}", providers(&tr.providers));
        if let Some(p) = tr.random_sampling_percentage {
            s.push_str(&format!(", sampling {p}%"));
        }
        if tr.disable_span_reporting == Some(true) {
            s.push_str(", span reporting disabled");
        }
        if !tr.custom_tags.is_empty() {
            s.push_str(&format!(", {} custom tags", tr.custom_tags.len()));
        }
        s.push_str(&side(tr.r#match.as_ref().and_then(|m| m.mode)));
        out.push(s);
    }
    for a in &t.spec.access_logging {
        let mut s = if a.disabled == Some(true) {
            "access logging: disabled".to_string()
        } else {
            format!("access logging: {}", providers(&a.providers))
        };
        if a.filter.is_some() {
            s.push_str(", filtered");
        }
        s.push_str(&side(a.r#match.as_ref().and_then(|m| m.mode)));
        out.push(s);
    }
    for m in &t.spec.metrics {
        let mut s = format!("metrics: {}", providers(&m.providers));
        if !m.overrides.is_empty() {
            s.push_str(&format!(", {} overrides", m.overrides.len()));
        }
        out.push(s);
    }
    out
}
