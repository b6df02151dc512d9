//! DestinationRule traffic policy → the cluster's load balancer, connection
//! pool (circuit breakers), outlier detection and locality settings, with
//! Istio's merge rules and defaults:
//! - a subset's policy overrides the top-level one field by field
//!   (loadBalancer, connectionPool, outlierDetection);
//! - `portLevelSettings` for the cluster's port replace those fields
//!   wholesale: a field a port-level entry leaves out takes its default, it
//!   does not inherit from the enclosing policy.

use api::networking::{
    ConnectionPoolSettings, ConsistentHashLb, LoadBalancerSettings, OutlierDetection,
    PortTrafficPolicy, SimpleLb, TrafficPolicy,
};
use wire::pb;

use crate::mesh_config::MeshConfig;

/// Envoy's outlier detection defaults, as Istio leaves them.
const DEFAULT_CONSECUTIVE_5XX: u32 = 5;
const DEFAULT_INTERVAL_MS: u64 = 10_000;
const DEFAULT_BASE_EJECTION_MS: u64 = 30_000;
const DEFAULT_MAX_EJECTION_PERCENT: u32 = 10;
const DEFAULT_RING_SIZE: u64 = 1024;
const DEFAULT_MAGLEV_TABLE: u64 = 65_537;

/// The policy parts that apply to one cluster after merging.
#[derive(Clone, Copy, Default)]
struct Effective<'a> {
    lb: Option<&'a LoadBalancerSettings>,
    pool: Option<&'a ConnectionPoolSettings>,
    outlier: Option<&'a OutlierDetection>,
}

impl<'a> Effective<'a> {
    fn of_policy(p: &'a TrafficPolicy) -> Self {
        Effective {
            lb: p.load_balancer.as_ref(),
            pool: p.connection_pool.as_ref(),
            outlier: p.outlier_detection.as_ref(),
        }
    }

    fn of_port(p: &'a PortTrafficPolicy) -> Self {
        Effective {
            lb: p.load_balancer.as_ref(),
            pool: p.connection_pool.as_ref(),
            outlier: p.outlier_detection.as_ref(),
        }
    }
}

fn port_level(p: &TrafficPolicy, port: u32) -> Option<&PortTrafficPolicy> {
    p.port_level_settings
        .iter()
        .find(|s| s.port.as_ref().is_some_and(|sel| sel.number == port))
}

/// Istio's `MergeTrafficPolicy`: top level (or its settings for `port`), then
/// what the subset sets, then the subset's settings for `port`.
fn merge<'a>(
    top: Option<&'a TrafficPolicy>,
    subset: Option<&'a TrafficPolicy>,
    port: u32,
) -> Effective<'a> {
    let mut eff = match top {
        Some(t) => port_level(t, port).map_or_else(|| Effective::of_policy(t), Effective::of_port),
        None => Effective::default(),
    };
    if let Some(s) = subset {
        eff.lb = s.load_balancer.as_ref().or(eff.lb);
        eff.pool = s.connection_pool.as_ref().or(eff.pool);
        eff.outlier = s.outlier_detection.as_ref().or(eff.outlier);
        if let Some(pl) = port_level(s, port) {
            eff = Effective::of_port(pl);
        }
    }
    eff
}

/// The cluster fields the traffic policy decides, for the cluster of
/// `subset` (its own policy, if any) on `port`; the caller fills in the rest.
pub fn cluster_fields(
    top: Option<&TrafficPolicy>,
    subset: Option<&TrafficPolicy>,
    port: u32,
    mesh: &MeshConfig,
) -> pb::Cluster {
    let eff = merge(top, subset, port);
    let consistent_hash = eff
        .lb
        .and_then(|lb| lb.consistent_hash.as_ref())
        .and_then(consistent_hash);
    pb::Cluster {
        lb: simple_lb(eff.lb) as i32,
        connect_timeout_ms: eff
            .pool
            .and_then(|p| p.tcp.as_ref())
            .and_then(|t| t.connect_timeout)
            .map_or(mesh.connect_timeout_ms, |d| millis(d.as_std())),
        connection_pool: eff.pool.map(connection_pool),
        outlier_detection: eff.outlier.map(outlier_detection),
        consistent_hash,
        locality_lb: locality_lb(eff.lb, eff.outlier.is_some()),
        ..Default::default()
    }
}

fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn simple_lb(lb: Option<&LoadBalancerSettings>) -> pb::LoadBalancer {
    match lb.and_then(|lb| lb.simple) {
        Some(SimpleLb::RoundRobin) => pb::LoadBalancer::RoundRobin,
        Some(SimpleLb::Random) => pb::LoadBalancer::Random,
        Some(SimpleLb::Passthrough) => pb::LoadBalancer::Passthrough,
        // LEAST_CONN is LEAST_REQUEST's deprecated name; unset is Istio's default, LEAST_REQUEST.
        _ => pb::LoadBalancer::LeastRequest,
    }
}

/// Istio only applies positive limits; anything else keeps Envoy's 2^32-1
/// (sent as 0).
fn positive(v: Option<i32>) -> u32 {
    v.and_then(|v| u32::try_from(v).ok()).unwrap_or(0)
}

fn connection_pool(p: &ConnectionPoolSettings) -> pb::ConnectionPool {
    let tcp = p.tcp.as_ref();
    let http = p.http.as_ref();
    pb::ConnectionPool {
        max_connections: positive(tcp.and_then(|t| t.max_connections)),
        max_pending_requests: positive(http.and_then(|h| h.http1_max_pending_requests)),
        max_requests: positive(http.and_then(|h| h.http2_max_requests)),
        max_retries: positive(http.and_then(|h| h.max_retries)),
        max_requests_per_connection: positive(http.and_then(|h| h.max_requests_per_connection)),
        idle_timeout_ms: http
            .and_then(|h| h.idle_timeout)
            .map(|d| millis(d.as_std())),
        max_connection_duration_ms: tcp
            .and_then(|t| t.max_connection_duration)
            .map_or(0, |d| millis(d.as_std())),
    }
}

fn outlier_detection(o: &OutlierDetection) -> pb::OutlierDetection {
    // The deprecated `consecutiveErrors` counts gateway errors only and turns
    // the 5xx detector off, as Istio maps it.
    let legacy = o
        .consecutive_errors
        .and_then(|v| u32::try_from(v).ok())
        .filter(|v| *v > 0);
    let default_5xx = if legacy.is_some() {
        0
    } else {
        DEFAULT_CONSECUTIVE_5XX
    };
    pb::OutlierDetection {
        consecutive_5xx: o.consecutive_5xx_errors.unwrap_or(default_5xx),
        consecutive_gateway_errors: o.consecutive_gateway_errors.or(legacy).unwrap_or(0),
        interval_ms: o
            .interval
            .map_or(DEFAULT_INTERVAL_MS, |d| millis(d.as_std()).max(1)),
        base_ejection_time_ms: o
            .base_ejection_time
            .map_or(DEFAULT_BASE_EJECTION_MS, |d| millis(d.as_std()).max(1)),
        max_ejection_percent: o
            .max_ejection_percent
            .and_then(|v| u32::try_from(v).ok())
            .filter(|v| *v > 0)
            .map_or(DEFAULT_MAX_EJECTION_PERCENT, |v| v.min(100)),
        min_health_percent: o
            .min_health_percent
            .and_then(|v| u32::try_from(v).ok())
            .map_or(0, |v| v.min(100)),
    }
}

