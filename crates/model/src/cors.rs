//! VirtualService `corsPolicy` → the route's CORS policy, which the proxy
//! applies as Envoy's CORS filter does.

use api::networking::{CorsPolicy, StringMatch, UnmatchedPreflights};
use wire::pb;
use wire::pb::string_match::Kind;

/// `None` when the route has no CORS policy.
pub fn policy(c: Option<&CorsPolicy>) -> Option<pb::CorsPolicy> {
    let c = c?;
    // The deprecated `allowOrigin` lists exact origins.
    let legacy = c.allow_origin.iter().map(|o| pb::StringMatch {
        kind: Some(Kind::Exact(o.clone())),
    });
    let origins = c.allow_origins.iter().map(|m| pb::StringMatch {
        kind: Some(match m {
            StringMatch::Exact(s) => Kind::Exact(s.clone()),
            StringMatch::Prefix(s) => Kind::Prefix(s.clone()),
            StringMatch::Regex(s) => Kind::Regex(s.clone()),
        }),
    });
    Some(pb::CorsPolicy {
        allow_origins: legacy.chain(origins).collect(),
        allow_methods: c.allow_methods.clone(),
        allow_headers: c.allow_headers.clone(),
        expose_headers: c.expose_headers.clone(),
        max_age_s: c.max_age.map(|d| d.as_std().as_secs()),
        allow_credentials: c.allow_credentials.unwrap_or(false),
        ignore_unmatched_preflights: c.unmatched_preflights == Some(UnmatchedPreflights::Ignore),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn istio_fields_map_to_the_route_policy() {
        let c: CorsPolicy = serde_json::from_str(
            r#"{"allowOrigins": [{"exact": "https://example.com"}, {"regex": "https://.*\\.example\\.org"}],
                "allowOrigin": ["https://legacy.com"],
                "allowMethods": ["GET", "POST"], "allowHeaders": ["x-a"], "exposeHeaders": ["x-b"],
                "maxAge": "24h", "allowCredentials": true, "unmatchedPreflights": "IGNORE"}"#,
        )
        .expect("cors policy");
        let p = policy(Some(&c)).expect("policy");
        assert_eq!(p.allow_origins.len(), 3);
        assert_eq!(
            p.allow_origins[0].kind,
            Some(Kind::Exact("https://legacy.com".into()))
        );
        assert_eq!(
            p.allow_origins[2].kind,
            Some(Kind::Regex(r"https://.*\.example\.org".into()))
        );
        assert_eq!(p.allow_methods, ["GET", "POST"]);
        assert_eq!(p.max_age_s, Some(86_400));
        assert!(p.allow_credentials && p.ignore_unmatched_preflights);
        assert!(policy(None).is_none());
    }
}
