//! `CONNECT host:port` on the explicit proxy: what an application's HTTPS
//! calls through `HTTP_PROXY`/`HTTPS_PROXY` look like. The proxy cannot see
//! inside the TLS, so the tunnel goes straight to the destination (Istio's
//! passthrough for traffic it cannot route).

use std::time::Duration;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::local_reply;
use crate::resp_body::RespBody;
use crate::telemetry::{Flags, Record};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

pub async fn tunnel(
    req: Request<Incoming>,
    authority: &str,
    record: &mut Record,
) -> Response<RespBody> {
    record.upstream_cluster = Some(super::passthrough_cluster());
    record.upstream_host = Some(authority.into());
    if crate::snapshot::domains::strip_port(authority).len() == authority.len() {
        return local_reply(StatusCode::BAD_REQUEST, "CONNECT needs host:port");
    }
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