fn consistent_hash(ch: &ConsistentHashLb) -> Option<pb::ConsistentHash> {
    use pb::consistent_hash::Key;
    let key = if let Some(h) = &ch.http_header_name {
        Key::Header(h.to_ascii_lowercase())
    } else if let Some(c) = &ch.http_cookie {
        Key::Cookie(pb::HashCookie {
            name: c.name.clone(),
            path: c.path.clone().unwrap_or_default(),
            ttl_ms: c.ttl.map(|d| millis(d.as_std())),
        })
    } else if ch.use_source_ip == Some(true) {
        Key::SourceIp(true)
    } else if let Some(q) = &ch.http_query_parameter_name {
        Key::QueryParameter(q.clone())
    } else {
        // No hash key: validation rejects it; balance as Istio's default does.
        return None;
    };
    let (algorithm, table_size) = match &ch.maglev {
        Some(m) => (
            pb::HashAlgorithm::Maglev,
            m.table_size
                .filter(|s| *s > 0)
                .unwrap_or(DEFAULT_MAGLEV_TABLE),
        ),
        None => (
            pb::HashAlgorithm::RingHash,
            ch.ring_hash
                .as_ref()
                .and_then(|r| r.minimum_ring_size)
                .or(ch.minimum_ring_size)
                .filter(|s| *s > 0)
                .unwrap_or(DEFAULT_RING_SIZE),
        ),
    };
    Some(pb::ConsistentHash {
        key: Some(key),
        algorithm: algorithm as i32,
        table_size,
    })
}

