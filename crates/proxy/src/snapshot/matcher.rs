//! Compiled request matchers: a route's `RouteMatch` turned into values that
//! are cheap to evaluate (regexes compiled once, header names parsed once).

use http::HeaderMap;
use http::header::HeaderName;
use regex::Regex;
use wire::pb;

/// One string matcher. Regexes are anchored because Envoy (RE2 `FullMatch`)
/// and Istio match the whole value, not a substring.
#[derive(Debug)]
pub enum StrMatch {
    Exact(Box<str>),
    Prefix(Box<str>),
    Regex(Regex),
    Present,
}

impl StrMatch {
    pub fn compile(m: &pb::StringMatch, ignore_case: bool) -> Result<Option<Self>, String> {
        use pb::string_match::Kind;
        Ok(match &m.kind {
            None => None,
            Some(Kind::Exact(s)) => Some(StrMatch::Exact(s.as_str().into())),
            Some(Kind::Prefix(s)) => Some(StrMatch::Prefix(s.as_str().into())),
            Some(Kind::Regex(r)) => Some(StrMatch::Regex(compile_regex(r, ignore_case)?)),
            Some(Kind::Present(true)) => Some(StrMatch::Present),
            // `present: false` means "matches anything", as in Istio.
            Some(Kind::Present(false)) => None,
        })
    }

    /// `ignore_case` applies to exact and prefix; a regex carries its own flag.
    pub fn matches(&self, value: &str, ignore_case: bool) -> bool {
        match self {
            StrMatch::Exact(s) if ignore_case => value.eq_ignore_ascii_case(s),
            StrMatch::Exact(s) => value == &**s,
            StrMatch::Prefix(p) => prefix_matches(value, p, ignore_case),
            StrMatch::Regex(r) => r.is_match(value),
            StrMatch::Present => true,
        }
    }
}

/// Whether `value` starts with `prefix`, ASCII case-insensitively if asked.
pub fn prefix_matches(value: &str, prefix: &str, ignore_case: bool) -> bool {
    if ignore_case {
        value.len() >= prefix.len()
            && value.is_char_boundary(prefix.len())
            && value[..prefix.len()].eq_ignore_ascii_case(prefix)
    } else {
        value.starts_with(prefix)
    }
}

/// Compiles `pattern` so that it must match the whole input.
pub fn compile_regex(pattern: &str, ignore_case: bool) -> Result<Regex, String> {
    let anchored = format!("^(?:{pattern})$");
    regex::RegexBuilder::new(&anchored)
        .case_insensitive(ignore_case)
        // Bounds what a hostile or mistaken config can cost in memory.
        .size_limit(1 << 20)
        .build()
        .map_err(|e| format!("regex {pattern:?} does not compile: {e}"))
}

/// Where a header matcher looks: a real header, or a request pseudo-header
/// (Envoy lets routes match `:authority`, `:method`, `:path`, `:scheme`).
#[derive(Debug)]
enum HeaderKey {
    Name(HeaderName),
    Authority,
    Method,
    Path,
    Scheme,
}

impl HeaderKey {
    fn parse(name: &str) -> Result<Self, String> {
        Ok(match name {
            ":authority" => HeaderKey::Authority,
            ":method" => HeaderKey::Method,
            ":path" => HeaderKey::Path,
            ":scheme" => HeaderKey::Scheme,
            _ => HeaderKey::Name(
                HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes())
                    .map_err(|_| format!("{name:?} is not a valid header name"))?,
            ),
        })
    }

    fn value<'a>(&self, req: &RequestView<'a>) -> Option<&'a str> {
        match self {
            // A header that is not valid UTF-8 never matches a string matcher.
            HeaderKey::Name(n) => req.headers.get(n).and_then(|v| v.to_str().ok()),
            HeaderKey::Authority => Some(req.authority),
            HeaderKey::Method => Some(req.method),
            HeaderKey::Path => Some(req.path),
            HeaderKey::Scheme => Some(req.scheme),
        }
    }
}

/// What route matching looks at, borrowed from the request.
pub struct RequestView<'a> {
    pub method: &'a str,
    /// The path without the query string.
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub authority: &'a str,
    pub scheme: &'a str,
    pub port: u16,
    pub headers: &'a HeaderMap,
}

