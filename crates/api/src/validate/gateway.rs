//! Gateway rules (Istio's `ValidateGateway`, `validateServer`, `validateTLSOptions`).

use std::collections::BTreeMap;

use super::common::{self, Errors, at, idx};
use crate::networking::{Gateway, Server, ServerTlsMode, ServerTlsSettings, TlsProtocol};

pub(crate) fn gateway(errs: &mut Errors, gw: &Gateway) {
    let base = "spec";
    if gw.servers.is_empty() {
        errs.add(at(base, "servers"), "at least one server is required");
    }
    common::labels(errs, &at(base, "selector"), &gw.selector);
    let mut port_names: BTreeMap<&str, u32> = BTreeMap::new();
    for (i, s) in gw.servers.iter().enumerate() {
        let p = idx(base, "servers", i);
        server(errs, &p, s);
        // As Istio: every server has its own port name, even two servers on
        // one port number (listeners and routes are keyed by it).
        if s.port.name.is_empty() {
            continue;
        }
        match port_names.get(s.port.name.as_str()) {
            Some(&number) => errs.add(
                at(&at(&p, "port"), "name"),
                format!(
                    "port name `{}` is already used (by port {number}); port names in servers must be unique",
                    s.port.name
                ),
            ),
            None => {
                port_names.insert(&s.port.name, s.port.number);
            }
        }
    }
}

fn server(errs: &mut Errors, p: &str, s: &Server) {
    let pp = at(p, "port");
    errs.check(at(&pp, "number"), common::port(s.port.number));
    if s.port.protocol.is_empty() {
        errs.add(
            at(&pp, "protocol"),
            "protocol is required (e.g. HTTP, HTTPS, TLS, TCP)",
        );
    } else {
        errs.check(at(&pp, "protocol"), common::protocol(&s.port.protocol));
    }
    if s.port.name.is_empty() {
        errs.add(at(&pp, "name"), "port name is required");
    }
    if let Some(t) = s.port.target_port {
        errs.check(at(&pp, "targetPort"), common::port(t));
    }
    if let Some(bind) = &s.bind
        && !common::is_ip(bind)
        && !common::is_unix_address(bind)
    {
        errs.add(
            at(p, "bind"),
            format!("bind `{bind}` must be an IP address or unix:// socket path"),
        );
    }
    if s.hosts.is_empty() {
        errs.add(at(p, "hosts"), "at least one host is required");
    }
    for (i, h) in s.hosts.iter().enumerate() {
        errs.check(idx(p, "hosts", i), namespaced_host(h));
    }
    let proto = s.port.protocol.to_ascii_uppercase();
    let needs_tls = proto == "HTTPS" || proto == "TLS";
    match &s.tls {
        None if needs_tls => errs.add(
            at(p, "tls"),
            format!("TLS settings are required for {proto} servers"),
        ),
        None => {}
        Some(tls) => {
            server_tls(errs, &at(p, "tls"), tls, needs_tls);
            // As Istio: a plaintext port may only carry an httpsRedirect
            // (a passthrough-mode block without certificates).
            let passthrough = matches!(
                tls.mode.unwrap_or_default(),
                ServerTlsMode::Passthrough | ServerTlsMode::AutoPassthrough
            );
            let files = tls.server_certificate.is_some()
                || tls.private_key.is_some()
                || tls.ca_certificates.is_some();
            let http = matches!(proto.as_str(), "HTTP" | "HTTP2" | "GRPC" | "GRPC-WEB");
            if !needs_tls && !proto.is_empty() && (!http || !passthrough || files) {
                errs.add(
                    at(p, "tls"),
                    format!("TLS settings are only allowed on HTTPS and TLS servers, not {proto} (an HTTP server may set only httpsRedirect)"),
                );
            }
        }
    }
}

/// `host` or `namespace/host`, where namespace may be `*` or `.`.
fn namespaced_host(h: &str) -> Result<(), String> {
    let (ns, host) = match h.split_once('/') {
        Some((ns, host)) => (Some(ns), host),
        None => (None, h),
    };
    if let Some(ns) = ns {
        if host.contains('/') {
            return Err(format!(
                "invalid host `{h}`: expected `host` or `namespace/host`"
            ));
        }
        if ns != "*" && ns != "." {
            common::namespace(ns).map_err(|e| format!("invalid host `{h}`: {e}"))?;
        }
    }
    common::host_or_ip(host)
}

fn server_tls(errs: &mut Errors, p: &str, tls: &ServerTlsSettings, tls_port: bool) {
    let mode = tls.mode.unwrap_or_default();
    if tls.https_redirect && !tls_port && tls.mode.is_none() {
        // httpsRedirect on a plain HTTP server is the normal use; nothing else needed.
        return;
    }
    let has_files = tls.server_certificate.is_some()
        || tls.private_key.is_some()
        || tls.ca_certificates.is_some();
    let has_credential = tls.credential_name.is_some() || !tls.credential_names.is_empty();
    if tls.credential_name.is_some() && !tls.credential_names.is_empty() {
        errs.add(
            p,
            "only one of credentialName or credentialNames may be set",
        );
    }
    match mode {
        ServerTlsMode::Passthrough | ServerTlsMode::AutoPassthrough => {}
        ServerTlsMode::IstioMutual => {
            if has_files || has_credential {
                errs.add(
                    p,
                    "ISTIO_MUTUAL uses the mesh's certificates; serverCertificate, privateKey, caCertificates and credentialName must not be set",
                );
            }
        }
        ServerTlsMode::Simple | ServerTlsMode::Mutual | ServerTlsMode::OptionalMutual => {
            if !has_credential && tls.tls_certificates.is_empty() {
                if tls.server_certificate.is_none() {
                    errs.add(
                        at(p, "serverCertificate"),
                        format!("required for {mode} (or set credentialName)"),
                    );
                }
                if tls.private_key.is_none() {
                    errs.add(
                        at(p, "privateKey"),
                        format!("required for {mode} (or set credentialName)"),
                    );
                }
                if mode != ServerTlsMode::Simple
                    && tls.ca_certificates.is_none()
                    && tls.ca_cert_credential_name.is_none()
                {
                    errs.add(
                        at(p, "caCertificates"),
                        format!("required for {mode} to verify client certificates"),
                    );
                }
            }
        }
    }
    for (i, c) in tls.tls_certificates.iter().enumerate() {
        let cp = idx(p, "tlsCertificates", i);
        if c.server_certificate.is_none() {
            errs.add(
                at(&cp, "serverCertificate"),
                "serverCertificate is required",
            );
        }
        if c.private_key.is_none() {
            errs.add(at(&cp, "privateKey"), "privateKey is required");
        }
    }
    if let (Some(min), Some(max)) = (tls.min_protocol_version, tls.max_protocol_version)
        && min != TlsProtocol::TlsAuto
        && max != TlsProtocol::TlsAuto
        && max < min
    {
        errs.add(
            at(p, "maxProtocolVersion"),
            "maxProtocolVersion must not be lower than minProtocolVersion",
        );
    }
}