/// Istio's locality load balancing: on unless disabled; `distribute` weights
/// localities on its own, while failover (by locality, `failover` rules or
/// `failoverPriority` labels) needs outlier detection, because without it
/// the proxy would never leave the first tier.
fn locality_lb(
    lb: Option<&LoadBalancerSettings>,
    outlier_detection: bool,
) -> Option<pb::LocalityLb> {
    let setting = lb.and_then(|lb| lb.locality_lb_setting.as_ref());
    if setting.and_then(|s| s.enabled) == Some(false) {
        return None;
    }
    let distribute: Vec<pb::LocalityDistribute> = setting
        .map(|s| s.distribute.as_slice())
        .unwrap_or_default()
        .iter()
        .map(|d| pb::LocalityDistribute {
            from: d.from.clone(),
            to: d.to.clone(),
        })
        .collect();
    if !distribute.is_empty() {
        return Some(pb::LocalityLb {
            distribute,
            ..Default::default()
        });
    }
    if !outlier_detection {
        return None;
    }
    Some(pb::LocalityLb {
        distribute: Vec::new(),
        failover: setting
            .map(|s| s.failover.as_slice())
            .unwrap_or_default()
            .iter()
            .map(|f| pb::LocalityFailover {
                from: f.from.clone(),
                to: f.to.clone(),
            })
            .collect(),
        failover_priority: setting
            .map(|s| s.failover_priority.clone())
            .unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(json: &str) -> TrafficPolicy {
        serde_json::from_str(json).expect("traffic policy")
    }

    fn fields(
        top: Option<&TrafficPolicy>,
        subset: Option<&TrafficPolicy>,
        port: u32,
    ) -> pb::Cluster {
        cluster_fields(top, subset, port, &MeshConfig::default())
    }

    #[test]
    fn no_policy_gives_istio_defaults() {
        let c = fields(None, None, 9080);
        assert_eq!(c.lb, pb::LoadBalancer::LeastRequest as i32);
        assert_eq!(c.connect_timeout_ms, 10_000);
        assert!(c.connection_pool.is_none() && c.outlier_detection.is_none());
        assert!(c.consistent_hash.is_none() && c.locality_lb.is_none());
    }

    #[test]
    fn connection_pool_limits_and_defaults() {
        let p = policy(
            r#"{"connectionPool": {
                "tcp": {"maxConnections": 1, "connectTimeout": "250ms", "maxConnectionDuration": "1m"},
                "http": {"http1MaxPendingRequests": 1, "maxRequestsPerConnection": 1, "maxRetries": 3, "idleTimeout": "30s"}}}"#,
        );
        let c = fields(Some(&p), None, 9080);
        assert_eq!(c.connect_timeout_ms, 250);
        let pool = c.connection_pool.expect("pool");
        assert_eq!(
            (
                pool.max_connections,
                pool.max_pending_requests,
                pool.max_requests,
                pool.max_retries
            ),
            (1, 1, 0, 3),
            "http2MaxRequests unset stays unlimited (0)"
        );
        assert_eq!(pool.max_requests_per_connection, 1);
        assert_eq!(pool.idle_timeout_ms, Some(30_000));
        assert_eq!(pool.max_connection_duration_ms, 60_000);
    }

    #[test]
    fn outlier_detection_defaults_and_the_seed() {
        // The seed's circuit breaker.
        let p = policy(
            r#"{"outlierDetection": {"consecutive5xxErrors": 1, "interval": "1s", "baseEjectionTime": "3m", "maxEjectionPercent": 100}}"#,
        );
        let od = fields(Some(&p), None, 9080)
            .outlier_detection
            .expect("outlier detection");
        assert_eq!(
            od,
            pb::OutlierDetection {
                consecutive_5xx: 1,
                consecutive_gateway_errors: 0,
                interval_ms: 1000,
                base_ejection_time_ms: 180_000,
                max_ejection_percent: 100,
                min_health_percent: 0,
            }
        );
        let od = fields(Some(&policy(r#"{"outlierDetection": {}}"#)), None, 80)
            .outlier_detection
            .expect("set");
        assert_eq!(
            (
                od.consecutive_5xx,
                od.consecutive_gateway_errors,
                od.interval_ms,
                od.base_ejection_time_ms
            ),
            (5, 0, 10_000, 30_000)
        );
        assert_eq!(od.max_ejection_percent, 10);
        let od = fields(
            Some(&policy(r#"{"outlierDetection": {"consecutiveErrors": 3}}"#)),
            None,
            80,
        )
        .outlier_detection
        .expect("set");
        assert_eq!(
            (od.consecutive_5xx, od.consecutive_gateway_errors),
            (0, 3),
            "legacy field = gateway errors"
        );
        let od = fields(Some(&policy(r#"{"outlierDetection": {"consecutive5xxErrors": 0, "consecutiveGatewayErrors": 2}}"#)), None, 80)
            .outlier_detection
            .expect("set");
        assert_eq!((od.consecutive_5xx, od.consecutive_gateway_errors), (0, 2));
    }

    #[test]
    fn subset_overrides_field_by_field() {
        let top = policy(
            r#"{"loadBalancer": {"simple": "ROUND_ROBIN"}, "connectionPool": {"tcp": {"maxConnections": 7}}}"#,
        );
        let subset = policy(r#"{"connectionPool": {"tcp": {"maxConnections": 2}}}"#);
        let c = fields(Some(&top), Some(&subset), 9080);
        assert_eq!(
            c.lb,
            pb::LoadBalancer::RoundRobin as i32,
            "inherited from the top level"
        );
        assert_eq!(
            c.connection_pool.expect("pool").max_connections,
            2,
            "the subset's own"
        );
    }

    #[test]
    fn port_level_settings_do_not_inherit() {
        let top = policy(
            r#"{"loadBalancer": {"simple": "ROUND_ROBIN"},
                "connectionPool": {"tcp": {"maxConnections": 7}},
                "portLevelSettings": [{"port": {"number": 9080}, "outlierDetection": {"consecutive5xxErrors": 2}}]}"#,
        );
        let on_port = fields(Some(&top), None, 9080);
        assert_eq!(
            on_port.lb,
            pb::LoadBalancer::LeastRequest as i32,
            "default, not the top level's"
        );
        assert!(on_port.connection_pool.is_none());
        assert_eq!(on_port.outlier_detection.expect("od").consecutive_5xx, 2);
        let other_port = fields(Some(&top), None, 9090);
        assert_eq!(other_port.lb, pb::LoadBalancer::RoundRobin as i32);
        assert_eq!(other_port.connection_pool.expect("pool").max_connections, 7);
        // A subset's port-level entry replaces whatever came before it.
        let subset = policy(
            r#"{"connectionPool": {"tcp": {"maxConnections": 3}},
                "portLevelSettings": [{"port": {"number": 9090}, "loadBalancer": {"simple": "RANDOM"}}]}"#,
        );
        let c = fields(Some(&top), Some(&subset), 9090);
        assert_eq!(c.lb, pb::LoadBalancer::Random as i32);
        assert!(c.connection_pool.is_none());
        assert_eq!(
            fields(Some(&top), Some(&subset), 9091)
                .connection_pool
                .expect("pool")
                .max_connections,
            3
        );
    }

    #[test]
    fn consistent_hash_keys_and_tables() {
        use pb::consistent_hash::Key;
        let c = fields(
            Some(&policy(
                r#"{"loadBalancer": {"consistentHash": {"httpHeaderName": "X-User"}}}"#,
            )),
            None,
            80,
        );
        let ch = c.consistent_hash.expect("hash");
        assert_eq!(ch.key, Some(Key::Header("x-user".into())));
        assert_eq!(
            (ch.algorithm, ch.table_size),
            (pb::HashAlgorithm::RingHash as i32, 1024)
        );
        let ch = fields(
            Some(&policy(
                r#"{"loadBalancer": {"consistentHash": {"httpCookie": {"name": "session", "path": "/", "ttl": "0s"}, "maglev": {}}}}"#,
            )),
            None,
            80,
        )
        .consistent_hash
        .expect("hash");
        assert_eq!(
            ch.key,
            Some(Key::Cookie(pb::HashCookie {
                name: "session".into(),
                path: "/".into(),
                ttl_ms: Some(0)
            }))
        );
        assert_eq!(
            (ch.algorithm, ch.table_size),
            (pb::HashAlgorithm::Maglev as i32, 65_537)
        );
        let ch = fields(
            Some(&policy(
                r#"{"loadBalancer": {"consistentHash": {"useSourceIp": true, "ringHash": {"minimumRingSize": 4096}}}}"#,
            )),
            None,
            80,
        )
        .consistent_hash
        .expect("hash");
        assert_eq!((ch.key, ch.table_size), (Some(Key::SourceIp(true)), 4096));
    }

    #[test]
    fn locality_needs_outlier_detection_for_failover() {
        let failover = r#""loadBalancer": {"localityLbSetting": {"failover": [{"from": "us-east", "to": "us-west"}]}}"#;
        let no_od = policy(&format!("{{{failover}}}"));
        assert!(fields(Some(&no_od), None, 80).locality_lb.is_none());
        let with_od = policy(&format!(r#"{{{failover}, "outlierDetection": {{}}}}"#));
        let l = fields(Some(&with_od), None, 80)
            .locality_lb
            .expect("locality");
        assert_eq!(
            l.failover,
            vec![pb::LocalityFailover {
                from: "us-east".into(),
                to: "us-west".into()
            }]
        );
        // Default failover when outlier detection is on and nothing else is said.
        assert!(
            fields(Some(&policy(r#"{"outlierDetection": {}}"#)), None, 80)
                .locality_lb
                .is_some()
        );
        let off = policy(
            r#"{"loadBalancer": {"localityLbSetting": {"enabled": false}}, "outlierDetection": {}}"#,
        );
        assert!(fields(Some(&off), None, 80).locality_lb.is_none());
        let dist = policy(
            r#"{"loadBalancer": {"localityLbSetting": {"distribute": [{"from": "us-east/*", "to": {"us-east/*": 80, "us-west/*": 20}}]}}}"#,
        );
        let l = fields(Some(&dist), None, 80)
            .locality_lb
            .expect("distribute works alone");
        assert_eq!(l.distribute[0].to.get("us-west/*"), Some(&20));
    }
}
