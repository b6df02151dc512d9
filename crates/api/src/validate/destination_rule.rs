//! DestinationRule rules (Istio's `ValidateDestinationRule` and helpers).

use std::collections::BTreeSet;

use super::common::{self, Errors, at, idx};
use crate::networking::{
    ClientTlsMode, ClientTlsSettings, ConnectionPoolSettings, ConsistentHashLb, DestinationRule,
    LoadBalancerSettings, LocalityLoadBalancerSetting, OutlierDetection, TrafficPolicy,
};

pub(crate) fn destination_rule(errs: &mut Errors, dr: &DestinationRule) {
    let base = "spec";
    if dr.host.is_empty() {
        errs.add(at(base, "host"), "host is required");
    } else {
        errs.check(at(base, "host"), common::wildcard_domain(&dr.host));
    }
    common::export_to(errs, &at(base, "exportTo"), &dr.export_to);
    if let Some(sel) = &dr.workload_selector {
        common::labels(
            errs,
            &at(&at(base, "workloadSelector"), "matchLabels"),
            &sel.match_labels,
        );
    }
    if let Some(tp) = &dr.traffic_policy {
        traffic_policy(errs, &at(base, "trafficPolicy"), tp);
    }
    let mut names = BTreeSet::new();
    for (i, s) in dr.subsets.iter().enumerate() {
        let p = idx(base, "subsets", i);
        if s.name.is_empty() {
            errs.add(at(&p, "name"), "subset name is required");
        } else if !common::is_dns1123_label(&s.name) {
            errs.add(
                at(&p, "name"),
                format!("invalid subset name `{}`: must be a DNS label (lowercase letters, digits, '-')", s.name),
            );
        } else if !names.insert(s.name.as_str()) {
            errs.add(
                at(&p, "name"),
                format!("duplicate subset name `{}`", s.name),
            );
        }
        // A subset without labels selects every endpoint, as Istio allows:
        // its egress-gateway tasks name one (`subsets: [{name: cnn}]`) only
        // for routes to point at.
        common::labels(errs, &at(&p, "labels"), &s.labels);
        if let Some(tp) = &s.traffic_policy {
            traffic_policy(errs, &at(&p, "trafficPolicy"), tp);
        }
    }
}

fn traffic_policy(errs: &mut Errors, p: &str, tp: &TrafficPolicy) {
    if tp == &TrafficPolicy::default() {
        errs.add(p, "traffic policy must have at least one field");
        return;
    }
    let mut ports = BTreeSet::new();
    for (i, pl) in tp.port_level_settings.iter().enumerate() {
        let pp = idx(p, "portLevelSettings", i);
        match &pl.port {
            None => errs.add(at(&pp, "port"), "port is required"),
            Some(port) => {
                errs.check(at(&at(&pp, "port"), "number"), common::port(port.number));
                if !ports.insert(port.number) {
                    errs.add(
                        at(&at(&pp, "port"), "number"),
                        format!("duplicate port-level settings for port {}", port.number),
                    );
                }
            }
        }
        if pl.load_balancer.is_none()
            && pl.connection_pool.is_none()
            && pl.outlier_detection.is_none()
            && pl.tls.is_none()
        {
            errs.add(
                &pp,
                "port-level settings must have at least one field besides port",
            );
        }
        sections(
            errs,
            &pp,
            pl.load_balancer.as_ref(),
            pl.connection_pool.as_ref(),
            pl.outlier_detection.as_ref(),
            pl.tls.as_ref(),
        );
    }
    sections(
        errs,
        p,
        tp.load_balancer.as_ref(),
        tp.connection_pool.as_ref(),
        tp.outlier_detection.as_ref(),
        tp.tls.as_ref(),
    );
    if let Some(t) = &tp.tunnel {
        let tp_ = at(p, "tunnel");
        if let Some(proto) = &t.protocol
            && !["CONNECT", "POST"].contains(&proto.as_str())
        {
            errs.add(
                at(&tp_, "protocol"),
                format!("tunnel protocol `{proto}` must be CONNECT or POST"),
            );
        }
        if t.target_host.is_empty() {
            errs.add(at(&tp_, "targetHost"), "targetHost is required");
        } else {
            errs.check(at(&tp_, "targetHost"), common::host_or_ip(&t.target_host));
        }
        errs.check(at(&tp_, "targetPort"), common::port(t.target_port));
    }
    if let Some(rb) = &tp.retry_budget
        && let Some(pct) = rb.percent
    {
        errs.check(at(&at(p, "retryBudget"), "percent"), common::percent(pct));
    }
}

