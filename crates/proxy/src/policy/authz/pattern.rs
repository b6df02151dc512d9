//! Compiled value patterns: Istio's string forms (exact, `*` prefix and
//! suffix, regex, path templates), CIDRs and ports.

use std::net::IpAddr;

use regex::Regex;
use wire::pb;

use super::matcher::Val;

#[derive(Debug)]
pub(super) enum Pattern {
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

impl Pattern {
    pub(super) fn compile(field: pb::AuthzField, v: &str) -> Result<Self, String> {
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
            // Istio's string matchers for request.auth.*: `*` is any non-empty value.
            F::RequestPrincipal | F::RequestAudiences | F::RequestPresenter | F::RequestClaim => {
                star(
                    v,
                    Pattern::Exact,
                    Pattern::Prefix,
                    Pattern::Suffix,
                    Pattern::NonEmpty,
                )
            }
            F::Absent => Pattern::Never,
        })
    }

    pub(super) fn matches(&self, v: &Val<'_>) -> bool {
        let s = match v {
            Val::Missing => return false,
            Val::Ip(ip) => {
                return matches!(self, Pattern::Cidr(net, len) if in_cidr(*ip, *net, *len));
            }
            Val::Port(p) => return matches!(self, Pattern::Port(want) if want == p),
            Val::List(items) => return items.iter().any(|s| self.matches_str(s)),
            Val::Str(s) => s.as_ref(),
        };
        self.matches_str(s)
    }

    fn matches_str(&self, s: &str) -> bool {
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
