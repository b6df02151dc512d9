//! Locality-aware load balancing, as Istio sets it up for Envoy:
//! - failover: endpoints are put in priority tiers by how close their
//!   locality is to this proxy's (same subzone 0, zone 1, region 2, else 3;
//!   4 for regions a `failover` rule says not to fail over to), or by how
//!   many `failoverPriority` labels they share with this proxy. Traffic goes
//!   to the best tier while enough of it is available (see `tier_loads`).
//! - distribute: localities get shares of the traffic as weights.

use std::collections::BTreeMap;

use wire::pb;

/// A locality, `region/zone/subzone`; missing parts are empty.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Locality {
    pub region: String,
    pub zone: String,
    pub subzone: String,
}

impl Locality {
    pub fn parse(s: &str) -> Self {
        let mut parts = s.splitn(3, '/');
        let mut next = || parts.next().unwrap_or("").to_string();
        Locality {
            region: next(),
            zone: next(),
            subzone: next(),
        }
    }

    /// Istio's `LocalityMatch`: a pattern of `region/zone/subzone` parts,
    /// each `*` or exact; a missing or `*` trailing part matches anything.
    pub fn matches(&self, pattern: &str) -> bool {
        let mine = [&self.region, &self.zone, &self.subzone];
        for (i, p) in pattern.split('/').enumerate() {
            if p == "*" {
                // "*" stands for this part and everything below it.
                return true;
            }
            match mine.get(i) {
                Some(m) if *m == p => {}
                _ => return false,
            }
        }
        true
    }
}

/// Who this proxy is, for locality decisions.
#[derive(Clone, Debug, Default)]
pub struct Local {
    pub locality: Locality,
    pub labels: BTreeMap<String, String>,
}

impl Local {
    /// From the node's labels: the Kubernetes topology labels, else Istio's
    /// `istio-locality` label ("region.zone.subzone").
    pub fn from_node(node: &pb::Node) -> Self {
        let get = |k: &str| node.labels.get(k).cloned().unwrap_or_default();
        let mut locality = Locality {
            region: get("topology.kubernetes.io/region"),
            zone: get("topology.kubernetes.io/zone"),
            subzone: get("topology.istio.io/subzone"),
        };
        if locality == Locality::default()
            && let Some(l) = node.labels.get("istio-locality")
        {
            locality = Locality::parse(&l.replace('.', "/"));
        }
        Local {
            locality,
            labels: node.labels.clone(),
        }
    }
}

/// A cluster's locality settings.
#[derive(Debug)]
pub struct Policy {
    distribute: Vec<(String, Vec<(String, u32)>)>,
    failover: Vec<(String, String)>,
    failover_priority: Vec<String>,
}

/// Where one endpoint stands: its tier, and its locality's weight when
/// `distribute` applies (`None`: not weighted).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Placement {
    pub priority: u32,
    pub weight: Option<u32>,
}

impl Policy {
    pub fn from_pb(l: Option<&pb::LocalityLb>) -> Option<Self> {
        let l = l?;
        Some(Policy {
            distribute: l
                .distribute
                .iter()
                .map(|d| {
                    (
                        d.from.clone(),
                        d.to.iter().map(|(k, v)| (k.clone(), *v)).collect(),
                    )
                })
                .collect(),
            failover: l
                .failover
                .iter()
                .map(|f| (f.from.clone(), f.to.clone()))
                .collect(),
            failover_priority: l.failover_priority.clone(),
        })
    }

    /// Places each endpoint, given its locality and labels.
    pub fn place(
        &self,
        local: &Local,
        endpoints: &[(Locality, &BTreeMap<String, String>)],
    ) -> Vec<Placement> {
        if let Some(weights) = self.distribute_weights(local, endpoints) {
            return weights
                .into_iter()
                .map(|w| Placement {
                    priority: 0,
                    weight: Some(w),
                })
                .collect();
        }
        endpoints
            .iter()
            .map(|(loc, labels)| Placement {
                priority: self.priority(local, loc, labels),
                weight: None,
            })
            .collect()
    }