fn sections(
    errs: &mut Errors,
    p: &str,
    lb: Option<&LoadBalancerSettings>,
    pool: Option<&ConnectionPoolSettings>,
    od: Option<&OutlierDetection>,
    tls: Option<&ClientTlsSettings>,
) {
    if let Some(lb) = lb {
        load_balancer(errs, &at(p, "loadBalancer"), lb);
    }
    if let Some(pool) = pool {
        connection_pool(errs, &at(p, "connectionPool"), pool);
    }
    if let Some(od) = od {
        outlier_detection(errs, &at(p, "outlierDetection"), od);
    }
    if let Some(tls) = tls {
        client_tls(errs, &at(p, "tls"), tls);
    }
}

fn load_balancer(errs: &mut Errors, p: &str, lb: &LoadBalancerSettings) {
    if lb.simple.is_some() && lb.consistent_hash.is_some() {
        errs.add(p, "only one of simple or consistentHash may be set");
    }
    if let Some(ch) = &lb.consistent_hash {
        consistent_hash(errs, &at(p, "consistentHash"), ch);
    }
    if let Some(l) = &lb.locality_lb_setting {
        locality(errs, &at(p, "localityLbSetting"), l);
    }
    if let Some(d) = &lb.warmup_duration_secs {
        errs.check(at(p, "warmupDurationSecs"), common::duration_min_1ms(d));
    }
    if let Some(w) = &lb.warmup {
        let wp = at(p, "warmup");
        match &w.duration {
            Some(d) => errs.check(at(&wp, "duration"), common::duration_min_1ms(d)),
            None => errs.add(at(&wp, "duration"), "duration is required"),
        }
        if let Some(m) = w.minimum_percent {
            errs.check(at(&wp, "minimumPercent"), common::percent(m));
        }
        if let Some(a) = w.aggression
            && !(a.is_finite() && a >= 1.0)
        {
            errs.add(
                at(&wp, "aggression"),
                format!("aggression {a} must be at least 1.0"),
            );
        }
    }
}

fn consistent_hash(errs: &mut Errors, p: &str, ch: &ConsistentHashLb) {
    let keys = [
        ch.http_header_name.is_some(),
        ch.http_cookie.is_some(),
        ch.use_source_ip.is_some(),
        ch.http_query_parameter_name.is_some(),
    ]
    .into_iter()
    .filter(|b| *b)
    .count();
    if keys != 1 {
        errs.add(
            p,
            "exactly one hash key is required: httpHeaderName, httpCookie, useSourceIp or httpQueryParameterName",
        );
    }
    if let Some(h) = &ch.http_header_name {
        errs.check(at(p, "httpHeaderName"), common::header_name(h));
    }
    if let Some(q) = &ch.http_query_parameter_name
        && q.is_empty()
    {
        errs.add(at(p, "httpQueryParameterName"), "must not be empty");
    }
    if let Some(c) = &ch.http_cookie
        && c.name.is_empty()
    {
        errs.add(at(&at(p, "httpCookie"), "name"), "cookie name is required");
    }
    if ch.ring_hash.is_some() && ch.maglev.is_some() {
        errs.add(p, "only one of ringHash or maglev may be set");
    }
    if ch.minimum_ring_size.is_some() && ch.maglev.is_some() {
        errs.add(
            at(p, "minimumRingSize"),
            "minimumRingSize only applies to ring hash, not maglev",
        );
    }
    if let Some(m) = &ch.maglev
        && let Some(size) = m.table_size
    {
        // Envoy's limit; checking it first also bounds the primality test.
        const MAX_TABLE_SIZE: u64 = 5_000_011;
        let tp = at(&at(p, "maglev"), "tableSize");
        if size > MAX_TABLE_SIZE {
            errs.add(
                tp,
                format!("tableSize {size} must be at most {MAX_TABLE_SIZE}"),
            );
        } else if !is_prime(size) {
            errs.add(tp, format!("tableSize {size} must be a prime number"));
        }
    }
}

