//! The iptables rules that send a pod's TCP traffic through its sidecar, as
//! Istio's `istio-iptables` (the init container) writes them.
//!
//! - outbound TCP from the application goes to the proxy's port 15001
//!   (chain `ISTIO_OUTPUT` → `ISTIO_REDIRECT`), inbound TCP to 15006
//!   (`PREROUTING` → `ISTIO_INBOUND` → `ISTIO_IN_REDIRECT`);
//! - the proxy's own connections (its UID and GID, 1337 as Istio's) are
//!   never captured, so that it does not loop into itself;
//! - DNS (UDP and TCP port 53) goes to the proxy's DNS port 15053;
//! - the `traffic.sidecar.istio.io/*` annotations' ranges and ports narrow it.
//!
//! [`rules`] is a pure function of the settings and what the table holds
//! now; [`apply`] feeds its output to `iptables-restore` as one atomic batch.

use std::fmt::Write as _;
use std::net::IpAddr;

use ipnet::IpNet;

/// The chains Trellis owns in the `nat` table (Istio's names, so that an
/// operator's `iptables -t nat -L` reads the same as in a cluster).
pub const CHAINS: [&str; 5] = [
    "ISTIO_INBOUND",
    "ISTIO_REDIRECT",
    "ISTIO_IN_REDIRECT",
    "ISTIO_OUTPUT",
    "ISTIO_OUTPUT_DNS",
];

/// Ports Istio never captures inbound: ssh, and the proxy's own health,
/// metrics and tunnel ports.
pub const ALWAYS_EXCLUDED_INBOUND: [u16; 5] = [22, 15008, 15020, 15021, 15090];

/// The proxy's admin port, bound to the pod's loopback. It and the capture
/// ports themselves ([`Settings`]' outbound, inbound and DNS ports) are
/// never captured inbound either: captured, a connection to them would be
/// passed through to the pod's 127.0.0.1 and reach them from outside.
const ADMIN_PORT: u16 = 15000;

/// The source address the proxy uses for inbound connections it hands to
/// the application over loopback (Istio's 127.0.0.6): never captured again.
const INBOUND_PASSTHROUGH_V4: &str = "127.0.0.6/32";
const INBOUND_PASSTHROUGH_V6: &str = "::6/128";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    fn localhost(self) -> &'static str {
        match self {
            Family::V4 => "127.0.0.1/32",
            Family::V6 => "::1/128",
        }
    }

    fn inbound_passthrough(self) -> &'static str {
        match self {
            Family::V4 => INBOUND_PASSTHROUGH_V4,
            Family::V6 => INBOUND_PASSTHROUGH_V6,
        }
    }

    fn contains(self, net: &IpNet) -> bool {
        matches!(
            (self, net),
            (Family::V4, IpNet::V4(_)) | (Family::V6, IpNet::V6(_))
        )
    }
}

/// A set of addresses: every one (`*`), or some ranges.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ranges {
    All,
    Some(Vec<IpNet>),
}

/// A set of ports: every one (`*`), or some.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ports {
    All,
    Some(Vec<u16>),
}

