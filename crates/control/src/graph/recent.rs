//! Single requests worth a look, from the proxies' `GET /stats/recent`:
//! each proxy keeps its last errors and its slowest requests of the last
//! minute (with trace and request ids); here they are merged per service.
//! A request both sides reported (the same request id) is shown once, as
//! its destination reported it, as the graph counts it.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

/// Errors and slowest requests shown per service.
pub const ERRORS_SHOWN: usize = 20;
pub const SLOWEST_SHOWN: usize = 10;

/// One proxy's answer.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct ProxyRecent {
    #[serde(default)]
    pub errors: Vec<Notable>,
    #[serde(default)]
    pub slowest: Vec<Notable>,
}

/// A request as a proxy reported it.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
pub struct Notable {
    /// Unix time it ended, in milliseconds.
    pub end_ms: u64,
    pub reporter: String,
    pub source_workload: String,
    pub source_namespace: String,
    pub destination_workload: String,
    pub destination_namespace: String,
    pub destination_service: String,
    pub route: Option<String>,
    pub method: String,
    pub response_code: u16,
    pub grpc_status: Option<u16>,
    pub response_flags: String,
    pub duration_ms: f64,
    pub trace_id: Option<String>,
    pub request_id: String,
}

/// A service's recent errors (newest first) and slowest requests
/// (slowest first).
#[derive(Clone, Debug, Default, Serialize)]
pub struct ServiceRecent {
    pub errors: Vec<Notable>,
    pub slowest: Vec<Notable>,
}

/// The requests for `host` among the proxies' reports.
pub fn for_service<'a>(
    reports: impl Iterator<Item = &'a ProxyRecent>,
    host: &str,
) -> ServiceRecent {
    let mut errors = Vec::new();
    let mut slowest = Vec::new();
    for r in reports {
        let of_host = |n: &&Notable| n.destination_service == host;
        errors.extend(r.errors.iter().filter(of_host).cloned());
        slowest.extend(r.slowest.iter().filter(of_host).cloned());
    }
    let mut errors = once_each(errors);
    errors.sort_by_key(|n| std::cmp::Reverse(n.end_ms));
    errors.truncate(ERRORS_SHOWN);
    let mut slowest = once_each(slowest);
    slowest.sort_by(|a, b| b.duration_ms.total_cmp(&a.duration_ms));
    slowest.truncate(SLOWEST_SHOWN);
    ServiceRecent { errors, slowest }
}

/// Each request once: by request id, the destination's report first.
fn once_each(all: Vec<Notable>) -> Vec<Notable> {
    let mut by_id: HashMap<String, Notable> = HashMap::new();
    let mut without_id = Vec::new();
    for n in all {
        if n.request_id.is_empty() {
            without_id.push(n);
            continue;
        }
        match by_id.get_mut(&n.request_id) {
            Some(kept) if kept.reporter != "destination" && n.reporter == "destination" => {
                *kept = n;
            }
            Some(_) => {}
            None => {
                by_id.insert(n.request_id.clone(), n);
            }
        }
    }
    without_id.extend(by_id.into_values());
    without_id
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(id: &str, reporter: &str, host: &str, end_ms: u64, duration_ms: f64) -> Notable {
        Notable {
            end_ms,
            reporter: reporter.into(),
            source_workload: "a".into(),
            source_namespace: "default".into(),
            destination_workload: "b".into(),
            destination_namespace: "default".into(),
            destination_service: host.into(),
            route: Some("default".into()),
            method: "GET".into(),
            response_code: 500,
            grpc_status: None,
            response_flags: "-".into(),
            duration_ms,
            trace_id: Some("0af7651916cd43dd8448eb211c80319c".into()),
            request_id: id.into(),
        }
    }

    #[test]
    fn merged_per_service_once_each_newest_and_slowest_first() {
        let b = "b.default.svc.cluster.local";
        let client = ProxyRecent {
            errors: vec![n("1", "source", b, 10, 5.0), n("2", "source", b, 30, 5.0)],
            slowest: vec![n("3", "source", b, 10, 900.0)],
        };
        let server = ProxyRecent {
            errors: vec![
                n("1", "destination", b, 11, 4.0),
                n("9", "destination", "c.default.svc.cluster.local", 50, 1.0),
            ],
            slowest: vec![n("4", "destination", b, 12, 1200.0)],
        };
        let r = for_service([&client, &server].into_iter(), b);
        let ids: Vec<(&str, &str)> = r
            .errors
            .iter()
            .map(|e| (e.request_id.as_str(), e.reporter.as_str()))
            .collect();
        assert_eq!(ids, vec![("2", "source"), ("1", "destination")]);
        let slow: Vec<&str> = r.slowest.iter().map(|e| e.request_id.as_str()).collect();
        assert_eq!(slow, vec!["4", "3"]);
    }
}
