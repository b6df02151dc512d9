//! A DestinationRule's TLS mode against the PeerAuthentication of the
//! workloads it sends to (IST0113 MTLSPolicyConflict).
//!
//! Clients follow the DestinationRule, servers the PeerAuthentication; when
//! they disagree every connection fails: `tls.mode: DISABLE` towards a
//! STRICT server is refused as plaintext, `ISTIO_MUTUAL` towards a DISABLE
//! server sends TLS to a port that expects plaintext. A rule that sets no
//! TLS mode is left to auto mTLS, which follows the server and cannot
//! conflict. (istioctl retired its analyzer for this code with the old
//! authentication `Policy` kind; the code, name and text are kept.)

use api::Object;
use api::Resource;
use api::networking::{ClientTlsMode, DestinationRule};
use api::security::{MtlsMode, PeerAuthentication};

use super::context::Context;
use super::messages::{self as m};
use super::names::{full_name, labels_match, object_namespace};
use super::workload::Workload;
use super::{Message, object_origin};
use crate::host;
use crate::registry::TargetPort;

pub fn analyze(ctx: &Context<'_>, out: &mut Vec<Message>) {
    let policies = Policies::new(ctx);
    for dr in &ctx.mesh.destination_rules {
        destination_rule(ctx, &policies, dr, out);
    }
}

/// The server side's mode and the policy that set it (`None` for the
/// default, PERMISSIVE, which accepts both and conflicts with nothing).
struct Effective<'a> {
    mode: MtlsMode,
    policy: Option<&'a Object<PeerAuthentication>>,
}

struct Policies<'a> {
    all: Vec<&'a Object<PeerAuthentication>>,
    root_namespace: &'a str,
}

impl<'a> Policies<'a> {
    fn new(ctx: &Context<'a>) -> Self {
        let mut all: Vec<&Object<PeerAuthentication>> = ctx
            .resources
            .iter()
            .filter_map(|r| match r {
                Resource::PeerAuthentication(pa) => Some(pa),
                _ => None,
            })
            .collect();
        // Istio prefers the oldest policy; files carry no age, so name order.
        all.sort_by_key(|pa| full_name(&pa.metadata));
        Policies {
            all,
            root_namespace: &ctx.config.root_namespace,
        }
    }

    /// The mode for one workload's container port: a policy selecting the
    /// workload (its port-level setting first), else the namespace's, else
    /// the mesh's. UNSET inherits from the next level, as in Istio.
    fn for_workload(&self, w: &Workload, port: Option<i32>) -> Effective<'a> {
        let selecting = self.all.iter().find(|pa| {
            object_namespace(&pa.metadata) == w.namespace
                && pa.spec.selector.as_ref().is_some_and(|s| {
                    !s.match_labels.is_empty() && labels_match(&s.match_labels, &w.labels)
                })
        });
        if let Some(pa) = selecting {
            let port_mode = port
                .and_then(|p| u32::try_from(p).ok())
                .and_then(|p| pa.spec.port_level_mtls.as_ref()?.get(&p))
                .and_then(|t| t.mode);
            if let Some(mode) = port_mode
                .filter(|m| *m != MtlsMode::Unset)
                .or_else(|| set_mode(pa))
            {
                return Effective {
                    mode,
                    policy: Some(pa),
                };
            }
        }
        self.for_namespace(&w.namespace)
    }

    fn for_namespace(&self, ns: &str) -> Effective<'a> {
        for level in [ns, self.root_namespace] {
            let wide = self.all.iter().find(|pa| {
                object_namespace(&pa.metadata) == level
                    && pa
                        .spec
                        .selector
                        .as_ref()
                        .is_none_or(|s| s.match_labels.is_empty())
            });
            if let Some(mode) = wide.and_then(|pa| set_mode(pa)) {
                return Effective {
                    mode,
                    policy: wide.copied(),
                };
            }
        }
        Effective {
            mode: MtlsMode::Permissive,
            policy: None,
        }
    }
}

fn set_mode(pa: &Object<PeerAuthentication>) -> Option<MtlsMode> {
    pa.spec
        .mtls
        .as_ref()
        .and_then(|t| t.mode)
        .filter(|m| *m != MtlsMode::Unset)
}

