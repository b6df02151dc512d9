//! Authorization: the compiled AuthorizationPolicies of an inbound port,
//! decided as Istio's Envoy RBAC filters decide.
//!
//! Order: CUSTOM — a request one of its rules selects is checked with the
//! policy's external authorizer (`crate::policy::ext_authz`, by the caller:
//! [`Engine::custom`]), or denied when the policy has none — then AUDIT
//! (logged only), then DENY — any matching rule denies — then ALLOW:
//! when the port has any ALLOW policy, a request that matches none of their
//! rules is denied ("rbac_access_denied_matched_policy[none]"). Dry-run
//! policies are evaluated and logged, never enforced.
//!
//! Everything is compiled when the config is applied (a value that does not
//! compile NACKs the config); deciding allocates nothing but for requests
//! that repeat a header a rule looks at. The path is the request's, already
//! normalised (see `crate::path`).

mod attrs;
mod matcher;
mod pattern;
#[cfg(test)]
mod testutil;

pub use attrs::{Attrs, HttpAttrs, remote_ip, trusted_client_ip};

use std::net::SocketAddr;
use std::sync::Arc;

use wire::pb;

use crate::policy::ext_authz::{ConnectionCheck, ExtAuthz};
use crate::snapshot::Snapshot;
use matcher::Matcher;

/// A listener's policies: for its HTTP requests and for its TCP connections,
/// and the request authentication (JWT) that HTTP authorization sees.
#[derive(Debug, Default)]
pub struct ListenerAuthz {
    pub http: Engine,
    pub tcp: Engine,
    pub jwt: crate::policy::jwt::Authn,
    /// What it was compiled from, to tell whether a new config changed it.
    source: (Vec<pb::AuthzPolicy>, Vec<pb::AuthzPolicy>, Vec<pb::JwtRule>),
}

impl PartialEq for ListenerAuthz {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl ListenerAuthz {
    pub fn compile(l: &pb::Listener) -> Result<Self, String> {
        Ok(ListenerAuthz {
            http: Engine::compile(&l.authz_http).map_err(|e| format!("authz_http: {e}"))?,
            tcp: Engine::compile(&l.authz_tcp).map_err(|e| format!("authz_tcp: {e}"))?,
            jwt: crate::policy::jwt::Authn::compile(&l.jwt_rules)
                .map_err(|e| format!("jwt_rules: {e}"))?,
            source: (
                l.authz_http.clone(),
                l.authz_tcp.clone(),
                l.jwt_rules.clone(),
            ),
        })
    }
}

/// The outcome for one request or connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// Envoy's response code details: `rbac_access_denied_matched_policy[<policy>-rule[<i>]]`,
    /// or `[none]` when no ALLOW rule matched.
    Deny(Arc<str>),
}

#[derive(Debug, Default)]
pub struct Engine {
    custom: Vec<Policy>,
    audit: Vec<Policy>,
    deny: Vec<Policy>,
    allow: Vec<Policy>,
    dry_run: Vec<Policy>,
}

#[derive(Debug)]
struct Policy {
    action: pb::AuthzAction,
    rules: Vec<Rule>,
    /// CUSTOM: the authorizer (`None`: what it selects is denied).
    ext_authz: Option<Arc<ExtAuthz>>,
}

/// What the CUSTOM policies make of a request.
pub enum Custom<'a> {
    /// No CUSTOM rule selects it.
    None,
    /// Selected: ask this authorizer, then [`Engine::decide_after_custom`].
    Check(&'a Arc<ExtAuthz>),
    /// Selected by a policy without a usable provider.
    Deny(Arc<str>),
}

#[derive(Debug)]
struct Rule {
    /// "<policy>-rule[<i>]", as Envoy names the RBAC policy.
    id: Arc<str>,
    denied: Arc<str>,
    from: Vec<Vec<Matcher>>,
    to: Vec<Vec<Matcher>>,
    when: Vec<Matcher>,
}

