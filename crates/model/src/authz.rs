//! AuthorizationPolicy → the compiled policies of one inbound port, as
//! Istio's authz builder makes Envoy's RBAC filters for a sidecar.
//!
//! Which policies apply to a workload (Istio's `ListAuthorizationPolicies`
//! with its workload policy matcher):
//! - those in the root namespace (mesh-wide) and in the workload's namespace;
//! - `selector.matchLabels` narrows them to the workloads carrying those
//!   labels, root-namespace policies included (they then select in every
//!   namespace); no selector, or an empty one, selects every workload;
//! - `targetRef(s)`: a sidecar is targeted only as the deployment of a
//!   Gateway (kind `Gateway` naming the workload's
//!   `gateway.networking.k8s.io/gateway-name` label, in the policy's
//!   namespace). `Service`, `ServiceEntry` and `GatewayClass` references
//!   attach policies to waypoints, never to sidecars, so such a policy does
//!   not apply here at all.
//!
//! How each rule is reduced (Istio's authz `model.Generate`): every value
//! that cannot be used on this port — an HTTP-only attribute on a TCP port
//! (hosts, methods, paths, requestPrincipals, `request.headers[..]`,
//! `request.auth.*`), a malformed address or port — drops the whole rule
//! from an ALLOW policy (it never matches: "less likely to allow"), and is
//! left out of a DENY, AUDIT or CUSTOM rule, which then matches more ("more
//! likely to deny"). A rule with a condition key Istio does not know is
//! dropped whatever the action. A policy without rules never matches: as
//! ALLOW it still makes the port deny everything, as DENY it does nothing.
//!
//! CUSTOM: the policies carry their extension provider, resolved
//! (`crate::ext_authz`); the proxy checks what their rules select with it —
//! on TCP ports a connection, once at its start, with a gRPC provider
//! (Envoy's network ext_authz; istiod leaves an HTTP provider out of TCP
//! filter chains, and so does the proxy). As istiod, a workload's CUSTOM
//! policies must all name one provider: a provider that is missing or
//! invalid, or a second one, leaves them without, and the proxy then
//! denies what they select (istiod makes such rules DENY rules).

use api::Object;
use api::security::{
    Action, AuthorizationPolicy, Condition, PolicyTargetReference, Rule, WorkloadSelector,
};
use wire::pb;

use crate::mesh::Mesh;
use crate::registry::Workload;

/// Istio's annotation for policies that are evaluated and logged, never enforced.
const DRY_RUN: &str = "istio.io/dry-run";
/// The label Gateway API deployments carry, naming their Gateway.
const GATEWAY_NAME_LABEL: &str = "gateway.networking.k8s.io/gateway-name";

/// A workload's policies, compiled once for HTTP requests and once for TCP
/// connections. They are the same for every port of the workload: `ports`
/// and `destination.port` are matched by the proxy.
pub struct WorkloadAuthz {
    pub http: Vec<pb::AuthzPolicy>,
    pub tcp: Vec<pb::AuthzPolicy>,
}

impl WorkloadAuthz {
    pub fn new(mesh: &Mesh, w: &Workload) -> Self {
        let policies: Vec<_> = applicable(mesh, w).collect();
        let trust_domains: Vec<String> = std::iter::once(&mesh.config.trust_domain)
            .chain(&mesh.config.trust_domain_aliases)
            .cloned()
            .collect();
        let compile_all = |for_tcp: bool| {
            policies
                .iter()
                .map(|p| compile_policy(p, for_tcp, &trust_domains))
                .collect()
        };
        let mut http: Vec<pb::AuthzPolicy> = compile_all(false);
        let mut tcp: Vec<pb::AuthzPolicy> = compile_all(true);
        if let Some(ext) = custom_provider(mesh, w, &policies) {
            for p in http.iter_mut().chain(&mut tcp) {
                if p.action == pb::AuthzAction::Custom as i32 {
                    p.ext_authz = Some(ext.clone());
                }
            }
        }
        WorkloadAuthz { http, tcp }
    }

