//! Names a resource's content leaves to the resource, in the compact forms
//! (`DiscoveryRequest.compact_resources`): a cluster is named by its
//! resource, a cluster's endpoints too (`ClusterEndpoints.cluster`), and a
//! route piece's virtual host by its resource's name after `<config>/`. Each
//! of a thousand clusters and virtual hosts then carries its name once, not
//! twice. [`leave_out`] writes the form (the control plane), [`put_back`]
//! reads it (the proxy, and the control plane for a proxy that does not).

use crate::pb::resource::Kind;

/// Leaves out of `kind` what `resource`, its resource's name, gives.
pub fn leave_out(resource: &str, kind: &mut Kind) {
    match kind {
        Kind::Cluster(c) if c.name == resource => c.name.clear(),
        Kind::Endpoints(e) if e.cluster == resource => e.cluster.clear(),
        Kind::RouteConfig(rc) => {
            if let [vh] = &mut rc.virtual_hosts[..]
                && piece_host(resource, &rc.name) == Some(vh.name.as_str())
            {
                vh.name.clear();
            }
        }
        _ => {}
    }
}

/// Puts back into `kind` what [`leave_out`] left out. A name that is
/// empty is taken from `resource`: a virtual host named by nothing, listed
/// twice in one config (which the compiler never does: its pieces are then
/// `<config>/#<i>`), would be named `#<i>`.
pub fn put_back(resource: &str, kind: &mut Kind) {
    match kind {
        Kind::Cluster(c) if c.name.is_empty() => c.name = resource.to_string(),
        Kind::Endpoints(e) if e.cluster.is_empty() => e.cluster = resource.to_string(),
        Kind::RouteConfig(rc) => {
            if let [vh] = &mut rc.virtual_hosts[..]
                && vh.name.is_empty()
                && let Some(host) = piece_host(resource, &rc.name)
            {
                vh.name = host.to_string();
            }
        }
        _ => {}
    }
}

/// The virtual host a route piece named `resource` of config `config` is
/// for, by the piece's name (`<config>/<virtual host>`).
fn piece_host<'a>(resource: &'a str, config: &str) -> Option<&'a str> {
    resource.strip_prefix(config)?.strip_prefix('/')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb::{Cluster, ClusterEndpoints, RouteConfig, VirtualHost};

    fn piece(config: &str, host: &str) -> Kind {
        Kind::RouteConfig(RouteConfig {
            name: config.into(),
            virtual_hosts: vec![VirtualHost {
                name: host.into(),
                domains: vec!["a".into()],
                ..Default::default()
            }],
        })
    }

    #[test]
    fn names_left_out_are_put_back_exactly() {
        let cluster = |name: &str| {
            Kind::Cluster(Cluster {
                name: name.into(),
                port: 80,
                ..Default::default()
            })
        };
        let endpoints = |name: &str| {
            Kind::Endpoints(ClusterEndpoints {
                cluster: name.into(),
                ..Default::default()
            })
        };
        let config = Kind::RouteConfig(RouteConfig {
            name: "80".into(),
            virtual_hosts: vec![
                VirtualHost {
                    name: "a:80".into(),
                    ..Default::default()
                },
                VirtualHost {
                    name: "b:80".into(),
                    ..Default::default()
                },
            ],
        });
        // (resource name, content, what the compact form holds)
        let cases = [
            ("outbound|80||a", cluster("outbound|80||a"), cluster("")),
            ("outbound|80||a", endpoints("outbound|80||a"), endpoints("")),
            ("80/a:80", piece("80", "a:80"), piece("80", "")),
            (
                "http.80/a:80",
                piece("http.80", "a:80"),
                piece("http.80", ""),
            ),
            // A name the resource's does not give stays.
            ("x", cluster("outbound|80||a"), cluster("outbound|80||a")),
            ("80/a:80#3", piece("80", "a:80"), piece("80", "a:80")),
            ("81/a:80", piece("80", "a:80"), piece("80", "a:80")),
            // A config whole (not a piece) stays whole.
            ("80", config.clone(), config),
            ("80/", piece("80", ""), piece("80", "")),
        ];
        for (resource, whole, compact) in cases {
            let mut k = whole.clone();
            leave_out(resource, &mut k);
            assert_eq!(k, compact, "{resource}");
            put_back(resource, &mut k);
            assert_eq!(k, whole, "{resource}");
        }
    }
}