    fn priority(&self, local: &Local, loc: &Locality, labels: &BTreeMap<String, String>) -> u32 {
        let by_locality = || {
            let l = &local.locality;
            let mut p = if l.region != loc.region {
                3
            } else if l.zone != loc.zone {
                2
            } else if l.subzone != loc.subzone {
                1
            } else {
                0
            };
            // A failover rule for this region names the only other region to use.
            if p == 3
                && let Some((_, to)) = self.failover.iter().find(|(from, _)| *from == l.region)
                && loc.region != *to
            {
                p = 4;
            }
            p
        };
        if self.failover_priority.is_empty() {
            return by_locality();
        }
        // How many of the labels, in order, the endpoint shares with this proxy.
        let shared = self
            .failover_priority
            .iter()
            .take_while(|k| {
                let mine = local.labels.get(*k);
                mine.is_some() && mine == labels.get(*k)
            })
            .count();
        let by_labels = (self.failover_priority.len() - shared) as u32;
        if self.failover.is_empty() {
            by_labels
        } else {
            // Istio's combination: five locality tiers within each label tier.
            by_labels * 5 + by_locality()
        }
    }

    /// Istio's `applyLocalityWeights`: the first rule whose `from` matches
    /// this proxy splits each `to` share among the localities it matches, in
    /// proportion to their endpoints; localities no `to` matches get nothing.
    fn distribute_weights(
        &self,
        local: &Local,
        endpoints: &[(Locality, &BTreeMap<String, String>)],
    ) -> Option<Vec<u32>> {
        let (_, to) = self
            .distribute
            .iter()
            .find(|(from, _)| local.locality.matches(from))?;
        let mut weights = vec![0u32; endpoints.len()];
        let mut assigned = vec![false; endpoints.len()];
        for (pattern, share) in to {
            let members: Vec<usize> = (0..endpoints.len())
                .filter(|i| !assigned[*i] && endpoints[*i].0.matches(pattern))
                .collect();
            // Every endpoint weighs 1, so a locality's share of `share` is its
            // share of the matched endpoints; spread per endpoint, rounded up.
            let n = members.len() as u64;
            for i in members {
                assigned[i] = true;
                weights[i] = u32::try_from((u64::from(*share) * 1000).div_ceil(n.max(1)))
                    .unwrap_or(u32::MAX);
            }
        }
        Some(weights)
    }
}

/// Envoy's over-provisioning factor: a tier keeps all its traffic until
/// fewer than 1/1.4 ≈ 71 % of its endpoints are available.
const OVERPROVISIONING: u64 = 140;

/// How much traffic a group of endpoints can take, in percent: Envoy's
/// min(100, 1.4 × the share available).
pub fn health(available: usize, total: usize) -> u64 {
    if total == 0 {
        return 0;
    }
    (OVERPROVISIONING * available as u64 / total as u64).min(100)
}

