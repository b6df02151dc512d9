//! VirtualService rules no request can reach, which Istio's validation
//! warns about (istioctl analyze: IST0130 VirtualServiceUnreachableRule,
//! IST0131 VirtualServiceIneffectiveMatch). Routes are tried in order, so
//! a rule after a match-all rule, or whose matches all repeat earlier ones,
//! is dead; a match that repeats an earlier one, or whose URI prefix an
//! earlier prefix match covers with the same other conditions, is too.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use super::Warning;
use crate::networking::{HttpMatchRequest, HttpRoute, StringMatch, VirtualService};

pub(crate) fn unreachable_rules(vs: &VirtualService) -> Vec<Warning> {
    let mut out = Vec::new();
    let http: Vec<Rule> = vs
        .http
        .iter()
        .enumerate()
        .map(|(i, r)| Rule {
            name: rule_name(r.name.as_deref(), i),
            matches: r
                .r#match
                .iter()
                .enumerate()
                .map(|(j, m)| (match_name(m.name.as_deref(), j), http_match_key(m)))
                .collect(),
        })
        .collect();
    let tcp = numbered(vs.tcp.iter().map(|r| &r.r#match));
    let tls = numbered(vs.tls.iter().map(|r| &r.r#match));
    for rules in [&http, &tcp, &tls] {
        duplicates(rules, &mut out);
    }
    overlapping_prefixes(&vs.http, &mut out);
    out
}

/// A rule as the duplicate check sees it: its name in messages, and each
/// match's name with a key equal for equal matches.
struct Rule {
    name: String,
    matches: Vec<(String, Value)>,
}

fn numbered<'a, M: Serialize + 'a>(routes: impl Iterator<Item = &'a Vec<M>>) -> Vec<Rule> {
    routes
        .enumerate()
        .map(|(i, matches)| Rule {
            name: rule_name(None, i),
            matches: matches
                .iter()
                .enumerate()
                .map(|(j, m)| (match_name(None, j), key(m)))
                .collect(),
        })
        .collect()
}

/// `"name"` (quoted, as Istio prints it) or `#index`.
fn rule_name(name: Option<&str>, i: usize) -> String {
    match name.filter(|n| !n.is_empty()) {
        Some(n) => format!("{n:?}"),
        None => format!("#{i}"),
    }
}

fn match_name(name: Option<&str>, i: usize) -> String {
    rule_name(name, i)
}

fn key<M: Serialize>(m: &M) -> Value {
    serde_json::to_value(m).unwrap_or(Value::Null)
}

/// An HTTP match without its name, which does not change what it matches.
fn http_match_key(m: &HttpMatchRequest) -> Value {
    let mut unnamed = m.clone();
    unnamed.name = None;
    key(&unnamed)
}

fn duplicates(rules: &[Rule], out: &mut Vec<Warning>) {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut match_all: Option<usize> = None;
    for (i, rule) in rules.iter().enumerate() {
        if rule.matches.is_empty() {
            if match_all.is_some() {
                out.push(unreachable(
                    &rule.name,
                    "only the last rule can have no matches",
                ));
            }
            match_all = Some(i);
            continue;
        }
        let mut repeated = 0;
        for (match_name, k) in &rule.matches {
            if match_all.is_some() {
                out.push(unreachable(
                    &rule.name,
                    "route without matches defined before",
                ));
                continue;
            }
            let k = k.to_string();
            if let Some(&earlier) = seen.get(&k) {
                out.push(Warning::IneffectiveMatch {
                    rule: rule.name.clone(),
                    matched: match_name.clone(),
                    duplicate: rules[earlier].name.clone(),
                });
                repeated += 1;
            } else {
                seen.insert(k, i);
            }
        }
        if repeated == rule.matches.len() {
            out.push(unreachable(&rule.name, "all matches used by prior rules"));
        }
    }
}

fn unreachable(rule: &str, reason: &str) -> Warning {
    Warning::UnreachableRule {
        rule: rule.to_string(),
        reason: reason.to_string(),
    }
}

/// A URI-prefix match with the conditions Istio compares for overlap.
struct PrefixMatch {
    rule: String,
    name: String,
    prefix: String,
    port: Option<u32>,
    method: String,
    authority: String,
    headers: BTreeMap<String, String>,
    query_params: BTreeMap<String, String>,
    without_headers: BTreeMap<String, String>,
}

/// `exact:v` or `prefix:v`; empty for regex or presence matches.
fn exact_or_prefix(m: Option<&StringMatch>) -> String {
    match m {
        Some(StringMatch::Exact(v)) if !v.is_empty() => format!("exact:{v}"),
        Some(StringMatch::Prefix(v)) if !v.is_empty() => format!("prefix:{v}"),
        _ => String::new(),
    }
}

fn conditions(m: &BTreeMap<String, StringMatch>) -> BTreeMap<String, String> {
    m.iter()
        .map(|(k, v)| (k.clone(), exact_or_prefix(Some(v))))
        .collect()
}

fn overlapping_prefixes(routes: &[HttpRoute], out: &mut Vec<Warning>) {
    let mut prefixes = Vec::new();
    // Only matches that the duplicate check did not already report, in
    // order, up to the first rule without matches (as Istio collects them).
    let mut seen = std::collections::BTreeSet::new();
    for (i, route) in routes.iter().enumerate() {
        if route.r#match.is_empty() {
            break;
        }
        for (j, m) in route.r#match.iter().enumerate() {
            if !seen.insert(http_match_key(m).to_string()) {
                continue;
            }
            let Some(StringMatch::Prefix(prefix)) = &m.uri else {
                continue;
            };
            if prefix.is_empty() {
                continue;
            }
            let mut method = exact_or_prefix(m.method.as_ref());
            if method.is_empty() {
                method = "exact:GET".to_string();
            }
            prefixes.push(PrefixMatch {
                rule: rule_name(route.name.as_deref(), i),
                name: match_name(m.name.as_deref(), j),
                prefix: prefix.clone(),
                port: m.port,
                method,
                authority: exact_or_prefix(m.authority.as_ref()),
                headers: conditions(&m.headers),
                query_params: conditions(&m.query_params),
                without_headers: conditions(&m.without_headers),
            });
        }
    }
    for (a_index, a) in prefixes.iter().enumerate() {
        for b in &prefixes[a_index + 1..] {
            if b.prefix != a.prefix && covers(a, b) {
                out.push(Warning::IneffectiveMatch {
                    rule: b.rule.clone(),
                    matched: format!("{} of prefix {}", b.name, b.prefix),
                    duplicate: format!("{} of prefix {} on {}", a.name, a.prefix, a.rule),
                });
            }
        }
    }
}

/// Whether the earlier match `a` takes every request the later `b` would:
/// its prefix is a prefix of `b`'s, the port is the same, and each other
/// condition of `a` is equal to or a prefix of `b`'s (Istio's comparison,
/// which reads the conditions as text).
fn covers(a: &PrefixMatch, b: &PrefixMatch) -> bool {
    let text_covers = |x: &str, y: &str| x == y || x.starts_with(y);
    let map_covers = |x: &BTreeMap<String, String>, y: &BTreeMap<String, String>| {
        x.len() == y.len()
            && x.iter()
                .all(|(k, v)| y.get(k).is_some_and(|w| text_covers(v, w)))
    };
    b.prefix.starts_with(&a.prefix)
        && a.port == b.port
        && text_covers(&a.method, &b.method)
        && text_covers(&a.authority, &b.authority)
        && map_covers(&a.headers, &b.headers)
        && map_covers(&a.query_params, &b.query_params)
        && map_covers(&a.without_headers, &b.without_headers)
}