    /// The HTTP and TCP policies of a port serving `protocol` (a port of
    /// unknown protocol is sniffed, so it gets both).
    pub fn for_port(&self, protocol: pb::Protocol) -> (Vec<pb::AuthzPolicy>, Vec<pb::AuthzPolicy>) {
        use pb::Protocol::*;
        let (http, tcp) = match protocol {
            Http | Http2 | Grpc => (true, false),
            Tcp | Tls | Https => (false, true),
            Unspecified => (true, true),
        };
        (
            if http { self.http.clone() } else { Vec::new() },
            if tcp { self.tcp.clone() } else { Vec::new() },
        )
    }
}

/// The one extension provider of the CUSTOM policies among `policies`,
/// resolved; `None` (their requests are denied) when there are none, when
/// they name more than one, or when it cannot be used — logged, and
/// reported by `analyze`.
fn custom_provider(
    mesh: &Mesh,
    w: &Workload,
    policies: &[&Object<AuthorizationPolicy>],
) -> Option<pb::ExtAuthz> {
    let mut names: Vec<&str> = policies
        .iter()
        .filter(|p| p.spec.action == Some(Action::Custom))
        .filter_map(|p| p.spec.provider.as_ref().map(|x| x.name.as_str()))
        .collect();
    names.sort_unstable();
    names.dedup();
    match names.as_slice() {
        [] => None,
        [name] => match crate::ext_authz::resolve(mesh, name) {
            Ok(ext) => Some(ext),
            Err(e) => {
                tracing::warn!(workload = %w.name, namespace = %w.namespace, "{e}; the CUSTOM authorization policies naming it deny what they select");
                None
            }
        },
        more => {
            tracing::warn!(workload = %w.name, namespace = %w.namespace, providers = ?more, "CUSTOM authorization policies of one workload name more than one provider (Istio allows one); they deny what they select");
            None
        }
    }
}

/// The policies that apply to `w`: the root namespace's first (Istio
/// evaluates root-namespace DENY policies before the others), then the
/// workload's namespace's, each in namespace/name order.
pub fn applicable<'a>(
    mesh: &'a Mesh,
    w: &'a Workload,
) -> impl Iterator<Item = &'a Object<AuthorizationPolicy>> + 'a {
    let root = mesh.config.root_namespace.as_str();
    let in_ns = move |ns: &'a str| {
        mesh.authorization_policies
            .iter()
            .filter(move |p| p.metadata.namespace.as_deref().unwrap_or("default") == ns)
    };
    let own = (w.namespace != root)
        .then(|| in_ns(&w.namespace))
        .into_iter()
        .flatten();
    in_ns(root).chain(own).filter(move |p| attaches(p, w))
}

fn attaches(p: &Object<AuthorizationPolicy>, w: &Workload) -> bool {
    attaches_to(
        p.metadata.namespace.as_deref().unwrap_or("default"),
        p.spec.selector.as_ref(),
        p.spec.target_ref.iter().chain(&p.spec.target_refs),
        w,
    )
}

/// Whether a security policy (AuthorizationPolicy, RequestAuthentication) of
/// namespace `ns` with this selector and these target references applies to
/// `w` (see the module's doc); the caller has already picked the namespaces.
pub(crate) fn attaches_to<'a>(
    ns: &str,
    selector: Option<&WorkloadSelector>,
    target_refs: impl Iterator<Item = &'a PolicyTargetReference>,
    w: &Workload,
) -> bool {
    let refs: Vec<&PolicyTargetReference> = target_refs.collect();
    if refs.is_empty() {
        return selector.is_none_or(|s| {
            s.match_labels
                .iter()
                .all(|(k, v)| w.labels.get(k) == Some(v))
        });
    }
    refs.iter().any(|r| {
        r.kind == "Gateway"
            && (r.group.is_empty() || r.group == "gateway.networking.k8s.io")
            && (r.namespace.is_empty() || r.namespace == ns)
            && w.namespace == ns
            && w.labels.get(GATEWAY_NAME_LABEL) == Some(&r.name)
    })
}

