//! Path rewrites and redirect locations, with Envoy's semantics.

use regex::Regex;

use crate::snapshot::matcher::PathMatch;

/// A compiled `RegexRewrite`. Envoy and Istio write capture groups as `\1`;
/// the regex crate wants `${1}`, so the substitution is translated once.
#[derive(Debug)]
pub struct RegexRewrite {
    pub pattern: Regex,
    pub substitution: String,
}

impl RegexRewrite {
    pub fn compile(pattern: &str, substitution: &str) -> Result<Self, String> {
        let pattern = regex::RegexBuilder::new(pattern)
            .size_limit(1 << 20)
            .build()
            .map_err(|e| format!("regex_rewrite pattern {pattern:?} does not compile: {e}"))?;
        let mut out = String::with_capacity(substitution.len());
        let mut chars = substitution.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '\\' if chars.peek().is_some_and(char::is_ascii_digit) => {
                    out.push_str("${");
                    while let Some(d) = chars.next_if(char::is_ascii_digit) {
                        out.push(d);
                    }
                    out.push('}');
                }
                '$' => out.push_str("$$"),
                c => out.push(c),
            }
        }
        Ok(RegexRewrite {
            pattern,
            substitution: out,
        })
    }

    pub fn apply(&self, path: &str) -> String {
        self.pattern
            .replace_all(path, self.substitution.as_str())
            .into_owned()
    }
}

/// Envoy's `prefix_rewrite`: the part of the path the route matched is
/// replaced. For a prefix match that is the prefix; for an exact or regex
/// match it is the whole path. The query string is kept.
pub fn prefix_rewrite(path: &str, matched: Option<&PathMatch>, replacement: &str) -> String {
    let rest = match matched {
        // The match was checked already, possibly ignoring case: cut by length.
        Some(PathMatch::Prefix(p)) => path.get(p.len()..).unwrap_or(""),
        Some(PathMatch::Exact(_) | PathMatch::Regex(_)) => "",
        None => path,
    };
    let mut out = String::with_capacity(replacement.len() + rest.len());
    out.push_str(replacement);
    out.push_str(rest);
    out
}

/// Rejoins a rewritten path with the original query.
pub fn with_query(path: String, query: Option<&str>) -> String {
    match query {
        Some(q) => format!("{path}?{q}"),
        None => path,
    }
}

/// What a redirect changes; `None` keeps the request's value.
#[derive(Debug)]
pub struct RedirectSpec {
    pub scheme: Option<Box<str>>,
    pub authority: Option<Box<str>>,
    pub port: Option<u16>,
    pub path: Option<Box<str>>,
    pub code: http::StatusCode,
}

impl RedirectSpec {
    /// The `Location` of the redirect. As in Envoy, a new path keeps the
    /// request's query unless the new path carries its own.
    pub fn location(
        &self,
        scheme: &str,
        authority: &str,
        path: &str,
        query: Option<&str>,
    ) -> String {
        let scheme = self.scheme.as_deref().unwrap_or(scheme);
        let authority = self.authority.as_deref().unwrap_or(authority);
        let host = crate::snapshot::domains::strip_port(authority);
        let authority = match self.port {
            Some(port) => format!("{host}:{port}"),
            None => authority.to_string(),
        };
        let (path, query) = match &self.path {
            Some(p) if p.contains('?') => (&**p, None),
            Some(p) => (&**p, query),
            None => (path, query),
        };
        match query {
            Some(q) => format!("{scheme}://{authority}{path}?{q}"),
            None => format!("{scheme}://{authority}{path}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_rewrite_table() {
        let prefix = PathMatch::Prefix("/api/v1".into());
        let exact = PathMatch::Exact("/old".into());
        let cases = [
            ("/api/v1/users", Some(&prefix), "/v2", "/v2/users"),
            ("/api/v1", Some(&prefix), "/", "/"),
            ("/api/v1/x", Some(&prefix), "/", "//x"), // Envoy keeps the slash that followed the prefix
            ("/old", Some(&exact), "/new", "/new"),
            ("/x", None, "/pre", "/pre/x"),
        ];
        for (path, m, repl, want) in cases {
            assert_eq!(prefix_rewrite(path, m, repl), want, "{path} with {repl}");
        }
    }

    #[test]
    fn regex_rewrite_translates_captures() {
        let r =
            RegexRewrite::compile("^/service/([^/]+)(/.*)$", "\\2/instance/\\1$").expect("valid");
        assert_eq!(r.apply("/service/foo/v1/api"), "/v1/api/instance/foo$");
    }

    #[test]
    fn redirect_location() {
        let r = RedirectSpec {
            scheme: Some("https".into()),
            authority: None,
            port: Some(8443),
            path: None,
            code: http::StatusCode::MOVED_PERMANENTLY,
        };
        assert_eq!(
            r.location("http", "a.com:80", "/x", Some("q=1")),
            "https://a.com:8443/x?q=1"
        );
        let r = RedirectSpec {
            scheme: None,
            authority: Some("b.com".into()),
            port: None,
            path: Some("/new".into()),
            code: http::StatusCode::FOUND,
        };
        assert_eq!(r.location("http", "a.com", "/x", None), "http://b.com/new");
    }
}