/// What to capture; the defaults are Istio's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    pub proxy_uid: u32,
    pub proxy_gid: u32,
    pub outbound_port: u16,
    pub inbound_port: u16,
    pub dns_port: u16,
    /// `includeOutboundIPRanges`: destinations captured (default `*`).
    pub include_outbound: Ranges,
    /// `excludeOutboundIPRanges`: destinations never captured.
    pub exclude_outbound: Vec<IpNet>,
    /// `excludeOutboundPorts`: destination ports never captured.
    pub exclude_outbound_ports: Vec<u16>,
    /// `includeInboundPorts`: ports captured inbound (default `*`; empty: no inbound capture).
    pub include_inbound_ports: Ports,
    /// `excludeInboundPorts` (besides [`ALWAYS_EXCLUDED_INBOUND`]).
    pub exclude_inbound_ports: Vec<u16>,
    /// Send DNS (UDP and TCP 53) to `dns_port` (Istio's `ISTIO_META_DNS_CAPTURE`).
    pub capture_dns: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            proxy_uid: 1337,
            proxy_gid: 1337,
            outbound_port: 15001,
            inbound_port: 15006,
            dns_port: 15053,
            include_outbound: Ranges::All,
            exclude_outbound: Vec::new(),
            exclude_outbound_ports: Vec::new(),
            include_inbound_ports: Ports::All,
            exclude_inbound_ports: Vec::new(),
            capture_dns: true,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParseError {
    #[error("{what}: {value:?} is not an IP range (CIDR, e.g. 10.0.0.0/8) or an address")]
    Range { what: &'static str, value: String },
    #[error("{what}: {value:?} is not a port number (1-65535)")]
    Port { what: &'static str, value: String },
}

/// Parses a comma-separated list of CIDRs or addresses as the annotations
/// write them; `*` is every address. `what` names the setting in errors.
pub fn parse_ranges(what: &'static str, s: &str) -> Result<Ranges, ParseError> {
    if s.trim() == "*" {
        return Ok(Ranges::All);
    }
    items(s)
        .map(|item| {
            item.parse::<IpNet>()
                .or_else(|_| item.parse::<IpAddr>().map(IpNet::from))
                .map(|n| n.trunc())
                .map_err(|_| ParseError::Range {
                    what,
                    value: item.to_string(),
                })
        })
        .collect::<Result<_, _>>()
        .map(Ranges::Some)
}

/// Parses a comma-separated list of ports; `*` is every port.
pub fn parse_ports(what: &'static str, s: &str) -> Result<Ports, ParseError> {
    if s.trim() == "*" {
        return Ok(Ports::All);
    }
    items(s)
        .map(|item| {
            item.parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| ParseError::Port {
                    what,
                    value: item.to_string(),
                })
        })
        .collect::<Result<_, _>>()
        .map(Ports::Some)
}

fn items(s: &str) -> impl Iterator<Item = &str> {
    s.split(',').map(str::trim).filter(|i| !i.is_empty())
}

/// The `iptables-restore --noflush` input that makes the `nat` table hold
/// exactly Trellis's capture rules for `family`, whatever it holds now
/// (`current`: `iptables-save -t nat` output, empty if nothing): the jumps
/// from the built-in chains found in `current` are deleted, the owned chains
/// declared (which flushes them) and filled. Running it twice gives the
/// same table. `settings: None` gives the cleanup: jumps and chains removed.
pub fn rules(settings: Option<&Settings>, family: Family, current: &str) -> String {
    let mut out = String::from("*nat\n");
    let present: Vec<&str> = current
        .lines()
        .filter_map(|l| l.strip_prefix(':'))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| CHAINS.contains(c))
        .collect();
    let wanted: Vec<&str> = if settings.is_some() {
        CHAINS.to_vec()
    } else {
        present.clone()
    };
    for chain in &wanted {
        let _ = writeln!(out, ":{chain} - [0:0]");
    }
    // Our jumps from the built-in chains, as they are now: deleted first.
    for line in current.lines() {
        if let Some(rule) = line.strip_prefix("-A ")
            && let Some((builtin, _)) = rule.split_once(' ')
            && ["PREROUTING", "OUTPUT"].contains(&builtin)
            && CHAINS.iter().any(|c| rule.ends_with(&format!("-j {c}")))
        {
            let _ = writeln!(out, "-D {rule}");
        }
    }
    match settings {
        Some(s) => capture_rules(s, family, &mut out),
        None => {
            for chain in &present {
                let _ = writeln!(out, "-X {chain}");
            }
        }
    }
    out.push_str("COMMIT\n");
    out
}