/// One policy for HTTP (`for_tcp` false) or TCP; `trust_domains`: the
/// mesh's trust domain, then its aliases.
pub fn compile_policy(
    p: &Object<AuthorizationPolicy>,
    for_tcp: bool,
    trust_domains: &[String],
) -> pb::AuthzPolicy {
    let ns = p.metadata.namespace.as_deref().unwrap_or("default");
    let action = p.spec.action.unwrap_or(Action::Allow);
    let rules = p
        .spec
        .rules
        .iter()
        .enumerate()
        .filter_map(|(i, r)| {
            let compiled = compile_rule(r, i as u32, ns, action, for_tcp, trust_domains);
            if compiled.is_none() {
                tracing::debug!(policy = %p.metadata.name, namespace = ns, rule = i, tcp = for_tcp, "authorization rule skipped on this port");
            }
            compiled
        })
        .collect();
    pb::AuthzPolicy {
        name: format!("ns[{ns}]-policy[{}]", p.metadata.name),
        action: match action {
            Action::Allow => pb::AuthzAction::Allow,
            Action::Deny => pb::AuthzAction::Deny,
            Action::Audit => pb::AuthzAction::Audit,
            Action::Custom => pb::AuthzAction::Custom,
        } as i32,
        rules,
        dry_run: p
            .metadata
            .annotations
            .get(DRY_RUN)
            .is_some_and(|v| parse_bool(v)),
        ext_authz: None,
    }
}

/// Istio's trust domain aliases (`trustdomain.Bundle`): a principal whose
/// trust domain is the mesh's, one of its aliases or `cluster.local` (which
/// stands for the local trust domain) is that identity in each of
/// `trust_domains`. One that names no trust domain (`*`, `*/ns/...`, a
/// `*suffix`) or another trust domain stays as written.
fn with_trust_domain_aliases(principals: &[String], trust_domains: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(principals.len());
    for p in principals {
        let expanded = match p.split_once('/') {
            Some((td, rest))
                if !td.starts_with('*')
                    && (td == "cluster.local" || trust_domains.iter().any(|t| t == td)) =>
            {
                trust_domains
                    .iter()
                    .map(|t| format!("{t}/{rest}"))
                    .collect()
            }
            _ => vec![p.clone()],
        };
        for e in expanded {
            if !out.contains(&e) {
                out.push(e);
            }
        }
    }
    out
}

/// Go's `strconv.ParseBool`, which Istio uses for the dry-run annotation
/// (anything else is false).
fn parse_bool(v: &str) -> bool {
    matches!(v, "1" | "t" | "T" | "TRUE" | "true" | "True")
}

/// `None`: the rule is dropped (it can never match on this port).
fn compile_rule(
    r: &Rule,
    index: u32,
    policy_ns: &str,
    action: Action,
    for_tcp: bool,
    trust_domains: &[String],
) -> Option<pb::AuthzRule> {
    let b = Builder {
        lenient: action != Action::Allow,
        for_tcp,
        policy_ns,
        trust_domains,
    };
    let mut when = Vec::new();
    for c in &r.when {
        if let Some(m) = b.condition(c)? {
            when.push(m);
        }
    }
    let mut from = Vec::new();
    for f in &r.from {
        let s = &f.source;
        let mut all = Vec::new();
        // Istio's order: principals, requestPrincipals, namespaces, remote IPs, IPs (service accounts with them).
        b.push(
            &mut all,
            Field::Principal,
            "",
            &s.principals,
            &s.not_principals,
        )?;
        b.push(
            &mut all,
            Field::RequestPrincipal,
            "",
            &s.request_principals,
            &s.not_request_principals,
        )?;
        b.push(
            &mut all,
            Field::Namespace,
            "",
            &s.namespaces,
            &s.not_namespaces,
        )?;
        b.push(
            &mut all,
            Field::ServiceAccount,
            "",
            &s.service_accounts,
            &s.not_service_accounts,
        )?;
        b.push(
            &mut all,
            Field::RemoteIp,
            "",
            &s.remote_ip_blocks,
            &s.not_remote_ip_blocks,
        )?;
        b.push(
            &mut all,
            Field::SourceIp,
            "",
            &s.ip_blocks,
            &s.not_ip_blocks,
        )?;
        from.push(pb::AuthzClause { all });
    }
    let mut to = Vec::new();
    for t in &r.to {
        let o = &t.operation;
        let mut all = Vec::new();
        b.push(&mut all, Field::Host, "", &o.hosts, &o.not_hosts)?;
        b.push(&mut all, Field::Method, "", &o.methods, &o.not_methods)?;
        b.push(&mut all, Field::Path, "", &o.paths, &o.not_paths)?;
        b.push(&mut all, Field::Port, "", &o.ports, &o.not_ports)?;
        to.push(pb::AuthzClause { all });
    }
    Some(pb::AuthzRule {
        index,
        from,
        to,
        when,
    })
}