fn is_prime(n: u64) -> bool {
    if n < 2 {
        return false;
    }
    let mut d = 2u64;
    while d.saturating_mul(d) <= n {
        if n.is_multiple_of(d) {
            return false;
        }
        d += 1;
    }
    true
}

fn locality(errs: &mut Errors, p: &str, l: &LocalityLoadBalancerSetting) {
    if !l.distribute.is_empty() && !l.failover.is_empty() {
        errs.add(p, "distribute and failover cannot both be set");
    }
    for (i, d) in l.distribute.iter().enumerate() {
        let dp = idx(p, "distribute", i);
        errs.check(at(&dp, "from"), locality_pattern(&d.from));
        let total: u64 = d.to.values().map(|w| u64::from(*w)).sum();
        if total != 100 {
            errs.add(
                at(&dp, "to"),
                format!("weights must add up to 100, found {total}"),
            );
        }
        for k in d.to.keys() {
            errs.check(at(&at(&dp, "to"), k), locality_pattern(k));
        }
    }
    for (i, f) in l.failover.iter().enumerate() {
        let fp = idx(p, "failover", i);
        if f.from.is_empty() || f.to.is_empty() {
            errs.add(&fp, "from and to are both required");
        } else if f.from == f.to {
            errs.add(
                &fp,
                "failover must go from one region to a different region",
            );
        }
        if f.from.contains('/') || f.to.contains('/') {
            errs.add(&fp, "failover from/to are regions, not region/zone");
        }
    }
    for (i, label) in l.failover_priority.iter().enumerate() {
        // `key` or `key=value` (value forces a match for that label).
        let key = label.split_once('=').map_or(label.as_str(), |(k, _)| k);
        errs.check(idx(p, "failoverPriority", i), common::label_key(key));
    }
}

/// `region/zone/subzone`, with `*` allowed only as the last part.
fn locality_pattern(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("locality must not be empty".into());
    }
    let parts: Vec<&str> = s.split('/').collect();
    if parts.len() > 3 {
        return Err(format!("locality `{s}` has more than region/zone/subzone"));
    }
    for (i, part) in parts.iter().enumerate() {
        if part.is_empty() || (part.contains('*') && (*part != "*" || i != parts.len() - 1)) {
            return Err(format!(
                "invalid locality `{s}`: `*` is only allowed as the whole last part"
            ));
        }
    }
    Ok(())
}

