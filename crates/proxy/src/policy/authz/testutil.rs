//! Builders shared by the unit tests of this module.

use std::net::{IpAddr, SocketAddr};

use http::HeaderMap;
use http::header::HeaderName;
pub(super) use wire::pb;
pub(super) use wire::pb::AuthzField as F;

use super::{Attrs, Decision, Engine, HttpAttrs, remote_ip};
use crate::path::{Normalization, normalize};

pub(super) fn m(field: F, values: &[&str], not_values: &[&str]) -> pb::AuthzMatch {
    pb::AuthzMatch {
        field: field as i32,
        header: String::new(),
        values: values.iter().map(|s| s.to_string()).collect(),
        not_values: not_values.iter().map(|s| s.to_string()).collect(),
        claim: Vec::new(),
    }
}

pub(super) fn header(name: &str, values: &[&str]) -> pb::AuthzMatch {
    pb::AuthzMatch {
        header: name.into(),
        ..m(F::RequestHeader, values, &[])
    }
}

pub(super) fn rule(
    from: Vec<pb::AuthzMatch>,
    to: Vec<pb::AuthzMatch>,
    when: Vec<pb::AuthzMatch>,
) -> pb::AuthzRule {
    pb::AuthzRule {
        index: 0,
        from: if from.is_empty() {
            vec![]
        } else {
            vec![pb::AuthzClause { all: from }]
        },
        to: if to.is_empty() {
            vec![]
        } else {
            vec![pb::AuthzClause { all: to }]
        },
        when,
    }
}

pub(super) fn policy(
    name: &str,
    action: pb::AuthzAction,
    rules: Vec<pb::AuthzRule>,
) -> pb::AuthzPolicy {
    pb::AuthzPolicy {
        name: format!("ns[foo]-policy[{name}]"),
        action: action as i32,
        rules,
        dry_run: false,
        ext_authz: None,
    }
}

pub(super) struct Req {
    pub(super) principal: Option<&'static str>,
    pub(super) method: &'static str,
    pub(super) path: &'static str,
    pub(super) host: &'static str,
    pub(super) headers: Vec<(&'static str, &'static str)>,
    pub(super) source: &'static str,
    pub(super) port: u16,
    pub(super) tcp: bool,
    /// The validated JWT's payload, if the request had one.
    pub(super) jwt: Option<serde_json::Value>,
}

pub(super) fn req() -> Req {
    Req {
        principal: Some("spiffe://cluster.local/ns/foo/sa/sleep"),
        method: "GET",
        path: "/ip",
        host: "httpbin.foo:8000",
        headers: vec![],
        source: "127.0.0.9",
        port: 8000,
        tcp: false,
        jwt: None,
    }
}

pub(super) fn decide(policies: &[pb::AuthzPolicy], r: &Req) -> String {
    with_attrs(policies, r, |engine, attrs| match engine.decide(attrs) {
        Decision::Allow => "allow".into(),
        Decision::Deny(d) => d.to_string(),
    })
}

/// As the HTTP path decides: the CUSTOM part ("check <provider>", then the
/// rest's decision as if the authorizer allowed), else the rest.
pub(super) fn decide_http(policies: &[pb::AuthzPolicy], r: &Req) -> String {
    with_attrs(policies, r, |engine, attrs| {
        let rest = || match engine.decide_after_custom(attrs) {
            Decision::Allow => "allow".to_string(),
            Decision::Deny(d) => d.to_string(),
        };
        match engine.custom(attrs) {
            super::Custom::None => rest(),
            super::Custom::Deny(d) => d.to_string(),
            super::Custom::Check(x) => format!("check {} then {}", x.provider(), rest()),
        }
    })
}

fn with_attrs(
    policies: &[pb::AuthzPolicy],
    r: &Req,
    f: impl FnOnce(&Engine, &Attrs<'_>) -> String,
) -> String {
    let engine = Engine::compile(policies).expect("compiles");
    let mut headers = HeaderMap::new();
    for (k, v) in &r.headers {
        headers.append(HeaderName::from_static(k), v.parse().expect("value"));
    }
    let normalised = normalize(r.path, Normalization::Base).expect("valid path");
    let path = normalised.split('?').next().unwrap_or("/");
    let source: IpAddr = r.source.parse().expect("ip");
    let auth = r.jwt.as_ref().map(|claims| {
        let serde_json::Value::Object(map) = claims.clone() else {
            panic!("claims are an object")
        };
        crate::policy::jwt::Verified::from_payload(map, &[])
    });
    let attrs = Attrs {
        source,
        remote: remote_ip(&headers, source),
        destination: SocketAddr::new("127.0.0.2".parse().expect("ip"), r.port),
        principal: r.principal,
        sni: None,
        http: (!r.tcp).then_some(HttpAttrs {
            method: r.method,
            path,
            host: r.host,
            headers: &headers,
            auth: auth.as_deref(),
        }),
    };
    f(&engine, &attrs)
}
