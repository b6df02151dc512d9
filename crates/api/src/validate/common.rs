//! Checks shared by several kinds: names, hosts, ports, durations,
//! percentages, regexes, IPs and CIDRs, label maps, `exportTo`.
//!
//! The rules follow Istio's `pkg/config/validation` so that anything Istio
//! accepts passes here and the common mistakes it rejects are rejected with
//! a comparable message.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use super::FieldError;
use crate::duration::Duration;
use crate::meta::ObjectMeta;

/// Collects errors while walking a resource.
#[derive(Default)]
pub(crate) struct Errors(pub Vec<FieldError>);

impl Errors {
    pub fn add(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError {
            path: path.into(),
            message: message.into(),
        });
    }

    /// Records `check`'s error, if any, at `path`.
    pub fn check(&mut self, path: impl Into<String>, check: Result<(), String>) {
        if let Err(message) = check {
            self.add(path, message);
        }
    }
}

/// `base.field`
pub(crate) fn at(base: &str, field: &str) -> String {
    format!("{base}.{field}")
}

/// `base.field[i]`
pub(crate) fn idx(base: &str, field: &str, i: usize) -> String {
    format!("{base}.{field}[{i}]")
}

const DNS1123_LABEL_MAX: usize = 63;
const DNS1123_SUBDOMAIN_MAX: usize = 253;
const DOMAIN_MAX: usize = 255;

/// RFC 1123 label, lowercase only: Kubernetes object and namespace names.
pub(crate) fn is_dns1123_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= DNS1123_LABEL_MAX
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// Dotted RFC 1123 labels, lowercase: Kubernetes resource names.
pub(crate) fn is_dns1123_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= DNS1123_SUBDOMAIN_MAX && s.split('.').all(is_dns1123_label)
}

/// A DNS label as Istio accepts it in host names (mixed case allowed).
fn is_host_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= DNS1123_LABEL_MAX
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

pub(crate) fn name(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("name is required".into());
    }
    if !is_dns1123_subdomain(s) {
        return Err(format!(
            "invalid name `{s}`: must be lowercase letters, digits, '-' and '.', starting and ending with a letter or digit (RFC 1123)"
        ));
    }
    Ok(())
}

pub(crate) fn namespace(s: &str) -> Result<(), String> {
    if !is_dns1123_label(s) {
        return Err(format!(
            "invalid namespace `{s}`: must be at most 63 lowercase letters, digits and '-', starting and ending with a letter or digit"
        ));
    }
    Ok(())
}

/// Metadata of an Istio object: name and namespace, label syntax.
pub(crate) fn metadata(errs: &mut Errors, m: &ObjectMeta) {
    errs.check("metadata.name", name(&m.name));
    if let Some(ns) = &m.namespace {
        errs.check("metadata.namespace", namespace(ns));
    }
    labels(errs, "metadata.labels", &m.labels);
}

/// A host name with an optional wildcard first label (`*.example.com`,
/// `*`, `*foo.com`); no `*` anywhere else. Mirrors Istio's
/// `ValidateWildcardDomain`.
pub(crate) fn wildcard_domain(host: &str) -> Result<(), String> {
    if host.is_empty() {
        return Err("host must not be empty".into());
    }
    if host.len() > DOMAIN_MAX {
        return Err(format!(
            "host `{host}` is longer than {DOMAIN_MAX} characters"
        ));
    }
    let (first, rest) = match host.split_once('.') {
        Some((f, r)) => (f, Some(r)),
        None => (host, None),
    };
    let first_ok = first == "*"
        || is_host_label(first)
        || first
            .strip_prefix('*')
            .is_some_and(|r| is_host_label(r.strip_prefix('-').unwrap_or(r)));
    if !first_ok {
        return Err(
            if first.contains('*') && first != "*" && !first.starts_with('*') {
                format!(
                    "invalid host `{host}`: `*` is only allowed at the start of the first label"
                )
            } else {
                format!("invalid host `{host}`: label `{first}` is not a valid DNS label")
            },
        );
    }
    if let Some(rest) = rest {
        domain_labels(host, rest)?;
    }
    Ok(())
}

