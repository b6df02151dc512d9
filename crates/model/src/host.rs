//! Host names as Istio reads them: short names are relative to the namespace
//! of the resource that wrote them, and `*.example.com` wildcards match by suffix.

/// Expands a host written in `namespace` to a fully qualified name as Istio
/// does (`ResolveShortnameToFQDN`): only a name without a dot is short,
/// `reviews` → `reviews.default.svc.cluster.local`. Anything with a dot
/// (`reviews.prod`, `api.example`, a ServiceEntry's host), an IP address and
/// `*` are taken as written.
pub fn fqdn(host: &str, namespace: &str, domain_suffix: &str) -> String {
    if host.contains('.') || host.contains(':') || host == "*" {
        return host.to_string();
    }
    format!("{host}.{namespace}.svc.{domain_suffix}")
}

/// Whether a pattern (`*`, `*.suffix` or an exact name) covers `host`.
pub fn matches(pattern: &str, host: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    match pattern.strip_prefix('*') {
        Some(suffix) => host.ends_with(suffix) && host.len() > suffix.len(),
        None => pattern.eq_ignore_ascii_case(host),
    }
}

/// How specific a matching pattern is, so the most specific one wins: exact
/// names beat wildcards, longer wildcards beat shorter ones.
pub fn specificity(pattern: &str) -> usize {
    if pattern.contains('*') {
        pattern.len()
    } else {
        usize::MAX
    }
}

/// Every name a client in `client_ns` may use for a service, as Envoy virtual
/// host domains: the FQDN, and the short forms that resolve within the same
/// namespace, each with and without the port.
pub fn domains(
    fqdn: &str,
    svc_name: &str,
    svc_ns: &str,
    client_ns: &str,
    port: u32,
) -> Vec<String> {
    let mut names = vec![fqdn.to_string()];
    let cluster_local = format!("{svc_name}.{svc_ns}.svc");
    if fqdn.starts_with(&cluster_local) {
        if svc_ns == client_ns {
            names.push(svc_name.to_string());
        }
        names.push(format!("{svc_name}.{svc_ns}"));
        names.push(cluster_local);
    }
    let with_port: Vec<String> = names.iter().map(|n| format!("{n}:{port}")).collect();
    names.extend(with_port);
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fqdn_expansion() {
        let s = "cluster.local";
        assert_eq!(
            fqdn("reviews", "default", s),
            "reviews.default.svc.cluster.local"
        );
        // Istio takes a name with a dot as written: it is not a short name.
        assert_eq!(fqdn("reviews.prod", "default", s), "reviews.prod");
        assert_eq!(fqdn("api.example", "default", s), "api.example");
        assert_eq!(fqdn("10.0.0.1", "default", s), "10.0.0.1");
        assert_eq!(fqdn("*", "default", s), "*");
        assert_eq!(
            fqdn("reviews.prod.svc.cluster.local", "x", s),
            "reviews.prod.svc.cluster.local"
        );
        assert_eq!(fqdn("api.example.com", "x", s), "api.example.com");
        assert_eq!(fqdn("*.example.com", "x", s), "*.example.com");
    }

    #[test]
    fn wildcard_matching() {
        assert!(matches("*", "a.b"));
        assert!(matches("*.example.com", "api.example.com"));
        assert!(!matches("*.example.com", "example.com"));
        assert!(matches(
            "reviews.default.svc.cluster.local",
            "reviews.default.svc.cluster.local"
        ));
        assert!(!matches(
            "reviews.default.svc.cluster.local",
            "ratings.default.svc.cluster.local"
        ));
        assert!(specificity("a.b") > specificity("*.b"));
        assert!(specificity("*.a.b") > specificity("*.b"));
    }

    #[test]
    fn domains_include_short_names_only_in_the_same_namespace() {
        let d = domains(
            "reviews.default.svc.cluster.local",
            "reviews",
            "default",
            "default",
            9080,
        );
        assert!(d.contains(&"reviews".to_string()));
        assert!(d.contains(&"reviews:9080".to_string()));
        assert!(d.contains(&"reviews.default.svc.cluster.local:9080".to_string()));
        let d = domains(
            "reviews.default.svc.cluster.local",
            "reviews",
            "default",
            "other",
            9080,
        );
        assert!(!d.contains(&"reviews".to_string()));
        assert!(d.contains(&"reviews.default".to_string()));
    }
}