fn none_matched() -> Arc<str> {
    thread_local! {
        static NONE: Arc<str> = Arc::from("rbac_access_denied_matched_policy[none]");
    }
    NONE.with(Arc::clone)
}

impl Engine {
    pub fn compile(policies: &[pb::AuthzPolicy]) -> Result<Self, String> {
        let mut e = Engine::default();
        for p in policies {
            let action = pb::AuthzAction::try_from(p.action)
                .map_err(|_| format!("policy {:?}: unknown action {}", p.name, p.action))?;
            let rules = p
                .rules
                .iter()
                .map(|r| Rule::compile(&p.name, r))
                .collect::<Result<_, _>>()
                .map_err(|e| format!("policy {:?}: {e}", p.name))?;
            let ext_authz = match (&p.ext_authz, action) {
                (Some(x), pb::AuthzAction::Custom) => Some(Arc::new(
                    ExtAuthz::compile(x).map_err(|e| format!("policy {:?}: {e}", p.name))?,
                )),
                _ => None,
            };
            let policy = Policy {
                action,
                rules,
                ext_authz,
            };
            let list = match (p.dry_run, action) {
                (true, _) => &mut e.dry_run,
                (_, pb::AuthzAction::Custom) => &mut e.custom,
                (_, pb::AuthzAction::Audit) => &mut e.audit,
                (_, pb::AuthzAction::Deny) => &mut e.deny,
                (_, pb::AuthzAction::Allow) => &mut e.allow,
            };
            list.push(policy);
        }
        Ok(e)
    }

    /// No policy at all: everything is allowed, nothing to evaluate.
    pub fn is_empty(&self) -> bool {
        self.custom.is_empty()
            && self.audit.is_empty()
            && self.deny.is_empty()
            && self.allow.is_empty()
            && self.dry_run.is_empty()
    }

    /// The whole decision where no authorizer can be asked (a TCP
    /// connection): what a CUSTOM rule selects is denied.
    pub fn decide(&self, a: &Attrs<'_>) -> Decision {
        if self.is_empty() {
            return Decision::Allow;
        }
        for p in &self.custom {
            if let Some(rule) = p.first_match(a) {
                return Decision::Deny(rule.denied.clone());
            }
        }
        self.decide_after_custom(a)
    }

    /// The whole decision on a TCP connection, at its start. A CUSTOM rule
    /// that selects it asks its authorizer once, as Envoy's network
    /// ext_authz filter does: gRPC providers only — istiod leaves an HTTP
    /// provider out of TCP filter chains, so its rules do not apply there.
    pub async fn decide_connection(
        &self,
        peer: SocketAddr,
        a: &Attrs<'_>,
        snapshot: Option<&Snapshot>,
    ) -> Decision {
        if self.is_empty() {
            return Decision::Allow;
        }
        match self.custom(a) {
            Custom::None => {}
            Custom::Deny(details) => return Decision::Deny(details),
            Custom::Check(x) if !x.checks_connections() => {
                tracing::debug!(provider = x.provider(), %peer, "CUSTOM rule with an HTTP provider: not applied to TCP (as istiod)");
            }
            Custom::Check(x) => {
                let Some(snapshot) = snapshot else {
                    return Decision::Deny("ext_authz_error".into());
                };
                let check = ConnectionCheck {
                    source: peer,
                    principal: a.principal,
                    destination: a.destination,
                    sni: a.sni,
                };
                if let Err(details) = x.check_connection(snapshot, &check).await {
                    return Decision::Deny(details.into());
                }
            }
        }
        self.decide_after_custom(a)
    }