/// The labels after the first one; a single trailing dot (FQDN) is allowed.
fn domain_labels(host: &str, rest: &str) -> Result<(), String> {
    let rest = rest.strip_suffix('.').unwrap_or(rest);
    for label in rest.split('.') {
        if label.contains('*') {
            return Err(format!(
                "invalid host `{host}`: `*` is only allowed as the first label"
            ));
        }
        if !is_host_label(label) {
            return Err(format!(
                "invalid host `{host}`: label `{label}` is not a valid DNS label"
            ));
        }
    }
    Ok(())
}

/// A host name without wildcards (FQDN or short name).
pub(crate) fn fqdn(host: &str) -> Result<(), String> {
    if host.contains('*') {
        return Err(format!(
            "invalid host `{host}`: wildcards are not allowed here"
        ));
    }
    wildcard_domain(host)
}

/// A hostname or an IP address.
pub(crate) fn host_or_ip(host: &str) -> Result<(), String> {
    if host.parse::<IpAddr>().is_ok() {
        return Ok(());
    }
    wildcard_domain(host)
}

pub(crate) fn is_ip(s: &str) -> bool {
    s.parse::<IpAddr>().is_ok()
}

/// `10.0.0.0/8`, `::1/128`, or a bare IP.
pub(crate) fn ip_or_cidr(s: &str) -> Result<(), String> {
    let bad = || format!("invalid IP address or CIDR `{s}`");
    match s.split_once('/') {
        None => s.parse::<IpAddr>().map(|_| ()).map_err(|_| bad()),
        Some((ip, bits)) => {
            let ip: IpAddr = ip.parse().map_err(|_| bad())?;
            let bits: u8 = bits.parse().map_err(|_| bad())?;
            let max = if ip.is_ipv4() { 32 } else { 128 };
            if bits > max {
                return Err(bad());
            }
            Ok(())
        }
    }
}

pub(crate) fn port(n: u32) -> Result<(), String> {
    if (1..=65535).contains(&n) {
        Ok(())
    } else {
        Err(format!("port number {n} must be in the range 1..65535"))
    }
}

/// Durations that configure intervals and delays: Envoy and Istio treat
/// anything below 1ms as unset or invalid.
pub(crate) fn duration_min_1ms(d: &Duration) -> Result<(), String> {
    if d.0 < std::time::Duration::from_millis(1) {
        return Err(format!("duration {d} must be at least 1ms"));
    }
    Ok(())
}

pub(crate) fn percent(v: f64) -> Result<(), String> {
    if v.is_finite() && (0.0..=100.0).contains(&v) {
        Ok(())
    } else {
        Err(format!("percentage {v} must be in the range 0..100"))
    }
}

pub(crate) fn percent_i32(v: i32) -> Result<(), String> {
    if (0..=100).contains(&v) {
        Ok(())
    } else {
        Err(format!("percentage {v} must be in the range 0..100"))
    }
}

pub(crate) fn non_negative(v: i32) -> Result<(), String> {
    if v < 0 {
        Err(format!("{v} must not be negative"))
    } else {
        Ok(())
    }
}

/// Compiles an RE2-style regex (the `regex` crate has the same guarantees:
/// linear time, no backreferences or lookaround, which Envoy/RE2 reject too).
pub(crate) fn regex(re: &str) -> Result<(), String> {
    regex::RegexBuilder::new(re)
        .size_limit(1 << 20)
        .build()
        .map(|_| ())
        .map_err(|e| format!("invalid regex `{re}`: {}", first_line(&e.to_string())))
}

fn first_line(s: &str) -> String {
    // regex's errors are multi-line ASCII art; the last line holds the reason.
    s.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or(s)
        .trim()
        .trim_start_matches("error: ")
        .to_string()
}

