//! Virtual host selection by the request's authority, with Envoy's order:
//! an exact domain, then the longest `*.suffix`, then the longest `prefix*`,
//! then `*`. Each stage tries the authority as sent ("reviews:9080") and then
//! without its port ("reviews"), so both forms the control plane lists work.

use std::collections::HashMap;

#[derive(Debug, Default)]
pub struct DomainIndex {
    exact: HashMap<Box<str>, usize>,
    /// (suffix without the `*`, virtual host), longest first.
    suffixes: Vec<(Box<str>, usize)>,
    /// (prefix without the `*`, virtual host), longest first.
    prefixes: Vec<(Box<str>, usize)>,
    any: Option<usize>,
}

impl DomainIndex {
    /// `domains[i]` are the domains of virtual host `i`. A domain listed
    /// twice is an error, as in Envoy: the choice between the two would be
    /// arbitrary.
    pub fn build<'a>(domains: impl IntoIterator<Item = (usize, &'a str)>) -> Result<Self, String> {
        let mut idx = DomainIndex::default();
        let mut seen: HashMap<String, usize> = HashMap::new();
        for (vh, domain) in domains {
            let d = domain.to_ascii_lowercase();
            if d.is_empty() {
                return Err("empty domain".into());
            }
            if let Some(prev) = seen.insert(d.clone(), vh) {
                return Err(format!(
                    "domain {d:?} is listed by virtual hosts {prev} and {vh}"
                ));
            }
            if d == "*" {
                idx.any = Some(vh);
            } else if let Some(suffix) = d.strip_prefix('*') {
                idx.suffixes.push((suffix.into(), vh));
            } else if let Some(prefix) = d.strip_suffix('*') {
                idx.prefixes.push((prefix.into(), vh));
            } else if d.contains('*') {
                return Err(format!(
                    "domain {d:?}: a wildcard may only be the first or last character"
                ));
            } else {
                idx.exact.insert(d.into(), vh);
            }
        }
        // Longest wildcard first: the most specific one wins.
        idx.suffixes.sort_by_key(|s| std::cmp::Reverse(s.0.len()));
        idx.prefixes.sort_by_key(|p| std::cmp::Reverse(p.0.len()));
        Ok(idx)
    }

    /// The virtual host for `authority` (lowercase, with or without port).
    pub fn find(&self, authority: &str) -> Option<usize> {
        let bare = strip_port(authority);
        let forms: &[&str] = if bare.len() == authority.len() {
            &[authority]
        } else {
            &[authority, bare]
        };
        for f in forms {
            if let Some(&vh) = self.exact.get(*f) {
                return Some(vh);
            }
        }
        for f in forms {
            // A wildcard stands for at least one character, as in Envoy.
            if let Some((_, vh)) = self
                .suffixes
                .iter()
                .find(|(s, _)| f.len() > s.len() && f.ends_with(&**s))
            {
                return Some(*vh);
            }
        }
        for f in forms {
            if let Some((_, vh)) = self
                .prefixes
                .iter()
                .find(|(p, _)| f.len() > p.len() && f.starts_with(&**p))
            {
                return Some(*vh);
            }
        }
        self.any
    }
}

/// "host:port" → "host"; "[::1]:80" → "[::1]"; "host" → "host".
pub fn strip_port(authority: &str) -> &str {
    match authority.rfind(':') {
        Some(i)
            if !authority[i..].contains(']')
                && authority[i + 1..].bytes().all(|b| b.is_ascii_digit()) =>
        {
            &authority[..i]
        }
        _ => authority,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index() -> DomainIndex {
        DomainIndex::build([
            (0, "reviews"),
            (0, "reviews:9080"),
            (1, "*.example.com"),
            (2, "*.api.example.com"),
            (3, "api.*"),
            (4, "*"),
        ])
        .expect("valid")
    }

    #[test]
    fn envoy_order_table() {
        let idx = index();
        let cases = [
            ("reviews", Some(0)),
            ("reviews:9080", Some(0)),
            ("reviews:1234", Some(0)), // falls back to the bare host
            ("a.example.com", Some(1)),
            ("a.api.example.com", Some(2)), // longest suffix wins
            ("api.example.com", Some(1)),   // suffix beats prefix
            ("api.local", Some(3)),
            ("example.com", Some(4)), // "*.example.com" needs one more character
            ("other", Some(4)),
        ];
        for (authority, want) in cases {
            assert_eq!(idx.find(authority), want, "{authority}");
        }
    }

    #[test]
    fn no_catch_all() {
        let idx = DomainIndex::build([(0, "a")]).expect("valid");
        assert_eq!(idx.find("b"), None);
    }

    #[test]
    fn duplicates_and_bad_wildcards_are_rejected() {
        assert!(DomainIndex::build([(0, "a"), (1, "A")]).is_err());
        assert!(DomainIndex::build([(0, "a*b")]).is_err());
    }

    #[test]
    fn strip_port_forms() {
        assert_eq!(strip_port("a:80"), "a");
        assert_eq!(strip_port("a"), "a");
        assert_eq!(strip_port("[::1]:80"), "[::1]");
        assert_eq!(strip_port("[::1]"), "[::1]");
    }
}
