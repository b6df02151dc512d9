//! The four services of Istio's Bookinfo sample, reproduced closely enough
//! that Istio's own Bookinfo YAML and traffic-management tasks apply as-is.

pub mod details;
mod page;
pub mod productpage;
pub mod ratings;
pub mod reviews;

/// Base URLs (`http://host:port`, no trailing slash) of the Bookinfo services.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Upstreams {
    pub details: String,
    pub reviews: String,
    pub ratings: String,
}

impl Upstreams {
    /// Resolves the base URLs the way the original services do
    /// (`<NAME>_HOSTNAME`, `SERVICES_DOMAIN`, `<NAME>_SERVICE_PORT`), plus
    /// `<NAME>_URL` overriding the whole base URL. `var` looks a variable up,
    /// so that tests need not touch the process environment.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Upstreams {
        let domain = var("SERVICES_DOMAIN")
            .filter(|d| !d.is_empty())
            .map(|d| format!(".{d}"))
            .unwrap_or_default();
        let base = |service: &str| {
            let upper = service.to_ascii_uppercase();
            if let Some(url) = var(&format!("{upper}_URL")).filter(|u| !u.is_empty()) {
                return url.trim_end_matches('/').to_owned();
            }
            let host = var(&format!("{upper}_HOSTNAME")).unwrap_or_else(|| service.to_owned());
            let port = var(&format!("{upper}_SERVICE_PORT")).unwrap_or_else(|| "9080".to_owned());
            format!("http://{host}{domain}:{port}")
        };
        Upstreams {
            details: base("details"),
            reviews: base("reviews"),
            ratings: base("ratings"),
        }
    }
}

/// The product id in `/<prefix>/<id>`, still unparsed; `None` if the path is
/// not of that shape.
fn id_segment<'a>(path: &'a str, prefix: &str) -> Option<&'a str> {
    let id = path.strip_prefix(prefix)?;
    (!id.contains('/')).then_some(id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn upstreams(vars: &[(&str, &str)]) -> Upstreams {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Upstreams::from_vars(|k| vars.get(k).cloned())
    }

    #[test]
    fn defaults_match_the_original() {
        let u = upstreams(&[]);
        assert_eq!(u.details, "http://details:9080");
        assert_eq!(u.reviews, "http://reviews:9080");
        assert_eq!(u.ratings, "http://ratings:9080");
    }

    #[test]
    fn hostname_domain_port_and_url_overrides() {
        let u = upstreams(&[
            ("SERVICES_DOMAIN", "bookinfo.svc.cluster.local"),
            ("DETAILS_HOSTNAME", "details-v2"),
            ("RATINGS_SERVICE_PORT", "8080"),
            ("REVIEWS_URL", "http://127.0.0.1:1234/"),
        ]);
        assert_eq!(
            u.details,
            "http://details-v2.bookinfo.svc.cluster.local:9080"
        );
        assert_eq!(u.reviews, "http://127.0.0.1:1234");
        assert_eq!(u.ratings, "http://ratings.bookinfo.svc.cluster.local:8080");
    }

    #[test]
    fn id_segment_shapes() {
        assert_eq!(id_segment("/details/0", "/details/"), Some("0"));
        assert_eq!(id_segment("/details/", "/details/"), Some(""));
        assert_eq!(id_segment("/details/0/x", "/details/"), None);
        assert_eq!(id_segment("/other/0", "/details/"), None);
    }
}