/// Kubernetes label key: optional DNS-subdomain prefix and `/`, then a
/// name of up to 63 alphanumerics, `-`, `_`, `.`.
pub(crate) fn label_key(k: &str) -> Result<(), String> {
    let (prefix, name) = match k.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, k),
    };
    if let Some(p) = prefix
        && !is_dns1123_subdomain(p)
    {
        return Err(format!(
            "invalid label key `{k}`: prefix `{p}` must be a DNS subdomain"
        ));
    }
    if !is_qualified_name_part(name) {
        return Err(format!(
            "invalid label key `{k}`: name must be 1-63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit"
        ));
    }
    Ok(())
}

fn is_qualified_name_part(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        && s.as_bytes()[0].is_ascii_alphanumeric()
        && s.as_bytes()[s.len() - 1].is_ascii_alphanumeric()
}

pub(crate) fn label_value(v: &str) -> Result<(), String> {
    if v.is_empty() || is_qualified_name_part(v) {
        Ok(())
    } else {
        Err(format!(
            "invalid label value `{v}`: must be at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit"
        ))
    }
}

pub(crate) fn labels(errs: &mut Errors, path: &str, labels: &BTreeMap<String, String>) {
    for (k, v) in labels {
        let p = at(path, k);
        errs.check(&p, label_key(k));
        errs.check(&p, label_value(v));
    }
}

/// `exportTo`: `.`, `*`, `~` or namespace names; `*`/`~` only alone.
pub(crate) fn export_to(errs: &mut Errors, path: &str, export_to: &[String]) {
    let mut seen = BTreeSet::new();
    for (i, ns) in export_to.iter().enumerate() {
        let p = format!("{path}[{i}]");
        if !seen.insert(ns.as_str()) {
            errs.add(&p, format!("duplicate exportTo entry `{ns}`"));
            continue;
        }
        match ns.as_str() {
            "." | "*" | "~" => {}
            other => errs.check(&p, namespace(other)),
        }
    }
    for special in ["*", "~"] {
        if seen.contains(special) && seen.len() > 1 {
            errs.add(
                path,
                format!("`{special}` cannot be combined with other exportTo entries"),
            );
        }
    }
}

/// An HTTP header name (RFC 7230 token) as used in header operations and matches.
pub(crate) fn header_name(name: &str) -> Result<(), String> {
    let is_tchar = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    if name.is_empty() {
        return Err("header name must not be empty".into());
    }
    // Pseudo-headers (`:authority`) are valid in matches; the rest must be tokens.
    let body = name.strip_prefix(':').unwrap_or(name);
    if body.is_empty() || !body.chars().all(is_tchar) {
        return Err(format!("invalid header name `{name}`"));
    }
    Ok(())
}

/// `ns/name` or `name`, as used to refer to gateways.
pub(crate) fn gateway_ref(g: &str) -> Result<(), String> {
    let bad =
        |why: &str| format!("invalid gateway `{g}`: {why}; expected `name` or `namespace/name`");
    let (ns, name) = match g.split_once('/') {
        Some((ns, name)) => (Some(ns), name),
        None => (None, g),
    };
    if let Some(ns) = ns {
        if name.contains('/') {
            return Err(bad("too many `/`"));
        }
        if !is_dns1123_label(ns) {
            return Err(bad("the namespace is not a valid namespace name"));
        }
    }
    if !is_dns1123_subdomain(name) {
        return Err(bad("the name is not a valid resource name"));
    }
    Ok(())
}

/// Istio's `host.Name.SubsetOf`: is every host matched by `a` also matched by `b`?
pub(crate) fn host_subset_of(a: &str, b: &str) -> bool {
    if b == "*" {
        return true;
    }
    match (a.strip_prefix('*'), b.strip_prefix('*')) {
        (_, None) => a.eq_ignore_ascii_case(b),
        (None, Some(suffix)) => a.len() > suffix.len() && ends_with_ci(a, suffix),
        (Some(a_suffix), Some(b_suffix)) => ends_with_ci(a_suffix, b_suffix),
    }
}

