//! Authorization: the compiled AuthorizationPolicies of an inbound port,
//! decided as Istio's Envoy RBAC filters decide.
//!
//! Order: CUSTOM (enforced as DENY: there is no external authorizer), then
//! AUDIT (logged only), then DENY — any matching rule denies — then ALLOW:
//! when the port has any ALLOW policy, a request that matches none of their
//! rules is denied ("rbac_access_denied_matched_policy[none]"). Dry-run
//! policies are evaluated and logged, never enforced.
//!
//! Everything is compiled when the config is applied (a value that does not
//! compile NACKs the config); deciding allocates nothing but for requests
//! that repeat a header a rule looks at, or whose path needs normalizing.

use std::borrow::Cow;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use http::HeaderMap;
use http::header::HeaderName;
use regex::Regex;
use wire::pb;

/// A listener's policies: for its HTTP requests and for its TCP connections.
#[derive(Debug, Default)]
pub struct ListenerAuthz {
    pub http: Engine,
    pub tcp: Engine,
    /// What it was compiled from, to tell whether a new config changed it.
    source: (Vec<pb::AuthzPolicy>, Vec<pb::AuthzPolicy>),
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
            source: (l.authz_http.clone(), l.authz_tcp.clone()),
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

/// What a request or connection is judged on.
#[derive(Clone, Copy, Debug)]
pub struct Attrs<'a> {
    /// The connection's peer (`source.ip`, `ipBlocks`).
    pub source: IpAddr,
    /// The original client (`remote.ip`, `remoteIpBlocks`): x-forwarded-for's
    /// last address on HTTP (a sidecar does not use the remote address), else the peer.
    pub remote: IpAddr,
    /// The address and port the connection came to.
    pub destination: SocketAddr,
    /// The verified mTLS peer's SPIFFE id ("spiffe://td/ns/n/sa/s"); `None` in plaintext.
    pub principal: Option<&'a str>,
    pub sni: Option<&'a str>,
    pub http: Option<HttpAttrs<'a>>,
}

#[derive(Clone, Copy, Debug)]
pub struct HttpAttrs<'a> {
    pub method: &'a str,
    /// Normalized, without the query: see [`normalize_path`].
    pub path: &'a str,
    pub host: &'a str,
    pub headers: &'a HeaderMap,
}

impl<'a> Attrs<'a> {
    /// A TCP connection.
    pub fn tcp(
        peer: SocketAddr,
        destination: SocketAddr,
        principal: Option<&'a str>,
        sni: Option<&'a str>,
    ) -> Self {
        Attrs {
            source: peer.ip(),
            remote: peer.ip(),
            destination,
            principal,
            sni,
            http: None,
        }
    }
}

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// The remote address an Envoy sidecar sees for an HTTP request: the last
/// x-forwarded-for entry (use_remote_address is off), else the peer.
pub fn remote_ip(headers: &HeaderMap, peer: IpAddr) -> IpAddr {
    headers
        .get_all(X_FORWARDED_FOR)
        .iter()
        .next_back()
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.rsplit(',').next())
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(peer)
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

#[derive(Debug)]
struct Matcher {
    field: pb::AuthzField,
    header: Option<HeaderName>,
    values: Vec<Pattern>,
    not_values: Vec<Pattern>,
}

#[derive(Debug)]
enum Pattern {
    Exact(Box<str>),
    Prefix(Box<str>),
    Suffix(Box<str>),
    ExactNoCase(Box<str>),
    PrefixNoCase(Box<str>),
    SuffixNoCase(Box<str>),
    /// Istio's `*` as a string matcher (regex `.+`).
    NonEmpty,
    /// Istio's `*` as a header matcher (present).
    Present,
    Regex(Regex),
    Cidr(IpAddr, u8),
    Port(u16),
    Never,
}