fn capture_rules(s: &Settings, family: Family, out: &mut String) {
    let mut rule = |r: String| {
        out.push_str(&r);
        out.push('\n');
    };
    let (uid, gid) = (s.proxy_uid, s.proxy_gid);
    let lo = family.localhost();
    rule(format!(
        "-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports {}",
        s.outbound_port
    ));
    rule(format!(
        "-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports {}",
        s.inbound_port
    ));

    // Inbound.
    let capture_inbound = s.include_inbound_ports != Ports::Some(Vec::new());
    if capture_inbound {
        rule("-A PREROUTING -p tcp -j ISTIO_INBOUND".into());
        let mut excluded: Vec<u16> = ALWAYS_EXCLUDED_INBOUND.to_vec();
        excluded.extend([ADMIN_PORT, s.outbound_port, s.inbound_port, s.dns_port]);
        excluded.extend(&s.exclude_inbound_ports);
        excluded.sort_unstable();
        excluded.dedup();
        match &s.include_inbound_ports {
            Ports::All => {
                for p in excluded {
                    rule(format!("-A ISTIO_INBOUND -p tcp --dport {p} -j RETURN"));
                }
                rule("-A ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT".into());
            }
            Ports::Some(ports) => {
                for p in ports.iter().filter(|p| !excluded.contains(p)) {
                    rule(format!(
                        "-A ISTIO_INBOUND -p tcp --dport {p} -j ISTIO_IN_REDIRECT"
                    ));
                }
            }
        }
    }

    // Outbound.
    rule("-A OUTPUT -p tcp -j ISTIO_OUTPUT".into());
    for p in &s.exclude_outbound_ports {
        rule(format!("-A ISTIO_OUTPUT -p tcp --dport {p} -j RETURN"));
    }
    rule(format!(
        "-A ISTIO_OUTPUT -s {} -o lo -j RETURN",
        family.inbound_passthrough()
    ));
    if s.capture_dns {
        // DNS over TCP from anyone but the proxy, to any resolver (even one
        // on loopback, which the rules below leave alone).
        rule(format!(
            "-A ISTIO_OUTPUT -p tcp --dport 53 -m owner ! --uid-owner {uid} -m owner ! --gid-owner {gid} -j REDIRECT --to-ports {}",
            s.dns_port
        ));
    }
    for (flag, id) in [("--uid-owner", uid), ("--gid-owner", gid)] {
        // The proxy calling its own pod's address over loopback is inbound
        // traffic for this pod (the application calling its own service).
        if capture_inbound {
            rule(format!(
                "-A ISTIO_OUTPUT ! -d {lo} -o lo -p tcp -m owner {flag} {id} -j ISTIO_IN_REDIRECT"
            ));
        }
        rule(format!(
            "-A ISTIO_OUTPUT -o lo -m owner ! {flag} {id} -j RETURN"
        ));
        rule(format!("-A ISTIO_OUTPUT -m owner {flag} {id} -j RETURN"));
    }
    rule(format!("-A ISTIO_OUTPUT -d {lo} -j RETURN"));
    for net in s.exclude_outbound.iter().filter(|n| family.contains(n)) {
        rule(format!("-A ISTIO_OUTPUT -d {net} -j RETURN"));
    }
    match &s.include_outbound {
        Ranges::All => rule("-A ISTIO_OUTPUT -j ISTIO_REDIRECT".into()),
        Ranges::Some(nets) => {
            for net in nets.iter().filter(|n| family.contains(n)) {
                rule(format!("-A ISTIO_OUTPUT -d {net} -j ISTIO_REDIRECT"));
            }
            rule("-A ISTIO_OUTPUT -j RETURN".into());
        }
    }

    // DNS over UDP: everything but the proxy's own queries to the resolvers.
    if s.capture_dns {
        rule("-A OUTPUT -p udp -j ISTIO_OUTPUT_DNS".into());
        for (flag, id) in [("--uid-owner", uid), ("--gid-owner", gid)] {
            rule(format!(
                "-A ISTIO_OUTPUT_DNS -p udp --dport 53 -m owner {flag} {id} -j RETURN"
            ));
        }
        rule(format!(
            "-A ISTIO_OUTPUT_DNS -p udp --dport 53 -j REDIRECT --to-ports {}",
            s.dns_port
        ));
    }
}

#[cfg(test)]
#[path = "iptables_tests.rs"]
mod tests;