    /// The CUSTOM policies' part: whether a request is to be checked with
    /// an external authorizer. Costs nothing without CUSTOM policies.
    pub fn custom(&self, a: &Attrs<'_>) -> Custom<'_> {
        for p in &self.custom {
            if let Some(rule) = p.first_match(a) {
                return match &p.ext_authz {
                    Some(x) => Custom::Check(x),
                    None => Custom::Deny(rule.denied.clone()),
                };
            }
        }
        Custom::None
    }

    /// The rest of the decision once the CUSTOM policies let the request
    /// through: dry-run, AUDIT, DENY and ALLOW.
    pub fn decide_after_custom(&self, a: &Attrs<'_>) -> Decision {
        for p in &self.dry_run {
            if let Some(rule) = p.first_match(a) {
                tracing::info!(policy = %rule.id, action = ?p.action, "dry-run authorization policy matched (not enforced)");
            }
        }
        for p in &self.audit {
            if let Some(rule) = p.first_match(a) {
                tracing::info!(policy = %rule.id, source = %a.source, principal = a.principal.unwrap_or("-"), "audit authorization policy matched");
            }
        }
        for p in &self.deny {
            if let Some(rule) = p.first_match(a) {
                return Decision::Deny(rule.denied.clone());
            }
        }
        if self.allow.is_empty() || self.allow.iter().any(|p| p.first_match(a).is_some()) {
            Decision::Allow
        } else {
            Decision::Deny(none_matched())
        }
    }
}

impl Policy {
    fn first_match(&self, a: &Attrs<'_>) -> Option<&Rule> {
        self.rules.iter().find(|r| r.matches(a))
    }
}

impl Rule {
    fn compile(policy: &str, r: &pb::AuthzRule) -> Result<Self, String> {
        let id = format!("{policy}-rule[{}]", r.index);
        let clauses = |cs: &[pb::AuthzClause]| -> Result<Vec<Vec<Matcher>>, String> {
            cs.iter()
                .map(|c| c.all.iter().map(Matcher::compile).collect())
                .collect()
        };
        Ok(Rule {
            denied: format!("rbac_access_denied_matched_policy[{id}]").into(),
            from: clauses(&r.from).map_err(|e| format!("{id}: {e}"))?,
            to: clauses(&r.to).map_err(|e| format!("{id}: {e}"))?,
            when: r
                .when
                .iter()
                .map(Matcher::compile)
                .collect::<Result<_, _>>()
                .map_err(|e| format!("{id}: {e}"))?,
            id: id.into(),
        })
    }

    fn matches(&self, a: &Attrs<'_>) -> bool {
        let any = |cs: &[Vec<Matcher>]| {
            cs.is_empty() || cs.iter().any(|c| c.iter().all(|m| m.matches(a)))
        };
        any(&self.from) && any(&self.to) && self.when.iter().all(|m| m.matches(a))
    }
}

#[cfg(test)]
mod tests {
    use super::testutil::*;
    use super::*;

