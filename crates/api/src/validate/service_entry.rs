//! ServiceEntry, Sidecar, WorkloadEntry and WorkloadGroup rules.

use std::collections::BTreeSet;

use super::common::{self, Errors, at, idx};
use super::virtual_service::destination;
use crate::networking::{
    OutboundTrafficPolicyMode, ReadinessProbe, Resolution, ServiceEntry, Sidecar, WorkloadEntry,
    WorkloadGroup,
};

/// A TCP (or unspecified-protocol) port without `addresses` can be told
/// apart from other services only by its port, unless Istio allocates an
/// address — which it does except for NONE resolution (the default) or
/// when the entry opts out with the label
/// `networking.istio.io/enable-autoallocate-ip: "false"`. Istio compares
/// the protocol case-sensitively here.
pub(crate) fn warnings(meta: &crate::meta::ObjectMeta, se: &ServiceEntry) -> Vec<String> {
    let opted_out = meta
        .labels
        .get("networking.istio.io/enable-autoallocate-ip")
        .is_some_and(|v| v.eq_ignore_ascii_case("false"));
    let resolution_none = matches!(se.resolution, None | Some(Resolution::None));
    let allocated = !opted_out && !resolution_none;
    let tcp_port = se
        .ports
        .iter()
        .any(|p| matches!(p.protocol.as_deref(), None | Some("") | Some("TCP")));
    if se.addresses.is_empty() && !allocated && tcp_port {
        vec![
            "addresses are required for ports serving TCP (or unset) protocol when IP Autoallocation is not enabled".to_string(),
        ]
    } else {
        Vec::new()
    }
}

pub(crate) fn service_entry(errs: &mut Errors, se: &ServiceEntry) {
    let base = "spec";
    if se.hosts.is_empty() {
        errs.add(at(base, "hosts"), "at least one host is required");
    }
    for (i, h) in se.hosts.iter().enumerate() {
        let p = idx(base, "hosts", i);
        if h == "*" {
            errs.add(
                &p,
                "host `*` is not allowed; use a wildcard domain such as `*.example.com`",
            );
        } else {
            errs.check(&p, common::wildcard_domain(h));
        }
    }
    for (i, a) in se.addresses.iter().enumerate() {
        errs.check(idx(base, "addresses", i), common::ip_or_cidr(a));
    }
    let mut numbers = BTreeSet::new();
    let mut names = BTreeSet::new();
    for (i, port) in se.ports.iter().enumerate() {
        let p = idx(base, "ports", i);
        errs.check(at(&p, "number"), common::port(port.number));
        if !numbers.insert(port.number) {
            errs.add(
                at(&p, "number"),
                format!("duplicate port number {}", port.number),
            );
        }
        if port.name.is_empty() {
            errs.add(at(&p, "name"), "port name is required");
        } else if !names.insert(port.name.as_str()) {
            errs.add(
                at(&p, "name"),
                format!("duplicate port name `{}`", port.name),
            );
        }
        if let Some(proto) = &port.protocol {
            // An empty protocol means "detect it", as in Istio.
            if !proto.is_empty() {
                errs.check(at(&p, "protocol"), common::protocol(proto));
            }
        }
        if let Some(t) = port.target_port {
            errs.check(at(&p, "targetPort"), common::port(t));
        }
    }
    if se.workload_selector.is_some() && !se.endpoints.is_empty() {
        errs.add(
            at(base, "workloadSelector"),
            "only one of workloadSelector or endpoints may be set",
        );
    }
    if let Some(sel) = &se.workload_selector {
        common::labels(
            errs,
            &at(&at(base, "workloadSelector"), "labels"),
            &sel.labels,
        );
    }
    let resolution = se.resolution.unwrap_or_default();
    match resolution {
        // STATIC without endpoints is valid in Istio: WorkloadEntries
        // (or none yet) provide them.
        Resolution::Static => {}
        Resolution::Dns | Resolution::DnsRoundRobin => {
            if se.endpoints.is_empty() {
                for (i, h) in se.hosts.iter().enumerate() {
                    if h.starts_with('*') {
                        errs.add(
                            idx(base, "hosts", i),
                            format!("wildcard host `{h}` cannot be resolved with {resolution}; list endpoints or use DYNAMIC_DNS"),
                        );
                    }
                }
            }
            if resolution == Resolution::DnsRoundRobin && se.endpoints.len() > 1 {
                errs.add(
                    at(base, "endpoints"),
                    "DNS_ROUND_ROBIN allows at most one endpoint",
                );
            }
        }
        Resolution::DynamicDns => {
            if !se.endpoints.is_empty() {
                errs.add(at(base, "endpoints"), "DYNAMIC_DNS does not take endpoints");
            }
        }
        Resolution::None => {
            if !se.endpoints.is_empty() {
                errs.add(
                    at(base, "endpoints"),
                    "NONE resolution does not take endpoints (use STATIC or DNS)",
                );
            }
        }
    }
    // A CIDR range cannot be resolved by name, nor give one address to connect to.
    if !matches!(resolution, Resolution::None | Resolution::Static) {
        for (i, a) in se.addresses.iter().enumerate() {
            if a.contains('/') {
                errs.add(
                    idx(base, "addresses", i),
                    format!("CIDR address `{a}` is allowed only with NONE or STATIC resolution, not {resolution}"),
                );
            }
        }
    }
    if names.len() != 1 {
        for (i, ep) in se.endpoints.iter().enumerate() {
            if common::is_unix_address(&ep.address) {
                errs.add(
                    at(&idx(base, "endpoints", i), "address"),
                    "a unix endpoint needs a service entry with exactly one port",
                );
            }
        }
    }
    for (i, ep) in se.endpoints.iter().enumerate() {
        let p = idx(base, "endpoints", i);
        workload_entry_fields(errs, &p, ep, true);
        port_names(errs, &p, ep);
        if resolution == Resolution::Static
            && !ep.address.is_empty()
            && !common::is_ip(&ep.address)
            && !common::is_unix_address(&ep.address)
        {
            errs.add(
                at(&p, "address"),
                format!(
                    "STATIC endpoints need an IP address, found `{}`",
                    ep.address
                ),
            );
        }
        for port_name in ep.ports.keys() {
            if !names.contains(port_name.as_str()) {
                errs.add(
                    at(&at(&p, "ports"), port_name),
                    format!("port `{port_name}` is not one of the service entry's port names"),
                );
            }
        }
    }
    common::export_to(errs, &at(base, "exportTo"), &se.export_to);
}