/// An attribute as the policy names it, before it is reduced to a proxy field.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Field {
    Principal,
    RequestPrincipal,
    Namespace,
    ServiceAccount,
    SourceIp,
    RemoteIp,
    DestinationIp,
    Port,
    Sni,
    Host,
    Method,
    Path,
    Header,
    /// `request.auth.audiences`, `request.auth.presenter`, `request.auth.claims[..]`.
    Audiences,
    Presenter,
    Claim,
    EnvoyMetadata,
}

impl Field {
    fn http_only(self) -> bool {
        matches!(
            self,
            Field::RequestPrincipal
                | Field::Host
                | Field::Method
                | Field::Path
                | Field::Header
                | Field::Audiences
                | Field::Presenter
                | Field::Claim
        )
    }

    fn to_pb(self) -> pb::AuthzField {
        use pb::AuthzField as F;
        match self {
            Field::Principal => F::Principal,
            Field::Namespace => F::Namespace,
            Field::ServiceAccount => F::ServiceAccount,
            Field::SourceIp => F::SourceIp,
            Field::RemoteIp => F::RemoteIp,
            Field::DestinationIp => F::DestinationIp,
            Field::Port => F::DestinationPort,
            Field::Sni => F::Sni,
            Field::Host => F::Host,
            Field::Method => F::Method,
            Field::Path => F::Path,
            Field::Header => F::RequestHeader,
            Field::RequestPrincipal => F::RequestPrincipal,
            Field::Audiences => F::RequestAudiences,
            Field::Presenter => F::RequestPresenter,
            Field::Claim => F::RequestClaim,
            // No Envoy metadata in this proxy: the attribute is always absent.
            Field::EnvoyMetadata => F::Absent,
        }
    }
}

struct Builder<'a> {
    /// DENY, AUDIT, CUSTOM: an unusable value is left out instead of dropping the rule.
    lenient: bool,
    for_tcp: bool,
    policy_ns: &'a str,
    /// The mesh's trust domain, then its aliases.
    trust_domains: &'a [String],
}

