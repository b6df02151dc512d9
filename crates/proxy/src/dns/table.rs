//! Which names the DNS proxy answers itself, and with what: every name a
//! client in this pod's namespace may use for a mesh host, as Kubernetes'
//! DNS and Istio's DNS proxy answer them.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr};

/// Istio's range for auto-allocated VIPs (ServiceEntries without
/// addresses): class E, never routed anywhere. IPv4 only, as Istio
/// allocates unless the mesh is dual-stack: an IPv6 answer would send
/// clients to an address their pod has no route for.
const AUTO_V4: [u8; 2] = [240, 240];

/// A VIP for each host that has no address: the n-th such host (in name
/// order, so that the same hosts always get the same addresses) gets
/// 240.240.x.y. Wildcard hosts get none: they are no single name.
pub fn allocate(hosts: &BTreeMap<String, Vec<IpAddr>>) -> BTreeMap<String, Vec<IpAddr>> {
    hosts
        .iter()
        .filter(|(host, ips)| ips.is_empty() && !host.starts_with('*'))
        .enumerate()
        .filter_map(|(i, (host, _))| {
            let n = u16::try_from(i + 1).ok()?;
            let [hi, lo] = n.to_be_bytes();
            let v4 = Ipv4Addr::new(AUTO_V4[0], AUTO_V4[1], hi, lo);
            Some((host.clone(), vec![IpAddr::V4(v4)]))
        })
        .collect()
}

/// Lowercase names without the trailing dot, to the host's addresses.
#[derive(Debug, Default, PartialEq)]
pub struct NameTable {
    names: HashMap<String, Vec<IpAddr>>,
}

impl NameTable {
    /// `hosts`: every host the proxy knows with its VIPs; `namespace`: the
    /// pod's, where short names resolve.
    pub fn build(hosts: &BTreeMap<String, Vec<IpAddr>>, namespace: &str) -> Self {
        let mut names: HashMap<String, Vec<IpAddr>> = HashMap::new();
        for (host, ips) in hosts {
            if ips.is_empty() || host.starts_with('*') {
                continue;
            }
            let host = host.to_ascii_lowercase();
            let mut add = |name: String| {
                let entry = names.entry(name).or_default();
                for ip in ips {
                    if !entry.contains(ip) {
                        entry.push(*ip);
                    }
                }
            };
            // A Kubernetes service: <name>.<namespace>.svc.<domain>.
            let parts: Vec<&str> = host.split('.').collect();
            if parts.len() >= 4 && parts[2] == "svc" {
                let (name, ns) = (parts[0], parts[1]);
                add(format!("{name}.{ns}.svc"));
                add(format!("{name}.{ns}"));
                if ns == namespace {
                    add(name.to_string());
                }
            }
            add(host);
        }
        NameTable { names }
    }

    /// The addresses of `name` (as a client asked, any case, with or
    /// without the final dot); `None`: not a mesh name.
    pub fn lookup(&self, name: &str) -> Option<&[IpAddr]> {
        let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
        self.names.get(&name).map(Vec::as_slice)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn names_a_client_may_use() {
        let mut hosts = BTreeMap::new();
        hosts.insert(
            "reviews.default.svc.cluster.local".to_string(),
            vec![ip("10.96.0.7")],
        );
        hosts.insert(
            "ratings.prod.svc.cluster.local".to_string(),
            vec![ip("10.96.0.8")],
        );
        hosts.insert("api.example.com".to_string(), vec![ip("192.0.2.10")]);
        hosts.insert("*.wild.example.com".to_string(), vec![]);
        hosts.insert("db.example.com".to_string(), vec![]);
        let allocated = allocate(&hosts);
        assert_eq!(
            allocated.get("db.example.com"),
            Some(&vec![ip("240.240.0.1")])
        );
        assert_eq!(allocated.len(), 1, "wildcards get no address");
        hosts.extend(allocated);
        let table = NameTable::build(&hosts, "default");
        let cases: &[(&str, Option<&str>)] = &[
            ("reviews", Some("10.96.0.7")),
            ("reviews.default", Some("10.96.0.7")),
            ("reviews.default.svc", Some("10.96.0.7")),
            ("Reviews.Default.svc.cluster.local.", Some("10.96.0.7")),
            // Short names only in the pod's own namespace.
            ("ratings", None),
            ("ratings.prod", Some("10.96.0.8")),
            ("api.example.com", Some("192.0.2.10")),
            ("api", None),
            ("db.example.com.", Some("240.240.0.1")),
            ("x.wild.example.com", None),
            ("example.org", None),
        ];
        for (name, want) in cases {
            assert_eq!(
                table.lookup(name).and_then(|ips| ips.first().copied()),
                want.map(ip),
                "{name}"
            );
        }
    }
}
