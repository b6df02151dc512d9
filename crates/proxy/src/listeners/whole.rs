//! Connections a listener serves whole rather than request by request: a
//! gateway's TCP and TLS servers (routed by port or SNI), and what every
//! proxied TCP connection needs — its authorization and its access log.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpStream;

use crate::http::{ListenerRt, Shared};
use crate::tcp;

/// A gateway TCP or TLS server's connection: routed whole by the
/// listener's routes in the current config, TLS by its ClientHello's SNI.
pub(super) async fn serve_l4(
    mut stream: TcpStream,
    peer: SocketAddr,
    bind: SocketAddr,
    shared: Arc<Shared>,
) {
    let Some(snapshot) = shared.store.current() else {
        return;
    };
    let Some(routes) = snapshot.l4_routes.get(&bind) else {
        return;
    };
    let (sni, hello) = if routes.tls {
        match tcp::read_client_hello(&mut stream).await {
            Ok(read) => read,
            Err(why) => {
                return tracing::debug!(%peer, listener = %bind, "TLS connection closed: {why}");
            }
        }
    } else {
        (None, Vec::new())
    };
    if let Some(authz) = snapshot.authz.get(&bind)
        && !authz.tcp.is_empty()
    {
        let attrs = crate::policy::authz::Attrs::tcp(peer, bind, None, sni.as_deref());
        if let crate::policy::authz::Decision::Deny(details) = authz
            .tcp
            .decide_connection(peer, &attrs, Some(&snapshot))
            .await
        {
            tracing::info!(listener = %bind, %peer, %details, "connection denied by authorization policy; closed");
            return;
        }
    }
    let Some((cluster, origin)) = routes.pick(sni.as_deref(), &snapshot.clusters) else {
        tracing::info!(%peer, listener = %bind, sni = sni.as_deref().unwrap_or("-"), flags = "NR", "no route for the connection; closed");
        return;
    };
    let logs = client_logs(&shared, &snapshot);
    // A long connection must not keep this config alive.
    drop(snapshot);
    let conn = tcp::TcpConn {
        peer,
        sni: sni.as_deref(),
        route: Some(&*origin),
        prefix: &hello,
        logs,
    };
    tcp::to_cluster(stream, &cluster, conn, &shared.telemetry).await;
}

/// The client side's access logs (outbound and gateway TCP connections).
pub(crate) fn client_logs(
    shared: &Shared,
    snapshot: &crate::snapshot::Snapshot,
) -> Option<Arc<crate::telemetry::access_log::AccessLogs>> {
    shared
        .telemetry
        .access_log
        .then(|| snapshot.access_logs.client.clone())
        .flatten()
}

/// The access log of an inbound TCP connection to `app`, if the server
/// side has access logs.
pub(super) fn tcp_log(
    shared: &Shared,
    rt: &ListenerRt,
    peer: SocketAddr,
    app: SocketAddr,
) -> Option<Box<crate::telemetry::stream::TcpLog>> {
    if !shared.telemetry.access_log {
        return None;
    }
    let logs = shared.store.current()?.access_logs.server.clone()?;
    Some(crate::telemetry::stream::TcpLog::new(
        logs,
        peer,
        rt.spec.bind,
        app.to_string(),
        rt.spec.name.clone(),
    ))
}

/// The port's AuthorizationPolicies on a TCP connection (a CUSTOM rule's
/// authorizer asked once); a denied one is dropped (closed) by the caller
/// right away.
pub(super) async fn tcp_allowed(
    shared: &Shared,
    rt: &ListenerRt,
    peer: SocketAddr,
    principal: Option<&str>,
    sni: Option<&str>,
) -> bool {
    let engine = &rt.authz.tcp;
    if engine.is_empty() {
        return true;
    }
    let attrs = crate::policy::authz::Attrs::tcp(peer, rt.spec.bind, principal, sni);
    let snapshot = shared.store.current();
    match engine
        .decide_connection(peer, &attrs, snapshot.as_deref())
        .await
    {
        crate::policy::authz::Decision::Allow => true,
        crate::policy::authz::Decision::Deny(details) => {
            tracing::info!(listener = %rt.spec.name, %peer, principal = principal.unwrap_or("-"), %details, "connection denied by authorization policy; closed");
            false
        }
    }
}