/// An attribute's value for one request.
enum Val<'a> {
    Missing,
    Str(Cow<'a, str>),
    Ip(IpAddr),
    Port(u16),
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
            let policy = Policy { action, rules };
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

    pub fn decide(&self, a: &Attrs<'_>) -> Decision {
        if self.is_empty() {
            return Decision::Allow;
        }
        for p in &self.dry_run {
            if let Some(rule) = p.first_match(a) {
                tracing::info!(policy = %rule.id, action = ?p.action, "dry-run authorization policy matched (not enforced)");
            }
        }
        for p in &self.custom {
            if let Some(rule) = p.first_match(a) {
                return Decision::Deny(rule.denied.clone());
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

impl Matcher {
    fn compile(m: &pb::AuthzMatch) -> Result<Self, String> {
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
        Ok(Matcher {
            field,
            header,
            values: patterns(&m.values)?,
            not_values: patterns(&m.not_values)?,
        })
    }

    fn matches(&self, a: &Attrs<'_>) -> bool {
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
            F::Absent => Val::Missing,
        }
    }
}

impl Pattern {
    fn compile(field: pb::AuthzField, v: &str) -> Result<Self, String> {
        use pb::AuthzField as F;
        let star = |v: &str,
                    exact: fn(Box<str>) -> Pattern,
                    prefix: fn(Box<str>) -> Pattern,
                    suffix: fn(Box<str>) -> Pattern,
                    any: Pattern| {
            if v == "*" {
                any
            } else if let Some(s) = v.strip_prefix('*') {
                suffix(s.into())
            } else if let Some(p) = v.strip_suffix('*') {
                prefix(p.into())
            } else {
                exact(v.into())
            }
        };
        Ok(match field {
            F::Principal => {
                if v == "*" {
                    Pattern::NonEmpty
                } else if let Some(s) = v.strip_prefix('*') {
                    regex(&format!("spiffe://.*{}", regex::escape(s)))?
                } else if let Some(p) = v.strip_suffix('*') {
                    Pattern::Prefix(format!("spiffe://{p}").into())
                } else {
                    Pattern::Exact(format!("spiffe://{v}").into())
                }
            }
            F::Namespace => {
                let ns: Vec<String> = v.split('*').map(regex::escape).collect();
                regex(&format!(".*/ns/{}/.*", ns.join(".*")))?
            }
            F::ServiceAccount => {
                let (ns, sa) = v
                    .split_once('/')
                    .ok_or_else(|| format!("service account {v:?} is not <namespace>/<name>"))?;
                regex(&format!(
                    "spiffe://.+/ns/{}/(.+/|)sa/{}(/.+)?",
                    regex::escape(ns),
                    regex::escape(sa)
                ))?
            }
            F::SourceIp | F::RemoteIp | F::DestinationIp => cidr(v)?,
            F::DestinationPort => {
                Pattern::Port(v.parse().map_err(|_| format!("invalid port {v:?}"))?)
            }
            F::Sni => star(
                v,
                Pattern::Exact,
                Pattern::Prefix,
                Pattern::Suffix,
                Pattern::NonEmpty,
            ),
            F::Path if v.contains("{*}") || v.contains("{**}") => path_template(v)?,
            F::Path => star(
                v,
                Pattern::Exact,
                Pattern::Prefix,
                Pattern::Suffix,
                Pattern::NonEmpty,
            ),
            F::Host => star(
                v,
                Pattern::ExactNoCase,
                Pattern::PrefixNoCase,
                Pattern::SuffixNoCase,
                Pattern::Present,
            ),
            F::Method | F::RequestHeader => star(
                v,
                Pattern::Exact,
                Pattern::Prefix,
                Pattern::Suffix,
                Pattern::Present,
            ),
            F::Absent => Pattern::Never,
        })
    }

    fn matches(&self, v: &Val<'_>) -> bool {
        let s = match v {
            Val::Missing => return false,
            Val::Ip(ip) => {
                return matches!(self, Pattern::Cidr(net, len) if in_cidr(*ip, *net, *len));
            }
            Val::Port(p) => return matches!(self, Pattern::Port(want) if want == p),
            Val::Str(s) => s.as_ref(),
        };
        match self {
            Pattern::Exact(e) => s == &**e,
            Pattern::Prefix(p) => s.starts_with(&**p),
            Pattern::Suffix(x) => s.ends_with(&**x),
            Pattern::ExactNoCase(e) => s.eq_ignore_ascii_case(e),
            Pattern::PrefixNoCase(p) => {
                s.len() >= p.len()
                    && s.is_char_boundary(p.len())
                    && s[..p.len()].eq_ignore_ascii_case(p)
            }
            Pattern::SuffixNoCase(x) => {
                let at = s.len().wrapping_sub(x.len());
                s.len() >= x.len() && s.is_char_boundary(at) && s[at..].eq_ignore_ascii_case(x)
            }
            Pattern::NonEmpty => !s.is_empty(),
            Pattern::Present => true,
            Pattern::Regex(r) => r.is_match(s),
            Pattern::Cidr(..) | Pattern::Port(_) | Pattern::Never => false,
        }
    }
}

/// Anchored: Envoy's regex matchers match the whole value.
fn regex(pattern: &str) -> Result<Pattern, String> {
    Regex::new(&format!("^(?:{pattern})$"))
        .map(Pattern::Regex)
        .map_err(|e| format!("invalid pattern {pattern:?}: {e}"))
}

/// Envoy's URI templates as Istio uses them for paths: `{*}` is one path
/// segment, `{**}` any number of them (and must come last).
fn path_template(v: &str) -> Result<Pattern, String> {
    let mut out = String::new();
    let mut rest = v;
    while let Some(at) = rest.find('{') {
        out.push_str(&regex::escape(&rest[..at]));
        rest = &rest[at..];
        if let Some(r) = rest.strip_prefix("{**}") {
            out.push_str("[^?#]*");
            rest = r;
        } else if let Some(r) = rest.strip_prefix("{*}") {
            out.push_str("[^/?#]+");
            rest = r;
        } else {
            out.push_str(&regex::escape("{"));
            rest = &rest[1..];
        }
    }
    out.push_str(&regex::escape(rest));
    regex(&out)
}

fn cidr(v: &str) -> Result<Pattern, String> {
    let bad = || format!("invalid address or CIDR {v:?}");
    let (ip, len) = match v.split_once('/') {
        None => {
            let ip: IpAddr = v.parse().map_err(|_| bad())?;
            (ip, if ip.is_ipv4() { 32 } else { 128 })
        }
        Some((ip, len)) => (
            ip.parse().map_err(|_| bad())?,
            len.parse().map_err(|_| bad())?,
        ),
    };
    let max = if ip.is_ipv4() { 32 } else { 128 };
    if len > max {
        return Err(bad());
    }
    Ok(Pattern::Cidr(ip, len))
}

fn in_cidr(ip: IpAddr, net: IpAddr, len: u8) -> bool {
    // An IPv4 peer on a dual-stack socket arrives as ::ffff:a.b.c.d.
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

/// The path rules are matched against, as Envoy normalizes it with Istio's
/// default (BASE): without query and fragment, unreserved characters
/// percent-decoded, `.` and `..` segments resolved. Borrowed when there is
/// nothing to change, which is the usual case.
pub fn normalize_path(path_and_query: &str) -> Cow<'_, str> {
    let path = path_and_query.split(['?', '#']).next().unwrap_or("");
    if !path.contains('%') && !path.contains("/.") {
        return Cow::Borrowed(if path.is_empty() { "/" } else { path });
    }
    let decoded = decode_unreserved(path);
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = decoded.split('/').collect();
    let last = segments.len().saturating_sub(1);
    for (i, seg) in segments.iter().enumerate().skip(1) {
        match *seg {
            "." => {
                if i == last {
                    out.push("");
                }
            }
            ".." => {
                out.pop();
                if i == last {
                    out.push("");
                }
            }
            s => out.push(s),
        }
    }
    Cow::Owned(format!("/{}", out.join("/")))
}

fn decode_unreserved(path: &str) -> String {
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Some(c) = std::str::from_utf8(&bytes[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            && (c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~'))
        {
            out.push(c as char);
            i += 3;
            continue;
        }
        // Safe: `path` is a str and only ASCII is ever skipped above.
        let ch_len = path[i..].chars().next().map_or(1, char::len_utf8);
        out.push_str(&path[i..i + ch_len]);
        i += ch_len;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use pb::AuthzField as F;

    fn m(field: F, values: &[&str], not_values: &[&str]) -> pb::AuthzMatch {
        pb::AuthzMatch {
            field: field as i32,
            header: String::new(),
            values: values.iter().map(|s| s.to_string()).collect(),
            not_values: not_values.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn header(name: &str, values: &[&str]) -> pb::AuthzMatch {
        pb::AuthzMatch {
            header: name.into(),
            ..m(F::RequestHeader, values, &[])
        }
    }

    fn rule(
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

    fn policy(name: &str, action: pb::AuthzAction, rules: Vec<pb::AuthzRule>) -> pb::AuthzPolicy {
        pb::AuthzPolicy {
            name: format!("ns[foo]-policy[{name}]"),
            action: action as i32,
            rules,
            dry_run: false,
        }
    }

    struct Req {
        principal: Option<&'static str>,
        method: &'static str,
        path: &'static str,
        host: &'static str,
        headers: Vec<(&'static str, &'static str)>,
        source: &'static str,
        port: u16,
        tcp: bool,
    }

    fn req() -> Req {
        Req {
            principal: Some("spiffe://cluster.local/ns/foo/sa/sleep"),
            method: "GET",
            path: "/ip",
            host: "httpbin.foo:8000",
            headers: vec![],
            source: "127.0.0.9",
            port: 8000,
            tcp: false,
        }
    }

    fn decide(policies: &[pb::AuthzPolicy], r: &Req) -> String {
        let engine = Engine::compile(policies).expect("compiles");
        let mut headers = HeaderMap::new();
        for (k, v) in &r.headers {
            headers.append(HeaderName::from_static(k), v.parse().expect("value"));
        }
        let path = normalize_path(r.path);
        let source: IpAddr = r.source.parse().expect("ip");
        let attrs = Attrs {
            source,
            remote: remote_ip(&headers, source),
            destination: SocketAddr::new("127.0.0.2".parse().expect("ip"), r.port),
            principal: r.principal,
            sni: None,
            http: (!r.tcp).then_some(HttpAttrs {
                method: r.method,
                path: &path,
                host: r.host,
                headers: &headers,
            }),
        };
        match engine.decide(&attrs) {
            Decision::Allow => "allow".into(),
            Decision::Deny(d) => d.to_string(),
        }
    }

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
                "JWT never matches",
                vec![m(F::Absent, &["*"], &[])],
                req(),
                false,
            ),
            (
                "JWT notValues always match",
                vec![m(F::Absent, &[], &["admin"])],
                req(),
                true,
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

    #[test]
    fn path_normalization() {
        for (raw, want) in [
            ("/a/b?x=/admin", "/a/b"),
            ("/a/./b", "/a/b"),
            ("/a/../admin", "/admin"),
            ("/../../admin", "/admin"),
            ("/%61dmin/%2F", "/admin/%2F"),
            ("/a/b/..", "/a/"),
            ("", "/"),
        ] {
            assert_eq!(normalize_path(raw), want, "{raw}");
        }
        assert!(matches!(normalize_path("/plain/path?q"), Cow::Borrowed(_)));
    }
}
