//! `CONNECT host:port` on the explicit proxy: what an application's HTTPS
//! calls through `HTTPS_PROXY` look like (`trellis up` without network
//! namespaces, where nothing is captured). The proxy cannot see inside the
//! tunnel, so it routes it as the same connection captured would be:
//! - to a service port the mesh knows (a Service, a ServiceEntry): by the
//!   port's VirtualService `tls` routes on the ClientHello's SNI (Istio's
//!   HTTPS egress-gateway task), its `tcp` route, or its cluster — with the
//!   TCP metrics and access log ([`crate::tcp::to_service`]). HTTP routes
//!   do not apply inside a tunnel; plain-HTTP calls come as proxy requests.
//! - anywhere else: refused under REGISTRY_ONLY (Istio's BlackHoleCluster,
//!   as for plain HTTP), else tunnelled straight to the destination
//!   (Istio's PassthroughCluster).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use http::uri::Authority;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::{Conn, local_reply};
use crate::resp_body::RespBody;
use crate::snapshot::{Snapshot, Vip};
use crate::telemetry::{Flags, Record};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Answers a CONNECT for `authority` (lowercase) and serves its tunnel.
pub async fn tunnel(
    req: Request<Incoming>,
    authority: &str,
    conn: &Conn,
    record: &mut Record,
) -> Response<RespBody> {
    let host = crate::snapshot::domains::strip_port(authority);
    let Some(port) = authority
        .get(host.len() + 1..)
        .and_then(|p| p.parse::<u16>().ok())
    else {
        record.upstream_cluster = Some(super::passthrough_cluster());
        return local_reply(StatusCode::BAD_REQUEST, "CONNECT needs host:port");
    };
    let Some(snapshot) = conn.shared.store.current() else {
        return local_reply(StatusCode::SERVICE_UNAVAILABLE, "no config yet");
    };
    match service_port(&snapshot, host, port) {
        Some(vip) => {
            record.upstream_cluster = Some(vip.cluster.name.clone());
            record.service = Some(vip.cluster.service.clone());
            let logs = crate::listeners::client_logs(&conn.shared, &snapshot);
            let (shared, peer) = (conn.shared.clone(), conn.peer);
            tokio::spawn(async move {
                match hyper::upgrade::on(req).await {
                    Ok(upgraded) => {
                        let stream = TokioIo::new(upgraded);
                        crate::tcp::to_service(
                            stream,
                            &vip,
                            snapshot,
                            peer,
                            logs,
                            &shared.telemetry,
                        )
                        .await;
                    }
                    Err(e) => tracing::debug!(error = %e, "CONNECT upgrade failed"),
                }
            });
            Response::new(RespBody::Empty)
        }
        None if snapshot.registry_only && !wildcard_registered(&snapshot.hosts, host) => {
            super::blackhole(authority, None, record)
        }
        None => {
            drop(snapshot);
            passthrough(req, authority, record).await
        }
    }
}

/// The service port `host:port` names: a VIP and port, or a host the mesh
/// knows (by its full name) on one of its ports.
fn service_port(snapshot: &Snapshot, host: &str, port: u16) -> Option<Vip> {
    let at = |ip: &IpAddr| snapshot.vips.get(&SocketAddr::new(*ip, port));
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return at(&ip).cloned();
    }
    snapshot.hosts.get(host)?.iter().find_map(at).cloned()
}

/// Whether a wildcard ServiceEntry host ("*.example.com") covers `host`:
/// REGISTRY_ONLY lets such a host through, as it does its HTTP requests.
fn wildcard_registered(hosts: &BTreeMap<String, Vec<IpAddr>>, host: &str) -> bool {
    hosts.keys().any(|known| {
        known
            .strip_prefix('*')
            .is_some_and(|suffix| suffix.starts_with('.') && host.ends_with(suffix))
    })
}

/// ALLOW_ANY: a tunnel straight to the destination.
async fn passthrough(
    req: Request<Incoming>,
    authority: &str,
    record: &mut Record,
) -> Response<RespBody> {
    record.upstream_cluster = Some(super::passthrough_cluster());
    record.upstream_host = Authority::try_from(authority).ok();
    let upstream = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(authority)).await
    {
        Ok(Ok(s)) => s,
        _ => {
            record.flags.set(Flags::UF);
            return local_reply(
                StatusCode::SERVICE_UNAVAILABLE,
                "upstream connect error or disconnect/reset before headers. reset reason: connection failure",
            );
        }
    };
    let _ = upstream.set_nodelay(true);
    tokio::spawn(async move {
        match hyper::upgrade::on(req).await {
            Ok(upgraded) => {
                let mut client = TokioIo::new(upgraded);
                let mut upstream = upstream;
                let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
            }
            Err(e) => tracing::debug!(error = %e, "CONNECT upgrade failed"),
        }
    });
    Response::new(RespBody::Empty)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wildcard_host_covers_names_under_it() {
        let hosts: BTreeMap<String, Vec<IpAddr>> =
            [("*.example.com", vec![]), ("api.other.org", vec![])]
                .into_iter()
                .map(|(h, ips)| (h.to_string(), ips))
                .collect();
        assert!(wildcard_registered(&hosts, "api.example.com"));
        assert!(wildcard_registered(&hosts, "a.b.example.com"));
        assert!(!wildcard_registered(&hosts, "example.com"));
        assert!(!wildcard_registered(&hosts, "notexample.com"));
        assert!(
            !wildcard_registered(&hosts, "api.other.org"),
            "exact hosts are service ports, not wildcards"
        );
    }
}