pub(crate) fn workload_entry(errs: &mut Errors, we: &WorkloadEntry) {
    workload_entry_fields(errs, "spec", we, true);
    port_names(errs, "spec", we);
}

/// A WorkloadEntry's (or ServiceEntry endpoint's) port names are DNS labels,
/// as Istio requires; a WorkloadGroup template's are not checked (nor by Istio).
fn port_names(errs: &mut Errors, p: &str, we: &WorkloadEntry) {
    for name in we.ports.keys() {
        if !common::is_dns1123_label(name) {
            errs.add(
                at(&at(p, "ports"), name),
                format!("invalid port name `{name}`: must be a DNS label (lowercase letters, digits, '-')"),
            );
        }
    }
}

/// Fields shared by WorkloadEntry, ServiceEntry endpoints and WorkloadGroup
/// templates (where the address is filled in per instance).
fn workload_entry_fields(errs: &mut Errors, p: &str, we: &WorkloadEntry, needs_address: bool) {
    if we.address.is_empty() {
        // A workload behind a network gateway is reached through the gateway.
        if needs_address && we.network.is_none() {
            errs.add(
                at(p, "address"),
                "address is required (unless network is set)",
            );
        }
    } else if !common::is_unix_address(&we.address) {
        errs.check(at(p, "address"), common::host_or_ip(&we.address));
    }
    if common::is_unix_address(&we.address) && !we.ports.is_empty() {
        errs.add(
            at(p, "ports"),
            format!("unix endpoint `{}` must not have ports", we.address),
        );
    }
    for (name, port) in &we.ports {
        errs.check(at(&at(p, "ports"), name), common::port(*port));
    }
    common::labels(errs, &at(p, "labels"), &we.labels);
    if let Some(sa) = &we.service_account
        && !common::is_dns1123_subdomain(sa)
    {
        errs.add(
            at(p, "serviceAccount"),
            format!("invalid service account name `{sa}`"),
        );
    }
    if let Some(loc) = &we.locality
        && loc.split('/').count() > 3
    {
        errs.add(
            at(p, "locality"),
            format!("locality `{loc}` has more than region/zone/subzone"),
        );
    }
}

pub(crate) fn workload_group(errs: &mut Errors, wg: &WorkloadGroup) {
    let base = "spec";
    if let Some(m) = &wg.metadata {
        common::labels(errs, &at(&at(base, "metadata"), "labels"), &m.labels);
    }
    let tp = at(base, "template");
    workload_entry_fields(errs, &tp, &wg.template, false);
    if let Some(probe) = &wg.probe {
        readiness_probe(errs, &at(base, "probe"), probe);
    }
}

fn readiness_probe(errs: &mut Errors, p: &str, probe: &ReadinessProbe) {
    let methods = [
        probe.http_get.is_some(),
        probe.tcp_socket.is_some(),
        probe.exec.is_some(),
        probe.grpc.is_some(),
    ]
    .into_iter()
    .filter(|b| *b)
    .count();
    if methods != 1 {
        errs.add(
            p,
            "exactly one of httpGet, tcpSocket, exec or grpc is required",
        );
    }
    for (field, v) in [
        ("initialDelaySeconds", probe.initial_delay_seconds),
        ("timeoutSeconds", probe.timeout_seconds),
        ("periodSeconds", probe.period_seconds),
        ("successThreshold", probe.success_threshold),
        ("failureThreshold", probe.failure_threshold),
    ] {
        if let Some(v) = v {
            errs.check(at(p, field), common::non_negative(v));
        }
    }
    if let Some(h) = &probe.http_get {
        errs.check(at(&at(p, "httpGet"), "port"), common::port(h.port));
    }
    if let Some(t) = &probe.tcp_socket {
        errs.check(at(&at(p, "tcpSocket"), "port"), common::port(t.port));
    }
    if let Some(g) = &probe.grpc {
        errs.check(at(&at(p, "grpc"), "port"), common::port(g.port));
    }
    if let Some(e) = &probe.exec
        && e.command.is_empty()
    {
        errs.add(at(&at(p, "exec"), "command"), "command is required");
    }
}