fn ends_with_ci(s: &str, suffix: &str) -> bool {
    s.len() >= suffix.len()
        && s.is_char_boundary(s.len() - suffix.len())
        && s[s.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
}

/// Application protocols Istio understands in port definitions.
pub(crate) fn protocol(p: &str) -> Result<(), String> {
    const KNOWN: &[&str] = &[
        "HTTP",
        "HTTPS",
        "GRPC",
        "GRPC-WEB",
        "HTTP2",
        "MONGO",
        "MYSQL",
        "REDIS",
        "TCP",
        "TLS",
        "UDP",
        "HBONE",
        "UNSUPPORTED",
    ];
    if KNOWN.iter().any(|k| k.eq_ignore_ascii_case(p)) {
        Ok(())
    } else {
        Err(format!(
            "unknown protocol `{p}`; expected one of {}",
            KNOWN.join(", ")
        ))
    }
}

/// Values of AuthorizationPolicy fields support exact, `prefix*`, `*suffix`
/// and `*`; a `*` anywhere else is taken literally by Envoy, which is never
/// what was meant.
pub(crate) fn match_value(v: &str) -> Result<(), String> {
    if v.is_empty() {
        return Err("value must not be empty".into());
    }
    let inner = v.strip_prefix('*').unwrap_or(v);
    let inner = inner.strip_suffix('*').unwrap_or(inner);
    if v.len() > 1 && v.starts_with('*') && v.ends_with('*') {
        return Err(format!(
            "invalid value `{v}`: `*` may be used at the start or the end, not both"
        ));
    }
    if inner.contains('*') {
        return Err(format!(
            "invalid value `{v}`: `*` is only allowed as a prefix, a suffix, or alone"
        ));
    }
    Ok(())
}

/// Unix-domain socket address, as accepted for binds and endpoints.
pub(crate) fn is_unix_address(s: &str) -> bool {
    s.strip_prefix("unix://").is_some_and(|p| !p.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_domains() {
        for ok in [
            "*",
            "*.example.com",
            "example.com",
            "reviews",
            "a-b.c",
            "*foo.com",
            "Foo.Example.com",
            "example.com.",
        ] {
            assert!(wildcard_domain(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "foo.*.com",
            "foo*.com",
            "a..b",
            "-a.com",
            "a_b.com",
            "*.*.com",
            "exa mple.com",
            "foo.com*",
        ] {
            assert!(wildcard_domain(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn subsets() {
        assert!(host_subset_of("a.example.com", "*.example.com"));
        assert!(host_subset_of("*.a.example.com", "*.example.com"));
        assert!(host_subset_of("x", "*"));
        assert!(!host_subset_of("example.com", "*.example.com"));
        assert!(!host_subset_of("*.example.com", "a.example.com"));
    }

    #[test]
    fn ips_and_values() {
        assert!(ip_or_cidr("10.0.0.0/8").is_ok());
        assert!(ip_or_cidr("::1/128").is_ok());
        assert!(ip_or_cidr("10.0.0.1").is_ok());
        assert!(ip_or_cidr("10.0.0.0/33").is_err());
        assert!(ip_or_cidr("ten").is_err());
        assert!(match_value("*").is_ok());
        assert!(match_value("/api/*").is_ok());
        assert!(match_value("*.com").is_ok());
        assert!(match_value("a*b").is_err());
        assert!(match_value("*a*").is_err());
        assert!(match_value("").is_err());
        assert!(gateway_ref("istio-system/gw").is_ok());
        assert!(gateway_ref("gw").is_ok());
        assert!(gateway_ref("a/b/c").is_err());
        assert!(gateway_ref("Bad/gw").is_err());
    }
}
