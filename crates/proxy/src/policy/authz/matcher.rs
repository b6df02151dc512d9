//! One attribute condition of a rule: which request value it reads and
//! the patterns that value must (and must not) match.

use std::borrow::Cow;
use std::net::IpAddr;

use http::header::HeaderName;
use wire::pb;

use super::Attrs;
use super::pattern::Pattern;

#[derive(Debug)]
pub(super) struct Matcher {
    field: pb::AuthzField,
    header: Option<HeaderName>,
    /// REQUEST_CLAIM: the claim's path.
    claim: Vec<String>,
    values: Vec<Pattern>,
    not_values: Vec<Pattern>,
}

/// An attribute's value for one request.
pub(super) enum Val<'a> {
    Missing,
    Str(Cow<'a, str>),
    /// Matches when any element does (a JWT's audiences, a list claim).
    List(Vec<&'a str>),
    Ip(IpAddr),
    Port(u16),
}

impl Matcher {
    pub(super) fn compile(m: &pb::AuthzMatch) -> Result<Self, String> {
        let field = pb::AuthzField::try_from(m.field)
            .map_err(|_| format!("unknown attribute {}", m.field))?;
        let header = match field {
            pb::AuthzField::RequestHeader => Some(
                HeaderName::from_bytes(m.header.as_bytes())
                    .map_err(|_| format!("invalid header name {:?}", m.header))?,
            ),
            _ => None,
        };
        let patterns = |vs: &[String]| {
            vs.iter()
                .map(|v| Pattern::compile(field, v))
                .collect::<Result<Vec<_>, _>>()
        };
        if field == pb::AuthzField::RequestClaim && m.claim.is_empty() {
            return Err("a claim condition without a claim name".into());
        }
        Ok(Matcher {
            field,
            header,
            claim: m.claim.clone(),
            values: patterns(&m.values)?,
            not_values: patterns(&m.not_values)?,
        })
    }

    pub(super) fn matches(&self, a: &Attrs<'_>) -> bool {
        let v = self.value(a);
        (self.values.is_empty() || self.values.iter().any(|p| p.matches(&v)))
            && !self.not_values.iter().any(|p| p.matches(&v))
    }

    fn value<'a>(&self, a: &Attrs<'a>) -> Val<'a> {
        use pb::AuthzField as F;
        let opt = |s: Option<&'a str>| s.map_or(Val::Missing, |s| Val::Str(Cow::Borrowed(s)));
        match self.field {
            F::Principal | F::Namespace | F::ServiceAccount => opt(a.principal),
            F::SourceIp => Val::Ip(a.source),
            F::RemoteIp => Val::Ip(a.remote),
            F::DestinationIp => Val::Ip(a.destination.ip()),
            F::DestinationPort => Val::Port(a.destination.port()),
            // Envoy's requested server name is empty without TLS.
            F::Sni => Val::Str(Cow::Borrowed(a.sni.unwrap_or(""))),
            F::Host => opt(a.http.map(|h| h.host).filter(|h| !h.is_empty())),
            F::Method => opt(a.http.map(|h| h.method)),
            F::Path => opt(a.http.map(|h| h.path)),
            F::RequestHeader => {
                let (Some(h), Some(name)) = (a.http, &self.header) else {
                    return Val::Missing;
                };
                let mut all = h
                    .headers
                    .get_all(name)
                    .iter()
                    .filter_map(|v| v.to_str().ok());
                match (all.next(), all.next()) {
                    (None, _) => Val::Missing,
                    (Some(one), None) => Val::Str(Cow::Borrowed(one)),
                    // Envoy matches repeated headers joined by commas.
                    (Some(first), Some(second)) => {
                        let mut joined = format!("{first},{second}");
                        for v in all {
                            joined.push(',');
                            joined.push_str(v);
                        }
                        Val::Str(Cow::Owned(joined))
                    }
                }
            }
            F::RequestPrincipal => opt(a.http.and_then(|h| h.auth).map(|v| v.principal.as_str())),
            F::RequestPresenter => opt(a
                .http
                .and_then(|h| h.auth)
                .and_then(|v| v.presenter.as_deref())),
            F::RequestAudiences => match a.http.and_then(|h| h.auth) {
                Some(v) => Val::List(v.audiences.iter().map(String::as_str).collect()),
                None => Val::Missing,
            },
            F::RequestClaim => match a
                .http
                .and_then(|h| h.auth)
                .and_then(|v| v.claim(&self.claim))
            {
                Some(serde_json::Value::String(s)) => Val::Str(Cow::Borrowed(s)),
                Some(serde_json::Value::Array(list)) => {
                    Val::List(list.iter().filter_map(|e| e.as_str()).collect())
                }
                // Envoy matches claims with string matchers: other types never match.
                _ => Val::Missing,
            },
            F::Absent => Val::Missing,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use wire::pb;

    fn with_jwt() -> Req {
        Req {
            jwt: Some(serde_json::json!({
                "iss": "testing@secure.istio.io",
                "sub": "testing@secure.istio.io",
                "aud": ["app1", "app2"],
                "azp": "web",
                "groups": ["group1", "group2"],
                "role": "admin",
                "scope": "read write",
                "level": 3,
                "foo": {"bar": "baz"},
            })),
            ..req()
        }
    }

    fn claim(path: &[&str], values: &[&str]) -> pb::AuthzMatch {
        pb::AuthzMatch {
            claim: path.iter().map(|s| s.to_string()).collect(),
            ..m(F::RequestClaim, values, &[])
        }
    }

    #[test]
    fn matchers() {
        use pb::AuthzAction::*;
        // Each case: one ALLOW rule made of these matchers; does the request get in?
        let cases: Vec<(&str, Vec<pb::AuthzMatch>, Req, bool)> = vec![
            (
                "principal *",
                vec![m(F::Principal, &["*"], &[])],
                req(),
                true,
            ),
            (
                "principal * needs mTLS",
                vec![m(F::Principal, &["*"], &[])],
                Req {
                    principal: None,
                    ..req()
                },
                false,
            ),
            (
                "principal prefix",
                vec![m(F::Principal, &["cluster.local/ns/foo/*"], &[])],
                req(),
                true,
            ),
            (
                "principal suffix",
                vec![m(F::Principal, &["*/sa/sleep"], &[])],
                req(),
                true,
            ),
            (
                "principal suffix other",
                vec![m(F::Principal, &["*/sa/other"], &[])],
                req(),
                false,
            ),
            (
                "notPrincipals excludes",
                vec![m(F::Principal, &[], &["cluster.local/ns/foo/sa/sleep"])],
                req(),
                false,
            ),
            (
                "notPrincipals admits plaintext",
                vec![m(F::Principal, &[], &["*"])],
                Req {
                    principal: None,
                    ..req()
                },
                true,
            ),
            (
                "namespace",
                vec![m(F::Namespace, &["foo"], &[])],
                req(),
                true,
            ),
            (
                "namespace other",
                vec![m(F::Namespace, &["bar"], &[])],
                req(),
                false,
            ),
            (
                "namespace glob",
                vec![m(F::Namespace, &["f*"], &[])],
                req(),
                true,
            ),
            (
                "namespace plaintext",
                vec![m(F::Namespace, &["foo"], &[])],
                Req {
                    principal: None,
                    ..req()
                },
                false,
            ),
            (
                "service account",
                vec![m(F::ServiceAccount, &["foo/sleep"], &[])],
                req(),
                true,
            ),
            (
                "service account other ns",
                vec![m(F::ServiceAccount, &["bar/sleep"], &[])],
                req(),
                false,
            ),
            (
                "service account is whole",
                vec![m(F::ServiceAccount, &["foo/slee"], &[])],
                req(),
                false,
            ),
            (
                "ipBlocks cidr",
                vec![m(F::SourceIp, &["127.0.0.0/24"], &[])],
                req(),
                true,
            ),
            (
                "ipBlocks address",
                vec![m(F::SourceIp, &["127.0.0.10"], &[])],
                req(),
                false,
            ),
            (
                "notIpBlocks",
                vec![m(F::SourceIp, &[], &["127.0.0.9"])],
                req(),
                false,
            ),
            (
                "remoteIpBlocks from x-forwarded-for",
                vec![m(F::RemoteIp, &["10.1.0.0/16"], &[])],
                Req {
                    headers: vec![("x-forwarded-for", "192.168.0.1, 10.1.2.3")],
                    ..req()
                },
                true,
            ),
            (
                "remoteIpBlocks without xff is the peer",
                vec![m(F::RemoteIp, &["127.0.0.9"], &[])],
                req(),
                true,
            ),
            (
                "destination.ip",
                vec![m(F::DestinationIp, &["127.0.0.2"], &[])],
                req(),
                true,
            ),
            (
                "ports",
                vec![m(F::DestinationPort, &["8000"], &[])],
                req(),
                true,
            ),
            (
                "ports other",
                vec![m(F::DestinationPort, &["9000"], &[])],
                req(),
                false,
            ),
            (
                "notPorts",
                vec![m(F::DestinationPort, &[], &["8000"])],
                req(),
                false,
            ),
            (
                "methods",
                vec![m(F::Method, &["GET", "HEAD"], &[])],
                req(),
                true,
            ),
            (
                "methods are case-sensitive",
                vec![m(F::Method, &["get"], &[])],
                req(),
                false,
            ),
            (
                "notMethods",
                vec![m(F::Method, &[], &["GET"])],
                req(),
                false,
            ),
            ("paths exact", vec![m(F::Path, &["/ip"], &[])], req(), true),
            (
                "paths exact ignores the query",
                vec![m(F::Path, &["/ip"], &[])],
                Req {
                    path: "/ip?a=b",
                    ..req()
                },
                true,
            ),
            (
                "paths suffix",
                vec![m(F::Path, &["*.html"], &[])],
                Req {
                    path: "/a/b.html",
                    ..req()
                },
                true,
            ),
            ("paths *", vec![m(F::Path, &["*"], &[])], req(), true),
            (
                "paths template {*}",
                vec![m(F::Path, &["/api/{*}/info"], &[])],
                Req {
                    path: "/api/v1/info",
                    ..req()
                },
                true,
            ),
            (
                "paths template {*} one segment",
                vec![m(F::Path, &["/api/{*}/info"], &[])],
                Req {
                    path: "/api/a/b/info",
                    ..req()
                },
                false,
            ),
            (
                "paths template {**}",
                vec![m(F::Path, &["/api/{**}"], &[])],
                Req {
                    path: "/api/a/b/info",
                    ..req()
                },
                true,
            ),
            (
                "hosts case-insensitive",
                vec![m(F::Host, &["HTTPBIN.foo:8000"], &[])],
                req(),
                true,
            ),
            (
                "hosts prefix",
                vec![m(F::Host, &["httpbin.*"], &[])],
                req(),
                true,
            ),
            (
                "hosts suffix",
                vec![m(F::Host, &["*:8000"], &[])],
                req(),
                true,
            ),
            (
                "hosts without port",
                vec![m(F::Host, &["httpbin.foo"], &[])],
                req(),
                false,
            ),
            (
                "header exact",
                vec![header("x-token", &["admin"])],
                Req {
                    headers: vec![("x-token", "admin")],
                    ..req()
                },
                true,
            ),
            (
                "header missing",
                vec![header("x-token", &["admin"])],
                req(),
                false,
            ),
            (
                "header present",
                vec![header("x-token", &["*"])],
                Req {
                    headers: vec![("x-token", "")],
                    ..req()
                },
                true,
            ),
            (
                "repeated header joined",
                vec![header("x-token", &["a,b"])],
                Req {
                    headers: vec![("x-token", "a"), ("x-token", "b")],
                    ..req()
                },
                true,
            ),
            (
                "Envoy metadata never matches",
                vec![m(F::Absent, &["*"], &[])],
                req(),
                false,
            ),
            (
                "Envoy metadata notValues always match",
                vec![m(F::Absent, &[], &["admin"])],
                req(),
                true,
            ),
            (
                "requestPrincipals * needs a token",
                vec![m(F::RequestPrincipal, &["*"], &[])],
                req(),
                false,
            ),
            (
                "requestPrincipals * with a token",
                vec![m(F::RequestPrincipal, &["*"], &[])],
                with_jwt(),
                true,
            ),
            (
                "requestPrincipals exact iss/sub",
                vec![m(
                    F::RequestPrincipal,
                    &["testing@secure.istio.io/testing@secure.istio.io"],
                    &[],
                )],
                with_jwt(),
                true,
            ),
            (
                "requestPrincipals prefix",
                vec![m(F::RequestPrincipal, &["testing@secure.istio.io/*"], &[])],
                with_jwt(),
                true,
            ),
            (
                "notRequestPrincipals * admits no token",
                vec![m(F::RequestPrincipal, &[], &["*"])],
                req(),
                true,
            ),
            (
                "notRequestPrincipals * refuses a token",
                vec![m(F::RequestPrincipal, &[], &["*"])],
                with_jwt(),
                false,
            ),
            (
                "audiences: any of the token's",
                vec![m(F::RequestAudiences, &["app2"], &[])],
                with_jwt(),
                true,
            ),
            (
                "audiences: none",
                vec![m(F::RequestAudiences, &["other"], &[])],
                with_jwt(),
                false,
            ),
            (
                "presenter",
                vec![m(F::RequestPresenter, &["web"], &[])],
                with_jwt(),
                true,
            ),
            (
                "claim in a list",
                vec![claim(&["groups"], &["group1"])],
                with_jwt(),
                true,
            ),
            (
                "claim not in the list",
                vec![claim(&["groups"], &["group3"])],
                with_jwt(),
                false,
            ),
            (
                "claim string",
                vec![claim(&["role"], &["admin"])],
                with_jwt(),
                true,
            ),
            (
                "nested claim",
                vec![claim(&["foo", "bar"], &["baz"])],
                with_jwt(),
                true,
            ),
            (
                "scope is space-delimited",
                vec![claim(&["scope"], &["write"])],
                with_jwt(),
                true,
            ),
            (
                "a number claim never matches a string",
                vec![claim(&["level"], &["3"])],
                with_jwt(),
                false,
            ),
            (
                "claim without a token",
                vec![claim(&["groups"], &["group1"])],
                req(),
                false,
            ),
            (
                "TCP: HTTP attributes are missing",
                vec![m(F::Method, &["*"], &[])],
                Req { tcp: true, ..req() },
                false,
            ),
            (
                "TCP: principal still matches",
                vec![m(F::Principal, &["*"], &[])],
                Req { tcp: true, ..req() },
                true,
            ),
        ];
        for (name, all, r, want) in cases {
            let p = policy("p", Allow, vec![rule(all, vec![], vec![])]);
            assert_eq!(decide(&[p], &r) == "allow", want, "{name}");
        }
    }
}