    #[test]
    fn decisions() {
        use pb::AuthzAction::*;
        let deny_all = policy("deny-all", Allow, vec![]);
        let allow_all = policy("allow-all", Allow, vec![rule(vec![], vec![], vec![])]);
        let allow_sleep = policy(
            "allow-sleep",
            Allow,
            vec![rule(
                vec![m(F::Principal, &["cluster.local/ns/foo/sa/sleep"], &[])],
                vec![],
                vec![],
            )],
        );
        let deny_admin = policy(
            "deny-admin",
            Deny,
            vec![rule(vec![], vec![m(F::Path, &["/admin*"], &[])], vec![])],
        );
        let deny_post = policy(
            "deny-post",
            Deny,
            vec![rule(vec![], vec![m(F::Method, &["POST"], &[])], vec![])],
        );
        let custom = policy(
            "ext",
            Custom,
            vec![rule(vec![], vec![m(F::Path, &["/custom"], &[])], vec![])],
        );
        let audit_all = policy("audit", Audit, vec![rule(vec![], vec![], vec![])]);
        let none = "rbac_access_denied_matched_policy[none]";
        let plaintext = Req {
            principal: None,
            ..req()
        };
        let other = Req {
            principal: Some("spiffe://cluster.local/ns/bar/sa/other"),
            ..req()
        };
        let cases: Vec<(&str, Vec<pb::AuthzPolicy>, Req, &str)> = vec![
            ("no policy allows", vec![], req(), "allow"),
            ("spec {} denies all", vec![deny_all.clone()], req(), none),
            (
                "rules [{}] allows all",
                vec![allow_all.clone()],
                req(),
                "allow",
            ),
            (
                "ALLOW none matches but another allows",
                vec![deny_all.clone(), allow_all.clone()],
                req(),
                "allow",
            ),
            (
                "principal admitted",
                vec![allow_sleep.clone()],
                req(),
                "allow",
            ),
            (
                "other principal refused",
                vec![allow_sleep.clone()],
                other,
                none,
            ),
            (
                "plaintext has no principal",
                vec![allow_sleep.clone()],
                plaintext,
                none,
            ),
            (
                "DENY path prefix",
                vec![deny_admin.clone(), allow_all.clone()],
                Req {
                    path: "/admin/users?x=1",
                    ..req()
                },
                "rbac_access_denied_matched_policy[ns[foo]-policy[deny-admin]-rule[0]]",
            ),
            (
                "DENY path ignores others",
                vec![deny_admin.clone()],
                Req {
                    path: "/ip/admin",
                    ..req()
                },
                "allow",
            ),
            (
                "DENY sees the normalized path",
                vec![deny_admin.clone()],
                Req {
                    path: "/public/../%61dmin",
                    ..req()
                },
                "rbac_access_denied_matched_policy[ns[foo]-policy[deny-admin]-rule[0]]",
            ),
            (
                "DENY before ALLOW",
                vec![allow_all.clone(), deny_post.clone()],
                Req {
                    method: "POST",
                    ..req()
                },
                "rbac_access_denied_matched_policy[ns[foo]-policy[deny-post]-rule[0]]",
            ),
            (
                "DENY GET passes POST rule",
                vec![deny_post.clone()],
                req(),
                "allow",
            ),
            (
                "CUSTOM denies what it selects",
                vec![custom.clone()],
                Req {
                    path: "/custom",
                    ..req()
                },
                "rbac_access_denied_matched_policy[ns[foo]-policy[ext]-rule[0]]",
            ),
            (
                "CUSTOM leaves the rest",
                vec![custom.clone()],
                req(),
                "allow",
            ),
            (
                "AUDIT never decides",
                vec![audit_all.clone()],
                req(),
                "allow",
            ),
            (
                "dry-run never enforces",
                vec![pb::AuthzPolicy {
                    dry_run: true,
                    ..deny_all.clone()
                }],
                req(),
                "allow",
            ),
        ];
        for (name, policies, r, want) in cases {
            assert_eq!(decide(&policies, &r), want, "{name}");
        }
    }