/// Envoy's priority load: each tier's health is min(100, 1.4 × available %);
/// tiers take traffic in order, each as much as its health allows, scaled so
/// that the whole adds up to 100 when the total health is below 100.
/// `tiers` are (available, total) per tier, best first; the result is each
/// tier's percentage of traffic.
pub fn tier_loads(tiers: &[(usize, usize)]) -> Vec<u32> {
    let health: Vec<u64> = tiers.iter().map(|&(a, t)| health(a, t)).collect();
    let total_health = health.iter().sum::<u64>().min(100);
    let mut loads = vec![0u32; tiers.len()];
    if total_health == 0 {
        return loads;
    }
    let mut remaining = 100u64;
    for (i, h) in health.iter().enumerate() {
        let l = (h * 100 / total_health).min(remaining);
        loads[i] = l as u32;
        remaining -= l;
    }
    // Rounding leftovers go to the first tier that takes traffic.
    if remaining > 0
        && let Some(first) = loads.iter_mut().find(|l| **l > 0)
    {
        *first += remaining as u32;
    }
    loads
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local(l: &str) -> Local {
        Local {
            locality: Locality::parse(l),
            labels: BTreeMap::new(),
        }
    }

    fn policy(failover: &[(&str, &str)], priority: &[&str]) -> Policy {
        Policy {
            distribute: Vec::new(),
            failover: failover
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect(),
            failover_priority: priority.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn locality_patterns() {
        let l = Locality::parse("us-east/us-east-1a/rack1");
        for (pattern, want) in [
            ("us-east/us-east-1a/rack1", true),
            ("us-east/*", true),
            ("*", true),
            ("us-east", true),
            ("us-east/us-east-1b", false),
            ("us-west/*", false),
        ] {
            assert_eq!(l.matches(pattern), want, "{pattern}");
        }
    }

    #[test]
    fn failover_tiers_by_locality_table() {
        let me = local("us-east/1a/r1");
        let none = BTreeMap::new();
        let p = policy(&[("us-east", "us-west")], &[]);
        for (ep, want) in [
            ("us-east/1a/r1", 0),
            ("us-east/1a/r2", 1),
            ("us-east/1b/r1", 2),
            ("us-west/1a/r1", 3),
            ("eu/1a/r1", 4),
        ] {
            let placed = p.place(&me, &[(Locality::parse(ep), &none)]);
            assert_eq!(placed[0].priority, want, "{ep}");
        }
        // No failover rule: every other region is tier 3.
        let p = policy(&[], &[]);
        assert_eq!(
            p.place(&me, &[(Locality::parse("eu/1a/r1"), &none)])[0].priority,
            3
        );
    }

    #[test]
    fn failover_priority_by_labels() {
        let mut me = local("r/z/s");
        me.labels = [
            ("net".to_string(), "n1".to_string()),
            ("zone".to_string(), "z1".to_string()),
        ]
        .into();
        let p = policy(&[], &["net", "zone"]);
        let both: BTreeMap<String, String> = me.labels.clone();
        let net_only: BTreeMap<String, String> = [
            ("net".to_string(), "n1".to_string()),
            ("zone".to_string(), "z2".to_string()),
        ]
        .into();
        let zone_only: BTreeMap<String, String> = [("zone".to_string(), "z1".to_string())].into();
        let loc = Locality::default();
        let placed = p.place(
            &me,
            &[
                (loc.clone(), &both),
                (loc.clone(), &net_only),
                (loc, &zone_only),
            ],
        );
        let tiers: Vec<u32> = placed.iter().map(|p| p.priority).collect();
        assert_eq!(tiers, vec![0, 1, 2], "labels count in order");
    }

    #[test]
    fn distribute_splits_shares() {
        let me = local("us-east/1a/r1");
        let p = Policy {
            distribute: vec![(
                "us-east/*".into(),
                vec![("us-east/*".into(), 80), ("us-west/*".into(), 20)],
            )],
            failover: Vec::new(),
            failover_priority: Vec::new(),
        };
        let none = BTreeMap::new();
        let eps: Vec<(Locality, &BTreeMap<String, String>)> =
            ["us-east/1a/x", "us-east/1b/x", "us-west/1a/x", "eu/1a/x"]
                .iter()
                .map(|l| (Locality::parse(l), &none))
                .collect();
        let placed = p.place(&me, &eps);
        let w: Vec<u32> = placed.iter().map(|p| p.weight.unwrap_or(0)).collect();
        assert_eq!(w, vec![40_000, 40_000, 20_000, 0]);
        // A proxy no rule is for: no weighting.
        let placed = p.place(&local("eu/1a/x"), &eps);
        assert!(placed.iter().all(|p| p.weight.is_none()));
    }

    #[test]
    fn tier_loads_follow_envoy() {
        // All healthy: the first tier takes everything.
        assert_eq!(tier_loads(&[(4, 4), (4, 4)]), vec![100, 0]);
        // 3 of 4 available: 1.4 × 75 % = 105 % → still all of it.
        assert_eq!(tier_loads(&[(3, 4), (4, 4)]), vec![100, 0]);
        // 1 of 2: 70 %, the next tier takes the rest.
        assert_eq!(tier_loads(&[(1, 2), (2, 2)]), vec![70, 30]);
        // Nothing left in the first tier.
        assert_eq!(tier_loads(&[(0, 2), (2, 2)]), vec![0, 100]);
        // Not enough health anywhere: scaled up to 100.
        assert_eq!(tier_loads(&[(1, 4), (1, 4)]), vec![50, 50]);
        assert_eq!(tier_loads(&[(0, 1)]), vec![0]);
    }
}