/// Whether the rule makes clients use Istio mTLS on `port` (`Some(true)`),
/// plaintext (`Some(false)`), or leaves it to auto mTLS or non-mesh TLS (`None`).
fn client_mtls(dr: &DestinationRule, port: Option<u32>) -> Option<bool> {
    let policy = dr.traffic_policy.as_ref()?;
    let port_level = policy
        .port_level_settings
        .iter()
        .find(|s| port.is_some() && s.port.as_ref().map(|p| p.number) == port)
        .and_then(|s| s.tls.as_ref())
        .and_then(|t| t.mode);
    match port_level.or_else(|| policy.tls.as_ref().and_then(|t| t.mode))? {
        ClientTlsMode::IstioMutual => Some(true),
        ClientTlsMode::Disable => Some(false),
        ClientTlsMode::Simple | ClientTlsMode::Mutual => None,
    }
}

fn destination_rule(
    ctx: &Context<'_>,
    policies: &Policies<'_>,
    dr: &Object<DestinationRule>,
    out: &mut Vec<Message>,
) {
    let dr_ns = object_namespace(&dr.metadata);
    let pattern = ctx.fqdn(&dr.spec.host, dr_ns);
    // The services this rule is the one in force for, seen from its own
    // namespace (a more specific rule elsewhere in the lookup order wins).
    let services: Vec<_> = ctx
        .mesh
        .registry
        .services
        .values()
        .filter(|s| host::matches(&pattern, &s.hostname))
        .filter(|s| {
            ctx.mesh
                .destination_rule(&s.hostname, dr_ns)
                .is_some_and(|d| std::ptr::eq(d, dr))
        })
        .collect();
    let mut report = |host: &str, client: bool, server: Effective<'_>| {
        let Some(policy) = server.policy else { return };
        let conflict = matches!(
            (client, server.mode),
            (true, MtlsMode::Disable) | (false, MtlsMode::Strict)
        );
        if conflict {
            out.push(Message::new(
                m::MTLS_POLICY_CONFLICT,
                object_origin(dr),
                m::mtls_policy_conflict(
                    host,
                    &full_name(&dr.metadata),
                    client,
                    &full_name(&policy.metadata),
                    server.mode.as_str(),
                ),
            ));
        }
    };
    if services.is_empty() {
        // No Service in the input: judge by the namespace the host names
        // (or the whole mesh for `*.local`-style rules).
        let Some(client) = client_mtls(&dr.spec, None) else {
            return;
        };
        if let Some(ns) = host_namespace(&pattern, &ctx.config.domain_suffix) {
            let ns = ns.unwrap_or(&ctx.config.root_namespace);
            report(&pattern, client, policies.for_namespace(ns));
        }
        return;
    }
    for svc in services {
        for port in &svc.ports {
            let Some(client) = client_mtls(&dr.spec, Some(port.port)) else {
                continue;
            };
            let backends: Vec<&Workload> = if svc.selector.is_empty() {
                Vec::new()
            } else {
                ctx.selected(Some(&svc.namespace), &svc.selector).collect()
            };
            if backends.is_empty() {
                report(
                    &svc.hostname,
                    client,
                    policies.for_namespace(&svc.namespace),
                );
            }
            for w in backends {
                let target = match &port.target_port {
                    TargetPort::Number(n) => i32::try_from(*n).ok(),
                    TargetPort::Name(name) => w.target_port(name),
                };
                report(&svc.hostname, client, policies.for_workload(w, target));
            }
        }
    }
}

/// The namespace a cluster-local host pattern lives in: `Some(Some(ns))`
/// for `name.ns.svc.<suffix>` (or `*.ns.svc.<suffix>`), `Some(None)` for a
/// pattern covering every namespace (`*`, `*.local`, `*.svc.<suffix>`),
/// `None` for hosts outside the cluster.
fn host_namespace<'h>(pattern: &'h str, suffix: &str) -> Option<Option<&'h str>> {
    let mesh_wide = [
        "*".to_string(),
        "*.local".to_string(),
        format!("*.{suffix}"),
        format!("*.svc.{suffix}"),
    ];
    if mesh_wide.iter().any(|p| p == pattern) {
        return Some(None);
    }
    let rest = pattern.strip_suffix(&format!(".svc.{suffix}"))?;
    let ns = rest.rsplit('.').next()?;
    (!ns.is_empty() && ns != "*" && rest.contains('.')).then_some(Some(ns))
}