/// The path part of a match, kept apart because rewrites need to know it.
#[derive(Debug)]
pub enum PathMatch {
    Exact(Box<str>),
    Prefix(Box<str>),
    Regex(Regex),
}

/// A compiled `RouteMatch`: every present condition must hold (AND).
#[derive(Debug, Default)]
pub struct RouteMatch {
    pub path: Option<PathMatch>,
    ignore_case: bool,
    headers: Vec<(HeaderKey, StrMatch)>,
    query_params: Vec<(Box<str>, StrMatch)>,
    method: Option<StrMatch>,
    authority: Option<StrMatch>,
    scheme: Option<StrMatch>,
    port: Option<u16>,
    without_present: Vec<HeaderKey>,
    without: Vec<(HeaderKey, StrMatch)>,
}

impl RouteMatch {
    pub fn compile(m: &pb::RouteMatch) -> Result<Self, String> {
        let ignore_case = m.ignore_case;
        let path = match m.path.as_ref().and_then(|p| p.kind.as_ref()) {
            None => None,
            Some(pb::string_match::Kind::Exact(s)) => Some(PathMatch::Exact(s.as_str().into())),
            Some(pb::string_match::Kind::Prefix(s)) => Some(PathMatch::Prefix(s.as_str().into())),
            Some(pb::string_match::Kind::Regex(r)) => {
                Some(PathMatch::Regex(compile_regex(r, ignore_case)?))
            }
            Some(pb::string_match::Kind::Present(_)) => None,
        };
        let opt = |m: &Option<pb::StringMatch>| -> Result<Option<StrMatch>, String> {
            match m {
                Some(m) => StrMatch::compile(m, false),
                None => Ok(None),
            }
        };
        let headers = sorted(&m.headers)
            .filter_map(|(k, v)| match StrMatch::compile(v, false) {
                Ok(Some(sm)) => Some(HeaderKey::parse(k).map(|hk| (hk, sm))),
                Ok(None) => None,
                Err(e) => Some(Err(format!("header {k:?}: {e}"))),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let query_params = sorted(&m.query_params)
            .filter_map(|(k, v)| match StrMatch::compile(v, false) {
                Ok(Some(sm)) => Some(Ok((k.as_str().into(), sm))),
                Ok(None) => None,
                Err(e) => Some(Err(format!("query parameter {k:?}: {e}"))),
            })
            .collect::<Result<Vec<_>, String>>()?;
        let without = sorted(&m.without_headers)
            .map(|(k, v)| {
                let sm = StrMatch::compile(v, false)
                    .map_err(|e| format!("without_headers {k:?}: {e}"))?
                    .unwrap_or(StrMatch::Present);
                Ok((HeaderKey::parse(k)?, sm))
            })
            .collect::<Result<Vec<_>, String>>()?;
        let port = match m.port {
            0 => None,
            p => Some(u16::try_from(p).map_err(|_| format!("port {p} is out of range"))?),
        };
        Ok(RouteMatch {
            path,
            ignore_case,
            headers,
            query_params,
            method: opt(&m.method).map_err(|e| format!("method: {e}"))?,
            authority: opt(&m.authority).map_err(|e| format!("authority: {e}"))?,
            scheme: opt(&m.scheme).map_err(|e| format!("scheme: {e}"))?,
            port,
            without_present: m
                .without_headers_present
                .iter()
                .map(|h| HeaderKey::parse(h))
                .collect::<Result<_, _>>()?,
            without,
        })
    }

    pub fn matches(&self, req: &RequestView<'_>) -> bool {
        let path_ok = match &self.path {
            None => true,
            Some(PathMatch::Exact(p)) if self.ignore_case => req.path.eq_ignore_ascii_case(p),
            Some(PathMatch::Exact(p)) => req.path == &**p,
            Some(PathMatch::Prefix(p)) => prefix_matches(req.path, p, self.ignore_case),
            Some(PathMatch::Regex(r)) => r.is_match(req.path),
        };
        path_ok
            && self.port.is_none_or(|p| p == req.port)
            && self
                .method
                .as_ref()
                .is_none_or(|m| m.matches(req.method, false))
            && self
                .authority
                .as_ref()
                .is_none_or(|m| m.matches(req.authority, false))
            && self
                .scheme
                .as_ref()
                .is_none_or(|m| m.matches(req.scheme, false))
            && self
                .headers
                .iter()
                .all(|(k, m)| k.value(req).is_some_and(|v| m.matches(v, false)))
            && self
                .query_params
                .iter()
                .all(|(k, m)| query_param(req.query, k).is_some_and(|v| m.matches(v, false)))
            && self.without_present.iter().all(|k| k.value(req).is_none())
            && self
                .without
                .iter()
                .all(|(k, m)| !k.value(req).is_some_and(|v| m.matches(v, false)))
    }
}

/// The first value of `name` in a raw query string (`a=1&b=2`). A parameter
/// without `=` has the empty value, as in Envoy.
fn query_param<'a>(query: Option<&'a str>, name: &str) -> Option<&'a str> {
    query?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then_some(v)
    })
}