    #[test]
    fn custom_asks_its_authorizer_before_deny_and_allow() {
        use pb::AuthzAction::*;
        let ext = pb::ExtAuthz {
            provider: "ext-authz-grpc".into(),
            cluster: "outbound|9000||ext-authz.foo.svc.cluster.local".into(),
            authority: "ext-authz.foo.svc.cluster.local:9000".into(),
            grpc: true,
            ..Default::default()
        };
        let custom = pb::AuthzPolicy {
            ext_authz: Some(ext),
            ..policy(
                "ext",
                Custom,
                vec![rule(vec![], vec![m(F::Path, &["/headers"], &[])], vec![])],
            )
        };
        let no_provider = pb::AuthzPolicy {
            ext_authz: None,
            ..custom.clone()
        };
        let deny_post = policy(
            "deny-post",
            Deny,
            vec![rule(vec![], vec![m(F::Method, &["POST"], &[])], vec![])],
        );
        let headers = Req {
            path: "/headers",
            ..req()
        };
        let cases: Vec<(&str, Vec<pb::AuthzPolicy>, Req, &str)> = vec![
            (
                "selected: checked, then nothing else denies",
                vec![custom.clone()],
                Req {
                    path: "/headers",
                    ..req()
                },
                "check ext-authz-grpc then allow",
            ),
            (
                "not selected: no check",
                vec![custom.clone()],
                req(),
                "allow",
            ),
            (
                "an allowed check still meets DENY",
                vec![custom.clone(), deny_post.clone()],
                Req {
                    method: "POST",
                    path: "/headers",
                    ..req()
                },
                "check ext-authz-grpc then rbac_access_denied_matched_policy[ns[foo]-policy[deny-post]-rule[0]]",
            ),
            (
                "no usable provider: denied",
                vec![no_provider],
                headers,
                "rbac_access_denied_matched_policy[ns[foo]-policy[ext]-rule[0]]",
            ),
        ];
        for (name, policies, r, want) in cases {
            assert_eq!(decide_http(&policies, &r), want, "{name}");
        }
        // Where no authorizer can be asked (TCP), CUSTOM denies what it selects.
        assert_eq!(
            decide(
                &[custom],
                &Req {
                    path: "/headers",
                    ..req()
                }
            ),
            "rbac_access_denied_matched_policy[ns[foo]-policy[ext]-rule[0]]"
        );
    }

    #[test]
    fn from_and_to_are_any_of_when_is_all_of() {
        use pb::AuthzAction::*;
        let r = pb::AuthzRule {
            index: 3,
            from: vec![
                pb::AuthzClause {
                    all: vec![m(F::Namespace, &["bar"], &[])],
                },
                pb::AuthzClause {
                    all: vec![m(F::SourceIp, &["127.0.0.9"], &[])],
                },
            ],
            to: vec![
                pb::AuthzClause {
                    all: vec![m(F::Method, &["POST"], &[])],
                },
                pb::AuthzClause {
                    all: vec![m(F::Method, &["GET"], &[]), m(F::Path, &["/ip"], &[])],
                },
            ],
            when: vec![m(F::DestinationPort, &["8000"], &[]), header("x-a", &["1"])],
        };
        let p = policy("p", Deny, vec![r]);
        let denied = "rbac_access_denied_matched_policy[ns[foo]-policy[p]-rule[3]]";
        assert_eq!(
            decide(
                std::slice::from_ref(&p),
                &Req {
                    headers: vec![("x-a", "1")],
                    ..req()
                }
            ),
            denied
        );
        assert_eq!(
            decide(std::slice::from_ref(&p), &req()),
            "allow",
            "a when condition fails"
        );
        assert_eq!(
            decide(
                std::slice::from_ref(&p),
                &Req {
                    headers: vec![("x-a", "1")],
                    path: "/x",
                    ..req()
                }
            ),
            "allow"
        );
        assert_eq!(
            decide(
                &[p],
                &Req {
                    headers: vec![("x-a", "1")],
                    source: "127.0.0.1",
                    ..req()
                }
            ),
            "allow"
        );
    }

    #[test]
    fn bad_values_are_refused_at_apply_time() {
        use pb::AuthzAction::*;
        for (name, bad) in [
            ("cidr", m(F::SourceIp, &["10.0.0.0/33"], &[])),
            ("address", m(F::RemoteIp, &["not-an-ip"], &[])),
            ("port", m(F::DestinationPort, &["http"], &[])),
            ("service account", m(F::ServiceAccount, &["nosep"], &[])),
            ("header", header("bad header", &["x"])),
            (
                "field",
                pb::AuthzMatch {
                    field: 99,
                    ..m(F::Method, &["GET"], &[])
                },
            ),
        ] {
            let p = policy("p", Allow, vec![rule(vec![bad], vec![], vec![])]);
            let err = Engine::compile(&[p]).expect_err(name);
            assert!(err.contains("ns[foo]-policy[p]"), "{name}: {err}");
        }
    }
}