fn connection_pool(errs: &mut Errors, p: &str, pool: &ConnectionPoolSettings) {
    if pool.tcp.is_none() && pool.http.is_none() {
        errs.add(p, "at least one of tcp or http is required");
    }
    if let Some(t) = &pool.tcp {
        let tp = at(p, "tcp");
        if let Some(n) = t.max_connections {
            errs.check(at(&tp, "maxConnections"), common::non_negative(n));
        }
        for (field, d) in [
            ("connectTimeout", &t.connect_timeout),
            ("maxConnectionDuration", &t.max_connection_duration),
            ("idleTimeout", &t.idle_timeout),
        ] {
            if let Some(d) = d {
                errs.check(at(&tp, field), common::duration_min_1ms(d));
            }
        }
        if let Some(k) = &t.tcp_keepalive {
            let kp = at(&tp, "tcpKeepalive");
            for (field, d) in [("time", &k.time), ("interval", &k.interval)] {
                if let Some(d) = d {
                    errs.check(at(&kp, field), common::duration_min_1ms(d));
                }
            }
        }
    }
    if let Some(h) = &pool.http {
        let hp = at(p, "http");
        for (field, v) in [
            ("http1MaxPendingRequests", h.http1_max_pending_requests),
            ("http2MaxRequests", h.http2_max_requests),
            ("maxRequestsPerConnection", h.max_requests_per_connection),
            ("maxRetries", h.max_retries),
            ("maxConcurrentStreams", h.max_concurrent_streams),
        ] {
            if let Some(v) = v {
                errs.check(at(&hp, field), common::non_negative(v));
            }
        }
        if let Some(d) = &h.idle_timeout {
            errs.check(at(&hp, "idleTimeout"), common::duration_min_1ms(d));
        }
        if let Some(k) = &h.http2_keep_alive {
            let kp = at(&hp, "http2KeepAlive");
            for (field, d) in [("interval", &k.interval), ("timeout", &k.timeout)] {
                match d {
                    Some(d) => errs.check(at(&kp, field), common::duration_min_1ms(d)),
                    None => errs.add(at(&kp, field), format!("{field} is required")),
                }
            }
        }
    }
}

fn outlier_detection(errs: &mut Errors, p: &str, od: &OutlierDetection) {
    if let Some(n) = od.consecutive_errors {
        errs.check(at(p, "consecutiveErrors"), common::non_negative(n));
    }
    if let Some(d) = &od.interval {
        errs.check(at(p, "interval"), common::duration_min_1ms(d));
    }
    if let Some(d) = &od.base_ejection_time {
        errs.check(at(p, "baseEjectionTime"), common::duration_min_1ms(d));
    }
    if let Some(v) = od.max_ejection_percent {
        errs.check(at(p, "maxEjectionPercent"), common::percent_i32(v));
    }
    if let Some(v) = od.min_health_percent {
        errs.check(at(p, "minHealthPercent"), common::percent_i32(v));
    }
    if od.consecutive_local_origin_failures.is_some()
        && od.split_external_local_origin_errors != Some(true)
    {
        errs.add(
            at(p, "consecutiveLocalOriginFailures"),
            "only takes effect with splitExternalLocalOriginErrors: true",
        );
    }
}

fn client_tls(errs: &mut Errors, p: &str, tls: &ClientTlsSettings) {
    let has_files = tls.client_certificate.is_some()
        || tls.private_key.is_some()
        || tls.ca_certificates.is_some();
    match tls.mode.unwrap_or_default() {
        ClientTlsMode::Disable => {}
        ClientTlsMode::IstioMutual => {
            if has_files || tls.credential_name.is_some() {
                errs.add(
                    p,
                    "ISTIO_MUTUAL uses the mesh's certificates; clientCertificate, privateKey, caCertificates and credentialName must not be set",
                );
            }
        }
        ClientTlsMode::Simple | ClientTlsMode::Mutual => {
            if tls.credential_name.is_some() && has_files {
                errs.add(p, "credentialName cannot be combined with clientCertificate, privateKey or caCertificates");
            }
            if tls.mode == Some(ClientTlsMode::Mutual) && tls.credential_name.is_none() {
                if tls.client_certificate.is_none() {
                    errs.add(
                        at(p, "clientCertificate"),
                        "required for MUTUAL TLS (or set credentialName)",
                    );
                }
                if tls.private_key.is_none() {
                    errs.add(
                        at(p, "privateKey"),
                        "required for MUTUAL TLS (or set credentialName)",
                    );
                }
            }
        }
    }
    if let Some(sni) = &tls.sni {
        errs.check(at(p, "sni"), common::host_or_ip(sni));
    }
}