impl Builder<'_> {
    /// A `when` condition: `None` drops the rule, `Some(None)` adds nothing.
    fn condition(&self, c: &Condition) -> Option<Option<pb::AuthzMatch>> {
        let key = c.key.as_str();
        let mut claim = Vec::new();
        let (field, header) = if let Some(rest) = key.strip_prefix("request.headers") {
            match rest.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
                Some(h) if !h.is_empty() && !h.contains(['[', ']']) => {
                    (Field::Header, h.to_ascii_lowercase())
                }
                // Istio: an error in the generator, handled per action.
                _ => return self.lenient.then_some(None),
            }
        } else if let Some(rest) = key.strip_prefix("request.auth.claims") {
            match claim_path(rest) {
                Some(path) => claim = path,
                None => return self.lenient.then_some(None),
            }
            (Field::Claim, String::new())
        } else {
            let f = match key {
                "source.ip" => Field::SourceIp,
                "remote.ip" => Field::RemoteIp,
                "source.namespace" => Field::Namespace,
                "source.principal" => Field::Principal,
                "source.serviceAccount" => Field::ServiceAccount,
                "request.auth.principal" => Field::RequestPrincipal,
                "request.auth.audiences" => Field::Audiences,
                "request.auth.presenter" => Field::Presenter,
                "destination.ip" => Field::DestinationIp,
                "destination.port" => Field::Port,
                "connection.sni" => Field::Sni,
                k if k.starts_with("experimental.envoy.filters.") => Field::EnvoyMetadata,
                // Istio skips a rule with an attribute it does not know, whatever the action.
                _ => return None,
            };
            (f, String::new())
        };
        let mut out = Vec::new();
        self.push(&mut out, field, &header, &c.values, &c.not_values)?;
        Some(out.pop().map(|m| pb::AuthzMatch { claim, ..m }))
    }

    /// Adds the matcher for one attribute to `all`; `None` drops the rule.
    fn push(
        &self,
        all: &mut Vec<pb::AuthzMatch>,
        field: Field,
        header: &str,
        values: &[String],
        not_values: &[String],
    ) -> Option<()> {
        if values.is_empty() && not_values.is_empty() {
            return Some(());
        }
        let (values, not_values) = if field == Field::Principal {
            (
                &with_trust_domain_aliases(values, self.trust_domains)[..],
                &with_trust_domain_aliases(not_values, self.trust_domains)[..],
            )
        } else {
            (values, not_values)
        };
        let values = self.usable(field, values)?;
        let not_values = self.usable(field, not_values)?;
        if values.is_empty() && not_values.is_empty() {
            return Some(());
        }
        all.push(pb::AuthzMatch {
            field: field.to_pb() as i32,
            header: header.to_string(),
            values,
            not_values,
            claim: Vec::new(),
        });
        Some(())
    }

    fn usable(&self, field: Field, values: &[String]) -> Option<Vec<String>> {
        let mut out = Vec::with_capacity(values.len());
        for v in values {
            match self.value(field, v) {
                Some(v) => out.push(v),
                None if self.lenient => {}
                None => return None,
            }
        }
        Some(out)
    }

    /// The value as the proxy takes it, or `None` where Istio's generator fails.
    fn value(&self, field: Field, v: &str) -> Option<String> {
        if self.for_tcp && field.http_only() {
            return None;
        }
        match field {
            Field::SourceIp | Field::RemoteIp | Field::DestinationIp => {
                cidr(v).then(|| v.to_string())
            }
            Field::Port => v.parse::<u16>().ok().map(|p| p.to_string()),
            // `<name>` alone is a service account of the policy's namespace.
            Field::ServiceAccount => Some(if v.contains('/') {
                v.to_string()
            } else {
                format!("{}/{v}", self.policy_ns)
            }),
            _ => Some(v.to_string()),
        }
    }
}

/// `[a][b]` (what follows `request.auth.claims`) → `[a, b]`, as Istio's
/// `extractNameInNestedBrackets`; `None` when malformed or empty.
fn claim_path(brackets: &str) -> Option<Vec<String>> {
    let inner = brackets.strip_prefix('[')?.strip_suffix(']')?;
    let path: Vec<String> = inner.split("][").map(str::to_string).collect();
    path.iter()
        .all(|p| !p.is_empty() && !p.contains(['[', ']']))
        .then_some(path)
}

/// An address or CIDR, as Istio's `AddrStrToCidrRange` accepts them.
pub fn cidr(v: &str) -> bool {
    match v.split_once('/') {
        None => v.parse::<std::net::IpAddr>().is_ok(),
        Some((ip, len)) => match (ip.parse::<std::net::IpAddr>(), len.parse::<u8>()) {
            (Ok(std::net::IpAddr::V4(_)), Ok(l)) => l <= 32,
            (Ok(std::net::IpAddr::V6(_)), Ok(l)) => l <= 128,
            _ => false,
        },
    }
}