pub(crate) fn sidecar(errs: &mut Errors, sc: &Sidecar) {
    let base = "spec";
    if sc.egress.is_empty()
        && sc.ingress.is_empty()
        && sc.outbound_traffic_policy.is_none()
        && sc.inbound_connection_pool.is_none()
    {
        errs.add(base, "empty Sidecar: set at least one of ingress, egress, outboundTrafficPolicy or inboundConnectionPool");
    }
    if let Some(sel) = &sc.workload_selector {
        common::labels(
            errs,
            &at(&at(base, "workloadSelector"), "labels"),
            &sel.labels,
        );
    }
    let mut ingress_ports = BTreeSet::new();
    for (i, l) in sc.ingress.iter().enumerate() {
        let p = idx(base, "ingress", i);
        errs.check(at(&at(&p, "port"), "number"), common::port(l.port.number));
        if let Some(proto) = &l.port.protocol {
            errs.check(at(&at(&p, "port"), "protocol"), common::protocol(proto));
        }
        if !ingress_ports.insert((l.bind.as_deref().unwrap_or_default(), l.port.number)) {
            errs.add(
                at(&p, "port"),
                format!(
                    "port {} is already used by another ingress listener",
                    l.port.number
                ),
            );
        }
        if let Some(bind) = &l.bind
            && !common::is_ip(bind)
        {
            errs.add(
                at(&p, "bind"),
                format!("bind `{bind}` must be an IP address"),
            );
        }
        if let Some(ep) = &l.default_endpoint {
            errs.check(at(&p, "defaultEndpoint"), default_endpoint(ep));
        }
    }
    let last = sc.egress.len().saturating_sub(1);
    for (i, l) in sc.egress.iter().enumerate() {
        let p = idx(base, "egress", i);
        match &l.port {
            Some(port) => errs.check(at(&at(&p, "port"), "number"), common::port(port.number)),
            // The catch-all listener must come last, or it shadows the rest.
            None if i != last => errs.add(
                &p,
                "the egress listener without a port must be the last one",
            ),
            None => {}
        }
        if l.hosts.is_empty() {
            errs.add(at(&p, "hosts"), "at least one host is required");
        }
        for (j, h) in l.hosts.iter().enumerate() {
            errs.check(idx(&p, "hosts", j), egress_host(h));
        }
    }
    if let Some(otp) = &sc.outbound_traffic_policy
        && let Some(proxy) = &otp.egress_proxy
    {
        let p = at(&at(base, "outboundTrafficPolicy"), "egressProxy");
        if otp.mode != Some(OutboundTrafficPolicyMode::AllowAny) {
            errs.add(&p, "egressProxy requires mode ALLOW_ANY");
        }
        destination(errs, &p, proxy);
        if proxy.port.is_none() {
            errs.add(at(&p, "port"), "egressProxy needs a port");
        }
    }
}

/// `127.0.0.1:PORT`, `0.0.0.0:PORT`, `[::1]:PORT`, `[::]:PORT` or `unix://path`.
fn default_endpoint(ep: &str) -> Result<(), String> {
    if common::is_unix_address(ep) {
        return Ok(());
    }
    let bad = || {
        format!(
            "invalid defaultEndpoint `{ep}`: expected 127.0.0.1:PORT, 0.0.0.0:PORT, [::1]:PORT, [::]:PORT or unix://path"
        )
    };
    let (host, port) = ep.rsplit_once(':').ok_or_else(bad)?;
    if !["127.0.0.1", "0.0.0.0", "[::1]", "[::]"].contains(&host) {
        return Err(bad());
    }
    let port: u32 = port.parse().map_err(|_| bad())?;
    common::port(port)
}

/// `namespace/dnsName`: namespace may be `*`, `.` or `~`; dnsName may be `*`.
fn egress_host(h: &str) -> Result<(), String> {
    let Some((ns, host)) = h.split_once('/') else {
        return Err(format!(
            "invalid host `{h}`: expected `namespace/host` (e.g. `./*` or `istio-system/*`)"
        ));
    };
    if !["*", ".", "~"].contains(&ns) {
        common::namespace(ns).map_err(|e| format!("invalid host `{h}`: {e}"))?;
    }
    if host == "*" {
        return Ok(());
    }
    common::wildcard_domain(host)
}
