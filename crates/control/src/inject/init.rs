//! The `istio-init` container: `trellis-proxy iptables` writing the pod's
//! capture rules, with the flags its `traffic.sidecar.istio.io/*`
//! annotations ask for, checked here so that a typo refuses the pod rather
//! than failing its init container.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Capabilities, Container, SecurityContext};

use super::{Config, INIT_CONTAINER, InjectError, PROXY_UID, STATUS_PORT, bad};

/// The init container running `capture` (from [`capture_args`]) with the
/// sidecar's `image`, as root with NET_ADMIN and NET_RAW only.
pub(super) fn container(config: &Config, image: Option<String>, capture: Vec<String>) -> Container {
    Container {
        name: INIT_CONTAINER.into(),
        image,
        image_pull_policy: config.image_pull_policy.clone(),
        command: Some(vec!["trellis-proxy".into()]),
        args: Some(capture),
        resources: Some(config.init_resources.clone()),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            capabilities: Some(Capabilities {
                add: Some(vec!["NET_ADMIN".into(), "NET_RAW".into()]),
                drop: Some(vec!["ALL".into()]),
            }),
            privileged: Some(false),
            read_only_root_filesystem: Some(false),
            run_as_group: Some(0),
            run_as_non_root: Some(false),
            run_as_user: Some(0),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The `trellis-proxy iptables` arguments from the pod's
/// `traffic.sidecar.istio.io/*` annotations, each checked here so that a
/// typo is refused with the pod rather than failing its init container.
pub(super) fn capture_args(
    annotations: &BTreeMap<String, String>,
    status_port: u16,
    metadata: &BTreeMap<String, String>,
) -> Result<Vec<String>, InjectError> {
    let get = |k: &str, default: &str| {
        annotations
            .get(&format!("traffic.sidecar.istio.io/{k}"))
            .map(|v| v.trim().to_string())
            .unwrap_or_else(|| default.to_string())
    };
    let key = |k: &str| format!("traffic.sidecar.istio.io/{k}");
    let include_out = get("includeOutboundIPRanges", "*");
    if include_out != "*" {
        check_cidrs(&key("includeOutboundIPRanges"), &include_out)?;
    }
    let exclude_out = get("excludeOutboundIPRanges", "");
    check_cidrs(&key("excludeOutboundIPRanges"), &exclude_out)?;
    let include_in = get("includeInboundPorts", "*");
    if include_in != "*" {
        check_ports(&key("includeInboundPorts"), &include_in)?;
    }
    let mut exclude_in = get("excludeInboundPorts", "");
    check_ports(&key("excludeInboundPorts"), &exclude_in)?;
    // The status port is the kubelet's, never captured (15020 and 15021 never are).
    if status_port != 0 && status_port != STATUS_PORT {
        exclude_in = [exclude_in, status_port.to_string()]
            .into_iter()
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join(",");
    }
    let exclude_out_ports = get("excludeOutboundPorts", "");
    check_ports(&key("excludeOutboundPorts"), &exclude_out_ports)?;
    let mut args = vec![
        "iptables".to_string(),
        format!("--includeOutboundIPRanges={include_out}"),
        format!("--excludeOutboundIPRanges={exclude_out}"),
        format!("--includeInboundPorts={include_in}"),
        format!("--excludeInboundPorts={exclude_in}"),
        format!("--excludeOutboundPorts={exclude_out_ports}"),
        format!("--proxy-uid={PROXY_UID}"),
        format!("--proxy-gid={PROXY_UID}"),
    ];
    // DNS is captured only when the proxy answers it (Istio's ISTIO_META_DNS_CAPTURE).
    if metadata.get("ISTIO_META_DNS_CAPTURE").map(String::as_str) != Some("true") {
        args.push("--no-dns".into());
    }
    Ok(args)
}

fn items(value: &str) -> impl Iterator<Item = &str> {
    value.split(',').map(str::trim).filter(|s| !s.is_empty())
}

fn check_cidrs(annotation: &str, value: &str) -> Result<(), InjectError> {
    for item in items(value) {
        let (ip, len) = item.split_once('/').unwrap_or((item, ""));
        let ok = match ip.parse::<std::net::IpAddr>() {
            Ok(addr) => {
                let max = if addr.is_ipv4() { 32 } else { 128 };
                len.is_empty() || len.parse::<u8>().is_ok_and(|l| l <= max)
            }
            Err(_) => false,
        };
        if !ok {
            return Err(bad(
                annotation,
                format!("{item:?} is not an IP range (CIDR, e.g. 10.0.0.0/8)"),
            ));
        }
    }
    Ok(())
}

fn check_ports(annotation: &str, value: &str) -> Result<(), InjectError> {
    for item in items(value) {
        if item.parse::<u16>().map_or(true, |p| p == 0) {
            return Err(bad(
                annotation,
                format!("{item:?} is not a port number (1-65535)"),
            ));
        }
    }
    Ok(())
}
