//! `trellis-proxy iptables`: writes the capture rules into the current
//! network namespace (what Istio's init container `istio-iptables` does),
//! prints them (`--dry-run`) or removes them (`--cleanup`).

use anyhow::Context;
use clap::Parser;
use proxy::capture::{self, Backend, Family, Settings};

/// The flags carry the names of the `traffic.sidecar.istio.io/*` pod
/// annotations they implement.
#[derive(Parser, Debug)]
#[command(
    name = "trellis-proxy iptables",
    about = "Write (or print, or remove) the rules that capture this network namespace's traffic"
)]
pub struct Args {
    /// Destinations to capture, comma-separated CIDRs; `*` all, empty none.
    #[arg(long = "includeOutboundIPRanges", default_value = "*")]
    include_outbound_ip_ranges: String,
    /// Destinations never captured, comma-separated CIDRs.
    #[arg(long = "excludeOutboundIPRanges", default_value = "")]
    exclude_outbound_ip_ranges: String,
    /// Inbound ports to capture, comma-separated; `*` all, empty none.
    #[arg(long = "includeInboundPorts", default_value = "*")]
    include_inbound_ports: String,
    /// Inbound ports never captured (22 and the proxy's own ports never are).
    #[arg(long = "excludeInboundPorts", default_value = "")]
    exclude_inbound_ports: String,
    /// Outbound destination ports never captured.
    #[arg(long = "excludeOutboundPorts", default_value = "")]
    exclude_outbound_ports: String,
    /// The proxy's user id: its own connections are not captured.
    #[arg(long, default_value_t = 1337)]
    proxy_uid: u32,
    #[arg(long, default_value_t = 1337)]
    proxy_gid: u32,
    #[arg(long, default_value_t = 15001)]
    outbound_port: u16,
    #[arg(long, default_value_t = 15006)]
    inbound_port: u16,
    #[arg(long, default_value_t = 15053)]
    dns_port: u16,
    /// Leave DNS alone (by default UDP and TCP port 53 go to --dns-port).
    #[arg(long)]
    no_dns: bool,
    /// Skip IPv6 (ip6tables).
    #[arg(long)]
    no_ipv6: bool,
    /// Print the batches instead of applying them.
    #[arg(long)]
    dry_run: bool,
    /// Remove Trellis's rules and chains instead.
    #[arg(long, conflicts_with = "dry_run")]
    cleanup: bool,
    /// Force a backend instead of detecting the host's.
    #[arg(long, value_parser = ["legacy", "nft"])]
    backend: Option<String>,
}

impl Args {
    fn settings(&self) -> Result<Settings, capture::ParseError> {
        let list = |what, s: &str| match capture::parse_ranges(what, s)? {
            capture::Ranges::Some(v) => Ok(v),
            capture::Ranges::All => Err(capture::ParseError::Range {
                what,
                value: "*".into(),
            }),
        };
        let ports = |what, s: &str| match capture::parse_ports(what, s)? {
            capture::Ports::Some(v) => Ok(v),
            capture::Ports::All => Err(capture::ParseError::Port {
                what,
                value: "*".into(),
            }),
        };
        Ok(Settings {
            proxy_uid: self.proxy_uid,
            proxy_gid: self.proxy_gid,
            outbound_port: self.outbound_port,
            inbound_port: self.inbound_port,
            dns_port: self.dns_port,
            include_outbound: capture::parse_ranges(
                "includeOutboundIPRanges",
                &self.include_outbound_ip_ranges,
            )?,
            exclude_outbound: list("excludeOutboundIPRanges", &self.exclude_outbound_ip_ranges)?,
            exclude_outbound_ports: ports("excludeOutboundPorts", &self.exclude_outbound_ports)?,
            include_inbound_ports: capture::parse_ports(
                "includeInboundPorts",
                &self.include_inbound_ports,
            )?,
            exclude_inbound_ports: ports("excludeInboundPorts", &self.exclude_inbound_ports)?,
            capture_dns: !self.no_dns,
        })
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let settings = args.settings()?;
    let families: &[Family] = if args.no_ipv6 {
        &[Family::V4]
    } else {
        &[Family::V4, Family::V6]
    };
    let backend = match args.backend.as_deref() {
        Some("legacy") => Backend::Legacy,
        Some(_) => Backend::Nft,
        None if args.dry_run => capture::detect_backend().unwrap_or(Backend::Nft),
        None => capture::detect_backend()?,
    };
    for &family in families {
        // A dry run shows the rules for an empty table if it cannot read the real one.
        let current = match capture::current_table(backend, family) {
            Ok(t) => t,
            Err(_) if args.dry_run => String::new(),
            Err(e) => return Err(e.into()),
        };
        let batch = capture::rules((!args.cleanup).then_some(&settings), family, &current);
        // IPv6 also needs the inbound passthrough source on the loopback.
        let source = match (family, args.cleanup) {
            (Family::V4, _) => None,
            (Family::V6, false) => Some(&capture::ADD_PASSTHROUGH_SOURCE_V6[..]),
            (Family::V6, true) => Some(&capture::DEL_PASSTHROUGH_SOURCE_V6[..]),
        };
        if args.dry_run {
            println!("# {} {:?}\n{batch}", backend.name(), family);
            if let Some(command) = source {
                println!("# and\n{}", command.join(" "));
            }
            continue;
        }
        // IPv6 may be off in this namespace's kernel: then there is nothing to capture.
        if family == Family::V6 && !std::path::Path::new("/proc/net/if_inet6").exists() {
            eprintln!("IPv6 is not enabled here; only IPv4 rules written");
            continue;
        }
        capture::apply(backend, family, &batch)
            .with_context(|| format!("writing the {family:?} capture rules"))?;
        match source {
            Some(command) if !args.cleanup => capture::run_ip(command)
                .context("adding the IPv6 inbound passthrough source ::6 to the loopback")?,
            // Gone already (or never added): nothing to remove.
            Some(command) => {
                let _ = capture::run_ip(command);
            }
            None => {}
        }
    }
    if !args.dry_run {
        let what = if args.cleanup { "removed" } else { "written" };
        eprintln!("capture rules {what} ({})", backend.name());
    }
    Ok(())
}