/// Map entries in a stable order (the API's maps are ordered already).
fn sorted<V>(map: &std::collections::BTreeMap<String, V>) -> impl Iterator<Item = (&String, &V)> {
    map.iter()
}

#[cfg(test)]
mod tests {
    use super::*;
    use pb::string_match::Kind;

    fn sm(kind: Kind) -> Option<pb::StringMatch> {
        Some(pb::StringMatch { kind: Some(kind) })
    }

    fn view<'a>(path: &'a str, query: Option<&'a str>, headers: &'a HeaderMap) -> RequestView<'a> {
        RequestView {
            method: "GET",
            path,
            query,
            authority: "reviews:9080",
            scheme: "http",
            port: 9080,
            headers,
        }
    }

    #[test]
    fn path_matchers_table() {
        let cases: &[(Kind, bool, &str, bool)] = &[
            (Kind::Exact("/a".into()), false, "/a", true),
            (Kind::Exact("/a".into()), false, "/A", false),
            (Kind::Exact("/a".into()), true, "/A", true),
            (Kind::Prefix("/api".into()), false, "/api/v1", true),
            (Kind::Prefix("/api".into()), false, "/API/v1", false),
            (Kind::Prefix("/api".into()), true, "/API/v1", true),
            (Kind::Regex("/v[0-9]+/.*".into()), false, "/v1/x", true),
            (Kind::Regex("/v[0-9]+".into()), false, "/v1/x", false), // whole-path match
            (Kind::Regex("/abc".into()), true, "/ABC", true),
        ];
        let h = HeaderMap::new();
        for (kind, ic, path, want) in cases {
            let m = RouteMatch::compile(&pb::RouteMatch {
                path: sm(kind.clone()),
                ignore_case: *ic,
                ..Default::default()
            })
            .expect("compiles");
            assert_eq!(
                m.matches(&view(path, None, &h)),
                *want,
                "{kind:?} ic={ic} on {path}"
            );
        }
    }

    #[test]
    fn headers_query_and_without() {
        let m = RouteMatch::compile(&pb::RouteMatch {
            headers: [(
                "end-user".to_string(),
                pb::StringMatch {
                    kind: Some(Kind::Exact("jason".into())),
                },
            )]
            .into(),
            query_params: [(
                "v".to_string(),
                pb::StringMatch {
                    kind: Some(Kind::Regex("[12]".into())),
                },
            )]
            .into(),
            without_headers_present: vec!["x-skip".into()],
            ..Default::default()
        })
        .expect("compiles");
        let mut h = HeaderMap::new();
        h.insert("end-user", "jason".parse().expect("value"));
        assert!(m.matches(&view("/", Some("a=b&v=2"), &h)));
        assert!(!m.matches(&view("/", Some("v=3"), &h)));
        assert!(!m.matches(&view("/", None, &h)));
        h.insert("x-skip", "1".parse().expect("value"));
        assert!(!m.matches(&view("/", Some("v=1"), &h)));
    }

    #[test]
    fn pseudo_headers_and_port() {
        let m = RouteMatch::compile(&pb::RouteMatch {
            headers: [(
                ":method".to_string(),
                pb::StringMatch {
                    kind: Some(Kind::Exact("GET".into())),
                },
            )]
            .into(),
            port: 9080,
            ..Default::default()
        })
        .expect("compiles");
        let h = HeaderMap::new();
        assert!(m.matches(&view("/", None, &h)));
    }

    #[test]
    fn bad_regex_is_rejected() {
        let err = RouteMatch::compile(&pb::RouteMatch {
            path: sm(Kind::Regex("(".into())),
            ..Default::default()
        })
        .expect_err("must fail");
        assert!(err.contains("does not compile"), "{err}");
    }
}
